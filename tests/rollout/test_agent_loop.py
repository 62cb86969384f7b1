"""The agent loop: exact tokens and masks, every stop reason, tool errors, no lockstep."""

import asyncio
import json
import threading
import time

import pytest

from toolrl.chat import CODE_INTERPRETER_SCHEMA, ObservationWrapper, encode, render
from toolrl.rollout.agent_loop import AgentLoop, LoopSettings
from toolrl.rollout.engines.hf import HFEngine
from toolrl.rollout.engines.scripted import ScriptedEngine
from toolrl.tools.base import ToolResult
from toolrl.types import Sample


class EvalTool:
    """A stand-in code_interpreter: evaluates arithmetic, optionally slowly or failing."""

    name = "code_interpreter"
    schema = CODE_INTERPRETER_SCHEMA

    def __init__(self, delay: float = 0.0, fail: bool = False):
        self.delay, self.fail, self.calls = delay, fail, []

    async def call(self, arguments):
        self.calls.append((time.monotonic(), arguments["code"]))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fail:
            raise RuntimeError("sandbox unreachable")
        try:
            return ToolResult(str(eval(arguments["code"], {})), "success")
        except Exception as err:
            return ToolResult(f"{type(err).__name__}: {err}", "error")


def call_text(code: str) -> str:
    return (
        "<tool_call>\n"
        + json.dumps({"name": "code_interpreter", "arguments": {"code": code}})
        + "\n</tool_call>"
    )


def solver(context: str) -> str:
    """Two tool calls, then the answer taken from the last tool response."""
    responses = context.split("<tool_response>\n")[1:]
    if len(responses) < 2:
        return f"Step {len(responses) + 1}.\n" + call_text(f"{len(responses) + 6} * 7")
    return "So \\boxed{" + responses[-1].split("\n")[0] + "}."


def sample(i: int = 0) -> Sample:
    messages = [{"role": "user", "content": f"Question {i}: what is 7 * 7?"}]
    return Sample(id=f"q{i}", messages=messages, data_source="test", ground_truth="49")


def loop(tokenizer, policy=solver, tool=None, **settings) -> AgentLoop:
    return AgentLoop(
        ScriptedEngine(tokenizer, policy), tokenizer, [tool or EvalTool()], LoopSettings(**settings)
    )


def test_tokens_and_masks_are_exact(tiny_tokenizer):
    [traj] = loop(tiny_tokenizer).run([sample()])
    assert traj.stop_reason == "answered" and len(traj.turns) == 3
    assert [c.result for c in traj.tool_calls] == ["42", "49"]
    assert traj.final_text == "So \\boxed{49}."
    sampled = [t for t, m in zip(traj.response_ids, traj.loss_mask, strict=True) if m]
    injected = [t for t, m in zip(traj.response_ids, traj.loss_mask, strict=True) if not m]
    eot = tiny_tokenizer.eos_token
    assert tiny_tokenizer.decode(sampled) == "".join(turn.text + eot for turn in traj.turns)
    glue = ObservationWrapper(tiny_tokenizer)
    assert tiny_tokenizer.decode(injected) == glue.text(["42"]) + glue.text(["49"])
    # prompt + response is exactly the chat template's rendering of the finished conversation,
    # up to the glue the template writes after the last turn.
    template = encode(
        tiny_tokenizer, render(tiny_tokenizer, traj.messages(), [CODE_INTERPRETER_SCHEMA])
    )
    full = traj.prompt_ids + traj.response_ids
    assert template[: len(full)] == full
    assert tiny_tokenizer.decode(template[len(full) :]).strip() == ""
    assert len(traj.rollout_logprobs) == len(traj.response_ids)


def test_groups_and_order(tiny_tokenizer):
    trajs = loop(tiny_tokenizer).run([sample(0), sample(1)], n=3)
    assert [(t.sample.id, t.group_index) for t in trajs] == [
        (f"q{i}", k) for i in range(2) for k in range(3)
    ]


