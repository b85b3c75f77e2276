"""`btp report PATH... [--out DIR]`: compare runs and studies in one HTML page with PNG plots.

PATH is a run folder (`btp train`: config.yaml, metrics.jsonl, summary.json), a study folder (`btp tune`:
summary.json with its stages and trials, each trial a run folder) or a folder holding several of them (`runs/`).
The report is `OUT/report.html` with its plots in `OUT/plots/` and the tables in `OUT/summary.md`:

- learning curves (train/loss and every val/ metric against the step), per study stage or per task;
- the final metric per bridge variant (mean, min-max and every run);
- the final metric against the learning rate (log scale);
- parallel coordinates of the searched settings, coloured by the metric;
- Optuna's parameter importances of each study stage (read from the study's storage).

Runs are grouped: each study stage is one group, loose runs are grouped by task. Missing or partial data (a run
without metrics, a crashed trial, NaN) is shown as such. With `WANDB_API_KEY` set the same comparison is also
published as a W&B Report (`wandb-workspaces`); `wandb_report_spec` and `build_wandb_report` build it offline.
"""

from __future__ import annotations

import argparse
import datetime
import html
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

MIN_IMPORTANCE_TRIALS = 5
MAX_LEGEND = 10
MAX_AXES = 8
# config keys that name files, folders or bookkeeping, not a setting worth comparing
_NOT_SETTINGS = {
    "train.name",
    "train.storage",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.max_failures",
    "train.fail_at_step",
    "train.fail_kill",
    "train.cpus_per_worker",
    "train.gpus_per_worker",
    "data.cpus_per_task",
    "data.root",
    "data.task",
    "data.tokenizer",
    "data.vqa_answers",
    "model.init_from",
}


class ReportError(ValueError):
    """A PATH that is neither a run, a study nor a folder of them; the message names it."""


# --- reading runs and studies ------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A metric value as a float (NaN stays NaN); None for missing or non-numeric values."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out.update(_flatten(value, f"{name}."))
        elif not isinstance(value, list):
            out[name] = value
    return out


@dataclass
class Run:
    """One training run folder as the report sees it (a study trial carries its trial fields too)."""

    name: str
    path: Path
    config: dict = field(default_factory=dict)
    history: list[dict] = field(default_factory=list)
    summary: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    status: str = "finished"
    # a study trial: its stage, settings, parent trial and the metric the study recorded
    stage: str | None = None
    params: dict = field(default_factory=dict)
    parent: str | None = None
    trial_metric: float | None = None
    stage_metric: str | None = None
    wandb_id: str | None = None

    @property
    def task(self) -> str | None:
        return _get(self.config, "data.task")

    @property
    def bridge(self) -> str | None:
        value = self.params.get("model.bridge", _get(self.config, "model.bridge"))
        return None if value is None else str(value)

    @property
    def lr(self) -> float | None:
        return _number(self.params.get("train.lr", _get(self.config, "train.lr")))

    @property
    def steps(self) -> int | None:
        steps = _number(self.summary.get("steps"))
        if steps is None:
            known = [_number(row.get("step")) for row in self.history]
            steps = max((s for s in known if s is not None), default=None)
        return None if steps is None or not math.isfinite(steps) else int(steps)

    def setting(self, key: str) -> Any:
        return self.params[key] if key in self.params else _get(self.config, key)

    def metrics(self) -> list[str]:
        return sorted({k for row in self.history for k in row if k != "step"})

    def series(self, metric: str) -> tuple[list[float], list[float]]:
        """(steps, values) of a metric; a step reported twice (a resumed run) keeps its last value."""
        points: dict[float, float] = {}
        for row in self.history:
            step, value = _number(row.get("step")), _number(row.get(metric))
            if step is not None and value is not None:
                points[step] = value
        steps = sorted(points)
        return steps, [points[s] for s in steps]

    def final(self, metric: str) -> float | None:
        """The run's final value: the study's record of a trial, else summary.json, else (a loose run that did not
        finish) the last reported value. A trial the study has no value for keeps none (it crashed or stopped)."""
        if metric == self.stage_metric and self.trial_metric is not None:
            return self.trial_metric
        if metric in self.summary:
            return _number(self.summary[metric])
        if self.stage is not None:
            return None
        values = self.series(metric)[1]
        return values[-1] if values else None


@dataclass
class Stage:
    name: str
    metric: str
    mode: str
    optuna_study: str | None
    runs: list[Run]


@dataclass
class Study:
    name: str
    path: Path
    metric: str
    mode: str
    storage: str | None
    stages: list[Stage]
    table: list[dict]
    best: dict | None
    notes: list[str] = field(default_factory=list)


@dataclass
class Comparison:
    """Everything the report compares: loose runs and studies, in the order given."""

    paths: list[Path]
    runs: list[Run] = field(default_factory=list)
    studies: list[Study] = field(default_factory=list)

    def groups(self) -> list[Group]:
        groups: list[Group] = []
        for study in self.studies:
            for stage in study.stages:
                params = list(dict.fromkeys(k for r in stage.runs for k in r.params))
                if "model.bridge" not in params and len({r.bridge for r in stage.runs}) > 1:
                    params.insert(0, "model.bridge")
                groups.append(
                    Group(
                        f"{study.name} · {stage.name}",
                        stage.runs,
                        [stage.metric],
                        {stage.metric: stage.mode},
                        params,
                        study,
                        stage,
                    )
                )
        tasks = list(dict.fromkeys(r.task or "unknown task" for r in self.runs))
        for task in tasks:
            runs = [r for r in self.runs if (r.task or "unknown task") == task]
            # task metrics first (the first one colours the search-space plot), losses after
            metrics = sorted(
                {k for r in runs for k in [*r.summary, *r.metrics()] if k.startswith("val/")},
                key=lambda m: (m.endswith("loss"), m),
            )
            modes = {m: "min" if m.endswith("loss") else "max" for m in metrics}
            groups.append(Group(f"runs · {task}", runs, metrics, modes, _varying(runs)))
        return groups


@dataclass
class Group:
    """Runs compared in one set of plots: one study stage, or the loose runs of one task."""

    title: str
    runs: list[Run]
    metrics: list[str]
    modes: dict[str, str]
    params: list[str]
    study: Study | None = None
    stage: Stage | None = None

    @property
    def slug(self) -> str:
        return "".join(c if c.isalnum() or c == "-" else "_" for c in self.title.replace(" · ", "-"))[:60]


def _varying(runs: list[Run]) -> list[str]:
    """Config keys whose value differs between the runs (the settings that were compared)."""
    flat = [_flatten({k: v for k, v in r.config.items() if k in ("model", "data", "train")}) for r in runs]
    keys = list(dict.fromkeys(k for f in flat for k in f))
    varying = [
        k
        for k in keys
        if k not in _NOT_SETTINGS
        and len({json.dumps(f.get(k), sort_keys=True, default=str) for f in flat}) > 1
    ]
    return varying[:MAX_AXES]


