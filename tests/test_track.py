"""btp.track: real offline wandb runs into temp dirs, read back from the .wandb file exactly."""

from __future__ import annotations

import math
import struct
import zlib
from pathlib import Path

import pytest

from btp.config import ExperimentConfig
from btp.track import Tracker, find_offline_runs, read_offline_run, resolve_mode, run_id


@pytest.fixture(autouse=True)
def offline_wandb(tmp_path, monkeypatch):
    """No key, no network, nothing in the home folder: wandb's own folders go to the temp dir."""
    for var in (
        "WANDB_API_KEY",
        "WANDB_MODE",
        "WANDB_ENTITY",
        "WANDB_PROJECT",
        "WANDB_RUN_ID",
        "WANDB_RESUME",
    ):
        monkeypatch.delenv(var, raising=False)
    for var in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR"):
        monkeypatch.setenv(var, str(tmp_path / "wandb-home" / var.lower()))
    monkeypatch.setenv("WANDB_DISABLE_GIT", "true")


def experiment(name: str = "vqa-small", **track) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.task, cfg.data.train = "vqa", ["vqav2_train_*.arrow"]
    cfg.model.bridge, cfg.train.name, cfg.train.lr = "gated", name, 3e-4
    for key, value in track.items():
        setattr(cfg.track, key, value)
    return cfg


ROWS = [
    (10, {"train/loss": 2.5, "train/vqa": 2.5, "lr": 1e-4, "samples_per_s": 31.25}),
    (20, {"train/loss": 1.75, "train/vqa": 1.75, "lr": 5e-5, "samples_per_s": 32.0}),
    (20, {"val/loss": 1.5, "val/vqa_score": 0.25, "val/acc_color": 0.5}),
    (30, {"train/loss": 1.0, "train/vqa": 1.0, "lr": 0.0, "samples_per_s": 30.5}),
]


def test_a_run_is_read_back_exactly(tmp_path, capsys):
    run_dir = tmp_path / "runs" / "vqa-small"
    run_dir.mkdir(parents=True)
    cfg = experiment(group="study-a", tags=["paper"], project="btp-tests")
    tracker = Tracker.start(cfg, run_dir)
    assert tracker.enabled and tracker.mode == "offline"
    for step, metrics in ROWS:
        tracker.log({"step": step, **metrics}, step=step)
    tracker.finish({"steps": 30, "val/vqa_score": 0.25})

    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.strip()]
    assert len(lines) == 1 and "wandb sync" in lines[0] and str(run_dir / "wandb") in lines[0], out
    parts = find_offline_runs(run_dir)
    assert len(parts) == 1 and parts[0].parent == run_dir / "wandb"

    back = read_offline_run(parts[0])
    assert back["history"] == [
        {"_step": 10, **ROWS[0][1]},
        {"_step": 20, **ROWS[1][1], **ROWS[2][1]},  # two reports at one step make one row
        {"_step": 30, **ROWS[3][1]},
    ]
    assert back["summary"]["steps"] == 30 and back["summary"]["val/vqa_score"] == 0.25
    assert back["summary"]["train/loss"] == 1.0  # the last logged value of every metric
    assert back["config"]["model"]["bridge"] == "gated"
    assert back["config"]["train"] == {**back["config"]["train"], "lr": 3e-4, "name": "vqa-small"}
    assert back["config"]["track"]["group"] == "study-a"
    assert back["project"] == "btp-tests" and back["group"] == "study-a"
    assert back["tags"] == ["task:vqa", "bridge:gated", "paper"]
    assert back["name"] == "vqa-small" and back["id"] == run_id("vqa-small", "study-a") == "study-a-vqa-small"
    assert back["job_type"] == "vqa" and back["exit_code"] == 0
    assert read_offline_run(run_dir)["history"] == back["history"]  # the run directory works too


def test_nan_and_failed_runs_come_back_as_such(tmp_path):
    with Tracker.start(experiment(), tmp_path) as tracker:
        tracker.log({"train/loss": float("nan"), "val/x": float("inf")}, step=1)
        tracker.log({"train/loss": 0.5}, step=2)
    back = read_offline_run(tmp_path)
    assert math.isnan(back["history"][0]["train/loss"]) and back["history"][0]["val/x"] == math.inf
    assert back["exit_code"] == 0

    crashed = tmp_path / "crashed"
    crashed.mkdir()
    with pytest.raises(RuntimeError), Tracker.start(experiment("crashed"), crashed) as tracker:
        tracker.log({"train/loss": 3.0}, step=1)
        raise RuntimeError("boom")
    assert read_offline_run(crashed)["exit_code"] == 1


def test_a_long_run_spanning_many_blocks_reads_back_whole(tmp_path):
    rows = [
        {"train/loss": 1.0 / step, "note": "x" * (step % 50), "lr": step * 1e-6} for step in range(1, 401)
    ]
    rows[200]["note"] = "y" * 70_000  # one record longer than two blocks: first, middle and last chunks
    with Tracker.start(experiment(), tmp_path) as tracker:
        for step, row in enumerate(rows, 1):
            tracker.log(row, step=step)
    file = next(find_offline_runs(tmp_path)[0].glob("*.wandb"))
    assert file.stat().st_size > 3 * 32 * 1024  # records cross the 32 KiB blocks of the log format
    back = read_offline_run(file)
    assert back["history"] == [{"_step": step, **row} for step, row in enumerate(rows, 1)]
    assert back["exit_code"] == 0


