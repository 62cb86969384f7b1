"""Official execution of stdin/stdout and functional tests: LiveCodeBench's harness, in the sandbox.

`run_official` sends one sandbox run per response: `lcb_harness.py` as the program and the
problem (code, inputs, expected outputs, fn_name, timeout) on stdin. The harness runs every
test as LiveCodeBench's grader does (its docstring lists how) and writes one verdict line; this
module builds the request and reads the verdict into the per-test results `CodeGrader`
aggregates. Untrusted code runs only in the sandbox, never in this process.

Limits of the run: the sandbox's wall clock is LiveCodeBench's global timeout for the problem,
(timeout + 1) · tests + 5 s, the harness's `signal.alarm` giving each test its `timeout`
(whole seconds, rounded up); CPU time is not limited separately. LiveCodeBench sets no memory
limit; the sandbox needs one, `memory_mb` (4 GiB by default), and keeps its other limits (64
processes and threads, 64 MiB files): where a verdict can differ from LiveCodeBench's (a program
above them fails here and may pass there). A run that ends
without a verdict (the time limit, `os._exit`, a crash) fails every test, as there.

Official execution is for measuring, not for rewards: the expected outputs are in the process
the candidate runs in, as in LiveCodeBench (see the README's "LiveCodeBench grading").
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

from toolrl.rewards import lcb_harness

HARNESS_SOURCE = Path(lcb_harness.__file__).read_text(encoding="utf-8") + "\nmain()\n"
OFFICIAL_MEMORY_MB = 4096
_STATUS = {
    lcb_harness.WRONG_ANSWER: "wrong_answer",
    lcb_harness.TIME_LIMIT: "timeout",
    lcb_harness.RUNTIME_ERROR: "runtime_error",
}


def official_problem(ground_truth: Any) -> dict[str, Any]:
    """LiveCodeBench's `input_output` of a ground truth (a mapping or its JSON): `inputs`,
    `outputs` and `fn_name` (None for stdin/stdout), the values as they are; ValueError if the
    lists are missing or of different lengths."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(truth, dict) or "inputs" not in truth or "outputs" not in truth:
        raise ValueError("official execution needs code tests with `inputs` and `outputs`")
    inputs, outputs = list(truth["inputs"]), list(truth["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError(f"code tests have {len(inputs)} inputs but {len(outputs)} outputs")
    return {"inputs": inputs, "outputs": outputs, "fn_name": truth.get("fn_name")}


def official_limits(timeout_s: float, tests: int, memory_mb: int) -> Any:
    """The sandbox limits of one official run (module docstring)."""
    from toolrl.sandbox import Limits

    wall = (math.ceil(timeout_s) + 1) * max(tests, 1) + 5
    return Limits(
        timeout_s=wall,
        memory_mb=memory_mb,
        cpu_time_s=wall * (os.cpu_count() or 1),
    )


async def run_official(
    sandbox: Any, code: str, ground_truth: Any, timeout_s: float, memory_mb: int
) -> list[dict[str, Any]]:
    """Per-test results (`passed`, `status`, and `stderr` on the first failure) of one run."""
    problem = official_problem(ground_truth)
    tests = len(problem["inputs"])
    request = {**problem, "code": code, "timeout": math.ceil(timeout_s)}
    result = await sandbox.run(
        HARNESS_SOURCE,
        stdin=json.dumps(request),
        limits=official_limits(timeout_s, tests, memory_mb),
    )
    return read_verdict(result, tests)


def read_verdict(result: Any, tests: int) -> list[dict[str, Any]]:
    """The sandbox result of a harness run → one result per test. Tests after the first that
    did not pass were not run (`not_run`); without a verdict line, every test failed."""
    verdict = _verdict(result.stdout)
    if verdict is None or verdict["results"] is None:
        status, why = _why_no_verdict(result)
        if verdict is not None:
            why = verdict["error"]
        return [{"passed": False, "status": status, "stderr": why}] + [
            {"passed": False, "status": status} for _ in range(tests - 1)
        ]
    out = []
    for code in verdict["results"][:tests]:
        passed = code is True
        status = "pass" if passed else _STATUS.get(code, "wrong_answer")
        out.append({"passed": passed, "status": status})
    out += [{"passed": False, "status": "not_run"} for _ in range(tests - len(out))]
    failed = [r for r in out if not r["passed"]]
    if failed and verdict["error"]:
        failed[0]["stderr"] = verdict["error"]
    return out


def _verdict(stdout: str) -> dict[str, Any] | None:
    for line in reversed(stdout.splitlines()):
        if line.startswith(lcb_harness.VERDICT_PREFIX):
            try:
                verdict = json.loads(line.removeprefix(lcb_harness.VERDICT_PREFIX))
            except json.JSONDecodeError:
                return None
            ok = isinstance(verdict, dict) and isinstance(verdict.get("results"), list | None)
            return verdict if ok else None
    return None


def _why_no_verdict(result: Any) -> tuple[str, str]:
    if result.status == "SandboxError" or result.run_result is None:
        return "sandbox_error", str(getattr(result, "message", "") or "the sandbox failed")
    run = result.run_result
    if run.status == "TimeLimitExceeded":
        return "timeout", "the problem's global time limit was reached"
    limit = f", {run.limit_exceeded} limit" if run.limit_exceeded else ""
    return (
        "runtime_error",
        f"the grading process ended with no verdict (exit {run.return_code}{limit})",
    )
