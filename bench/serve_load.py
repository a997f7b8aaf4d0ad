"""Load benchmark of `ponder serve`: latency and throughput against concurrency, plain and search.

    python bench/serve_load.py                       # concurrency 1,4,16,32,64; writes JSON
    python bench/serve_load.py --concurrency 1,32 --requests-per-client 2

Starts a real server subprocess on a free loopback port, then for each concurrency C runs C
clients that each send R requests (arith problems, seeded): plain sampling (n=1) and a BoN
search (ponder field, n=8, arith_outcome). Reports p50/p99 latency, requests/s, generated
tokens/s (usage.completion_tokens, which counts every branch) and the client's own CPU seconds
(client and server share the machine's cores). Then the offline engine does the
same BoN work (the same prompts and seeds) in one batch (`search_batch`) in this process,
alternating with the server's C=32 BoN run `--ratio-repeats` times (the machine is shared, so
only side-by-side ratios mean anything); the median ratio server/offline tokens/s is reported.
Prints a table, then one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
from ponder.strategies import problem_seed, search_batch
from ponder.tasks.registry import get_task, make_verifier

MAX_TOKENS = 128


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ponder.apps.cli", "serve", "--port", str(port),
           "--max-concurrent", "128", "--max-queue", "1024"]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/health").status_code == 200:
                return proc
        except httpx.TransportError:
            time.sleep(0.2)
    proc.kill()
    raise RuntimeError("the server did not start within 120 s")


def body(kind: str, prompt: str, seed: int) -> dict:
    out = {"model": "ponder-embedded", "prompt": prompt, "max_tokens": MAX_TOKENS, "seed": seed}
    if kind == "bon":
        out["ponder"] = {"strategy": "bon", "n": 8, "verifier": "arith_outcome",
                         "include_candidates": False}  # fmt: skip
    return out


async def load(url: str, kind: str, prompts: list[str], concurrency: int, seed: int) -> dict:
    latencies: list[float] = []
    tokens = 0
    queue = list(enumerate(prompts))

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal tokens
        while queue:
            i, prompt = queue.pop()
            start = time.perf_counter()
            r = await http.post(
                url + "/v1/completions", json=body(kind, prompt, problem_seed(seed, i))
            )
            r.raise_for_status()
            latencies.append(time.perf_counter() - start)
            tokens += r.json()["usage"]["completion_tokens"]

    start, cpu = time.perf_counter(), time.process_time()
    async with httpx.AsyncClient(timeout=600) as http:
        await asyncio.gather(*(client(http) for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    latencies.sort()
    return {
        "kind": kind, "concurrency": concurrency, "requests": len(prompts),
        "p50_s": round(statistics.median(latencies), 4),
        "p99_s": round(latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))], 4),
        "requests_per_s": round(len(prompts) / wall, 2),
        "tokens_per_s": round(tokens / wall, 1), "tokens": tokens, "wall_s": round(wall, 2),
        "client_cpu_s": round(cpu, 2),  # this process's CPU: what the client took from the server
    }  # fmt: skip


def offline_bon(prompts: list[str], seed: int) -> dict:
    """The same BoN work as the server's C=32 run, in one batch on an engine in this process."""
    from ponder.engine import Engine

    with Engine.from_pretrained() as engine:
        start = time.perf_counter()
        # search_batch seeds prompt i with problem_seed(seed, i), as the server requests did
        results = search_batch(
            engine, "bon", prompts, n=8, seed=seed, verifier=make_verifier("arith_outcome"),
            max_tokens=MAX_TOKENS, concurrency=len(prompts),
        )  # fmt: skip
        wall = time.perf_counter() - start
    tokens = sum(r.stats["generated_tokens"] for r in results)
    return {"tokens": tokens, "wall_s": round(wall, 2), "tokens_per_s": round(tokens / wall, 1)}


def server_vs_offline(url: str, prompts: list[str], seed: int, repeats: int) -> list[dict]:
    """Server BoN at C=32 and the offline batch, alternated `repeats` times: the machine is
    shared, so only ratios measured side by side mean anything."""
    pairs = []
    for _ in range(repeats):
        server = asyncio.run(load(url, "bon", prompts, 32, seed))
        offline = offline_bon(prompts, seed)
        ratio = round(server["tokens_per_s"] / offline["tokens_per_s"], 3)
        pairs.append({"server": server, "offline": offline, "ratio": ratio})
        print(f"server {server['tokens_per_s']} tok/s, offline {offline['tokens_per_s']} tok/s, "
              f"ratio {ratio}", flush=True)  # fmt: skip
    return pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", default="1,4,16,32,64")
    parser.add_argument("--requests-per-client", type=int, default=2)
    parser.add_argument("--ratio-repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="bench/results/serve_load.json")
    args = parser.parse_args()
    levels = [int(c) for c in args.concurrency.split(",")]
    n_prompts = max(levels + [32]) * args.requests_per_client
    prompts = [item.prompt for item in get_task("arith").items(n_prompts, args.seed)]
    proc = start_server(port := free_port())
    url = f"http://127.0.0.1:{port}"
    rows = []
    try:
        for kind in ("plain", "bon"):
            for c in levels:
                some = prompts[: c * args.requests_per_client]
                rows.append(asyncio.run(load(url, kind, some, c, args.seed)))
                print(rows[-1], flush=True)
        some = prompts[: 32 * args.requests_per_client]
        pairs = server_vs_offline(url, some, args.seed, args.ratio_repeats)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    ratio = statistics.median(p["ratio"] for p in pairs) if pairs else None
    print(f"{'kind':6} {'C':>4} {'req':>5} {'p50 s':>8} {'p99 s':>8} {'req/s':>7} {'tok/s':>9}")
    for r in rows:
        print(f"{r['kind']:6} {r['concurrency']:>4} {r['requests']:>5} {r['p50_s']:>8} "
              f"{r['p99_s']:>8} {r['requests_per_s']:>7} {r['tokens_per_s']:>9}")  # fmt: skip
    print(f"server/offline BoN n=8 at C=32, median of {len(pairs)} side-by-side pairs: {ratio} "
          f"(each: {[p['ratio'] for p in pairs]}; target >= 0.8)")  # fmt: skip
    summary = {"rows": rows, "server_vs_offline_pairs": pairs, "server_vs_offline_c32": ratio,
               "seed": args.seed, "requests_per_client": args.requests_per_client,
               "max_tokens": MAX_TOKENS, "cpus": os.cpu_count()}  # fmt: skip
    Path(args.out).write_text(json.dumps(summary, indent=1) + "\n")
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
