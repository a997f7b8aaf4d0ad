"""ponder.apps.serve: the OpenAI-compatible HTTP server, where search is one request field away.

    app = create_app(engine, ServerConfig(verifiers={"arith_step": make_verifier("arith_step")}))
    ponder serve --verifier arith_step                        (the CLI wraps it in uvicorn)

Plain requests sample; a request with a `ponder` body field (or a model name such as
`ponder-embedded:particle?n=16&tau=0.5`) runs a search through `ponder.strategies.run` on the
same engine, so concurrent requests share its continuous batching. This package speaks HTTP and
translates; it holds no search logic and no engine internals.
"""

from ponder.apps.serve.app import create_app
from ponder.apps.serve.config import Limits, ServerConfig

__all__ = ["Limits", "ServerConfig", "create_app"]
