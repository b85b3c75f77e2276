"""Grounded synthetic scenes: random shape layouts, their pictures, and true, false or undecidable sentences."""

from __future__ import annotations

import io
import random
from collections import Counter
from typing import Any

from PIL import Image, ImageDraw

SHAPES = ("circle", "square", "triangle")
COLORS = ("red", "green", "blue", "yellow")
SIZES = ("small", "large")
POSITIONS = (
    ("top left", "top", "top right"),
    ("left", "center", "right"),
    ("bottom left", "bottom", "bottom right"),
)
POSITION_WORDS = tuple(word for row in POSITIONS for word in row)
NUMBER_WORDS = {1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six"}
QUESTION_TYPES = ("color", "shape", "count", "exist", "position")
VQA_ANSWERS = {
    "color": COLORS,
    "shape": SHAPES,
    "count": ("1", "2", "3"),
    "exist": ("yes", "no"),
    "position": POSITION_WORDS,
}
RGB = {"red": (220, 40, 40), "green": (40, 170, 60), "blue": (40, 80, 220), "yellow": (235, 210, 40)}
BACKGROUND = (128, 128, 128)
MATERIALS = ("wood", "metal", "plastic", "glass", "paper")
TIMES = ("yesterday", "in the morning", "last summer", "by a child", "with an old camera")

Scene = dict[str, Any]


def random_scene(rng: random.Random, n_objects: int) -> Scene:
    """Draw a scene of `n_objects` objects, one per grid cell, with distinct (shape, colour) pairs."""
    if not 1 <= n_objects <= 3:
        raise ValueError(f"n_objects must be 1, 2 or 3, got {n_objects}")
    pairs = [(s, c) for s in SHAPES for c in COLORS]
    while True:
        chosen = rng.sample(pairs, n_objects)
        # colour and shape questions need a shape and a colour that occur once; redraw the scenes that lack them
        if _has_single(s for s, _ in chosen) and _has_single(c for _, c in chosen):
            break
    cells = rng.sample(range(9), n_objects)
    objects = [
        {"shape": s, "color": c, "size": rng.choice(SIZES), "row": cell // 3, "col": cell % 3}
        for (s, c), cell in zip(chosen, cells)
    ]
    objects.sort(key=lambda o: (o["row"], o["col"]))  # reading order keeps captions natural
    return {"objects": objects}


def _has_single(values: Any) -> bool:
    return 1 in Counter(values).values()


def render(scene: Scene, image_size: int, rng: random.Random) -> Image.Image:
    """Paint a scene on a grey square picture, each object jittered a little inside its cell."""
    image = Image.new("RGB", (image_size, image_size), BACKGROUND)
    draw = ImageDraw.Draw(image)
    cell = image_size / 3
    for obj in scene["objects"]:
        radius = cell * (0.38 if obj["size"] == "large" else 0.2)
        slack = max(0.0, cell / 2 - radius - 1)
        cx = (obj["col"] + 0.5) * cell + rng.uniform(-slack, slack)
        cy = (obj["row"] + 0.5) * cell + rng.uniform(-slack, slack)
        _draw_shape(draw, obj["shape"], cx, cy, radius, RGB[obj["color"]])
    return image


def _draw_shape(draw: ImageDraw.ImageDraw, shape: str, cx: float, cy: float, r: float, fill: tuple) -> None:
    if shape == "circle":
        draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill)
    elif shape == "square":
        h = r * 0.85  # a square of the same half-width looks larger than the circle
        draw.rectangle((cx - h, cy - h, cx + h, cy + h), fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + 0.8 * r), (cx + r, cy + 0.8 * r)], fill=fill)


def encode_png(image: Image.Image) -> bytes:
    """Encode a picture as PNG bytes with fixed options (PIL writes no timestamp, so bytes are reproducible)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=False, compress_level=6)
    return buffer.getvalue()


def position_of(obj: dict) -> str:
    """The position word of an object's grid cell."""
    return POSITIONS[obj["row"]][obj["col"]]


def _where(obj: dict) -> str:
    word = position_of(obj)
    if word in ("left", "right"):
        return f"on the {word}"
    return "in the center" if word == "center" else f"at the {word}"


