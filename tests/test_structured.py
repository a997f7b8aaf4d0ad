"""Structured outputs without a model: params validation (bad input is a ValueError naming the
problem), the OpenAI response_format mapping, the regexes ponder builds, packed bitmasks, the
vocabulary table, and the state rules (shared on fork, complete, dead end) on scripted
matchers."""

import re

import pytest
import torch
from ponder.engine import SamplingParams
from ponder.engine.structured import StructuredOutputsParams as S
from ponder.engine.structured import bitmask, from_response_format, hooks
from ponder.engine.structured.patterns import answer_span_regex, choice_regex, escape
from ponder.engine.structured.state import CompiledGrammar
from ponder.engine.structured.vocabulary import TokenTable
from transformers import AutoTokenizer

# ------------------------------------------------------------------ params


def test_exactly_one_constraint():
    with pytest.raises(ValueError, match="exactly one"):
        S()
    with pytest.raises(ValueError, match="exactly one"):
        S(regex="a", choice=["b"])


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"regex": "(ab"}, "invalid regex '\\(ab'"),
        ({"regex": "a(?=b)"}, "lookaround"),
        ({"regex": r"(a)\1"}, "backreference"),
        ({"json": "{not json"}, "not valid JSON"),
        ({"json": [1, 2]}, "object or a bool"),
        ({"json": {"type": "object", "properties": {"x": {"type": "strnig"}}}}, "properties/x"),
        ({"choice": "yes"}, "non-empty list"),
        ({"choice": ["yes", ""]}, "non-empty str"),
        ({"grammar": "  "}, "grammar must be text"),
    ],
)
def test_bad_constraints_are_value_errors_naming_the_problem(kwargs, message):
    with pytest.raises(ValueError, match=message):
        S(**kwargs)


def test_schema_is_canonical_and_hashable():
    a = S(json={"b": 1, "a": {"type": "string"}} | {"type": "object"})
    b = S(json='{"type": "object", "a": {"type": "string"}, "b": 1}')
    assert a == b and hash(a) == hash(b)
    assert a.schema["type"] == "object" and a.kind == "json"


def test_sampling_params_field_and_its_validation():
    p = SamplingParams(structured_outputs=S(choice=["x", "y"]))
    assert p.structured_outputs.choice == ("x", "y")
    with pytest.raises(ValueError, match="structured_outputs"):
        SamplingParams(structured_outputs={"regex": "a"})


def test_to_vllm_uses_vllm_keyword_names():
    assert S(choice=["a", "b"]).to_vllm() == {"choice": ["a", "b"]}
    assert S(json={"type": "integer"}).to_vllm() == {"json": {"type": "integer"}}
    assert S(json_object=True).to_vllm() == {"json_object": True}


def test_openai_response_format_mapping():
    assert from_response_format(None) is None
    assert from_response_format({"type": "text"}) is None
    assert from_response_format({"type": "json_object"}) == S(json_object=True)
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    rf = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema, "strict": True}}
    assert from_response_format(rf) == S(json=schema)
    with pytest.raises(ValueError, match="json_schema.schema"):
        from_response_format({"type": "json_schema", "json_schema": {"name": "x"}})
    with pytest.raises(ValueError, match="'xml' is not supported"):
        from_response_format({"type": "xml"})
    with pytest.raises(ValueError, match="unknown JSON schema type"):
        from_response_format({"type": "json_schema", "json_schema": {"schema": {"type": "x"}}})


# ------------------------------------------------------------------ patterns


def test_escape_and_choice_match_literally():
    for text in ["a.b", "1+2*(3)", "x y", "[a]{1}", "line\n"]:
        assert re.fullmatch(escape(text), text)
    assert re.fullmatch(choice_regex(("a+b", "c")), "a+b")
    assert not re.fullmatch(choice_regex(("a+b", "c")), "aab")


def test_answer_span_regex_frees_steps_and_pins_the_answer():
    rx = re.compile(answer_span_regex("A: ", r"-?[0-9]{1,4}"))
    assert rx.fullmatch("2*3=6;6+4\n6+4=10;10\nA: 10")
    assert rx.fullmatch("A: -7")
    assert rx.fullmatch("A\nA:\nA:x\nAB: 3\nA: 1")  # lines that only look like the prefix
    assert not rx.fullmatch("2+2=4;4\nA: four")  # a line starting "A: " must be the answer
    assert not rx.fullmatch("2+2=4;4\n")  # it cannot end without an answer
    assert not rx.fullmatch("A: 4\nmore")  # nor go on after it
    with pytest.raises(ValueError, match="one line"):
        answer_span_regex("A:\n", "[0-9]")


