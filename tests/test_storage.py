"""train.storage on a remote filesystem: a run's files copied up and down through pyarrow (a local S3 server)."""

from __future__ import annotations

import pyarrow.fs as pafs
import pytest

from btp.train.storage import RunStorage, is_remote, staging_dir, write_text_atomic


def test_remote_or_local():
    assert is_remote("s3://bucket/runs") and is_remote("gs://b/r")
    assert not is_remote("runs") and not is_remote("/shared/runs") and not is_remote("file:///shared/runs")
    # the staging folder is fixed per storage and name, and a plain folder name
    assert staging_dir("s3://b/runs/", "x") == staging_dir("s3://b/runs", "x")
    assert staging_dir("s3://b/runs", "x").name == "x" and "://" not in str(staging_dir("s3://b/runs", "x"))


def test_an_atomic_write_leaves_the_old_file_whole_when_it_fails(tmp_path):
    """summary.json, trial.json, ended.json and a trimmed metrics.jsonl are read as a run's or a trial's state
    after a kill: a write that stops half-way leaves the old file as it was, and nothing beside it."""
    path = tmp_path / "summary.json"
    write_text_atomic(path, '{"steps": 3}\n')
    write_text_atomic(path, '{"steps": 9}\n')
    assert path.read_text() == '{"steps": 9}\n'
    with pytest.raises(UnicodeEncodeError):
        write_text_atomic(path, '{"steps": 12, "note": "\udc80"}\n')  # fails after a part was written
    assert path.read_text() == '{"steps": 9}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]


def test_files_go_up_and_come_back_without_rays_checkpoints(s3_bucket, tmp_path):
    store = RunStorage(f"{s3_bucket}/runs", "r1")
    assert store.uri == f"{s3_bucket}/runs/r1" and not store.exists("config.yaml")
    local = tmp_path / "up"
    (local / "model").mkdir(parents=True)
    (local / "config.yaml").write_text("train: {}\n")
    (local / "metrics.jsonl").write_text('{"step": 1}\n')
    (local / "model" / "model.safetensors").write_bytes(b"\x00" * 1000)
    assert store.push(local) == 3
    assert store.exists("config.yaml") and store.exists("model/model.safetensors")
    assert store.read_text("metrics.jsonl") == '{"step": 1}\n'
    # Ray Train's own files in the same folder are not copied down
    with store.fs.open_output_stream(f"{store.path}/checkpoint_000001/dcp/x.distcp") as f:
        f.write(b"shard")
    down = tmp_path / "down"
    assert store.pull(down) == 3
    assert sorted(p.relative_to(down).as_posix() for p in down.rglob("*") if p.is_file()) == [
        "config.yaml",
        "metrics.jsonl",
        "model/model.safetensors",
    ]
    assert (down / "model" / "model.safetensors").read_bytes() == b"\x00" * 1000
    assert RunStorage(f"{s3_bucket}/runs", "nothing").pull(tmp_path / "none") == 0


def test_an_unreadable_storage_uri_is_one_clear_error():
    with pytest.raises(ValueError, match=r"train.storage: cannot open nosuch://x"):
        RunStorage("nosuch://x", "r")


def test_a_bucket_listing_names_the_run_folder(s3_bucket):
    store = RunStorage(s3_bucket, "r2")
    assert store.path == "btp-test/r2"
    assert store.fs.get_file_info("btp-test").type == pafs.FileType.Directory
