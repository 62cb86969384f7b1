"""The trusted side of the pre-forked worker: start it (inside bubblewrap or not), send it fork
requests with file descriptors, and route its exit reports to the runs waiting for them.

Everything here runs on the sandbox's event-loop thread. The worker's control socket is a
SOCK_SEQPACKET pair, so every request and report is one message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import time

from toolrl.sandbox import isolation
from toolrl.sandbox.result import SandboxError

_START_TIMEOUT_S = 120.0  # importing sympy on a busy 2-core machine can take several seconds
_ZYGOTE_CODE = "from toolrl.sandbox.zygote import main; main()"


def _thread_env() -> dict[str, str]:
    # One BLAS/OpenMP thread: the zygote must stay single-threaded to fork safely, and a run
    # that wants parallelism has a process budget anyway.
    return {"OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}


class Worker:
    """One zygote process. `start()` once; `submit()` per run; `close()` at the end."""

    def __init__(self, level: str, runs_root: str, preload: tuple[str, ...], options: dict):
        self.level = level
        self.runs_root = runs_root
        self.preload = preload
        self.options = options  # landlock_abi, seccomp, nproc_limit
        self.info: dict = {}
        self.proc: subprocess.Popen | None = None
        self._ctl: socket.socket | None = None
        self._pending: dict[str, asyncio.Future] = {}
        # The worker's stderr (start-up errors) goes to a file: a pipe nobody reads could block it.
        self._stderr = tempfile.TemporaryFile()  # noqa: SIM115 (closed in close())
        self.dead = False

    @property
    def inner_runs_root(self) -> str:
        """Where runs' directories are as the worker sees them."""
        return isolation.SANDBOX_MOUNT if self.level == "bwrap" else self.runs_root

    def _command(self, child_fd: int) -> tuple[list[str], dict[str, str]]:
        package_parent = os.path.dirname(isolation.toolrl_package_dir())
        path_env = f"{os.path.dirname(sys.executable)}:/usr/local/bin:/usr/bin:/bin"
        config = {
            "ctl_fd": child_fd,
            "parent_pid": os.getpid(),
            "level": self.level,
            "preload": list(self.preload),
            "read_paths": isolation.run_read_paths(),
            "write_paths": isolation.run_write_paths(),
            "runs_root": self.inner_runs_root,
            "path_env": path_env,
            **self.options,
        }
        env = {
            "PATH": path_env,
            "LANG": "C.UTF-8",
            "HOME": self.inner_runs_root,
            "PYTHONPATH": package_parent,
            "PYTHONDONTWRITEBYTECODE": "1",
            **_thread_env(),
        }
        command = [sys.executable, "-s", "-B", "-c", _ZYGOTE_CODE, json.dumps(config)]
        if self.level == "bwrap":
            bwrap, _ = isolation.bwrap_version()
            assert bwrap is not None, "bwrap level chosen without a working bwrap"
            return isolation.bwrap_argv(bwrap, self.runs_root, command, env), {"PATH": path_env}
        return command, env

    async def start(self) -> None:
        """Start the worker and wait until it has preloaded its modules."""
        parent_sock, child_sock = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        argv, env = self._command(child_sock.fileno())
        try:
            self.proc = subprocess.Popen(
                argv,
                pass_fds=[child_sock.fileno()],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=self._stderr,
                env=env,
                cwd=self.runs_root,
                start_new_session=True,
            )
        except OSError as exc:
            parent_sock.close()
            raise SandboxError(f"could not start the sandbox worker ({argv[0]}): {exc}") from exc
        finally:
            child_sock.close()
        parent_sock.setblocking(False)
        self._ctl = parent_sock
        loop = asyncio.get_running_loop()
        try:
            message = await asyncio.wait_for(loop.sock_recv(parent_sock, 1 << 16), _START_TIMEOUT_S)
        except TimeoutError:
            message = b""
        if not message:
            detail = self.stderr_tail()
            self.close()
            raise SandboxError(f"the sandbox worker ({self.level}) failed to start: {detail}")
        self.info = json.loads(message)
        loop.add_reader(parent_sock.fileno(), self._on_readable)

    def stderr_tail(self, limit: int = 2000) -> str:
        """The end of what the worker wrote to stderr (start-up errors land here)."""
        with contextlib.suppress(OSError, ValueError):
            self._stderr.seek(0)
            text = self._stderr.read().decode(errors="replace").strip()
            return text[-limit:] or "(no output)"
        return "(unreadable)"

    def _on_readable(self) -> None:
        assert self._ctl is not None
        while True:
            try:
                message = self._ctl.recv(1 << 16)
            except BlockingIOError:
                return
            except OSError:
                message = b""
            if not message:
                self._mark_dead(f"the sandbox worker exited: {self.stderr_tail()}")
                return
            report = json.loads(message)
            future = self._pending.pop(report.get("id"), None)
            if future is not None and not future.done():
                future.set_result(report)

    def _mark_dead(self, reason: str) -> None:
        self.dead = True
        with contextlib.suppress(Exception):
            asyncio.get_running_loop().remove_reader(self._ctl.fileno())
        for future in self._pending.values():
            if not future.done():
                future.set_exception(SandboxError(reason))
        self._pending.clear()

    async def submit(self, request: dict, fds: list[int]) -> asyncio.Future:
        """Ask for a fork; returns the future of its exit report."""
        if self.dead or self._ctl is None:
            raise SandboxError("the sandbox worker is not running")
        future = asyncio.get_running_loop().create_future()
        self._pending[request["id"]] = future
        payload = json.dumps(request).encode()
        deadline = time.monotonic() + 10.0
        while True:
            try:
                socket.send_fds(self._ctl, [payload], fds)
                return future
            except BlockingIOError:
                if time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.001)
            except OSError as exc:
                self._mark_dead(f"the sandbox worker is gone ({exc}): {self.stderr_tail()}")
                break
        self._pending.pop(request["id"], None)
        raise SandboxError("could not hand the run to the sandbox worker")

    def forget(self, run_id: str) -> None:
        """Stop waiting for a run's report (it was cancelled or given up on)."""
        self._pending.pop(run_id, None)

    def close(self) -> None:
        """Stop the worker; its runs die with it (process group kill and PDEATHSIG)."""
        self.dead = True
        if self._ctl is not None:
            with contextlib.suppress(Exception):
                asyncio.get_running_loop().remove_reader(self._ctl.fileno())
            self._ctl.close()  # the worker sees EOF, kills its runs' groups and exits
        if self.proc is not None:
            try:
                self.proc.wait(timeout=2)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
        self._stderr.close()
