"""ARPO / AEPO branching rollouts: the formulas by hand, budget accounting, exact prefixes."""

import asyncio
from dataclasses import replace

import pytest
import torch

from toolrl.config import load_config
from toolrl.config.schema import BranchingConfig, ConfigError
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings, request_seed
from toolrl.rollout.branching import (
    BranchingGroup,
    branch_probability,
    draw,
    global_samples,
    normalised_entropy,
    penalised_branch_probability,
    split,
)
from toolrl.rollout.engines.base import GenerationRequest
from toolrl.rollout.engines.hf import HFEngine, PrefixStore
from toolrl.rollout.engines.sampling import sampling_entropy
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.rollout.provider import LocalRollout
from toolrl.rollout.scheduler import BatchScheduler
from toolrl.types import Sample

from .test_agent_loop import EvalTool, sample, solver

# --- the formulas, by hand ---------------------------------------------------------------------


def test_normalised_entropy_is_the_mean_of_the_first_k_over_log_vocab():
    # (1.0 + 2.0) / 2 / ln 4 = 1.5 / 1.3862944 = 1.0820212; the third token is past k = 2.
    assert normalised_entropy([1.0, 2.0, 9.0], k=2, vocab_size=4) == pytest.approx(1.0820212)
    # fewer tokens than k: the mean of those there are; ln 8 = 2.0794415
    assert normalised_entropy([2.0794415], k=20, vocab_size=8) == pytest.approx(1.0)
    assert normalised_entropy([], k=20, vocab_size=8) == 0.0


def test_branch_probability_is_alpha_plus_beta_delta_clipped():
    assert branch_probability(0.0, 0.5, 0.2) == 0.5  # ΔH = 0: α
    assert branch_probability(1.5, 0.5, 0.2) == pytest.approx(0.8)  # 0.5 + 0.2·1.5
    assert branch_probability(-1.0, 0.5, 0.2) == pytest.approx(0.3)
    assert branch_probability(5.0, 0.5, 0.2) == 1.0  # 1.5, clipped
    assert branch_probability(-5.0, 0.5, 0.2) == 0.0  # −0.5, clipped


def test_aepo_penalty_lowers_a_branch_after_branches():
    # l = 0: ARPO's; l = 1: 0.8·(1 − 0.2) = 0.64; l = 2: 0.8·0.6 = 0.48; l = 5: 0.8·0 = 0
    assert penalised_branch_probability(1.5, 0.5, 0.2, 0, 0.2) == pytest.approx(0.8)
    assert penalised_branch_probability(1.5, 0.5, 0.2, 1, 0.2) == pytest.approx(0.64)
    assert penalised_branch_probability(1.5, 0.5, 0.2, 2, 0.2) == pytest.approx(0.48)
    assert penalised_branch_probability(1.5, 0.5, 0.2, 5, 0.2) == 0.0


def test_aepo_pre_monitoring_splits_the_budget_by_the_entropy_gap():
    # m = ⌊n·σ(β·(H_root − H_tool))⌋ + 1 in [1, n], as the authors' code
    assert global_samples(16, 0.3, 0.3, 1.0) == 9  # σ(0) = 1/2: ⌊8⌋ + 1
    # σ(2·(0.9 − 0.4)) = σ(1) = 0.7310586: 16·0.731 = 11.70 → 11 + 1
    assert global_samples(16, 0.9, 0.4, 2.0) == 12
    # σ(−1) = 0.2689414: 16·0.269 = 4.30 → 4 + 1
    assert global_samples(16, 0.4, 0.9, 2.0) == 5
    assert global_samples(16, 0.0, 1.0, 100.0) == 1  # at least the probe
    assert global_samples(4, 1.0, 0.0, 100.0) == 4  # ⌊4⌋ + 1 = 5, capped at n
    assert global_samples(3, 0.0, 0.0, 1.0) == 2  # ⌊1.5⌋ + 1


def test_split_shares_slots_out_evenly_the_larger_first():
    assert split(range(1, 8), 3) == [range(1, 4), range(4, 6), range(6, 8)]
    assert split(range(0, 1), 2) == [range(0, 1), range(1, 1)]
    assert split(range(3, 3), 2) == [range(3, 3), range(3, 3)]


def test_draws_are_uniform_and_stable():
    assert draw(1, "q0", 0, 2) == draw(1, "q0", 0, 2)
    values = [draw(1, "q0", k, 2) for k in range(2000)]
    assert all(0 <= v < 1 for v in values)
    assert abs(sum(values) / len(values) - 0.5) < 0.03


