"""Zero-shot classification and text-to-image retrieval: the Llama3-MS-CLIP protocol.

For each class, the text embedding is the normalised mean of its 50 prompt embeddings
(:mod:`trainer.evaldata.templates`); an image's logits are 100 x the cosine to each class.
Single-label datasets score top-1 accuracy; BigEarthNet scores the multi-label rule of
:func:`trainer.metrics.multilabel_accuracy`. Retrieval ranks every image for each class's
embedding and scores mAP@100 (:func:`trainer.metrics.retrieval_map_at_k`). Every metric comes
with a percentile-bootstrap 95 % interval over images, and the report states the class count
and the chance levels (uniform guess and majority class), so "above chance" is checkable.

Images are prepared exactly as in training (:class:`trainer.checkpoints.Preprocessing`): the
model's bands by name, its per-band mean/std, an optional centre crop, bicubic resize.
Benchmark files give raw DN in eocap's convention (:mod:`trainer.evaldata`); the release's
held-out split comes through the dataset contract's loader.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from trainer.checkpoints import LoadedModel
from trainer.data import batch_model_input, collate_pairs, prepared_samples
from trainer.evaldata import BenchmarkDataset
from trainer.evaldata.templates import prompts
from trainer.heldout import held_out_labels
from trainer.metrics import (
    RETRIEVAL_TOP_K,
    balanced_accuracy,
    bootstrap_ci,
    multilabel_accuracy,
    multilabel_correct,
    retrieval_map_at_k,
    top1_accuracy,
    top1_correct,
)

__all__ = [
    "ZERO_SHOT_LOGIT_SCALE",
    "EvalResult",
    "class_embeddings",
    "evaluate_benchmark",
    "evaluate_held_out",
    "format_table",
    "score_embeddings",
    "write_report",
]

ZERO_SHOT_LOGIT_SCALE = 100.0
"""Logits are this times the cosine (the protocol's fixed scale, not the learnt one)."""

ProgressHook = Callable[[int], None]
"""Called with the number of images embedded so far."""


@dataclass
class EvalResult:
    """The scores of one dataset split."""

    dataset: str
    split: str | None
    samples: int
    classes: list[str]
    multilabel: bool
    accuracy: float
    accuracy_ci: tuple[float, float]
    map_at_100: float
    map_at_100_ci: tuple[float, float]
    chance_uniform: float
    chance_majority: float
    balanced_accuracy: float | None = None
    balanced_accuracy_ci: tuple[float, float] | None = None
    per_class_ap: dict[str, float | None] = field(default_factory=dict)
    dropped: int = 0
    note: str = ""
    model: str = ""
    """Which model: ``initial`` (before training), ``trained``, or a folder's name."""

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        out = asdict(self)
        out["accuracy_ci"] = list(self.accuracy_ci)
        out["map_at_100_ci"] = list(self.map_at_100_ci)
        if self.balanced_accuracy_ci is not None:
            out["balanced_accuracy_ci"] = list(self.balanced_accuracy_ci)
        return out


@torch.no_grad()
def class_embeddings(loaded: LoadedModel, class_prompt_names: Sequence[str]) -> torch.Tensor:
    """[C, D] normalised mean of each class's template embeddings (long prompts: truncated)."""
    model, device = loaded.model, next(loaded.model.parameters()).device
    rows = []
    for name in class_prompt_names:
        ids = loaded.tokenizer.encode(list(prompts(name)), loaded.context_length)
        text = model.encode_text(ids.to(device))
        rows.append(torch.nn.functional.normalize(text.mean(dim=0), dim=-1))
    return torch.stack(rows)


@torch.no_grad()
def _embed(
    loaded: LoadedModel,
    batches: Iterable[Mapping[str, Any]],
    on_images: ProgressHook | None,
) -> torch.Tensor:
    """[N, D] normalised image embeddings of collated raw batches (:func:`collate_pairs`)."""
    model, device = loaded.model, next(loaded.model.parameters()).device
    out, done = [], 0
    for batch in batches:
        pixels = batch_model_input(batch, loaded.preprocessing, device)
        out.append(model.encode_image(pixels).float().cpu())
        done += len(pixels)
        if on_images is not None:
            on_images(done)
    return torch.cat(out)


def _chance(
    labels: npt.NDArray[np.int64] | None, targets: npt.NDArray[np.bool_]
) -> tuple[float, float]:
    classes = targets.shape[1]
    if labels is not None:
        counts = np.bincount(labels, minlength=classes)
        return 1.0 / classes, float(counts.max() / counts.sum())
    # Multi-label rule: predicting "absent" everywhere scores the share of negatives.
    negatives = float(1.0 - targets.mean())
    return 0.5, negatives


def score_embeddings(
    name: str,
    split: str | None,
    classes: Sequence[str],
    image: torch.Tensor,
    text: torch.Tensor,
    *,
    labels: npt.NDArray[np.int64] | None,
    targets: npt.NDArray[np.bool_],
    bootstrap: int,
    seed: int,
    dropped: int = 0,
    note: str = "",
) -> EvalResult:
    """Scores of normalised image embeddings [N, D] against class embeddings [C, D].

    ``labels`` (single-label datasets) or None (multi-label: ``targets`` decide); ``targets``
    [N, C] are the retrieval relevance in both cases.
    """
    logits = (ZERO_SHOT_LOGIT_SCALE * image @ text.t()).numpy().astype(np.float64)
    resamples = max(bootstrap, 1)
    balanced: float | None = None
    balanced_ci: tuple[float, float] | None = None
    if labels is not None:
        accuracy = top1_accuracy(logits, labels)
        accuracy_ci = bootstrap_ci(top1_correct(logits, labels), n_resamples=resamples, seed=seed)
        balanced = balanced_accuracy(logits, labels)
        balanced_ci = bootstrap_ci(
            lambda idx: balanced_accuracy(logits[idx], labels[idx]),
            n_samples=len(labels),
            n_resamples=resamples,
            seed=seed,
        )
    else:
        accuracy = multilabel_accuracy(logits, targets)
        accuracy_ci = bootstrap_ci(
            multilabel_correct(logits, targets), n_resamples=resamples, seed=seed
        )
    mean_ap, per_class = retrieval_map_at_k(logits, targets, k=RETRIEVAL_TOP_K)

    def resampled_map(indices: npt.NDArray[np.int64]) -> float:
        sub = targets[indices]
        if not sub.any():
            return 0.0
        return retrieval_map_at_k(logits[indices], sub, k=RETRIEVAL_TOP_K)[0]

    map_ci = bootstrap_ci(resampled_map, n_samples=len(logits), n_resamples=resamples, seed=seed)
    if bootstrap == 0:
        accuracy_ci, map_ci = (accuracy, accuracy), (mean_ap, mean_ap)
        balanced_ci = None if balanced is None else (balanced, balanced)
    uniform, majority = _chance(labels, targets)
    return EvalResult(
        dataset=name,
        split=split,
        samples=len(logits),
        classes=list(classes),
        multilabel=labels is None,
        accuracy=accuracy,
        accuracy_ci=accuracy_ci,
        map_at_100=mean_ap,
        map_at_100_ci=map_ci,
        chance_uniform=uniform,
        chance_majority=majority,
        balanced_accuracy=balanced,
        balanced_accuracy_ci=balanced_ci,
        per_class_ap={
            c: None if np.isnan(ap) else float(ap) for c, ap in zip(classes, per_class, strict=True)
        },
        dropped=dropped,
        note=note,
    )


def _cropped_batches(
    dataset: BenchmarkDataset, loaded: LoadedModel, batch_size: int
) -> Iterator[tuple[torch.Tensor, list[tuple[int, ...]]]]:
    """Batches of raw-DN chips (centre-cropped as the model's preprocessing says), labels."""
    prep = loaded.preprocessing
    pixels, labels = [], []
    for index in range(len(dataset)):
        sample = dataset[index]
        chip = torch.from_numpy(sample.pixels.astype(np.float32))
        if prep.crop is not None and prep.crop < min(chip.shape[-2:]):
            top = (chip.shape[-2] - prep.crop) // 2
            left = (chip.shape[-1] - prep.crop) // 2
            chip = chip[:, top : top + prep.crop, left : left + prep.crop]
        pixels.append(chip)
        labels.append(sample.labels)
        if len(pixels) == batch_size:
            yield torch.stack(pixels), labels
            pixels, labels = [], []
    if pixels:
        yield torch.stack(pixels), labels


def evaluate_benchmark(
    loaded: LoadedModel,
    dataset: BenchmarkDataset,
    *,
    batch_size: int = 64,
    bootstrap: int = 1000,
    seed: int = 0,
    on_images: ProgressHook | None = None,
) -> EvalResult:
    """Zero-shot accuracy and mAP@100 of ``loaded`` on a benchmark dataset.

    The dataset must be opened with the model's bands (``bands=loaded.preprocessing.bands``).
    """
    if tuple(dataset.bands) != loaded.preprocessing.bands:
        raise ValueError(
            f"{dataset.name} was opened with bands {list(dataset.bands)}, the model reads "
            f"{list(loaded.preprocessing.bands)}: open it with the model's bands"
        )
    all_labels: list[tuple[int, ...]] = []

    def batches() -> Iterator[dict[str, Any]]:
        for pixels, labels in _cropped_batches(dataset, loaded, batch_size):
            all_labels.extend(labels)
            yield {"pixels": pixels}

    image = _embed(loaded, batches(), on_images)
    classes = list(dataset.classes)
    targets = np.zeros((len(all_labels), len(classes)), dtype=bool)
    for row, labels in enumerate(all_labels):
        targets[row, list(labels)] = True
    single = None if dataset.multilabel else np.array([ls[0] for ls in all_labels], np.int64)
    note = f"{dataset.level} files"
    return score_embeddings(
        dataset.name,
        dataset.split,
        classes,
        image,
        class_embeddings(loaded, classes),
        labels=single,
        targets=targets,
        bootstrap=bootstrap,
        seed=seed,
        note=note,
    )


def evaluate_held_out(
    loaded: LoadedModel,
    source: str,
    split: str,
    *,
    min_class_samples: int = 3,
    batch_size: int = 64,
    bootstrap: int = 1000,
    seed: int = 0,
    on_images: ProgressHook | None = None,
) -> EvalResult:
    """Zero-shot on a release split, each chip labelled by its dominant Overture land cover."""
    labelled = held_out_labels(source, split, min_class_samples=min_class_samples)
    dataset = prepared_samples(source, split, loaded.preprocessing)
    order: list[str] = []

    def batches() -> Iterator[dict[str, Any]]:
        samples: list[dict[str, Any]] = []
        for sample in dataset:
            if sample["sample_id"] not in labelled.labels:
                continue
            order.append(sample["sample_id"])
            samples.append(sample)
            if len(samples) == batch_size:
                yield collate_pairs(samples)
                samples = []
        if samples:
            yield collate_pairs(samples)

    image = _embed(loaded, batches(), on_images)
    labels = np.array([labelled.labels[s] for s in order], dtype=np.int64)
    targets = np.stack([labelled.targets[s] for s in order])
    return score_embeddings(
        "held-out",
        split,
        labelled.classes,
        image,
        class_embeddings(loaded, labelled.prompts),
        labels=labels,
        targets=targets,
        bootstrap=bootstrap,
        seed=seed,
        dropped=labelled.dropped,
        note="classes: dominant Overture land cover; L2A, same release as training",
    )


def _with_ci(value: float, interval: tuple[float, float]) -> str:
    return f"{100 * value:.1f} ({100 * interval[0]:.1f}-{100 * interval[1]:.1f})"


def format_table(results: Sequence[EvalResult]) -> str:
    """A Markdown table of results (the model card and eval.md use it)."""
    lines = [
        "| model | dataset | split | images | classes | accuracy (95% CI) "
        "| balanced accuracy (95% CI) | chance (uniform / majority) | mAP@100 (95% CI) |",
        "|---|---|---|---:|---:|---|---|---|---|",
    ]
    for r in results:
        rule = " (multi-label rule)" if r.multilabel else ""
        balanced = "n/a"
        if r.balanced_accuracy is not None and r.balanced_accuracy_ci is not None:
            balanced = _with_ci(r.balanced_accuracy, r.balanced_accuracy_ci)
        lines.append(
            f"| {r.model} | {r.dataset} | {r.split or 'all'} | {r.samples} | {len(r.classes)} | "
            f"{_with_ci(r.accuracy, r.accuracy_ci)}{rule} | {balanced} | "
            f"{100 * r.chance_uniform:.1f} / {100 * r.chance_majority:.1f} | "
            f"{_with_ci(r.map_at_100, r.map_at_100_ci)} |"
        )
    return "\n".join(lines) + "\n"


def write_report(results: Sequence[EvalResult], folder: Path) -> tuple[Path, Path]:
    """``eval.json`` and ``eval.md`` in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    as_json = folder / "eval.json"
    as_json.write_text(json.dumps([r.as_dict() for r in results], indent=2) + "\n")
    as_md = folder / "eval.md"
    as_md.write_text(format_table(results))
    return as_json, as_md
