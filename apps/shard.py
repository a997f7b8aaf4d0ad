"""Sharded evaluation on Ray: the problems of one run spread over N actors, one backend each.

    records = eval_sharded(spec, items, out, shards=4, address="auto")

Each actor (a `Shard`) builds its own backend, task and verifier from names and options (a
verifier may hold a model; nothing heavy crosses the wire) and solves the problems it is handed,
many at once on its engine. Problem `index` keeps its seed, problem_seed(seed, index), so a
sharded run records what an unsharded one would. The driver is the only writer of the run file
(apps/run_file.py): actors return records, the driver appends each as it arrives, so a killed
driver leaves whole records only, and a rerun skips the ids already there and solves the rest.

Ray is optional (extra: ray). Without an address the driver starts a local Ray; with
`--ray-address auto` it joins the cluster that `ray start --head` / `ray start --address`
built (README, "Backends"). This module deliberately does not place actors (Ray does) and
does not retry a failed problem: its error ends the run, and the rerun retries it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from ponder.apps.evaluate import EvalSettings, record_of, request_for
from ponder.apps.run_file import RunFile
from ponder.tasks.base import Item


@dataclass(frozen=True)
class ShardSpec:
    """What every actor rebuilds for itself: the run's settings and its backend."""

    settings: EvalSettings
    backend: str = "torch"  # ponder.apps.cli_options.BACKENDS
    model_path: str | None = None
    urls: tuple[str, ...] = ()  # --backend remote: actor k talks to urls[k % len(urls)]
    api_key: str | None = None
    concurrency: int = 16  # problems searched at once on each actor's engine
    ray_options: dict = field(default_factory=lambda: {"num_cpus": 1})  # per actor

    def __post_init__(self):
        if (self.backend == "remote") != bool(self.urls):
            raise ValueError("ShardSpec: urls go with backend='remote' (and only with it)")
        if self.concurrency < 1:
            raise ValueError(f"ShardSpec: concurrency must be >= 1, got {self.concurrency}")


class Shard:
    """One actor's state. Plain class: `ray.remote` wraps it in `eval_sharded`, and the tests
    can drive it without Ray."""

    def __init__(self, spec: ShardSpec, rank: int):
        from ponder.apps.cli_options import load_backend
        from ponder.tasks.registry import get_task, make_verifier

        s = spec.settings
        url = spec.urls[rank % len(spec.urls)] if spec.urls else None
        self.spec = spec
        self.engine = load_backend(spec.backend, spec.model_path, url, spec.api_key)
        self.task = get_task(s.task, **s.task_options)
        self.verifier = make_verifier(s.verifier, **s.verifier_options)
        self._gate: asyncio.Semaphore | None = None  # made on the actor's event loop

    async def solve(self, index: int, item: Item) -> dict:
        from ponder.strategies import run

        self._gate = self._gate or asyncio.Semaphore(self.spec.concurrency)
        s = self.spec.settings
        async with self._gate:
            request = request_for(self.engine, self.task, item, index, s, self.verifier)
            result = await run(self.engine, s.strategy, request, **s.options)
        return record_of(self.task, item, s, self.verifier, result)

    def close(self) -> None:
        self.engine.close()


def eval_sharded(
    spec: ShardSpec,
    items: list[Item],
    out,
    *,
    shards: int,
    address: str | None = None,
    restart: bool = False,
    on_record: Callable[[dict], None] = lambda r: None,
) -> list[dict]:
    """Solve `items` on `shards` Ray actors; the records of every item, in item order."""
    import ray

    if shards < 1:
        raise ValueError(f"shards must be >= 1, got {shards}")
    run_file = RunFile.open(out, asdict(spec.settings), restart=restart)
    done = {r["id"]: r for r in run_file.records}
    pending = [(i, it) for i, it in enumerate(items) if it.id not in done]
    if pending:
        if not ray.is_initialized():
            ray.init(address=address, log_to_driver=False)
        actor = ray.remote(**spec.ray_options)(Shard)
        actors = [actor.remote(spec, rank) for rank in range(min(shards, len(pending)))]
        try:
            _collect(run_file, done, pending, actors, on_record)
        finally:
            _stop(actors)
    return [done[it.id] for it in items if it.id in done]


def _collect(run_file: RunFile, done: dict, pending: list, actors: list, on_record) -> None:
    """Hand problem k to actor k % len(actors); append each record as it arrives."""
    import ray

    waiting = [actors[k % len(actors)].solve.remote(i, it) for k, (i, it) in enumerate(pending)]
    while waiting:
        ready, waiting = ray.wait(waiting, num_returns=1)
        record = ray.get(ready[0])
        run_file.append([record])  # the one writer: whole lines, flushed
        done[record["id"]] = record
        on_record(record)


def _stop(actors: list) -> None:
    """Close each actor's engine (a few seconds at most), then end the actor."""
    import ray

    closing = [a.close.remote() for a in actors]
    ray.wait(closing, num_returns=len(closing), timeout=30)
    for a in actors:
        ray.kill(a)


def run_sharded_command(settings: EvalSettings, items: list[Item], out, *, shards: int,
                        address: str | None, backend: str, model_path: str | None,
                        url: str | None, api_key: str | None, concurrency: int,
                        restart: bool) -> dict:  # fmt: skip
    """`ponder eval --shards N`: check the flags, run, and summarise (a usage error, not a
    traceback, for a missing Ray or a bad flag)."""
    import time

    import click
    from ponder.apps.evaluate import summarize

    try:
        import ray  # noqa: F401
    except ImportError:
        raise click.UsageError("--shards needs Ray: pip install 'ponder[ray]'") from None
    urls = tuple(u for u in (url or "").split(",") if u)
    try:
        spec = ShardSpec(settings, backend, model_path, urls, api_key, concurrency)
    except ValueError:
        raise click.BadParameter("--url goes with --backend remote (and only with it)") from None
    start = time.perf_counter()
    try:
        records = eval_sharded(spec, items, out, shards=shards, address=address, restart=restart)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    return summarize(records, time.perf_counter() - start)
