"""`cluster.backend=ray`: one RL run placed on a Ray cluster, with the single-process step code.

    driver (`toolrl rl ... cluster.backend=ray`)
      ├─ training ranks: Ray actors in one torch.distributed group (gloo on CPU, NCCL + FSDP2 on
      │   GPUs); each runs `fit` → `RLTrainer.step` on its share of every mini-batch
      ├─ rollout workers: Ray actors, one engine each (`RayRollout`, driven by rank 0)
      └─ sandbox workers: a Ray actor pool behind the code interpreter (`cluster.sandbox_workers`)

Every rank runs the same step. Rank 0's rollout provider sends the weights to the rollout
workers, gathers the trajectories and broadcasts them to the other ranks (`BroadcastRollout`;
with `trainer.mode=async` the workers produce ahead, `toolrl/distributed/async_rollout.py`);
rank 0 alone computes the rewards and broadcasts them (`rank_zero_rewards`: a code reward runs
programs once, and every rank sees the same advantages). From there each rank computes
advantages and old log-probs for its rows and trains them (`ProcessGroup`, data_parallel.py).

Placement: on GPUs (`cluster.gpus_per_node` > 0) a training rank and a rollout worker each ask
for half a GPU, so with the defaults they share the GPUs as the paper's colocated set-up does;
on CPUs each actor asks for a small CPU fraction so a 2-core test machine can hold them all.
"""

from __future__ import annotations

import dataclasses
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from toolrl.config import Config, from_dict
from toolrl.distributed.data_parallel import full_state_dict
from toolrl.rollout.async_rollout import StepPlan
from toolrl.rollout.provider import stamp_version
from toolrl.trainers.rl_setup import (
    async_journal,
    default_reward_fn,
    default_tools,
    fit,
    run_dir_of,
)
from toolrl.types import Sample, Trajectory

CPU_SHARE = 0.01
"""CPUs a CPU-run actor reserves: placement only; the processes share the cores."""


@dataclasses.dataclass
class Placement:
    """How many of each worker, and what each asks Ray for."""

    world_size: int
    rollout_workers: int
    sandbox_workers: int
    backend: str  # torch.distributed backend: gloo or nccl
    actor_options: dict[str, Any]


def placement_of(config: Config) -> Placement:
    """The run's layout from the `cluster` section."""
    c = config.cluster
    gpus = c.gpus_per_node > 0
    per_node = c.ranks_per_node or (c.gpus_per_node if gpus else 1)
    world = c.nodes * per_node
    options = {"num_gpus": 0.5, "num_cpus": 1} if gpus else {"num_cpus": CPU_SHARE}
    return Placement(
        world_size=world,
        rollout_workers=c.rollout_workers or world,
        sandbox_workers=c.sandbox_workers,
        backend="nccl" if gpus else "gloo",
        actor_options=options,
    )


class TrainRank:
    """One training process (the body of a Ray actor): joins the process group, then runs."""

    def __init__(self, rank: int, world_size: int, backend: str):
        self.rank, self.world_size, self.backend = rank, world_size, backend

    def address(self) -> tuple[str, int]:
        """This node's address and a free port: rank 0's are the group's rendezvous."""
        import ray

        with socket.socket() as s:
            s.bind(("", 0))
            port = s.getsockname()[1]
        return ray.util.get_node_ip_address(), port

    def join(self, host: str, port: int) -> int:
        import torch
        import torch.distributed as dist

        if self.backend == "nccl":
            torch.cuda.set_device(0)  # Ray exposes this actor's GPU as device 0
        else:
            torch.set_num_threads(1)
        dist.init_process_group(
            self.backend,
            init_method=f"tcp://{host}:{port}",
            rank=self.rank,
            world_size=self.world_size,
        )
        return self.rank

    def run(self, fn: Callable, *args):
        """`fn(*args)` in this rank's process (tests and benchmarks use it)."""
        return fn(*args)

    def fit(self, config: dict, rollout_spec: dict, reward_fn, tools, resume: bool) -> str:
        from toolrl.distributed.data_parallel import ProcessGroup

        cfg = from_dict(config, source="ray training rank")
        parallel = ProcessGroup(sharded_model=self.backend == "nccl")
        reward = rank_zero_rewards(reward_fn or default_reward_fn(cfg), parallel.rank)
        make_rollout = broadcast_rollout(rollout_spec, parallel.rank, tools)
        device = "cuda" if self.backend == "nccl" else "cpu"
        run_dir = fit(
            cfg,
            resume=resume,
            tools=tools,
            reward_fn=reward,
            device=device,
            make_rollout=make_rollout,
            parallel=parallel,
        )
        return str(run_dir)


