"""Data parallelism over a torch.distributed process group (the Ray backend's training ranks).

`ProcessGroup` implements `toolrl.trainers.parallel.DataParallel`; why the sharded update equals
the single-process one is said there.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from toolrl.trainers.parallel import shard_rows


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
