"""A seccomp-bpf deny-list for sandboxed runs, assembled by hand (no libseccomp needed).

The filter allows everything except the calls a Python program has no business making and that
would let it leave or damage its sandbox: debugging other processes (ptrace, process_vm_*),
namespaces and mounts (unshare, setns, clone with namespace flags, mount family), leaving its
process group (setsid, setpgid: the supervisor kills the run by process group), `kill(-1, ...)`,
sockets other than AF_UNIX, System V IPC objects (they outlive the run), io_uring, bpf,
perf_event_open, userfaultfd, keyrings, kernel modules, clocks, reboot and the like. Denied calls
fail with EPERM (clone3 with ENOSYS so the C library falls back to clone, whose flags we can
inspect); a foreign architecture or the x32 ABI kills the process.

Syscall numbers are per architecture; x86_64 and aarch64 are supported (`supported()` says).
"""

from __future__ import annotations

import ctypes
import errno
import os
import platform
import struct

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_RET_KILL_PROCESS = 0x80000000
# Classic BPF opcodes.
_LD_W_ABS = 0x20
_JEQ_K = 0x15
_JGE_K = 0x35
_JSET_K = 0x45
_RET_K = 0x06
# Offsets into struct seccomp_data (little-endian: the low 32 bits of an argument come first).
_OFF_NR = 0
_OFF_ARCH = 4


def _arg(index: int) -> int:
    return 16 + 8 * index


_AF_UNIX = 1
_TIOCSTI = 0x5412
# CLONE_NEWNS | NEWCGROUP | NEWUTS | NEWIPC | NEWUSER | NEWPID | NEWNET
_CLONE_NAMESPACE_FLAGS = 0x7E020000

_DENIED_EVERYWHERE = (  # noqa: SIM905 (a word list reads better than 54 quoted names)
    "ptrace process_vm_readv process_vm_writev unshare setns mount umount2 pivot_root chroot "
    "open_tree move_mount fsopen fsconfig fsmount fspick mount_setattr bpf perf_event_open "
    "userfaultfd keyctl add_key request_key kexec_load kexec_file_load init_module finit_module "
    "delete_module reboot swapon swapoff acct quotactl syslog settimeofday clock_settime "
    "clock_adjtime adjtimex sethostname setdomainname open_by_handle_at name_to_handle_at "
    "vhangup io_uring_setup io_uring_enter io_uring_register kcmp pidfd_getfd setsid setpgid "
    "shmget semget msgget fanotify_init lookup_dcookie"
).split()

_X86_64 = {
    "arch": 0xC000003E,
    "ptrace": 101, "process_vm_readv": 310, "process_vm_writev": 311, "unshare": 272,
    "setns": 308, "mount": 165, "umount2": 166, "pivot_root": 155, "chroot": 161,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "bpf": 321, "perf_event_open": 298, "userfaultfd": 323,
    "keyctl": 250, "add_key": 248, "request_key": 249, "kexec_load": 246, "kexec_file_load": 320,
    "init_module": 175, "finit_module": 313, "delete_module": 176, "reboot": 169, "swapon": 167,
    "swapoff": 168, "acct": 163, "quotactl": 179, "syslog": 103, "settimeofday": 164,
    "clock_settime": 227, "clock_adjtime": 305, "adjtimex": 159, "sethostname": 170,
    "setdomainname": 171, "open_by_handle_at": 304, "name_to_handle_at": 303, "vhangup": 153,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kcmp": 312,
    "pidfd_getfd": 438, "setsid": 112, "setpgid": 109, "shmget": 29, "semget": 64, "msgget": 68,
    "fanotify_init": 300, "lookup_dcookie": 212, "iopl": 172, "ioperm": 173,
    "kill": 62, "socket": 41, "clone": 56, "clone3": 435, "ioctl": 16,
}  # fmt: skip
_AARCH64 = {
    "arch": 0xC00000B7,
    "ptrace": 117, "process_vm_readv": 270, "process_vm_writev": 271, "unshare": 97,
    "setns": 268, "mount": 40, "umount2": 39, "pivot_root": 41, "chroot": 51,
    "open_tree": 428, "move_mount": 429, "fsopen": 430, "fsconfig": 431, "fsmount": 432,
    "fspick": 433, "mount_setattr": 442, "bpf": 280, "perf_event_open": 241, "userfaultfd": 282,
    "keyctl": 219, "add_key": 217, "request_key": 218, "kexec_load": 104, "kexec_file_load": 294,
    "init_module": 105, "finit_module": 273, "delete_module": 106, "reboot": 142, "swapon": 224,
    "swapoff": 225, "acct": 89, "quotactl": 60, "syslog": 116, "settimeofday": 170,
    "clock_settime": 112, "clock_adjtime": 266, "adjtimex": 171, "sethostname": 161,
    "setdomainname": 162, "open_by_handle_at": 265, "name_to_handle_at": 264, "vhangup": 58,
    "io_uring_setup": 425, "io_uring_enter": 426, "io_uring_register": 427, "kcmp": 272,
    "pidfd_getfd": 438, "setsid": 157, "setpgid": 154, "shmget": 194, "semget": 190,
    "msgget": 186, "fanotify_init": 262, "lookup_dcookie": 18,
    "kill": 129, "socket": 198, "clone": 220, "clone3": 435, "ioctl": 29,
}  # fmt: skip
_TABLES = {"x86_64": _X86_64, "amd64": _X86_64, "aarch64": _AARCH64, "arm64": _AARCH64}


