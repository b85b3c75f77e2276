"""Analytic FLOP counts of BridgeTower forward passes and pretraining steps (per image-text pair).

Every matmul counts 2·m·n·k: Linear layers, the patch-embedding convolution (a matmul over flattened patches) and
the two attention products QK^T and AV with the real token counts. Elementwise ops, softmax, LayerNorm, GELU,
embedding look-ups and the bicubic resize of the position table are ignored. The counts follow what the code in
`bridgetower.model` and `bridgetower.tasks` actually runs (e.g. the uni-modal towers stop after the last bridged
level; with bridge "none" only that level is projected).
"""

from __future__ import annotations

from bridgetower.bridge import BRIDGES
from bridgetower.config import BridgeTowerConfig


def _linear(tokens: int, fan_in: int, fan_out: int) -> int:
    return 2 * tokens * fan_in * fan_out


def _attention_core(queries: int, keys: int, width: int) -> int:
    """QK^T and AV summed over heads: each is 2·queries·keys·width."""
    return 4 * queries * keys * width


def _image_tokens(config: BridgeTowerConfig, image_size: int | None) -> int:
    size = config.vision.image_size if image_size is None else image_size
    if size % config.vision.patch_size:
        raise ValueError(f"image_size {size} is not a multiple of patch_size {config.vision.patch_size}")
    return (size // config.vision.patch_size) ** 2 + 1


def _used_levels(config: BridgeTowerConfig, levels: list[int]) -> list[int]:
    return levels if BRIDGES[config.bridge] is not None else levels[-1:]


def _vision_tower(config: BridgeTowerConfig, n: int, depth: int | None = None) -> int:
    v = config.vision
    d, p = v.hidden_size, v.patch_size
    patches = _linear(n - 1, v.num_channels * p * p, d)
    block = (
        _linear(n, d, 3 * d)  # packed in_proj
        + _attention_core(n, n, d)
        + _linear(n, d, d)  # out_proj
        + _linear(n, d, 4 * d)  # c_fc
        + _linear(n, 4 * d, d)  # c_proj
    )
    return patches + (depth or config.vision_levels[-1] + 1) * block


def _text_tower(config: BridgeTowerConfig, t: int, depth: int | None = None) -> int:
    c = config.text
    h = c.hidden_size
    layer = 4 * _linear(t, h, h) + _attention_core(t, t, h) + _linear(t, h, c.intermediate_size)
    layer += _linear(t, c.intermediate_size, h)
    return (depth or config.text_levels[-1] + 1) * layer


def _text_projection(config: BridgeTowerConfig, t: int) -> int:
    levels = len(_used_levels(config, config.text_levels))
    return levels * _linear(t, config.text.hidden_size, config.hidden_size)


def _image_projection(config: BridgeTowerConfig, n: int) -> int:
    levels = len(_used_levels(config, config.vision_levels))
    return levels * _linear(n, config.vision.hidden_size, config.hidden_size)


def _cross_layer(config: BridgeTowerConfig, queries: int, others: int) -> int:
    """One CrossModalLayer of the stream with `queries` tokens, cross-attending the other stream's `others`."""
    h, f = config.hidden_size, config.intermediate_size
    self_attention = 4 * _linear(queries, h, h) + _attention_core(queries, queries, h)
    cross_attention = (
        2 * _linear(queries, h, h)  # query + output dense
        + 2 * _linear(others, h, h)  # key + value on the other stream
        + _attention_core(queries, others, h)
    )
    return self_attention + cross_attention + _linear(queries, h, f) + _linear(queries, f, h)


def _bridge(config: BridgeTowerConfig, tokens: int) -> int:
    """One link-tower call on a stream of `tokens` tokens (x and y have the same length)."""
    h = config.hidden_size
    if config.bridge in ("concat", "gated"):
        return _linear(tokens, 2 * h, h)
    if config.bridge == "cross_attention":
        return (
            _linear(tokens, h, h)  # query
            + _linear(tokens, h, 2 * h)  # key_value
            + _attention_core(tokens, tokens, h)
            + _linear(tokens, h, h)  # dense
        )
    if config.bridge in ("none", "add", "scaled_add", "interpolate"):
        return 0
    raise ValueError(f"no FLOP formula for bridge {config.bridge!r}")


def _fuse(config: BridgeTowerConfig, t: int, n: int) -> int:
    layers = config.num_layers * (_cross_layer(config, t, n) + _cross_layer(config, n, t))
    bridges = (
        (config.num_layers - 1) * (_bridge(config, t) + _bridge(config, n)) if BRIDGES[config.bridge] else 0
    )
    return layers + bridges


def _poolers(config: BridgeTowerConfig) -> int:
    return 2 * _linear(1, config.hidden_size, config.hidden_size)


def _pretraining_heads(config: BridgeTowerConfig, t: int) -> int:
    h = config.hidden_size
    mlm = _linear(t, h, h) + _linear(t, h, config.text.vocab_size)
    itm = _linear(1, 2 * h, 2)
    itc = 0
    if config.itc:
        c = config.contrastive_hidden_size
        itc = _linear(1, config.text.hidden_size, c) + _linear(1, config.vision.hidden_size, c)
    return mlm + itm + itc


def forward_flops(config: BridgeTowerConfig, text_len: int, image_size: int | None = None) -> int:
    """Forward FLOPs of `BridgeTowerModel.forward` for one image-text pair (2·m·n·k per matmul)."""
    n = _image_tokens(config, image_size)
    return (
        _vision_tower(config, n)
        + _text_tower(config, text_len)
        + _image_projection(config, n)
        + _text_projection(config, text_len)
        + _fuse(config, text_len, n)
        + _poolers(config)
    )


def pretraining_step_flops(config: BridgeTowerConfig, text_len: int, image_size: int | None = None) -> int:
    """Forward FLOPs per pair of one `BridgeTowerForPretraining` step with labels (vision once, text and fuse twice).

    The MLM fuse computes no cls features, so the poolers run once; ITC's in-batch similarity matrix (batch-size
    dependent, tiny) is not counted, only its two heads.
    """
    n = _image_tokens(config, image_size)
    text_pass = _text_tower(config, text_len) + _text_projection(config, text_len)
    return (
        forward_flops(config, text_len, image_size)
        + text_pass
        + _fuse(config, text_len, n)
        + _pretraining_heads(config, text_len)
    )


def two_pass_pretraining_flops(
    config: BridgeTowerConfig, text_len: int, image_size: int | None = None
) -> int:
    """Forward FLOPs per pair of the official recipe: two full forward passes (MLM, ITM), each with its vision pass."""
    return 2 * forward_flops(config, text_len, image_size) + _pretraining_heads(config, text_len)


def classification_flops(
    config: BridgeTowerConfig, task: str, text_len: int, image_size: int | None = None
) -> int:
    """Forward FLOPs per sample of the uni-modal classifiers: their whole tower, then the head."""
    labels = config.num_labels or 0
    if task == "image_classification":
        n = _image_tokens(config, image_size)
        head = _linear(1, config.vision.hidden_size, labels)
        return _vision_tower(config, n, config.vision.num_layers) + head
    if task == "text_classification":
        h = config.text.hidden_size
        head = _linear(1, h, h) + _linear(1, h, labels)  # RoBERTa's dense + out_proj on token 0
        return _text_tower(config, text_len, config.text.num_layers) + head
    raise ValueError(f"not a classification task: {task!r}")


def train_flops(forward: int) -> int:
    """Forward + backward: the backward pass costs about twice the forward (grads w.r.t. inputs and weights)."""
    return 3 * forward


__all__ = [
    "classification_flops",
    "forward_flops",
    "pretraining_step_flops",
    "two_pass_pretraining_flops",
    "train_flops",
]
