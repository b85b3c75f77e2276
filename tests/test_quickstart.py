"""`btp quickstart` end to end, shrunk: data, 2 bridge variants pre-trained, VQA sweep, per-type scores, report."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
import yaml

from btp.cli import main
from btp.quickstart import TYPES, study_file
from btp.track import find_offline_runs, read_offline_run


@pytest.mark.slow
def test_quickstart_runs_the_whole_platform(tmp_path, capsys, monkeypatch):
    import ray

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    doc = yaml.safe_load(study_file().read_text())
    # one fine-tuning, from the better pre-trained variant (a stage per parent is tested in test_tune)
    doc["tune"]["stages"][1]["num_samples"] = 1
    doc["tune"]["stages"][1]["experiment"] = str(study_file().parent / doc["tune"]["stages"][1]["experiment"])
    study = tmp_path / "quickstart.yaml"
    study.write_text(yaml.safe_dump(doc))
    out = tmp_path / "qs"
    # one worker per trial: sharding over workers is tested with btp train; here the whole chain is the point
    shrink = [
        "train.max_steps=4",
        "train.eval_every=4",  # evaluated once, at the end; no checkpoint (resuming is tested in test_train)
        "train.checkpoint_every=4",
        "train.batch_size=16",
        "train.num_workers=1",
        "train.threads=1",  # pytest's other process works on the second core (see test_learn)
    ]
    code = main(["quickstart", "--out", str(out), "--images", "300", "--study", str(study), *shrink])
    assert code == 0
    assert not ray.is_initialized()  # the embedded Ray is shut down

    summary = json.loads((out / "summary.json").read_text())
    assert summary["seconds"] > 0 and 0.0 <= summary["best_vqa_accuracy"] <= 1.0
    assert set(summary["per_type"]) == set(TYPES) and set(summary["majority_baseline"]) == {*TYPES, "overall"}
    (row,) = summary["table"]
    assert row["pretrain.model.bridge"] in {"add", "gated"} and row["vqa.train.lr"] > 0
    best = Path(summary["best_trial"]["run_dir"])
    assert json.loads((best / "summary.json").read_text())["test/vqa_score"] == pytest.approx(
        summary["best_vqa_accuracy"]
    )
    page = Path(summary["report"]).read_text()
    pngs = [line.split('src="')[1].split('"')[0] for line in page.split("<img")[1:]]
    assert pngs and all((Path(summary["report"]).parent / p).is_file() for p in pngs)

    # the trials log to wandb offline, grouped under the study's name
    groups = {
        read_offline_run(r)["group"]
        for t in summary["table"]
        for r in find_offline_runs(out / "study" / "vqa" / t["trial"])
    }
    assert groups == {"study"}

    console = capsys.readouterr()
    printed = console.out
    assert "[quickstart" in printed and "majority" in printed and str(out / "summary.json") in printed
    for kind in TYPES:
        assert f"  {kind}" in printed
    # the study's own progress lines, not Tune's configuration box, Optuna's and Tune's INFO lines, or the
    # error line each Ray Train run's preemption watcher logged, or the raylet's warning on the number of worker
    # processes (each actor is one; on 2 CPUs it came again and again)
    assert "[study] stage vqa" in printed
    for noise in (
        "Configuration for experiment",
        "A new study created",
        "Wrote the latest",
        "PreemptionWatcher",
        "worker processes have been started",
    ):
        assert noise not in printed + console.err, noise


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope.yaml"], "--study nope.yaml not found"),
        (["train.lrr=1"], "quickstart.yaml: override 'train.lrr=1': unknown key; did you mean train.lr?"),
        (["--out", "FILE"], "is a file, not a folder; choose another --out"),
    ],
)
def test_bad_arguments_stop_the_quickstart_before_any_work(tmp_path, capsys, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "FILE").write_text("notes\n")
    out = ["--out", "qs"] if "--out" not in args else []
    assert main(["quickstart", *out, *args]) == 2
    assert message in capsys.readouterr().err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["FILE"]  # nothing generated
    assert (tmp_path / "FILE").read_text() == "notes\n"


def test_a_local_ray_keeps_token_auth_without_rays_notice(monkeypatch):
    """The local Ray that `btp` starts keeps Ray's default token authentication, and its console shows Ray's
    lines (the dashboard's address) but not the notice that auth is on and how to turn it off."""
    import ray

    from btp.train.run import LOCAL_RAY_NOTICES, ray_session

    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)  # unset: Ray turns token auth on and logs its notice
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    records: list[logging.LogRecord] = []
    seen = logging.Handler(level=logging.DEBUG)
    seen.emit = records.append  # every record that reaches Ray's own handlers
    logging.getLogger("ray").addHandler(seen)
    try:
        with ray_session(num_cpus=1, log_to_driver=False) as started:
            assert started and ray.get(ray.remote(lambda: 1).remote(), timeout=60) == 1
            mode = os.environ.get("RAY_AUTH_MODE")
    finally:
        logging.getLogger("ray").removeHandler(seen)
    messages = [r.getMessage() for r in records]
    assert any("Started a local Ray instance" in m for m in messages), messages
    assert not any("Token authentication is enabled" in m for m in messages), messages
    assert mode == "token"
    # the notice is dropped only while btp's Ray starts: a Ray started by other code in the process logs it
    assert all(not logging.getLogger(name).filters for name, _ in LOCAL_RAY_NOTICES)
