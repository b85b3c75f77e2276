"""BridgeTowerConfig: the sizes of the two towers, the cross-modal encoder, the bridges and the task heads."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any


@dataclass
class VisionConfig:
    """CLIP-ViT tower (pre-LN, QuickGELU)."""

    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int | None = None  # CLIP hard-wires width // 64
    patch_size: int = 16
    image_size: int = 288
    num_channels: int = 3
    layer_norm_eps: float = 1e-5
    # std of the class and position embeddings at init (None: initializer_range). A small model trained from
    # scratch needs them large (e.g. 1.0) to tell where a patch is; checkpoints bring their own
    embedding_init_std: float | None = None

    @property
    def heads(self) -> int:
        return self.num_heads or max(1, self.hidden_size // 64)

    @property
    def num_positions(self) -> int:
        return (self.image_size // self.patch_size) ** 2 + 1


@dataclass
class TextConfig:
    """RoBERTa tower (post-LN, GELU)."""

    vocab_size: int = 50265
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position_embeddings: int = 514
    type_vocab_size: int = 1
    layer_norm_eps: float = 1e-5
    dropout: float = 0.1
    attention_dropout: float = 0.1
    pad_token_id: int = 1
    bos_token_id: int = 0
    eos_token_id: int = 2


@dataclass
class BridgeTowerConfig:
    """Configuration of the backbone and its heads; presets via `BridgeTowerConfig.preset(name)`."""

    vision: VisionConfig = field(default_factory=VisionConfig)
    text: TextConfig = field(default_factory=TextConfig)
    # cross-modal encoder (one stack per modality)
    hidden_size: int = 768
    num_layers: int = 6
    num_heads: int = 12
    intermediate_size: int = 3072
    dropout: float = 0.1
    attention_dropout: float = 0.1
    # bridges: variant name (see bridgetower.bridge.BRIDGES) and which uni-modal layers (0-based) feed them;
    # None means the top `num_layers` layers of each tower
    bridge: str = "add"
    vision_bridge_layers: list[int] | None = None
    text_bridge_layers: list[int] | None = None
    # token types: 0 text, 1 image, 2 the second image of NLVR2
    num_token_types: int = 2
    # LayerNorm eps differ between checkpoint formats (official: 1e-12 in cross layers and the MLM head)
    layer_norm_eps: float = 1e-5  # link towers and the first cross-modal input LNs
    cross_layer_norm_eps: float = 1e-12
    mlm_layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    gradient_checkpointing: bool = False
    # heads
    vqa_num_labels: int = 3129
    # "bce": the official soft-target BCE x number of labels; "ce": soft-target cross-entropy (learns faster
    # from scratch, where BCE first spends its steps pushing every logit down)
    vqa_loss: str = "bce"
    num_labels: int | None = None  # image/text classification
    head_hidden_scale: float | None = None  # None: the task's official value
    itc: bool = False  # pretraining: add the image-text contrastive loss
    contrastive_hidden_size: int = 256
    temperature: float = 0.07
    retrieval_loss: str = "itm"  # "itm" (rank_output over false texts) or "itm_itc" (ALBEF hard negatives)
    k_test: int = 128
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if isinstance(self.text, dict):
            self.text = TextConfig(**self.text)
        self.validate()

    # ---- derived -------------------------------------------------------------------------------------------
    @property
    def vision_levels(self) -> list[int]:
        return _levels(self.vision_bridge_layers, self.vision.num_layers, self.num_layers, "vision")

    @property
    def text_levels(self) -> list[int]:
        return _levels(self.text_bridge_layers, self.text.num_layers, self.num_layers, "text")

    def validate(self) -> None:
        from bridgetower.bridge import BRIDGES

        _check_fields(self.vision, "vision.")
        _check_fields(self.text, "text.")
        _check_fields(self, "")
        if self.bridge not in BRIDGES:
            raise ValueError(f"unknown bridge {self.bridge!r}; known: {', '.join(sorted(BRIDGES))}")
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size {self.hidden_size} is not a multiple of num_heads {self.num_heads}"
            )
        if self.text.hidden_size % self.text.num_heads:
            raise ValueError(
                f"text.hidden_size {self.text.hidden_size} is not a multiple of text.num_heads {self.text.num_heads}"
            )
        if self.vision.image_size % self.vision.patch_size:
            raise ValueError(
                f"vision.image_size {self.vision.image_size} is not a multiple of patch_size {self.vision.patch_size}"
            )
        if self.retrieval_loss not in ("itm", "itm_itc"):
            raise ValueError(f"retrieval_loss must be 'itm' or 'itm_itc', not {self.retrieval_loss!r}")
        _ = self.vision_levels, self.text_levels

    # ---- presets and (de)serialisation --------------------------------------------------------------------
    @classmethod
    def preset(cls, name: str, **overrides: Any) -> BridgeTowerConfig:
        """`tiny` (tests, quickstart), `base` and `large` (the paper's)."""
        if name not in PRESETS:
            raise ValueError(f"unknown preset {name!r}; known: {', '.join(PRESETS)}")
        cfg = cls.from_dict(json.loads(json.dumps(PRESETS[name])))
        return cfg.replace(**overrides) if overrides else cfg

    def replace(self, **overrides: Any) -> BridgeTowerConfig:
        d = self.to_dict()
        for key, value in overrides.items():
            if key in ("vision", "text") and isinstance(value, dict):
                d[key].update(value)
            else:
                d[key] = value
        return BridgeTowerConfig.from_dict(d)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BridgeTowerConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown BridgeTowerConfig keys: {', '.join(unknown)}")
        for key, sub in (("vision", VisionConfig), ("text", TextConfig)):
            if isinstance(d.get(key), dict):
                bad = sorted(set(d[key]) - {f.name for f in fields(sub)})
                if bad:
                    raise ValueError(f"unknown {key} config keys: {', '.join(bad)}")
        return cls(**d)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BridgeTowerConfig) and self.to_dict() == other.to_dict()


