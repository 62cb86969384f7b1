"""Code answers: the last fenced python block of the final answer, run against tests in the
sandbox.

Score = fraction of tests passed, `acc` = all passed; `wrong_score` (−1) when the answer has no
```python block or the block does not parse (as the released system does). Text before a
closing `</think>` is ignored. Three kinds of tests, chosen from the ground truth's shape.

stdin/stdout and functional tests (LiveCodeBench's forms) run in one of two `execution` modes:
**isolated** (the default, for RL rewards; described below: a fresh process per test, exit
status, limits, and nothing the candidate returns is trusted) or **official** (LiveCodeBench's
own harness reproduced inside the sandbox, `code_official.py` and `lcb_harness.py`: the same
verdicts as LiveCodeBench's grader, quirks included, for numbers comparable with published
ones). Both use LiveCodeBench's output comparison and import header; the README's
"LiveCodeBench grading" lists where their verdicts differ. Assert tests run the same in both.

- **stdin/stdout** (`{"inputs": [...], "outputs": [...]}`): one sandbox run per test with the
  input as stdin. The output passes when, after stripping the whole output and splitting it
  into lines, each stripped, the two have as many lines and each pair of lines is equal, or
  else both split on whitespace into numbers that are equal as `Decimal`s ("1.0" = "1", "2e3"
  = "2000"). The run must end with status 0 within the time limit (LiveCodeBench also accepts
  a `sys.exit(code)` with any code; isolated execution does not).
- **functional** (the same plus `"fn_name"`, LeetCode style): each input is one JSON value
  per line (the arguments), each output one JSON value. One run per test calls the function —
  a method of `Solution()` when the code defines `class Solution` — and returns the value
  through a tagged codec (`code_harness.py`); a top-level tuple counts as a list; then the
  grader compares it with `==` against the expected value, outside the sandbox.
- **assert** (`{"test_code", "entry_point"}` plus `"import_prefix"` or `"setup_code"`; the
  HumanEval loader writes this form): the test's `check(candidate)` runs in a tester process
  that never runs the candidate's code (see `code_harness.py`). With `"per_assert": true` (the
  default for the released system's `import_prefix` files) each top-level statement of
  `check` is its own test; HumanEval's `check` is one test. Arguments and return values cross
  between the two processes as plain data (copies), so a test that checks how the function
  mutated its argument in place fails (no HumanEval test does).

In isolated execution, expected stdout and return values never enter the sandbox; the LeetCode
and stdin/stdout graders receive only inputs (official execution sends them, as LiveCodeBench
compares inside the process the program ran in). Every program gets LiveCodeBench's import
header (`IMPORT_HEADER`) so that code relying on LeetCode's implicit imports (`List`, `math`,
...) runs as it does there.
"""

from __future__ import annotations

import ast
import asyncio
import copy
import json
import re
import secrets
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from toolrl.rewards import code_harness
from toolrl.rewards.base import Grade, run_sync
from toolrl.rewards.code_official import OFFICIAL_MEMORY_MB, run_official
from toolrl.rewards.lcb_harness import IMPORT_HEADER, stdout_matches
from toolrl.types import Sample

CODE_BLOCK = re.compile(r"```python[ \t]*\n(.*?)```", re.DOTALL)
EXECUTIONS = ("isolated", "official")


def extract_code(response: str) -> str | None:
    """The last ```python block after any `</think>`, or None."""
    answer = response.rsplit("</think>", 1)[-1]
    blocks = CODE_BLOCK.findall(answer)
    return blocks[-1] if blocks else None


def syntax_error(code: str) -> str | None:
    """Why `code` does not parse as Python, or None (parsing runs no code)."""
    try:
        ast.parse(code)
    except (SyntaxError, ValueError, RecursionError, MemoryError) as err:
        return f"{type(err).__name__}: {err}"
    return None


# ----------------------------------------------------------------------------------------------
# Output comparison (LiveCodeBench's rules, in the trusted process; `stdout_matches` is
# lcb_harness.py's, shared with official execution)


def result_matches(returned: Any, expected: Any) -> bool:
    """LiveCodeBench's functional check: a top-level tuple counts as a list, then `==`."""
    if isinstance(returned, tuple):
        returned = list(returned)
    try:
        return bool(returned == expected)
    except Exception:
        return False


# ----------------------------------------------------------------------------------------------
# Test specifications


@dataclass
class TestSpec:
    kind: str
    """`stdio`, `functional` or `assert`."""
    inputs: list[Any] = field(default_factory=list)
    outputs: list[Any] = field(default_factory=list)
    fn_name: str = ""
    setup_code: str = ""
    test_code: str = ""
    entry_point: str = ""
    per_assert: bool = False


