"""`btp bench train` with the tiniest settings: a real torchrun and a real local Ray, every figure in the JSON."""

from __future__ import annotations

import json

import pytest

from btp.cli import main

KEYS = {
    "preset",
    "workers",
    "batch_per_worker",
    "threads_per_worker",
    "num_params",
    "torchrun_steps_per_s",
    "ray_steps_per_s",
    "torchrun_samples_per_s",
    "ray_samples_per_s",
    "ratio",
    "ratio_goal",
    "torchrun_beside_ray_steps_per_s",
    "ratio_beside_ray",
    "ray_host_slowdown",
    "same_losses",
    "final_loss",
    "one_worker_steps_per_s",
    "memory_ratio",
    "memory_goal",
    "rss_ratio",
    "one_worker_model_state_mb",
    "two_workers_model_state_mb",
    "one_worker_peak_rss_mb",
    "two_workers_peak_rss_mb",
    "one_worker_params_mb",
    "two_workers_optimizer_mb",
    "torchrun_model_state_mb",
    "e2e_steps_per_s",
    "e2e_error",
    "ray_worker_niceness",
    "torchrun_niceness",
    "load_average_start",
    "wall_s",
}


def test_help_and_bad_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "train", "--help"])
    assert exit_.value.code == 0
    assert "--json" in capsys.readouterr().out
    # refused before any process starts
    assert main(["bench", "train", "--batch", "1"]) == 2
    assert main(["bench", "train", "--preset", "large", "--image-size", "64"]) == 2
    assert "not a multiple of patch_size" in capsys.readouterr().err


def test_tiny_bench_writes_every_figure(tmp_path, capsys):
    out = tmp_path / "bench.json"
    args = ["--preset", "tiny", "--batch", "2", "--text-len", "8", "--steps", "2", "--warmup-steps", "1"]
    code = main(["bench", "train", *args, "--report-every", "1", "--e2e-steps", "0", "--json", str(out)])
    assert code == 0
    report = json.loads(out.read_text())
    assert set(report) >= KEYS, KEYS - set(report)
    assert report["preset"] == "tiny" and report["workers"] == 2
    assert report["ratio"] > 0 and report["torchrun_steps_per_s"] > 0 and report["ray_steps_per_s"] > 0
    # torchrun timed once more beside the local Ray: the two ratios and the slowdown agree with the rates
    beside = report["torchrun_beside_ray_steps_per_s"]
    assert report["ratio_beside_ray"] == pytest.approx(report["ray_steps_per_s"] / beside)
    assert report["ray_host_slowdown"] == pytest.approx(1 - beside / report["torchrun_steps_per_s"])
    # the same step both ways: the same seeds give the same losses under torchrun and under Ray
    assert report["same_losses"] is True
    # FSDP2 halves params, grads and AdamW state (the tiny model's RSS is mostly torch itself)
    assert 0.3 < report["memory_ratio"] < 0.8
    assert report["two_workers_model_state_mb"] < report["one_worker_model_state_mb"]
    assert report["rss_ratio"] > 0 and report["two_workers_peak_rss_mb"] > 100
    assert report["torchrun_niceness"] == report["ray_worker_niceness"]  # other load weighs on both alike
    assert report["e2e_steps_per_s"] is None and report["e2e_error"] is None  # skipped
    printed = capsys.readouterr().out
    assert "ratio" in printed and "memory_ratio" in printed and str(out) in printed
