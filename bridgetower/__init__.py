"""BridgeTower: CLIP-ViT and RoBERTa towers bridged into a co-attention cross-modal encoder (AAAI 2023).

Usable alone (torch + transformers/tokenizers/safetensors); the `btp` platform trains it at scale.
"""

from __future__ import annotations

import importlib
from typing import Any

# Names are imported on first use (PEP 562): the data-side modules (`bridgetower.batches`,
# `bridgetower.transforms`) stay free of torch, so a data process starts without importing it.
_EXPORTS = {
    "BRIDGES": "bridge",
    "register_bridge": "bridge",
    "PRESETS": "config",
    "BridgeTowerConfig": "config",
    "TextConfig": "config",
    "VisionConfig": "config",
    "CheckpointFormatError": "formats",
    "BridgeTowerModel": "model",
    "BridgeTowerOutput": "model",
    "CheckpointMismatchError": "pretrained",
    "TASK_MODELS": "tasks",
    "BridgeTowerForImageClassification": "tasks",
    "BridgeTowerForNLVR2": "tasks",
    "BridgeTowerForPretraining": "tasks",
    "BridgeTowerForRetrieval": "tasks",
    "BridgeTowerForSNLIVE": "tasks",
    "BridgeTowerForTextClassification": "tasks",
    "BridgeTowerForVQA": "tasks",
    "TaskOutput": "tasks",
    "itm_negative_index": "tasks",
}


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'bridgetower' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"bridgetower.{_EXPORTS[name]}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


__all__ = [
    "BRIDGES",
    "PRESETS",
    "TASK_MODELS",
    "BridgeTowerConfig",
    "BridgeTowerForImageClassification",
    "BridgeTowerForNLVR2",
    "BridgeTowerForPretraining",
    "BridgeTowerForRetrieval",
    "BridgeTowerForSNLIVE",
    "BridgeTowerForTextClassification",
    "BridgeTowerForVQA",
    "BridgeTowerModel",
    "BridgeTowerOutput",
    "CheckpointFormatError",
    "CheckpointMismatchError",
    "TaskOutput",
    "TextConfig",
    "VisionConfig",
    "itm_negative_index",
    "register_bridge",
]
