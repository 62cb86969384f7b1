"""`Sandbox`: run untrusted Python on this machine, isolated, from async or sync code.

    with Sandbox() as sandbox:                       # picks the strongest isolation available
        result = sandbox.run_sync("print(input())", stdin="hi")
        result.status, result.stdout                 # "Success", "hi\\n"
        result.to_dict()                             # SandboxFusion's RunCodeResponse

    async with Sandbox(max_concurrency=8) as sandbox:
        results = await asyncio.gather(*(sandbox.run(code) for code in programs))

The sandbox owns a private event-loop thread that talks to its worker; `run()` may be awaited
from any event loop and `run_sync()` called from any thread. At most `max_concurrency` runs
execute at once; the others wait their turn without holding any process, file or descriptor.
If the worker dies it is restarted on the next run (runs in flight get a SandboxError result).
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import os
import tempfile
import threading
import weakref
from collections.abc import Mapping, Sequence

from toolrl.sandbox import isolation, landlock, rundir, seccomp
from toolrl.sandbox.cgroups import CgroupManager
from toolrl.sandbox.execution import Executor
from toolrl.sandbox.result import Limits, RunResult, SandboxError
from toolrl.sandbox.worker import Worker

# numpy 2 imports its submodules lazily; the common ones are preloaded explicitly.
DEFAULT_PRELOAD = (
    "math",
    "fractions",
    "itertools",
    "collections",
    "numpy",
    "numpy.linalg",
    "numpy.random",
    "sympy",
)
RUNS_DIR_ENV = "TOOLRL_SANDBOX_DIR"
_open_sandboxes: weakref.WeakSet[Sandbox] = weakref.WeakSet()


def _runs_root(memory_cgroups: bool, worst_case_bytes: int) -> str:
    """A private directory for run directories.

    tmpfs (/dev/shm) is fastest and, with memory cgroups, what a run writes there is charged to
    its memory limit (and cannot be written back to disk), so filling it gets the run OOM-killed.
    It is used only when it can hold every concurrent run at its limit, so a run filling it
    cannot starve other users of /dev/shm (a small Docker default would be). Otherwise, or when
    TOOLRL_SANDBOX_DIR says so, a disk-backed directory is used.
    """
    base = os.environ.get(RUNS_DIR_ENV) or None
    if base is None and memory_cgroups and os.access("/dev/shm", os.W_OK):
        stats = os.statvfs("/dev/shm")
        if stats.f_bavail * stats.f_frsize >= worst_case_bytes:
            base = "/dev/shm"
    return tempfile.mkdtemp(prefix="toolrl-sandbox-", dir=base)


def _user_process_count() -> int:
    uid, count = os.getuid(), 0
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}").st_uid == uid:
                    count += 1
    return count


class Sandbox:
    """Local isolated execution of Python programs (see the module docstring)."""

    def __init__(
        self,
        isolation_level: str = "auto",
        *,
        limits: Limits | None = None,
        max_concurrency: int | None = None,
        preload: Sequence[str] = DEFAULT_PRELOAD,
        allow_weak_isolation: bool | None = None,
        use_cgroups: bool = True,
    ) -> None:
        self.requested = isolation_level
        self.limits = limits or Limits()
        self.max_concurrency = max_concurrency or max(4, 2 * (os.cpu_count() or 1))
        self.preload = tuple(preload)
        self.allow_weak_isolation = allow_weak_isolation
        self.use_cgroups = use_cgroups
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._state: _State | None = None

    @property
    def isolation(self) -> str:
        """The level runs get ("bwrap", "landlock" or "rlimits"); starts the sandbox."""
        return self.start()._state.level  # type: ignore[union-attr]

    def start(self) -> Sandbox:
        """Choose the isolation level and start the worker (idempotent, thread-safe).

        With "auto", a level whose worker fails to start (e.g. bubblewrap blocked by an
        AppArmor profile) is skipped for the next one; the error lists every failure.
        """
        with self._lock:
            if self._state is not None:
                return self
            errors = []
            for level in isolation.acceptable_levels(self.requested, self.allow_weak_isolation):
                try:
                    self._start_level(level)
                    _open_sandboxes.add(self)
                    return self
                except SandboxError as exc:
                    errors.append(f"{level}: {exc}")
            raise SandboxError("the sandbox could not start: " + " | ".join(errors))

    def _start_level(self, level: str) -> None:
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="toolrl-sandbox", daemon=True)
        thread.start()
        state = None
        try:
            state = _State(level, self)
            asyncio.run_coroutine_threadsafe(state.start(), loop).result()
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(timeout=10)
            loop.close()
            if state is not None:
                state.close_sync()
            raise
        self._loop, self._thread, self._state = loop, thread, state

    async def run(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult:
        """Run `code` as `python main.py` in a fresh isolated process; never raises for the
        program's behaviour (see RunResult). `files` are written into the run's directory
        first; `fetch_files` are read back (base64 in `result.files`) if the run made them."""
        if self._state is None:
            await asyncio.to_thread(self.start)
        assert self._loop is not None and self._state is not None
        job = self._state.run(code, stdin, limits or self.limits, dict(files or {}), fetch_files)
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(job, self._loop))

    def run_sync(
        self,
        code: str,
        stdin: str | bytes = "",
        limits: Limits | None = None,
        files: Mapping[str, bytes] | None = None,
        fetch_files: Sequence[str] = (),
    ) -> RunResult:
        """`run()` for synchronous callers (any thread but the sandbox's own)."""
        self.start()
        if threading.current_thread() is self._thread:
            raise RuntimeError("Sandbox.run_sync cannot be called from the sandbox's own thread")
        assert self._loop is not None and self._state is not None
        job = self._state.run(code, stdin, limits or self.limits, dict(files or {}), fetch_files)
        return asyncio.run_coroutine_threadsafe(job, self._loop).result()

    def info(self) -> dict:
        """The level in use, its layers, the worker's pid and preloaded modules."""
        state = self.start()._state
        assert state is not None
        return state.describe()

    def close(self) -> None:
        """Stop the worker (killing runs in flight), remove the run root and cgroups."""
        with self._lock:
            state, loop, thread = self._state, self._loop, self._thread
            self._state = self._loop = self._thread = None
        if state is None or loop is None or thread is None:
            return
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(state.stop(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()
        state.close_sync()
        _open_sandboxes.discard(self)

    def __enter__(self) -> Sandbox:
        return self.start()

    def __exit__(self, *_exc) -> None:
        self.close()

    async def __aenter__(self) -> Sandbox:
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(self, *_exc) -> None:
        await asyncio.to_thread(self.close)


class _State:
    """What a started sandbox owns; lives on the sandbox's loop thread."""

    def __init__(self, level: str, sandbox: Sandbox) -> None:
        self.level = level
        self.sandbox = sandbox
        self.cgroups = CgroupManager.detect() if sandbox.use_cgroups else None
        limits = sandbox.limits
        worst_case = sandbox.max_concurrency * (limits.memory_mb + 64) << 20
        self.runs_root = _runs_root(self.cgroups is not None, worst_case)
        abi = landlock.abi_version() if level != "rlimits" else 0
        nproc = 0
        if self.cgroups is None and os.geteuid() != 0:
            # RLIMIT_NPROC counts every process of this user: leave room for what exists.
            budget = sandbox.limits.max_processes * sandbox.max_concurrency
            nproc = _user_process_count() + budget + 64
        self.options = {
            "landlock_abi": abi,
            "seccomp": seccomp.supported(),
            "nproc_limit": nproc,
            "spares": min(sandbox.max_concurrency, 4),  # children forked ahead of time
        }
        self.worker: Worker | None = None
        self.semaphore: asyncio.Semaphore | None = None
        self.restart_lock: asyncio.Lock | None = None
        self.tasks: set[asyncio.Task] = set()

    async def start(self) -> None:
        self.semaphore = asyncio.Semaphore(self.sandbox.max_concurrency)
        self.restart_lock = asyncio.Lock()
        await self._ensure_worker()

    async def _ensure_worker(self) -> Worker:
        assert self.restart_lock is not None
        async with self.restart_lock:
            if self.worker is None or self.worker.dead:
                if self.worker is not None:
                    self.worker.close()
                worker = Worker(self.level, self.runs_root, self.sandbox.preload, self.options)
                await worker.start()
                self.worker = worker
            return self.worker

    async def run(self, code, stdin, limits, files, fetch_files) -> RunResult:
        assert self.semaphore is not None
        task = asyncio.current_task()
        if task is not None:
            self.tasks.add(task)
        try:
            async with self.semaphore:
                try:
                    worker = await self._ensure_worker()
                except SandboxError as exc:
                    return RunResult.sandbox_error(str(exc), self.level)
                executor = Executor(worker, self.cgroups, self.level)
                return await executor.execute(code, stdin, limits, files, fetch_files)
        finally:
            if task is not None:
                self.tasks.discard(task)

    def describe(self) -> dict:
        layers = ["namespaces"] if self.level == "bwrap" else []
        layers += ["landlock"] if self.options["landlock_abi"] else []
        layers += ["seccomp"] if self.options["seccomp"] else []
        layers += ["rlimits"] + (["cgroups"] if self.cgroups else [])
        worker = self.worker.info if self.worker else {}
        return {
            "isolation": self.level,
            "layers": layers,
            "landlock_abi": self.options["landlock_abi"],
            "cgroups": f"v{self.cgroups.version}" if self.cgroups else "none",
            # The worker's top process: bubblewrap's at the bwrap level, else the zygote.
            "worker_pid": self.worker.proc.pid if self.worker and self.worker.proc else None,
            "preloaded": worker.get("preloaded", []),
            "preload_failed": worker.get("preload_failed", []),
            "max_concurrency": self.sandbox.max_concurrency,
            "spares": self.options["spares"],
            "process_limit": self.process_limit(),
            "runs_root": self.runs_root,
        }

    def process_limit(self) -> str:
        """How the number of processes of a run is bounded: "cgroup", "rlimit" or "none"."""
        if self.cgroups is not None:
            return "cgroup"
        # RLIMIT_NPROC does not apply to root (uid 0 outside or mapped to it inside bwrap).
        return "rlimit" if self.options["nproc_limit"] else "none"

    async def stop(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=10)
        if self.worker is not None:
            self.worker.close()

    def close_sync(self) -> None:
        """Last cleanup, from any thread once the loop has stopped."""
        if self.worker is not None and not self.worker.dead:
            with contextlib.suppress(Exception):
                self.worker.close()
        rundir.remove(self.runs_root)
        if self.cgroups is not None:
            self.cgroups.close()


@atexit.register
def _close_open_sandboxes() -> None:
    for sandbox in list(_open_sandboxes):
        with contextlib.suppress(Exception):
            sandbox.close()
