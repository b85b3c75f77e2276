"""`btp bench train`: the training step under Ray Train vs under torchrun (FSDP2, no Ray); memory of 2 workers vs 1.

Both ways run the platform's own step (build_model, apply_fsdp, build_optimizer, warmup_linear_decay and
`Trainer.train_step`) on the same synthetic in-memory pretraining batches (MLM + ITM, fixed seed), so the
difference is the framework: Ray Train's worker group and its report path (`ray.train.report` every
`--report-every` steps, as `btp train` does every `train.log_every`) against a plain torchrun process group.
Each worker writes its timings and memory to a JSON file that the driver reads back.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# a mid-size model: the base preset narrowed to 512 and made shallower (~96M parameters, of which 2 x 26M
# are the RoBERTa vocabulary's embeddings and MLM decoder): its model state (~1.5 GB with AdamW) dominates
# a worker's memory, and a step takes seconds on a small CPU host
MID = {
    "hidden_size": 512,
    "num_heads": 8,
    "intermediate_size": 2048,
    "num_layers": 2,
    "vision": {"hidden_size": 512, "num_layers": 4},
    "text": {"hidden_size": 512, "num_layers": 4, "num_heads": 8, "intermediate_size": 2048},
}
SIZES: dict[str, tuple[str, dict[str, Any]]] = {
    "tiny": ("tiny", {}),
    "mid": ("base", MID),
    "base": ("base", {}),
    "large": ("large", {}),
}
RATIO_GOAL = 0.95
MEMORY_GOAL = 0.55
MB = 2**20


# ---- the worker: the same code under Ray Train and under torchrun ---------------------------------------------
def _experiment(config: dict[str, Any], world: int):
    from btp.config import DataConfig, ExperimentConfig, ModelConfig, TrackConfig, TrainConfig

    preset, overrides = SIZES[config["size"]]
    return ExperimentConfig(
        model=ModelConfig(preset=preset, config=json.loads(json.dumps(overrides))),
        data=DataConfig(
            task="pretrain", train=[], image_size=config["image_size"], max_text_len=config["text_len"]
        ),
        train=TrainConfig(
            num_workers=world,
            batch_size=config["batch"],
            seed=config["seed"],
            log_every=config["report_every"],
        ),
        track=TrackConfig(wandb=False),
    )


def synthetic_batches(
    vocab: int, batch: int, text_len: int, image_size: int, seed: int, count: int = 4
) -> list[dict[str, Any]]:
    """`count` pretraining batches as the pipeline makes them (text, image, 15 % of the tokens masked)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        ids = torch.randint(3, vocab, (batch, text_len), generator=g)
        ids[:, 0], ids[:, -1] = 0, 2  # <s> ... </s>
        masked = torch.rand(batch, text_len, generator=g) < 0.15
        masked[:, 0] = masked[:, -1] = False
        masked[:, 1] = True  # at least one MLM target per row
        out.append(
            {
                "input_ids": ids,
                "attention_mask": torch.ones(batch, text_len, dtype=torch.long),
                "pixel_values": torch.randn(batch, 3, image_size, image_size, generator=g),
                "mlm_input_ids": ids.masked_fill(masked, 3),
                "mlm_labels": ids.masked_fill(~masked, -100),
            }
        )
    return out


def _bytes(tensors) -> int:
    """Bytes this rank holds of the tensors (the local shard of a DTensor)."""
    from btp.train.parallel import local_numel

    return sum(local_numel([t]) * t.element_size() for t in tensors)


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


