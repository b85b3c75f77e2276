"""Checkpoint formats: official .ckpt, .bin, position resize, task heads from other tasks, clear mismatch errors."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_HF, hf_model, inputs

from bridgetower import (
    BridgeTowerConfig,
    BridgeTowerForNLVR2,
    BridgeTowerForPretraining,
    BridgeTowerForVQA,
    BridgeTowerModel,
    CheckpointFormatError,
    CheckpointMismatchError,
)
from bridgetower.formats import canonical_to_official

TOL = 1e-5


def official_ckpt(hf, path):
    """An official-format Lightning checkpoint built from transformers weights via the key mapping."""
    state = canonical_to_official(hf.state_dict())
    width = TINY_HF["vision_config"]["hidden_size"]
    state["vit_model.positional_embedding"] = torch.randn(77, width)  # CLIP text leftovers the loader drops
    state["vit_model.ln_final.weight"] = torch.ones(width)
    state["vit_model.ln_final.bias"] = torch.zeros(width)
    state["text_transformer.embeddings.position_ids"] = torch.arange(40)[None]
    torch.save(
        {"state_dict": state, "hyper_parameters": {"config": {"num_heads": 4, "vit": "ViT-tiny"}}}, path
    )
    return path


def test_official_ckpt_matches_transformers_with_official_eps(tmp_path):
    hf = hf_model("BridgeTowerForMaskedLM", seed=5)
    path = official_ckpt(hf, tmp_path / "bt.ckpt")
    # RoBERTa's head count is not in the weights (the official code reads width // 64); ours has 4 at width 64
    ours = BridgeTowerForPretraining.from_pretrained(path, text={"num_heads": 4}).eval()
    assert ours.config.cross_layer_norm_eps == 1e-12 and ours.config.mlm_layer_norm_eps == 1e-12
    ids, mask, pixels = inputs(seed=5)
    with torch.no_grad():
        loose = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        for name, module in hf.named_modules():  # make transformers compute as the official code does
            if isinstance(module, torch.nn.LayerNorm) and (
                "cross_modal_" in name and "_layers." in name or "mlm_score" in name
            ):
                module.eps = 1e-12
        expected = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).logits
        got = ours(ids, mask, pixels).mlm_logits
    assert (expected - got).abs().max() < TOL
    assert (loose - got).abs().max() > TOL  # the eps difference is real: the check has teeth


def test_pytorch_bin_is_read_without_pickled_code(tmp_path):
    hf = hf_model("BridgeTowerModel", seed=6)
    hf.save_pretrained(tmp_path / "bin")  # older transformers releases wrote pickled .bin files; make one
    (tmp_path / "bin" / "model.safetensors").unlink()
    torch.save(hf.state_dict(), tmp_path / "bin" / "pytorch_model.bin")
    ours = BridgeTowerModel.from_pretrained(tmp_path / "bin").eval()
    ids, mask, pixels = inputs(seed=6)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels).pooler_output
        assert (expected - ours(ids, mask, pixels).cls_features).abs().max() < TOL


class Payload:  # any class outside the weights_only allow-list
    pass


def test_pickled_objects_are_refused(tmp_path):
    torch.save({"state_dict": {"x": torch.zeros(1)}, "payload": Payload()}, tmp_path / "evil.ckpt")
    with pytest.raises(CheckpointFormatError, match="weights_only"):
        BridgeTowerModel.from_pretrained(tmp_path / "evil.ckpt")


def test_position_embeddings_resize_on_load_like_transformers(hf_dir):
    hf, path = hf_dir("BridgeTowerModel", seed=7)
    ours = BridgeTowerModel.from_pretrained(path, image_size=48).eval()
    assert ours.vision_model.visual.embeddings.position_embedding.weight.shape[0] == (48 // 8) ** 2 + 1
    ids, mask, _ = inputs(seed=7)
    pixels = torch.randn(3, 3, 48, 48)
    with torch.no_grad():
        expected = hf(input_ids=ids, attention_mask=mask, pixel_values=pixels, interpolate_pos_encoding=True)
        assert (expected.pooler_output - ours(ids, mask, pixels).cls_features).abs().max() < TOL


def test_fine_tuning_starts_from_a_pretraining_checkpoint(tmp_path):
    torch.manual_seed(0)
    pre = BridgeTowerForPretraining(BridgeTowerConfig.preset("tiny"))
    pre.save_pretrained(tmp_path / "pre")
    vqa = BridgeTowerForVQA.from_pretrained(tmp_path / "pre", vqa_num_labels=9)
    assert vqa.vqa_classifier[3].weight.shape[0] == 9
    for key, value in pre.bridgetower.state_dict().items():
        assert torch.equal(value, vqa.bridgetower.state_dict()[key]), key
    nlvr2 = BridgeTowerForNLVR2.from_pretrained(tmp_path / "pre")
    types = nlvr2.bridgetower.token_type_embeddings.weight
    assert types.shape[0] == 3 and torch.equal(types[2], types[1])
    assert torch.equal(types[:2], pre.bridgetower.token_type_embeddings.weight)


def test_mismatched_checkpoints_list_every_problem(tmp_path):
    from safetensors.torch import load_file, save_file

    torch.manual_seed(0)
    vqa = BridgeTowerForVQA(BridgeTowerConfig.preset("tiny"))
    vqa.save_pretrained(tmp_path / "vqa")
    with pytest.raises(CheckpointMismatchError) as err:
        BridgeTowerForVQA.from_pretrained(tmp_path / "vqa", vqa_num_labels=5, num_layers=3)
    message = str(err.value)
    assert "missing keys" in message and "cross_modal_text_layers.2" in message
    assert "mis-shaped keys" in message and "vqa_classifier.3.weight" in message
    weights = load_file(str(tmp_path / "vqa" / "model.safetensors"))
    run = tmp_path / "runs" / "vqa"  # a folder of `btp train`: from_pretrained reads its final model/
    vqa.save_pretrained(run / "model")
    assert torch.equal(
        BridgeTowerForVQA.from_pretrained(run).vqa_classifier[3].weight, vqa.vqa_classifier[3].weight
    )
    weights["bridgetower.cross_modal_extra.weight"] = torch.zeros(2)
    save_file(weights, str(tmp_path / "vqa" / "model.safetensors"))
    with pytest.raises(
        CheckpointMismatchError, match="1 unexpected keys: bridgetower.cross_modal_extra.weight"
    ):
        BridgeTowerForVQA.from_pretrained(tmp_path / "vqa")


def test_not_a_checkpoint_is_a_clear_error(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointFormatError, match="no config.json"):
        BridgeTowerModel.from_pretrained(tmp_path / "empty")
    with pytest.raises(CheckpointFormatError, match="not a hub id"):
        BridgeTowerModel.from_pretrained(tmp_path / "missing" / "deeper")


def test_a_missing_local_path_is_a_clear_error_without_asking_the_hub(tmp_path, monkeypatch):
    # runs/NAME has the form of a hub id (org/name); with a runs/ folder here it names a missing local run
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    with pytest.raises(
        CheckpointFormatError, match="runs/missing: no such file or directory .the folder runs/"
    ):
        BridgeTowerModel.from_pretrained("runs/missing")
    with pytest.raises(
        CheckpointFormatError, match="runs/vision: no such file or directory .the folder runs/"
    ):
        BridgeTowerForPretraining.from_towers("runs/vision", None)
    with pytest.raises(CheckpointFormatError, match="not a hub id of the form org/name"):
        BridgeTowerForPretraining.from_towers(None, tmp_path / "missing" / "text")
    # a folder that is not a model: transformers' OSError becomes one error naming the folder and the tower
    with pytest.raises(CheckpointFormatError, match="runs: cannot read a vision tower: .*no file named"):
        BridgeTowerForPretraining.from_towers("runs", None)


def test_start_pretraining_from_clip_and_roberta_towers(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=64,
            intermediate_size=256,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    roberta = RobertaModel(
        RobertaConfig(
            vocab_size=120,
            hidden_size=64,
            num_hidden_layers=3,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=40,
            pad_token_id=1,
        )
    ).eval()
    clip.save_pretrained(tmp_path / "clip")
    roberta.save_pretrained(tmp_path / "roberta")
    cfg = BridgeTowerConfig.preset("tiny").replace(hidden_size=64, num_layers=2)
    model = BridgeTowerForPretraining.from_towers(tmp_path / "clip", tmp_path / "roberta", config=cfg).eval()
    ids, mask, pixels = inputs(seed=8)
    with torch.no_grad():
        image = model.bridgetower.encode_image(pixels)
        text = model.bridgetower.encode_text(ids, mask)
        clip_out = clip(pixel_values=pixels, output_hidden_states=True)
        rob_out = roberta(input_ids=ids, attention_mask=mask, output_hidden_states=True)
    post = getattr(clip, "vision_model", clip).post_layernorm  # transformers 5 flattened CLIPVisionModel
    assert (image[-1] - post(clip_out.hidden_states[3])).abs().max() < TOL
    assert (image[0] - post(clip_out.hidden_states[2])).abs().max() < TOL
    keep = mask.bool()
    assert (text[-1][keep] - rob_out.hidden_states[3][keep]).abs().max() < TOL


def test_unimodal_classifiers_load_their_tower_from_a_bridgetower_checkpoint(tmp_path):
    from bridgetower import BridgeTowerForImageClassification, BridgeTowerForTextClassification

    torch.manual_seed(0)
    pre = BridgeTowerForPretraining(BridgeTowerConfig.preset("tiny"))
    pre.save_pretrained(tmp_path / "pre")
    image = BridgeTowerForImageClassification.from_pretrained(tmp_path / "pre", num_labels=10, image_size=32)
    assert image.classifier.weight.shape == (10, 128)
    ours = image.vision_model.visual.transformer.resblocks[0].attn.in_proj_weight
    assert torch.equal(ours, pre.bridgetower.vision_model.visual.transformer.resblocks[0].attn.in_proj_weight)
    assert image.vision_model.visual.embeddings.position_embedding.weight.shape[0] == (32 // 8) ** 2 + 1
    text = BridgeTowerForTextClassification.from_pretrained(tmp_path / "pre", num_labels=3)
    words = pre.bridgetower.text_model.embeddings.word_embeddings.weight
    assert torch.equal(text.text_model.embeddings.word_embeddings.weight, words)
    text.save_pretrained(tmp_path / "text")
    again = BridgeTowerForTextClassification.from_pretrained(tmp_path / "text")
    assert torch.equal(again.classifier.out_proj.weight, text.classifier.out_proj.weight)
