"""Inter-rater agreement: Krippendorff's alpha and Cohen's kappa, with confidence intervals.

Krippendorff's alpha follows Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability":
a coincidence matrix over pairable values (units with at least two values), observed and expected
disagreement with the nominal, ordinal or interval metric. Its confidence interval bootstraps
units (seeded, so a dashboard shows the same numbers twice). Cohen's kappa uses the large-sample
standard error ``sqrt(po (1 - po) / (n (1 - pe)^2))`` (Cohen 1960).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = ["Estimate", "cohen_kappa", "krippendorff_alpha", "pairwise_kappa"]

Metric = Literal["nominal", "ordinal", "interval"]
Unit = Sequence[Any] | Mapping[Any, Any]
"""One unit's values: a list (None = missing) or a coder -> value mapping."""


@dataclass(frozen=True)
class Estimate:
    """An agreement coefficient with a 95 % confidence interval and its sample size.

    Attributes:
        value: The coefficient, or None when undefined (no pairable values, no variation).
        low: Lower end of the 95 % interval (None when undefined).
        high: Upper end of the 95 % interval.
        n: Units (alpha) or items (kappa) the coefficient is computed from.
    """

    value: float | None
    low: float | None
    high: float | None
    n: int


def _values(unit: Unit) -> list[Hashable]:
    vals = unit.values() if isinstance(unit, Mapping) else unit
    return [v for v in vals if v is not None and not (isinstance(v, float) and math.isnan(v))]


def _unit_coincidences(
    units: Sequence[Unit], metric: Metric
) -> tuple[list[Hashable], npt.NDArray[np.float64]]:
    pairable = [vals for vals in map(_values, units) if len(vals) >= 2]
    domain = sorted({v for vals in pairable for v in vals}, key=_sort_key(metric))
    index = {v: i for i, v in enumerate(domain)}
    coinc = np.zeros((len(pairable), len(domain), len(domain)))
    for u, vals in enumerate(pairable):
        m = len(vals)
        counts = np.zeros(len(domain))
        for v in vals:
            counts[index[v]] += 1
        # Ordered pairs of different coders: n_c * n_k, minus the self-pairs on the diagonal.
        coinc[u] = (np.outer(counts, counts) - np.diag(counts)) / (m - 1)
    return domain, coinc


def _sort_key(metric: Metric) -> Callable[[Any], Any]:
    if metric == "nominal":
        return lambda v: (type(v).__name__, str(v))
    return lambda v: float(v)


def _delta2(
    domain: list[Hashable], n_c: npt.NDArray[np.float64], metric: Metric
) -> npt.NDArray[np.float64]:
    k = len(domain)
    if metric == "nominal":
        out: npt.NDArray[np.float64] = 1.0 - np.eye(k)
        return out
    if metric == "interval":
        x = np.array([float(v) for v in domain])  # type: ignore[arg-type]
        sq: npt.NDArray[np.float64] = (x[:, None] - x[None, :]) ** 2
        return sq
    # Ordinal: the distance between ranks c < k is the count of values from c to k, with half of
    # the two end values: sum_{g=c}^{k} n_g - (n_c + n_k) / 2.
    cum = np.concatenate([[0.0], np.cumsum(n_c)])
    lo = np.minimum.outer(np.arange(k), np.arange(k))
    hi = np.maximum.outer(np.arange(k), np.arange(k))
    between = cum[hi + 1] - cum[lo]
    dist: npt.NDArray[np.float64] = (between - (n_c[lo] + n_c[hi]) / 2.0) ** 2
    return dist


def _alpha_from(o: npt.NDArray[np.float64], domain: list[Hashable], metric: Metric) -> float | None:
    n_c = o.sum(axis=1)
    n = n_c.sum()
    if n <= 1:
        return None
    d2 = _delta2(domain, n_c, metric)
    observed = float((o * d2).sum()) / n
    expected = float((np.outer(n_c, n_c) * d2).sum()) / (n * (n - 1))
    if expected == 0.0:
        return None  # every value the same: agreement is undefined, not perfect
    return float(1.0 - observed / expected)


def krippendorff_alpha(
    units: Sequence[Unit],
    metric: Metric = "nominal",
    *,
    bootstrap: int = 1000,
    seed: int = 0,
) -> Estimate:
    """Krippendorff's alpha of ``units`` (each a list or coder -> value mapping; None = missing).

    Args:
        units: One entry per unit (item): the values the coders gave it.
        metric: ``nominal`` (flags, categories), ``ordinal`` (rating scales) or ``interval``.
        bootstrap: Bootstrap resamples of units for the 95 % interval (0: no interval).
        seed: Seed of the resampling.

    Returns:
        The estimate; ``value`` is None when fewer than two pairable values exist or all agree
        on one value.
    """
    domain, coinc = _unit_coincidences(units, metric)
    if len(coinc) == 0:
        return Estimate(None, None, None, 0)
    value = _alpha_from(coinc.sum(axis=0), domain, metric)
    if value is None or bootstrap <= 0:
        return Estimate(value, None, None, len(coinc))
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(len(coinc), np.full(len(coinc), 1.0 / len(coinc)), size=bootstrap)
    flat = coinc.reshape(len(coinc), -1)
    samples = []
    for row in counts:
        a = _alpha_from((row @ flat).reshape(coinc.shape[1:]), domain, metric)
        if a is not None:
            samples.append(a)
    if not samples:
        return Estimate(value, None, None, len(coinc))
    low, high = np.percentile(samples, [2.5, 97.5])
    return Estimate(value, float(low), float(high), len(coinc))


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> Estimate:
    """Cohen's kappa of two raters over the same items, with the large-sample 95 % interval.

    Raises:
        ValueError: if the sequences differ in length.
    """
    if len(a) != len(b):
        raise ValueError("both raters must rate the same items")
    n = len(a)
    if n == 0:
        return Estimate(None, None, None, 0)
    cats = sorted(set(a) | set(b), key=str)
    po = sum(x == y for x, y in zip(a, b, strict=True)) / n
    pe = sum((a.count(c) / n) * (b.count(c) / n) for c in cats)
    if pe >= 1.0:
        return Estimate(None, None, None, n)
    kappa = (po - pe) / (1.0 - pe)
    se = math.sqrt(po * (1.0 - po) / (n * (1.0 - pe) ** 2))
    # The normal interval can leave kappa's range on few items; clip it to [-1, 1].
    return Estimate(kappa, max(kappa - 1.96 * se, -1.0), min(kappa + 1.96 * se, 1.0), n)


def pairwise_kappa(
    ratings: Mapping[Any, Mapping[Any, Any]], min_items: int = 2
) -> dict[tuple[Any, Any], Estimate]:
    """Cohen's kappa for every pair of raters over the items both rated.

    Args:
        ratings: rater -> (item -> value).
        min_items: Pairs sharing fewer items are left out.
    """
    result: dict[tuple[Any, Any], Estimate] = {}
    for r1, r2 in combinations(sorted(ratings, key=str), 2):
        common = sorted(set(ratings[r1]) & set(ratings[r2]), key=str)
        if len(common) >= min_items:
            result[(r1, r2)] = cohen_kappa(
                [ratings[r1][i] for i in common], [ratings[r2][i] for i in common]
            )
    return result
