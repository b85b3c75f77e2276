"""Image transforms without torchvision: PIL resize/crop + CLIP normalisation (reference §5).

Evaluation transforms: `image_to_tensor(image, size, mode="blip"|"clip")`.
Training transforms (official BridgeTower `transform.py`, ViLT `randaug.py`, BLIP `randaugment.py`), keyed in
`TRANSFORMS` and wrapped by `train_transform(name, size)`; every random draw comes from a `random.Random`
passed in, so a transform is deterministic given its rng and never touches global random state:

- `clip`: bicubic resize of the shorter side + centre crop (train = eval).
- `blip`: bicubic resize to size x size (fine-tuning eval transform).
- `blip_randaug_wc`: RandomResizedCrop(scale 0.5-1) -> horizontal flip (p=0.5) -> ViLT RandAugment(2, 7).
- `blip_randaug_wohf`: RandomResizedCrop(scale 0.5-1) -> BLIP RandomAugment(2, 5); no flip (VQA recipe).
- `clip_randaug`: ViLT RandAugment(2, 9) on the source image, then `clip`.

Caveat for the synthetic shapes data (VQA answers about colour, left/right/top/bottom position and counts):
colour-changing ops (Solarize, SolarizeAdd, Posterize, Color, Contrast, Invert, and to a lesser degree
AutoContrast/Equalize) can change a "what colour" answer; a horizontal flip swaps "left"/"right"; random
crops, translations, rotations and shears can push a shape (partly) out of the frame and change counts and
positions. The official VQA recipe (`blip_randaug_wohf`) drops the flip for this reason, and at M=5 its
Brightness/Sharpness factors are exactly 1.0 (no-ops), so it changes no colours; `blip_randaug_wc` and
`clip_randaug` do change colours and should not be used for colour questions without relabelling.

Deviations from the official code: ViLT's affine ops and rotation fill with grey (128, 128, 128) here instead
of PIL's default black (BLIP already used grey); BLIP's cv2 ops are re-done with PIL equivalents (bilinear
warps with the same matrices, PIL autocontrast/equalize which BLIP's numpy code replicates).
"""

from __future__ import annotations

import io
import math
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageOps

if TYPE_CHECKING:  # torch is imported only where a tensor is made: data processes never pay for it
    import torch

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
FILL = (128, 128, 128)

# A PIL op taking (image, magnitude value, rng) and returning a new image.
Op = Callable[[Image.Image, float, random.Random], Image.Image]


def normalized_array(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> [3, H, W] float32 array with CLIP mean/std."""
    x = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    x = (x - np.asarray(CLIP_MEAN, np.float32)) / np.asarray(CLIP_STD, np.float32)
    return np.ascontiguousarray(x.transpose(2, 0, 1))


def uint8_array(image: Image.Image) -> np.ndarray:
    """RGB PIL image -> [3, H, W] uint8 array (4x less to move than float; the model normalises it)."""
    return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1))


def normalize(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] float tensor with CLIP mean/std."""
    import torch

    return torch.from_numpy(normalized_array(image))


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


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes into an RGB PIL image; ValueError on corrupt data."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.convert("RGB")  # convert() forces the full decode inside the try
    # UnidentifiedImageError/truncation are OSError; some plugins raise SyntaxError/ValueError on bad chunks.
    except Image.UnidentifiedImageError:
        # PIL's own message names the in-memory buffer object, which tells the reader nothing
        head = bytes(data[:8])
        raise ValueError(
            f"cannot decode image: {len(data)} bytes in no image format PIL reads (they start {head!r})"
        ) from None
    except (OSError, SyntaxError, ValueError) as err:
        raise ValueError(f"cannot decode image: {err}") from err


# ---------------------------------------------------------------- crop and flip (torchvision semantics)


def random_resized_crop_box(
    width: int,
    height: int,
    rng: random.Random,
    scale: tuple[float, float] = (0.5, 1.0),
    ratio: tuple[float, float] = (3 / 4, 4 / 3),
) -> tuple[int, int, int, int]:
    """torchvision RandomResizedCrop box (left, top, w, h): 10 area/log-ratio tries, else a centre crop."""
    area = width * height
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    for _ in range(10):
        target = area * rng.uniform(*scale)
        aspect = math.exp(rng.uniform(log_lo, log_hi))
        w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, width - w), rng.randint(0, height - h), w, h
    return _center_box(width, height, ratio)


def _center_box(width: int, height: int, ratio: tuple[float, float]) -> tuple[int, int, int, int]:
    """Fallback: the largest centred box whose aspect is clamped into `ratio`."""
    w, h = width, height
    if width / height < ratio[0]:
        h = round(width / ratio[0])
    elif width / height > ratio[1]:
        w = round(height * ratio[1])
    return (width - w) // 2, (height - h) // 2, w, h


def random_resized_crop(
    image: Image.Image, size: int, rng: random.Random, scale: tuple[float, float] = (0.5, 1.0)
) -> Image.Image:
    """Crop a random box (see `random_resized_crop_box`) and resize it bicubically to size x size."""
    left, top, w, h = random_resized_crop_box(*image.size, rng, scale)
    return image.crop((left, top, left + w, top + h)).resize((size, size), Image.BICUBIC)


