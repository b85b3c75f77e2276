"""The per-worker training loop (runs inside Ray Train workers): one class of small named steps."""

from __future__ import annotations

import json
import os
import random
import resource
import tempfile
import time
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from bridgetower.flops import classification_flops, forward_flops, pretraining_step_flops, train_flops
from btp.config import ExperimentConfig
from btp.data.pipeline import train_batches
from btp.track import Tracker
from btp.train.build import build_model
from btp.train.optim import build_optimizer, warmup_linear_decay
from btp.train.parallel import apply_fsdp, average_gradients, replicated_params
from btp.train.storage import RunStorage, is_remote, write_text_atomic


def _cpu_peak_flops(repeats: int = 8, clock: Callable[[], float] = time.perf_counter) -> float:
    """fp32 matmul FLOP/s of this worker's CPU at its torch threads (the MFU denominator).

    The fastest of a few short products: a neighbour busy for a moment (another trial starting beside this one)
    slows some of them, and a lowered denominator would report an MFU above 1.
    """
    a = torch.randn(1024, 1024, generator=torch.Generator().manual_seed(0))  # leaves the global RNG alone
    torch.mm(a, a)
    fastest = float("inf")
    for _ in range(repeats):
        start = clock()
        torch.mm(a, a)
        fastest = min(fastest, clock() - start)
    return 2 * 1024**3 / fastest


# dense bf16 tensor-core peaks (FLOP/s) of the GPUs the cluster files name, for MFU; other GPUs report mfu 0
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L4": 121e12, "A10G": 70e12, "L40S": 362e12}


def peak_flops(device: torch.device) -> float:
    """MFU denominator: the GPU's bf16 peak from its name, or a quick fp32 matmul measurement of the CPU."""
    if device.type != "cuda":
        return _cpu_peak_flops()
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in GPU_PEAK_BF16.items() if key in name), 0.0)


def peak_memory_gb(device: torch.device) -> float:
    """Peak accelerator memory allocated on a GPU; peak resident memory of the process on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Every worker's `x` concatenated in rank order; gradients flow back to each worker's part."""
    if not x.is_floating_point():  # ids and masks: nothing to differentiate
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)
    from torch.distributed import _functional_collectives as collectives

    if hasattr(collectives, "all_gather_single_autograd"):  # torch >= 2.13; the older API warns there
        return collectives.all_gather_single_autograd(x.contiguous(), 0, dist.group.WORLD)
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(x.contiguous()))


def forward(model: torch.nn.Module, task: str, batch: dict[str, torch.Tensor]):
    """Feed a pipeline batch to the task model (the batch keys are the pipeline's contract)."""
    if task == "image_classification":  # uni-modal: the batch holds only its own modality
        return model(batch["pixel_values"], labels=batch["labels"])
    if task == "text_classification":
        return model(batch["input_ids"], batch["attention_mask"], labels=batch["labels"])
    ids, mask, pixels = batch["input_ids"], batch["attention_mask"], batch["pixel_values"]
    if task == "pretrain":
        return model(ids, mask, pixels, batch["mlm_input_ids"], batch["mlm_labels"])
    if task == "irtr":
        # ITC negatives and ITM hard negatives come from every worker's batch
        gather = gather_with_grad if dist.is_initialized() and dist.get_world_size() > 1 else None
        return model(ids, mask, pixels, image_ids=batch["image_index"], return_loss=True, gather=gather)
    return model(ids, mask, pixels, labels=batch["labels"])


