"""The programs the code grader runs *inside the sandbox*, and the value codec both sides share.

This file is sent as the sandbox's `main.py` (with one call appended), so it uses only the
standard library. Nothing it prints is trusted: the grader outside the sandbox decides.

**Functional tests** (`main_functional`): run the candidate's code as a module, call the
function (a method of `Solution()` when the code defines `class Solution`) on the arguments in
`args.json`, and write the return value, encoded, on the real stdout; the candidate's own
prints go to stderr. The expected value never enters the sandbox: the grader compares.

**Assert tests** (`main_asserts`): the tests' asserts need the expected values, so they do
enter the sandbox, but never the candidate's process. This process (the *tester*) makes
itself non-dumpable (no other process of the same user may read its memory or open its file
descriptors through /proc), forks the *candidate* process, which closes stdin and stdout and
then runs the candidate's code, and only then reads the test code and a per-run random nonce
from stdin. The tester runs the test's `check(candidate)` with a proxy that forwards each call
to the candidate process over a pipe and gets back plain encoded values, so the asserts compare
plain data in a process the candidate's code never ran in: an object whose `__eq__` always
returns True cannot cross, `sys.exit` or `os._exit` only kills the candidate process (its next
call fails), and patching modules patches only the candidate's own process. For each test unit
that passes, the tester prints `<nonce> pass <i>`; the grader counts only those exact lines.

The codec is tagged JSON: null, booleans, numbers (ints stay ints, floats stay floats,
including nan and inf) and strings as themselves; lists as JSON arrays; `{"t": [...]}` tuples,
`{"d": [[k, v], ...]}` dicts (any hashable key type), `{"s": [...]}` sets, `{"f": [...]}`
frozensets, `{"b": "hex"}` bytes, `{"c": [re, im]}` complex numbers. Decoding only ever
builds these built-in types.
"""

from __future__ import annotations

import json
import os
import sys

RESULT_PREFIX = "@@toolrl-result "
_MAX_DEPTH = 200


# ----------------------------------------------------------------------------------------------
# The codec


