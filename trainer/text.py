"""Text tokenization for the CLIP text tower, and what happens to captions that do not fit.

Two vocabularies:

- ``clip``: OpenAI CLIP's BPE (:mod:`pipeline.core.clip_tokenizer`, shipped with eocap), the
  one every OpenCLIP and Hugging Face CLIP checkpoint was trained with. Start token 49406, end
  49407, padding 0 after the end (OpenCLIP's ``tokenize``), text lowercased.
- ``captions``: a byte-level BPE trained on the training captions, for models trained from
  scratch (offline, no checkpoint): a small vocabulary keeps a small model's embedding table
  small. Saved as ``tokenizer.json`` beside the model.

A CLIP reads ``context_length`` tokens (77). LLaVA captions are often longer (a few sentences
plus the context's tags). A caption that does not fit is never cut silently; per
``long_captions``:

- ``sentences`` (default): each time the caption is drawn, a random run of whole consecutive
  sentences that fits is taken (the start sentence drawn from a generator seeded by the run
  seed, the epoch and the sample id, so resumed runs draw the same). Over epochs the model sees
  every sentence. A single sentence longer than the context is cut at the context: counted
  as ``cut``.
- ``truncate``: the first ``context_length`` tokens (OpenCLIP's behaviour), counted as ``cut``.

:class:`FitCounts` counts ``whole``, ``sentences`` and ``cut`` captions; the trainer logs
them and reports them at the end. To read longer captions whole, raise ``context_length``:
positional embeddings of a checkpoint are then interpolated (:mod:`trainer.checkpoints`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from pipeline.core.clip_tokenizer import CLIP_END_OF_TEXT, CLIP_START_OF_TEXT, clip_tokenizer

__all__ = ["LONG_CAPTIONS", "FitCounts", "TextTokenizer", "split_sentences"]

LongCaptions = Literal["sentences", "truncate"]
LONG_CAPTIONS: tuple[LongCaptions, ...] = ("sentences", "truncate")
"""What to do with a caption longer than the context (module docstring)."""

_PAD = "<pad>"
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_META_FILE = "text.json"
_TOKENIZER_FILE = "tokenizer.json"


def split_sentences(text: str) -> list[str]:
    """``text`` split after ``.``, ``!`` or ``?`` followed by white space; empty parts dropped."""
    return [s for s in (part.strip() for part in _SENTENCE_END.split(text)) if s]


@dataclass
class FitCounts:
    """How many captions fitted whole, as sampled sentences, or cut at the context."""

    whole: int = 0
    sentences: int = 0
    cut: int = 0

    def add(self, other: FitCounts) -> None:
        """Add ``other``'s counts to these."""
        self.whole += other.whole
        self.sentences += other.sentences
        self.cut += other.cut

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict (logs, reports)."""
        return {"whole": self.whole, "sentences": self.sentences, "cut": self.cut}


class TextTokenizer:
    """Token ids for the text tower: ``[start] tokens [end] pad...`` of ``context_length``.

    Args:
        tokenizer: A ``tokenizers`` tokenizer.
        kind: ``clip`` or ``captions`` (module docstring).
        start_id: The start token.
        end_id: The end token (the text embedding is read at its position).
        pad_id: Padding after the end token.
        lowercase: Lowercase text first (CLIP's BPE expects it).
    """

    def __init__(
        self,
        tokenizer: Tokenizer,
        *,
        kind: str,
        start_id: int,
        end_id: int,
        pad_id: int,
        lowercase: bool,
    ) -> None:
        self.tokenizer = tokenizer
        self.kind = kind
        self.start_id = start_id
        self.end_id = end_id
        self.pad_id = pad_id
        self.lowercase = lowercase

    @property
    def vocab_size(self) -> int:
        """Number of token ids (the text tower's embedding rows)."""
        return int(self.tokenizer.get_vocab_size(with_added_tokens=True))

    @classmethod
    def clip(cls) -> TextTokenizer:
        """OpenAI CLIP's BPE, as every OpenCLIP and Hugging Face CLIP checkpoint uses."""
        tokenizer = clip_tokenizer()
        start, end = (tokenizer.token_to_id(t) for t in (CLIP_START_OF_TEXT, CLIP_END_OF_TEXT))
        assert start is not None and end is not None  # both are in CLIP's vocabulary
        return cls(
            tokenizer,
            kind="clip",
            start_id=start,
            end_id=end,
            pad_id=0,
            lowercase=True,
        )

    @classmethod
    def train(cls, captions: Iterable[str], *, vocab_size: int) -> TextTokenizer:
        """A byte-level BPE of ``vocab_size`` tokens trained on ``captions`` (lowercased).

        Special tokens come first: padding 0, end 1, start 2 (the end token is not id 2,
        which transformers' CLIP treats as a legacy marker).
        """
        tokenizer = Tokenizer(models.BPE())
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        specials = [_PAD, CLIP_END_OF_TEXT, CLIP_START_OF_TEXT]
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tokenizer.train_from_iterator((c.lower() for c in captions), trainer=trainer)
        return cls(tokenizer, kind="captions", start_id=2, end_id=1, pad_id=0, lowercase=True)

    def save(self, folder: Path) -> None:
        """Write ``tokenizer.json`` (captions kind) and ``text.json`` into ``folder``."""
        folder.mkdir(parents=True, exist_ok=True)
        meta = {
            "kind": self.kind,
            "start_id": self.start_id,
            "end_id": self.end_id,
            "pad_id": self.pad_id,
            "lowercase": self.lowercase,
        }
        if self.kind != "clip":
            self.tokenizer.save(str(folder / _TOKENIZER_FILE))
        (folder / _META_FILE).write_text(json.dumps(meta, indent=2) + "\n")

    @classmethod
    def load(cls, folder: Path) -> TextTokenizer:
        """The tokenizer :meth:`save` wrote into ``folder``."""
        meta = json.loads((folder / _META_FILE).read_text())
        if meta["kind"] == "clip":
            return cls.clip()
        return cls(
            Tokenizer.from_file(str(folder / _TOKENIZER_FILE)),
            kind=str(meta["kind"]),
            start_id=int(meta["start_id"]),
            end_id=int(meta["end_id"]),
            pad_id=int(meta["pad_id"]),
            lowercase=bool(meta["lowercase"]),
        )

    def ids(self, text: str) -> list[int]:
        """Token ids of ``text`` without start and end tokens."""
        text = text.lower() if self.lowercase else text
        return list(self.tokenizer.encode(text, add_special_tokens=False).ids)

    def _fit(
        self,
        text: str,
        room: int,
        policy: LongCaptions,
        rng: np.random.Generator | None,
        counts: FitCounts,
    ) -> list[int]:
        tokens = self.ids(text)
        if len(tokens) <= room:
            counts.whole += 1
            return tokens
        if policy == "sentences" and rng is not None:
            sentences = [self.ids(s) for s in split_sentences(text)]
            start = int(rng.integers(len(sentences)))
            taken: list[int] = []
            for sentence in sentences[start:]:
                if len(taken) + len(sentence) > room:
                    break
                taken += sentence
            if taken:
                counts.sentences += 1
                return taken
            tokens = sentences[start]  # one sentence longer than the context: cut, counted
        counts.cut += 1
        return tokens[:room]

    def encode(
        self,
        texts: Sequence[str],
        context_length: int,
        *,
        policy: LongCaptions = "truncate",
        rngs: Sequence[np.random.Generator] | None = None,
        counts: FitCounts | None = None,
    ) -> torch.Tensor:
        """[len(texts), context_length] token ids; long texts handled by ``policy``.

        Args:
            texts: The texts.
            context_length: Positions of the text tower.
            policy: ``sentences`` (needs ``rngs``, one generator per text) or ``truncate``.
            rngs: Per-text generators for the sentence draw.
            counts: Incremented with each text's outcome.
        """
        counts = counts if counts is not None else FitCounts()
        if policy == "sentences" and (rngs is None or len(rngs) != len(texts)):
            raise ValueError("the sentences policy needs one random generator per text")
        out = torch.full((len(texts), context_length), self.pad_id, dtype=torch.long)
        room = context_length - 2
        for row, text in enumerate(texts):
            rng = rngs[row] if rngs is not None else None
            tokens = [self.start_id, *self._fit(text, room, policy, rng, counts), self.end_id]
            out[row, : len(tokens)] = torch.tensor(tokens, dtype=torch.long)
        return out
