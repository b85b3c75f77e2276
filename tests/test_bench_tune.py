"""btp bench tune: a tiny grid against Optuna + ASHA, run for real through the command line (real Ray Tune)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from btp.cli import build_parser


def test_bench_tune_help():
    out = subprocess.run(
        [sys.executable, "-m", "btp.cli", "bench", "tune", "--help"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    for option in (
        "--json",
        "--steps",
        "--eval-every",
        "--bridges",
        "--lrs",
        "--samples",
        "--data",
        "--seed",
        "--startup-trials",
    ):
        assert option in out.stdout
    args = build_parser().parse_args(["bench", "tune"])
    assert args.bridges == "add,gated,scaled_add" and args.samples is None and args.out == "runs/bench_tune"
    assert (args.steps, args.eval_every, args.reduction_factor, args.startup_trials) == (300, 100, 3, None)


def test_bench_tune_refuses_a_bad_space(tmp_path, capsys):
    from btp.cli import main

    assert main(["bench", "tune", "--out", str(tmp_path), "--lrs", ""]) == 2
    assert "--lrs" in capsys.readouterr().err
    assert main(["bench", "tune", "--out", str(tmp_path), "--steps", "4", "--eval-every", "5"]) == 2
    assert "--eval-every" in capsys.readouterr().err
    assert main(["bench", "tune", "--out", str(tmp_path), "train.lr=1e-3"]) == 2
    assert "use --lrs" in capsys.readouterr().err
    assert not (tmp_path / "data").exists()  # refused before anything was written


@pytest.mark.slow
def test_tiny_grid_against_optuna_writes_every_figure(tmp_path):
    """A 1 x 1 grid against 2 Optuna + ASHA trials of 4 steps each on tiny synthetic data.

    In a space of one setting, TPE's second trial repeats the first: it reuses that run and trains no step.
    """
    from btp.data.synth import write_synthetic

    data = tmp_path / "data"
    write_synthetic(data, images=200, seed=3)
    out, figures = tmp_path / "bench", tmp_path / "bench.json"
    steps = 4
    cmd = [
        sys.executable, "-m", "btp.cli", "bench", "tune", "--out", str(out), "--data", str(data),
        "--steps", str(steps), "--eval-every", "2", "--bridges", "gated", "--lrs", "1e-3",
        "--samples", "2", "--json", str(figures), "train.batch_size=8", "train.num_workers=1",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]

    report = json.loads(figures.read_text())
    for key in ("metric_gap", "steps_ratio", "grid_best", "optuna_best", "grid_steps", "optuna_steps"):
        assert report[key] is not None, key
    assert report["grid_trials"] == 1 and report["optuna_trials"] == 2 and report["n_startup_trials"] == 1
    grid, optuna = report["grid"], report["optuna"]
    # the grid runs every setting once, each to the end
    assert grid["trials"] == 1 and grid["finished"] == 1
    assert report["grid_steps"] == grid["trials"] * steps
    assert [(t["bridge"], t["lr"]) for t in grid["per_trial"]] == [("gated", 1e-3)]
    # Optuna: the first trial trains; the second has the same settings and replays the first's evaluations
    assert optuna["trials"] == 2 and optuna["duplicates"] == 1 and optuna["finished"] == 1
    assert report["optuna_steps"] == steps
    first, repeat = sorted(optuna["per_trial"], key=lambda t: t["status"] == "DUPLICATE")
    assert repeat["status"] == "DUPLICATE" and repeat["steps"] == 0 and repeat["metric"] == first["metric"]
    trials = json.loads((out / "optuna" / "summary.json").read_text())["stages"][0]["trials"]
    copy = next(t for t in trials if t["status"] == "DUPLICATE")
    original = next(t for t in trials if t["status"] != "DUPLICATE")
    assert copy["duplicate_of"] == original["trial"]
    assert not (out / "optuna" / "search" / copy["trial"] / "metrics.jsonl").exists()  # nothing trained
    # Optuna's own record: both trials complete with the same value (the sampler learned from the repeat)
    import optuna as optuna_lib

    storage = f"sqlite:///{out / 'optuna' / 'optuna.db'}"
    (study_name,) = optuna_lib.get_all_study_names(storage)
    values = [t.value for t in optuna_lib.load_study(study_name=study_name, storage=storage).trials]
    assert len(values) == 2 and values[0] == values[1] == pytest.approx(first["metric"])
    assert report["steps_ratio"] == pytest.approx(report["optuna_steps"] / report["grid_steps"])
    assert report["metric_gap"] == pytest.approx(report["grid_best"] - report["optuna_best"])
    assert report["grid_best"] == max(t["metric"] for t in grid["per_trial"])
    assert report["goal_metric_gap"] == 0.01 and report["goal_steps_ratio"] == 0.35
    # the studies are ordinary btp tune studies, their files beside them
    for name in ("grid", "optuna"):
        summary = json.loads((out / name / "summary.json").read_text())
        assert sum(t["steps"] for t in summary["stages"][0]["trials"]) == report[f"{name}_steps"]
        assert (out / f"{name}.yaml").is_file()
    assert "metric_gap" in run.stdout and "steps_ratio" in run.stdout

    # a second run into the same folder is refused rather than mixed with the first
    again = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert again.returncode == 2 and "earlier run" in again.stderr
