"""Agentic RL with GRPO-TCR: the step reads top to bottom in `RLTrainer.step`.

    prompts → n rollouts each through the agent loop (real sandbox) → rewards and shaping →
    GRPO advantages per group → (optional) drop all-equal groups → old log-probs recomputed
    by the trainer → mini-batch policy updates with exact micro-batch accumulation → metrics

With `algorithm.self_imitation` (SPEAR, off by default) the rewards also get its tool-call
curriculum, and after the updates a replay buffer of past winners is trained on and refilled
(toolrl/trainers/self_imitation.py).

How this departs from the paper's released code (Open-AgentRL on verl), on purpose:
- the tool-call shaping (−1 + 0.1·k on wrong answers, capped at −0.6) really applies (switch:
  reward.tool_shaping); the released code computed it but never used it;
- trajectories that hit a sandbox infrastructure error are masked out of the loss and of their
  group's baseline, and counted (`rollout/infra_masked`), instead of being scored as wrong;
- rollouts are seeded per (step, sample, rollout, turn), and the data order per step, so a run
  resumed from a checkpoint reproduces the uninterrupted run exactly.

What the step relies on is declared, never probed:
- `rollout`: a `RolloutProvider` (toolrl/rollout/provider.py): `run(samples, n, seed=...)`,
  `weights_updated(version)` after every update, `samples_from(model)` — one process's agent
  loop, or Ray rollout workers, change no line of the step;
- `parallel`: a `DataParallel` (toolrl/trainers/parallel.py): which rows of each mini-batch this
  rank trains, and sums of normalisers, gradients and metrics over the ranks (`SingleProcess`
  is one rank holding every row);
- the algorithm: the registered advantage estimator, policy loss and KL estimator the config
  names, each given its settings by `with_config` (toolrl/algorithms/binding.py).
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field

import torch

from toolrl.algorithms import (
    MismatchTally,
    RoCStats,
    agg_loss,
    broadcast_to_tokens,
    correct,
    correction_rates,
    get_advantage_estimator,
    get_kl_estimator,
    get_policy_loss,
    num_valid_seqs,
    num_valid_tokens,
    reads_entropy,
    resample_on_correct,
    with_config,
)
from toolrl.config import Config
from toolrl.rollout.async_rollout import staleness_metrics
from toolrl.rollout.provider import RolloutProvider
from toolrl.tools.metrics import trajectory_tool_metrics
from toolrl.trainers.batching import (
    TokenBatch,
    device_of,
    grouped_micro_batches,
    micro_batches,
    pad_sequences,
    token_logprobs,
)
from toolrl.trainers.model_io import torch_threads
from toolrl.trainers.parallel import DataParallel, SingleProcess
from toolrl.trainers.self_imitation import SelfImitation
from toolrl.types import Sample, Trajectory


@dataclass
class PromptStream:
    """The training prompts in a per-epoch shuffled order, addressable by step.

    Step s takes items [s·B, (s+1)·B) of the endless stream epoch 0, epoch 1, ...; each epoch's
    order is a permutation seeded by (seed, epoch), so the batch of a step depends on nothing
    but the step: resuming needs no saved iterator.
    """

    samples: list[Sample]
    batch_size: int
    seed: int
    shuffle: bool = True

    def batch(self, step: int) -> list[Sample]:
        n = len(self.samples)
        out = []
        for position in range(step * self.batch_size, (step + 1) * self.batch_size):
            epoch, index = divmod(position, n)
            out.append(self.samples[int(self._order(epoch)[index])])
        return out

    def _order(self, epoch: int) -> torch.Tensor:
        if not self.shuffle:
            return torch.arange(len(self.samples))
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        return torch.randperm(len(self.samples), generator=generator)

    def steps_per_epoch(self) -> int:
        return max(1, len(self.samples) // self.batch_size)


def rollout_seed(config: Config, step: int) -> int:
    """The seed of step `step`'s rollouts (every request's seed derives from it)."""
    return config.trainer.seed * 1_000_003 + step


def rollouts_per_prompt(config: Config) -> int:
    """How many trajectories a prompt is rolled out to: rollout.n, times the oversampling of
    GRPO-RoC (which keeps rollout.n of them for training)."""
    roc = config.algorithm.roc
    return config.rollout.n * (roc.oversample if roc.enabled else 1)


@contextmanager
def timed(timing: dict[str, float], name: str):
    start = time.perf_counter()
    yield
    timing[f"timing/{name}"] = timing.get(f"timing/{name}", 0.0) + time.perf_counter() - start


@dataclass
class PolicyBatch:
    """The rows an RL step trains on, and everything the policy update reads about them.

    One row per trained trajectory, in rollout order (trajectories excluded from training and,
    with `algorithm.filter_groups`, those of all-equal groups are not rows).
    """

    tokens: TokenBatch
    """prompt + response ids; loss mask over the model's own tokens; the engine's log-probs."""
    advantages: torch.Tensor
    """[rows]: one advantage per trajectory, within its sample's group."""
    old_logprobs: torch.Tensor | None = None
    """[rows, tokens]: π_old of the PPO ratio (see `RLTrainer.fill_reference_logprobs`)."""
    old_from_first_forward: torch.Tensor | None = None
    """[rows] bool: rows whose π_old is their own first training forward, detached (filled in
    by that forward); the policy has not been updated when it runs."""
    ref_logprobs: torch.Tensor | None = None
    """[rows, tokens]: the KL reference's log-probs (None without a KL term)."""
    is_weights: torch.Tensor | None = None
    """[rows, tokens]: rollout-correction importance weights (None without them)."""
    mismatch: MismatchTally = field(default_factory=MismatchTally)
    """π_old against the engine's log-probs, over the rows measured so far."""
    measured: torch.Tensor | None = None
    """[rows] bool: rows already in `mismatch`."""
    correction: dict[str, float] = field(default_factory=dict)
    """This rank's rollout-correction counts (`toolrl.algorithms.correct`)."""

    def __len__(self) -> int:
        return len(self.tokens)


