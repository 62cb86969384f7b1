"""Entropy-guided branching rollouts: the rollout halves of ARPO and AEPO, as an option of the
agent loop (`rollout.branching.mode`).

ARPO, "Agentic Reinforced Policy Optimization" (Dong et al. 2025, arXiv 2507.19849, Sec. 3.1,
entropy-based adaptive rollout). A prompt's budget of M = `rollout.n` trajectories is split:
N global samples start from the prompt, the other M − N are branched. Just after each tool
observation, the next k tokens the trajectory samples give its step entropy

    H_t = (1/k) Σ_{j<k} H(p_j) / log|V|,   H(p) = −Σ_v p(v) log p(v),  p_j = softmax(z_j / T)

(normalised by the entropy of the uniform distribution, so H_t ∈ [0, 1]), compared with the
entropy H_initial of the trajectory's first k tokens (its answer to the question itself):

    ΔH_t = H_t − H_initial,   p_t = clip(α + β·ΔH_t, 0, 1)

With probability p_t the trajectory branches: Z children copy it up to the observation (tokens,
loss mask, log-probs, turns; the HF engine lends them the parent's keys and values) and sample
on from there with their own seeds. The budget is held, not pooled: each global sample holds an
equal share of the M − N slots, a branching shares its holder's slots out between it and its
children (each child at least its own), and a trajectory that ends still holding slots hands them
to a new global sample. So every group has exactly M trajectories (GRPO runs over all of them
unchanged), slot i is group index i, and a global sample in slot i is seeded as plain GRPO's
rollout i (α = β = 0 gives GRPO's trajectories exactly).

AEPO, "Agentic Entropy-Balanced Policy Optimization" (Dong et al. 2025, arXiv 2510.14545,
Sec. 3.1, dynamic entropy-balanced rollout), changes two things:
- entropy pre-monitoring: a first global sample (the probe, a member of the group) measures
  the question's entropy H_root (its first turn) and the tools' H_tool (the mean of its H_t
  after each observation); the global samples are then m = ⌊M·σ(β_m·(H_root − H_tool))⌋ + 1,
  in [1, M] (the probe included), and the branch budget M − m: a question more uncertain than
  the tools' results gets more global samples, and vice versa;
- consecutive-branch penalty: a trajectory whose last l decision points all branched branches
  with p_t = clip((α + β·ΔH_t)·(1 − min(1, λ·l)), 0, 1), so the budget does not pile up along
  one chain of uncertain tool calls (a branch's l starts at its parent's).

AEPO's constants are the authors' code as the public fork zzfoutofspace/ATPO carries it
(98e60f6, AEPO/verl_aepo_entropy/verl/workers/rollout/vllm_rollout/vllm_rollout_with_tools.py):
β_m = 0.5, m = int(M·σ) + 1, λ = 0.05. Their penalty multiplies the draw, not the probability:
branch when (u + β·ΔH)·(1 − λ·l) ≥ α, u ~ U(0, 1), i.e. with probability
clip(1 − α/(1 − λ·l) + β·ΔH); toolrl multiplies the probability α + β·ΔH by (1 − λ·l). The two
agree at l = 0 and both fall with l (α = 0.5, λ = 0.05, l = 4: theirs 0.375 + β·ΔH, toolrl's
0.4 + 0.8·β·ΔH). Their pre-monitoring is a separate sampling pass before the rollout; here the
probe is one member of the group.

How this departs from the ARPO release (github dongguanting/ARPO,
verl_arpo_entropy/verl/workers/rollout/vllm_rollout/vllm_rollout_with_tools.py, whose rule is
"skip the copy if clip(u − w·ΔH, 0, 1) > branch_probability", u ~ U(0, 1): the same
p = clip(α + β·ΔH) with α = branch_probability = 0.5, β = entropy_weight = 0.2, Z =
beam_size − 1 = 1, N = initial_rollouts = 8 of n = 16):
- the entropy is the full-vocabulary entropy of each of the first k tokens at the rollout
  temperature, averaged, over log|V|; the release pools the top-10 log-probs of the first 20
  tokens into one −Σ p log p (not renormalised) before dividing by log|V|, a score whose scale
  grows with k;
- the decision at a branch point uses the k tokens sampled after that point's observation (the
  paper's rule); the release decides at a tool boundary from the turn that led to it, i.e. from
  the tokens after the previous observation;
- a branch keeps its parent's H_initial (the same question); the release re-measures it on the
  branch's first turn. A branch does not decide again at the point it was born from;
- the budget is shared out in advance instead of pooled per prompt: the release hands the pool
  out in synchronous rounds (lockstep), to whichever trajectories draw a branch first. Without
  lockstep a pool would go to whichever trajectory reaches its point first, which depends on
  timing; held shares make the tree depend only on each trajectory's own entropies and draws
  (seeded per step, sample, lineage and branch point), so a run reproduces exactly. The cost:
  an uncertain trajectory cannot take a certain one's share (AEPO's penalty aims at the same
  end: no budget piling up on one chain);
- the group always has exactly n trajectories (the release, when its rounds end short of n,
  repeats the last trajectory: duplicates in a GRPO group);
- the paper's deterministic form (branch when p_t > τ) is not offered: the release samples.
Engines: the entropy comes from the engine (`GenerationRequest.entropy_tokens`): HF computes it
from the logits it samples from; vLLM returns only the top-k log-probs of each token (what the
release pools), so an estimate from them would be possible but is not implemented: the config
refuses branching with engine=vllm.
AEPO's release was not in the stored snapshot of dongguanting/ARPO (it holds ARPO only): its
rollout follows the paper's description; the form of the penalty, 1 − min(1, λ·l), and the
defaults of β_m (1.0) and λ (0.2) are ours, not checked against the authors' code. The probe
runs before the rest of its group (latency, not compute: it is one of the M samples).
"""