def test_response_budget_counts_tool_tokens(tiny_tokenizer):
    [full] = loop(tiny_tokenizer).run([sample()])
    first_turn_and_obs = full.turns[0].num_sampled_tokens + full.turns[0].num_observation_tokens
    [traj] = loop(tiny_tokenizer, max_response_length=first_turn_and_obs + 5).run([sample()])
    assert traj.stop_reason == "max_response_tokens"
    assert len(traj.response_ids) == first_turn_and_obs + 5
    assert traj.turns[-1].finish_reason == "length"


def test_observation_that_does_not_fit_stops_the_trajectory(tiny_tokenizer):
    [full] = loop(tiny_tokenizer).run([sample()])
    budget = full.turns[0].num_sampled_tokens + 3
    [traj] = loop(tiny_tokenizer, max_response_length=budget).run([sample()])
    assert traj.stop_reason == "max_response_tokens"
    assert all(traj.loss_mask) and traj.messages()[-1]["role"] == "assistant"


def test_max_turns(tiny_tokenizer):
    [traj] = loop(tiny_tokenizer, max_turns=2).run([sample()])
    assert traj.stop_reason == "max_turns" and len(traj.turns) == 2


def test_max_context(tiny_tokenizer):
    prompt_len = len(loop(tiny_tokenizer).start(sample()).prompt_ids)
    [traj] = loop(tiny_tokenizer, max_context_length=prompt_len + 10).run([sample()])
    assert traj.stop_reason == "max_context"
    assert len(traj.prompt_ids) + len(traj.response_ids) == prompt_len + 10


def test_per_turn_cap_closes_the_turn_without_training_on_the_closing_token(tiny_tokenizer):
    def long_answer(context):
        return "x" * 50 + call_text("1 + 1") if "<tool_response>" not in context else "done"

    [traj] = loop(tiny_tokenizer, long_answer, max_tokens_per_turn=20).run([sample()])
    assert traj.turns[0].finish_reason == "length" and traj.turns[0].num_sampled_tokens == 20
    assert traj.stop_reason == "answered"  # the cut turn had no complete tool call
    assert traj.response_ids[20] == tiny_tokenizer.eos_token_id and traj.loss_mask[20] == 0


def test_malformed_calls_become_observations_and_are_counted(tiny_tokenizer):
    def bad_then_answer(context):
        if "<tool_response>" in context:
            return "\\boxed{0}"
        return '<tool_call>{"name": "code_interpreter", "arguments": {"cod": "1"}}</tool_call>'

    [traj] = loop(tiny_tokenizer, bad_then_answer).run([sample()])
    [call] = traj.tool_calls
    assert call.status == "parse_error" and "missing required argument(s): code" in call.result
    assert traj.stop_reason == "answered" and traj.num_successful_tool_calls == 0


def test_tool_program_errors_are_observations(tiny_tokenizer):
    def divide(context):
        return call_text("1/0") if "<tool_response>" not in context else "\\boxed{?}"

    [traj] = loop(tiny_tokenizer, divide).run([sample()])
    assert traj.tool_calls[0].status == "error" and "ZeroDivisionError" in traj.tool_calls[0].result


def test_infrastructure_failure_stops_with_tool_error(tiny_tokenizer):
    [traj] = loop(tiny_tokenizer, tool=EvalTool(fail=True)).run([sample()])
    assert traj.stop_reason == "tool_error" and traj.has_infra_error


def test_trajectory_timeout_cuts_a_slow_tool(tiny_tokenizer):
    started = time.monotonic()
    [traj] = loop(tiny_tokenizer, tool=EvalTool(delay=5.0), trajectory_timeout=0.3).run([sample()])
    assert traj.stop_reason == "timeout"
    assert time.monotonic() - started < 3.0


