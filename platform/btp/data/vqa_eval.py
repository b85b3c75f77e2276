"""Score VQA predictions per question type against shards that carry a `question_type` column (the synthetic ones).

    scores = score_vqa(predictions, test_shards, train_shards)
    scores["overall"], scores["types"]["shape"], scores["baseline"]["shape"]

A prediction scores as the training metric does: the official soft score of the predicted answer among the ten
annotations (1.0 from three matching annotators). The baseline of a type answers every question of that type
with the type's most frequent training answer.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

import pyarrow as pa

from btp.data.scenes import soft_score
from btp.data.shards import expand


def _questions(paths: Sequence[str]) -> Iterable[tuple[int, str, list[str]]]:
    """(question id, question type, annotations) of every question in the shards."""
    for path in expand(list(paths)):
        with pa.memory_map(path) as source:
            reader = pa.ipc.open_file(source)
            names = reader.schema.names
            if "question_type" not in names:
                raise ValueError(
                    f"{path}: no question_type column; per-type scores need the synthetic shards"
                )
            for i in range(reader.num_record_batches):
                batch = reader.get_batch(i).select(["question_id", "question_type", "answers"]).to_pydict()
                for qids, kinds, answers in zip(
                    batch["question_id"], batch["question_type"], batch["answers"]
                ):
                    yield from zip(qids, kinds, answers)


def _score(answer: str, annotations: list[str]) -> float:
    return soft_score(sum(a == answer for a in annotations))


def score_vqa(
    predictions: Iterable[dict[str, Any]], test: Sequence[str], train: Sequence[str] | None = None
) -> dict[str, Any]:
    """{"overall", "types": {type: score}, "baseline": {type: score, "overall"}, "questions", "missing"}."""
    predicted = {int(p["question_id"]): str(p["answer"]) for p in predictions}
    majority: dict[str, str] = {}
    if train:
        counts: dict[str, Counter] = defaultdict(Counter)
        for _, kind, annotations in _questions(train):
            counts[kind][Counter(annotations).most_common(1)[0][0]] += 1
        majority = {kind: min(c, key=lambda a: (-c[a], a)) for kind, c in counts.items()}
    sums: dict[str, float] = defaultdict(float)
    base: dict[str, float] = defaultdict(float)
    seen: Counter = Counter()
    missing = 0
    for qid, kind, annotations in _questions(test):
        seen[kind] += 1
        if qid not in predicted:
            missing += 1
        else:
            sums[kind] += _score(predicted[qid], annotations)
        if kind in majority:
            base[kind] += _score(majority[kind], annotations)
    total = sum(seen.values())
    out: dict[str, Any] = {
        "overall": sum(sums.values()) / total if total else 0.0,
        "types": {kind: sums[kind] / n for kind, n in sorted(seen.items())},
        "questions": total,
        "missing": missing,
    }
    if majority:
        out["baseline"] = {kind: base[kind] / n for kind, n in sorted(seen.items())}
        out["baseline"]["overall"] = sum(base.values()) / total if total else 0.0
    return out
