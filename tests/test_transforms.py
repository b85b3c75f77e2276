"""Training/eval image transforms: shapes, normalisation range, determinism, crop/flip semantics, decoding."""

from __future__ import annotations

import io
import random

import numpy as np
import pytest
import torch
from PIL import Image

from bridgetower.transforms import (
    BLIP_OPS,
    CLIP_MEAN,
    CLIP_STD,
    TRANSFORMS,
    VILT_DISABLED_OPS,
    VILT_OPS,
    decode_image,
    image_to_tensor,
    random_hflip,
    random_resized_crop_box,
    train_transform,
)

NAMES = ["clip", "blip", "blip_randaug_wc", "blip_randaug_wohf", "clip_randaug"]
RANDOM_NAMES = ["blip_randaug_wc", "blip_randaug_wohf", "clip_randaug"]
RED, GREEN, BLUE = (255, 0, 0), (0, 255, 0), (0, 0, 255)


def bands(width: int, height: int, colours: list[tuple[int, int, int]]) -> Image.Image:
    """Picture of equal-width vertical colour bands, left to right."""
    image = Image.new("RGB", (width, height))
    step = width // len(colours)
    for i, colour in enumerate(colours):
        image.paste(colour, (i * step, 0, width if i == len(colours) - 1 else (i + 1) * step, height))
    return image


def shapes_image(seed: int = 0) -> Image.Image:
    """Non-square picture with a few coloured rectangles on a textured background."""
    rs = np.random.RandomState(seed)
    arr = rs.randint(0, 256, (120, 160, 3), dtype=np.uint8)
    for _ in range(4):
        x, y = rs.randint(0, 120), rs.randint(0, 80)
        arr[y : y + 30, x : x + 30] = rs.randint(0, 256, 3)
    return Image.fromarray(arr)


def to_pixels(x: torch.Tensor) -> np.ndarray:
    """Undo CLIP normalisation: [3, H, W] tensor -> [H, W, 3] array in 0..255."""
    mean, std = torch.tensor(CLIP_MEAN)[:, None, None], torch.tensor(CLIP_STD)[:, None, None]
    return ((x * std + mean) * 255).permute(1, 2, 0).numpy()


def red_left_of_blue(pixels: np.ndarray) -> bool:
    """Whether the x-centroid of reddish pixels lies left of that of bluish ones (both must exist)."""
    r, b = pixels[..., 0], pixels[..., 2]
    xs = np.broadcast_to(np.arange(pixels.shape[1]), r.shape)
    red, blue = r > b + 64, b > r + 64
    assert red.any() and blue.any()
    return xs[red].mean() < xs[blue].mean()


def test_registry_names():
    assert list(TRANSFORMS) == NAMES


