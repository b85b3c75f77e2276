"""BridgeTowerModel: CLIP-ViT and RoBERTa towers whose top layers bridge into a co-attention cross-modal encoder.

Data flow (reference §1): each bridged vision level goes through the shared `ln_post`; each level of either
modality is projected by one shared Linear per modality and gets its token-type embedding (x). Cross-modal layer 1
reads LN(x_1); layer l > 1 reads bridge(x_l, y_{l-1}). Each stream attends to the other stream's input of the same
layer. cls_features = [tanh-pool(text token 0); tanh-pool(image token 0)].
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bridgetower.bridge import BRIDGES
from bridgetower.config import BridgeTowerConfig
from bridgetower.cross_modal import CrossModalLayer
from bridgetower.layers import Pooler, additive_mask, run_layer
from bridgetower.pretrained import PretrainedMixin
from bridgetower.text import TextModel
from bridgetower.vision import VisionModel


@dataclass
class BridgeTowerOutput:
    """Cross-modal features; `*_unimodal` are the last bridged uni-modal level (token 0 feeds ITC)."""

    text_features: torch.Tensor
    image_features: torch.Tensor
    cls_features: torch.Tensor
    text_unimodal: torch.Tensor | None = None
    image_unimodal: torch.Tensor | None = None

    @property
    def pooler_output(self) -> torch.Tensor:  # transformers' name
        return self.cls_features


class BridgeTowerModel(PretrainedMixin, nn.Module):
    """The backbone; task models hold one as `.bridgetower`."""

    base_model_prefix = ""

    def __init__(self, config: BridgeTowerConfig) -> None:
        super().__init__()
        self.config = config
        h = config.hidden_size
        self.vision_model = VisionModel(config.vision)
        self.text_model = TextModel(config.text)
        self.cross_modal_text_transform = nn.Linear(config.text.hidden_size, h)
        self.cross_modal_image_transform = nn.Linear(config.vision.hidden_size, h)
        self.token_type_embeddings = nn.Embedding(config.num_token_types, h)
        args = (h, config.num_heads, config.intermediate_size, config.cross_layer_norm_eps)
        drop = (config.dropout, config.attention_dropout)
        self.cross_modal_text_layers = nn.ModuleList(
            CrossModalLayer(*args, *drop) for _ in range(config.num_layers)
        )
        self.cross_modal_image_layers = nn.ModuleList(
            CrossModalLayer(*args, *drop) for _ in range(config.num_layers)
        )
        self.cross_modal_text_pooler = Pooler(h)
        self.cross_modal_image_pooler = Pooler(h)
        self.cross_modal_text_layernorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        self.cross_modal_image_layernorm = nn.LayerNorm(h, eps=config.layer_norm_eps)
        bridge = BRIDGES[config.bridge]
        if bridge is not None:
            n = config.num_layers - 1
            self.cross_modal_text_link_tower = nn.ModuleList(
                bridge(h, config.layer_norm_eps, config.num_heads) for _ in range(n)
            )
            self.cross_modal_image_link_tower = nn.ModuleList(
                bridge(h, config.layer_norm_eps, config.num_heads) for _ in range(n)
            )
        self.init_weights()

    # ---- uni-modal towers ----------------------------------------------------------------------------------
    @property
    def _bridged(self) -> bool:
        return BRIDGES[self.config.bridge] is not None

    def _levels(self, levels: list[int]) -> list[int]:
        return levels if self._bridged else levels[-1:]  # METER: only the last layer enters

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> list[torch.Tensor]:
        """RoBERTa hidden states at the bridged levels."""
        mask = additive_mask(attention_mask, self.cross_modal_text_transform.weight.dtype)
        ckpt = self.config.gradient_checkpointing
        return self.text_model(input_ids, mask, self._levels(self.config.text_levels), ckpt)

    def encode_image(self, pixel_values: torch.Tensor) -> list[torch.Tensor]:
        """CLIP hidden states at the bridged levels, each through the shared `ln_post`."""
        levels = self._levels(self.config.vision_levels)
        return self.vision_model(pixel_values, levels, self.config.gradient_checkpointing)

    def project_text(self, levels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Shared projection + token type 0 for every text level."""
        t = self.token_type_embeddings.weight[0]
        return [self.cross_modal_text_transform(x) + t for x in levels]

    def project_image(
        self, levels: list[torch.Tensor], token_type: int | torch.Tensor = 1
    ) -> list[torch.Tensor]:
        """Shared projection + image token type (1; 2 for NLVR2's second image; or one index per sample)."""
        if isinstance(token_type, int):
            t = self.token_type_embeddings.weight[token_type]
        else:
            t = self.token_type_embeddings(token_type)[:, None, :]
        return [self.cross_modal_image_transform(x) + t for x in levels]

    # ---- cross-modal encoder -------------------------------------------------------------------------------
    def fuse(
        self, text: list[torch.Tensor], image: list[torch.Tensor], attention_mask: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Run the cross-modal stacks on projected levels; returns the last text and image outputs."""
        mask = additive_mask(attention_mask, text[0].dtype)
        ckpt = self.config.gradient_checkpointing
        yt = self.cross_modal_text_layernorm(text[0])
        yv = self.cross_modal_image_layernorm(image[0])
        for i, (text_layer, image_layer) in enumerate(
            zip(self.cross_modal_text_layers, self.cross_modal_image_layers)
        ):
            if i > 0 and self._bridged:
                yt = self.cross_modal_text_link_tower[i - 1](text[i], yt, mask)
                yv = self.cross_modal_image_link_tower[i - 1](image[i], yv)
            yt, yv = (
                run_layer(text_layer, yt, yv, mask, None, enabled=ckpt),
                run_layer(image_layer, yv, yt, None, mask, enabled=ckpt),
            )
        return yt, yv

    def cls_features(self, text_features: torch.Tensor, image_features: torch.Tensor) -> torch.Tensor:
        return torch.cat(
            [self.cross_modal_text_pooler(text_features), self.cross_modal_image_pooler(image_features)],
            dim=-1,
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_token_type_idx: int | torch.Tensor = 1,
        image_levels: list[torch.Tensor] | None = None,
    ) -> BridgeTowerOutput:
        """Text [B, T] + image [B, 3, H, W] (or precomputed `image_levels` from `encode_image`)."""
        if image_levels is None:
            if pixel_values is None:
                raise ValueError("BridgeTowerModel needs pixel_values (or image_levels)")
            image_levels = self.encode_image(pixel_values)
        text_levels = self.encode_text(input_ids, attention_mask)
        text_features, image_features = self.fuse(
            self.project_text(text_levels),
            self.project_image(image_levels, image_token_type_idx),
            attention_mask,
        )
        return BridgeTowerOutput(
            text_features=text_features,
            image_features=image_features,
            cls_features=self.cls_features(text_features, image_features),
            text_unimodal=text_levels[-1],
            image_unimodal=image_levels[-1],
        )

    # ---- sharding ------------------------------------------------------------------------------------------
    def wrap_units(self) -> list[nn.Module]:
        """Layers FSDP shards one by one (vision blocks, text layers, cross-modal layers)."""
        return [
            *self.vision_model.visual.transformer.resblocks,
            *self.text_model.encoder.layer,
            *self.cross_modal_text_layers,
            *self.cross_modal_image_layers,
        ]