class BroadcastRollout:
    """The `RolloutProvider` of every training rank: rank 0 rolls out through the Ray workers
    (`RayRollout`) and broadcasts the trajectories to every rank.

    Every rank calls `run` (the step does); each first reads its model's full weights (a
    collective under FSDP2), which rank 0 then sends to the rollout workers.
    """

    def __init__(self, workers, model, tools: list, max_context_length: int):
        self.workers = workers  # a RayRollout on rank 0, None on the other ranks
        self.model = model
        self._tools = tools  # what validation on rank 0 calls; the workers build their own
        self._max_context_length = max_context_length
        self.version = 0

    @property
    def tools(self) -> list:
        return self._tools

    @property
    def max_context_length(self) -> int:
        return self._max_context_length

    def run(self, samples: list[Sample], n: int, *, seed: int) -> list[Trajectory]:
        import torch.distributed as dist

        state = full_state_dict(self.model)
        box: list = [None]
        if self.workers is not None:
            self.workers.push_weights({k: v.cpu() for k, v in state.items()}, self.version)
            box[0] = self.workers.run(samples, n, seed=seed)
        dist.broadcast_object_list(box, src=0)
        return stamp_version(box[0], self.version)  # every token from the weights just pushed

    def weights_updated(self, version: int) -> None:
        self.version = version  # sent with the weights before the next rollout

    def metrics(self) -> dict[str, float]:
        return {}

    def close(self) -> None:
        pass

    def samples_from(self, model) -> bool:
        return False  # the workers hold copies in other processes

    @property
    def engine(self):
        """The rollout workers as one engine, holding the current weights (validation, which
        runs on rank 0 alone: with an FSDP2-sharded model it would need every rank)."""
        state = self.model.state_dict()
        if any(hasattr(v, "full_tensor") for v in state.values()):
            raise NotImplementedError(
                "validation during a sharded (GPU) Ray run is not supported yet: set "
                "trainer.val_every=0 and evaluate checkpoints with `toolrl eval`"
            )
        self.workers.push_weights({k: v.cpu() for k, v in state.items()}, self.version)
        return self.workers.engine


def broadcast_rollout(spec: dict, rank: int, tools: list | None):
    """`make_rollout` for `build_rl_trainer`: a `RayRollout` over new workers on rank 0, or with
    a `StepPlan` (`trainer.mode=async`) workers producing ahead
    (toolrl/distributed/async_rollout.py). `tools`: what validation on rank 0 calls; the
    workers build their own."""

    def make(model, tokenizer, trainer_tools: list, plan: StepPlan | None = None):
        from toolrl.distributed.rollout import RayRollout

        context = int(getattr(model.config, "max_position_embeddings", 0) or 0)
        config = from_dict(spec["config"], source="ray training rank")
        chosen = tools if tools is not None else default_tools(config) if rank == 0 else []
        if plan is not None:
            from toolrl.distributed.async_rollout import ray_async_rollout

            return ray_async_rollout(
                start_rollout_worker(spec, asynchronous=True),
                spec["num_workers"],
                model,
                chosen,
                context,
                plan=plan,
                journal=async_journal(config),
                rank=rank,
            )
        if rank != 0:
            return BroadcastRollout(None, model, [], context)
        workers = RayRollout(start_rollout_worker(spec), spec["num_workers"])
        return BroadcastRollout(workers, model, chosen, context)

    return make


def start_rollout_worker(spec: dict, *, asynchronous: bool = False) -> Callable[[], Any]:
    """A function that starts one rollout worker actor as `spec` describes (`asynchronous`:
    one that produces ahead, `AsyncRolloutWorker`)."""

    def start():
        import ray

        from toolrl.distributed.async_rollout import AsyncRolloutWorker
        from toolrl.distributed.rollout import RolloutWorker

        options = {"scheduling_strategy": "SPREAD", **spec["actor_options"]}
        if asynchronous:
            actor = ray.remote(AsyncRolloutWorker).options(**options)
            partial = spec["config"]["trainer"]["partial_rollouts"]
            return actor.remote(spec["config"], spec["tools_factory"], partial=partial)
        return (
            ray.remote(RolloutWorker)
            .options(**options)
            .remote(spec["config"], spec["tools_factory"])
        )

    return start


