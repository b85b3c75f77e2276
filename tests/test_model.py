"""The model library on the tiny preset: every bridge variant and task trains; sizes and options behave."""

from __future__ import annotations

import pytest
import torch

from bridgetower import (
    BRIDGES,
    BridgeTowerConfig,
    BridgeTowerForImageClassification,
    BridgeTowerForNLVR2,
    BridgeTowerForPretraining,
    BridgeTowerForRetrieval,
    BridgeTowerForSNLIVE,
    BridgeTowerForTextClassification,
    BridgeTowerForVQA,
    BridgeTowerModel,
    itm_negative_index,
)

UNUSED = ("text_model.pooler.",)  # kept for weight compatibility; no BridgeTower forward reads it
B, T = 4, 16


def tiny(**overrides) -> BridgeTowerConfig:
    return BridgeTowerConfig.preset("tiny", **overrides)


def batch(cfg: BridgeTowerConfig, b: int = B, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(3, cfg.text.vocab_size, (b, T), generator=g)
    mask = torch.ones(b, T, dtype=torch.long)
    mask[0, T // 2 :] = 0
    ids[mask == 0] = cfg.text.pad_token_id
    pixels = torch.randn(b, 3, cfg.vision.image_size, cfg.vision.image_size, generator=g)
    return ids, mask, pixels


def assert_all_grads(model: torch.nn.Module, shift_invariant: tuple[str, ...] = ()) -> None:
    """Every trainable parameter gets a non-zero gradient (a bias under a softmax gets one, but it sums to 0)."""
    missing = [
        n
        for n, p in model.named_parameters()
        if p.requires_grad
        and not any(u in n for u in UNUSED)
        and (p.grad is None or (n not in shift_invariant and not p.grad.abs().sum() > 0))
    ]
    assert not missing, f"no gradient reached: {missing}"


def mlm_labels(ids: torch.Tensor) -> torch.Tensor:
    labels = torch.full_like(ids, -100)
    labels[:, 1:4] = ids[:, 1:4]
    return labels


@pytest.mark.parametrize("bridge", sorted(BRIDGES))
def test_every_bridge_variant_trains(bridge):
    torch.manual_seed(0)
    cfg = tiny(bridge=bridge)
    model = BridgeTowerForPretraining(cfg)
    ids, mask, pixels = batch(cfg)
    out = model(ids, mask, pixels, mlm_input_ids=ids, mlm_labels=mlm_labels(ids))
    assert set(out.losses) == {"mlm", "itm"} and torch.isfinite(out.loss)
    out.loss.backward()
    assert_all_grads(model)
    has_links = hasattr(model.bridgetower, "cross_modal_text_link_tower")
    assert has_links == (bridge != "none")


def test_bridges_change_the_output():
    """The variants are really different wiring (same seed, same weights elsewhere)."""
    cfg = tiny()
    ids, mask, pixels = batch(cfg)
    outs = {}
    for bridge in ("add", "none", "gated"):
        torch.manual_seed(0)
        model = BridgeTowerModel(cfg.replace(bridge=bridge)).eval()
        with torch.no_grad():
            outs[bridge] = model(ids, mask, pixels).cls_features
    assert (outs["add"] - outs["none"]).abs().max() > 1e-3
    assert (outs["add"] - outs["gated"]).abs().max() > 1e-3


def test_concat_bridge_starts_as_add():
    torch.manual_seed(0)
    add = BridgeTowerModel(tiny(bridge="add")).eval()
    concat = BridgeTowerModel(tiny(bridge="concat")).eval()
    state = {k: v for k, v in concat.state_dict().items() if ".dense." not in k or "link_tower" not in k}
    concat.load_state_dict(
        {**state, **{k: v for k, v in add.state_dict().items() if k in state}}, strict=False
    )
    ids, mask, pixels = batch(add.config)
    with torch.no_grad():
        assert torch.allclose(
            add(ids, mask, pixels).cls_features, concat(ids, mask, pixels).cls_features, atol=1e-5
        )


def test_bridge_layers_and_depth_are_configurable():
    cfg = tiny(num_layers=3, vision_bridge_layers=[0, 2, 3], text_bridge_layers=[1, 2, 3])
    model = BridgeTowerModel(cfg)
    assert len(model.cross_modal_text_layers) == 3 and len(model.cross_modal_text_link_tower) == 2
    ids, mask, pixels = batch(cfg)
    assert model(ids, mask, pixels).cls_features.shape == (B, 2 * cfg.hidden_size)
    with pytest.raises(ValueError, match="text_bridge_layers"):
        tiny(num_layers=2, text_bridge_layers=[3, 1])
    with pytest.raises(ValueError, match="unknown bridge"):
        tiny(bridge="sum")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"hidden_size": "abc"}, "hidden_size must be an int, got 'abc'"),
        ({"num_layers": 0}, "num_layers must be at least 1, got 0"),
        ({"text": {"num_heads": 2.0}}, "text.num_heads must be an int, got 2.0"),
        ({"vision": {"patch_size": -8}}, "vision.patch_size must be at least 1"),
        ({"dropout": 1.5}, r"dropout must be in \[0, 1\), got 1.5"),
        ({"itc": 1}, "itc must be a bool, got 1"),
        ({"temperature": 0.0}, "temperature must be positive"),
        ({"vision_bridge_layers": [0, "1"]}, "vision_bridge_layers must be a list of layer indices"),
    ],
)
def test_a_config_value_of_the_wrong_type_or_range_is_named(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny(**overrides)


def test_pretraining_shares_the_vision_pass():
    cfg = tiny()
    model = BridgeTowerForPretraining(cfg)
    calls = []
    model.bridgetower.vision_model.register_forward_hook(lambda *a: calls.append(1))
    ids, mask, pixels = batch(cfg)
    model(ids, mask, pixels, mlm_input_ids=ids, mlm_labels=mlm_labels(ids))
    assert len(calls) == 1


def test_itm_negatives_are_in_batch_and_half():
    g = torch.Generator().manual_seed(0)
    index = itm_negative_index(8, g)
    negatives = index != torch.arange(8)
    assert negatives.sum() == 4 and index.min() >= 0 and index.max() < 8


def test_pretraining_with_itc():
    cfg = tiny(itc=True)
    model = BridgeTowerForPretraining(cfg)
    ids, mask, pixels = batch(cfg)
    out = model(
        ids,
        mask,
        pixels,
        mlm_input_ids=ids,
        mlm_labels=mlm_labels(ids),
        itm_image_index=torch.tensor([1, 0, 2, 3]),
    )
    assert set(out.losses) == {"mlm", "itm", "itc"}
    assert out.itm_labels.tolist() == [0, 0, 1, 1]
    out.loss.backward()
    assert_all_grads(model)
    with torch.no_grad():
        model.temperature.fill_(10.0)
    assert (
        model(ids, mask, pixels, mlm_input_ids=ids, mlm_labels=mlm_labels(ids)).losses["itc"] > 0
    )  # clamped, finite


TASKS = [
    (BridgeTowerForVQA, "vqa", lambda cfg: torch.rand(B, cfg.vqa_num_labels).round() * 0.6, (B, 32)),
    (BridgeTowerForSNLIVE, "snli", lambda cfg: torch.tensor([0, 1, 2, 1]), (B, 3)),
]


@pytest.mark.parametrize("cls, loss_name, make_labels, shape", TASKS)
def test_classification_tasks(cls, loss_name, make_labels, shape):
    cfg = tiny()
    model = cls(cfg)
    ids, mask, pixels = batch(cfg)
    out = model(ids, mask, pixels, labels=make_labels(cfg))
    assert out.logits.shape == shape and set(out.losses) == {loss_name}
    out.loss.backward()
    assert_all_grads(model)
    model.eval()
    assert model(ids, mask, pixels).loss is None


def test_vqa_loss_is_bce_times_label_count():
    cfg = tiny()
    model = BridgeTowerForVQA(cfg).eval()
    ids, mask, pixels = batch(cfg)
    targets = torch.zeros(B, cfg.vqa_num_labels)
    targets[:, 3] = 1.0
    out = model(ids, mask, pixels, labels=targets)
    expected = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, targets) * cfg.vqa_num_labels
    assert torch.allclose(out.loss, expected)


