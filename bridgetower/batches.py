"""From dataset rows to model batches, without Ray: per-task samples, tokenizing, MLM masking, VQA targets.

Rows use the official (ViLT-style) columns of reference §5; the output arrays are what the task models of
`bridgetower.tasks` take. Randomness (augmentation, masking) comes from per-sample generators seeded by
(seed, epoch, sample key), so a sample is processed the same way wherever and whenever it is processed.
"""

from __future__ import annotations

import random
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import Any

import numpy as np

TASKS = ("pretrain", "irtr", "vqa", "nlvr2", "snli_ve", "image_classification", "text_classification")
# the columns each task reads from the official files (reference §5); the uni-modal classification tasks read
# one row per sample: an image (CIFAR) or a sentence (GLUE), and an integer class
COLUMNS = {
    "pretrain": ["image", "caption", "image_id"],
    "irtr": ["image", "caption", "image_id"],
    "vqa": ["image", "questions", "answer_labels", "answer_scores", "question_id", "image_id"],
    "nlvr2": ["image_0", "image_1", "questions", "answers", "identifier"],
    "snli_ve": ["image", "sentences", "labels", "image_id"],
    "image_classification": ["image", "label"],
    "text_classification": ["sentence", "label"],
}
# columns read when a file has them: the second sentence of the GLUE pair tasks (MNLI, RTE, MRPC, ...)
OPTIONAL_COLUMNS = {"text_classification": ["sentence2"]}


class BadRow(ValueError):
    """A row that cannot become a sample; the message names the column and what is wrong."""


def stable_id(*parts: Any) -> int:
    """A 63-bit id that is the same in every process (Python's hash() is salted per process)."""
    data = "\x1f".join(str(p) for p in parts).encode()
    return (zlib.crc32(data) << 31) ^ zlib.crc32(data[::-1])


def sample_rng(seed: int, epoch: int, key: Any) -> random.Random:
    return random.Random(stable_id(seed, epoch, key))


# ---- rows -> samples ---------------------------------------------------------------------------------------------
LIST_COLUMNS = {"caption", "questions", "answers", "answer_labels", "answer_scores", "sentences", "labels"}
BYTES_COLUMNS = {"image", "image_0", "image_1"}


def _need(row: dict[str, Any], column: str) -> Any:
    """The value of `column`, checked to have the official type (a mistyped column fails here, not later)."""
    if column not in row or row[column] is None:
        raise BadRow(f"missing column {column!r}")
    value = row[column]
    if column in LIST_COLUMNS and not isinstance(value, list | tuple):
        raise BadRow(f"column {column!r} must be a list, found {type(value).__name__}: {str(value)[:40]!r}")
    if column in BYTES_COLUMNS and not isinstance(value, bytes | bytearray | memoryview):
        raise BadRow(f"column {column!r} must hold encoded image bytes, found {type(value).__name__}")
    return value


def _text(value: Any, column: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise BadRow(f"empty or non-text {column!r}: {value!r}")
    return value


def _class_label(row: dict[str, Any], num_labels: int | None) -> int:
    label = _need(row, "label")
    if isinstance(label, bool) or not isinstance(label, int):
        raise BadRow(f"column 'label' must be an integer class, found {type(label).__name__}: {label!r}")
    if label < 0 or (num_labels is not None and label >= num_labels):
        classes = f"0..{num_labels - 1}" if num_labels is not None else "0 or more"
        raise BadRow(f"label {label} is outside the classes {classes} (num_labels {num_labels})")
    return label


def _content_key(value: Any) -> str:
    """A key from the content itself, for rows without an id column (the same in every process)."""
    data = bytes(value) if isinstance(value, bytes | bytearray | memoryview) else str(value).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}{len(data)}"


