"""The agent loop: multi-turn tool rollouts, exact to the token, with no lockstep.

Each trajectory is a small explicit state machine:

    GENERATE --(turn ends with tool calls)--> CALL_TOOLS --(observation appended)--> GENERATE
        \\--(no tool call: answered / a budget is exhausted)--> DONE

GENERATE asks the engine for min(per-turn cap, remaining response budget, remaining context)
tokens and appends them with mask 1 and their log-probs. CALL_TOOLS parses the hermes calls,
runs them asynchronously, and appends the observation tokens wrapped in the chat template's
glue with mask 0. Model text is never re-tokenized: the response is the sampled ids plus the
observation ids, so `prompt_ids + response_ids` is exactly what the model saw.

No lockstep: all trajectories run as asyncio tasks. Generation requests go to a `BatchScheduler`
that keeps the engine decoding off the event loop; with a continuously batching engine (HF)
a request joins the running batch between decoding steps and returns the moment it finishes,
so a trajectory goes to its tool while the others keep decoding.

Which thread decodes matters on CPU. `run` keeps the engine on the calling thread and moves the
event loop (trajectories, tools) to a helper thread. PyTorch's OpenMP pool belongs to the thread
that made it: once one thread has a pool of several threads (the trainer's, on the main thread),
a second thread's torch ops get a pool of their own, the threads of both outnumber the cores,
and libgomp stops spinning between parallel regions; each op then waits for its workers to
wake. Measured on 2 cores: the same 16-row decoding run took 1.7-2x as long on a worker thread
as on the main thread (benchmarks/rollout.py: plain generation on each).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from toolrl.chat import (
    ObservationWrapper,
    ParsedCall,
    encode,
    end_of_turn_token,
    has_tool_call,
    parse_tool_calls,
    render,
)
from toolrl.rollout.branching import BranchingGroup, branch_metrics
from toolrl.rollout.engines.base import (
    ContinuousEngine,
    Engine,
    GenerationRequest,
    GenerationResult,
)
from toolrl.rollout.scheduler import BatchScheduler, State
from toolrl.tools.toolset import ToolSet, TrajectoryTools, as_toolset
from toolrl.types import Sample, ToolCall, Trajectory, Turn

if TYPE_CHECKING:
    from toolrl.config.schema import BranchingConfig


@dataclass
class LoopSettings:
    """The rollout knobs the loop needs (built from RolloutConfig by `settings_from_config`)."""

    max_turns: int = 16
    max_response_length: int = 20480
    max_tokens_per_turn: int = 0
    """0 = a turn may use the whole remaining budget."""
    max_context_length: int = 0
    """The model's window; 0 = unlimited. Prompt + response never exceed it."""
    max_parallel_calls: int = 1
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    max_concurrent_tools: int = 64
    trajectory_timeout: float = 0.0
    """Wall-clock seconds per trajectory; 0 = no limit."""
    max_batch_size: int = 256
    seed: int = 0
    """The default seed of `AgentLoop.run` (each request's seed derives from it)."""
    branching: BranchingConfig | None = None
    """Entropy-guided branching (ARPO / AEPO, toolrl/rollout/branching.py); None = n
    independent samples per prompt."""


def settings_from_config(
    rollout, *, tools=None, max_context_length: int = 0, seed: int = 0, sampling=None
) -> LoopSettings:
    """LoopSettings from a `RolloutConfig` and a `ToolsConfig` (default: its defaults), and
    optionally eval sampling (temperature, top_p; evaluation never branches)."""
    return LoopSettings(
        max_turns=rollout.max_turns,
        max_response_length=rollout.max_response_length,
        max_tokens_per_turn=rollout.max_tokens_per_turn,
        max_context_length=max_context_length,
        max_parallel_calls=rollout.max_parallel_calls,
        temperature=sampling.temperature if sampling else rollout.temperature,
        top_p=sampling.top_p if sampling else rollout.top_p,
        top_k=0 if sampling else rollout.top_k,
        max_concurrent_tools=tools.max_concurrent if tools else LoopSettings.max_concurrent_tools,
        trajectory_timeout=rollout.trajectory_timeout,
        seed=seed,
        branching=None if sampling or rollout.branching.mode == "none" else rollout.branching,
    )


