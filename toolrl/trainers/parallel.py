"""Data-parallel policy updates: each rank trains its share of every mini-batch.

The `DataParallel` Protocol is what `RLTrainer` calls; `SingleProcess` is one rank, and
`toolrl.distributed.data_parallel.ProcessGroup` is a torch.distributed group (the Ray backend).


Why the result equals the single-process update exactly (up to float rounding):
`agg_loss` divides by normalisers given from outside (N tokens, S sequences of the mini-batch).
Every rank computes N and S over the WHOLE mini-batch (its own counts, all-reduced with SUM),
so the loss a rank computes on its rows is exactly those rows' share of the full mini-batch
loss: L = Σ_ranks L_r, hence ∇L = Σ_ranks ∇L_r. Gradients are therefore all-reduced with SUM,
not averaged (averaging would need N / world_size instead). Share-weighted metrics (the
policy-gradient loss, entropy, clip fractions, KL) are sums of per-rank shares in the same way,
so they are summed too. After the reduction every rank holds the same gradient, clips it by the
same norm and takes the same optimizer step, so the replicas stay identical.

`SingleProcess` is the identity: `RLTrainer` always goes through a `DataParallel`, and the
single-process path is the world of size 1.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Protocol

import torch
from torch import Tensor


class DataParallel(Protocol):
    """How an RL step shares a mini-batch with the other ranks."""

    rank: int
    world_size: int

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The model this rank trains (the same replica everywhere, or an FSDP2 shard)."""
        ...

    def shard(self, rows: slice) -> slice:
        """This rank's rows of the mini-batch `rows` (contiguous: a GRPO group stays together)."""
        ...

    def all_sum(self, value: Tensor) -> Tensor:
        """`value` summed over ranks (a normaliser: tokens or sequences in the mini-batch)."""
        ...

    def reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients over ranks, in place."""
        ...

    def reduce_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        """Sum share-weighted metric totals over ranks."""
        ...


class SingleProcess:
    """One rank holding every row: all reductions are the identity."""

    rank = 0
    world_size = 1

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model

    def shard(self, rows: slice) -> slice:
        return rows

    def all_sum(self, value: Tensor) -> Tensor:
        return value

    def reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        return None

    def reduce_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        return totals


def shard_rows(rows: slice, rank: int, world_size: int) -> slice:
    """Rank `rank`'s contiguous block of `rows`; block sizes differ by at most one row."""
    start, stop = rows.start or 0, rows.stop
    count = stop - start
    base, extra = divmod(count, world_size)
    first = start + rank * base + min(rank, extra)
    return slice(first, first + base + (1 if rank < extra else 0))
