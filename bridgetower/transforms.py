"""Image transforms without torchvision: PIL resize/crop + CLIP normalisation (reference §5)."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def normalize(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float tensor with CLIP mean/std."""
    x = torch.from_numpy(np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0).permute(2, 0, 1)
    return (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]


def clip_resize_crop(image: Image.Image, size: int) -> Image.Image:
    """`clip`: bicubic resize of the shorter side to `size`, then a centre crop."""
    w, h = image.size
    scale = size / min(w, h)
    image = image.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.BICUBIC)
    w, h = image.size
    left, top = (w - size) // 2, (h - size) // 2
    return image.crop((left, top, left + size, top + size))


def image_to_tensor(image: Image.Image, size: int, mode: str = "blip") -> torch.Tensor:
    """Evaluation transform: `blip` resizes to size x size (fine-tuning eval), `clip` resizes and centre-crops."""
    if mode == "blip":
        image = image.convert("RGB").resize((size, size), Image.BICUBIC)
    elif mode == "clip":
        image = clip_resize_crop(image.convert("RGB"), size)
    else:
        raise ValueError(f"unknown eval transform {mode!r}; use 'blip' or 'clip'")
    return normalize(image)
