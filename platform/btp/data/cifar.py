"""CIFAR-10/100 from the official *binary* version: fixed-size records of label bytes + 32x32x3 pixels.

The python version is pickled, and loading a pickle can run code: it is never read here.
Layouts (https://www.cs.toronto.edu/~kriz/cifar.html):
  cifar-10-batches-bin/   data_batch_{1..5}.bin, test_batch.bin, batches.meta.txt      record: label, 3072 px
  cifar-100-binary/       train.bin, test.bin, fine_label_names.txt, coarse_label_names.txt
                                                                              record: coarse, fine, 3072 px
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from btp.data.scenes import encode_png

PIXELS = 32 * 32 * 3  # channel planes R, G, B, each 32 rows of 32


class CifarError(ValueError):
    """A CIFAR binary file that does not have the official layout; the message names the file and record."""


@dataclass(frozen=True)
class Variant:
    """Where one CIFAR variant keeps its files, and how its records are laid out."""

    folder: str
    splits: dict[str, tuple[str, ...]]
    names_file: str
    label_bytes: int  # bytes before the pixels; the class is the last of them (CIFAR-100: coarse, then fine)

    @property
    def record(self) -> int:
        return self.label_bytes + PIXELS


VARIANTS = {
    "cifar10": Variant(
        "cifar-10-batches-bin",
        {"train": tuple(f"data_batch_{i}.bin" for i in range(1, 6)), "test": ("test_batch.bin",)},
        "batches.meta.txt",
        1,
    ),
    "cifar100": Variant(
        "cifar-100-binary", {"train": ("train.bin",), "test": ("test.bin",)}, "fine_label_names.txt", 2
    ),
}


def folder_of(raw: Path, variant: Variant) -> Path:
    """The unpacked folder: `raw` itself, or `raw/cifar-10-batches-bin` (`raw/cifar-100-binary`)."""
    inner = raw / variant.folder
    return inner if inner.is_dir() else raw


def label_names(folder: Path, variant: Variant) -> list[str]:
    """Class names, one per line of the meta file (blank lines ignored)."""
    path = folder / variant.names_file
    if not path.is_file():
        raise CifarError(
            f"{path} not found: it should hold the class names; point --raw at the unpacked binary version "
            f"({variant.folder}/); the python version (pickles) is never read"
        )
    names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    if not names:
        raise CifarError(f"{path}: no class names in it; re-download the binary version")
    return names


def read_records(path: Path, variant: Variant, classes: int) -> Iterator[tuple[int, bytes]]:
    """(class, PNG bytes) per record of one binary file, in file order."""
    if not path.is_file():
        raise CifarError(
            f"{path} not found: it should hold {variant.folder} records; point --raw at the unpacked binary "
            "version (the python version's pickles are never read)"
        )
    data = path.read_bytes()
    if not data or len(data) % variant.record:
        raise CifarError(
            f"{path}: {len(data)} bytes is not a whole number of {variant.record}-byte records; the file is "
            "truncated or not the binary version; re-download it"
        )
    records = np.frombuffer(data, np.uint8).reshape(-1, variant.record)
    for index, record in enumerate(records):
        label = int(record[variant.label_bytes - 1])
        if label >= classes:
            raise CifarError(
                f"{path} record {index}: label {label} is outside the {classes} classes of {variant.names_file}"
            )
        pixels = record[variant.label_bytes :].reshape(3, 32, 32).transpose(1, 2, 0)
        yield label, encode_png(Image.fromarray(np.ascontiguousarray(pixels), "RGB"))
