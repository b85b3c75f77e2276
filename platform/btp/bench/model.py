"""`btp bench model`: our BridgeTower vs transformers' port on the same weights and inputs; FLOP/s and MFU."""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from bridgetower import (
    BridgeTowerConfig,
    BridgeTowerForPretraining,
    BridgeTowerForRetrieval,
    itm_negative_index,
)
from bridgetower.flops import forward_flops, pretraining_step_flops, train_flops, two_pass_pretraining_flops


def matmul_peak(dtype: torch.dtype = torch.float32, size: int = 4096, repeats: int = 5) -> float:
    """Measured FLOP/s of a large square matmul: the practical peak of this machine for `dtype`."""
    a = torch.randn(size, size, dtype=dtype)
    b = torch.randn(size, size, dtype=dtype)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best


def _time(step: Callable[[], Any]) -> float:
    start = time.perf_counter()
    step()
    return time.perf_counter() - start


def interleaved(steps: dict[str, Callable[[], Any]], repeats: int) -> dict[str, float]:
    """Median seconds per call of each step, run in turns so machine noise hits all of them alike."""
    for step in steps.values():  # warm-up
        step()
    times: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(repeats):
        for name, step in steps.items():
            times[name].append(_time(step))
    return {name: statistics.median(t) for name, t in times.items()}


def _inputs(cfg: BridgeTowerConfig, batch: int, text_len: int, image_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.text.vocab_size, (batch, text_len), generator=g)
    mask = torch.ones(batch, text_len, dtype=torch.long)
    pixels = torch.randn(batch, 3, image_size, image_size, generator=g)
    return ids, mask, pixels


def _train_step(forward: Callable[[], torch.Tensor], model: torch.nn.Module) -> Callable[[], None]:
    def step() -> None:
        model.zero_grad(set_to_none=True)
        forward().backward()

    return step


def _models(cfg: BridgeTowerConfig):
    """Ours and transformers' ITM model holding the same weights (via our save_pretrained)."""
    import transformers

    from bridgetower.formats import transformers_compatible

    reasons = transformers_compatible(cfg)
    if reasons:
        raise SystemExit(f"btp bench model: transformers cannot express this config ({'; '.join(reasons)})")
    transformers.logging.set_verbosity_error()
    torch.manual_seed(0)
    ours = BridgeTowerForRetrieval(cfg)
    with tempfile.TemporaryDirectory() as tmp:
        ours.save_pretrained(tmp)
        theirs = transformers.BridgeTowerForImageAndTextRetrieval.from_pretrained(
            tmp, attn_implementation="eager"
        )
    # ITM-only retrieval freezes itm_score; train it here as transformers does, so both do the same work
    ours.itm_score.requires_grad_(True)
    return ours, theirs