def _levels(chosen: list[int] | None, depth: int, num_cross: int, tower: str) -> list[int]:
    if chosen is None:
        return list(range(depth - num_cross, depth))
    levels = list(chosen)
    if len(levels) != num_cross:
        raise ValueError(
            f"{tower}_bridge_layers has {len(levels)} entries, needs one per cross-modal layer ({num_cross})"
        )
    if sorted(set(levels)) != levels or levels[0] < 0 or levels[-1] >= depth:
        raise ValueError(f"{tower}_bridge_layers must be increasing indices in [0, {depth}); got {levels}")
    return levels


# sizes and counts that must be at least 1, and rates that must lie in [0, 1)
_POSITIVE = {
    "hidden_size", "num_layers", "num_heads", "intermediate_size", "patch_size", "image_size", "num_channels",
    "vocab_size", "max_position_embeddings", "type_vocab_size", "num_token_types", "vqa_num_labels",
    "num_labels", "contrastive_hidden_size", "k_test",
}  # fmt: skip
_RATES = {"dropout", "attention_dropout"}
_NUMBER = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,)}


def _check_fields(config: Any, prefix: str) -> None:
    """Each field of the expected type (an int where an int belongs), sizes positive, dropout rates in [0, 1)."""
    for f in fields(config):
        value = getattr(config, f.name)
        kind = str(f.type)
        optional = kind.endswith(" | None")
        kind = kind.removesuffix(" | None")
        if value is None:
            if not optional:
                raise ValueError(f"{prefix}{f.name} needs a value ({kind}), got None")
            continue
        if kind in _NUMBER:
            if isinstance(value, bool) != (kind == "bool") or not isinstance(value, _NUMBER[kind]):
                raise ValueError(
                    f"{prefix}{f.name} must be {'an' if kind == 'int' else 'a'} {kind}, got {value!r}"
                )
            if f.name in _POSITIVE and value < 1:
                raise ValueError(f"{prefix}{f.name} must be at least 1, got {value!r}")
            if f.name in _RATES and not 0 <= value < 1:
                raise ValueError(f"{prefix}{f.name} must be in [0, 1), got {value!r}")
            positive = f.name.endswith("_eps") or f.name == "temperature"
            if (positive and value <= 0) or (f.name == "initializer_range" and value < 0):
                raise ValueError(f"{prefix}{f.name} must be positive, got {value!r}")
        elif kind.startswith("list[int]") and (
            not isinstance(value, list)
            or not all(isinstance(v, int) and not isinstance(v, bool) for v in value)
        ):
            raise ValueError(f"{prefix}{f.name} must be a list of layer indices, got {value!r}")


_BASE = {
    "vision": {"hidden_size": 768, "num_layers": 12, "patch_size": 16, "image_size": 288},
    "text": {"hidden_size": 768, "num_layers": 12, "num_heads": 12, "intermediate_size": 3072},
    "hidden_size": 768,
    "num_layers": 6,
    "num_heads": 12,
    "intermediate_size": 3072,
}
_LARGE = {
    "vision": {"hidden_size": 1024, "num_layers": 24, "patch_size": 14, "image_size": 294},
    "text": {"hidden_size": 1024, "num_layers": 24, "num_heads": 16, "intermediate_size": 4096},
    "hidden_size": 1024,
    "num_layers": 6,
    "num_heads": 16,
    "intermediate_size": 4096,
}
# Tiny: a few M parameters; 64 px / patch 8 keeps one object per patch-sized region of the synthetic pictures.
_TINY = {
    "vision": {"hidden_size": 128, "num_layers": 4, "patch_size": 8, "image_size": 64},
    "text": {
        "vocab_size": 1024,
        "hidden_size": 128,
        "num_layers": 4,
        "num_heads": 4,
        "intermediate_size": 512,
        "max_position_embeddings": 66,
    },
    "hidden_size": 128,
    "num_layers": 2,
    "num_heads": 4,
    "intermediate_size": 512,
    "vqa_num_labels": 32,
    "contrastive_hidden_size": 64,
}
PRESETS: dict[str, dict[str, Any]] = {"tiny": _TINY, "base": _BASE, "large": _LARGE}

__all__ = ["BridgeTowerConfig", "VisionConfig", "TextConfig", "PRESETS"]