def parse_tests(ground_truth: Any) -> TestSpec:
    """The tests a ground truth describes (a dict, or a JSON string of one); ValueError if it
    fits none of the shapes in the module docstring."""
    truth = json.loads(ground_truth) if isinstance(ground_truth, str) else ground_truth
    if not isinstance(truth, dict):
        raise ValueError(f"code ground truth must be a mapping, got {type(truth).__name__}")
    if "test_code" in truth or "test" in truth:
        if "entry_point" not in truth:
            raise ValueError("assert-style code tests need `entry_point`")
        return TestSpec(
            kind="assert",
            setup_code=str(truth.get("setup_code", truth.get("import_prefix", ""))),
            test_code=str(truth.get("test_code", truth.get("test", ""))),
            entry_point=str(truth["entry_point"]),
            per_assert=bool(truth.get("per_assert", "import_prefix" in truth)),
        )
    if "inputs" not in truth or "outputs" not in truth:
        raise ValueError(
            "code ground truth needs `inputs` and `outputs`, or `test_code` and `entry_point`; "
            f"got keys {sorted(truth)}"
        )
    inputs, outputs = list(truth["inputs"]), list(truth["outputs"])
    if len(inputs) != len(outputs):
        raise ValueError(f"code tests have {len(inputs)} inputs but {len(outputs)} outputs")
    if truth.get("fn_name"):
        return TestSpec("functional", inputs, outputs, fn_name=str(truth["fn_name"]))
    inputs = ["\n".join(map(str, i)) if isinstance(i, list) else str(i) for i in inputs]
    outputs = ["\n".join(map(str, o)) if isinstance(o, list) else str(o) for o in outputs]
    return TestSpec("stdio", inputs, outputs)


def functional_args(test_input: Any) -> list[Any]:
    """LiveCodeBench stores the arguments as one JSON value per line."""
    if isinstance(test_input, list):
        return test_input
    return [json.loads(line) for line in str(test_input).split("\n") if line.strip()]


def functional_expected(test_output: Any) -> Any:
    if isinstance(test_output, str):
        try:
            return json.loads(test_output)
        except json.JSONDecodeError:
            return test_output
    return test_output


def assert_units(spec: TestSpec) -> tuple[str, list[str]]:
    """(preamble, units) for the tester. Top-level `check(...)` calls are removed (the tester
    calls `check` itself, with the candidate). With `per_assert`, each top-level statement of
    `check` becomes one unit (a `check` holding that statement alone) and the rest of the test
    code is the preamble; otherwise the whole test code is the one unit."""
    try:
        tree = ast.parse(spec.test_code)
    except SyntaxError:
        return "", [spec.test_code]  # it fails in the tester, and the test with it
    body = [node for node in tree.body if not _calls_check(node)]
    checks = [n for n in body if isinstance(n, ast.FunctionDef) and n.name == "check"]
    if not (spec.per_assert and len(checks) == 1 and checks[0].body):
        return "", [ast.unparse(ast.Module(body=body, type_ignores=[]))]
    check = checks[0]
    preamble = ast.unparse(ast.Module(body=[n for n in body if n is not check], type_ignores=[]))
    units = []
    for statement in check.body:
        single = copy.copy(check)
        single.body = [statement]
        units.append(ast.unparse(single))
    return preamble, units


def _calls_check(node: ast.stmt) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Name)
        and node.value.func.id == "check"
    )


# ----------------------------------------------------------------------------------------------
# Running tests in the sandbox

HARNESS_SOURCE = Path(code_harness.__file__).read_text(encoding="utf-8")
_default_sandbox: Any = None
_default_lock = threading.Lock()


def default_sandbox() -> Any:
    """The process-wide local sandbox the code grader uses unless given one (closed at exit)."""
    global _default_sandbox
    with _default_lock:
        if _default_sandbox is None:
            from toolrl.sandbox import Sandbox

            _default_sandbox = Sandbox()
        return _default_sandbox


