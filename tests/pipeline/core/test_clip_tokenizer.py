"""CLIP token counting on ``tokenizers`` agrees with the CLIP tokenizer eocap used before."""

from __future__ import annotations

import json

import pytest

from pipeline.caption.checks import clip_token_count
from pipeline.core.clip_tokenizer import clip_token_ids, clip_tokenizer
from tests.conftest import REPO_ROOT

# Counts made once by instant-clip-tokenizer 0.1.1 (a Rust port of CLIP's SimpleTokenizer), on
# captions, unicode, whitespace and control characters, punctuation, numbers and long texts.
EXPECTED = json.loads((REPO_ROOT / "tests" / "data" / "clip_token_counts.json").read_text())
START, END = 49406, 49407


@pytest.mark.parametrize(
    ("text", "ids"),
    [
        # Well-known CLIP ids (the next three from instant-clip-tokenizer's README).
        ("a photo of a cat", [320, 1125, 539, 320, 2368]),
        ("A person riding a motorcycle", [320, 2533, 6765, 320, 10297]),
        ("Hi there", [1883, 997]),
        ("How are you?", [829, 631, 592, 286]),
        # Contractions and runs of symbols are words of their own; digits split one by one.
        ("it's", [585, 568]),
        ("Hello world!!!", [3306, 1002, 995]),
        ("2024", [273, 271, 273, 275]),
        ("a <START_OF_TEXT> b", [320, START, 321]),
        # A marker is one token wherever it appears (as in transformers' CLIPTokenizerFast);
        # CLIP's regex would read "!<" as one word here. Captions never contain markers.
        ("!<end_of_text>", [256, END]),
    ],
)
def test_known_sequences(text, ids):
    assert clip_token_ids(text) == ids


def test_vocabulary_is_clips():
    vocab = clip_tokenizer().get_vocab()
    assert len(vocab) == 49408
    assert vocab["<start_of_text>"] == START and vocab["<end_of_text>"] == END
    assert vocab["!"] == 0 and vocab["!</w>"] == 256 and vocab["in"] == 512


def test_counts_match_instant_clip_tokenizer():
    cases = EXPECTED["cases"]
    assert len(cases) > 300 and max(case["tokens"] for case in cases) > 1000
    wrong = [
        (case["text"], case["tokens"], len(clip_token_ids(case["text"])))
        for case in cases
        if len(clip_token_ids(case["text"])) != case["tokens"]
    ]
    assert wrong == []


def test_count_includes_start_and_end():
    assert clip_token_count("a photo of a cat") == 5 + 2
    assert clip_token_count("") == 2
