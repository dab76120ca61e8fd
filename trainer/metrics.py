"""Zero-shot classification and text-to-image retrieval metrics, as Llama3-MS-CLIP computes them.

Pure numpy functions over score matrices (``logits[i, c]``: image ``i`` against the text
embedding of class ``c``), so evaluation, tests and notebooks share one definition.

What the reference protocol does, read from IBM/MS-CLIP at commit 9dbeb332
(``msclip/inference/clip_benchmark/metrics/zeroshot_eval.py``, adapted from LAION's
CLIP_benchmark):

- **Top-1 accuracy** (``accuracy``): ``logits.topk(1)`` compared with the label, divided by the
  number of samples. Logits are ``100 * cosine(image, mean prompt embedding)``; the factor does
  not change the ranking. Ties are left to ``torch.topk``; :func:`top1_correct` takes the lowest
  class index, so results are deterministic.
- **BigEarthNet multi-label "accuracy"** (``multilabel_accuracy`` with ``other_features=False``,
  the default of ``evaluation.py --other-features``): class ``c`` is predicted present in an image
  iff its score is strictly greater than the mean score of the image's other ``C - 1`` classes.
  Each class's accuracy is the share of images where that decision equals the label, positives
  and negatives alike; the reported figure (``Average_class_accuracy``) is the mean over the 19
  classes. With every class scored on every image this is the element-wise (Hamming) accuracy
  over the ``N x C`` decisions, which is also the mean over images of the share of classes
  decided right (:func:`multilabel_correct`). Its chance level is not ``1 / C``: it depends on how
  sparse the labels are. (The repository as shipped routes BigEarthNet through the single-label
  path: ``one_class`` tests the names ``"BigEarthNet"``/``"BigEarthNetMS"`` while the datasets are
  called ``"BigEarthNet_MS"``/``"BigEarthNet_RGB"``; the rule above is the multi-label function it
  defines for this case.)
- **Retrieval mAP@100** (``map_per_class``/``map_per_class_ml``): each class prompt is a query
  that ranks all test images by their score for that class; an image is relevant iff it carries
  the class. ``torchmetrics.RetrievalMAP(top_k=100)`` computes AP@k as the mean, over the
  relevant images found in the top ``k``, of precision at their rank: it is normalised by the
  number of relevant images *in the top k*, not by ``min(k, #relevant)``, and is 0 when none is
  in the top ``k`` (torchmetrics ``functional/retrieval/average_precision.py``). A relevant image
  ranked below ``k`` therefore does not lower the score. The reported ``mAP`` is the mean over
  classes. torchmetrics 1.8.0 (PR #3160, July 2025) began to treat images with a score <= 0 as
  not relevant, which changes results for logits that can be negative; the paper predates it and
  this module does not do it.

Choices made here where the reference is silent or arbitrary:

- Ranking ties are broken by sample order (lowest index first), so every metric is a
  deterministic function of its inputs.
- A class with no relevant image has no defined AP: it is reported as NaN and left out of the
  mean (torchmetrics' default counts it as 0). On the benchmark test splits every class occurs,
  so this changes nothing there; it keeps rare classes of a small held-out split, or of a
  bootstrap resample, from dragging the mean down.

Confidence intervals (:func:`bootstrap_ci`) are percentile bootstraps over samples: draw ``N``
samples with replacement, recompute the metric, take the ``(1 - confidence) / 2`` quantiles.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import numpy as np
import numpy.typing as npt

FloatArray: TypeAlias = npt.NDArray[np.float64]
IndexArray: TypeAlias = npt.NDArray[np.intp]

RETRIEVAL_TOP_K = 100
"""Cut-off of the retrieval metric: mAP@100, as in the Llama3-MS-CLIP evaluation."""


def _scores(logits: npt.ArrayLike, *, n_dims: int) -> FloatArray:
    array = np.asarray(logits, dtype=np.float64)
    if array.ndim != n_dims:
        raise ValueError(f"expected a {n_dims}-D score array, got shape {array.shape}")
    return array


def _same_shape(logits: FloatArray, targets: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    relevant = np.asarray(targets, dtype=bool)
    if relevant.shape != logits.shape:
        raise ValueError(f"targets have shape {relevant.shape}, scores {logits.shape}")
    return relevant


def top1_correct(logits: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.bool_]:
    """Whether each sample's highest-scoring class is its label (ties: the lowest class index).

    Args:
        logits: Scores, shape ``[N, C]``.
        labels: Class indices, shape ``[N]``.

    Returns:
        Per-sample correctness, shape ``[N]``.

    Raises:
        ValueError: If the shapes do not match.
    """
    scores = _scores(logits, n_dims=2)
    label_array = np.asarray(labels)
    if label_array.shape != scores.shape[:1]:
        raise ValueError(f"labels have shape {label_array.shape}, scores {scores.shape}")
    correct: npt.NDArray[np.bool_] = scores.argmax(axis=1) == label_array
    return correct


def top1_accuracy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Share of samples whose highest-scoring class is their label.

    Args:
        logits: Scores, shape ``[N, C]``.
        labels: Class indices, shape ``[N]``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    return float(top1_correct(logits, labels).mean())


def balanced_accuracy(logits: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Mean over the classes present of the share of their samples ranked top-1 correctly.

    Unlike accuracy, its chance level is 1 / C whatever the class balance: a model that
    always answers the majority class scores 1 / C, not the majority's share. Classes absent
    from ``labels`` are left out.

    Args:
        logits: Scores, shape ``[N, C]``.
        labels: Class indices, shape ``[N]``.

    Returns:
        Balanced accuracy in ``[0, 1]``.
    """
    correct = top1_correct(logits, labels)
    label_array = np.asarray(labels)
    recalls = [correct[label_array == c].mean() for c in np.unique(label_array)]
    return float(np.mean(recalls))