def random_hflip(image: Image.Image, rng: random.Random, p: float = 0.5) -> Image.Image:
    """Mirror left-right with probability p."""
    return ImageOps.mirror(image) if rng.random() < p else image


# ---------------------------------------------------------------- ViLT RandAugment ops: (image, value, rng)


def _signed(v: float, rng: random.Random) -> float:
    return -v if rng.random() > 0.5 else v


def _affine(image: Image.Image, coeffs: tuple, resample=Image.Resampling.NEAREST) -> Image.Image:
    # PIL's AFFINE maps output (x, y) to input (a x + b y + c, d x + e y + f).
    return image.transform(image.size, Image.Transform.AFFINE, coeffs, resample, fillcolor=FILL)


def _auto_contrast(image, _v, _rng):
    return ImageOps.autocontrast(image)


def _equalize(image, _v, _rng):
    return ImageOps.equalize(image)


def _invert(image, _v, _rng):
    return ImageOps.invert(image)


def _rotate(image, v, rng):
    return image.rotate(_signed(v, rng), fillcolor=FILL)


def _posterize(image, v, _rng):
    # Official range (0, 4) bits truncated and floored at 1: m=7 and m=9 both posterize to 1 bit.
    return ImageOps.posterize(image, max(1, int(v)))


def _solarize(image, v, _rng):
    return ImageOps.solarize(image, v)


def _solarize_add(image, v, _rng):
    shifted = np.clip(np.asarray(image, dtype=np.float32) + v, 0, 255).astype(np.uint8)
    return ImageOps.solarize(Image.fromarray(shifted), 128)


def _enhancer(cls) -> Op:
    return lambda image, v, _rng: cls(image).enhance(v)


def _shear_x(image, v, rng):
    return _affine(image, (1, _signed(v, rng), 0, 0, 1, 0))


def _shear_y(image, v, rng):
    return _affine(image, (1, 0, 0, _signed(v, rng), 1, 0))


def _translate_x_abs(image, v, rng):
    # Absolute pixels (up to 100 at m=30), independent of the image size.
    return _affine(image, (1, 0, _signed(v, rng), 0, 1, 0))


def _translate_y_abs(image, v, rng):
    return _affine(image, (1, 0, 0, 0, 1, _signed(v, rng)))


def _cutout_abs(image, v, rng):
    w, h = image.size
    x0, y0 = int(max(0, rng.uniform(0, w) - v / 2)), int(max(0, rng.uniform(0, h) - v / 2))
    image = image.copy()
    ImageDraw.Draw(image).rectangle((x0, y0, min(w, x0 + v), min(h, y0 + v)), (125, 123, 114))
    return image


# (op, min, max) as in the official ViLT/BridgeTower list; Invert and CutoutAbs are commented out there.
VILT_OPS: tuple[tuple[Op, float, float], ...] = (
    (_auto_contrast, 0, 1),
    (_equalize, 0, 1),
    (_rotate, 0, 30),
    (_posterize, 0, 4),
    (_solarize, 0, 256),
    (_solarize_add, 0, 110),
    (_enhancer(ImageEnhance.Color), 0.1, 1.9),
    (_enhancer(ImageEnhance.Contrast), 0.1, 1.9),
    (_enhancer(ImageEnhance.Brightness), 0.1, 1.9),
    (_enhancer(ImageEnhance.Sharpness), 0.1, 1.9),
    (_shear_x, 0.0, 0.3),
    (_shear_y, 0.0, 0.3),
    (_translate_x_abs, 0.0, 100),
    (_translate_y_abs, 0.0, 100),
)
VILT_DISABLED_OPS: tuple[tuple[Op, float, float], ...] = ((_invert, 0, 1), (_cutout_abs, 0, 40))


def rand_augment(
    image: Image.Image, n: int, m: float, rng: random.Random, ops: tuple = VILT_OPS
) -> Image.Image:
    """ViLT RandAugment: n ops drawn with replacement, each at value min + m/30 * (max - min)."""
    for op, lo, hi in rng.choices(ops, k=n):
        image = op(image, m / 30 * (hi - lo) + lo, rng)
    return image


# ---------------------------------------------------------------- BLIP RandomAugment ops: (image, level, rng)

BLIP_MAX_LEVEL = 10
BLIP_TRANSLATE_PX = 10
_BILINEAR = Image.Resampling.BILINEAR  # BLIP warps with cv2 INTER_LINEAR


def _blip_enhancer(cls) -> Op:
    # level 5 of 10 gives factor 1.0, i.e. the identity.
    return lambda image, level, _rng: cls(image).enhance(level / BLIP_MAX_LEVEL * 1.8 + 0.1)


def _blip_shear_x(image, level, rng):
    # cv2 matrix [[1, f, 0], [0, 1, 0]] maps input to output; PIL wants its inverse.
    f = _signed(level / BLIP_MAX_LEVEL * 0.3, rng)
    return _affine(image, (1, -f, 0, 0, 1, 0), _BILINEAR)


