"""Metrics against hand-computed values: VQA score and official accuracy, retrieval recall, plain accuracy."""

from __future__ import annotations

import pytest
import torch

from bridgetower.metrics import accuracy, normalize_answer, retrieval_recall, vqa_accuracy, vqa_score


def test_vqa_score_takes_soft_target_of_argmax() -> None:
    logits = torch.tensor([[0.1, 2.0, 0.3], [1.0, 0.0, 0.0], [0.0, 0.0, 5.0]])
    targets = torch.tensor([[0.3, 0.6, 0.0], [1.0, 0.0, 0.0], [0.3, 0.0, 0.0]])
    score = vqa_score(logits, targets)
    assert score.dim() == 0 and score.dtype == torch.float32
    assert score.item() == pytest.approx((0.6 + 1.0 + 0.0) / 3)
    with pytest.raises(ValueError):
        vqa_score(logits, targets[:, :2])


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Two", "2"),
        ("a dog.", "dog"),
        ("dont", "don't"),
        ("yes!", "yes"),
        ("1,000", "1000"),
        ("1,000 cars!", "1000 cars"),  # a digit-comma-digit anywhere removes every symbol
        ("3.5", "3.5"),
        ("red/blue", "red blue"),
        ("red / blue", "red blue"),
        ("(yes)", "yes"),
        ("  The\tcat\n", "cat"),
        ("an apple", "apple"),
        ("none", "0"),
        ("ten dollars", "10 dollars"),
        ("whats up?", "what's up"),
        ("Im here", "i'm here"),
    ],
)
def test_normalize_answer_matches_official_rules(raw: str, expected: str) -> None:
    assert normalize_answer(raw) == expected


def _annotators(matches: int, answer: str = "cat") -> list[str]:
    return [answer] * matches + ["dog"] * (10 - matches)


@pytest.mark.parametrize(("matches", "expected"), [(4, 1.0), (3, 0.9), (2, 0.6), (1, 0.3), (0, 0.0)])
def test_vqa_accuracy_leave_one_out(matches: int, expected: float) -> None:
    # 3 matches: 7 subsets keep all three (1.0), 3 keep two (2/3) -> (7 + 2) / 10 = 0.9.
    assert vqa_accuracy(["cat"], [_annotators(matches)]) == pytest.approx(expected)


def test_vqa_accuracy_normalises_both_sides_and_averages_questions() -> None:
    answers = [["2", "two", "TWO", "2.", "3", "3", "3", "3", "3", "3"], _annotators(1)]
    assert vqa_accuracy(["Two.", "cat"], answers) == pytest.approx((1.0 + 0.3) / 2)


@pytest.mark.parametrize(
    ("predictions", "answers"),
    [([], []), (["cat"], []), (["cat"], [[]]), (["a", "b"], [["a"], ["b"], ["c"]])],
)
def test_vqa_accuracy_rejects_bad_input(predictions: list[str], answers: list[list[str]]) -> None:
    with pytest.raises(ValueError):
        vqa_accuracy(predictions, answers)


# 6 texts x 6 images; texts (0,1) -> image 0, (2,3) -> image 1, (4,5) -> image 2; images 3-5 have no text.
SCORES = torch.tensor(
    [
        [9.0, 1, 2, 3, 4, 5],  # t0: image 0 ranked 1st
        [5.0, 9, 1, 2, 3, 4],  # t1: image 0 ranked 2nd
        [1.0, 2, 8, 9, 7, 6],  # t2: image 1 ranked 5th
        [1.0, 3, 2, 9, 8, 7],  # t3: image 1 ranked 4th
        [1.0, 2, 0, 3, 4, 5],  # t4: image 2 ranked 6th
        [2.0, 1, 9, 0, 3, 4],  # t5: image 2 ranked 1st
    ]
)
IMAGE_OF_TEXT = [0, 0, 1, 1, 2, 2]


def test_retrieval_recall_hand_counted() -> None:
    # Text retrieval: column 0 tops with t0 (hit), column 1 with t1 (miss; t3 is 2nd), column 2 with t5 (hit).
    got = retrieval_recall(SCORES, IMAGE_OF_TEXT)
    expected = {"ir_r1": 2 / 6, "ir_r5": 5 / 6, "ir_r10": 1.0, "tr_r1": 2 / 3, "tr_r5": 1.0, "tr_r10": 1.0}
    assert got.keys() == expected.keys()
    for key, value in expected.items():
        assert isinstance(got[key], float)
        assert got[key] == pytest.approx(value), key


def test_retrieval_recall_custom_ks_and_tensor_indices() -> None:
    got = retrieval_recall(SCORES, torch.tensor(IMAGE_OF_TEXT), ks=(2, 4))
    assert got == pytest.approx({"ir_r2": 3 / 6, "ir_r4": 4 / 6, "tr_r2": 1.0, "tr_r4": 1.0})


@pytest.mark.parametrize(
    ("scores", "image_of_text", "ks"),
    [
        (SCORES[0], [0], (1,)),  # not 2-D
        (SCORES, [0, 0, 1], (1,)),  # one index per text
        (SCORES, [0, 0, 1, 1, 2, 6], (1,)),  # index out of range
        (SCORES, IMAGE_OF_TEXT, (0,)),  # k must be positive
        (SCORES, IMAGE_OF_TEXT, ()),
    ],
)
def test_retrieval_recall_rejects_bad_input(scores, image_of_text, ks) -> None:
    with pytest.raises(ValueError):
        retrieval_recall(scores, image_of_text, ks)


def test_accuracy_from_logits_ignores_minus_100() -> None:
    logits = torch.tensor([[2.0, 1.0], [0.0, 3.0], [5.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 1, -100])
    assert accuracy(logits, labels) == pytest.approx(2 / 3)


def test_accuracy_from_predictions_and_errors() -> None:
    assert accuracy(torch.tensor([[1, 2], [3, 4]]), torch.tensor([[1, 0], [3, -100]])) == pytest.approx(2 / 3)
    with pytest.raises(ValueError):
        accuracy(torch.tensor([1, 2, 3]), torch.tensor([1, 2]))
    with pytest.raises(ValueError):
        accuracy(torch.tensor([1, 2]), torch.tensor([-100, -100]))
