"""`btp data validate`: check shards before a long run: schema, every image, every row, counts per split."""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from bridgetower import batches as B
from bridgetower.transforms import decode_image

# file-name prefix -> task whose rows the file holds (official names, reference §5)
KINDS = {
    "coco_caption_karpathy": "pretrain",
    "f30k_caption_karpathy": "irtr",
    "conceptual_caption": "pretrain",
    "sbu": "pretrain",
    "vqav2": "vqa",
    "nlvr2": "nlvr2",
    "snli": "snli_ve",
    # one sample per row: images with a class (CIFAR binary -> btp data convert), sentences with a class
    # (GLUE: glue_<task>_<split>_N.arrow), and the synthetic sets
    "cifar10": "image_classification",
    "cifar100": "image_classification",
    "shapes": "image_classification",
    "glue": "text_classification",
    "sentiment": "text_classification",
}
MAX_PROBLEMS_PER_FILE = 20


@dataclass
class FileReport:
    path: str
    task: str | None = None
    split: str = "?"
    rows: int = 0
    samples: int = 0
    problems: list[str] = field(default_factory=list)


def _parse(stem: str) -> tuple[str, str, str] | None:
    """(dataset, task, rest of the name) of an official-style file stem."""
    for prefix, task in sorted(KINDS.items(), key=lambda kv: -len(kv[0])):
        if stem.startswith(prefix + "_") or stem == prefix:
            rest = stem[len(prefix) :].strip("_")
            if prefix == "glue":  # glue_<task>_<split>: the GLUE task is part of the dataset's name
                name, _, rest = rest.partition("_")
                return f"glue_{name}", task, rest
            return prefix, task, rest
    return None


def kind_of(path: Path) -> tuple[str | None, str]:
    """(task, split) from an official-style file name, e.g. vqav2_train_3.arrow -> (vqa, train)."""
    parsed = _parse(path.stem)
    if parsed is None:
        return None, "?"
    split = re.sub(r"_\d+$", "", parsed[2]) or "train"
    if re.fullmatch(r"\d+", split):  # conceptual_caption_train_3 / sbu_2: numbered shards only
        split = "train"
    return parsed[1], split


def dataset_of(path: Path) -> str | None:
    """The dataset an official-style file belongs to: cifar10_train_0.arrow -> cifar10, glue_rte_dev_0 -> glue_rte."""
    parsed = _parse(path.stem)
    return parsed[0] if parsed else None


def _batches(path: Path) -> Iterator[pa.RecordBatch]:
    if path.suffix == ".parquet":
        yield from pq.ParquetFile(path).iter_batches(batch_size=256)
        return
    with pa.memory_map(str(path)) as source:
        try:
            reader = pa.ipc.open_file(source)
            for i in range(reader.num_record_batches):
                yield reader.get_batch(i)
        except pa.ArrowInvalid:
            source.seek(0)
            yield from pa.ipc.open_stream(source)


def _vocabulary_size(path: Path, task: str) -> int | None:
    """VQA: the answer vocabulary beside the file; classification: its dataset's {dataset}_labels.json."""
    if task == "vqa":
        names = path.parent / "vqa_answers.json"
    elif task in ("image_classification", "text_classification") and dataset_of(path):
        names = path.parent / f"{dataset_of(path)}_labels.json"
    else:
        return None
    return len(json.loads(names.read_text())) if names.is_file() else None


def check_file(path: Path, task: str | None = None) -> FileReport:
    """Read a shard batch by batch (bounded memory); decode every image and expand every row."""
    detected, split = kind_of(path)
    report = FileReport(str(path), task or detected, split)
    if report.task is None:
        report.problems.append(f"{path}: cannot tell the task from the file name; pass --task")
        return report
    vocabulary = _vocabulary_size(path, report.task)
    try:
        for batch in _batches(path):
            missing = [c for c in B.COLUMNS[report.task] if c not in batch.schema.names]
            if missing:
                report.problems.append(f"{path}: missing column(s) {', '.join(missing)} for {report.task}")
                return report
            for row in batch.to_pylist():
                _check_row(report, row, vocabulary)
                report.rows += 1
    except (pa.ArrowInvalid, OSError) as err:
        report.problems.append(
            f"{path}: not a readable Arrow/parquet file ({err}); re-create or re-download it"
        )
    return report


def _check_row(report: FileReport, row: dict, vocabulary: int | None) -> None:
    where = f"{report.path} row {report.rows}"
    try:
        if report.task == "vqa":
            samples = list(B.expand_row(report.task, row, vqa_num_labels=vocabulary))
        else:
            samples = list(B.expand_row(report.task, row, num_labels=vocabulary))
        for column in ("image", "image_0", "image_1"):
            if column in row:
                try:
                    decode_image(row[column])
                except ValueError as err:
                    raise B.BadRow(f"column {column}: {err}") from None
        report.samples += len(samples)
    except (B.BadRow, ValueError, TypeError) as err:
        if len(report.problems) < MAX_PROBLEMS_PER_FILE:
            report.problems.append(f"{where}: {err}")
        elif len(report.problems) == MAX_PROBLEMS_PER_FILE:
            report.problems.append(f"{report.path}: more problems not shown")


def shard_files(paths: list[str]) -> list[Path]:
    """Files given, directories expanded to their .arrow/.parquet files; a missing path is an error."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(
                sorted(f for f in p.iterdir() if f.suffix in (".arrow", ".parquet", ".ipc", ".feather"))
            )
        elif p.is_file():
            out.append(p)
        else:
            what = "is neither a folder nor a file" if p.exists() else "does not exist"  # e.g. a device
            raise SystemExit(f"btp data validate: {p} {what}; give shard files or the folder that holds them")
    return out


def main_validate(args: argparse.Namespace) -> int:
    files = shard_files(args.paths)
    if not files:
        raise SystemExit("btp data validate: no .arrow or .parquet files found in " + ", ".join(args.paths))
    reports = []
    for path in files:
        report = check_file(path, args.task)
        reports.append(report)
        status = "ok" if not report.problems else f"{len(report.problems)} problem(s)"
        print(
            f"{path.name}: {report.task or '?'} {report.split}, {report.rows} rows, {report.samples} samples, {status}",
            flush=True,
        )
    totals: Counter[tuple[str, str]] = Counter()
    for r in reports:
        totals[(r.task or "?", r.split)] += r.rows
    width = max([4, *(len(task) for task, _ in totals)])
    print(f"\n{'task':<{width}} split       rows")
    for (task, split), rows in sorted(totals.items()):
        print(f"{task:<{width}} {split:<10} {rows:>5}")
    problems = [p for r in reports for p in r.problems]
    if problems:
        print(f"\n{len(problems)} problem(s):")
        for line in problems:
            print(line)
        return 1
    print(f"\nall {len(files)} file(s) valid")
    return 0