from __future__ import annotations

import asyncio
import hashlib
import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from toolrl.rollout.scheduler import BatchScheduler, State
from toolrl.types import Sample, Trajectory


class Loop(Protocol):
    """What a branching group uses of the agent loop (`toolrl.rollout.agent_loop.AgentLoop`,
    which builds the groups: the loop imports this module, not the other way round)."""

    engine: Any
    tokenizer: Any
    tools: Any
    settings: Any

    def start(self, sample: Sample, group_index: int = 0) -> Trajectory: ...

    def _out_of_time(self, started: float) -> bool: ...

    def _request(self, *args: Any, **kwargs: Any) -> Any: ...

    def _append_turn(self, *args: Any, **kwargs: Any) -> Any: ...

    async def _call_tools(self, *args: Any, **kwargs: Any) -> Any: ...


def normalised_entropy(entropies: list[float], k: int, vocab_size: int) -> float:
    """H = (1/k') Σ_{j<k'} H_j / log|V| over the first k' = min(k, len) token entropies (nats);
    0 for a turn without tokens."""
    first = entropies[:k]
    if not first:
        return 0.0
    return sum(first) / len(first) / math.log(vocab_size)


def branch_probability(delta_h: float, alpha: float, beta: float) -> float:
    """ARPO: p = clip(α + β·ΔH, 0, 1)."""
    return min(1.0, max(0.0, alpha + beta * delta_h))


def penalised_branch_probability(
    delta_h: float, alpha: float, beta: float, consecutive: int, penalty: float
) -> float:
    """AEPO: p = clip((α + β·ΔH)·(1 − min(1, λ·l)), 0, 1) after l consecutive branches."""
    return branch_probability(delta_h, alpha, beta) * (1.0 - min(1.0, penalty * consecutive))


def global_samples(n: int, h_root: float, h_tool: float, beta: float) -> int:
    """AEPO's pre-monitoring: m = ⌊n·σ(β·(H_root − H_tool))⌋ + 1, within [1, n] (the authors'
    code: `int(num_samples * sigmoid) + 1`)."""
    share = 1.0 / (1.0 + math.exp(-beta * (h_root - h_tool)))
    return min(n, max(1, math.floor(n * share) + 1))


def split(slots: range, parts: int) -> list[range]:
    """`slots` cut into `parts` contiguous ranges whose sizes differ by at most 1, the larger
    first."""
    size, larger = divmod(len(slots), parts)
    out, start = [], slots.start
    for part in range(parts):
        stop = start + size + (part < larger)
        out.append(range(start, stop))
        start = stop
    return out


def draw(seed: int, sample_id: str, rollout_key: int | str, turn: int) -> float:
    """A uniform number in [0, 1), stable per (seed, sample, lineage, branch point)."""
    text = f"{seed}/{sample_id}/{rollout_key}/{turn}/branch".encode()
    return int.from_bytes(hashlib.blake2b(text, digest_size=8).digest(), "little") / 2.0**64


