"""Which grader a sample gets (by `data_source`), and the RL reward of a trajectory.

Routing, first match wins:

1. a name registered with `register_data_source(name, kind)`;
2. `code`: the data source contains one of `CODE_MARKERS` (the released system sends every
   data source containing "code" to its code grader; LiveCodeBench, HumanEval and the like are
   added here);
3. `choice`: it contains one of `CHOICE_MARKERS` (GPQA);
4. `qa`: it is one of `QA_SOURCES` (Search-R1's open-domain QA sets) or contains `search_qa`
   (what `load_rl_samples` names raw `question` / `golden_answers` rows): exact match after
   SQuAD normalisation (`rewards/qa.py`), one mode;
5. `math`: everything else (as in the released system).

Modes: `math` grades in `strict` or `equivalent` mode (`rewards/math.py`). `choice` in strict
mode is the paper's check (the boxed content must be exactly the letter, in the last 100
characters: the released system grades GPQA with its math grader) and in equivalent mode the
robust letter reader of `rewards/choice.py`. `code` has one mode, and runs its tests with
`code_execution` (`isolated` or `official`, `rewards/code.py`): `Graders` takes it from
`config.code_execution` (RL: isolated by default) unless given one (evaluation passes
`eval.code_execution`, official by default).

`reward_for` / `areward_batch` grade `traj.final_text` in `config.math_mode`, then apply the
shaping of `rewards/shaping.py`, and set `traj.reward` and `traj.reward_info`:
`score` (before shaping), `acc`, `pred`, `grader`, `tool_shaping`, `overlong_penalty`,
`num_completed_tool_calls`, `details`, and `infra_error` when the sandbox failed while grading
(the trainer masks such trajectories rather than punishing them).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from toolrl.config import RewardConfig
from toolrl.rewards.base import Grade, Grader, run_sync
from toolrl.rewards.choice import ChoiceGrader
from toolrl.rewards.code import EXECUTIONS, CodeGrader, parse_tests
from toolrl.rewards.math import MathGrader
from toolrl.rewards.qa import QAGrader
from toolrl.rewards.shaping import num_completed_tool_calls, shape_rewards
from toolrl.rewards.verifier import MathVerifier
from toolrl.types import Sample, Trajectory

Kind = Literal["math", "choice", "code", "qa"]
MODES = ("strict", "equivalent")
CODE_MARKERS = ("code", "livecodebench", "lcb", "humaneval", "mbpp", "leetcode", "taco", "apps")
CHOICE_MARKERS = ("gpqa", "mmlu", "multiple_choice")
QA_SOURCES = ("nq", "triviaqa", "popqa", "hotpotqa", "2wikimultihopqa", "musique", "bamboogle")
QA_MARKER = "search_qa"
_REGISTERED: dict[str, Kind] = {}


def register_data_source(name: str, kind: Kind) -> None:
    """Route `data_source == name` to the `kind` grader (overrides the substring rules)."""
    if kind not in ("math", "choice", "code", "qa"):
        raise ValueError(f"unknown grader kind {kind!r} (use math, choice, code or qa)")
    _REGISTERED[name] = kind


def grader_kind(data_source: str) -> Kind:
    """The grader kind of a data source (see the module docstring)."""
    if data_source in _REGISTERED:
        return _REGISTERED[data_source]
    lowered = data_source.lower()
    if any(marker in lowered for marker in CODE_MARKERS):
        return "code"
    if any(marker in lowered for marker in CHOICE_MARKERS):
        return "choice"
    if lowered in QA_SOURCES or QA_MARKER in lowered:
        return "qa"
    return "math"


@dataclass
class Graders:
    """Grader instances for one reward config, built on first use and reused.

    `sandbox` (code) and `verifier` (math equivalent mode) default to process-wide ones;
    `code_execution` to `config.code_execution`.
    """

    config: RewardConfig = field(default_factory=RewardConfig)
    sandbox: Any = None
    verifier: MathVerifier | None = None
    code_execution: str = ""
    _cache: dict[tuple[str, str], Grader] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        self.code_execution = self.code_execution or self.config.code_execution
        if self.code_execution not in EXECUTIONS:
            raise ValueError(
                f"unknown code execution {self.code_execution!r} (use isolated or official)"
            )

    def get(self, data_source: str, mode: str | None = None) -> Grader:
        """The grader for a data source in `mode` (default: `config.math_mode`)."""
        mode = mode or self.config.math_mode
        if mode not in MODES:
            raise ValueError(f"unknown grading mode {mode!r} (use strict or equivalent)")
        kind = grader_kind(data_source)
        key = (kind, kind if kind in ("code", "qa") else mode)
        if key not in self._cache:
            self._cache[key] = self._build(kind, mode)
        return self._cache[key]

    def code_execution_for(self, sample: Sample) -> str | None:
        """How a sample's code tests run: `code_execution`, except assert tests (HumanEval's),
        which always run isolated; None for a sample that is not code. ValueError if its
        tests are malformed."""
        if grader_kind(sample.data_source) != "code":
            return None
        return (
            "isolated" if parse_tests(sample.ground_truth).kind == "assert" else self.code_execution
        )

    def modes(self, data_source: str) -> tuple[str, ...]:
        """The modes evaluation reports for a data source: both, except for code and QA
        (one way to grade each)."""
        kind = grader_kind(data_source)
        return {"code": ("code",), "qa": ("strict",)}.get(kind, MODES)

    def _build(self, kind: str, mode: str) -> Grader:
        scores = {
            "correct_score": self.config.correct_score,
            "wrong_score": self.config.wrong_score,
        }
        if kind == "code":
            return CodeGrader(sandbox=self.sandbox, execution=self.code_execution, **scores)
        if kind == "qa":
            return QAGrader(**scores)
        if kind == "choice" and mode == "equivalent":
            return ChoiceGrader(**scores)
        math_mode = "strict" if kind == "choice" else mode
        return MathGrader(mode=math_mode, verifier=self.verifier, **scores)  # type: ignore[arg-type]

    async def agrade(self, sample: Sample, response_text: str, mode: str | None = None) -> Grade:
        """Grade one response; a malformed ground truth raises naming the sample."""
        grader = self.get(sample.data_source, mode if mode != "code" else None)
        try:
            return await grader.agrade(sample, response_text)
        except ValueError as err:
            raise ValueError(f"sample {sample.id} ({sample.data_source}): {err}") from err

    def grade(self, sample: Sample, response_text: str, mode: str | None = None) -> Grade:
        return run_sync(self.agrade(sample, response_text, mode))


async def areward_batch(
    trajectories: list[Trajectory],
    config: RewardConfig,
    max_response_length: int,
    *,
    graders: Graders | None = None,
    max_concurrency: int = 64,
) -> list[Grade]:
    """Grade every trajectory concurrently, shape, and set `reward` / `reward_info` on each."""
    graders = graders or Graders(config)
    slots = asyncio.Semaphore(max_concurrency)

    async def one(traj: Trajectory) -> Grade:
        async with slots:
            return await graders.agrade(traj.sample, traj.final_text)

    grades = list(await asyncio.gather(*(one(t) for t in trajectories)))
    calls = [num_completed_tool_calls(t) for t in trajectories]
    shaped = shape_rewards(
        [g.score for g in grades],
        [g.acc for g in grades],
        calls,
        [t.response_length for t in trajectories],
        config,
        max_response_length,
    )
    for i, (traj, grade) in enumerate(zip(trajectories, grades, strict=True)):
        traj.reward = shaped.rewards[i]
        traj.reward_info = {
            "score": grade.score,
            "acc": grade.acc,
            "pred": grade.pred,
            "grader": graders.get(traj.sample.data_source).name,
            "tool_shaping": shaped.tool_shaping[i],
            "overlong_penalty": shaped.overlong_penalty[i],
            "num_completed_tool_calls": calls[i],
            "details": grade.details,
        }
        if grade.details.get("infra_error"):
            traj.reward_info["infra_error"] = True
    return grades


def reward_batch(
    trajectories: list[Trajectory],
    config: RewardConfig,
    max_response_length: int,
    *,
    graders: Graders | None = None,
) -> list[Grade]:
    """Blocking `areward_batch` (usable inside a running event loop, which it then blocks)."""
    return run_sync(areward_batch(trajectories, config, max_response_length, graders=graders))


def reward_for(
    traj: Trajectory,
    config: RewardConfig,
    max_response_length: int,
    *,
    graders: Graders | None = None,
) -> Grade:
    """Grade and shape one trajectory in place; returns its Grade (score before shaping)."""
    return reward_batch([traj], config, max_response_length, graders=graders)[0]


score_trajectories = reward_batch
"""The name the RL trainer calls: `score_trajectories(trajectories, config.reward, max_len)`."""
