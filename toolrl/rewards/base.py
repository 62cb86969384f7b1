"""The record every grader returns, and the interface a grader satisfies.

A grader is a plain object with `name`, `grade(sample, response_text) -> Grade` and an async
twin `agrade`. Math and multiple-choice graders are pure functions of their inputs (math
`equivalent` mode runs math-verify in a worker process, but its answer depends only on the
strings); the code grader runs programs in the sandbox.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from toolrl.types import Sample

T = TypeVar("T")


@dataclass
class Grade:
    """The outcome of grading one response.

    `score` is the outcome reward before any shaping (math and choice: correct_score or
    wrong_score; code: the fraction of tests passed, or wrong_score when there is no code),
    `acc` whether the answer is fully correct, `pred` the extracted answer (None when none was
    found) and `details` what a person needs to see why (mode, test results, timeouts).
    """

    score: float
    acc: bool
    pred: str | None
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"score": self.score, "acc": self.acc, "pred": self.pred, "details": self.details}


class Grader(Protocol):
    name: str

    def grade(self, sample: Sample, response_text: str) -> Grade: ...

    async def agrade(self, sample: Sample, response_text: str) -> Grade: ...


def run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from synchronous code, even inside a running event loop
    (then it runs on a short-lived thread with its own loop, and this thread blocks)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(coro)  # type: ignore[arg-type]
        except BaseException as err:  # re-raised in the caller's thread
            box["error"] = err

    thread = threading.Thread(target=target, name="toolrl-grade")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]
