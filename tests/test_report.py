"""btp report: run and study folders built here (with a real Optuna sqlite study) into an HTML page with plots."""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from btp.cli import main
from btp.config import ExperimentConfig, save_resolved
from btp.report import build_wandb_report, importances, load, wandb_report_spec

PNG = b"\x89PNG\r\n\x1a\n"


def make_run(
    folder: Path,
    name: str,
    *,
    task="vqa",
    bridge="add",
    lr=1e-4,
    steps=30,
    score=0.5,
    group=None,
    metrics=True,
    summary=True,
    nan=False,
) -> Path:
    """A run folder as `btp train` writes it: config.yaml, metrics.jsonl, summary.json."""
    cfg = ExperimentConfig()
    cfg.data.task, cfg.data.train = task, ["x_train_*.arrow"]
    cfg.model.bridge, cfg.train.name, cfg.train.lr = bridge, name, lr
    cfg.track.group = group
    folder.mkdir(parents=True)
    save_resolved(cfg, folder / "config.yaml")
    key = "val/vqa_score" if task == "vqa" else "val/itm_accuracy"
    final = {"val/loss": 2.0 - score, key: math.nan if nan else score}
    if metrics:
        rows = []
        for step in range(10, steps + 1, 10):
            rows.append(
                {"step": step, "train/loss": 3.0 - step * score / steps, "lr": lr, "samples_per_s": 20.0}
            )
            rows.append({"step": step, "val/loss": 2.5 - step * score / steps, key: score * step / steps})
        rows[-1] = {"step": steps, **final}
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    if summary:
        (folder / "summary.json").write_text(json.dumps({"steps": steps, **final}))
    return folder


PRETRAIN = [  # (bridge, lr): the metric favours gated and lr near 3e-4
    ("add", 1e-5),
    ("gated", 3e-4),
    ("add", 3e-4),
    ("gated", 1e-5),
    ("gated", 1e-3),
    ("add", 1e-3),
]


def pretrain_score(bridge: str, lr: float) -> float:
    return round(0.55 + 0.2 * (bridge == "gated") - 0.08 * abs(math.log10(lr) + 3.5), 4)


