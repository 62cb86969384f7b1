"""Many runs at once, cancellation and worker crashes: nothing may leak (processes, zombies,
files, descriptors, cgroups) and the sandbox must keep working."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import pytest

from toolrl.sandbox import testing
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits

# (code, check) pairs; each check sees one RunResult.
MIXED = [
    ("print(1)", lambda r: r.status == "Success" and r.stdout == "1\n"),
    ("print(input()[::-1])", lambda r: r.stdout == "olleh\n"),
    ("while True: pass", lambda r: r.run_result.status == "TimeLimitExceeded"),
    ("x = bytearray(16 * 1024**3)", lambda r: r.run_result.limit_exceeded == "memory"),
    (
        "import os\npids = [os.fork() for _ in range(3)]\n"
        "if 0 in pids: os._exit(0)\n[os.waitpid(p, 0) for p in pids]\nprint('forked')",
        lambda r: r.status == "Success" and r.stdout == "forked\n",
    ),
    ("while True: print('y' * 4096)", lambda r: r.run_result.limit_exceeded == "output"),
    ("raise ValueError('boom')", lambda r: "ValueError: boom" in r.stderr),
    ("import ctypes\nctypes.string_at(0)", lambda r: r.run_result.return_code == -11),
]


def _snapshot() -> tuple[set[int], list[int]]:
    return testing.open_fds(), testing.zombie_children()


def _assert_no_leaks(sandbox: Sandbox, fds_before: set[int]) -> None:
    info = sandbox.info()
    found = testing.wait_for_idle_worker(info)
    assert len(found) == testing.idle_worker_processes(info), found
    assert "Z" not in found.values()
    assert testing.zombie_children() == []
    assert os.listdir(info["runs_root"]) == []
    assert testing.open_fds() == fds_before
    cgroup_runs = [
        os.path.join(root, name)
        for root in _sandbox_cgroup_dirs(sandbox)
        for name in os.listdir(root)
        if os.path.isdir(os.path.join(root, name))
    ]
    assert cgroup_runs == [], cgroup_runs


def _sandbox_cgroup_dirs(sandbox: Sandbox) -> list[str]:
    manager = sandbox._state.cgroups  # type: ignore[union-attr]
    return list(manager._bases) if manager is not None else []


def test_64_mixed_runs_in_parallel(sandbox: Sandbox) -> None:
    limits = Limits(timeout_s=0.5, memory_mb=256, max_processes=32, max_output_bytes=32 << 10)
    fds_before, _ = _snapshot()

    async def main():
        jobs = [MIXED[i % len(MIXED)] for i in range(64)]
        results = await asyncio.gather(
            *(sandbox.run(code, stdin="hello", limits=limits) for code, _ in jobs)
        )
        return list(zip(jobs, results, strict=True))

    for (code, check), result in asyncio.run(main()):
        assert check(result), (code, result.to_dict())
    _assert_no_leaks(sandbox, fds_before)


def test_hundreds_of_runs_in_flight(strongest_sandbox: Sandbox) -> None:
    fds_before, _ = _snapshot()

    async def main():
        return await asyncio.gather(*(strongest_sandbox.run(f"print({i})") for i in range(300)))

    results = asyncio.run(main())
    assert [r.stdout for r in results] == [f"{i}\n" for i in range(300)]
    _assert_no_leaks(strongest_sandbox, fds_before)


def test_cancelled_run_is_killed_and_cleaned(strongest_sandbox: Sandbox) -> None:
    fds_before, _ = _snapshot()
    long = Limits(timeout_s=30)

    async def main():
        task = asyncio.ensure_future(
            strongest_sandbox.run("import time\ntime.sleep(30)", limits=long)
        )
        await asyncio.sleep(0.5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    started = time.monotonic()
    asyncio.run(main())
    assert time.monotonic() - started < 5
    _assert_no_leaks(strongest_sandbox, fds_before)


def test_run_sync_from_many_threads(strongest_sandbox: Sandbox) -> None:
    results: list[str] = []

    def worker(i: int) -> None:
        results.append(strongest_sandbox.run_sync(f"print({i} * 2)").stdout)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(f"{i * 2}\n" for i in range(16))


def test_worker_crash_is_a_sandbox_error_then_recovers() -> None:
    with Sandbox("auto", allow_weak_isolation=True, max_concurrency=2) as sandbox:
        first_worker = sandbox.info()["worker_pid"]

        async def main():
            slow = asyncio.ensure_future(
                sandbox.run("import time\ntime.sleep(20)", limits=Limits(timeout_s=30))
            )
            await asyncio.sleep(0.5)
            os.kill(first_worker, signal.SIGKILL)  # the worker dies under a running program
            return await slow

        crashed = asyncio.run(main())
        assert crashed.status == "SandboxError", crashed.to_dict()
        after = sandbox.run_sync("print('recovered')")
        assert after.stdout == "recovered\n", after.to_dict()
        assert sandbox.info()["worker_pid"] != first_worker
        assert testing.zombie_children() == []
