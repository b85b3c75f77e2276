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
    fully_shard(model, **kwargs)
    return model


def local_numel(tensors) -> int:
    """Elements held by this rank (the local shard of a DTensor, or the whole of a plain tensor)."""
    return sum((t.to_local() if hasattr(t, "to_local") else t).numel() for t in tensors)