def test_others_keep_generating_while_one_waits_for_a_slow_tool(tiny_tokenizer):
    """q0 calls a 1 s tool; q1 (no tool) and q2 (fast, many turns) must not wait for it."""
    slow_done = {}

    class Mixed(EvalTool):
        async def call(self, arguments):
            if arguments["code"] == "slow":
                await asyncio.sleep(1.0)
                slow_done["at"] = time.monotonic()
            return ToolResult("1", "success")

    def policy(context):
        n = context.count("<tool_response>")
        if "Question 0" in context:
            return call_text("slow") if n == 0 else "\\boxed{1}"
        if "Question 1" in context:
            return "\\boxed{2}"
        return call_text("fast") if n < 5 else "\\boxed{3}"

    engine = ScriptedEngine(tiny_tokenizer, policy)
    finished = {}
    agent = AgentLoop(engine, tiny_tokenizer, [Mixed()], LoopSettings())
    original = agent._drive

    async def timed(traj, *args):
        await original(traj, *args)
        finished[traj.sample.id] = time.monotonic()

    agent._drive = timed
    trajs = agent.run([sample(0), sample(1), sample(2)])
    assert [t.stop_reason for t in trajs] == ["answered"] * 3
    assert len(trajs[2].turns) == 6
    # q1 and q2 (six turns, five tool calls) finished while q0's tool was still running.
    assert finished["q1"] < slow_done["at"] and finished["q2"] < slow_done["at"]
    assert len(engine.calls) >= 6  # generation went on in batches meanwhile


def test_same_seed_same_trajectories_with_the_tiny_model(tiny_dir, tiny_tokenizer):
    def run(seed):
        engine = HFEngine.from_path(str(tiny_dir))
        agent = AgentLoop(
            engine,
            tiny_tokenizer,
            [EvalTool()],
            LoopSettings(max_response_length=96, max_turns=4, seed=seed),
        )
        return agent.run([sample(0), sample(1)], n=2)

    a, b, c = run(1), run(1), run(2)
    assert [t.response_ids for t in a] == [t.response_ids for t in b]
    assert [t.response_ids for t in a] != [t.response_ids for t in c]
    for traj in a:  # a random model's turns still keep every invariant
        traj.check()
        assert traj.stop_reason in {"answered", "max_response_tokens", "max_turns"}
        assert sum(traj.loss_mask) == sum(t.num_sampled_tokens for t in traj.turns)


@pytest.mark.parametrize("n_samples", [1, 5])
def test_batching_does_not_change_a_trajectory(tiny_dir, tiny_tokenizer, n_samples):
    engine = HFEngine.from_path(str(tiny_dir))
    settings = LoopSettings(max_response_length=64, max_turns=3, seed=5)
    alone = AgentLoop(engine, tiny_tokenizer, [EvalTool()], settings).run([sample(0)])[0]
    batched = AgentLoop(engine, tiny_tokenizer, [EvalTool()], settings).run(
        [sample(i) for i in range(n_samples)]
    )[0]
    assert alone.response_ids == batched.response_ids


class SteppedScriptEngine(ScriptedEngine):
    """A scripted engine that batches continuously: one token per decoding step per request."""

    def __init__(self, tokenizer, policy, step_s=0.002):
        super().__init__(tokenizer, policy)
        self.step_s = step_s

    def serve(self, take, done):
        running = {}  # key -> (full result, emitted count)
        while True:
            for key, request in take(64):
                running[key] = (self._one(request), 0)
            if not running:
                return
            time.sleep(self.step_s)
            for key, (result, emitted) in list(running.items()):
                if emitted + 1 == len(result.token_ids):
                    del running[key]
                    done(key, result)
                else:
                    running[key] = (result, emitted + 1)


def test_a_short_turn_goes_to_its_tool_while_a_long_turn_still_decodes(tiny_tokenizer):
    events = {}

    class Recording(EvalTool):
        async def call(self, arguments):
            events.setdefault("tool_started", time.monotonic())
            await asyncio.sleep(0.2)
            return ToolResult("1", "success")

    def policy(context):
        if "Question 0" in context:  # short turn, then a tool call
            return call_text("1") if "<tool_response>" not in context else "\\boxed{1}"
        return "x" * 300 + " \\boxed{2}"  # one long turn (~300 decoding steps)

    engine = SteppedScriptEngine(tiny_tokenizer, policy)
    agent = AgentLoop(engine, tiny_tokenizer, [Recording()], LoopSettings())
    original = agent._generate

    async def timed(traj, scheduler, seed):
        state = await original(traj, scheduler, seed)
        if traj.sample.id == "q1":
            events["long_turn_done"] = time.monotonic()
        return state

    agent._generate = timed
    trajs = agent.run([sample(0), sample(1)])
    assert [t.stop_reason for t in trajs] == ["answered", "answered"]
    assert events["tool_started"] < events["long_turn_done"]


