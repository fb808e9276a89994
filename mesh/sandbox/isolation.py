"""Walls of a run's own, raised inside the zygote's jail: stdlib only (ctypes).

The zygote's jail (nsjail) is the outer wall every run shares: no network,
read-only system paths, an unprivileged uid, rlimits and a seccomp policy.
Each run's interpreter then gets walls of its own before any model code
runs, so that it can see nothing of a concurrent run:

- its own user, PID, mount, IPC and UTS namespaces (the user namespace maps
  only the jail's uid, and keeps the process limit per run);
- a fresh tmpfs at /tmp, and an empty /proc (the zygote covered the real one);
- the run's rlimits, no capabilities at all, and a seccomp filter refusing
  what the zygote itself still needed: namespaces and mounts.

Runs share the zygote's empty network namespace (making one is slow and
serialised by the kernel); the outer policy refuses ``socket()``, so they
cannot reach each other through it: a run talks to the host over its pipes.
This file is copied into the jail, so it must not import anything from smolmesh.
"""

from __future__ import annotations

import ctypes
import os
import platform
import resource
import struct

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping

CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = CLONE_NEWNS | CLONE_NEWCGROUP | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWUSER
NAMESPACE_FLAGS |= CLONE_NEWPID | CLONE_NEWNET

MS_RDONLY, MS_NOSUID, MS_NODEV = 0x1, 0x2, 0x4
PR_SET_NO_NEW_PRIVS = 38
PR_SET_SECCOMP, SECCOMP_MODE_FILTER = 22, 2
PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL = 47, 4
LINUX_CAPABILITY_VERSION_3 = 0x20080522
EPERM, ENOSYS = 1, 38

# (audit arch, unshare, setns, mount, clone, clone3, capset, first number of another ABI)
ARCHES = {
    "x86_64": (0xC000003E, 272, 308, 165, 56, 435, 126, 0x40000000),  # >= 0x40000000: x32
    "aarch64": (0xC00000B7, 97, 268, 40, 220, 435, 91, 0xFFFFFFFF),
}

_libc = ctypes.CDLL(None, use_errno=True)
# Looked up once, in the zygote: a run only makes the calls (a lookup in a fresh fork costs).
_unshare, _setns, _mount_call, _prctl, _syscall = (
    _libc.unshare, _libc.setns, _libc.mount, _libc.prctl, _libc.syscall)  # fmt: skip
_syscall.restype = ctypes.c_long
_get_errno = ctypes.get_errno
_setrlimit = resource.setrlimit


class IsolationError(Exception):
    """A wall could not be raised; the run must not start."""


def _check(result: int, what: str) -> None:
    if result < 0:
        raise IsolationError(f"{what} failed: {os.strerror(_get_errno())}")


class Mount:
    """One tmpfs mount, its arguments encoded ahead of time."""

    def __init__(self, target: str, flags: int, options: str) -> None:
        self.target, self.flags, self.options = target.encode(), flags, options.encode()

    def __call__(self) -> None:
        result = _mount_call(b"none", self.target, b"tmpfs", self.flags, self.options)
        _check(result, f"mounting a tmpfs at {self.target.decode()}")


