"""The GRPO-TCR step on the tiny model: direction of the update, masking, metrics, resume."""

import copy
import json
import math
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from toolrl.trainers.batching import token_logprobs
from toolrl.trainers.rl import PromptStream
from toolrl.trainers.rl_setup import build_rl_trainer, fit
from toolrl.trainers.tracking import read_metrics

from .conftest import EchoTool, parity_reward, tiny_rl_config

VERL_NAMES = [
    "actor/entropy",
    "actor/pg_loss",
    "actor/pg_clipfrac",
    "actor/pg_clipfrac_lower",
    "actor/ppo_kl",
    "actor/grad_norm",
    "critic/score/mean",
    "critic/advantages/mean",
    "response_length/mean",
    "response_length/clip_ratio",
    "num_turns/mean",
    "tool/calls_per_response",
    "tool/success_rate",
    "timing/rollout",
    "timing/reward",
    "timing/old_log_prob",
    "timing/update",
]


def sequence_logprob(model, batch):
    with torch.no_grad():
        logprobs, _ = token_logprobs(model, batch)
    return (logprobs * batch.loss_mask).sum(-1)


def test_a_step_moves_the_policy_in_the_direction_of_the_advantage(rl_config):
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    original_step = trainer.update_policy
    captured = {}

    def spy(batch):
        captured.update(
            batch=batch.tokens,
            advantages=batch.advantages.clone(),
            before=sequence_logprob(trainer.model, batch.tokens),
        )
        return original_step(batch)

    trainer.update_policy = spy
    metrics = trainer.step(0)
    after = sequence_logprob(trainer.model, captured["batch"])
    change = after - captured["before"]
    adv = captured["advantages"]
    assert (adv > 0).any() and (adv < 0).any(), "the test needs both signs of advantage"
    assert change[adv > 0].mean() > 0 > change[adv < 0].mean()
    for name in VERL_NAMES:
        assert name in metrics, name


def mean_entropy(model, batch):
    with torch.no_grad():
        _, entropy = token_logprobs(model, batch, with_entropy=True)
    return float((entropy * batch.loss_mask).sum() / batch.loss_mask.sum())


@pytest.mark.parametrize("entropy_coef", [0.0, 1.0, -1.0])
def test_entropy_coef_moves_the_entropy_its_way_when_rewards_carry_no_signal(
    rl_config, entropy_coef
):
    """Equal rewards give zero advantages: the policy loss has no gradient, so only the
    entropy term (algorithm.entropy_coef) moves the policy: a bonus (> 0) raises the entropy,
    a penalty (< 0) lowers it."""
    rl_config.algorithm.entropy_coef = entropy_coef
    rl_config.trainer.weight_decay = 0.0

    def equal_rewards(trajectories):
        for t in trajectories:
            t.reward, t.reward_info = 0.0, {"score": 0.0}

    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=equal_rewards)
    original_step, captured = trainer.update_policy, {}

    def spy(batch):
        captured.update(batch=batch.tokens, before=mean_entropy(trainer.model, batch.tokens))
        return original_step(batch)

    trainer.update_policy = spy
    metrics = trainer.step(0)
    change = mean_entropy(trainer.model, captured["batch"]) - captured["before"]
    if entropy_coef:
        assert change * entropy_coef > 1e-3
        assert metrics["actor/entropy_loss"] == pytest.approx(metrics["actor/entropy"], rel=1e-4)
    else:
        assert abs(change) < 1e-6 and "actor/entropy_loss" not in metrics


def test_rollout_log_probs_are_the_old_log_probs_the_trainer_recomputes(rl_config):
    """`algorithm.old_log_probs=rollout` reuses the engine's log-probs: on the trained tokens
    they equal the trainer's forward, and a step with them trains as the recomputing one."""
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    samples = trainer.prompts.batch(0)
    batch = trainer.collate(trainer.rollout.run(samples, rl_config.rollout.n, seed=0))
    trained = batch.loss_mask.bool()
    assert trained.sum() > 20
    recomputed = trainer.logprobs_of(trainer.model, batch)
    torch.testing.assert_close(batch.values[trained], recomputed[trained], atol=1e-5, rtol=0)

    metrics = {}
    for source in ("recompute", "rollout"):
        rl_config.algorithm.old_log_probs = source
        trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
        metrics[source] = trainer.step(0)
    for name in ("critic/score/mean", "actor/pg_loss", "actor/entropy", "actor/grad_norm"):
        assert metrics["rollout"][name] == pytest.approx(metrics["recompute"][name], rel=1e-4)


