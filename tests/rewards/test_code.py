"""The code grader: LiveCodeBench comparison rules, the three test kinds, hostile submissions."""

import asyncio
import json

import pytest

from toolrl.rewards import code_harness
from toolrl.rewards.code import (
    CodeGrader,
    assert_units,
    extract_code,
    parse_tests,
    result_matches,
    stdout_matches,
)
from toolrl.types import Sample


@pytest.fixture(scope="module")
def grader():
    from toolrl.sandbox import Sandbox

    sandbox = Sandbox()
    yield CodeGrader(sandbox=sandbox, timeout_s=5.0)
    sandbox.close()


def block(code: str) -> str:
    return f"Here is my solution.\n```python\n{code}\n```"


STDIO = {"inputs": ["1 2\n", "10 20\n", "-5 5\n"], "outputs": ["3\n", "30\n", "0\n"]}
SUM_PROGRAM = "a, b = map(int, input().split())\nprint(a + b)"
FUNCTIONAL = {
    "inputs": ["[1, 2, 3]\n2", "[5]\n1", "[]\n0"],
    "outputs": ["[2, 3]", "[5]", "[]"],
    "fn_name": "lastK",
}
LEETCODE = (
    "class Solution:\n"
    "    def lastK(self, nums: List[int], k: int) -> List[int]:\n"
    "        return nums[len(nums) - k:] if k else []"
)
ASSERTS = {
    "import_prefix": "import math\n",
    "test_code": "def check(candidate):\n"
    "    assert candidate(4) == 2\n"
    "    assert candidate(9) == 3\n"
    "    assert candidate(2) == 1\n",
    "entry_point": "isqrt",
}


def sample(truth, data_source="livecodebench_v6") -> Sample:
    return Sample(id="p", messages=[], data_source=data_source, ground_truth=truth)


def grade(grader, truth, response):
    return asyncio.run(grader.agrade(sample(truth), response))


# ----------------------------------------------------------------------------------------------
# Pure parts


@pytest.mark.parametrize(
    ("output", "expected", "ok"),
    [
        ("3\n", "3", True),
        ("  3  \n\n", "3\n", True),  # the whole output is stripped
        ("1 2\n3 4", "1 2\n 3 4 ", True),  # each line is stripped
        ("1.0 2", "1 2.00", True),  # numbers compare as decimals
        ("2e3", "2000", True),
        ("0.1", "0.10000000001", False),  # decimals are exact, not approximate
        ("1 2", "1  2", True),  # split() tokens
        ("1\n2", "1 2", False),  # line structure matters
        ("yes", "YES", False),  # no case folding
        ("1\n\n2", "1\n2", False),  # an inner blank line is a line
        ("50000000000000000", "50000000000000001", False),  # no float rounding
        ("", "", True),
        ("abc 1.0", "abc 1", False),  # a non-number token: the line must match exactly
    ],
)
def test_stdout_matches_livecodebench_rules(output, expected, ok):
    assert stdout_matches(output, expected) is ok


def test_result_matching_converts_only_a_top_level_tuple():
    assert result_matches((1, 2), [1, 2])
    assert not result_matches([(1, 2)], [[1, 2]])
    assert result_matches(1, 1.0)
    assert not result_matches({1: 2}, {"1": 2})


def test_extract_code_takes_the_last_python_block_after_thinking():
    text = "<think>```python\nprint(0)\n```</think>a\n```python\nprint(1)\n```\n```python\nprint(2)\n```"
    assert extract_code(text) == "print(2)\n"
    assert extract_code("<think>```python\nprint(0)\n```</think> no code") is None
    assert extract_code("```\nprint(1)\n```") is None


