"""One run, seen from the trusted parent: hand it to the worker, supervise it, build the result.

Timeline of `execute()`:
1. create the run directory with the request's files, memfds with the code and stdin, the
   output pipes and a control socket, and send the child's ends to the worker, which forks;
2. the child says hello: its credentials give its pid in our namespace, from which we take a
   pidfd (a race-free handle to kill it) and, with cgroups, put it in the run's group;
3. the child says ready just before the user's first line: the wall clock starts;
4. we stream stdout/stderr with a byte cap and wait for the worker's exit report, the deadline
   or the output cap, whichever comes first, killing the child in the last two cases (the worker
   then kills the whole process group before reaping it);
5. we wait for both pipes to close (every process that could write is dead), check the cgroup,
   fetch requested files, remove the directory, and classify the outcome.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import secrets
import signal
import socket
import struct
import time
from dataclasses import dataclass, field

from toolrl.sandbox import rundir
from toolrl.sandbox.cgroups import CgroupManager, RunCgroup
from toolrl.sandbox.result import CommandResult, Limits, RunResult, SandboxError
from toolrl.sandbox.worker import Worker

_SETUP_TIMEOUT_S = 30.0  # fork + isolation of one run, on a loaded machine
_REPORT_GRACE_S = 10.0  # how long the worker may take to report a run we killed
_PIPE_GRACE_S = 2.0  # after the exit report, for output pipes to reach EOF
_CGROUP_SLACK_MB = 64  # pages copied from the worker count against the run's cgroup
_SIGXCPU = -signal.SIGXCPU


class _Output:
    """Reads one pipe without blocking the loop, keeping at most `cap` bytes."""

    def __init__(self, fd: int, cap: int, on_overflow) -> None:
        self.fd, self.cap, self.on_overflow = fd, cap, on_overflow
        self.data = bytearray()
        self.overflowed = False
        self.closed = asyncio.get_running_loop().create_future()
        os.set_blocking(fd, False)
        asyncio.get_running_loop().add_reader(fd, self._read)

    def _read(self) -> None:
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            chunk = b""
        if not chunk:
            self.close()
            return
        room = self.cap - len(self.data)
        if len(chunk) > room:
            self.data += chunk[: max(room, 0)]
            if not self.overflowed:
                self.overflowed = True
                self.on_overflow()
        else:
            self.data += chunk

    def close(self) -> None:
        if self.fd >= 0:
            asyncio.get_running_loop().remove_reader(self.fd)
            os.close(self.fd)
            self.fd = -1
        if not self.closed.done():
            self.closed.set_result(None)


@dataclass
class _Run:
    """What the parent holds for one run while it executes."""

    run_id: str
    limits: Limits
    directory: str
    chan: socket.socket | None = None
    pidfd: int = -1
    host_pid: int = 0
    cgroup: RunCgroup | None = None
    outputs: list[_Output] = field(default_factory=list)
    start: float | None = None
    killed_for: str | None = None
    child_fds: list[int] = field(default_factory=list)

    def kill(self, reason: str) -> None:
        """SIGKILL the run's main process (the worker then kills its process group)."""
        self.killed_for = self.killed_for or reason
        with contextlib.suppress(OSError):
            if self.pidfd >= 0:
                signal.pidfd_send_signal(self.pidfd, signal.SIGKILL)
            elif self.host_pid > 0:
                os.kill(self.host_pid, signal.SIGKILL)


def _memfd(name: str, content: bytes) -> int:
    fd = os.memfd_create(name, os.MFD_CLOEXEC)
    view = memoryview(content)
    while view:
        view = view[os.write(fd, view) :]
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


async def _readable(fd: int, timeout: float) -> bool:
    """Wait until `fd` is readable; False on timeout."""
    loop = asyncio.get_running_loop()
    ready = loop.create_future()
    loop.add_reader(fd, lambda: ready.done() or ready.set_result(None))
    try:
        await asyncio.wait_for(ready, max(timeout, 0))
        return True
    except TimeoutError:
        return False
    finally:
        loop.remove_reader(fd)


