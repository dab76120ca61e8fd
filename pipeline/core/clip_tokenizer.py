"""CLIP's text tokenizer (OpenAI's SimpleTokenizer) rebuilt on the ``tokenizers`` package.

The captions are meant for CLIP-style training, whose text tower reads at most 77 tokens, so
``pipeline.caption.checks`` counts CLIP tokens. ``tokenizers`` has wheels for every platform the
images are built for (amd64 and arm64); the BPE vocabulary ships inside eocap
(``pipeline/core/data/clip_bpe_vocab_16e6.txt.gz``, OpenAI CLIP's file, MIT licence,
Copyright (c) 2021 OpenAI: see ``pipeline/core/data/clip_bpe_vocab_16e6.LICENSE``).

What is reproduced, step by step (CLIP's ``SimpleTokenizer.encode`` after its text cleaning, and
token for token the ``instant-clip-tokenizer`` package eocap used before):

1. Lowercase, in Python: ``str.lower`` turns a word-final capital sigma into ``ς`` as CLIP's Python
   does, whereas the ``Lowercase`` normalizer of ``tokenizers`` maps each character alone.
2. Split into words with CLIP's regex; whitespace separates words and is dropped.
3. Map each word's UTF-8 bytes to CLIP's printable byte alphabet (the GPT-2 byte-level table).
4. BPE with the file's first 48,894 merges; a word's last symbol carries the ``</w>`` suffix.

Not ftfy's mojibake repair nor HTML unescaping: CLIP's ``basic_clean`` does those, but captions
are model output, not scraped web text. The markers ``<start_of_text>`` and ``<end_of_text>``
are single tokens wherever they appear in the text (CLIP's regex misses one that follows a
symbol, as in ``!<end_of_text>``; captions never contain markers).
"""

from __future__ import annotations

import gzip
from functools import lru_cache
from importlib.resources import files

from tokenizers import Regex, Tokenizer, models, pre_tokenizers

__all__ = ["CLIP_END_OF_TEXT", "CLIP_START_OF_TEXT", "clip_token_ids", "clip_tokenizer"]

CLIP_START_OF_TEXT = "<start_of_text>"
CLIP_END_OF_TEXT = "<end_of_text>"

_VOCAB_FILE = "clip_bpe_vocab_16e6.txt.gz"
# CLIP's vocabulary is 49,408 tokens: 256 bytes, the same 256 ending a word, the merges, 2 markers.
_MERGES = 49408 - 2 * 256 - 2
_WORD_SPLIT = r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"""


def _byte_alphabet() -> list[str]:
    """CLIP's 256 byte symbols in vocabulary order: printable Latin-1 bytes as themselves first."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    shifted = [b for b in range(256) if b not in printable]
    return [chr(b) for b in printable] + [chr(256 + n) for n in range(len(shifted))]


@lru_cache(maxsize=1)
def clip_tokenizer() -> Tokenizer:
    """The CLIP BPE tokenizer; expects lowercased text (see :func:`clip_token_ids`)."""
    packed = (files("pipeline.core") / "data" / _VOCAB_FILE).read_bytes()
    lines = gzip.decompress(packed).decode()
    # Line 0 is a version header; CLIP uses the merges on lines 1..48894 and ignores the rest.
    pairs = (line.split() for line in lines.split("\n")[1 : _MERGES + 1])
    merges = [(first, second) for first, second in pairs]
    alphabet = _byte_alphabet()
    tokens = [*alphabet, *(symbol + "</w>" for symbol in alphabet)]
    tokens += ["".join(pair) for pair in merges]
    tokens += [CLIP_START_OF_TEXT, CLIP_END_OF_TEXT]
    bpe = models.BPE(
        vocab={token: index for index, token in enumerate(tokens)},
        merges=merges,
        continuing_subword_prefix="",
        end_of_word_suffix="</w>",
    )
    tokenizer = Tokenizer(bpe)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(_WORD_SPLIT), behavior="removed", invert=True),
            # CLIP's regex already split the words: no second, GPT-2 style split.
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.add_special_tokens([CLIP_START_OF_TEXT, CLIP_END_OF_TEXT])
    return tokenizer


def clip_token_ids(text: str) -> list[int]:
    """CLIP's token ids for ``text``, without the start and end markers."""
    return list(clip_tokenizer().encode(text.lower(), add_special_tokens=False).ids)
