"""What `Engine.generate` returns, shaped like vLLM's outputs so its users feel at home.

One RequestOutput per prompt, with `.outputs[i]` (a CompletionOutput) per sample. Plain frozen
value objects; building them is the engine's job, reading them is everyone's.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Logprob:
    logprob: float
    rank: int | None = None  # 1-based rank among the model's top tokens, when known
    decoded_token: str | None = None


@dataclass(frozen=True, slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: tuple[int, ...]
    cumulative_logprob: float
    logprobs: list[dict[int, Logprob]] | None  # per generated token, when requested
    finish_reason: str  # "stop" (EOS, stop string or stop token) or "length"
    stop_reason: int | str | None = None  # the stop string or token id that ended it

    def finished(self) -> bool:
        return True


@dataclass(frozen=True, slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: tuple[int, ...]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0
    finished: bool = True
    metrics: dict = field(default_factory=dict)  # ponder's accounting (SearchStats.as_dict)
