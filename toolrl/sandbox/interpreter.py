"""Run the user's source in this (already isolated) process as `python main.py` would.

`__name__` is "__main__" in a fresh module, `sys.argv` is ["<run dir>/main.py"], `input()` reads
the given stdin, stdout is block-buffered UTF-8 and stderr line-buffered, tracebacks show the
user's frames only (with source lines), and interpreter exit is reproduced: SystemExit codes,
non-daemon threads joined, atexit handlers run, streams flushed (status 120 if that fails).
"""

from __future__ import annotations

import contextlib
import io
import linecache
import os
import signal
import sys
import traceback
import types

# The worker's import path, captured before any run, without the script directory and without
# the PYTHONPATH the worker was given only to find toolrl itself.
_BASE_PATH = [p for p in sys.path if p and p != os.environ.get("PYTHONPATH")]


def _fresh_stdio() -> None:
    """New stdin/stdout/stderr objects on fds 0-2, configured like a UTF-8 interpreter's."""
    sys.stdin = io.TextIOWrapper(
        io.BufferedReader(io.FileIO(0, "r", closefd=False)),
        encoding="utf-8",
        errors="surrogateescape",
    )
    sys.stdout = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(1, "w", closefd=False)),
        encoding="utf-8",
        errors="surrogateescape",
    )
    sys.stderr = io.TextIOWrapper(
        io.BufferedWriter(io.FileIO(2, "w", closefd=False)),
        encoding="utf-8",
        errors="backslashreplace",
        line_buffering=True,
    )
    sys.__stdin__, sys.__stdout__, sys.__stderr__ = sys.stdin, sys.stdout, sys.stderr


def _reset_interpreter(path: str, run_dir: str) -> types.ModuleType:
    """Make the forked interpreter look freshly started for `python <path>`."""
    import atexit
    import builtins
    import random
    import tempfile

    _fresh_stdio()
    main = types.ModuleType("__main__")
    main.__dict__.update(__file__=path, __builtins__=builtins, __cached__=None)
    sys.modules["__main__"] = main
    sys.argv = [path]
    sys.path[:] = [run_dir, *_BASE_PATH]
    sys.excepthook, sys.displayhook = sys.__excepthook__, sys.__displayhook__
    tempfile.tempdir = run_dir
    atexit._clear()
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    random.seed()  # forks share the zygote's random state; reseed from the OS
    if "numpy.random" in sys.modules:  # only if preloaded: importing it here costs ~20 ms
        sys.modules["numpy.random"].seed()
    return main


def run_user_code(source: bytes, run_dir: str) -> int:
    """Run `source` as __main__ and return the exit status a Python interpreter would give."""
    path = os.path.join(run_dir, "main.py")
    main = _reset_interpreter(path, run_dir)
    text = source.decode("utf-8", errors="replace")
    linecache.cache[path] = (len(text), None, text.splitlines(True), path)
    try:
        exec(compile(source, path, "exec", dont_inherit=True), main.__dict__)
        status = 0
    except SystemExit as exc:
        status = _exit_status(exc)
    except BaseException as exc:
        status = 130 if isinstance(exc, KeyboardInterrupt) else 1
        _print_exception(exc, path)
    return _shutdown(status)


def rehearse(run_dir: str) -> None:
    """Go through `run_user_code`'s setup once with a constant program (in a spare, output on
    /dev/null), so the pages it writes are copied before a real run is waiting. Interpreter
    exit is not rehearsed: it would mark the threading module as shut down."""
    main = _reset_interpreter(os.path.join(run_dir, "main.py"), run_dir)
    exec(compile(b"print(1)", "<rehearsal>", "exec", dont_inherit=True), main.__dict__)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()


def _exit_status(exc: SystemExit) -> int:
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF
    with contextlib.suppress(Exception):
        print(exc.code, file=sys.stderr)
    return 1


def _print_exception(exc: BaseException, path: str) -> None:
    """The traceback the interpreter would print: frames from our runner are left out."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename != path:
        tb = tb.tb_next
    with contextlib.suppress(BaseException):
        exc = exc.with_traceback(tb)
        if sys.excepthook is sys.__excepthook__:
            # The C hook reads source lines from disk; the code only exists in linecache.
            traceback.print_exception(type(exc), exc, tb)
        else:
            sys.excepthook(type(exc), exc, tb)


def _shutdown(status: int) -> int:
    """What interpreter exit does: join threads, run atexit handlers, flush the streams."""
    import atexit
    import threading

    with contextlib.suppress(BaseException):
        threading._shutdown()  # type: ignore[attr-defined]
    with contextlib.suppress(BaseException):
        atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except BaseException:
            status = status or 120
    return status