# ------------------------------------------------------------------ bitmask


def test_pack_unpack_apply():
    mask = bitmask.pack([0, 31, 32, 69], vocab_size=70)
    assert mask.shape == (3,) and mask.dtype == torch.int32
    assert bitmask.allowed_ids(mask, 70) == [0, 31, 32, 69]
    logits = torch.zeros(3, 70)
    bitmask.apply(logits, mask[None], rows=[1])
    assert torch.isfinite(logits[0]).all() and torch.isfinite(logits[2]).all()
    assert torch.isfinite(logits[1]).nonzero()[:, 0].tolist() == [0, 31, 32, 69]


# ------------------------------------------------------------------ vocabulary


def test_token_table_of_the_embedded_character_tokenizer():
    from ponder import embedded

    tok = AutoTokenizer.from_pretrained(embedded.model_path())
    table = TokenTable.from_tokenizer(tok, vocab_size=104, eos_ids={tok.eos_token_id})
    assert table.vocab_size == 104 and table.eos_ids == (tok.eos_token_id,)
    assert table.tokens[tok.convert_tokens_to_ids("7")] == b"7"
    assert table.tokens[tok.convert_tokens_to_ids("\n")] == b"\n"
    assert {0, 1, 2, 3, 101, 102, 103} <= table.special_ids  # specials and padding


def test_byte_level_tokens_are_decoded_to_bytes():
    from ponder.engine.structured.vocabulary import _token_bytes

    assert _token_bytes("\u0120the", "byte_level") == b" the"
    assert _token_bytes("\u010a", "byte_level") == b"\n"
    assert _token_bytes("\u2581the", "sentencepiece") == b" the"
    assert _token_bytes("<0x0A>", "sentencepiece") == b"\n"


# ------------------------------------------------------------------ state rules, scripted


class ScriptedMatcher:
    """Allows `script[pos]` tokens at position pos; past the script, nothing."""

    def __init__(self, script, pos=0, vocab=8):
        self.script, self.pos, self.vocab = script, pos, vocab

    def bitmask(self):
        ids = self.script[self.pos] if self.pos < len(self.script) else []
        return bitmask.pack(ids, self.vocab)

    def advance(self, token_id):
        if self.pos >= len(self.script) or token_id not in self.script[self.pos]:
            return None
        return ScriptedMatcher(self.script, self.pos + 1, self.vocab)


def compiled(script, eos=7):
    grammar = type("G", (), {"start": lambda self: ScriptedMatcher(script)})()
    return CompiledGrammar(grammar, bitmask.pack([eos], 8), frozenset({eos}), "scripted", 0.0)


class FakeSeq:
    seq_id = 0

    def __init__(self, state, tokens):
        self.grammar, self.token_ids = state, list(tokens)


def test_fork_shares_state_and_advance_leaves_it_untouched():
    start = compiled([[1, 2], [3], [7]]).start()
    kid_a, kid_b = FakeSeq(start, [1]), FakeSeq(start, [2])  # two forks of one branch
    assert hooks.advance(kid_a) is None and hooks.advance(kid_b) is None
    assert kid_a.grammar is not kid_b.grammar is not start
    assert bitmask.allowed_ids(start.bitmask, 8) == [1, 2]  # the shared parent is unchanged
    assert bitmask.allowed_ids(kid_a.grammar.bitmask, 8) == [3]


def test_complete_and_dead_end_both_finish_cleanly():
    seq = FakeSeq(compiled([[1], [3], [7]]).start(), [1])
    assert hooks.advance(seq) is None
    seq.token_ids.append(3)
    assert hooks.advance(seq) == ("stop", None)  # only EOS may follow: complete
    seq = FakeSeq(compiled([[1]]).start(), [1])
    assert hooks.advance(seq) == ("stop", None)  # nothing may follow: dead end
    assert seq.grammar.is_dead


def test_a_token_outside_the_mask_is_a_broken_invariant():
    seq = FakeSeq(compiled([[1]]).start(), [5])
    with pytest.raises(RuntimeError, match="rejects"):
        hooks.advance(seq)
