"""A character-level tokenizer for the embedded world, saved as a Hugging Face `tokenizer.json`.

One token per character: printable ASCII plus newline and tab, and four special tokens
(<pad>, <bos>, <eos>, <unk>). Encoding prepends <bos>; decoding fuses characters back without
spaces, so `decode(encode(text)) == text` for any text over the alphabet. The result loads with
`transformers.AutoTokenizer.from_pretrained(folder)` (and in vLLM) like any fast tokenizer.
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

PAD, BOS, EOS, UNK = "<pad>", "<bos>", "<eos>", "<unk>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK)
ALPHABET = "\n\t" + "".join(ch for ch in string.printable if ch.isprintable())


def build_vocab() -> dict[str, int]:
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in ALPHABET:
        vocab.setdefault(ch, len(vocab))
    return vocab


def build_tokenizer() -> PreTrainedTokenizerFast:
    vocab = build_vocab()
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    # Every character is its own pre-token; [\s\S] matches the newline too.
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    core.post_processor = processors.TemplateProcessing(
        single=f"{BOS} $A", pair=f"{BOS} $A $B", special_tokens=[(BOS, vocab[BOS])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=PAD,
        unk_token=UNK,
        clean_up_tokenization_spaces=False,
    )
