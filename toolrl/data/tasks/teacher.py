"""The scripted teacher: solves the suite's tasks by really calling the code interpreter.

    toolrl data collect --teacher scripted:toolrl.data.tasks.teacher:policy --tasks train.jsonl ...

`policy(context) -> next assistant turn` reads the conversation so far (the question, its own
tool calls, and what the sandbox printed) and acts on what it sees:

1. no tool result yet: call the tool with the program that computes the answer (code tasks:
   the expression, tried on a sample input); for about one question in five it first writes a
   broken call (a missing parenthesis, or the program without its input), on purpose.
   Some math questions (`DIRECT_RATE`) it answers at once instead, without the tool
   (`expression = value`, worked out in its head): a model that imitates this learns the
   form of such an answer but cannot do the arithmetic, so after SFT it sometimes guesses
   where it should call the tool. Learning when the tool pays is what agentic RL has to do
   (the paper's tool-use gains);
2. the last result is an error: call again with the corrected program (a real recovery: it
   reacts to the traceback the sandbox returned);
3. otherwise: answer from what the tool printed, `\\boxed{value}` (math), `\\boxed{letter}` of
   the option equal to it (choice), or the program in a ```python block (code).

After a tool call the answer is always read from the real observation, never from the ground
truth, so such a trajectory is correct only if the sandbox really ran; collection grades and
filters them.
"""

from __future__ import annotations

import ast
import hashlib
import operator
import re

from toolrl.chat import code_interpreter_call
from toolrl.data.tasks.families import LETTERS, solve

_USER = re.compile(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", re.DOTALL)
_RESULT = re.compile(r"<tool_response>\n(.*?)\n</tool_response>", re.DOTALL)
MISTAKE_RATE = 0.2
DIRECT_RATE = 0.4


def policy(context: str) -> str:
    """The teacher's next turn for the conversation `context` (see the module docstring)."""
    return next_turn(context, recheck=False)


def reactive_policy(context: str) -> str:
    """The reactive variant (the paper's third finding): the same solution, but after a good
    result it calls the tool again to re-check it (`print(expr==value)`) before answering."""
    return next_turn(context, recheck=True)


def next_turn(context: str, *, recheck: bool) -> str:
    question = _USER.search(context)
    found = solve(question[1].strip()) if question else None
    if found is None:
        return "I cannot solve this task."
    family, program = found
    results = [r.strip() for r in _RESULT.findall(context)]
    test = _test_program(program) if family.kind == "code" else program
    if not results and family.kind == "math" and _chance(question[1], "direct") < DIRECT_RATE:
        return _direct_answer(family.kind, program, question[1])
    if not results:
        mistake = _chance(question[1], "mistake") < MISTAKE_RATE
        return code_interpreter_call(_mistake(test) if mistake else test)
    last = results[-1]
    if "Error" in last:
        return code_interpreter_call(test) if len(results) < 3 else "I could not run the program."
    checked = last in ("True", "False")
    if recheck and family.kind != "code" and not checked:
        return code_interpreter_call(f"print({program[len('print(') : -1]}=={last})")
    value = results[-2] if checked else last
    if family.kind == "code":
        return f"```python\n{program}\n```"
    return _boxed(family.kind, value, question[1])


def _boxed(kind: str, value: str, question: str) -> str:
    """The final answer: the value (math) or the letter of the option equal to it (choice)."""
    if kind == "choice":
        options = dict(re.findall(r"([A-D])\)(\d+)", question))
        letter = next((L for L in LETTERS if options.get(L) == value), "A")
        return f"\\boxed{{{letter}}}"
    return f"\\boxed{{{value}}}"


def _direct_answer(kind: str, program: str, question: str) -> str:
    """An answer without the tool, as a text-only solution writes it: `expr = value`."""
    expression = program[len("print(") : -1]
    value = str(_arithmetic(ast.parse(expression, mode="eval").body))
    return f"{expression} = {value}\n{_boxed(kind, value, question)}"


_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
              ast.FloorDiv: operator.floordiv, ast.Mod: operator.mod}  # fmt: skip


def _arithmetic(node: ast.expr) -> int:
    """The value of the integer expressions the suite's math and choice programs print
    (`+ - * // %` and `pow(a, e, m)` on literals): the teacher's mental arithmetic, which
    never runs code."""
    if isinstance(node, ast.Constant) and type(node.value) is int:
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
        return _OPERATORS[type(node.op)](_arithmetic(node.left), _arithmetic(node.right))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "pow":
        base, exponent, modulus = (_arithmetic(arg) for arg in node.args)
        return pow(base, exponent, modulus)
    raise ValueError(f"not an expression of the task suite: {ast.dump(node)}")


def _test_program(program: str) -> str:
    """The code task's program with a fixed input in place of reading stdin."""
    return program.replace("map(int,input().split())", "7,5")


def _chance(question: str, what: str) -> float:
    """A number in [0, 1) fixed by the question: the teacher's choices are deterministic."""
    digest = hashlib.sha1(f"{what}:{question}".encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2**32


def _mistake(program: str) -> str:
    """A typical slip: the input line left out (NameError), or a missing parenthesis."""
    if program.startswith("a,b=7,5\n"):
        return program.split("\n", 1)[1]
    return program[:-1]
