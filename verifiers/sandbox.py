"""Run untrusted Python programs in a sandboxed child process, many at once with a bounded pool.

    results = Sandbox(Limits(wall_seconds=5)).run_many([source_a, source_b])
    results[0].outcome  # "passed" | "failed" | "timeout" | "memory" | "output_limit" | "crashed"

Each program runs as `python -I -S main.py` (no site, no user paths, no PYTHON* variables) with an
environment of only a minimal PATH and LANG, stdin from /dev/null, in its own session, under:
- CPU time (RLIMIT_CPU; SIGXCPU -> "timeout") and wall time (the whole tree is killed ->
  "timeout"); address space per process (RLIMIT_AS; MemoryError or an unexplained SIGKILL ->
  "memory"); output size (stdout and stderr go to files, each capped by RLIMIT_FSIZE, which also
  caps every file the program writes; SIGXFSZ -> "output_limit"); open files; no core dumps.
- When the caller is root and `unshare` and `setpriv` work (probed once, `Sandbox.isolation`
  says which mode runs), also:
  - a new network namespace: no interface but a down loopback, so no network at all;
  - a new PID namespace with its own /proc, a shell as its init and the program as that init's
    child: the program sees no other process, and when the run ends the kernel kills whatever is
    left in the namespace, so nothing escapes by double-forking or `setsid`;
  - a new mount namespace with private size-capped tmpfs mounts over the world-writable
    directories (/tmp, /var/tmp, /run/lock, /dev/shm, 16 MiB each); the program's working
    directory is that private /tmp, so all it can write lives in memory and is gone with the run;
  - a uid (and gid) of its own for each run, from an unused range with no files and no passwd
    entry: it cannot signal the caller, read the caller's 0600 files or /root, write anywhere
    outside its tmpfs, and RLIMIT_NPROC (which root would ignore) bounds its process count per
    run, so a fork bomb in one run cannot starve another. Uids are drawn as
    base + (pid % 1000) * 1000 + (counter % 1000): two runs share one only if two calling
    processes have pids equal mod 1000 and run at the same time.
- Always: an audit hook in the program refuses socket creation and signals to other processes,
  so the no-network and do-not-touch-the-caller rules hold where namespaces are unavailable
  (ctypes can bypass audit hooks: that mode is weaker, and says so).
Where the namespaces or the uid switch are unavailable (not root, a locked-down container),
only the rlimits, the session kill and the audit hook apply, in a fresh temporary directory that
is deleted afterwards. The child then runs as the caller's uid and can read and write what the
caller can; as root, RLIMIT_NPROC does not bound its processes either (a fork bomb is then held
only by the wall-time kill), and a forked process that calls setsid() leaves the session that
is killed, so it can outlive the run. Not enforced in any mode: total memory across the
processes of one run (RLIMIT_AS is per process; no cgroup is used), disk bandwidth, and reads of
world-readable files. In the isolated mode the interpreter is started with root's search rights
(setpriv keeps them until exec), so a program may be unable to re-execute it (subprocess of
sys.executable) when it lives under a directory other uids cannot enter, such as /root/.pyenv;
the standard library must be readable by other uids (the probe falls back to rlimits-only if the
interpreter cannot start; an interpreter that cannot find its own may pick up the system one).
It is a guard against accidents and ordinary hostile code, not a security boundary against
kernel exploits; use a container or VM for that.

Outcome "failed" is a clean non-zero exit (an assertion or exception in the program), "crashed"
a death by any other signal. In the isolated mode the shell reports a death by signal N as exit
code 128 + N, so a program that itself exits with such a code (129..159) is classified as that
signal: still not "passed". It knows nothing about tests or tasks (verifiers/code.py does).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

# Per-run uids come from this range: no passwd entry and no files on a normal system.
UID_BASE = 1_000_000
_run_counter = itertools.count()  # a source of fresh uids, not configuration
# Refuse sockets inside the child even without a network namespace (defence in depth).
# Refuse signals to other processes too: without the uid switch the child shares our uid.
PREAMBLE = (
    "import sys as _s, os as _o\n"
    "def _guard(event, args, _me=_o.getpid()):\n"
    "    if event in ('socket.__new__', 'socket.connect', 'socket.bind'):\n"
    "        raise PermissionError('network access is disabled in the sandbox')\n"
    "    if event in ('os.kill', 'os.killpg') and args[0] not in (_me, 0):\n"
    "        raise PermissionError('signalling other processes is disabled in the sandbox')\n"
    "_s.addaudithook(_guard)\n"
    "del _s, _o, _guard\n"
)
# The interpreter by its real path: a venv's bin/python may sit under /tmp, which the isolated
# mode hides behind a private tmpfs.
PYTHON = os.path.realpath(sys.executable)
OUTCOMES = ("passed", "failed", "timeout", "memory", "output_limit", "crashed")


@dataclass(frozen=True, slots=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10
    memory_bytes: int = 1 << 30  # address space, per process
    output_bytes: int = 1 << 20  # per stream, and per file the program writes
    processes: int = 32  # RLIMIT_NPROC for the run's uid (not enforced in rlimits-only as root)
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in (
            "wall_seconds", "cpu_seconds", "memory_bytes", "output_bytes", "processes",
            "open_files",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str  # one of OUTCOMES
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: str  # tails, at most 4 kB each
    stderr: str
    seconds: float  # wall time, including the sandbox's own start-up
    cpu_seconds: float  # user + system time of the reaped tree (0 when killed at the wall limit)

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


# Directories any uid may write to: inside the sandbox each gets a private, size-capped tmpfs
# that vanishes with the mount namespace, so nothing written there outlives the run. /tmp gets
# one too, owned by the run's uid: it is the program's working directory.
SHARED_WRITABLE = ("/var/tmp", "/run/lock", "/dev/shm")
TMPFS_SIZE = "16m"
# Where run dirs (program source, captured output) live in the isolated mode: not under a
# directory the tmpfs mounts hide.
ISOLATED_BASE = "/var/lib/ponder-sandbox"


def next_uid() -> int:
    return UID_BASE + (os.getpid() % 1000) * 1000 + next(_run_counter) % 1000


def _isolated_command(argv: list[str], uid: int) -> list[str]:
    """unshare (net, pid + /proc, mount) -> sh as the namespace's init: mount the tmpfs dirs,
    the private /tmp owned by `uid` and used as the working directory, then run argv as `uid`
    as a child (not exec: a namespace's init ignores SIGXCPU and SIGXFSZ) and exit with its
    status (128 + N for a death by signal N)."""
    mounts = " && ".join(
        f"{{ [ ! -d {d} ] || mount -t tmpfs -o size={TMPFS_SIZE},mode=1777 tmpfs {d}; }}"
        for d in SHARED_WRITABLE
    )
    scratch = f"mount -t tmpfs -o size={TMPFS_SIZE},mode=0700,uid={uid},gid={uid} tmpfs /tmp"
    drop = f"setpriv --reuid={uid} --regid={uid} --clear-groups"
    script = f'{mounts} && {scratch} && cd /tmp && {drop} "$@"; exit $?'
    return [
        "unshare", "--net", "--pid", "--fork", "--kill-child", "--mount",
        "--propagation", "private", "--mount-proc", "sh", "-c", script, "sandbox", *argv,
    ]  # fmt: skip


@functools.cache
def probe_isolation() -> str:
    """'namespaces+uid' when the strong mode works here, else 'rlimits-only'."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return "rlimits-only"
    try:
        os.makedirs(ISOLATED_BASE, mode=0o711, exist_ok=True)
        done = subprocess.run(
            _isolated_command([PYTHON, "-I", "-S", "-c", "pass"], next_uid()),
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "rlimits-only"
    return "namespaces+uid" if done.returncode == 0 else "rlimits-only"


def _set_limits(limits: Limits) -> None:
    """Runs in the child between fork and exec: rlimits are inherited by everything it starts."""
    cpu = limits.cpu_seconds
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))
    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    resource.setrlimit(resource.RLIMIT_FSIZE, (limits.output_bytes, limits.output_bytes))
    resource.setrlimit(resource.RLIMIT_NPROC, (limits.processes, limits.processes))
    resource.setrlimit(resource.RLIMIT_NOFILE, (limits.open_files, limits.open_files))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _exited(pid: int, seconds: float) -> bool:
    """Wait up to `seconds` for the child to exit WITHOUT reaping it (WNOWAIT)."""
    deadline = time.monotonic() + seconds
    while True:
        if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.005)