def _join(parts: list[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def count_phrase(n: int) -> str:
    """'one object', 'two objects', ..."""
    return f"{NUMBER_WORDS[n]} object" + ("s" if n > 1 else "")


def captions(scene: Scene, rng: random.Random) -> list[str]:
    """Five true captions of a scene, from full layouts to a single object."""
    objs = scene["objects"]
    one, two = rng.choice(objs), rng.choice(objs)
    count = count_phrase(len(objs))
    return [
        _join([f"a {o['color']} {o['shape']} {_where(o)}" for o in objs]),
        rng.choice([count, f"a picture with {count}", f"{count} on a grey background"]),
        f"a {one['size']} {one['color']} {one['shape']}",
        _join([f"a {o['size']} {o['color']} {o['shape']}" for o in objs]),
        f"there is a {two['color']} {two['shape']} {_where(two)}",
    ]


class Balancer:
    """Greedy answer balancer: among the answers a scene allows, pick the one used least so far."""

    def __init__(self) -> None:
        self.counts: Counter = Counter()

    def pick(self, kind: str, options: dict[str, list], rng: random.Random) -> tuple[str, Any]:
        """Choose (answer, payload) from `options` = {answer: [payloads]}, keeping answers near uniform."""
        allowed = sorted(a for a, payloads in options.items() if payloads)
        if not allowed:
            raise ValueError(f"no possible answer for {kind!r}")
        least = min(self.counts[(kind, a)] for a in allowed)
        answer = rng.choice([a for a in allowed if self.counts[(kind, a)] == least])
        self.counts[(kind, answer)] += 1
        return answer, rng.choice(options[answer])


def _pairs(objs: list[dict]) -> set[tuple[str, str]]:
    return {(o["color"], o["shape"]) for o in objs}


def _singles(objs: list[dict], key: str) -> list[dict]:
    counts = Counter(o[key] for o in objs)
    return [o for o in objs if counts[o[key]] == 1]


def misbound_pairs(objs: list[dict]) -> list[tuple[str, str]]:
    """(colour, shape) pairs whose colour and shape are both present but never on the same object."""
    present = _pairs(objs)
    return sorted({(a["color"], b["shape"]) for a in objs for b in objs} - present)


def absent_pairs(objs: list[dict]) -> list[tuple[str, str]]:
    """(colour, shape) pairs where the colour or the shape is missing from the scene."""
    colors, shapes = {o["color"] for o in objs}, {o["shape"] for o in objs}
    return [(c, s) for c in COLORS for s in SHAPES if c not in colors or s not in shapes]


def vqa_questions(scene: Scene, rng: random.Random, balancer: Balancer) -> list[tuple[str, str, str]]:
    """One (type, question, true answer) per question type, answers balanced through `balancer`."""
    objs = scene["objects"]
    by_color: dict[str, list] = {c: [] for c in COLORS}
    for o in _singles(objs, "shape"):
        by_color[o["color"]].append(o["shape"])
    color, shape = balancer.pick("color", by_color, rng)
    out = [("color", f"what color is the {shape}?", color)]
    by_shape: dict[str, list] = {s: [] for s in SHAPES}
    for o in _singles(objs, "color"):
        by_shape[o["shape"]].append(o["color"])
    shape, color = balancer.pick("shape", by_shape, rng)
    out.append(("shape", f"what shape is the {color} object?", shape))
    count, _ = balancer.pick("count", {str(len(objs)): [None]}, rng)
    out.append(("count", "how many objects are there?", count))
    out.append(_exist_question(objs, rng, balancer))
    by_position: dict[str, list] = {p: [] for p in POSITION_WORDS}
    for o in objs:
        by_position[position_of(o)].append((o["color"], o["shape"]))
    position, (color, shape) = balancer.pick("position", by_position, rng)
    out.append(("position", f"where is the {color} {shape}?", position))
    return out


def _exist_question(objs: list[dict], rng: random.Random, balancer: Balancer) -> tuple[str, str, str]:
    answer, pair = balancer.pick("exist", {"yes": sorted(_pairs(objs)), "no": [None]}, rng)
    if answer == "no":
        # half of the no's bind a present colour to a present shape of another object
        _, pair = balancer.pick(
            "exist-no", {"misbound": misbound_pairs(objs), "absent": absent_pairs(objs)}, rng
        )
    return ("exist", f"is there a {pair[0]} {pair[1]}?", answer)


def annotate(answer: str, kind: str, rng: random.Random, p_wrong: float = 0.1) -> list[str]:
    """Ten simulated annotator answers: mostly the true one, sometimes a plausible wrong one of the same type."""
    wrong = [a for a in VQA_ANSWERS[kind] if a != answer]
    return [rng.choice(wrong) if rng.random() < p_wrong else answer for _ in range(10)]


def soft_score(count: int) -> float:
    """Official VQA soft score of an answer given by `count` annotators."""
    return {0: 0.0, 1: 0.3, 2: 0.6, 3: 0.9}.get(count, 1.0)


def nlvr2_statement(left: Scene, right: Scene, truth: bool, rng: random.Random) -> str:
    """A statement about a pair of scenes whose truth value is `truth`."""
    options = [
        text for text, value in _nlvr2_candidates(left["objects"], right["objects"], rng) if value == truth
    ]
    return rng.choice(options)


def _nlvr2_candidates(left: list[dict], right: list[dict], rng: random.Random) -> list[tuple[str, bool]]:
    color, shape, side = rng.choice(COLORS), rng.choice(SHAPES), rng.choice(("left", "right"))
    total = rng.choice(range(2, 7))
    in_side = left if side == "left" else right
    has_pair = [(color, shape) in _pairs(objs) for objs in (left, right)]
    return [
        ("there are more objects in the left image than in the right image", len(left) > len(right)),
        ("there are more objects in the right image than in the left image", len(right) > len(left)),
        ("both images contain the same number of objects", len(left) == len(right)),
        (
            f"both images contain a {color} object",
            all(any(o["color"] == color for o in s) for s in (left, right)),
        ),
        (f"the {side} image contains a {shape}", any(o["shape"] == shape for o in in_side)),
        (f"exactly one image contains a {color} {shape}", has_pair[0] != has_pair[1]),
        (f"there are {NUMBER_WORDS[total]} objects in total", len(left) + len(right) == total),
    ]


def snli_hypothesis(scene: Scene, label: int, rng: random.Random) -> str:
    """A hypothesis for SNLI-VE: 0 contradiction (false), 1 neutral (undecidable), 2 entailment (true)."""
    objs = scene["objects"]
    if label == 1:
        o = rng.choice(objs)
        return rng.choice(
            [
                f"the {o['color']} {o['shape']} is made of {rng.choice(MATERIALS)}",
                f"the picture was taken {rng.choice(TIMES)}",
            ]
        )
    return rng.choice(_entail(objs, rng) if label == 2 else _contradict(objs, rng))


def _count_sentence(n: int) -> str:
    return f"there {'is' if n == 1 else 'are'} {count_phrase(n)}"


def _entail(objs: list[dict], rng: random.Random) -> list[str]:
    o, s, c = rng.choice(objs), rng.choice(_singles(objs, "shape")), rng.choice(_singles(objs, "color"))
    return [
        f"there is a {o['color']} {o['shape']}",
        _count_sentence(len(objs)),
        f"the {s['shape']} is {s['color']}",
        f"the {c['color']} object is a {c['shape']}",
    ]


def _contradict(objs: list[dict], rng: random.Random) -> list[str]:
    s, c = rng.choice(_singles(objs, "shape")), rng.choice(_singles(objs, "color"))
    color, shape = rng.choice(misbound_pairs(objs) + absent_pairs(objs))
    return [
        f"there is a {color} {shape}",
        _count_sentence(rng.choice([n for n in (1, 2, 3) if n != len(objs)])),
        f"the {s['shape']} is {rng.choice([x for x in COLORS if x != s['color']])}",
        f"the {c['color']} object is a {rng.choice([x for x in SHAPES if x != c['shape']])}",
    ]
