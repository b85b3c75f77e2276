"""btp.train.build.build_model starts a run from every source an experiment can name (no Ray needed)."""

from __future__ import annotations

import torch
from conftest import TINY_HF, hf_model

from bridgetower import BridgeTowerConfig, BridgeTowerForPretraining
from bridgetower.formats import canonical_to_official
from btp.config import ExperimentConfig, TowersConfig
from btp.train.build import build_model


def _cfg(**model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.task = "pretrain"
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def _words(model) -> torch.Tensor:
    return model.bridgetower.text_model.embeddings.word_embeddings.weight


def test_from_scratch_is_seeded():
    a, b = build_model(_cfg()), build_model(_cfg())
    assert isinstance(a, BridgeTowerForPretraining) and torch.equal(_words(a), _words(b))


def test_from_transformers_and_official_checkpoints(tmp_path):
    hf = hf_model("BridgeTowerForMaskedLM", seed=3)
    hf.save_pretrained(tmp_path / "hf")
    words = hf.bridgetower.text_model.embeddings.word_embeddings.weight
    model = build_model(_cfg(init_from=str(tmp_path / "hf")))
    assert torch.equal(_words(model), words)
    # the experiment's picture size wins: the position table is resized from the checkpoint's 32 px
    assert model.config.vision.image_size == BridgeTowerConfig.preset("tiny").vision.image_size

    state = canonical_to_official(hf.state_dict())
    torch.save(
        {"state_dict": state, "hyper_parameters": {"config": {"vit": "ViT-tiny"}}}, tmp_path / "bt.ckpt"
    )
    official = build_model(_cfg(init_from=str(tmp_path / "bt.ckpt")))
    assert torch.equal(_words(official), words)
    assert official.config.hidden_size == TINY_HF["hidden_size"]  # sizes come from the tensors


def test_from_an_earlier_run_of_ours(tmp_path):
    torch.manual_seed(7)
    earlier = BridgeTowerForPretraining(BridgeTowerConfig.preset("tiny", bridge="gated"))
    earlier.save_pretrained(tmp_path / "runs" / "pre" / "model")
    model = build_model(_cfg(init_from=str(tmp_path / "runs" / "pre")))  # the run folder: its final weights
    assert model.config.bridge == "gated" and torch.equal(_words(model), _words(earlier))


def test_from_clip_and_roberta_towers(tmp_path):
    from transformers import CLIPVisionConfig, CLIPVisionModel, RobertaConfig, RobertaModel

    torch.manual_seed(0)
    tiny = BridgeTowerConfig.preset("tiny")
    clip = CLIPVisionModel(
        CLIPVisionConfig(hidden_size=128, intermediate_size=512, num_hidden_layers=4, num_attention_heads=2,
                         image_size=64, patch_size=8)
    )  # fmt: skip
    roberta = RobertaModel(
        RobertaConfig(vocab_size=tiny.text.vocab_size, hidden_size=128, num_hidden_layers=4, num_attention_heads=4,
                      intermediate_size=512, max_position_embeddings=tiny.text.max_position_embeddings,
                      pad_token_id=1)
    )  # fmt: skip
    clip.save_pretrained(tmp_path / "clip")
    roberta.save_pretrained(tmp_path / "roberta")
    cfg = _cfg(init_towers=TowersConfig(vision=str(tmp_path / "clip"), text=str(tmp_path / "roberta")))
    model = build_model(cfg)
    assert torch.equal(_words(model), roberta.embeddings.word_embeddings.weight)
    ours = model.bridgetower.vision_model.visual.transformer.resblocks[0].mlp.c_fc.weight
    assert torch.equal(ours, clip.state_dict()["encoder.layers.0.mlp.fc1.weight"])