def test_disabled_tracking_writes_nothing(tmp_path, monkeypatch):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    for cfg in (experiment(wandb=False), experiment(mode="disabled")):
        tracker = Tracker.start(cfg, run_dir)
        assert not tracker.enabled and tracker.mode == "disabled"
        tracker.log({"train/loss": 1.0}, step=1)
        tracker.finish({"steps": 1})
    monkeypatch.setenv("WANDB_MODE", "disabled")
    assert not Tracker.start(experiment(), run_dir).enabled
    assert list(run_dir.iterdir()) == []
    off = Tracker.off()
    off.log({"a": 1}, step=1)
    off.finish()
    assert off.run_id is None and off.directory is None


def test_a_resumed_run_appends_to_the_same_run_id(tmp_path):
    first = Tracker.start(experiment(), tmp_path)
    first.log({"train/loss": 3.0}, step=10)
    first.log({"train/loss": 2.0}, step=20)
    first.finish(exit_code=1)  # stopped; the checkpoint was at step 10
    again = Tracker.start(experiment(), tmp_path)  # a second start of the same run directory resumes
    assert again.run_id == first_id(tmp_path)
    again.log({"train/loss": 1.8}, step=20)
    again.log({"train/loss": 1.0}, step=30)
    again.finish({"steps": 30})

    parts = find_offline_runs(tmp_path)
    assert len(parts) == 2
    assert [read_offline_run(p)["id"] for p in parts] == ["vqa-small", "vqa-small"]
    merged = read_offline_run(tmp_path)
    assert [(r["_step"], r["train/loss"]) for r in merged["history"]] == [(10, 3.0), (20, 1.8), (30, 1.0)]
    assert merged["resumed"] and merged["summary"]["steps"] == 30 and merged["exit_code"] == 0
    assert len(merged["parts"]) == 2

    fresh = tmp_path / "other"
    fresh.mkdir()
    with Tracker.start(experiment(), fresh) as tracker:  # another run directory: a new run
        tracker.log({"train/loss": 9.0}, step=1)
    assert read_offline_run(fresh)["history"] == [{"_step": 1, "train/loss": 9.0}]


def test_a_later_start_reuses_the_id_of_the_first_start(tmp_path):
    (tmp_path / "wandb").mkdir()
    (tmp_path / "wandb" / "btp_run_id").write_text("vqa-small-20260101-000000\n")  # e.g. the name was taken
    with Tracker.start(experiment(), tmp_path) as tracker:
        assert tracker.run_id == "vqa-small-20260101-000000"
    with Tracker.start(experiment(), tmp_path, resume=False) as tracker:  # forced fresh: the derived id
        assert tracker.run_id == "vqa-small"
    assert [read_offline_run(p)["id"] for p in find_offline_runs(tmp_path)] == [
        "vqa-small-20260101-000000",
        "vqa-small",
    ]


def first_id(run_dir: Path) -> str:
    return read_offline_run(find_offline_runs(run_dir)[0])["id"]


def test_mode_follows_the_environment_then_the_config():
    assert resolve_mode("offline", environ={}) == "offline"
    assert resolve_mode("offline", environ={"WANDB_API_KEY": "k"}) == "online"
    assert resolve_mode("online", environ={"WANDB_MODE": "offline", "WANDB_API_KEY": "k"}) == "offline"
    assert resolve_mode("offline", environ={"WANDB_MODE": "online"}) == "online"
    assert resolve_mode("disabled", environ={"WANDB_API_KEY": "k"}) == "disabled"
    assert resolve_mode("offline", environ={"WANDB_MODE": "dryrun"}) == "offline"
    assert resolve_mode("online", enabled=False, environ={"WANDB_MODE": "online"}) == "disabled"
    with pytest.raises(ValueError, match="WANDB_MODE"):
        resolve_mode("offline", environ={"WANDB_MODE": "sometimes"})


def test_run_ids_are_safe_and_keep_names_apart():
    assert run_id("vqa_000") == "vqa_000"
    assert run_id("pretrain_000", "study") == "study-pretrain_000"
    odd = run_id("my run/with:odd*chars")
    assert all(c.isalnum() or c in "-_." for c in odd)
    assert run_id("a b") != run_id("a_b") and run_id("a b") == run_id("a b")
    long = run_id("x" * 100)
    assert len(long) <= 64 and long != run_id("x" * 99)


def test_the_reader_refuses_other_files_and_keeps_a_torn_tail(tmp_path):
    bad = tmp_path / "run-x.wandb"
    bad.write_bytes(b"not wandb at all")
    with pytest.raises(ValueError, match="W&B"):
        read_offline_run(bad)
    with pytest.raises(FileNotFoundError, match="offline-run"):
        read_offline_run(tmp_path / "empty")

    run_dir = tmp_path / "r"
    run_dir.mkdir()
    tracker = Tracker.start(experiment(), run_dir)
    tracker.log({"train/loss": 1.0}, step=1)
    tracker.finish()
    file = next(find_offline_runs(run_dir)[0].glob("*.wandb"))
    data = file.read_bytes()
    # a chunk whose checksum fails ends the read there (a run killed while writing)
    torn = data + struct.pack("<IHB", zlib.crc32(b"x") ^ 1, 3, 1) + b"abc"
    file.write_bytes(torn)
    assert read_offline_run(file)["history"] == [{"_step": 1, "train/loss": 1.0}]