def make_study(folder: Path, name: str = "bridges") -> Path:
    """A two-stage study folder (pretrain: 6 trials + 1 crashed over bridge and lr; vqa: 2 trials over lr) with
    its summary.json and an Optuna sqlite storage holding both stages."""
    import optuna
    from optuna.distributions import CategoricalDistribution, FloatDistribution
    from optuna.trial import TrialState, create_trial

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    folder.mkdir(parents=True)
    storage = f"sqlite:///{(folder / 'optuna.db').resolve()}"
    space = {
        "model.bridge": CategoricalDistribution(["add", "gated"]),
        "train.lr": FloatDistribution(1e-5, 1e-3, log=True),
    }
    pre = optuna.create_study(study_name=f"{name}.pretrain", storage=storage, direction="maximize")
    trials = []
    for i, (bridge, lr) in enumerate(PRETRAIN):
        trial = f"pretrain_{i:03d}"
        score = pretrain_score(bridge, lr)
        run = make_run(
            folder / "pretrain" / trial, trial, task="pretrain", bridge=bridge, lr=lr, score=score, group=name
        )
        pre.add_trial(
            create_trial(params={"model.bridge": bridge, "train.lr": lr}, distributions=space, value=score)
        )
        trials.append(
            {
                "trial": trial,
                "run_dir": str(run.resolve()),
                "params": {"model.bridge": bridge, "train.lr": lr},
                "parent": None,
                "status": "TERMINATED",
                "metric": score,
                "steps": 30,
            }
        )
    # a crashed trial: no summary, metrics cut short, no metric in the study
    crashed = make_run(
        folder / "pretrain" / "pretrain_006",
        "pretrain_006",
        task="pretrain",
        bridge="add",
        lr=5e-5,
        steps=10,
        group=name,
        summary=False,
    )
    pre.add_trial(
        create_trial(
            params={"model.bridge": "add", "train.lr": 5e-5}, distributions=space, state=TrialState.FAIL
        )
    )
    trials.append(
        {
            "trial": "pretrain_006",
            "run_dir": str(crashed.resolve()),
            "params": {"model.bridge": "add", "train.lr": 5e-5},
            "parent": None,
            "status": "ERROR",
            "metric": None,
            "steps": 10,
        }
    )
    vqa = optuna.create_study(study_name=f"{name}.vqa", storage=storage, direction="maximize")
    vqa_trials, table = [], []
    for i, lr in enumerate([1e-4, 3e-5]):
        trial, score = f"vqa_{i:03d}", 0.6 + 0.1 * i
        # the study records its own value (e.g. the best report); the run's summary.json has the last one
        run = make_run(
            folder / "vqa" / trial, trial, task="vqa", bridge="gated", lr=lr, score=score - 0.05, group=name
        )
        vqa.add_trial(
            create_trial(params={"train.lr": lr}, distributions={"train.lr": space["train.lr"]}, value=score)
        )
        vqa_trials.append(
            {
                "trial": trial,
                "run_dir": str(run.resolve()),
                "params": {"train.lr": lr},
                "parent": "pretrain_001",
                "status": "TERMINATED",
                "metric": score,
                "steps": 30,
            }
        )
        table.append(
            {
                "model.bridge": "gated",
                "pretrain.train.lr": 3e-4,
                "vqa.train.lr": lr,
                "val/vqa_score": score,
                "trial": trial,
            }
        )
    # TPE suggested vqa_000's settings again: that trial replayed vqa_000's run and trained nothing
    vqa_trials.append(
        {
            "trial": "vqa_002",
            "run_dir": str((folder / "vqa" / "vqa_002").resolve()),
            "params": {"train.lr": 1e-4},
            "parent": "pretrain_001",
            "duplicate_of": "vqa_000",
            "status": "DUPLICATE",
            "metric": 0.6,
            "steps": 0,
        }
    )
    summary = {
        "study": name,
        "metric": "val/vqa_score",
        "mode": "max",
        "storage": storage,
        "stages": [
            {
                "name": "pretrain",
                "metric": "val/itm_accuracy",
                "mode": "max",
                "optuna_study": f"{name}.pretrain",
                "trials": trials,
            },
            {
                "name": "vqa",
                "metric": "val/vqa_score",
                "mode": "max",
                "optuna_study": f"{name}.vqa",
                "trials": vqa_trials,
            },
        ],
        "table": table,
        "best": {
            "stage": "vqa",
            "trial": "vqa_001",
            "params": {"train.lr": 3e-5},
            "metric": 0.7,
            "run_dir": vqa_trials[1]["run_dir"],
        },
    }
    (folder / "summary.json").write_text(json.dumps(summary, indent=2))
    return folder


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two loose runs and a study, reported once for the module (offline: no key)."""
    root = tmp_path_factory.mktemp("report")
    runs = [
        make_run(root / "runs" / "vqa-add", "vqa-add", bridge="add", lr=1e-4, score=0.55),
        make_run(root / "runs" / "vqa-gated", "vqa-gated", bridge="gated", lr=3e-4, score=0.62),
    ]
    study = make_study(root / "study")
    out = root / "out"
    with pytest.MonkeyPatch.context() as mp:
        for var in ("WANDB_API_KEY", "WANDB_MODE"):
            mp.delenv(var, raising=False)
        code = main(["report", *map(str, runs), str(study), "--out", str(out)])
    return {"root": root, "runs": runs, "study": study, "out": out, "code": code}


def images(page: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', page)


def section(page: str, key: str) -> str:
    match = re.search(rf'<section id="{key}">(.*?)</section>', page, re.S)
    assert match, f"no section {key}"
    return match.group(1)


def test_the_report_has_every_section_and_valid_plots(built, capsys):
    assert built["code"] == 0
    page = (built["out"] / "report.html").read_text()
    assert "Comparison of study bridges (pretrain → vqa; 10 trials); 2 runs: vqa-add, vqa-gated" in page
    for key in ("overview", "curves", "bridges", "lr", "parallel", "importance", "wandb"):
        assert section(page, key).strip()
    assert "<script" not in page and "http" not in page.replace('href="#', "")  # nothing from the network
    srcs = images(page)
    assert len(srcs) == len(set(srcs)) >= 15
    for src in srcs:
        file = built["out"] / src
        data = file.read_bytes()
        assert data[:8] == PNG and len(data) > 8000, src
        with Image.open(file) as im:
            im.verify()
        with Image.open(file) as im:
            gray = im.convert("L")
            assert gray.size[0] >= 500 and gray.size[1] >= 300
            assert gray.getextrema()[0] < 100, f"{src} is blank"  # dark ink: axes, text, lines
            assert len(gray.getcolors(1 << 16)) > 20, f"{src} has almost no content"
            if "/curve-" in src:  # the runs' coloured lines, not only axes and text
                hsv = np.asarray(im.convert("RGB").convert("HSV"))  # Image.getdata leaves Pillow in 14
                colourful = int(((hsv[..., 1] > 120) & (hsv[..., 2] > 80)).sum())
                assert colourful > 400, f"{src} has no coloured lines"
    curves = images(section(page, "curves"))
    assert (
        "plots/curve-runs-vqa-train_loss.png" in curves and "plots/curve-runs-vqa-val_vqa_score.png" in curves
    )
    assert "plots/curve-bridges-pretrain-val_itm_accuracy.png" in curves
    assert "plots/curve-bridges-vqa-val_vqa_score.png" in curves
    assert images(section(page, "bridges")) == [
        "plots/bridges-bridges-pretrain.png",
        "plots/bridges-bridges-vqa.png",
        "plots/bridges-runs-vqa.png",
    ]
    assert len(images(section(page, "lr"))) == 3
    assert "plots/parallel-bridges-table.png" in images(section(page, "parallel"))
    out = capsys.readouterr().out
    assert out == "" or "report.html" in out  # printed while the fixture ran


def test_importance_is_plotted_where_it_can_be_and_explained_where_not(built):
    page = (built["out"] / "report.html").read_text()
    imp = section(page, "importance")
    assert images(imp) == ["plots/importance-bridges-pretrain.png"]
    assert (
        "bridges · vqa" in imp and "needs at least 2 searched parameters; this stage searched train.lr" in imp
    )
    assert "get_param_importances" in imp
    study = load([built["study"]]).studies[0]
    values, how = importances(study, study.stages[0])
    assert set(values) == {"model.bridge", "train.lr"} and abs(sum(values.values()) - 1) < 1e-6, how
    values, why = importances(study, study.stages[1])
    assert values is None and "train.lr" in why


def test_summary_tables_match_the_inputs(built):
    md = (built["out"] / "summary.md").read_text()
    rows = {
        line.split("|")[1].strip(): [c.strip() for c in line.split("|")[1:-1]]
        for line in md.splitlines()
        if line.startswith("| ")
    }
    head = rows["run"]
    assert head[:6] == ["run", "task", "bridge", "lr", "steps", "status"]
    assert rows["vqa-add"][:6] == ["vqa-add", "vqa", "add", "0.0001", "30", "finished"]
    assert rows["vqa-gated"][head.index("val/vqa_score")] == "0.62"
    assert rows["vqa-gated"][head.index("val/loss")] == "1.38"
    for i, (bridge, lr) in enumerate(PRETRAIN):
        row = rows[f"pretrain_{i:03d}"]
        assert row[1:5] == ["TERMINATED", "—", bridge, f"{lr:.4g}"]
        assert row[5] == f"{pretrain_score(bridge, lr):.4g}" and row[6] == "30"
    assert rows["pretrain_006"][1] == "ERROR" and rows["pretrain_006"][5] == "—"
    assert rows["vqa_001"] == ["vqa_001", "TERMINATED", "pretrain_001", "3e-05", "0.7", "30"]
    assert "Best: vqa_001 (stage vqa): val/vqa_score = 0.7 with train.lr=3e-05" in md
    assert "pretrain_006: no summary.json: the run did not finish" in md
    # a repeat is listed, but its value (its original's) is not counted twice
    assert rows["vqa_002"] == ["vqa_002", "DUPLICATE", "pretrain_001", "0.0001", "—", "0"]
    assert "vqa_002: same settings as vqa_000; its result reused" in md
    table = [line for line in md.splitlines() if line.startswith("| trial | model.bridge")]
    assert table == ["| trial | model.bridge | pretrain.train.lr | vqa.train.lr | val/vqa_score |"]


def test_a_folder_of_runs_with_missing_data_is_reported_not_a_traceback(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    runs = tmp_path / "runs"
    make_run(runs / "good", "good", bridge="add", score=0.5)
    make_run(runs / "nan", "nan", bridge="gated", nan=True)
    make_run(runs / "empty", "empty", bridge="gated", metrics=False, summary=False)
    make_run(runs / "partial", "partial", bridge="add", score=0.4, summary=False)
    (runs / "not-a-run").mkdir()
    with open(runs / "good" / "metrics.jsonl", "a") as f:
        f.write('{"step": 40, "train/lo')  # a line cut by a crash
    with open(runs / "partial" / "metrics.jsonl", "a") as f:
        f.write('{"step": 30, "val/vqa_score": 0.45}\n')  # step 30 again after a resume: this one counts
    assert main(["report", str(runs)]) == 0
    out = runs / "report"
    printed = capsys.readouterr()
    assert f"{out / 'report.html'}" in printed.out
    assert (
        "note(s) on what was read" in printed.err
        and "good: metrics.jsonl: 1 unreadable line(s) skipped" in printed.err
    )
    page = (out / "report.html").read_text()
    assert "4 runs: empty, good, nan, partial" in page
    assert "empty: no metrics.jsonl" in page and "metrics.jsonl: 1 unreadable line(s) skipped" in page
    assert '<td class="num missing">NaN</td>' in page and '<td class="missing">no metrics</td>' in page
    assert "not reported by: empty" in page
    assert "pass a study folder" in section(page, "importance")
    for src in images(page):
        assert (out / src).read_bytes()[:8] == PNG
    md = (out / "summary.md").read_text()
    assert "| nan | vqa | gated | 0.0001 | 30 | finished | NaN | 1.5 |" in md
    assert "| partial | vqa | add | 0.0001 | 30 | unfinished | 0.45 | 1.6 |" in md  # last reported values


def test_a_path_that_is_neither_a_run_nor_a_study_exits_2(tmp_path, capsys):
    (tmp_path / "stuff").mkdir()
    (tmp_path / "stuff" / "notes.txt").write_text("hi")
    for path in (tmp_path / "stuff", tmp_path / "missing", tmp_path / "stuff" / "notes.txt"):
        assert main(["report", str(path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"btp report: {path}: ") and "config.yaml" in err and "stages" in err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert not (tmp_path / "stuff" / "report").exists()


def test_a_moved_study_finds_its_storage_and_a_missing_one_is_explained(built, tmp_path):
    moved = make_study(tmp_path / "moved", "moved")
    data = json.loads((moved / "summary.json").read_text())
    data["storage"] = "sqlite:////nowhere/optuna.db"
    (moved / "summary.json").write_text(json.dumps(data))
    study = load([moved]).studies[0]
    assert importances(study, study.stages[0])[0] is not None  # the sqlite file beside summary.json
    (moved / "optuna.db").unlink()
    values, why = importances(study, study.stages[0])
    assert values is None and why == "the storage file /nowhere/optuna.db does not exist"
    assert not Path("/nowhere/optuna.db").exists()


def test_the_wandb_report_spec_has_the_panels_and_run_filters(built):
    comp = load([*built["runs"], built["study"]])
    spec = wandb_report_spec(comp)
    assert spec["project"] == "bridgetower" and spec["title"].startswith("Comparison of study bridges")
    blocks = {b["title"]: b for b in spec["blocks"]}
    assert list(blocks) == ["bridges · pretrain", "bridges · vqa", "runs · vqa"]
    pre = blocks["bridges · pretrain"]
    assert pre["runset"]["filters"] == {
        "group": "bridges",
        "ids": [f"bridges-pretrain_{i:03d}" for i in range(7)],
    }
    assert pre["runset"]["expression"].startswith('Group = "bridges" and ID in ["bridges-pretrain_000", ')
    kinds = [p["type"] for p in pre["panels"]]
    assert kinds == ["LinePlot"] * 3 + [
        "BarPlot",
        "ScatterPlot",
        "ParallelCoordinatesPlot",
        "ParameterImportancePlot",
    ]
    assert [p["y"] for p in pre["panels"][:3]] == [["train/loss"], ["val/itm_accuracy"], ["val/loss"]]
    bar, scatter, parallel, importance = pre["panels"][3:]
    assert bar["metrics"] == ["val/itm_accuracy"] and bar["groupby"] == "model.bridge"
    assert (
        scatter["x"] == "config:train.lr" and scatter["y"] == "summary:val/itm_accuracy" and scatter["log_x"]
    )
    assert parallel["columns"] == ["config:model.bridge", "config:train.lr", "summary:val/itm_accuracy"]
    assert importance["metric"] == "val/itm_accuracy"
    runs = blocks["runs · vqa"]
    assert runs["runset"]["filters"] == {"group": None, "ids": ["vqa-add", "vqa-gated"]}
    assert runs["runset"]["expression"] == 'ID in ["vqa-add", "vqa-gated"]'
    assert {p["type"] for p in runs["panels"]} >= {
        "LinePlot",
        "BarPlot",
        "ScatterPlot",
        "ParallelCoordinatesPlot",
    }


def test_the_wandb_report_object_is_built_offline(built):
    import wandb_workspaces.reports.v2 as wr  # a dependency of the project

    spec = wandb_report_spec(load([*built["runs"], built["study"]]))
    kinds = [p["type"] for p in spec["blocks"][0]["panels"]]
    report = build_wandb_report(spec)
    assert isinstance(report, wr.Report) and report.project == "bridgetower"
    grids = [b for b in report.blocks if isinstance(b, wr.PanelGrid)]
    assert len(grids) == 3
    panels = grids[0].panels
    assert [type(p).__name__ for p in panels] == kinds
    assert isinstance(panels[4].x, wr.Config) and panels[4].x.name == "train.lr" and panels[4].log_x
    assert panels[6].with_respect_to == "val/itm_accuracy"
    model = json.loads(report._to_model().model_dump_json())  # serialises offline, as save() would send it
    run_sets = [b["metadata"]["run_sets"][0] for b in model["spec"]["blocks"] if b["type"] == "panel-grid"]
    filters = run_sets[0]["filters"]["filters"]
    assert filters[0]["key"] == {"section": "run", "name": "group"} and filters[0]["value"] == "bridges"
    assert filters[1]["op"] == "IN" and filters[1]["value"][:2] == [
        "bridges-pretrain_000",
        "bridges-pretrain_001",
    ]
    assert run_sets[2]["filters"]["filters"][0]["value"] == ["vqa-add", "vqa-gated"]


def test_the_wandb_part_says_why_it_was_not_published(built):
    page = (built["out"] / "report.html").read_text()
    text = section(page, "wandb")
    assert (
        "not published: offline (set WANDB_API_KEY" in text or "wandb-workspaces package is missing" in text
    )


def test_online_publishing_failures_leave_the_local_report_complete(built, tmp_path, monkeypatch, capsys):
    import wandb_workspaces.reports.v2 as wr  # a dependency of the project

    saved = []

    def save(report, draft=False, clone=False):  # no server here: record what would be sent, then fail
        saved.append(report)
        raise RuntimeError("not logged in to W&B")

    monkeypatch.setattr(wr.Report, "save", save)
    monkeypatch.setenv("WANDB_API_KEY", "0" * 40)
    monkeypatch.setenv("WANDB_ENTITY", "team")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    out = tmp_path / "out"
    assert main(["report", str(built["runs"][0]), "--out", str(out)]) == 0
    assert len(saved) == 1 and saved[0].entity == "team" and saved[0].project == "bridgetower"
    printed = capsys.readouterr().out
    assert "W&B report not published (RuntimeError: not logged in to W&B)" in printed
    assert "not logged in to W&amp;B" in section((out / "report.html").read_text(), "wandb")
    saved.clear()
    assert main(["report", str(built["runs"][0]), "--out", str(out), "--no-wandb"]) == 0
    assert saved == [] and "(--no-wandb)" in capsys.readouterr().out
    (tmp_path / "notes.md").write_text("kept")
    assert main(["report", str(built["runs"][0]), "--out", str(tmp_path / "notes.md")]) == 2
    assert "is a file, not a folder" in capsys.readouterr().err
    assert (tmp_path / "notes.md").read_text() == "kept"
