"""Long-lived trusted harness servers that fork a fresh judge per candidate (a forkserver).

    pool = HarnessPool(python)
    with pool.server() as server:      # one idle server, or a new one; back in the pool after
        verdict = server.judge(job_fd, fd_in, fd_out, err_fd, wall)  # {"verdict", "detail"}
    pool.close()

Why: starting a second interpreter (and importing json, ctypes, traceback) per candidate
doubled the verifier's cost. A server starts once per worker thread, pre-imports everything,
then for each job receives four file descriptors over a Unix socket (SCM_RIGHTS: the job as a
memory file, the two candidate pipes, the stderr file), forks, and the child runs
`judge` (verifiers/code_harness.py) under the job's rlimits in a session of its own. The server
closes its copies of the pipes at once, so the candidate sees end of file when the child ends.

What it keeps: every job is judged in a process that has judged nothing before (a fork of a
server that only ever parses trusted jobs and its children's verdicts), so no test's state,
candidate answer or verdict carries over; the candidate side is unchanged (fresh and sandboxed
per run, verifiers/sandbox.py). Lifetime: a child dies with its server (PDEATHSIG; the server
is single-threaded), the server exits at end of file on its socket, which happens when the pool
closes it or the caller dies (no PDEATHSIG there: the caller's threads come and go). A server
that overruns, answers nonsense or dies is killed and replaced; the job is reported as "error".
The harness is trusted code running as the caller's uid: it is not sandboxed, only bounded.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import threading
import time
import weakref

from ponder.verifiers.code_wire import receive

# The server loop; prepended with code_wire.py and HARNESS (which defines `judge`).
SERVER_LOOP = """
import contextlib, json, socket

def run_one(caller, job, fds):
    job_fd, fd_in, fd_out, err = fds
    r, w = os.pipe()
    me = os.getpid()
    pid = os.fork()
    if pid == 0:  # the judge: a session of its own, stdout/stderr to the job's file
        try:
            os.setsid()
            caller.close()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(err, 1)
            os.dup2(err, 2)
            for fd in (r, null, err, job_fd):
                os.close(fd)
            judge(job, fd_in, fd_out, w, me)
        finally:
            os._exit(70)
    for fd in (w, *fds):  # the candidate must see end of file when the child ends
        os.close(fd)
    deadline = time.monotonic() + job["wall"] + 10
    out, verdict = [], None
    while True:
        left = deadline - time.monotonic()
        ready = select.select([r, caller], [], [], max(0.0, left))[0] if left > 0 else []
        if not ready:
            verdict = {"verdict": "error", "detail": "the harness overran the wall limit"}
            break
        if caller in ready and not caller.recv(1, socket.MSG_PEEK):
            os.killpg(pid, 9)  # the caller is gone
            os._exit(0)
        if r in ready:
            chunk = os.read(r, 1 << 16)
            if not chunk:
                break
            out.append(chunk)
    os.close(r)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, 9)  # its whole session: nothing a test started outlives the job
    _, status = os.waitpid(pid, 0)
    if verdict is None:
        try:
            verdict = json.loads(b"".join(out))
        except ValueError:
            verdict = None
        if type(verdict) is not dict:
            code = os.waitstatus_to_exitcode(status)
            verdict = {"verdict": "error", "detail": f"the harness exited {code}"}
    return verdict

def serve():
    caller = socket.socket(fileno=0)
    while True:
        try:
            _, fds, _, _ = socket.recv_fds(caller, 16, 4)
        except OSError:
            return
        if len(fds) != 4:  # end of file: the pool closed us or the caller died
            for fd in fds:
                os.close(fd)
            return
        with os.fdopen(fds[0], closefd=False) as f:
            job = json.load(f)
        send(caller.fileno(), run_one(caller, job, fds))

serve()
"""


class HarnessServer:
    """One server process and the caller's end of its socket; used by one thread at a time."""

    def __init__(self, python: str, program: str):
        self.sock, theirs = socket.socketpair()
        try:
            self.proc = subprocess.Popen(
                [python, "-I", "-S", "-c", program],
                cwd="/",
                env={"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8"},
                stdin=theirs,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
        finally:
            theirs.close()
        self.healthy = True

    def judge(self, job_fd: int, fd_in: int, fd_out: int, err_fd: int, wall: float) -> dict:
        """The verdict of one job; a broken server answers {"verdict": "error"} and is marked
        unhealthy (the pool then kills it)."""
        try:
            socket.send_fds(self.sock, [b"j"], [job_fd, fd_in, fd_out, err_fd])
            reply = receive(self.sock.fileno(), time.monotonic() + wall + 15)
        except (OSError, ValueError, TimeoutError) as e:
            reply, why = None, f"the harness server failed: {e}"
        else:
            why = f"the harness server exited {self.proc.poll()}"
        if reply is None:
            self.healthy = False
            return {"verdict": "error", "detail": why}
        return reply

    def close(self) -> None:
        self.sock.close()  # end of file: an idle server exits on its own
        with contextlib.suppress(ProcessLookupError):
            if not self.healthy:
                os.killpg(self.proc.pid, 9)
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, 9)
            self.proc.wait()


class HarnessPool:
    """Idle harness servers for `python`; grows to the number of threads using it at once."""

    def __init__(self, python: str, program: str):
        self.python, self.program = python, program
        self._idle: list[HarnessServer] = []
        self._lock = threading.Lock()
        self._finalizer = weakref.finalize(self, _close_all, self._idle, self._lock)

    @contextlib.contextmanager
    def server(self):
        server = None
        with self._lock:
            while self._idle and server is None:
                server = self._idle.pop()
                if server.proc.poll() is not None:  # died while idle (killed from outside)
                    server.healthy = False
                    server.close()
                    server = None
        server = server or HarnessServer(self.python, self.program)
        try:
            yield server
        except BaseException:
            server.healthy = False
            raise
        finally:
            if server.healthy:
                with self._lock:
                    self._idle.append(server)
            else:
                server.close()

    @property
    def idle(self) -> int:
        return len(self._idle)

    def close(self) -> None:
        self._finalizer()


def _close_all(idle: list[HarnessServer], lock: threading.Lock) -> None:
    with lock:
        servers, idle[:] = list(idle), []
    for server in servers:
        server.close()
