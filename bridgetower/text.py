"""The RoBERTa text tower (parameter names as transformers' BridgeTowerTextModel)."""

from __future__ import annotations

import torch
from torch import nn

from bridgetower.config import TextConfig
from bridgetower.layers import AddNorm, Attention, Intermediate, Pooler, run_layer


class TextEmbeddings(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.padding_idx = cfg.pad_token_id
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(
            cfg.max_position_embeddings, cfg.hidden_size, padding_idx=cfg.pad_token_id
        )
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # RoBERTa positions count non-pad tokens from padding_idx + 1; pads keep padding_idx
        keep = input_ids.ne(self.padding_idx).long()
        positions = torch.cumsum(keep, dim=1) * keep + self.padding_idx
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings.weight[0]
        return self.dropout(self.LayerNorm(x))


class TextLayer(nn.Module):
    """Post-LN RoBERTa layer."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        h = cfg.hidden_size
        self.attention = Attention(h, cfg.num_heads, cfg.layer_norm_eps, cfg.dropout, cfg.attention_dropout)
        self.intermediate = Intermediate(h, cfg.intermediate_size)
        self.output = AddNorm(cfg.intermediate_size, h, cfg.layer_norm_eps, cfg.dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.attention(x, None, mask)
        return self.output(self.intermediate(x), x)


class TextEncoder(nn.Module):
    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(TextLayer(cfg) for _ in range(cfg.num_layers))


class TextModel(nn.Module):
    """Embeddings + layers; the pooler is kept for weight compatibility (no BridgeTower forward uses it)."""

    def __init__(self, cfg: TextConfig) -> None:
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = TextEncoder(cfg)
        self.pooler = Pooler(cfg.hidden_size)

    def forward(
        self,
        input_ids: torch.Tensor,
        mask: torch.Tensor | None,
        levels: list[int],
        checkpointing: bool = False,
    ) -> list[torch.Tensor]:
        """Hidden states after each layer index in `levels` (0-based); stops after the last one."""
        wanted, out = set(levels), []
        x = self.embeddings(input_ids)
        for i, layer in enumerate(self.encoder.layer[: levels[-1] + 1]):
            x = run_layer(layer, x, mask, enabled=checkpointing)
            if i in wanted:
                out.append(x)
        return out
