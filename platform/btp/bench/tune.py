"""`btp bench tune`: a full grid over (bridge x lr) against Optuna TPE + ASHA on the synthetic VQA task.

Both studies search the same space (every bridge variant x every learning rate, all `choice` keys) on the same
data, with the same steps per trial. The grid runs every combination to the end; Optuna samples fewer trials
with TPE and ASHA stops the weaker ones at their evaluations. Figures: the best final val/vqa_score of each
(trials that ran to the end), the training steps each used (the sum of its trials' steps, stopped ones
included; a trial whose settings TPE suggested again reuses the ended run and trains none), `metric_gap` = grid best - Optuna best (in score units: 0.01 is one percentage point) and
`steps_ratio` = Optuna steps / grid steps. The goal: a gap of at most 1 point with at most 35 % of the steps.

    OUT/data/               the synthetic data (unless --data names shards)
    OUT/grid.yaml           the grid study, as `btp tune` runs it; OUT/grid/ its study directory
    OUT/optuna.yaml         the Optuna study; OUT/optuna/ its study directory
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any

BASE_EXPERIMENT = Path("experiments") / "synth" / "vqa_scratch.yaml"
METRIC = "val/vqa_score"
GOAL_GAP = 0.01  # one percentage point of the 0-1 VQA score
GOAL_RATIO = 0.35
STUDIES = ("grid", "optuna")
# keys the bench sets itself, and the option that sets each
OWN_KEYS = {
    "data.root": "--data",
    "train.storage": "--out",
    "train.name": "--out",
    "train.max_steps": "--steps",
    "train.eval_every": "--eval-every",
    "train.seed": "--seed",
    "model.bridge": "--bridges",
    "train.lr": "--lrs",
}


def base_experiment() -> Path:
    """The synthetic VQA experiment in the repository (next to the sources, or under the current folder)."""
    for root in (Path(__file__).resolve().parents[3], Path.cwd()):
        if (root / BASE_EXPERIMENT).is_file():
            return root / BASE_EXPERIMENT
    raise FileNotFoundError(
        f"{BASE_EXPERIMENT} not found; run from the repository's folder or pass --experiment FILE"
    )


def _say(text: str, start: float) -> None:
    print(f"[bench tune {time.perf_counter() - start:5.0f} s] {text}", flush=True)


def make_data(out: Path, images: int, seed: int, start: float) -> Path:
    """Synthetic shards in OUT/data, written once per size and seed."""
    from btp.data.synth import write_synthetic

    data = out / "data"
    manifest = data / "manifest.json"
    if manifest.is_file():
        meta = json.loads(manifest.read_text())
        if meta.get("complete") and (meta.get("images"), meta.get("seed")) == (images, seed):
            _say(f"synthetic data already in {data}", start)
            return data
    _say(f"writing {images} synthetic pictures with questions and answers to {data}", start)
    write_synthetic(data, images=images, seed=seed)
    return data


def trial_overrides(data: Path, out: Path, args: argparse.Namespace) -> list[str]:
    """What every trial of both studies runs: the data, the steps, evaluations, no test predictions."""
    return [
        f"data.root={data}",
        "data.test=[]",  # the bench compares validation scores; no test-split predictions per trial
        f"train.storage={out}",
        f"train.max_steps={args.steps}",
        f"train.eval_every={args.eval_every}",
        # every step in metrics.jsonl: a trial's `steps` is then exactly where ASHA's stop reached it
        "train.log_every=1",
        f"train.checkpoint_every={args.steps}",  # no checkpoints in between: nothing resumes
        f"train.seed={args.seed}",
        "track.wandb=false",
        *args.overrides,
    ]


def startup_trials(args: argparse.Namespace) -> int:
    """TPE's random start: --startup-trials, else the first trials that cover every bridge and every lr."""
    return args.startup_trials or max(len(args.bridges), len(args.lrs))


def study_configs(base: Path, overrides: list[str], args: argparse.Namespace) -> dict[str, Any]:
    """The grid and the Optuna study over the same space, as experiment configs with a tune: section."""
    import copy

    from btp.config import (
        ConfigError,
        ParamSpace,
        SamplerConfig,
        SchedulerConfig,
        TuneConfig,
        load_experiment,
    )
    from btp.train.optim import planned_steps
    from btp.train.run import planned_run

    cfg = load_experiment(base, overrides)
    if cfg.data.task != "vqa":
        raise ConfigError(f"{base}: data.task is {cfg.data.task}; the bench compares VQA scores")
    samples, _ = planned_run(cfg)
    t = cfg.train
    per_epoch = planned_steps(samples, t.num_workers, t.batch_size, t.grad_accum, 1)
    cfg.train.epochs = max(1, math.ceil(args.steps / per_epoch))  # --steps, however small the data
    space = {
        "model.bridge": ParamSpace(type="choice", values=list(args.bridges)),
        "train.lr": ParamSpace(type="choice", values=list(args.lrs)),
    }
    size = len(args.bridges) * len(args.lrs)
    grid = copy.deepcopy(cfg)
    grid.train.name = "grid"
    grid.tune = TuneConfig(
        metric=METRIC,
        mode="max",
        space=copy.deepcopy(space),
        sampler=SamplerConfig(type="grid", seed=args.seed),
        scheduler=SchedulerConfig(type="none"),
        num_samples=size,
        max_concurrent=1,
    )
    optuna = copy.deepcopy(cfg)
    optuna.train.name = "optuna"
    optuna.tune = TuneConfig(
        metric=METRIC,
        mode="max",
        space=copy.deepcopy(space),
        # TPE models the results once the first trials have covered every bridge and every lr
        sampler=SamplerConfig(type="tpe", seed=args.seed, n_startup_trials=startup_trials(args)),
        # ASHA judges trials at their evaluations: the first rung is the first evaluation
        scheduler=SchedulerConfig(
            type="asha",
            grace_period=args.eval_every,
            reduction_factor=args.reduction_factor,
            max_t=args.steps,
        ),
        num_samples=args.samples or (size + 1) // 2,
        max_concurrent=1,
    )
    return {"grid": grid, "optuna": optuna}


