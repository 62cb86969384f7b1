"""Hostile programs, each with its expected outcome, against every isolation level available.

After each program the test also checks that the sandbox cleaned up (no process of the run left,
no zombie, no run directory) and still works; the test process surviving is the rest of the
proof. The rlimits level does not isolate the filesystem, the network or other processes of the
same user, so the cases that test those are skipped there (that is the level's documented
limit, and why it is refused unless explicitly allowed).
"""

from __future__ import annotations

import os
import socket
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from toolrl.sandbox import isolation, landlock, seccomp, testing
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import RunResult

STRONG = ("bwrap", "landlock")


@dataclass
class Ctx:
    """What a case's program and check may refer to."""

    level: str
    test_pid: int
    secret_file: str
    port: int
    marker: str
    secret_value: str
    max_output_bytes: int


@dataclass
class Case:
    name: str
    code: str  # formatted with the Ctx's fields
    check: Callable[[RunResult, Ctx], None]
    levels: tuple[str, ...] = isolation.LEVELS
    needs_seccomp: bool = False
    stdin: str = ""


def failed(limit: str | None = None, status: str | None = None):
    def check(result: RunResult, ctx: Ctx) -> None:
        assert result.status == "Failed", result.to_dict()
        if status:
            assert result.run_result.status == status, result.to_dict()
        if limit:
            assert result.run_result.limit_exceeded == limit, result.to_dict()

    return check


def denied(marker: str = "LEAK"):
    """The program prints `marker` only if the forbidden action worked."""

    def check(result: RunResult, ctx: Ctx) -> None:
        assert result.status == "Success", result.to_dict()
        assert marker not in result.stdout, result.stdout
        assert "DENIED" in result.stdout, result.stdout

    return check


