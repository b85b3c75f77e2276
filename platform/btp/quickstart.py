"""`btp quickstart [--out DIR]`: the whole platform on a laptop, offline, in one command.

Synthetic data -> a vision tower trained to tell colours and shapes apart -> the tiny model pre-trained from it
with two bridge variants -> each fine-tuned on VQA with a small Optuna sweep -> evaluation on the test split per
question type -> the comparison report. Writes OUT/summary.json (`seconds`, `best_vqa_accuracy`, per-type
accuracies and baselines, the table of trials).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

STUDY_FILE = Path("experiments") / "synth" / "quickstart.yaml"
VISION_FILE = Path("experiments") / "synth" / "shapes_vision.yaml"  # the vision tower the study starts from
TYPES = ("color", "shape", "count", "exist", "position")
IMAGE_SIZE = 48  # the quickstart study's picture size (one 16 px patch per grid cell)


def study_file(name: Path = STUDY_FILE) -> Path:
    """An experiment of the repository (next to the sources, or under the current folder)."""
    for root in (Path(__file__).resolve().parents[2], Path.cwd()):
        if (root / name).is_file():
            return root / name
    raise FileNotFoundError(
        f"{name} not found; run btp quickstart from the repository's folder (it holds experiments/)"
    )


def _say(text: str, start: float) -> None:
    print(f"[quickstart {time.perf_counter() - start:5.0f} s] {text}", flush=True)


def make_data(out: Path, images: int, start: float) -> Path:
    from btp.data.synth import write_synthetic

    data = out / "data"
    manifest = data / "manifest.json"
    made = json.loads(manifest.read_text()) if manifest.is_file() else {}
    if made.get("images") == images and made.get("image_size") == IMAGE_SIZE and made.get("complete"):
        _say(f"synthetic data already in {data}", start)
        return data
    _say(f"writing {images} synthetic pictures with captions, questions and answers to {data}", start)
    write_synthetic(data, images=images, seed=0, image_size=IMAGE_SIZE, log=lambda _: None)
    return data


def train_vision_tower(out: Path, data: Path, extra: list[str], start: float) -> Path:
    """The colour x shape classifier whose vision tower every pre-training of the study starts from."""
    from btp.config import load_experiment
    from btp.train.run import train

    run = out / "shapes_vision"
    if (run / "summary.json").is_file():
        _say(f"vision tower already trained in {run}", start)
        return run
    _say(f"training the vision tower: a colour x shape classifier of one-object pictures -> {run}", start)
    cfg = load_experiment(
        study_file(VISION_FILE),
        [f"data.root={data}", f"train.storage={out}", "train.name=shapes_vision", *extra],
    )
    cfg.track.group = "quickstart"
    result = train(cfg, resume=run.is_dir())  # an interrupted quickstart continues it from its checkpoint
    _say(f"vision tower: {_pct(result.get('test/accuracy'))} of the test pictures' colour x shape", start)
    return run


def per_type(best_run: Path, data: Path) -> dict[str, Any]:
    """The best run's test accuracy per question type, beside each type's majority baseline."""
    from btp.data.vqa_eval import score_vqa

    predictions = json.loads((best_run / "vqa_test_predictions.json").read_text())
    return score_vqa(
        predictions,
        [str(p) for p in sorted(data.glob("vqav2_test_*.arrow"))],
        [str(p) for p in sorted(data.glob("vqav2_train_*.arrow"))],
    )


def _table(summary: dict, scores: dict) -> str:
    lines = ["", "Trials (pre-training -> VQA fine-tuning), best first:"]
    rows = sorted(summary["table"], key=lambda r: -(r.get(summary["metric"]) or -1))
    for r in rows:
        lr_pre = r.get("pretrain.train.lr")
        lines.append(
            f"  {r['trial']:<18} bridge {r.get('pretrain.model.bridge', '?'):<8}"
            + (f" pretrain lr {lr_pre:.2g}" if lr_pre else "")
            + f"  vqa lr {r.get('vqa.train.lr', float('nan')):.2g}  val vqa score {_pct(r.get(summary['metric']))}"
        )
    lines += [
        "",
        "Best model on the test split (VQA accuracy):",
        f"  {'type':<10}{'accuracy':>10}{'majority':>10}",
    ]
    for kind in (*TYPES, "overall"):
        got = scores["overall"] if kind == "overall" else scores["types"].get(kind)
        lines.append(f"  {kind:<10}{_pct(got):>10}{_pct(scores['baseline'].get(kind)):>10}")
    return "\n".join(lines)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def check_arguments(out: Path, images: int, study: Path, extra: list[str]) -> None:
    """The options and overrides, checked before minutes of data generation and training: ConfigError."""
    from btp.config import ConfigError, load_experiment
    from btp.data.synth import MIN_IMAGES

    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file, not a folder; choose another --out")
    if images < MIN_IMAGES:
        raise ConfigError(
            f"--images must be at least {MIN_IMAGES} (every split needs pictures), got {images}"
        )
    if not study.is_file():
        raise ConfigError(f"--study {study} not found")
    for experiment in (study, study_file(VISION_FILE)):  # the overrides go to both
        load_experiment(experiment, extra)


def run_quickstart(
    out: Path,
    images: int,
    address: str | None,
    resume: bool,
    extra: list[str] | None = None,
    study: Path | None = None,
) -> dict[str, Any]:
    from btp.report import main_report
    from btp.tune import run_study, study_ray

    start = time.perf_counter()
    out = out.resolve()
    study = study or study_file()
    check_arguments(out, images, study, extra or [])
    out.mkdir(parents=True, exist_ok=True)
    data = make_data(out, images, start)
    resume = resume or (out / "study" / "summary.json").is_file()
    with study_ray(address):  # one Ray for the vision tower and the study
        vision = train_vision_tower(out, data, extra or [], start)
        _say(
            f"study {study}: pre-train 2 bridge variants, fine-tune each on VQA (Optuna TPE); runs in {out}",
            start,
        )
        overrides = [
            f"data.root={data}",
            f"train.storage={out}",
            "train.name=study",
            f"model.init_towers.vision={vision}",
            *(extra or []),
        ]
        summary = run_study(study, overrides, resume=resume)
    best = summary["best"]
    if best is None:
        raise RuntimeError(f"no VQA trial finished; see {out / 'study' / 'summary.json'}")
    scores = per_type(Path(best["run_dir"]), data)
    _say("writing the comparison report", start)
    report_dir = out / "report"
    main_report(argparse.Namespace(paths=[str(out / "study")], out=str(report_dir)))
    result = {
        "seconds": round(time.perf_counter() - start, 1),
        "best_vqa_accuracy": scores["overall"],
        "per_type": scores["types"],
        "majority_baseline": scores["baseline"],
        "best_trial": best,
        "table": summary["table"],
        "report": str(report_dir / "report.html"),
        "study": str(out / "study"),
    }
    (out / "summary.json").write_text(json.dumps(result, indent=2) + "\n")
    print(_table(summary, scores))
    print(
        f"\nreport: {result['report']}\nsummary: {out / 'summary.json'}  ({result['seconds']:.0f} s in all)"
    )
    return result


def main_quickstart(args: argparse.Namespace) -> int:
    from btp.config import ConfigError
    from btp.tune import StudyError

    try:
        study = Path(args.study) if args.study else None
        run_quickstart(Path(args.out), args.images, args.address, args.resume, args.overrides, study)
    except (ConfigError, StudyError, FileNotFoundError, RuntimeError) as err:
        print(f"btp quickstart: {err}", file=sys.stderr)
        return 2
    return 0
