"""Synthetic sentiment sentences (SST-2 style): a small lexicon whose polarity negation flips and `but` overrides.

A clause such as "the food was not very good" is positive when its adjective is positive, flipped by `not`.
A sentence is one clause, two clauses of the same polarity joined by `and`, or two clauses of opposite polarity
joined by `but`, where the second one decides. No single word gives the label away: the model has to combine a
word with the negation before it, and find the clause that counts.
"""

from __future__ import annotations

import random

LABELS = ("negative", "positive")  # SST-2's order: 0 negative, 1 positive
SUBJECTS = (
    "the film",
    "the food",
    "the hotel",
    "the service",
    "the music",
    "the book",
    "the game",
    "the room",
)
VERBS = ("was", "is", "seemed")
INTENSIFIERS = ("", "", "very ", "really ", "quite ")
POSITIVE = ("good", "great", "lovely", "excellent", "pleasant", "wonderful")
NEGATIVE = ("bad", "awful", "boring", "terrible", "dull", "poor")


def clause(polarity: int, rng: random.Random) -> str:
    """A clause whose sentiment is `polarity` (1 positive, 0 negative), negated half of the time."""
    negated = rng.random() < 0.5
    adjective = rng.choice(POSITIVE if polarity != negated else NEGATIVE)
    negation = "not " if negated else ""
    return f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {negation}{rng.choice(INTENSIFIERS)}{adjective}"


def sentence(label: int, rng: random.Random) -> str:
    """A sentence whose sentiment is `label`: one clause, `A and B` (both agree) or `A but B` (B decides)."""
    form = rng.choice(("one", "one", "and", "but", "but"))
    if form == "one":
        return clause(label, rng)
    first = label if form == "and" else 1 - label
    return f"{clause(first, rng)} {form} {clause(label, rng)}"


def polarity_of(text: str) -> int:
    """The label of a generated sentence, recomputed from its words (the rule the model has to learn)."""
    last = text.split(" but ")[-1].split(" and ")[-1].split()
    positive = last[-1] in POSITIVE
    return int(positive != ("not" in last))
