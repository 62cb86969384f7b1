"""SPEAR-style self-imitation as an option of the RL step (`algorithm.self_imitation`).

Each step, with the option on (`SelfImitation.step`, after the on-policy update):

    the step's group-mean rewards join the baseline's history → stale entries leave the buffer
    → once more than 1.5 × buffer_size held trajectories beat the baseline b, a replay: the
    largest power of two of them (at most buffer_size, chosen by a seed of the step) are
    trained on with Â = r − b, PPO-clipped against the log-probs they were sampled with, in
    mini-batches of the run's size, one optimizer step each, the loss weighted by γ(t);
    the buffer is then emptied → the step's trajectories with A > 0 (and a tool call) join it

and, right after the rewards (`SelfImitation.shape_rewards`), the tool-call reward curriculum
adds μ(t)·bonus to each reward (toolrl/algorithms/shaping.py). The buffer and the baseline's
history are part of the checkpoint (`state_dict`), so a resumed run replays what the
uninterrupted run would have.

How this departs from the authors' released code (TencentYoutuResearch/SPEAR, verl's
`ray_trainer_hybrid.py` / `dp_actor.py`), on purpose:
- the buffer is bounded (`capacity`, oldest first out); the release bounds it only by age and by
  emptying it at each replay;
- an entry's age is counted from the current step, not from the newest entry's step;
- the baseline's history holds the last `baseline_size` group means one by one (the release
  drops whole steps), and it includes the current step's groups before the replay decision
  (the release adds them after the update), so the baseline is defined from the first step;
- π_behaviour of the ratio is the rollout engine's log-probs stored with the entry (the release
  stores the trainer's π_old of that step; with `old_log_probs=auto` on the CPU they are equal);
- the replay runs once after the on-policy epochs (the release: after each epoch's mini-batches)
  and after the step's learning-rate scheduler step (the same lr under the paper's constant lr),
  with the run's policy loss and aggregation; the release's Clip-Cov regularisation of the
  replayed tokens and its entropy term on them are not applied (entropy_coef is 0 in the paper's
  recipe anyway), and the release's check "at least one row per GPU" is not needed here.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import torch

from toolrl.algorithms import (
    broadcast_to_tokens,
    group_mean_rewards,
    num_valid_seqs,
    num_valid_tokens,
    recalibrated_advantages,
    replay_count,
    reward_baseline,
    self_imitation_loss,
    tool_call_curriculum,
    tool_curriculum_weight,
    warmup_weight,
)
from toolrl.config import Config
from toolrl.config.schema import SelfImitationConfig
from toolrl.trainers.batching import (
    TokenBatch,
    device_of,
    grouped_micro_batches,
    micro_batches,
    pad_sequences,
    token_logprobs,
)
from toolrl.trainers.parallel import DataParallel
from toolrl.types import Trajectory

REPLAY_TRIGGER = 1.5
"""A replay starts once more than REPLAY_TRIGGER × buffer_size held trajectories beat the
baseline (the release's `is_full_capacity`)."""


class Trainer(Protocol):
    """What self-imitation uses of the RL trainer (`toolrl.trainers.rl.RLTrainer`)."""

    config: Config
    model: torch.nn.Module
    tokenizer: Any
    optimizer: torch.optim.Optimizer
    parallel: DataParallel
    policy_loss: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]]
    loss_reads_entropy: bool

    def advantages(self, trajectories: list[Trajectory]) -> torch.Tensor: ...

    def rows_per_mini_batch(self) -> int: ...

    def optimizer_step(self, totals: dict[str, float]) -> dict[str, float]: ...


@dataclass
class ReplayEntry:
    """A successful trajectory as the buffer keeps it: what a training row needs, its reward
    and the step that sampled it."""

    prompt_ids: list[int]
    response_ids: list[int]
    loss_mask: list[int]
    logprobs: list[float]
    """The rollout engine's log-probs of the response (π_behaviour of the replay's ratio)."""
    reward: float
    step: int


