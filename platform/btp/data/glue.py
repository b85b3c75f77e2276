"""GLUE from the TSV files of the official download (`glue_data/<Task>/{train,dev}.tsv`).

Each classification task is a row of `TASKS`: its folder, splits, sentence columns, label column and class
names. STS-B is a regression task (similarity scores from 0 to 5), which `text_classification` does not train:
it is refused, never turned into classes. GLUE's test files carry no labels, so they are not converted (score
test predictions on gluebenchmark.com).
"""

from __future__ import annotations

import csv
import sys
from dataclasses import dataclass
from pathlib import Path


class GlueError(ValueError):
    """A GLUE file that does not have the official layout; the message names the file and line."""


@dataclass(frozen=True)
class GlueTask:
    """Where a GLUE task's files are and which columns hold its sentences and label."""

    folder: str
    sentence: str | int  # a header name, or a column index for files without a header (CoLA)
    sentence2: str | int | None
    label: str | int
    labels: tuple[str, ...]  # class names; a label cell holds a name or its index
    splits: tuple[str, ...] = ("train", "dev")
    header: bool = True


TASKS = {
    "cola": GlueTask("CoLA", 3, None, 1, ("unacceptable", "acceptable"), header=False),
    "sst2": GlueTask("SST-2", "sentence", None, "label", ("negative", "positive")),
    "mrpc": GlueTask("MRPC", "#1 String", "#2 String", "Quality", ("not_equivalent", "equivalent")),
    "qqp": GlueTask("QQP", "question1", "question2", "is_duplicate", ("not_duplicate", "duplicate")),
    "mnli": GlueTask(
        "MNLI",
        "sentence1",
        "sentence2",
        "gold_label",
        ("entailment", "neutral", "contradiction"),
        ("train", "dev_matched", "dev_mismatched"),
    ),
    "qnli": GlueTask("QNLI", "question", "sentence", "label", ("entailment", "not_entailment")),
    "rte": GlueTask("RTE", "sentence1", "sentence2", "label", ("entailment", "not_entailment")),
    "wnli": GlueTask("WNLI", "sentence1", "sentence2", "label", ("not_entailment", "entailment")),
}
UNSUPPORTED = {
    "stsb": "STS-B is a regression task (similarity scores from 0 to 5); text_classification trains "
    "classifiers only, so STS-B is not supported",
}
FOLDERS = {task.folder: name for name, task in TASKS.items()} | {"STS-B": "stsb"}


def _column(spec: str | int, header: list[str] | None, path: Path) -> int:
    if isinstance(spec, int):
        return spec
    if header is None or spec not in header:
        raise GlueError(f"{path} line 1: no column {spec!r} in the header ({', '.join(header or [])})")
    return header.index(spec)


def _label(value: str, task: GlueTask, where: str) -> int:
    if value in task.labels:
        return task.labels.index(value)
    if value.isdigit() and int(value) < len(task.labels):
        return int(value)
    raise GlueError(
        f"{where}: label {value!r} is not one of {', '.join(task.labels)} (or 0..{len(task.labels) - 1})"
    )


def read_split(path: Path, task: GlueTask) -> tuple[list[dict], list[str]]:
    """(rows of sentence[, sentence2], label, label_name; lines skipped for an empty sentence)."""
    if not path.is_file():
        raise GlueError(
            f"{path} not found: it should hold the GLUE {task.folder} split; unpack the download there"
        )
    csv.field_size_limit(sys.maxsize)  # a few GLUE sentences are long; QUOTE_NONE reads quotes as text
    with path.open(encoding="utf-8", newline="") as f:
        lines = list(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    header = lines[0] if task.header and lines else None
    columns = [_column(c, header, path) for c in (task.sentence, task.sentence2, task.label) if c is not None]
    width = len(header) if header else max(columns) + 1
    rows, skipped = [], []
    for number, fields in enumerate(lines[1:] if header else lines, 2 if header else 1):
        where = f"{path} line {number}"
        if len(fields) < width:
            raise GlueError(
                f"{where}: {len(fields)} tab-separated fields, expected {width}; re-download the file"
            )
        texts = [fields[c].strip() for c in columns[:-1]]
        if not all(texts):
            skipped.append(where)
            continue
        label = _label(fields[columns[-1]].strip(), task, where)
        row = {"sentence": texts[0], "label": label, "label_name": task.labels[label]}
        if task.sentence2 is not None:
            row["sentence2"] = texts[1]
        rows.append(row)
    return rows, skipped
