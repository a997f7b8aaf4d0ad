"""The request bodies, as pydantic models: OpenAI's fields plus one optional `ponder` field.

Types and ranges that hold for every server are checked here (FastAPI answers a 400 naming the
field); bounds an operator sets (Limits) and what the engine or a strategy knows (model
length, option names) are checked in requests.py. Unknown top-level fields are ignored, as
OpenAI-compatible servers do; the `ponder` field is strict, so a misspelt search knob is an error.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Positive = Annotated[int, Field(ge=1)]
Seed = Annotated[int, Field(ge=0, lt=2**63)]


class BudgetSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")
    max_tokens: Positive | None = None
    max_verifier_calls: Positive | None = None
    max_samples: Positive | None = None


class PonderSpec(BaseModel):
    """A search: which strategy, how wide, scored by which of the server's verifiers."""

    model_config = ConfigDict(extra="forbid")
    strategy: str = Field(description="a ponder strategy: sample, bon, majority, particle, ...")
    n: Positive | None = Field(None, description="search width (samples, particles, beams)")
    verifier: str | None = Field(None, description="one of the verifiers the server loaded")
    options: dict[str, Any] = Field(default_factory=dict, description="the strategy's options")
    budget: BudgetSpec | None = None
    max_steps: Positive | None = None
    max_step_tokens: Positive | None = None
    step_delimiter: Annotated[str, Field(min_length=1)] | None = None
    aggregation: str | None = None
    reference: str | None = Field(None, description="reference answer or tests for the verifier")
    include_candidates: bool = True


class StreamOptions(BaseModel):
    include_usage: bool = False


class _Common(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model: str
    n: Positive = 1
    temperature: Annotated[float, Field(ge=0, le=2)] | None = None
    top_p: Annotated[float, Field(gt=0, le=1)] | None = None
    top_k: Annotated[int, Field(ge=-1)] | None = None
    max_tokens: Positive | None = None
    stop: str | Annotated[list[str], Field(max_length=8)] | None = None
    seed: Seed | None = None
    stream: bool = False
    stream_options: StreamOptions | None = None
    user: str | None = None
    ponder: PonderSpec | None = None
    # Output constraints (apps/serve/constraints.py checks them; at most one per request).
    response_format: dict[str, Any] | None = None  # OpenAI
    structured_outputs: dict[str, Any] | None = None  # vLLM: json, regex, choice, grammar
    guided_json: dict[str, Any] | str | None = None  # vLLM's older names
    guided_regex: str | None = None
    guided_choice: list[str] | None = None
    guided_grammar: str | None = None


class CompletionRequest(_Common):
    prompt: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[int], Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(min_length=1)]  # a batch
        | Annotated[list[Annotated[list[int], Field(min_length=1)]], Field(min_length=1)]
    )
    logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
    echo: bool = False
    return_token_ids: bool = Field(
        False, description="vLLM's extension: each choice's generated token ids (plain jobs)"
    )


class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class Message(BaseModel):
    model_config = ConfigDict(extra="ignore")
    role: Literal["system", "user", "assistant", "developer", "tool"]
    content: str | list[TextPart] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):
            return "".join(p.text for p in self.content)
        return self.content or ""


class ChatRequest(_Common):
    messages: Annotated[list[Message], Field(min_length=1)]
    max_completion_tokens: Positive | None = None
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=20)] | None = None
