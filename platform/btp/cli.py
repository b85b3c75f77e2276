"""The `btp` command line: thin entry points over the platform's modules."""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _command(target: str):
    """A subcommand that imports its module only when run, so `btp --help` stays fast (no torch, no Ray)."""

    def run(args: argparse.Namespace) -> int:
        module, function = target.split(":")
        return getattr(importlib.import_module(module), function)(args)

    return run


_bench_model = _command("btp.bench.model:run_model_bench")
_bench_ingest = _command("btp.bench.ingest:run_ingest_bench")
_bench_train = _command("btp.bench.train:run_train_bench")
_bench_tune = _command("btp.bench.tune:run_tune_bench")
_synth = _command("btp.data.synth:main_synth")
_convert = _command("btp.data.convert:main_convert")
_validate = _command("btp.data.validate:main_validate")
_report = _command("btp.report:main_report")
_train = _command("btp.train.run:main_train")
_tune = _command("btp.tune:main_tune")
_quickstart = _command("btp.quickstart:main_quickstart")


def at_least(least: float, kind: type = int):
    """An argparse type: a number of `kind` no smaller than `least` (argparse names the option on a bad value)."""

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an integer' if kind is int else 'a number'}, got {text!r}"
            ) from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least:g}, got {text}")
        return value

    return parse


