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
    _, more = B.mask_tokens(ids, special, [random.Random(i) for i in range(len(ids))], 4, 100, 0.4)
    assert 0.37 < (more != -100).sum() / (special == 0).sum() < 0.43


def test_collate_masks_the_configured_share_of_caption_tokens(synth):
    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    samples = [s for r in rows(synth, "pretrain") for s in B.expand_row("pretrain", r)][:200]
    shares = []
    for p in (0.15, 0.5):
        batch = B.collate("pretrain", samples, eval_image, tokenizer, 24, mlm_probability=p)
        words = (batch["attention_mask"] == 1).sum() - 2 * len(samples)  # without <s> and </s>
        shares.append((batch["mlm_labels"] != -100).sum() / words)
    assert 0.11 < shares[0] < 0.19 and 0.45 < shares[1] < 0.55


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


# ---- uni-modal classification: one sample per row ----------------------------------------------------------
def cls_rows(synth, prefix: str, n: int = 4) -> list[dict]:
    path = sorted(synth.glob(f"{prefix}_train_*.arrow"))[0]
    return pa.ipc.open_file(pa.memory_map(str(path))).read_all().slice(0, n).to_pylist()


def test_classification_batches_hold_only_their_modality_and_feed_the_models(synth):
    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    images = [
        s for r in cls_rows(synth, "shapes") for s in B.expand_row("image_classification", r, num_labels=12)
    ]
    batch = B.collate("image_classification", images, eval_image, None, 24)
    assert set(batch) == {"pixel_values", "labels", "sample_id"} and batch["pixel_values"].shape == (
        4,
        3,
        64,
        64,
    )
    texts = [
        s for r in cls_rows(synth, "sentiment") for s in B.expand_row("text_classification", r, num_labels=2)
    ]
    text = B.collate("text_classification", texts, eval_image, tokenizer, 24)
    assert set(text) == {"input_ids", "attention_mask", "labels", "sample_id"} and text[
        "input_ids"
    ].shape == (4, 24)
    assert batch["labels"].tolist() == [r["label"] for r in cls_rows(synth, "shapes")]
    for task, b, classes in (("image_classification", batch, 12), ("text_classification", text, 2)):
        model = TASK_MODELS[task](BridgeTowerConfig.preset("tiny", num_labels=classes))
        t = {k: torch.from_numpy(v) for k, v in b.items()}
        inputs = (
            (t["pixel_values"],) if task == "image_classification" else (t["input_ids"], t["attention_mask"])
        )
        out = model(*inputs, labels=t["labels"])
        assert out.logits.shape == (4, classes) and torch.isfinite(out.loss)


def test_sentence_pairs_are_tokenized_as_roberta_pairs(synth):
    tokenizer = AutoTokenizer.from_pretrained(str(synth / "tokenizer"))
    row = {"sentence": "the film was good", "sentence2": "the food was bad", "label": 1}
    samples = list(B.expand_row("text_classification", row, num_labels=2))
    ids = B.collate("text_classification", samples, eval_image, tokenizer, 24)["input_ids"][0].tolist()
    eos = tokenizer.eos_token_id
    assert ids[0] == tokenizer.bos_token_id and ids.count(eos) == 3  # <s> A </s></s> B </s>
    assert tokenizer.decode(ids, skip_special_tokens=True) == "the film was goodthe food was bad"
    single = {"sentence": "the film was good", "label": 1}
    with pytest.raises(B.BadRow, match="some rows have a sentence2 and others do not"):
        B.collate(
            "text_classification",
            samples + list(B.expand_row("text_classification", single)),
            None,
            tokenizer,
            24,
        )


@pytest.mark.parametrize(
    "task, row, message",
    [
        ("image_classification", {"image": b"x", "label": 12}, r"label 12 is outside the classes 0\.\.11"),
        ("image_classification", {"image": b"x", "label": -1}, r"label -1 is outside the classes"),
        ("image_classification", {"image": b"x"}, "missing column 'label'"),
        ("image_classification", {"image": b"x", "label": "cat"}, "must be an integer class, found str"),
        ("image_classification", {"label": 1}, "missing column 'image'"),
        ("text_classification", {"sentence": " ", "label": 0}, "empty or non-text 'sentence'"),
        ("text_classification", {"sentence": "fine", "sentence2": "", "label": 0}, "non-text 'sentence2'"),
    ],
)
def test_bad_classification_rows_say_what_is_wrong(task, row, message):
    with pytest.raises(B.BadRow, match=message):
        list(B.expand_row(task, row, num_labels=12))
