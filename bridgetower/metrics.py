"""Evaluation metrics: VQA soft score and official VQA accuracy, image-text retrieval recall, plain accuracy.

`normalize_answer` and `vqa_accuracy` reproduce the official VQA evaluation (the VQA API's `vqaEval.py`),
quirks included, so numbers are comparable with published ones.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch

# Official vqaEval.py contractions map. The official keys "Id've", "I'dve", "Im", "Ive" are capitalised and
# can never match (words are lower-cased first); they are lower-cased here so "im" -> "i'm" works.
# The odd entries ("somebody'd" -> "somebodyd", "ow's'at" ...) are kept verbatim for comparability.
# fmt: off
CONTRACTIONS: dict[str, str] = {
    "aint": "ain't", "arent": "aren't", "cant": "can't", "couldve": "could've", "couldnt": "couldn't",
    "couldn'tve": "couldn't've", "couldnt've": "couldn't've", "didnt": "didn't", "doesnt": "doesn't",
    "dont": "don't", "hadnt": "hadn't", "hadnt've": "hadn't've", "hadn'tve": "hadn't've", "hasnt": "hasn't",
    "havent": "haven't", "hed": "he'd", "hed've": "he'd've", "he'dve": "he'd've", "hes": "he's",
    "howd": "how'd", "howll": "how'll", "hows": "how's", "id've": "i'd've", "i'dve": "i'd've", "im": "i'm",
    "ive": "i've", "isnt": "isn't", "itd": "it'd", "itd've": "it'd've", "it'dve": "it'd've", "itll": "it'll",
    "let's": "let's", "maam": "ma'am", "mightnt": "mightn't", "mightnt've": "mightn't've",
    "mightn'tve": "mightn't've", "mightve": "might've", "mustnt": "mustn't", "mustve": "must've",
    "neednt": "needn't", "notve": "not've", "oclock": "o'clock", "oughtnt": "oughtn't",
    "ow's'at": "'ow's'at", "'ows'at": "'ow's'at", "'ow'sat": "'ow's'at", "shant": "shan't",
    "shed've": "she'd've", "she'dve": "she'd've", "she's": "she's", "shouldve": "should've",
    "shouldnt": "shouldn't", "shouldnt've": "shouldn't've", "shouldn'tve": "shouldn't've",
    "somebody'd": "somebodyd", "somebodyd've": "somebody'd've", "somebody'dve": "somebody'd've",
    "somebodyll": "somebody'll", "somebodys": "somebody's", "someoned": "someone'd",
    "someoned've": "someone'd've", "someone'dve": "someone'd've", "someonell": "someone'll",
    "someones": "someone's", "somethingd": "something'd", "somethingd've": "something'd've",
    "something'dve": "something'd've", "somethingll": "something'll", "thats": "that's", "thered": "there'd",
    "thered've": "there'd've", "there'dve": "there'd've", "therere": "there're", "theres": "there's",
    "theyd": "they'd", "theyd've": "they'd've", "they'dve": "they'd've", "theyll": "they'll",
    "theyre": "they're", "theyve": "they've", "twas": "'twas", "wasnt": "wasn't", "wed've": "we'd've",
    "we'dve": "we'd've", "weve": "we've", "werent": "weren't", "whatll": "what'll", "whatre": "what're",
    "whats": "what's", "whatve": "what've", "whens": "when's", "whered": "where'd", "wheres": "where's",
    "whereve": "where've", "whod": "who'd", "whod've": "who'd've", "who'dve": "who'd've", "wholl": "who'll",
    "whos": "who's", "whove": "who've", "whyll": "why'll", "whyre": "why're", "whys": "why's",
    "wont": "won't", "wouldve": "would've", "wouldnt": "wouldn't", "wouldnt've": "wouldn't've",
    "wouldn'tve": "wouldn't've", "yall": "y'all", "yall'll": "y'all'll", "y'allll": "y'all'll",
    "yall'd've": "y'all'd've", "y'alld've": "y'all'd've", "y'all'dve": "y'all'd've", "youd": "you'd",
    "youd've": "you'd've", "you'dve": "you'd've", "youll": "you'll", "youre": "you're", "youve": "you've",
}

NUMBER_WORDS: dict[str, str] = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4", "five": "5", "six": "6",
    "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
# fmt: on

ARTICLES = frozenset({"a", "an", "the"})

# Verbatim from the official code: "(?!<=\d)" is a (mistyped) lookahead, not a lookbehind, so in effect
# every period not followed by a digit is stripped ("3.5" keeps its period, "a dog." loses it).
_PERIOD_STRIP = re.compile(r"(?!<=\d)(\.)(?!\d)")
_COMMA_STRIP = re.compile(r"(\d)(,)(\d)")
# The official list, in its order: ; / [ ] " { } ( ) = + \ _ - > < @ ` , ? !
_PUNCT = tuple(';/[]"{}()=+\\_-><@`,?!')

IGNORE_INDEX = -100


def vqa_score(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean soft-target score of each row's argmax label: the VQA training metric, a 0-dim float tensor."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"logits and targets must both be [B, num_labels]; got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    if logits.shape[0] == 0:
        raise ValueError("vqa_score needs a non-empty batch")
    pred = logits.detach().argmax(dim=-1, keepdim=True)
    return targets.detach().gather(1, pred).squeeze(1).float().mean()


def _process_punctuation(text: str) -> str:
    # The official test looks at the *input* text for every symbol, and a single digit-comma-digit anywhere
    # makes every symbol vanish instead of becoming a space ("1,000" -> "1000").
    out = text
    comma_in_number = _COMMA_STRIP.search(text) is not None
    for p in _PUNCT:
        if p + " " in text or " " + p in text or comma_in_number:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    # The official call passes re.UNICODE (= 32) positionally, i.e. as `count`; kept for identical results.
    return _PERIOD_STRIP.sub("", out, count=re.UNICODE)


def _process_digit_article(text: str) -> str:
    words = [NUMBER_WORDS.get(w, w) for w in text.lower().split()]
    words = [w for w in words if w not in ARTICLES]
    return " ".join(CONTRACTIONS.get(w, w) for w in words)


def normalize_answer(answer: str) -> str:
    """Normalise an answer string exactly as the official VQA evaluation does."""
    text = answer.replace("\n", " ").replace("\t", " ").strip().lower()
    return _process_digit_article(_process_punctuation(text))


def _question_accuracy(pred: str, answers: list[str]) -> float:
    # Leave-one-out over annotators: min(matches among the other n-1 / 3, 1), averaged over the n subsets.
    matches = sum(a == pred for a in answers)
    accs = [min((matches - (a == pred)) / 3.0, 1.0) for a in answers]
    return sum(accs) / len(accs)


def vqa_accuracy(predictions: list[str], answers: list[list[str]]) -> float:
    """Official VQA accuracy (leave-one-annotator-out, min(#matches/3, 1)) averaged over questions, in [0, 1]."""
    if len(predictions) != len(answers):
        raise ValueError(f"got {len(predictions)} predictions but {len(answers)} answer lists")
    if not predictions:
        raise ValueError("vqa_accuracy needs at least one question")
    total = 0.0
    for i, (pred, gts) in enumerate(zip(predictions, answers)):
        if not gts:
            raise ValueError(f"question {i} has no annotator answers")
        total += _question_accuracy(normalize_answer(pred), [normalize_answer(a) for a in gts])
    return total / len(predictions)


def _check_retrieval_inputs(scores: torch.Tensor, image_of_text: torch.Tensor, ks: Sequence[int]) -> None:
    if scores.dim() != 2 or scores.shape[0] == 0 or scores.shape[1] == 0:
        raise ValueError(
            f"scores must be a non-empty [num_texts, num_images] matrix; got {tuple(scores.shape)}"
        )
    if image_of_text.dim() != 1 or image_of_text.shape[0] != scores.shape[0]:
        raise ValueError(
            f"image_of_text must have one entry per text ({scores.shape[0]}); "
            f"got shape {tuple(image_of_text.shape)}"
        )
    if image_of_text.dtype.is_floating_point or image_of_text.dtype == torch.bool:
        raise ValueError(f"image_of_text must hold integer image indices; got {image_of_text.dtype}")
    if image_of_text.min() < 0 or image_of_text.max() >= scores.shape[1]:
        raise ValueError(f"image_of_text values must lie in [0, {scores.shape[1]})")
    if not ks or any(not isinstance(k, int) or k < 1 for k in ks):
        raise ValueError(f"ks must be a non-empty tuple of positive ints; got {ks!r}")


def _recall_at(hits: torch.Tensor, ks: Sequence[int]) -> dict[int, float]:
    # `hits` is [queries, ranked candidates]; slicing past the candidate count simply takes all of them.
    return {k: hits[:, :k].any(dim=1).float().mean().item() for k in ks}


def retrieval_recall(
    scores: torch.Tensor, image_of_text: torch.Tensor | list[int], ks: tuple[int, ...] = (1, 5, 10)
) -> dict[str, float]:
    """Image (ir_r@k) and text (tr_r@k) retrieval recall from a [num_texts, num_images] score matrix.

    Ranks come from one `torch.topk` call per direction at max(ks), so tied scores are ordered however topk
    returns them (implementation-defined) and consistently across all k.
    """
    image_of_text = torch.as_tensor(image_of_text, device=scores.device)
    _check_retrieval_inputs(scores, image_of_text, ks)
    scores = scores.detach()
    num_texts, num_images = scores.shape
    max_k = max(ks)

    # Image retrieval: each text ranks all images; hit if its own image is in the top k.
    top_images = scores.topk(min(max_k, num_images), dim=1).indices
    ir = _recall_at(top_images == image_of_text[:, None], ks)

    # Text retrieval: each image (that has a caption) ranks all texts; hit if any of its captions is in top k.
    has_text = torch.zeros(num_images, dtype=torch.bool, device=scores.device)
    has_text[image_of_text] = True
    image_ids = has_text.nonzero().squeeze(1)
    top_texts = scores.t()[image_ids].topk(min(max_k, num_texts), dim=1).indices
    tr = _recall_at(image_of_text[top_texts] == image_ids[:, None], ks)

    return {**{f"ir_r{k}": ir[k] for k in ks}, **{f"tr_r{k}": tr[k] for k in ks}}


def accuracy(logits_or_predictions: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of correct predictions (argmax over the last dim for logits), ignoring labels equal to -100."""
    preds = logits_or_predictions.detach()
    if preds.dim() == labels.dim() + 1:
        preds = preds.argmax(dim=-1)
    if preds.shape != labels.shape:
        raise ValueError(
            f"predictions {tuple(logits_or_predictions.shape)} do not match labels {tuple(labels.shape)}"
        )
    keep = labels != IGNORE_INDEX
    if not keep.any():
        raise ValueError("accuracy needs at least one label that is not -100")
    return (preds[keep] == labels[keep]).float().mean().item()
