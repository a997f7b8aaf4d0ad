"""ponder.engine: requests, branches, scheduler, paged KV cache, model runner, backends, CLI.

The public names are loaded lazily, so `import ponder.engine.protocol` (what strategies use)
does not pull in torch:

    from ponder.engine import Engine, SamplingParams
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Engine": "ponder.engine.torch_backend.engine",
    "SamplingParams": "ponder.engine.sampling_params",
    "RequestOutput": "ponder.engine.outputs",
    "CompletionOutput": "ponder.engine.outputs",
    "Branch": "ponder.engine.protocol",
    "SearchContext": "ponder.engine.protocol",
    "SearchStats": "ponder.engine.protocol",
    "FakeContext": "ponder.engine.fake_backend",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'ponder.engine' has no attribute {name!r}")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
