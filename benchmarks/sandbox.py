"""Sandbox speed, side by side with a bare interpreter, in one run.

For `print(1)` and `import numpy; print(numpy.arange(3).sum())`, at concurrency 1, 2, 4 and 8:
per-run latency (p50, p95) and throughput of every isolation level available here, next to
`python -c` of the same code with the same interpreter (`sys.executable`, which has numpy).
Prints a table, then the ratios against the targets of issue 3:

- isolated `print(1)` p50 <= bare p50 (ratio <= 1.0);
- the numpy program p50 <= 0.5 x bare;
- >= 60 isolated runs/s at concurrency 4.

Usage: python benchmarks/sandbox.py [--runs N] [--bare-runs N] [--levels bwrap,landlock]
Timings are only comparable on a quiet machine: other load inflates both sides unevenly.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import time

from toolrl.sandbox import isolation
from toolrl.sandbox.local import Sandbox
from toolrl.sandbox.result import Limits

PROGRAMS = {
    "print(1)": "print(1)",
    "numpy": "import numpy; print(numpy.arange(3).sum())",
}
EXPECTED = {"print(1)": "1\n", "numpy": "3\n"}
CONCURRENCY = (1, 2, 4, 8)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def measure(run_one, runs: int, concurrency: int) -> dict:
    """Latencies (s) of `runs` calls of `run_one()` with `concurrency` in flight, and runs/s."""
    semaphore = asyncio.Semaphore(concurrency)
    latencies: list[float] = []

    async def timed():
        async with semaphore:
            started = time.perf_counter()
            await run_one()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(timed() for _ in range(runs)))
    wall = time.perf_counter() - started
    return {
        "p50": statistics.median(latencies) * 1000,
        "p95": percentile(latencies, 0.95) * 1000,
        "rate": runs / wall,
    }


def bare_runner(code: str, expected: str):
    async def run_one():
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        out, err = await process.communicate()
        assert out.decode() == expected, (out, err)

    return run_one


def sandbox_runner(sandbox: Sandbox, code: str, expected: str):
    async def run_one():
        result = await sandbox.run(code)
        assert result.stdout == expected, result.to_dict()

    return run_one


async def bench_all(levels: list[str], runs: int, bare_runs: int) -> dict:
    table: dict[tuple[str, str, int], dict] = {}
    for name, code in PROGRAMS.items():
        runner = bare_runner(code, EXPECTED[name])
        await measure(runner, 3, 1)  # warm the page cache
        for concurrency in CONCURRENCY:
            table[("bare", name, concurrency)] = await measure(runner, bare_runs, concurrency)
    for level in levels:
        sandbox = Sandbox(level, limits=Limits(timeout_s=10), allow_weak_isolation=True)
        await asyncio.to_thread(sandbox.start)
        try:
            for name, code in PROGRAMS.items():
                runner = sandbox_runner(sandbox, code, EXPECTED[name])
                await measure(runner, 10, 2)  # warm-up
                for concurrency in CONCURRENCY:
                    table[(level, name, concurrency)] = await measure(runner, runs, concurrency)
        finally:
            await asyncio.to_thread(sandbox.close)
    return table


def report(table: dict, levels: list[str]) -> None:
    print(f"{'program':<9} {'backend':<9} {'conc':>4} {'p50 ms':>8} {'p95 ms':>8} {'runs/s':>8}")
    for name in PROGRAMS:
        for backend in ["bare", *levels]:
            for concurrency in CONCURRENCY:
                row = table[(backend, name, concurrency)]
                print(
                    f"{name:<9} {backend:<9} {concurrency:>4} {row['p50']:>8.1f} "
                    f"{row['p95']:>8.1f} {row['rate']:>8.1f}"
                )
        print()
    print("targets (p50 ratios at concurrency 1; throughput at concurrency 4):")
    bare_print = table[("bare", "print(1)", 1)]["p50"]
    bare_numpy = table[("bare", "numpy", 1)]["p50"]
    for level in levels:
        ratio_print = table[(level, "print(1)", 1)]["p50"] / bare_print
        ratio_numpy = table[(level, "numpy", 1)]["p50"] / bare_numpy
        rate = table[(level, "print(1)", 4)]["rate"]
        verdict = "ok" if ratio_print <= 1.0 and ratio_numpy <= 0.5 and rate >= 60 else "MISSED"
        print(
            f"  {level:<9} print(1) {ratio_print:.2f}x bare (<= 1.0)   "
            f"numpy {ratio_numpy:.2f}x bare (<= 0.5)   {rate:.0f} runs/s at c=4 (>= 60)   {verdict}"
        )


def system_python_reference() -> str:
    """`python3 -c print(1)` of the system interpreter (no site-packages), for context."""
    system = shutil.which("python3", path="/usr/bin:/bin")
    if not system:
        return ""
    times = []
    for _ in range(15):
        started = time.perf_counter()
        subprocess.run([system, "-c", "print(1)"], capture_output=True, check=True)
        times.append(time.perf_counter() - started)
    return f"reference: {system} -c 'print(1)' p50 {statistics.median(times) * 1000:.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=120, help="sandboxed runs per cell")
    parser.add_argument("--bare-runs", type=int, default=24, help="bare interpreter runs per cell")
    parser.add_argument("--levels", default="", help="comma-separated levels (default: all here)")
    args = parser.parse_args()
    available = [s.name for s in isolation.level_statuses() if s.available]
    levels = [lv for lv in args.levels.split(",") if lv] or available
    print(f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}; bare = {sys.executable}")
    started = time.perf_counter()
    table = asyncio.run(bench_all(levels, args.runs, args.bare_runs))
    report(table, levels)
    print(system_python_reference())
    print(f"(took {time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
