"""ponder.engine.structured: grammar-constrained decoding (JSON schema, regex, choice, grammar).

- params.py: `StructuredOutputsParams` (vLLM's names) and the OpenAI `response_format` mapping;
- compiler.py: `GrammarCompiler` (one per engine) and the backend registry;
- state.py: `GrammarState`, the immutable per-position state a sequence and a branch carry;
- bitmask.py: packed token masks; hooks.py: the two calls the engine core makes;
- outlines_backend.py, llguidance_backend.py, xgrammar_backend.py: one library each;
- patterns.py: regexes ponder builds (choices, the answer-span constraint of a search).

Importing this package loads no grammar library; a backend loads its library on first use.

How the engine uses it: `SamplingParams(structured_outputs=...)` is compiled on the caller's
thread when a request or search context is opened (`Engine.grammars`, one GrammarCompiler per
engine; a constraint the backend rejects is a ValueError there, never in the loop). Each root
of a constrained context carries the start state (commands.NewRoot); a fork shares its
handle's immutable state as it shares the blocks; a draw's sequence advances its own copy in
the scheduler's postprocess (hooks.advance: "complete" or "dead end" end it cleanly, max_tokens
gives "length"), after `core._sample` masked its logits row (hooks.apply_masks); the finished
draw's handle keeps the state, so a search's next step continues the same grammar. Implicit
backends (vLLM, SGLang, remote) pass the params on; their engines restart the grammar per
request, so only whole solutions can be constrained there (engine/implicit.py).
"""

from ponder.engine.structured.params import StructuredOutputsParams, from_response_format

__all__ = ["StructuredOutputsParams", "from_response_format"]
