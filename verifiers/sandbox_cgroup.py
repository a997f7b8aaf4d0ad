"""A cgroup per sandboxed run: total memory and process count for the whole tree, and the
kernel's own account of what happened (OOM kills, CPU time of every process, reaped or not).

    group = RunCgroup.create(memory_bytes, processes, cpu_cores)  # None: no cgroups here
    group.enter(pid)      # in the child, before exec: all descendants are born inside
    group.oom_kills(), group.cpu_seconds()
    group.remove()        # after the tree is gone

Works with cgroup v1 (the memory, pids and cpuacct hierarchies, as on this project's machines)
and cgroup v2 (one directory; needs the memory and pids controllers delegated to the caller's
cgroup, i.e. listed in its cgroup.subtree_control). Run cgroups are children of the caller's own
cgroup, named ponder-<caller pid>-<n>; ones left by a caller that was killed are removed by the
next probe (`unavailable_reason`). Swap is disabled inside (memsw / swap.max) where the kernel
offers the knob. CPU bandwidth is capped per run at `cpu_cores` (cpu.cfs_quota_us over a
100 ms period in v1, cpu.max in v2) where the cpu controller is available (`cpu_capped()`):
a run with 32 busy processes gets the same share of the machine as a run with one. CPU time is
still capped per process by RLIMIT_CPU and per run by the wall limit.
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import os
import re
import time

V1_CONTROLLERS = ("memory", "pids", "cpuacct")
V1_OPTIONAL = ("cpu",)  # the bandwidth cap; runs go without it where it is not mounted
CPU_PERIOD_US = 100_000
_counter = itertools.count()  # unique names within this process, not configuration
_NAME = re.compile(r"ponder-(\d+)-\d+$")


def _mounts() -> list[tuple[str, str, str, set[str]]]:
    """(root, mount point, fs type, super options) of every cgroup mount."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields, (fstype, _, options) = left.split(), right.split()[:3]
            if fstype in ("cgroup", "cgroup2"):
                found.append((fields[3], fields[4], fstype, set(options.split(","))))
    return found


def _own_paths() -> dict[str, str]:
    """controller (or "" for v2) -> this process's cgroup path."""
    paths = {}
    with open("/proc/self/cgroup") as f:
        for line in f:
            _, controllers, path = line.rstrip("\n").split(":", 2)
            for c in controllers.split(",") if controllers else [""]:
                paths[c] = path
    return paths


def _join(root: str, mount: str, path: str) -> str:
    if root != "/" and path.startswith(root):
        path = path[len(root) :]
    return os.path.join(mount, path.lstrip("/"))


@functools.cache
def bases() -> dict[str, str] | None:
    """Where run cgroups go: {controller: dir} for v1, {"": dir} for v2; None if neither."""
    mounts, own = _mounts(), _own_paths()
    v1 = {}
    for root, mount, fstype, options in mounts:
        for c in V1_CONTROLLERS + V1_OPTIONAL:
            if fstype == "cgroup" and c in options and c in own:
                v1[c] = _join(root, mount, own[c])
    if set(V1_CONTROLLERS) <= v1.keys():
        return v1
    for root, mount, fstype, _ in mounts:
        if fstype == "cgroup2" and "" in own:
            base = _join(root, mount, own[""])
            with contextlib.suppress(OSError), open(f"{base}/cgroup.subtree_control") as f:
                if {"memory", "pids"} <= set(f.read().split()):
                    return {"": base}
    return None


def _write(path: str, value: int | str) -> None:
    with open(path, "w") as f:
        f.write(str(value))


def _read_key(path: str, key: str) -> int:
    with open(path) as f:
        for line in f:
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    return 0


