"""`btp data convert`: turn the public raw downloads into ViLT-style Arrow IPC shards (reference §5)."""

from __future__ import annotations

import argparse
import json
import re
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa

from btp.data import cifar, glue
from btp.data.scenes import soft_score
from btp.data.synth import PREFIX, SCHEMAS

# columns the synthetic generator adds for its own checks; real data has no scene graphs
_SYNTH_ONLY = {"scene", "scene_0", "scene_1", "question_type"}
KARPATHY_SPLITS = {"coco": ("train", "restval", "val", "test"), "f30k": ("train", "val", "test")}
# output split -> folder name used in the VQAv2 file names and image names
VQA_SPLITS = {"train": "train2014", "val": "val2014", "test": "test2015", "test-dev": "test-dev2015"}
NLVR2_SPLITS = ("train", "dev", "test1")
NLVR2_LABELS = ("True", "False")
SNLI_SPLITS = ("train", "dev", "test")
SNLI_LABELS = {"contradiction": 0, "neutral": 1, "entailment": 2}


class ConvertError(ValueError):
    """Raw input that cannot be converted; the message names the file, the record and what to do."""


@dataclass(frozen=True)
class ImageRef:
    """An image file to embed, with the json record that refers to it (for error messages)."""

    path: Path
    record: str


@dataclass
class Options:
    """Settings that only some converters use."""

    min_answer_freq: int = 9
    glue_tasks: tuple[str, ...] = ()  # GLUE: the tasks to convert (default: every task folder found)
    log: Callable[[str], None] = print


@dataclass
class Plan:
    """What a converter found: rows per split (images still as ImageRef) and json side files to write."""

    splits: dict[str, list[dict]]
    side_files: dict[str, Any] = field(default_factory=dict)
    schemas: dict[str, pa.Schema] = field(default_factory=dict)  # per split, where not the task's own


# ---- reading raw files -------------------------------------------------------------------------------------
def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConvertError(f"{path} not found: it should hold {what}; download or unpack it there")
    return path


def _load_json(path: Path, what: str) -> Any:
    text = _read_text(_require(path, what))
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise ConvertError(
            f"{path} line {err.lineno} column {err.colno}: malformed JSON ({err.msg}); re-download the file"
        ) from None


def _json_lines(path: Path, what: str) -> Iterator[tuple[str, dict]]:
    """(where, record) for each non-blank line of a JSON-lines file."""
    for lineno, line in enumerate(_read_text(_require(path, what)).splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path} line {lineno}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConvertError(f"{where}: malformed JSON ({err.msg}); re-download the file") from None
        if not isinstance(record, dict):
            raise ConvertError(f"{where}: expected a JSON object, got {type(record).__name__}")
        yield where, record


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ConvertError(f"{path}: not UTF-8 text ({err}); is it the right file?") from None


def _get(record: Any, key: str, where: str) -> Any:
    if not isinstance(record, dict) or key not in record:
        raise ConvertError(f"{where}: missing field {key!r}; the file does not match the official layout")
    return record[key]


def _text(record: Any, key: str, where: str) -> str:
    value = _get(record, key, where)
    if not isinstance(value, str):
        raise ConvertError(f"{where}: field {key!r} should be a string, got {value!r}")
    return value


def _list(record: Any, key: str, where: str) -> list:
    value = _get(record, key, where)
    if not isinstance(value, list):
        raise ConvertError(f"{where}: field {key!r} should be a list, got {type(value).__name__}")
    return value


# ---- COCO / Flickr30K captions (Karpathy splits) -----------------------------------------------------------
def _karpathy(path: Path, splits: tuple[str, ...], image_path: Callable[[dict, str], Path]) -> Plan:
    images = _list(_load_json(path, "the Karpathy caption splits"), "images", str(path))
    rows: dict[str, list[dict]] = {}
    for i, record in enumerate(images):
        where = f"{path} images[{i}]"
        filename, split = _text(record, "filename", where), _text(record, "split", where)
        where = f"{where} ({filename})"
        if split not in splits:
            raise ConvertError(f"{where}: unknown split {split!r}; expected one of {', '.join(splits)}")
        sentences = _list(record, "sentences", where)
        captions = [_text(s, "raw", f"{where} sentences[{k}]") for k, s in enumerate(sentences)]
        rows.setdefault(split, []).append(
            {
                "image": ImageRef(image_path(record, where), where),
                "caption": captions,
                "image_id": filename,
                "split": split,
            }
        )
    return Plan({s: rows[s] for s in splits if s in rows})


