"""Tests for btp.data.synth: layout, grounded labels re-checked from the scenes, balance, determinism."""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

import pyarrow as pa
import pytest

from btp.data import scenes as sc
from btp.data.synth import main_synth, write_synthetic

COLORS = "red|green|blue|yellow"
SHAPES = "circle|square|triangle"
POS = ["top left", "top right", "bottom left", "bottom right", "top", "bottom", "left", "right", "center"]
GRID = {
    "top left": (0, 0), "top": (0, 1), "top right": (0, 2),
    "left": (1, 0), "center": (1, 1), "right": (1, 2),
    "bottom left": (2, 0), "bottom": (2, 1), "bottom right": (2, 2),
}  # fmt: skip
NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6}
EXPECTED_COLUMNS = {
    "coco_caption_karpathy": ["image", "caption", "image_id", "split", "scene"],
    "f30k_caption_karpathy": ["image", "caption", "image_id", "split", "scene"],
    "vqav2": ["image", "questions", "answers", "answer_labels", "answer_scores", "image_id", "question_id",
              "question_type", "split", "scene"],
    "nlvr2": ["image_0", "image_1", "questions", "answers", "identifier", "scene_0", "scene_1"],
    "snli": ["image", "sentences", "labels", "image_id", "scene"],
    "shapes": ["image", "label", "label_name", "scene"],
    "sentiment": ["sentence", "label", "label_name"],
}  # fmt: skip
SPLIT_NAMES = {"nlvr2": ("train", "dev", "test1"), "snli": ("train", "dev", "test")}


# ---- an independent checker: recompute every answer from the scene JSON by parsing the text ----


def objs_of(scene_json: str) -> list[dict]:
    return json.loads(scene_json)["objects"]


def with_(objs, **kw):
    return [o for o in objs if all(o[k] == v for k, v in kw.items())]


def answer_question(question: str, objs: list[dict]) -> str:
    if m := re.fullmatch(rf"what color is the ({SHAPES})\?", question):
        (o,) = with_(objs, shape=m[1])  # the asked shape must occur exactly once
        return o["color"]
    if m := re.fullmatch(rf"what shape is the ({COLORS}) object\?", question):
        (o,) = with_(objs, color=m[1])
        return o["shape"]
    if question == "how many objects are there?":
        return str(len(objs))
    if m := re.fullmatch(rf"is there a ({COLORS}) ({SHAPES})\?", question):
        return "yes" if with_(objs, color=m[1], shape=m[2]) else "no"
    if m := re.fullmatch(rf"where is the ({COLORS}) ({SHAPES})\?", question):
        (o,) = with_(objs, color=m[1], shape=m[2])
        return next(p for p, cell in GRID.items() if cell == (o["row"], o["col"]))
    raise AssertionError(f"unparsed question {question!r}")


def is_misbound(question: str, objs: list[dict]) -> bool:
    m = re.fullmatch(rf"is there a ({COLORS}) ({SHAPES})\?", question)
    return bool(
        m and with_(objs, color=m[1]) and with_(objs, shape=m[2]) and not with_(objs, color=m[1], shape=m[2])
    )


def caption_true(caption: str, objs: list[dict]) -> bool:
    pos = "|".join(POS)
    mention = re.compile(rf"(?:(small|large) )?({COLORS}) ({SHAPES})(?: (?:at|on|in) the ({pos}))?")
    found = 0
    for m in mention.finditer(caption):
        found += 1
        kw = {"color": m[2], "shape": m[3]}
        if m[1]:
            kw["size"] = m[1]
        if m[4]:
            kw["row"], kw["col"] = GRID[m[4]]
        if not with_(objs, **kw):
            return False
    for m in re.finditer(r"\b(one|two|three) objects?\b", caption):
        found += 1
        if NUMBERS[m[1]] != len(objs):
            return False
    return found > 0