@pytest.mark.parametrize("size", [32, 64])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_and_range(name, size):
    """Output is [3, size, size] float32 within the CLIP-normalised image of [0, 1]."""
    x = train_transform(name, size)(shapes_image(), random.Random(0))
    assert x.shape == (3, size, size) and x.dtype == torch.float32
    lo = (0 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    hi = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    assert torch.all(x >= lo[:, None, None] - 1e-5) and torch.all(x <= hi[:, None, None] + 1e-5)


@pytest.mark.parametrize("name", NAMES)
def test_deterministic_given_rng_and_ignores_global_state(name):
    """Same seed -> identical tensor, whatever the global random/numpy state."""
    fn, image = train_transform(name, 48), shapes_image()
    random.seed(1)
    np.random.seed(1)
    a = fn(image, random.Random(7))
    random.seed(2)
    np.random.seed(2)
    b = fn(image, random.Random(7))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", RANDOM_NAMES)
def test_random_transforms_depend_on_seed(name):
    fn, image = train_transform(name, 48), shapes_image()
    first = fn(image, random.Random(0))
    assert any(not torch.equal(first, fn(image, random.Random(s))) for s in range(1, 6))


@pytest.mark.parametrize("name", ["clip", "blip"])
def test_plain_transforms_match_eval(name):
    """`clip`/`blip` ignore the rng and equal the evaluation transform."""
    image = shapes_image()
    a = train_transform(name, 40)(image, random.Random(0))
    b = train_transform(name, 40)(image, random.Random(99))
    assert torch.equal(a, b) and torch.equal(a, image_to_tensor(image, 40, mode=name))


def test_clip_crops_the_centre():
    """A 5:1 red|green x3|blue picture: `clip` keeps only the green centre, `blip` squeezes in all bands."""
    image = bands(500, 100, [RED, GREEN, GREEN, GREEN, BLUE])  # green margins absorb bicubic ringing
    px = to_pixels(train_transform("clip", 32)(image, random.Random(0)))
    assert np.abs(px - np.array(GREEN)).max() < 2
    squeezed = to_pixels(train_transform("blip", 32)(image, random.Random(0)))
    assert (
        np.abs(squeezed[:, 2] - np.array(RED)).max() < 2
        and np.abs(squeezed[:, -3] - np.array(BLUE)).max() < 2
    )


def test_wohf_never_flips():
    """Red-left/blue-right stays red-left in every seed (rotate/shear/translate move content, never mirror)."""
    fn, image = train_transform("blip_randaug_wohf", 64), bands(96, 96, [RED, BLUE])
    assert all(red_left_of_blue(to_pixels(fn(image, random.Random(s)))) for s in range(30))


def test_wc_flips_in_some_seeds():
    """`blip_randaug_wc` mirrors roughly half the time."""
    fn, image = train_transform("blip_randaug_wc", 64), bands(96, 96, [RED, BLUE])
    kept = []
    for s in range(40):
        px = to_pixels(fn(image, random.Random(s)))
        if (px[..., 0] > px[..., 2] + 64).any() and (px[..., 2] > px[..., 0] + 64).any():
            kept.append(red_left_of_blue(px))  # colour-changing ops may erase a class: skip those seeds
    assert len(kept) >= 20 and 0.2 < 1 - np.mean(kept) < 0.8


def test_random_hflip_probability_extremes():
    image = bands(20, 10, [RED, BLUE])
    assert random_hflip(image, random.Random(0), p=0.0) is image
    assert np.asarray(random_hflip(image, random.Random(0), p=1.0))[0, 0].tolist() == list(BLUE)


@pytest.mark.parametrize("width,height", [(1000, 800), (800, 1000), (640, 640)])
def test_random_resized_crop_box_respects_scale_and_ratio(width, height):
    """Boxes lie inside the image, cover 50-100 % of its area (up to rounding) with aspect in [3/4, 4/3]."""
    areas = []
    for s in range(500):
        left, top, w, h = random_resized_crop_box(width, height, random.Random(s))
        assert 0 <= left <= width - w and 0 <= top <= height - h
        areas.append(w * h / (width * height))
        assert 3 / 4 - 0.01 <= w / h <= 4 / 3 + 0.01
    assert min(areas) >= 0.5 - 0.01 and max(areas) <= 1.0
    assert 0.6 < np.mean(areas) < 0.8


def test_random_resized_crop_box_fallback_is_centred():
    """A 20:1 strip defeats all 10 tries: fall back to the centred box clamped to ratio 4/3."""
    assert random_resized_crop_box(1000, 50, random.Random(0)) == (466, 0, 67, 50)
    assert random_resized_crop_box(50, 1000, random.Random(0)) == (0, 466, 50, 67)


@pytest.mark.parametrize("op,lo,hi", VILT_OPS + VILT_DISABLED_OPS)
def test_vilt_ops_keep_size_and_mode(op, lo, hi):
    image = shapes_image()
    out = op(image, (lo + hi) / 2, random.Random(0))
    assert out.size == image.size and out.mode == "RGB"


@pytest.mark.parametrize("name", list(BLIP_OPS))
def test_blip_ops_keep_size_and_mode(name):
    image = shapes_image()
    out = BLIP_OPS[name](image, 5, random.Random(0))
    assert out.size == image.size and out.mode == "RGB"


def test_blip_enhance_is_identity_at_level_5():
    """BLIP's factor is level/10*1.8+0.1 = 1.0 at the VQA magnitude 5: no colour change."""
    image = shapes_image()
    for name in ("Brightness", "Sharpness"):
        assert np.array_equal(np.asarray(BLIP_OPS[name](image, 5, random.Random(0))), np.asarray(image))


def test_decode_image_roundtrip_to_rgb():
    buf = io.BytesIO()
    Image.new("RGBA", (7, 5), (10, 20, 30, 40)).save(buf, format="PNG")
    image = decode_image(buf.getvalue())
    assert image.mode == "RGB" and image.size == (7, 5) and image.getpixel((0, 0)) == (10, 20, 30)


def test_decode_image_rejects_corrupt_bytes():
    buf = io.BytesIO()
    shapes_image().save(buf, format="PNG")
    for data in (b"not an image at all", b"", buf.getvalue()[: len(buf.getvalue()) // 2]):
        with pytest.raises(ValueError, match="cannot decode image") as err:
            decode_image(data)
        assert "object at 0x" not in str(err.value)  # no in-memory buffer's address
    with pytest.raises(ValueError, match=r"19 bytes in no image format PIL reads \(they start b'not an i'\)"):
        decode_image(b"not an image at all")


def test_unknown_transform_name():
    with pytest.raises(ValueError, match="unknown train transform.*blip_randaug_wohf"):
        train_transform("pixelbert", 64)
