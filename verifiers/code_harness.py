"""Run a candidate against trusted tests so that a pass can only be earned.

    pool = harness_pool(sandbox.python)  # long-lived, one server per worker thread
    result = run_remote(sandbox, pool, RemoteJob(prefix, program, test, entry))  # -> RunResult

Two processes per candidate, neither of which is the caller:
- the candidate process (sandboxed, `Sandbox.start`) runs prefix + completion, then serves calls:
  it reads {"call", "args", "kwargs"} from one pipe and answers {"ok": value} or {"raised":
  [type name, message]} on another (verifiers/code_wire.py: plain values of exact types only);
- the judge (trusted test code; the caller's uid, a session of its own, the job's rlimits), a
  fresh fork of a long-lived harness server (verifiers/code_harness_pool.py), which
  executes the prefix (so helper functions the tests use, such as HumanEval's `poly`, are the
  trusted copies), the test code, and `check(<entry>)` with the
  entry point bound to a proxy that forwards each call to the candidate process. Names the test
  uses that neither it nor the prefix defines are forwarded too.
The verdict is "check() returned in the judge", written on a pipe only the judge holds.

What this guarantees (at the "namespaces" levels): the tests, the expected values and the
verdict channel never exist in the candidate's process, files or reach (another uid, another
PID namespace); exit codes, exit hooks, excepthooks, frame inspection and objects with a custom
__eq__ cannot produce a pass; the comparison is the harness's `==` on plain values. A candidate
that exits, dies, closes or garbles its pipes, returns non-plain data or raises a non-Exception
(SystemExit) fails; a builtin Exception it raises is re-raised in the harness as the same type,
so tests that expect one still work. The wall limit covers the whole check.
What it cannot do: tests that pass non-plain values (a callable, an instance) to the candidate
are reported as outcome "error" with the reason, never run another way: such a task must ask for
the in-process harness explicitly (verifiers/code.py). Arguments are copies, so a test that
checks the candidate mutated its argument fails. Each call costs a pipe round trip.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ponder.verifiers.code_harness_pool import SERVER_LOOP, HarnessPool
from ponder.verifiers.sandbox import RunResult, Sandbox, SandboxRun

WIRE = (Path(__file__).with_name("code_wire.py")).read_text()
LIMIT_OUTCOMES = ("timeout", "memory", "output_limit", "crashed")

# The candidate side. CANDIDATE (the program, no tests) is prepended as a literal.
SERVER = """
def _serve(source):
    import sys, traceback
    fd_in, fd_out = int(sys.argv[1]), int(sys.argv[2])
    ns = {"__name__": "__main__", "__builtins__": __builtins__}
    try:
        exec(compile(source, "candidate.py", "exec"), ns)
    except BaseException:
        send(fd_out, {"load_error": traceback.format_exc()[-3000:]})
        return
    send(fd_out, {"ready": sorted(k for k, v in ns.items() if callable(v))})
    while (msg := receive(fd_in)) is not None:
        try:
            value = ns[msg["call"]](*decode(msg["args"]), **decode(msg["kwargs"]))
        except BaseException as e:
            send(fd_out, {"raised": [type(e).__name__, str(e)[:1000]]})
            continue
        try:
            send(fd_out, {"ok": encode(value)})
        except (TypeError, ValueError) as e:
            send(fd_out, {"unsendable": str(e)[:1000]})
_serve(CANDIDATE)
"""

# The trusted side: `judge` runs one job in a fresh fork of a harness server
# (verifiers/code_harness_pool.py), never in a process that judged another candidate.
HARNESS = """
import builtins, ctypes, resource, signal, sys, traceback
LIBC = ctypes.CDLL(None)