def bench_worker(config: dict[str, Any]) -> None:
    """Warm-up steps, then timed steps; writes OUT/rank{R}.json. Ray Train worker or torchrun process."""
    import torch
    import torch.distributed as dist

    from btp.train.build import build_model
    from btp.train.loop import Trainer
    from btp.train.optim import build_optimizer, warmup_linear_decay
    from btp.train.parallel import apply_fsdp

    on_ray = config["launcher"] == "ray"
    if on_ray:
        import ray.train

        context = ray.train.get_context()
        rank, world = context.get_world_rank(), context.get_world_size()
    else:
        rank, world = int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))
        if world > 1:
            dist.init_process_group("gloo")
    torch.set_num_threads(config["threads"])
    cfg = _experiment(config, world)
    t = cfg.train
    total = config["warmup_steps"] + config["steps"]
    rss_before_model = _rss()

    # as Trainer.__init__ builds them
    model = build_model(cfg)
    torch.manual_seed(t.seed + 1000 * rank)
    sharded = t.fsdp and world > 1
    if sharded:
        apply_fsdp(model)
    optimizer = build_optimizer(
        model, t.lr, t.weight_decay, t.lr_mult_head, t.lr_mult_cross_modal, tuple(t.betas), t.eps
    )
    scheduler = warmup_linear_decay(optimizer, total, t.warmup, t.end_lr)
    grads = {"bytes": 0}

    def count_grads(opt, args, kwargs) -> None:
        held = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
        grads["bytes"] = max(grads["bytes"], _bytes(held))

    optimizer.register_step_pre_hook(count_grads)

    class Step:
        """What Trainer.train_step uses, set up as Trainer.__init__ does: the platform's own step, not a copy."""

        train_step = Trainer.train_step

        def __init__(self) -> None:
            self.model, self.task, self.step = model, cfg.data.task, 0
            self.optimizer, self.scheduler = optimizer, scheduler
            # parameters FSDP left whole (scalars): the step averages their gradients itself
            self.replicated = [p for p in model.parameters() if sharded and not hasattr(p, "to_local")]
            self.autocast = contextlib.nullcontext()  # fp32 on the CPU, as Trainer on a CPU worker

    stepper = Step()
    vocab = model.config.text.vocab_size
    batches = synthetic_batches(
        vocab, t.batch_size, config["text_len"], model.config.vision.image_size, t.seed * 1000 + rank
    )
    metrics_file = Path(config["out"]) / f"metrics_{config['launcher']}.jsonl"

    def log(losses: dict[str, float], samples_per_s: float) -> None:
        """What Trainer.log does every train.log_every steps: a metrics row from rank 0; on Ray, a report."""
        metrics = {
            "step": stepper.step,
            **{f"train/{k}": v for k, v in losses.items()},
            "lr": scheduler.get_last_lr()[0],
            "samples_per_s": samples_per_s,
            "peak_memory_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
        }
        if rank == 0:
            with open(metrics_file, "a") as f:
                f.write(json.dumps(metrics) + "\n")
        if on_ray:
            ray.train.report(metrics)

    def barrier() -> None:
        if dist.is_initialized() and world > 1:
            dist.barrier()

    warm_start = time.perf_counter()
    for i in range(config["warmup_steps"]):
        losses = stepper.train_step([batches[i % len(batches)]])
    if config["warmup_steps"]:  # the first report's one-off cost stays out of the timed window
        log(losses, 0.0)
    barrier()
    start = window = time.perf_counter()
    warm_s = start - warm_start
    losses_seen = []
    for i in range(config["steps"]):
        losses = stepper.train_step([batches[(config["warmup_steps"] + i) % len(batches)]])
        losses_seen.append(losses["loss"])
        if (i + 1) % config["report_every"] == 0 or i + 1 == config["steps"]:
            now = time.perf_counter()
            done = (i % config["report_every"]) + 1
            log(losses, done * t.batch_size * world / (now - window))
            window = time.perf_counter()
    barrier()
    elapsed = time.perf_counter() - start
    params = _bytes(model.parameters())
    optim = _bytes(v for state in optimizer.state.values() for v in state.values() if torch.is_tensor(v))
    result = {
        "rank": rank,
        "world": world,
        "threads": torch.get_num_threads(),
        "niceness": os.nice(0),
        "steps": config["steps"],
        "seconds": elapsed,
        "warmup_seconds": warm_s,
        "steps_per_s": config["steps"] / elapsed,
        "losses": losses_seen,
        "num_params": sum(p.numel() for p in model.parameters()),
        "params_mb": params / MB,
        "grads_mb": grads["bytes"] / MB,
        "optimizer_mb": optim / MB,
        "model_state_mb": (params + grads["bytes"] + optim) / MB,
        "rss_before_model_mb": rss_before_model / MB,
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / MB,
    }
    (Path(config["out"]) / f"rank{rank}.json").write_text(json.dumps(result))
    if not on_ray and dist.is_initialized():
        dist.destroy_process_group()


def _collect(out: Path, world: int) -> dict[str, Any]:
    """Rank 0's timings; memory of the largest worker."""
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in range(world)]
    first = ranks[0]
    keys = ("steps_per_s", "seconds", "warmup_seconds", "threads", "niceness", "num_params")
    result = {k: first[k] for k in keys}
    result["final_loss"] = first["losses"][-1] if first["losses"] else None
    result["losses"] = first["losses"]
    for key in (
        "params_mb",
        "grads_mb",
        "optimizer_mb",
        "model_state_mb",
        "rss_before_model_mb",
        "peak_rss_mb",
    ):
        result[key] = max(r[key] for r in ranks)
    return result


