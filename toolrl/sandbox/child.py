"""One run, inside a child forked from the zygote: isolate, then hand over to the user's code.

As a spare (before any run is assigned) the child leaves the zygote's session, arranges to die
with the zygote, keeps only its socket to the zygote and drops every capability. Once assigned,
it tells the parent its pid (the kernel attaches credentials to the message, translated into the
parent's pid namespace), waits for the parent to put it into its cgroup if there is one, then
applies, in this order: working directory, rlimits, an empty environment, Landlock, seccomp.
Only then does it report "ready" and close its last link to the parent. A failure before that
point reports an error and exits with status 125: a run never executes with less isolation than
its level promises.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import resource
import signal
import socket
import time

from toolrl.sandbox import interpreter, landlock, seccomp

_PR_SET_PDEATHSIG = 1
_PR_CAPBSET_DROP = 24
_PR_SET_SECUREBITS = 28
_PR_CAP_AMBIENT = 47
_PR_CAP_AMBIENT_CLEAR_ALL = 4
# SECBIT_NOROOT, NO_SETUID_FIXUP and NO_CAP_AMBIENT_RAISE with their locks, KEEP_CAPS_LOCKED.
_SECUREBITS_LOCKED_DOWN = 0xEF
_SETUP_FAILED = 125
_libc = ctypes.CDLL(None, use_errno=True)
_SECCOMP_PROGRAM = seccomp.build_filter() if seccomp.supported() else b""


class _CapHeader(ctypes.Structure):
    _fields_ = (("version", ctypes.c_uint32), ("pid", ctypes.c_int))


class _CapData(ctypes.Structure):
    _fields_ = (
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    )


def _prctl(option: int, arg: int = 0) -> int:
    return _libc.prctl(option, ctypes.c_ulong(arg), 0, 0, 0)


def _drop_capabilities() -> None:
    """Drop every capability for good (root included): bounding set, ambient, then the sets."""
    with open("/proc/self/status") as f:
        status = dict(line.split(":\t", 1) for line in f.read().splitlines() if ":\t" in line)
    if int(status.get("CapPrm", "0"), 16) == 0 and int(status.get("CapBnd", "0"), 16) == 0:
        return
    _prctl(_PR_SET_SECUREBITS, _SECUREBITS_LOCKED_DOWN)  # root no longer regains caps on exec
    with open("/proc/sys/kernel/cap_last_cap") as f:
        last = int(f.read())
    for cap in range(last + 1):
        _prctl(_PR_CAPBSET_DROP, cap)
    _prctl(_PR_CAP_AMBIENT, _PR_CAP_AMBIENT_CLEAR_ALL)
    header = _CapHeader(0x20080522, 0)  # _LINUX_CAPABILITY_VERSION_3
    data = (_CapData * 2)()
    if _libc.capset(ctypes.byref(header), data) != 0:
        raise OSError(ctypes.get_errno(), "capset: could not drop capabilities")
    with open("/proc/self/status") as f:
        text = f.read()
    if "CapEff:\t0000000000000000" not in text or "CapPrm:\t0000000000000000" not in text:
        raise OSError("capabilities are still held after dropping them")


def _set_rlimits(limits: dict, config: dict) -> None:
    mb = 1 << 20
    cpu = int(limits["cpu_seconds"])
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits["max_file_mb"] * mb,) * 2)
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits["max_open_files"],) * 2)
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_MSGQUEUE, (0, 0))
    # Address space: what the zygote already mapped (shared copy-on-write) plus the budget.
    with open("/proc/self/statm") as f:
        mapped = int(f.read().split()[0]) * resource.getpagesize()
    resource.setrlimit(resource.RLIMIT_AS, (mapped + limits["memory_mb"] * mb,) * 2)
    if config.get("nproc_limit"):
        resource.setrlimit(resource.RLIMIT_NPROC, (config["nproc_limit"],) * 2)


def _environment(run_dir: str, config: dict) -> dict[str, str]:
    return {
        "PATH": config["path_env"],
        "HOME": run_dir,
        "TMPDIR": run_dir,
        "LANG": "C.UTF-8",
        "PYTHONDONTWRITEBYTECODE": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _isolate(request: dict, config: dict, ruleset: landlock.Ruleset | None) -> str:
    """Everything between "the parent knows us" and "user code may run". Returns the run dir."""
    run_dir = os.path.join(config["runs_root"], request["dir"])
    os.chdir(run_dir)
    _set_rlimits(request["limits"], config)
    os.environ.clear()
    os.environ.update(_environment(run_dir, config))
    landlock.set_no_new_privs()
    if ruleset is not None:
        ruleset.allow_write([run_dir])
        ruleset.restrict_self()
    if config["seccomp"]:
        seccomp.install(_SECCOMP_PROGRAM)
    return run_dir


def _read_all(fd: int) -> bytes:
    chunks = []
    while chunk := os.read(fd, 1 << 20):
        chunks.append(chunk)
    os.close(fd)
    return b"".join(chunks)


def _prepare_spare(config: dict) -> landlock.Ruleset | None:
    """Work done before a run is assigned, off its critical path: a rehearsal of the run's
    Python path (so the pages it writes are already copied from the zygote) and a Landlock
    ruleset holding every rule but the run directory's."""
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    os.environ.clear()
    os.environ.update(_environment(os.getcwd(), config))
    json.dumps({"start": time.monotonic()})
    interpreter.rehearse(os.getcwd())
    if not config["landlock_abi"]:
        return None
    ruleset = landlock.Ruleset(config["landlock_abi"])
    ruleset.allow_read([*config["read_paths"], "/proc/self"])
    ruleset.allow_write(config["write_paths"])
    return ruleset


