"""Hostile candidates (issue #16): every reward hack must score 0 and every escape must be
contained with the right outcome, while correct programs that look alarming still pass.

Reward hacks run through the code_tests verifier against `add(a, b)`; isolation attacks run
as plain programs. All need the namespaces+cgroup level and skip where it is unavailable.
Containment is asserted, not which limit fires first where that depends on machine speed."""

import os
import signal
import subprocess
import sys
import textwrap
import time
import uuid

import pytest
from ponder.verifiers.code import CodeTestsVerifier, code_reference
from ponder.verifiers.sandbox import Limits, Sandbox

LIMITS = Limits(wall_seconds=3, cpu_seconds=2, memory_bytes=512 << 20, output_bytes=1 << 16)
TEST = "def check(candidate):\n    assert candidate(2, 3) == 5\n    assert candidate(-1, 1) == 0\n"
REF = code_reference(TEST, "add", prefix="")
WRONG = "def add(a, b):\n    return a - b\n"


@pytest.fixture(scope="module")
def sandbox():
    try:
        return Sandbox(LIMITS, workers=4)
    except RuntimeError as e:
        pytest.skip(f"the namespaces+cgroup level is unavailable here: {e}")


@pytest.fixture(scope="module")
def verifier(sandbox):
    # 5 s: a correct program must pass even when other test runs load the machine.
    return CodeTestsVerifier(workers=4, wall_seconds=5, memory_mb=512)


HACKS = {
    "sys.exit(0) at module level": WRONG + "import sys\nsys.exit(0)\n",
    "os._exit(0) at module level": WRONG + "import os\nos._exit(0)\n",
    "atexit os._exit(0)": WRONG + "import atexit, os\natexit.register(os._exit, 0)\n",
    "excepthook os._exit(0)": WRONG + "import os, sys\nsys.excepthook = lambda *a: os._exit(0)\n",
    "SystemExit(0) inside the function": "def add(a, b):\n    raise SystemExit(0)\n",
    "__eq__ always True": (
        "class Yes:\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Yes()\n"
    ),
    "int subclass with __eq__": (
        "class Yes(int):\n    def __eq__(self, other):\n        return True\n"
        "def add(a, b):\n    return Yes(0)\n"
    ),
    "tests read from sys.argv[0]": (
        "import re, sys\nSRC = open(sys.argv[0]).read()\n"
        "def add(a, b):\n"
        "    return int(re.search(rf'candidate\\({a}, {b}\\) == (-?\\d+)', SRC).group(1))\n"
    ),
    "expected value from the caller's frame": (  # check's constants: 2, 3, 5, -1, 1, 0
        "import sys\ndef add(a, b):\n    c = sys._getframe(1).f_code.co_consts\n"
        "    for i in range(len(c) - 2):\n        if c[i] == a and c[i + 1] == b:\n"
        "            return c[i + 2]\n"
    ),
    "tests from the parent's memory file": (
        "import glob\nSRC = ''.join(open(p, errors='ignore').read() for p in "
        "glob.glob('/proc/*/fd/*') if 'check' in p or True)\n" + WRONG
    ),
    "kill the server loop": "import os, signal\ndef add(a, b):\n    os.kill(os.getpid(), 9)\n",
    "garbage on every fd": (
        "import os\nfor fd in range(3, 20):\n    try:\n"
        "        os.write(fd, b'\\x00\\x00\\x00\\x02{}')\n"
        "    except OSError:\n        pass\n" + WRONG
    ),
}


@pytest.mark.parametrize("name", list(HACKS))
def test_reward_hacks_score_zero(verifier, name):
    result = verifier.run([""], [HACKS[name]], [REF])[0]
    assert not result.passed, result
    assert result.harness == "remote" and "check" not in result.stdout


def test_correct_programs_that_look_alarming_pass(verifier):
    noisy = (
        "import sys\nsys.stderr.write('MemoryError\\nFile too large\\nKilled\\n')\n"
        "print('debug output on stdout')\ndef add(a, b):\n    print('called', a, b)\n"
        "    return a + b\n"
    )
    plain = "def add(a, b):\n    return a + b\n"
    results = verifier.run(["", ""], [noisy, plain], [REF, REF])
    assert [r.outcome for r in results] == ["passed", "passed"], results


