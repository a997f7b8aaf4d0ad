"""SamplingParams: how to sample, with vLLM's names so its users feel at home.

A frozen value object validated on construction, types included: a bad value is a ValueError
that names the field, raised where the request is made, so it can never fail a batch it shares
with other requests later. It says nothing about scheduling or batching.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

from ponder.engine.structured.params import StructuredOutputsParams

MAX_N = 4096  # samples per request; more is a mistake, not a workload
MAX_LOGPROBS = 20


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_real(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def check_stop_strings(stop, what: str = "stop") -> tuple[str, ...]:
    """A tuple of non-empty strings from one string or an iterable of them; else ValueError."""
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, Iterable):
        raise ValueError(f"{what} must be a string or a list of strings, got {stop!r}")
    stop = tuple(stop)
    if not all(isinstance(s, str) and s for s in stop):
        raise ValueError(f"{what} must be non-empty strings, got {stop!r}")
    return stop


@dataclass(frozen=True, slots=True)
class SamplingParams:
    n: int = 1
    temperature: float = 1.0  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0  # 0 or -1: disabled
    min_p: float = 0.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    stop_token_ids: tuple[int, ...] = ()
    seed: int | None = None
    logprobs: int | None = None  # None: no logprobs; k >= 0: chosen token plus top-k alternatives
    ignore_eos: bool = False
    include_stop_str_in_output: bool = False
    # Constrained output (JSON schema, regex, choice, grammar): see ponder.engine.structured.
    structured_outputs: StructuredOutputsParams | None = None

    def __post_init__(self) -> None:
        # Accept a single stop string or any iterable, as vLLM does; store a tuple.
        object.__setattr__(self, "stop", check_stop_strings(self.stop, "SamplingParams: stop"))
        if isinstance(self.stop_token_ids, str | bytes) or not isinstance(
            self.stop_token_ids, Iterable
        ):
            got = self.stop_token_ids
            raise ValueError(f"SamplingParams: stop_token_ids must be a list of ints, got {got!r}")
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        if self.top_k == -1:
            object.__setattr__(self, "top_k", 0)
        for message in self._problems():
            raise ValueError(f"SamplingParams: {message}")

    def _problems(self) -> list[str]:
        checks = [
            (_is_int(self.n) and 1 <= self.n <= MAX_N, f"n must be an int in [1, {MAX_N}]"),
            (_is_real(self.temperature) and self.temperature >= 0, "temperature must be >= 0"),
            (_is_real(self.top_p) and 0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (_is_int(self.top_k) and self.top_k >= 0, "top_k must be an int >= 0 (-1: off)"),
            (_is_real(self.min_p) and 0 <= self.min_p <= 1, "min_p must be in [0, 1]"),
            (_is_int(self.max_tokens) and self.max_tokens >= 1, "max_tokens must be an int >= 1"),
            (
                all(_is_int(t) and t >= 0 for t in self.stop_token_ids),
                "stop_token_ids must be ints >= 0",
            ),
            (self.seed is None or _is_int(self.seed), "seed must be an int or None"),
            (
                self.logprobs is None
                or (_is_int(self.logprobs) and 0 <= self.logprobs <= MAX_LOGPROBS),
                f"logprobs must be None or an int in [0, {MAX_LOGPROBS}]",
            ),
            (isinstance(self.ignore_eos, bool), "ignore_eos must be a bool"),
            (
                isinstance(self.include_stop_str_in_output, bool),
                "include_stop_str_in_output must be a bool",
            ),
            (
                self.structured_outputs is None
                or isinstance(self.structured_outputs, StructuredOutputsParams),
                "structured_outputs must be a StructuredOutputsParams or None",
            ),
        ]
        # Each message starts with the field it names.
        return [f"{m}, got {getattr(self, m.split()[0])!r}" for ok, m in checks if not ok]

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0