def study_figures(summary: dict[str, Any], wall_s: float) -> dict[str, Any]:
    """Best final metric (trials that ran to the end), total steps and trial counts of one study."""
    trials = summary["stages"][0]["trials"] if summary["stages"] else []
    best = summary["best"]
    return {
        "best": best["metric"] if best else None,
        "best_params": best["params"] if best else None,
        "steps": sum(int(t["steps"]) for t in trials),
        "trials": len(trials),
        "finished": sum(t["status"] == "TERMINATED" for t in trials),
        "stopped": sum(t["status"] == "STOPPED" for t in trials),
        "errors": sum(t["status"] == "ERROR" for t in trials),
        # TPE suggested an ended trial's settings again: its run was reused, no step trained
        "duplicates": sum(t["status"] == "DUPLICATE" for t in trials),
        "wall_s": round(wall_s, 1),
        "per_trial": [
            {
                "bridge": t["params"].get("model.bridge"),
                "lr": t["params"].get("train.lr"),
                "status": t["status"],
                "steps": int(t["steps"]),
                "metric": t["metric"],
            }
            for t in trials
        ],
    }


def compare(grid: dict[str, Any], optuna: dict[str, Any]) -> dict[str, Any]:
    gap = grid["best"] - optuna["best"] if grid["best"] is not None and optuna["best"] is not None else None
    ratio = optuna["steps"] / grid["steps"] if grid["steps"] else None
    return {
        "metric_gap": gap,
        "metric_gap_points": None if gap is None else 100 * gap,
        "steps_ratio": ratio,
        "goal_metric_gap": GOAL_GAP,
        "goal_steps_ratio": GOAL_RATIO,
        "metric_goal_met": gap is not None and gap <= GOAL_GAP,
        "steps_goal_met": ratio is not None and ratio <= GOAL_RATIO,
    }


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _params(params: dict[str, Any] | None) -> str:
    return "-" if not params else f"{params.get('model.bridge')}, lr {params.get('train.lr'):g}"


def print_trials(name: str, figures: dict[str, Any]) -> None:
    print(f"{name} trials:")
    print(f"  {'bridge':<12}{'lr':>8}  {'status':<11}{'steps':>6}{'val score':>11}")
    for t in figures["per_trial"]:
        print(f"  {t['bridge']:<12}{t['lr']:>8g}  {t['status']:<11}{t['steps']:>6}{_pct(t['metric']):>11}")


def print_table(report: dict[str, Any]) -> None:
    g, o = report["grid"], report["optuna"]
    rows = [
        ("trials", str(g["trials"]), str(o["trials"])),
        (
            "to the end / stopped / repeat",
            f"{g['finished']} / {g['stopped']} / {g['duplicates']}",
            f"{o['finished']} / {o['stopped']} / {o['duplicates']}",
        ),
        (f"best {METRIC}", _pct(g["best"]), _pct(o["best"])),
        ("best setting", _params(g["best_params"]), _params(o["best_params"])),
        ("training steps", str(g["steps"]), str(o["steps"])),
        ("wall time", f"{g['wall_s']:.0f} s", f"{o['wall_s']:.0f} s"),
    ]
    print(f"\n{'':<26}{'grid':>22}{'Optuna TPE + ASHA':>22}")
    for label, a, b in rows:
        print(f"{label:<26}{a:>22}{b:>22}")
    gap, ratio = report["metric_gap"], report["steps_ratio"]
    gap_text = "-" if gap is None else f"{100 * gap:+.2f} points"
    ratio_text = "-" if ratio is None else f"{ratio:.1%}"
    print(
        f"metric_gap (grid best - Optuna best): {gap_text}; goal <= {100 * GOAL_GAP:.0f} point: "
        f"{'met' if report['metric_goal_met'] else 'NOT met'}"
    )
    print(
        f"steps_ratio (Optuna steps / grid steps): {ratio_text}; goal <= {GOAL_RATIO:.0%}: "
        f"{'met' if report['steps_goal_met'] else 'NOT met'}"
    )
    if g["errors"] or o["errors"]:
        print(f"failed trials: grid {g['errors']}, Optuna {o['errors']} (their steps are counted)")


