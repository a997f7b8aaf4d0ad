"""RemoteBackend: ponder's searches on any OpenAI-compatible `/v1/completions` server.

    backend = RemoteBackend("http://host:8000", api_key="...")   # vLLM, SGLang, ponder serve
    result = await run(backend, "bon", SearchRequest(prompt=..., n=16, verifier=v))

Implicit mode (engine/implicit.py): every extend sends each distinct branch's token ids as the
prompt (a list of ints, which vLLM, SGLang and ponder's server accept) with `n` for identical
forks, and the server's prefix cache serves the shared prefixes. Token ids come back with
vLLM's `return_token_ids`; a server that returns only text gets its text re-encoded with the
local tokenizer (plus the matched stop string), which is exact only when the tokenizer
round-trips. Cached prompt tokens are read from `usage.prompt_tokens_details.cached_tokens`
(vLLM: start it with --enable-prompt-tokens-details); a server that does not report them is
counted as computing every prompt token.

One httpx.AsyncClient (a connection pool) per event loop; at most `max_concurrency` requests in
flight; 429, 502, 503, 504 and transport errors are retried with exponential backoff, honouring
Retry-After; every request has a timeout. The tokenizer is local: the server must serve the
same model (`model_path`, the embedded one by default).
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from ponder.engine.implicit import GenerateCall, Generation, ImplicitBackend, Sample

RETRY_STATUS = frozenset({429, 502, 503, 504})


class RemoteError(RuntimeError):
    """The server refused a request or kept failing after every retry."""


class RemoteBackend(ImplicitBackend):
    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        model: str | None = None,
        model_path: str | Path | None = None,
        max_model_len: int | None = None,
        max_concurrency: int = 64,
        timeout: float = 300.0,
        retries: int = 5,
        backoff: float = 0.5,
        max_backoff: float = 30.0,
    ):
        import httpx  # noqa: F401  (fail here, not on the first request, when it is missing)

        super().__init__(model_path)
        if max_concurrency < 1 or retries < 0 or timeout <= 0 or backoff < 0:
            raise ValueError(
                "RemoteBackend: max_concurrency >= 1, retries >= 0, timeout > 0 and "
                f"backoff >= 0 are needed, got {max_concurrency}, {retries}, {timeout}, {backoff}"
            )
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.model = model
        self.max_concurrency = max_concurrency
        self.timeout = timeout
        self.retries = retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        if max_model_len is None:
            config = json.loads((self.model_path / "config.json").read_text())
            max_model_len = int(config.get("max_position_embeddings", 2048))
        self.max_model_len = max_model_len
        self._pools: dict[asyncio.AbstractEventLoop, tuple] = {}  # loop -> (client, gate, lock)
        self.requests_sent = 0  # attempts, retries included (for tests and logs)

    # ------------------------------------------------------------------ generate

    async def generate(self, call: GenerateCall) -> Generation:
        client, gate, lock = self._pool()
        if self.model is None:
            async with lock:  # one /v1/models query, however many requests wait for it
                self.model = self.model or await self._served_model(client)
        async with gate:
            response = await self._post(client, self._body(call))
        return self._generation(response, call)

    def _body(self, call: GenerateCall) -> dict:
        p = call.params
        body = {
            "model": self.model or "default",
            "prompt": list(call.prompt_ids),
            "n": call.n,
            "max_tokens": call.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "stop": list(call.stop),
            "logprobs": 0,
            "return_token_ids": True,  # vLLM: the generated ids, not only their text
        }
        # Extensions beyond OpenAI's schema are sent only when they change something.
        extras = {
            "seed": call.seed,
            "top_k": p.top_k or None,
            "min_p": p.min_p or None,
            "stop_token_ids": list(p.stop_token_ids) or None,
            "ignore_eos": p.ignore_eos or None,
            # vLLM's server field (ponder serve takes it too); others reject or ignore it
            "structured_outputs": p.structured_outputs and p.structured_outputs.to_vllm(),
        }
        body.update({k: v for k, v in extras.items() if v is not None})
        return body

    async def _post(self, client, body: dict) -> dict:
        import httpx

        for attempt in range(self.retries + 1):
            self.requests_sent += 1
            last = attempt == self.retries
            try:
                response = await client.post("/v1/completions", json=body)
            except (httpx.TransportError, httpx.TimeoutException) as exc:
                if last:
                    raise RemoteError(f"{self.url}: {type(exc).__name__}: {exc}") from exc
                await asyncio.sleep(self._delay(attempt, None))
                continue
            if response.status_code == 200:
                return response.json()
            if response.status_code not in RETRY_STATUS or last:
                raise RemoteError(
                    f"{self.url}/v1/completions answered {response.status_code}: "
                    f"{response.text[:500]}"
                )
            await asyncio.sleep(self._delay(attempt, response.headers.get("retry-after")))
        raise RuntimeError("unreachable: the retry loop returns or raises")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        """Retry-After when the server gives seconds, else exponential backoff with jitter."""
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), self.max_backoff)
            except ValueError:
                pass  # an HTTP date: fall back to backoff
        return min(self.backoff * 2**attempt * (1 + random.random() / 4), self.max_backoff)

    def _generation(self, response: dict, call: GenerateCall) -> Generation:
        choices = sorted(response.get("choices", []), key=lambda c: c.get("index", 0))
        samples = []
        for choice in choices:
            stop_reason = choice.get("stop_reason")
            token_ids = choice.get("token_ids")
            if token_ids is None:  # a server without return_token_ids: re-encode its text
                text = choice.get("text", "")
                text += stop_reason if isinstance(stop_reason, str) else ""
                token_ids = self.tokenizer(text, add_special_tokens=False).input_ids
            logprobs = (choice.get("logprobs") or {}).get("token_logprobs") or ()
            samples.append(
                Sample(
                    tuple(token_ids),
                    choice.get("finish_reason") or "length",
                    stop_reason,
                    tuple(x for x in logprobs if x is not None),
                )
            )
        details = (response.get("usage") or {}).get("prompt_tokens_details") or {}
        return Generation(samples, details.get("cached_tokens"))

    # ------------------------------------------------------------------ pool

    def _pool(self):
        """This event loop's client, concurrency gate and lock (all bound to one loop)."""
        import httpx

        loop = asyncio.get_running_loop()
        for old in [lp for lp in self._pools if lp.is_closed()]:
            del self._pools[old]  # its loop is gone; its sockets went with it
        if loop not in self._pools:
            headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
            limits = httpx.Limits(max_connections=self.max_concurrency)
            client = httpx.AsyncClient(
                base_url=self.url, headers=headers, timeout=self.timeout, limits=limits
            )
            self._pools[loop] = (client, asyncio.Semaphore(self.max_concurrency), asyncio.Lock())
        return self._pools[loop]

    async def _served_model(self, client) -> str:
        """The first model `/v1/models` lists (what `model` defaults to)."""
        response = await client.get("/v1/models")
        if response.status_code != 200:
            raise RemoteError(
                f"{self.url}/v1/models answered {response.status_code}: pass model=... instead"
            )
        return response.json()["data"][0]["id"]

    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        pool = self._pools.pop(loop, None)
        if pool is not None:
            await pool[0].aclose()
