"""Task heads and losses (shapes as the official code: reference §3)."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn


class MLMHeadTransform(nn.Module):
    def __init__(self, hidden: int, eps: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(F.gelu(self.dense(x)))


class MLMHead(nn.Module):
    """transform -> decoder (untied, no bias) + separate `bias`."""

    def __init__(self, hidden: int, vocab_size: int, eps: float) -> None:
        super().__init__()
        self.transform = MLMHeadTransform(hidden, eps)
        self.decoder = nn.Linear(hidden, vocab_size, bias=False)
        self.bias = nn.Parameter(torch.zeros(vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.transform(x)) + self.bias


class ITMHead(nn.Module):
    def __init__(self, in_size: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_size, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x)


def two_layer_head(in_size: int, hidden: int, out_size: int) -> nn.Sequential:
    """Linear -> LayerNorm -> GELU -> Linear (state-dict indices 0, 1, 3 as the official checkpoints)."""
    return nn.Sequential(
        nn.Linear(in_size, hidden), nn.LayerNorm(hidden), nn.GELU(), nn.Linear(hidden, out_size)
    )


class TextClassificationHead(nn.Module):
    """RoBERTa's sequence-classification head on token 0."""

    def __init__(self, hidden: int, num_labels: int, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(dropout)
        self.out_proj = nn.Linear(hidden, num_labels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.tanh(self.dense(self.dropout(x[:, 0])))
        return self.out_proj(self.dropout(x))


def vqa_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """BCE-with-logits over soft targets, times the number of labels (official scaling)."""
    return F.binary_cross_entropy_with_logits(logits, targets.to(logits.dtype)) * targets.shape[1]


def itc_loss(
    text_embeds: torch.Tensor,
    image_embeds: torch.Tensor,
    temperature: torch.Tensor,
    gather: Callable[[torch.Tensor], torch.Tensor] | None = None,
    positives: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric InfoNCE over L2-normalised features; returns (loss, local text->all-image logits).

    `gather` all-gathers features with gradients across workers (identity when None); `positives` is an optional
    [B_local, B_global] soft-target matrix (retrieval: every pair sharing an image is positive).
    """
    all_text = gather(text_embeds) if gather else text_embeds
    all_image = gather(image_embeds) if gather else image_embeds
    t = temperature.clamp(0.001, 0.5)
    logits_t2i = text_embeds @ all_image.t() / t
    logits_i2t = image_embeds @ all_text.t() / t
    if positives is None:
        offset = _rank_offset(text_embeds, all_text)
        labels = torch.arange(text_embeds.shape[0], device=text_embeds.device) + offset
        loss = (F.cross_entropy(logits_t2i, labels) + F.cross_entropy(logits_i2t, labels)) / 2
    else:
        target = positives / positives.sum(1, keepdim=True)
        loss = (
            -(
                (F.log_softmax(logits_t2i, 1) * target).sum(1).mean()
                + (F.log_softmax(logits_i2t, 1) * target).sum(1).mean()
            )
            / 2
        )
    return loss, logits_t2i


def _rank_offset(local: torch.Tensor, gathered: torch.Tensor) -> int:
    if gathered.shape[0] == local.shape[0]:
        return 0
    import torch.distributed as dist

    return dist.get_rank() * local.shape[0] if dist.is_available() and dist.is_initialized() else 0