def branch_of(traj: Trajectory, response_length: int, turns: int) -> Trajectory:
    """A new trajectory equal to `traj`'s first `response_length` response tokens (their mask
    and log-probs) and first `turns` turns: where a branch starts."""
    return replace(
        traj,
        prompt_ids=list(traj.prompt_ids),
        response_ids=traj.response_ids[:response_length],
        loss_mask=traj.loss_mask[:response_length],
        rollout_logprobs=traj.rollout_logprobs[:response_length],
        turns=[replace(turn, tool_calls=list(turn.tool_calls)) for turn in traj.turns[:turns]],
        stop_reason=None,
        reward=None,
        reward_info={},
    )


@dataclass
class _Node:
    """One trajectory of a branching group and what its decisions need."""

    traj: Trajectory
    key: tuple[int, ...]
    """(i,): the global sample in slot i; a branch: its parent's key + (branch point's turn,
    child)."""
    slots: range
    """Its place in the group (`slots.start`, its group index) and the budget it holds: the
    slots after it, for its branches and the global samples that replace it."""
    first_turn: int = 0
    """The first turn it sampled itself (a branch: the turns before are its parent's)."""
    h_initial: float | None = None
    consecutive: int = 0
    """AEPO's l: how many decision points in a row branched on this path."""
    tool_entropies: list[float] = field(default_factory=list)

    @property
    def rollout_key(self) -> int | str:
        """Seeds its requests: a global sample's is its index, as without branching."""
        return self.key[0] if len(self.key) == 1 else "/".join(map(str, self.key))


@dataclass
class Decision:
    """One branch point's draw: ΔH, the probability it gave, and the children it made."""

    delta_h: float
    probability: float
    children: int


