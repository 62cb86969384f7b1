"""Per-run cgroups for memory and process limits, where this process may create them.

Used by the trusted parent only. Each sandbox gets a group named `toolrl-sandbox-<pid>-<n>`
inside this process's own cgroup (so limits set by whoever started us still apply above it), and
each run a child group there that its processes join before the user's code starts. Both cgroup
v1 (separate `memory` and `pids` hierarchies) and v2 (one unified hierarchy, when its `memory`
and `pids` controllers are delegated to our group's children) are handled. When neither is
writable the sandbox falls back to rlimits, and `CgroupManager.create()` returns None.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import time
from dataclasses import dataclass

_counter = itertools.count()


@dataclass(frozen=True)
class _Hierarchy:
    """One place to create groups: a v2 directory, or a v1 directory for one controller."""

    path: str  # this process's own group in that hierarchy
    version: int
    controller: str  # "memory", "pids" or "unified"


def _mounts() -> list[tuple[str, str, set[str]]]:
    """(mount point, fstype, super options) of every cgroup filesystem visible here."""
    found = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, tail = left.split(), right.split()
        if len(fields) >= 5 and len(tail) >= 3 and tail[0] in ("cgroup", "cgroup2"):
            found.append((fields[4], tail[0], set(tail[2].split(","))))
    return found


def _own_groups() -> dict[str, str]:
    """Controller name (or "" for v2) -> this process's group path, from /proc/self/cgroup."""
    groups = {}
    with contextlib.suppress(OSError), open("/proc/self/cgroup") as f:
        for line in f.read().splitlines():
            _, controllers, path = line.split(":", 2)
            for name in controllers.split(",") if controllers else [""]:
                groups[name] = path
    return groups


def _writable_dir(path: str) -> bool:
    probe = os.path.join(path, f"toolrl-probe-{os.getpid()}-{next(_counter)}")
    try:
        os.mkdir(probe)
    except OSError:
        return False
    with contextlib.suppress(OSError):
        os.rmdir(probe)
    return True


def _find_hierarchies(
    mounts: list[tuple[str, str, set[str]]] | None = None, groups: dict[str, str] | None = None
) -> list[_Hierarchy]:
    """Writable memory+pids hierarchies: one v2 group, or the v1 memory and pids groups."""
    groups = _own_groups() if groups is None else groups
    v1: dict[str, _Hierarchy] = {}
    for mount, fstype, options in _mounts() if mounts is None else mounts:
        if fstype == "cgroup":
            for name in ("memory", "pids"):
                if name in options and name in groups and name not in v1:
                    path = mount + groups[name].rstrip("/")
                    if _writable_dir(path):
                        v1[name] = _Hierarchy(path, 1, name)
        elif fstype == "cgroup2" and "" in groups:
            path = mount + groups[""].rstrip("/")
            try:
                with open(os.path.join(path, "cgroup.subtree_control")) as f:
                    delegated = set(f.read().split())
            except OSError:
                continue
            if {"memory", "pids"} <= delegated and _writable_dir(path):
                return [_Hierarchy(path, 2, "unified")]
    if "memory" in v1 and "pids" in v1:
        return [v1["memory"], v1["pids"]]
    return []


def _write(path: str, value: str) -> None:
    with open(path, "w") as f:
        f.write(value)


