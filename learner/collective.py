"""Cross-rank reductions for data-parallel learners (``torch.distributed``, gloo or nccl).

Consumes parameters whose gradients each rank computed on its own shard, or per-rank
statistics. Emits the mean gradient, or the moments of the union of the ranks' values, in
place on every rank, so whatever trains on them (the policy, RND's predictor) stays identical
across ranks. The caller (``learner.learner_group``) initialises the process group; with
``world_size == 1`` every function here is the identity and needs none.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import torch


def average_gradients(params: Iterable[torch.nn.Parameter], world_size: int) -> None:
    """All-reduce the mean gradient as one flat buffer (one collective, not one per tensor)."""
    if world_size == 1:
        return
    import torch.distributed as dist

    params = list(params)
    for p in params:
        if p.grad is None:  # unused on this rank's batch; peers may still have one
            p.grad = torch.zeros_like(p)
    grads = [p.grad for p in params]
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def global_moments(values: np.ndarray, world_size: int) -> tuple[float, float, float]:
    """(mean, population variance, count) of every rank's ``values`` together."""
    x = np.asarray(values, dtype=np.float64).reshape(-1)
    if world_size == 1:
        return float(x.mean()), float(x.var()), float(x.size)
    import torch.distributed as dist

    # Sums, not per-rank means: ranks may hold different numbers of values.
    sums = torch.tensor([x.size, x.sum(), np.square(x).sum()], dtype=torch.float64)
    dist.all_reduce(sums)
    count, total, squares = sums.tolist()
    mean = total / count
    return mean, max(squares / count - mean * mean, 0.0), count
