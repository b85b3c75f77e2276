"""`btp tune EXPERIMENT.yaml [key=value ...] [--resume]`: Optuna + ASHA studies over experiment keys, in stages.

A study is the experiment's `tune:` section. Each trial is a whole `btp train` run (Ray Train inside a Ray Tune
function trial), in its own run directory under the study directory:

    STUDY/                      train.storage/train.name of the study file
      summary.json              the stages, every trial (params, parent, status, metric), the table, the best
      optuna.db                 the Optuna studies, one per stage (unless tune.storage names another RDB)
      <stage>/<stage>_<id>/     one run directory per trial (config.yaml, metrics.jsonl, model/, ...)
      tune/<stage>/             Ray Tune's experiment state (what --resume restores)

With `stages:`, each stage after the first fine-tunes from the best `top_k` finished trials of the stage
before it: the parent is one more searched choice, its run becomes the trial's `model.init_from`.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import math
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from btp.config import (
    ConfigError,
    ExperimentConfig,
    ParamSpace,
    SamplerConfig,
    SchedulerConfig,
    check_earlier,
    load_experiment,
    parse_override,
)
from btp.train.build import DataMissingError
from btp.train.run import (
    absolute_paths,
    failure_message,
    planned_run,
    preflight,
    quiet_data_context,
    quiet_ray_env,
    ray_log_level,
    ray_session,
)
from btp.train.storage import is_remote, write_text_atomic

SUMMARY = "summary.json"
TRIAL_FILE = "trial.json"
ENDED_FILE = "ended.json"  # written by the driver when a trial ends (finished or stopped by the scheduler)
# the Tune function that launches a trial's TorchTrainer only waits on it: Ray Train's workers do the work
TRIAL_DRIVER_CPUS = 0.1


class StudyError(RuntimeError):
    """A study that cannot go on (e.g. a stage without a finished trial to fine-tune from)."""


@dataclass
class Stage:
    """One stage of a study: the trials' experiment before sampling, what is searched, how trials are judged."""

    name: str
    base: ExperimentConfig
    space: dict[str, ParamSpace]
    num_samples: int
    top_k: int
    metric: str
    mode: str
    max_concurrent: int = 1  # trials at once
    parents: dict[str, dict[str, Any]] = field(default_factory=dict)  # trial -> its record, for later stages


# ---- planning -------------------------------------------------------------------------------------------------


def study_dir(cfg: ExperimentConfig) -> Path:
    if is_remote(cfg.train.storage):
        raise ConfigError(
            f"train.storage: a study keeps its trials, Optuna storage and Ray Tune state in a folder every node "
            f"sees (a local or shared path), not {cfg.train.storage}; remote storage is for btp train runs"
        )
    return (Path(cfg.train.storage) / cfg.train.name).resolve()


def plan_stages(cfg: ExperimentConfig, path: Path, overrides: list[str]) -> list[Stage]:
    """The study's stages, each with its base experiment (the file's own or the stage's, plus overrides)."""
    tune = cfg.tune
    if tune is None:
        raise ConfigError(f"{path}: has no tune: section; `btp train {path}` runs it as a single experiment")
    # command-line overrides apply to every stage (e.g. data.root, train.max_steps), except the study's own keys
    study_keys = (["tune"], ["train", "name"], ["train", "storage"])
    shared = [o for o in overrides if not any(parse_override(o)[0][: len(k)] == k for k in study_keys)]
    if not tune.stages:
        _need_space(tune.space, "tune.space")
        base = load_experiment(path, overrides)
        base.tune = None
        return [
            Stage(
                "search",
                base,
                dict(tune.space),
                tune.num_samples,
                1,
                tune.metric,
                tune.mode,
                tune.max_concurrent,
            )
        ]
    stages: list[Stage] = []
    for i, st in enumerate(tune.stages):
        if st.experiment:
            source = _find_experiment(st.experiment, path, f"tune.stages[{i}].experiment")
            base = load_experiment(source, [*st.overrides, *shared])
        else:
            base = load_experiment(path, [*st.overrides, *overrides])
        base.tune = None
        if i == 0 or tune.stages[i - 1].top_k == 1:  # later stages may search only over their parents
            _need_space(st.space, f"tune.stages[{i}].space")
        stages.append(
            Stage(
                st.name,
                base,
                dict(st.space),
                st.num_samples,
                st.top_k,
                st.metric or tune.metric,
                st.mode or tune.mode,
                st.max_concurrent or tune.max_concurrent,
            )
        )
    names = [s.name for s in stages]
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: tune.stages: stage names must differ, got {names}")
    return stages