class AgentLoop:
    """Runs n rollouts per sample through an engine and a set of tools.

    `tools` is the run's `ToolSet` (or a plain list of tools); each trajectory is offered the
    tools its sample's row allows (`ToolSet.offered`), opens its own sessions of per-trajectory
    tools, and closes them when it ends."""

    def __init__(
        self,
        engine: Engine,
        tokenizer,
        tools: ToolSet | list[Any],
        settings: LoopSettings | None = None,
    ):
        self.engine = engine
        self.tokenizer = tokenizer
        self.tools = as_toolset(tools)
        self.settings = settings or LoopSettings()
        self.wrapper = ObservationWrapper(tokenizer)
        self.eot_id = tokenizer.convert_tokens_to_ids(end_of_turn_token(tokenizer))
        self.branch_metrics: dict[str, float] = {}
        """The last branching rollout's statistics (`rollout/branch/*`); empty without one."""

    def run(
        self, samples: list[Sample], n: int = 1, *, seed: int | None = None
    ) -> list[Trajectory]:
        """Roll out every sample n times (blocking); results in (sample, group_index) order.
        `seed` (default `settings.seed`) seeds every request, per (sample, rollout, turn).

        A continuously batching engine decodes on this thread while the event loop runs on a
        helper thread (see the module docstring); other engines go through `arun`."""
        if not isinstance(self.engine, ContinuousEngine):
            return asyncio.run(self.arun(samples, n, seed=seed))
        scheduler = BatchScheduler(self.engine, self.settings.max_batch_size, driven=True)
        outcome: dict[str, Any] = {}
        started = threading.Event()

        async def coordinate() -> list[Trajectory]:
            scheduler._loop, outcome["task"] = asyncio.get_running_loop(), asyncio.current_task()
            started.set()
            return await self._arun(samples, n, scheduler, seed)

        def event_loop() -> None:
            try:
                outcome["trajectories"] = asyncio.run(coordinate())
            except BaseException as err:  # re-raised on the calling thread
                outcome["error"] = err
            finally:
                started.set()
                scheduler.stop()

        thread = threading.Thread(target=event_loop, name="toolrl-agent-loop", daemon=True)
        thread.start()
        started.wait()
        try:
            scheduler.drive()
        except BaseException:  # interrupted while decoding: cancel the trajectories, then re-raise
            if "task" in outcome:
                scheduler._call_in_loop(outcome["task"].cancel)
            thread.join()
            raise
        thread.join()
        if "error" in outcome:
            raise outcome["error"]
        return outcome["trajectories"]

    async def arun(
        self, samples: list[Sample], n: int = 1, *, seed: int | None = None
    ) -> list[Trajectory]:
        """Roll out every sample n times from a running event loop (the engine decodes on one of
        its worker threads); results in (sample, group_index) order."""
        scheduler = BatchScheduler(self.engine, self.settings.max_batch_size)
        return await self._arun(samples, n, scheduler, seed)

    async def arun_on(
        self,
        scheduler: BatchScheduler,
        samples: list[Sample],
        n: int,
        seed: int,
        tool_slots: asyncio.Semaphore | None = None,
    ) -> list[Trajectory]:
        """`arun` through a scheduler (and tool slots) shared with other batches in flight (the
        asynchronous producer's); the scheduler stays open."""
        if tool_slots is None:
            tool_slots = asyncio.Semaphore(self.settings.max_concurrent_tools)
        if self.settings.branching is not None:
            groups = [BranchingGroup(self, s, n, scheduler, tool_slots, seed) for s in samples]
            await asyncio.gather(*(group.run() for group in groups))
            self.branch_metrics = branch_metrics(groups)
            return [t for group in groups for t in group.trajectories()]
        trajectories = [self.start(sample, k) for sample in samples for k in range(n)]
        await asyncio.gather(*(self._drive(t, scheduler, tool_slots, seed) for t in trajectories))
        return trajectories

    async def _arun(
        self, samples: list[Sample], n: int, scheduler: BatchScheduler, seed: int | None
    ) -> list[Trajectory]:
        seed = self.settings.seed if seed is None else seed
        try:
            return await self.arun_on(scheduler, samples, n, seed)
        finally:
            await scheduler.close()

    def start(self, sample: Sample, group_index: int = 0) -> Trajectory:
        schemas = self.tools.schemas_for(sample)
        prompt = render(self.tokenizer, sample.messages, schemas, add_generation_prompt=True)
        return Trajectory(
            sample=sample, prompt_ids=encode(self.tokenizer, prompt), group_index=group_index
        )

    async def _drive(
        self, traj: Trajectory, scheduler: BatchScheduler, tool_slots: asyncio.Semaphore, seed: int
    ) -> None:
        started, state = time.monotonic(), State.GENERATE
        tools = self.tools.open(traj.sample)
        try:
            while state is not State.DONE:
                if self._out_of_time(started):
                    traj.stop_reason, state = "timeout", State.DONE
                elif state is State.GENERATE:
                    state = await self._generate(traj, scheduler, seed)
                else:
                    state = await self._call_tools(traj, tools, tool_slots, started)
        finally:
            await tools.close()
        traj.check()

    def _out_of_time(self, started: float) -> bool:
        limit = self.settings.trajectory_timeout
        return limit > 0 and time.monotonic() - started >= limit

    def _budget(self, traj: Trajectory) -> tuple[int, str]:
        """Tokens the next turn may sample, and the stop reason if that is zero."""
        s = self.settings
        budget, reason = s.max_response_length - len(traj.response_ids), "max_response_tokens"
        if s.max_context_length:
            room = s.max_context_length - len(traj.prompt_ids) - len(traj.response_ids)
            if room < budget:
                budget, reason = room, "max_context"
        if s.max_tokens_per_turn:
            budget = min(budget, s.max_tokens_per_turn)
        return budget, reason

    async def _generate(self, traj: Trajectory, scheduler: BatchScheduler, seed: int) -> State:
        request = self._request(traj, seed)
        if request is None:
            return State.DONE
        t0 = time.monotonic()
        result = await scheduler.generate(request)
        return self._append_turn(traj, result, time.monotonic() - t0)

    def _request(
        self, traj: Trajectory, seed: int, rollout_key: int | str | None = None
    ) -> GenerationRequest | None:
        """The next turn's request, seeded per (sample, rollout key — default the group index —,
        turn); None, with the stop reason set, when no token may be sampled."""
        budget, exhausted = self._budget(traj)
        if budget <= 0:
            traj.stop_reason = exhausted
            return None
        s = self.settings
        key = traj.group_index if rollout_key is None else rollout_key
        return GenerationRequest(
            prompt_ids=traj.prompt_ids + traj.response_ids,
            max_new_tokens=budget,
            temperature=s.temperature,
            top_p=s.top_p,
            top_k=s.top_k,
            stop_token_ids=(self.eot_id,),
            seed=request_seed(seed, traj.sample.id, key, len(traj.turns)),
        )

    def _append_turn(self, traj: Trajectory, result: GenerationResult, generate_s: float) -> State:
        """Append a sampled turn (mask 1, its log-probs); the state that follows it."""
        s = self.settings
        traj.response_ids += result.token_ids
        traj.loss_mask += [1] * len(result.token_ids)
        traj.rollout_logprobs += result.logprobs
        ended = result.finish_reason == "stop"
        text_ids = result.token_ids[:-1] if ended else result.token_ids
        turn = Turn(
            text=self.tokenizer.decode(text_ids),
            num_sampled_tokens=len(result.token_ids),
            finish_reason=result.finish_reason,
            generate_s=generate_s,
            weight_version=result.weight_version or 0,
        )
        traj.turns.append(turn)
        if not ended:
            if self._budget(traj)[0] <= 0 or not s.max_tokens_per_turn:
                traj.stop_reason = self._budget(traj)[1]
                return State.DONE
            # The per-turn cap cut the turn: close it as the template would (mask 0, not sampled).
            traj.response_ids.append(self.eot_id)
            traj.loss_mask.append(0)
            traj.rollout_logprobs.append(0.0)
        if not has_tool_call(turn.text):
            traj.stop_reason = "answered"
            return State.DONE
        if len(traj.turns) >= s.max_turns:
            traj.stop_reason = "max_turns"
            return State.DONE
        return State.CALL_TOOLS

    async def _call_tools(
        self,
        traj: Trajectory,
        tools: TrajectoryTools,
        tool_slots: asyncio.Semaphore,
        started: float,
    ) -> State:
        turn = traj.turns[-1]
        parsed = parse_tool_calls(turn.text, tools.schemas, self.settings.max_parallel_calls)
        t0 = time.monotonic()
        turn.tool_calls = list(
            await asyncio.gather(*(self._run_call(c, tools, tool_slots, started) for c in parsed))
        )
        turn.tool_s = time.monotonic() - t0
        if any(call.status == "infra_error" for call in turn.tool_calls):
            traj.stop_reason = "tool_error"
            return State.DONE
        observation = self.wrapper.ids([call.result for call in turn.tool_calls])
        if len(traj.response_ids) + len(observation) > self.settings.max_response_length:
            traj.stop_reason = "max_response_tokens"
            return State.DONE
        traj.response_ids += observation
        traj.loss_mask += [0] * len(observation)
        traj.rollout_logprobs += [0.0] * len(observation)
        turn.num_observation_tokens = len(observation)
        return State.GENERATE

    async def _run_call(
        self,
        call: ParsedCall,
        tools: TrajectoryTools,
        tool_slots: asyncio.Semaphore,
        started: float,
    ) -> ToolCall:
        if call.error is not None:
            return ToolCall(call.name, call.arguments, "parse_error", f"Error: {call.error}")
        t0 = time.monotonic()
        limit = self.settings.trajectory_timeout
        remaining = limit - (t0 - started) if limit > 0 else None
        try:
            async with tool_slots:
                result = await asyncio.wait_for(tools.call(call.name, call.arguments), remaining)
        except TimeoutError:
            return ToolCall(
                call.name,
                call.arguments,
                "error",
                "Error: the trajectory ran out of time",
                time.monotonic() - t0,
            )
        return ToolCall(call.name, call.arguments, result.status, result.text, result.elapsed_s)


def request_seed(seed: int, sample_id: str, rollout_key: int | str, turn: int) -> int:
    """A stable per-(sample, rollout, turn) seed, independent of scheduling order. The rollout
    key is the group index, or a branch's lineage (toolrl/rollout/branching.py)."""
    digest = hashlib.blake2b(
        f"{seed}/{sample_id}/{rollout_key}/{turn}".encode(), digest_size=8
    ).digest()
    return int.from_bytes(digest, "little") >> 2
