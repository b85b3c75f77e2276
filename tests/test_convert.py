"""Tests for btp.data.convert: tiny raw downloads in the public layouts round-trip into Arrow shards."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pytest

from btp.data import scenes as sc
from btp.data.convert import CONVERTERS, ConvertError, convert, main_convert, output_schema


def picture(path: Path, seed: int, fmt: str = "PNG") -> bytes:
    """Render a small synthetic scene to `path` (PNG or JPEG) and return the file bytes."""
    rng = random.Random(seed)
    image = sc.render(sc.random_scene(rng, 1 + seed % 3), 32, rng)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(buffer.getvalue())
    return buffer.getvalue()


def write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))


def write_lines(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records))


def read_split(out: Path, stem: str) -> tuple[list[Path], pa.Table]:
    """All shards of one split, in shard order, and their rows concatenated."""
    files = sorted(out.glob(f"{stem}_*.arrow"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    tables = [pa.ipc.open_file(pa.memory_map(str(p))).read_all() for p in files]
    return files, pa.concat_tables(tables)


def quiet(_msg: str) -> None:
    pass


# ---- fixtures: raw downloads in the public layouts ---------------------------------------------------------
def make_coco(raw: Path) -> dict[str, bytes]:
    splits = ["train", "train", "train", "restval", "val", "test"]
    images, sources = [], {}
    for i, split in enumerate(splits):
        folder = "val2014" if split != "train" else "train2014"
        name = f"COCO_{folder}_{i:012d}.jpg"
        sources[name] = picture(raw / folder / name, i, "JPEG")
        captions = [{"raw": f"caption {k} of picture {i}."} for k in range(5)]
        images.append({"filepath": folder, "filename": name, "split": split, "sentences": captions})
    write_json(raw / "dataset_coco.json", {"images": images, "dataset": "coco"})
    return sources


def make_f30k(raw: Path) -> dict[str, bytes]:
    images, sources = [], {}
    for i, split in enumerate(["train", "train", "val", "test"]):
        name = f"{1000 + i}.jpg"
        sources[name] = picture(raw / "flickr30k-images" / name, i, "JPEG")
        images.append({"filename": name, "split": split, "sentences": [{"raw": f"a picture {i}"}]})
    write_json(raw / "dataset_flickr30k.json", {"images": images})
    return sources


def vqa_annotation(qid: int, image_id: int, answers: list[str], majority: str) -> dict:
    return {
        "question_id": qid,
        "image_id": image_id,
        "multiple_choice_answer": majority,
        "answers": [
            {"answer": a, "answer_confidence": "yes", "answer_id": k + 1} for k, a in enumerate(answers)
        ],
    }


def make_vqav2(raw: Path, with_test: bool = True) -> dict[str, bytes]:
    sources = {}
    for folder, image_ids in (("train2014", [9, 25]), ("val2014", [42]), ("test2015", [7])):
        for image_id in image_ids:
            name = f"COCO_{folder}_{image_id:012d}.jpg"
            sources[name] = picture(raw / folder / name, image_id, "JPEG")
    train_q = [
        {"image_id": 9, "question": "How many dogs?", "question_id": 90},
        {"image_id": 25, "question": "Is it red?", "question_id": 250},
        {"image_id": 9, "question": "What colour is the ball?", "question_id": 91},
    ]
    train_a = [
        vqa_annotation(90, 9, ["two"] * 3 + ["2"] * 7, "2"),
        vqa_annotation(250, 25, ["Yes"] * 2 + ["no"] * 8, "no"),
        vqa_annotation(91, 9, ["red"] * 9 + ["Orange!"], "red"),
    ]
    val_q = [{"image_id": 42, "question": "Is there a cat?", "question_id": 420}]
    val_a = [vqa_annotation(420, 42, ["yes"] * 10, "Yes")]
    write_json(raw / "v2_OpenEnded_mscoco_train2014_questions.json", {"questions": train_q})
    write_json(raw / "v2_mscoco_train2014_annotations.json", {"annotations": train_a})
    write_json(raw / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": val_q})
    write_json(raw / "v2_mscoco_val2014_annotations.json", {"annotations": val_a})
    if with_test:
        test_q = [{"image_id": 7, "question": "Where?", "question_id": 70}]
        write_json(raw / "v2_OpenEnded_mscoco_test2015_questions.json", {"questions": test_q})
        write_json(raw / "v2_OpenEnded_mscoco_test-dev2015_questions.json", {"questions": test_q})
    return sources


def make_nlvr2(raw: Path) -> dict[str, bytes]:
    sources = {}
    records = {
        "train": [("train-10-0-0", "True", 3), ("train-10-0-1", "False", 3), ("train-11-1-0", "True", 7)],
        "dev": [("dev-850-0-0", "False", None)],
        "test1": [("test1-3-2-0", "True", None), ("test1-3-2-1", "True", None)],
    }
    for split, items in records.items():
        lines = []
        for identifier, label, directory in items:
            pair = identifier.rsplit("-", 1)[0]
            folder = raw / "images" / "train" / str(directory) if split == "train" else raw / split
            for k in (0, 1):
                sources[f"{pair}-img{k}"] = picture(folder / f"{pair}-img{k}.png", len(sources))
            record = {"identifier": identifier, "sentence": f"statement {identifier}", "label": label}
            if directory is not None:
                record["directory"] = directory
            lines.append(record)
        write_lines(raw / f"{split}.json", lines)
    return sources


def make_snli(raw: Path) -> dict[str, bytes]:
    sources = {}
    records = {
        "train": [("100", "entailment"), ("100", "contradiction"), ("200", "neutral")],
        "dev": [("300", "neutral")],
        "test": [("400", "entailment")],
    }
    for split, items in records.items():
        lines = []
        for k, (image_id, label) in enumerate(items):
            path = raw / "Flickr30K" / "flickr30k_images" / f"{image_id}.jpg"
            if image_id not in sources:
                sources[image_id] = picture(path, int(image_id), "JPEG")
            lines.append(
                {
                    "Flickr30K_ID": image_id,
                    "sentence1": f"premise {image_id}",
                    "sentence2": f"hypothesis {k}",
                    "gold_label": label,
                    "pairID": f"{image_id}#{k}",
                }
            )
        write_lines(raw / f"snli_ve_{split}.jsonl", lines)
    return sources


# ---- round trips -------------------------------------------------------------------------------------------
def test_coco_round_trip(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sources = make_coco(raw)
    summary = convert("coco", raw, out, rows_per_shard=2, log=quiet)
    assert summary["rows"] == {"train": 3, "restval": 1, "val": 1, "test": 1}
    assert summary["files"]["coco_caption_karpathy_train_0.arrow"] == 2
    assert summary["files"]["coco_caption_karpathy_train_1.arrow"] == 1
    files, table = read_split(out, "coco_caption_karpathy_train")
    assert [p.name for p in files] == [
        "coco_caption_karpathy_train_0.arrow",
        "coco_caption_karpathy_train_1.arrow",
    ]
    assert table.schema == output_schema("coco")
    assert table.schema.names == ["image", "caption", "image_id", "split"]
    assert table.schema.field("caption").type == pa.list_(pa.string())
    for row in table.to_pylist():
        assert row["image"] == sources[row["image_id"]]  # the original JPEG bytes, not re-encoded
        assert row["split"] == "train" and len(row["caption"]) == 5
    assert table.column("caption")[0].as_py()[1] == "caption 1 of picture 0."
    _, restval = read_split(out, "coco_caption_karpathy_restval")
    assert restval.column("split").to_pylist() == ["restval"]


def test_f30k_round_trip(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sources = make_f30k(raw)
    summary = convert("f30k", raw, out, log=quiet)
    assert summary["rows"] == {"train": 2, "val": 1, "test": 1}
    assert sorted(summary["files"]) == [
        f"f30k_caption_karpathy_{s}_0.arrow" for s in ("test", "train", "val")
    ]
    _, table = read_split(out, "f30k_caption_karpathy_train")
    assert table.column("image_id").to_pylist() == ["1000.jpg", "1001.jpg"]
    assert table.column("image").to_pylist() == [sources["1000.jpg"], sources["1001.jpg"]]
    assert table.column("caption").to_pylist() == [["a picture 0"], ["a picture 1"]]


def test_vqav2_vocabulary_and_soft_scores(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sources = make_vqav2(raw)
    summary = convert("vqav2", raw, out, log=quiet, min_answer_freq=1)
    assert summary["rows"] == {"train": 2, "val": 1, "test": 1, "test-dev": 1}
    # normalised majority answers in first-seen order over train then val: "Yes" -> "yes"
    vocabulary = json.loads((out / "vqa_answers.json").read_text())
    assert vocabulary == ["2", "no", "red", "yes"]
    _, train = read_split(out, "vqav2_train")
    assert train.schema == output_schema("vqav2")
    assert train.schema.field("answer_scores").type == pa.list_(pa.list_(pa.float64()))
    assert train.schema.field("question_id").type == pa.list_(pa.int64())
    first, second = train.to_pylist()
    assert first["image_id"] == "9" and first["question_id"] == [90, 91]
    assert first["questions"] == ["How many dogs?", "What colour is the ball?"]
    assert first["image"] == sources["COCO_train2014_000000000009.jpg"]
    assert first["answers"][0] == ["2"] * 10  # 3 x "two" + 7 x "2", all normalised to "2"
    assert first["answer_labels"][0] == [0] and first["answer_scores"][0] == [1.0]
    assert first["answers"][1][-1] == "orange"  # outside the vocabulary: kept as an answer, no label
    assert first["answer_labels"][1] == [2] and first["answer_scores"][1] == [1.0]
    assert second["answer_labels"] == [[3, 1]] and second["answer_scores"] == [[0.6, 1.0]]
    _, test_dev = read_split(out, "vqav2_test-dev")
    row = test_dev.to_pylist()[0]
    assert row["image"] == sources["COCO_test2015_000000000007.jpg"]  # test-dev images live in test2015
    assert row["answers"] == [[]] and row["answer_labels"] == [[]] and row["split"] == "test-dev"


def test_vqav2_min_answer_freq_and_optional_test(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_vqav2(raw, with_test=False)
    write_json(  # a second "no" majority answer makes "no" the only answer seen twice
        raw / "v2_mscoco_val2014_annotations.json",
        {"annotations": [vqa_annotation(420, 42, ["no"] * 10, "no")]},
    )
    summary = convert("vqav2", raw, out, log=quiet, min_answer_freq=2)
    assert set(summary["rows"]) == {"train", "val"}
    assert json.loads((out / "vqa_answers.json").read_text()) == ["no"]
    _, train = read_split(out, "vqav2_train")
    assert train.column("answer_labels").to_pylist() == [[[], []], [[0]]]


def test_nlvr2_groups_statements_per_image_pair(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sources = make_nlvr2(raw)
    summary = convert("nlvr2", raw, out, log=quiet)
    assert summary["rows"] == {"train": 2, "dev": 1, "test1": 1}
    _, train = read_split(out, "nlvr2_train")
    assert train.schema == output_schema("nlvr2")
    first, second = train.to_pylist()
    assert first["identifier"] == "train-10-0"
    assert first["questions"] == ["statement train-10-0-0", "statement train-10-0-1"]
    assert first["answers"] == ["True", "False"]
    assert first["image_0"] == sources["train-10-0-img0"] and first["image_1"] == sources["train-10-0-img1"]
    assert second["identifier"] == "train-11-1" and second["answers"] == ["True"]
    _, test1 = read_split(out, "nlvr2_test1")
    assert test1.column("questions").to_pylist() == [["statement test1-3-2-0", "statement test1-3-2-1"]]
    assert test1.column("image_1").to_pylist() == [sources["test1-3-2-img1"]]


def test_snli_ve_labels_and_grouping(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    sources = make_snli(raw)
    summary = convert("snli_ve", raw, out, log=quiet)
    assert summary["rows"] == {"train": 2, "dev": 1, "test": 1}
    assert "snli_dev_0.arrow" in summary["files"]
    _, train = read_split(out, "snli_train")
    assert train.schema == output_schema("snli_ve")
    assert train.schema.field("labels").type == pa.list_(pa.int64())
    first, second = train.to_pylist()
    assert first["image_id"] == "100" and first["image"] == sources["100"]
    assert first["sentences"] == [["premise 100", "hypothesis 0"], ["premise 100", "hypothesis 1"]]
    assert first["labels"] == [2, 0]  # entailment 2, contradiction 0
    assert second["labels"] == [1]  # neutral 1


def test_rerun_removes_stale_shards(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_coco(raw)
    convert("coco", raw, out, rows_per_shard=1, log=quiet)
    assert (out / "coco_caption_karpathy_train_2.arrow").is_file()
    convert("coco", raw, out, rows_per_shard=10, log=quiet)
    assert sorted(p.name for p in out.glob("coco_caption_karpathy_train_*")) == [
        "coco_caption_karpathy_train_0.arrow"
    ]


# ---- bad input ---------------------------------------------------------------------------------------------
def test_missing_image_is_named_or_skipped(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_coco(raw)
    gone = raw / "val2014" / "COCO_val2014_000000000004.jpg"
    gone.unlink()
    with pytest.raises(ConvertError) as err:
        convert("coco", raw, out, log=quiet)
    message = str(err.value)
    assert str(gone) in message and "dataset_coco.json images[4]" in message
    assert "skip" in message
    assert not out.exists()  # every image is checked before anything is written
    logged: list[str] = []
    summary = convert("coco", raw, out, log=logged.append, skip_missing_images=True)
    assert summary["missing_images"] == 1 and summary["rows"]["val"] == 0
    assert read_split(out, "coco_caption_karpathy_val")[1].num_rows == 0  # an emptied split still has shard 0
    assert any("skipped 1 rows" in line for line in logged)


def test_missing_nlvr2_image_names_the_record(tmp_path):
    raw = tmp_path / "raw"
    make_nlvr2(raw)
    gone = raw / "dev" / "dev-850-0-img1.png"
    gone.unlink()
    with pytest.raises(ConvertError, match="dev-850-0-0") as err:
        convert("nlvr2", raw, tmp_path / "out", log=quiet)
    assert str(gone) in str(err.value) and "dev.json line 1" in str(err.value)


@pytest.mark.parametrize(
    "task, make, name",
    [
        ("coco", make_coco, "dataset_coco.json"),
        ("vqav2", make_vqav2, "v2_mscoco_val2014_annotations.json"),
        ("nlvr2", make_nlvr2, "test1.json"),
        ("snli_ve", make_snli, "snli_ve_dev.jsonl"),
    ],
)
def test_missing_json_file(tmp_path, task, make, name):
    raw = tmp_path / "raw"
    make(raw)
    (raw / name).unlink()
    with pytest.raises(ConvertError, match="not found") as err:
        convert(task, raw, tmp_path / "out", log=quiet)
    assert str(raw / name) in str(err.value)


def test_bad_labels(tmp_path):
    raw = tmp_path / "raw"
    make_snli(raw)
    write_lines(
        raw / "snli_ve_dev.jsonl",
        [{"Flickr30K_ID": "300", "sentence1": "a", "sentence2": "b", "gold_label": "maybe"}],
    )
    with pytest.raises(ConvertError, match=r"snli_ve_dev.jsonl line 1 .*unknown gold_label 'maybe'"):
        convert("snli_ve", raw, tmp_path / "out", log=quiet)
    make_nlvr2(raw)
    write_lines(raw / "dev.json", [{"identifier": "dev-850-0-0", "sentence": "s", "label": "yes"}])
    with pytest.raises(ConvertError, match=r"dev.json line 1 \(dev-850-0-0\): unknown label 'yes'"):
        convert("nlvr2", raw, tmp_path / "out", log=quiet)
    make_coco(raw)
    data = json.loads((raw / "dataset_coco.json").read_text())
    data["images"][2]["split"] = "holdout"
    write_json(raw / "dataset_coco.json", data)
    with pytest.raises(ConvertError, match=r"images\[2\] \(COCO_train2014_000000000002.jpg\): unknown split"):
        convert("coco", raw, tmp_path / "out", log=quiet)


def test_malformed_json_names_file_and_line(tmp_path):
    raw = tmp_path / "raw"
    make_snli(raw)
    path = raw / "snli_ve_train.jsonl"
    path.write_text(path.read_text() + '{"Flickr30K_ID": "9", oops\n')
    with pytest.raises(ConvertError, match=r"snli_ve_train.jsonl line 4: malformed JSON"):
        convert("snli_ve", raw, tmp_path / "out", log=quiet)
    make_f30k(raw)
    (raw / "dataset_flickr30k.json").write_text('{"images": [\n  {"filename": "1.jpg",\n  ]}')
    with pytest.raises(ConvertError, match=r"dataset_flickr30k.json line 3 column \d+: malformed JSON"):
        convert("f30k", raw, tmp_path / "out", log=quiet)


def test_missing_field_names_the_record(tmp_path):
    raw = tmp_path / "raw"
    make_vqav2(raw)
    write_json(raw / "v2_OpenEnded_mscoco_val2014_questions.json", {"questions": [{"image_id": 42}]})
    with pytest.raises(
        ConvertError, match=r"val2014_questions.json questions\[0\]: missing field 'question_id'"
    ):
        convert("vqav2", raw, tmp_path / "out", log=quiet)


# ---- CLI ---------------------------------------------------------------------------------------------------
def test_main_convert(tmp_path, capsys):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_snli(raw)
    args = argparse.Namespace(task="snli_ve", raw=str(raw), out=str(out), rows_per_shard=1)
    assert main_convert(args) == 0
    printed = capsys.readouterr().out
    assert "wrote snli_train_1.arrow: 1 rows" in printed and "4 arrow files" in printed
    args = argparse.Namespace(task="gqa", raw=str(raw), out=str(out), rows_per_shard=1)
    with pytest.raises(SystemExit, match="btp data convert: unknown task 'gqa'; choose one of coco, f30k"):
        main_convert(args)
    args = argparse.Namespace(task="coco", raw=str(raw), out=str(out), rows_per_shard=10)
    with pytest.raises(SystemExit, match=r"dataset_coco.json not found"):
        main_convert(args)
    args = argparse.Namespace(task="coco", raw=str(tmp_path / "nowhere"), out=str(out), rows_per_shard=10)
    with pytest.raises(SystemExit, match="raw directory .*nowhere not found"):
        main_convert(args)


def test_every_task_has_a_converter():
    assert set(CONVERTERS) == {"coco", "f30k", "vqav2", "nlvr2", "snli_ve"}


@pytest.mark.parametrize(
    "task, make, kind, samples",
    [
        ("coco", make_coco, "pretrain", 30),
        ("f30k", make_f30k, "irtr", 4),
        ("vqav2", make_vqav2, "vqa", 6),
        ("nlvr2", make_nlvr2, "nlvr2", 6),
        ("snli_ve", make_snli, "snli_ve", 5),
    ],
)
def test_rows_expand_into_training_samples(tmp_path, task, make, kind, samples):
    from bridgetower.batches import expand_row
    from bridgetower.transforms import decode_image

    raw, out = tmp_path / "raw", tmp_path / "out"
    make(raw)
    convert(task, raw, out, log=quiet, min_answer_freq=1)
    vocabulary = len(json.loads((out / "vqa_answers.json").read_text())) if task == "vqav2" else None
    expanded = []
    for path in sorted(out.glob("*.arrow")):
        for row in pa.ipc.open_file(pa.memory_map(str(path))).read_all().to_pylist():
            expanded += expand_row(kind, row, vocabulary)
    assert len(expanded) == samples
    for sample in expanded:
        for column in ("image", "image_0", "image_1"):
            if column in sample:
                decode_image(sample[column])
