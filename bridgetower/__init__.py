"""BridgeTower: CLIP-ViT and RoBERTa towers bridged into a co-attention cross-modal encoder (AAAI 2023).

Usable alone (torch + transformers/tokenizers/safetensors); the `btp` platform trains it at scale.
"""

from bridgetower.bridge import BRIDGES, register_bridge
from bridgetower.config import PRESETS, BridgeTowerConfig, TextConfig, VisionConfig
from bridgetower.formats import CheckpointFormatError
from bridgetower.model import BridgeTowerModel, BridgeTowerOutput
from bridgetower.pretrained import CheckpointMismatchError
from bridgetower.tasks import (
    TASK_MODELS,
    BridgeTowerForImageClassification,
    BridgeTowerForNLVR2,
    BridgeTowerForPretraining,
    BridgeTowerForRetrieval,
    BridgeTowerForSNLIVE,
    BridgeTowerForTextClassification,
    BridgeTowerForVQA,
    TaskOutput,
    itm_negative_index,
)

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