# ---- the two launchers ----------------------------------------------------------------------------------------
def run_torchrun(config: dict[str, Any], workers: int, niceness: int = 0) -> dict[str, Any]:
    """`torchrun --standalone --nproc_per_node W -m btp.bench.train --worker CONFIG`, no Ray, at `niceness`."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        spec = out / "config.json"
        spec.write_text(json.dumps({**config, "launcher": "torchrun", "out": str(out)}))
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc_per_node",
            str(workers),
            "-m",
            "btp.bench.train",
            "--worker",
            str(spec),
        ]
        env = {**os.environ, "OMP_NUM_THREADS": str(config["threads"])}
        start = time.perf_counter()
        raise_by = max(0, niceness - os.nice(0))
        proc = subprocess.run(
            command, env=env, capture_output=True, text=True, preexec_fn=lambda: os.nice(raise_by)
        )
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-30:])
            raise RuntimeError(f"torchrun failed (exit {proc.returncode}):\n{tail}")
        result = _collect(out, workers)
    result["wall_s"] = time.perf_counter() - start
    return result


def run_ray(config: dict[str, Any], workers: int, cpus_per_worker: float) -> dict[str, Any]:
    """A TorchTrainer with `workers` workers on the running local Ray, as `btp train` starts one."""
    from ray.train import RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        start = time.perf_counter()
        trainer = TorchTrainer(
            bench_worker,
            train_loop_config={**config, "launcher": "ray", "out": str(out)},
            scaling_config=ScalingConfig(
                num_workers=workers, use_gpu=False, resources_per_worker={"CPU": cpus_per_worker}
            ),
            run_config=RunConfig(name=f"bench_train_{workers}w", storage_path=str(out / "ray")),
        )
        trainer.fit()
        result = _collect(out, workers)
    result["wall_s"] = time.perf_counter() - start
    return result


@contextlib.contextmanager
def _bench_ray(workers: int) -> Iterator[None]:
    """A local Ray as `btp train` starts one (its own dashboard: see local_ray_options), shut down at the end."""
    import ray

    from btp.train.run import quiet_ray_env, ray_session

    quiet_ray_env()  # as `btp train` sets it before its Ray starts: report() waits for one controller poll
    with ray_session(num_cpus=max(2, workers), log_to_driver=False):
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield


# ---- the whole `btp train` on synthetic data ----------------------------------------------------------------
def run_e2e(args: argparse.Namespace, workers: int, out: Path) -> dict[str, Any]:
    """`btp train` (Ray Data pipeline, Trainer, metrics) on synthetic shards; steps/s after the first window."""
    import yaml

    from btp.config import load_experiment
    from btp.data.synth import write_synthetic
    from btp.train.run import train

    preset, overrides = SIZES[args.preset]
    data = out / "synth"
    per_step = workers * args.batch
    write_synthetic(data, images=max(60, 4 * per_step), seed=0, image_size=max(64, args.image_size))
    log_every = max(1, args.e2e_steps // 3)
    experiment = {
        "model": {"preset": preset, "config": json.loads(json.dumps(overrides))},
        "data": {
            "root": str(data),
            "task": "pretrain",
            "train": ["coco_caption_karpathy_train_*.arrow"],
            "image_size": args.image_size,
            "max_text_len": args.text_len,
            "transform": "clip",
        },
        "train": {
            "name": "bench_e2e",
            "storage": str(out / "runs"),
            "num_workers": workers,
            "cpus_per_worker": args.cpus_per_worker,
            "batch_size": args.batch,
            "max_steps": args.e2e_steps,
            "epochs": 1000,
            "log_every": log_every,
            "checkpoint_every": args.e2e_steps,
            "seed": args.seed,
        },
        "track": {"wandb": False},
    }
    path = out / "bench_e2e.yaml"
    path.write_text(yaml.safe_dump(experiment))
    start = time.perf_counter()
    train(load_experiment(path))
    wall = time.perf_counter() - start
    rows = [
        json.loads(line) for line in (out / "runs" / "bench_e2e" / "metrics.jsonl").read_text().splitlines()
    ]
    windows = [r for r in rows if "samples_per_s" in r]
    later = windows[1:] or windows  # the first window holds the pipeline's start and the first steps
    steps, seconds, previous = 0, 0.0, windows[0]["step"] if len(windows) > 1 else 0
    for row in later:
        n = row["step"] - previous
        steps, seconds, previous = steps + n, seconds + n * per_step / row["samples_per_s"], row["step"]
    return {
        "steps_per_s": steps / seconds,
        "samples_per_s": steps * per_step / seconds,
        "data_wait_share": sum(r["data_wait_share"] for r in later) / len(later),
        "timed_steps": steps,
        "wall_s": wall,
    }


# ---- the command ----------------------------------------------------------------------------------------------
def _load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def _best(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The least disturbed round (fastest): other load on the host only ever slows a run down."""
    return max(rounds, key=lambda r: r["steps_per_s"])