def encode_value(value, depth: int = 0):
    """A JSON-ready form of a plain Python value; raises TypeError for anything else."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if value is None:
        return None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        return float(value)
    if isinstance(value, list):
        return [encode_value(v, depth + 1) for v in value]
    if isinstance(value, tuple):
        return {"t": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, dict):
        return {"d": [[encode_value(k, depth + 1), encode_value(v, depth + 1)] for k, v in value.items()]}  # fmt: skip
    if isinstance(value, frozenset):
        return {"f": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, set):
        return {"s": [encode_value(v, depth + 1) for v in value]}
    if isinstance(value, bytes | bytearray):
        return {"b": bytes(value).hex()}
    if isinstance(value, complex):
        return {"c": [value.real, value.imag]}
    if type(value).__module__ == "numpy" and getattr(value, "shape", None) == ():
        return encode_value(value.item(), depth + 1)  # numpy scalars count as Python numbers
    raise TypeError(f"cannot return a value of type {type(value).__name__} from a test")


def decode_value(data, depth: int = 0):
    """The Python value `encode_value` encoded; raises ValueError on anything malformed."""
    if depth > _MAX_DEPTH:
        raise ValueError("value nested too deeply")
    if data is None or type(data) in (bool, int, float, str):
        return data
    if type(data) is list:
        return [decode_value(v, depth + 1) for v in data]
    if type(data) is dict and len(data) == 1:
        [(tag, body)] = data.items()
        if tag == "b" and type(body) is str:
            return bytes.fromhex(body)
        if type(body) is not list:
            raise ValueError(f"malformed tagged value {tag!r}")
        if tag == "c" and len(body) == 2:
            return complex(float(body[0]), float(body[1]))
        items = [decode_value(v, depth + 1) for v in body]
        if tag == "t":
            return tuple(items)
        if tag == "s":
            return set(items)
        if tag == "f":
            return frozenset(items)
        if tag == "d" and all(type(kv) is list and len(kv) == 2 for kv in items):
            return {k: v for k, v in items}
    raise ValueError("malformed encoded value")


def dumps(value) -> str:
    return json.dumps(encode_value(value), allow_nan=True)


def loads(text: str):
    return decode_value(json.loads(text))


# ----------------------------------------------------------------------------------------------
# Functional tests: one call per run


def _load_candidate(path: str, name: str, namespace_name: str = "solution"):
    """Execute the candidate file as a module; return the callable `name` and the namespace."""
    with open(path, encoding="utf-8") as f:
        source = f.read()
    namespace = {"__name__": namespace_name, "__builtins__": __builtins__}
    exec(compile(source, "solution.py", "exec"), namespace)
    if "class Solution" in source and "Solution" in namespace:
        return getattr(namespace["Solution"](), name), namespace
    return namespace[name], namespace


def main_functional(fn_name: str) -> None:
    """Call `fn_name` on the arguments in args.json; write the encoded result on stdout."""
    result_fd = os.dup(1)
    os.dup2(2, 1)  # the candidate's prints must not look like results
    with open("args.json", encoding="utf-8") as f:
        args = loads(f.read())
    fn, _ = _load_candidate("solution.py", fn_name)
    value = fn(*args)
    os.write(result_fd, (RESULT_PREFIX + dumps(value) + "\n").encode())


# ----------------------------------------------------------------------------------------------
# Assert tests: tester and candidate in two processes


def _make_non_dumpable() -> None:
    import ctypes

    pr_set_dumpable = 4
    if ctypes.CDLL(None, use_errno=True).prctl(pr_set_dumpable, 0, 0, 0, 0) != 0:
        raise OSError("prctl(PR_SET_DUMPABLE, 0) failed: refusing to run the tests")


def _serve_candidate(requests: int, replies: int, entry_point: str) -> None:
    """The candidate process: no stdin, no stdout; answer calls until the pipe closes."""
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    reader = os.fdopen(requests, "r", encoding="utf-8")
    writer = os.fdopen(replies, "w", encoding="utf-8")
    try:
        fn, _ = _load_candidate("solution.py", entry_point, "__main__")
        load_error = None
    except BaseException as err:
        fn, load_error = None, f"{type(err).__name__}: {err}"
    for line in reader:
        if fn is None:
            reply = {"raise": "RuntimeError", "message": f"the solution failed to load: {load_error}"}  # fmt: skip
        else:
            try:
                args, kwargs = loads(line)
                reply = {"ok": encode_value(fn(*args, **kwargs))}
            except BaseException as err:
                reply = {"raise": type(err).__name__, "message": str(err)[:300]}
        writer.write(json.dumps(reply) + "\n")
        writer.flush()


class _CandidateProxy:
    """Stands for the candidate function in the tester: each call is a round trip."""

    def __init__(self, requests: int, replies: int):
        self._writer = os.fdopen(requests, "w", encoding="utf-8")
        self._reader = os.fdopen(replies, "r", encoding="utf-8")

    def __call__(self, *args, **kwargs):
        self._writer.write(dumps([list(args), kwargs]) + "\n")
        self._writer.flush()
        line = self._reader.readline()
        if not line:
            raise RuntimeError("the candidate process exited")
        reply = json.loads(line)
        if "ok" in reply:
            return decode_value(reply["ok"])
        error = __builtins__ if isinstance(__builtins__, dict) else vars(__builtins__)
        kind = error.get(str(reply.get("raise")))
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            kind = RuntimeError
        raise kind(str(reply.get("message", "")))


def main_asserts(entry_point: str) -> None:
    """Run the test units read from stdin against the candidate (see the module docstring)."""
    _make_non_dumpable()
    sys.stdout.flush()
    sys.stderr.flush()
    to_candidate_r, to_candidate_w = os.pipe()
    to_tester_r, to_tester_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(to_candidate_w)
        os.close(to_tester_r)
        try:
            _serve_candidate(to_candidate_r, to_tester_w, entry_point)
        finally:
            os._exit(0)
    os.close(to_candidate_r)
    os.close(to_tester_w)
    spec = json.loads(sys.stdin.read())
    proxy = _CandidateProxy(to_candidate_w, to_tester_r)
    namespace = {"__name__": "__main__", "__builtins__": __builtins__}
    exec(compile(spec["setup_code"], "setup.py", "exec"), namespace)
    namespace[entry_point] = proxy  # tests may name the function instead of `candidate`
    exec(compile(spec["preamble"], "tests.py", "exec"), namespace)
    for i, unit in enumerate(spec["units"]):
        try:
            exec(compile(unit, f"test_{i}.py", "exec"), namespace)
            namespace["check"](proxy)
        except BaseException as err:
            print(f"test {i} failed: {type(err).__name__}: {str(err)[:300]}", file=sys.stderr)
            continue
        print(f"{spec['nonce']} pass {i}", flush=True)
    os.kill(pid, 9)