def _need_space(space: dict[str, ParamSpace], key: str) -> None:
    if not space:
        raise ConfigError(
            f"{key}: empty; name at least one key to search, e.g. train.lr: {{type: loguniform, ...}}"
        )


def _find_experiment(name: str, study_file: Path, key: str) -> Path:
    for candidate in (Path(name), study_file.parent / name):
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"{study_file}: {key}: {name} not found (relative to the current folder or the study file)"
    )


def check_space(stage: Stage, grid: bool = False) -> None:
    """What the schema cannot check: bridge names against the model's registry, metrics against evaluation."""
    from bridgetower.bridge import BRIDGES

    spec = stage.space.get("model.bridge")
    if spec is not None and spec.type == "choice":
        unknown = [v for v in spec.values or [] if v not in BRIDGES]
        if unknown:
            raise ConfigError(
                f"tune space model.bridge: unknown bridge {unknown[0]!r}; registered: {', '.join(sorted(BRIDGES))}"
            )
    if not stage.metric.startswith("val/"):
        raise ConfigError(
            f"stage {stage.name}: metric {stage.metric!r} is not an evaluation metric; use a val/ metric "
            "(e.g. val/vqa_score, val/accuracy, val/loss)"
        )
    if grid and any(s.type != "choice" for s in stage.space.values()):
        bad = next(k for k, s in stage.space.items() if s.type != "choice")
        raise ConfigError(
            f"tune.sampler.type: grid needs every searched key to be a choice; {bad} is {stage.space[bad].type}"
        )
    if not stage.base.data.val:
        raise ConfigError(f"stage {stage.name}: data.val is empty; trials are judged on the validation split")


def tune_space(space: dict[str, ParamSpace]) -> dict[str, Any]:
    """The search space in Ray Tune's terms (OptunaSearch turns it into Optuna distributions)."""
    from ray import tune

    out: dict[str, Any] = {}
    for key, s in space.items():
        if s.type == "choice":
            out[key] = tune.choice(list(s.values))
        elif s.type == "int":
            low, high = int(s.low), int(s.high) + 1  # Tune's upper bound is exclusive
            out[key] = tune.lograndint(low, high) if s.log else tune.randint(low, high)
        elif s.type == "loguniform" or s.log:
            out[key] = tune.loguniform(s.low, s.high)
        else:
            out[key] = tune.uniform(s.low, s.high)
    return out


def first_points(space: dict[str, Any], num_samples: int) -> list[dict[str, Any]]:
    """The first trials: every value of every choice at least once (numeric keys at the middle of their range).

    Without them a sampler's random start may never try a bridge variant or a parent of a small study.
    """
    from ray.tune.search.sample import Categorical, Float, Integer

    choices = {k: list(d.categories) for k, d in space.items() if isinstance(d, Categorical)}
    if not choices:
        return []
    middle: dict[str, Any] = {}
    for key, domain in space.items():
        if isinstance(domain, (Float, Integer)):
            low, high = domain.lower, domain.upper
            log = "LogUniform" in type(domain.get_sampler()).__name__
            value = math.sqrt(low * high) if log and low > 0 else (low + high) / 2
            middle[key] = int(value) if isinstance(domain, Integer) else float(value)
    count = min(num_samples, max(len(values) for values in choices.values()))
    return [{**middle, **{k: v[i % len(v)] for k, v in choices.items()}} for i in range(count)]


# ---- one trial ------------------------------------------------------------------------------------------------


