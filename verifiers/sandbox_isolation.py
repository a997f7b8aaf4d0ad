"""The sandbox's kernel mechanisms: the per-process hardening applied between fork and exec,
the isolated command line, and the probe that says which isolation level works on this machine.

    found = probe(python, uid)  # cached: found.level, found.reasons[level], found.expose
    preexec = Hardening(limits, cgroup, os.getpid(), uid, found.expose)  # uid=None: no namespaces
    Popen(isolated_command(argv, uid), preexec_fn=preexec)

Levels, weakest first (LEVELS): "rlimits-only" < "namespaces" < "namespaces+cgroup".
- Every level: rlimits, a new session, PR_SET_PDEATHSIG (the direct child is killed with the
  caller) and, where the architecture is known (x86_64, aarch64), no-new-privs plus a seccomp
  filter that refuses user namespaces (unshare/clone with CLONE_NEWUSER; clone3 answers ENOSYS
  so libc falls back to clone): a user namespace would hand the program a root of its own,
  able to mount a tmpfs past the sandbox's caps. No other syscall is filtered.
- "namespaces" (root, `unshare` and `setpriv`): new net, mount, IPC, UTS and cgroup namespaces
  (entered by syscalls in the preexec, the mounts too: no helper processes), a PID namespace
  with its own /proc (`unshare --pid`); private 16 MiB tmpfs over /tmp, /var/tmp, /run/lock
  and /dev/shm; a uid of its own per run with no capabilities at all (empty bounding and
  inheritable sets). The namespace's init is killed with the caller (`unshare --kill-child`
  under PDEATHSIG), which takes every process in the namespace with it.
- "namespaces+cgroup": plus a per-run cgroup (verifiers/sandbox_cgroup.py).
The probe also checks that the run's uid starts the very interpreter the caller asked for
(same sys.version and sys.prefix), never another installation. An interpreter under a directory
other uids cannot enter (a pyenv Python under a 0700 /root) is exposed inside the mount
namespace only: an empty tmpfs covers that directory and the interpreter's prefix alone is
bind-mounted back at its own path, so the rest of the caller's home stays hidden.
"""

from __future__ import annotations

import ast
import ctypes
import functools
import os
import platform
import resource
import shutil
import signal
import stat
import struct
import subprocess
from dataclasses import dataclass

from ponder.verifiers import sandbox_cgroup

LEVELS = ("rlimits-only", "namespaces", "namespaces+cgroup")
SHARED_WRITABLE = ("/var/tmp", "/run/lock", "/dev/shm")  # each gets a private tmpfs
TMPFS_SIZE = "16m"

_PR_SET_PDEATHSIG, _PR_SET_SECCOMP, _PR_SET_NO_NEW_PRIVS = 1, 22, 38
_SECCOMP_MODE_FILTER = 2
_CLONE_NEWUSER = 0x10000000
# (audit arch, unshare, clone, clone3) per machine; other ABIs on the same kernel are refused.
_SYSCALLS = {"x86_64": (0xC000003E, 272, 56, 435), "aarch64": (0xC00000B7, 97, 220, 435)}
_ALLOW, _EPERM, _ENOSYS = 0x7FFF0000, 0x00050000 | 1, 0x00050000 | 38


def _seccomp_program(machine: str) -> bytes | None:
    """A classic-BPF filter over struct seccomp_data (nr at 0, arch at 4, args[0] at 16)."""
    if machine not in _SYSCALLS:
        return None
    arch, unshare, clone, clone3 = _SYSCALLS[machine]
    ld, jeq, jge, jset, ret = 0x20, 0x15, 0x35, 0x45, 0x06
    # (code, jump if true, jump if false, k); a jump skips that many instructions.
    insns = [
        (ld, 0, 0, 4),  # 0: A = arch
        (jeq, 0, 8, arch),  # 1: another ABI (i386 through int 0x80) -> 10 EPERM
        (ld, 0, 0, 0),  # 2: A = syscall number
        (jge, 6, 0, 0x40000000),  # 3: x32 numbering -> 10 EPERM
        (jeq, 3, 0, unshare),  # 4: -> 8
        (jeq, 2, 0, clone),  # 5: -> 8
        (jeq, 5, 0, clone3),  # 6: its flags live in memory BPF cannot read -> 12 ENOSYS
        (ret, 0, 0, _ALLOW),  # 7
        (ld, 0, 0, 16),  # 8: A = low word of args[0], the clone/unshare flags
        (jset, 0, 1, _CLONE_NEWUSER),  # 9: CLONE_NEWUSER -> 10, else -> 11
        (ret, 0, 0, _EPERM),  # 10
        (ret, 0, 0, _ALLOW),  # 11
        (ret, 0, 0, _ENOSYS),  # 12
    ]
    return b"".join(struct.pack("HBBI", *i) for i in insns)


