"""Run untrusted Python programs in sandboxed process trees, many at once with a bounded pool.

    results = Sandbox(Limits(wall_seconds=5)).run_many([source_a, source_b])
    results[0].outcome  # "passed" | "failed" | "timeout" | "memory" | "output_limit" | "crashed"
    run = Sandbox().start(source, pass_fds=(r, w))  # a serving process (verifiers/code_harness)

A program is `python -I -S -c <bootstrap>` (no site, no user paths, no PYTHON* variables, an
environment of only PATH and LANG): the bootstrap reads the source from an unnamed memory file
on stdin, puts /dev/null there instead and runs it as __main__ with an audit hook that refuses
sockets and signals to other processes. Nothing is written to disk: the source, stdout and
stderr live in unnamed files, so a run leaves nothing behind even when the caller is killed.

Isolation levels (verifiers/sandbox_isolation.py has the mechanisms), chosen by the caller:
`Sandbox(isolation=...)` defaults to the strongest, "namespaces+cgroup", and raises RuntimeError
(with the reason) where this machine cannot provide the level asked for; a weaker level is
never a fallback, only an explicit argument, and it warns (RuntimeWarning).
- "namespaces+cgroup" (root, unshare + setpriv, writable cgroups: this project's machines run
  cgroup v1 as root): everything below, plus a cgroup per run, so memory (RSS, tmpfs and kernel
  memory of all its processes together) and the process count (pids.max, threads included) are
  bounded per run, OOM kills are known from the kernel, and cpu_seconds is the whole tree's;
  where the cpu controller is available (cgroup v1 "cpu" here) the run's CPU bandwidth is
  capped at Limits.cpu_cores (1 core by default), so a fork bomb or a busy thread pool takes
  no more of the machine than a single busy process (sandbox_cgroup.cpu_capped() says).
- "namespaces": no network, its own PID, mount, IPC, UTS and cgroup namespaces (no SysV/POSIX
  IPC object outlives the run or is shared with another), private 16 MiB tmpfs for every
  world-writable directory and the working directory /tmp, a uid of its own per run (cannot
  signal, ptrace or read the caller's files; RLIMIT_NPROC then binds per run), no capabilities,
  no-new-privs and no user namespaces. The whole tree dies with the caller (PDEATHSIG on
  `unshare --kill-child`, whose end kills the PID namespace). Memory is bounded per process only
  (RLIMIT_AS): N processes may use N times memory_bytes.
- "rlimits-only" (any user): rlimits, a new session, the audit hook, no-new-privs, no user
  namespaces, a fresh working directory deleted afterwards. The program runs as the caller's
  uid and sees what the caller sees (files, /proc, other processes); as root RLIMIT_NPROC does
  not bind, a setsid() escapes the session kill, and only the direct child dies with the
  caller. For trusted code only.
The interpreter is `Sandbox.python` (the caller's own by default): the probe refuses a level
under which the run's uid would start a different Python installation. Not enforced at any
level: disk bandwidth, reads of world-readable files, kernel exploits (use a VM for those).

Outcomes come from what the kernel reports, never from text the program prints: "passed" is a
clean exit 0 within the wall limit (whatever stderr says), "timeout" the wall limit, SIGXCPU or
a SIGKILL after the CPU hard limit, "memory" an OOM kill in the run's cgroup (only with
cgroups; a MemoryError under RLIMIT_AS is a plain "failed"), "output_limit" SIGXFSZ or a
captured stream at its cap, "crashed" any other signal (a SIGKILL the program sent itself
included), "failed" any other non-zero exit. Under namespaces the init shell reports a death by
signal N as exit code 128 + N, so a program exiting with such a code (129..159) is classified
as that signal: never "passed". It knows nothing about tests (verifiers/code.py does).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ponder.verifiers.sandbox_cgroup import RunCgroup
from ponder.verifiers.sandbox_isolation import LEVELS, Hardening, isolated_command, probe

UID_BASE = 1_000_000  # per-run uids: no passwd entry and no files on a normal system
_run_counter = itertools.count()  # a source of fresh uids, not configuration
OUTCOMES = ("passed", "failed", "timeout", "memory", "output_limit", "crashed")
WEAKER = {
    "namespaces": "memory and process count are bounded per process, not per run",
    "rlimits-only": "the program runs as the caller's uid and can read, write and signal what "
    "the caller can; use it for trusted code only",
}
# Runs before the program, in its process: SIGXFSZ back to its default (Python ignores it), so
# a write past the file-size cap is a death the kernel reports; then the source, the audit hook.
BOOTSTRAP = """\
import os, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_DFL)
_parts = []
while _part := os.read(0, 1 << 16):
    _parts.append(_part)
