"""Landlock through raw syscalls (Linux >= 5.13), with no dependency beyond ctypes.

Landlock lets an unprivileged process restrict itself, and every process it later creates, to
an allow-list of file hierarchies; newer ABIs add TCP bind/connect rules (ABI 4) and scoping
(ABI 6: no signals to, and no abstract Unix sockets of, processes outside the caller's domain).
A restriction can only ever be narrowed, survives fork and execve, and applies to root too.

The numbers below come from the kernel's `include/uapi/linux/landlock.h`; the three syscalls
have the same numbers on every architecture (they were added after the syscall tables merged).
"""

from __future__ import annotations

import ctypes
import os
import stat
from collections.abc import Iterable

_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1
_PR_SET_NO_NEW_PRIVS = 38

# Filesystem access rights, with the ABI that introduced each.
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_REMOVE_DIR = 1 << 4
FS_REMOVE_FILE = 1 << 5
FS_MAKE_CHAR = 1 << 6
FS_MAKE_DIR = 1 << 7
FS_MAKE_REG = 1 << 8
FS_MAKE_SOCK = 1 << 9
FS_MAKE_FIFO = 1 << 10
FS_MAKE_BLOCK = 1 << 11
FS_MAKE_SYM = 1 << 12
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1  # ABI 4
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1  # ABI 6

_FS_ABI1 = (1 << 13) - 1
_READ = FS_EXECUTE | FS_READ_FILE | FS_READ_DIR
# Rights that make sense on a regular file (the kernel rejects directory rights on files).
_FILE_RIGHTS = FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | FS_TRUNCATE | FS_IOCTL_DEV


class _RulesetAttr(ctypes.Structure):
    _fields_ = (
        ("handled_access_fs", ctypes.c_uint64),
        ("handled_access_net", ctypes.c_uint64),
        ("scoped", ctypes.c_uint64),
    )


class _PathBeneathAttr(ctypes.Structure):
    _pack_ = 1
    _fields_ = (("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32))


_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def _syscall(number: int, *args: int | ctypes.c_void_p) -> int:
    """Call a raw syscall; every argument goes through a full register (`long`)."""
    wide = [a if isinstance(a, ctypes.c_void_p) else ctypes.c_long(a) for a in args]
    result = _libc.syscall(ctypes.c_long(number), *wide)
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"landlock syscall {number}: {os.strerror(err)}")
    return result


def abi_version() -> int:
    """The Landlock ABI this kernel offers, or 0 when Landlock is missing or disabled."""
    try:
        return _syscall(_SYS_CREATE_RULESET, ctypes.c_void_p(None), 0, _CREATE_RULESET_VERSION)
    except OSError:
        return 0


def handled_fs_rights(abi: int) -> int:
    """Every filesystem right the given ABI knows, so all of them are denied unless allowed."""
    rights = _FS_ABI1
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def set_no_new_privs() -> None:
    """Forbid gaining privileges through execve (setuid bits, file capabilities)."""
    if _libc.prctl(_PR_SET_NO_NEW_PRIVS, ctypes.c_ulong(1), 0, 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_NO_NEW_PRIVS): {os.strerror(err)}")


class Ruleset:
    """A Landlock ruleset being built: handled rights are all the ABI knows, so whatever is not
    allowed by a rule is denied. TCP bind/connect is denied (ABI >= 4) and, from ABI 6, signals
    and abstract Unix sockets are scoped to the domain. Rules may be added ahead of time (the
    sandbox's spares add the system paths before a run is assigned, the run's own directory
    after). `restrict_self()` applies it to the calling thread and its future children."""

    def __init__(self, abi: int | None = None) -> None:
        self.abi = abi_version() if abi is None else abi
        if self.abi < 1:
            raise OSError("Landlock is not available on this kernel")
        self.fs_rights = handled_fs_rights(self.abi)
        attr = _RulesetAttr(self.fs_rights, 0, 0)
        size = 8
        if self.abi >= 4:
            attr.handled_access_net = NET_BIND_TCP | NET_CONNECT_TCP  # no rule: all TCP denied
            size = 16
        if self.abi >= 6:
            attr.scoped = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL
            size = 24
        self.fd = _syscall(_SYS_CREATE_RULESET, ctypes.c_void_p(ctypes.addressof(attr)), size, 0)

    def allow_read(self, paths: Iterable[str]) -> None:
        """Allow reading and executing beneath each existing path."""
        for path in paths:
            _add_path_rule(self.fd, path, _READ | (FS_IOCTL_DEV if self.abi >= 5 else 0))

    def allow_write(self, paths: Iterable[str]) -> None:
        """Allow everything (create, write, remove, ...) beneath each existing path."""
        for path in paths:
            _add_path_rule(self.fd, path, self.fs_rights)

    def restrict_self(self) -> None:
        """Set no_new_privs (Landlock requires it) and enforce the ruleset; closes it."""
        try:
            set_no_new_privs()
            _syscall(_SYS_RESTRICT_SELF, self.fd, 0)
        finally:
            self.close()

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def restrict(
    read_paths: Iterable[str], write_paths: Iterable[str], *, abi: int | None = None
) -> int:
    """Restrict this process to reading `read_paths` and writing only `write_paths`.

    Paths that do not exist are skipped. Returns the ABI used; raises OSError, naming the path,
    when a step fails.
    """
    ruleset = Ruleset(abi)
    try:
        ruleset.allow_read(read_paths)
        ruleset.allow_write(write_paths)
        ruleset.restrict_self()
    finally:
        ruleset.close()
    return ruleset.abi


def _add_path_rule(ruleset: int, path: str, rights: int) -> None:
    try:
        fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except FileNotFoundError:
        return
    try:
        if not stat.S_ISDIR(os.fstat(fd).st_mode):
            rights &= _FILE_RIGHTS
        attr = _PathBeneathAttr(rights, fd)
        try:
            _syscall(_SYS_ADD_RULE, ruleset, _RULE_PATH_BENEATH, ctypes.addressof(attr), 0)
        except OSError as exc:
            raise OSError(exc.errno, f"landlock rule for {path!r}: {exc.strerror}") from None
    finally:
        os.close(fd)