def test_head_shapes_match_the_reference():
    base = BridgeTowerConfig.preset("base")
    with torch.device("meta"):
        vqa, nlvr2, snli = BridgeTowerForVQA(base), BridgeTowerForNLVR2(base), BridgeTowerForSNLIVE(base)
        pre = BridgeTowerForPretraining(base)
    shape = lambda head: [tuple(head[i].weight.shape) for i in (0, 1, 3)]  # noqa: E731
    assert shape(vqa.vqa_classifier) == [(3072, 1536), (3072,), (3129, 3072)]
    assert shape(nlvr2.nlvr2_classifier) == [(2304, 3072), (2304,), (2, 2304)]
    assert shape(snli.snli_classifier) == [(3072, 1536), (3072,), (3, 3072)]
    assert tuple(pre.mlm_score.decoder.weight.shape) == (50265, 768) and pre.mlm_score.decoder.bias is None
    assert tuple(pre.mlm_score.bias.shape) == (50265,)
    assert pre.mlm_score.decoder.weight is not pre.bridgetower.text_model.embeddings.word_embeddings.weight
    assert tuple(pre.itm_score.fc.weight.shape) == (2, 1536)
    assert tuple(nlvr2.bridgetower.token_type_embeddings.weight.shape) == (3, 768)


def test_nlvr2_two_images():
    cfg = tiny()
    model = BridgeTowerForNLVR2(cfg)
    ids, mask, _ = batch(cfg)
    pixels = torch.randn(B, 2, 3, cfg.vision.image_size, cfg.vision.image_size)
    out = model(ids, mask, pixels, labels=torch.tensor([0, 1, 1, 0]))
    assert out.logits.shape == (B, 2)
    out.loss.backward()
    assert_all_grads(model)
    model.eval()
    with torch.no_grad():  # swapping the two images changes the answer: the token types tell them apart
        swapped = model(ids, mask, pixels.flip(1)).logits
        assert (model(ids, mask, pixels).logits - swapped).abs().max() > 1e-4