class ReplayBuffer:
    """Successful trajectories (at most `capacity`, oldest out first) and the baseline's
    history (the last `baseline_size` group-mean rewards)."""

    def __init__(self, capacity: int, baseline_size: int):
        self.capacity = capacity
        self.entries: list[ReplayEntry] = []
        self.group_means: deque[float] = deque(maxlen=baseline_size)

    def __len__(self) -> int:
        return len(self.entries)

    def admit(self, entries: list[ReplayEntry]) -> None:
        """Append `entries`; the oldest leave while more than `capacity` are held."""
        self.entries.extend(entries)
        del self.entries[: max(0, len(self.entries) - self.capacity)]

    def drop_stale(self, step: int, max_age: int) -> None:
        """Entries sampled more than `max_age` steps before `step` leave."""
        self.entries = [e for e in self.entries if step - e.step <= max_age]

    def record_groups(self, means: list[float]) -> None:
        """A step's group-mean rewards join the history (the oldest leave past its size)."""
        self.group_means.extend(means)

    def baseline(self, percentile: float) -> float:
        """b, the `percentile`-th percentile of the history (0 while it is empty)."""
        return reward_baseline(torch.tensor(list(self.group_means)), percentile)

    def state_dict(self) -> dict[str, Any]:
        return {
            "entries": [asdict(e) for e in self.entries],
            "group_means": list(self.group_means),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.entries = [ReplayEntry(**e) for e in state["entries"]]
        self.group_means.clear()
        self.group_means.extend(state["group_means"])


def admissible(
    trajectories: list[Trajectory], advantages: torch.Tensor, *, tool_call: bool
) -> list[Trajectory]:
    """The trajectories that join the buffer: a positive advantage in their group and, with
    `tool_call`, at least one tool call (the release's rule)."""
    return [
        t
        for t, a in zip(trajectories, advantages.tolist(), strict=True)
        if a > 0 and (t.num_tool_calls > 0 or not tool_call)
    ]


def entry_of(trajectory: Trajectory, step: int) -> ReplayEntry:
    return ReplayEntry(
        list(trajectory.prompt_ids),
        list(trajectory.response_ids),
        list(trajectory.loss_mask),
        list(trajectory.rollout_logprobs),
        float(trajectory.reward),
        step,
    )


def num_tool_turns(trajectory: Trajectory) -> int:
    """Assistant turns that call a tool: what SPEAR's tool-call reward counts."""
    return sum(bool(turn.tool_calls) for turn in trajectory.turns)


class SelfImitation:
    """The option's state and its two hooks into `RLTrainer.step`."""

    def __init__(self, config: SelfImitationConfig, seed: int):
        self.config = config
        self.seed = seed
        self.buffer = ReplayBuffer(config.capacity, config.baseline_size)

    def shape_rewards(self, trajectories: list[Trajectory], step: int) -> None:
        """Add the tool-call reward curriculum's μ(t)·bonus to every reward."""
        c = self.config
        weight = tool_curriculum_weight(step + 1, c.tool_reward, c.tool_reward_steps)
        if weight == 0 or not trajectories:
            return
        scores = torch.tensor([t.reward for t in trajectories], dtype=torch.float64)
        turns = torch.tensor([num_tool_turns(t) for t in trajectories])
        shaped = tool_call_curriculum(
            scores, turns, weight, c.tool_reward_per_call, c.tool_reward_cap
        )
        for t, reward in zip(trajectories, shaped.tolist(), strict=True):
            t.reward = reward

    def step(self, trainer: Trainer, trajectories: list[Trajectory], step: int) -> dict[str, float]:
        """Baseline, stale entries, the replay when due, then admission; returns spear/*."""
        c = self.config
        trained = [t for t in trajectories if not t.excluded_from_training]
        self.buffer.record_groups(
            group_mean_rewards([t.reward for t in trained], [t.sample.id for t in trained])
        )
        self.buffer.drop_stale(step, c.max_age)
        baseline = self.buffer.baseline(c.baseline_percentile)
        weight = warmup_weight(step + 1, c.loss_coef, c.warmup_steps)
        eligible = [e for e in self.buffer.entries if e.reward > baseline]
        metrics = {"spear/sil_loss": 0.0, "spear/grad_norm": 0.0, "spear/replayed": 0}
        if weight > 0 and len(eligible) > REPLAY_TRIGGER * c.buffer_size:
            chosen = self.choose(eligible, step)
            metrics.update(replay(trainer, chosen, baseline, weight))
            self.buffer.entries = []
        admitted = admissible(trained, trainer.advantages(trained), tool_call=c.require_tool_call)
        self.buffer.admit([entry_of(t, step) for t in admitted])
        tool_weight = tool_curriculum_weight(step + 1, c.tool_reward, c.tool_reward_steps)
        return {
            **metrics,
            "spear/eligible": len(eligible),
            "spear/admitted": len(admitted),
            "spear/buffer_size": len(self.buffer),
            "spear/baseline": baseline,
            "spear/sil_weight": weight,
            "spear/tool_reward_weight": tool_weight,
        }

    def choose(self, eligible: list[ReplayEntry], step: int) -> list[ReplayEntry]:
        """`replay_count` of the eligible entries, drawn by a generator seeded by the step (so
        a resumed run draws the same), kept in buffer order."""
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        keep = torch.randperm(len(eligible), generator=generator)
        keep = keep[: replay_count(len(eligible), self.config.buffer_size)].sort().values
        return [eligible[i] for i in keep.tolist()]

    def state_dict(self) -> dict[str, Any]:
        return self.buffer.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.buffer.load_state_dict(state)


def replay_batch(entries: list[ReplayEntry], pad_token_id: int) -> TokenBatch:
    """Padded rows of the replayed entries; `values` holds their behaviour log-probs."""
    return pad_sequences(
        [e.prompt_ids + e.response_ids for e in entries],
        [[0] * len(e.prompt_ids) + e.loss_mask for e in entries],
        [[0.0] * len(e.prompt_ids) + e.logprobs for e in entries],
        pad_token_id=pad_token_id,
    )


def replay(
    trainer: Trainer, entries: list[ReplayEntry], baseline: float, weight: float
) -> dict[str, float]:
    """The imitation update on `entries`: mini-batches of the run's size (this rank's share
    of each, normalisers summed over ranks), exact micro-batch accumulation, one optimizer
    step each. Returns the mean loss (before γ), grad norm and the number of rows replayed."""
    cfg = trainer.config
    pad = trainer.tokenizer.pad_token_id or 0
    batch = replay_batch(entries, pad).to(device_of(trainer.model))
    rewards = torch.tensor([e.reward for e in entries], device=batch.loss_mask.device)
    advantages = broadcast_to_tokens(recalibrated_advantages(rewards, baseline), batch.loss_mask)
    trainer.model.train()
    sums = {"spear/sil_loss": 0.0, "spear/grad_norm": 0.0}
    updates = micro_batches(len(batch), trainer.rows_per_mini_batch())
    for whole in updates:
        rows = trainer.parallel.shard(whole)
        mini, mini_adv = batch.select(rows), advantages[rows]
        norms = {
            "global_num_tokens": trainer.parallel.all_sum(num_valid_tokens(mini.loss_mask)),
            "global_num_seqs": trainer.parallel.all_sum(num_valid_seqs(mini.loss_mask)),
            "norm_length": cfg.rollout.max_response_length,
        }
        trainer.optimizer.zero_grad(set_to_none=True)
        loss_sum = 0.0
        parts = grouped_micro_batches(mini, cfg.trainer.micro_batch_size) if len(mini) else []
        for micro in parts:
            part = mini.select(micro)
            logprobs, entropy = token_logprobs(
                trainer.model,
                part,
                temperature=cfg.rollout.temperature,
                with_entropy=trainer.loss_reads_entropy,
            )
            extra = {"entropy": entropy.detach()} if trainer.loss_reads_entropy else {}
            loss, _ = self_imitation_loss(
                trainer.policy_loss,
                logprobs,
                part.values,
                mini_adv[micro],
                part.loss_mask,
                weight=weight,
                **norms,
                **extra,
            )
            loss.backward()
            loss_sum += float(loss.detach())
        totals = trainer.optimizer_step({"loss": loss_sum})
        sums["spear/sil_loss"] += totals["loss"] / weight
        sums["spear/grad_norm"] += totals["actor/grad_norm"]
    out = {key: value / len(updates) for key, value in sums.items()}
    out["spear/replayed"] = len(entries)
    return out