class RunCgroup:
    def __init__(self, dirs: dict[str, str]):
        self.dirs = dirs  # controller -> directory ("" -> the single v2 directory)

    @classmethod
    def create(cls, memory_bytes: int, processes: int, cpu_cores: float) -> RunCgroup | None:
        found = bases()
        if found is None:
            return None
        name = f"ponder-{os.getpid()}-{next(_counter)}"
        group = cls({c: os.path.join(base, name) for c, base in found.items()})
        try:
            for d in group.unique_dirs:
                os.mkdir(d)
            group._limit(memory_bytes, processes, round(cpu_cores * CPU_PERIOD_US))
        except OSError:
            group.remove()
            raise
        return group

    @property
    def unique_dirs(self) -> list[str]:
        """Each directory once: v1 may mount several controllers together (cpu,cpuacct)."""
        return list(dict.fromkeys(self.dirs.values()))

    def _limit(self, memory_bytes: int, processes: int, quota_us: int) -> None:
        if "" in self.dirs:  # v2
            d = self.dirs[""]
            _write(f"{d}/memory.max", memory_bytes)
            with contextlib.suppress(FileNotFoundError):
                _write(f"{d}/memory.swap.max", 0)
            _write(f"{d}/pids.max", processes)
            if os.path.exists(f"{d}/cpu.max"):
                _write(f"{d}/cpu.max", f"{quota_us} {CPU_PERIOD_US}")
            return
        if "cpu" in self.dirs:
            _write(f"{self.dirs['cpu']}/cpu.cfs_period_us", CPU_PERIOD_US)
            _write(f"{self.dirs['cpu']}/cpu.cfs_quota_us", quota_us)
        mem = self.dirs["memory"]
        _write(f"{mem}/memory.limit_in_bytes", memory_bytes)
        with contextlib.suppress(FileNotFoundError):  # absent when swap accounting is off
            _write(f"{mem}/memory.memsw.limit_in_bytes", memory_bytes)
        _write(f"{self.dirs['pids']}/pids.max", processes)

    def enter(self, pid: int) -> None:
        for d in self.unique_dirs:
            _write(f"{d}/cgroup.procs", pid)

    def oom_kills(self) -> int:
        if "" in self.dirs:
            return _read_key(f"{self.dirs['']}/memory.events", "oom_kill")
        return _read_key(f"{self.dirs['memory']}/memory.oom_control", "oom_kill")

    def cpu_seconds(self) -> float:
        if "" in self.dirs:
            return _read_key(f"{self.dirs['']}/cpu.stat", "usage_usec") / 1e6
        with open(f"{self.dirs['cpuacct']}/cpuacct.usage") as f:
            return int(f.read()) / 1e9

    def remove(self, patience: float = 2.0) -> None:
        """rmdir every directory; a dying tree may keep one busy for a moment."""
        if "" in self.dirs:
            with contextlib.suppress(OSError):
                _write(f"{self.dirs['']}/cgroup.kill", 1)
        deadline = time.monotonic() + patience
        for d in self.unique_dirs:
            while True:
                try:
                    os.rmdir(d)
                    break
                except FileNotFoundError:
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        break  # left for the next probe's sweep
                    time.sleep(0.01)


def cpu_capped() -> bool:
    """Whether run cgroups here cap CPU bandwidth (the cpu controller is available)."""
    found = bases() or {}
    if "" in found:
        with contextlib.suppress(OSError), open(f"{found['']}/cgroup.subtree_control") as f:
            return "cpu" in f.read().split()
        return False
    return "cpu" in found


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def sweep() -> None:
    """Remove run cgroups whose caller no longer exists (it was killed mid-run)."""
    for base in (bases() or {}).values():
        with contextlib.suppress(OSError):
            for name in os.listdir(base):
                m = _NAME.match(name)
                if m and not _alive(int(m.group(1))):
                    with contextlib.suppress(OSError):
                        os.rmdir(os.path.join(base, name))


def unavailable_reason() -> str | None:
    """None when a run cgroup can be made and limited here, else why not."""
    if bases() is None:
        return (
            "no writable cgroup: needs cgroup v1 memory, pids and cpuacct hierarchies, or "
            "cgroup v2 with memory and pids in the caller's cgroup.subtree_control"
        )
    sweep()
    try:
        group = RunCgroup.create(64 << 20, 8, 1.0)
    except OSError as e:
        return f"cannot create a run cgroup: {e}"
    group.remove()
    return None