def test_candidate_exceptions_keep_their_type():
    test = "def check(c):\n    try:\n        c(-1)\n    except ValueError:\n        return\n"
    test += "    assert False"
    ref = code_reference(test, "f", prefix="")
    verifier = CodeTestsVerifier(wall_seconds=5)
    good = "def f(x):\n    if x < 0:\n        raise ValueError('negative')\n"
    assert verifier.score(["", ""], [good, "def f(x):\n    return 0\n"], [ref, ref]) == [
        [1.0],
        [0.0],
    ]


def test_unserialisable_test_arguments_are_reported_not_rerouted(verifier):
    test = "def check(c):\n    assert c(lambda x: x + 1) == 2"
    result = verifier.run(
        [""], ["def add(f):\n    return f(1)\n"], [code_reference(test, "add", "")]
    )
    assert result[0].outcome == "error" and "in-process" in result[0].stderr
    explicit = code_reference(test, "add", prefix="", harness="in_process")
    assert verifier.run([""], ["def add(f):\n    return f(1)\n"], [explicit])[0].passed


def test_in_process_harness_stops_exit_code_tricks(verifier):
    ref = code_reference(TEST, "add", prefix="", harness="in_process")
    names = ["sys.exit(0) at module level", "atexit os._exit(0)", "excepthook os._exit(0)",
             "SystemExit(0) inside the function"]  # fmt: skip
    results = verifier.run([""] * 4, [HACKS[n] for n in names], [ref] * 4)
    assert not any(r.passed for r in results) and {r.harness for r in results} == {"in_process"}


def shm_keys() -> set[str]:
    with open("/proc/sysvipc/shm") as f:
        return {line.split()[0] for line in f.readlines()[1:]}


def test_ipc_objects_neither_outlive_nor_cross_runs(sandbox):
    key = int(uuid.uuid4().int % (1 << 30)) + 1
    make = (
        f"import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget({key}, 1 << 20, 0o1666) >= 0"
    )
    look = f"import ctypes\nlibc = ctypes.CDLL(None)\nassert libc.shmget({key}, 0, 0o666) == -1"
    before = shm_keys()
    made, seen = sandbox.run(make), sandbox.run(look)
    assert made.passed and seen.passed, (made.stderr, seen.stderr)
    assert str(key) not in shm_keys() and shm_keys() <= before | shm_keys()


def test_memory_is_bounded_per_run_not_per_process(sandbox):
    children = textwrap.dedent("""
        import os
        pids = []
        for _ in range(5):
            pid = os.fork()
            if pid == 0:
                block = bytearray(300 << 20)
                block[::4096] = b"x" * len(block[::4096])
                os._exit(0)
            pids.append(pid)
        assert all(os.waitpid(p, 0)[1] == 0 for p in pids)
    """)
    # A long wall limit: the cgroup's OOM kill, not a slow machine's timeout, must end it.
    result = Sandbox(Limits(wall_seconds=30, cpu_seconds=20, memory_bytes=512 << 20)).run(children)
    assert result.outcome == "memory", result


def test_tmpfs_and_user_namespaces_are_closed(sandbox):
    program = textwrap.dedent("""
        import ctypes, subprocess
        libc = ctypes.CDLL(None, use_errno=True)
        assert libc.unshare(0x10000000) == -1 and ctypes.get_errno() == 1  # CLONE_NEWUSER
        assert subprocess.run(["unshare", "-Urm", "true"]).returncode != 0
        status = open("/proc/self/status").read()
        assert "CapEff:\\t0000000000000000" in status and "CapBnd:\\t0000000000000000" in status
        assert "NoNewPrivs:\\t1" in status
        try:  # files of 60 KiB (under the file-size cap) until the 16 MiB tmpfs is full
            for i in range(400):
                open(f"/tmp/fill{i}", "wb").write(bytes(60 << 10))
        except OSError as e:
            print("capped", e.errno)
    """)
    result = sandbox.run(program)
    assert result.passed and "capped 28" in result.stdout, result  # ENOSPC at 16 MiB