def convert_coco(raw: Path, options: Options) -> Plan:
    """COCO Karpathy splits: `dataset_coco.json`, images in `raw/<filepath>/<filename>`."""

    def image(record: dict, where: str) -> Path:
        return raw / _text(record, "filepath", where) / record["filename"]

    return _karpathy(raw / "dataset_coco.json", KARPATHY_SPLITS["coco"], image)


def convert_f30k(raw: Path, options: Options) -> Plan:
    """Flickr30K Karpathy splits: `dataset_flickr30k.json`, images in `raw/flickr30k-images/`."""
    return _karpathy(
        raw / "dataset_flickr30k.json",
        KARPATHY_SPLITS["f30k"],
        lambda record, where: raw / "flickr30k-images" / record["filename"],
    )


# ---- VQAv2 -------------------------------------------------------------------------------------------------
def _vqa_file(raw: Path, kind: str, folder: str) -> Path:
    if kind == "questions":
        return raw / f"v2_OpenEnded_mscoco_{folder}_questions.json"
    return raw / f"v2_mscoco_{folder}_annotations.json"


def _vqa_annotations(raw: Path, folder: str) -> tuple[Path, list[dict]]:
    path = _vqa_file(raw, "annotations", folder)
    return path, _list(_load_json(path, f"the VQAv2 {folder} annotations"), "annotations", str(path))


def _answer_vocabulary(annotations: dict[str, tuple[Path, list[dict]]], min_freq: int) -> list[str]:
    """Normalised majority answers seen at least `min_freq` times, in first-seen order (as ViLT)."""
    from bridgetower.metrics import normalize_answer  # imported here: it pulls in torch

    counts: Counter[str] = Counter()
    for path, items in annotations.values():
        for i, ann in enumerate(items):
            counts[normalize_answer(_text(ann, "multiple_choice_answer", f"{path} annotations[{i}]"))] += 1
    return [answer for answer, n in counts.items() if n >= min_freq]


def _vqa_targets(ann: dict, where: str, label_of: dict[str, int]) -> tuple[list[str], list[int], list[float]]:
    """Normalised annotator answers, and soft scores of the distinct ones that are in the vocabulary."""
    from bridgetower.metrics import normalize_answer

    answers = [normalize_answer(_text(a, "answer", f"{where} answers")) for a in _list(ann, "answers", where)]
    counts = Counter(a for a in answers if a in label_of)
    return answers, [label_of[a] for a in counts], [soft_score(n) for n in counts.values()]


def _by_question(annotated: tuple[Path, list[dict]]) -> dict[int, tuple[str, dict]]:
    """question_id -> (where, annotation), so each question finds its ten answers."""
    path, items = annotated
    index = {}
    for i, ann in enumerate(items):
        where = f"{path} annotations[{i}]"
        index[_int(ann, "question_id", where)] = (where, ann)
    return index


def _new_vqa_row(image: Path, where: str, image_id: int, split: str) -> dict:
    lists = ("questions", "answers", "answer_labels", "answer_scores", "question_id")
    return {
        "image": ImageRef(image, f"{where} (image_id {image_id})"),
        **{key: [] for key in lists},
        "image_id": str(image_id),
        "split": split,
    }


