"""The pre-forked worker ("zygote"): imports numpy/sympy once, then forks the children runs use.

It runs inside the sandbox (inside bubblewrap at the bwrap level, under a baseline Landlock
domain at the landlock level) and never executes user code itself. It also never sees a run's
code, stdin or output: the trusted parent hands it only file descriptors (a control socket for
the child, the output pipes, memfds holding stdin and code) and non-secret metadata (run id,
directory name, limits), so a child forked later finds nothing of another run in its memory.

To keep fork and the child's first-touch page faults off a run's critical path, the zygote keeps
a few *spare* children forked ahead of time: each has already left the zygote's session, dropped
capabilities and closed everything but its own socket, and waits there for one assignment (a
run's request and descriptors). After handing a run to a spare, the zygote forks a replacement.

The zygote is the child subreaper, so processes a run orphans come back to it. When a run's main
process exits, the zygote SIGKILLs the run's process group *before* reaping the main process (so
the group id cannot have been reused) and reports exit status and resource usage to the parent.

Started as ``python -c "from toolrl.sandbox.zygote import main; main()" CONFIG_JSON``.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import importlib
import json
import os
import select
import signal
import socket
import sys
import time
import traceback

_PR_SET_PDEATHSIG = 1
_PR_SET_CHILD_SUBREAPER = 36
_libc = ctypes.CDLL(None, use_errno=True)


def prctl(option: int, value: int) -> None:
    """prctl(option, value) or OSError."""
    if _libc.prctl(option, ctypes.c_ulong(value), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl({option}): {os.strerror(err)}")


def _preload(names: list[str]) -> tuple[list[str], list[str]]:
    loaded, failed = [], []
    for name in names:
        try:
            importlib.import_module(name)
            loaded.append(name)
        except Exception as exc:  # a missing optional package must not stop the sandbox
            failed.append(f"{name}: {type(exc).__name__}: {exc}")
    return loaded, failed


class Zygote:
    """The fork loop. `runs` maps a run's main pid to its id while it is alive; `spares` maps
    an idle spare's pid to the zygote's end of its socket."""

    def __init__(self, ctl: socket.socket, config: dict) -> None:
        self.ctl = ctl
        self.config = config
        self.runs: dict[int, str] = {}
        self.spares: dict[int, socket.socket] = {}
        self.wake_r, self.wake_w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        # Spares that die before being used point at a broken set-up: back off exponentially
        # instead of forking in a tight loop.
        self.spare_failures = 0
        self.next_refill = 0.0

    def serve(self) -> None:
        """Hand out runs and report their exits until the parent goes away."""
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.set_wakeup_fd(self.wake_w)
        self.refill()
        while True:
            wait = max(self.next_refill - time.monotonic(), 0) if self.spare_failures else None
            try:
                readable, _, _ = select.select([self.ctl, self.wake_r], [], [], wait)
            except InterruptedError:
                continue
            if self.wake_r in readable:
                with contextlib.suppress(BlockingIOError):
                    os.read(self.wake_r, 4096)
                self.reap()
            if self.ctl in readable and not self.receive():
                break
            self.refill()
        for pid in [*self.runs, *self.spares]:
            with contextlib.suppress(OSError):
                os.killpg(pid, signal.SIGKILL)

    def refill(self) -> None:
        """Fork spares until there are `config["spares"]` of them (unless backing off)."""
        if time.monotonic() < self.next_refill:
            return
        while len(self.spares) < self.config["spares"]:
            try:
                self._fork_spare()
            except OSError:
                return  # out of processes for now: runs fork on demand instead

    def _fork_spare(self) -> int:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        pid = os.fork()
        if pid == 0:
            self._become_spare(theirs)
        theirs.close()
        self.spares[pid] = ours
        return pid

    def _become_spare(self, sock: socket.socket) -> None:
        """In the forked child: forget the zygote's plumbing and serve one run. Never returns."""
        status = 125
        try:
            signal.set_wakeup_fd(-1)
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            # Detach (not close) Python objects for descriptors the child must drop: their
            # numbers are closed below and may later be reused by the user's files.
            for other in [self.ctl, *self.spares.values()]:
                other.detach()
            from toolrl.sandbox import child

            status = child.serve_one_run(sock.detach(), self.config)
        except BaseException:
            traceback.print_exc()  # lands in the worker's stderr, which the parent reports
        finally:
            os._exit(status)

    def receive(self) -> bool:
        """Hand one request to a spare; False when the parent closed the control socket."""
        try:
            message, fds, _, _ = socket.recv_fds(self.ctl, 1 << 16, 8)
        except InterruptedError:
            return True
        except OSError:
            return False
        if not message:
            return False
        request: dict = {}
        try:
            request = json.loads(message)
            self.runs[self._assign(message, fds)] = request["id"]
        except Exception as exc:  # report, keep serving the other runs
            self._send({"id": request.get("id"), "error": f"worker could not start a run: {exc}"})
        finally:
            for fd in fds:
                os.close(fd)
        return True

    def _assign(self, message: bytes, fds: list[int]) -> int:
        """Give a request to a spare (forking one if none is idle); returns its pid."""
        for _attempt in range(3):
            pid = next(iter(self.spares)) if self.spares else self._fork_spare()
            sock = self.spares.pop(pid)
            with sock:
                try:
                    socket.send_fds(sock, [message], fds)
                    return pid
                except OSError:  # that spare died meanwhile; it is reaped as an orphan
                    continue
        raise OSError("no spare child accepted the run")

    def reap(self) -> None:
        """Reap every exited child; report runs, forget dead spares, collect orphans."""
        while True:
            try:
                info = os.waitid(os.P_ALL, 0, os.WEXITED | os.WNOHANG | os.WNOWAIT)
            except ChildProcessError:
                return
            if info is None:
                return
            pid = info.si_pid
            run_id = self.runs.pop(pid, None)
            if run_id is not None:
                # The main process is a zombie: its group id cannot be reused yet.
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
            spare = self.spares.pop(pid, None)
            if spare is not None:
                spare.close()
                self.spare_failures += 1
                self.next_refill = time.monotonic() + min(0.01 * 2**self.spare_failures, 10.0)
            end = time.monotonic()
            _, status, usage = os.wait4(pid, 0)
            if run_id is not None:
                self.spare_failures = 0
                self._send(
                    {
                        "id": run_id,
                        "exit_code": os.waitstatus_to_exitcode(status),
                        "end": end,
                        "cpu_time": usage.ru_utime + usage.ru_stime,
                        "max_rss_kb": usage.ru_maxrss,
                    }
                )

    def _send(self, report: dict) -> None:
        with contextlib.suppress(OSError):
            self.ctl.send(json.dumps(report).encode())


def main() -> None:
    """Entry point inside the sandbox: preload, harden, report ready, serve."""
    config = json.loads(sys.argv[1])
    ctl = socket.socket(fileno=config["ctl_fd"])
    prctl(_PR_SET_CHILD_SUBREAPER, 1)
    prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    if os.getppid() != config["parent_pid"] and config["level"] != "bwrap":
        sys.exit("toolrl sandbox worker: parent exited during start-up")
    config["zygote_pid"] = os.getpid()
    loaded, failed = _preload(config["preload"])
    from toolrl.sandbox import child, interpreter, landlock  # noqa: F401  (before any fork)

    if config["level"] == "landlock":
        # Baseline: the worker can write only the run root, like every run beneath it. /proc
        # stays readable here so that each run can allow its own /proc/self.
        landlock.restrict(
            [*config["read_paths"], "/proc"], [config["runs_root"], *config["write_paths"]]
        )
    gc.collect()
    gc.freeze()  # keep the collector off the preloaded objects, so forks share their pages
    ready = {"ready": True, "pid": os.getpid(), "preloaded": loaded, "preload_failed": failed}
    ctl.send(json.dumps(ready).encode())
    Zygote(ctl, config).serve()


if __name__ == "__main__":
    main()
