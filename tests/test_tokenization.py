"""The data processes' tokenizer (`tokenizers` alone) gives what transformers' AutoTokenizer gives, and the data
path imports neither transformers nor torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from tokenizers import ByteLevelBPETokenizer
from transformers import AutoTokenizer, RobertaTokenizer

import bridgetower
from bridgetower import batches as B
from bridgetower.tokenization import FixedLengthTokenizer, TokenizerError, load_tokenizer
from btp.data.pipeline import DataSpec, preprocess
from btp.data.synth import write_synthetic

TEXTS = [
    "a red circle left of a blue square",
    "how many triangles are there?",
    "",
    "is there a green star " * 12,  # longer than every max_length below: truncated
    "Ünïcode  spaces\tand\nnewlines",
]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=40, seed=3)
    return out


@pytest.fixture(scope="module", params=["right", "left"])
def roberta_dir(request, tmp_path_factory):
    """A RoBERTa tokenizer as transformers saves it (the layout of a hub snapshot), padding on either side."""
    d = tmp_path_factory.mktemp("roberta")
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(
        TEXTS * 4,
        vocab_size=300,
        min_frequency=1,
        special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"],
        show_progress=False,
    )
    bpe.save_model(str(d))
    side = request.param
    tokenizer = RobertaTokenizer(
        vocab_file=str(d / "vocab.json"),
        merges_file=str(d / "merges.txt"),
        padding_side=side,
        truncation_side=side,
    )
    tokenizer.save_pretrained(d / "saved")
    return d / "saved"


def same_as_transformers(directory: Path) -> None:
    ours, theirs = FixedLengthTokenizer(directory), AutoTokenizer.from_pretrained(str(directory))
    assert (ours.mask_token_id, ours.pad_token_id, len(ours)) == (
        theirs.mask_token_id,
        theirs.pad_token_id,
        len(theirs),
    )
    for length in (5, 12, 40):
        for pairs in (None, TEXTS[::-1]):
            got = ours(TEXTS, pairs, max_length=length)
            want = theirs(
                TEXTS,
                pairs,
                padding="max_length",
                truncation=True,
                max_length=length,
                return_special_tokens_mask=True,
            )
            for key in ("input_ids", "attention_mask", "special_tokens_mask"):
                assert got[key] == want[key], (key, length, pairs is not None)
                assert {len(x) for x in got[key]} == {length}


def test_the_synthetic_tokenizer_encodes_exactly_as_autotokenizer(synth):
    same_as_transformers(synth / "tokenizer")


def test_a_saved_roberta_tokenizer_encodes_exactly_as_autotokenizer(roberta_dir):
    same_as_transformers(roberta_dir)
    side = json.loads((roberta_dir / "tokenizer_config.json").read_text())["padding_side"]
    ids = FixedLengthTokenizer(roberta_dir)(["a red circle"], max_length=12)["input_ids"][0]
    pad = FixedLengthTokenizer(roberta_dir).pad_token_id
    assert (ids[0] == pad) == (side == "left") and (ids[-1] == pad) == (side == "right")


def test_pretraining_batches_are_the_same_with_either_tokenizer(synth):
    path = sorted(synth.glob("coco_caption_karpathy_train_*.arrow"))[0]
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all().slice(0, 4)
    spec = DataSpec(task="pretrain", paths=[str(path)], tokenizer=str(synth / "tokenizer"), image_size=32)
    ours = preprocess(table, spec)
    samples = [s for row in table.to_pylist() for s in B.expand_row("pretrain", row)]
    from bridgetower.transforms import decode_image, train_transform

    image = train_transform("clip", 32, normalized=False, as_numpy=True)
    theirs = B.collate(
        "pretrain",
        samples,
        lambda data, rng: image(decode_image(data), rng),
        AutoTokenizer.from_pretrained(str(synth / "tokenizer")),
        spec.max_text_len,
    )
    assert sorted(ours) == sorted(theirs)
    for key in ours:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)


def test_load_tokenizer_falls_back_to_autotokenizer_without_a_tokenizer_json(tmp_path, roberta_dir):
    assert isinstance(load_tokenizer(roberta_dir), FixedLengthTokenizer)
    slow = tmp_path / "slow"
    slow.mkdir()
    for name in ("vocab.json", "merges.txt"):
        (slow / name).write_bytes((roberta_dir.parent / name).read_bytes())
    (slow / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "RobertaTokenizer"}))
    fallback = load_tokenizer(slow)
    assert not isinstance(fallback, FixedLengthTokenizer)
    assert (
        fallback(["a red circle"], padding="max_length", truncation=True, max_length=8)["input_ids"][0][0]
        == 0
    )


def test_a_tokenizer_json_runs_directly_only_where_transformers_would_run_it_as_saved(synth, tmp_path):
    import shutil

    generic = tmp_path / "generic"
    shutil.copytree(synth / "tokenizer", generic)
    config = json.loads((generic / "tokenizer_config.json").read_text())
    (generic / "tokenizer_config.json").write_text(
        json.dumps({**config, "tokenizer_class": "PreTrainedTokenizerFast"})
    )
    assert isinstance(load_tokenizer(generic), FixedLengthTokenizer)
    same_as_transformers(generic)
    # RoBERTa's class would rebuild the pre-tokenizer with a prefix space the file does not have
    mismatched = tmp_path / "mismatched"
    shutil.copytree(synth / "tokenizer", mismatched)
    (mismatched / "tokenizer_config.json").write_text(json.dumps({**config, "add_prefix_space": True}))
    assert not isinstance(load_tokenizer(mismatched), FixedLengthTokenizer)
    assert isinstance(load_tokenizer(synth / "tokenizer"), FixedLengthTokenizer)


def test_a_broken_tokenizer_json_is_named(tmp_path):
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(TokenizerError, match=r"tokenizer\.json: not a tokenizers file"):
        FixedLengthTokenizer(tmp_path)


def test_the_data_path_imports_neither_torch_nor_transformers(synth):
    """A Ray data process imports the map function's module: it must not pay ~2 s for torch and transformers."""
    path = sorted(synth.glob("vqav2_train_*.arrow"))[0]
    answers = len(json.loads((synth / "vqa_answers.json").read_text()))
    code = f"""
import sys
import pyarrow as pa
from btp.data.pipeline import DataSpec, preprocess
table = pa.ipc.open_file(pa.memory_map({str(path)!r})).read_all().slice(0, 3)
for task in ("vqa",):
    spec = DataSpec(task=task, paths=[], tokenizer={str(synth / "tokenizer")!r}, image_size=32,
                    vqa_num_labels={answers})
    batch = preprocess(table, spec)
    assert batch["pixel_values"].dtype.name == "uint8" and batch["input_ids"].shape[1] == 40, batch
print(sorted(m for m in ("torch", "transformers") if m in sys.modules))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_every_public_name_of_bridgetower_resolves():
    for name in bridgetower.__all__:
        assert getattr(bridgetower, name) is not None
    with pytest.raises(AttributeError, match="no attribute 'Nope'"):
        bridgetower.Nope  # noqa: B018