@dataclass
class CodeGrader:
    """Grades the last python block against the sample's tests (module docstring).

    `sandbox` is anything with `async run(code, stdin=, limits=, files=)` returning a
    SandboxFusion-shaped result (`toolrl.sandbox.Sandbox`, `RemoteSandbox`); by default a
    shared local `Sandbox`. `timeout_s` is per test (LiveCodeBench's default, 6 s; whole
    seconds in official execution). `execution` is `isolated` or `official` (module
    docstring); `memory_mb` and `max_output_mb` limit each isolated run, `official_memory_mb`
    each official one.
    """

    sandbox: Any = field(default=None, repr=False)
    execution: str = "isolated"
    timeout_s: float = 6.0
    memory_mb: int = 1024
    max_output_mb: int = 16
    official_memory_mb: int = OFFICIAL_MEMORY_MB
    correct_score: float = 1.0
    wrong_score: float = -1.0
    name: str = "code"

    def __post_init__(self) -> None:
        if self.execution not in EXECUTIONS:
            raise ValueError(
                f"unknown code execution {self.execution!r} (use isolated or official)"
            )

    def grade(self, sample: Sample, response_text: str) -> Grade:
        """Blocking; safe to call inside a running event loop (it then blocks that loop)."""
        return run_sync(self.agrade(sample, response_text))

    async def agrade(self, sample: Sample, response_text: str) -> Grade:
        code = extract_code(response_text)
        if code is None:
            return Grade(self.wrong_score, False, None, {"mode": "code", "reason": "no code"})
        problem = syntax_error(code)
        if problem is not None:
            return Grade(self.wrong_score, False, code, {"mode": "code", "reason": problem})
        spec = parse_tests(sample.ground_truth)
        execution = "isolated" if spec.kind == "assert" else self.execution
        if spec.kind == "assert":
            results = await self._run_asserts(code, spec)
        elif execution == "official":
            results = await run_official(
                self._sandbox(), code, sample.ground_truth, self.timeout_s, self.official_memory_mb
            )
        else:
            runs = [self._run_one(code, spec, i) for i in range(len(spec.inputs))]
            results = list(await asyncio.gather(*runs))
        passed = sum(r["passed"] for r in results)
        total = len(results)
        details: dict[str, Any] = {
            "mode": "code",
            "execution": execution,
            "tests": spec.kind,
            "passed": passed,
            "total": total,
            "statuses": [r["status"] for r in results],
        }
        errors = [r["stderr"] for r in results if r.get("stderr")]
        if errors:
            details["first_error"] = errors[0]
        if any(r["status"] == "sandbox_error" for r in results):
            details["infra_error"] = True
        score = passed / total if total else 0.0
        return Grade(score, total > 0 and passed == total, code, details)

    def _limits(self, timeout_s: float) -> Any:
        from toolrl.sandbox import Limits

        return Limits(
            timeout_s=timeout_s,
            memory_mb=self.memory_mb,
            max_output_bytes=self.max_output_mb << 20,
        )

    def _sandbox(self) -> Any:
        return self.sandbox if self.sandbox is not None else default_sandbox()

    async def _run_one(self, code: str, spec: TestSpec, i: int) -> dict[str, Any]:
        """One stdin/stdout or functional test; the comparison happens here."""
        limits = self._limits(self.timeout_s)
        if spec.kind == "stdio":
            program, stdin, files = IMPORT_HEADER + code, spec.inputs[i], {}
        else:
            try:
                args = code_harness.dumps(functional_args(spec.inputs[i]))
            except (ValueError, TypeError) as err:
                raise ValueError(f"functional test {i}: inputs are not JSON lines ({err})") from err
            program = HARNESS_SOURCE + f"\nmain_functional({spec.fn_name!r})\n"
            stdin = ""
            files = {"solution.py": (IMPORT_HEADER + code).encode(), "args.json": args.encode()}
        result = await self._sandbox().run(program, stdin=stdin, limits=limits, files=files)
        status = _run_status(result)
        if status != "finished":
            return {"passed": False, "status": status, "stderr": result.stderr[-_STDERR_CHARS:]}
        if spec.kind == "stdio":
            ok = stdout_matches(result.stdout, spec.outputs[i])
            return {"passed": ok, "status": "pass" if ok else "wrong_answer"}
        returned = _decode_result(result.stdout)
        if returned is _NO_RESULT:
            return {"passed": False, "status": "bad_output"}
        ok = result_matches(returned, functional_expected(spec.outputs[i]))
        return {"passed": ok, "status": "pass" if ok else "wrong_answer"}

    async def _run_asserts(self, code: str, spec: TestSpec) -> list[dict[str, Any]]:
        """All assert units in one run: a tester and a candidate process (code_harness.py)."""
        preamble, units = assert_units(spec)
        nonce = secrets.token_hex(16)
        stdin = json.dumps(
            {"nonce": nonce, "setup_code": spec.setup_code, "preamble": preamble, "units": units}
        )
        program = HARNESS_SOURCE + f"\nmain_asserts({spec.entry_point!r})\n"
        solution = f"{IMPORT_HEADER}{spec.setup_code}\n{code}\n"
        result = await self._sandbox().run(
            program,
            stdin=stdin,
            limits=self._limits(self.timeout_s * len(units)),
            files={"solution.py": solution.encode()},
        )
        status = _run_status(result)
        lines = set(result.stdout.splitlines())
        failed = status if status in ("sandbox_error", "timeout") else "failed"
        out = []
        for i in range(len(units)):
            ok = f"{nonce} pass {i}" in lines
            out.append({"passed": ok, "status": "pass" if ok else failed})
        if not all(r["passed"] for r in out):
            out[0]["stderr"] = result.stderr[-_STDERR_CHARS:]
        return out


_NO_RESULT = object()
_STDERR_CHARS = 500


def _run_status(result: Any) -> str:
    """`finished` (exit status 0), `timeout`, `runtime_error` or `sandbox_error`."""
    if result.status == "SandboxError":
        return "sandbox_error"
    run = result.run_result
    if run is None:
        return "sandbox_error"
    if run.status == "TimeLimitExceeded":
        return "timeout"
    return "finished" if run.return_code == 0 else "runtime_error"


def _decode_result(stdout: str) -> Any:
    for line in reversed(stdout.splitlines()):
        if line.startswith(code_harness.RESULT_PREFIX):
            try:
                return code_harness.loads(line[len(code_harness.RESULT_PREFIX) :])
            except (ValueError, TypeError, RecursionError):
                return _NO_RESULT
    return _NO_RESULT
