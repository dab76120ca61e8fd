"""Tokenizers and the long-caption policy: nothing is cut without being counted."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pipeline.core.clip_tokenizer import clip_token_ids
from trainer.text import FitCounts, TextTokenizer, split_sentences

LONG = (
    "The image shows a wide river. Forest covers the hills on both banks. "
    "A road crosses the river on a bridge. Fields lie to the north. A town is in the east."
)


def test_clip_tokenizer_wraps_clip_ids_in_start_end_and_zero_padding():
    tokenizer = TextTokenizer.clip()
    ids = tokenizer.encode(["A Forest"], 8)[0].tolist()
    assert ids == [49406, *clip_token_ids("a forest"), 49407] + [0] * (8 - 4)
    assert tokenizer.vocab_size == 49408


def test_split_sentences():
    assert split_sentences("One. Two!  Three? four") == ["One.", "Two!", "Three?", "four"]
    assert split_sentences("  ") == []


def test_sentences_policy_takes_whole_sentences_that_fit_and_counts_them():
    tokenizer = TextTokenizer.clip()
    counts = FitCounts()
    context = 16
    rows = tokenizer.encode(
        [LONG] * 20,
        context,
        policy="sentences",
        rngs=[np.random.default_rng(i) for i in range(20)],
        counts=counts,
    )
    assert counts.as_dict() == {"whole": 0, "sentences": 20, "cut": 0}
    sentences = [tokenizer.ids(s) for s in split_sentences(LONG)]
    seen_starts = set()
    for row in rows.tolist():
        body = row[1 : row.index(49407)]
        # the body is a run of consecutive whole sentences
        for start in range(len(sentences)):
            run: list[int] = []
            for sentence in sentences[start:]:
                if run == body or len(run) >= len(body):
                    break
                run += sentence
            if run == body:
                seen_starts.add(start)
                break
        else:
            pytest.fail(f"{body} is not a run of whole sentences")
    assert len(seen_starts) > 1  # different draws read different parts of the caption


def test_sentences_policy_is_deterministic_per_generator_seed():
    tokenizer = TextTokenizer.clip()
    first = tokenizer.encode([LONG], 16, policy="sentences", rngs=[np.random.default_rng(7)])
    again = tokenizer.encode([LONG], 16, policy="sentences", rngs=[np.random.default_rng(7)])
    assert first.equal(again)


def test_a_sentence_longer_than_the_context_is_cut_and_counted():
    tokenizer = TextTokenizer.clip()
    counts = FitCounts()
    long_sentence = "forest " * 40
    row = tokenizer.encode(
        [long_sentence, "a lake."],
        12,
        policy="sentences",
        rngs=[np.random.default_rng(0), np.random.default_rng(1)],
        counts=counts,
    )
    assert counts.as_dict() == {"whole": 1, "sentences": 0, "cut": 1}
    assert row[0, -1].item() == 49407  # the end token is always there


def test_truncate_policy_counts_every_cut():
    tokenizer = TextTokenizer.clip()
    counts = FitCounts()
    tokenizer.encode([LONG, "short"], 10, policy="truncate", counts=counts)
    assert counts.as_dict() == {"whole": 1, "sentences": 0, "cut": 1}
    with pytest.raises(ValueError, match="one random generator per text"):
        tokenizer.encode([LONG], 10, policy="sentences")


def test_captions_tokenizer_trains_saves_and_loads(tmp_path: Path):
    captions = ["A forest beside a lake.", "Cropland with roads.", "A town and a river."] * 30
    tokenizer = TextTokenizer.train(captions, vocab_size=300)
    assert tokenizer.end_id != 2  # transformers' CLIP treats eos id 2 as a legacy marker
    tokenizer.save(tmp_path)
    loaded = TextTokenizer.load(tmp_path)
    assert loaded.encode(["a forest beside a lake."], 20).equal(
        tokenizer.encode(["A forest beside a lake."], 20)
    )
    TextTokenizer.clip().save(tmp_path / "clip")
    assert TextTokenizer.load(tmp_path / "clip").vocab_size == 49408
