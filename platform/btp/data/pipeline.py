"""Ray Data pipeline: shards -> per-task samples -> decoded, transformed, tokenized, masked model batches.

The CPU work lives in `bridgetower.batches` and `bridgetower.transforms`; this module only schedules it with
`map_batches`, so accelerator workers receive fixed-shape arrays.
"""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import ray.data

from bridgetower import batches as B
from bridgetower import tokenization
from bridgetower.transforms import DETERMINISTIC, decode_image, train_transform
from btp.data.shards import read_shards

log = logging.getLogger("btp.data")

TASK_COLUMNS = B.COLUMNS


@dataclass
class DataSpec:
    """Everything the pipeline needs to turn shards into batches for one task."""

    task: str
    paths: Sequence[str]
    tokenizer: str
    image_size: int
    max_text_len: int = 40
    mlm_probability: float = 0.15  # pretraining: share of the text tokens MLM predicts
    transform: str = "clip"
    seed: int = 0
    epoch: int = 0
    vqa_num_labels: int | None = None
    num_labels: int | None = None  # image/text classification: labels must lie in 0..num_labels-1
    uint8_pixels: bool = True  # the model normalises uint8 pixels itself; 4x less data to move
    on_bad_row: str = "error"  # or "skip": the row is dropped, counted, and a warning names file, row, reason
    skip_counter: str | None = None  # name of the SkipCounter actor (set by build_dataset)
    map_batch_size: int = 64
    shuffle_files: bool = True
    # Ray's logical CPUs per read/preprocess task: below 1 so that data tasks still fit beside fractional
    # train workers and a Tune trial's driver (a task asking for a whole CPU would wait forever for one)
    cpus_per_task: float = 0.25
    concurrency: int = 0  # most read / preprocessing tasks at once (0: as many as their CPUs allow)
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.task not in TASK_COLUMNS:
            raise ValueError(f"unknown task {self.task!r}; known: {', '.join(TASK_COLUMNS)}")
        if self.on_bad_row not in ("error", "skip"):
            raise ValueError(f"on_bad_row must be 'error' or 'skip', not {self.on_bad_row!r}")


@functools.lru_cache(maxsize=4)
def load_tokenizer(path: str) -> Any:
    """One tokenizer per worker process (a stateless function keeps the map a parallel task operator).

    Through `tokenizers` alone where the directory allows it: a data process then never imports torch."""
    return tokenization.load_tokenizer(path)


def _image_fn(spec: DataSpec):
    """The sample transform for one preprocess call. A deterministic transform runs once per picture: the
    samples of a row (five captions, a picture's questions) come one after another and share its picture."""
    transform = train_transform(
        spec.transform, spec.image_size, normalized=not spec.uint8_pixels, as_numpy=True
    )
    if spec.transform not in DETERMINISTIC:
        return transform
    last: list[Any] = [None, None]  # the previous sample's picture and its pixels

    def once_per_picture(picture: Any, rng: Any) -> np.ndarray:
        if last[0] is not picture:
            last[:] = [picture, transform(picture, rng)]
        return last[1]

    return once_per_picture


def _decode(data: bytes, column: str) -> Any:
    try:
        return decode_image(data)
    except ValueError as err:
        raise B.BadRow(f"column {column}: {err}") from None


def _where(row: dict[str, Any]) -> str:
    file, index = row.get("_file"), row.get("_row")
    return f"{file or '?'} row {index if index is not None else '?'}"


def _samples(row: dict[str, Any], spec: DataSpec) -> list[dict[str, Any]]:
    """The row's samples, its images decoded once (so a bad image is named with its row)."""
    samples = list(B.expand_row(spec.task, row, spec.vqa_num_labels, spec.num_labels))
    for column in ("image", "image_0", "image_1"):
        if samples and column in samples[0]:
            picture = _decode(samples[0][column], column)
            for sample in samples:
                sample[column] = picture
    return samples


def preprocess(table: pa.Table, spec: DataSpec) -> dict[str, np.ndarray]:
    """One map_batches call: expand rows to samples, check each, and collate the good ones."""
    samples = []
    for row in table.to_pylist():
        try:
            samples.extend(_samples(row, spec))
        except (B.BadRow, ValueError) as err:
            message = f"{_where(row)}: {err}"
            if spec.on_bad_row == "error":
                raise B.BadRow(f"{message} (set data.on_bad_row: skip to drop such rows)") from None
            log.warning("skipping %s", message)
            # wait for the count: skips are rare, and a report must not miss one still in flight
            ray.get(_skips(spec.skip_counter).add.remote(message), timeout=60)
    if not samples:
        return _empty(spec)
    # image classification reads no text: CIFAR data comes without a tokenizer
    tokenizer = None if spec.task == "image_classification" else load_tokenizer(spec.tokenizer)
    try:
        return B.collate(
            spec.task,
            samples,
            _image_fn(spec),
            tokenizer,
            spec.max_text_len,
            spec.seed,
            spec.epoch,
            spec.vqa_num_labels,
            spec.mlm_probability,
        )
    except B.BadRow as err:  # a problem of the batch, not of one row (single and pair sentences mixed)
        files = sorted({str(row.get("_file")) for row in table.select(["_file"]).to_pylist()})
        raise B.BadRow(f"{', '.join(files)}: {err}") from None


