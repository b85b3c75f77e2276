"""Cross-modal co-attention layer (post-LN BERT: self-attention, cross-attention, FFN)."""

from __future__ import annotations

import torch
from torch import nn

from bridgetower.layers import AddNorm, Attention, Intermediate


class CrossModalLayer(nn.Module):
    """One layer of one stream; it attends to the other stream's bridged input of the same layer."""

    def __init__(
        self, hidden: int, heads: int, ffn: int, eps: float, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.attention = Attention(hidden, heads, eps, dropout, attn_dropout)
        self.crossattention = Attention(hidden, heads, eps, dropout, attn_dropout)
        self.intermediate = Intermediate(hidden, ffn)
        self.output = AddNorm(ffn, hidden, eps, dropout)

    def forward(
        self,
        x: torch.Tensor,
        other: torch.Tensor,
        self_mask: torch.Tensor | None = None,
        other_mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        x = self.attention(x, None, self_mask)
        x = self.crossattention(x, other, other_mask)
        return self.output(self.intermediate(x), x)