def trial_config(
    base: ExperimentConfig,
    params: dict[str, Any],
    stage: str,
    study: str,
    root: Path,
    trial: str,
    parent: dict[str, Any] | None,
) -> ExperimentConfig:
    """The trial's experiment: the stage's base with the sampled values, its own run directory and wandb group."""
    from omegaconf import OmegaConf

    conf = OmegaConf.structured(base)
    if parent is not None:
        for key, value in parent["params"].items():
            if key.startswith("model."):  # the fine-tuned model is the parent's model
                OmegaConf.update(conf, key, value, merge=False)
        OmegaConf.update(conf, "model.init_from", parent["run_dir"], merge=False)
    for key, value in params.items():
        if key != "parent":
            OmegaConf.update(conf, key, value, merge=False)
    cfg: ExperimentConfig = OmegaConf.to_object(conf)
    cfg.train.name = trial
    cfg.train.storage = str(root / stage)
    cfg.track.group = study
    cfg.track.tags = [*cfg.track.tags, f"study:{study}", f"stage:{stage}"]
    return cfg


def _forwarder(metric: str):
    """A Ray Train callback that hands the trial's evaluation reports (those holding `metric`) to Ray Tune."""
    from ray.tune.integration.ray_train import TuneReportCallback

    class ForwardEvaluations(TuneReportCallback):
        def after_report(self, run_context, metrics, checkpoint):
            if metrics and metric in metrics[0]:
                super().after_report(run_context, metrics, None)

    return ForwardEvaluations()


def run_trial(config: dict[str, Any], stage: Stage, study: str, root: str) -> None:
    """Ray Tune function trainable: one `btp train` run (continued when its run directory has begun)."""
    from ray import tune

    from btp.train.run import train

    trial = f"{stage.name}_{tune.get_context().get_trial_id()}"
    params = dict(config)
    parent = stage.parents.get(params.get("parent", "")) if stage.parents else None
    if stage.parents and parent is None:
        parent = next(iter(stage.parents.values()))
    cfg = trial_config(stage.base, params, stage.name, study, Path(root), trial, parent)
    out = Path(cfg.train.storage) / trial
    done = out / "summary.json"
    if done.is_file():  # finished before the study's driver stopped: its result, not a second run
        tune.report({"step": json.loads(done.read_text()).get("steps", 0), **json.loads(done.read_text())})
        return
    record = {
        "trial": trial,
        "stage": stage.name,
        "params": {k: v for k, v in params.items() if k != "parent"},
        "parent": parent["trial"] if parent else None,
        "run_dir": str(out),
    }
    same = None if (out / "config.yaml").is_file() else same_settings(out.parent, record)
    out.mkdir(parents=True, exist_ok=True)
    if same is not None:
        record["duplicate_of"] = same.name
    write_text_atomic(out / TRIAL_FILE, json.dumps(record, indent=2) + "\n")
    if same is not None:
        replay(same, stage.metric)
        return
    train(cfg, resume=(out / "config.yaml").is_file(), callbacks=[_forwarder(stage.metric)])


def _settings(record: dict[str, Any]) -> str:
    return json.dumps({"params": record["params"], "parent": record.get("parent")}, sort_keys=True)


