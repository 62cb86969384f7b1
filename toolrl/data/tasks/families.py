"""The task families of the synthetic suite: each makes a question with an exact answer, the
program that solves it with the tool, and a text-only solution (for the stitched baseline).

Questions are short on purpose: the embedded tokenizer is byte-level, so every character is a
token the tiny model reads on every rollout. Each family's `pattern` recovers the numbers from
the question, which is all the scripted teacher (`teacher.py`) needs to solve it.

Difficulty levels 1-3 add factors, exponent digits and steps. Operands have three digits, one
token each in the tiny tokenizer, and within a family and level every answer has the same
number of 3-digit groups: every copy the model makes (question → code, tool output → answer)
is then at a fixed distance in tokens, which a small model's attention learns far sooner than
finding its place by content. (Measured: with numbers of varying length, a 0.8M model had not
started copying after 500 SFT steps.)
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

LEVELS = (1, 2, 3)
LETTERS = "ABCD"


@dataclass(frozen=True)
class Task:
    """One generated problem: what the model sees, the exact ground truth, how to solve it."""

    kind: str
    """`math`, `choice` or `code`: which of the paper's three reward paths grades it."""
    family: str
    level: int
    question: str
    ground_truth: Any
    """Math: the number as a string; choice: the letter; code: stdin/stdout tests."""
    program: str
    """The Python that computes the answer (math, choice) or the finished program (code)."""
    solution: str
    """A text-only worked solution (no tool), the input of `toolrl data stitch`."""
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Family:
    """A kind of question: `make(rng, level) -> Task`; `solve(question)` reads one back into
    the program that answers it (None when the question is not of this family)."""

    name: str
    kind: str
    make: Callable[[random.Random, int], Task]
    solve: Callable[[str], str | None]


def _math_task(family: str, level: int, question: str, expression: str) -> Task:
    value = str(eval(expression))
    solution = f"{expression} = {value}\n\\boxed{{{value}}}"
    return Task("math", family, level, question, value, f"print({expression})", solution)


# ----------------------------------------------------------------------------------------------
# Math: exact arithmetic on large numbers, modular arithmetic, multi-step word problems


def _operand(rng: random.Random) -> int:
    return rng.randint(100, 999)


