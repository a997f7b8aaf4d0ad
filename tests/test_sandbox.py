"""The sandbox against hostile programs.

Each hostile program must end as a non-passing run with the right outcome within its limits,
while this process stays healthy and no process, work directory or stray file remains. The
isolation checks (files, /proc, concurrent fork bombs) need the namespaces+uid mode (root,
unshare, setpriv) and are skipped elsewhere; the rlimits-only mode is tested on its own, except
for the fork bomb, which nothing bounds there when the caller is root."""

import os
import tempfile
import time
from pathlib import Path

import pytest
from ponder.verifiers.sandbox import ISOLATED_BASE, Limits, RunResult, Sandbox, classify

LIMITS = Limits(wall_seconds=2, cpu_seconds=1, memory_bytes=512 << 20, output_bytes=1 << 16)
MARK = "ponder_marker_"
FORK_BOMB = "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass"


@pytest.fixture(scope="module")
def sandbox():
    return Sandbox(LIMITS, workers=2)


def isolated(sandbox) -> bool:
    return sandbox.isolation == "namespaces+uid"


def work_dirs() -> set[str]:
    bases = [Path(tempfile.gettempdir()), Path(ISOLATED_BASE)]
    return {p.name for base in bases if base.is_dir() for p in base.glob("run-*")}


def marked_processes() -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if MARK in Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace"):
                found.append(int(pid))
        except OSError:  # the process ended while we looked
            continue
    return found


def assert_no_leftovers(before: set[str]) -> None:
    deadline = time.monotonic() + 2  # a killed namespace's processes may take a moment to go
    while marked_processes() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not marked_processes(), "a sandboxed process survived its run"
    assert work_dirs() <= before, "a work directory was left behind"


def run_marked(sandbox, source: str) -> RunResult:
    """Run with a marker in every process's argv, so leftover processes can be found."""
    before = work_dirs()
    result = sandbox.run(f"import sys\nsys.argv.append('{MARK}{time.monotonic_ns()}')\n{source}")
    assert_no_leftovers(before)
    return result