def metric_labels(task: str, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    return {"pretrain": batch.get("mlm_labels"), "irtr": None}.get(task, batch.get("labels"))


@contextmanager
def _lone_dcp_quiet() -> Iterator[None]:
    """torch.distributed.checkpoint warns at every save and load without a process group, even when `no_dist`
    asks for exactly that (a lone worker, see Trainer.save_checkpoint): two lines on the console per checkpoint
    that say nothing to the user. Only that warning is silenced."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def _step_of(line: str) -> float:
    """The step of a metrics row; a row cut short by a killed process counts as after any checkpoint."""
    try:
        return json.loads(line).get("step", 0)
    except json.JSONDecodeError:
        return float("inf")


def test_scores(cfg: ExperimentConfig, predictions: list[dict[str, Any]]) -> dict[str, float]:
    """test/vqa_score overall and per question type, when the test shards say the types (synthetic data)."""
    from btp.data.vqa_eval import score_vqa
    from btp.train.build import shard_paths

    try:
        scores = score_vqa(predictions, shard_paths(cfg, "test"))
    except ValueError:  # real VQAv2 test-dev: no answers, no types; the official server scores it
        return {}
    return {
        "test/vqa_score": scores["overall"],
        **{f"test/vqa_score/{k}": v for k, v in scores["types"].items()},
    }


class Trainer:
    """Builds the sharded model and optimizer, then steps, logs, evaluates and saves."""

    def __init__(self, cfg: ExperimentConfig, run_dir: str, total_steps: int) -> None:
        import ray.train
        import ray.train.torch

        self.cfg, self.run_dir, self.total_steps = cfg, Path(run_dir), total_steps
        self.rank = ray.train.get_context().get_world_rank()
        self.world = ray.train.get_context().get_world_size()
        if cfg.train.threads:
            torch.set_num_threads(cfg.train.threads)
        self.task = cfg.data.task
        # this worker's accelerator (cuda:N with train.use_gpu, else the CPU); Ray Data delivers batches there
        self.device = ray.train.torch.get_device()
        self.model = build_model(cfg)  # same seed on every rank: identical weights before sharding
        self.model_class, self.model_config = type(self.model), self.model.config
        self.model.to(self.device)
        torch.manual_seed(cfg.train.seed + 1000 * self.rank)  # dropout and ITM negatives differ per rank
        self.replicated: list[torch.nn.Parameter] = []
        t = cfg.train
        bf16 = t.precision == "bf16" and self.device.type == "cuda"
        sharded = t.fsdp and self.world > 1
        if t.compile:  # each layer's forward; FSDP's hooks around it stay eager
            self.model.compile_layers(
                backend=t.compile_backend, **({"mode": t.compile_mode} if t.compile_mode != "default" else {})
            )
            if self.rank == 0:  # the compile itself happens in the first steps: say why they are slow
                print(
                    f"[{t.name}] torch.compile ({t.compile_backend}, mode {t.compile_mode}) of "
                    f"{len(self.model.wrap_units())} layers: the first steps compile them",
                    flush=True,
                )
        if sharded:
            apply_fsdp(self.model, bf16=bf16, device_type=self.device.type)
            self.replicated = replicated_params(self.model)
        # bf16 without FSDP's mixed-precision policy (one GPU): autocast around the forward passes
        self.autocast = torch.autocast("cuda", torch.bfloat16) if bf16 and not sharded else nullcontext()
        self.optimizer = build_optimizer(
            self.model, t.lr, t.weight_decay, t.lr_mult_head, t.lr_mult_cross_modal, tuple(t.betas), t.eps
        )
        self.scheduler = warmup_linear_decay(self.optimizer, total_steps, t.warmup, t.end_lr)
        self.step = 0
        self.epoch, self.batches_in_epoch = 0, 0  # the data position, for exact resume
        # a remote train.storage: rank 0 writes the run's files to a local staging folder and copies them up
        remote = is_remote(cfg.train.storage) and self.rank == 0
        self.store = RunStorage(cfg.train.storage, cfg.train.name) if remote else None
        if self.store is not None and not (self.run_dir / "metrics.jsonl").exists():
            self.store.pull(self.run_dir)  # restarted on another node: the metrics logged so far
        self.resumed = self.load_checkpoint()
        if self.rank == 0:
            self.trim_metrics()
        # wandb from rank 0 only (offline unless the user has a key or sets WANDB_MODE)
        self.tracker = Tracker.start(cfg, self.run_dir) if self.rank == 0 else Tracker.off()
        self.flops_per_sample = self._flops()
        self.peak_flops = peak_flops(self.device)

    def _flops(self) -> int:
        c = self.model_config
        if self.task in ("image_classification", "text_classification"):
            return train_flops(classification_flops(c, self.task, self.cfg.data.max_text_len))
        if not hasattr(c, "vision") or self.task not in ("pretrain", "vqa", "nlvr2", "snli_ve", "irtr"):
            return 0
        n, size = self.cfg.data.max_text_len, c.vision.image_size
        fwd = pretraining_step_flops(c, n, size) if self.task == "pretrain" else forward_flops(c, n, size)
        return train_flops(fwd * (2 if self.task == "nlvr2" else 1))

    # ---- one optimizer step --------------------------------------------------------------------------------
    def train_step(self, micro_batches: list[dict[str, torch.Tensor]]) -> dict[str, float]:
        """Forward/backward over the accumulation micro-batches, then one optimizer and schedule step."""
        self.model.train()
        losses: dict[str, float] = {}
        for micro in micro_batches:
            with self.autocast:
                out = forward(self.model, self.task, micro)
            (out.loss / len(micro_batches)).backward()
            for name, value in {"loss": out.loss, **out.losses}.items():
                losses[name] = losses.get(name, 0.0) + float(value.detach()) / len(micro_batches)
        average_gradients(self.replicated)
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return losses

    def micro_batches(self):
        """Groups of `grad_accum` batches from this worker's stream, epoch after epoch, from the data position.

        After a resume the batches of the current epoch that were already trained on are read and dropped:
        the pipeline is deterministic, so the run continues exactly where it stopped.
        """
        t = self.cfg.train
        group: list[dict[str, torch.Tensor]] = []
        while True:
            skip = self.batches_in_epoch
            stream = train_batches(
                "train", t.batch_size, self.cfg.data.shuffle_buffer, t.seed + self.epoch, drop_last=True
            )
            for index, batch in enumerate(stream):
                if index < skip:
                    continue
                group.append(batch)
                if len(group) == t.grad_accum:
                    self.batches_in_epoch = index + 1
                    yield group
                    group = []
            self.epoch, self.batches_in_epoch, group = self.epoch + 1, 0, []

    def fault_drill(self) -> None:
        """Fail as train.fail_at_step asks: an exception, or SIGKILL of this worker process."""
        if self.cfg.train.fail_kill:
            import signal

            print(f"[{self.cfg.train.name}] fault drill: SIGKILL of rank 0 (pid {os.getpid()})", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        raise RuntimeError(f"fault drill: train.fail_at_step={self.cfg.train.fail_at_step}")

    # ---- checkpoints ---------------------------------------------------------------------------------------
    def save_checkpoint(self, metrics: dict[str, Any]) -> None:
        """Sharded model + optimizer (DCP), schedule, step, data position and every rank's RNG, into Ray."""
        import ray.train
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint.state_dict import get_state_dict

        with tempfile.TemporaryDirectory() as tmp, _lone_dcp_quiet():
            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            # a lone worker saves without the process group: a save that coordinates through it (gloo, torch
            # 2.13 on CPU) was seen leaving every later step ~15-25 % slower; the files are the same
            dcp.save(
                {"model": model_state, "optim": optim_state},
                checkpoint_id=os.path.join(tmp, "dcp"),
                no_dist=self.world == 1,
            )
            cuda = {"cuda": torch.cuda.get_rng_state(self.device)} if self.device.type == "cuda" else {}
            torch.save(
                {"torch": torch.get_rng_state(), "python": random.getstate(), **cuda},
                os.path.join(tmp, f"rng_rank{self.rank}.pt"),
            )
            if self.rank == 0:
                meta = {
                    "step": self.step,
                    "epoch": self.epoch,
                    "batches_in_epoch": self.batches_in_epoch,
                    "scheduler": self.scheduler.state_dict(),
                }
                with open(os.path.join(tmp, "meta.json"), "w") as f:
                    json.dump(meta, f)
            ray.train.report(
                {"step": self.step, **metrics}, checkpoint=ray.train.Checkpoint.from_directory(tmp)
            )
        if self.store is not None:
            self.store.push(self.run_dir)

    def load_checkpoint(self) -> bool:
        """Continue from Ray's latest checkpoint of this run, if it has one (restart after a failure or --resume)."""
        import ray.train
        import torch.distributed.checkpoint as dcp
        from torch.distributed.checkpoint import DefaultLoadPlanner
        from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

        checkpoint = ray.train.get_checkpoint()
        if checkpoint is None:
            return False
        with checkpoint.as_directory() as directory, _lone_dcp_quiet():
            model_state, optim_state = get_state_dict(self.model, self.optimizer)
            path = os.path.join(directory, "dcp")
            alone = self.world == 1  # as in save_checkpoint
            dcp.load(
                {"model": model_state}, checkpoint_id=path, no_dist=alone
            )  # every model key must be there
            # parameters that never had a gradient (the unused RoBERTa pooler) have no optimizer state saved
            dcp.load(
                {"optim": optim_state},
                checkpoint_id=path,
                planner=DefaultLoadPlanner(allow_partial_load=True),
                no_dist=alone,
            )
            set_state_dict(
                self.model, self.optimizer, model_state_dict=model_state, optim_state_dict=optim_state
            )
            with open(os.path.join(directory, "meta.json")) as f:
                meta = json.load(f)
            rng_file = os.path.join(directory, f"rng_rank{self.rank}.pt")
            if os.path.exists(rng_file):  # absent when the run restarts with more workers than it saved
                rng = torch.load(rng_file, weights_only=True)
                torch.set_rng_state(rng["torch"])
                random.setstate(rng["python"])
                if "cuda" in rng and self.device.type == "cuda":
                    torch.cuda.set_rng_state(rng["cuda"], self.device)
        self.scheduler.load_state_dict(meta["scheduler"])
        self.step, self.epoch, self.batches_in_epoch = meta["step"], meta["epoch"], meta["batches_in_epoch"]
        if self.rank == 0:
            print(
                f"[{self.cfg.train.name}] resumed at step {self.step} (epoch {self.epoch}, "
                f"batch {self.batches_in_epoch})",
                flush=True,
            )
        return True

    def trim_metrics(self) -> None:
        """Drop the metrics a restarted run logged after its checkpoint: it logs those steps again."""
        path = self.run_dir / "metrics.jsonl"
        if not path.exists():
            return
        rows = [line for line in path.read_text().splitlines() if line.strip()]
        kept = [line for line in rows if _step_of(line) <= self.step]
        if len(kept) != len(rows):
            write_text_atomic(path, "".join(line + "\n" for line in kept))  # a kill now keeps every row

    # ---- evaluation ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Task metrics over this worker's part of the validation (or test) split, summed across workers."""
        import ray.train

        try:
            shard = ray.train.get_dataset_shard(split)
        except KeyError:
            return {}
        if shard is None:
            return {}
        self.model.eval()
        if self.task == "irtr":
            return self.evaluate_retrieval(shard)
        sums: dict[str, float] = {}
        count = 0
        for batch in shard.iter_torch_batches(batch_size=self.cfg.train.batch_size):
            with self.autocast:
                out = forward(self.model, self.task, batch)
            n = len(batch["sample_id"])
            values = {"loss": float(out.loss), **self.model.metrics(out, metric_labels(self.task, batch))}
            for k, v in values.items():
                sums[k] = sums.get(k, 0.0) + v * n
            count += n
        keys = sorted(sums)
        totals = torch.tensor([sums[k] for k in keys] + [count], dtype=torch.float64, device=self.device)
        if dist.is_initialized():
            dist.all_reduce(totals)
        return {f"{split}/{k}": float(totals[i] / max(1.0, float(totals[-1]))) for i, k in enumerate(keys)}

    @torch.no_grad()
    def evaluate_retrieval(self, shard) -> dict[str, float]:
        """Recall@1/5/10 both ways over the whole validation split (every caption against every image).

        Every rank gathers the split, scores its share of the captions (padded to equal shares: FSDP needs the
        same number of forward passes on every rank), and the score rows are gathered back.
        """
        from bridgetower.metrics import retrieval_recall

        parts = []
        for batch in shard.iter_torch_batches(batch_size=self.cfg.train.batch_size):
            parts.append(
                {k: batch[k].cpu() for k in ("input_ids", "attention_mask", "pixel_values", "image_index")}
            )
        every = [parts]
        if dist.is_initialized() and self.world > 1:
            every = [None] * self.world
            dist.all_gather_object(every, parts)
        batches = [b for rank_parts in every for b in rank_parts]
        if not batches:
            return {}
        ids = torch.cat([b["input_ids"] for b in batches])
        mask = torch.cat([b["attention_mask"] for b in batches])
        keys = torch.cat([b["image_index"] for b in batches])
        pixels_of: dict[int, torch.Tensor] = {}
        for b in batches:
            for key, pixels in zip(b["image_index"].tolist(), b["pixel_values"]):
                pixels_of.setdefault(key, pixels)
        order = sorted(pixels_of)
        column = {key: i for i, key in enumerate(order)}
        images = torch.stack([pixels_of[k] for k in order])
        share = -(-len(ids) // self.world)
        mine = [min(i, len(ids) - 1) for i in range(self.rank * share, (self.rank + 1) * share)]
        model = self.model
        if hasattr(model, "unshard"):  # FSDP2: the root's own parameters are gathered only in forward()
            model.unshard()
        try:
            with self.autocast:
                scores = model.score_matrix(
                    ids[mine].to(self.device), mask[mine].to(self.device), images.to(self.device)
                ).float()
        finally:
            if hasattr(model, "reshard"):
                model.reshard()
        if dist.is_initialized() and self.world > 1:
            rows = [torch.empty_like(scores) for _ in range(self.world)]
            dist.all_gather(rows, scores.contiguous())
            scores = torch.cat(rows)
        scores = scores[: len(ids)].cpu()
        recall = retrieval_recall(scores, torch.tensor([column[k] for k in keys.tolist()]))
        return {f"val/{k}": v for k, v in recall.items()}

    @torch.no_grad()
    def predict_vqa(self) -> dict[str, float]:
        """VQA answers for the test split as the official evaluation server takes them (rank 0 writes).

        RUN/vqa_test_predictions.json: [{"question_id": int, "answer": str}, ...], sorted by question_id.
        When the test shards carry question types (the synthetic ones), returns test/ scores per type.
        """
        import ray.train

        try:
            shard = ray.train.get_dataset_shard("test")
        except KeyError:
            return {}
        if shard is None or not self.cfg.data.vqa_answers:
            return {}
        answers = json.loads(Path(self.cfg.data.vqa_answers).read_text())
        self.model.eval()
        mine: list[tuple[int, int]] = []
        for batch in shard.iter_torch_batches(batch_size=self.cfg.train.batch_size):
            with self.autocast:
                logits = forward(self.model, self.task, batch).logits
            mine += zip(batch["question_id"].tolist(), logits.argmax(-1).tolist())
        every = [mine]
        if dist.is_initialized() and self.world > 1:
            every = [None] * self.world
            dist.all_gather_object(every, mine)
        if self.rank == 0:
            rows = sorted((qid, label) for part in every for qid, label in part)
            out = [{"question_id": qid, "answer": answers[label]} for qid, label in rows]
            path = self.run_dir / "vqa_test_predictions.json"
            path.write_text(json.dumps(out) + "\n")
            print(f"[{self.cfg.train.name}] {len(out)} test answers -> {path}", flush=True)
            return test_scores(self.cfg, out)
        return {}

    # ---- logging and saving --------------------------------------------------------------------------------
    def log(self, metrics: dict[str, Any], track: bool = True, push: bool = False) -> None:
        """Append to metrics.jsonl and print (rank 0), then report to Ray (every rank).

        `push`: copy the run's files up to a remote train.storage before reporting (the last report may end
        the run at once).
        """
        import ray.train

        metrics = {"step": self.step, **metrics}
        if self.rank == 0:
            with open(self.run_dir / "metrics.jsonl", "a") as f:
                f.write(json.dumps(metrics) + "\n")
            if push and self.store is not None:
                self.store.push(self.run_dir)
            shown = "  ".join(
                f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in metrics.items()
            )
            print(f"[{self.cfg.train.name}] {shown}", flush=True)
            if track:
                self.tracker.log(metrics, step=self.step)
        ray.train.report(metrics)

    def save_model(self) -> None:
        """The final weights as `save_pretrained` (safetensors), gathered to rank 0 from the shards."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        if dist.is_initialized() and self.world > 1:
            state = get_model_state_dict(
                self.model, options=StateDictOptions(full_state_dict=True, cpu_offload=True)
            )
        else:
            state = self.model.state_dict()
        if self.rank == 0:
            plain = self.model_class(self.model_config)
            plain.load_state_dict(state)
            plain.save_pretrained(self.run_dir / "model")

    def train(self) -> None:
        t = self.cfg.train
        stream = self.micro_batches()
        window_start, waited, samples = time.perf_counter(), 0.0, 0
        while self.step < self.total_steps:
            fetch = time.perf_counter()
            group = next(stream)
            waited += time.perf_counter() - fetch
            if t.fail_at_step == self.step + 1 and not self.resumed and self.rank == 0:
                self.fault_drill()
            losses = self.train_step(group)
            samples += sum(len(b["sample_id"]) for b in group) * self.world
            if self.step % t.log_every == 0 or self.step == self.total_steps:
                elapsed = time.perf_counter() - window_start
                throughput = samples / elapsed
                self.log(
                    {
                        **{f"train/{k}": v for k, v in losses.items()},
                        "lr": self.scheduler.get_last_lr()[0],
                        "samples_per_s": throughput,
                        "data_wait_share": waited / elapsed,
                        "mfu": self.flops_per_sample * throughput / (self.peak_flops * self.world),
                        "peak_memory_gb": peak_memory_gb(self.device),
                    }
                )
                window_start, waited, samples = time.perf_counter(), 0.0, 0
            if t.eval_every and self.step % t.eval_every == 0 and self.step < self.total_steps:
                self.log(self.evaluate())
            if t.checkpoint_every and self.step % t.checkpoint_every == 0 and self.step < self.total_steps:
                self.save_checkpoint({f"train/{k}": v for k, v in losses.items()})
        final = self.evaluate()
        if self.task == "vqa":
            final.update(self.predict_vqa())
        elif self.task in ("image_classification", "text_classification"):
            final.update(self.evaluate("test"))  # the driver passes a test split only when there is one
        self.save_model()
        if self.rank == 0:
            # whole or absent: a study resumed after its driver was killed takes a summary as the trial's result
            write_text_atomic(
                self.run_dir / "summary.json", json.dumps({"steps": self.step, **final}, indent=2) + "\n"
            )
            self.tracker.log(final, step=self.step)
            self.tracker.finish({"steps": self.step, **final})
        # reported last: a scheduler (ASHA at max_t) may end the run as soon as it sees this report
        self.log(final, track=False, push=True)


def train_loop_per_worker(config: dict[str, Any]) -> None:
    """Ray Train entry point."""
    import logging

    from omegaconf import OmegaConf

    from btp.train.run import ray_log_level

    # Ray Train logs every report at INFO on the console (the run prints its own progress); its module logs
    # under its file name, outside the "ray.train" logger
    try:
        from ray.train.v2._internal.execution import context as train_context

        logging.getLogger(train_context.__file__).setLevel(ray_log_level())
    except ImportError:  # another Ray version: its logs stay as they are
        pass

    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(ExperimentConfig), config["experiment"]))
    Trainer(cfg, config["run_dir"], config["total_steps"]).train()
