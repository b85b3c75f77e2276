"""btp.train.build.build_model starts a run from every source an experiment can name (no Ray needed)."""

from __future__ import annotations

import torch
from conftest import TINY_HF, hf_model

from bridgetower import BridgeTowerConfig, BridgeTowerForPretraining
from bridgetower.formats import canonical_to_official
from btp.config import ExperimentConfig, TowersConfig
from btp.train.build import build_model, data_concurrency


def _cfg(**model) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.task = "pretrain"
    for key, value in model.items():
        setattr(cfg.model, key, value)
    return cfg


def _words(model) -> torch.Tensor:
    return model.bridgetower.text_model.embeddings.word_embeddings.weight


def test_data_tasks_on_one_machine_are_capped_by_the_cpus_the_workers_leave():
    cfg = ExperimentConfig()
    cfg.train.num_workers, cfg.train.cpus_per_worker = 2, 0.5
    assert data_concurrency(cfg, cluster_cpus=2, nodes=1) == 1
    assert data_concurrency(cfg, cluster_cpus=16, nodes=1) == 15
    assert data_concurrency(cfg, cluster_cpus=1, nodes=1) == 1  # never below one task
    assert data_concurrency(cfg, cluster_cpus=64, nodes=4) == 0  # a cluster: Ray's own default
    cfg.data.concurrency = 3  # set by the experiment: taken as it is
    assert data_concurrency(cfg, 2, 1) == 3 and data_concurrency(cfg, 64, 4) == 3


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
    # the experiment's model.config changes the checkpoint's config (losses, dropout, the picture size)
    said = {"dropout": 0.0, "itc": True, "vision": {"image_size": 48}}
    tuned = build_model(_cfg(init_from=str(tmp_path / "runs" / "pre"), config=said))
    assert tuned.config.dropout == 0.0 and tuned.config.itc and tuned.config.vision.image_size == 48
    assert torch.equal(_words(tuned), _words(earlier))
    # ... but a size the weights do not have is one error naming the mis-shaped keys
    import pytest

    from bridgetower.pretrained import CheckpointMismatchError

    with pytest.raises(CheckpointMismatchError, match="word_embeddings"):
        build_model(_cfg(init_from=str(tmp_path / "runs" / "pre"), config={"text": {"hidden_size": 64}}))


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
    # the experiment's picture size wins over the tower's: its position table is resized once, when loaded
    cfg.data.image_size = 96
    bigger = build_model(cfg)
    positions = bigger.bridgetower.vision_model.visual.embeddings.position_embedding.weight
    assert bigger.config.vision.image_size == 96 and positions.shape[0] == (96 // 8) ** 2 + 1


def test_vision_tower_from_an_image_classification_run_text_fresh(tmp_path):
    """A run of ours (here an image classifier) lends its vision tower; the tower left out starts fresh, seeded."""
    from bridgetower import BridgeTowerForImageClassification

    torch.manual_seed(5)
    vision = {"image_size": 48, "patch_size": 16}
    cls_model = BridgeTowerForImageClassification(
        BridgeTowerConfig.preset("tiny", num_labels=12).replace(vision=vision)
    )
    cls_model.save_pretrained(tmp_path / "runs" / "shapes" / "model")
    cfg = _cfg(init_towers=TowersConfig(vision=str(tmp_path / "runs" / "shapes")))
    cfg.data.image_size = 48
    a, b = build_model(cfg), build_model(cfg)
    lent = a.bridgetower.vision_model.state_dict()
    assert lent.keys() == cls_model.vision_model.state_dict().keys()
    assert all(torch.equal(v, cls_model.vision_model.state_dict()[k]) for k, v in lent.items())
    assert a.config.vision.image_size == 48 and a.config.vision.patch_size == 16
    # the text tower and the cross-modal layers are fresh, and the same on every rank (seeded)
    assert torch.equal(_words(a), _words(b))
    # a checkpoint without the asked tower is one clear error
    import pytest

    from bridgetower.formats import CheckpointFormatError

    with pytest.raises(CheckpointFormatError, match="holds no text tower weights"):
        build_model(_cfg(init_towers=TowersConfig(text=str(tmp_path / "runs" / "shapes"))))


# ---- classification: num_labels from the data (or the config) ----------------------------------------------
def _cls_cfg(root, task: str = "image_classification", **data) -> ExperimentConfig:
    cfg = ExperimentConfig()
    cfg.data.root, cfg.data.task, cfg.data.train = str(root), task, ["cifar10_train_*.arrow"]
    for key, value in data.items():
        setattr(cfg.data, key, value)
    return cfg


def _shard(path, rows: int = 3) -> None:
    import pyarrow as pa

    table = pa.table({"image": [b"png"] * rows, "label": list(range(rows))})
    with pa.ipc.new_file(str(path), table.schema) as writer:
        writer.write_table(table)


def test_classification_classes_come_from_the_labels_file_beside_the_shards(tmp_path):
    import json

    import pytest

    from bridgetower import BridgeTowerForImageClassification
    from btp.config import ConfigError
    from btp.train.build import DataMissingError, count_samples, num_labels, shard_paths

    _shard(tmp_path / "cifar10_train_0.arrow")
    _shard(tmp_path / "cifar10_train_1.arrow", rows=2)
    cfg = _cls_cfg(tmp_path)
    with pytest.raises(DataMissingError, match=r"needs its number of classes: no cifar10_labels.json beside"):
        num_labels(cfg)
    cfg.model.config = {"num_labels": 7}
    assert num_labels(cfg) == 7  # no labels file: the config says it
    (tmp_path / "cifar10_labels.json").write_text(json.dumps([f"c{i}" for i in range(10)]))
    with pytest.raises(ConfigError, match=r"model.config.num_labels: 7, but .*cifar10_labels.json names 10"):
        num_labels(cfg)
    cfg.model.config = {}
    model = build_model(cfg)
    assert isinstance(model, BridgeTowerForImageClassification) and model.classifier.out_features == 10
    assert count_samples("image_classification", shard_paths(cfg, "train")) == 5  # one sample per row
    cfg.data.labels = str(tmp_path / "mine.json")
    with pytest.raises(DataMissingError, match=r"data.labels: .*mine.json not found"):
        num_labels(cfg)
    (tmp_path / "mine.json").write_text('["yes", "no"')
    with pytest.raises(ConfigError, match=r"mine.json is not valid JSON"):
        num_labels(cfg)
    (tmp_path / "mine.json").write_text('["yes", "no"]')
    assert num_labels(cfg) == 2
    # a classifier of ours fine-tunes again with the data's classes
    model.save_pretrained(tmp_path / "runs" / "cls" / "model")
    cfg.data.labels, cfg.model.init_from = None, str(tmp_path / "runs" / "cls")
    again = build_model(cfg)
    assert torch.equal(again.classifier.weight, model.classifier.weight)
    text = _cls_cfg(tmp_path, "text_classification", train=["glue_rte_train_*.arrow"])
    _shard(tmp_path / "glue_rte_train_0.arrow")
    (tmp_path / "glue_rte_labels.json").write_text('["entailment", "not_entailment"]')
    assert num_labels(text) == 2 and build_model(text).classifier.out_proj.out_features == 2


def test_relative_paths_become_absolute_for_the_workers(tmp_path, monkeypatch):
    """Ray Train workers run in another folder: every local path an experiment names is made absolute."""
    from btp.train.run import absolute_paths

    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "shapes_vision").mkdir(parents=True)
    (tmp_path / "runs" / "pre").mkdir()
    cfg = _cfg(
        init_from="runs/pre", init_towers=TowersConfig(vision="runs/shapes_vision", text="roberta-base")
    )
    fixed = absolute_paths(cfg)
    assert fixed.model.init_from == str(tmp_path / "runs" / "pre")
    assert fixed.model.init_towers.vision == str(tmp_path / "runs" / "shapes_vision")
    assert fixed.model.init_towers.text == "roberta-base"  # not a local folder: a hub id, left alone
    assert cfg.model.init_towers.vision == "runs/shapes_vision"  # the caller's config is not changed