def _kind(path: Path) -> str | None:
    if not path.is_dir():
        return None
    summary = path / "summary.json"
    if summary.is_file():
        try:
            if "stages" in json.loads(summary.read_text()):
                return "study"
        except (ValueError, UnicodeDecodeError, TypeError):
            pass
    if any((path / f).is_file() for f in ("config.yaml", "metrics.jsonl", "summary.json")):
        return "run"
    return None


def _expected(path: Path, why: str) -> ReportError:
    return ReportError(
        f"{path}: {why}; expected a run folder (config.yaml, metrics.jsonl and summary.json from btp train), "
        "a study folder (summary.json with its stages from btp tune) or a folder holding such folders"
    )


def load(paths: Sequence[str | Path]) -> Comparison:
    """Read the runs and studies named by `paths` (ReportError for a path that is neither)."""
    comp = Comparison([Path(p) for p in paths])
    for path in comp.paths:
        if not path.exists():
            raise _expected(path, "no such file or folder")
        kind = _kind(path)
        if kind is None and path.is_dir():
            found = [(p, _kind(p)) for p in sorted(path.iterdir()) if p.is_dir() and not p.is_symlink()]
            found = [(p, k) for p, k in found if k]
            if not found:
                raise _expected(path, "neither a run nor a study, and no run or study inside")
        elif kind is None:
            raise _expected(path, "not a folder")
        else:
            found = [(path, kind)]
        for item, k in found:
            if k == "study":
                comp.studies.append(load_study(item))
            else:
                comp.runs.append(load_run(item))
    return comp


def load_run(path: Path, name: str | None = None) -> Run:
    """A run folder; whatever is missing or unreadable becomes a note, not an error."""
    run = Run(name or path.name, path)
    config_file = path / "config.yaml"
    if config_file.is_file():
        try:
            config = yaml.safe_load(config_file.read_text())
            run.config = config if isinstance(config, dict) else {}
            if not isinstance(config, dict):
                run.notes.append("config.yaml holds no mapping")
        except yaml.YAMLError as err:
            run.notes.append(f"config.yaml is not valid YAML ({str(err).splitlines()[0]})")
    else:
        run.notes.append("no config.yaml")
    if name is None:
        run.name = str(_get(run.config, "train.name") or path.name)
    metrics_file = path / "metrics.jsonl"
    if metrics_file.is_file():
        bad = 0
        for line in metrics_file.read_text(errors="replace").splitlines():
            try:
                row = json.loads(line) if line.strip() else None
            except ValueError:
                row = None
                bad += 1
            if isinstance(row, dict):
                run.history.append(row)
        if bad:
            run.notes.append(f"metrics.jsonl: {bad} unreadable line(s) skipped")
    else:
        run.history = _wandb_history(path)
        run.notes.append(
            "no metrics.jsonl" + ("; metrics read from the offline wandb run" if run.history else "")
        )
    summary_file = path / "summary.json"
    if summary_file.is_file():
        try:
            summary = json.loads(summary_file.read_text())
            run.summary = summary if isinstance(summary, dict) else {}
        except ValueError:
            run.notes.append("summary.json is not valid JSON")
    else:
        run.notes.append("no summary.json: the run did not finish")
        run.status = "unfinished"
    if not run.history and not run.summary:
        run.status = "no metrics"
    id_file = path / "wandb" / "btp_run_id"
    if id_file.is_file():
        run.wandb_id = id_file.read_text().strip() or None
    if run.wandb_id is None:
        from btp.track import run_id

        run.wandb_id = run_id(run.name, _get(run.config, "track.group"))
    return run


def _wandb_history(path: Path) -> list[dict]:
    from btp.track import find_offline_runs, read_offline_run

    if not find_offline_runs(path):
        return []
    try:
        rows = read_offline_run(path)["history"]
    except (OSError, ValueError):
        return []
    return [{"step": row.get("_step"), **{k: v for k, v in row.items() if k != "_step"}} for row in rows]


def load_study(path: Path) -> Study:
    """A study folder from its summary.json; each trial's run folder is read as a run."""
    try:
        data = json.loads((path / "summary.json").read_text())
    except (OSError, ValueError) as err:
        raise _expected(path, f"summary.json unreadable ({err})") from None
    if not isinstance(data, dict):
        raise _expected(path, "summary.json holds no mapping")
    study = Study(
        name=str(data.get("study") or path.name),
        path=path,
        metric=str(data.get("metric") or "metric"),
        mode=str(data.get("mode") or "max"),
        storage=data.get("storage"),
        stages=[],
        table=[row for row in data.get("table") or [] if isinstance(row, dict)],
        best=data.get("best") if isinstance(data.get("best"), dict) else None,
    )
    for raw in data.get("stages") or []:
        if not isinstance(raw, dict):
            study.notes.append(
                f"summary.json: a stage that is not a mapping was skipped ({_short(str(raw), 40)})"
            )
            continue
        stage = Stage(
            name=str(raw.get("name") or f"stage{len(study.stages)}"),
            metric=str(raw.get("metric") or study.metric),
            mode=str(raw.get("mode") or study.mode),
            optuna_study=raw.get("optuna_study"),
            runs=[],
        )
        for trial in raw.get("trials") or []:
            if isinstance(trial, dict):
                stage.runs.append(_trial_run(path, stage, trial))
        study.stages.append(stage)
    if not study.stages:
        study.notes.append("summary.json lists no stages")
    return study


def _trial_run(study_path: Path, stage: Stage, trial: dict) -> Run:
    name = str(trial.get("trial") or "?")
    candidates = [Path(trial["run_dir"])] if trial.get("run_dir") else []
    candidates.append(study_path / stage.name / name)  # the study folder may have moved
    folder = next((c for c in candidates if _kind(c) == "run"), None)
    if trial.get("duplicate_of"):  # the sampler repeated an ended trial's settings: its run was reused
        run = Run(name, candidates[0], notes=[f"same settings as {trial['duplicate_of']}; its result reused"])
    elif folder is None:
        run = Run(name, candidates[0], notes=["run folder missing"], status="no metrics")
    else:
        run = load_run(folder, name)
    run.stage, run.parent = stage.name, trial.get("parent")
    run.params = dict(trial.get("params") or {})
    # a duplicate's value is its original's: counted once, in the plots and the per-bridge spread
    run.trial_metric = None if trial.get("duplicate_of") else _number(trial.get("metric"))
    run.stage_metric = stage.metric
    if trial.get("status"):
        run.status = str(trial["status"])
    if trial.get("steps") is not None and "steps" not in run.summary:
        run.summary = {**run.summary, "steps": trial["steps"]}
    return run


