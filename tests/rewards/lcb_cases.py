"""Programs on which toolrl's two code-execution modes are compared with LiveCodeBench's grader.

Each case holds a program, its tests in LiveCodeBench's `input_output` form (`inputs`,
`outputs` and, for LeetCode-style problems, `fn_name`), and two verdicts written by hand: what
LiveCodeBench's grader says (`official`: every test passes) and what toolrl's isolated mode
says (`isolated`). Where they differ, `why` names the difference (README, "LiveCodeBench
grading"). `tests/rewards/test_code_official.py` checks both modes against these verdicts and,
where LiveCodeBench's grader (`nvidia-livecodebench`, module `livecodebench`) is installed,
against the grader itself.

    python tests/rewards/lcb_cases.py      # agreement counts: official, isolated vs LiveCodeBench
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from typing import Any

TIMEOUT_S = 6
"""Per-test time limit for both graders here: LiveCodeBench's default (a shorter one lets the
slow page faults of allocating the memory case time out on a small machine)."""


@dataclass(frozen=True)
class Case:
    name: str
    code: str
    tests: dict[str, Any]
    official: bool
    """LiveCodeBench's verdict: every test passes."""
    isolated: bool
    """toolrl's isolated verdict."""
    why: str = ""
    """Where the two differ: the execution difference that decides it."""


def stdio(inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs}


def call(fn_name: str, inputs: list[str], outputs: list[str]) -> dict[str, Any]:
    return {"inputs": inputs, "outputs": outputs, "fn_name": fn_name}


DOUBLE = stdio(["21\n"], ["42\n"])

AGREE = [
    Case("plain", "print(int(input()) * 2)", DOUBLE, True, True),
    Case("wrong_answer", "print(int(input()) * 3)", DOUBLE, False, False),
    Case("runtime_error", "print(1 // 0)", DOUBLE, False, False),
    Case("timeout", "while True:\n    pass", DOUBLE, False, False),
    Case(
        "whitespace_and_blank_lines",
        'print("1 2   ")\nprint("3")\nprint()\nprint()',
        stdio([""], ["1 2\n3\n"]),
        True,
        True,
    ),
    Case(
        "crlf_in_output", 'sys.stdout.write("1\\r\\n2\\r\\n")', stdio([""], ["1\n2\n"]), True, True
    ),
    Case("decimal_numbers", 'print("1e3 0.50")', stdio([""], ["1000 0.5\n"]), True, True),
    Case(
        "sys_stdin_lines",
        "for line in sys.stdin:\n    print(int(line) * 2)",
        stdio(["1\n2\n"], ["2\n4\n"]),
        True,
        True,
    ),
    Case(
        "readline_alias",
        "input = sys.stdin.readline\nprint(int(input()) * 2)",
        DOUBLE,
        True,
        True,
    ),
    # The import is hoisted out of the wrapper and binds the stdin in place before the tests,
    # but LiveCodeBench patches `readline`, `read` and `readlines` on exactly that object.
    Case(
        "from_sys_import_stdin",
        "from sys import stdin\nprint(int(stdin.readline()) * 2)",
        DOUBLE,
        True,
        True,
    ),
    # `builtins.open` is mocked while a test runs: only the module's own `open` is the real one.
    Case(
        "builtins_open_fd_0",
        "import builtins\nprint(int(builtins.open(0).read()) * 2)",
        DOUBLE,
        True,
        True,
    ),
    Case(
        "alarm_swallowed",
        "import time\nwhile True:\n    try:\n        time.sleep(10)\n    except Exception:\n        pass",
        DOUBLE,
        False,
        False,
    ),
    Case("sys_exit_zero", "print(int(input()) * 2)\nsys.exit(0)", DOUBLE, True, True),
    Case("exit_builtin", "print(int(input()) * 2)\nexit()", DOUBLE, True, True),
    Case(
        "main_guard_last",
        "def main():\n    print(int(input()) * 2)\n\nif __name__ == '__main__':\n    main()",
        DOUBLE,
        True,
        True,
    ),
    Case(
        "thread_joined",
        "import threading\nn = int(input())\nt = threading.Thread(target=lambda: print(n * 2))\n"
        "t.start()\nt.join()",
        DOUBLE,
        True,
        True,
    ),
    Case(
        "call_tuple_for_list",
        "class Solution:\n    def pair(self, a: int) -> List[int]:\n        return (a, a + 1)",
        call("pair", ["1"], ["[1, 2]"]),
        True,
        True,
    ),
    Case(
        "call_wrong",
        "class Solution:\n    def inc(self, a):\n        return a + 2",
        call("inc", ["1"], ["2"]),
        False,
        False,
    ),
    Case(
        "call_solution_two_tests",
        "class Solution:\n    def add(self, a, b):\n        print('debug')\n        return a + b",
        call("add", ["1\n2", "3\n4"], ["3", "7"]),
        True,
        True,
    ),
    Case(
        "call_plain_function",
        "def add(a, b):\n    return a + b",
        call("add", ["1\n2"], ["3"]),
        True,
        True,
    ),
]

