"""Shards stream into a real local Ray Dataset; bad files fail with a message naming them."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from btp.data.shards import ShardError, read_shards
from btp.data.synth import write_synthetic


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=80, seed=1, rows_per_shard=10)
    return out


def test_ipc_shards_stream_every_row(local_ray, synth):
    manifest = json.loads((synth / "manifest.json").read_text())
    shards = sorted(synth.glob("coco_caption_karpathy_train_*.arrow"))
    assert len(shards) > 1
    ds = read_shards(str(synth / "coco_caption_karpathy_train_*.arrow"), rows_per_block=4)
    rows = ds.take_all()
    expected = sum(pa.ipc.open_file(pa.memory_map(str(p))).read_all().num_rows for p in shards)
    assert len(rows) == expected > 0
    assert {"image", "caption", "image_id", "split"} <= set(rows[0])
    assert isinstance(rows[0]["image"], bytes) and rows[0]["image"][:4] == b"\x89PNG"  # still encoded
    assert manifest["seed"] == 1


def test_columns_parquet_and_shuffle(local_ray, synth, tmp_path):
    table = pa.ipc.open_file(pa.memory_map(str(synth / "vqav2_train_0.arrow"))).read_all()
    pq.write_table(table, tmp_path / "vqa.parquet")
    both = read_shards(
        [str(synth / "vqav2_train_0.arrow"), str(tmp_path / "vqa.parquet")], columns=["image_id"]
    )
    ids = [r["image_id"] for r in both.take_all()]
    assert sorted(ids) == sorted(table.column("image_id").to_pylist() * 2)
    pattern = str(synth / "snli_train_*.arrow")
    first = [r["image_id"] for r in read_shards(pattern, columns=["image_id"], shuffle_seed=3).take_all()]
    again = [r["image_id"] for r in read_shards(pattern, columns=["image_id"], shuffle_seed=3).take_all()]
    assert first == again  # a seeded file order is reproducible


def test_bad_shards_name_the_file(local_ray, synth, tmp_path):
    bad = tmp_path / "broken.arrow"
    bad.write_bytes(b"this is not arrow at all")
    with pytest.raises(Exception, match="broken.arrow: not an Arrow IPC file or stream"):
        read_shards(str(bad)).take_all()
    with pytest.raises(Exception, match="missing column"):
        read_shards(str(synth / "snli_train_0.arrow"), columns=["caption"]).take_all()
    with pytest.raises(FileNotFoundError, match="no shard matches"):
        read_shards(str(tmp_path / "nothing_*.arrow"))
    (tmp_path / "x.csv").write_text("a\n")
    with pytest.raises(ShardError, match="unknown shard type"):
        read_shards(str(tmp_path / "x.csv"))
