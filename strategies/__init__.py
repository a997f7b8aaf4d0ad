"""ponder.strategies: search algorithms written only against the SearchContext verbs.

    result = await search(engine, "particle", prompt, n=16, verifier=v, seed=0, tau=0.5)
    STRATEGIES[name].process / .needs_verifier / .options      (what each one needs)

One registry shared by the CLI, the Python API, the server and the benchmarks; one call
(`search` / `run` / `search_batch`, strategies/run.py) that they all use. Strategies never
import torch.
"""

from __future__ import annotations

from ponder.strategies.base import (
    MAX_WIDTH,
    Budget,
    Candidate,
    SearchRequest,
    SearchResult,
    problem_seed,
)
from ponder.strategies.registry import STRATEGIES, Strategy, get_strategy
from ponder.strategies.run import REQUEST_FIELDS, run, search, search_batch, split_settings

__all__ = [
    "MAX_WIDTH",
    "REQUEST_FIELDS",
    "STRATEGIES",
    "Budget",
    "Candidate",
    "SearchRequest",
    "SearchResult",
    "Strategy",
    "get_strategy",
    "problem_seed",
    "run",
    "search",
    "search_batch",
    "split_settings",
]
