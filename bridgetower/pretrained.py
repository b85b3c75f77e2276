"""Weights in and out: `from_pretrained`, `save_pretrained`, `from_towers`, shared by the backbone and task models.

Sources: our own `save_pretrained` directory, a transformers BridgeTower directory or hub id (safetensors, or
.bin read with `weights_only=True`), an official `.ckpt`, and CLIP + RoBERTa towers to start pretraining.
Loading never executes pickled code.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from bridgetower import formats
from bridgetower.config import BridgeTowerConfig

log = logging.getLogger("bridgetower")
T = TypeVar("T", bound="PretrainedMixin")


class CheckpointMismatchError(ValueError):
    """A checkpoint's keys or shapes do not fit the model."""


class PretrainedMixin:
    """Adds weight init, loading and saving to an `nn.Module` with a `.config`."""

    base_model_prefix = ""  # "bridgetower" for task models holding the backbone
    head_prefixes: tuple[str, ...] = ()  # keys that may be missing: freshly initialised heads
    tower: str | None = None  # uni-modal models: "vision_model" or "text_model"
    config: BridgeTowerConfig

    # ---- init ----------------------------------------------------------------------------------------------
    def init_weights(self) -> None:
        """Official init: Linear/Conv/Embedding N(0, 0.02), biases 0, LayerNorm 1/0."""
        std = self.config.initializer_range
        for module in self.modules():
            if isinstance(module, nn.Linear | nn.Conv2d | nn.Embedding):
                nn.init.normal_(module.weight, std=std)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)
                if getattr(module, "_bridge_identity_init", False):  # concat bridge starts as x + y
                    h = module.weight.shape[0]
                    with torch.no_grad():
                        module.weight.copy_(torch.cat([torch.eye(h), torch.eye(h)], dim=1))
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            elif hasattr(module, "in_proj_weight"):
                nn.init.normal_(module.in_proj_weight, std=std)
                nn.init.zeros_(module.in_proj_bias)
            elif hasattr(module, "class_embedding"):
                nn.init.normal_(module.class_embedding, std=std)
        vision_std = getattr(getattr(self.config, "vision", None), "embedding_init_std", None)
        if vision_std is not None:
            for module in self.modules():
                if hasattr(module, "class_embedding") and hasattr(module, "position_embedding"):
                    nn.init.normal_(module.class_embedding, std=vision_std)
                    nn.init.normal_(module.position_embedding.weight, std=vision_std)

    def compile_layers(self, **options: Any) -> None:
        """`torch.compile` the forward of every layer (`wrap_units()`), in place (regional compilation).

        Identical layers share one compiled graph, so compiling takes seconds, not minutes; parameter names and
        module hooks (FSDP's gathers, activation checkpointing) are unchanged, since only `forward` is compiled.
        `options` go to `torch.compile` (e.g. `mode`, `dynamic`). Outputs equal the eager ones to float rounding.
        """
        for unit in self.wrap_units():  # type: ignore[attr-defined]
            unit.forward = torch.compile(unit.forward, **options)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # ---- save ----------------------------------------------------------------------------------------------
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write `config.json` (transformers-readable where the variant allows) and `model.safetensors`."""
        from safetensors.torch import save_file

        out = Path(directory)
        out.mkdir(parents=True, exist_ok=True)
        config = formats.to_transformers_config(self.config, type(self).__name__)
        (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
        state = {k: v.detach().contiguous().clone().cpu() for k, v in self.state_dict().items()}
        save_file(state, str(out / "model.safetensors"), metadata={"format": "pt"})
        return out

    # ---- load ----------------------------------------------------------------------------------------------
    @classmethod
    def from_pretrained(cls: type[T], src: str | Path, **overrides: Any) -> T:
        """Load from our directory, a transformers directory or hub id, or an official `.ckpt` file.

        `overrides` change config fields (e.g. `image_size` resizes position embeddings bicubically,
        `vqa_num_labels` sizes a fresh head).
        """
        config, state = formats.read_checkpoint(src)
        config = _apply_overrides(config, overrides)
        model = cls(config)
        model.load_weights(state, source=str(src))
        return model

    @classmethod
    def from_towers(
        cls: type[T],
        vision: str | Path | None,
        text: str | Path | None,
        config: BridgeTowerConfig | None = None,
        **overrides: Any,
    ) -> T:
        """Start from uni-modal towers; the rest (and a tower given as None) is fresh.

        vision: a transformers `CLIPVisionModel` (dir or hub id), or a BridgeTower checkpoint whose vision tower
        is taken (ours, e.g. an image-classification run's `model/`, or a transformers BridgeTower); text: a
        `RobertaModel`, or likewise a BridgeTower checkpoint's text tower. `overrides` change config fields, as
        in `from_pretrained` (`image_size` resizes the tower's position table bicubically).
        """
        if vision is None and text is None:
            raise ValueError("from_towers needs a vision tower, a text tower or both")
        base = config or BridgeTowerConfig.preset("base")
        parts, state, sources = {}, {}, []
        for kind, src in (("vision", vision), ("text", text)):
            if src is not None:
                parts[kind], tower = formats.read_tower(src, kind)
                state.update(tower)
                sources.append(str(src))
        config = _apply_overrides(base.replace(**parts), overrides)
        model = cls(config)
        prefix = f"{cls.base_model_prefix}." if cls.base_model_prefix else ""
        state = {prefix + k: v for k, v in state.items()}
        model.load_weights(state, source=" + ".join(sources), partial=True)
        return model

    def load_weights(
        self, state: dict[str, torch.Tensor], source: str = "checkpoint", partial: bool = False
    ) -> None:
        """Load a state dict in our key layout; one error lists every missing, unexpected or mis-shaped key.

        Heads of this model that the checkpoint lacks are initialised fresh; heads of other tasks are ignored.
        With `partial`, any missing key keeps its fresh init (used by `from_towers`).
        """
        state = formats.to_model_layout(state, self.base_model_prefix, self.tower)
        own = self.state_dict()
        state = _adapt(self, state, own)
        missing = [k for k in own if k not in state]
        fresh = [k for k in missing if partial or _is_head(k, self.head_prefixes)]
        missing = [k for k in missing if k not in fresh]
        unexpected = [k for k in state if k not in own and not formats.is_ignorable(k)]
        shapes = [
            f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
            for k in state
            if k in own and state[k].shape != own[k].shape
        ]
        if missing or unexpected or shapes:
            raise CheckpointMismatchError(
                _mismatch_message(source, type(self).__name__, missing, unexpected, shapes)
            )
        self.load_state_dict({k: v for k, v in state.items() if k in own}, strict=False)
        if fresh and not partial:
            log.info("%s: newly initialised from scratch: %s", type(self).__name__, ", ".join(sorted(fresh)))
        if "rank_output.weight" in fresh and hasattr(self, "init_rank_output"):
            self.init_rank_output()


def _is_head(key: str, prefixes: tuple[str, ...]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def _apply_overrides(config: BridgeTowerConfig, overrides: dict[str, Any]) -> BridgeTowerConfig:
    if not overrides:
        return config
    vision_keys = {"image_size", "patch_size"}
    nested = {k: overrides.pop(k) for k in list(overrides) if k in vision_keys}
    if nested:
        overrides["vision"] = {**(overrides.get("vision") or {}), **nested}
    return config.replace(**overrides)


def _adapt(
    model: nn.Module, state: dict[str, torch.Tensor], own: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Shape changes that are part of the recipe: position-table resize, NLVR2's third token type."""
    from bridgetower.vision import resize_positions

    state = dict(state)
    for key, value in list(state.items()):
        if key not in own or value.shape == own[key].shape:
            continue
        target = own[key]
        if key.endswith("embeddings.position_embedding.weight") and value.shape[1] == target.shape[1]:
            state[key] = resize_positions(value, int(round((target.shape[0] - 1) ** 0.5)))
        elif key.endswith("token_type_embeddings.weight") and value.shape[0] == 2 and target.shape[0] == 3:
            state[key] = torch.cat([value, value[1:2]])  # the second image starts as the first
    return state


def _mismatch_message(
    source: str, model: str, missing: list[str], unexpected: list[str], shapes: list[str]
) -> str:
    lines = [f"checkpoint {source} does not fit {model}:"]
    for title, items in (("missing", missing), ("unexpected", unexpected), ("mis-shaped", shapes)):
        if items:
            shown = ", ".join(items[:12]) + (f", ... ({len(items) - 12} more)" if len(items) > 12 else "")
            lines.append(f"  {len(items)} {title} keys: {shown}")
    lines.append(
        "  check that the checkpoint matches the model class and config (preset, bridge, num_layers)."
    )
    return "\n".join(lines)