def _blip_shear_y(image, level, rng):
    f = _signed(level / BLIP_MAX_LEVEL * 0.3, rng)
    return _affine(image, (1, 0, 0, -f, 1, 0), _BILINEAR)


def _blip_translate_x(image, level, rng):
    offset = _signed(level / BLIP_MAX_LEVEL * BLIP_TRANSLATE_PX, rng)
    return _affine(image, (1, 0, offset, 0, 1, 0), _BILINEAR)


def _blip_translate_y(image, level, rng):
    offset = _signed(level / BLIP_MAX_LEVEL * BLIP_TRANSLATE_PX, rng)
    return _affine(image, (1, 0, 0, 0, 1, offset), _BILINEAR)


def _blip_rotate(image, level, rng):
    return image.rotate(_signed(level / BLIP_MAX_LEVEL * 30, rng), _BILINEAR, fillcolor=FILL)


# The ten operations of BridgeTower's VQA `augs` list, in its order.
BLIP_OPS: dict[str, Op] = {
    "Identity": lambda image, _level, _rng: image,
    "AutoContrast": _auto_contrast,
    "Brightness": _blip_enhancer(ImageEnhance.Brightness),
    "Sharpness": _blip_enhancer(ImageEnhance.Sharpness),
    "Equalize": _equalize,
    "ShearX": _blip_shear_x,
    "ShearY": _blip_shear_y,
    "TranslateX": _blip_translate_x,
    "TranslateY": _blip_translate_y,
    "Rotate": _blip_rotate,
}


def blip_random_augment(image: Image.Image, n: int, m: float, rng: random.Random) -> Image.Image:
    """BLIP RandomAugment: n ops drawn with replacement, each applied with probability 0.5 at level m of 10."""
    for name in rng.choices(list(BLIP_OPS), k=n):
        if rng.random() <= 0.5:
            image = BLIP_OPS[name](image, m, rng)
    return image


# ---------------------------------------------------------------- named training transforms


def _clip(image: Image.Image, size: int, _rng: random.Random) -> Image.Image:
    return clip_resize_crop(image, size)


def _blip(image: Image.Image, size: int, _rng: random.Random) -> Image.Image:
    return image.resize((size, size), Image.BICUBIC)


def _blip_randaug_wc(image: Image.Image, size: int, rng: random.Random) -> Image.Image:
    image = random_hflip(random_resized_crop(image, size, rng), rng)
    return rand_augment(image, 2, 7, rng)


def _blip_randaug_wohf(image: Image.Image, size: int, rng: random.Random) -> Image.Image:
    # No flip: it would swap left/right answers (official VQA recipe).
    return blip_random_augment(random_resized_crop(image, size, rng), 2, 5, rng)


def _clip_randaug(image: Image.Image, size: int, rng: random.Random) -> Image.Image:
    # Official order: RandAugment on the source image, then resize + centre crop.
    return clip_resize_crop(rand_augment(image, 2, 9, rng), size)


# name -> fn(rgb_image, size, rng) -> RGB PIL image of size x size.
TRANSFORMS: dict[str, Callable[[Image.Image, int, random.Random], Image.Image]] = {
    "clip": _clip,
    "blip": _blip,
    "blip_randaug_wc": _blip_randaug_wc,
    "blip_randaug_wohf": _blip_randaug_wohf,
    "clip_randaug": _clip_randaug,
}
# transforms that draw nothing from their rng: the same picture always gives the same pixels
DETERMINISTIC = frozenset({"clip", "blip"})


def to_uint8(image: Image.Image) -> torch.Tensor:
    """RGB PIL image -> [3, H, W] uint8 tensor (4x less to move than float; the model normalises it)."""
    import torch

    return torch.from_numpy(uint8_array(image))


def normalize_pixels(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 [..., 3, H, W] -> float32 with CLIP mean/std (what `normalize` does, on a batch)."""
    import torch

    mean = torch.tensor(CLIP_MEAN, device=pixels.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=pixels.device)[:, None, None]
    return (pixels.float() / 255.0 - mean) / std


def train_transform(
    name: str, size: int, normalized: bool = True, as_numpy: bool = False
) -> Callable[[Image.Image, random.Random], Any]:
    """Training transform `name` as fn(image, rng) -> normalised [3, size, size] float32 tensor
    (or the uint8 pixels when `normalized` is False; numpy arrays instead of tensors when `as_numpy`, so a
    data process need not import torch)."""
    if name not in TRANSFORMS:
        raise ValueError(f"unknown train transform {name!r}; known: {', '.join(TRANSFORMS)}")
    fn = TRANSFORMS[name]
    if as_numpy:
        finish = normalized_array if normalized else uint8_array
    else:
        finish = normalize if normalized else to_uint8

    def apply(image: Image.Image, rng: random.Random) -> Any:
        return finish(fn(image.convert("RGB"), size, rng))

    apply.__name__ = f"train_transform_{name}"
    return apply
