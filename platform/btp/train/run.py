"""`btp train EXPERIMENT.yaml [key=value ...]`: the driver that starts Ray Train on the experiment."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from btp.config import ConfigError, ExperimentConfig, check_earlier, load_experiment, save_resolved
from btp.train.build import (
    CLASSIFICATION,
    DataMissingError,
    count_samples,
    data_concurrency,
    data_spec,
    model_config,
    shard_paths,
)
from btp.train.optim import planned_steps
from btp.train.storage import RunStorage, is_remote, staging_dir, write_text_atomic


def run_dir(cfg: ExperimentConfig) -> Path:
    """The run's folder; for a remote train.storage (s3://...) the local staging folder of its files."""
    if is_remote(cfg.train.storage):
        return staging_dir(cfg.train.storage, cfg.train.name)
    return (Path(cfg.train.storage) / cfg.train.name).resolve()


def run_location(cfg: ExperimentConfig) -> str:
    """Where the run's files end up, as the user would name it (a path, or the remote URI)."""
    if is_remote(cfg.train.storage):
        return f"{cfg.train.storage.rstrip('/')}/{cfg.train.name}"
    return str(run_dir(cfg))


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def ray_log_level() -> str:
    """The level of Ray's own library logs (Train, Data) on the console: BTP_RAY_LOG_LEVEL, default WARNING.

    Progress lines of the run come from the run itself; Ray's per-report and per-dataset INFO lines would bury
    them. Set BTP_RAY_LOG_LEVEL=INFO to see them (they are always in Ray's session logs).
    """
    level = os.environ.get("BTP_RAY_LOG_LEVEL", "WARNING").strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"BTP_RAY_LOG_LEVEL={level!r} is not a log level; use one of {', '.join(LOG_LEVELS)}"
        )
    return level


