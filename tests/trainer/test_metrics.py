"""Metric code against values computed by hand on small fixed inputs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from trainer.metrics import (
    average_precision_at_k,
    balanced_accuracy,
    bootstrap_ci,
    multilabel_accuracy,
    multilabel_correct,
    retrieval_map_at_k,
    top1_accuracy,
    top1_correct,
)


def test_balanced_accuracy_is_the_mean_recall_and_majority_guessing_scores_chance():
    # 4 samples of class 0, 1 of class 1; the model always answers class 0
    always_zero = [[1.0, 0.0]] * 5
    labels = [0, 0, 0, 0, 1]
    assert top1_accuracy(always_zero, labels) == 0.8
    assert balanced_accuracy(always_zero, labels) == 0.5  # (4/4 + 0/1) / 2
    # recalls 3/4 and 1/1 -> 0.875; class 2 never occurs and is left out
    logits = [[1, 0, 0], [1, 0, 0], [1, 0, 0], [0, 1, 0], [0, 1, 0]]
    assert balanced_accuracy(logits, [0, 0, 0, 0, 1]) == 0.875


def test_top1_accuracy_counts_argmax_hits_and_breaks_ties_by_lowest_class():
    logits = [[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.5, 0.5]]
    labels = [1, 1, 1, 0]
    assert top1_correct(logits, labels).tolist() == [True, False, True, True]
    assert top1_accuracy(logits, labels) == 0.75


def test_top1_accuracy_rejects_mismatched_labels():
    with pytest.raises(ValueError, match="labels have shape"):
        top1_accuracy([[0.1, 0.9]], [0, 1])


def test_multilabel_accuracy_thresholds_each_class_at_the_mean_of_the_others():
    logits = [[3.0, 1.0, 2.0], [0.0, 0.0, 0.0], [1.0, 5.0, 0.0]]
    targets = [[1, 0, 1], [0, 0, 0], [0, 1, 1]]
    # Sample 0: thresholds 1.5, 2.5, 2.0 -> predicted [1, 0, 0] (2 > 2 is false): 2 of 3 right.
    # Sample 1: every score equals the others' mean -> nothing predicted: 3 of 3 right.
    # Sample 2: thresholds 2.5, 0.5, 3.0 -> predicted [0, 1, 0]: 2 of 3 right.
    assert multilabel_correct(logits, targets) == pytest.approx([2 / 3, 1.0, 2 / 3])
    # Per class (MS-CLIP's Average_class_accuracy): 3/3, 3/3, 1/3 -> 7/9, the same number.
    assert multilabel_accuracy(logits, targets) == pytest.approx(7 / 9)


def test_multilabel_accuracy_needs_two_classes_and_matching_targets():
    with pytest.raises(ValueError, match="C >= 2"):
        multilabel_accuracy([[1.0]], [[1]])
    with pytest.raises(ValueError, match="targets have shape"):
        multilabel_accuracy([[1.0, 2.0]], [[1, 0, 0]])


SCORES = [0.9, 0.8, 0.7, 0.6, 0.5]


def test_average_precision_averages_precision_at_each_hit():
    # Hits at ranks 1 and 3: (1/1 + 2/3) / 2.
    assert average_precision_at_k(SCORES, [1, 0, 1, 0, 0]) == pytest.approx(5 / 6)


def test_average_precision_ignores_relevant_items_ranked_beyond_k():
    relevant = [1, 0, 0, 0, 1]
    # Normalised by the hits inside the top k (torchmetrics, MS-CLIP): the hit at rank 5 does
    # not count against k = 3, where min(k, #relevant) would give 0.5.
    assert average_precision_at_k(SCORES, relevant, k=3) == 1.0
    assert average_precision_at_k(SCORES, relevant, k=5) == pytest.approx((1 + 2 / 5) / 2)
    assert average_precision_at_k(SCORES, [0, 0, 0, 0, 1], k=3) == 0.0
    assert average_precision_at_k(SCORES, relevant, k=50) == pytest.approx((1 + 2 / 5) / 2)


def test_average_precision_breaks_ties_by_sample_order():
    tied = [0.9, 0.5, 0.5, 0.1]
    # Ranking 0, 1, 2, 3: hits at ranks 3 and 4, then at ranks 2 and 4.
    assert average_precision_at_k(tied, [0, 0, 1, 1]) == pytest.approx((1 / 3 + 2 / 4) / 2)
    assert average_precision_at_k(tied, [0, 1, 0, 1]) == pytest.approx((1 / 2 + 2 / 4) / 2)
    # A tie across the cut-off: of the two 0.5s only the first makes the top 2.
    assert average_precision_at_k([0.5, 0.9, 0.5], [1, 0, 0], k=2) == 0.5
    assert average_precision_at_k([0.5, 0.9, 0.5], [0, 0, 1], k=2) == 0.0


def test_average_precision_rejects_a_cut_off_below_one():
    with pytest.raises(ValueError, match="k must be at least 1"):
        average_precision_at_k(SCORES, [1, 0, 0, 0, 0], k=0)


def test_retrieval_map_skips_classes_without_relevant_images():
    logits = np.array([[0.9, 0.1, 0.5], [0.1, 0.7, 0.5], [0.8, 0.3, 0.5], [0.2, 0.9, 0.5]])
    targets = np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0], [1, 0, 0]], dtype=bool)
    # Class 0 ranks images 0, 2, 3, 1: hits at 1 and 3. Class 1 ranks 3, 1, 2, 0: hit at 2.
    mean, per_class = retrieval_map_at_k(logits, targets)
    assert per_class[:2] == pytest.approx([5 / 6, 1 / 2])
    assert math.isnan(per_class[2])
    assert mean == pytest.approx((5 / 6 + 1 / 2) / 2)
    # At k = 1 class 0 finds its first hit and class 1 none.
    assert retrieval_map_at_k(logits, targets, k=1)[0] == pytest.approx(0.5)


def test_retrieval_map_is_undefined_without_any_relevant_image():
    with pytest.raises(ValueError, match="no class has a relevant image"):
        retrieval_map_at_k([[0.1, 0.2]], [[0, 0]])


def test_bootstrap_ci_of_two_values_matches_the_resampling_distribution():
    # Resample means of [0, 1] are 0, 0.5, 1 with probabilities 1/4, 1/2, 1/4.
    assert bootstrap_ci([0.0, 1.0], n_resamples=10_000) == (0.0, 1.0)
    assert bootstrap_ci([0.0, 1.0], n_resamples=10_000, confidence=0.4) == (0.5, 0.5)


def test_bootstrap_ci_is_deterministic_contains_the_estimate_and_narrows_with_samples():
    rng = np.random.default_rng(42)
    small = rng.random(100) < 0.7
    large = rng.random(10_000) < 0.7
    low, high = bootstrap_ci(small, seed=3)
    assert (low, high) == bootstrap_ci(small, seed=3)
    assert (low, high) != bootstrap_ci(small, seed=4)
    assert low < small.mean() < high
    large_low, large_high = bootstrap_ci(large, n_resamples=200)
    assert large_low < large.mean() < large_high
    assert large_high - large_low < (high - low) / 3


def test_bootstrap_ci_recomputes_a_metric_on_resampled_indices():
    rng = np.random.default_rng(7)
    labels = rng.integers(0, 3, size=60)
    logits = rng.normal(size=(60, 3)) + 1.5 * np.eye(3)[labels]
    targets = np.eye(3, dtype=bool)[labels]

    def resampled_accuracy(indices: np.ndarray) -> float:
        return top1_accuracy(logits[indices], labels[indices])

    per_sample = bootstrap_ci(top1_correct(logits, labels), n_resamples=300)
    assert bootstrap_ci(resampled_accuracy, n_samples=60, n_resamples=300) == per_sample

    def resampled_map(indices: np.ndarray) -> float:
        return retrieval_map_at_k(logits[indices], targets[indices], k=10)[0]

    low, high = bootstrap_ci(resampled_map, n_samples=60, n_resamples=300)
    assert low < retrieval_map_at_k(logits, targets, k=10)[0] < high


def test_bootstrap_ci_rejects_inconsistent_arguments():
    with pytest.raises(ValueError, match="n_samples is required"):
        bootstrap_ci(lambda indices: 0.0)
    with pytest.raises(ValueError, match="do not pass it"):
        bootstrap_ci([1.0, 0.0], n_samples=2)
    with pytest.raises(ValueError, match="0 < confidence < 1"):
        bootstrap_ci([1.0, 0.0], confidence=1.0)