def test_retrieval_itm_only_rank_output_is_a_copy():
    cfg = tiny()
    model = BridgeTowerForRetrieval(cfg)
    assert torch.equal(model.rank_output.weight, model.itm_score.fc.weight[1:])
    assert model.rank_output.weight.data_ptr() != model.itm_score.fc.weight.data_ptr()
    assert not any(p.requires_grad for p in model.itm_score.parameters())
    ids, mask, pixels = batch(cfg)
    false_ids = torch.randint(3, cfg.text.vocab_size, (B, 3, T))
    out = model(ids, mask, pixels, false_input_ids=false_ids, return_loss=True)
    assert set(out.losses) == {"irtr", "itm"}
    out.loss.backward()
    assert_all_grads(model, shift_invariant=("rank_output.bias",))
    before = model.itm_score.fc.weight.clone()
    torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0).step()
    assert torch.equal(model.itm_score.fc.weight, before)
    assert not torch.equal(model.rank_output.weight, before[1:])


def test_retrieval_itm_itc_and_rerank():
    cfg = tiny(retrieval_loss="itm_itc", k_test=2)
    model = BridgeTowerForRetrieval(cfg)
    ids, mask, pixels = batch(cfg)
    out = model(ids, mask, pixels, image_ids=torch.tensor([0, 0, 1, 2]), return_loss=True)
    assert set(out.losses) == {"itc", "itm"} and out.itm_labels.tolist() == [1] * B + [0] * (2 * B)
    out.loss.backward()
    assert_all_grads(model)
    model.eval()
    scores = model.score_matrix(ids, mask, pixels)
    assert scores.shape == (B, B)
    assert ((scores != -100).sum(1) == 2).all()  # only the ITC top-k are re-ranked by ITM
    with torch.no_grad():
        pair = model(ids[:1], mask[:1], pixels[1:2]).logits
    assert torch.allclose(scores[0, 1], pair[0], atol=1e-4) or scores[0, 1] == -100


