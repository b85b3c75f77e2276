"""btp tune: study planning and errors (no Ray), and a real two-stage study killed and resumed (real Ray)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from btp.config import ConfigError, load_experiment
from btp.tune import (
    ENDED_FILE,
    best_trials,
    check_space,
    make_sampler,
    make_scheduler,
    plan_stages,
    table,
    trial_config,
)

ROOT = Path(__file__).resolve().parents[1]
STUDY = ROOT / "experiments" / "synth" / "study.yaml"


def _write(tmp_path: Path, doc: dict, name: str = "study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(doc))
    return path


def _study_doc(**tune) -> dict:
    doc = yaml.safe_load(STUDY.read_text())
    doc["tune"].update(tune)
    doc["tune"]["stages"][1]["experiment"] = str(STUDY.parent / "vqa.yaml")  # the copy lives elsewhere
    return doc


def test_plan_stages_of_the_synthetic_study():
    cfg = load_experiment(STUDY)
    stages = plan_stages(cfg, STUDY, ["train.max_steps=7", "data.root=/elsewhere"])
    assert [s.name for s in stages] == ["pretrain", "vqa"]
    pre, vqa = stages
    assert (pre.metric, pre.mode, pre.top_k) == ("val/loss", "min", 2)
    assert (vqa.metric, vqa.mode) == ("val/vqa_score", "max")  # the study's own metric
    assert pre.base.data.task == "pretrain" and vqa.base.data.task == "vqa"
    # command-line overrides reach every stage, after the stage's own overrides
    assert pre.base.train.max_steps == 7 and vqa.base.train.max_steps == 7
    assert vqa.base.data.root == "/elsewhere" and vqa.base.tune is None
    assert set(pre.space) == {"model.bridge", "train.lr"} and set(vqa.space) == {"train.lr"}
    for stage in stages:
        check_space(stage)


def test_a_stage_may_run_its_own_number_of_trials_at_once(tmp_path):
    doc = _study_doc(max_concurrent=2)
    doc["tune"]["stages"][1]["max_concurrent"] = 1
    path = _write(tmp_path, doc)
    pre, vqa = plan_stages(load_experiment(path), path, [])
    assert (pre.max_concurrent, vqa.max_concurrent) == (2, 1)  # the study's, then the stage's own
    doc["tune"]["stages"][1]["max_concurrent"] = 0
    with pytest.raises(ConfigError, match=r"tune\.stages\[1\]\.max_concurrent: must be at least 1"):
        load_experiment(_write(tmp_path, doc, "bad.yaml"))


def test_single_stage_study(tmp_path):
    doc = yaml.safe_load((ROOT / "experiments" / "synth" / "vqa.yaml").read_text())
    doc["tune"] = {
        "metric": "val/vqa_score",
        "space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}},
    }
    path = _write(tmp_path, doc)
    (stage,) = plan_stages(load_experiment(path), path, [])
    assert stage.name == "search" and stage.num_samples == 4 and stage.base.data.task == "vqa"


def test_sampler_and_scheduler_follow_the_tune_section(tmp_path):
    doc = yaml.safe_load((ROOT / "experiments" / "synth" / "vqa.yaml").read_text())
    doc["train"].update(max_steps=120, eval_every=30)
    doc["tune"] = {
        "metric": "val/vqa_score",
        "sampler": {"type": "tpe", "seed": 3, "n_startup_trials": 2},
        "scheduler": {"type": "asha", "reduction_factor": 3},
        "space": {"train.lr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}},
    }
    cfg = load_experiment(_write(tmp_path, doc))
    (stage,) = plan_stages(cfg, tmp_path / "study.yaml", [])
    sampler = make_sampler(cfg.tune.sampler, stage)
    assert type(sampler).__name__ == "TPESampler" and sampler._n_startup_trials == 2

    def rungs(scheduler) -> list[int]:
        return sorted(milestone for milestone, _ in scheduler._brackets[0]._rungs)

    # the first cut waits for the first evaluation; rungs then grow by the reduction factor below max_t
    asha = make_scheduler(cfg.tune.scheduler, stage, steps=120)
    assert rungs(asha) == [30, 90] and asha._max_t == 120
    cfg.tune.scheduler.grace_period = 60
    assert rungs(make_scheduler(cfg.tune.scheduler, stage, steps=120)) == [60]
    cfg.tune.scheduler.type = "none"
    assert type(make_scheduler(cfg.tune.scheduler, stage, steps=120)).__name__ == "FIFOScheduler"
    cfg.tune.sampler.n_startup_trials = None
    assert make_sampler(cfg.tune.sampler, stage)._n_startup_trials == 10  # Optuna's default
    doc["tune"]["sampler"]["n_startup_trials"] = 0
    with pytest.raises(ConfigError, match="n_startup_trials"):
        load_experiment(_write(tmp_path, doc, "bad.yaml"))


@pytest.mark.parametrize(
    "space, message",
    [
        ({"train.lrr": {"type": "loguniform", "low": 1e-4, "high": 1e-3}}, "train.lr"),  # did you mean
        ({"model.bridge": {"type": "choice", "values": []}}, "values"),
        ({"train.lr": {"type": "loguniform", "low": 1e-3, "high": 1e-4}}, "below high"),
    ],
)
def test_bad_search_space_is_one_error_naming_the_key(tmp_path, space, message):
    doc = _study_doc()
    doc["tune"]["stages"][0]["space"] = space
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError) as err:
        load_experiment(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_unknown_bridge_and_non_evaluation_metric_are_refused(tmp_path):
    doc = _study_doc()
    doc["tune"]["stages"][0]["space"]["model.bridge"]["values"] = ["add", "gatd"]
    path = _write(tmp_path, doc)
    stages = plan_stages(load_experiment(path), path, [])
    with pytest.raises(ConfigError, match="unknown bridge 'gatd'.*gated"):
        check_space(stages[0])
    doc = _study_doc()
    doc["tune"]["stages"][1]["metric"] = "train/loss"
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match="not an evaluation metric"):
        check_space(plan_stages(load_experiment(path), path, [])[1])


def test_a_study_on_remote_storage_is_refused_before_anything_starts(tmp_path):
    from btp.tune import study_dir

    cfg = load_experiment(
        ROOT / "experiments" / "synth" / "vqa_lr.yaml", ["train.storage=s3://bucket/studies"]
    )
    with pytest.raises(ConfigError, match=r"train.storage: a study keeps .* not s3://bucket/studies"):
        study_dir(cfg)


def test_a_setting_every_trial_would_fail_on_stops_the_study_before_ray(tmp_path, capsys):
    from btp.cli import main
    from btp.data.synth import write_synthetic

    write_synthetic(tmp_path / "data", images=60, seed=1)
    args = [
        f"data.root={tmp_path / 'data'}",
        f"train.storage={tmp_path / 'studies'}",
        "model.bridge=nonexistent",
    ]
    assert main(["tune", "experiments/synth/vqa_lr.yaml", *args]) == 2
    assert (
        "btp tune: stage search: model: unknown bridge 'nonexistent'; known: add" in capsys.readouterr().err
    )
    assert not (tmp_path / "studies").exists()


def test_a_stage_without_its_metric_says_why(tmp_path):
    from btp.tune import Stage, no_result

    stage = Stage("search", load_experiment(STUDY), {}, 2, 1, "val/accuracy", "max", 1)
    for trial, row in (
        ("search_a", {"step": 4, "val/loss": 1.0, "val/vqa_score": 0.5}),
        ("search_b", {"step": 2}),
    ):
        (tmp_path / trial).mkdir()
        (tmp_path / trial / "metrics.jsonl").write_text(json.dumps(row) + "\n")
    assert no_result(stage, [{}, {}], {}, tmp_path) == (
        "stage search: no trial reported val/accuracy; its trials report val/loss, val/vqa_score: "
        "set the stage's metric (tune.metric) to one of them"
    )
    failed = no_result(
        stage, [{}, {}], {"search_a": "data.csv row 3: bad", "search_b": "x"}, tmp_path / "none"
    )
    assert (
        failed
        == f"stage search: all 2 trials failed; the first with: data.csv row 3: bad (each trial's output is in {tmp_path / 'none'})"
    )


def test_missing_stage_experiment_and_missing_tune_section(tmp_path):
    doc = _study_doc()
    doc["tune"]["stages"][1]["experiment"] = "nope.yaml"
    path = _write(tmp_path, doc)
    with pytest.raises(ConfigError, match="nope.yaml not found"):
        plan_stages(load_experiment(path), path, [])
    plain = ROOT / "experiments" / "synth" / "vqa.yaml"
    with pytest.raises(ConfigError, match="has no tune: section"):
        plan_stages(load_experiment(plain), plain, [])


def test_trial_config_takes_the_parents_model_and_weights(tmp_path):
    cfg = load_experiment(STUDY)
    vqa = plan_stages(cfg, STUDY, [])[1]
    parent = {
        "trial": "pretrain_a",
        "run_dir": "/s/pretrain/pretrain_a",
        "params": {"model.bridge": "gated", "train.lr": 1e-3},
    }
    trial = trial_config(
        vqa.base, {"train.lr": 2e-4, "parent": "pretrain_a"}, "vqa", "study", tmp_path, "vqa_b", parent
    )
    assert trial.model.bridge == "gated" and trial.model.init_from == "/s/pretrain/pretrain_a"
    assert trial.train.lr == 2e-4  # the parent's pre-training lr is not the fine-tuning lr
    assert trial.train.name == "vqa_b" and trial.train.storage == str(tmp_path / "vqa")
    assert trial.track.group == "study" and "stage:vqa" in trial.track.tags
    assert trial.data.task == "vqa"


def test_table_and_best_follow_the_parent_chain():
    stages = [
        {
            "name": "pretrain",
            "trials": [
                {
                    "trial": "p1",
                    "params": {"model.bridge": "add", "train.lr": 1e-3},
                    "parent": None,
                    "status": "TERMINATED",
                    "metric": 2.0,
                },
                {
                    "trial": "p2",
                    "params": {"model.bridge": "gated", "train.lr": 3e-4},
                    "parent": None,
                    "status": "STOPPED",
                    "metric": 1.0,
                },
            ],
        },
        {
            "name": "vqa",
            "trials": [
                {
                    "trial": "v1",
                    "params": {"train.lr": 1e-4},
                    "parent": "p1",
                    "status": "TERMINATED",
                    "metric": 0.7,
                },
                {
                    "trial": "v2",
                    "params": {"train.lr": 2e-4},
                    "parent": "p1",
                    "status": "TERMINATED",
                    "metric": 0.9,
                },
            ],
        },
    ]
    rows = table(stages, "val/vqa_score")
    assert rows[1] == {
        "pretrain.model.bridge": "add",
        "pretrain.train.lr": 1e-3,
        "vqa.train.lr": 2e-4,
        "val/vqa_score": 0.9,
        "trial": "v2",
        "status": "TERMINATED",
    }
    assert [t["trial"] for t in best_trials(stages[1]["trials"], "max", 1)] == ["v2"]
    # a stopped trial exported no model: it is never a parent, however good its metric
    assert [t["trial"] for t in best_trials(stages[0]["trials"], "min", 2)] == ["p1"]


def _wait_for(condition, deadline: float, what: str, proc: subprocess.Popen) -> None:
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the study ended (exit {proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


def _core_ray(group: int) -> list[str]:
    """Live GCS / raylet processes of a process group."""
    out = subprocess.run(["ps", "-eo", "pgid=,stat=,args="], capture_output=True, text=True).stdout
    return [
        line for line in out.splitlines()
        if line.split()[0] == str(group) and not line.split()[1].startswith("Z")
        and ("gcs_server" in line or "raylet" in line)
    ]  # fmt: skip


@pytest.mark.slow
def test_two_stage_study_with_asha_survives_a_killed_driver(tmp_path):
    """Stage 1 searches bridge x lr with Optuna TPE + ASHA; stage 2 fine-tunes VQA from the best stage-1 run.

    The driver is SIGKILLed while the second stage-1 trial is between checkpoints; `--resume` finishes the
    study: the finished trial is kept as it was, the interrupted one continues from its checkpoint.
    """
    from btp.data.synth import write_synthetic

    data = tmp_path / "data"
    write_synthetic(data, images=200, seed=5)
    doc = _study_doc()
    # ASHA's only cut is at step 6: the kill at the second trial's first checkpoint (step 3) always lands while
    # that trial is still running, however the first trials compare
    doc["tune"]["scheduler"]["grace_period"] = 6
    doc["tune"]["stages"][0]["num_samples"] = 2
    # one fine-tuning, from the better pre-training (that the first trials cover every choice, parents
    # included, is test_first_trials_cover_every_choice)
    doc["tune"]["stages"][0]["top_k"] = 1
    doc["tune"]["stages"][1]["num_samples"] = 1
    path = _write(tmp_path, doc)
    runs = tmp_path / "runs"
    cmd = [
        sys.executable, "-m", "btp.cli", "tune", str(path), f"data.root={data}", f"train.storage={runs}",
        "train.max_steps=9", "train.eval_every=6", "train.checkpoint_every=3", "train.log_every=3",
        "train.batch_size=8", "train.num_workers=1", "track.wandb=false",
    ]  # fmt: skip
    study = runs / "study"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "first.log").open("w")
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=env)
    try:
        deadline = time.monotonic() + 300
        # ended: the trial wrote its summary and reported last, and the driver marked it done
        finished = lambda: sorted(study.glob(f"pretrain/*/{ENDED_FILE}"))  # noqa: E731
        _wait_for(lambda: len(finished()) == 1, deadline, "the first trial finished", proc)
        first = finished()[0].parent
        kept = {name: (first / name).read_bytes() for name in ("metrics.jsonl", "summary.json")}

        def registered(run) -> bool:
            """Ray Train recorded a checkpoint of the run (its folder alone may still be half written)."""
            snapshot = run / "checkpoint_manager_snapshot.json"
            return snapshot.is_file() and '"checkpoint_dir_name":"checkpoint_' in snapshot.read_text()

        def second_checkpointed():
            return [
                run for run in study.glob("pretrain/*")
                if run != first and registered(run) and not (run / "summary.json").exists()
            ]  # fmt: skip

        _wait_for(lambda: second_checkpointed(), deadline, "a checkpoint of the second trial", proc)
        second = second_checkpointed()[0]
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        assert not (second / "summary.json").exists()  # killed mid-trial: the test has teeth
        # the Ray the driver started ends with it (its GCS and raylet; Ray leaves two idle agents behind,
        # which the finally clause below ends)
        deadline = time.monotonic() + 60
        while _core_ray(proc.pid) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not _core_ray(proc.pid), "the Ray of the killed driver is still running"
    finally:
        log.close()
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["pkill", "-9", "-g", str(proc.pid)], capture_output=True)

    second_run = subprocess.Popen(
        [*cmd, "--resume"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
        start_new_session=True,
    )  # fmt: skip
    try:
        stdout, stderr = second_run.communicate(timeout=600)
    finally:
        subprocess.run(["pkill", "-9", "-g", str(second_run.pid)], capture_output=True)
    out = stdout + stderr
    assert second_run.returncode == 0, out[-3000:]
    assert f"[{second.name}] resumed at step 3" in out
    # a lone worker checkpoints without a process group on purpose: torch's warning about it is not shown
    assert "[pretrain_" in (tmp_path / "first.log").read_text()  # the workers' lines reach the log
    assert "torch.distributed is disabled" not in (tmp_path / "first.log").read_text() + out
    assert {name: (first / name).read_bytes() for name in kept} == kept  # not run a second time
    steps = [json.loads(line)["step"] for line in (second / "metrics.jsonl").read_text().splitlines()]
    assert steps == sorted(steps) and steps.count(3) <= 1  # nothing logged twice after the restart

    summary = json.loads((study / "summary.json").read_text())
    pre, vqa = summary["stages"]
    assert len(pre["trials"]) == 2 and len(vqa["trials"]) == 1
    assert {t["status"] for t in pre["trials"]} <= {"TERMINATED", "STOPPED"}
    for t in pre["trials"]:
        assert t["params"]["model.bridge"] in ("add", "gated") and 1e-4 <= t["params"]["train.lr"] <= 1e-3
        assert (t["status"] == "STOPPED") == (t["steps"] < 9)  # ASHA's early stops end before max_steps
    parents = {t["trial"]: t for t in best_trials(pre["trials"], "min", 1)}
    assert {t["parent"] for t in vqa["trials"]} == set(parents)
    for t in vqa["trials"]:
        trial_cfg = yaml.safe_load((Path(t["run_dir"]) / "config.yaml").read_text())
        assert trial_cfg["model"]["init_from"] == parents[t["parent"]]["run_dir"]
        assert trial_cfg["model"]["bridge"] == parents[t["parent"]]["params"]["model.bridge"]
        exported = (Path(t["run_dir"]) / "model" / "model.safetensors").is_file()
        assert exported == (t["status"] == "TERMINATED") and t["status"] in ("TERMINATED", "STOPPED")
    assert len(summary["table"]) == 1
    assert {"pretrain.model.bridge", "pretrain.train.lr", "vqa.train.lr", "val/vqa_score"} <= set(
        summary["table"][0]
    )
    assert summary["best"]["metric"] == max(t["metric"] for t in vqa["trials"])

    import optuna

    history = optuna.load_study(study_name="study.pretrain", storage=summary["storage"]).get_trials()
    states = {t.state for t in history}
    assert optuna.trial.TrialState.RUNNING not in states
    done = {t.value for t in history if t.state == optuna.trial.TrialState.COMPLETE}
    assert json.loads(kept["summary.json"])["val/loss"] in done  # the finished trial's result is kept
    assert "best:" in stdout and str(study / "summary.json") in stdout


def test_first_trials_cover_every_choice():
    from ray import tune

    from btp.tune import first_points, tune_space

    doc = _study_doc()
    stages = plan_stages(load_experiment(STUDY), STUDY, [])
    space = tune_space(stages[0].space)  # model.bridge: [add, gated]; train.lr: loguniform(1e-4, 1e-3)
    points = first_points(space, num_samples=4)
    assert [p["model.bridge"] for p in points] == ["add", "gated"]
    assert all(abs(p["train.lr"] - 10**-3.5) < 1e-9 for p in points)  # the middle of a log range
    assert first_points(space, num_samples=1) == points[:1]
    assert first_points({"train.lr": tune.uniform(0.0, 1.0)}, 4) == []  # nothing to cover
    assert doc["tune"]["stages"][0]["space"]["model.bridge"]["values"] == ["add", "gated"]


@pytest.mark.parametrize(
    "name",
    ["synth/study.yaml", "synth/quickstart.yaml", "synth/pretrain_bridges.yaml", "synth/vqa_lr.yaml",
     "pretrain_bridges_base.yaml", "vqa_lr_base.yaml", "study_base.yaml"],
)  # fmt: skip
def test_sweep_files_plan_their_stages(name):
    path = ROOT / "experiments" / name
    stages = plan_stages(load_experiment(path), path, [])
    for stage in stages:
        check_space(stage)
        assert stage.space or len(stages) > 1
    if len(stages) > 1:  # a two-stage study: pre-training, then VQA fine-tuning from its best runs
        assert [s.base.data.task for s in stages] == ["pretrain", "vqa"] and stages[0].top_k >= 2