def supported() -> bool:
    """Whether the kernel filters syscalls and this architecture has a syscall table here."""
    if platform.machine().lower() not in _TABLES:
        return False
    try:
        with open("/proc/sys/kernel/seccomp/actions_avail") as f:
            actions = f.read().split()
    except OSError:
        return False
    return "errno" in actions and "kill_process" in actions


def _insn(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k & 0xFFFFFFFF)


def _check_arg(nr: int, arg_offset: int, op: int, value: int, hit: int, miss: int) -> bytes:
    """`if nr matches: return hit if (arg op value) else miss`, as five instructions."""
    return b"".join(
        (
            _insn(_JEQ_K, nr, 0, 4),
            _insn(_LD_W_ABS, arg_offset),
            _insn(op, value, 0, 1),
            _insn(_RET_K, hit),
            _insn(_RET_K, miss),
        )
    )


def build_filter(machine: str | None = None) -> bytes:
    """The filter program (packed `struct sock_filter` array) for the given or current machine."""
    table = _TABLES.get((machine or platform.machine()).lower())
    if table is None:
        raise OSError(f"seccomp: no syscall table for architecture {machine or platform.machine()}")
    eperm = _RET_ERRNO | errno.EPERM
    prog = [
        _insn(_LD_W_ABS, _OFF_ARCH),
        _insn(_JEQ_K, table["arch"], 1, 0),
        _insn(_RET_K, _RET_KILL_PROCESS),
        _insn(_LD_W_ABS, _OFF_NR),
    ]
    if table is _X86_64:  # the x32 ABI shares the arch value; its numbers have bit 30 set
        prog += [_insn(_JGE_K, 0x40000000, 0, 1), _insn(_RET_K, _RET_KILL_PROCESS)]
    names = [*_DENIED_EVERYWHERE, *(n for n in ("iopl", "ioperm") if n in table)]
    for name in names:
        prog += [_insn(_JEQ_K, table[name], 0, 1), _insn(_RET_K, eperm)]
    prog += [_insn(_JEQ_K, table["clone3"], 0, 1), _insn(_RET_K, _RET_ERRNO | errno.ENOSYS)]
    prog += [
        _check_arg(table["kill"], _arg(0), _JEQ_K, 0xFFFFFFFF, eperm, _RET_ALLOW),
        _check_arg(table["socket"], _arg(0), _JEQ_K, _AF_UNIX, _RET_ALLOW, eperm),
        _check_arg(table["clone"], _arg(0), _JSET_K, _CLONE_NAMESPACE_FLAGS, eperm, _RET_ALLOW),
        _check_arg(table["ioctl"], _arg(1), _JEQ_K, _TIOCSTI, eperm, _RET_ALLOW),
        _insn(_RET_K, _RET_ALLOW),
    ]
    return b"".join(prog)


class _SockFprog(ctypes.Structure):
    _fields_ = (("len", ctypes.c_ushort), ("filter", ctypes.c_void_p))


_libc = ctypes.CDLL(None, use_errno=True)


def install(program: bytes) -> None:
    """Install `program` on the calling thread (and its future children). Needs no_new_privs."""
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    rc = _libc.prctl(
        _PR_SET_SECCOMP, ctypes.c_ulong(_SECCOMP_MODE_FILTER), ctypes.byref(fprog), 0, 0
    )
    if rc != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"prctl(PR_SET_SECCOMP): {os.strerror(err)}")