def run_bench(args: argparse.Namespace) -> dict[str, Any]:
    from btp.config import save_resolved
    from btp.train.run import quiet_ray_env, ray_session
    from btp.tune import run_study

    start = time.perf_counter()
    out = Path(args.out).resolve()
    earlier = [out / name for name in STUDIES if (out / name).exists()]
    if earlier:
        raise FileExistsError(
            f"{earlier[0]} holds an earlier run; choose another --out or delete the grid/ and optuna/ folders"
        )
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve() if args.data else make_data(out, args.images, args.seed, start)
    base = Path(args.experiment) if args.experiment else base_experiment()
    configs = study_configs(base, trial_overrides(data, out, args), args)
    files = {name: save_resolved(cfg, out / f"{name}.yaml") for name, cfg in configs.items()}
    size = len(args.bridges) * len(args.lrs)
    _say(
        f"space: bridge {args.bridges} x lr {[f'{lr:g}' for lr in args.lrs]} ({size} settings), "
        f"{args.steps} steps per trial, evaluation every {args.eval_every}; data {data}",
        start,
    )
    report: dict[str, Any] = {
        "task": "vqa",
        "metric": METRIC,
        "bridges": list(args.bridges),
        "lrs": list(args.lrs),
        "steps_per_trial": args.steps,
        "eval_every": args.eval_every,
        "grid_trials": size,
        "optuna_trials": configs["optuna"].tune.num_samples,
        "reduction_factor": args.reduction_factor,
        "n_startup_trials": startup_trials(args),
        "seed": args.seed,
        "data": str(data),
        "studies": {name: str(out / name) for name in STUDIES},
    }
    # what `btp tune` sets before its Ray starts (Train's workers inherit it from the raylet); the trials' own
    # prints stay in Ray's logs, off this console
    quiet_ray_env()
    with ray_session(args.address, log_to_driver=False):  # one Ray for both studies
        for name in STUDIES:
            tune = configs[name].tune
            _say(
                f"study {name}: {tune.num_samples} trials, sampler {tune.sampler.type}, "
                f"scheduler {tune.scheduler.type} ({files[name]})",
                start,
            )
            began = time.perf_counter()
            summary = run_study(files[name], [], address=args.address)
            report[name] = study_figures(summary, time.perf_counter() - began)
            _say(
                f"study {name} done in {report[name]['wall_s']:.0f} s: best {_pct(report[name]['best'])}, "
                f"{report[name]['steps']} steps",
                start,
            )
    for name in STUDIES:
        g = report[name]
        report[f"{name}_best"] = g["best"]
        report[f"{name}_steps"] = g["steps"]
        report[f"{name}_wall_s"] = g["wall_s"]
    report.update(compare(report["grid"], report["optuna"]))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    print()
    for name, label in (("grid", "grid"), ("optuna", "Optuna TPE + ASHA")):
        print_trials(label, report[name])
    print_table(report)
    print(f"bench: {report['wall_s']:.0f} s in all; studies in {out}")
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"figures written to {args.json}")
    return report


def _floats(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v.strip()]


def _names(text: str) -> list[str]:
    return [v.strip() for v in text.split(",") if v.strip()]


def run_tune_bench(args: argparse.Namespace) -> int:
    from btp.config import ConfigError
    from btp.train.build import DataMissingError
    from btp.tune import StudyError

    args.bridges = _names(args.bridges) if isinstance(args.bridges, str) else args.bridges
    args.lrs = _floats(args.lrs) if isinstance(args.lrs, str) else args.lrs
    problems = [
        "--bridges needs at least one name" if not args.bridges else "",
        "--lrs needs at least one value" if not args.lrs else "",
        "--steps and --eval-every must be positive" if min(args.steps, args.eval_every) < 1 else "",
        "--eval-every must not exceed --steps" if args.eval_every > args.steps else "",
        "--samples must be positive" if args.samples is not None and args.samples < 1 else "",
        "--startup-trials must be positive"
        if args.startup_trials is not None and args.startup_trials < 1
        else "",
        "--reduction-factor must be at least 2" if args.reduction_factor < 2 else "",
    ]
    for text in args.overrides:
        key = text.partition("=")[0].strip()
        if key in OWN_KEYS or key.split(".")[0] == "tune":
            option = OWN_KEYS.get(key, "--samples, --reduction-factor, --startup-trials")
            problems.append(f"{text}: the bench sets {key} itself; use {option}")
    if any(problems):
        print(f"btp bench tune: {next(p for p in problems if p)}", file=sys.stderr)
        return 2
    try:
        run_bench(args)
    except (ConfigError, DataMissingError, StudyError, FileNotFoundError, FileExistsError) as err:
        print(f"btp bench tune: {err}", file=sys.stderr)
        return 2
    return 0