class BranchingGroup:
    """The `n` trajectories of one sample under ARPO or AEPO (`loop.settings.branching`)."""

    def __init__(
        self,
        loop: Loop,
        sample: Sample,
        n: int,
        scheduler: BatchScheduler,
        tool_slots: asyncio.Semaphore,
        seed: int,
    ):
        self.loop, self.sample, self.n = loop, sample, n
        self.scheduler, self.tool_slots, self.seed = scheduler, tool_slots, seed
        self.config = loop.settings.branching
        self.vocab_size = len(loop.tokenizer)
        self.nodes: list[_Node] = []
        self.decisions: list[Decision] = []
        self.initial = self.filled = 0

    async def run(self) -> None:
        """Roll out the group: the global samples (AEPO: after its probe), each holding an
        equal share of the branch budget; returns when all n trajectories have ended."""
        c, first = self.config, 0
        if c.mode == "aepo":
            probe = self._new_global(range(0, 1))
            await self._follow(probe)
            h_tool = probe.tool_entropies or [probe.h_initial or 0.0]
            self.initial = global_samples(
                self.n, probe.h_initial or 0.0, sum(h_tool) / len(h_tool), c.monitor_beta
            )
            first = 1
        else:
            self.initial = min(self.n, max(1, c.initial_samples or self.n // 2))
        shares = split(range(first, self.n), max(1, self.initial - first))
        await asyncio.gather(*(self._follow(self._new_global(share)) for share in shares if share))

    def trajectories(self) -> list[Trajectory]:
        """The group by slot: group index i is the trajectory in slot i."""
        ordered = sorted(self.nodes, key=lambda node: node.slots.start)
        assert [node.slots.start for node in ordered] == list(range(self.n))
        for node in ordered:
            node.traj.group_index = node.slots.start
        return [node.traj for node in ordered]

    def _new_global(self, slots: range) -> _Node:
        """A global sample in slot `slots.start`, seeded as rollout `slots.start` of plain GRPO."""
        node = _Node(self.loop.start(self.sample, slots.start), (slots.start,), slots)
        self.nodes.append(node)
        return node

    async def _follow(self, node: _Node) -> None:
        """The agent loop's state machine for one trajectory, deciding at each branch point;
        returns once its branches have ended too."""
        loop, traj = self.loop, node.traj
        started, state, branches = time.monotonic(), State.GENERATE, []
        tools = loop.tools.open(traj.sample)
        try:
            while state is not State.DONE:
                if loop._out_of_time(started):
                    traj.stop_reason, state = "timeout", State.DONE
                elif state is State.GENERATE:
                    point = (len(traj.response_ids), len(traj.turns))
                    state, entropy = await self._generate(node)
                    if entropy is not None and point[1] > node.first_turn:
                        branches += self._decide(node, point, entropy)
                else:
                    state = await loop._call_tools(traj, tools, self.tool_slots, started)
        finally:
            await tools.close()
        traj.check()
        if len(node.slots) > 1:  # it can no longer branch: a global sample takes its budget
            self.filled += 1
            fill = self._new_global(node.slots[1:])
            node.slots = node.slots[:1]
            branches.append(asyncio.create_task(self._follow(fill)))
        await asyncio.gather(*branches)

    async def _generate(self, node: _Node) -> tuple[State, float | None]:
        """Sample the next turn, asking the engine for its first k tokens' entropies; the state
        that follows and the turn's normalised entropy (None: nothing was sampled)."""
        traj, k = node.traj, self.config.entropy_tokens
        request = self.loop._request(traj, self.seed, node.rollout_key)
        if request is None:
            return State.DONE, None
        born_here = len(node.key) > 1 and len(traj.turns) == node.first_turn
        request = replace(
            request, entropy_tokens=k, shares_prefix=born_here and self.config.reuse_prefix
        )
        t0 = time.monotonic()
        result = await self.scheduler.generate(request)
        if len(result.entropies) < min(k, len(result.token_ids)):
            raise RuntimeError(
                f"{type(self.loop.engine).__name__} did not report the entropies of its "
                "tokens; rollout.branching needs an engine that does (rollout.engine=hf)"
            )
        entropy = normalised_entropy(result.entropies, k, self.vocab_size)
        if node.h_initial is None:
            node.h_initial = entropy
        else:
            node.tool_entropies.append(entropy)
        return self.loop._append_turn(traj, result, time.monotonic() - t0), entropy

    def _decide(self, node: _Node, point: tuple[int, int], entropy: float) -> list[asyncio.Task]:
        """Whether `node` branches at `point` (its response length and turns just after an
        observation); the branches' tasks. The node's budget is shared out between it and its
        branches (each branch at least its own slot; the node first)."""
        budget = len(node.slots) - 1
        if budget <= 0:
            return []
        c = self.config
        delta = entropy - node.h_initial
        if c.mode == "aepo":
            p = penalised_branch_probability(
                delta,
                c.branch_probability,
                c.entropy_weight,
                node.consecutive,
                c.consecutive_penalty,
            )
        else:
            p = branch_probability(delta, c.branch_probability, c.entropy_weight)
        turn = point[1]
        if draw(self.seed, self.sample.id, node.rollout_key, turn) >= p:
            node.consecutive = 0
            self.decisions.append(Decision(delta, p, 0))
            return []
        count = min(c.branch_factor, budget)
        node.consecutive += 1
        self.decisions.append(Decision(delta, p, count))
        extra = split(range(budget - count), count + 1)
        start, tasks = node.slots.start, []
        node.slots = range(start, start + 1 + len(extra[0]))
        start = node.slots.stop
        for child, share in enumerate(extra[1:]):
            slots, start = range(start, start + 1 + len(share)), start + 1 + len(share)
            branch = _Node(
                branch_of(node.traj, *point),
                (*node.key, turn, child),
                slots,
                first_turn=turn,
                h_initial=node.h_initial,
                consecutive=node.consecutive,
            )
            self.nodes.append(branch)
            tasks.append(asyncio.create_task(self._follow(branch)))
        return tasks


def branch_metrics(groups: list[BranchingGroup]) -> dict[str, float]:
    """`rollout/branch/*`: what the step's branching did, over all its groups."""
    decisions = [d for g in groups for d in g.decisions]
    nodes = [node for g in groups for node in g.nodes]
    branched = sum(len(node.key) > 1 for node in nodes)
    prompts, total = max(1, len(groups)), max(1, len(nodes))
    mean = lambda values: sum(values) / len(values) if values else 0.0  # noqa: E731
    return {
        "rollout/branch/count": float(branched),
        "rollout/branch/points_mean": sum(d.children > 0 for d in decisions) / prompts,
        "rollout/branch/decisions_mean": len(decisions) / prompts,
        "rollout/branch/probability_mean": mean([d.probability for d in decisions]),
        "rollout/branch/entropy_delta_mean": mean([d.delta_h for d in decisions]),
        "rollout/branch/global_fraction": (len(nodes) - branched) / total,
        "rollout/branch/branched_fraction": branched / total,
        "rollout/branch/initial_samples_mean": mean([g.initial for g in groups]),
        "rollout/branch/filled_mean": mean([g.filled for g in groups]),
    }