def test_auto_takes_the_engines_log_probs_only_where_they_are_the_trainers(rl_config):
    """`old_log_probs=auto`: the in-process fp32 HF engine on the trained model itself gives
    π_old; an engine holding another model, dropout, or another dtype means a recompute."""
    assert rl_config.algorithm.old_log_probs == "auto"
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    assert trainer.old_log_probs_source() == "rollout"
    forwards, logprobs_of = [], trainer.logprobs_of
    trainer.logprobs_of = lambda model, batch: forwards.append(model) or logprobs_of(model, batch)
    trainer.step(0)
    assert forwards == []  # no forward of the trained model ran for π_old
    del trainer.logprobs_of

    from toolrl.rollout.engines.hf import HFEngine

    loop = trainer.rollout.loop
    engine = loop.engine
    loop.engine = HFEngine(copy.deepcopy(trainer.model))  # same weights, not the same model
    assert trainer.old_log_probs_source() == "recompute"
    loop.engine = engine
    trainer.model.config.attention_dropout = 0.1
    assert trainer.old_log_probs_source() == "recompute"
    trainer.model.config.attention_dropout = 0.0
    trainer.model.to(torch.float64)
    assert trainer.old_log_probs_source() == "recompute"
    trainer.config.algorithm.old_log_probs = "rollout"  # an explicit choice is taken as given
    assert trainer.old_log_probs_source() == "rollout"


def test_infra_errors_are_masked_and_counted(rl_config):
    def reward_with_infra_error(trajectories):
        parity_reward(trajectories)
        trajectories[0].turns[0].tool_calls.append(
            type(
                "Call",
                (),
                {
                    "status": "infra_error",
                    "name": "x",
                    "arguments": {},
                    "result": "",
                    "elapsed_s": 0.0,
                },
            )()
        )

    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=reward_with_infra_error)
    metrics = trainer.step(0)
    assert metrics["rollout/infra_masked"] == 1
    assert metrics["rollout/trained_trajectories"] == 2 * 4 - 1


def test_a_grading_sandbox_failure_is_excluded_from_the_loss_and_the_baseline(rl_config):
    """The code grader marks `reward_info["infra_error"]` when its sandbox failed: the reward
    (scored as wrong) says nothing about the policy, so the trajectory is counted, left out of
    the loss, and its group's baseline is computed from the other rollouts alone."""
    from toolrl.algorithms import get_advantage_estimator

    def reward_with_grading_failure(trajectories):
        parity_reward(trajectories)
        trajectories[0].reward = -1.0  # what the grader scores: a wrong answer
        trajectories[0].reward_info["infra_error"] = True

    trainer, _ = build_rl_trainer(
        rl_config, tools=[EchoTool()], reward_fn=reward_with_grading_failure
    )
    seen = {}
    update = trainer.update_policy

    def spy(batch):
        seen["batch"] = batch
        return update(batch)

    trainer.update_policy = spy
    metrics = trainer.step(0)
    assert metrics["rollout/infra_masked"] == 1
    assert metrics["rollout/trained_trajectories"] == 2 * 4 - 1
    first = trainer.last_trajectories[0]
    assert first.excluded_from_training
    rows = [t for t in trainer.last_trajectories if not t.excluded_from_training]
    assert len(seen["batch"]) == len(rows)  # the excluded row is not in the loss
    group = [t for t in rows if t.sample.id == first.sample.id]
    expected = get_advantage_estimator("grpo")(
        torch.tensor([t.reward for t in group]), torch.zeros(len(group), dtype=torch.long)
    )
    torch.testing.assert_close(seen["batch"].advantages[: len(group)], expected)


def test_prompt_stream_is_a_function_of_the_step():
    stream = PromptStream(samples=list(range(5)), batch_size=2, seed=3)
    assert stream.batch(4) == PromptStream(samples=list(range(5)), batch_size=2, seed=3).batch(4)
    epoch0 = stream.batch(0) + stream.batch(1) + [stream.batch(2)[0]]
    assert sorted(epoch0) == list(range(5))  # an epoch is a permutation