def judge(job, fd_in, fd_out, verdict_fd, server):
    \"\"\"In the forked child: bound this process, then run the tests. Never returns.\"\"\"
    global FD_IN, FD_OUT, DEADLINE, VERDICT
    # Die with the server (which dies with the caller), cap memory, CPU and written file sizes.
    LIBC.prctl(1, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != server:
        os._exit(125)
    for name, value in job["rlimits"].items():
        resource.setrlimit(getattr(resource, name), (value, value))
    VERDICT, FD_IN, FD_OUT = verdict_fd, fd_in, fd_out
    DEADLINE = time.monotonic() + job["wall"]
    main(job)

class Abort(BaseException):  # not an Exception: test code cannot swallow it
    pass

def finish(verdict, detail=""):
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:
            pass
    os.write(VERDICT, json.dumps({"verdict": verdict, "detail": detail[-3000:]}).encode())
    os._exit(0)

def ask(message):
    try:
        if message is not None:
            send(FD_OUT, message)
        reply = receive(FD_IN, DEADLINE)
    except TimeoutError:
        finish("timeout", "the candidate did not answer within the wall limit")
    except (OSError, ValueError) as e:
        raise Abort(f"broken channel to the candidate: {e}") from None
    if reply is None:
        raise Abort("the candidate process ended")
    return reply

def raise_candidate(name, message):
    kind = getattr(builtins, name, None)
    if isinstance(kind, type) and issubclass(kind, Exception):
        try:
            error = kind(message)
        except Exception:
            error = None
        if error is not None:
            raise error
    raise Abort(f"the candidate raised {name}: {message}")

class Remote:
    def __init__(self, name):
        self.name = name
    def __call__(self, *args, **kwargs):
        try:
            message = {"call": self.name, "args": encode(args), "kwargs": encode(kwargs)}
        except TypeError as e:
            finish("unsupported", f"the test passes {e} to the candidate: it needs the "
                   "in-process harness")
        reply = ask(message)
        if "ok" in reply:
            try:
                return decode(reply["ok"])
            except ValueError as e:
                raise Abort(str(e)) from None
        if "raised" in reply and len(reply["raised"]) == 2:
            raise_candidate(*map(str, reply["raised"]))
        raise Abort(f"the candidate's answer is not plain data: {reply.get('unsendable')}")

class Names(dict):
    def __missing__(self, key):
        if key in REMOTE and not hasattr(builtins, key):
            self[key] = Remote(key)
            return self[key]
        raise KeyError(key)

def main(job):
    global REMOTE
    try:
        ready = ask(None)
    except Abort as e:
        finish("failed", f"the candidate never became ready: {e}")
    if "load_error" in ready:
        finish("failed", "the candidate does not load:\\n" + str(ready["load_error"]))
    REMOTE = set(map(str, ready.get("ready", [])))
    ns = Names(__name__="__harness__")
    try:
        exec(compile(job["prefix"], "prefix.py", "exec"), ns)
    except Exception:
        ns = Names(__name__="__harness__")  # helpers then come from the candidate
    ns[job["entry"]] = Remote(job["entry"])
    try:
        exec(compile(job["test"], "test.py", "exec"), ns)
        exec(compile(f"check({job['entry']})", "check.py", "exec"), ns)
    except Abort as e:
        finish("failed", str(e))
    except BaseException:
        finish("failed", traceback.format_exc())
    finish("passed")
"""
PROGRAM = WIRE + HARNESS + SERVER_LOOP  # what a harness server runs


def harness_pool(python: str) -> HarnessPool:
    return HarnessPool(python, PROGRAM)


@dataclass(frozen=True, slots=True)
class RemoteJob:
    prefix: str  # trusted code run in the harness (HumanEval's prompt), may be ""
    program: str  # prefix + completion: what the candidate process runs
    test: str  # defines check(candidate); runs only in the harness
    entry: str  # the function under test


def _memfd(text: str) -> int:
    fd = os.memfd_create("job", os.MFD_CLOEXEC)
    os.write(fd, text.encode())
    os.lseek(fd, 0, os.SEEK_SET)
    return fd


def _job_file(sandbox: Sandbox, job: RemoteJob) -> int:
    """The job as a memory file for the harness server (trusted code, but bounded: the judge
    holds the candidate's answers)."""
    limits = sandbox.limits
    rlimits = {
        "RLIMIT_AS": max(limits.memory_bytes, 1 << 30),
        "RLIMIT_CPU": limits.cpu_seconds + 1,
        "RLIMIT_FSIZE": limits.output_bytes,
        "RLIMIT_CORE": 0,
    }
    spec = {"prefix": job.prefix, "test": job.test, "entry": job.entry,
            "wall": limits.wall_seconds, "rlimits": rlimits}  # fmt: skip
    return _memfd(json.dumps(spec))


def _outcome(verdict: str, candidate: RunResult, exited: bool) -> str:
    if verdict in ("passed", "timeout"):
        return verdict
    if verdict != "failed":
        return "error"  # the harness could not judge: "unsupported" or its own failure
    # A candidate killed by a limit is reported as that limit, otherwise a plain failure.
    return candidate.outcome if exited and candidate.outcome in LIMIT_OUTCOMES else "failed"


def run_remote(sandbox: Sandbox, pool: HarnessPool, job: RemoteJob) -> RunResult:
    began = time.perf_counter()
    to_cand, from_cand = os.pipe(), os.pipe()  # (read, write) each
    server = WIRE + f"\nCANDIDATE = {job.program!r}\n" + SERVER
    try:
        candidate: SandboxRun = sandbox.start(server, pass_fds=(to_cand[0], from_cand[1]))
    finally:
        os.close(to_cand[0])
        os.close(from_cand[1])
    job_fd = _job_file(sandbox, job)
    with tempfile.TemporaryFile() as err:
        try:
            with pool.server() as harness:
                verdict = harness.judge(
                    job_fd, from_cand[0], to_cand[1], err.fileno(), sandbox.limits.wall_seconds
                )
        finally:
            for fd in (job_fd, from_cand[0], to_cand[1]):
                os.close(fd)
        err.seek(0)
        harness_err = err.read()[-2000:].decode(errors="replace")
    name = str(verdict.get("verdict"))
    # Its pipe closed with the judge: a serving candidate now exits on its own.
    exited = name != "timeout" and candidate.wait(1.0)
    result = candidate.stop(timed_out=name == "timeout")
    detail = f"\n[harness: {name}] {verdict.get('detail', '')}{harness_err}"
    return replace(
        result,
        outcome=_outcome(name, result, exited),
        stderr=(result.stderr + detail)[-6000:],
        seconds=time.perf_counter() - began,
        harness="remote",
    )