async def _recv(chan: socket.socket, timeout: float, creds: bool = False):
    """One message from the child (with its pid when `creds`); b"" at EOF or on timeout."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            size = socket.CMSG_SPACE(12) if creds else 0
            data, ancillary, _, _ = chan.recvmsg(1 << 12, size)
        except BlockingIOError:
            if not await _readable(chan.fileno(), deadline - loop.time()):
                return (b"", 0) if creds else b""
            continue
        except OSError:
            data, ancillary = b"", []
        if not creds:
            return data
        pid = 0
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = struct.unpack("3i", payload[:12])[0]
        return data, pid


class Executor:
    """Runs programs through one worker; owned by `Sandbox`, used on its loop thread only."""

    def __init__(self, worker: Worker, cgroups: CgroupManager | None, level: str) -> None:
        self.worker = worker
        self.cgroups = cgroups
        self.level = level

    async def execute(
        self, code: str, stdin: str | bytes, limits: Limits, files, fetch_files
    ) -> RunResult:
        """Run one program; never raises for the program's behaviour, only returns."""
        run = _Run(secrets.token_hex(8), limits, "")
        run.directory = os.path.join(self.worker.runs_root, run.run_id)
        try:
            report = await self._supervise(run, code, stdin, files)
            return await self._finish(run, report, fetch_files)
        except SandboxError as exc:
            return RunResult.sandbox_error(str(exc), self.level)
        except OSError as exc:  # descriptors, memfds, the run directory: the host's resources
            return RunResult.sandbox_error(f"sandbox plumbing failed: {exc}", self.level)
        finally:
            self._cleanup(run)

    async def _launch(self, run: _Run, code: str, stdin: str | bytes, files) -> asyncio.Future:
        """Create the run's directory and descriptors and hand the child's ends to the worker.
        Every descriptor is recorded in `run` as soon as it exists, so cleanup closes it."""
        rundir.create(run.directory, files)
        parent_chan, child_chan = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        run.chan = parent_chan
        run.child_fds.append(child_chan.detach())
        parent_chan.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        parent_chan.setblocking(False)
        for _stream in ("stdout", "stderr"):
            read_end, write_end = os.pipe2(os.O_CLOEXEC)
            run.child_fds.append(write_end)
            on_overflow = lambda: run.kill("output")  # noqa: E731
            run.outputs.append(_Output(read_end, run.limits.max_output_bytes, on_overflow))
        stdin_bytes = stdin.encode("utf-8", "surrogateescape") if isinstance(stdin, str) else stdin
        run.child_fds.append(_memfd("toolrl-stdin", stdin_bytes))
        run.child_fds.append(_memfd("toolrl-code", code.encode("utf-8", "surrogateescape")))
        request = {
            "id": run.run_id,
            "dir": run.run_id,
            "limits": {**run.limits.to_dict(), "cpu_seconds": run.limits.cpu_seconds},
            "wait_go": self.cgroups is not None,
        }
        try:
            return await self.worker.submit(request, run.child_fds)
        finally:
            for fd in run.child_fds:
                os.close(fd)
            run.child_fds = []

    async def _handshake(self, run: _Run) -> None:
        assert run.chan is not None
        hello, pid = await _recv(run.chan, _SETUP_TIMEOUT_S, creds=True)
        if hello != b"H" or pid <= 0:
            raise SandboxError(f"the run did not start (worker: {self.worker.stderr_tail(300)})")
        run.host_pid = pid
        with contextlib.suppress(OSError):
            run.pidfd = os.pidfd_open(pid)
        if self.cgroups is not None:
            run.cgroup = self.cgroups.create(
                run.run_id,
                (run.limits.memory_mb + _CGROUP_SLACK_MB) << 20,
                run.limits.max_processes,
            )
            run.cgroup.add(pid)
            run.chan.send(b"G")
        ready = await _recv(run.chan, _SETUP_TIMEOUT_S)
        if ready[:1] == b"E":
            raise SandboxError(ready[1:].decode(errors="replace"))
        if ready[:1] != b"R":
            raise SandboxError("the run died while isolating itself")
        run.start = float(json.loads(ready[1:])["start"])
        run.chan.close()
        run.chan = None

    async def _supervise(self, run: _Run, code: str, stdin, files) -> dict:
        exited = await self._launch(run, code, stdin, files)
        try:
            await self._handshake(run)
            assert run.start is not None
            remaining = run.start + run.limits.timeout_s - time.monotonic()
            try:
                return await asyncio.wait_for(asyncio.shield(exited), max(remaining, 0))
            except TimeoutError:
                run.kill("time")
            try:
                return await asyncio.wait_for(exited, _REPORT_GRACE_S)
            except TimeoutError:
                raise SandboxError("the sandbox worker did not report a killed run") from None
        except BaseException:
            run.kill("cancelled")
            self.worker.forget(run.run_id)
            if exited.done() and not exited.cancelled():
                exited.exception()  # retrieved: the run's own error is what we report
            raise

    async def _finish(self, run: _Run, report: dict, fetch_files) -> RunResult:
        if "error" in report:
            raise SandboxError(report["error"])
        closed = [o.closed for o in run.outputs]
        _, pending = await asyncio.wait(closed, timeout=_PIPE_GRACE_S)
        message = ""
        if pending:  # only possible if a process escaped the run's process group
            message = "a process of the run kept its output open after the run ended"
            if run.cgroup is not None:
                run.cgroup.kill_all()
                await asyncio.wait(closed, timeout=_PIPE_GRACE_S)
                message += "; it was killed through the run's cgroup"
        for output in run.outputs:
            output.close()
        oom = run.cgroup.oom_killed() if run.cgroup is not None else False
        command = _classify(run, report, oom)
        fetched = rundir.fetch(run.directory, list(fetch_files or ()), run.limits.max_file_mb << 20)
        ok = command.status == "Finished" and command.return_code == 0
        return RunResult(
            status="Success" if ok and not command.limit_exceeded else "Failed",
            run_result=command,
            message=message,
            files={k: base64.b64encode(v).decode() for k, v in fetched.items()},
            isolation=self.level,
        )

    def _cleanup(self, run: _Run) -> None:
        for output in run.outputs:
            output.close()
        for fd in run.child_fds:
            with contextlib.suppress(OSError):
                os.close(fd)
        if run.chan is not None:
            run.chan.close()
        if run.pidfd >= 0:
            os.close(run.pidfd)
        if run.cgroup is not None:
            run.cgroup.kill_all()
            run.cgroup.remove()
        with contextlib.suppress(OSError):
            rundir.remove(run.directory)