def same_settings(stage_dir: Path, record: dict[str, Any]) -> Path | None:
    """An ended trial of the stage that trained exactly these settings (the sampler suggested them again).

    Runs are seeded, so the same settings train the same run again: the trial replays that run's evaluations
    instead (the sampler and the scheduler see the same results, no step is trained twice). This happens in
    spaces of `choice` keys, where TPE re-suggests its favourite; a trial that failed is never reused.
    """
    wanted = _settings(record)
    for other in sorted(stage_dir.glob(f"*/{TRIAL_FILE}")):
        run = other.parent
        if run.name == record["trial"] or not (run / ENDED_FILE).is_file():
            continue
        try:
            theirs = json.loads(other.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if "duplicate_of" in theirs or _settings(theirs) != wanted:
            continue
        if (run / "metrics.jsonl").is_file():
            return run
    return None


def _evaluations(run: Path, metric: str) -> list[dict[str, Any]]:
    """The rows of the run's metrics.jsonl that hold `metric`, in order."""
    rows = []
    for line in (run / "metrics.jsonl").read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if isinstance(row, dict) and metric in row:
            rows.append(row)
    return rows


def replay(run: Path, metric: str) -> None:
    """Report an earlier run's evaluations to Ray Tune, step by step, as if this trial had trained them."""
    from ray import tune

    for row in _evaluations(run, metric):
        tune.report(row)


# ---- results --------------------------------------------------------------------------------------------------


def _last_metric(run: Path, metric: str) -> tuple[float | None, int]:
    """The run's final value of `metric` (summary.json, else its last evaluation) and its last step."""
    summary = run / "summary.json"
    if summary.is_file():
        data = json.loads(summary.read_text())
        return data.get(metric), int(data.get("steps", 0))
    value, step = None, 0
    metrics = run / "metrics.jsonl"
    if metrics.is_file():
        for line in metrics.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            step = max(step, int(row.get("step", 0)))
            if metric in row:
                value = row[metric]
    return value, step


def collect(root: Path, stage: Stage, errors: dict[str, str]) -> list[dict[str, Any]]:
    """Every trial of the stage from its run directory: params, parent, status, final metric, steps."""
    trials = []
    for record_file in sorted((root / stage.name).glob(f"*/{TRIAL_FILE}")):
        record = json.loads(record_file.read_text())
        run = record_file.parent
        if record.get("duplicate_of"):  # the earlier trial's result; this one trained no step
            value, _ = _last_metric(run.parent / record["duplicate_of"], stage.metric)
            trials.append({**record, "status": "DUPLICATE", "metric": value, "steps": 0})
            continue
        value, steps = _last_metric(run, stage.metric)
        if (run / "summary.json").is_file() and (run / "model").is_dir():
            status = "TERMINATED"
        elif record["trial"] in errors or value is None:
            status = "ERROR"
        else:
            status = "STOPPED"  # ended early by the scheduler
        ok = value is not None and not (isinstance(value, float) and math.isnan(value))
        trials.append({**record, "status": status, "metric": value if ok else None, "steps": steps})
    return trials


def best_trials(trials: list[dict[str, Any]], mode: str, k: int) -> list[dict[str, Any]]:
    """The k best trials that ran to the end (only those exported a model to fine-tune from)."""
    done = [t for t in trials if t["status"] == "TERMINATED" and t["metric"] is not None]
    return sorted(done, key=lambda t: t["metric"], reverse=mode == "max")[:k]


def table(stages: list[dict[str, Any]], metric: str) -> list[dict[str, Any]]:
    """One row per trial of the last stage, with the settings of every stage it descends from."""
    by_id = {t["trial"]: t for s in stages for t in s["trials"]}
    stage_of = {t["trial"]: s["name"] for s in stages for t in s["trials"]}
    rows = []
    for t in stages[-1]["trials"]:
        row: dict[str, Any] = {}
        chain, node = [], t
        while node is not None:
            chain.append(node)
            node = by_id.get(node.get("parent") or "")
        for node in reversed(chain):
            row.update({f"{stage_of[node['trial']]}.{k}": v for k, v in node["params"].items()})
        row.update({metric: t["metric"], "trial": t["trial"], "status": t["status"]})
        rows.append(row)
    return rows


def write_summary(
    root: Path, name: str, stages: list[Stage], done: list[dict[str, Any]], storage: str
) -> dict:
    last = stages[-1]
    rows = table(done, last.metric) if done and done[-1]["name"] == last.name else []
    best = best_trials(done[-1]["trials"], last.mode, 1) if rows else []
    summary = {
        "study": name,
        "metric": last.metric,
        "mode": last.mode,
        "storage": storage,
        "stages": done,
        "table": rows,
        "best": (
            {
                "stage": last.name,
                "trial": best[0]["trial"],
                "params": best[0]["params"],
                "parent": best[0]["parent"],
                "metric": best[0]["metric"],
                "run_dir": best[0]["run_dir"],
            }
            if best
            else None
        ),
    }
    write_text_atomic(root / SUMMARY, json.dumps(summary, indent=2) + "\n")
    return summary


# ---- the driver -------------------------------------------------------------------------------------------------


def _progress(study: str, stage: str, metric: str, stage_dir: Path):
    """Console lines as trials start, evaluate and end (Tune's own tables are turned off).

    A trial that ends (finished or stopped by the scheduler) gets ENDED_FILE in its run directory: its settings
    may then be reused by a later trial that samples the same ones.
    """
    from ray.tune import Callback

    class Progress(Callback):
        def on_trial_start(self, iteration, trials, trial, **info):
            shown = ", ".join(f"{k}={_fmt(v)}" for k, v in trial.config.items())
            print(f"[{study}] {stage} trial {trial.trial_id} started: {shown}", flush=True)

        def on_trial_result(self, iteration, trials, trial, result, **info):
            print(
                f"[{study}] {stage} trial {trial.trial_id} step {result.get('step')}: "
                f"{metric} {_fmt(result.get(metric))}",
                flush=True,
            )

        def on_trial_complete(self, iteration, trials, trial, **info):
            last = trial.last_result or {}
            run = stage_dir / f"{stage}_{trial.trial_id}"
            if run.is_dir():
                write_text_atomic(run / ENDED_FILE, json.dumps({"step": last.get("step")}) + "\n")
                record = run / TRIAL_FILE
                same = json.loads(record.read_text()).get("duplicate_of") if record.is_file() else None
                if same:
                    print(
                        f"[{study}] {stage} trial {trial.trial_id}: same settings as {same}, its run reused"
                    )
            print(
                f"[{study}] {stage} trial {trial.trial_id} ended at step {last.get('step')}: "
                f"{metric} {_fmt(last.get(metric))}",
                flush=True,
            )

        def on_trial_error(self, iteration, trials, trial, **info):
            print(f"[{study}] {stage} trial {trial.trial_id} FAILED; see {trial.path}", flush=True)

    return Progress()


def _fmt(value: Any) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def make_sampler(config: SamplerConfig, stage: Stage) -> Any:
    """The stage's Optuna sampler; the grid walks every combination of the choices (and parents)."""
    import optuna

    if config.type == "grid":
        grid = {k: list(s.values) for k, s in stage.space.items()}
        if stage.parents:
            grid["parent"] = sorted(stage.parents)
        return optuna.samplers.GridSampler(grid, seed=config.seed)
    if config.type == "tpe":
        startup = {} if config.n_startup_trials is None else {"n_startup_trials": config.n_startup_trials}
        return optuna.samplers.TPESampler(seed=config.seed, **startup)
    return optuna.samplers.RandomSampler(seed=config.seed)


def make_scheduler(config: SchedulerConfig, stage: Stage, steps: int) -> Any:
    """ASHA on the training step (first cut at the first evaluation unless grace_period says), or FIFO."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

    if config.type != "asha":
        return FIFOScheduler()
    max_t = config.max_t or steps
    return ASHAScheduler(
        time_attr="step",
        metric=stage.metric,
        mode=stage.mode,
        max_t=max_t,
        grace_period=min(config.grace_period or stage.base.train.eval_every or steps, max_t),
        reduction_factor=config.reduction_factor,
    )


def run_stage(
    stage: Stage, study: str, root: Path, storage: str, cfg: ExperimentConfig, resume: bool
) -> dict[str, str]:
    """Run (or, with --resume, finish) one stage's Tune experiment; returns {trial name: its error} of the trials
    that errored."""
    import optuna
    from ray import tune
    from ray.tune.search.optuna import OptunaSearch

    t = cfg.tune
    space = tune_space(stage.space)
    if len(stage.parents) > 1:
        space["parent"] = tune.choice(sorted(stage.parents))
    trainable = tune.with_resources(
        tune.with_parameters(run_trial, stage=stage, study=study, root=str(root)), {"CPU": TRIAL_DRIVER_CPUS}
    )
    experiment = root / "tune" / stage.name
    callbacks = [_progress(study, stage.name, stage.metric, root / stage.name)]
    if resume and tune.Tuner.can_restore(str(experiment)):
        print(f"[{study}] stage {stage.name}: resuming its trials", flush=True)
        tuner = tune.Tuner.restore(
            str(experiment), trainable=trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        _, steps = planned_run(stage.base)
        sampler = make_sampler(t.sampler, stage)
        first = first_points(space, stage.num_samples) if t.sampler.type != "grid" else []
        searcher = OptunaSearch(
            metric=stage.metric,
            mode=stage.mode,
            sampler=sampler,
            points_to_evaluate=first or None,
            study_name=f"{study}.{stage.name}",
            storage=optuna.storages.RDBStorage(storage),
        )
        scheduler = make_scheduler(t.scheduler, stage, steps)
        tuner = tune.Tuner(
            trainable,
            param_space=space,
            tune_config=tune.TuneConfig(
                search_alg=searcher,
                scheduler=scheduler,
                num_samples=stage.num_samples,
                max_concurrent_trials=stage.max_concurrent,
            ),
            run_config=tune.RunConfig(
                name=stage.name, storage_path=str(root / "tune"), verbose=0, callbacks=callbacks
            ),
        )
    results = tuner.fit()
    return {
        f"{stage.name}_{result.metrics['trial_id']}": failure_message(result.error)
        for result in results
        if result.error is not None and (result.metrics or {}).get("trial_id")
    }


def run_study(path: Path, overrides: list[str], resume: bool = False, address: str | None = None) -> dict:
    """Every stage of the study in order; returns the study summary (also STUDY/summary.json)."""

    cfg = load_experiment(path, overrides)
    stages = plan_stages(cfg, path, overrides)
    for stage in stages:
        check_space(stage, grid=cfg.tune.sampler.type == "grid")
        # a setting every trial would fail on is found now, not in each trial's worker (on a cluster, its
        # autoscaler may add the CPUs and GPUs a local Ray lacks)
        planned_run(stage.base)
        try:
            preflight(absolute_paths(stage.base), resources=address is None)
        except ConfigError as err:
            raise ConfigError(f"stage {stage.name}: {err}") from None
    name = cfg.train.name
    root = study_dir(cfg)
    earlier = (root / SUMMARY).is_file()
    check_earlier(root, earlier, resume, "study")
    root.mkdir(parents=True, exist_ok=True)
    storage = cfg.tune.storage or f"sqlite:///{root / 'optuna.db'}"
    for stage in stages:  # trials run in Ray workers, in another working directory
        stage.base = absolute_paths(stage.base)
    done: list[dict[str, Any]] = []
    previous = json.loads((root / SUMMARY).read_text()) if earlier else {"stages": []}
    finished = {s["name"]: s for s in previous["stages"] if s.get("finished")}
    write_summary(root, name, stages, done, storage)

    with study_ray(address):
        for i, stage in enumerate(stages):
            if i > 0:
                parents = best_trials(done[-1]["trials"], stages[i - 1].mode, stages[i - 1].top_k)
                if not parents:
                    raise StudyError(
                        f"stage {stages[i - 1].name} finished no trial to fine-tune from; see {root / SUMMARY}"
                    )
                stage.parents = {p["trial"]: p for p in parents}
                print(f"[{name}] stage {stage.name} starts from {', '.join(stage.parents)}", flush=True)
            if stage.name in finished:
                done.append(finished[stage.name])
                continue
            print(
                f"[{name}] stage {stage.name}: {stage.num_samples} trials over "
                f"{', '.join(stage.space) or 'parents'} ({stage.metric}, {stage.mode})",
                flush=True,
            )
            errors = run_stage(stage, name, root, storage, cfg, resume)
            record = {
                "name": stage.name,
                "metric": stage.metric,
                "mode": stage.mode,
                "optuna_study": f"{name}.{stage.name}",
                "trials": collect(root, stage, errors),
                "finished": True,
            }
            done.append(record)
            _settle_optuna(storage, f"{name}.{stage.name}", record["trials"])
            write_summary(root, name, stages, done, storage)
            if not any(t["metric"] is not None for t in record["trials"]):
                raise StudyError(no_result(stage, record["trials"], errors, root / stage.name))
    return write_summary(root, name, stages, done, storage)


def no_result(stage: Stage, trials: list[dict[str, Any]], errors: dict[str, str], stage_dir: Path) -> str:
    """Why no trial of a stage has a value of its metric: the trials failed, or they report other metrics."""
    reported: set[str] = set()
    for run in stage_dir.iterdir() if stage_dir.is_dir() else []:
        if (run / "metrics.jsonl").is_file():
            reported |= {k for row in _evaluations(run, "step") for k in row if k.startswith("val/")}
    if reported:
        return (
            f"stage {stage.name}: no trial reported {stage.metric}; its trials report {', '.join(sorted(reported))}: "
            f"set the stage's metric (tune.metric) to one of them"
        )
    if errors:
        first = next(iter(errors.values()))
        return (
            f"stage {stage.name}: all {len(trials)} trials failed; the first with: {first} "
            f"(each trial's output is in {stage_dir})"
        )
    return f"stage {stage.name}: no trial reported {stage.metric}; see {stage_dir}"


@contextlib.contextmanager
def study_ray(address: str | None = None) -> Iterator[None]:
    """The Ray a study runs on: the one this process is connected to, else `address` (or RAY_ADDRESS), else a
    local Ray started here, with its own dashboard (Ray Train frees the placement groups of trials that Tune
    stops through its State API), and shut down at the end."""
    import optuna

    quiet_ray_env()
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "2")  # a killed driver loses at most 2 s of study state
    # the study prints its own progress lines ([NAME] ...); Tune's newer console output prints a configuration
    # box and a TensorBoard hint into Ray's temporary folder even at verbose=0, the older one nothing
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    level = ray_log_level()
    logging.getLogger("ray.tune").setLevel(level)  # "Wrote the latest version of all result files ..."
    optuna.logging.set_verbosity(getattr(optuna.logging, level))  # "A new study created in RDB ..."
    with ray_session(address, log_to_driver=True):
        quiet_data_context()
        yield


def _settle_optuna(storage: str, study_name: str, trials: list[dict[str, Any]]) -> None:
    """Optuna trials left RUNNING by a killed driver are marked FAIL: the study's history stays truthful."""
    import optuna

    try:
        study = optuna.load_study(study_name=study_name, storage=storage)
    except KeyError:
        return
    for trial in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        study.tell(trial.number, state=optuna.trial.TrialState.FAIL)


def _print_result(summary: dict, root: Path) -> None:
    rows = summary["table"]
    if rows:
        keys = list(rows[0])
        widths = {k: max(len(k), *(len(_fmt(r.get(k))) for r in rows)) for k in keys}
        print("  ".join(k.ljust(widths[k]) for k in keys))
        for r in sorted(
            rows,
            key=lambda r: (r[summary["metric"]] is None, r[summary["metric"]] or 0),
            reverse=summary["mode"] == "max",
        ):
            print("  ".join(_fmt(r.get(k)).ljust(widths[k]) for k in keys))
    best = summary["best"]
    if best:
        print(
            f"best: {best['trial']} {summary['metric']} {_fmt(best['metric'])} with {best['params']}"
            + (f" (from {best['parent']})" if best["parent"] else "")
        )
    print(f"study: {root / SUMMARY}; Optuna storage: {summary['storage']}")


def main_tune(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    try:
        cfg = load_experiment(args.experiment, args.overrides)
        summary = run_study(Path(args.experiment), args.overrides, resume=args.resume, address=args.address)
    except (ConfigError, DataMissingError) as err:
        print(f"btp tune: {err}", file=sys.stderr)
        return 2
    except StudyError as err:
        print(f"btp tune: {err}", file=sys.stderr)
        return 1
    root = study_dir(cfg)
    print(f"btp tune {cfg.train.name}: done in {time.perf_counter() - start:.0f} s")
    _print_result(summary, root)
    return 0
