"""What `Engine.generate` returns, shaped like vLLM's outputs so its users feel at home.

One RequestOutput per prompt, with `.outputs[i]` (a CompletionOutput) per sample. Plain frozen
value objects; building them is the engine's job, reading them is everyone's. Streaming
(`Engine.stream`) yields RequestOutputs in delta mode: each holds only the completions that
advanced, with their new tokens and text; `finished` is set on the last one. Finish reasons here
are the public edge's ("stop", "length", "abort"), mapped once from the engine's vocabulary by
`ponder.engine.protocol.openai_finish_reason`.
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
    finish_reason: str | None  # "stop" (EOS, stop string/token), "length", "abort"; None: running
    stop_reason: int | str | None = None  # the stop string or token id that ended it

    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(frozen=True, slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: tuple[int, ...]
    outputs: list[CompletionOutput]
    num_cached_tokens: int = 0
    finished: bool = True
    metrics: dict = field(default_factory=dict)  # ponder's accounting (SearchStats.as_dict)
    # metrics: prompt_tokens, cached_prompt_tokens, computed_prompt_tokens, generated_tokens,
    # queue_seconds, latency_steps, ... (what a server reports in `usage`)