def snli_label(hypothesis: str, objs: list[dict]) -> int:
    if " is made of " in hypothesis or hypothesis.startswith("the picture was taken"):
        return 1
    if m := re.fullmatch(rf"there is a ({COLORS}) ({SHAPES})", hypothesis):
        truth = bool(with_(objs, color=m[1], shape=m[2]))
    elif m := re.fullmatch(r"there (?:is|are) (one|two|three) objects?", hypothesis):
        truth = NUMBERS[m[1]] == len(objs)
    elif m := re.fullmatch(rf"the ({SHAPES}) is ({COLORS})", hypothesis):
        (o,) = with_(objs, shape=m[1])
        truth = o["color"] == m[2]
    elif m := re.fullmatch(rf"the ({COLORS}) object is a ({SHAPES})", hypothesis):
        (o,) = with_(objs, color=m[1])
        truth = o["shape"] == m[2]
    else:
        raise AssertionError(f"unparsed hypothesis {hypothesis!r}")
    return 2 if truth else 0


def nlvr2_truth(statement: str, left: list[dict], right: list[dict]) -> bool:
    sides = {"left": left, "right": right}
    if m := re.fullmatch(
        r"there are more objects in the (left|right) image than in the (left|right) image", statement
    ):
        return len(sides[m[1]]) > len(sides[m[2]])
    if statement == "both images contain the same number of objects":
        return len(left) == len(right)
    if m := re.fullmatch(rf"both images contain a ({COLORS}) object", statement):
        return bool(with_(left, color=m[1]) and with_(right, color=m[1]))
    if m := re.fullmatch(rf"the (left|right) image contains a ({SHAPES})", statement):
        return bool(with_(sides[m[1]], shape=m[2]))
    if m := re.fullmatch(rf"exactly one image contains a ({COLORS}) ({SHAPES})", statement):
        return bool(with_(left, color=m[1], shape=m[2])) != bool(with_(right, color=m[1], shape=m[2]))
    if m := re.fullmatch(r"there are (\w+) objects in total", statement):
        return len(left) + len(right) == NUMBERS[m[1]]
    raise AssertionError(f"unparsed statement {statement!r}")


# ---- fixtures ----