_null = os.open(os.devnull, os.O_RDONLY)
os.dup2(_null, 0)
os.close(_null)
sys.argv = ["main.py", *sys.argv[1:]]
def _guard(event, args, _me=os.getpid()):
    if event in ("socket.__new__", "socket.connect", "socket.bind"):
        raise PermissionError("network access is disabled in the sandbox")
    if event in ("os.kill", "os.killpg") and args[0] not in (_me, 0):
        raise PermissionError("signalling other processes is disabled in the sandbox")
sys.addaudithook(_guard)
_code = compile(b"".join(_parts), "main.py", "exec")
del _parts, _part, _null, _guard
exec(_code, {"__name__": "__main__", "__builtins__": __builtins__})
"""


@dataclass(frozen=True, slots=True)
class Limits:
    wall_seconds: float = 10.0
    cpu_seconds: int = 10  # per process (RLIMIT_CPU)
    memory_bytes: int = 1 << 30  # per run with a cgroup; also the address space of each process
    output_bytes: int = 1 << 20  # per captured stream, and per file the program writes
    processes: int = 32  # per run: pids.max with a cgroup, RLIMIT_NPROC of the run's uid
    open_files: int = 64
    cpu_cores: float = 1.0  # per run, CPU bandwidth (cgroup cpu controller, where available)

    def __post_init__(self) -> None:
        for name in (
            "wall_seconds", "cpu_seconds", "memory_bytes", "output_bytes", "processes",
            "open_files", "cpu_cores",
        ):  # fmt: skip
            if getattr(self, name) <= 0:
                raise ValueError(f"Limits.{name} must be > 0, got {getattr(self, name)}")


@dataclass(frozen=True, slots=True)
class RunResult:
    outcome: str  # one of OUTCOMES (the code verifier adds "error": its own harness failed)
    exit_code: int | None  # None when killed by a signal
    signal: int | None
    stdout: str  # tails, at most 4 kB each
    stderr: str
    seconds: float  # wall time, including the sandbox's own start-up
    cpu_seconds: float  # the whole tree's with a cgroup; else what wait4 saw of the tree
    isolation: str = ""  # the level it ran at
    harness: str = ""  # code verifier: "remote" or "in_process"; "" for a plain program

    @property
    def passed(self) -> bool:
        return self.outcome == "passed"


def classify(
    code: int | None,
    sig: int | None,
    *,
    timed_out: bool,
    cpu_exhausted: bool,
    oom_killed: bool = False,
    output_full: bool = False,
) -> str:
    """An outcome from the kernel's report of the run (see the module docstring)."""
    if timed_out:
        return "timeout"
    if code == 0 and sig is None:
        return "passed"
    if sig == signal.SIGXCPU or (sig == signal.SIGKILL and cpu_exhausted):
        return "timeout"  # SIGKILL after the CPU hard limit: the program ignored SIGXCPU
    if oom_killed:
        return "memory"
    if sig == signal.SIGXFSZ or output_full:
        return "output_limit"
    return "crashed" if sig is not None else "failed"


def next_uid() -> int:
    return UID_BASE + (os.getpid() % 1000) * 1000 + next(_run_counter) % 1000


def _tail(f) -> str:
    size = os.fstat(f.fileno()).st_size
    f.seek(max(0, size - 4096))
    return f.read().decode(errors="replace")


class Sandbox:
    def __init__(
        self,
        limits: Limits | None = None,
        workers: int = 2,
        isolation: str = "namespaces+cgroup",
        python: str | None = None,
    ):
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        if isolation not in LEVELS:
            raise ValueError(f"isolation must be one of {LEVELS}, got {isolation!r}")
        self.limits = limits or Limits()
        self.workers = workers
        self.python = os.path.realpath(python or sys.executable)
        found = probe(self.python, UID_BASE - 1)
        if LEVELS.index(isolation) > LEVELS.index(found.level):
            raise RuntimeError(
                f"sandbox isolation {isolation!r} is not available here: "
                f"{found.reasons[isolation]}. A weaker level runs only when asked for: "
                f"Sandbox(isolation={found.level!r})"
            )
        self.expose = found.expose
        if isolation in WEAKER:
            warnings.warn(
                f"sandbox isolation {isolation!r}: {WEAKER[isolation]}", RuntimeWarning, 2
            )
        self.isolation = isolation

    def start(self, source: str, pass_fds: tuple[int, ...] = ()) -> SandboxRun:
        """Start `source`; the fds in pass_fds stay open in it, their numbers in sys.argv[1:]."""
        return SandboxRun(self, source, pass_fds)

    def run(self, source: str) -> RunResult:
        run = self.start(source)
        timed_out = not run.wait(self.limits.wall_seconds)
        return run.stop(timed_out)

    def run_many(self, sources: list[str]) -> list[RunResult]:
        with ThreadPoolExecutor(max_workers=self.workers) as pool:
            return list(pool.map(self.run, sources))


