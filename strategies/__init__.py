"""ponder.strategies: search algorithms written only against the SearchContext verbs.

    STRATEGIES[name](ctx, request, **options) -> SearchResult   (async)

One registry shared by the CLI, the Python API and the server. Strategies never import torch.
"""

from __future__ import annotations

from ponder.strategies.astar import astar
from ponder.strategies.base import Budget, Candidate, SearchRequest, SearchResult
from ponder.strategies.beam import beam
from ponder.strategies.best_of_n import bon, sample
from ponder.strategies.bom import bom
from ponder.strategies.dvts import dvts
from ponder.strategies.majority import majority, weighted_majority
from ponder.strategies.particle import particle
from ponder.strategies.particle_gibbs import particle_gibbs

STRATEGIES = {
    "sample": sample,
    "bon": bon,
    "majority": majority,
    "weighted_majority": weighted_majority,
    "bom": bom,
    "beam": beam,
    "particle": particle,
    "particle_gibbs": particle_gibbs,
    "astar": astar,
    "dvts": dvts,
}

# Strategies that score partial solutions step by step: they need a process verifier.
PROCESS_STRATEGIES = frozenset({"beam", "particle", "particle_gibbs", "astar", "dvts"})


def get_strategy(name: str):
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]


__all__ = [
    "PROCESS_STRATEGIES",
    "STRATEGIES",
    "Budget",
    "Candidate",
    "SearchRequest",
    "SearchResult",
    "get_strategy",
]