def preprocess_blocks(table: pa.Table, spec: DataSpec) -> Iterator[dict[str, np.ndarray]]:
    """`preprocess` on each `spec.map_batch_size` rows of a block of any size, one output batch at a time."""
    for start in range(0, table.num_rows, spec.map_batch_size):
        yield preprocess(table.slice(start, spec.map_batch_size), spec)


@ray.remote(num_cpus=0)
class SkipCounter:
    """Counts the rows a dataset skipped, and keeps the first messages, so a run can report them."""

    def __init__(self, keep: int = 20) -> None:
        self.count, self.keep, self.messages = 0, keep, []

    def add(self, message: str) -> None:
        self.count += 1
        if len(self.messages) < self.keep:
            self.messages.append(message)

    def summary(self) -> dict[str, Any]:
        return {"count": self.count, "messages": list(self.messages)}


_COUNTERS: dict[str, Any] = {}


@functools.lru_cache(maxsize=8)
def _skips(name: str | None):
    if name is None:
        raise RuntimeError(
            "on_bad_row 'skip' needs the dataset built by build_dataset (it creates the counter)"
        )
    return ray.get_actor(name)


def skipped_rows(spec: DataSpec) -> dict[str, Any]:
    """{"count": rows skipped so far, "messages": the first few, each naming file, row and reason}."""
    if spec.skip_counter is None:
        return {"count": 0, "messages": []}
    return ray.get(_skips(spec.skip_counter).summary.remote(), timeout=60)


def _empty(spec: DataSpec) -> dict[str, np.ndarray]:
    """A zero-row batch with the usual keys and shapes (every row of this block was skipped)."""
    n, size = spec.max_text_len, spec.image_size
    images = (0, 2, 3, size, size) if spec.task == "nlvr2" else (0, 3, size, size)
    pixels = np.zeros(images, np.uint8 if spec.uint8_pixels else np.float32)
    if spec.task == "image_classification":
        return {"pixel_values": pixels, "labels": np.zeros(0, np.int64), "sample_id": np.zeros(0, np.int64)}
    if spec.task == "text_classification":
        return {
            "input_ids": np.zeros((0, n), np.int64),
            "attention_mask": np.zeros((0, n), np.int64),
            "labels": np.zeros(0, np.int64),
            "sample_id": np.zeros(0, np.int64),
        }
    out = {
        "input_ids": np.zeros((0, n), np.int64),
        "attention_mask": np.zeros((0, n), np.int64),
        "pixel_values": pixels,
        "sample_id": np.zeros(0, np.int64),
    }
    if spec.task == "pretrain":
        out.update(mlm_input_ids=np.zeros((0, n), np.int64), mlm_labels=np.zeros((0, n), np.int64))
    if spec.task in ("pretrain", "irtr"):
        out["image_index"] = np.zeros(0, np.int64)
    elif spec.task == "vqa":
        out.update(
            labels=np.zeros((0, spec.vqa_num_labels or 0), np.float32), question_id=np.zeros(0, np.int64)
        )
    else:
        out["labels"] = np.zeros(0, np.int64)
    return out


def build_dataset(spec: DataSpec) -> ray.data.Dataset:
    """Streaming dataset of model-ready rows for `spec.task` (iterate with `iter_torch_batches`)."""
    ds = read_shards(
        spec.paths,
        columns=TASK_COLUMNS[spec.task],
        optional_columns=B.OPTIONAL_COLUMNS.get(spec.task, []),
        shuffle_seed=spec.seed + spec.epoch if spec.shuffle_files else None,
        num_cpus=spec.cpus_per_task,
        concurrency=spec.concurrency or None,
    )
    if spec.on_bad_row == "skip" and spec.skip_counter is None:
        spec.skip_counter = f"btp-skipped-{uuid.uuid4().hex[:12]}"
        # the driver keeps the handle: an actor without one is garbage-collected
        _COUNTERS[spec.skip_counter] = SkipCounter.options(name=spec.skip_counter).remote()
    # The map takes each read block whole and yields it back in batches of map_batch_size rows: Ray Data then
    # fuses reading and preprocessing into one task (it does not fuse a read into a map that asks for a batch
    # size), so the read blocks never go through the object store. Fusion also needs equal remote arguments:
    # the same CPUs, concurrency and (empty) label selector as read_shards gives the reads.
    return ds.map_batches(
        preprocess_blocks,
        fn_kwargs={"spec": spec},
        batch_size=None,
        batch_format="pyarrow",
        num_cpus=spec.cpus_per_task,
        compute=ray.data.TaskPoolStrategy(size=spec.concurrency or None),
        label_selector={},
    )


def train_batches(
    name: str = "train", batch_size: int = 32, shuffle_buffer: int = 0, seed: int = 0, drop_last: bool = False
):
    """Inside a Ray Train worker: this worker's disjoint stream of torch batches, locally shuffled with a seed."""
    import ray.train

    shard = ray.train.get_dataset_shard(name)
    return shard.iter_torch_batches(
        batch_size=batch_size,
        local_shuffle_buffer_size=shuffle_buffer or None,
        local_shuffle_seed=seed + ray.train.get_context().get_world_rank() if shuffle_buffer else None,
        drop_last=drop_last,
        prefetch_batches=2,
    )
