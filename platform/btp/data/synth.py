"""Write a grounded synthetic vision-language dataset in the official ViLT Arrow layout."""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa

from btp.data import scenes as sc
from btp.data import sentiment

GENERATOR_VERSION = "btp-synth-2"
MIN_IMAGES = 40
# share of the image budget per dataset; an NLVR2 example uses two images
SHARES = {"f30k": 0.15, "vqav2": 0.30, "nlvr2": 0.15, "snli": 0.10}
SPLITS = {
    "coco": ("train", "val", "test"),
    "f30k": ("train", "val", "test"),
    "vqav2": ("train", "val", "test"),
    "nlvr2": ("train", "dev", "test1"),
    "snli": ("train", "dev", "test"),
    "shapes": ("train", "val", "test"),
    "sentiment": ("train", "val", "test"),
}
PREFIX = {
    "coco": "coco_caption_karpathy",
    "f30k": "f30k_caption_karpathy",
    "vqav2": "vqav2",
    "nlvr2": "nlvr2",
    "snli": "snli",
    # the classification sets have no official counterpart: named like cifar10_*/glue_sst2_* (convert.py)
    "shapes": "shapes",
    "sentiment": "sentiment",
}
# class names of the classification sets, written to {prefix}_labels.json (index = label)
SHAPE_LABELS = [f"{color} {shape}" for color in sc.COLORS for shape in sc.SHAPES]
CLASS_LABELS = {"shapes": SHAPE_LABELS, "sentiment": list(sentiment.LABELS)}
SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MODEL_MAX_LENGTH = 128

_str, _bin, _strs = pa.string(), pa.binary(), pa.list_(pa.string())
CAPTION_SCHEMA = pa.schema(
    [("image", _bin), ("caption", _strs), ("image_id", _str), ("split", _str), ("scene", _str)]
)
SCHEMAS = {
    "coco": CAPTION_SCHEMA,
    "f30k": CAPTION_SCHEMA,
    "vqav2": pa.schema(
        [
            ("image", _bin),
            ("questions", _strs),
            ("answers", pa.list_(_strs)),
            ("answer_labels", pa.list_(pa.list_(pa.int64()))),
            ("answer_scores", pa.list_(pa.list_(pa.float64()))),
            ("image_id", _str),
            ("question_id", pa.list_(pa.int64())),
            ("question_type", _strs),
            ("split", _str),
            ("scene", _str),
        ]
    ),
    "nlvr2": pa.schema(
        [
            ("image_0", _bin),
            ("image_1", _bin),
            ("questions", _strs),
            ("answers", _strs),
            ("identifier", _str),
            ("scene_0", _str),
            ("scene_1", _str),
        ]
    ),
    "snli": pa.schema(
        [
            ("image", _bin),
            ("sentences", pa.list_(_strs)),
            ("labels", pa.list_(pa.int64())),
            ("image_id", _str),
            ("scene", _str),
        ]
    ),
    "shapes": pa.schema([("image", _bin), ("label", pa.int64()), ("label_name", _str), ("scene", _str)]),
    "sentiment": pa.schema([("sentence", _str), ("label", pa.int64()), ("label_name", _str)]),
}
VQA_VOCAB = [a for kind in sc.QUESTION_TYPES for a in sc.VQA_ANSWERS[kind]]
VQA_LABEL = {a: i for i, a in enumerate(VQA_VOCAB)}


class _Context:
    """Per-run state: arguments, collected texts for the tokenizer, true VQA answers for baselines."""

    def __init__(self, seed: int, image_size: int) -> None:
        self.seed, self.image_size = seed, image_size
        self.texts: set[str] = set()
        self.vqa_truth: dict[str, list[tuple[str, str]]] = {}

    def rng(self, *key: Any) -> random.Random:
        # a string seed is hashed with sha512, so item streams do not depend on PYTHONHASHSEED or on each other
        return random.Random("/".join(map(str, (self.seed, *key))))

    def picture(self, scene: sc.Scene, rng: random.Random) -> bytes:
        return sc.encode_png(sc.render(scene, self.image_size, rng))


