"""Same weights -> same outputs as transformers' BridgeTower (CPU, fp32, eval), both directions."""

from __future__ import annotations

import pytest
import torch
from conftest import hf_model, inputs

from bridgetower import BridgeTowerForPretraining, BridgeTowerForRetrieval, BridgeTowerModel

TOL = 1e-5


def max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a - b).abs().max().item()


def test_backbone_features_match(hf_dir):
    hf, path = hf_dir("BridgeTowerModel")
    ours = BridgeTowerModel.from_pretrained(path).eval()
    ids, mask, pixels = inputs()
    with torch.no_grad():
        a = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels)
        b = ours(ids, mask, pixels)
    assert max_diff(a.text_features, b.text_features) < TOL
    assert max_diff(a.image_features, b.image_features) < TOL
    assert max_diff(a.pooler_output, b.cls_features) < TOL
    assert mask.min() == 0  # padding is part of the check


def test_mlm_and_itm_logits_match(hf_dir):
    hf_mlm, mlm_path = hf_dir("BridgeTowerForMaskedLM", seed=1)
    ours = BridgeTowerForPretraining.from_pretrained(mlm_path).eval()
    ids, mask, pixels = inputs(seed=1)
    with torch.no_grad():
        expected = hf_mlm(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        got = ours(ids, mask, pixels).mlm_logits
    assert max_diff(expected, got) < TOL

    hf_itm, itm_path = hf_dir("BridgeTowerForImageAndTextRetrieval", seed=2)
    ours = BridgeTowerForRetrieval.from_pretrained(itm_path).eval()
    with torch.no_grad():
        expected = hf_itm(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        got = ours(ids, mask, pixels)
    assert max_diff(expected, got.itm_logits) < TOL
    # rank_output is initialised from the loaded ITM head, so its score equals the ITM "match" logit
    assert max_diff(expected[:, 1], got.logits) < TOL


@pytest.mark.parametrize("variant", ["scaled_add", "interpolate"])
def test_transformers_bridge_variants_match(hf_dir, variant):
    hf, path = hf_dir("BridgeTowerModel", seed=3, link_tower_type=variant)
    ours = BridgeTowerModel.from_pretrained(path).eval()
    assert ours.config.bridge == variant
    ids, mask, pixels = inputs(seed=3)
    with torch.no_grad():
        assert (
            max_diff(
                hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).pooler_output,
                ours(ids, mask, pixels).cls_features,
            )
            < TOL
        )


def test_transformers_loads_what_we_save(tmp_path):
    import transformers

    hf = hf_model("BridgeTowerForMaskedLM", seed=4)
    hf.save_pretrained(tmp_path / "hf")
    ours = BridgeTowerForPretraining.from_pretrained(tmp_path / "hf").eval()
    with torch.no_grad():  # train ours a little so the check is not of the weights transformers wrote
        for p in ours.parameters():
            p.add_(0.01)
    ours.save_pretrained(tmp_path / "ours")
    back = transformers.BridgeTowerForMaskedLM.from_pretrained(tmp_path / "ours").eval()
    itm = transformers.BridgeTowerForImageAndTextRetrieval.from_pretrained(tmp_path / "ours").eval()
    ids, mask, pixels = inputs(seed=4)
    with torch.no_grad():
        mine = ours(ids, mask, pixels)
        assert (
            max_diff(back(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits, mine.mlm_logits)
            < TOL
        )
        assert (
            max_diff(itm(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits, mine.itm_logits)
            < TOL
        )


def test_our_own_format_roundtrips_every_variant(tmp_path):
    from bridgetower import BridgeTowerConfig

    for variant in ("gated", "cross_attention", "none"):
        torch.manual_seed(0)
        model = BridgeTowerModel(BridgeTowerConfig.preset("tiny", bridge=variant)).eval()
        model.save_pretrained(tmp_path / variant)
        back = BridgeTowerModel.from_pretrained(tmp_path / variant).eval()
        ids, mask, pixels = inputs(image=64, vocab=1000)
        with torch.no_grad():
            assert torch.equal(model(ids, mask, pixels).cls_features, back(ids, mask, pixels).cls_features)
