"""Tokenizers for the data processes, without importing transformers (or, through it, torch).

A tokenizer saved by `transformers` (`save_pretrained`, or a hub snapshot such as `roberta-base`) holds a
`tokenizer.json`: its Rust `tokenizers` pipeline, post-processor (special tokens) included. `FixedLengthTokenizer`
drives that pipeline directly with what `transformers` sets for `padding="max_length", truncation=True` (the
official collator's call), so the ids, masks and special-token masks are the same; importing `tokenizers` costs
a data process ~0.05 s where `transformers.AutoTokenizer` costs ~2 s (it imports torch). Used only where
transformers runs that file as saved (see `load_tokenizer`); any other directory, or a hub name, goes through
`AutoTokenizer`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


class TokenizerError(ValueError):
    """A tokenizer directory that cannot be used as it is."""


def _token(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if isinstance(value, dict):  # {"content": "<mask>", "lstrip": true, ...}
        value = value.get("content")
    return value if isinstance(value, str) else None


class FixedLengthTokenizer:
    """Pads and truncates every text (or text pair) to `max_length`, as `tokenizer(..., padding="max_length",
    truncation=True)` of `transformers` does. Exposes `mask_token_id`, `pad_token_id` and `len()`."""

    def __init__(self, directory: str | Path) -> None:
        from tokenizers import Tokenizer

        self.directory = Path(directory)
        file = self.directory / "tokenizer.json"
        try:
            self.backend = Tokenizer.from_file(str(file))
        except Exception as err:  # the Rust error says what is wrong in the file
            raise TokenizerError(f"{file}: not a tokenizers file ({err})") from None
        config: dict[str, Any] = {}
        # the config wins over the special-tokens map, as in transformers
        for name in ("special_tokens_map.json", "tokenizer_config.json"):
            path = self.directory / name
            if path.is_file():
                try:
                    config.update(json.loads(path.read_text()))
                except (OSError, json.JSONDecodeError) as err:
                    raise TokenizerError(f"{path}: unreadable ({err})") from None
        self.padding_side = config.get("padding_side", "right")
        self.truncation_side = config.get("truncation_side", "right")
        self.pad_token = _token(config, "pad_token")
        self.mask_token = _token(config, "mask_token")
        self.pad_token_id = self._id(self.pad_token)
        self.mask_token_id = self._id(self.mask_token)
        self.pad_token_type_id = 0
        self._length: int | None = None

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.backend.token_to_id(token)

    def __len__(self) -> int:
        return self.backend.get_vocab_size(with_added_tokens=True)

    def __call__(
        self,
        texts: list[str],
        pairs: list[str] | None = None,
        *,
        max_length: int,
        padding: str = "max_length",
        truncation: bool = True,
        return_special_tokens_mask: bool = True,
    ) -> dict[str, list[list[int]]]:
        if padding != "max_length" or truncation is not True:
            raise ValueError("FixedLengthTokenizer only pads and truncates to max_length")
        if self.pad_token_id is None:
            raise TokenizerError(
                f"{self.directory}: no pad token (set pad_token in tokenizer_config.json); fixed-length batches "
                "need one"
            )
        if pairs is not None and len(pairs) != len(texts):
            raise ValueError(f"{len(texts)} texts but {len(pairs)} second sentences")
        if self._length != max_length:
            self.backend.enable_truncation(
                max_length, stride=0, strategy="longest_first", direction=self.truncation_side
            )
            self.backend.enable_padding(
                length=max_length,
                direction=self.padding_side,
                pad_id=self.pad_token_id,
                pad_type_id=self.pad_token_type_id,
                pad_token=self.pad_token,
            )
            self._length = max_length
        encodings = self.backend.encode_batch(list(zip(texts, pairs)) if pairs is not None else texts)
        out = {
            "input_ids": [e.ids for e in encodings],
            "attention_mask": [e.attention_mask for e in encodings],
        }
        if return_special_tokens_mask:
            out["special_tokens_mask"] = [e.special_tokens_mask for e in encodings]
        return out


# tokenizer classes that transformers runs exactly as their tokenizer.json says
AS_SAVED = {"PreTrainedTokenizerFast", "TokenizersBackend"}
# RoBERTa's class rebuilds the pipeline from the vocabulary: no normalizer, ByteLevel pre-tokenizer with the
# config's add_prefix_space (default false), RobertaProcessing; the same as its tokenizer.json when saved by it
ROBERTA = {"RobertaTokenizer", "RobertaTokenizerFast"}


def _runs_as_saved(directory: Path) -> bool:
    """Whether transformers would encode with exactly the pipeline of `directory/tokenizer.json`."""
    try:
        config = json.loads((directory / "tokenizer_config.json").read_text())
        pipeline = json.loads((directory / "tokenizer.json").read_text())
    except (OSError, json.JSONDecodeError):
        return False  # AutoTokenizer decides, and names what is wrong
    kind = config.get("tokenizer_class")
    if kind in AS_SAVED:
        return True
    if kind not in ROBERTA:
        return False
    pre = pipeline.get("pre_tokenizer") or {}
    return (
        pipeline.get("normalizer") is None
        and pre.get("type") == "ByteLevel"
        and bool(pre.get("add_prefix_space")) == bool(config.get("add_prefix_space", False))
        and (pipeline.get("post_processor") or {}).get("type") == "RobertaProcessing"
    )


def load_tokenizer(path: str | Path) -> Any:
    """`FixedLengthTokenizer` where transformers would run the directory's `tokenizer.json` as saved (RoBERTa
    tokenizers, `PreTrainedTokenizerFast`), else `transformers.AutoTokenizer`."""
    if _runs_as_saved(Path(path)):
        return FixedLengthTokenizer(path)
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(path))