_FILTER = _seccomp_program(platform.machine())
_FILTER_BUF = ctypes.create_string_buffer(_FILTER) if _FILTER else None
_LIBC = ctypes.CDLL(None, use_errno=True)


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


_FPROG = _SockFprog(len(_FILTER) // 8, ctypes.addressof(_FILTER_BUF)) if _FILTER else None


def _prctl(option: int, arg: int | ctypes.c_void_p) -> None:
    if _LIBC.prctl(option, arg, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), f"prctl({option}) failed")


_CLONE_NEWNS, _CLONE_NEWCGROUP, _CLONE_NEWUTS, _CLONE_NEWIPC, _CLONE_NEWNET = (
    0x00020000,
    0x02000000,
    0x04000000,
    0x08000000,
    0x40000000,
)
_MS_NOSUID, _MS_NODEV, _MS_BIND, _MS_MOVE, _MS_REC, _MS_PRIVATE = 2, 4, 4096, 8192, 16384, 1 << 18


def _mount(source: str | None, target: str, fstype: str | None, flags: int, data: str = "") -> None:
    args = [x.encode() if x is not None else None for x in (source, target, fstype, data)]
    if _LIBC.mount(args[0], args[1], args[2], flags, args[3] or None) != 0:
        raise OSError(ctypes.get_errno(), f"mount {source} on {target} failed")


def _tmpfs(target: str, options: str) -> None:
    _mount("tmpfs", target, "tmpfs", _MS_NOSUID | _MS_NODEV, f"size={TMPFS_SIZE},{options}")


def _expose(hidden: str, prefix: str) -> None:
    """Make the interpreter's prefix reachable for the run's uid at its own path: bind it
    aside, cover its closed ancestor (say /root) with an empty tmpfs, recreate the path in it
    and move the bind there. The rest of the closed directory stays hidden."""
    aside = "/tmp/.python"
    os.mkdir(aside)
    _mount(prefix, aside, None, _MS_BIND | _MS_REC)
    _mount("tmpfs", hidden, "tmpfs", _MS_NOSUID | _MS_NODEV, "size=1m,mode=0755")
    os.makedirs(prefix, mode=0o755)
    _mount(aside, prefix, None, _MS_MOVE)
    os.rmdir(aside)


def _enter_namespaces(uid: int, expose: tuple[str, str] | None) -> None:
    """New mount, net, IPC and UTS namespaces for this process (the PID one comes from
    `unshare --pid` in isolated_command); private tmpfs over every world-writable directory
    and a /tmp of the run's uid as the working directory. Syscalls only: no mount processes."""
    if _LIBC.unshare(_CLONE_NEWNS | _CLONE_NEWNET | _CLONE_NEWIPC | _CLONE_NEWUTS) != 0:
        raise OSError(ctypes.get_errno(), "unshare failed")
    _mount(None, "/", None, _MS_REC | _MS_PRIVATE)
    for d in SHARED_WRITABLE:
        if os.path.isdir(d):
            _tmpfs(d, "mode=1777")
    _tmpfs("/tmp", f"mode=0700,uid={uid},gid={uid}")
    if expose is not None:
        _expose(*expose)
    os.chdir("/tmp")