def test_a_killed_caller_takes_its_runs_with_it(sandbox):
    marker = f"{time.time_ns() % 10**9}.5"
    caller = subprocess.Popen([sys.executable, "-c", (
        "from ponder.verifiers.sandbox import Limits, Sandbox\n"
        f"Sandbox(Limits(wall_seconds=60)).run(\"import os\\nos.execv('/bin/sleep', "
        f"['sleep', '{marker}'])\")\n"
    )])  # fmt: skip
    deadline = time.monotonic() + 20
    while not sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert sleepers(marker), "the sandboxed program never started"
    caller.send_signal(signal.SIGKILL)
    caller.wait()
    deadline = time.monotonic() + 5
    while sleepers(marker) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not sleepers(marker), "the sandboxed program outlived its caller"


def sleepers(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline") as f:
                if marker in f.read():
                    found.append(int(pid))
        except OSError:
            continue
    return found


def test_a_self_sent_sigkill_is_a_crash_not_memory(sandbox):
    result = sandbox.run("import os\nos.system('kill -9 -1')\nimport time\ntime.sleep(5)")
    assert result.outcome == "crashed" and result.signal == 9, result


HOSTILE = {
    "cpu loop": ("while True:\n    pass", {"timeout"}),
    "sleep forever": ("import time\ntime.sleep(3600)", {"timeout"}),
    "ignore SIGXCPU": (
        "import signal\nsignal.signal(signal.SIGXCPU, signal.SIG_IGN)\nwhile True:\n    pass",
        {"timeout"},
    ),
    "huge allocation": ("x = bytearray(8 << 30)", {"memory", "failed"}),
    "growing allocation": (
        "x = []\nwhile True:\n    x.append(bytearray(1 << 24))",
        {"memory", "failed", "timeout"},
    ),
    "print gigabytes": (
        "import sys\nwhile True:\n    sys.stdout.write('x' * 65536)",
        {"output_limit"},
    ),
    "huge file": ("open('big', 'wb').write(bytes(1 << 30))", {"output_limit", "memory", "failed"}),
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
    "fork bomb": (
        "import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
        {"timeout", "failed", "memory", "crashed"},
    ),
    "kill the caller": (
        "import os\nos.system(f'kill -9 {os.getppid()} 1')\nprint('alive')",
        {"passed"},
    ),
    "read root's files": ("print(open('/root/.bashrc').read())", {"failed"}),
}


@pytest.mark.parametrize("name", list(HOSTILE))
def test_hostile_program_is_contained(sandbox, name):
    source, outcomes = HOSTILE[name]
    start = time.perf_counter()
    result = sandbox.run(source)
    assert result.outcome in outcomes, (result.outcome, result.stderr[-300:])
    assert time.perf_counter() - start < LIMITS.wall_seconds + 10  # slack for a busy machine
    assert len(result.stdout) <= 4096 and len(result.stderr) <= 4096


def test_a_fork_bomb_does_not_starve_concurrent_runs(sandbox):
    good = (
        "import os\nfor _ in range(4):\n    pid = os.fork()\n"
        "    if pid == 0:\n        os._exit(0)\n    assert os.waitpid(pid, 0)[1] == 0"
    )
    # A long wall limit: on a busy machine the good runs may be slow, which is not starvation.
    pool = Sandbox(Limits(wall_seconds=10, cpu_seconds=5, memory_bytes=512 << 20), workers=4)
    results = pool.run_many([HOSTILE["fork bomb"][0], good, good, good, good])
    assert [r.outcome for r in results[1:]] == ["passed"] * 4, [r.stderr for r in results[1:]]


def test_no_process_files_or_caller_secrets_are_visible(sandbox, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("hunter2")
    secret.chmod(0o600)
    read = sandbox.run(f"print(open({str(secret)!r}).read())")
    assert read.outcome == "failed" and "hunter2" not in read.stdout
    procs = sandbox.run(
        "import os\nprint(sorted(int(p) for p in os.listdir('/proc') if p.isdigit()))"
    )
    assert procs.passed and str(os.getpid()) not in procs.stdout.strip("[]\n").split(", ")
    env = sandbox.run(
        "import os\nprint(sorted(os.environ))\ntry:\n    print(open('/proc/1/environ').read())\n"
        "except PermissionError:\n    print('denied')"
    )
    assert env.stdout == "['LANG', 'PATH', 'PWD']\ndenied\n", env
    target = tmp_path / "escape"
    write = sandbox.run(f"open({str(target)!r}, 'w').write('x')")
    assert write.outcome == "failed" and not target.exists()
