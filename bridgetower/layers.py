"""Building blocks shared by the towers and the cross-modal encoder: attention through SDPA, masks, poolers."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


def additive_mask(attention_mask: torch.Tensor | None, dtype: torch.dtype) -> torch.Tensor | None:
    """[B, T] 1/0 padding mask -> [B, 1, 1, T] additive mask (0 keep, dtype-min drop), as transformers does."""
    if attention_mask is None:
        return None
    keep = attention_mask[:, None, None, :].to(dtype)
    return (1.0 - keep) * torch.finfo(dtype).min


def run_layer(module: nn.Module, *args: torch.Tensor | None, enabled: bool = False) -> torch.Tensor:
    """Call `module`, recomputing its activations in backward when activation checkpointing is on."""
    if enabled and module.training and torch.is_grad_enabled():
        return checkpoint(module, *args, use_reentrant=False)
    return module(*args)


class AttentionCore(nn.Module):
    """Separate q/k/v projections (RoBERTa/BERT names); self-attention when `context` is None."""

    def __init__(self, hidden_size: int, num_heads: int, dropout: float) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.dropout = dropout
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key = nn.Linear(hidden_size, hidden_size)
        self.value = nn.Linear(hidden_size, hidden_size)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, _ = x.shape
        return x.view(b, n, self.num_heads, -1).transpose(1, 2)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        kv = x if context is None else context
        q, k, v = self._heads(self.query(x)), self._heads(self.key(kv)), self._heads(self.value(kv))
        p = self.dropout if self.training else 0.0
        if mask is not None and mask.dtype != q.dtype:  # mixed precision: the mask follows the activations
            mask = mask.to(q.dtype)
        # never causal: both streams of the cross-modal encoder see every token
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        return out.transpose(1, 2).flatten(2)


class AddNorm(nn.Module):
    """Post-LN residual: LN(dropout(dense(h)) + residual)."""

    def __init__(self, in_size: int, hidden_size: int, eps: float, dropout: float) -> None:
        super().__init__()
        self.dense = nn.Linear(in_size, hidden_size)
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, h: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(h)) + residual)


class Attention(nn.Module):
    """Attention sub-block of a post-LN BERT layer (`self` = core, `output` = add & norm)."""

    def __init__(
        self, hidden_size: int, num_heads: int, eps: float, dropout: float, attn_dropout: float
    ) -> None:
        super().__init__()
        self.self = AttentionCore(hidden_size, num_heads, attn_dropout)
        self.output = AddNorm(hidden_size, hidden_size, eps, dropout)

    def forward(
        self, x: torch.Tensor, context: torch.Tensor | None = None, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        return self.output(self.self(x, context, mask), x)


class Intermediate(nn.Module):
    def __init__(self, hidden_size: int, intermediate_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, intermediate_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.dense(x))


class Pooler(nn.Module):
    """Tanh(Linear(token 0))."""

    def __init__(self, hidden_size: int) -> None:
        super().__init__()
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))