# --- the engines' entropies --------------------------------------------------------------------


def test_hf_engine_reports_the_entropy_of_its_sampling_distribution(tiny_dir):
    engine = HFEngine.from_path(str(tiny_dir))
    prompt = list(range(5, 25))
    request = GenerationRequest(prompt, 6, temperature=0.7, seed=3, entropy_tokens=4)
    plain = GenerationRequest(prompt, 6, temperature=0.7, seed=3)
    asked, not_asked = engine.generate([request, plain])
    assert asked.token_ids == not_asked.token_ids and not_asked.entropies == []
    assert len(asked.entropies) == 4
    ids = torch.tensor([prompt + asked.token_ids])
    with torch.no_grad():
        logits = engine.model(ids).logits[0, len(prompt) - 1 : len(prompt) + 3]
    expected = sampling_entropy(logits, torch.full((4,), 0.7))
    assert asked.entropies == pytest.approx(expected.tolist(), abs=1e-4)


def test_a_shared_prefix_is_lent_without_being_taken():
    store = PrefixStore(1 << 20)
    parent = tuple(range(40))
    kv = torch.arange(40.0).reshape(1, 1, 1, 40, 1)
    store.put(parent, kv)
    branch = list(range(30))  # the parent's first 30 tokens: where a child branched off
    n, lent = store.take(branch, shared=True)
    assert n == 29 and lent.flatten().tolist() == list(range(29)) and len(store) == 1
    assert store.take(branch) is None  # not shared: only strict prefixes, as before
    assert store.take([*parent, 99])[0] == 40  # the parent still takes its own entry


# --- the rollout -------------------------------------------------------------------------------


def branching(**knobs) -> BranchingConfig:
    return BranchingConfig(**{"mode": "arpo", **knobs})


def scripted_loop(tokenizer, config, policy=solver, **settings) -> AgentLoop:
    engine = ScriptedEngine(tokenizer, policy)
    return AgentLoop(engine, tokenizer, [EvalTool()], LoopSettings(branching=config, **settings))


def prefix_of(traj, length):
    return traj.response_ids[:length], traj.loss_mask[:length], traj.rollout_logprobs[:length]


def test_forced_branching_fills_the_budget_with_exact_copies_of_the_prefix(tiny_tokenizer):
    # α = 1, β = 0: every branch point branches. The solver calls the tool twice, so each
    # global sample has two points (after each observation); n = 6, N = 2: budget 4.
    loop = scripted_loop(
        tiny_tokenizer, branching(branch_probability=1.0, entropy_weight=0.0, initial_samples=2)
    )
    trajs = loop.run([sample(0), sample(1)], n=6, seed=7)
    assert len(trajs) == 12
    for group in (trajs[:6], trajs[6:]):
        assert [t.group_index for t in group] == list(range(6))
        assert all(t.stop_reason == "answered" for t in group)
    # Per prompt: each global holds 2 of the 4 slots: [0, 3) and [3, 6). At its first point it
    # branches (child in slot 2, it keeps slot 1), at its second again (child in slot 1); the
    # children were born holding only their own slot: 4 branches, the whole budget.
    m = loop.branch_metrics
    assert m["rollout/branch/count"] == 8
    assert m["rollout/branch/filled_mean"] == 0
    assert m["rollout/branch/global_fraction"] == pytest.approx(2 / 6)
    assert m["rollout/branch/probability_mean"] == 1.0
    first = trajs[:6]
    assert first[1].turns[:2] == first[0].turns[:2] and first[2].turns[:1] == first[0].turns[:1]


def tool_calling(engine: HFEngine, tokenizer, boost: float = 6.0) -> HFEngine:
    """The random tiny model, nudged to open tool calls: `<tool_call>`'s output row gains
    boost·h̄/|h̄|² (h̄: the mean final hidden state over a rendered prompt), about +boost on its
    logit. Its calls are mostly malformed; their error observations are branch points too."""
    model, opening = engine.model, tokenizer.convert_tokens_to_ids("<tool_call>")
    prompt = AgentLoop(engine, tokenizer, []).start(sample(0)).prompt_ids
    seen = []
    hook = model.lm_head.register_forward_hook(lambda _, inputs, out: seen.append(inputs[0]))
    with torch.no_grad():
        model(torch.tensor([prompt + list(range(300, 340))]))
        hook.remove()
        mean = seen[0][0].mean(0)
        model.lm_head.weight[opening] += boost * mean / mean.norm() ** 2
    engine.weights_updated()
    return engine