@pytest.fixture(scope="module")
def out(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("synth")
    write_synthetic(path, images=300, seed=3, image_size=48, rows_per_shard=50)
    return path


def read(out: Path, prefix: str, split: str | None = None) -> list[dict]:
    pattern = f"{prefix}_{split}_*.arrow" if split else f"{prefix}_*.arrow"
    rows = []
    for path in sorted(out.glob(pattern)):
        with pa.OSFile(str(path), "rb") as source:
            rows += pa.ipc.open_file(source).read_all().to_pylist()
    return rows


# ---- tests ----


def test_files_columns_and_ipc_file_format(out):
    for prefix, columns in EXPECTED_COLUMNS.items():
        for split in SPLIT_NAMES.get(prefix.split("_")[0], ("train", "val", "test")):
            paths = sorted(out.glob(f"{prefix}_{split}_*.arrow"))
            assert paths and paths[0].name == f"{prefix}_{split}_0.arrow"
            for path in paths:
                assert path.read_bytes()[:6] == b"ARROW1"  # the IPC file (not stream) magic
                with pa.OSFile(str(path), "rb") as source:
                    assert pa.ipc.open_file(source).schema.names == columns
    assert len(list(out.glob("coco_caption_karpathy_train_*.arrow"))) > 1  # 50 rows per shard -> several
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["complete"] and manifest["seed"] == 3 and manifest["image_size"] == 48
    assert sum(manifest["files"].values()) == sum(n for d in manifest["rows"].values() for n in d.values())


def test_images_are_png_of_the_right_size(out):
    from io import BytesIO

    from PIL import Image

    row = read(out, "vqav2", "val")[0]
    image = Image.open(BytesIO(row["image"]))
    assert image.format == "PNG" and image.size == (48, 48)


def test_captions_are_true(out):
    for prefix in ("coco_caption_karpathy", "f30k_caption_karpathy"):
        for row in read(out, prefix):
            assert len(row["caption"]) == 5
            for caption in row["caption"]:
                assert caption_true(caption, objs_of(row["scene"])), caption


def test_vqa_labels_match_the_scene(out):
    vocab = json.loads((out / "vqa_answers.json").read_text())
    rows = read(out, "vqav2")
    assert rows
    for row in rows:
        objs = objs_of(row["scene"])
        assert len(row["questions"]) == 5 and len(set(row["question_type"])) == 5
        for q, answers, labels, scores in zip(row["questions"], row["answers"], row["answer_labels"],
                                              row["answer_scores"]):  # fmt: skip
            truth = answer_question(q, objs)
            assert len(answers) == 10 and Counter(answers).most_common(1)[0][0] == truth
            counts = Counter(answers)
            assert [vocab[i] for i in labels] == sorted(counts, key=vocab.index)
            assert scores == [min(1.0, {1: 0.3, 2: 0.6, 3: 0.9}.get(counts[vocab[i]], 1.0)) for i in labels]


def test_vqa_answers_balanced_and_misbound_nos():
    # a larger sample from the scene generator alone (no rendering) keeps this fast
    rng, balancer = random.Random(0), sc.Balancer()
    by_type: dict[str, Counter] = {t: Counter() for t in sc.QUESTION_TYPES}
    misbound = nos = 0
    for i in range(900):
        objs = sc.random_scene(rng, 1 + i % 3)
        for kind, q, answer in sc.vqa_questions(objs, rng, balancer):
            assert answer_question(q, objs["objects"]) == answer
            by_type[kind][answer] += 1
            if kind == "exist" and answer == "no":
                nos += 1
                misbound += is_misbound(q, objs["objects"])
    for kind, counts in by_type.items():
        assert set(counts) == set(sc.VQA_ANSWERS[kind]), kind
        assert max(counts.values()) <= 1.5 * 900 / len(counts), (kind, counts)
    assert 0.35 * nos <= misbound <= 0.65 * nos


def test_written_vqa_has_misbound_nos(out):
    rows = read(out, "vqav2")
    assert any(is_misbound(q, objs_of(r["scene"])) for r in rows for q in r["questions"])


def test_baselines(out):
    baselines = json.loads((out / "vqa_baselines.json").read_text())
    assert set(baselines) == {*sc.QUESTION_TYPES, "overall"}
    for kind, value in baselines.items():
        assert 0.0 <= value < (0.75 if kind == "exist" else 0.6), (kind, value)


def test_nlvr2_answers_match_the_scenes(out):
    rows = read(out, "nlvr2")
    assert Counter(a for r in rows for a in r["answers"]).keys() == {"True", "False"}
    for split in ("train", "dev", "test1"):
        split_rows = read(out, "nlvr2", split)
        counts = Counter(r["answers"][0] for r in split_rows)
        assert abs(counts["True"] - counts["False"]) <= 1
    for row in rows:
        truth = nlvr2_truth(row["questions"][0], objs_of(row["scene_0"]), objs_of(row["scene_1"]))
        assert row["answers"] == [str(truth)], row["questions"]


def test_snli_labels_match_the_scene(out):
    rows = read(out, "snli")
    assert Counter(label for r in rows for label in r["labels"]) == {0: len(rows), 1: len(rows), 2: len(rows)}
    for row in rows:
        objs = objs_of(row["scene"])
        for (premise, hypothesis), label in zip(row["sentences"], row["labels"]):
            assert caption_true(premise, objs), premise
            assert snli_label(hypothesis, objs) == label, hypothesis


def test_shapes_classes_are_the_one_object_of_the_picture(out):
    from io import BytesIO

    from PIL import Image

    names = json.loads((out / "shapes_labels.json").read_text())
    assert names == [f"{c} {s}" for c in sc.COLORS for s in sc.SHAPES]
    for split in ("train", "val", "test"):
        rows = read(out, "shapes", split)
        counts = Counter(r["label"] for r in rows)
        assert len(rows) >= 12 and max(counts.values()) - min(counts.values()) <= 1  # balanced
    for row in read(out, "shapes"):
        (obj,) = objs_of(row["scene"])
        assert row["label_name"] == names[row["label"]] == f"{obj['color']} {obj['shape']}"
        # decidable from the pixels: the object's colour is painted, no other object colour is
        colours = {rgb for _, rgb in Image.open(BytesIO(row["image"])).convert("RGB").getcolors(48 * 48)}
        assert colours == {sc.BACKGROUND, sc.RGB[obj["color"]]}


def sentiment_truth(sentence: str) -> int:
    """The label from the words: the last clause decides (after `but`), `not` flips its adjective."""
    positive = {"good", "great", "lovely", "excellent", "pleasant", "wonderful"}
    negative = {"bad", "awful", "boring", "terrible", "dull", "poor"}
    clauses = re.split(r" but | and ", sentence)
    values = []
    for clause in clauses:
        words = clause.split()
        assert words[-1] in positive | negative, sentence
        values.append((words[-1] in positive) != ("not" in words))
    if " and " in sentence:
        assert values[0] == values[1], sentence  # `and` joins clauses that agree
    if " but " in sentence:
        assert values[0] != values[1], sentence  # `but` turns the sentiment
    return int(values[-1])


def test_sentiment_labels_follow_the_rule_and_no_word_gives_them_away(out):
    assert json.loads((out / "sentiment_labels.json").read_text()) == ["negative", "positive"]
    rows = read(out, "sentiment")
    for row in rows:
        assert sentiment_truth(row["sentence"]) == row["label"], row
        assert row["label_name"] == ("negative", "positive")[row["label"]]
    for split in ("train", "val", "test"):
        counts = Counter(r["label"] for r in read(out, "sentiment", split))
        assert abs(counts[0] - counts[1]) <= 1
    # every word occurs in sentences of both labels: the label needs negation and clause order
    by_word: dict[str, set[int]] = {}
    for row in rows:
        for word in row["sentence"].split():
            by_word.setdefault(word, set()).add(row["label"])
    assert all(labels == {0, 1} for labels in by_word.values()), by_word
    assert any(" but " in r["sentence"] for r in rows) and any(" not " in r["sentence"] for r in rows)


def test_tokenizer_loads_and_round_trips(out):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(out / "tokenizer"))
    assert tokenizer.pad_token_id == 1 and tokenizer.mask_token_id == 4
    assert tokenizer.bos_token_id == 0 and tokenizer.eos_token_id == 2 and tokenizer.unk_token_id == 3
    assert len(tokenizer) <= 1024
    question = "is there a red square?"
    ids = tokenizer(question)["input_ids"]
    assert ids[0] == 0 and ids[-1] == 2
    assert tokenizer.decode(ids, skip_special_tokens=True) == question


