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
    assert "all 15 file(s) valid" in out
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