def expand_row(
    task: str, row: dict[str, Any], vqa_num_labels: int | None = None, num_labels: int | None = None
) -> Iterator[dict[str, Any]]:
    """One sample per (image, caption), question, statement or hypothesis, as the official datasets do.

    Classification rows are one sample each; `num_labels`, when given, bounds their `label`.
    """
    if task in ("pretrain", "irtr"):
        image_id = str(_need(row, "image_id"))
        for i, caption in enumerate(_need(row, "caption")):
            yield {
                "image": _need(row, "image"),
                "text": _text(caption, "caption"),
                "key": f"{image_id}/{i}",
                "image_index": stable_id(image_id),
            }
    elif task == "vqa":
        questions = _need(row, "questions")
        labels, scores = _need(row, "answer_labels"), _need(row, "answer_scores")
        ids = row.get("question_id") or [stable_id(row.get("image_id"), i) for i in range(len(questions))]
        if not (len(labels) == len(scores) == len(questions)):
            raise BadRow(
                f"{len(questions)} questions but {len(labels)} answer_labels / {len(scores)} answer_scores"
            )
        for q, lab, sc, qid in zip(questions, labels, scores, ids):
            if vqa_num_labels is not None:
                vqa_targets([lab], [sc], vqa_num_labels)  # checks the labels against the vocabulary
            yield {
                "image": _need(row, "image"),
                "text": _text(q, "questions"),
                "key": qid,
                "answer_labels": list(lab),
                "answer_scores": list(sc),
                "question_id": int(qid),
            }
    elif task == "nlvr2":
        for i, (statement, answer) in enumerate(zip(_need(row, "questions"), _need(row, "answers"))):
            if answer not in ("True", "False"):
                raise BadRow(f"answers must be 'True' or 'False', not {answer!r}")
            yield {
                "image_0": _need(row, "image_0"),
                "image_1": _need(row, "image_1"),
                "text": _text(statement, "questions"),
                "key": f"{row.get('identifier')}/{i}",
                "label": int(answer == "True"),
            }
    elif task == "snli_ve":
        for i, (pair, label) in enumerate(zip(_need(row, "sentences"), _need(row, "labels"))):
            if label not in (0, 1, 2):
                raise BadRow(f"labels must be 0, 1 or 2 (contradiction, neutral, entailment), not {label!r}")
            yield {
                "image": _need(row, "image"),
                "text": _text(pair[-1], "sentences"),
                "key": f"{row.get('image_id')}/{i}",
                "label": int(label),
            }
    elif task == "image_classification":
        image = _need(row, "image")
        label = _class_label(row, num_labels)
        yield {"image": image, "key": _content_key(image), "label": label}
    elif task == "text_classification":
        sample = {"text": _text(_need(row, "sentence"), "sentence"), "label": _class_label(row, num_labels)}
        if row.get("sentence2") is not None:
            sample["text2"] = _text(row["sentence2"], "sentence2")
        sample["key"] = _content_key("\x1f".join([sample["text"], sample.get("text2", "")]))
        yield sample
    else:
        raise ValueError(f"unknown task {task!r}; known: {', '.join(TASKS)}")


# ---- text -------------------------------------------------------------------------------------------------------
def tokenize(
    tokenizer: Any, texts: list[str], max_len: int, pairs: list[str] | None = None
) -> dict[str, np.ndarray]:
    """Pad to `max_len` and truncate, as the official collator does; `pairs` are second sentences (GLUE)."""
    enc = tokenizer(
        texts,
        pairs,
        padding="max_length",
        truncation=True,
        max_length=max_len,
        return_special_tokens_mask=True,
    )
    return {
        k: np.asarray(enc[k], dtype=np.int64) for k in ("input_ids", "attention_mask", "special_tokens_mask")
    }


def mask_tokens(
    input_ids: np.ndarray,
    special_tokens_mask: np.ndarray,
    rngs: list[random.Random],
    mask_token_id: int,
    vocab_size: int,
    probability: float = 0.15,
) -> tuple[np.ndarray, np.ndarray]:
    """BERT masking: `probability` (15 %) of non-special tokens; of those 80 % -> <mask>, 10 % -> random, 10 % kept.

    Returns (masked ids, labels with -100 where no prediction is asked).
    """
    masked = input_ids.copy()
    labels = np.full_like(input_ids, -100)
    for b, rng in enumerate(rngs):
        for t in np.flatnonzero(special_tokens_mask[b] == 0):
            if rng.random() >= probability:
                continue
            labels[b, t] = input_ids[b, t]
            roll = rng.random()
            if roll < 0.8:
                masked[b, t] = mask_token_id
            elif roll < 0.9:
                masked[b, t] = rng.randrange(vocab_size)
    return masked, labels