def test_a_request_admitted_mid_batch_samples_what_it_would_alone(tiny_dir):
    from toolrl.rollout.engines.base import GenerationRequest

    engine = HFEngine.from_path(str(tiny_dir))
    long = GenerationRequest(list(range(40, 90)), 40, seed=1)
    late = GenerationRequest(list(range(20, 30)), 25, seed=2)
    short = GenerationRequest(list(range(60, 65)), 3, seed=3)
    alone = {
        name: engine.generate([r])[0]
        for name, r in (("long", long), ("late", late), ("short", short))
    }
    results, steps = {}, [0]

    def take(room):
        steps[0] += 1
        if steps[0] == 1:
            return [("long", long), ("short", short)]
        if steps[0] == 10:  # joins after 'short' finished and its cache columns were dropped
            return [("late", late)]
        return []

    engine.serve(take, results.__setitem__)
    for name in alone:
        assert results[name].token_ids == alone[name].token_ids, name
        assert results[name].logprobs == pytest.approx(alone[name].logprobs, abs=1e-4)


def test_an_engine_failure_reaches_every_trajectory_instead_of_hanging(tiny_tokenizer):
    class Broken(ScriptedEngine):
        def serve(self, take, done):
            take(64)
            raise RuntimeError("engine died")

    agent = AgentLoop(Broken(tiny_tokenizer, solver), tiny_tokenizer, [EvalTool()], LoopSettings())
    with pytest.raises(RuntimeError, match="engine died"):
        agent.run([sample(0), sample(1)])


class ThreadRecordingEngine(SteppedScriptEngine):
    def serve(self, take, done):
        self.threads = {*getattr(self, "threads", set()), threading.current_thread()}
        super().serve(take, done)


def test_run_decodes_on_the_calling_thread_and_arun_off_the_event_loop(tiny_tokenizer):
    # `run` keeps the engine on the caller's thread, where the torch thread pool lives.
    engine = ThreadRecordingEngine(tiny_tokenizer, solver)
    agent = AgentLoop(engine, tiny_tokenizer, [EvalTool()], LoopSettings())
    assert [t.stop_reason for t in agent.run([sample(0), sample(1)])] == ["answered"] * 2
    assert engine.threads == {threading.current_thread()}

    engine.threads = set()
    trajs = asyncio.run(agent.arun([sample(0)]))
    assert trajs[0].stop_reason == "answered"
    assert len(engine.threads) == 1 and threading.current_thread() not in engine.threads


def test_a_failing_trajectory_ends_the_driven_engine_and_reaches_the_caller(tiny_tokenizer):
    def policy(context):
        return "x" * 2000 + " \\boxed{2}"  # long enough to be decoding when the other fails

    engine = SteppedScriptEngine(tiny_tokenizer, policy, step_s=0.001)
    agent = AgentLoop(engine, tiny_tokenizer, [EvalTool()], LoopSettings(max_response_length=4096))

    original = agent._generate

    async def first_turn_fails(traj, scheduler, seed):
        if traj.sample.id == "q0":
            await asyncio.sleep(0.2)  # q1 is decoding by now
            raise ValueError("tool glue broke")
        return await original(traj, scheduler, seed)

    agent._generate = first_turn_fails
    started = time.monotonic()
    with pytest.raises(ValueError, match="tool glue broke"):
        agent.run([sample(0), sample(1)])
    assert time.monotonic() - started < 1.5  # the 2000-step turn of q1 was not waited for
    assert "toolrl-agent-loop" not in {t.name for t in threading.enumerate()}
