"""Rows -> samples -> batches without Ray: expansion, masking, targets, and batches the task models take."""

from __future__ import annotations

import random

import numpy as np
import pyarrow as pa
import pytest
import torch
from transformers import AutoTokenizer

from bridgetower import TASK_MODELS, BridgeTowerConfig
from bridgetower import batches as B
from bridgetower.transforms import decode_image, image_to_tensor
from btp.data.synth import write_synthetic

FILES = {
    "pretrain": "coco_caption_karpathy",
    "irtr": "f30k_caption_karpathy",
    "vqa": "vqav2",
    "nlvr2": "nlvr2",
    "snli_ve": "snli",
}


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=60, seed=2)
    return out


def rows(synth, task: str, n: int = 3) -> list[dict]:
    path = sorted(synth.glob(f"{FILES[task]}_train_*.arrow"))[0]
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all().slice(0, n).to_pylist()


def eval_image(data: bytes, rng: random.Random) -> np.ndarray:
    return image_to_tensor(decode_image(data), 64).numpy()


def test_expansion_follows_the_official_datasets(synth):
    caption_rows = rows(synth, "pretrain")
    samples = [s for r in caption_rows for s in B.expand_row("pretrain", r)]
    assert len(samples) == sum(len(r["caption"]) for r in caption_rows)
    vqa_rows = rows(synth, "vqa")
    assert len([s for r in vqa_rows for s in B.expand_row("vqa", r)]) == sum(
        len(r["questions"]) for r in vqa_rows
    )
    snli = rows(synth, "snli_ve", 1)[0]
    first = next(B.expand_row("snli_ve", snli))
    assert first["text"] == snli["sentences"][0][1] and first["label"] == snli["labels"][0]  # hypothesis only


@pytest.mark.parametrize(
    "task, change, message",
    [
        ("pretrain", {"caption": ["  "]}, "empty or non-text 'caption'"),
        ("pretrain", {"image_id": None}, "missing column 'image_id'"),
        ("nlvr2", {"answers": ["maybe"]}, "'True' or 'False'"),
        ("snli_ve", {"labels": [7]}, "0, 1 or 2"),
        ("vqa", {"answer_scores": []}, "answer_scores"),
        ("pretrain", {"caption": "a caption, not a list"}, "column 'caption' must be a list, found str"),
        ("snli_ve", {"image": "picture.jpg"}, "must hold encoded image bytes"),
    ],
)
def test_bad_rows_say_what_is_wrong(synth, task, change, message):
    row = {**rows(synth, task, 1)[0], **change}
    with pytest.raises(B.BadRow, match=message):
        list(B.expand_row(task, row))


def test_vqa_targets_and_out_of_vocabulary_labels():
    targets = B.vqa_targets([[1, 3]], [[0.3, 1.0]], 5)
    assert targets.tolist() == [[0.0, 0.3, 0.0, 1.0, 0.0]] or np.allclose(targets, [[0, 0.3, 0, 1, 0]])
    with pytest.raises(B.BadRow, match="outside the answer vocabulary"):
        B.vqa_targets([[9]], [[1.0]], 5)


def test_mlm_masking_rates_and_special_tokens():
    ids = np.random.default_rng(0).integers(10, 100, size=(400, 50))
    special = np.zeros_like(ids)
    special[:, 0] = special[:, -10:] = 1  # <s> and padding
    rngs = [random.Random(i) for i in range(len(ids))]
    masked, labels = B.mask_tokens(ids, special, rngs, mask_token_id=4, vocab_size=100)
    chosen = labels != -100
    assert not chosen[special == 1].any()
    assert 0.13 < chosen.sum() / (special == 0).sum() < 0.17
    assert (labels[chosen] == ids[chosen]).all()
    to_mask = (masked[chosen] == 4).mean()
    kept = (masked[chosen] == ids[chosen]).mean()
    assert 0.76 < to_mask < 0.84 and 0.07 < kept < 0.14  # 10 % kept, plus random tokens that hit the same id
    again, _ = B.mask_tokens(ids, special, [random.Random(i) for i in range(len(ids))], 4, 100)
    assert (again == masked).all()


@pytest.mark.parametrize("task", list(FILES))
def test_batches_feed_the_task_models(synth, task):
    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    samples = [s for r in rows(synth, task) for s in B.expand_row(task, r)][:6]
    num_labels = len(__import__("json").loads((synth / "vqa_answers.json").read_text()))
    batch = B.collate(task, samples, eval_image, tokenizer, 24, vqa_num_labels=num_labels)
    n = len(samples)
    assert batch["input_ids"].shape == batch["attention_mask"].shape == (n, 24)
    assert batch["pixel_values"].shape == ((n, 2, 3, 64, 64) if task == "nlvr2" else (n, 3, 64, 64))
    t = {k: torch.from_numpy(v) for k, v in batch.items()}
    cfg = BridgeTowerConfig.preset("tiny", vqa_num_labels=num_labels, retrieval_loss="itm_itc")
    model = TASK_MODELS[task](cfg)
    if task == "pretrain":
        assert (t["mlm_labels"] != -100).any()
        out = model(
            t["input_ids"], t["attention_mask"], t["pixel_values"], t["mlm_input_ids"], t["mlm_labels"]
        )
    elif task == "irtr":
        out = model(
            t["input_ids"],
            t["attention_mask"],
            t["pixel_values"],
            image_ids=t["image_index"],
            return_loss=True,
        )
    else:
        out = model(t["input_ids"], t["attention_mask"], t["pixel_values"], labels=t["labels"])
    assert torch.isfinite(out.loss)