def rank_zero_rewards(reward_fn, rank: int):
    """Score on rank 0, then give every rank the same rewards (broadcast)."""

    def score(trajectories: list[Trajectory]) -> None:
        import torch.distributed as dist

        box: list = [None]
        if rank == 0:
            reward_fn(trajectories)
            box[0] = [(t.reward, t.reward_info) for t in trajectories]
        dist.broadcast_object_list(box, src=0)
        for t, (reward, info) in zip(trajectories, box[0], strict=True):
            t.reward, t.reward_info = reward, info

    return score


def start_ranks(placement: Placement) -> list:
    """The training ranks as Ray actors, joined into one process group."""
    import ray

    actor = ray.remote(TrainRank).options(**placement.actor_options)
    ranks = [
        actor.remote(r, placement.world_size, placement.backend)
        for r in range(placement.world_size)
    ]
    host, port = ray.get(ranks[0].address.remote())
    ray.get([r.join.remote(host, port) for r in ranks])
    return ranks


def tools_factory_of(config: Config, placement: Placement, tools) -> Callable[[], Any] | None:
    """What a rollout worker calls to build its tools: given tools; the run's tools with the
    code interpreter served by a sandbox pool; or None (the worker builds the run's tools)."""
    if tools is not None:
        return lambda: tools
    tools_cfg = config.tools
    if not placement.sandbox_workers or "code_interpreter" not in tools_cfg.enabled:
        return None
    from toolrl.distributed.sandbox import PooledTool
    from toolrl.tools.code_interpreter import CodeInterpreter

    pool = PooledTool.start(
        lambda: CodeInterpreter.from_config(tools_cfg),
        placement.sandbox_workers,
        max_concurrency=tools_cfg.max_concurrent,
        num_cpus=CPU_SHARE,
        scheduling_strategy="SPREAD",
    )
    return lambda: with_pooled_interpreter(tools_cfg, pool)


def with_pooled_interpreter(tools_cfg, pool):
    """The tools `tools_cfg` chooses, in order, with `pool` as the code interpreter."""
    from toolrl.tools.registry import build_tools
    from toolrl.tools.toolset import ToolSet

    enabled = tools_cfg.enabled
    others = build_tools(
        dataclasses.replace(tools_cfg, enabled=[n for n in enabled if n != "code_interpreter"])
    )
    ordered = [pool if name == "code_interpreter" else others.tools[name] for name in enabled]
    ordered += [tool for name, tool in others.tools.items() if name not in enabled]  # MCP tools
    return ToolSet(ordered, call_timeout=tools_cfg.call_timeout, on_close=[others.close])


def fit_ray(config: Config, *, resume: bool = False, tools=None, reward_fn=None) -> Path:
    """Run (or resume) an RL run on the Ray cluster this process reaches (`ray start` on each
    machine first; with none running, a local one starts); returns its run directory."""
    import ray

    from toolrl.trainers.model_io import resolve_model_path

    if not ray.is_initialized():
        ray.init()
    # Resolved once here (`tiny` is written into the run directory), not raced by every actor.
    # On several machines the run directory must be on a file system they share.
    path = str(resolve_model_path(config.model.path, run_dir_of(config)).resolve())
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, path=path))
    placement = placement_of(config)
    spec = {
        "config": config.to_dict(),
        "num_workers": placement.rollout_workers,
        "actor_options": placement.actor_options,
        "tools_factory": tools_factory_of(config, placement, tools),
    }
    ranks = start_ranks(placement)
    try:
        args = (config.to_dict(), spec, reward_fn, tools, resume)
        run_dirs = ray.get([r.fit.remote(*args) for r in ranks])
    finally:
        for r in ranks:
            ray.kill(r)
    return Path(run_dirs[0])


def fit_on_backend(
    config: Config, *, resume: bool = False, device: str = "cpu", tools=None, reward_fn=None
) -> Path:
    """`fit` in this process, or `fit_ray` on a Ray cluster with `cluster.backend=ray`."""
    if config.cluster.backend == "ray":
        return fit_ray(config, resume=resume, tools=tools, reward_fn=reward_fn)
    return fit(config, resume=resume, tools=tools, reward_fn=reward_fn, device=device)