def _vqa_rows(
    raw: Path, split: str, annotated: tuple[Path, list[dict]] | None, label_of: dict[str, int]
) -> list[dict]:
    """One row per image, its questions in file order; test splits have no answers."""
    folder = VQA_SPLITS[split]
    path = _vqa_file(raw, "questions", folder)
    questions = _list(_load_json(path, f"the VQAv2 {folder} questions"), "questions", str(path))
    index = _by_question(annotated) if annotated else {}
    image_folder = "test2015" if split.startswith("test") else folder  # test-dev images live in test2015
    rows: dict[int, dict] = {}
    for i, q in enumerate(questions):
        where = f"{path} questions[{i}]"
        image_id, qid = _int(q, "image_id", where), _int(q, "question_id", where)
        if image_id not in rows:
            image = raw / image_folder / f"COCO_{image_folder}_{image_id:012d}.jpg"
            rows[image_id] = _new_vqa_row(image, where, image_id, split)
        answers, labels, scores = [], [], []
        if annotated:
            if qid not in index:
                raise ConvertError(
                    f"{where}: question_id {qid} has no entry in {annotated[0]}; "
                    "the questions and annotations files must come from the same download"
                )
            answers, labels, scores = _vqa_targets(index[qid][1], index[qid][0], label_of)
        row = rows[image_id]
        row["questions"].append(_text(q, "question", where))
        row["question_id"].append(qid)
        row["answers"].append(answers)
        row["answer_labels"].append(labels)
        row["answer_scores"].append(scores)
    return list(rows.values())


def _int(record: Any, key: str, where: str) -> int:
    value = _get(record, key, where)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConvertError(f"{where}: field {key!r} should be an integer, got {value!r}")
    return value


def convert_vqav2(raw: Path, options: Options) -> Plan:
    """VQAv2: questions and annotations for train/val (required), questions for test/test-dev (optional)."""
    if options.min_answer_freq < 1:
        raise ConvertError(f"min_answer_freq must be at least 1, got {options.min_answer_freq}")
    annotations = {s: _vqa_annotations(raw, VQA_SPLITS[s]) for s in ("train", "val")}
    vocabulary = _answer_vocabulary(annotations, options.min_answer_freq)
    label_of = {a: i for i, a in enumerate(vocabulary)}
    splits = {s: _vqa_rows(raw, s, annotations[s], label_of) for s in ("train", "val")}
    for split in ("test", "test-dev"):
        if _vqa_file(raw, "questions", VQA_SPLITS[split]).is_file():
            splits[split] = _vqa_rows(raw, split, None, label_of)
    return Plan(splits, {"vqa_answers.json": vocabulary})


# ---- NLVR2 -------------------------------------------------------------------------------------------------
def _nlvr2_rows(raw: Path, split: str) -> list[dict]:
    rows: dict[str, dict] = {}
    for where, record in _json_lines(raw / f"{split}.json", f"the NLVR2 {split} statements (JSON lines)"):
        identifier = _text(record, "identifier", where)
        pair, _, index = identifier.rpartition("-")
        if not pair or not index.isdigit():
            raise ConvertError(
                f"{where}: identifier {identifier!r} is not of the form split-set-pair-sentence"
            )
        label = _get(record, "label", where)
        if label not in NLVR2_LABELS:
            raise ConvertError(f"{where} ({identifier}): unknown label {label!r}; expected 'True' or 'False'")
        if pair not in rows:
            folder = (
                raw / "images" / "train" / str(_get(record, "directory", where))
                if split == "train"
                else raw / split
            )
            ref = f"{where} ({identifier})"
            rows[pair] = {
                "image_0": ImageRef(folder / f"{pair}-img0.png", ref),
                "image_1": ImageRef(folder / f"{pair}-img1.png", ref),
                "questions": [],
                "answers": [],
                "identifier": pair,
            }
        rows[pair]["questions"].append(_text(record, "sentence", where))
        rows[pair]["answers"].append(label)
    return list(rows.values())


def convert_nlvr2(raw: Path, options: Options) -> Plan:
    """NLVR2: `{train,dev,test1}.json` JSON lines; statements about the same image pair share one row."""
    return Plan({split: _nlvr2_rows(raw, split) for split in NLVR2_SPLITS})


# ---- SNLI-VE -----------------------------------------------------------------------------------------------
def _snli_rows(raw: Path, split: str) -> list[dict]:
    rows: dict[str, dict] = {}
    for where, record in _json_lines(
        raw / f"snli_ve_{split}.jsonl", f"the SNLI-VE {split} pairs (JSON lines)"
    ):
        image_id = str(_get(record, "Flickr30K_ID", where))
        label = _get(record, "gold_label", where)
        if label not in SNLI_LABELS:
            raise ConvertError(
                f"{where} (Flickr30K_ID {image_id}): unknown gold_label {label!r}; "
                f"expected one of {', '.join(SNLI_LABELS)}"
            )
        if image_id not in rows:
            image = raw / "Flickr30K" / "flickr30k_images" / f"{image_id}.jpg"
            ref = f"{where} (Flickr30K_ID {image_id})"
            rows[image_id] = {
                "image": ImageRef(image, ref),
                "sentences": [],
                "labels": [],
                "image_id": image_id,
            }
        pair = [_text(record, "sentence1", where), _text(record, "sentence2", where)]
        rows[image_id]["sentences"].append(pair)
        rows[image_id]["labels"].append(SNLI_LABELS[label])
    return list(rows.values())