OFFICIAL_FAILS = [
    Case(
        "stdin_buffer",
        "data = sys.stdin.buffer.read().split()\nprint(int(data[0]) * 2)",
        DOUBLE,
        False,
        True,
        "stdin is a StringIO there: it has no `buffer`",
    ),
    Case(
        "open_fd_0",
        "data = open(0).read().split()\nprint(int(data[0]) * 2)",
        DOUBLE,
        False,
        True,
        "file descriptor 0 is /dev/null there; only `sys.stdin` holds the input",
    ),
    Case(
        "stdin_alias_read_to_end",
        "from sys import stdin\nwhile line := stdin.readline():\n    print(int(line) * 2)",
        stdio(["1\n2"], ["2\n4"]),
        False,
        True,
        "the patched `readline` raises StopIteration after the last line instead of returning ''",
    ),
    Case(
        "print_to_real_stdout",
        "print(int(input()) * 2, file=sys.__stdout__)",
        DOUBLE,
        False,
        True,
        "only `sys.stdout` is captured there",
    ),
    Case(
        "os_getcwd",
        "import os\nos.getcwd()\nprint(int(input()) * 2)",
        DOUBLE,
        False,
        True,
        "`os.getcwd`, `os.chdir`, file removal and the like are set to None there",
    ),
    Case(
        "global_statement",
        "total = 0\ndef add(x):\n    global total\n    total += x\n"
        "for v in map(int, input().split()):\n    add(v)\nprint(total)",
        stdio(["1 2 3\n"], ["6\n"]),
        False,
        True,
        "the program becomes a function body: `total` is a local, `global total` finds nothing",
    ),
    Case(
        "main_guard_not_last",
        "def main():\n    print(int(input()) * 2)\n\nif __name__ == '__main__':\n    main()\n"
        "sys.stdout.flush()",
        DOUBLE,
        False,
        True,
        "only a guard that is the last statement is unwrapped; `__name__` is not __main__",
    ),
    Case(
        "thread_not_joined",
        "import threading, time\nn = int(input())\ndef main():\n    time.sleep(0.3)\n"
        "    print(n * 2)\nthreading.Thread(target=main).start()",
        DOUBLE,
        False,
        True,
        "output is captured only until the wrapper returns; the interpreter does not wait",
    ),
    Case(
        "quit_builtin",
        "print(int(input()) * 2)\nquit()",
        DOUBLE,
        False,
        True,
        "`quit` is set to None there (`exit` is kept)",
    ),
    Case(
        "os_exit_after_flush",
        "import os\nprint(int(input()) * 2, flush=True)\nos._exit(0)",
        DOUBLE,
        False,
        True,
        "the program runs in the grader's process, which os._exit ends before any verdict",
    ),
    Case(
        "crlf_in_input",
        "print(len(input()))",
        stdio(["abc\r\n"], ["3\n"]),
        False,
        True,
        "stdin is a StringIO: `\\r` stays in the line (toolrl's stdin translates newlines)",
    ),
    Case(
        "stdio_class_solution",
        "class Solution:\n    def twice(self, n):\n        return 2 * n\n"
        "print(Solution().twice(int(input())))",
        DOUBLE,
        False,
        True,
        "any code containing `class Solution` is treated as LeetCode: `Solution()` is looked up "
        "at module level, where the wrapped program has none",
    ),
    Case(
        "solution_reused",
        "class Solution:\n    def __init__(self):\n        self.seen = []\n"
        "    def total(self, nums):\n        self.seen.extend(nums)\n        return sum(self.seen)",
        call("total", ["[1, 2]", "[3]"], ["3", "3"]),
        False,
        True,
        "one `Solution()` serves every test there; toolrl makes a fresh one per test",
    ),
    Case(
        "class_solution_in_comment",
        "# no class Solution needed: a plain function\ndef add(a, b):\n    return a + b",
        call("add", ["1\n2"], ["3"]),
        False,
        True,
        "the text `class Solution` anywhere, even in a comment, makes it call `Solution()`",
    ),
]