def _classify(run: _Run, report: dict, oom: bool) -> CommandResult:
    """Turn the exit report and what we observed into SandboxFusion's CommandRunResult."""
    stdout = run.outputs[0].data.decode("utf-8", errors="replace")
    stderr = run.outputs[1].data.decode("utf-8", errors="replace")
    exit_code = int(report["exit_code"])
    elapsed = max(float(report["end"]) - (run.start or float(report["end"])), 0.0)
    common = {"execution_time": round(elapsed, 6), "stdout": stdout, "stderr": stderr}
    common["cpu_time"] = round(float(report.get("cpu_time", 0.0)), 6)
    if run.killed_for == "time":
        return CommandResult("TimeLimitExceeded", limit_exceeded="time", **common)
    if exit_code == _SIGXCPU or (
        exit_code == -signal.SIGKILL and common["cpu_time"] >= run.limits.cpu_seconds
    ):
        return CommandResult("TimeLimitExceeded", limit_exceeded="cpu_time", **common)
    limit = None
    tail = stderr[-400:]
    if run.killed_for == "output":
        limit = "output"
    elif oom or (exit_code != 0 and "MemoryError" in tail):
        limit = "memory"
    elif exit_code != 0 and "File too large" in tail:
        limit = "file_size"
    return CommandResult("Finished", return_code=exit_code, limit_exceeded=limit, **common)