class Hardening:
    """The preexec_fn: runs in the child between fork and exec, so everything it sets is
    inherited by the whole process tree. Objects are built in the parent; the child only calls.
    With `uid`, it also enters the namespaces (the caller must be root)."""

    def __init__(
        self,
        limits,
        cgroup: sandbox_cgroup.RunCgroup | None,
        parent: int,
        uid: int | None = None,
        expose: tuple[str, str] | None = None,
    ):
        self.limits, self.cgroup, self.parent = limits, cgroup, parent
        self.uid, self.expose = uid, expose

    def __call__(self) -> None:
        # 1. Die with the caller; if it is already gone, do not start at all.
        _prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != self.parent:
            os._exit(125)
        # 2. Join the run's cgroup before anything else runs: every descendant is born in it.
        if self.cgroup is not None:
            self.cgroup.enter(os.getpid())
        if self.uid is not None:
            _enter_namespaces(self.uid, self.expose)
            if _LIBC.unshare(_CLONE_NEWCGROUP) != 0:  # after joining: the run's cgroup is "/"
                raise OSError(ctypes.get_errno(), "unshare(CLONE_NEWCGROUP) failed")
        # 3. rlimits, inherited by the whole tree.
        lim = self.limits
        resource.setrlimit(resource.RLIMIT_CPU, (lim.cpu_seconds, lim.cpu_seconds + 1))
        resource.setrlimit(resource.RLIMIT_AS, (lim.memory_bytes, lim.memory_bytes))
        resource.setrlimit(resource.RLIMIT_FSIZE, (lim.output_bytes, lim.output_bytes))
        resource.setrlimit(resource.RLIMIT_NPROC, (lim.processes, lim.processes))
        resource.setrlimit(resource.RLIMIT_NOFILE, (lim.open_files, lim.open_files))
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
        # 4. No privilege gain through exec, and no user namespaces.
        if _FPROG is not None:
            _prctl(_PR_SET_NO_NEW_PRIVS, 1)
            if _LIBC.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(_FPROG), 0, 0):
                raise OSError(ctypes.get_errno(), "installing the seccomp filter failed")


def hidden_ancestor(path: str) -> str | None:
    """The outermost directory on `path` that other uids cannot enter (e.g. /root), if any."""
    parts = path.strip("/").split("/")
    for i in range(1, len(parts) + 1):
        d = "/" + "/".join(parts[:i])
        if not os.stat(d).st_mode & stat.S_IXOTH:
            return d
    return None


def isolated_command(argv: list[str], uid: int) -> list[str]:
    """For a child whose preexec_fn is Hardening(..., uid=uid): a new PID namespace with its
    own /proc, whose init is sh; sh runs argv as `uid` with no capabilities, as a child (not
    exec: a namespace's init ignores SIGXCPU and SIGXFSZ), and exits with its status (128 + N
    for a death by signal N)."""
    drop = (
        f"setpriv --reuid={uid} --regid={uid} --clear-groups --inh-caps=-all "
        "--bounding-set=-all --no-new-privs"
    )
    return [
        "unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
        "sh", "-c", f'{drop} "$@"; exit $?', "sandbox", *argv,
    ]  # fmt: skip


IDENTITY = "import sys; print(repr((sys.version, sys.prefix, sys.base_prefix)))"


def _identity(argv: list[str], preexec: Hardening | None) -> str | None:
    try:
        done = subprocess.run(
            argv, capture_output=True, timeout=30, preexec_fn=preexec, env={"PATH": "/usr/bin:/bin"}
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.decode(errors="replace").strip() if done.returncode == 0 else None


@dataclass(frozen=True, slots=True)
class Probe:
    level: str  # the strongest of LEVELS that works here
    reasons: dict[str, str]  # why each stronger level does not
    expose: tuple[str, str] | None  # (hidden ancestor, interpreter prefix) for Hardening


@functools.cache
def probe(python: str, uid: int) -> Probe:
    """What works for `python` here. Cached per interpreter (and probe uid: pass a fixed one)."""
    from ponder.verifiers.sandbox import Limits  # the defaults are enough to start Python

    me, reasons = os.getpid(), {}
    expected = _identity([python, "-I", "-S", "-c", IDENTITY], None)
    if expected is None:
        raise RuntimeError(f"the interpreter {python!r} does not start; pass another python=")
    prefix = os.path.realpath(ast.literal_eval(expected)[2])
    expose = (hidden, prefix) if (hidden := hidden_ancestor(prefix)) else None
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        reasons["namespaces"] = "needs root with the unshare and setpriv commands"
    else:
        argv = isolated_command([python, "-I", "-S", "-c", IDENTITY], uid)
        got = _identity(argv, Hardening(Limits(), None, me, uid, expose))
        if got != expected:
            reasons["namespaces"] = (
                f"the run's uid cannot start {python} with its own standard library "
                f"(got {got!r}, expected {expected!r}): install a Python that other users can "
                "read, or pass python="
            )
    if "namespaces" in reasons:
        reasons["namespaces+cgroup"] = reasons["namespaces"]
    else:
        why = sandbox_cgroup.unavailable_reason()
        if why:
            reasons["namespaces+cgroup"] = why
    level = next(lv for lv in reversed(LEVELS) if lv not in reasons)
    return Probe(level, reasons, expose)