OFFICIAL_PASSES = [
    Case(
        "sys_exit_nonzero",
        "print(int(input()) * 2)\nsys.exit(1)",
        DOUBLE,
        True,
        False,
        "SystemExit is caught and the output compared; toolrl requires exit status 0",
    ),
    Case(
        "sys_exit_message",
        "print(int(input()) * 2)\nsys.exit('done')",
        DOUBLE,
        True,
        False,
        "as sys_exit_nonzero: exit status 1",
    ),
    Case(
        "memory_over_1gb",
        "block = bytearray(1100 << 20)\nprint(len(block) >> 20)",
        stdio([""], ["1100\n"]),
        True,
        False,
        "no memory limit there; toolrl's isolated runs get 1 GiB",
    ),
    Case(
        "output_over_16mib",
        'print("42" + " " * (17 << 20))',
        stdio([""], ["42\n"]),
        True,
        False,
        "output is captured in memory there; toolrl's isolated runs stop at 16 MiB",
    ),
    Case(
        "eq_always_true",
        "class Anything:\n    def __eq__(self, other):\n        return True\n\n"
        "class Solution:\n    def answer(self, n):\n        return Anything()",
        call("answer", ["1"], ["[1, 2, 3]"]),
        True,
        False,
        "the returned object is compared in the process it came from; toolrl only accepts "
        "plain values and compares them itself",
    ),
]

CASES = AGREE + OFFICIAL_FAILS + OFFICIAL_PASSES
BY_NAME = {case.name: case for case in CASES}


def ground_truth(case: Case) -> dict[str, Any]:
    """The case's tests as a toolrl LiveCodeBench sample holds them."""
    return dict(case.tests)


def response(case: Case) -> str:
    return f"```python\n{case.code}\n```"


_LCB_SCRIPT = """
import json, sys
from livecodebench.evaluation.compute_code_generation_metrics import codegen_metrics
cases, timeout = json.load(sys.stdin)
samples = [{"input_output": json.dumps(c["tests"])} for c in cases]
metrics, _, _ = codegen_metrics(
    samples, [[c["code"]] for c in cases], k_list=[1], num_process_evaluate=4, timeout=timeout
)
verdicts = [metrics["detail"]["pass@1"][i] == 1.0 for i in range(len(cases))]
print("@@verdicts " + json.dumps(verdicts))
"""


def livecodebench_verdicts(cases: list[Case], timeout: int = TIMEOUT_S) -> dict[str, bool]:
    """Case name → LiveCodeBench's verdict, from its own `codegen_metrics`, run in a child
    Python (it forks workers and changes interpreter state); needs `livecodebench` installed."""
    payload = json.dumps([[{"code": c.code, "tests": c.tests} for c in cases], timeout])
    done = subprocess.run(
        [sys.executable, "-c", _LCB_SCRIPT],
        input=payload,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    for line in reversed(done.stdout.splitlines()):
        if line.startswith("@@verdicts "):
            verdicts = json.loads(line.removeprefix("@@verdicts "))
            return {c.name: v for c, v in zip(cases, verdicts, strict=True)}
    raise RuntimeError(f"LiveCodeBench's grader gave no verdicts:\n{done.stderr[-2000:]}")


def _main() -> None:
    lcb = livecodebench_verdicts(CASES)
    for case in CASES:
        mark = "" if lcb[case.name] == case.official else "   <- hand verdict differs"
        print(f"{case.name:28} livecodebench {lcb[case.name]!s:5} hand {case.official!s:5}{mark}")


if __name__ == "__main__":
    _main()