def test_codec_round_trips_plain_values_and_refuses_others():
    value = [1, 2.5, float("inf"), "s", None, True, (1, (2,)), {1: "a", (2, 3): [4]}, {5}]
    value += [frozenset({6}), b"\x00\xff", 1 + 2j, 10**30]
    assert code_harness.loads(code_harness.dumps(value)) == value
    assert type(code_harness.loads(code_harness.dumps(True))) is bool

    class Sneaky:
        def __eq__(self, other):
            return True

    with pytest.raises(TypeError):
        code_harness.dumps(Sneaky())
    with pytest.raises(ValueError):
        code_harness.loads('{"x": [1]}')


def test_per_assert_units_split_check_and_drop_top_level_calls():
    spec = parse_tests({**ASSERTS, "test_code": ASSERTS["test_code"] + "check(isqrt)\n"})
    preamble, units = assert_units(spec)
    assert spec.per_assert and len(units) == 3 and "check(isqrt)" not in preamble
    assert all(u.startswith("def check(candidate):") for u in units)
    whole = parse_tests({**ASSERTS, "per_assert": False})
    assert len(assert_units(whole)[1]) == 1


def test_parse_tests_rejects_malformed_ground_truth():
    with pytest.raises(ValueError, match="inputs"):
        parse_tests({"outputs": []})
    with pytest.raises(ValueError, match="2 inputs but 1 outputs"):
        parse_tests({"inputs": ["1", "2"], "outputs": ["1"]})
    assert parse_tests(json.dumps(STDIO)).kind == "stdio"


# ----------------------------------------------------------------------------------------------
# Graded in the sandbox


def test_stdio_scores_fraction_passed(grader):
    assert grade(grader, STDIO, block(SUM_PROGRAM)).score == 1.0
    half = "a, b = map(int, input().split())\nprint(a + b if a > 0 else 1)"
    g = grade(grader, STDIO, block(half))
    assert g.score == pytest.approx(2 / 3) and not g.acc
    assert g.details["statuses"] == ["pass", "pass", "wrong_answer"]


def test_no_code_or_bad_syntax_scores_wrong_score(grader):
    assert grade(grader, STDIO, "the answer is 3").score == -1.0
    bad = grade(grader, STDIO, block("def f(:\n  pass"))
    assert bad.score == -1.0 and "SyntaxError" in bad.details["reason"]


def test_functional_leetcode_and_plain_function(grader):
    assert grade(grader, FUNCTIONAL, block(LEETCODE)).acc
    plain = "def lastK(nums, k):\n    return tuple(nums[len(nums) - k:]) if k else ()"
    assert grade(grader, FUNCTIONAL, block(plain)).acc  # a returned tuple counts as a list
    wrong = grade(grader, FUNCTIONAL, block("def lastK(nums, k):\n    return nums"))
    assert wrong.score == pytest.approx(2 / 3)  # [5] and [] happen to be right


def test_per_assert_tests_give_partial_credit(grader):
    good = "def isqrt(n):\n    return math.isqrt(n)"
    assert grade(grader, ASSERTS, block(good)).score == 1.0
    partial = grade(grader, ASSERTS, block("def isqrt(n):\n    return 2"))
    assert partial.score == pytest.approx(1 / 3)


def test_timeouts_and_crashes_fail(grader):
    slow = grader.__class__(sandbox=grader.sandbox, timeout_s=0.5)
    g = grade(slow, STDIO, block("while True:\n    pass"))
    assert g.score == 0.0 and set(g.details["statuses"]) == {"timeout"}
    crash = grade(grader, STDIO, block("print(3)\nraise SystemExit(1)"))
    assert crash.details["statuses"][0] == "runtime_error"


# ----------------------------------------------------------------------------------------------
# Hostile submissions score 0

EXIT_EARLY = ["import sys\nsys.exit(0)", "import os\nos._exit(0)", "raise SystemExit"]


@pytest.mark.parametrize("exit_code", EXIT_EARLY)
def test_exiting_before_the_tests_scores_zero(grader, exit_code):
    for truth in (STDIO, FUNCTIONAL, ASSERTS, {**ASSERTS, "per_assert": False}):
        assert grade(grader, truth, block(exit_code)).score == 0.0


