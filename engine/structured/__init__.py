"""ponder.engine.structured: grammar-constrained decoding (JSON schema, regex, choice, grammar).

- params.py: `StructuredOutputsParams` (vLLM's names) and the OpenAI `response_format` mapping;
- compiler.py: `GrammarCompiler` (one per engine) and the backend registry;
- state.py: `GrammarState`, the immutable per-position state a sequence and a branch carry;
- bitmask.py: packed token masks; hooks.py: the two calls the engine core makes;
- outlines_backend.py, llguidance_backend.py, xgrammar_backend.py: one library each;
- patterns.py: regexes ponder builds (choices, the answer-span constraint of a search).

Importing this package loads no grammar library; a backend loads its library on first use.

Status: the compilers, masks, state and response_format mapping are complete and tested here
(bench/structured.py measured them on the engine they were written against), but the engine
hooks (a `SamplingParams.structured_outputs` field, the grammar state on engine v2's handles,
the mask call in the sampler) are not wired in this revision: engine v2 replaced the code they
hooked into. Until they are, no engine request is constrained.
"""

from ponder.engine.structured.params import StructuredOutputsParams, from_response_format

__all__ = ["StructuredOutputsParams", "from_response_format"]
