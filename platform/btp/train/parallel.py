"""Parallelism applied after the model is built (as torchtitan does): FSDP2 over the model's wrap units."""

from __future__ import annotations

import torch
import torch.distributed as dist
from torch import nn


def apply_fsdp(model: nn.Module, bf16: bool = False, device_type: str = "cpu") -> nn.Module:
    """Shard every wrap unit (vision blocks, text layers, cross-modal layers, MLM head), then the root.

    Modules reused at every level (the shared projections, ln_post, token types) stay in the root unit.
    The mesh is explicit: on a GPU host a gloo group without one would move the model to CUDA.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(device_type, (dist.get_world_size(),))
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 else None
    kwargs = {"mesh": mesh, **({"mp_policy": policy} if policy else {})}
    for unit in model.wrap_units():
        fully_shard(unit, **kwargs)
    fully_shard(model, ignored_params=set(replicated_params(model)), **kwargs)
    return model


def replicated_params(model: nn.Module) -> list[nn.Parameter]:
    """Parameters FSDP cannot shard (scalars such as the ITC temperature): every rank keeps a full copy."""
    return [p for p in model.parameters() if p.dim() == 0]


def average_gradients(params: list[nn.Parameter]) -> None:
    """Average the gradients of replicated parameters across ranks (FSDP does it for the sharded ones)."""
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad /= dist.get_world_size()


def local_numel(tensors) -> int:
    """Elements held by this rank (the local shard of a DTensor, or the whole of a plain tensor)."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)