def test_fit_writes_metrics_rollouts_and_atomic_checkpoints(rl_config):
    run_dir = fit(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    rows = read_metrics(run_dir)
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert (run_dir / "rollouts" / "step_3.jsonl").is_file()
    assert (run_dir / "checkpoints" / "step_3" / "model.safetensors").is_file()
    assert not list((run_dir / "checkpoints").glob(".*partial"))
    assert (run_dir / "config.yaml").is_file()


RUNNER = textwrap.dedent(
    """
    import sys, pathlib
    sys.path.insert(0, {tests!r})
    from trainers.conftest import EchoTool, parity_reward
    from toolrl.config import load_config
    from toolrl.trainers.rl_setup import fit
    import toolrl.trainers.rl as rl
    overrides = {overrides!r}
    config = load_config(None, overrides)
    if {slow_step} >= 0:  # make one step slow so the parent can kill it mid-step
        original = rl.RLTrainer.step
        def step(self, s):
            if s == {slow_step}:
                pathlib.Path({marker!r}).write_text("in step")
                import time; time.sleep(60)
            return original(self, s)
        rl.RLTrainer.step = step
    fit(config, resume={resume}, tools=[EchoTool()], reward_fn=parity_reward)
    """
)


def run_fit(overrides, tmp_path, *, resume=False, slow_step=-1, marker=""):
    code = RUNNER.format(
        tests=os.path.dirname(os.path.dirname(__file__)),
        overrides=overrides,
        slow_step=slow_step,
        marker=marker,
        resume=resume,
    )
    return subprocess.Popen([sys.executable, "-c", code])


def as_overrides(config):
    """The model, data, rollout, reward and trainer settings of `config` as overrides."""

    def flat(prefix, values):  # a nested group (rollout.branching) becomes its own keys
        for key, value in values.items():
            if isinstance(value, dict):
                yield from flat(f"{prefix}.{key}", value)
            else:
                yield f"{prefix}.{key}={json.dumps(value) if not isinstance(value, str) else value}"

    sections = ("model", "data", "rollout", "reward", "trainer")
    return [o for k, sec in config.to_dict().items() if k in sections for o in flat(k, sec)]


def kill_during_step(overrides, tmp_path, step):
    """Run `fit` in a subprocess and SIGKILL it while it is inside `step`."""
    marker = tmp_path / "marker"
    proc = run_fit(overrides, tmp_path, slow_step=step, marker=str(marker))
    deadline = time.monotonic() + 300
    while not marker.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    marker.unlink()


@pytest.mark.slow
def test_kill_and_resume_reproduces_the_uninterrupted_run(rl_config, tmp_path):
    base = as_overrides(rl_config)
    straight = [*base, f"trainer.output_dir={tmp_path / 'a'}"]
    killed = [*base, f"trainer.output_dir={tmp_path / 'b'}"]
    assert run_fit(straight, tmp_path).wait(timeout=300) == 0

    kill_during_step(killed, tmp_path, 2)
    first = tmp_path / "b" / "test" / "rollouts" / "step_1.jsonl"
    written = first.stat().st_mtime_ns
    assert run_fit(killed, tmp_path, resume=True).wait(timeout=300) == 0
    assert first.stat().st_mtime_ns == written  # resumed from step 2, did not start over

    a = read_metrics(tmp_path / "a" / "test")
    b = read_metrics(tmp_path / "b" / "test")
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith("timing/")} for r in rows]  # noqa: E731
    assert [r["step"] for r in b] == [1, 2, 3]
    assert strip(a) == strip(b)