def _tail(path: str) -> str:
    with open(path, "rb") as f:
        f.seek(max(0, os.path.getsize(path) - 4096))
        return f.read().decode(errors="replace")


def classify(
    code: int | None, sig: int | None, stderr: str, timed_out: bool, cpu_exhausted: bool
) -> str:
    if timed_out or sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_exhausted):
        return "timeout"  # SIGKILL after the CPU hard limit: the program ignored SIGXCPU
    if sig == signal.SIGXFSZ or "File too large" in stderr:
        return "output_limit"
    if "MemoryError" in stderr:
        return "memory"
    if sig is not None:
        return "memory" if sig == signal.SIGKILL else "crashed"  # SIGKILL: the OOM killer
    return "passed" if code == 0 else "failed"


class Sandbox:
    def __init__(self, limits: Limits | None = None, workers: int = 2):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.limits = limits or Limits()
        self.workers = workers
        self.isolation = probe_isolation()

    def run(self, source: str) -> RunResult:
        start = time.perf_counter()
        isolated = self.isolation == "namespaces+uid"
        work = tempfile.mkdtemp(prefix="run-", dir=ISOLATED_BASE if isolated else None)
        try:
            main = os.path.join(work, "main.py")
            with open(main, "w") as f:
                f.write(PREAMBLE + source)
            command = [PYTHON, "-I", "-S", main]
            if isolated:
                # Root-owned and read-only to the run's uid; the random name is not listable
                # (ISOLATED_BASE is 0711), so a concurrent run cannot find another's files.
                os.chmod(work, 0o711)
                os.chmod(main, 0o644)
                command = _isolated_command(command, next_uid())
            out_path, err_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                child = subprocess.Popen(
                    command,
                    cwd=work,
                    env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=err,
                    start_new_session=True,
                    preexec_fn=functools.partial(_set_limits, self.limits),
                    close_fds=True,
                )
                try:
                    timed_out = not _exited(child.pid, self.limits.wall_seconds)
                finally:
                    cpu = self._kill_tree(child)
            return self._result(child.returncode, timed_out, cpu, out_path, err_path, start)
        finally:
            shutil.rmtree(work, ignore_errors=True)

    def _result(
        self, code: int, timed_out: bool, cpu: float, out_path: str, err_path: str, start: float
    ) -> RunResult:
        sig = -code if code < 0 else None
        if sig is None and 128 < code < 128 + signal.NSIG and self.isolation == "namespaces+uid":
            sig = code - 128  # how the namespace's init shell reports a death by signal
        stderr = _tail(err_path)
        cpu_exhausted = cpu >= self.limits.cpu_seconds
        outcome = classify(None if sig else code, sig, stderr, timed_out, cpu_exhausted)
        seconds = time.perf_counter() - start
        return RunResult(outcome, None if sig else code, sig, _tail(out_path), stderr, seconds, cpu)

    @staticmethod
    def _kill_tree(child: subprocess.Popen) -> float:
        """Kill the child's whole session, then reap it; returns the CPU seconds of the child
        and the descendants it reaped. The leader is not reaped before the kill (see
        `_exited`), so its pid, the group's id, cannot have been reused by then. In the PID
        namespace, the end of its init also kills the rest."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        return usage.ru_utime + usage.ru_stime

    def run_many(self, sources: list[str]) -> list[RunResult]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.run, sources))
