"""math-verify under a hard time limit, callable from any thread.

math-verify's own timeouts use `signal.alarm`, which only works on the main thread (elsewhere
`parse`/`verify` raise) and cannot interrupt a long computation inside C code (a sympy
`Integer` power, a huge `Pow` evaluated numerically). So the parse-and-verify runs in worker
processes that this module starts with `python -m toolrl.rewards.verifier`: inside a worker it
runs on the main thread, with math-verify's default per-operation timeouts, and the caller
waits for the answer at most `timeout_s` seconds of wall clock. A worker that overruns is
killed (a replacement starts on the next call) and the pair counts as not equivalent.

Workers are also limited in address space (`memory_mb`), so a pathological expression fails
instead of exhausting the machine. Each worker costs one Python process with sympy and
math-verify imported (~150 MB, ~1 s to start); they start lazily, up to `workers`.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import queue
import select
import subprocess
import sys
import threading
import time
from dataclasses import dataclass


@dataclass
class Verdict:
    """math-verify's decision on one (gold, pred) pair."""

    equal: bool
    status: str
    """`ok`, `timeout` (the worker was killed) or `error` (the worker failed; message in error)."""
    gold_parsed: str = ""
    pred_parsed: str = ""
    error: str = ""


class _Worker:
    def __init__(self, memory_mb: int):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "toolrl.rewards.verifier", str(memory_mb)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._buffer = b""

    def ask(self, gold: str, pred: str, deadline: float) -> dict:
        """Send one request and wait for its answer line; raises TimeoutError or OSError."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"gold": gold, "pred": pred}).encode() + b"\n")
        self.proc.stdin.flush()
        fd = self.proc.stdout.fileno()
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                raise OSError(f"math-verify worker exited with status {self.proc.wait()}")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        return json.loads(line)

    def kill(self) -> None:
        with contextlib.suppress(OSError):
            self.proc.kill()
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)
        for stream in (self.proc.stdin, self.proc.stdout):
            with contextlib.suppress(Exception):
                stream.close()  # type: ignore[union-attr]


class MathVerifier:
    """A small pool of math-verify worker processes (see the module docstring)."""

    def __init__(self, workers: int = 2, timeout_s: float = 20.0, memory_mb: int = 2048):
        self.workers = workers
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self._idle: queue.LifoQueue[_Worker] = queue.LifoQueue()
        self._lock = threading.Lock()
        self._started = 0
        self._all: set[_Worker] = set()

    def equivalent(self, gold: str, pred: str, timeout_s: float | None = None) -> Verdict:
        """`verify(parse(gold), parse(pred))` with math-verify's defaults, under the time limit
        (`timeout_s`, default the verifier's; it includes a fresh worker's start-up)."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        worker = self._acquire()
        try:
            answer = worker.ask(gold, pred, time.monotonic() + limit)
        except TimeoutError:
            self._discard(worker)
            return Verdict(False, "timeout", error=f"math-verify took over {limit}s")
        except (OSError, ValueError) as err:
            self._discard(worker)
            return Verdict(False, "error", error=str(err))
        self._idle.put(worker)
        return Verdict(
            bool(answer.get("equal")),
            "error" if answer.get("error") else "ok",
            answer.get("gold", ""),
            answer.get("pred", ""),
            answer.get("error", ""),
        )

    def _acquire(self) -> _Worker:
        with self._lock:
            try:
                return self._idle.get_nowait()
            except queue.Empty:
                if self._started < self.workers:
                    self._started += 1
                    worker = _Worker(self.memory_mb)
                    self._all.add(worker)
                    return worker
        return self._idle.get()

    def _discard(self, worker: _Worker) -> None:
        worker.kill()
        with self._lock:
            self._started -= 1
            self._all.discard(worker)
            # A caller may be blocked waiting for an idle worker: give it a fresh one.
            if self._started < self.workers and self._idle.empty():
                self._started += 1
                fresh = _Worker(self.memory_mb)
                self._all.add(fresh)
                self._idle.put(fresh)

    def close(self) -> None:
        """Stop every worker."""
        with self._lock:
            workers, self._all, self._started = list(self._all), set(), 0
        for worker in workers:
            worker.kill()
        while not self._idle.empty():
            self._idle.get_nowait()


_default: MathVerifier | None = None
_default_lock = threading.Lock()


def default_verifier() -> MathVerifier:
    """The process-wide verifier (two workers, 20 s per pair), closed at interpreter exit."""
    global _default
    with _default_lock:
        if _default is None:
            _default = MathVerifier()
            atexit.register(_default.close)
        return _default


# ----------------------------------------------------------------------------------------------
# The worker side: `python -m toolrl.rewards.verifier MEMORY_MB`


def _serve(memory_mb: int) -> None:
    import logging
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (memory_mb << 20, memory_mb << 20))
    logging.disable(logging.CRITICAL)
    out = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # anything math-verify prints must not corrupt the protocol
    from math_verify import parse, verify

    for line in sys.stdin:
        request = json.loads(line)
        answer: dict = {"equal": False}
        try:
            gold, pred = parse(request["gold"]), parse(request["pred"])
            answer = {"equal": bool(verify(gold, pred)), "gold": _show(gold), "pred": _show(pred)}
        except Exception as err:  # math-verify failing is a "not equivalent" with a reason
            answer["error"] = f"{type(err).__name__}: {err}"[:500]
        out.write(json.dumps(answer) + "\n")
        out.flush()


def _show(parsed: list) -> str:
    """The parsed answer as math-verify's extracted string form (the last element), short."""
    return str(parsed[-1])[:200] if parsed else ""


if __name__ == "__main__":
    _serve(int(sys.argv[1]) if len(sys.argv) > 1 else 2048)