def quiet_ray_env() -> None:
    """Before ray.init, the settings Ray's processes read from their environment: Ray Data logs at
    ray_log_level(); report() waits for one controller poll (2 s by default); workers print once, not twice."""
    os.environ.setdefault("RAY_DATA_LOG_LEVEL", ray_log_level())
    os.environ.setdefault("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "0.2")
    os.environ.setdefault("RAY_TRAIN_ENABLE_PRINT_PATCH", "0")


def local_ray_options() -> dict[str, Any]:
    """ray.init options for a local Ray that runs Ray Train: its own dashboard on a free loopback port, which its
    processes are told to use for the State API.

    Ray Train's placement-group cleaner asks the State API, every second, whether the run's controller lives,
    and removes the run's workers when the answer is "not found". Without its own dashboard a local Ray still
    names 127.0.0.1:8265 as its API server, and its processes ask whichever other Ray on the machine serves
    that port: a live run was seen taken for dead and its workers removed. A free port, exported as
    RAY_API_SERVER_ADDRESS before ray.init (the raylet and every worker inherit it), keeps each Ray on its own.

    Ray Train's preemption watcher is off (unless RAY_TRAIN_ENABLE_PREEMPTION_WATCHER says otherwise): it waits
    for the drain notice of a spot node, which a one-machine Ray never gets, and each run's watcher logged an
    error line on the console at start ("constructor arguments in the object store and max_restarts > 0").

    LOCAL_RAY_SYSTEM_CONFIG spares the cores what nobody reads on a Ray that lives as long as one command.
    """
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["RAY_API_SERVER_ADDRESS"] = f"http://127.0.0.1:{port}"
    os.environ.setdefault("RAY_TRAIN_ENABLE_PREEMPTION_WATCHER", "0")
    return {
        "include_dashboard": True,
        "dashboard_host": "127.0.0.1",
        "dashboard_port": port,
        "_system_config": dict(LOCAL_RAY_SYSTEM_CONFIG),
    }


# Ray's settings for a local Ray (ray.init's _system_config; a cluster's own head keeps its own). Every Ray
# process exports metrics for a Prometheus that a one-command Ray never has, and the raylet starts a Python
# worker per CPU ahead of need, which then idles beside the run's actors (each of its processes answers Ray's
# timers, ~1 % of a core). Without them an idle local Ray took 1.4 instead of 2.7 CPU-s per 20 s on 2 cores,
# a 4-step one-worker run 35-38 instead of 40 CPU-s, and the lone-worker resume test 48 instead of 53 s.
LOCAL_RAY_SYSTEM_CONFIG = {
    "enable_metrics_collection": False,
    "enable_worker_prestart": False,
    "prestart_worker_first_driver": False,
}


# what local_ray_options() sets in this process's environment, restored when its Ray ends
LOCAL_RAY_ENV = ("RAY_API_SERVER_ADDRESS", "RAY_TRAIN_ENABLE_PREEMPTION_WATCHER")

# raylet warnings that a local Ray prints on the driver's console and that do not apply to it: every actor of a
# run (controller, workers, dataset coordinators) is a process of its own, so a run on 2 CPUs passes the raylet's
# "4x the startup concurrency" mark, and the advice (too many actors, tasks blocked in ray.get) is not the case
LOCAL_RAYLET_NOISE = ("worker processes have been started on node",)

# Ray's notice, logged by ray.init on the driver, that the local Ray it starts uses token authentication (Ray's
# default, which stays on): a local Ray that lives as long as one command is reached by nothing else, and the
# notice's advice (opt out with RAY_AUTH_MODE=disabled) is not wanted there
LOCAL_RAY_NOTICES = (
    ("ray._private.authentication.authentication_token_setup", "Token authentication is enabled for this"),
)


@contextlib.contextmanager
def _quiet_local_console() -> Iterator[None]:
    """While a local Ray starts and runs, Ray's loggers drop LOCAL_RAY_NOTICES, and its driver's printer of Ray's
    lines (`print_to_stdstream`, which Ray's listener thread looks up in its module at each message) drops the
    raylet's lines naming LOCAL_RAYLET_NOISE; every other line passes unchanged. A Ray without that printer keeps
    its own."""

    def dropping(text: str) -> Callable[[logging.LogRecord], bool]:
        return lambda record: text not in record.getMessage()

    filters = [(logging.getLogger(name), dropping(text)) for name, text in LOCAL_RAY_NOTICES]
    for logger, notice in filters:
        logger.addFilter(notice)
    try:
        from ray._private import worker as ray_worker

        original = ray_worker.print_to_stdstream
    except (ImportError, AttributeError):
        ray_worker = None

    def printer(data: dict[str, Any], ignore_prefix: bool) -> Any:
        if data.get("pid") == "raylet":
            lines = [line for line in data.get("lines", []) if not any(n in line for n in LOCAL_RAYLET_NOISE)]
            if not lines:
                return None
            data = {**data, "lines": lines}
        return original(data, ignore_prefix)

    if ray_worker is not None:
        ray_worker.print_to_stdstream = printer
    try:
        yield
    finally:
        if ray_worker is not None:
            ray_worker.print_to_stdstream = original
        for logger, notice in filters:
            logger.removeFilter(notice)


@contextlib.contextmanager
def ray_session(address: str | None = None, **init_kwargs: Any) -> Iterator[bool]:
    """The Ray to run on: the one this process has joined, else the cluster at `address` (or RAY_ADDRESS),
    else a local Ray started with `local_ray_options()`. One started here prints no LOCAL_RAYLET_NOISE on the
    console, and is shut down at the end and the environment it changed restored. Yields whether it was started
    here."""
    import ray

    if ray.is_initialized():
        yield False
        return
    address = address or os.environ.get("RAY_ADDRESS") or None
    saved = {key: os.environ.get(key) for key in LOCAL_RAY_ENV}
    with contextlib.nullcontext() if address else _quiet_local_console():
        try:
            ray.init(address=address, **init_kwargs, **({} if address else local_ray_options()))
            yield True
        finally:
            ray.shutdown()
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


def quiet_data_context() -> None:
    """After ray.init, before datasets are built: no progress bars, no execution plans on the console."""
    import ray

    ctx = ray.data.DataContext.get_current()
    verbose = ray_log_level() in ("DEBUG", "INFO")
    ctx.print_on_execution_start = verbose
    # Datasets run in Ray's processes, which have no terminal: with progress bars on (and not Ray's tqdm) Ray
    # Data logs progress at INFO, hidden below WARNING; with them off it warns once per dataset that they are
    ctx.enable_progress_bars = not verbose
    ctx.use_ray_tqdm = False


def ingest_config(num_workers: int) -> Any:
    """How the workers read their datasets (Ray Train's DataConfig): blocks in a fixed order, so a resumed run
    re-reads exactly the batches it skips; several workers split each dataset, a lone worker reads them itself
    (splitting for one reader costs a coordinator process per dataset and a hop for every batch)."""
    from ray.data import ExecutionOptions
    from ray.train import DataConfig

    return DataConfig(
        datasets_to_split="all" if num_workers > 1 else [],
        execution_options=ExecutionOptions(preserve_order=True),
    )


def _check(cfg: ExperimentConfig) -> None:
    if cfg.train.num_workers > 1 and not cfg.train.fsdp:
        raise ConfigError("train.fsdp: false needs train.num_workers: 1 (several workers shard with FSDP2)")


def preflight(cfg: ExperimentConfig, resources: bool = True) -> None:
    """What can be checked before a run writes anything or starts Ray: the model's configuration, the
    transforms and the tokenizer exist, the storage is a folder, local checkpoints to start from exist, and the
    workers fit a local Ray (`resources`). One ConfigError naming the key otherwise; a worker would otherwise
    fail with it minutes later, deep in Ray's logs.
    """
    from bridgetower.transforms import TRANSFORMS

    d = cfg.data
    for key, name in (("data.transform", d.transform), ("data.eval_transform", d.eval_transform)):
        if name not in TRANSFORMS:
            raise ConfigError(f"{key}: unknown transform {name!r}; known: {', '.join(TRANSFORMS)}")
    try:
        model_config(cfg)  # BridgeTowerConfig checks every field's type and range, and the bridge's name
    except (ValueError, TypeError) as err:
        hint = (
            " (data.image_size sets vision.image_size)" if d.image_size and "image_size" in str(err) else ""
        )
        raise ConfigError(f"model: {err}{hint}") from None
    for key, value in (
        ("model.init_from", cfg.model.init_from),
        ("model.init_towers.vision", cfg.model.init_towers.vision if cfg.model.init_towers else None),
        ("model.init_towers.text", cfg.model.init_towers.text if cfg.model.init_towers else None),
    ):
        # a local path (absolute, ./ or runs/) must exist; anything else may be a hub id or a URI
        if (
            value
            and "://" not in value
            and value.startswith(("/", ".", "runs/"))
            and not Path(value).exists()
        ):
            raise ConfigError(f"{key}: {value} not found; give a run folder, a checkpoint or a hub id")
    if d.task != "image_classification":
        _check_tokenizer(d.tokenizer)
    storage = Path(cfg.train.storage)
    if not is_remote(cfg.train.storage) and storage.exists() and not storage.is_dir():
        raise ConfigError(f"train.storage: {storage} is a file, not a folder; choose another train.storage")
    if resources:
        _check_resources(cfg)


def _check_tokenizer(path: str | None) -> None:
    from bridgetower.tokenization import load_tokenizer

    if not path:
        raise ConfigError("data.tokenizer: empty; give the tokenizer's folder (or a hub id)")
    hint = "give the folder `btp data synth` or `btp data convert` wrote (data.root/tokenizer by default), or a hub id"
    if "://" in path or not Path(path).exists():
        if "://" not in path and (path.startswith(("/", ".")) or path.count("/") > 1):
            raise ConfigError(f"data.tokenizer: {path} not found; {hint}")
        return  # a hub id or a URI: the workers fetch it (a driver may not reach the hub)
    try:
        load_tokenizer(path)
    except Exception as err:  # noqa: BLE001 - transformers raises OSError, ValueError, ... for a bad folder
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ConfigError(f"data.tokenizer: cannot load {path} ({first}); {hint}") from None


def _check_resources(cfg: ExperimentConfig) -> None:
    """The workers must fit the local Ray a run starts (on a cluster, the autoscaler may add nodes: not checked)."""
    import ray

    if ray.is_initialized() or os.environ.get("RAY_ADDRESS"):
        return
    t = cfg.train
    try:
        from ray._private.utils import get_num_cpus  # what a local Ray counts (container limits included)

        cpus = float(get_num_cpus())
    except Exception:  # noqa: BLE001 - a private helper: fall back to the cores Python sees
        cpus = float(os.cpu_count() or 1)
    workers = f"{t.num_workers} worker{'s' if t.num_workers != 1 else ''}"
    need = t.num_workers * t.cpus_per_worker
    if need > cpus:
        raise ConfigError(
            f"train.num_workers: {workers} x train.cpus_per_worker {t.cpus_per_worker:g} = "
            f"{need:g} CPUs, but the local Ray has {cpus:g}; use fewer workers, a smaller train.cpus_per_worker, "
            "or a cluster (RAY_ADDRESS)"
        )
    if t.use_gpu:
        import torch

        gpus = torch.cuda.device_count()
        need = t.num_workers * t.gpus_per_worker
        if need > gpus:
            raise ConfigError(
                f"train.use_gpu: {workers} x train.gpus_per_worker {t.gpus_per_worker:g} = "
                f"{need:g} GPUs, but this machine has {gpus}; set train.use_gpu=false or run on a GPU cluster"
            )


def failure_message(err: BaseException) -> str:
    """The first line of what went wrong in a failed run, found under Ray's wrappers (worker group, task, UDF)."""
    seen: set[int] = set()
    todo: list[BaseException] = [err]
    root = err
    while todo:
        e = todo.pop(0)
        if id(e) in seen:
            continue
        seen.add(id(e))
        root = e
        inner = [
            *getattr(e, "worker_failures", {}).values(),
            getattr(e, "controller_failure", None),
            getattr(e, "cause", None),
            e.__cause__,
        ]
        inner = [x for x in inner if isinstance(x, BaseException)]
        if inner:
            todo = inner[:1]  # the first worker's failure; the others are usually the same
    lines = [line.strip() for line in str(root).splitlines() if line.strip()]
    text = lines[0] if lines else ""
    if type(root).__module__.split(".")[0] in ("btp", "bridgetower"):
        return text or type(root).__name__  # our own errors name the file, row or key
    return f"{type(root).__name__}: {text}" if text else type(root).__name__


def train(cfg: ExperimentConfig, resume: bool = False, callbacks: Sequence[Any] = ()) -> dict:
    """Run the experiment on Ray Train; returns the final metrics (also in runs/NAME/summary.json).

    `callbacks` are `ray.train.UserCallback`s for the run (a study forwards metrics to Ray Tune with one).
    """
    import ray
    from ray.train import CheckpointConfig, FailureConfig, LoggingConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from btp.data.pipeline import build_dataset, skipped_rows
    from btp.train.loop import train_loop_per_worker

    _check(cfg)
    ray_log_level()  # a bad BTP_RAY_LOG_LEVEL stops the run before it writes anything
    cfg = absolute_paths(cfg)
    out = run_dir(cfg)
    store = RunStorage(cfg.train.storage, cfg.train.name) if is_remote(cfg.train.storage) else None
    if store is None:
        check_earlier(out, (out / "config.yaml").is_file(), resume)
    else:
        check_earlier(store.uri, store.exists("config.yaml"), resume)  # type: ignore[arg-type]
    if resume:
        check_resumable(cfg, out, store)
    samples, steps = planned_run(cfg)  # first: missing data is the likeliest problem
    preflight(cfg)
    if store is not None and not resume:
        shutil.rmtree(out, ignore_errors=True)  # staged files of an earlier run whose remote folder is gone
    out.mkdir(parents=True, exist_ok=True)
    if store is not None:
        store.pull(out)  # a resumed run's metrics and wandb files, written elsewhere before
    save_resolved(cfg, out / "config.yaml")
    if store is not None:
        store.push(out)
    image_size = model_config(cfg).vision.image_size
    t = cfg.train
    print(
        f"btp train {t.name}: {cfg.data.task}, {samples} training samples, {steps} steps of "
        f"{t.num_workers} x {t.batch_size} x {t.grad_accum} -> {run_location(cfg)}",
        flush=True,
    )
    short = epoch_bound_note(cfg, steps)
    if short:
        print(short, flush=True)
    quiet_ray_env()
    with ray_session(log_to_driver=True):
        quiet_data_context()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        tasks = data_concurrency(cfg, ray.cluster_resources().get("CPU", 0), nodes)
        splits = ["train", *(["val"] if cfg.data.val else [])]
        # VQA: predictions in the official server's format; classification: test/accuracy
        if cfg.data.test and cfg.data.task in ("vqa", *CLASSIFICATION):
            splits.append("test")
        specs = {split: data_spec(cfg, split, image_size, concurrency=tasks) for split in splits}
        datasets = {split: build_dataset(spec) for split, spec in specs.items()}
        resources = {"CPU": t.cpus_per_worker, **({"GPU": t.gpus_per_worker} if t.use_gpu else {})}
        trainer = TorchTrainer(
            train_loop_per_worker,
            train_loop_config={"experiment": _as_dict(cfg), "run_dir": str(out), "total_steps": steps},
            scaling_config=ScalingConfig(
                num_workers=t.num_workers, use_gpu=t.use_gpu, resources_per_worker=resources
            ),
            datasets=datasets,
            dataset_config=ingest_config(t.num_workers),
            run_config=RunConfig(
                name=t.name,
                # a remote storage: Ray Train writes the checkpoints there through the same pyarrow filesystem
                storage_path=store.root if store else str(out.parent),
                storage_filesystem=store.fs if store else None,
                failure_config=FailureConfig(max_failures=t.max_failures),
                checkpoint_config=CheckpointConfig(num_to_keep=t.keep_checkpoints),
                callbacks=list(callbacks),
                logging_config=LoggingConfig(log_level=ray_log_level()),
            ),
        )
        trainer.fit()
        skipped = {split: skipped_rows(spec) for split, spec in specs.items() if spec.on_bad_row == "skip"}
    for split, s in skipped.items():  # data.on_bad_row: skip: the rows the run never saw
        if s["count"]:
            first = f"; first: {s['messages'][0]}" if s["messages"] else ""
            print(
                f"btp train {t.name}: skipped {s['count']} bad row(s) of the {split} split{first}", flush=True
            )
    if store is not None:
        return json.loads(store.read_text("summary.json"))
    summary = json.loads((out / "summary.json").read_text())
    if skipped:  # beside the run's metrics (a remote run's summary.json is rank 0's, already uploaded)
        summary["skipped_rows"] = {split: s["count"] for split, s in skipped.items()}
        write_text_atomic(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    return summary


def planned_run(cfg: ExperimentConfig) -> tuple[int, int]:
    """(training samples, optimizer steps) the experiment will run; DataMissingError without its shards."""
    samples = count_samples(cfg.data.task, shard_paths(cfg, "train"))
    t = cfg.train
    return samples, planned_steps(samples, t.num_workers, t.batch_size, t.grad_accum, t.epochs, t.max_steps)


def epoch_bound_note(cfg: ExperimentConfig, steps: int) -> str | None:
    """A note when `train.epochs` ends the run before `train.max_steps` (the smaller of the two decides)."""
    t = cfg.train
    if not t.max_steps or steps >= t.max_steps:
        return None
    return (
        f"btp train {t.name}: note: train.epochs={t.epochs} ends the run at step {steps}, before "
        f"train.max_steps={t.max_steps}; raise train.epochs to run all {t.max_steps} steps"
    )


def absolute_paths(cfg: ExperimentConfig) -> ExperimentConfig:
    """Local paths made absolute: Ray Train workers run in another working directory."""
    import copy

    cfg = copy.deepcopy(cfg)

    def fix(value: str | None) -> str | None:
        if value and "://" not in value and not Path(value).is_absolute() and Path(value).exists():
            return str(Path(value).resolve())
        return value

    cfg.data.root = str(Path(cfg.data.root).resolve()) if "://" not in cfg.data.root else cfg.data.root
    cfg.data.tokenizer = fix(cfg.data.tokenizer)
    cfg.data.vqa_answers = fix(cfg.data.vqa_answers)
    cfg.data.labels = fix(cfg.data.labels)
    cfg.model.init_from = fix(cfg.model.init_from)
    if cfg.model.init_towers is not None:
        cfg.model.init_towers.vision = fix(cfg.model.init_towers.vision)
        cfg.model.init_towers.text = fix(cfg.model.init_towers.text)
    cfg.train.storage = (
        str(Path(cfg.train.storage).resolve()) if "://" not in cfg.train.storage else cfg.train.storage
    )
    return cfg


def _train_errors() -> tuple[type[BaseException], ...]:
    from ray.train import TrainingFailedError

    return (TrainingFailedError,)


def check_resumable(cfg: ExperimentConfig, out: Path, store: RunStorage | None) -> None:
    """--resume: refuse to train a finished run again over its model; name the settings that differ from its own."""
    from omegaconf import OmegaConf

    if store is None:
        if (out / "summary.json").is_file() and not any(out.glob("checkpoint_*")):
            raise ConfigError(
                f"--resume: {out} is a finished run that kept no checkpoint to continue from (its model is in "
                f"{out / 'model'}); to train it again, remove that folder or choose another train.name"
            )
        stored = (out / "config.yaml").read_text()
    else:
        stored = store.read_text("config.yaml")
    changed = config_changes(OmegaConf.to_container(OmegaConf.create(stored)), _as_dict(cfg))
    if changed:
        shown = ", ".join(changed[:6]) + (f" and {len(changed) - 6} more" if len(changed) > 6 else "")
        print(
            f"note: --resume with settings other than the stopped run's config.yaml: {shown}; the run continues "
            "with the new ones (give the same overrides as before to continue it as it was)",
            flush=True,
        )


def config_changes(before: Any, after: Any, prefix: str = "") -> list[str]:
    """'key old -> new' for every leaf that differs between two nested config dicts."""
    if isinstance(before, dict) and isinstance(after, dict):
        out = []
        for key in sorted(set(before) | set(after), key=str):
            out += config_changes(before.get(key), after.get(key), f"{prefix}{key}.")
        return out
    return [] if before == after else [f"{prefix.rstrip('.')} {before!r} -> {after!r}"]


def _as_dict(cfg: ExperimentConfig) -> dict:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(OmegaConf.structured(cfg), resolve=True)


def _after_failure(cfg: ExperimentConfig) -> str:
    """What to do after a failed run: --resume where it saved a checkpoint, else start again."""
    cfg = absolute_paths(cfg)
    if is_remote(cfg.train.storage):
        return "fix the cause, then continue from its last checkpoint with --resume (if it saved one)"
    out = run_dir(cfg)
    if any(out.glob("checkpoint_*")):
        return f"its checkpoints are kept in {out}: fix the cause and continue with --resume"
    return f"it saved no checkpoint: fix the cause and start it again with --resume (or remove {out})"


def main_train(args: argparse.Namespace) -> int:
    try:
        cfg = load_experiment(args.experiment, args.overrides)
        start = time.perf_counter()
        summary = train(cfg, resume=args.resume)
    except (ConfigError, DataMissingError) as err:
        print(f"btp train: {err}", file=sys.stderr)
        return 2
    except _train_errors() as err:
        print(f"btp train {cfg.train.name}: the run failed: {failure_message(err)}", file=sys.stderr)
        print(f"  {_after_failure(cfg)}", file=sys.stderr)
        return 1
    shown = ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in summary.items())
    print(f"btp train {cfg.train.name}: done in {time.perf_counter() - start:.0f} s: {shown}")
    where = run_location(cfg)
    print(f"  model: {where}/model; metrics: {where}/metrics.jsonl")
    return 0