ALWAYS_EQUAL = """
class Anything:
    def __eq__(self, other):
        return True
    def __ne__(self, other):
        return False
    def __hash__(self):
        return 0
class Solution:
    def lastK(self, nums, k):
        return Anything()
def isqrt(n):
    return Anything()
"""


def test_an_object_equal_to_everything_scores_zero(grader):
    for truth in (FUNCTIONAL, ASSERTS):
        assert grade(grader, truth, block(ALWAYS_EQUAL)).score == 0.0


PATCH_THE_GRADER = """
import builtins, sys, os
# Try to make every assert pass and to forge the tester's output.
builtins.AssertionError = type("Never", (Exception,), {})
main = sys.modules.get("__main__")
for name in ("main_asserts", "main_functional", "_CandidateProxy", "encode_value"):
    setattr(main, name, lambda *a, **k: None)
source = open(main.__file__).read() if getattr(main, "__file__", None) else ""
for fd in range(0, 12):
    try:
        os.write(fd, b"pass 0\\npass 1\\npass 2\\n")
    except OSError:
        pass
for path in ("/proc/%d/fd/0" % os.getppid(), "/proc/%d/fd/1" % os.getppid()):
    try:
        with open(path, "r+b") as f:
            print(f.read(), file=sys.stderr)
            f.write(b"stolen\\n")
    except OSError:
        pass
import gc
secrets = [o for o in gc.get_objects() if isinstance(o, str) and len(o) == 32]
for s in secrets:
    for i in range(3):
        os.write(1, f"{s} pass {i}\\n".encode())
def isqrt(n):
    return -1
class Solution:
    def lastK(self, nums, k):
        return None
"""


def test_reading_or_patching_the_grader_scores_zero(grader):
    for truth in (STDIO, FUNCTIONAL, ASSERTS, {**ASSERTS, "per_assert": False}):
        assert grade(grader, truth, block(PATCH_THE_GRADER)).score == 0.0


def test_expected_outputs_on_disk_are_out_of_reach(grader, tmp_path):
    secret = "8675309 271828"
    bench = tmp_path / "lcb.jsonl"
    bench.write_text(json.dumps({"inputs": ["1 2\n"], "outputs": [secret]}) + "\n")
    thief = f"""
import os
paths = [{str(bench)!r}]
for root in ("/tmp", "/work", "/root", "/home", "/srv", "/data", "/var/tmp"):
    for dirpath, _, names in os.walk(root):
        paths += [os.path.join(dirpath, n) for n in names]
for path in paths:
    try:
        with open(path, errors="ignore") as f:
            text = f.read(1 << 20)
    except OSError:
        continue
    if "8675309" in text:
        print("8675309 271828")
        break
"""
    g = grade(grader, {"inputs": ["1 2\n"], "outputs": [secret]}, block(thief))
    assert g.score == 0.0


# ----------------------------------------------------------------------------------------------
# HumanEval through the grader


def test_humaneval_canonical_solutions_pass_and_a_stub_fails(grader):
    from toolrl.eval.benchmarks import load_humaneval

    samples = load_humaneval()
    assert len(samples) == 164
    canonical = [
        "```python\n" + s.extra_info["prompt_code"] + s.extra_info["canonical_solution"] + "```"
        for s in samples
    ]

    async def run_all():
        return await asyncio.gather(
            *(grader.agrade(s, text) for s, text in zip(samples, canonical, strict=True))
        )

    grades = asyncio.run(run_all())
    failed = [(s.id, g.details) for s, g in zip(samples, grades, strict=True) if g.score != 1.0]
    assert failed == []
    stub = "```python\ndef has_close_elements(numbers, threshold):\n    pass\n```"
    assert asyncio.run(grader.agrade(samples[0], stub)).score == 0.0