def test_validation_runs_through_the_eval_runner_and_logs_val_core(rl_config, rl_data):
    rl_config.data.val_files = [str(rl_data)]
    rl_config.eval.k = 2
    rl_config.trainer.total_steps = 2
    rl_config.trainer.val_every = 1
    run_dir = fit(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    rows = read_metrics(run_dir)
    name = rl_data.stem
    for row in rows:
        assert f"val-core/{name}/acc/mean@2" in row
        assert 0.0 <= row[f"val-core/{name}/acc/mean@2"] <= 1.0
    assert (run_dir / "validation" / "step_2" / name / "summary.json").is_file()


def test_kl_reference_is_the_starting_policy_frozen(tiny_dir, rl_data, tmp_path):
    config = tiny_rl_config(tiny_dir, rl_data, tmp_path / "runs", "algorithm.kl_coef=0.1")
    trainer, _ = build_rl_trainer(config, tools=[EchoTool()], reward_fn=parity_reward)
    ref = trainer.ref_model
    assert ref is not None and ref is not trainer.model and not ref.training
    assert not any(p.requires_grad for p in ref.parameters())
    for mine, theirs in zip(trainer.model.parameters(), ref.parameters(), strict=True):
        assert torch.equal(mine, theirs)
    trainer.step(0)  # the policy moves, the reference does not
    pairs = zip(trainer.model.parameters(), ref.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)


def test_updates_run_on_update_threads_and_the_rollout_keeps_its_own(rl_config, monkeypatch):
    """`trainer.update_threads` applies to old log-probs and updates only: the rollout and the
    reward (which run beside the sandbox) keep the process's thread count, restored after."""
    seen: dict[str, int] = {}

    def reward(trajectories):
        seen["reward"] = torch.get_num_threads()
        parity_reward(trajectories)

    rl_config.trainer.update_threads = 2
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=reward)
    update = trainer.update_policy

    def recording_update(*args):
        seen["update"] = torch.get_num_threads()
        return update(*args)

    monkeypatch.setattr(trainer, "update_policy", recording_update)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        trainer.step(0)
        assert seen == {"reward": 1, "update": 2}
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("source", ["recompute", "auto"])
def test_the_engines_log_probs_are_measured_against_pi_old_every_step(rl_config, source):
    """The mismatch metrics: with the HF engine on the trained model they are ~0. `recompute`
    measures every row; `auto` (π_old = the engine's) measures the first mini-batch's rows by
    their own forward, which runs before any update."""
    rl_config.algorithm.old_log_probs = source
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    seen = {}
    original = trainer.fill_reference_logprobs

    def spy(batch):
        seen["tokens"] = float(batch.tokens.loss_mask.sum())
        seen["first"] = float(batch.tokens.loss_mask[: trainer.rows_per_mini_batch()].sum())
        return original(batch)

    trainer.fill_reference_logprobs = spy
    metrics = trainer.step(0)
    expected = seen["tokens"] if source == "recompute" else seen["first"]
    assert metrics["rollout_corr/measured_tokens"] == expected > 0
    assert metrics["rollout_corr/logprob_abs_diff_max"] < 1e-4
    assert abs(metrics["rollout_corr/kl"]) < 1e-5 and metrics["rollout_corr/k3_kl"] < 1e-8
    assert metrics["rollout_corr/ratio_outside_frac"] == 0.0


def test_rollout_correction_rejects_a_mismatched_trajectory_out_of_the_loss(rl_config):
    """One trajectory's engine log-probs are made ln 3 too low (ratio π_old/π_rollout = 3):
    token rejection with the band [1/2, 2] removes all its tokens from the loss and from the
    token count that normalises it; truncated IS caps the others' weights, here ~1."""
    rc = rl_config.algorithm.rollout_correction
    rc.rollout_is, rc.rollout_rs, rc.rollout_rs_threshold = "token", "token", 2.0
    trainer, _ = build_rl_trainer(rl_config, tools=[EchoTool()], reward_fn=parity_reward)
    assert trainer.old_log_probs_source() == "recompute"
    run = trainer.rollout.run

    def skewed(samples, n, *, seed):
        trajectories = run(samples, n, seed=seed)
        t = trajectories[0]
        t.rollout_logprobs = [
            x - math.log(3.0) if m else x
            for x, m in zip(t.rollout_logprobs, t.loss_mask, strict=True)
        ]
        seen["skewed"] = sum(t.loss_mask)
        seen["all"] = sum(sum(x.loss_mask) for x in trajectories)
        return trajectories

    seen, counted = {}, []
    trainer.rollout.run = skewed
    loss = trainer.policy_loss

    def spy(*args, **kwargs):
        counted[-1].add(float(kwargs["global_num_tokens"]))
        weights = kwargs["is_weights"]
        assert weights is not None and float(weights.max()) <= 2.0
        return loss(*args, **kwargs)

    trainer.policy_loss = spy
    update = trainer.mini_batch_update

    def per_mini_batch(*args, **kwargs):
        counted.append(set())
        return update(*args, **kwargs)

    trainer.mini_batch_update = per_mini_batch
    metrics = trainer.step(0)
    assert metrics["rollout_corr/rejected_token_frac"] == pytest.approx(
        seen["skewed"] / seen["all"]
    )
    assert metrics["rollout_corr/ratio_outside_frac"] == pytest.approx(seen["skewed"] / seen["all"])
    assert metrics["rollout_corr/is_weight_mean"] == pytest.approx(1.0, abs=1e-4)
    assert all(len(c) == 1 for c in counted)  # one normaliser per mini-batch
    assert sum(c.pop() for c in counted) == seen["all"] - seen["skewed"]
