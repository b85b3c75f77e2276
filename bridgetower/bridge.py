"""Bridge layers ("link towers"): how a uni-modal level x enters the cross-modal stream y.

A variant is one small class and one registry line. `x` is the projected uni-modal level plus its token-type
embedding, `y` the previous cross-modal layer's output of the same modality; both are [B, N, H].
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

BRIDGES: dict[str, type[nn.Module] | None] = {}


def register_bridge(name: str):
    """Class decorator adding a bridge variant to `BRIDGES` under `name`."""

    def add(cls: type[nn.Module]) -> type[nn.Module]:
        BRIDGES[name] = cls
        return cls

    return add


class Bridge(nn.Module):
    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__()
        self.LayerNorm = nn.LayerNorm(hidden_size, eps=eps)


@register_bridge("add")
class AddBridge(Bridge):
    """LN(x + y): the paper's bridge."""

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.LayerNorm(x + y)


@register_bridge("scaled_add")
class ScaledAddBridge(Bridge):
    """LN(s·x + y) with a learnable scalar s (transformers' `scaled_add`)."""

    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__(hidden_size, eps)
        self.scaled_factor = nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.LayerNorm(x * self.scaled_factor + y)


@register_bridge("interpolate")
class InterpolateBridge(Bridge):
    """LN((1-β)·x + β·y) with a learnable scalar β (transformers' `interpolate`)."""

    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__(hidden_size, eps)
        self.beta = nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.LayerNorm(x * (1 - self.beta) + y * self.beta)


@register_bridge("concat")
class ConcatBridge(Bridge):
    """LN(W[x; y]); W starts as [I I] so training starts from the paper's add bridge."""

    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__(hidden_size, eps)
        self.dense = nn.Linear(2 * hidden_size, hidden_size)
        self.dense._bridge_identity_init = True

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.LayerNorm(self.dense(torch.cat([x, y], dim=-1)))


@register_bridge("gated")
class GatedBridge(Bridge):
    """LN(g⊙x + y) with a per-feature gate g = σ(W[x; y])."""

    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__(hidden_size, eps)
        self.gate = nn.Linear(2 * hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        g = torch.sigmoid(self.gate(torch.cat([x, y], dim=-1)))
        return self.LayerNorm(g * x + y)


@register_bridge("cross_attention")
class CrossAttentionBridge(Bridge):
    """LN(y + Attn(q=y, kv=x)): the cross-modal stream reads the uni-modal level by attention."""

    def __init__(self, hidden_size: int, eps: float, num_heads: int = 1) -> None:
        super().__init__(hidden_size, eps)
        self.num_heads = num_heads
        self.query = nn.Linear(hidden_size, hidden_size)
        self.key_value = nn.Linear(hidden_size, 2 * hidden_size)
        self.dense = nn.Linear(hidden_size, hidden_size)

    def forward(self, x: torch.Tensor, y: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        b, n, h = y.shape
        q = self.query(y).view(b, n, self.num_heads, -1).transpose(1, 2)
        k, v = self.key_value(x).view(b, x.shape[1], 2, self.num_heads, -1).permute(2, 0, 3, 1, 4)
        if mask is not None and mask.dtype != q.dtype:
            mask = mask.to(q.dtype)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return self.LayerNorm(y + self.dense(out.transpose(1, 2).reshape(b, n, h)))


# METER baseline: no bridges, only the last uni-modal layer enters the cross-modal encoder.
BRIDGES["none"] = None

__all__ = ["BRIDGES", "Bridge", "register_bridge"]