class SandboxRun:
    """One sandboxed process tree: started by the constructor, waited on, then stopped once."""

    def __init__(self, sandbox: Sandbox, source: str, pass_fds: tuple[int, ...]):
        self.began = time.perf_counter()
        self.limits, self.isolation = sandbox.limits, sandbox.isolation
        self.cgroup = None
        if self.isolation == "namespaces+cgroup":
            lim = self.limits
            self.cgroup = RunCgroup.create(lim.memory_bytes, lim.processes, lim.cpu_cores)
        self.workdir = None
        argv = [sandbox.python, "-I", "-S", "-c", BOOTSTRAP, *map(str, pass_fds)]
        hardening = Hardening(self.limits, self.cgroup, os.getpid())
        if self.isolation == "rlimits-only":
            self.workdir = tempfile.mkdtemp(prefix="ponder-run-")
        else:
            hardening.uid, hardening.expose = next_uid(), sandbox.expose
            argv = isolated_command(argv, hardening.uid)
        stdin = os.memfd_create("program", os.MFD_CLOEXEC)
        # Unnamed files that outlive this constructor (closed in _cleanup).
        self.out = tempfile.TemporaryFile()  # noqa: SIM115
        self.err = tempfile.TemporaryFile()  # noqa: SIM115
        try:
            os.write(stdin, source.encode())
            os.lseek(stdin, 0, os.SEEK_SET)
            self.child = subprocess.Popen(
                argv,
                cwd=self.workdir or "/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=stdin,
                stdout=self.out,
                stderr=self.err,
                start_new_session=True,
                preexec_fn=hardening,
                pass_fds=pass_fds,
            )
        except BaseException:
            self._cleanup()
            raise
        finally:
            os.close(stdin)
        self.pidfd = os.pidfd_open(self.child.pid)

    def wait(self, seconds: float) -> bool:
        """Whether the tree's root exited within `seconds` (it is not reaped: see `stop`)."""
        poller = select.poll()
        poller.register(self.pidfd, select.POLLIN)
        return bool(poller.poll(max(0, int(seconds * 1000))))

    def stop(self, timed_out: bool) -> RunResult:
        """Kill whatever is left of the tree, reap it, and say what happened. The root is not
        reaped before the kill, so its pid, the session's id, cannot have been reused."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.child.pid, signal.SIGKILL)
        _, status, usage = os.wait4(self.child.pid, 0)
        self.child.returncode = code = os.waitstatus_to_exitcode(status)
        cpu, ooms = usage.ru_utime + usage.ru_stime, 0
        if self.cgroup is not None:
            cpu, ooms = self.cgroup.cpu_seconds(), self.cgroup.oom_kills()
        sig = -code if code < 0 else None
        if sig is None and 128 < code < 128 + signal.NSIG and self.isolation != "rlimits-only":
            sig = code - 128  # how the namespace's init shell reports a death by signal
        cap = self.limits.output_bytes
        full = any(os.fstat(f.fileno()).st_size >= cap for f in (self.out, self.err))
        outcome = classify(
            None if sig else code, sig, timed_out=timed_out,
            cpu_exhausted=cpu >= self.limits.cpu_seconds, oom_killed=ooms > 0, output_full=full,
        )  # fmt: skip
        stdout, stderr = _tail(self.out), _tail(self.err)
        self._cleanup()
        seconds = time.perf_counter() - self.began
        code = None if sig else code
        return RunResult(outcome, code, sig, stdout, stderr, seconds, cpu, self.isolation)

    def _cleanup(self) -> None:
        if getattr(self, "pidfd", None) is not None:
            os.close(self.pidfd)
            self.pidfd = None
        self.out.close()
        self.err.close()
        if self.cgroup is not None:
            self.cgroup.remove()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
