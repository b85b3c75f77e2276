"""Per-question-type VQA scores of predictions against the synthetic shards, and the majority baselines."""

from __future__ import annotations

from collections import Counter

import pyarrow as pa
import pytest

from btp.data.synth import write_synthetic
from btp.data.vqa_eval import score_vqa


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth")
    write_synthetic(out, images=600, seed=3)
    return out


def _rows(synth, split):
    out = []
    for path in sorted(synth.glob(f"vqav2_{split}_*.arrow")):
        with pa.memory_map(str(path)) as f:
            table = pa.ipc.open_file(f).read_all().to_pydict()
        for qids, kinds, answers in zip(table["question_id"], table["question_type"], table["answers"]):
            out += zip(qids, kinds, answers)
    return out


def test_true_answers_score_one_and_a_constant_answer_only_its_share(synth):
    test = [str(p) for p in sorted(synth.glob("vqav2_test_*.arrow"))]
    rows = _rows(synth, "test")
    truth = [{"question_id": q, "answer": Counter(a).most_common(1)[0][0]} for q, _, a in rows]
    scores = score_vqa(truth, test)
    assert scores["overall"] == 1.0 and scores["missing"] == 0 and scores["questions"] == len(rows)
    assert set(scores["types"]) == {"color", "shape", "count", "exist", "position"}

    yes = score_vqa([{"question_id": q, "answer": "yes"} for q, _, _ in rows], test)
    assert yes["types"]["color"] == 0.0 and 0.2 < yes["types"]["exist"] < 0.8
    half = score_vqa(truth[: len(truth) // 2], test)
    assert half["missing"] == len(rows) - len(rows) // 2 and half["overall"] < 0.6


def test_majority_baseline_comes_from_the_training_split(synth):
    train = [str(p) for p in sorted(synth.glob("vqav2_train_*.arrow"))]
    test = [str(p) for p in sorted(synth.glob("vqav2_test_*.arrow"))]
    scores = score_vqa([], test, train)
    assert scores["overall"] == 0.0 and set(scores["baseline"]) == {*scores["types"], "overall"}
    # balanced answers: always giving a type's commonest training answer is right only now and then
    assert all(0.0 < scores["baseline"][t] < 0.75 for t in ("color", "count", "exist", "position", "shape"))


def test_shards_without_question_types_are_refused(tmp_path):
    path = tmp_path / "vqav2_test_0.arrow"
    table = pa.table({"question_id": [[1]], "answers": [[["yes"] * 10]]})
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)
    with pytest.raises(ValueError, match="question_type"):
        score_vqa([], [str(path)])
