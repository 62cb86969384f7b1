"""Which isolation the machine offers, strongest first, and what each level mounts or allows.

Levels (see `toolrl sandbox info`):

- ``bwrap``: the worker lives in bubblewrap's user, pid, network, ipc, uts and cgroup namespaces,
  with no capabilities, no nested user namespaces, a new session, read-only binds of only what
  Python needs (system libraries, the interpreter and its site-packages, a few /etc files), a
  private /proc and /dev and a small tmpfs /tmp; the run root is the only writable bind. Each run
  then adds the Landlock and seccomp layers below when the kernel has them.
- ``landlock``: no namespaces (works in unprivileged containers); each run restricts itself with
  Landlock (read the system's Python and libraries, write only its own directory, no TCP, and
  from ABI 6 signals and abstract Unix sockets scoped to itself) and seccomp (see `seccomp.py`),
  drops every capability, and gets rlimits.
- ``rlimits``: resource limits, a new session, dropped capabilities and (when available) the
  seccomp filter, but no filesystem isolation. Refused unless allowed explicitly
  (``allow_weak_isolation=True`` or ``TOOLRL_SANDBOX_ALLOW_WEAK=1``).

At every level: wall-clock and CPU time, address space, open files, file size, an empty
environment, a fresh directory removed afterwards, every process of the run killed through its
process group (which seccomp keeps it from leaving) and reaped. cgroups (memory and pids per
run) are added wherever they are writable; without them the process limit is RLIMIT_NPROC, which
counts all of the user's processes and does not apply to root.

Not enforced: a disk quota on the run directory (only per-file size, plus the memory cgroup
when the run root is on tmpfs); CPU share between runs; signal scoping on Landlock < 6 at the
landlock level (a run could signal other processes of the same user); without Landlock, runs
in one bwrap worker share its pid namespace and run root.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass

from toolrl.sandbox import landlock, seccomp
from toolrl.sandbox.cgroups import CgroupManager
from toolrl.sandbox.result import SandboxUnavailable

LEVELS = ("bwrap", "landlock", "rlimits")
WEAK_ENV = "TOOLRL_SANDBOX_ALLOW_WEAK"
# Inside bubblewrap the host's run root is mounted here.
SANDBOX_MOUNT = "/sandbox"

# Files under /etc a Python program may legitimately read; /etc as a whole holds secrets.
_ETC_FILES = (
    "/etc/ld.so.cache",
    "/etc/ld.so.conf",
    "/etc/ld.so.conf.d",
    "/etc/localtime",
    "/etc/timezone",
    "/etc/passwd",
    "/etc/group",
    "/etc/nsswitch.conf",
    "/etc/alternatives",
    "/etc/mime.types",
)
_SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
_READ_ONLY_EXTRA = (
    "/dev/urandom",
    "/dev/random",
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/sys/devices/system/cpu",
)
_DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")


@dataclass(frozen=True)
class LevelStatus:
    """Whether one isolation level can be used here, and why (not)."""

    name: str
    available: bool
    reason: str


def toolrl_package_dir() -> str:
    """The directory of the toolrl package (the worker imports it from there)."""
    import toolrl

    return os.path.dirname(os.path.abspath(toolrl.__file__))


def python_paths() -> list[str]:
    """Directories the interpreter and its installed packages live in (read-only in a run)."""
    paths = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix}
    paths.add(toolrl_package_dir())
    for entry in sys.path:
        # Site directories outside the prefixes (e.g. a PYTHONPATH checkout) must stay readable.
        if entry and os.path.isdir(entry) and "site-packages" in entry:
            paths.add(os.path.abspath(entry))
    return sorted(p for p in paths if not any(p.startswith(d + "/") for d in _SYSTEM_DIRS))


def run_read_paths() -> list[str]:
    """What a run may read (besides its own directory): system libraries, Python, a few files."""
    return [*_SYSTEM_DIRS, *_ETC_FILES, *_READ_ONLY_EXTRA, *python_paths()]


def run_write_paths() -> list[str]:
    """Device files every run may write (besides its own directory)."""
    return list(_DEVICES_RW)


@functools.lru_cache(maxsize=1)
def bwrap_version() -> tuple[str | None, str]:
    """(path to a working bwrap or None, version or the reason it does not work)."""
    path = shutil.which("bwrap")
    if path is None:
        return None, "bwrap not found (install the Debian package `bubblewrap`)"
    probe = [path, "--unshare-all", "--die-with-parent", "--ro-bind", "/", "/", "true"]
    try:
        subprocess.run(probe, check=True, capture_output=True, timeout=20)
        version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=20)
    except subprocess.CalledProcessError as exc:
        detail = exc.stderr.decode(errors="replace").strip() or f"exit code {exc.returncode}"
        return None, f"bwrap cannot create namespaces here: {detail}"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"bwrap failed to start: {exc}"
    return path, version.stdout.strip().removeprefix("bubblewrap ") or "unknown"


def level_statuses() -> list[LevelStatus]:
    """The three levels, strongest first, each with availability and a reason."""
    path, bwrap_detail = bwrap_version()
    abi = landlock.abi_version()
    has_seccomp = seccomp.supported()
    statuses = [LevelStatus("bwrap", path is not None, f"bubblewrap {bwrap_detail}")]
    if abi >= 1 and has_seccomp:
        reason = f"Landlock ABI {abi} + seccomp"
        if abi < 6:
            reason += " (no signal scoping before ABI 6: runs can signal this user's processes)"
        statuses.append(LevelStatus("landlock", True, reason))
    else:
        missing = [n for n, ok in (("Landlock", abi >= 1), ("seccomp", has_seccomp)) if not ok]
        statuses.append(LevelStatus("landlock", False, " and ".join(missing) + " unavailable"))
    statuses.append(
        LevelStatus("rlimits", True, "rlimits only: no filesystem or network isolation")
    )
    return statuses


def weak_allowed(flag: bool | None) -> bool:
    """`allow_weak_isolation` if given, else the TOOLRL_SANDBOX_ALLOW_WEAK environment variable."""
    if flag is not None:
        return flag
    return os.environ.get(WEAK_ENV, "").strip().lower() in ("1", "true", "yes")


def acceptable_levels(requested: str = "auto", allow_weak: bool | None = None) -> list[str]:
    """The levels that may be used, strongest first: `requested` alone, or for "auto" every
    available level (rlimits only if weak isolation is allowed).

    Raises SandboxUnavailable saying what is missing and how to fix it when there is none.
    """
    if requested not in ("auto", *LEVELS):
        raise ValueError(f"isolation must be one of auto, {', '.join(LEVELS)}; got {requested!r}")
    statuses = {s.name: s for s in level_statuses()}
    candidates = LEVELS if requested == "auto" else (requested,)
    levels = [
        name
        for name in candidates
        if statuses[name].available and (name != "rlimits" or weak_allowed(allow_weak))
    ]
    if levels:
        return levels
    reasons = "; ".join(f"{s.name}: {s.reason}" for s in statuses.values() if not s.available)
    raise SandboxUnavailable(
        f"no acceptable sandbox isolation (requested {requested!r}). {reasons}. Install "
        f"bubblewrap, or allow the weak rlimits-only level explicitly with "
        f"allow_weak_isolation=True or {WEAK_ENV}=1 if you trust the code."
    )


def choose_level(requested: str = "auto", allow_weak: bool | None = None) -> str:
    """The strongest acceptable level (see `acceptable_levels`)."""
    return acceptable_levels(requested, allow_weak)[0]


def describe() -> dict:
    """Everything `toolrl sandbox info` reports, as plain data."""
    path, _ = bwrap_version()
    try:
        chosen = choose_level("auto")
    except SandboxUnavailable as exc:
        chosen = f"none ({exc})"
    return {
        "levels": [s.__dict__ for s in level_statuses()],
        "default_level": chosen,
        "bwrap": path,
        "landlock_abi": landlock.abi_version(),
        "seccomp": seccomp.supported(),
        "cgroups": CgroupManager.describe(),
        "user": "root" if os.geteuid() == 0 else str(os.geteuid()),
        "python": sys.executable,
    }


def bwrap_argv(bwrap: str, runs_root: str, command: list[str], env: dict[str, str]) -> list[str]:
    """The bubblewrap command line that runs `command` as the sandbox's worker."""
    argv = [bwrap, "--unshare-all", "--unshare-user", "--die-with-parent", "--new-session"]
    if os.geteuid() == 0:
        # As root bwrap keeps capabilities inside the namespaces unless told otherwise.
        argv += ["--cap-drop", "ALL"]
    argv += ["--disable-userns"] if _bwrap_has("--disable-userns") else []
    for path in _SYSTEM_DIRS:
        if os.path.islink(path):
            argv += ["--symlink", os.readlink(path), path]
        elif os.path.isdir(path):
            argv += ["--ro-bind", path, path]
    argv += ["--proc", "/proc", "--dev", "/dev"]
    argv += ["--size", str(16 << 20)] if _bwrap_has("--size") else []
    argv += ["--tmpfs", "/tmp"]
    # After the tmpfs: a virtualenv or checkout under /tmp (a CI clone, say) is bound on top of
    # the empty /tmp instead of being hidden by it.
    for path in (*_ETC_FILES, *python_paths()):
        argv += ["--ro-bind-try", path, path]
    argv += ["--bind", runs_root, SANDBOX_MOUNT, "--chdir", SANDBOX_MOUNT]
    argv += ["--clearenv"]
    for key, value in env.items():
        argv += ["--setenv", key, value]
    return [*argv, "--", *command]


@functools.lru_cache(maxsize=8)
def _bwrap_has(option: str) -> bool:
    path, _ = bwrap_version()
    if path is None:
        return False
    result = subprocess.run([path, "--help"], capture_output=True, text=True, timeout=20)
    return option in result.stdout + result.stderr