def convert_snli_ve(raw: Path, options: Options) -> Plan:
    """SNLI-VE: `snli_ve_{train,dev,test}.jsonl`; hypotheses about one Flickr30K picture share a row."""
    return Plan({split: _snli_rows(raw, split) for split in SNLI_SPLITS})


# ---- CIFAR-10/100 (binary version) and GLUE (TSV): one sample per row ----------------------------------------
IMAGE_CLASS_SCHEMA = pa.schema([("image", pa.binary()), ("label", pa.int64()), ("label_name", pa.string())])


def text_class_schema(pair: bool) -> pa.Schema:
    """sentence[, sentence2], label, label_name."""
    pair_field = [("sentence2", pa.string())] if pair else []
    return pa.schema(
        [("sentence", pa.string()), *pair_field, ("label", pa.int64()), ("label_name", pa.string())]
    )


def _convert_cifar(name: str, raw: Path) -> Plan:
    variant = cifar.VARIANTS[name]
    folder = cifar.folder_of(raw, variant)
    try:
        names = cifar.label_names(folder, variant)
        splits = {
            split: [
                {"image": image, "label": label, "label_name": names[label]}
                for file in files
                for label, image in cifar.read_records(folder / file, variant, len(names))
            ]
            for split, files in variant.splits.items()
        }
    except cifar.CifarError as err:
        raise ConvertError(str(err)) from None
    return Plan(splits, {f"{name}_labels.json": names})


def convert_cifar10(raw: Path, options: Options) -> Plan:
    """CIFAR-10 binary: `cifar-10-batches-bin/data_batch_{1..5}.bin` (train), `test_batch.bin` (test)."""
    return _convert_cifar("cifar10", raw)


def convert_cifar100(raw: Path, options: Options) -> Plan:
    """CIFAR-100 binary: `cifar-100-binary/{train,test}.bin`, fine labels (100 classes)."""
    return _convert_cifar("cifar100", raw)


def _glue_tasks(raw: Path, options: Options) -> list[str]:
    """The GLUE tasks to convert: those asked for, else every task folder under `raw` (STS-B left out)."""
    for name in options.glue_tasks:
        if name in glue.UNSUPPORTED:
            raise ConvertError(glue.UNSUPPORTED[name])
        if name not in glue.TASKS:
            raise ConvertError(f"unknown GLUE task {name!r}; choose from {', '.join(glue.TASKS)}")
    if options.glue_tasks:
        return list(options.glue_tasks)
    found = [glue.FOLDERS[d.name] for d in sorted(raw.iterdir()) if d.is_dir() and d.name in glue.FOLDERS]
    for name in [n for n in found if n in glue.UNSUPPORTED]:
        options.log(f"skipped {name}: {glue.UNSUPPORTED[name]}")
    found = [n for n in found if n in glue.TASKS]
    if not found:
        folders = ", ".join(t.folder for t in glue.TASKS.values())
        raise ConvertError(f"no GLUE task folder ({folders}) in {raw}; point --raw at the unpacked glue_data")
    return found


def convert_glue(raw: Path, options: Options) -> Plan:
    """GLUE: `glue_data/<Task>/{train,dev}.tsv` (MNLI: dev_matched, dev_mismatched) -> glue_<task>_<split>."""
    plan = Plan({})
    for name in _glue_tasks(raw, options):
        task = glue.TASKS[name]
        for split in task.splits:
            try:
                rows, skipped = glue.read_split(raw / task.folder / f"{split}.tsv", task)
            except glue.GlueError as err:
                raise ConvertError(str(err)) from None
            if skipped:
                options.log(
                    f"skipped {len(skipped)} rows of {name} {split} with an empty sentence (first: {skipped[0]})"
                )
            plan.splits[f"{name}_{split}"] = rows
            plan.schemas[f"{name}_{split}"] = text_class_schema(task.sentence2 is not None)
        plan.side_files[f"glue_{name}_labels.json"] = list(task.labels)
        options.log(f"{name}: the test split has no public labels, so it is not converted")
    return plan