def test_a_childs_prefix_is_its_parents_tokens_mask_and_logprobs(tiny_dir, tiny_tokenizer):
    engine = tool_calling(HFEngine.from_path(str(tiny_dir)), tiny_tokenizer)
    forced = branching(branch_probability=1.0, entropy_weight=0.0, initial_samples=3)
    settings = LoopSettings(max_response_length=400, max_tokens_per_turn=24, max_turns=6)
    loop = AgentLoop(engine, tiny_tokenizer, [EvalTool()], replace(settings, branching=forced))
    group = run_group(loop, sample(0), n=6)
    nodes = {node.key: node for node in group.nodes}
    children = [node for node in group.nodes if len(node.key) > 1]
    # Three globals in slots 0, 2, 4, one more slot each: a global that answers at once hands
    # its slot to a new global sample; one that calls a tool branches into it.
    assert len(group.nodes) == 6 and children and len(children) + group.filled == 3
    assert sorted(node.slots.start for node in group.nodes) == list(range(6))
    assert engine.prefixes.hits >= len(children)  # each child borrowed its parent's cache
    for child in children:
        parent, turns = nodes[child.key[:-2]].traj, child.first_turn
        length = sum(
            t.num_sampled_tokens + t.num_observation_tokens + (t.finish_reason == "length")
            for t in parent.turns[:turns]
        )
        assert prefix_of(child.traj, length) == prefix_of(parent, length)
        assert child.traj.prompt_ids == parent.prompt_ids
        assert child.traj.turns[:turns] == parent.turns[:turns]
        assert child.traj.response_ids[length:] != parent.response_ids[length:]  # own seeds
        assert parent.turns[turns - 1].num_observation_tokens > 0  # it branched after a tool


def run_group(loop: AgentLoop, sample_: Sample, n: int) -> BranchingGroup:
    """One branching group, kept (its nodes), run as `AgentLoop.arun_on` runs it."""

    async def go():
        scheduler = BatchScheduler(loop.engine, loop.settings.max_batch_size)
        group = BranchingGroup(loop, sample_, n, scheduler, asyncio.Semaphore(8), 0)
        await group.run()
        await scheduler.close()
        return group

    return asyncio.run(go())


def test_no_branching_when_alpha_and_beta_are_0_is_plain_grpo(tiny_dir, tiny_tokenizer):
    engine = HFEngine.from_path(str(tiny_dir))
    settings = dict(max_response_length=48, max_turns=4, seed=3)
    plain = AgentLoop(engine, tiny_tokenizer, [EvalTool()], LoopSettings(**settings))
    off = AgentLoop(
        engine,
        tiny_tokenizer,
        [EvalTool()],
        LoopSettings(branching=branching(branch_probability=0.0, entropy_weight=0.0), **settings),
    )
    a = plain.run([sample(0), sample(1)], n=4)
    b = off.run([sample(0), sample(1)], n=4)
    assert [t.response_ids for t in a] == [t.response_ids for t in b]
    flat = lambda trajs: [x for t in trajs for x in t.rollout_logprobs]  # noqa: E731
    assert flat(a) == pytest.approx(flat(b), abs=1e-5)
    assert off.branch_metrics["rollout/branch/count"] == 0
    assert (
        off.branch_metrics["rollout/branch/filled_mean"] == 2
    )  # n − N global samples took the place of those that ended


@pytest.mark.slow
def test_same_seed_same_tree_with_the_tiny_model(tiny_dir, tiny_tokenizer):
    engine = tool_calling(HFEngine.from_path(str(tiny_dir)), tiny_tokenizer)

    def run(seed, mode="arpo"):
        settings = LoopSettings(
            max_response_length=200,
            max_tokens_per_turn=16,
            max_turns=4,
            seed=seed,
            branching=branching(mode=mode, branch_probability=0.9),
        )
        loop = AgentLoop(engine, tiny_tokenizer, [EvalTool()], settings)
        trajs = loop.run([sample(1)], n=4)
        assert [t.group_index for t in trajs] == [0, 1, 2, 3]
        return [t.response_ids for t in trajs], loop.branch_metrics

    def same(a, b):  # the same tokens and tree; entropies up to float rounding (batch shapes)
        assert a[0] == b[0]
        assert a[1] == pytest.approx(b[1], abs=1e-5)

    first = run(1)
    assert first[1]["rollout/branch/count"] > 0
    same(run(1), first)
    assert run(2)[0] != first[0]
    same(run(1, "aepo"), run(1, "aepo"))