def test_unimodal_classifiers():
    cfg = tiny(num_labels=5)
    ids, mask, pixels = batch(cfg)
    image = BridgeTowerForImageClassification(cfg)
    out = image(pixels, labels=torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (B, 5)
    out.loss.backward()
    assert_all_grads(image)
    text = BridgeTowerForTextClassification(cfg)
    out = text(ids, mask, labels=torch.tensor([0, 1, 2, 3]))
    assert out.logits.shape == (B, 5)
    out.loss.backward()
    assert_all_grads(text)
    with pytest.raises(ValueError, match="num_labels"):
        BridgeTowerForImageClassification(tiny())


def test_activation_checkpointing_gives_the_same_gradients():
    no_dropout = dict(dropout=0.0, attention_dropout=0.0, text={"dropout": 0.0, "attention_dropout": 0.0})
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(0)
        model = BridgeTowerForVQA(tiny(gradient_checkpointing=ckpt, **no_dropout))
        ids, mask, pixels = batch(model.config)
        model(ids, mask, pixels, labels=torch.ones(B, model.config.vqa_num_labels) * 0.3).loss.backward()
        grads.append(torch.cat([p.grad.flatten() for p in model.parameters() if p.grad is not None]))
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_compiled_layers_give_the_same_outputs_and_gradients():
    """Regional torch.compile (every layer's forward), names unchanged: inductor's kernels give eager's outputs,
    and the compiled layers' backward (dynamo and AOT autograd) gives eager's gradients.

    Inductor's backward kernels are not generated here: on a cold compile cache they took another half minute
    on 2 cores.
    """
    no_dropout = dict(dropout=0.0, attention_dropout=0.0, text={"dropout": 0.0, "attention_dropout": 0.0})
    torch.manual_seed(0)
    eager = BridgeTowerForVQA(tiny(**no_dropout))

    def compiled(**options) -> BridgeTowerForVQA:
        model = BridgeTowerForVQA(eager.config)
        model.load_state_dict(eager.state_dict())
        model.compile_layers(**options)
        return model

    kernels = compiled()
    assert list(kernels.state_dict()) == list(eager.state_dict())
    assert all(hasattr(unit.forward, "_torchdynamo_orig_callable") for unit in kernels.wrap_units())
    ids, mask, pixels = batch(eager.config)
    with torch.no_grad():
        expected, got = eager(ids, mask, pixels).logits, kernels(ids, mask, pixels).logits
    assert torch.allclose(expected, got, atol=1e-5) and not torch.equal(got, torch.zeros_like(got))
    traced = compiled(backend="aot_eager")
    labels = torch.ones(B, eager.config.vqa_num_labels) * 0.3
    out = [m(ids, mask, pixels, labels=labels) for m in (eager, traced)]
    assert torch.allclose(out[0].logits, out[1].logits, atol=1e-5)
    for o in out:
        o.loss.backward()
    for (name, p), q in zip(eager.named_parameters(), traced.parameters()):
        assert (p.grad is None) == (q.grad is None), name
        if p.grad is not None:
            assert torch.allclose(p.grad, q.grad, atol=1e-5), name


def test_wrap_units_cover_every_layer():
    cfg = tiny()
    model = BridgeTowerForPretraining(cfg)
    units = model.wrap_units()
    expected = cfg.vision.num_layers + cfg.text.num_layers + 2 * cfg.num_layers + 1
    assert len(units) == expected and len({id(u) for u in units}) == expected
    assert model.mlm_score in units


def test_parameter_counts_match_the_paper_models():
    for name, millions in (("base", 326.35), ("large", 864.51)):
        with torch.device("meta"):
            model = BridgeTowerModel(BridgeTowerConfig.preset(name))
        assert round(model.num_parameters() / 1e6, 2) == millions
    assert 1e6 < BridgeTowerModel(tiny()).num_parameters() < 5e6


def test_other_image_sizes_resize_positions_on_the_fly():
    cfg = tiny()
    model = BridgeTowerModel(cfg).eval()
    ids, mask, _ = batch(cfg)
    out = model(ids, mask, torch.randn(B, 3, 96, 96))
    assert out.image_features.shape == (B, (96 // 8) ** 2 + 1, cfg.hidden_size)


def test_config_roundtrip_and_errors(tmp_path):
    cfg = tiny(bridge="gated", vqa_num_labels=7)
    cfg.save(tmp_path / "c.json")
    import json

    assert BridgeTowerConfig.from_dict(json.loads((tmp_path / "c.json").read_text())) == cfg
    with pytest.raises(ValueError, match="unknown preset"):
        BridgeTowerConfig.preset("huge")
    with pytest.raises(ValueError, match="unknown BridgeTowerConfig keys: hiden_size"):
        BridgeTowerConfig.from_dict({"hiden_size": 3})


def test_a_new_bridge_is_one_class_and_one_registry_line():
    from bridgetower.bridge import Bridge, register_bridge

    @register_bridge("max")
    class MaxBridge(Bridge):
        def forward(self, x, y, mask=None):
            return self.LayerNorm(torch.maximum(x, y))

    try:
        model = BridgeTowerModel(tiny(bridge="max"))
        assert isinstance(model.cross_modal_image_link_tower[0], MaxBridge)
        ids, mask, pixels = batch(model.config)
        assert torch.isfinite(model(ids, mask, pixels).cls_features).all()
    finally:
        del BRIDGES["max"]


def test_bf16_autocast_with_padding():
    torch.manual_seed(0)
    model = BridgeTowerForVQA(tiny(bridge="cross_attention")).eval()
    ids, mask, pixels = batch(model.config)
    with torch.no_grad():
        full = model(ids, mask, pixels).logits
        with torch.autocast("cpu", dtype=torch.bfloat16):
            half = model(ids, mask, pixels).logits
    assert half.dtype == torch.bfloat16 and torch.isfinite(half).all()
    assert (half.float() - full).abs().max() < 0.1


def test_uint8_pixels_are_normalised_by_the_model():
    from PIL import Image

    from bridgetower.transforms import normalize, to_uint8

    torch.manual_seed(0)
    model = BridgeTowerModel(tiny()).eval()
    ids, mask, _ = batch(model.config, b=2)
    arrays = torch.randint(0, 256, (2, 64, 64, 3), dtype=torch.uint8).numpy()
    pictures = [Image.fromarray(a) for a in arrays]
    raw = torch.stack([to_uint8(p) for p in pictures])
    floats = torch.stack([normalize(p) for p in pictures])
    with torch.no_grad():
        assert torch.allclose(
            model(ids, mask, raw).cls_features, model(ids, mask, floats).cls_features, atol=1e-5
        )


def test_retrieval_hard_negatives_come_from_the_gathered_batch():
    """With a gather (here: a second worker holding a copy of the batch), negatives are drawn over both parts
    and a caption is never paired with its own image as a negative."""
    from bridgetower import BridgeTowerConfig, BridgeTowerForRetrieval

    torch.manual_seed(0)
    model = BridgeTowerForRetrieval(BridgeTowerConfig.preset("tiny", retrieval_loss="itm_itc"))
    ids = torch.randint(5, 1000, (4, 8))
    pixels = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    drawn = []
    real_multinomial = torch.multinomial

    def spy(weights, n, *args, **kwargs):
        drawn.append(weights.clone())
        return real_multinomial(weights, n, *args, **kwargs)

    torch.multinomial = spy
    try:
        out = model(ids, torch.ones_like(ids), pixels, image_ids=torch.arange(4), return_loss=True,
                    gather=lambda x: torch.cat([x, x]))  # fmt: skip
    finally:
        torch.multinomial = real_multinomial
    assert torch.isfinite(out.loss)
    assert all(w.shape == (4, 8) for w in drawn)  # candidates: the 8 captions/images of both workers
    for w in drawn:  # the same image, on either worker, is never a negative
        assert (w[torch.arange(4), torch.arange(4)] < 1e-6).all() and (
            w[torch.arange(4), torch.arange(4) + 4] < 1e-6
        ).all()


def test_vision_embedding_init_std_and_soft_cross_entropy_vqa_loss():
    from bridgetower import BridgeTowerConfig, BridgeTowerForVQA

    torch.manual_seed(0)
    plain = BridgeTowerForVQA(BridgeTowerConfig.preset("tiny"))
    wide = BridgeTowerForVQA(
        BridgeTowerConfig.preset("tiny", vision={"embedding_init_std": 1.0}, vqa_loss="ce")
    )
    for model, low, high in ((plain, 0.01, 0.03), (wide, 0.9, 1.1)):
        emb = model.bridgetower.vision_model.visual.embeddings
        assert low < float(emb.position_embedding.weight.std()) < high
        assert low < float(emb.class_embedding.std()) < high
    logits = torch.tensor([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
    targets = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.6, 0.3]])
    expected = -(torch.log_softmax(logits, 1) * targets / targets.sum(1, keepdim=True)).sum(1).mean()
    assert torch.allclose(wide.loss(logits, targets), expected)
    assert not torch.allclose(plain.loss(logits, targets), expected)  # the official BCE is another loss
    with pytest.raises(ValueError, match="vqa_loss"):
        BridgeTowerForVQA(BridgeTowerConfig.preset("tiny", vqa_loss="mse")).loss(logits, targets)