def vqa_targets(labels: Iterable[list[int]], scores: Iterable[list[float]], num_labels: int) -> np.ndarray:
    """Soft targets [B, num_labels] from the per-answer label ids and scores of the official files."""
    rows = list(zip(labels, scores))
    out = np.zeros((len(rows), num_labels), dtype=np.float32)
    for b, (lab, sc) in enumerate(rows):
        for label, score in zip(lab, sc):
            if not 0 <= label < num_labels:
                raise BadRow(f"answer label {label} is outside the answer vocabulary (0..{num_labels - 1})")
            out[b, label] = score
    return out


# ---- samples -> batch -------------------------------------------------------------------------------------------
ImageFn = Callable[[Any, random.Random], np.ndarray]  # encoded bytes or a decoded picture -> [3, H, W]


def collate(
    task: str,
    samples: list[dict[str, Any]],
    image_fn: ImageFn,
    tokenizer: Any,
    max_text_len: int,
    seed: int = 0,
    epoch: int = 0,
    vqa_num_labels: int | None = None,
    mlm_probability: float = 0.15,
) -> dict[str, np.ndarray]:
    """Fixed-shape arrays for the task models: pixel_values, input_ids, attention_mask and the task's labels.

    Uni-modal tasks get only their modality: pixel_values (image classification) or the text arrays.
    """
    rngs = [sample_rng(seed, epoch, s["key"]) for s in samples]
    # a stable id per sample: lets a trainer check coverage, de-duplicate, or find a sample again
    ids = np.asarray([stable_id(s["key"]) for s in samples], dtype=np.int64)
    if task in ("image_classification", "text_classification"):
        return _classification_batch(task, samples, rngs, ids, image_fn, tokenizer, max_text_len)
    text = tokenize(tokenizer, [s["text"] for s in samples], max_text_len)
    batch: dict[str, np.ndarray] = {
        "input_ids": text["input_ids"],
        "attention_mask": text["attention_mask"],
        "sample_id": ids,
    }
    if task == "nlvr2":
        batch["pixel_values"] = np.stack(
            [np.stack([image_fn(s["image_0"], r), image_fn(s["image_1"], r)]) for s, r in zip(samples, rngs)]
        )
    else:
        batch["pixel_values"] = np.stack([image_fn(s["image"], r) for s, r in zip(samples, rngs)])
    if task == "pretrain":
        if tokenizer.mask_token_id is None:
            raise ValueError(
                "the tokenizer has no mask token (mask_token); masked-language pretraining needs one"
            )
        batch["mlm_input_ids"], batch["mlm_labels"] = mask_tokens(
            text["input_ids"],
            text["special_tokens_mask"],
            rngs,
            tokenizer.mask_token_id,
            len(tokenizer),
            mlm_probability,
        )
    if task in ("pretrain", "irtr"):
        batch["image_index"] = np.asarray([s["image_index"] for s in samples], dtype=np.int64)
    elif task == "vqa":
        if vqa_num_labels is None:
            raise ValueError("vqa batches need vqa_num_labels (the answer vocabulary size)")
        batch["labels"] = vqa_targets(
            [s["answer_labels"] for s in samples], [s["answer_scores"] for s in samples], vqa_num_labels
        )
        batch["question_id"] = np.asarray([s["question_id"] for s in samples], dtype=np.int64)
    else:
        batch["labels"] = np.asarray([s["label"] for s in samples], dtype=np.int64)
    return batch


def _classification_batch(
    task: str,
    samples: list[dict[str, Any]],
    rngs: list[random.Random],
    ids: np.ndarray,
    image_fn: ImageFn,
    tokenizer: Any,
    max_text_len: int,
) -> dict[str, np.ndarray]:
    batch = {"labels": np.asarray([s["label"] for s in samples], dtype=np.int64), "sample_id": ids}
    if task == "image_classification":
        batch["pixel_values"] = np.stack([image_fn(s["image"], r) for s, r in zip(samples, rngs)])
        return batch
    paired = ["text2" in s for s in samples]
    if any(paired) and not all(paired):
        raise BadRow("some rows have a sentence2 and others do not; a dataset is either single or pair")
    pairs = [s["text2"] for s in samples] if all(paired) else None
    text = tokenize(tokenizer, [s["text"] for s in samples], max_text_len, pairs)
    batch.update(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    return batch