CONVERTERS: dict[str, Callable[[Path, Options], Plan]] = {
    "coco": convert_coco,
    "f30k": convert_f30k,
    "vqav2": convert_vqav2,
    "nlvr2": convert_nlvr2,
    "snli_ve": convert_snli_ve,
    "cifar10": convert_cifar10,
    "cifar100": convert_cifar100,
    "glue": convert_glue,
}
# task -> the synthetic dataset whose file names and column types the output shares
_SYNTH_NAME = {"coco": "coco", "f30k": "f30k", "vqav2": "vqav2", "nlvr2": "nlvr2", "snli_ve": "snli"}
# file-name prefix of each converted task (GLUE's split names carry the task: glue_sst2_train_0.arrow)
OUTPUT_PREFIX = {task: PREFIX[name] for task, name in _SYNTH_NAME.items()} | {
    "cifar10": "cifar10",
    "cifar100": "cifar100",
    "glue": "glue",
}


def output_schema(task: str) -> pa.Schema:
    """Columns of a converted task: the synthetic layout without its synthetic-only columns."""
    if task in ("cifar10", "cifar100"):
        return IMAGE_CLASS_SCHEMA
    if task == "glue":
        return text_class_schema(pair=False)  # pair tasks: Plan.schemas
    schema = SCHEMAS[_SYNTH_NAME[task]]
    return pa.schema([f for f in schema if f.name not in _SYNTH_ONLY])


# ---- images and shards -------------------------------------------------------------------------------------
def _missing_images(rows: list[dict]) -> list[ImageRef]:
    return [v for row in rows for v in row.values() if isinstance(v, ImageRef) and not v.path.is_file()]


def _drop_missing(splits: dict[str, list[dict]], skip: bool, log: Callable[[str], None]) -> tuple[dict, int]:
    """Check every image before writing anything; either fail on the first missing one or drop its rows."""
    missing = [ref for rows in splits.values() for ref in _missing_images(rows)]
    if not missing:
        return splits, 0
    if not skip:
        more = f" ({len(missing) - 1} more images are missing too)" if len(missing) > 1 else ""
        raise ConvertError(
            f"image {missing[0].path} not found, referenced by {missing[0].record}{more}; unpack the images "
            "there, or convert with skip_missing_images=True (--skip-missing-images) to drop those rows"
        )
    kept = {split: [r for r in rows if not _missing_images([r])] for split, rows in splits.items()}
    dropped = sum(len(rows) for rows in splits.values()) - sum(len(rows) for rows in kept.values())
    log(f"skipped {dropped} rows: {len(missing)} referenced images are missing (first: {missing[0].path})")
    return kept, len(missing)


def _with_bytes(row: dict) -> dict:
    # the original file bytes, not re-encoded: decoding stays the training pipeline's job
    out = {}
    for key, value in row.items():
        if isinstance(value, ImageRef):
            try:
                value = value.path.read_bytes()
            except OSError as err:
                raise ConvertError(
                    f"cannot read image {value.path} (referenced by {value.record}): {err}"
                ) from None
        out[key] = value
    return out