def _split_sizes(n: int, names: tuple[str, ...]) -> dict[str, int]:
    held_out = max(1, n // 10)
    return {names[0]: n - 2 * held_out, names[1]: held_out, names[2]: held_out}


def _object_counts(n: int, rng: random.Random) -> list[int]:
    # a shuffled deck keeps 1, 2 and 3 objects equally frequent within every split
    deck = [1 + i % 3 for i in range(n)]
    rng.shuffle(deck)
    return deck


def _scenes(ctx: _Context, name: str, split: str, n: int) -> Iterator[tuple[int, random.Random, sc.Scene]]:
    for i, n_objects in enumerate(_object_counts(n, ctx.rng(name, split, "counts"))):
        rng = ctx.rng(name, split, i)
        yield i, rng, sc.random_scene(rng, n_objects)


def _caption_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    for i, rng, scene in _scenes(ctx, name, split, n):
        caps = sc.captions(scene, rng)
        ctx.texts.update(caps)
        yield {
            "image": ctx.picture(scene, rng),
            "caption": caps,
            "image_id": f"{name}_{split}_{i:06d}",
            "split": split,
            "scene": json.dumps(scene, sort_keys=True),
        }


def _vqa_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    balancer = sc.Balancer()
    truth = ctx.vqa_truth.setdefault(split, [])
    for i, rng, scene in _scenes(ctx, name, split, n):
        asked = sc.vqa_questions(scene, rng, balancer)
        answers = [sc.annotate(answer, kind, rng) for kind, _, answer in asked]
        labels, scores = zip(*(_labels_scores(a) for a in answers))
        truth.extend((kind, answer) for kind, _, answer in asked)
        ctx.texts.update(q for _, q, _ in asked)
        yield {
            "image": ctx.picture(scene, rng),
            "questions": [q for _, q, _ in asked],
            "answers": answers,
            "answer_labels": list(labels),
            "answer_scores": list(scores),
            "image_id": f"{name}_{split}_{i:06d}",
            "question_id": [i * len(asked) + k for k in range(len(asked))],
            "question_type": [kind for kind, _, _ in asked],
            "split": split,
            "scene": json.dumps(scene, sort_keys=True),
        }


def _labels_scores(answers: list[str]) -> tuple[list[int], list[float]]:
    counts = Counter(a for a in answers if a in VQA_LABEL)
    ordered = sorted(counts, key=VQA_LABEL.__getitem__)
    return [VQA_LABEL[a] for a in ordered], [sc.soft_score(counts[a]) for a in ordered]


def _nlvr2_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    balancer = sc.Balancer()
    pairs = _scenes(ctx, name, split, 2 * n)
    for i in range(n):
        (_, rng0, left), (_, rng1, right) = next(pairs), next(pairs)
        answer, _ = balancer.pick("nlvr2", {"True": [None], "False": [None]}, rng0)
        statement = sc.nlvr2_statement(left, right, answer == "True", rng0)
        ctx.texts.add(statement)
        yield {
            "image_0": ctx.picture(left, rng0),
            "image_1": ctx.picture(right, rng1),
            "questions": [statement],
            "answers": [answer],
            "identifier": f"{split}-{i}-0",
            "scene_0": json.dumps(left, sort_keys=True),
            "scene_1": json.dumps(right, sort_keys=True),
        }


def _snli_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    for i, rng, scene in _scenes(ctx, name, split, n):
        labels = [0, 1, 2]  # one of each label per picture keeps the labels exactly balanced
        rng.shuffle(labels)
        premises = sc.captions(scene, rng)
        sentences = [[rng.choice(premises), sc.snli_hypothesis(scene, label, rng)] for label in labels]
        ctx.texts.update(s for pair in sentences for s in pair)
        yield {
            "image": ctx.picture(scene, rng),
            "sentences": sentences,
            "labels": labels,
            "image_id": f"{name}_{split}_{i:06d}",
            "scene": json.dumps(scene, sort_keys=True),
        }


def _label_deck(ctx: _Context, name: str, split: str, n: int, classes: int) -> list[int]:
    # every class equally often within a split (up to one), in a seeded order
    deck = [i % classes for i in range(n)]
    ctx.rng(name, split, "labels").shuffle(deck)
    return deck


def _shapes_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    """One object per picture, anywhere and of either size; the class is its colour and shape."""
    for i, label in enumerate(_label_deck(ctx, name, split, n, len(SHAPE_LABELS))):
        rng = ctx.rng(name, split, i)
        color, shape = SHAPE_LABELS[label].split()
        cell = rng.randrange(9)
        obj = {
            "shape": shape,
            "color": color,
            "size": rng.choice(sc.SIZES),
            "row": cell // 3,
            "col": cell % 3,
        }
        scene = {"objects": [obj]}
        yield {
            "image": ctx.picture(scene, rng),
            "label": label,
            "label_name": SHAPE_LABELS[label],
            "scene": json.dumps(scene, sort_keys=True),
        }


def _sentiment_rows(ctx: _Context, name: str, split: str, n: int) -> Iterator[dict]:
    for i, label in enumerate(_label_deck(ctx, name, split, n, len(sentiment.LABELS))):
        text = sentiment.sentence(label, ctx.rng(name, split, i))
        ctx.texts.add(text)
        yield {"sentence": text, "label": label, "label_name": sentiment.LABELS[label]}


BUILDERS: dict[str, Callable[..., Iterator[dict]]] = {
    "coco": _caption_rows,
    "f30k": _caption_rows,
    "vqav2": _vqa_rows,
    "nlvr2": _nlvr2_rows,
    "snli": _snli_rows,
    "shapes": _shapes_rows,
    "sentiment": _sentiment_rows,
}


def _budget(images: int, classification: int) -> dict[str, int]:
    """Number of examples per dataset (NLVR2 counts pairs); COCO takes the rest of the images.

    The classification sets come on top of `images`: `classification` pictures and as many sentences.
    """
    sizes = {name: int(images * share) for name, share in SHARES.items()}
    sizes["coco"] = images - sum(sizes.values())
    sizes["nlvr2"] //= 2
    sizes["shapes"] = sizes["sentiment"] = classification
    return {name: sizes[name] for name in PREFIX}


def _write_shards(
    out: Path, stem: str, schema: pa.Schema, rows: Iterator[dict], per_shard: int
) -> dict[str, int]:
    """Write rows into `{stem}_{k}.arrow` Arrow IPC files; an empty split still gets shard 0."""
    written: dict[str, int] = {}
    shard: list[dict] = []
    for row in rows:
        shard.append(row)
        if len(shard) == per_shard:
            written.update(_write_file(out, f"{stem}_{len(written)}.arrow", schema, shard))
            shard = []
    if shard or not written:
        written.update(_write_file(out, f"{stem}_{len(written)}.arrow", schema, shard))
    return written


def _write_file(out: Path, name: str, schema: pa.Schema, rows: list[dict]) -> dict[str, int]:
    table = pa.Table.from_pylist(rows, schema=schema)
    with pa.OSFile(str(out / name), "wb") as sink, pa.ipc.new_file(sink, schema) as writer:
        writer.write_table(table)
    return {name: len(rows)}


def _baselines(truth: dict[str, list[tuple[str, str]]], test_split: str = "test") -> dict[str, float]:
    """Accuracy on the test split of always answering the most frequent train answer of the question's type."""
    majority = {}
    for kind in sc.QUESTION_TYPES:
        counts = Counter(a for k, a in truth.get("train", []) if k == kind)
        majority[kind] = min(counts, key=lambda a: (-counts[a], a)) if counts else ""
    test = truth.get(test_split, [])
    result = {}
    for kind in sc.QUESTION_TYPES:
        hits = [a == majority[kind] for k, a in test if k == kind]
        result[kind] = round(sum(hits) / len(hits), 4) if hits else 0.0
    result["overall"] = round(sum(a == majority[k] for k, a in test) / len(test), 4) if test else 0.0
    return result


def train_tokenizer(texts: set[str], out: Path, vocab_size: int = 1024) -> None:
    """Train a byte-level BPE tokenizer with RoBERTa special tokens and save it for AutoTokenizer."""
    # one rayon thread and sorted input keep the merges, hence tokenizer.json, reproducible
    os.environ.setdefault("RAYON_NUM_THREADS", "1")
    from tokenizers import ByteLevelBPETokenizer, processors

    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train_from_iterator(
        sorted(texts),
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        show_progress=False,
    )
    tokenizer._tokenizer.post_processor = processors.RobertaProcessing(("</s>", 2), ("<s>", 0))
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save(str(out / "tokenizer.json"))
    config = {
        "tokenizer_class": "RobertaTokenizerFast",
        "model_max_length": MODEL_MAX_LENGTH,
        "add_prefix_space": False,
        "bos_token": "<s>",
        "eos_token": "</s>",
        "sep_token": "</s>",
        "cls_token": "<s>",
        "unk_token": "<unk>",
        "pad_token": "<pad>",
        "mask_token": "<mask>",
    }
    _write_json(out / "tokenizer_config.json", config)
    _write_json(out / "special_tokens_map.json", {k: v for k, v in config.items() if k.endswith("_token")})


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def _prepare_out_dir(out: Path) -> None:
    """Refuse a non-empty directory that is not a previous synth output; clear a previous synth output."""
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a directory")
    if out.is_dir() and any(out.iterdir()):
        if not (out / "manifest.json").is_file():
            raise FileExistsError(
                f"{out} is not empty and has no manifest.json, so it is not a previous synth output; "
                "refusing to overwrite it (choose an empty or new directory)"
            )
        for prefix in PREFIX.values():
            for path in out.glob(f"{prefix}_*.arrow"):
                path.unlink()
        labels = [f"{prefix}_labels.json" for prefix in CLASS_LABELS]
        for name in ("vqa_answers.json", "vqa_baselines.json", "manifest.json", *labels):
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / "tokenizer", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)


