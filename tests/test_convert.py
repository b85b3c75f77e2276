"""Tests for btp.data.convert: tiny raw downloads in the public layouts round-trip into Arrow shards."""

from __future__ import annotations

import argparse
import io
import json
import random
from pathlib import Path

import numpy as np
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


def test_a_rerun_is_refused_or_replaces_every_shard_of_the_dataset(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_coco(raw)
    convert("coco", raw, out, rows_per_shard=1, log=quiet)
    assert (out / "coco_caption_karpathy_train_2.arrow").is_file()
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    with pytest.raises(
        ConvertError, match=r"already holds \d+ coco shard\(s\) \(coco_caption_karpathy_.*--overwrite"
    ):
        convert("coco", raw, out, rows_per_shard=10, log=quiet)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing lost
    stray = out / "coco_caption_karpathy_extra_0.arrow"  # a split this source does not have
    stray.write_bytes(before["coco_caption_karpathy_train_0.arrow"])
    convert("coco", raw, out, rows_per_shard=10, log=quiet, overwrite=True)
    assert not stray.exists()  # splits of two sources never mix
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
    assert set(CONVERTERS) == {"coco", "f30k", "vqav2", "nlvr2", "snli_ve", "cifar10", "cifar100", "glue"}


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


# ---- CIFAR-10/100 (binary version) -------------------------------------------------------------------------
def cifar_records(n: int, seed: int, labels: list[tuple[int, ...]]) -> tuple[bytes, list[np.ndarray]]:
    """n records of (label bytes..., 3072 pixel bytes) and each picture as [32, 32, 3]."""
    rng = np.random.default_rng(seed)
    data, pictures = b"", []
    for i in range(n):
        planes = rng.integers(0, 256, size=(3, 32, 32), dtype=np.uint8)
        data += bytes(labels[i % len(labels)]) + planes.tobytes()
        pictures.append(planes.transpose(1, 2, 0))
    return data, pictures


def make_cifar10(raw: Path) -> dict[str, list[tuple[int, np.ndarray]]]:
    folder = raw / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    (folder / "batches.meta.txt").write_text("\n".join(names) + "\n\n")
    expected: dict[str, list] = {"train": [], "test": []}
    files = [(f"data_batch_{i}.bin", "train") for i in range(1, 6)] + [("test_batch.bin", "test")]
    for k, (name, split) in enumerate(files):
        labels = [(k,), (9 - k,)]
        data, pictures = cifar_records(2, k, labels)
        (folder / name).write_bytes(data)
        expected[split] += [(lab[0], pic) for lab, pic in zip(labels, pictures)]
    return expected


def decoded(data: bytes) -> np.ndarray:
    from bridgetower.transforms import decode_image

    return np.asarray(decode_image(data).convert("RGB"))


def test_cifar10_binary_round_trip(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    expected = make_cifar10(raw)
    summary = convert("cifar10", raw, out, rows_per_shard=4, log=quiet)
    assert summary["rows"] == {"train": 10, "test": 2}
    names = json.loads((out / "cifar10_labels.json").read_text())
    assert len(names) == 10 and names[3] == "cat"
    for split in ("train", "test"):
        files, table = read_split(out, f"cifar10_{split}")
        assert [f.name for f in files][0] == f"cifar10_{split}_0.arrow"
        assert table.schema.names == ["image", "label", "label_name"]
        for row, (label, picture) in zip(table.to_pylist(), expected[split], strict=True):
            assert row["label"] == label and row["label_name"] == names[label]
            assert np.array_equal(decoded(row["image"]), picture)  # PNG: the exact pixels, in file order
    # the unpacked folder itself works as --raw too
    again = convert("cifar10", raw / "cifar-10-batches-bin", tmp_path / "again", log=quiet)
    assert again["rows"] == summary["rows"]


def test_cifar100_uses_the_fine_labels(tmp_path):
    folder = tmp_path / "raw" / "cifar-100-binary"
    folder.mkdir(parents=True)
    (folder / "fine_label_names.txt").write_text("".join(f"fine{i}\n" for i in range(100)))
    (folder / "coarse_label_names.txt").write_text("".join(f"coarse{i}\n" for i in range(20)))
    train, pictures = cifar_records(3, 0, [(1, 57), (19, 99), (0, 0)])
    (folder / "train.bin").write_bytes(train)
    (folder / "test.bin").write_bytes(cifar_records(1, 1, [(4, 42)])[0])
    out = tmp_path / "out"
    convert("cifar100", tmp_path / "raw", out, log=quiet)
    _, table = read_split(out, "cifar100_train")
    assert table.column("label").to_pylist() == [57, 99, 0]
    assert table.column("label_name").to_pylist() == ["fine57", "fine99", "fine0"]
    assert np.array_equal(decoded(table.column("image")[1].as_py()), pictures[1])
    assert len(json.loads((out / "cifar100_labels.json").read_text())) == 100


class _Trap:
    """A pickle that would leave a file behind if anything unpickled it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "unpickled!"))


def test_cifar_reads_only_the_binary_version_and_never_unpickles(tmp_path):
    import pickle

    marker = tmp_path / "executed"
    python_version = tmp_path / "raw" / "cifar-10-batches-py"
    python_version.mkdir(parents=True)
    (python_version / "data_batch_1").write_bytes(pickle.dumps(_Trap(marker)))
    (python_version / "batches.meta").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ConvertError, match=r"batches.meta.txt not found: .*binary version.*never read"):
        convert("cifar10", python_version, tmp_path / "out", log=quiet)
    # a pickle renamed to look binary is read as bytes: a clear error, and still nothing executed
    binary = tmp_path / "raw" / "cifar-10-batches-bin"
    make_cifar10(tmp_path / "raw")
    (binary / "data_batch_2.bin").write_bytes(pickle.dumps(_Trap(marker)))
    with pytest.raises(ConvertError, match=r"data_batch_2.bin: \d+ bytes is not a whole number of 3073-byte"):
        convert("cifar10", binary, tmp_path / "out", log=quiet)
    assert not marker.exists()


def test_cifar_bad_label_and_missing_batch_are_named(tmp_path):
    make_cifar10(tmp_path / "raw")
    folder = tmp_path / "raw" / "cifar-10-batches-bin"
    good = (folder / "data_batch_3.bin").read_bytes()
    data = bytearray(good)
    data[3073] = 10  # the second record's label
    (folder / "data_batch_3.bin").write_bytes(bytes(data))
    with pytest.raises(ConvertError, match=r"data_batch_3.bin record 1: label 10 is outside the 10 classes"):
        convert("cifar10", tmp_path / "raw", tmp_path / "out", log=quiet)
    (folder / "data_batch_3.bin").write_bytes(good)
    (folder / "data_batch_5.bin").unlink()
    with pytest.raises(ConvertError, match=r"data_batch_5.bin not found"):
        convert("cifar10", tmp_path / "raw", tmp_path / "out", log=quiet)


# ---- GLUE (TSV) --------------------------------------------------------------------------------------------
def write_tsv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join("\t".join(r) + "\n" for r in rows), encoding="utf-8")


MNLI_HEADER = ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
               "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"]  # fmt: skip


def make_glue(raw: Path) -> None:
    write_tsv(
        raw / "SST-2" / "train.tsv", [["sentence", "label"], ["a gripping film ", "1"], ['a "dull" one', "0"]]
    )
    write_tsv(raw / "SST-2" / "dev.tsv", [["sentence", "label"], ["not bad at all", "1"]])
    write_tsv(raw / "SST-2" / "test.tsv", [["index", "sentence"], ["0", "no label here"]])
    write_tsv(raw / "CoLA" / "train.tsv", [["gj04", "1", "", "Our friends won't buy this."], ["gj04", "0", "*", "They drank the pub."]])  # fmt: skip
    write_tsv(raw / "CoLA" / "dev.tsv", [["gj04", "1", "", "The sailors rode the breeze."]])
    mrpc = ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"]
    write_tsv(raw / "MRPC" / "train.tsv", [mrpc, ["1", "7", "8", "He said so.", "So he said."]])
    write_tsv(raw / "MRPC" / "dev.tsv", [mrpc, ["0", "9", "10", "It rained.", "It was sunny."]])
    rte = ["index", "sentence1", "sentence2", "label"]
    write_tsv(raw / "RTE" / "train.tsv", [rte, ["0", "A cat sat.", "An animal sat.", "entailment"], ["1", "A cat sat.", "A dog ran.", "not_entailment"]])  # fmt: skip
    write_tsv(raw / "RTE" / "dev.tsv", [rte, ["0", "It is red.", "It is blue.", "not_entailment"]])
    qqp = ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"]
    write_tsv(raw / "QQP" / "train.tsv", [qqp, ["0", "1", "2", "How?", "Why?", "0"], ["1", "3", "4", "What?", "", "1"]])  # fmt: skip
    write_tsv(raw / "QQP" / "dev.tsv", [qqp, ["2", "5", "6", "Who?", "Who is it?", "1"]])
    row = ["0", "1", "1e", "fiction", "(x)", "(y)", "(X)", "(Y)"]
    for split, label in (
        ("train", "neutral"),
        ("dev_matched", "contradiction"),
        ("dev_mismatched", "entailment"),
    ):
        write_tsv(
            raw / "MNLI" / f"{split}.tsv", [MNLI_HEADER, [*row, "He left.", "He stayed.", label, label]]
        )
    write_tsv(
        raw / "STS-B" / "train.tsv", [["index", "sentence1", "sentence2", "score"], ["0", "a", "b", "3.8"]]
    )


def test_glue_tsv_round_trip_single_and_pair_tasks(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_glue(raw)
    logged: list[str] = []
    summary = convert("glue", raw, out, log=logged.append)
    assert summary["rows"] == {
        "cola_train": 2, "cola_dev": 1, "mnli_train": 1, "mnli_dev_matched": 1, "mnli_dev_mismatched": 1,
        "mrpc_train": 1, "mrpc_dev": 1, "qqp_train": 1, "qqp_dev": 1, "rte_train": 2, "rte_dev": 1,
        "sst2_train": 2, "sst2_dev": 1,
    }  # fmt: skip
    assert any("stsb: STS-B is a regression task" in line for line in logged)
    assert any(
        "skipped 1 rows of qqp train with an empty sentence" in line and "line 3" in line for line in logged
    )
    _, sst2 = read_split(out, "glue_sst2_train")
    assert sst2.schema.names == ["sentence", "label", "label_name"]
    assert sst2.to_pylist() == [
        {"sentence": "a gripping film", "label": 1, "label_name": "positive"},
        {"sentence": 'a "dull" one', "label": 0, "label_name": "negative"},  # quotes are text in GLUE's TSV
    ]
    _, rte = read_split(out, "glue_rte_train")
    assert rte.schema.names == ["sentence", "sentence2", "label", "label_name"]
    assert rte.column("label").to_pylist() == [0, 1]
    _, mnli = read_split(out, "glue_mnli_dev_mismatched")
    assert mnli.to_pylist() == [
        {"sentence": "He left.", "sentence2": "He stayed.", "label": 0, "label_name": "entailment"}
    ]
    _, cola = read_split(out, "glue_cola_train")
    assert cola.column("sentence").to_pylist()[1] == "They drank the pub." and cola.column(
        "label"
    ).to_pylist() == [1, 0]
    assert json.loads((out / "glue_mnli_labels.json").read_text()) == [
        "entailment",
        "neutral",
        "contradiction",
    ]
    assert not list(out.glob("glue_sst2_test_*")) and not list(out.glob("glue_stsb_*"))


def test_glue_task_choice_and_refusals(tmp_path):
    raw, out = tmp_path / "raw", tmp_path / "out"
    make_glue(raw)
    summary = convert("glue", raw, out, log=quiet, glue_tasks=("rte",))
    assert set(summary["rows"]) == {"rte_train", "rte_dev"}
    with pytest.raises(ConvertError, match="STS-B is a regression task .* not supported"):
        convert("glue", raw, out, log=quiet, glue_tasks=("stsb",))
    with pytest.raises(ConvertError, match="unknown GLUE task 'sst'; choose from cola, sst2"):
        convert("glue", raw, out, log=quiet, glue_tasks=("sst",))
    write_tsv(
        raw / "RTE" / "dev.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a", "b", "maybe"]]
    )
    with pytest.raises(
        ConvertError, match=r"RTE/dev.tsv line 2: label 'maybe' is not one of entailment, not_entailment"
    ):
        convert("glue", raw, out, log=quiet, glue_tasks=("rte",))
    write_tsv(raw / "RTE" / "dev.tsv", [["index", "sentence1", "sentence2", "label"], ["0", "a only"]])
    with pytest.raises(ConvertError, match=r"RTE/dev.tsv line 2: 2 tab-separated fields, expected 4"):
        convert("glue", raw, out, log=quiet, glue_tasks=("rte",))
    write_tsv(raw / "SST-2" / "train.tsv", [["text", "label"], ["fine", "1"]])
    with pytest.raises(ConvertError, match=r"SST-2/train.tsv line 1: no column 'sentence' in the header"):
        convert("glue", raw, out, log=quiet, glue_tasks=("sst2",))
    with pytest.raises(ConvertError, match="no GLUE task folder"):
        convert("glue", tmp_path, out, log=quiet)


def test_converted_classification_rows_expand_into_samples(tmp_path):
    from bridgetower.batches import expand_row

    make_cifar10(tmp_path / "cifar")
    make_glue(tmp_path / "glue")
    out = tmp_path / "out"
    convert("cifar10", tmp_path / "cifar", out, log=quiet)
    convert("glue", tmp_path / "glue", out, log=quiet)
    for prefix, task in (("cifar10", "image_classification"), ("glue_mnli", "text_classification")):
        classes = len(json.loads((out / f"{prefix}_labels.json").read_text()))
        for path in sorted(out.glob(f"{prefix}_*.arrow")):
            for row in pa.ipc.open_file(pa.memory_map(str(path))).read_all().to_pylist():
                (sample,) = expand_row(task, row, num_labels=classes)
                assert ("text2" in sample) == (prefix == "glue_mnli")