def _groups(value: int) -> int:
    """Tokens of a number in the tiny tokenizer (3-digit groups)."""
    return -(-len(str(value)) // 3)


def _factors(rng: random.Random, count: int) -> list[int]:
    """`count` 3-digit factors whose product has the most 3-digit groups it can have, so
    every problem of a level has the same length in tokens (see the module docstring)."""
    while True:
        factors = [_operand(rng) for _ in range(count)]
        if _groups(math.prod(factors)) == count:
            return factors


def make_product(rng: random.Random, level: int) -> Task:
    expression = "*".join(map(str, _factors(rng, level + 1)))
    return _math_task("product", level, f"Compute {expression}.", expression)


def make_power_mod(rng: random.Random, level: int) -> Task:
    a, e, m = _operand(rng), rng.randint(10, 99 if level == 1 else 999), _operand(rng)
    if level == 3:
        a = rng.randint(10**5, 10**6 - 1)
    return _math_task("power_mod", level, f"Compute {a}^{e} mod {m}.", f"pow({a},{e},{m})")


def make_word(rng: random.Random, level: int) -> Task:
    while True:
        n, a, c = rng.randint(2, 9), _operand(rng), _operand(rng)
        left = n * a - c
        if level < 3 and _groups(left) == 2 and (level == 2 or left < 3000):
            question = f"{n} crates of {a} eggs; {c} break. How many are left?"
            return _math_task("word", level, question, f"{n}*{a}-{c}")
        d = rng.randint(11, 99)
        if level == 3 and 100 <= left // d <= 999:
            question = f"{n} crates of {a} eggs; {c} break; the rest fill boxes of {d}. Full boxes?"
            return _math_task("word", level, question, f"({n}*{a}-{c})//{d}")


# ----------------------------------------------------------------------------------------------
# Multiple choice: which option is the product (distractors differ in one digit)


def make_choice(rng: random.Random, level: int) -> Task:
    factors = _factors(rng, 2 if level < 3 else 3)
    expression = "*".join(map(str, factors))
    value = math.prod(factors)
    options = {value}
    while len(options) < len(LETTERS):
        text = list(str(value))
        i = rng.randrange(len(text)) if level > 1 else len(text) - rng.randint(1, 3)
        text[i] = str((int(text[i]) + rng.randint(1, 9)) % 10)
        if text[0] != "0":
            options.add(int("".join(text)))
    ordered = sorted(options, key=lambda _: rng.random())
    letter = LETTERS[ordered.index(value)]
    listed = " ".join(f"{L}){v}" for L, v in zip(LETTERS, ordered, strict=True))
    solution = f"{expression} = {value}\n\\boxed{{{letter}}}"
    question = f"Which is {expression}? {listed}"
    return Task("choice", "choice", level, question, letter, f"print({expression})", solution)


# ----------------------------------------------------------------------------------------------
# Code: a small stdin/stdout program, graded on hidden tests

# Expressions of the program families, by level; `c` is a constant drawn per problem.
EXPRESSIONS = {
    1: ["a*b+{c}", "(a+b)*{c}", "a*{c}-b"],
    2: ["(a*b)%{c}", "a*a+b*{c}", "(a+{c})*(b+{c})"],
    3: ["(a*b+{c})%97", "a**3-b*{c}", "(a*{c}+b)%(b+{c})"],
}


def make_program(rng: random.Random, level: int) -> Task:
    expression = rng.choice(EXPRESSIONS[level]).format(c=rng.randint(2, 99))
    program = f"a,b=map(int,input().split())\nprint({expression})"
    inputs = [(rng.randint(1, 999), rng.randint(1, 999)) for _ in range(3)]
    outputs = [str(eval(expression, {}, {"a": a, "b": b})) for a, b in inputs]
    tests = {"inputs": [f"{a} {b}\n" for a, b in inputs], "outputs": [f"{o}\n" for o in outputs]}
    question = f"Read a b; print {expression}."
    a, b = inputs[0]
    solution = f"With a={a}, b={b}: {expression.replace('a', str(a)).replace('b', str(b))} = {outputs[0]}\n```python\n{program}\n```"  # fmt: skip
    return Task("code", "program", level, question, json.dumps(tests), program, solution)


# ----------------------------------------------------------------------------------------------
# Reading a question back: the program that solves it (what the scripted teacher runs)


def solve_product(question: str) -> str | None:
    found = re.fullmatch(r"Compute (\d+(?:\*\d+)+)\.", question)
    return f"print({found[1]})" if found else None


def solve_power_mod(question: str) -> str | None:
    found = re.fullmatch(r"Compute (\d+)\^(\d+) mod (\d+)\.", question)
    return f"print(pow({found[1]},{found[2]},{found[3]}))" if found else None


def solve_word(question: str) -> str | None:
    found = re.match(r"(\d+) crates of (\d+) eggs; (\d+) break", question)
    if not found:
        return None
    left = f"{found[1]}*{found[2]}-{found[3]}"
    boxes = re.search(r"boxes of (\d+)\.", question)
    return f"print(({left})//{boxes[1]})" if boxes else f"print({left})"


def solve_choice(question: str) -> str | None:
    found = re.match(r"Which is (\d+(?:\*\d+)+)\? ", question)
    return f"print({found[1]})" if found else None


def solve_program(question: str) -> str | None:
    found = re.fullmatch(r"Read a b; print (.+)\.", question)
    return f"a,b=map(int,input().split())\nprint({found[1]})" if found else None


FAMILIES = {
    f.name: f
    for f in (
        Family("product", "math", make_product, solve_product),
        Family("power_mod", "math", make_power_mod, solve_power_mod),
        Family("word", "math", make_word, solve_word),
        Family("choice", "choice", make_choice, solve_choice),
        Family("program", "code", make_program, solve_program),
    )
}
KINDS = {"math": ("product", "power_mod", "word"), "choice": ("choice",), "code": ("program",)}


def solve(question: str) -> tuple[Family, str] | None:
    """The family of a question and the program that solves it (None: not one of ours)."""
    for family in FAMILIES.values():
        program = family.solve(question)
        if program is not None:
            return family, program
    return None