def write_synthetic(
    out_dir: str | os.PathLike,
    images: int = 2000,
    seed: int = 0,
    image_size: int = 64,
    rows_per_shard: int = 128,
    log: Callable[[str], None] | None = None,
    classification: int | None = None,
) -> dict:
    """Write all synthetic datasets, the VQA vocabulary and baselines, a tokenizer and a manifest under out_dir.

    `classification` (default: `images`, at most 2000) is the size of each classification set (shapes pictures,
    sentiment sentences), on top of `images`.
    """
    if images < MIN_IMAGES:
        raise ValueError(f"images must be at least {MIN_IMAGES} so every split gets examples, got {images}")
    classification = min(images, 2000) if classification is None else classification
    if classification < MIN_IMAGES:
        raise ValueError(
            f"classification must be at least {MIN_IMAGES} so every split gets examples, got {classification}"
        )
    if image_size < 24:
        raise ValueError(
            f"image_size must be at least 24 px to draw distinguishable objects, got {image_size}"
        )
    if rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be positive, got {rows_per_shard}")
    log = log or (lambda _msg: None)
    start = time.perf_counter()
    out = Path(out_dir)
    _prepare_out_dir(out)
    # an early, incomplete manifest marks the directory as ours even if this run is interrupted
    _write_json(out / "manifest.json", {"generator": GENERATOR_VERSION, "complete": False})
    ctx = _Context(seed, image_size)
    files: dict[str, int] = {}
    rows: dict[str, dict[str, int]] = {}
    for name, total in _budget(images, classification).items():
        rows[name] = _split_sizes(total, SPLITS[name])
        for split, n in rows[name].items():
            stem = f"{PREFIX[name]}_{split}"
            files.update(
                _write_shards(out, stem, SCHEMAS[name], BUILDERS[name](ctx, name, split, n), rows_per_shard)
            )
            log(f"wrote {stem}: {n} rows ({time.perf_counter() - start:.1f}s)")
    _write_json(out / "vqa_answers.json", VQA_VOCAB)
    for prefix, names in CLASS_LABELS.items():
        _write_json(out / f"{prefix}_labels.json", names)
    baselines = _baselines(ctx.vqa_truth)
    _write_json(out / "vqa_baselines.json", baselines)
    train_tokenizer(ctx.texts, out / "tokenizer")
    log(f"trained tokenizer on {len(ctx.texts)} distinct texts ({time.perf_counter() - start:.1f}s)")
    manifest = {
        "generator": GENERATOR_VERSION,
        "complete": True,
        "seed": seed,
        "images": images,
        "classification": classification,
        "image_size": image_size,
        "rows_per_shard": rows_per_shard,
        "files": files,
        "rows": rows,
        "vqa_baselines": baselines,
    }
    _write_json(out / "manifest.json", manifest)
    seconds = round(time.perf_counter() - start, 3)
    return {
        "out_dir": str(out),
        "files": sorted(files),
        "rows": rows,
        "baselines": baselines,
        "seconds": seconds,
    }


def main_synth(args: argparse.Namespace) -> int:
    """CLI entry: `btp data synth OUT_DIR [--images N] [--seed S] [--image-size PX] [--rows-per-shard R]`."""
    try:
        summary = write_synthetic(
            args.out_dir,
            args.images,
            args.seed,
            args.image_size,
            args.rows_per_shard,
            log=print,
            classification=getattr(args, "classification", None),
        )
    except (FileExistsError, ValueError) as err:
        raise SystemExit(f"btp data synth: {err}") from err
    except OSError as err:
        # a folder that cannot be made or written: a file in the way, no permission, no space
        where = err.filename or args.out_dir
        raise SystemExit(
            f"btp data synth: cannot write {where}: {err.strerror or err}; choose another OUT_DIR"
        ) from err
    print(f"\n{'dataset':<9} " + " ".join(f"{s:>7}" for s in ("train", "val/dev", "test")))
    for name, splits in summary["rows"].items():
        print(f"{name:<9} " + " ".join(f"{n:>7}" for n in splits.values()))
    print(f"{len(summary['files'])} arrow files in {summary['out_dir']} ({summary['seconds']:.1f}s)")
    return 0