class RunCgroup:
    """The cgroup(s) of one run: join, ask whether the OOM killer struck, kill, remove."""

    def __init__(self, dirs: list[tuple[_Hierarchy, str]]) -> None:
        self._dirs = dirs

    def add(self, pid: int) -> None:
        """Move `pid` (a host pid) into this run's group(s)."""
        for _, path in self._dirs:
            _write(os.path.join(path, "cgroup.procs"), str(pid))

    def oom_killed(self) -> bool:
        """Whether the kernel's OOM killer killed a process of this run."""
        for hierarchy, path in self._dirs:
            name = "memory.events" if hierarchy.version == 2 else "memory.oom_control"
            if hierarchy.controller == "pids":
                continue
            try:
                with open(os.path.join(path, name)) as f:
                    for line in f.read().splitlines():
                        key, _, value = line.partition(" ")
                        if key == "oom_kill" and int(value) > 0:
                            return True
            except (OSError, ValueError):
                pass
        return False

    def pids(self) -> list[int]:
        """Host pids still in this run's group."""
        path = self._dirs[-1][1]
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                return [int(p) for p in f.read().split()]
        except (OSError, ValueError):
            return []

    def kill_all(self, attempts: int = 50) -> bool:
        """SIGKILL every process left in the group; True once it is empty."""
        for _ in range(attempts):
            hierarchy, path = self._dirs[-1]
            if hierarchy.version == 2 and os.path.exists(os.path.join(path, "cgroup.kill")):
                with contextlib.suppress(OSError):
                    _write(os.path.join(path, "cgroup.kill"), "1")
            pids = self.pids()
            if not pids:
                return True
            for pid in pids:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)
        return not self.pids()

    def remove(self) -> None:
        """Remove the group(s); a group that still has processes is killed first."""
        for _, path in self._dirs:
            for _ in range(100):
                try:
                    os.rmdir(path)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    self.kill_all(attempts=1)
                    time.sleep(0.005)


class CgroupManager:
    """Creates run groups under one sandbox-wide group; `None` from `detect()` if impossible."""

    def __init__(self, hierarchies: list[_Hierarchy]) -> None:
        self._hierarchies = hierarchies
        name = f"toolrl-sandbox-{os.getpid()}-{next(_counter)}"
        self._bases = [os.path.join(h.path, name) for h in hierarchies]
        for base in self._bases:
            os.makedirs(base, exist_ok=True)
        self.version = hierarchies[0].version

    @classmethod
    def detect(cls) -> CgroupManager | None:
        """A manager if memory and pids cgroups can be created here, else None."""
        try:
            hierarchies = _find_hierarchies()
            return cls(hierarchies) if hierarchies else None
        except OSError:
            return None

    @staticmethod
    def describe() -> str:
        """'v1', 'v2' or 'none': what `detect()` would find, without keeping anything."""
        hierarchies = _find_hierarchies()
        return f"v{hierarchies[0].version}" if hierarchies else "none"

    def create(self, run_id: str, memory_bytes: int, max_pids: int) -> RunCgroup:
        """A new group for one run with the given memory (bytes, no swap) and task limits."""
        dirs = []
        try:
            for hierarchy, base in zip(self._hierarchies, self._bases, strict=True):
                path = os.path.join(base, run_id)
                os.mkdir(path)
                dirs.append((hierarchy, path))
                self._limit(hierarchy, path, memory_bytes, max_pids)
        except OSError:
            RunCgroup(dirs).remove()
            raise
        return RunCgroup(dirs)

    @staticmethod
    def _limit(hierarchy: _Hierarchy, path: str, memory_bytes: int, max_pids: int) -> None:
        if hierarchy.version == 2:
            _write(os.path.join(path, "memory.max"), str(memory_bytes))
            with contextlib.suppress(OSError):  # absent without swap accounting
                _write(os.path.join(path, "memory.swap.max"), "0")
            _write(os.path.join(path, "pids.max"), str(max_pids))
        elif hierarchy.controller == "memory":
            _write(os.path.join(path, "memory.limit_in_bytes"), str(memory_bytes))
            with contextlib.suppress(OSError):
                _write(os.path.join(path, "memory.memsw.limit_in_bytes"), str(memory_bytes))
        else:
            _write(os.path.join(path, "pids.max"), str(max_pids))

    def close(self) -> None:
        """Remove the sandbox-wide group(s) (run groups must be gone already)."""
        for base in self._bases:
            with contextlib.suppress(OSError):
                os.rmdir(base)
