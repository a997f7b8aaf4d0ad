"""Run untrusted Python programs in a sandboxed child process, many at once with a bounded pool.

    results = Sandbox(Limits(wall_seconds=5)).run_many([source_a, source_b])
    results[0].outcome  # "passed" | "failed" | "timeout" | "memory" | "output_limit" | "crashed"

Each program runs as `python -I -S main.py` in a fresh temporary directory (deleted afterwards)
with an empty environment apart from a minimal PATH, stdin from /dev/null, in its own session,
under these limits:
- CPU time (RLIMIT_CPU; SIGXCPU -> "timeout") and wall time (the whole tree is killed ->
  "timeout"); address space (RLIMIT_AS; MemoryError or a kill -> "memory"); output size
  (stdout and stderr go to files capped by RLIMIT_FSIZE; SIGXFSZ -> "output_limit"); open files.
- When the caller is root and `unshare` and `setpriv` work (probed once): a new network
  namespace (no network at all), a new PID namespace (when its first process ends, the kernel
  kills every process left in it, so nothing escapes by double-forking or `setsid`), a new mount
  namespace with private tmpfs mounts over the world-writable directories (/tmp, /var/tmp,
  /run/lock, /dev/shm; gone when the run ends), and the unprivileged uid `nobody` (cannot signal
  the caller, read its 0600 files or /root, write anywhere else, or exceed RLIMIT_NPROC
  processes, which root would ignore). Work dirs then live under /var/lib/ponder-sandbox.
- Always: an audit hook in the child refuses socket creation and signals to other processes,
  so the no-network and do-not-touch-the-caller rules hold where namespaces are unavailable
  (ctypes can bypass audit hooks: that mode is weaker, and says so).
Where the namespaces or the uid switch are unavailable (not root, a locked-down container),
`Sandbox.isolation` says so and only the rlimits, the session kill and the audit hook apply: the
child then runs as the caller's uid and can read what the caller can. It is a guard against
accidents and ordinary hostile code, not a security boundary against kernel exploits; use a
container or VM for that.

Outcome "failed" is a clean non-zero exit (an assertion or exception in the program), "crashed"
a death by any other signal. It knows nothing about tests or tasks (verifiers/code.py does).
"""

from __future__ import annotations

import contextlib
import functools
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

NOBODY = 65534
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
    memory_bytes: int = 1 << 30  # address space
    output_bytes: int = 1 << 20  # per stream
    processes: int = 32  # RLIMIT_NPROC for the sandbox uid (only enforced off root)
    open_files: int = 64

    def __post_init__(self) -> None:
        for name in ("wall_seconds", "cpu_seconds", "memory_bytes", "output_bytes", "processes"):
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str  # one of OUTCOMES
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: str  # tails, at most 4 kB each
    stderr: str
    seconds: float

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


# Directories any uid may write to: inside the sandbox each gets a private, size-capped tmpfs
# that vanishes with the mount namespace, so nothing written there outlives the run.
SHARED_WRITABLE = ("/tmp", "/var/tmp", "/run/lock", "/dev/shm")
# Where work dirs live in the isolated mode: not under a directory the tmpfs mounts hide.
ISOLATED_BASE = "/var/lib/ponder-sandbox"


def _isolated_command(argv: list[str]) -> list[str]:
    mounts = " && ".join(
        f"{{ [ ! -d {d} ] || mount -t tmpfs -o size=16m,mode=1777 tmpfs {d}; }}"
        for d in SHARED_WRITABLE
    )
    drop = f"setpriv --reuid={NOBODY} --regid={NOBODY} --clear-groups"
    script = f'{mounts} && exec {drop} "$@"'
    return [
        "unshare", "--net", "--pid", "--fork", "--kill-child", "--mount",
        "--propagation", "private", "sh", "-c", script, "sandbox", *argv,
    ]  # fmt: skip


@functools.cache
def probe_isolation() -> str:
    """'namespaces+nobody' when the strong mode works here, else 'rlimits-only'."""
    if os.geteuid() != 0 or not (shutil.which("unshare") and shutil.which("setpriv")):
        return "rlimits-only"
    try:
        os.makedirs(ISOLATED_BASE, mode=0o711, exist_ok=True)
        done = subprocess.run(
            _isolated_command([PYTHON, "-I", "-S", "-c", "pass"]),
            capture_output=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return "rlimits-only"
    return "namespaces+nobody" if done.returncode == 0 else "rlimits-only"


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


def _classify(code: int | None, sig: int | None, stderr: str, timed_out: bool) -> str:
    if timed_out or sig in (signal.SIGXCPU,):
        return "timeout"
    if sig == signal.SIGXFSZ or "File too large" in stderr:
        return "output_limit"
    if "MemoryError" in stderr:
        return "memory"
    if sig is not None:
        return "memory" if sig == signal.SIGKILL else "crashed"
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
        isolated = self.isolation == "namespaces+nobody"
        work = tempfile.mkdtemp(prefix="run-", dir=ISOLATED_BASE if isolated else None)
        try:
            # The work dir is traversable but not listable by the sandbox uid, and the code dir
            # inside it has a random name: a concurrent candidate cannot find another's files.
            os.chmod(work, 0o711)
            code_dir = tempfile.mkdtemp(dir=work)
            with open(os.path.join(code_dir, "main.py"), "w") as f:
                f.write(PREAMBLE + source)
            command = [PYTHON, "-I", "-S", "main.py"]
            if isolated:
                os.chown(code_dir, NOBODY, NOBODY)
                command = _isolated_command(command)
            out_path, err_path = os.path.join(work, "stdout"), os.path.join(work, "stderr")
            with open(out_path, "wb") as out, open(err_path, "wb") as err:
                child = subprocess.Popen(
                    command,
                    cwd=code_dir,
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
                    self._kill_tree(child)
            code = child.returncode
            sig = -code if code is not None and code < 0 else None
            stderr = _tail(err_path)
            if sig is None and code is not None and code >= 128 and timed_out is False:
                sig = code - 128 if code - 128 in signal.valid_signals() else None
            outcome = _classify(None if sig else code, sig, stderr, timed_out)
            return RunResult(
                outcome,
                None if sig else code,
                sig,
                _tail(out_path),
                stderr,
                time.perf_counter() - start,
            )
        finally:
            shutil.rmtree(work, ignore_errors=True)

    @staticmethod
    def _kill_tree(child: subprocess.Popen) -> None:
        """Kill the child's whole session, then reap it. The leader is not reaped before the
        kill (see `_exited`), so its pid, the group's id, cannot have been reused by then. In
        the PID namespace, the end of its first process also kills the rest."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
        child.wait()

    def run_many(self, sources: list[str]) -> list[RunResult]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.run, sources))