def run_model_bench(args: argparse.Namespace) -> int:
    if args.threads:
        torch.set_num_threads(args.threads)
    # transformers' format shares one eps between the text tower and the cross-modal layers: match it
    cfg = BridgeTowerConfig.preset(args.preset, cross_layer_norm_eps=1e-5, mlm_layer_norm_eps=1e-5)
    if args.image_size:
        try:
            cfg = cfg.replace(vision={"image_size": args.image_size})
        except ValueError as err:
            print(
                f"btp bench model: --preset {args.preset} --image-size {args.image_size}: {err}",
                file=sys.stderr,
            )
            return 2
    size = cfg.vision.image_size
    b, n = args.batch, args.text_len
    report: dict[str, Any] = {
        "preset": args.preset,
        "batch": b,
        "text_len": n,
        "image_size": size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    print(
        f"btp bench model: preset {args.preset}, batch {b}, {n} tokens, {size} px, {report['threads']} threads"
    )
    eager, theirs = _models(cfg)
    models = {"ours_eager": eager}
    report["compiled"] = bool(args.compile)
    if args.compile:  # regional compilation, as `train.compile: true` does in btp train
        models["ours"] = copy.deepcopy(eager)
        models["ours"].compile_layers()
    else:
        models["ours"] = eager
    ours = models["ours"]
    ids, mask, pixels = _inputs(cfg, b, n, size)
    labels = torch.arange(b) % 2

    theirs.eval()
    with torch.no_grad():
        reference = theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        for name, model in models.items():
            model.eval()
            diff = (model(ids, mask, pixels).itm_logits - reference).abs().max().item()
            report["max_abs_diff" if name == "ours" else "eager_max_abs_diff"] = diff
            model.train()
    theirs.train()
    print(
        f"  outputs: max |ours - transformers| = {report['max_abs_diff']:.2e} (eval, fp32"
        + (", ours compiled)" if args.compile else ")")
    )

    def forward_of(model: torch.nn.Module) -> Callable[[], torch.Tensor]:
        return lambda: F.cross_entropy(model(ids, mask, pixels).itm_logits, labels)

    def theirs_fwd() -> torch.Tensor:
        return theirs(input_ids=ids, attention_mask=mask, pixel_values=pixels, labels=labels).loss

    steps = {"ours": _train_step(forward_of(ours), ours)}
    if args.compile:
        steps["ours_eager"] = _train_step(forward_of(eager), eager)
    steps["transformers"] = _train_step(theirs_fwd, theirs)
    secs = interleaved(steps, args.repeats)
    secs.setdefault("ours_eager", secs["ours"])
    flops = forward_flops(cfg, n, size)
    peak = matmul_peak()
    tflops = {name: train_flops(flops) * b / s / 1e12 for name, s in secs.items()}
    report.update(
        ours_s=secs["ours"],
        ours_eager_s=secs["ours_eager"],
        transformers_s=secs["transformers"],
        ratio=secs["transformers"] / secs["ours"],
        eager_ratio=secs["transformers"] / secs["ours_eager"],
        forward_gflop_per_sample=flops / 1e9,
        model_tflops=tflops["ours"],
        eager_model_tflops=tflops["ours_eager"],
        transformers_model_tflops=tflops["transformers"],
        peak_fp32_tflops=peak / 1e12,
    )
    report["mfu"] = tflops["ours"] * 1e12 / peak
    report["eager_mfu"] = tflops["ours_eager"] * 1e12 / peak
    report["transformers_mfu"] = tflops["transformers"] * 1e12 / peak
    compiled = f", ours eager {secs['ours_eager'] * 1e3:.0f} ms" if args.compile else ""
    print(
        f"  forward+backward: ours {secs['ours'] * 1e3:.0f} ms{compiled}, transformers "
        f"{secs['transformers'] * 1e3:.0f} ms (median of {args.repeats}) -> ratio {report['ratio']:.2f}x"
        + (f" (eager {report['eager_ratio']:.2f}x)" if args.compile else "")
    )
    print(
        f"  model FLOPs: {flops / 1e9:.1f} GFLOP forward per sample; ours {report['model_tflops'] * 1e3:.1f} GFLOP/s"
    )
    print(
        f"  fp32 matmul peak {peak / 1e9:.1f} GFLOP/s -> MFU ours {report['mfu']:.1%}"
        + (f" (eager {report['eager_mfu']:.1%})" if args.compile else "")
        + f", transformers {report['transformers_mfu']:.1%}"
    )

    if args.bf16:
        _bench_bf16(report, forward_of(ours), ours, flops, b, args.repeats)
    if args.task == "pretrain":
        _bench_pretrain(report, cfg, b, n, size, args.repeats, args.compile)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
        print(f"  figures written to {args.json}")
    return 0


def _bench_bf16(
    report: dict[str, Any], fwd: Callable[[], torch.Tensor], model, flops: int, b: int, repeats: int
) -> None:
    if not torch.backends.mkldnn.is_available():
        print("  bf16: skipped (no oneDNN on this CPU build)")
        return

    def step() -> None:
        model.zero_grad(set_to_none=True)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = fwd()
        loss.backward()

    secs = interleaved({"bf16": step}, repeats)["bf16"]
    peak = matmul_peak(torch.bfloat16)
    report.update(bf16_s=secs, peak_bf16_tflops=peak / 1e12, bf16_mfu=train_flops(flops) * b / secs / peak)
    print(
        f"  bf16 autocast: {secs * 1e3:.0f} ms; bf16 matmul peak {peak / 1e9:.1f} GFLOP/s -> MFU {report['bf16_mfu']:.1%}"
    )


def _bench_pretrain(
    report: dict[str, Any], cfg: BridgeTowerConfig, b: int, n: int, size: int, repeats: int, compile: bool
) -> None:
    """One MLM+ITM step sharing the vision pass vs the official recipe's two full forward passes."""
    torch.manual_seed(0)
    model = BridgeTowerForPretraining(cfg).train()
    if compile:
        model.compile_layers()
    ids, mask, pixels = _inputs(cfg, b, n, size, seed=1)
    mlm_labels = torch.full_like(ids, -100)
    mlm_labels[:, 1 : max(2, n * 15 // 100)] = ids[:, 1 : max(2, n * 15 // 100)]
    index = itm_negative_index(b, torch.Generator().manual_seed(0))
    bt = model.bridgetower

    def shared() -> torch.Tensor:
        return model(ids, mask, pixels, mlm_input_ids=ids, mlm_labels=mlm_labels, itm_image_index=index).loss

    def two_pass() -> torch.Tensor:
        mlm = model.mlm_score(bt(ids, mask, pixels).text_features)
        loss = F.cross_entropy(mlm.flatten(0, 1), mlm_labels.flatten(), ignore_index=-100)
        itm = model.itm_score(bt(ids, mask, pixels[index]).cls_features)
        return loss + F.cross_entropy(itm, (index == torch.arange(b)).long())

    secs = interleaved(
        {"shared": _train_step(shared, model), "two_pass": _train_step(two_pass, model)}, repeats
    )
    report.update(
        pretrain_s=secs["shared"],
        two_pass_s=secs["two_pass"],
        pretrain_ratio=secs["shared"] / secs["two_pass"],
        pretrain_flop_ratio=pretraining_step_flops(cfg, n, size) / two_pass_pretraining_flops(cfg, n, size),
    )
    print(
        f"  pretraining step: shared vision pass {secs['shared'] * 1e3:.0f} ms, two-pass {secs['two_pass'] * 1e3:.0f} ms "
        f"-> ratio {report['pretrain_ratio']:.2f} (FLOP ratio {report['pretrain_flop_ratio']:.2f})"
    )
