"""Data-parallel policy updates: each rank trains its share of every mini-batch.

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


class ProcessGroup:
    """Data parallelism over an initialised `torch.distributed` process group.

    `sharded_model`: the model is FSDP2-sharded (`fully_shard`); its gradients are then already
    reduce-scattered in the backward pass (summed: `prepare_fsdp` sets the divide factor to 1)
    and `reduce_gradients` does nothing. Otherwise each rank holds a full replica and the
    gradients are summed here, one flat all-reduce per dtype.
    """

    def __init__(self, group=None, *, sharded_model: bool = False):
        import torch.distributed as dist

        if not dist.is_initialized():
            raise RuntimeError(
                "torch.distributed is not initialised: call init_process_group first"
            )
        self.group = group
        self.rank = dist.get_rank(group)
        self.world_size = dist.get_world_size(group)
        self.sharded_model = sharded_model

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """FSDP2-shard the model, or make every replica start from rank 0's weights."""
        import torch.distributed as dist

        if self.sharded_model:
            return prepare_fsdp(model)
        with torch.no_grad():
            for tensor in [*model.parameters(), *model.buffers()]:
                dist.broadcast(tensor.data, src=0, group=self.group)
        return model

    def shard(self, rows: slice) -> slice:
        return shard_rows(rows, self.rank, self.world_size)

    def all_sum(self, value: Tensor) -> Tensor:
        import torch.distributed as dist

        out = value.detach().clone().to(self._device())
        dist.all_reduce(out, group=self.group)
        return out.to(value.device)

    def reduce_gradients(self, parameters: Iterable[torch.nn.Parameter]) -> None:
        import torch.distributed as dist

        if self.sharded_model:
            return
        params = [p for p in parameters if p.requires_grad]
        for p in params:  # a rank whose shard was empty still joins the reduction
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        by_dtype: dict[torch.dtype, list[torch.nn.Parameter]] = {}
        for p in params:
            by_dtype.setdefault(p.grad.dtype, []).append(p)
        for group in by_dtype.values():
            flat = torch.cat([p.grad.reshape(-1) for p in group])
            dist.all_reduce(flat, group=self.group)
            offset = 0
            for p in group:
                n = p.grad.numel()
                p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
                offset += n

    def reduce_metrics(self, totals: dict[str, float]) -> dict[str, float]:
        import torch.distributed as dist

        # Every rank must reduce the same keys in the same order: gather the union first.
        keys: list[list[str]] = [[] for _ in range(self.world_size)]
        dist.all_gather_object(keys, sorted(totals), group=self.group)
        names = sorted({k for ks in keys for k in ks})
        values = torch.tensor([totals.get(k, 0.0) for k in names], dtype=torch.float64)
        values = self.all_sum(values)
        return dict(zip(names, values.tolist(), strict=True))

    def _device(self) -> torch.device:
        import torch.distributed as dist

        if dist.get_backend(self.group) == "nccl":
            return torch.device("cuda", torch.cuda.current_device())
        return torch.device("cpu")


def prepare_fsdp(model: torch.nn.Module, *, layer_types: tuple[type, ...] = ()) -> torch.nn.Module:
    """Shard `model` with FSDP2 (`fully_shard`) over the default process group, per decoder
    layer and then the whole model, with gradients summed (not averaged) over ranks.

    `layer_types` defaults to the classes of the modules in `model.model.layers` (transformers'
    decoder layers). Not exercised on CPU: FSDP2 needs one GPU per rank (NCCL).
    """
    from torch.distributed.fsdp import fully_shard

    if not layer_types:
        layers = getattr(getattr(model, "model", None), "layers", [])
        layer_types = tuple({type(layer) for layer in layers})
    for module in model.modules():
        if layer_types and isinstance(module, layer_types):
            fully_shard(module)
    fully_shard(model)
    for module in model.modules():
        if hasattr(module, "set_gradient_divide_factor"):
            module.set_gradient_divide_factor(1.0)
    return model


def full_state_dict(model: torch.nn.Module) -> dict[str, Tensor]:
    """The full (unsharded) state dict on every rank: DTensor shards are gathered."""
    state = {}
    for name, value in model.state_dict().items():
        full = value.full_tensor() if hasattr(value, "full_tensor") else value
        state[name] = full.detach()
    return state
