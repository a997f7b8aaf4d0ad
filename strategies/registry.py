"""The strategy registry: each entry says what the strategy needs, once.

    STRATEGIES["particle"].process            -> True: it scores partial solutions step by step
    await STRATEGIES["particle"](ctx, request, tau=0.5)   -> SearchResult (checked, then run)

A `Strategy` wraps a strategy function (`async def run(ctx, request, **options)`) with its
requirements: whether it needs a verifier, whether that verifier must be a process verifier
(step scores of partial solutions), and whether its scores must be probabilities in [0, 1]
(resampling weights). `check(request, options)` refuses a request that breaks them, and options
the function does not take, before any compute; the CLI, the server, the benchmarks and the
Python API all go through it, so none of them keeps its own list.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from ponder.engine.options import check_options, option_names
from ponder.engine.protocol import SearchContext
from ponder.strategies.astar import astar
from ponder.strategies.base import SearchRequest, SearchResult
from ponder.strategies.beam import beam
from ponder.strategies.best_of_n import bon, sample
from ponder.strategies.bom import bom
from ponder.strategies.dvts import dvts
from ponder.strategies.majority import majority, weighted_majority
from ponder.strategies.particle import particle
from ponder.strategies.particle_gibbs import particle_gibbs
from ponder.verifiers.base import score_range

StrategyFn = Callable[..., Awaitable[SearchResult]]


@dataclass(frozen=True, slots=True)
class Strategy:
    name: str
    run: StrategyFn
    needs_verifier: bool
    process: bool = False  # needs a process verifier (step scores of partial solutions)
    probabilities: bool = False  # needs scores in [0, 1] (they become resampling weights)

    @property
    def options(self) -> list[str]:
        return option_names(self.run, skip=("ctx", "request")) or []

    def check(self, request: SearchRequest, options: dict) -> None:
        """ValueError when the request or the options do not fit this strategy."""
        check_options(self.run, options, f"strategy {self.name!r}", skip=("ctx", "request"))
        verifier = request.verifier
        if verifier is None:
            if self.needs_verifier:
                raise ValueError(f"strategy {self.name!r} needs a verifier")
            return
        if self.process and not getattr(verifier, "process", False):
            raise ValueError(
                f"strategy {self.name!r} needs a process verifier (step scores), got "
                f"{getattr(verifier, 'name', verifier)!r}, an outcome verifier"
            )
        if self.probabilities and score_range(verifier) != (0.0, 1.0):
            raise ValueError(
                f"strategy {self.name!r} turns scores into resampling weights and needs a "
                f"verifier scoring in [0, 1]; {verifier.name!r} scores in {score_range(verifier)}"
            )
        self._check_values(request, options)

    def _check_values(self, request: SearchRequest, options: dict) -> None:
        """Run the strategy up to its first use of the context: a strategy validates its option
        values before it touches the context, so this raises its ValueError (e.g. "tau must be
        > 0") with no compute and no backend, e.g. before a model loads."""
        coroutine = self.run(_Probe(), request, **options)
        try:
            coroutine.send(None)
        except _Reached:
            pass
        except ValueError as exc:
            message = str(exc)
            if not message.startswith(self.name):
                message = f"strategy {self.name!r}: {message}"
            raise ValueError(message) from None
        except StopIteration:
            raise RuntimeError(
                f"strategy {self.name!r} finished without using its context"
            ) from None
        finally:
            coroutine.close()

    async def __call__(self, ctx: SearchContext, request: SearchRequest, **options) -> SearchResult:
        self.check(request, options)
        return await self.run(ctx, request, **options)


class _Reached(Exception):
    """The probed strategy got past its validation to its first context call."""


class _Probe:
    """A context whose every verb stops the strategy (see Strategy._check_values)."""

    def __getattr__(self, name: str):
        raise _Reached(name)


STRATEGIES: dict[str, Strategy] = {
    s.name: s
    for s in [
        Strategy("sample", sample, needs_verifier=False),
        Strategy("bon", bon, needs_verifier=True),
        Strategy("majority", majority, needs_verifier=False),
        Strategy("weighted_majority", weighted_majority, needs_verifier=True),
        Strategy("bom", bom, needs_verifier=True),
        Strategy("beam", beam, needs_verifier=True, process=True),
        Strategy("particle", particle, needs_verifier=True, process=True, probabilities=True),
        Strategy(
            "particle_gibbs", particle_gibbs, needs_verifier=True, process=True, probabilities=True
        ),
        Strategy("astar", astar, needs_verifier=True, process=True),
        Strategy("dvts", dvts, needs_verifier=True, process=True),
    ]
}


def get_strategy(name: str) -> Strategy:
    if name not in STRATEGIES:
        raise ValueError(f"unknown strategy {name!r}; known: {sorted(STRATEGIES)}")
    return STRATEGIES[name]