def multilabel_correct(logits: npt.ArrayLike, targets: npt.ArrayLike) -> FloatArray:
    """Per-sample share of classes decided right under MS-CLIP's BigEarthNet rule.

    A class is predicted present iff its score is strictly greater than the mean of the sample's
    other classes' scores (see the module docstring).

    Args:
        logits: Scores, shape ``[N, C]`` with ``C >= 2``.
        targets: Whether each sample carries each class, shape ``[N, C]``.

    Returns:
        Share of the ``C`` decisions that match the targets, per sample, shape ``[N]``.

    Raises:
        ValueError: If the shapes do not match or there are fewer than two classes.
    """
    scores = _scores(logits, n_dims=2)
    present = _same_shape(scores, targets)
    n_classes = scores.shape[1]
    if n_classes < 2:
        raise ValueError("the multi-label rule compares each class with the others: C >= 2")
    mean_of_others = (scores.sum(axis=1, keepdims=True) - scores) / (n_classes - 1)
    predicted = scores > mean_of_others
    correct: FloatArray = (predicted == present).mean(axis=1)
    return correct


def multilabel_accuracy(logits: npt.ArrayLike, targets: npt.ArrayLike) -> float:
    """MS-CLIP's BigEarthNet accuracy: the mean over classes of per-class decision accuracy.

    Equal to the mean of :func:`multilabel_correct`, since every class is decided on every sample.

    Args:
        logits: Scores, shape ``[N, C]`` with ``C >= 2``.
        targets: Whether each sample carries each class, shape ``[N, C]``.

    Returns:
        Accuracy in ``[0, 1]``.
    """
    return float(multilabel_correct(logits, targets).mean())


def _top_k_order(scores: FloatArray, k: int) -> IndexArray:
    """Indices of the ``k`` highest scores, best first, ties by lowest index.

    A partition finds the ``k``-th score in linear time; only the candidates at or above it are
    sorted, which keeps bootstrap resampling of large test sets cheap.
    """
    if k < scores.size:
        kth_largest = np.partition(scores, scores.size - k)[scores.size - k]
        candidates = np.flatnonzero(scores >= kth_largest)
    else:
        candidates = np.arange(scores.size)
    order: IndexArray = candidates[np.argsort(-scores[candidates], kind="stable")][:k]
    return order