def output_file(text: str) -> str:
    """An argparse type: a file the command will write at the end, checked before minutes of work (its folder
    exists and it is not a folder itself), so the figures are not lost to a typo in the path."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text} is a folder; give a file path, e.g. {path / 'bench.json'}")
    if not path.parent.is_dir():
        raise argparse.ArgumentTypeError(
            f"the folder {path.parent} does not exist; create it or choose another path"
        )
    return str(path)


def _json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--json", type=output_file, default=None, metavar="PATH", help="write every printed figure to PATH"
    )


def positive_floats(text: str) -> str:
    """An argparse type: comma-separated positive numbers (kept as the text; the bench parses it)."""
    for item in (v.strip() for v in text.split(",") if v.strip()):  # none at all: the bench says so
        try:
            ok = float(item) > 0
        except ValueError:
            ok = False
        if not ok:
            raise argparse.ArgumentTypeError(f"{item!r} is not a positive number; give e.g. 2e-4,5e-4,1e-3")
    return text


def _address_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--address", default=None, help="Ray cluster to join (default: RAY_ADDRESS, else a local Ray)"
    )


class _Parser(argparse.ArgumentParser):
    """Options spelled out in full: an abbreviation such as --resum is refused, not taken for --resume."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="btp",
        description="BridgeTower platform: pretrain, fine-tune and compare BridgeTower models on Ray.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    quickstart = sub.add_parser(
        "quickstart",
        help="the whole platform offline in one command: data, pretraining of 2 bridges, VQA sweep, report",
        description="Generates the synthetic data, pre-trains the tiny model with two bridge variants, fine-tunes "
        "each on VQA with a small Optuna sweep, scores the test split per question type and writes the "
        "comparison report. Starts a local Ray unless --address or RAY_ADDRESS names a cluster. Writes "
        "OUT/summary.json (seconds, best_vqa_accuracy, per-type accuracies, the table of trials).",
    )
    quickstart.add_argument(
        "overrides", nargs="*", metavar="key=value", help="overrides for every stage, e.g. train.max_steps=50"
    )
    quickstart.add_argument("--out", default="quickstart", help="output folder (default: ./quickstart)")
    quickstart.add_argument(
        "--study",
        default=None,
        metavar="FILE",
        help="the two-stage study to run (default: experiments/synth/quickstart.yaml)",
    )
    quickstart.add_argument(
        "--images", type=at_least(40), default=20000, help="synthetic pictures to generate (default 20000)"
    )
    _address_option(quickstart)
    quickstart.add_argument(
        "--resume", action="store_true", help="finish an interrupted quickstart in OUT (also automatic)"
    )
    quickstart.set_defaults(func=_quickstart)

    train = sub.add_parser(
        "train",
        help="train an experiment on Ray Train (FSDP2): pretraining or any fine-tuning task",
        description="Runs EXPERIMENT.yaml (sections model, data, train, track) on Ray Train. key=value arguments "
        "override the file, e.g. train.lr=3e-4 model.bridge=gated. Outputs go to train.storage/NAME: the "
        "resolved config, metrics.jsonl, summary.json and the final model (save_pretrained).",
    )
    train.add_argument("experiment", metavar="EXPERIMENT.yaml")
    train.add_argument("overrides", nargs="*", metavar="key=value")
    train.add_argument(
        "--resume",
        action="store_true",
        help="continue the stopped run of the same name from its last checkpoint",
    )
    train.set_defaults(func=_train)

    tune = sub.add_parser(
        "tune",
        help="run the experiment's tune: study (Optuna TPE + ASHA; stages such as pretrain -> fine-tune)",
        description="Runs the study in EXPERIMENT.yaml's tune: section on Ray Tune. Every trial is a whole btp "
        "train run with its own run directory; with stages:, a later stage fine-tunes from the best top_k runs "
        "of the stage before. key=value arguments override the study file and every stage's experiment "
        "(e.g. data.root=..., train.max_steps=50). Outputs go to train.storage/NAME: summary.json (every trial, "
        "the table, the best), optuna.db (the Optuna studies) and one folder per stage with its trials' runs.",
    )
    tune.add_argument("experiment", metavar="EXPERIMENT.yaml")
    tune.add_argument("overrides", nargs="*", metavar="key=value")
    tune.add_argument(
        "--resume",
        action="store_true",
        help="finish a stopped study: finished trials are kept, unfinished ones continue from their checkpoints",
    )
    _address_option(tune)
    tune.set_defaults(func=_tune)

    data = sub.add_parser("data", help="datasets: synthetic data, conversion, validation")
    data_sub = data.add_subparsers(dest="data", metavar="WHAT", required=True)
    synth = data_sub.add_parser(
        "synth",
        help="write the grounded synthetic dataset (captions, VQA, NLVR2, SNLI-VE, retrieval, image and text "
        "classification) and its tokenizer",
        description="Renders pictures of a few shapes and writes texts that are true (or, for negatives, false) of "
        "them, in the official ViLT-style Arrow shard layout, plus a tokenizer trained on the text. "
        "Same seed -> byte-identical files.",
    )
    synth.add_argument("out_dir", metavar="OUT_DIR", help="output directory (e.g. data/synth)")
    synth.add_argument(
        "--images", type=int, default=2000, help="pictures in total, shared among the datasets (default 2000)"
    )
    synth.add_argument(
        "--classification",
        type=int,
        default=None,
        help="examples in each classification set, on top of --images: one-object pictures (shapes_*) and "
        "sentiment sentences (sentiment_*) (default: --images, at most 2000)",
    )
    synth.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    synth.add_argument("--image-size", type=int, default=64, help="picture size in pixels (default 64)")
    synth.add_argument("--rows-per-shard", type=int, default=128, help="rows per Arrow shard (default 128)")
    synth.set_defaults(func=_synth)
    convert = data_sub.add_parser(
        "convert",
        help="build shards from the raw public datasets (COCO/F30K Karpathy, VQAv2, NLVR2, SNLI-VE, "
        "CIFAR-10/100 binary, GLUE)",
        description="Reads a raw public dataset layout (json + image folders) and writes official-style Arrow "
        "shards with the original image bytes.",
    )
    convert.add_argument(
        "task",
        choices=["coco", "f30k", "vqav2", "nlvr2", "snli_ve", "cifar10", "cifar100", "glue"],
        metavar="TASK",
        help="coco, f30k, vqav2, nlvr2, snli_ve, cifar10, cifar100 (the binary version) or glue (TSV)",
    )
    convert.add_argument("--raw", required=True, help="directory holding the raw dataset")
    convert.add_argument("--out", required=True, help="directory for the shards")
    convert.add_argument("--rows-per-shard", type=int, default=1000, help="rows per shard (default 1000)")
    convert.add_argument(
        "--skip-missing-images",
        action="store_true",
        help="drop records whose image file is missing (counted and reported) instead of stopping",
    )
    convert.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the dataset's shards already in --out (every split of it); without it they are kept and "
        "the conversion stops",
    )
    convert.add_argument(
        "--min-answer-freq",
        type=int,
        default=9,
        help="VQAv2: answers kept in the vocabulary need this many questions (default 9: 3129 answers)",
    )
    convert.add_argument(
        "--glue-tasks",
        default=None,
        help="GLUE: comma-separated tasks to convert, e.g. sst2,mnli (default: every task folder found; "
        "known: cola, sst2, mrpc, qqp, mnli, qnli, rte, wnli; STS-B is regression and not supported)",
    )
    convert.set_defaults(func=_convert)
    validate = data_sub.add_parser(
        "validate",
        help="check shards: schema, every image decodes, every row is usable; counts per split",
        description="Reads each shard batch by batch, decodes every image and checks every row as training "
        "would. Prints a summary; exits 1 with one line per problem (file, row, column).",
    )
    validate.add_argument("paths", nargs="+", metavar="PATH", help="shard files or directories")
    validate.add_argument(
        "--task",
        choices=[
            "pretrain",
            "irtr",
            "vqa",
            "nlvr2",
            "snli_ve",
            "image_classification",
            "text_classification",
        ],
        default=None,
        help="task of the rows (default: from the official file names)",
    )
    validate.set_defaults(func=_validate)

    bench = sub.add_parser("bench", help="benchmarks that print figures (model speed, MFU)")
    bench_sub = bench.add_subparsers(dest="bench", metavar="WHAT", required=True)
    model = bench_sub.add_parser(
        "model",
        help="forward+backward time of ours vs transformers' port on the same weights; FLOP/s and MFU",
        description="Times ours and transformers' BridgeTowerForImageAndTextRetrieval on the same weights and "
        "inputs (interleaved repeats, median), and reports the speed ratio, model FLOP/s and MFU against the "
        "measured matmul peak of this machine.",
    )
    model.add_argument("--preset", default="base", choices=["tiny", "base", "large"])
    model.add_argument("--batch", type=at_least(1), default=4, help="samples per step (default 4)")
    model.add_argument("--text-len", type=at_least(1), default=40, help="text tokens per sample (default 40)")
    model.add_argument("--image-size", type=at_least(1), default=None, help="pixels (default: the preset's)")
    model.add_argument("--repeats", type=at_least(1), default=5, help="timed repeats per model (default 5)")
    model.add_argument(
        "--task",
        choices=["itm", "pretrain"],
        default="itm",
        help="itm: backbone + ITM head; pretrain: also one MLM+ITM step vs the two-pass recipe",
    )
    model.add_argument("--threads", type=at_least(1), default=None, help="torch threads (default: all cores)")
    model.add_argument(
        "--compile",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="time ours with every layer compiled (train.compile: true), ours eager beside it (default: on)",
    )
    model.add_argument("--bf16", action="store_true", help="also time bf16 autocast against the bf16 peak")
    _json_option(model)
    model.set_defaults(func=_bench_model)
    ingest = bench_sub.add_parser(
        "ingest",
        help="pretraining preprocessing throughput: Ray Data into a train worker vs DataLoader vs one process",
        description="Decode, transform, tokenize and mask synthetic pretraining samples three ways: Ray Data "
        "streaming into a Ray Train worker, a torch DataLoader with the same number of processes, and one plain "
        "process. Each makes two passes over the same samples: the first includes its start-up (time to first "
        "batch), the second is timed from the moment it is asked for to its last batch (rows/s, the ratio). "
        "Also prints peak memory.",
    )
    ingest.add_argument(
        "--rows", type=at_least(1), default=50000, help="samples per pass, for every method (default 50000)"
    )
    ingest.add_argument(
        "--batch",
        type=at_least(1),
        default=64,
        help="samples per batch the consumer receives, from Ray Data and from the DataLoader (default 64)",
    )
    ingest.add_argument(
        "--image-size", type=at_least(8), default=64, help="image size after the transform (default 64)"
    )
    ingest.add_argument(
        "--map-rows",
        type=at_least(1),
        default=64,
        help="dataset rows per preprocessing call, for every method (default 64)",
    )
    ingest.add_argument(
        "--workers", type=at_least(1), default=2, help="processes for Ray Data and the DataLoader"
    )
    ingest.add_argument(
        "--stream-gb",
        type=at_least(0.001, float),
        default=None,
        metavar="GB",
        help="instead: stream GB of generated shards and report peak memory of driver and workers",
    )
    ingest.add_argument(
        "--data-dir", default=None, help="where --stream-gb writes its shards (default: temp dir)"
    )
    _json_option(ingest)
    ingest.set_defaults(func=_bench_ingest)
    bench_train = bench_sub.add_parser(
        "train",
        help="steps/s of the FSDP2 training step on Ray Train vs torchrun; per-worker memory of 2 workers vs 1",
        description="Runs the platform's training step (MLM+ITM pretraining on synthetic in-memory batches) on "
        "2 FSDP2 workers under Ray Train (reporting every --report-every steps, as btp train does) and under "
        "torchrun without Ray (at the Ray workers' niceness), and prints steps/s both ways and their ratio "
        "(goal >= 0.95), and torchrun once more beside the idle local Ray (what Ray's own processes on the same "
        "cores cost any step, apart from Ray Train). With 1 Ray worker as well: per-worker model state (params + "
        "grads + AdamW state) and peak RSS of 2 workers vs 1 (goal <= 0.55). Also times a whole btp train run on "
        "synthetic shards unless --e2e-steps 0.",
    )
    bench_train.add_argument(
        "--preset",
        default="mid",
        choices=["tiny", "mid", "base", "large"],
        help="model size (default mid: base narrowed to 512 wide, 4+4 tower layers, 2 cross-modal; ~96M params)",
    )
    bench_train.add_argument("--batch", type=int, default=4, help="samples per worker per step (default 4)")
    bench_train.add_argument("--text-len", type=int, default=32, help="text tokens per sample (default 32)")
    bench_train.add_argument("--image-size", type=int, default=64, help="pixels (default 64)")
    bench_train.add_argument("--steps", type=int, default=10, help="timed steps per run (default 10)")
    bench_train.add_argument(
        "--warmup-steps", type=int, default=2, help="untimed steps before them (default 2)"
    )
    bench_train.add_argument(
        "--report-every",
        type=int,
        default=10,
        help="Ray side: ray.train.report every N steps, as btp train does every train.log_every (default 10)",
    )
    bench_train.add_argument(
        "--rounds",
        type=int,
        default=1,
        help="alternate torchrun and Ray runs this many times and keep the fastest of each (default 1)",
    )
    bench_train.add_argument(
        "--e2e-steps",
        type=int,
        default=12,
        help="steps of the whole btp train run on synthetic shards (default 12; 0: skip it)",
    )
    bench_train.add_argument(
        "--threads", type=int, default=None, help="torch threads per worker (default: cores / 2)"
    )
    bench_train.add_argument(
        "--cpus-per-worker", type=float, default=0.5, help="Ray CPUs per train worker (default 0.5)"
    )
    bench_train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    _json_option(bench_train)
    bench_train.set_defaults(func=_bench_train)

    report = sub.add_parser(
        "report",
        help="compare runs and studies: an HTML page with plots, summary.md, and a W&B Report when online",
        description="Compares run folders (btp train), study folders (btp tune) or folders holding several of "
        "them: learning curves, final metric per bridge variant, metric vs learning rate, parallel coordinates "
        "of the searched settings and Optuna parameter importances, as OUT/report.html with PNG plots, plus "
        "OUT/summary.md. With WANDB_API_KEY set, the same comparison is also saved as a W&B Report.",
    )
    report.add_argument(
        "paths", nargs="+", metavar="PATH", help="run folders, study folders or folders of them"
    )
    report.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="output folder (default: PATH/report for one PATH, ./report for several)",
    )
    report.add_argument(
        "--no-wandb", action="store_true", help="do not publish a W&B Report even when WANDB_API_KEY is set"
    )
    report.set_defaults(func=_report)

    bench_tune = bench_sub.add_parser(
        "tune",
        help="a full grid over bridge x lr against Optuna TPE + ASHA on synthetic VQA: best score, steps used",
        description="Runs two studies over the same space (every bridge x every learning rate) on the synthetic "
        "VQA task: the full grid, every trial to the end, and Optuna TPE with ASHA early stopping and fewer "
        "trials. Prints each one's best final val/vqa_score and the training steps it used, metric_gap (grid "
        "best - Optuna best; 0.01 is one percentage point) and steps_ratio (Optuna steps / grid steps) against "
        "the goal: within 1 point using at most 35% of the steps. key=value arguments override every trial "
        "(e.g. train.batch_size=16).",
    )
    bench_tune.add_argument("overrides", nargs="*", metavar="key=value", help="overrides for every trial")
    bench_tune.add_argument(
        "--out",
        default="runs/bench_tune",
        help="folder for the data and both studies (default: runs/bench_tune)",
    )
    bench_tune.add_argument(
        "--data",
        default=None,
        metavar="DIR",
        help="synthetic shards to use (default: write them into OUT/data)",
    )
    bench_tune.add_argument(
        "--images",
        type=at_least(40),
        default=4000,
        help="synthetic pictures to write without --data (default 4000)",
    )
    bench_tune.add_argument(
        "--experiment",
        default=None,
        metavar="FILE",
        help="base VQA experiment (default: experiments/synth/vqa_scratch.yaml)",
    )
    bench_tune.add_argument(
        "--steps", type=at_least(1), default=300, help="training steps per trial (default 300)"
    )
    bench_tune.add_argument(
        "--eval-every",
        type=at_least(1),
        default=100,
        help="steps between evaluations; ASHA's first cut (default 100: at 50 every setting still answers "
        "the question prior)",
    )
    bench_tune.add_argument(
        "--bridges",
        default="add,gated,scaled_add",
        help="bridge variants, comma-separated (default add,gated,scaled_add)",
    )
    bench_tune.add_argument(
        "--lrs",
        default="2e-4,5e-4,1e-3",
        type=positive_floats,
        help="learning rates, comma-separated (default 2e-4,5e-4,1e-3)",
    )
    bench_tune.add_argument(
        "--samples",
        type=at_least(1),
        default=None,
        help="Optuna trials (default: half the grid's, rounded up)",
    )
    bench_tune.add_argument(
        "--reduction-factor", type=at_least(2), default=3, help="ASHA's reduction factor (default 3)"
    )
    bench_tune.add_argument(
        "--startup-trials",
        type=at_least(1),
        default=None,
        help="Optuna trials before TPE models the results (default: the first trials, which try every bridge "
        "and every lr once: the longer of the two lists)",
    )
    bench_tune.add_argument(
        "--seed", type=int, default=0, help="seed of the data, the trials and TPE (default 0)"
    )
    _address_option(bench_tune)
    _json_option(bench_tune)
    bench_tune.set_defaults(func=_bench_tune)
    return parser


def _version() -> str:
    from btp import __version__

    return f"btp {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
