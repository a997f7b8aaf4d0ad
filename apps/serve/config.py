"""How a server is set up: its limits, its verifiers, its key. Frozen values, no I/O.

The verifiers are the only ones a request may name: a request picks among what the operator
loaded, it cannot load a model or run code it did not bring.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Limits:
    """Every bound a request is checked against; exceeding one is a 400 that names it."""

    max_body_bytes: int = 1_000_000
    max_n: int = 64  # choices of a plain request, and independent searches of a search request
    max_width: int = 256  # a search's n (samples, particles, beams)
    max_tokens: int = 1024  # per completion / per solution
    max_budget_tokens: int = 1_000_000  # a search's Budget.max_tokens
    max_concurrent: int = 64  # requests running at once; the rest wait in the queue
    max_queue: int = 256  # requests waiting; beyond it a 429
    queue_timeout_s: float = 30.0  # longest wait in the queue; then a 503

    def __post_init__(self) -> None:
        for name in (
            "max_body_bytes", "max_n", "max_width", "max_tokens", "max_budget_tokens",
            "max_concurrent", "max_queue",
        ):  # fmt: skip
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"Limits.{name} must be an integer >= 1, got {value!r}")
        if self.queue_timeout_s <= 0:
            raise ValueError(f"Limits.queue_timeout_s must be > 0, got {self.queue_timeout_s}")


@dataclass(frozen=True)
class ServerConfig:
    model_name: str = "ponder-embedded"
    api_key: str | None = None
    verifiers: Mapping[str, object] = field(default_factory=dict)  # name -> loaded Verifier
    default_verifier: str | None = None  # for strategies that need one when a request names none
    extract_answer: Callable[[str], str | None] | None = None  # None: the whole text, stripped
    limits: Limits = field(default_factory=Limits)
    progress_interval_s: float = 0.25  # between progress comments of a streamed search

    def __post_init__(self) -> None:
        if not self.model_name or ":" in self.model_name:
            raise ValueError(f"model_name must be non-empty without ':', got {self.model_name!r}")
        if self.default_verifier is not None and self.default_verifier not in self.verifiers:
            raise ValueError(
                f"default_verifier {self.default_verifier!r} is not among the loaded verifiers "
                f"{sorted(self.verifiers)}"
            )
        if self.progress_interval_s <= 0:
            raise ValueError(f"progress_interval_s must be > 0, got {self.progress_interval_s}")
