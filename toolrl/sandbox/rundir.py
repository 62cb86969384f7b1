"""A run's working directory on the trusted side: create it with the request's files, fetch
files the run produced, remove it.

Fetching happens after every process of the run is dead, but the directory's content is still
hostile: a "result" may be a symlink to a secret, a hard link, a FIFO that blocks the reader, or
sit under a symlinked directory. Paths are therefore walked one component at a time with
O_NOFOLLOW, and only regular files with a single link are read.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import subprocess


class RunDirError(ValueError):
    """A file name in a request is not a plain relative path inside the run directory."""


def check_name(name: str) -> None:
    """Raise RunDirError unless `name` is a plain relative path inside a run directory."""
    _parts(name)


def _parts(name: str) -> list[str]:
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts or name.startswith("/") or ".." in parts or "\x00" in name:
        raise RunDirError(f"file name {name!r} must be a relative path inside the run directory")
    return parts


def create(path: str, files: dict[str, bytes] | None) -> None:
    """Make the run directory (mode 0700) and write `files` (relative name -> content) into it."""
    os.mkdir(path, 0o700)
    for name, content in (files or {}).items():
        parts = _parts(name)
        target = os.path.join(path, *parts)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        with open(target, "xb") as f:
            f.write(content)


def fetch(path: str, names: list[str] | tuple[str, ...], max_bytes: int) -> dict[str, bytes]:
    """Read the named files the run left behind; missing or unsafe ones are left out."""
    found = {}
    budget = max_bytes
    for name in names:
        with contextlib.suppress(OSError, RunDirError):
            content = _read_inside(path, _parts(name), budget)
            if content is not None:
                found[name] = content
                budget -= len(content)
    return found


def _read_inside(root: str, parts: list[str], max_bytes: int) -> bytes | None:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC
    dir_fd = os.open(root, flags | os.O_DIRECTORY)
    try:
        for part in parts[:-1]:
            next_fd = os.open(part, flags | os.O_DIRECTORY, dir_fd=dir_fd)
            os.close(dir_fd)
            dir_fd = next_fd
        fd = os.open(parts[-1], flags | os.O_NONBLOCK, dir_fd=dir_fd)
    finally:
        os.close(dir_fd)
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1 or info.st_size > max_bytes:
            return None
        chunks, total = [], 0
        while chunk := os.read(fd, 1 << 20):
            total += len(chunk)
            if total > max_bytes:
                return None
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def remove(path: str) -> None:
    """Delete the run directory, whatever the run did to it (deep trees, chmod 000)."""
    if not os.path.lexists(path):
        return
    with contextlib.suppress(OSError, RecursionError):
        shutil.rmtree(path)
    if os.path.lexists(path):
        # shutil.rmtree recurses in Python and needs read/execute rights on every directory;
        # coreutils walks with file descriptors to any depth. Symlinks are never followed.
        subprocess.run(["chmod", "-R", "u+rwx", path], capture_output=True, check=False)
        subprocess.run(["rm", "-rf", "--one-file-system", path], capture_output=True, check=False)