class RLTrainer:
    """Holds the parts of an RL run; `step` does one GRPO-TCR step. Built by `build_rl_trainer`."""

    def __init__(
        self,
        config: Config,
        model,
        tokenizer,
        rollout: RolloutProvider,
        prompts: PromptStream,
        reward_fn,
        optimizer,
        scheduler,
        ref_model=None,
        parallel: DataParallel | None = None,
    ):
        self.config = config
        self.model = model
        self.tokenizer = tokenizer
        self.rollout = rollout
        self.prompts = prompts
        self.reward_fn = reward_fn
        self.optimizer = optimizer
        self.scheduler = scheduler
        self.ref_model = ref_model
        self.parallel = parallel or SingleProcess()
        self.last_trajectories: list[Trajectory] = []
        alg = config.algorithm
        self.advantage_estimator = with_config(get_advantage_estimator(alg.advantage), alg)
        self.policy_loss = with_config(get_policy_loss(alg.policy_loss), alg)
        self.loss_reads_entropy = reads_entropy(get_policy_loss(alg.policy_loss))
        self.kl_estimator = get_kl_estimator(alg.kl_estimator)
        si = alg.self_imitation
        self.self_imitation = SelfImitation(si, config.trainer.seed) if si.enabled else None

    def step(self, step: int) -> dict[str, float]:
        """One RL step on the prompts of `step`; returns its metrics."""
        cfg, timing = self.config, {}
        with timed(timing, "step"):
            samples = self.prompts.batch(step)
            with timed(timing, "rollout"):
                self.model.eval()
                seed = rollout_seed(cfg, step)
                trajectories = self.rollout.run(samples, rollouts_per_prompt(cfg), seed=seed)
            with timed(timing, "reward"):
                self.reward_fn(trajectories)
                if self.self_imitation is not None:  # SPEAR's tool-call reward curriculum
                    self.self_imitation.shape_rewards(trajectories, step)
            roc = RoCStats()
            batch = self.policy_batch(trajectories, seed=seed, roc=roc)
            with torch_threads(cfg.trainer.update_threads):  # no sandbox runs from here on
                with timed(timing, "old_log_prob"):
                    self.fill_reference_logprobs(batch)
                with timed(timing, "update"):
                    update_metrics = self.update_policy(batch)
                    if self.self_imitation is not None:  # replay, then admit (SPEAR)
                        update_metrics.update(self.self_imitation.step(self, trajectories, step))
            if batch is not None or update_metrics.get("spear/replayed"):
                self.rollout.weights_updated(step + 1)
        self.last_trajectories = trajectories
        advantages = batch.advantages if batch is not None else torch.zeros(0)
        metrics = rollout_metrics(trajectories)
        metrics["rollout/infra_masked"] = sum(t.excluded_from_training for t in trajectories)
        metrics["rollout/trained_trajectories"] = len(advantages)
        metrics["critic/advantages/mean"] = float(advantages.mean()) if len(advantages) else 0.0
        metrics["critic/advantages/max"] = float(advantages.max()) if len(advantages) else 0.0
        metrics["critic/advantages/min"] = float(advantages.min()) if len(advantages) else 0.0
        metrics["actor/lr"] = self.scheduler.get_last_lr()[0]
        if batch is not None:
            metrics.update(self.mismatch_metrics(batch))
        if cfg.trainer.mode == "async":
            metrics.update(staleness_metrics(trajectories, step))
        if cfg.algorithm.roc.enabled:
            metrics.update(roc.metrics())
        metrics.update(self.rollout.metrics())
        return {**metrics, **update_metrics, **timing}

    def mismatch_metrics(self, batch: PolicyBatch) -> dict[str, float]:
        """How far the engine's log-probs were from π_old, and what the correction did, summed
        over ranks (see toolrl/algorithms/rollout_correction.py)."""
        metrics = batch.mismatch.reduce(self.parallel).metrics()
        if self.corrects_rollout():  # every rank reduces, even one without rows
            counts = self.parallel.reduce_metrics(batch.correction)
            metrics.update(correction_rates(counts))
        return metrics

    def policy_batch(
        self, trajectories: list[Trajectory], *, seed: int = 0, roc: RoCStats | None = None
    ) -> PolicyBatch | None:
        """The step's training rows with their advantages; None when no row is left.

        A trajectory excluded from training (a sandbox failure while it ran or was graded) is
        neither a row nor part of its group's baseline. With `algorithm.roc`, each prompt's
        oversampled group is cut to rollout.n first (GRPO-RoC, seeded by the step's `seed`;
        what it did is counted in `roc`).
        """
        trained = [t for t in trajectories if not t.excluded_from_training]
        if self.config.algorithm.roc.enabled:
            trained = resample_on_correct(trained, self.config.rollout.n, seed, roc)
        advantages = self.advantages(trained)
        if self.config.algorithm.filter_groups:
            trained, advantages = drop_uniform_groups(trained, advantages)
        if not trained:
            return None
        return PolicyBatch(self.collate(trained), advantages)

    def advantages(self, trajectories: list[Trajectory]) -> torch.Tensor:
        """Per-trajectory advantages within each sample's group (config.algorithm.advantage)."""
        if not trajectories:
            return torch.zeros(0)
        scores = torch.tensor([t.reward for t in trajectories], dtype=torch.float32)
        group_of = {
            sid: g for g, sid in enumerate(dict.fromkeys(t.sample.id for t in trajectories))
        }
        group_ids = torch.tensor([group_of[t.sample.id] for t in trajectories])
        return self.advantage_estimator(scores, group_ids)

    def collate(self, trajectories: list[Trajectory]) -> TokenBatch:
        sequences = [t.prompt_ids + t.response_ids for t in trajectories]
        masks = [[0] * len(t.prompt_ids) + t.loss_mask for t in trajectories]
        logprobs = [[0.0] * len(t.prompt_ids) + t.rollout_logprobs for t in trajectories]
        batch = pad_sequences(
            sequences, masks, logprobs, pad_token_id=self.tokenizer.pad_token_id or 0
        )
        return batch.to(device_of(self.model))

    @torch.no_grad()
    def fill_reference_logprobs(self, batch: PolicyBatch | None) -> None:
        """π_old (the policy before this step's updates) and, with a KL term, the reference's.

        With `algorithm.old_log_probs=rollout` π_old is the engine's (`tokens.values`).
        Otherwise it is recomputed by a no-grad forward, except for the first mini-batch when
        its own training forward can give it (`first_update_is_on_policy`): nothing has updated
        the policy when that forward runs, so its log-probs, detached, are π_old
        (`old_from_first_forward`; `mini_batch_update` fills them in). With rollout correction
        every row is recomputed here, because its weights and rejections must be known before
        the first update's normalisers are.

        Every π_old the trainer computes is compared with the engine's log-probs
        (`batch.mismatch`); rejected tokens leave `tokens.loss_mask`.
        """
        if batch is None:
            return
        tokens = batch.tokens
        mine = self.trained_rows(len(batch))  # the rows this rank's updates read
        first = torch.zeros(len(batch), dtype=torch.bool, device=tokens.loss_mask.device)
        batch.measured = torch.zeros_like(first)
        correcting = self.corrects_rollout()
        if self.old_log_probs_source() == "rollout":
            old = tokens.values.clone()
        else:
            skip = self.rows_per_mini_batch()
            on_policy = self.first_update_is_on_policy() and not correcting
            skip = min(skip, len(batch)) if on_policy else 0
            first[:skip] = True
            old = torch.zeros_like(tokens.loss_mask)
            later = mine[mine >= skip]
            if len(later):
                old[later] = self.logprobs_of(self.model, tokens.select(later))
                batch.mismatch.add(old[later], tokens.values[later], tokens.loss_mask[later])
                batch.measured[later] = True
        batch.old_logprobs, batch.old_from_first_forward = old, first
        if correcting and len(mine):
            rc = asdict(self.config.algorithm.rollout_correction)
            rc.pop("bypass_mode")
            weights, keep, batch.correction = correct(
                old[mine], tokens.values[mine], tokens.loss_mask[mine], **rc
            )
            tokens.loss_mask[mine] = keep  # rejected tokens leave the loss and its normalisers
            if weights is not None:
                batch.is_weights = torch.zeros_like(tokens.loss_mask)
                batch.is_weights[mine] = weights
        if self.ref_model is not None:
            batch.ref_logprobs = torch.zeros_like(tokens.loss_mask)
            if len(mine):
                batch.ref_logprobs[mine] = self.logprobs_of(self.ref_model, tokens.select(mine))

    def old_log_probs_source(self) -> str:
        """`algorithm.old_log_probs` with `auto` resolved: "rollout" where the engine's
        log-probs are the trainer's own up to float rounding — the rollout samples from this
        very model's parameters in this process (`samples_from`), float32 on the CPU, no
        dropout — and "recompute" otherwise (vLLM, remote or Ray-held engines, bf16 or GPU
        kernels, dropout)."""
        source = self.config.algorithm.old_log_probs
        if self.config.algorithm.rollout_correction.bypass_mode:
            return "rollout"
        if source != "auto":
            return source
        if self.corrects_rollout():  # it weighs a recomputed π_old against π_rollout
            return "recompute"
        param = next(self.model.parameters())
        same = (
            self.rollout.samples_from(self.model)
            and param.dtype == torch.float32
            and param.device.type == "cpu"
            and self.first_update_is_on_policy()
        )
        return "rollout" if same else "recompute"

    def corrects_rollout(self) -> bool:
        """Whether `algorithm.rollout_correction` weights or rejects anything."""
        rc = self.config.algorithm.rollout_correction
        return rc.rollout_is is not None or rc.rollout_rs is not None

    def rows_per_mini_batch(self) -> int:
        return self.config.trainer.ppo_mini_batch_size * self.config.rollout.n

    def trained_rows(self, num_rows: int) -> torch.Tensor:
        """Indices of the rows this rank trains: its share of every mini-batch (all of them
        in a single process)."""
        shares = [
            self.parallel.shard(m) for m in micro_batches(num_rows, self.rows_per_mini_batch())
        ]
        return torch.tensor([r for s in shares for r in range(s.start, s.stop)], dtype=torch.long)

    def first_update_is_on_policy(self) -> bool:
        """Whether a training forward computes what the no-grad forward does (no dropout
        anywhere), so the first mini-batch's own forward gives its old log-probs."""
        config = getattr(getattr(self.model, "config", None), "to_dict", dict)()
        if any(isinstance(v, float) and v > 0 for k, v in config.items() if "dropout" in k):
            return False
        dropouts = (m for m in self.model.modules() if isinstance(m, torch.nn.Dropout))
        return all(m.p == 0 for m in dropouts)

    def logprobs_of(self, model, batch: TokenBatch) -> torch.Tensor:
        """Per-token log-probs of every row, `logprob_micro_batch_size` rows a forward (no grad)."""
        out = torch.zeros_like(batch.loss_mask)
        for rows in grouped_micro_batches(batch, self.config.trainer.logprob_micro_batch_size):
            out[rows] = token_logprobs(
                model, batch.select(rows), temperature=self.config.rollout.temperature
            )[0]
        return out

    def update_policy(self, batch: PolicyBatch | None) -> dict[str, float]:
        """ppo_epochs × mini-batches of `ppo_mini_batch_size` prompts; one optimizer step each."""
        cfg = self.config
        if batch is None:
            self.scheduler.step()
            return {"actor/skipped_update": 1.0}
        self.model.train()
        tokens = batch.tokens
        advantages = batch.advantages.to(tokens.loss_mask.device)
        token_adv = (
            broadcast_to_tokens(advantages, torch.ones_like(tokens.loss_mask)) * tokens.loss_mask
        )
        sums: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.trainer.ppo_epochs):
            for whole in micro_batches(len(batch), self.rows_per_mini_batch()):
                mini = self.parallel.shard(whole)  # this rank's rows; normalisers span `whole`
                stats = self.mini_batch_update(batch, mini, token_adv[mini], fresh=updates == 0)
                for key, value in stats.items():
                    sums[key] = sums.get(key, 0.0) + value
                updates += 1
        self.scheduler.step()
        return {key: value / updates for key, value in sums.items()}

    def mini_batch_update(
        self, batch: PolicyBatch, rows: slice, advantages: torch.Tensor, *, fresh: bool = False
    ) -> dict[str, float]:
        """Accumulate micro-batch gradients over the mini-batch `rows` of `batch` with the
        mini-batch's normalisers, then one optimizer step. `fresh`: no update has run yet this
        step, so the forwards give π_old, and rows not yet compared with the engine's
        log-probs are compared now.

        With several ranks, `rows` is this rank's share: the normalisers are summed over ranks
        (so they count the whole mini-batch), and so are the gradients and the metrics.
        """
        mini = batch.tokens.select(rows)
        old_logprobs, from_forward = batch.old_logprobs[rows], batch.old_from_first_forward[rows]
        ref_logprobs = None if batch.ref_logprobs is None else batch.ref_logprobs[rows]
        is_weights = None if batch.is_weights is None else batch.is_weights[rows]
        measured = batch.measured[rows] if batch.measured is not None else None
        norms = {
            "global_num_tokens": self.parallel.all_sum(num_valid_tokens(mini.loss_mask)),
            "global_num_seqs": self.parallel.all_sum(num_valid_seqs(mini.loss_mask)),
            "norm_length": self.config.rollout.max_response_length,
        }
        totals: dict[str, float] = {}
        self.optimizer.zero_grad(set_to_none=True)
        micros = (
            grouped_micro_batches(mini, self.config.trainer.micro_batch_size) if len(mini) else []
        )
        for micro in micros:  # a rank with no rows in this mini-batch still joins the reductions
            part = mini.select(micro)
            logprobs, entropy = token_logprobs(
                self.model,
                part,
                temperature=self.config.rollout.temperature,
                with_entropy=True,
                entropy_grad=self.config.algorithm.entropy_coef != 0,
            )
            if from_forward[micro].all():  # on-policy rows (see fill_reference_logprobs)
                old_logprobs[micro] = logprobs.detach()  # views: later epochs reuse them
                from_forward[micro] = False
            if fresh and measured is not None and not measured[micro].any():
                batch.mismatch.add(logprobs.detach(), part.values, part.loss_mask)
                measured[micro] = True
            ref = None if ref_logprobs is None else ref_logprobs[micro]
            loss, stats = self.micro_batch_loss(
                logprobs,
                entropy,
                part.loss_mask,
                advantages[micro],
                old_logprobs[micro],
                ref,
                norms,
                None if is_weights is None else is_weights[micro],
            )
            loss.backward()
            for name, value in stats.items():
                totals[name] = totals.get(name, 0.0) + value
        return self.optimizer_step(totals)

    def micro_batch_loss(
        self, logprobs, entropy, mask, advantages, old_logprobs, ref_logprobs, norms, is_weights
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """The micro-batch's part of the mini-batch loss (normalised by the mini-batch's global
        counts, so the parts add up to it), and its metrics weighted by its share of tokens."""
        alg = self.config.algorithm
        extra = {"entropy": entropy.detach()} if self.loss_reads_entropy else {}
        loss, metrics = self.policy_loss(
            logprobs, old_logprobs, advantages, mask, is_weights=is_weights, **norms, **extra
        )
        share = float(mask.sum() / norms["global_num_tokens"].clamp(min=1))
        stats = {
            "actor/pg_loss": float(loss.detach()),
            "actor/entropy": float(agg_loss(entropy.detach(), mask, "token-mean")) * share,
        }
        if alg.entropy_coef != 0:  # > 0 a bonus (maximise entropy), < 0 a penalty
            entropy_loss = agg_loss(entropy, mask, alg.loss_agg_mode, **norms)
            loss = loss - alg.entropy_coef * entropy_loss
            stats["actor/entropy_loss"] = float(entropy_loss.detach())
        for name in CLIP_METRICS:
            stats[f"actor/{name}"] = float(metrics[name]) * share
        if ref_logprobs is not None and alg.kl_coef > 0:
            kl = self.kl_estimator(logprobs, ref_logprobs)
            kl_loss = agg_loss(kl, mask, alg.loss_agg_mode, **norms)
            loss = loss + alg.kl_coef * kl_loss
            stats["actor/kl_loss"] = float(kl_loss.detach())
        return loss, stats

    def optimizer_step(self, totals: dict[str, float]) -> dict[str, float]:
        """Sum gradients and metrics over ranks, clip, and step (never with a non-finite norm)."""
        trainable = [p for p in self.model.parameters() if p.requires_grad]
        self.parallel.reduce_gradients(trainable)
        totals = self.parallel.reduce_metrics(totals)
        grad_norm = torch.nn.utils.clip_grad_norm_(trainable, self.config.trainer.grad_clip)
        if torch.isfinite(grad_norm):
            self.optimizer.step()
        else:  # never apply a non-finite update; count it instead
            totals["actor/nonfinite_grad_skipped"] = 1.0
        self.optimizer.zero_grad(set_to_none=True)
        totals["actor/grad_norm"] = float(grad_norm)
        return totals


CLIP_METRICS = (
    "pg_clipfrac",
    "pg_clipfrac_lower",
    "pg_clipfrac_ratio_high",
    "pg_clipfrac_ratio_low",
    "ppo_kl",
)
"""The policy loss's metrics averaged over tokens into `actor/*`."""


def drop_uniform_groups(
    trajectories: list[Trajectory], advantages: torch.Tensor
) -> tuple[list[Trajectory], torch.Tensor]:
    """DAPO dynamic sampling without resampling: drop groups whose rewards are all equal."""
    rewards: dict[str, set[float]] = {}
    for t in trajectories:
        rewards.setdefault(t.sample.id, set()).add(float(t.reward))
    keep = [i for i, t in enumerate(trajectories) if len(rewards[t.sample.id]) > 1]
    return [trajectories[i] for i in keep], advantages[keep] if keep else advantages[:0]


def rollout_metrics(trajectories: list[Trajectory]) -> dict[str, float]:
    """Rollout statistics under verl's names, plus tool-use analytics (the paper's Sec. 5)."""
    n = max(1, len(trajectories))
    lengths = [t.response_length for t in trajectories] or [0]
    metrics = {
        "critic/score/mean": sum(t.reward_info.get("score", t.reward or 0.0) for t in trajectories)
        / n,
        "critic/rewards/mean": sum(t.reward or 0.0 for t in trajectories) / n,
        "acc/mean": sum(bool(t.reward_info.get("acc", False)) for t in trajectories) / n,
        "response_length/mean": sum(lengths) / len(lengths),
        "response_length/max": max(lengths),
        "response_length/min": min(lengths),
        "response_length/clip_ratio": sum(
            t.stop_reason == "max_response_tokens" for t in trajectories
        )
        / n,
        "prompt_length/mean": sum(len(t.prompt_ids) for t in trajectories) / n,
        "num_turns/mean": sum(len(t.turns) for t in trajectories) / n,
        **trajectory_tool_metrics(trajectories),
    }
    for t in trajectories:
        key = f"stop_reason/{t.stop_reason}"
        metrics[key] = metrics.get(key, 0.0) + 1.0 / n
    return metrics
