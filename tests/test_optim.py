"""The official parameter groups, multipliers and schedule."""

from __future__ import annotations

import copy

import pytest
import torch

from bridgetower import BridgeTowerConfig, BridgeTowerForPretraining, BridgeTowerForRetrieval
from btp.train.optim import (
    build_optimizer,
    group_of,
    param_groups,
    planned_steps,
    warmup_linear_decay,
    warmup_steps,
)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mlm_score.transform.dense.weight", ("head", True)),
        ("mlm_score.bias", ("head", False)),
        ("itm_score.fc.weight", ("head", True)),
        ("vqa_classifier.1.weight", ("head", True)),  # the head's LayerNorm is index 1: decayed, as official
        ("bridgetower.cross_modal_text_layers.0.output.LayerNorm.weight", ("cross_modal", False)),
        ("bridgetower.cross_modal_image_transform.weight", ("cross_modal", True)),
        ("bridgetower.cross_modal_text_link_tower.0.LayerNorm.weight", ("cross_modal", False)),
        ("bridgetower.vision_model.visual.transformer.resblocks.0.ln_1.weight", ("base", True)),
        ("bridgetower.vision_model.visual.ln_post.weight", ("base", True)),
        ("bridgetower.text_model.encoder.layer.0.attention.output.LayerNorm.weight", ("base", False)),
        ("bridgetower.token_type_embeddings.weight", ("base", True)),
        ("rank_output.weight", ("base", True)),
        ("temperature", ("base", True)),
    ],
)
def test_groups_follow_the_official_rules(name, expected):
    assert group_of(name) == expected


def test_optimizer_covers_every_trainable_parameter_once():
    model = BridgeTowerForRetrieval(
        BridgeTowerConfig.preset("tiny")
    )  # itm_score frozen in ITM-only retrieval
    opt = build_optimizer(model, lr=1e-5, weight_decay=0.01, lr_mult_head=5.5, lr_mult_cross_modal=5)
    seen = [id(p) for g in opt.param_groups for p in g["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert sorted(seen) == sorted(trainable) and len(seen) == len(set(seen))
    rates = {g["name"]: (g["lr"], g["weight_decay"]) for g in opt.param_groups}
    assert rates["cross_modal/no_decay"] == (pytest.approx(5e-5), 0.0)
    assert opt.defaults["betas"] == (0.9, 0.98) and opt.defaults["eps"] == 1e-8
    heads = build_optimizer(
        BridgeTowerForPretraining(BridgeTowerConfig.preset("tiny")), 1e-5, lr_mult_head=5.5
    )
    head_rates = [g["lr"] for g in heads.param_groups if g["name"].startswith("head")]
    assert head_rates and all(r == pytest.approx(5.5e-5) for r in head_rates)  # a float multiplier multiplies


def test_the_fused_update_on_cpu_equals_the_per_parameter_loop():
    torch.manual_seed(0)
    model = BridgeTowerForPretraining(BridgeTowerConfig.preset("tiny"))
    start = copy.deepcopy(model)
    reference = copy.deepcopy(model)
    opt = build_optimizer(model, lr=1e-3, lr_mult_head=5.0, lr_mult_cross_modal=2.0)
    assert opt.defaults["fused"] is True  # CPU parameters: the one-pass kernel
    groups = param_groups(reference, 1e-3, 0.01, 5.0, 2.0)
    loop = torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, foreach=False)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        for a, b in zip(model.parameters(), reference.parameters(), strict=True):
            a.grad = torch.randn(a.shape, generator=generator)
            b.grad = a.grad.clone()
        opt.step()
        loop.step()
    for (name, a), b, before in zip(
        model.named_parameters(), reference.parameters(), start.parameters(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6, msg=name)
        assert (a - before).abs().max() > 1e-4, name  # every parameter moved


def test_steps_come_from_the_effective_batch():
    assert planned_steps(1000, workers=2, batch_size=8, grad_accum=2, epochs=3) == 3 * 32
    assert planned_steps(1000, workers=1, batch_size=16, grad_accum=2, epochs=3) == 3 * 32
    assert planned_steps(1000, 2, 8, 2, 3, max_steps=10) == 10
    assert warmup_steps(100, 0.1) == 10 and warmup_steps(100, 25) == 25


def test_warmup_then_linear_decay_per_group():
    p1, p2 = torch.nn.Parameter(torch.zeros(1)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.AdamW([{"params": [p1], "lr": 1.0}, {"params": [p2], "lr": 10.0}])
    sched = warmup_linear_decay(opt, total_steps=10, warmup=0.2)
    lrs = []
    for _ in range(11):
        lrs.append([g["lr"] for g in opt.param_groups])
        opt.step()
        sched.step()
    assert [round(a, 6) for a, _ in lrs] == [0.0, 0.5, 1.0, 0.875, 0.75, 0.625, 0.5, 0.375, 0.25, 0.125, 0.0]
    assert lrs[2][1] == pytest.approx(10.0) and lrs[6][1] == pytest.approx(5.0)


def test_a_run_cut_short_by_its_epochs_says_so():
    from btp.config import load_experiment
    from btp.train.run import epoch_bound_note

    cfg = load_experiment("experiments/synth/vqa_scratch.yaml", ["train.max_steps=1500", "train.epochs=1"])
    steps = planned_steps(48_000, 1, 64, 1, cfg.train.epochs, cfg.train.max_steps)
    assert steps == 750
    note = epoch_bound_note(cfg, steps)
    assert note and "train.epochs=1" in note and "step 750" in note and "train.max_steps=1500" in note
    assert epoch_bound_note(cfg, 1500) is None  # max_steps reached: nothing to say
    cfg.train.max_steps = None
    assert epoch_bound_note(cfg, 750) is None  # no max_steps: the epochs decide, as asked
