"""bridgetower.flops against torch's FlopCounterMode on real forwards."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from bridgetower import (
    BridgeTowerConfig,
    BridgeTowerForImageClassification,
    BridgeTowerForPretraining,
    BridgeTowerForTextClassification,
    BridgeTowerModel,
)
from bridgetower.flops import (
    classification_flops,
    forward_flops,
    pretraining_step_flops,
    train_flops,
    two_pass_pretraining_flops,
)

BATCH = 2
TEXT_LEN = 40


def _inputs(config: BridgeTowerConfig, text_len: int, image_size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, config.text.vocab_size, (BATCH, text_len), generator=g)
    mask = torch.ones(BATCH, text_len, dtype=torch.long)
    pixels = torch.randn(BATCH, 3, image_size, image_size, generator=g)
    return ids, mask, pixels


def _measured(model: torch.nn.Module, *args) -> float:
    """FLOPs per sample counted by FlopCounterMode.

    On CPU, SDPA dispatches to `_scaled_dot_product_flash_attention_for_cpu`, which FlopCounterMode has no formula
    for (it would count 0); the math backend decomposes attention into bmm ops, which it does count.
    """
    model.eval()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # counts do not depend on it; on small shared CPUs, tiny ops run much faster
    try:
        with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
            model(*args)
    finally:
        torch.set_num_threads(threads)
    return counter.get_total_flops() / BATCH


def _check(expected: int, measured: float) -> None:
    assert measured > 0
    assert abs(expected - measured) / measured < 0.05, (expected, measured)


def _tiny(**overrides) -> BridgeTowerConfig:
    return BridgeTowerConfig.preset("tiny", **overrides)


@pytest.mark.parametrize(
    "config, image_size",
    [
        (_tiny(), None),
        (_tiny(bridge="concat"), None),
        (_tiny(bridge="cross_attention"), None),
        (_tiny(bridge="none"), None),
        (_tiny(bridge="gated", vision_bridge_layers=[1, 2], text_bridge_layers=[0, 2]), None),
        (_tiny(), 32),
        (
            BridgeTowerConfig.preset("base").replace(
                vision={"num_layers": 3}, text={"num_layers": 3}, num_layers=2, bridge="cross_attention"
            ),
            160,
        ),
    ],
    ids=["tiny", "concat", "cross_attention", "none", "gated_custom_levels", "tiny_image32", "base_small"],
)
def test_forward_flops_match_flop_counter(config: BridgeTowerConfig, image_size: int | None) -> None:
    torch.manual_seed(0)
    model = BridgeTowerModel(config)
    size = config.vision.image_size if image_size is None else image_size
    ids, mask, pixels = _inputs(config, TEXT_LEN, size)
    _check(forward_flops(config, TEXT_LEN, image_size), _measured(model, ids, mask, pixels))


def test_forward_flops_exact_on_tiny() -> None:
    """Every matmul is counted: the analytic figure equals the measured one, not just within 5 %."""
    config = _tiny(bridge="cross_attention")
    torch.manual_seed(0)
    ids, mask, pixels = _inputs(config, 17, 48)
    assert forward_flops(config, 17, 48) == _measured(BridgeTowerModel(config), ids, mask, pixels)


@pytest.mark.parametrize("itc", [False, True])
def test_pretraining_step_flops_match_flop_counter(itc: bool) -> None:
    config = _tiny(itc=itc)
    torch.manual_seed(0)
    model = BridgeTowerForPretraining(config)
    ids, mask, pixels = _inputs(config, TEXT_LEN, config.vision.image_size)
    mlm_ids = ids.clone()
    mlm_ids[:, ::5] = 4  # a "mask" token
    labels = torch.full_like(ids, -100)
    labels[:, ::5] = ids[:, ::5]
    itm_index = torch.tensor([1, 1])
    measured = _measured(model, ids, mask, pixels, mlm_ids, labels, itm_index)
    _check(pretraining_step_flops(config, TEXT_LEN), measured)


@pytest.mark.parametrize("preset", ["tiny", "base", "large"])
def test_one_vision_pass_is_cheaper_than_two(preset: str) -> None:
    config = BridgeTowerConfig.preset(preset)
    one, two = pretraining_step_flops(config, TEXT_LEN), two_pass_pretraining_flops(config, TEXT_LEN)
    assert forward_flops(config, TEXT_LEN) < one < two


def test_train_flops_and_image_size_default() -> None:
    config = _tiny()
    assert train_flops(10) == 30
    assert forward_flops(config, TEXT_LEN) == forward_flops(config, TEXT_LEN, config.vision.image_size)
    assert forward_flops(config, TEXT_LEN, 32) < forward_flops(config, TEXT_LEN)
    with pytest.raises(ValueError):
        forward_flops(config, TEXT_LEN, 30)


def test_classification_flops_match_flop_counter() -> None:
    # custom bridge levels: the classifiers still run their whole tower
    config = _tiny(num_labels=10, vision_bridge_layers=[0, 1], text_bridge_layers=[0, 1])
    ids, mask, pixels = _inputs(config, TEXT_LEN, config.vision.image_size)
    image = _measured(BridgeTowerForImageClassification(config), pixels)
    _check(classification_flops(config, "image_classification", TEXT_LEN), image)
    text = _measured(BridgeTowerForTextClassification(config), ids, mask)
    _check(classification_flops(config, "text_classification", TEXT_LEN), text)
    with pytest.raises(ValueError, match="not a classification task"):
        classification_flops(config, "vqa", TEXT_LEN)