def serve_one_run(sock_fd: int, config: dict) -> int:
    """Life of a spare: prepare, wait for one assignment, run it. Returns the exit status."""
    os.setsid()
    _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["zygote_pid"]:
        return _SETUP_FAILED  # the zygote died between fork and prctl
    _close_all_but({0, 1, 2, sock_fd})
    _drop_capabilities()
    ruleset = _prepare_spare(config)
    keep = {0, 1, 2, sock_fd} | ({ruleset.fd} if ruleset else set())
    sock = socket.socket(fileno=sock_fd)
    try:
        message, fds, _, _ = socket.recv_fds(sock, 1 << 16, 8)
    except OSError:
        return 0
    finally:
        sock.close()
    if not message or len(fds) != 5:
        return 0  # the zygote retired this spare
    return _run(json.loads(message), fds, config, ruleset, keep - {sock_fd})


def _close_all_but(keep: set[int]) -> None:
    fds = sorted(keep)
    for low, high in zip(fds, [*fds[1:], 1 << 30], strict=True):
        os.closerange(low + 1, high)


def _run(
    request: dict, fds: list[int], config: dict, ruleset: landlock.Ruleset | None, keep: set[int]
) -> int:
    chan_fd, out_fd, err_fd, stdin_fd, code_fd = fds
    for source, target in ((stdin_fd, 0), (out_fd, 1), (err_fd, 2)):
        os.dup2(source, target)
    chan = socket.socket(fileno=chan_fd)
    source = _read_all(code_fd)
    _close_all_but(keep | {chan_fd})
    try:
        chan.send(b"H")
        if request["wait_go"]:
            chan.settimeout(30)
            if chan.recv(16) != b"G":
                raise OSError("the parent did not confirm the run's cgroup")
        run_dir = _isolate(request, config, ruleset)
        chan.send(b"R" + json.dumps({"start": time.monotonic()}).encode())
    except BaseException as exc:
        with contextlib.suppress(OSError):
            chan.send(b"E" + f"sandbox setup failed: {type(exc).__name__}: {exc}".encode())
        return _SETUP_FAILED
    finally:
        chan.close()
    return interpreter.run_user_code(source, run_dir)