def test_deterministic_bytes(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for path in (a, b):
        write_synthetic(path, images=60, seed=7, image_size=32, rows_per_shard=10)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert Path("tokenizer/tokenizer.json") in files_a
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_an_out_dir_that_cannot_be_made_is_one_message(tmp_path):
    (tmp_path / "a_file").write_text("not a folder")
    out = tmp_path / "a_file" / "synth"
    args = argparse.Namespace(out_dir=str(out), images=40, seed=0, image_size=32, rows_per_shard=500)
    with pytest.raises(
        SystemExit, match=r"btp data synth: cannot write .*a_file.*: Not a directory; choose another"
    ):
        main_synth(args)
    assert (tmp_path / "a_file").read_text() == "not a folder"


def test_refuses_foreign_directory_and_overwrites_own(tmp_path, capsys):
    args = argparse.Namespace(out_dir=str(tmp_path), images=40, seed=0, image_size=32, rows_per_shard=500)
    (tmp_path / "precious.txt").write_text("user data")
    with pytest.raises(SystemExit, match="not a previous synth output"):
        main_synth(args)
    assert (tmp_path / "precious.txt").read_text() == "user data"
    (tmp_path / "precious.txt").unlink()
    assert main_synth(args) == 0
    assert main_synth(args) == 0  # a previous synth output is overwritten
    assert "arrow files" in capsys.readouterr().out
    assert json.loads((tmp_path / "manifest.json").read_text())["complete"]