def _check_env(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Success", result.to_dict()
    assert ctx.secret_value not in result.stdout
    names = set(result.stdout.split())
    assert names <= {"PATH", "HOME", "TMPDIR", "LANG", "PYTHONDONTWRITEBYTECODE"} | {
        "OPENBLAS_NUM_THREADS",
        "OMP_NUM_THREADS",
        "MKL_NUM_THREADS",
    }, names


def _check_root(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Success", result.to_dict()
    # Only the ancestors of the Python installation may be visible, never anything else.
    allowed = {p.split("/")[2] for p in isolation.python_paths() if p.startswith("/root/")}
    listed = result.stdout.split("LISTED:")[-1].split() if "LISTED:" in result.stdout else []
    assert set(listed) <= allowed, listed


def _check_daemon(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Success", result.to_dict()
    assert "parent done" in result.stdout
    time.sleep(2.0)  # the daemon would have written by now
    assert not os.path.exists(ctx.marker), "a daemon of the run outlived it"


def _check_invalid_utf8(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Success", result.to_dict()
    assert result.stdout.startswith("ok") and "\ufffd" in result.stdout
    assert "(end)" in result.stdout


def _check_exit_code(code: int, stdout: str):
    def check(result: RunResult, ctx: Ctx) -> None:
        assert result.run_result.return_code == code, result.to_dict()
        assert result.stdout == stdout, result.stdout

    return check


def _check_segfault(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Failed"
    assert result.run_result.return_code == -11, result.to_dict()


def _check_eof(result: RunResult, ctx: Ctx) -> None:
    assert result.status == "Failed" and result.run_result.return_code == 1
    assert "EOFError" in result.stderr


def _check_output_cap(result: RunResult, ctx: Ctx) -> None:
    failed("output")(result, ctx)
    assert len(result.stdout.encode()) <= ctx.max_output_bytes


CASES = [
    Case("infinite_loop", "while True: pass", failed("time", "TimeLimitExceeded")),
    Case(
        "sleep_ignoring_sigterm",
        "import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(60)",
        failed("time", "TimeLimitExceeded"),
    ),
    Case("memory_bomb_fast", "x = bytearray(16 * 1024**3)", failed("memory")),
    Case("memory_bomb_slow", "a = []\nwhile True: a.append(b'x' * 10**7)", failed("memory")),
    Case(
        "fork_bomb",
        "import os\nwhile True:\n    try: os.fork()\n    except OSError: pass",
        failed(),
    ),
    Case(
        "thread_bomb",
        "import threading, time\nwhile True:\n"
        "    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
        failed(),
    ),
    Case(
        "double_forked_daemon",
        """
        import os, time
        if os.fork() == 0:
            try: os.setsid()
            except OSError: pass
            if os.fork() == 0:
                time.sleep(1.5)
                for path in ("{marker}", "daemon-was-here"):
                    try: open(path, "w").write("x")
                    except OSError: pass
            os._exit(0)
        print("parent done")
        """,
        _check_daemon,
    ),
    Case("endless_output", "while True: print('x' * 1000)", _check_output_cap),
    Case(
        "fill_the_disk",
        "i = 0\nwhile True:\n    open(f'f{{i}}', 'wb').write(b'x' * (4 << 20)); i += 1",
        failed(),
    ),
    Case("file_size_limit", "open('big', 'wb').write(b'x' * (64 << 20))", failed("file_size")),
    Case("print_environment", "import os\nprint(*sorted(os.environ))", _check_env),
    Case(
        "read_root",
        """
        import os
        try: print("LISTED:", *os.listdir("/root"))
        except OSError as e: print("DENIED", e)
        for name in (".bashrc", ".ssh/id_rsa", ".bash_history"):
            try: print("LEAK", open("/root/" + name).read()[:20])
            except OSError: pass
        """,
        _check_root,
        levels=STRONG,
    ),
    Case(
        "read_etc_shadow",
        'try: print("LEAK", open("/etc/shadow").read())\nexcept OSError as e: print("DENIED", e)',
        denied(),
        levels=STRONG,
    ),
    Case(
        "read_outside_workdir",
        """
        for path in ("{secret_file}", "../", "/work", "/home", "/proc/1/environ"):
            try:
                import os
                data = os.listdir(path) if os.path.isdir(path) else open(path).read()
                print("LEAK", path, str(data)[:40])
            except OSError as e:
                print("DENIED", path, type(e).__name__)
        """,
        denied(),
        levels=STRONG,
    ),
    Case(
        "tcp_connect_to_host_listener",
        """
        import socket
        try:
            socket.create_connection(("127.0.0.1", {port}), timeout=0.5); print("LEAK")
        except OSError as e:
            print("DENIED", e)
        """,
        denied(),
        needs_seccomp=True,
    ),
    Case(
        "raw_socket",
        """
        import socket
        try: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP); print("LEAK")
        except OSError as e: print("DENIED", e)
        try: socket.socket(socket.AF_PACKET, socket.SOCK_RAW); print("LEAK")
        except OSError as e: print("DENIED", e)
        """,
        denied(),
        needs_seccomp=True,
    ),
    Case(
        "kill_everything",
        "import os\ntry: os.kill(-1, 9); print('LEAK')\nexcept OSError as e: print('DENIED', e)",
        denied(),
        needs_seccomp=True,
    ),
    Case(
        "kill_the_parents",
        """
        import os
        for pid in (os.getppid(), {test_pid}, 1):
            try: os.kill(pid, 9); print("LEAK", pid)
            except OSError as e: print("DENIED", pid, e)
        """,
        denied(),
        levels=STRONG,
    ),
    Case(
        "list_proc",
        """
        import os
        try: print("LEAK", [p for p in os.listdir("/proc") if p.isdigit()])
        except OSError as e: print("DENIED", e)
        """,
        denied(),
        levels=STRONG,
    ),
    Case(
        "write_system_directories",
        """
        for path in ("/usr/lib/toolrl-pwn", "/etc/toolrl-pwn", "/tmp/toolrl-pwn",
                     "/dev/shm/toolrl-pwn", "{secret_file}.pwn", "../toolrl-pwn"):
            try: open(path, "w").write("x"); print("LEAK", path)
            except OSError as e: print("DENIED", path, type(e).__name__)
        """,
        denied(),
        levels=STRONG,
    ),
    Case(
        "ptrace_through_ctypes",
        """
        import ctypes, os
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.ptrace(16, os.getppid(), 0, 0) == 0: print("LEAK attach")
        if libc.ptrace(0, 0, 0, 0) == 0: print("LEAK traceme")
        print("DENIED", ctypes.get_errno())
        """,
        denied(),
        needs_seccomp=True,
    ),
    Case(
        "unshare_through_ctypes",
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        for flags in (0x10000000, 0x00020000, 0x40000000, 0x20000000):
            if libc.unshare(flags) == 0: print("LEAK", hex(flags))
        print("DENIED", ctypes.get_errno())
        """,
        denied(),
        needs_seccomp=True,
    ),
    Case("input_at_eof", "print(input())", _check_eof),
    Case(
        "os_exit_after_flush",
        "import os\nprint('partial', flush=True)\nos._exit(3)",
        _check_exit_code(3, "partial\n"),
    ),
    Case(
        "os_exit_drops_buffer",
        "import os, sys\nsys.stdout.write('lost')\nos._exit(0)",
        _check_exit_code(0, ""),
    ),
    Case(
        "os_exit_in_forked_child",
        "import os\npid = os.fork()\nif pid == 0: os._exit(7)\n"
        "print(os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]))",
        _check_exit_code(0, "7\n"),
    ),
    Case("segfault_through_ctypes", "import ctypes\nctypes.string_at(0)", _check_segfault),
    Case(
        "invalid_utf8_on_stdout",
        "import sys\nsys.stdout.buffer.write(b'ok\\xff\\xfe\\xc3(end)')",
        _check_invalid_utf8,
    ),
    Case(
        "system_v_shared_memory",
        """
        import ctypes
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.shmget(0x70000001, 4096, 0o1666) >= 0: print("LEAK")
        print("DENIED", ctypes.get_errno())
        """,
        denied(),
        needs_seccomp=True,
    ),
    Case(
        "hostile_directory_tree",
        """
        import os
        os.makedirs("locked/inner")
        open("locked/inner/f", "w").write("x")
        os.chmod("locked", 0)
        fd = os.open(".", os.O_RDONLY)
        for _ in range(1500):  # deeper than PATH_MAX and Python's recursion limit
            os.mkdir("d", dir_fd=fd)
            inner = os.open("d", os.O_RDONLY, dir_fd=fd)
            os.close(fd)
            fd = inner
        print("built")
        """,
        _check_exit_code(0, "built\n"),
    ),
    Case(
        "symlink_escape",
        """
        import os
        os.symlink("/etc/shadow", "shadow")
        os.symlink("/", "host")
        for attempt in (lambda: open("shadow").read(), lambda: os.listdir("host/root"),
                        lambda: open("host/etc/hostname").read(), lambda: os.listdir("host/work")):
            try: print("LEAK", str(attempt())[:30])
            except OSError as e: print("DENIED", type(e).__name__)
        """,
        denied(),
        levels=STRONG,
    ),
    Case(
        "escape_the_process_group",
        """
        import os
        for call in (os.setsid, lambda: os.setpgid(0, 0)):
            try: call(); print("LEAK")
            except OSError as e: print("DENIED", e)
        """,
        denied(),
        needs_seccomp=True,
    ),
]


@pytest.fixture
def ctx(sandbox: Sandbox, tmp_path, secret_value: str) -> Ctx:
    secret = tmp_path / "secret.txt"
    secret.write_text("top secret")
    listener = socket.create_server(("127.0.0.1", 0))
    listener.setblocking(False)
    context = Ctx(
        level=sandbox.isolation,
        test_pid=os.getpid(),
        secret_file=str(secret),
        port=listener.getsockname()[1],
        marker=str(tmp_path / "daemon-marker"),
        secret_value=secret_value,
        max_output_bytes=sandbox.limits.max_output_bytes,
    )
    yield context
    with pytest.raises(BlockingIOError):  # nothing from a run reached the host's listener
        listener.accept()
    listener.close()
    assert not os.path.exists(f"{secret}.pwn")


def assert_clean(sandbox: Sandbox, expected_worker: int) -> None:
    """No process, zombie or directory of any run is left, and the worker is the same one."""
    info = sandbox.info()
    assert info["worker_pid"] == expected_worker, "the worker was killed and restarted"
    found = testing.wait_for_idle_worker(info)
    assert len(found) == testing.idle_worker_processes(info), found
    assert "Z" not in found.values(), found
    assert not testing.zombie_children()
    assert os.listdir(info["runs_root"]) == [], os.listdir(info["runs_root"])


def requires_seccomp() -> None:
    if not seccomp.supported():
        pytest.skip("seccomp unavailable here: the syscall filter is what blocks this")


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_program(sandbox: Sandbox, ctx: Ctx, case: Case) -> None:
    if ctx.level not in case.levels:
        pytest.skip(f"the {ctx.level} level does not isolate this (documented)")
    if case.needs_seccomp:
        requires_seccomp()
    if case.name == "kill_the_parents" and ctx.level == "landlock" and landlock.abi_version() < 6:
        pytest.skip("Landlock < ABI 6 cannot scope signals: same-user processes are reachable")
    if case.name == "fork_bomb" and sandbox.info()["process_limit"] == "none":
        pytest.skip("no process limit is enforceable here (root without writable cgroups)")
    worker = sandbox.info()["worker_pid"]
    code = textwrap.dedent(case.code).format(**ctx.__dict__)
    result = sandbox.run_sync(code, stdin=case.stdin)
    assert result.isolation == ctx.level
    case.check(result, ctx)
    assert_clean(sandbox, worker)
    again = sandbox.run_sync("print('still alive')")
    assert again.stdout == "still alive\n", again.to_dict()


def test_no_state_survives_between_runs(sandbox: Sandbox) -> None:
    # Shared places outside the run directory are only writable at the weak level; there the
    # test does not write to them (it would litter the host), the in-memory part still holds.
    shared = ("/tmp/toolrl-state", "/dev/shm/toolrl-state") if sandbox.isolation in STRONG else ()
    paths = repr(("state.txt", "~/state.txt", *shared))
    write = f"""
    import builtins, os, sys, numpy
    for path in {paths}:
        try: open(os.path.expanduser(path), "w").write("x")
        except OSError: pass
    os.environ["TOOLRL_STATE"] = "1"
    numpy.toolrl_state = builtins.toolrl_state = 1
    sys.modules["toolrl_state"] = sys
    print(os.getcwd())
    """
    read = f"""
    import builtins, os, sys, numpy
    found = [p for p in {paths} if os.path.exists(os.path.expanduser(p))]
    found += [n for n, ok in (("env", "TOOLRL_STATE" in os.environ),
                              ("numpy", hasattr(numpy, "toolrl_state")),
                              ("builtins", hasattr(builtins, "toolrl_state")),
                              ("modules", "toolrl_state" in sys.modules)) if ok]
    print("FOUND", found, os.getcwd())
    """
    first = sandbox.run_sync(textwrap.dedent(write))
    second = sandbox.run_sync(textwrap.dedent(read))
    assert first.status == "Success" and second.status == "Success", (first, second)
    assert "FOUND []" in second.stdout, second.stdout
    assert first.stdout.strip() != second.stdout.split()[-1], "two runs shared a directory"
    assert not os.path.exists("/tmp/toolrl-state")
    roll = "import random, numpy\nprint(random.random(), numpy.random.rand())"
    rolls = [sandbox.run_sync(roll).stdout for _ in range(2)]
    assert rolls[0] != rolls[1], "random state is shared between runs"