HOSTILE = {
    "cpu loop": ("while True:\n    pass", {"timeout"}),
    "sleep forever": ("import time\ntime.sleep(3600)", {"timeout"}),
    "ignore SIGXCPU": (
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
        {"timeout"},
    ),
    "huge allocation": ("x = bytearray(8 << 30)", {"memory"}),
    "growing allocation": ("x = []\nwhile True:\n    x.append(bytearray(1 << 24))", {"memory"}),
    "print gigabytes": (
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        {"output_limit"},
    ),
    "huge file": ("open('big', 'wb').write(bytes(1 << 30))", {"output_limit", "memory"}),
    "open a socket": (
        "import socket\nsocket.create_connection(('1.1.1.1', 80), timeout=1)",
        {"failed"},
    ),
    "escape by setsid": (
        "import os, time\nif os.fork() == 0:\n    os.setsid()\n    time.sleep(3600)\n"
        "time.sleep(3600)",
        {"timeout"},
    ),
    "segfault": ("import ctypes\nctypes.string_at(0)", {"crashed"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_fails_within_limits(sandbox, name):
    source, outcomes = HOSTILE[name]
    start = time.perf_counter()
    result = run_marked(sandbox, source)
    assert result.outcome in outcomes, (result.outcome, result.stderr[-300:])
    assert time.perf_counter() - start < LIMITS.wall_seconds + 3
    assert len(result.stdout) <= 4096 and len(result.stderr) <= 4096


def test_fork_bomb_is_bounded(sandbox):
    if not isolated(sandbox):
        pytest.skip("as root without namespaces RLIMIT_NPROC does not bind: not run here")
    start = time.perf_counter()
    result = run_marked(sandbox, FORK_BOMB)
    assert result.outcome in {"timeout", "failed", "memory", "crashed"}
    assert time.perf_counter() - start < LIMITS.wall_seconds + 3


def test_a_fork_bomb_does_not_starve_concurrent_runs():
    """Each run has its own uid, so RLIMIT_NPROC counts per run, not per sandbox."""
    pool = Sandbox(LIMITS, workers=3)
    if not isolated(pool):
        pytest.skip("per-run uids need the namespaces+uid mode")
    good = (  # a few processes of its own: fails if the bomb's processes count against it
        "import os\nfor _ in range(4):\n    pid = os.fork()\n"
        "    if pid == 0:\n        os._exit(0)\n    assert os.waitpid(pid, 0)[1] == 0"
    )
    results = pool.run_many([FORK_BOMB, good, good, good, good])
    assert [r.outcome for r in results[1:]] == ["passed"] * 4, [r.stderr for r in results[1:]]


def test_killing_the_parent_does_not_reach_us(sandbox):
    result = run_marked(sandbox, "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert result.outcome in {"passed", "failed"}  # whatever it did, we are alive to see it
    group = run_marked(sandbox, "import os, signal\nos.killpg(os.getpgid(0), signal.SIGKILL)\n")
    assert group.outcome in {"crashed", "memory", "failed"}  # it may kill its own group only


def test_environment_is_scrubbed(sandbox, monkeypatch):
    monkeypatch.setenv("PONDER_TEST_SECRET", "hunter2")
    env = run_marked(sandbox, "import os, sys\nprint(sorted(os.environ), sys.flags.isolated)")
    assert env.passed and "PONDER_TEST_SECRET" not in env.stdout and "hunter2" not in env.stdout
    assert "HOME" not in env.stdout and env.stdout.endswith(" 1\n")


def test_writes_outside_the_work_dir_do_not_land(sandbox, tmp_path):
    outside = Path(tempfile.gettempdir()) / f"ponder-escape-{time.monotonic_ns()}"
    run_marked(sandbox, f"open({str(outside)!r}, 'w').write('x')")
    assert not outside.exists(), "the program wrote to the caller's /tmp"
    if not isolated(sandbox):
        pytest.skip("other writes are stopped only by the namespaces+uid mode")
    for target in (tmp_path / "escape", Path.cwd() / f"ponder-escape-{time.monotonic_ns()}"):
        result = run_marked(sandbox, f"open({str(target)!r}, 'w').write('x')")
        assert result.outcome == "failed" and not target.exists(), target
    assert list(tmp_path.iterdir()) == []
    scratch = run_marked(sandbox, "import os\nopen('f', 'w').write('x')\nprint(os.getcwd())")
    assert scratch.passed and scratch.stdout == "/tmp\n"  # its own private /tmp


def test_caller_files_and_processes_are_hidden(sandbox, tmp_path):
    if not isolated(sandbox):
        pytest.skip("file and process isolation need the namespaces+uid mode")
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    read = run_marked(sandbox, f"print(open({str(secret)!r}).read())")
    # Under /tmp the file is hidden by the private tmpfs; elsewhere the uid switch denies it.
    assert read.outcome == "failed" and "hunter2" not in read.stdout
    assert "Permission denied" in read.stderr or "No such file" in read.stderr
    root_only = run_marked(sandbox, "print(open('/root/.bashrc').read())")
    assert root_only.outcome == "failed"
    procs = run_marked(sandbox, "import os\nprint(sorted(int(p) for p in os.listdir('/proc') "
                                "if p.isdigit()))")  # fmt: skip
    assert procs.passed and str(os.getpid()) not in procs.stdout.strip("[]\n").split(", ")


def test_good_and_bad_programs(sandbox):
    ok, bad, exc, code = sandbox.run_many(
        ["print(6 * 7)", "assert 1 == 2", "raise KeyError(1)", "import sys\nsys.exit(3)"]
    )
    assert ok.passed and ok.stdout == "42\n" and ok.exit_code == 0 and ok.signal is None
    assert bad.outcome == exc.outcome == code.outcome == "failed"
    assert "AssertionError" in bad.stderr and code.exit_code == 3


def test_limits_are_validated():
    with pytest.raises(ValueError, match="wall_seconds"):
        Limits(wall_seconds=0)
    with pytest.raises(ValueError, match="open_files"):
        Limits(open_files=0)
    with pytest.raises(ValueError, match="workers"):
        Sandbox(workers=0)


def test_classify():
    assert classify(0, None, "", timed_out=False, cpu_exhausted=False) == "passed"
    assert classify(1, None, "AssertionError", timed_out=False, cpu_exhausted=False) == "failed"
    assert classify(None, 9, "", timed_out=True, cpu_exhausted=False) == "timeout"
    assert classify(None, 9, "", timed_out=False, cpu_exhausted=True) == "timeout"
    assert classify(None, 9, "", timed_out=False, cpu_exhausted=False) == "memory"
    assert classify(1, None, "OSError: [Errno 27] File too large", False, False) == "output_limit"
    assert classify(None, 11, "", timed_out=False, cpu_exhausted=False) == "crashed"


def test_rlimits_only_mode_still_protects_the_caller():
    """Without namespaces (not root, or no unshare), the child shares our uid: the audit hook
    must still stop it signalling us or opening sockets, and the rlimits must still hold."""
    weak = Sandbox(LIMITS, workers=1)
    weak.isolation = "rlimits-only"
    before = work_dirs()
    kill = weak.run("import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n")
    assert kill.outcome == "failed" and "signalling other processes" in kill.stderr
    sock = weak.run("import socket\nsocket.socket()\n")
    assert sock.outcome == "failed" and "network access is disabled" in sock.stderr
    assert weak.run("while True:\n    pass\n").outcome == "timeout"
    assert weak.run("x = bytearray(8 << 30)").outcome == "memory"
    assert weak.run("print('x' * (1 << 20))").outcome == "output_limit"
    assert work_dirs() <= before
