"""From a validated request body to a job the engine can run: prompt ids plus either
SamplingParams (plain) or SearchRequests (a search), every operator limit checked.

Everything a request can get wrong is found here, before any compute: a limit (400 naming it),
an unknown strategy, verifier or option (the strategy registry's own check), a prompt the model
cannot take. Nothing here touches the engine's state.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from ponder.apps.serve.config import ServerConfig
from ponder.apps.serve.constraints import check_compiles, constraint_of
from ponder.apps.serve.errors import bad_request
from ponder.apps.serve.model_name import parse_model
from ponder.apps.serve.schemas import ChatRequest, CompletionRequest, PonderSpec
from ponder.engine.sampling_params import SamplingParams
from ponder.strategies import Budget, SearchRequest, get_strategy, problem_seed
from pydantic import ValidationError

DEFAULT_MAX_TOKENS = 256
DEFAULT_WIDTH = 8


@dataclass(frozen=True)
class Job:
    """One request, ready to run: plain when `strategy` is None, else a search per request."""

    prompt_ids: tuple[int, ...]
    params: SamplingParams  # plain sampling (n choices), also the stream/logprob settings
    strategy: str | None = None
    searches: list[SearchRequest] = field(default_factory=list)  # one per choice group
    options: dict = field(default_factory=dict)
    verifier: str | None = None
    include_candidates: bool = True

    @property
    def label(self) -> str:
        return self.strategy or "plain"


def _check_limit(value: int | None, limit: int, param: str) -> None:
    if value is not None and value > limit:
        raise bad_request(f"{param} is {value}; this server allows at most {limit}", param)


def _prompt_ids(engine, body, chat: bool) -> tuple[tuple[int, ...], str | None]:
    """(prompt token ids, the question verifiers see)."""
    if chat:
        users = [m for m in body.messages if m.role == "user"]
        question = users[-1].text if users else body.messages[-1].text
        if engine.has_chat_template:
            messages = [{"role": m.role, "content": m.text} for m in body.messages]
            text = engine.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=False
            )
            ids = tuple(engine.tokenizer(text, add_special_tokens=False).input_ids)
        else:  # a model without a template (the embedded one) reads the last user turn raw
            ids = engine.encode(question)
        param = "messages"
    else:
        prompt = body.prompt
        ids = engine.encode(prompt) if isinstance(prompt, str) else tuple(prompt)
        question = prompt if isinstance(prompt, str) else None
        param = "prompt"
    try:
        engine.check_prompt(ids)
    except ValueError as exc:
        raise bad_request(str(exc), param) from None
    return ids, question


def _sampling(body, config: ServerConfig, chat: bool) -> SamplingParams:
    max_tokens = body.max_tokens
    if chat and body.max_completion_tokens is not None:
        max_tokens = body.max_completion_tokens
    limits = config.limits
    _check_limit(max_tokens, limits.max_tokens, "max_tokens")
    _check_limit(body.n, limits.max_n, "n")
    logprobs = body.logprobs if not chat else ((body.top_logprobs or 0) if body.logprobs else None)
    try:
        return SamplingParams(
            n=body.n,
            temperature=1.0 if body.temperature is None else body.temperature,
            top_p=1.0 if body.top_p is None else body.top_p,
            top_k=body.top_k or 0,
            max_tokens=max_tokens or min(DEFAULT_MAX_TOKENS, limits.max_tokens),
            stop=() if body.stop is None else body.stop,
            seed=body.seed,
            logprobs=logprobs,
            structured_outputs=constraint_of(body),
        )
    except ValueError as exc:
        raise bad_request(str(exc)) from None


def _spec(body, config: ServerConfig) -> PonderSpec | None:
    from_name = parse_model(body.model, config.model_name)
    if body.ponder is not None:
        return body.ponder  # the body field wins over the model-name convention
    if from_name is None:
        return None
    try:
        return PonderSpec.model_validate(from_name)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise bad_request(f"model: {where}: {first['msg']}", "model") from None


def _verifier(spec: PonderSpec, config: ServerConfig, needs: bool):
    name = spec.verifier or (config.default_verifier if needs else None)
    if name is None:
        if needs:
            raise bad_request(
                f"strategy {spec.strategy!r} needs a verifier; this server has "
                f"{sorted(config.verifiers) or 'none (start it with --verifier NAME)'}",
                "ponder.verifier",
            )
        return None, None
    if name not in config.verifiers:
        raise bad_request(
            f"unknown verifier {name!r}; this server loaded {sorted(config.verifiers)}",
            "ponder.verifier",
        )
    return name, config.verifiers[name]


def _budget(spec: PonderSpec, config: ServerConfig) -> Budget:
    limit = config.limits.max_budget_tokens
    given = spec.budget.model_dump() if spec.budget else {}
    _check_limit(given.get("max_tokens"), limit, "ponder.budget.max_tokens")
    return Budget(**{**given, "max_tokens": given.get("max_tokens") or limit})


def _searches(spec, body, params, ids, question, config) -> tuple[list[SearchRequest], str | None]:
    try:
        strategy = get_strategy(spec.strategy)
    except ValueError as exc:
        raise bad_request(str(exc), "ponder.strategy") from None
    _check_limit(spec.n, config.limits.max_width, "ponder.n")
    name, verifier = _verifier(spec, config, strategy.needs_verifier)
    extras = {
        k: getattr(spec, k)
        for k in ("max_steps", "step_delimiter", "aggregation", "reference")
        if getattr(spec, k) is not None
    }
    if config.extract_answer is not None:
        extras["extract_answer"] = config.extract_answer
    seed = params.seed if params.seed is not None else random.getrandbits(62)
    try:
        requests = [
            SearchRequest(
                prompt=ids,
                verifier=verifier,
                n=spec.n or DEFAULT_WIDTH,
                seed=problem_seed(seed, i),
                temperature=params.temperature,
                top_p=params.top_p,
                top_k=params.top_k,
                max_tokens=params.max_tokens,
                max_step_tokens=spec.max_step_tokens or min(256, params.max_tokens),
                budget=_budget(spec, config),
                question=question,
                structured_outputs=params.structured_outputs,
                **extras,
            )  # fmt: skip
            for i in range(params.n)
        ]
        strategy.check(requests[0], spec.options)
    except ValueError as exc:
        raise bad_request(str(exc), "ponder") from None
    return requests, name


def build_job(engine, body: CompletionRequest | ChatRequest, config: ServerConfig) -> Job:
    """The job a request asks for, or an APIError (400/404) saying what is wrong with it."""
    chat = isinstance(body, ChatRequest)
    params = _sampling(body, config, chat)
    check_compiles(engine, body, params.structured_outputs)
    spec = _spec(body, config)
    ids, question = _prompt_ids(engine, body, chat)
    if spec is None:
        return Job(ids, params)
    if body.stop:
        raise bad_request("stop is not supported with a search (use ponder.step_delimiter)", "stop")
    searches, verifier = _searches(spec, body, params, ids, question, config)
    return Job(
        ids, params, spec.strategy, searches, dict(spec.options), verifier, spec.include_candidates
    )