# --- plots -------------------------------------------------------------------------------------------------------


@dataclass
class Plot:
    file: str
    title: str
    caption: str


@dataclass
class Note:
    title: str
    text: str


def _figure(width: float = 6.4, height: float = 4.0):
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def _save(fig, out: Path, name: str) -> str:
    (out / "plots").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "plots" / name, format="png", metadata={"Software": None})
    return f"plots/{name}"


def _colors(n: int) -> list:
    from matplotlib import colormaps

    cmap = colormaps["tab10" if n <= 10 else "tab20"]
    return [cmap(i % cmap.N) for i in range(n)]


# the model library's bridge variants, each always drawn in the same colour
BRIDGE_ORDER = ("add", "scaled_add", "interpolate", "concat", "gated", "cross_attention", "none")


def _bridge_color(name: str):
    from matplotlib import colormaps

    if name == "unknown":
        return "0.55"
    tab = colormaps["tab10"]
    if name in BRIDGE_ORDER:
        return tab(BRIDGE_ORDER.index(name))
    return tab(7 + zlib.crc32(name.encode()) % 3)


def _bridges(runs: Iterable[Run]) -> list[str]:
    return sorted({r.bridge or "unknown" for r in runs})


def _fmt(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        return f"{value:.4g}"
    return str(value)


def _better(mode: str) -> str:
    return "lower is better" if mode == "min" else "higher is better"


def plot_curves(group: Group, out: Path) -> list[Plot | Note]:
    """One figure per metric (train/loss, then each val/ metric): every run's values against the step."""
    names = sorted({m for r in group.runs for m in r.metrics() if m == "train/loss" or m.startswith("val/")})
    names.sort(key=lambda m: (m != "train/loss", m))
    if not names:
        return [Note(f"{group.title}: learning curves", "no run of this group reported any metric")]
    by_bridge = len(group.runs) > MAX_LEGEND
    palette = _colors(len(group.runs))
    bridge_color = {b: _bridge_color(b) for b in _bridges(group.runs)}
    items: list[Plot | Note] = []
    for metric in names:
        fig = _figure()
        ax = fig.add_subplot()
        drawn, missing, odd = 0, [], []
        for i, run in enumerate(group.runs):
            steps, values = run.series(metric)
            if not steps:
                missing.append(run.name)
                continue
            if any(not math.isfinite(v) for v in values):
                odd.append(run.name)
            values = [v if math.isfinite(v) else math.nan for v in values]
            color = bridge_color[run.bridge or "unknown"] if by_bridge else palette[i]
            label = None if by_bridge else f"{run.name} ({run.bridge or '?'})"
            ax.plot(
                steps,
                values,
                color=color,
                label=label,
                lw=1.2 if by_bridge else 1.6,
                marker="o" if len(steps) <= 30 else None,
                ms=3.5,
                alpha=0.8 if by_bridge else 1.0,
            )
            drawn += 1
        if by_bridge:
            from matplotlib.lines import Line2D

            handles = [Line2D([], [], color=c, label=f"bridge {b}") for b, c in bridge_color.items()]
            ax.legend(handles=handles, fontsize=8)
        elif drawn:
            ax.legend(fontsize=8)
        ax.set_xlabel("step")
        ax.set_ylabel(metric)
        ax.set_title(f"{metric} · {group.title}", fontsize=10)
        ax.grid(alpha=0.3)
        caption = f"{metric} against the training step, {drawn} run(s)"
        if by_bridge:
            caption += ", coloured by bridge variant"
        if missing:
            caption += f"; not reported by: {', '.join(missing)}"
        if odd:
            caption += f"; NaN/inf values (gaps) in: {', '.join(odd)}"
        safe = metric.replace("/", "_")
        items.append(Plot(_save(fig, out, f"curve-{group.slug}-{safe}.png"), f"{metric}", caption + "."))
    return items


def _finals(group: Group, metric: str) -> list[tuple[Run, float | None]]:
    return [(r, r.final(metric)) for r in group.runs]


def plot_bridges(group: Group, out: Path) -> list[Plot | Note]:
    """Per compared metric: mean and min-max of the final value over the runs of each bridge variant."""
    if not group.metrics:
        return [Note(f"{group.title}: final metric per bridge", "no val/ metric to compare")]
    metrics = group.metrics[:MAX_AXES]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(max(6.4, 3.4 * cols), 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    variants = _bridges(group.runs)
    colors = {v: _bridge_color(v) for v in variants}
    notes = []
    for ax, metric in zip(axes, metrics):
        finals = _finals(group, metric)
        for x, variant in enumerate(variants):
            values = [v for r, v in finals if (r.bridge or "unknown") == variant and _finite(v)]
            absent = [r.name for r, v in finals if (r.bridge or "unknown") == variant and not _finite(v)]
            if absent:
                notes.append(f"{metric}, bridge {variant}: no value for {', '.join(absent)}")
            if not values:
                ax.text(x, 0, "no value", ha="center", va="bottom", fontsize=8, color="0.4", rotation=90)
                continue
            mean = sum(values) / len(values)
            ax.bar(x, mean, color=colors[variant], alpha=0.55, width=0.65)
            ax.errorbar(x, mean, yerr=[[mean - min(values)], [max(values) - mean]], color="0.15", capsize=5)
            jitter = [(i - (len(values) - 1) / 2) * 0.06 for i in range(len(values))]
            ax.scatter([x + j for j in jitter], values, color="0.1", s=14, zorder=3)
            ax.annotate(
                f"n={len(values)}",
                (x, max(values)),
                xytext=(0, 6),
                textcoords="offset points",
                ha="center",
                fontsize=8,
            )
        ax.set_xticks(range(len(variants)), variants, rotation=20 if len(variants) > 4 else 0)
        ax.set_title(f"{metric} ({_better(group.modes.get(metric, 'max'))})", fontsize=9)
        ax.set_xlabel("bridge")
        ax.margins(y=0.15)
        ax.grid(axis="y", alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"final metric per bridge variant · {group.title}", fontsize=10)
    caption = "Bars: mean over runs; whiskers: min–max; dots: each run."
    if notes:
        caption += " Missing: " + "; ".join(notes) + "."
    return [Plot(_save(fig, out, f"bridges-{group.slug}.png"), group.title, caption)]


def plot_lr(group: Group, out: Path) -> list[Plot | Note]:
    """Per compared metric: the final value against the learning rate (log x), coloured by bridge."""
    if not group.metrics:
        return [Note(f"{group.title}: metric vs learning rate", "no val/ metric to compare")]
    with_lr = [r for r in group.runs if _finite(r.lr) and r.lr > 0]
    if not with_lr:
        return [Note(f"{group.title}: metric vs learning rate", "no run has a train.lr")]
    metrics = group.metrics[:MAX_AXES]
    cols = min(3, len(metrics))
    rows = math.ceil(len(metrics) / cols)
    fig = _figure(max(6.4, 3.6 * cols), 3.6 * rows)
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    variants = _bridges(group.runs)
    colors = {v: _bridge_color(v) for v in variants}
    left_out = []
    for ax, metric in zip(axes, metrics):
        mode = group.modes.get(metric, "max")
        points = [(r, v) for r, v in _finals(group, metric) if r in with_lr and _finite(v)]
        left_out += [r.name for r, v in _finals(group, metric) if (r, v) not in points]
        for variant in variants:
            mine = [(r.lr, v) for r, v in points if (r.bridge or "unknown") == variant]
            if mine:
                ax.scatter(*zip(*mine), color=colors[variant], label=f"bridge {variant}", s=30, alpha=0.85)
        if points:
            best = (min if mode == "min" else max)(points, key=lambda p: p[1])
            ax.scatter(
                [best[0].lr],
                [best[1]],
                s=140,
                facecolors="none",
                edgecolors="crimson",
                lw=1.5,
                label=f"best: {best[0].name}",
            )
            ax.legend(fontsize=7)
        else:
            ax.text(0.5, 0.5, "no values", transform=ax.transAxes, ha="center", color="0.4")
        _log_x(ax, [r.lr for r in with_lr])
        ax.set_xlabel("train.lr")
        ax.set_title(f"{metric} ({_better(mode)})", fontsize=9)
        ax.grid(alpha=0.3)
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    fig.suptitle(f"final metric vs learning rate · {group.title}", fontsize=10)
    caption = "Each dot is one run (log-scale learning rate); the red ring marks the best."
    if left_out:
        caption += f" Without a learning rate or a finite value: {', '.join(sorted(set(left_out)))}."
    return [Plot(_save(fig, out, f"lr-{group.slug}.png"), group.title, caption)]


def _log_x(ax, values: list[float]) -> None:
    """A log x axis labelled at the values themselves when there are few (a sweep's grid), else per decade."""
    from matplotlib.ticker import NullFormatter, NullLocator

    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(NullFormatter())
    distinct = sorted(set(values))
    if len(distinct) <= 6:
        ax.xaxis.set_minor_locator(NullLocator())
        ax.set_xticks(
            distinct, [_fmt(v) for v in distinct], fontsize=8, rotation=30 if len(distinct) > 3 else 0
        )
        low, high = distinct[0], distinct[-1]
        pad = (high / low) ** 0.08 if high > low else 1.5
        ax.set_xlim(low / pad, high * pad)


def _axis(values: list[Any]) -> tuple[list[float | None], list[float], list[str], str]:
    """Normalise one parallel-coordinates axis to [0, 1]: numbers linearly (log for wide positive ranges),
    anything else as category indices. Returns positions, tick positions, tick labels and the scale."""
    numbers = [_number(v) for v in values]
    known = [v for v in values if v is not None]
    if known and all(_number(v) is not None and not isinstance(v, str) for v in known):
        finite = [n for n in numbers if _finite(n)]
        if not finite:
            return [None] * len(values), [], [], "linear"
        low, high = min(finite), max(finite)
        log = low > 0 and high / low >= 10
        f = math.log10 if log else (lambda x: x)
        span = f(high) - f(low)

        def pos(n: float | None) -> float | None:
            if not _finite(n):
                return None
            return 0.5 if span == 0 else (f(n) - f(low)) / span

        ticks = sorted({low, high, (10 ** ((f(low) + f(high)) / 2)) if log else (low + high) / 2})
        return (
            [pos(n) for n in numbers],
            [pos(t) for t in ticks],
            [_fmt(t) for t in ticks],
            "log" if log else "",
        )
    cats = sorted({str(v) for v in known})
    index = {c: i for i, c in enumerate(cats)}

    def where(v: Any) -> float | None:
        if v is None:
            return None
        return 0.5 if len(cats) == 1 else index[str(v)] / (len(cats) - 1)

    return [where(v) for v in values], [where(c) for c in cats], cats, "categories"


def _parallel(
    title: str,
    names: list[str],
    axes: list[str],
    columns: list[list[Any]],
    metric: str,
    mode: str,
    out: Path,
    file: str,
) -> Plot:
    from matplotlib import colormaps
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    fig = _figure(max(6.4, 1.5 * (len(axes) + 1) + 1.5), 4.4)
    ax = fig.add_subplot()
    scores = [_number(v) for v in columns[-1]]
    finite = [s for s in scores if _finite(s)]
    norm = Normalize(min(finite), max(finite)) if finite else Normalize(0, 1)
    if finite and norm.vmin == norm.vmax:
        norm = Normalize(norm.vmin - 0.5, norm.vmax + 0.5)
    cmap = colormaps["viridis" if mode != "min" else "viridis_r"]
    placed = [_axis(col) for col in columns]
    xs = list(range(len(axes)))
    order = sorted(range(len(names)), key=lambda i: scores[i] if _finite(scores[i]) else -math.inf)
    if mode == "min":
        order = sorted(range(len(names)), key=lambda i: -scores[i] if _finite(scores[i]) else -math.inf)
    for i in order:  # the best drawn last, on top
        ys = [p[0][i] for p in placed]
        good = _finite(scores[i])
        segs_x = [x for x, y in zip(xs, ys) if y is not None]
        segs_y = [y for y in ys if y is not None]
        ax.plot(
            segs_x,
            segs_y,
            color=cmap(norm(scores[i])) if good else "0.6",
            lw=2 if good else 1.2,
            ls="-" if good else "--",
            alpha=0.9,
            marker="o",
            ms=3,
        )
    for x, (_, ticks, labels, _scale) in zip(xs, placed):
        ax.axvline(x, color="0.25", lw=1)
        for t, label in zip(ticks, labels):
            if t is not None:
                ax.annotate(
                    label,
                    (x, t),
                    xytext=(4, 0),
                    textcoords="offset points",
                    va="center",
                    fontsize=7.5,
                    zorder=5,
                    bbox=dict(boxstyle="round,pad=0.2", fc="white", ec="0.8", lw=0.5, alpha=0.9),
                )
    ax.set_xticks(
        xs,
        [a + (" (log)" if p[3] == "log" else "") for a, p in zip(axes, placed)],
        fontsize=8,
        rotation=15 if len(axes) > 4 else 0,
    )
    ax.set_yticks([])
    ax.set_ylim(-0.06, 1.06)
    ax.set_xlim(-0.15, len(axes) - 0.6)
    for side in ("top", "right", "left"):
        ax.spines[side].set_visible(False)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, fraction=0.04, pad=0.02)
    bar.set_label(metric, fontsize=8)
    ax.set_title(f"search space · {title}", fontsize=10)
    missing = [n for n, s in zip(names, scores) if not _finite(s)]
    caption = (
        f"One line per run over {', '.join(axes[:-1])} and {metric}; numeric axes scaled to their range "
        f"(log where marked), categories evenly spaced; colour: {metric} ({_better(mode)}, the best is yellow)."
    )
    if missing:
        caption += f" Dashed grey: no {metric} ({', '.join(missing)})."
    return Plot(_save(fig, out, file), title, caption)


def plot_parallel(group: Group, out: Path) -> list[Plot | Note]:
    title = f"{group.title}: parallel coordinates"
    if not group.metrics:
        return [Note(title, "no val/ metric to colour the lines by")]
    if not group.params:
        return [Note(title, "all runs share the same settings: nothing varies")]
    if len(group.runs) < 2:
        return [Note(title, "needs at least 2 runs")]
    metric = group.metrics[0]
    axes = [*group.params, metric]
    columns = [[r.setting(k) for r in group.runs] for k in group.params]
    columns.append([r.final(metric) for r in group.runs])
    names = [r.name for r in group.runs]
    return [
        _parallel(
            group.title,
            names,
            axes,
            columns,
            metric,
            group.modes.get(metric, "max"),
            out,
            f"parallel-{group.slug}.png",
        )
    ]


def plot_study_table(study: Study, out: Path) -> list[Plot | Note]:
    """The study's table (each final trial with the settings of every stage on its lineage) as coordinates."""
    if len(study.stages) < 2 or len(study.table) < 2:
        return []
    keys = list(dict.fromkeys(k for row in study.table for k in row if k not in ("trial", study.metric)))
    if not keys:
        return []
    keys = keys[:MAX_AXES]
    columns = [[row.get(k) for row in study.table] for k in keys]
    columns.append([row.get(study.metric) for row in study.table])
    names = [str(row.get("trial", i)) for i, row in enumerate(study.table)]
    slug = "".join(c if c.isalnum() else "_" for c in study.name)[:60]
    title = f"{study.name} (all stages)"
    return [
        _parallel(
            title,
            names,
            [*keys, study.metric],
            columns,
            study.metric,
            study.mode,
            out,
            f"parallel-{slug}-table.png",
        )
    ]


def _storage_url(study: Study) -> tuple[str | None, str | None]:
    """The study's Optuna storage URL, or why there is none; a moved study folder still finds its sqlite file."""
    url = study.storage
    if not url:
        local = study.path / "optuna.db"
        return (
            (f"sqlite:///{local.resolve()}", None)
            if local.is_file()
            else (None, "summary.json names no storage")
        )
    if url.startswith("sqlite:///"):
        file = Path(url[len("sqlite:///") :])
        if not file.is_file():
            local = study.path / file.name
            if local.is_file():
                return f"sqlite:///{local.resolve()}", None
            return None, f"the storage file {file} does not exist"
    return url, None


def importances(study: Study, stage: Stage) -> tuple[dict[str, float] | None, str]:
    """Optuna's parameter importances of one stage: (importances, the evaluator) or (None, why not)."""
    url, why = _storage_url(study)
    if url is None:
        return None, why or "no storage"
    if not stage.optuna_study:
        return None, "summary.json names no optuna_study for this stage"
    import optuna
    from optuna.trial import TrialState

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        ostudy = optuna.load_study(study_name=stage.optuna_study, storage=url)
    except KeyError:
        return None, f"the storage has no Optuna study named {stage.optuna_study!r}"
    except Exception as err:
        return None, f"the storage could not be read ({type(err).__name__}: {err})"
    done = [t for t in ostudy.trials if t.state == TrialState.COMPLETE and t.value is not None]
    done = [t for t in done if math.isfinite(t.value)]
    searched = sorted({k for t in ostudy.trials for k in t.params})
    if len(searched) < 2:
        return (
            None,
            f"needs at least 2 searched parameters; this stage searched {', '.join(searched) or 'none'}",
        )
    if len(done) < MIN_IMPORTANCE_TRIALS:
        return None, (
            f"only {len(done)} completed trial(s) with a finite value; importances need at least "
            f"{MIN_IMPORTANCE_TRIALS}"
        )
    varying = [k for k in searched if len({json.dumps(t.params.get(k), default=str) for t in done}) > 1]
    if len(varying) < 2:
        return None, (
            "needs at least 2 parameters that vary among the completed trials; "
            + (f"only {varying[0]} does" if varying else "none does")
        )
    evaluator, name = _evaluator()
    try:
        values = optuna.importance.get_param_importances(ostudy, evaluator=evaluator, params=varying)
    except Exception as err:
        return None, f"Optuna could not compute them ({type(err).__name__}: {err})"
    return {k: float(v) for k, v in values.items()}, name


def _evaluator():
    """fANOVA (Optuna's default; needs scikit-learn) when available, else PED-ANOVA (numpy only)."""
    import importlib.util

    from optuna.importance import FanovaImportanceEvaluator, PedAnovaImportanceEvaluator

    if importlib.util.find_spec("sklearn") is not None:
        return FanovaImportanceEvaluator(seed=0), "fANOVA"
    return PedAnovaImportanceEvaluator(), "PED-ANOVA (scikit-learn is not installed, so no fANOVA)"


def plot_importances(group: Group, out: Path) -> list[Plot | Note]:
    title = f"{group.title}: parameter importance"
    if group.study is None or group.stage is None:
        return [
            Note(title, "parameter importances come from an Optuna study: pass a study folder (btp tune)")
        ]
    values, how = importances(group.study, group.stage)
    if values is None:
        return [Note(title, f"not computed: {how}.")]
    fig = _figure(6.4, 0.6 * len(values) + 1.6)
    ax = fig.add_subplot()
    names = list(values)[::-1]
    ax.barh(names, [values[n] for n in names], color="#4c72b0")
    for y, n in enumerate(names):
        ax.annotate(
            f"{values[n]:.2f}",
            (values[n], y),
            xytext=(4, 0),
            textcoords="offset points",
            va="center",
            fontsize=8,
        )
    ax.set_xlim(0, max(1.0, max(values.values()) * 1.15))
    ax.set_xlabel(f"importance for {group.stage.metric}")
    ax.set_title(f"parameter importance · {group.title}", fontsize=10)
    caption = (
        f"optuna.importance.get_param_importances on the Optuna study {group.stage.optuna_study!r} "
        f"({how}); the importances sum to 1."
    )
    return [Plot(_save(fig, out, f"importance-{group.slug}.png"), group.title, caption)]


# --- tables ------------------------------------------------------------------------------------------------------


def _run_table(runs: list[Run], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    head = ["run", "task", "bridge", "lr", "steps", "status", *metrics]
    rows = [
        [r.name, r.task or "—", r.bridge or "—", _fmt(r.lr), _fmt(r.steps), r.status]
        + [_fmt(r.final(m)) for m in metrics]
        for r in runs
    ]
    return head, rows


def _trial_table(stage: Stage) -> tuple[list[str], list[list[str]]]:
    params = list(dict.fromkeys(k for r in stage.runs for k in r.params))
    head = ["trial", "status", "parent", *params, stage.metric, "steps"]
    rows = [
        [
            r.name,
            r.status,
            r.parent or "—",
            *[_fmt(r.params.get(k)) for k in params],
            _fmt(r.final(stage.metric)),
            _fmt(r.steps),
        ]
        for r in stage.runs
    ]
    return head, rows


def _study_table(study: Study) -> tuple[list[str], list[list[str]]]:
    keys = list(dict.fromkeys(k for row in study.table for k in row if k not in ("trial", study.metric)))
    head = ["trial", *keys, study.metric]
    rows = [
        [_fmt(row.get("trial")), *[_fmt(row.get(k)) for k in keys], _fmt(row.get(study.metric))]
        for row in study.table
    ]
    return head, rows


def _best_text(study: Study) -> str:
    best = study.best
    if not best:
        return "none recorded in summary.json (no trial reported the metric yet)"
    params = ", ".join(f"{k}={_fmt(v)}" for k, v in (best.get("params") or {}).items())
    return (
        f"{best.get('trial')} (stage {best.get('stage')}): {study.metric} = {_fmt(_number(best.get('metric')))}"
        + (f" with {params}" if params else "")
    )


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _html_table(head: list[str], rows: list[list[str]], wrap: bool = False) -> str:
    """A table whose numeric columns (every known cell a number) are right-aligned, headings included."""
    numeric = [
        any(_number(row[i]) is not None for row in rows)
        and all(_number(row[i]) is not None or row[i] in _MISSING for row in rows)
        for i in range(len(head))
    ]
    th = "".join(f'<th class="{"num" if n else ""}">{html.escape(h)}</th>' for h, n in zip(head, numeric))
    body = "".join(
        "<tr>"
        + "".join(f'<td class="{_cls(c, n)}">{html.escape(c)}</td>' for c, n in zip(row, numeric))
        + "</tr>"
        for row in rows
    )
    table = '<table class="wrap">' if wrap else "<table>"
    return f'<div class="scroll">{table}<thead><tr>{th}</tr></thead><tbody>{body}</tbody></table></div>'


_MISSING = ("—", "NaN")
_BAD = ("NaN", "no metrics", "unfinished", "ERROR", "FAILED")


def _cls(text: str, numeric: bool) -> str:
    names = ["num"] if numeric else []
    if text in _BAD:
        names.append("missing")
    elif text == "—":
        names.append("none")
    return " ".join(names)


def _panel_counts(panels: list[dict]) -> str:
    counts: dict[str, int] = {}
    for p in panels:
        counts[p["type"]] = counts.get(p["type"], 0) + 1
    return ", ".join(f"{n} × {kind}" if n > 1 else kind for kind, n in counts.items())


def _short(text: str, limit: int = 90) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _loose_metrics(comp: Comparison) -> list[str]:
    return sorted(
        {k for r in comp.runs for k in r.summary if k.startswith("val/")},
        key=lambda m: (m.endswith("loss"), m),
    )


def _title(comp: Comparison) -> str:
    parts = []
    for study in comp.studies:
        trials = sum(len(s.runs) for s in study.stages)
        parts.append(f"study {study.name} ({' → '.join(s.name for s in study.stages)}; {trials} trials)")
    if comp.runs:
        names = [r.name for r in comp.runs]
        shown = ", ".join(names[:6]) + (f" and {len(names) - 6} more" if len(names) > 6 else "")
        parts.append(f"{len(names)} run{'s' if len(names) != 1 else ''}: {shown}")
    return "Comparison of " + "; ".join(parts)


def summary_markdown(comp: Comparison) -> str:
    """summary.md: the runs table, and per study its table, best trial and trials per stage."""
    lines = [f"# {_title(comp)}", ""]
    if comp.runs:
        lines += ["## Runs", "", _md_table(*_run_table(comp.runs, _loose_metrics(comp))), ""]
        notes = [f"- {r.name}: {n}" for r in comp.runs for n in r.notes]
        lines += ["Notes:", "", *notes, ""] if notes else []
    for study in comp.studies:
        lines += [f"## Study {study.name}", "", f"Metric: {study.metric} ({_better(study.mode)}).", ""]
        lines += [f"Best: {_best_text(study)}", ""]
        if study.table:
            lines += ["### Table", "", _md_table(*_study_table(study)), ""]
        for stage in study.stages:
            lines += [f"### Stage {stage.name} ({stage.metric}, {_better(stage.mode)})", ""]
            lines += [_md_table(*_trial_table(stage)), ""]
        notes = [f"- {n}" for n in study.notes] + [
            f"- {r.name}: {n}" for s in study.stages for r in s.runs for n in r.notes
        ]
        lines += ["Notes:", "", *notes, ""] if notes else []
    return "\n".join(lines)


# --- the page ----------------------------------------------------------------------------------------------------

_CSS = """
:root { --fg: #1d2330; --muted: #5b6475; --line: #d9dee7; --bg: #f6f7f9; --accent: #3465a4; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); }
header { background: #fff; border-bottom: 1px solid var(--line); padding: 20px 32px; }
header h1 { margin: 0 0 6px; font-size: 22px; }
header p { margin: 2px 0; color: var(--muted); font-size: 13px; }
nav { margin-top: 10px; display: flex; flex-wrap: wrap; gap: 6px 14px; font-size: 13px; }
nav a { color: var(--accent); text-decoration: none; }
main { padding: 8px 32px 40px; max-width: 1500px; margin: 0 auto; }
section { margin-top: 26px; }
h2 { font-size: 18px; border-bottom: 2px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 15px; margin: 18px 0 8px; color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(440px, 1fr)); gap: 16px; }
figure { margin: 0; background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px; }
figure img { width: 100%; height: auto; display: block; }
figcaption { font-size: 12.5px; color: var(--muted); margin-top: 6px; }
figcaption b { color: var(--fg); }
.note { background: #fff8e6; border: 1px solid #f0d9a0; border-radius: 8px; padding: 8px 12px; font-size: 13px;
        margin: 8px 0; }
.scroll { overflow-x: auto; background: #fff; border: 1px solid var(--line); border-radius: 8px; }
table { border-collapse: collapse; font-size: 13px; width: 100%; }
th, td { padding: 5px 10px; border-bottom: 1px solid var(--line); text-align: left; white-space: nowrap; }
th { background: #eef1f5; position: sticky; top: 0; }
table.wrap td { white-space: normal; }
th.num, td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.missing { color: #b04a3a; font-weight: 600; }
td.none { color: #9aa2b1; }
.best { background: #eaf5ea; border: 1px solid #b9dcb9; border-radius: 8px; padding: 8px 12px; margin: 8px 0; }
ul.notes { font-size: 13px; color: var(--muted); }
"""

SECTIONS = [
    ("overview", "Overview"),
    ("curves", "Learning curves"),
    ("bridges", "Final metric per bridge variant"),
    ("lr", "Metric vs learning rate"),
    ("parallel", "Search space (parallel coordinates)"),
    ("importance", "Parameter importance"),
    ("wandb", "W&B report"),
]


def _items_html(items: list[Plot | Note]) -> str:
    figures = [i for i in items if isinstance(i, Plot)]
    notes = [i for i in items if isinstance(i, Note)]
    parts = [f'<div class="note"><b>{html.escape(n.title)}</b>: {html.escape(n.text)}</div>' for n in notes]
    if figures:
        parts.append('<div class="grid">')
        for f in figures:
            parts.append(
                f'<figure><img src="{html.escape(f.file)}" alt="{html.escape(f.title)}" loading="lazy">'
                f"<figcaption><b>{html.escape(f.title)}.</b> {html.escape(f.caption)}</figcaption></figure>"
            )
        parts.append("</div>")
    return "\n".join(parts)


def _overview_html(comp: Comparison) -> str:
    parts = []
    if comp.runs:
        parts.append("<h3>Runs</h3>" + _html_table(*_run_table(comp.runs, _loose_metrics(comp))))
        notes = [f"{r.name}: {n}" for r in comp.runs for n in r.notes]
        if notes:
            parts.append(
                '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
            )
    for study in comp.studies:
        parts.append(
            f"<h3>Study {html.escape(study.name)} · {html.escape(study.metric)} ({_better(study.mode)})</h3>"
            f'<div class="best"><b>Best:</b> {html.escape(_best_text(study))}</div>'
        )
        if study.table:
            parts.append(_html_table(*_study_table(study)))
        for stage in study.stages:
            parts.append(
                f"<h3>Stage {html.escape(stage.name)} · trials</h3>" + _html_table(*_trial_table(stage))
            )
        notes = study.notes + [f"{r.name}: {n}" for s in study.stages for r in s.runs for n in r.notes]
        if notes:
            parts.append(
                '<ul class="notes">' + "".join(f"<li>{html.escape(n)}</li>" for n in notes) + "</ul>"
            )
    return "\n".join(parts)


def build(comp: Comparison, out: Path, wandb_note: str = "") -> Path:
    """Write OUT/report.html, OUT/plots/*.png, OUT/summary.md and OUT/wandb_report.json; returns the HTML path."""
    out.mkdir(parents=True, exist_ok=True)
    groups = comp.groups()
    body: dict[str, list[str]] = {key: [] for key, _ in SECTIONS}
    body["overview"].append(_overview_html(comp))
    found: dict[str, list[Plot | Note]] = {key: [] for key, _ in SECTIONS}
    for group in groups:
        # each group's curves under its own heading; one grid per section for the other plots
        body["curves"].append(f"<h3>{html.escape(group.title)}</h3>" + _items_html(plot_curves(group, out)))
        found["bridges"] += plot_bridges(group, out)
        found["lr"] += plot_lr(group, out)
        found["parallel"] += plot_parallel(group, out)
        if group.study is not None or not comp.studies:  # next to a study, loose runs need no note about it
            found["importance"] += plot_importances(group, out)
    for study in comp.studies:
        found["parallel"] += plot_study_table(study, out)
    for key, items in found.items():
        body[key].append(_items_html(items))
    if not groups:
        body["curves"].append('<div class="note">nothing to plot</div>')
    spec = wandb_report_spec(comp)
    (out / "wandb_report.json").write_text(json.dumps(spec, indent=2, default=str) + "\n")
    body["wandb"].append(f"<p>{html.escape(wandb_note)}</p>" if wandb_note else "")
    body["wandb"].append(
        '<p>Its panels and run filters (also in <a href="wandb_report.json">wandb_report.json</a>):</p>'
        + _html_table(
            ["section", "runs", "panels"],
            [
                [
                    b["title"],
                    _short(b["runset"]["expression"] or "all"),
                    _panel_counts(b["panels"]),
                ]
                for b in spec["blocks"]
            ],
            wrap=True,
        )
    )
    (out / "summary.md").write_text(summary_markdown(comp))
    sources = "".join(f"<p>{html.escape(str(p))}</p>" for p in comp.paths)
    nav = "".join(f'<a href="#{key}">{html.escape(name)}</a>' for key, name in SECTIONS)
    sections = "\n".join(
        f'<section id="{key}"><h2>{html.escape(name)}</h2>\n{"".join(body[key])}</section>'
        for key, name in SECTIONS
    )
    when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    page = f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(_title(comp))}</title>
<style>{_CSS}</style>
</head>
<body>
<header>
<h1>{html.escape(_title(comp))}</h1>
{sources}
<p>btp report, {when} · tables also in <a href="summary.md">summary.md</a></p>
<nav>{nav}</nav>
</header>
<main>
{sections}
</main>
</body>
</html>
"""
    path = out / "report.html"
    path.write_text(page)
    return path


# --- the W&B report ----------------------------------------------------------------------------------------------


def _common(values: Iterable[Any], default: Any) -> Any:
    values = [v for v in values if v]
    return max(set(values), key=values.count) if values else default


def wandb_report_spec(comp: Comparison, entity: str | None = None) -> dict:
    """The W&B Report of a comparison as plain data: per group a runset (filters on the wandb group and run ids)
    and its panels (line plots per metric, bar per bridge, scatter vs lr, parallel coordinates, importance)."""
    runs = [*comp.runs, *(r for s in comp.studies for st in s.stages for r in st.runs)]
    project = _common((_get(r.config, "track.project") for r in runs), "bridgetower")
    entity = entity or _common((_get(r.config, "track.entity") for r in runs), None)
    blocks = []
    for group in comp.groups():
        ids = [r.wandb_id for r in group.runs if r.wandb_id]
        wgroup = _common((_get(r.config, "track.group") for r in group.runs), None)
        if group.study is not None:
            wgroup = wgroup or group.study.name
        filters = {"group": wgroup, "ids": ids}
        expression = " and ".join(
            ([f"Group = {json.dumps(wgroup)}"] if wgroup else [])
            + ([f"ID in {json.dumps(ids)}"] if ids else [])
        )
        curves = sorted(
            {m for r in group.runs for m in r.metrics() if m == "train/loss" or m.startswith("val/")}
        )
        curves.sort(key=lambda m: (m != "train/loss", m))
        panels: list[dict] = [{"type": "LinePlot", "title": m, "x": "Step", "y": [m]} for m in curves]
        for metric in group.metrics[:MAX_AXES]:
            panels.append(
                {
                    "type": "BarPlot",
                    "title": f"{metric} per bridge",
                    "metrics": [metric],
                    "groupby": "model.bridge",
                    "aggfunc": "mean",
                    "rangefunc": "minmax",
                }
            )
            panels.append(
                {
                    "type": "ScatterPlot",
                    "title": f"{metric} vs learning rate",
                    "x": "config:train.lr",
                    "y": f"summary:{metric}",
                    "log_x": True,
                }
            )
        if group.metrics:
            metric = group.metrics[0]
            columns = [f"config:{k}" for k in group.params] + [f"summary:{metric}"]
            panels.append({"type": "ParallelCoordinatesPlot", "title": "search space", "columns": columns})
            panels.append(
                {"type": "ParameterImportancePlot", "title": "parameter importance", "metric": metric}
            )
        runset = {"name": group.title, "project": project, "entity": entity, "filters": filters}
        blocks.append(
            {"title": group.title, "runset": {**runset, "expression": expression}, "panels": panels}
        )
    return {"title": _title(comp)[:128], "project": project, "entity": entity, "blocks": blocks}


def _metric(text: str, wr: Any) -> Any:
    section, _, name = text.partition(":")
    return wr.Config(name) if section == "config" else wr.SummaryMetric(name)


def build_wandb_report(spec: dict | Comparison, entity: str | None = None) -> Any:
    """The wandb_workspaces Report (`wr.Report`) of a spec (or a Comparison); needs the wandb-workspaces package.

    An entity of None stays empty offline; `publish_wandb_report` fills in the logged-in user's."""
    import wandb_workspaces.reports.v2 as wr

    if isinstance(spec, Comparison):
        spec = wandb_report_spec(spec, entity)
    entity = entity or spec.get("entity") or ""
    blocks: list[Any] = [wr.P(text="Built by btp report from the runs' wandb logs.")]
    for block in spec["blocks"]:
        panels = []
        for p in block["panels"]:
            if p["type"] == "LinePlot":
                panels.append(wr.LinePlot(title=p["title"], x=p["x"], y=p["y"]))
            elif p["type"] == "BarPlot":
                panels.append(
                    wr.BarPlot(
                        title=p["title"],
                        metrics=p["metrics"],
                        groupby=wr.Config(p["groupby"]),
                        groupby_aggfunc=p["aggfunc"],
                        groupby_rangefunc=p["rangefunc"],
                    )
                )
            elif p["type"] == "ScatterPlot":
                panels.append(
                    wr.ScatterPlot(
                        title=p["title"], x=_metric(p["x"], wr), y=_metric(p["y"], wr), log_x=p["log_x"]
                    )
                )
            elif p["type"] == "ParallelCoordinatesPlot":
                columns = [wr.ParallelCoordinatesPlotColumn(metric=_metric(c, wr)) for c in p["columns"]]
                panels.append(wr.ParallelCoordinatesPlot(title=p["title"], columns=columns))
            elif p["type"] == "ParameterImportancePlot":
                panels.append(wr.ParameterImportancePlot(with_respect_to=p["metric"]))
        rs = block["runset"]
        runset = wr.Runset(
            project=rs["project"], entity=entity, name=rs["name"][:100], filters=rs["expression"]
        )
        blocks += [wr.H2(text=block["title"]), wr.PanelGrid(runsets=[runset], panels=panels)]
    return wr.Report(project=spec["project"], entity=entity, title=spec["title"], blocks=blocks)


def publish_wandb_report(comp: Comparison) -> str:
    """Save the W&B Report when online; returns one line saying what happened (with the URL when saved)."""
    from btp.track import resolve_mode

    try:
        online = resolve_mode("offline") == "online"
    except ValueError as err:
        return f"W&B report not published: {err}"
    try:
        import wandb_workspaces.reports.v2  # noqa: F401
    except ImportError:
        return (
            "W&B report not built: the wandb-workspaces package is missing "
            "(pip install wandb-workspaces); the local report above is complete."
        )
    if not online:
        return (
            "W&B report not published: offline (set WANDB_API_KEY to publish it; first upload the runs with "
            "wandb sync RUN/wandb/offline-run-*). Its spec is built offline with the same panels."
        )
    try:
        report = build_wandb_report(comp, os.environ.get("WANDB_ENTITY"))
        if not report.entity:
            import wandb

            report.entity = wandb.Api().default_entity or ""
        report.save()
        return f"W&B report: {report.url}"
    except Exception as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        return f"W&B report not published ({type(err).__name__}: {first}); the local report is complete."


# --- command line ------------------------------------------------------------------------------------------------


def default_out(paths: Sequence[str | Path]) -> Path:
    """One PATH: PATH/report; several: ./report."""
    return Path(paths[0]) / "report" if len(paths) == 1 else Path("report")


def main_report(args: argparse.Namespace) -> int:
    try:
        comp = load(args.paths)
    except ReportError as err:
        print(f"btp report: {err}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else default_out(args.paths)
    if out.exists() and not out.is_dir():
        print(
            f"btp report: --out {out} is a file, not a folder; choose a folder for the report",
            file=sys.stderr,
        )
        return 2
    note = (
        "W&B report not published (--no-wandb)."
        if getattr(args, "no_wandb", False)
        else publish_wandb_report(comp)
    )
    page = build(comp, out, note)
    runs = len(comp.runs) + sum(len(s.runs) for st in comp.studies for s in st.stages)
    print(f"btp report: {page} ({runs} runs, {len(comp.studies)} studies); tables: {out / 'summary.md'}")
    print(f"  {note}")
    notes = (
        [f"{r.name}: {n}" for r in comp.runs for n in r.notes]
        + [f"{st.name}: {n}" for st in comp.studies for n in st.notes]
        + [f"{r.name}: {n}" for st in comp.studies for s in st.stages for r in s.runs for n in r.notes]
    )
    if notes:  # what could not be read is on the console too, not only in the report
        print(f"  {len(notes)} note(s) on what was read (also in summary.md):", file=sys.stderr)
        for text in notes[:10]:
            print(f"    {text}", file=sys.stderr)
        if len(notes) > 10:
            print(f"    ... and {len(notes) - 10} more in {out / 'summary.md'}", file=sys.stderr)
    return 0
