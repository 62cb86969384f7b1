"""Math answers: the last `\\boxed{...}` of the response, graded in one of two modes.

**strict** (the paper's reward; Open-AgentRL calls verl's `math_dapo.compute_score` with
`strict_box_verify=True`). Precisely:

1. keep only the last 100 characters of the response (verl cuts the response to its last 300
   characters, then the strict check to its last 100);
2. find the last occurrence of the 7 characters `\\boxed{` in them; none → no answer;
3. from there, count braces until the `{` of the box is closed; never closed → no answer;
4. the answer is the text between the box's braces, unmodified (no stripping, no
   normalisation), and it is correct iff it equals `str(ground_truth)` character for
   character (a list of ground truths: equal to any of them).

So `\\boxed{ 42}`, `\\boxed{42.0}`, `\\boxed{\\frac12}` for `\\frac{1}{2}`, `\\boxed 42`, `\\fbox{42}`
and a box that starts more than 100 characters from the end are all wrong. One difference from
the released system is where the text comes from: toolrl grades the last assistant turn
(`Trajectory.final_text`), verl the decoded response of all turns with tool outputs, which only
differs when the last turn is shorter than 100 characters.

**equivalent** (recommended): the same last box, anywhere in the response, compared with
math-verify (`verify(parse(gold), parse(pred))` with its default settings, numeric and
symbolic equivalence), run by `verifier.MathVerifier` under a hard time limit. The gold answer
is wrapped as `\\boxed{gold}` unless it already has a box or `$` delimiters. A response without a
box is wrong in both modes: the prompt asks for one.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any, Literal

from toolrl.rewards.base import Grade
from toolrl.rewards.verifier import MathVerifier, default_verifier
from toolrl.types import Sample

STRICT_TAIL_CHARS = 100
"""Characters at the end of the response that the strict check searches for a box."""
BOX_OPEN = "\\boxed{"

MathMode = Literal["strict", "equivalent"]


def last_boxed(text: str) -> str | None:
    """The content of the last `\\boxed{...}` in `text` (nested braces balanced), or None if
    there is none or its braces never close."""
    start = text.rfind(BOX_OPEN)
    if start < 0:
        return None
    depth = 0
    for i in range(start + len(BOX_OPEN) - 1, len(text)):
        if text[i] == "{":
            depth += 1
        elif text[i] == "}":
            depth -= 1
            if depth == 0:
                return text[start + len(BOX_OPEN) : i]
    return None


def ground_truths(ground_truth: Any) -> list[str]:
    """The accepted answers as strings (a sample may list several)."""
    if isinstance(ground_truth, list | tuple):
        return [str(g) for g in ground_truth]
    return [str(ground_truth)]


def strict_answer(response: str) -> str | None:
    """The strict mode's answer: the last box within the last 100 characters."""
    return last_boxed(response[-STRICT_TAIL_CHARS:])


def strict_correct(response: str, ground_truth: Any) -> tuple[bool, str | None]:
    """(correct, answer) under the strict rule described in the module docstring."""
    pred = strict_answer(response)
    return pred is not None and pred in ground_truths(ground_truth), pred


def gold_for_verify(gold: str) -> str:
    """Gold answers are given bare ("33", "\\frac{1}{2}"); math-verify extracts from boxes."""
    return gold if "\\boxed" in gold or "$" in gold else f"\\boxed{{{gold}}}"


def equivalent_correct(
    response: str, ground_truth: Any, verifier: MathVerifier | None = None
) -> tuple[bool, str | None, dict[str, Any]]:
    """(correct, answer, details) under math-verify equivalence of the last box."""
    pred = last_boxed(response)
    if pred is None:
        return False, None, {"reason": "no \\boxed{} answer"}
    verifier = verifier or default_verifier()
    details: dict[str, Any] = {}
    for gold in ground_truths(ground_truth):
        verdict = verifier.equivalent(gold_for_verify(gold), f"\\boxed{{{pred}}}")
        details = {"verify_status": verdict.status, "parsed_pred": verdict.pred_parsed}
        if verdict.error:
            details["error"] = verdict.error
        if verdict.equal:
            return True, pred, details
    return False, pred, details


@dataclass
class MathGrader:
    """Grades `\\boxed{}` math answers in `strict` or `equivalent` mode (module docstring)."""

    mode: MathMode = "strict"
    correct_score: float = 1.0
    wrong_score: float = -1.0
    verifier: MathVerifier | None = field(default=None, repr=False)

    @property
    def name(self) -> str:
        return f"math_{self.mode}"

    def grade(self, sample: Sample, response_text: str) -> Grade:
        if self.mode == "strict":
            correct, pred = strict_correct(response_text, sample.ground_truth)
            details: dict[str, Any] = {"mode": "strict"}
        else:
            correct, pred, details = equivalent_correct(
                response_text, sample.ground_truth, self.verifier
            )
            details = {"mode": "equivalent", **details}
        score = self.correct_score if correct else self.wrong_score
        return Grade(score=score, acc=correct, pred=pred, details=details)

    async def agrade(self, sample: Sample, response_text: str) -> Grade:
        if self.mode == "strict":
            return self.grade(sample, response_text)
        return await asyncio.to_thread(self.grade, sample, response_text)
