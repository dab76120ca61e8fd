"""The release's held-out split as a zero-shot benchmark, its classes from the Overture context.

Each held-out sample's single label is its dominant Overture ``base/land_cover`` subtype (the
largest share of the chip in the ``context`` column); its multi-label targets (for retrieval)
are the subtypes covering at least :data:`MULTI_LABEL_SHARE` of the chip. Classes with fewer
than ``min_class_samples`` samples are left out, and so are their samples, so that accuracy is
not decided by one or two chips; the report gives the class count and the chance level.
Prompt names (:data:`LAND_COVER_PROMPTS`) turn Overture's subtype ids into words a caption
uses.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.dataset.loader import open_parquet, parquet_files

__all__ = ["LAND_COVER_PROMPTS", "MULTI_LABEL_SHARE", "HeldOutLabels", "held_out_labels"]

LAND_COVER_PROMPTS: dict[str, str] = {
    "barren": "bare ground",
    "crop": "cropland",
    "forest": "forest",
    "grass": "grassland",
    "mangrove": "mangroves",
    "moss": "moss and lichen",
    "shrub": "shrubland",
    "snow": "snow and ice",
    "urban": "urban area",
    "wetland": "wetland",
}
"""Overture ``base/land_cover`` subtypes and the words the prompts use for them."""

MULTI_LABEL_SHARE = 0.1
"""A land cover subtype is a retrieval target of a chip where it covers this share or more."""


@dataclass(frozen=True)
class HeldOutLabels:
    """The held-out split's labels over ``classes`` (pixels are streamed by the evaluation).

    Attributes:
        classes: Overture land cover subtypes scored, in label order.
        prompts: Their prompt names.
        labels: Sample id -> its dominant class.
        targets: Sample id -> [C] every class covering at least :data:`MULTI_LABEL_SHARE`.
        dropped: Samples left out (no land cover, or a class under the minimum count).
    """

    classes: tuple[str, ...]
    prompts: tuple[str, ...]
    labels: dict[str, int]
    targets: dict[str, npt.NDArray[np.bool_]]
    dropped: int


def _land_cover(context: dict[str, Any] | None) -> list[tuple[str, float]]:
    shares = (context or {}).get("land_cover") or []
    return [(s["class"], float(s["share"])) for s in shares if s["class"] in LAND_COVER_PROMPTS]


def held_out_labels(source: str, split: str, *, min_class_samples: int) -> HeldOutLabels:
    """The labels of ``split`` of the release at ``source``, from its ``context`` column only.

    Raises:
        ValueError: when fewer than two classes reach ``min_class_samples``.
    """
    covers: dict[str, list[tuple[str, float]]] = {}
    total = 0
    for path in parquet_files(source, split):
        table = open_parquet(path).read(columns=["sample_id", "status", "context"])
        for sid, status, context in zip(
            table["sample_id"].to_pylist(),
            table["status"].to_pylist(),
            table["context"].to_pylist(),
            strict=True,
        ):
            if status != "ok":
                continue
            total += 1
            cover = _land_cover(context)
            if cover:
                covers[sid] = cover
    dominant = {sid: max(cover, key=lambda c: c[1])[0] for sid, cover in covers.items()}
    counts = Counter(dominant.values())
    classes = tuple(sorted(c for c, n in counts.items() if n >= min_class_samples))
    if len(classes) < 2:
        raise ValueError(
            f"split {split} of {source} has {len(classes)} land cover classes with >= "
            f"{min_class_samples} samples ({dict(counts)}): zero-shot needs two; lower "
            "eval.min_class_samples or release with a larger test split"
        )
    index = {c: i for i, c in enumerate(classes)}
    labels: dict[str, int] = {}
    targets: dict[str, npt.NDArray[np.bool_]] = {}
    for sid, name in dominant.items():
        if name not in index:
            continue
        labels[sid] = index[name]
        row = np.zeros(len(classes), dtype=bool)
        for cover_class, share in covers[sid]:
            if cover_class in index and share >= MULTI_LABEL_SHARE:
                row[index[cover_class]] = True
        targets[sid] = row
    return HeldOutLabels(
        classes=classes,
        prompts=tuple(LAND_COVER_PROMPTS[c] for c in classes),
        labels=labels,
        targets=targets,
        dropped=total - len(labels),
    )
