"""The CLIP-ViT vision tower (parameter names as transformers' BridgeTowerVisionModel and the official code)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bridgetower.config import VisionConfig
from bridgetower.layers import run_layer
from bridgetower.transforms import normalize_pixels


def resize_positions(table: torch.Tensor, grid: int) -> torch.Tensor:
    """Bicubically resize a [1 + g*g, D] position table to [1 + grid*grid, D] (class position kept)."""
    old = int(round((table.shape[0] - 1) ** 0.5))
    if old == grid:
        return table
    cls_pos, patches = table[:1], table[1:]
    patches = patches.reshape(1, old, old, -1).permute(0, 3, 1, 2)
    patches = F.interpolate(patches.float(), size=(grid, grid), mode="bicubic", align_corners=False)
    return torch.cat([cls_pos, patches.permute(0, 2, 3, 1).reshape(grid * grid, -1).to(table.dtype)])


class VisionEmbeddings(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.patch_size = cfg.patch_size
        self.class_embedding = nn.Parameter(torch.zeros(cfg.hidden_size))
        self.patch_embedding = nn.Conv2d(
            cfg.num_channels, cfg.hidden_size, cfg.patch_size, stride=cfg.patch_size, bias=False
        )
        self.position_embedding = nn.Embedding(cfg.num_positions, cfg.hidden_size)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        if pixel_values.dtype == torch.uint8:  # raw pixels from the data pipeline: CLIP-normalise here
            pixel_values = normalize_pixels(pixel_values)
        x = self.patch_embedding(pixel_values.to(self.patch_embedding.weight.dtype))
        grid_h, grid_w = x.shape[-2:]
        x = x.flatten(2).transpose(1, 2)
        cls = self.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        pos = self.position_embedding.weight
        if pos.shape[0] != grid_h * grid_w + 1:  # another resolution than the table's: resize on the fly
            if grid_h != grid_w:
                raise ValueError(f"non-square image grids ({grid_h}x{grid_w}) are not supported")
            pos = resize_positions(pos, grid_h)
        return torch.cat([cls, x], dim=1) + pos


class VisionAttention(nn.Module):
    """Multi-head self-attention with CLIP's packed `in_proj` weights, computed with SDPA."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.num_heads = heads
        self.in_proj_weight = nn.Parameter(torch.empty(3 * width, width))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * width))
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, d = x.shape
        qkv = F.linear(x, self.in_proj_weight, self.in_proj_bias)
        q, k, v = qkv.view(b, n, 3, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.out_proj(out.transpose(1, 2).reshape(b, n, d))


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN CLIP block."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        w = cfg.hidden_size
        self.ln_1 = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.attn = VisionAttention(w, cfg.heads)
        self.ln_2 = nn.LayerNorm(w, eps=cfg.layer_norm_eps)
        self.mlp = nn.ModuleDict(
            {"c_fc": nn.Linear(w, 4 * w), "gelu": QuickGELU(), "c_proj": nn.Linear(4 * w, w)}
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp.c_proj(self.mlp.gelu(self.mlp.c_fc(self.ln_2(x))))


class Transformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.resblocks = nn.ModuleList(ResidualAttentionBlock(cfg) for _ in range(cfg.num_layers))


class VisualTransformer(nn.Module):
    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.ln_pre = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.transformer = Transformer(cfg)
        self.ln_post = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)


class VisionModel(nn.Module):
    """CLIP-ViT whose every bridged level goes through the one shared `ln_post`."""

    def __init__(self, cfg: VisionConfig) -> None:
        super().__init__()
        self.visual = VisualTransformer(cfg)

    def forward(
        self, pixel_values: torch.Tensor, levels: list[int], checkpointing: bool = False
    ) -> list[torch.Tensor]:
        """`ln_post`-normalised hidden states after each block index in `levels` (0-based)."""
        v = self.visual
        wanted, out = set(levels), []
        x = v.ln_pre(v.embeddings(pixel_values))
        for i, block in enumerate(v.transformer.resblocks[: levels[-1] + 1]):
            x = run_layer(block, x, enabled=checkpointing)
            if i in wanted:
                out.append(v.ln_post(x))
        return out
