"""`btp data validate` passes good shards and names every bad file, row and column."""

from __future__ import annotations

import shutil

import pyarrow as pa
import pytest

from btp.cli import main
from btp.data.synth import write_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=60, seed=4)
    return out


def test_good_shards_pass_with_counts(synth, capsys):
    assert main(["data", "validate", str(synth)]) == 0
    out = capsys.readouterr().out
    assert "all 21 file(s) valid" in out
    assert "shapes_val_0.arrow: image_classification val, 6 rows, 6 samples, ok" in out
    assert "sentiment_train_0.arrow: text_classification train, 48 rows, 48 samples, ok" in out
    rows = pa.ipc.open_file(pa.memory_map(str(synth / "vqav2_train_0.arrow"))).read_all().num_rows
    assert f"vqav2_train_0.arrow: vqa train, {rows} rows" in out


def write_copy(src, dst, column, row, value):
    table = pa.ipc.open_file(pa.memory_map(str(src))).read_all()
    values = table.column(column).to_pylist()
    values[row] = value
    table = table.set_column(
        table.schema.get_field_index(column), column, pa.array(values, table.schema.field(column).type)
    )
    with pa.ipc.new_file(str(dst), table.schema) as writer:
        writer.write_table(table)


def test_bad_rows_are_listed_one_line_each(synth, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(synth / "vqa_answers.json", bad)
    write_copy(
        synth / "coco_caption_karpathy_train_0.arrow",
        bad / "coco_caption_karpathy_train_0.arrow",
        "image",
        1,
        b"junk",
    )
    write_copy(synth / "vqav2_train_0.arrow", bad / "vqav2_train_0.arrow", "answer_labels", 0, [[500]] * 5)
    write_copy(synth / "snli_train_0.arrow", bad / "snli_train_0.arrow", "labels", 2, [5, 5, 5])
    (bad / "nlvr2_dev_0.arrow").write_bytes((synth / "nlvr2_dev_0.arrow").read_bytes()[:200])  # truncated
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "coco_caption_karpathy_train_0.arrow row 1: column image: cannot decode image" in out
    assert "vqav2_train_0.arrow row 0: answer label 500 is outside the answer vocabulary" in out
    assert "snli_train_0.arrow row 2: labels must be 0, 1 or 2" in out
    assert "nlvr2_dev_0.arrow: not a readable Arrow/parquet file" in out
    assert "problem(s):" in out


def test_missing_columns_and_paths(synth, tmp_path, capsys):
    shutil.copy(synth / "snli_train_0.arrow", tmp_path / "vqav2_train_0.arrow")  # right name, wrong contents
    assert main(["data", "validate", str(tmp_path / "vqav2_train_0.arrow")]) == 1
    assert "missing column(s) questions" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="does not exist"):
        main(["data", "validate", str(tmp_path / "nope")])


def test_bad_classification_rows_are_named(synth, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    shutil.copy(synth / "shapes_labels.json", bad)
    write_copy(synth / "shapes_train_0.arrow", bad / "shapes_train_0.arrow", "label", 3, 12)
    write_copy(synth / "shapes_val_0.arrow", bad / "shapes_val_0.arrow", "image", 0, b"junk")
    write_copy(synth / "sentiment_val_0.arrow", bad / "sentiment_val_0.arrow", "sentence", 1, "")
    # a GLUE-named pair file: the dataset's labels file bounds the labels
    (bad / "glue_rte_labels.json").write_text('["entailment", "not_entailment"]')
    table = pa.table({"sentence": ["a", "b"], "sentence2": ["c", "d"], "label": [1, 2]})
    with pa.ipc.new_file(str(bad / "glue_rte_dev_0.arrow"), table.schema) as writer:
        writer.write_table(table)
    shutil.copy(synth / "snli_train_0.arrow", bad / "sentiment_test_0.arrow")  # no sentence or label
    assert main(["data", "validate", str(bad)]) == 1
    out = capsys.readouterr().out
    assert "shapes_train_0.arrow row 3: label 12 is outside the classes 0..11 (num_labels 12)" in out
    assert "shapes_val_0.arrow row 0: column image: cannot decode image" in out
    assert "sentiment_val_0.arrow row 1: empty or non-text 'sentence'" in out
    assert "glue_rte_dev_0.arrow row 1: label 2 is outside the classes 0..1" in out
    assert "sentiment_test_0.arrow: missing column(s) sentence, label for text_classification" in out