class ZygoteWalls:
    """What the zygote sets up once, so that each run's walls cost one fork.

    The jail's first process enters a user, mount and PID namespace of its
    own, covers /proc (runs must not see each other's processes) and forks
    the zygote proper: PID 1 of that namespace, with the right to make a PID
    namespace for each run and return to its own after forking into it. A
    descriptor of /proc from before it was covered lets each run map its ids.
    Everything a run's walls need is prepared here, once.
    """

    def __init__(self, uid: int, gid: int, tmpfs_bytes: int, limits: Mapping[int, int]) -> None:
        self.maps = ((b"uid_map", f"{uid} {uid} 1".encode()), (b"setgroups", b"deny"),
                     (b"gid_map", f"{gid} {gid} 1".encode()))  # fmt: skip
        self.run_tmp = Mount("/tmp", MS_NOSUID | MS_NODEV, f"size={tmpfs_bytes},mode=1777")
        self.limits = [(kind, (value, value)) for kind, value in limits.items()]
        self.seccomp = SeccompFilter()
        self.capabilities = CapabilitySet()
        self.proc = os.open("/proc", os.O_PATH | os.O_DIRECTORY)
        _check(_unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWPID), "unshare")
        self.map_ids()
        Mount("/proc", MS_RDONLY | MS_NOSUID | MS_NODEV, "size=4k,mode=555")()
        self.zygote_pid_namespace = -1

    def in_zygote(self) -> None:
        """In the zygote proper (PID 1 of the namespace made above): note its namespace."""
        self.zygote_pid_namespace = os.open("self/ns/pid", os.O_RDONLY, dir_fd=self.proc)

    def map_ids(self) -> None:
        """Map only the jail's uid and gid into the user namespace this process just made."""
        for name, text in self.maps:
            fd = os.open(b"self/" + name, os.O_WRONLY, dir_fd=self.proc)
            try:
                os.write(fd, text)
            finally:
                os.close(fd)

    def before_fork(self) -> None:
        """The zygote's next child is PID 1 of a new PID namespace."""
        _check(_unshare(CLONE_NEWPID), "unshare(PID)")

    def after_fork(self) -> None:
        """Back in the zygote: the child after next needs a namespace of its own again."""
        _check(_setns(self.zygote_pid_namespace, CLONE_NEWPID), "setns(PID)")

    def raise_run_walls(self) -> None:
        """In the run's PID 1: its own namespaces and /tmp, its limits, then no way back."""
        _check(_unshare(CLONE_NEWUSER | CLONE_NEWNS | CLONE_NEWIPC | CLONE_NEWUTS), "unshare")
        self.map_ids()
        os.close(self.proc)
        os.close(self.zygote_pid_namespace)
        self.run_tmp()
        for kind, limit in self.limits:
            _setrlimit(kind, limit)
        self.capabilities.drop_all()
        self.seccomp.install()


class CapabilitySet:
    """The run's user namespace granted every capability in it; it keeps none. (With
    no_new_privs set, no later execve can grant any: the bounding set can stay.)"""

    def __init__(self) -> None:
        self.header = struct.pack("=Ii", LINUX_CAPABILITY_VERSION_3, 0)
        self.empty = bytes(24)  # two (effective, permitted, inheritable) triples
        self.capset = ARCHES[platform.machine()][6]

    def drop_all(self) -> None:
        _check(_prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clearing ambient caps")
        _check(_syscall(self.capset, self.header, self.empty), "capset")


class SeccompFilter:
    """Refuse namespaces (unshare, setns, clone with namespace flags) and mounts.

    clone3 passes its flags in memory a filter cannot read, so it answers
    ENOSYS, and the C library falls back to clone, whose flags it can.
    """

    def __init__(self) -> None:
        arch, unshare, setns, mount, clone, clone3, _, other_abi = ARCHES[platform.machine()]
        errno = 0x00050000  # SECCOMP_RET_ERRNO
        allow, kill = 0x7FFF0000, 0x80000000  # SECCOMP_RET_ALLOW, SECCOMP_RET_KILL_PROCESS
        ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06  # BPF_LD|W|ABS, BPF_JMP..K, BPF_RET
        program = [
            (ld, 0, 0, 4),  # seccomp_data.arch
            (jeq, 1, 0, arch),
            (ret, 0, 0, kill),
            (ld, 0, 0, 0),  # seccomp_data.nr
            (jge, 0, 1, other_abi),
            (ret, 0, 0, errno | EPERM),
            (jeq, 0, 1, unshare),
            (ret, 0, 0, errno | EPERM),
            (jeq, 0, 1, setns),
            (ret, 0, 0, errno | EPERM),
            (jeq, 0, 1, mount),
            (ret, 0, 0, errno | EPERM),
            (jeq, 0, 1, clone3),
            (ret, 0, 0, errno | ENOSYS),
            (jeq, 1, 0, clone),
            (ret, 0, 0, allow),
            (ld, 0, 0, 16),  # the low half of seccomp_data.args[0]: clone's flags
            (jset, 0, 1, NAMESPACE_FLAGS),
            (ret, 0, 0, errno | EPERM),
            (ret, 0, 0, allow),
        ]
        code = b"".join(struct.pack("=HBBI", *instruction) for instruction in program)
        self._buffer = ctypes.create_string_buffer(code, len(code))
        self.fprog = struct.pack("=HxxxxxxQ", len(program), ctypes.addressof(self._buffer))

    def install(self) -> None:
        _check(_prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(_prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, self.fprog, 0, 0), "installing seccomp")