def _check(args: argparse.Namespace, config: dict[str, Any], workers: int) -> str | None:
    """What is wrong with the options, before any process starts (the model config is validated too)."""
    from btp.train.build import model_config

    for name, least in (("batch", 2), ("steps", 1), ("report_every", 1), ("rounds", 1), ("warmup_steps", 0)):
        if getattr(args, name) < least:
            return f"--{name.replace('_', '-')} must be at least {least}"
    if args.e2e_steps < 0:
        return "--e2e-steps must be 0 (skip) or more"
    try:
        model_config(_experiment(config, workers))
    except ValueError as err:
        return f"--preset {args.preset} --image-size {args.image_size}: {err}"
    return None


def run_train_bench(args: argparse.Namespace) -> int:
    import ray
    import torch

    workers = 2
    cores = os.cpu_count() or 1
    threads = args.threads or max(1, cores // workers)
    preset, overrides = SIZES[args.preset]
    config = {
        "size": args.preset,
        "batch": args.batch,
        "text_len": args.text_len,
        "image_size": args.image_size,
        "warmup_steps": args.warmup_steps,
        "steps": args.steps,
        "report_every": args.report_every,
        "threads": threads,
        "seed": args.seed,
    }
    problem = _check(args, config, workers)
    if problem:
        print(f"btp bench train: {problem}", file=sys.stderr)
        return 2
    report: dict[str, Any] = {
        "preset": args.preset,
        "base_preset": preset,
        "model_overrides": overrides,
        "workers": workers,
        "batch_per_worker": args.batch,
        "text_len": args.text_len,
        "image_size": args.image_size,
        "threads_per_worker": threads,
        "cpus_per_worker": args.cpus_per_worker,
        "cores": cores,
        "warmup_steps": args.warmup_steps,
        "steps": args.steps,
        "report_every": args.report_every,
        "rounds": args.rounds,
        "torch": torch.__version__,
        "ray": ray.__version__,
        "load_average_start": _load(),
    }
    begin = time.perf_counter()
    print(
        f"btp bench train: preset {args.preset}, {workers} workers x batch {args.batch}, {args.text_len} tokens, "
        f"{args.image_size} px, {threads} thread(s) per worker, {args.warmup_steps} warm-up + {args.steps} timed "
        f"steps, report every {args.report_every}; load average {report['load_average_start']} on {cores} cores",
        flush=True,
    )
    torchrun_rounds: list[dict[str, Any]] = []
    ray_rounds: list[dict[str, Any]] = []
    one: dict[str, Any] = {}
    beside: dict[str, Any] = {}
    for round_ in range(args.rounds):
        tag = f"[round {round_ + 1}/{args.rounds}]"
        print(f"  {tag} Ray Train, {workers} workers, FSDP2, gloo ...", flush=True)
        with _bench_ray(workers):
            ray_rounds.append(run_ray(config, workers, args.cpus_per_worker))
            r = ray_rounds[-1]
            print(f"  {tag}   {r['steps_per_s']:.3f} steps/s ({r['wall_s']:.0f} s with start-up)", flush=True)
            # Ray starts its workers niced (15 by default): torchrun gets the same, so other load on a shared
            # host weighs on both alike (on an idle host niceness changes nothing)
            nice = r["niceness"]
            if round_ == 0:
                print("  Ray Train, 1 worker (memory baseline) ...", flush=True)
                one = run_ray(config, 1, args.cpus_per_worker)
                print(
                    f"    {one['steps_per_s']:.3f} steps/s ({one['wall_s']:.0f} s with start-up)", flush=True
                )
                # Ray's own processes (raylet, GCS, dashboard, agents, idle workers) share the cores with any
                # step: torchrun once beside this Ray, idle now, tells that cost apart from Ray Train's
                print(f"  torchrun beside the idle local Ray (niceness {nice}) ...", flush=True)
                beside = run_torchrun(config, workers, nice)
                print(
                    f"    {beside['steps_per_s']:.3f} steps/s ({beside['wall_s']:.0f} s with start-up)",
                    flush=True,
                )
        print(f"  {tag} torchrun, {workers} processes, FSDP2, gloo, no Ray (niceness {nice}) ...", flush=True)
        torchrun_rounds.append(run_torchrun(config, workers, nice))
        r = torchrun_rounds[-1]
        print(f"  {tag}   {r['steps_per_s']:.3f} steps/s ({r['wall_s']:.0f} s with start-up)", flush=True)
    e2e: dict[str, Any] = {}
    e2e_error = None
    if args.e2e_steps:
        print(
            f"  btp train end to end ({args.e2e_steps} steps on synthetic shards, Ray Data pipeline) ...",
            flush=True,
        )
        try:
            with _bench_ray(workers), tempfile.TemporaryDirectory() as tmp:
                e2e = run_e2e(args, workers, Path(tmp))
            print(f"    {e2e['steps_per_s']:.3f} steps/s ({e2e['wall_s']:.0f} s with start-up)", flush=True)
        except Exception as err:  # the step figures above stand; the failure is reported with them
            lines = str(err).strip().splitlines()
            e2e_error = f"{type(err).__name__}: {lines[0] if lines else ''}"
            print(f"    btp train failed: {e2e_error}", flush=True)

    tr, ry = _best(torchrun_rounds), _best(ray_rounds)
    two = max(ray_rounds, key=lambda r: r["model_state_mb"])  # memory: the largest of the 2-worker runs
    report.update(
        num_params=ry["num_params"],
        torchrun_steps_per_s=tr["steps_per_s"],
        ray_steps_per_s=ry["steps_per_s"],
        torchrun_samples_per_s=tr["steps_per_s"] * workers * args.batch,
        ray_samples_per_s=ry["steps_per_s"] * workers * args.batch,
        ratio=ry["steps_per_s"] / tr["steps_per_s"],
        ratio_goal=RATIO_GOAL,
        torchrun_beside_ray_steps_per_s=beside["steps_per_s"],
        ratio_beside_ray=ry["steps_per_s"] / beside["steps_per_s"],
        ray_host_slowdown=1 - beside["steps_per_s"] / tr["steps_per_s"],
        torchrun_rounds_steps_per_s=[r["steps_per_s"] for r in torchrun_rounds],
        ray_rounds_steps_per_s=[r["steps_per_s"] for r in ray_rounds],
        ray_worker_niceness=ry["niceness"],
        torchrun_niceness=tr["niceness"],
        torchrun_rounds_wall_s=[r["wall_s"] for r in torchrun_rounds],
        ray_rounds_wall_s=[r["wall_s"] for r in ray_rounds],
        one_worker_wall_s=one["wall_s"],
        same_losses=all(r["losses"] == torchrun_rounds[0]["losses"] for r in torchrun_rounds + ray_rounds),
        final_loss=ry["final_loss"],
        one_worker_steps_per_s=one["steps_per_s"],
        memory_ratio=two["model_state_mb"] / one["model_state_mb"],
        memory_goal=MEMORY_GOAL,
        rss_ratio=two["peak_rss_mb"] / one["peak_rss_mb"],
        torchrun_model_state_mb=tr["model_state_mb"],
        torchrun_peak_rss_mb=tr["peak_rss_mb"],
    )
    for name, run in (("one_worker", one), ("two_workers", two)):
        for key in (
            "params_mb",
            "grads_mb",
            "optimizer_mb",
            "model_state_mb",
            "rss_before_model_mb",
            "peak_rss_mb",
        ):
            report[f"{name}_{key}"] = run[key]
    report.update(
        e2e_steps=args.e2e_steps,
        e2e_steps_per_s=e2e.get("steps_per_s"),
        e2e_samples_per_s=e2e.get("samples_per_s"),
        e2e_data_wait_share=e2e.get("data_wait_share"),
        e2e_ratio=e2e["steps_per_s"] / tr["steps_per_s"] if e2e else None,
        e2e_wall_s=e2e.get("wall_s"),
        e2e_timed_steps=e2e.get("timed_steps"),
        e2e_error=e2e_error,
        load_average_end=_load(),
        wall_s=time.perf_counter() - begin,
    )
    _print_table(report)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    return 1 if e2e_error else 0


def _print_table(r: dict[str, Any]) -> None:
    def verdict(ok: bool) -> str:
        return "meets the goal" if ok else "misses the goal"

    rounds = f"best of {r['rounds']} round(s)" if r["rounds"] > 1 else "1 round"
    print(
        f"\n  preset {r['preset']} ({r['num_params'] / 1e6:.1f}M parameters), {r['workers']} workers x batch "
        f"{r['batch_per_worker']}, {r['text_len']} tokens, {r['image_size']} px, {r['threads_per_worker']} thread(s) "
        f"per worker, niceness {r['ray_worker_niceness']} (Ray) / {r['torchrun_niceness']} (torchrun)"
    )
    print(f"  {'steps/s':<44}{'torchrun':>12}{'Ray Train':>12}{'ratio':>10}")
    print(
        f"  {'FSDP2 step, ' + rounds:<44}{r['torchrun_steps_per_s']:>12.3f}{r['ray_steps_per_s']:>12.3f}"
        f"{r['ratio']:>10.3f}   goal >= {r['ratio_goal']}: {verdict(r['ratio'] >= r['ratio_goal'])}"
    )
    print(
        f"  {'samples/s':<44}{r['torchrun_samples_per_s']:>12.2f}{r['ray_samples_per_s']:>12.2f}"
        f"   (identical losses both ways: {'yes' if r['same_losses'] else 'NO'}; final loss {r['final_loss']:.4f})"
    )
    print(
        f"  {'torchrun beside an idle local Ray':<44}{r['torchrun_beside_ray_steps_per_s']:>12.3f}"
        f"{r['ray_steps_per_s']:>12.3f}{r['ratio_beside_ray']:>10.3f}   (Ray's own processes on the same cores: "
        f"torchrun {r['ray_host_slowdown']:.0%} slower)"
    )
    if len(r["torchrun_rounds_steps_per_s"]) > 1:
        shown = ", ".join(
            f"{a:.3f}/{b:.3f}" for a, b in zip(r["torchrun_rounds_steps_per_s"], r["ray_rounds_steps_per_s"])
        )
        print(f"  {'  every round (torchrun/Ray)':<44}{shown}")
    if r["e2e_error"]:
        print(f"  {'btp train end to end':<44}failed: {r['e2e_error']}")
    if r["e2e_steps_per_s"] is not None:
        print(
            f"  {'btp train end to end (Ray Data, real loop)':<44}{'':>12}{r['e2e_steps_per_s']:>12.3f}"
            f"{r['e2e_ratio']:>10.3f}   (data wait {r['e2e_data_wait_share']:.0%} of the step time)"
        )
    print(f"\n  {'per-worker memory (MB)':<44}{'1 worker':>12}{'2 workers':>12}{'ratio':>10}")
    for key, label in (
        ("params_mb", "  parameters"),
        ("grads_mb", "  gradients"),
        ("optimizer_mb", "  AdamW state"),
        ("model_state_mb", "model state (params + grads + optimizer)"),
        ("peak_rss_mb", "peak RSS of the worker process"),
        ("rss_before_model_mb", "  RSS before the model is built"),
    ):
        a, b = r[f"one_worker_{key}"], r[f"two_workers_{key}"]
        print(f"  {label:<44}{a:>12.0f}{b:>12.0f}{b / a if a else float('nan'):>10.3f}")
    print(
        f"  memory_ratio (model state, 2 workers / 1) {r['memory_ratio']:.3f}: goal <= {r['memory_goal']}: "
        f"{verdict(r['memory_ratio'] <= r['memory_goal'])}; peak RSS ratio {r['rss_ratio']:.3f}"
    )
    if r["rss_ratio"] > r["memory_goal"]:
        print(
            "    (peak RSS also holds what every process has before the model, FSDP2's unsharded parameters "
            "and gradients of the unit in flight, and what glibc malloc keeps after freeing them; "
            "MALLOC_MMAP_THRESHOLD_=65536 in the environment makes malloc return large blocks at once)"
        )
    print(
        f"  torchrun 2 workers: model state {r['torchrun_model_state_mb']:.0f} MB, peak RSS "
        f"{r['torchrun_peak_rss_mb']:.0f} MB per worker; load average {r['load_average_start']} -> "
        f"{r['load_average_end']}; {r['wall_s']:.0f} s in all"
    )


def _worker_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m btp.bench.train")
    parser.add_argument("--worker", required=True, metavar="CONFIG.json", help="run one torchrun worker")
    bench_worker(json.loads(Path(parser.parse_args(argv).worker).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1:]))