def average_precision_at_k(
    scores: npt.ArrayLike, relevant: npt.ArrayLike, k: int = RETRIEVAL_TOP_K
) -> float:
    """AP@k of one query, normalised by the relevant items found in the top ``k`` (torchmetrics).

    Items are ranked by descending score, ties by lowest index. AP@k is the mean, over the
    relevant items among the first ``k``, of the precision at their rank; 0 if there are none.

    Args:
        scores: Score of each item for the query, shape ``[N]``.
        relevant: Whether each item is relevant, shape ``[N]``.
        k: Cut-off rank (all items if ``k >= N``).

    Returns:
        AP@k in ``[0, 1]``.

    Raises:
        ValueError: If the shapes do not match or ``k < 1``.
    """
    score_array = _scores(scores, n_dims=1)
    relevance = _same_shape(score_array, relevant)
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    ranked_relevance = relevance[_top_k_order(score_array, k)]
    hit_ranks = np.flatnonzero(ranked_relevance) + 1
    if hit_ranks.size == 0:
        return 0.0
    precision_at_hits = np.arange(1, hit_ranks.size + 1) / hit_ranks
    return float(precision_at_hits.mean())


def retrieval_map_at_k(
    image_text_logits: npt.ArrayLike, targets: npt.ArrayLike, k: int = RETRIEVAL_TOP_K
) -> tuple[float, FloatArray]:
    """Text-to-image retrieval mAP@k: each class prompt ranks all images.

    Args:
        image_text_logits: Score of image ``i`` for class prompt ``c``, shape ``[N, C]``.
        targets: Whether image ``i`` carries class ``c``, shape ``[N, C]`` (one-hot rows for
            single-label datasets).
        k: Cut-off rank.

    Returns:
        The mean AP@k over classes with at least one relevant image, and the per-class AP@k,
        shape ``[C]``, NaN for a class with no relevant image.

    Raises:
        ValueError: If the shapes do not match or no class has a relevant image.
    """
    scores = _scores(image_text_logits, n_dims=2)
    relevant = _same_shape(scores, targets)
    per_class = np.full(scores.shape[1], np.nan)
    for class_index in np.flatnonzero(relevant.any(axis=0)):
        per_class[class_index] = average_precision_at_k(
            scores[:, class_index], relevant[:, class_index], k
        )
    if np.isnan(per_class).all():
        raise ValueError("no class has a relevant image: mAP is undefined")
    return float(np.nanmean(per_class)), per_class


def bootstrap_ci(
    statistic: Callable[[IndexArray], float] | npt.ArrayLike,
    *,
    n_samples: int | None = None,
    n_resamples: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of a metric over samples.

    Either pass per-sample values (e.g. :func:`top1_correct`), whose mean is the metric, or a
    function that recomputes the metric on a resample given as sample indices (e.g.
    ``lambda idx: retrieval_map_at_k(logits[idx], targets[idx])[0]``) with ``n_samples``.

    Args:
        statistic: Per-sample values, shape ``[N]``, or a function of resampled indices.
        n_samples: Number of samples ``N``; required with a function, inferred from values.
        n_resamples: Number of bootstrap resamples.
        confidence: Coverage of the interval, in ``(0, 1)``.
        seed: Seed of the resampling; the same seed gives the same interval.

    Returns:
        The ``(low, high)`` bounds of the interval.

    Raises:
        ValueError: If ``n_samples`` is missing or given twice, or an option is out of range.
    """
    metric: Callable[[IndexArray], float]
    if callable(statistic):
        if n_samples is None:
            raise ValueError("n_samples is required when the statistic is a function")
        metric = statistic
    else:
        if n_samples is not None:
            raise ValueError("n_samples comes from the per-sample values; do not pass it")
        values = np.asarray(statistic, dtype=np.float64)
        n_samples = values.size

        def metric(indices: IndexArray) -> float:
            return float(values[indices].mean())

    if n_samples < 1 or n_resamples < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"need n_samples >= 1, n_resamples >= 1 and 0 < confidence < 1; got "
            f"{n_samples}, {n_resamples}, {confidence}"
        )
    rng = np.random.default_rng(seed)
    resampled = np.array(
        [metric(rng.integers(0, n_samples, size=n_samples)) for _ in range(n_resamples)]
    )
    tail = (1 - confidence) / 2
    low, high = np.quantile(resampled, [tail, 1 - tail])
    return float(low), float(high)