def write_shards(
    out: Path, stem: str, schema: pa.Schema, rows: list[dict], rows_per_shard: int
) -> Iterator[tuple[str, int]]:
    """Write rows to Arrow IPC files `{stem}_{k}.arrow`, yielding (name, rows); empty splits get shard 0."""
    for old in out.glob(f"{stem}_*.arrow"):
        # a previous run with smaller shards would otherwise leave stale higher-numbered shards behind
        if re.fullmatch(rf"{re.escape(stem)}_\d+\.arrow", old.name):
            old.unlink()
    for k, start in enumerate(range(0, max(len(rows), 1), rows_per_shard)):
        chunk = [_with_bytes(row) for row in rows[start : start + rows_per_shard]]
        name = f"{stem}_{k}.arrow"
        table = pa.Table.from_pylist(chunk, schema=schema)
        with pa.OSFile(str(out / name), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
            writer.write_table(table)
        yield name, len(chunk)


def _prepare(task: str, raw: Path, out: Path, rows_per_shard: int) -> None:
    if task not in CONVERTERS:
        raise ConvertError(f"unknown task {task!r}; choose one of {', '.join(CONVERTERS)}")
    if rows_per_shard < 1:
        raise ConvertError(f"rows_per_shard must be at least 1, got {rows_per_shard}")
    if not raw.is_dir():
        raise ConvertError(f"raw directory {raw} not found; point --raw at the unpacked {task} download")
    if out.exists() and not out.is_dir():
        raise ConvertError(f"output {out} exists and is not a directory; choose another --out")


def convert(
    task: str,
    raw: Path,
    out: Path,
    rows_per_shard: int = 1000,
    log: Callable[[str], None] = print,
    *,
    skip_missing_images: bool = False,
    min_answer_freq: int = 9,
    glue_tasks: tuple[str, ...] = (),
    overwrite: bool = False,
) -> dict:
    """Convert one task's raw download under `raw` into Arrow shards under `out`; returns a summary.

    Shards of the same dataset already in `out` (an earlier conversion, or synthetic data of the same name) are
    a ConvertError unless `overwrite`, which removes them all first: splits of two sources never mix.
    """
    raw, out = Path(raw), Path(out)
    _prepare(task, raw, out, rows_per_shard)
    start = time.perf_counter()
    options = Options(min_answer_freq=min_answer_freq, glue_tasks=tuple(glue_tasks), log=log)
    plan = CONVERTERS[task](raw, options)
    splits, missing = _drop_missing(plan.splits, skip_missing_images, log)
    prefix = OUTPUT_PREFIX[task]
    # the dataset's file family: every split of it (GLUE: of each task converted)
    families = {f"{prefix}_{split.split('_')[0]}" for split in splits} if task == "glue" else {prefix}
    earlier = sorted({p for f in families for p in out.glob(f"{f}_*.arrow")}) if out.is_dir() else []
    if earlier and not overwrite:
        names = ", ".join(p.name for p in earlier[:3]) + (", ..." if len(earlier) > 3 else "")
        raise ConvertError(
            f"{out} already holds {len(earlier)} {task} shard(s) ({names}); pass --overwrite to replace them "
            "all, or choose another --out"
        )
    for path in earlier:
        path.unlink()
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, int] = {}
    for split, rows in splits.items():
        schema = plan.schemas.get(split) or output_schema(task)
        for name, n in write_shards(out, f"{prefix}_{split}", schema, rows, rows_per_shard):
            files[name] = n
            log(f"wrote {name}: {n} rows ({time.perf_counter() - start:.1f}s)")
    for name, data in plan.side_files.items():
        (out / name).write_text(json.dumps(data, indent=2) + "\n")
        log(f"wrote {name}")
    return {
        "task": task,
        "out_dir": str(out),
        "rows": {split: len(rows) for split, rows in splits.items()},
        "files": files,
        "missing_images": missing,
        "seconds": round(time.perf_counter() - start, 3),
    }


def main_convert(args: argparse.Namespace) -> int:
    """CLI entry: `btp data convert TASK --raw DIR --out DIR [--rows-per-shard N]`."""
    try:
        summary = convert(
            args.task,
            Path(args.raw),
            Path(args.out),
            args.rows_per_shard,
            log=print,
            skip_missing_images=getattr(args, "skip_missing_images", False),
            min_answer_freq=getattr(args, "min_answer_freq", 9),
            glue_tasks=tuple(t for t in (getattr(args, "glue_tasks", None) or "").split(",") if t),
            overwrite=getattr(args, "overwrite", False),
        )
    except ConvertError as err:
        raise SystemExit(f"btp data convert: {err}") from err
    print(f"\n{'split':<10} {'rows':>8}")
    for split, n in summary["rows"].items():
        print(f"{split:<10} {n:>8}")
    skipped = f", {summary['missing_images']} missing images skipped" if summary["missing_images"] else ""
    print(f"{len(summary['files'])} arrow files in {summary['out_dir']} ({summary['seconds']:.1f}s{skipped})")
    return 0