def test_aepo_probe_decides_the_split_and_the_group_is_still_n(tiny_tokenizer):
    # A scripted policy is certain: H_root = H_tool = 0, so σ(0) = 1/2: m = ⌊3⌋ + 1 = 4 of n = 6.
    loop = scripted_loop(tiny_tokenizer, branching(mode="aepo", branch_probability=1.0))
    trajs = loop.run([sample(0)], n=6, seed=1)
    assert len(trajs) == 6 and [t.group_index for t in trajs] == list(range(6))
    m = loop.branch_metrics
    assert m["rollout/branch/initial_samples_mean"] == 4
    # The other n − m = 2 slots go to branches, or to global samples filling what is left.
    assert m["rollout/branch/count"] + m["rollout/branch/filled_mean"] == 2


def test_aepos_split_leaves_each_global_sample_at_most_one_branch_slot(tiny_tokenizer):
    # A scripted policy is certain (H_root = H_tool = 0): m = ⌊8·σ(0)⌋ + 1 = 5 of n = 8, so the
    # 3 branch slots are shared by 5 global samples, one at most each: every branch is a path's
    # first, and the consecutive-branch penalty (λ = 1 here) never gets to act in this group
    # (it is checked by hand in test_aepo_penalty_lowers_a_branch_after_branches).
    config = branching(
        mode="aepo", branch_probability=1.0, entropy_weight=0.0, consecutive_penalty=1.0
    )
    loop = scripted_loop(tiny_tokenizer, config)
    trajs = loop.run([sample(0)], n=8, seed=1)
    m = loop.branch_metrics
    assert len(trajs) == 8
    assert m["rollout/branch/initial_samples_mean"] == 5
    assert m["rollout/branch/count"] == 3 and m["rollout/branch/filled_mean"] == 0


def test_children_seeds_differ_from_global_samples(tiny_tokenizer):
    assert request_seed(0, "q0", "0/1/0", 1) != request_seed(0, "q0", 1, 1)


def test_provider_reports_branch_metrics_once(tiny_tokenizer):
    engine = ScriptedEngine(tiny_tokenizer, solver)
    settings = LoopSettings(branching=branching(branch_probability=1.0, entropy_weight=0.0))
    provider = LocalRollout(engine, tiny_tokenizer, [EvalTool()], settings)
    provider.engine.rollout_done = lambda: None
    provider.run([sample(0)], 4, seed=0)
    assert provider.metrics()["rollout/branch/count"] == 2
    assert provider.metrics() == {}


# --- configuration -----------------------------------------------------------------------------


def config_with(*overrides):
    return load_config(None, list(overrides))


def test_branching_is_off_by_default_and_settings_carry_it():
    from toolrl.rollout.agent_loop import settings_from_config

    assert config_with().rollout.branching.mode == "none"
    assert settings_from_config(config_with().rollout).branching is None
    on = config_with("rollout.branching.mode=aepo").rollout
    assert settings_from_config(on).branching.mode == "aepo"
    assert settings_from_config(on, sampling=config_with().eval).branching is None  # eval


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["rollout.branching.mode=beam"], "rollout.branching.mode"),
        (
            ["rollout.branching.mode=arpo", "rollout.n=4", "rollout.branching.initial_samples=4"],
            "initial_samples",
        ),
        (["rollout.branching.mode=arpo", "rollout.n=1"], "rollout.n"),
        (["rollout.branching.mode=arpo", "rollout.engine=vllm"], "rollout.engine=hf"),
        (["rollout.branching.mode=arpo", "rollout.branching.branch_probability=1.5"], "α"),
        (["rollout.branching.mode=aepo", "trainer.mode=async"], "trainer.mode=async"),
        (["rollout.branching.mode=arpo", "tools.enabled=[python_session]"], "python_session"),
    ],
)
def test_bad_branching_config_is_a_clear_error(overrides, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("=", "=")):
        config_with(*overrides)


def test_a_group_of_one_is_one_global_sample(tiny_tokenizer):
    loop = scripted_loop(tiny_tokenizer, branching(branch_probability=1.0))
    assert len(loop.run([sample(0)], n=1)) == 1
    assert loop.branch_metrics["rollout/branch/count"] == 0
