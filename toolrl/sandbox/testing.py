"""Helpers to check that sandboxed runs leave nothing behind (used by the tests; handy when
debugging a leak): the processes below a pid, zombies, and this process's open descriptors."""

from __future__ import annotations

import os
import time


def process_table() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, state letter) for every process visible in /proc."""
    table = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # exited while we looked
        table[int(entry)] = (int(fields[1]), fields[0])
    return table


def descendants(pid: int) -> dict[int, str]:
    """pid -> state letter of every live descendant of `pid`."""
    table = process_table()
    found: dict[int, str] = {}
    frontier = [pid]
    while frontier:
        current = frontier.pop()
        for child, (parent, state) in table.items():
            if parent == current and child not in found:
                found[child] = state
                frontier.append(child)
    return found


def zombie_children(pid: int | None = None) -> list[int]:
    """Zombies among the descendants of `pid` (default: this process)."""
    return [p for p, state in descendants(pid or os.getpid()).items() if state == "Z"]


def open_fds() -> set[int]:
    """This process's open file descriptors."""
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def idle_worker_processes(info: dict) -> int:
    """How many processes an idle sandbox worker has below it (`info` is `Sandbox.info()`):
    its spare children, plus bubblewrap's own two processes at the bwrap level."""
    return info["spares"] + (2 if info["isolation"] == "bwrap" else 0)


def wait_for_idle_worker(info: dict, timeout_s: float = 5.0) -> dict[int, str]:
    """The worker's descendants once they are back to the idle count (or when time is up)."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = descendants(info["worker_pid"])
        if len(found) <= idle_worker_processes(info) or time.monotonic() > deadline:
            return found
        time.sleep(0.05)
