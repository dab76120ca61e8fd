"""Spatial train/validation/test splits: a sample's split is its grid cell's, by a seeded hash.

Neighbouring chips share land cover, roads and towns, so a random split by sample would put
near-copies of a test chip into train. Splitting by a 0.1 degree cell instead keeps every
location (all its periods) and every cell in one split. The cell's split is drawn from a
sha256 of ``seed`` and the cell, so it needs no state, does not depend on which other samples
exist, and a dataset extended later keeps the splits of its old samples.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.dataset.layout import SPLITS

__all__ = ["SplitRule"]


@dataclass(frozen=True)
class SplitRule:
    """How samples are split.

    Attributes:
        fractions: Shares of cells for train, validation and test (sum to 1).
        seed: Seed of the hash.
        cell_deg: Cell size in degrees: cell = (floor(lon / cell_deg), floor(lat / cell_deg)).
    """

    fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 0
    cell_deg: float = 0.1

    def __post_init__(self) -> None:
        if len(self.fractions) != len(SPLITS) or any(f < 0 for f in self.fractions):
            raise ValueError(f"split fractions {self.fractions}: give three shares >= 0")
        if not math.isclose(sum(self.fractions), 1.0, abs_tol=1e-9):
            raise ValueError(
                f"split fractions {self.fractions} sum to {sum(self.fractions)}, not 1"
            )
        if self.cell_deg <= 0:
            raise ValueError(f"split cell size {self.cell_deg} degrees: give a size > 0")

    def cell(self, lon: float, lat: float) -> tuple[int, int]:
        """The grid cell of a point."""
        # round() first, so 10.3 / 0.1 = 102.99999... still lands in cell 103.
        return (
            math.floor(round(lon / self.cell_deg, 9)),
            math.floor(round(lat / self.cell_deg, 9)),
        )

    def cell_split(self, cell: tuple[int, int]) -> str:
        """The split of a cell: where its hash, as a number in [0, 1), falls in the fractions."""
        digest = hashlib.sha256(f"{self.seed}:{cell[0]}:{cell[1]}".encode()).digest()
        draw = int.from_bytes(digest[:8], "big") / 2**64
        edge = 0.0
        for split, fraction in zip(SPLITS, self.fractions, strict=True):
            edge += fraction
            if draw < edge:
                return split
        return SPLITS[-1]  # a draw within rounding of 1

    def split(self, lon: float, lat: float) -> str:
        """The split of a sample at (``lon``, ``lat``)."""
        return self.cell_split(self.cell(lon, lat))

    def describe(self) -> dict[str, Any]:
        """The rule as JSON for release.json and the card."""
        return {
            **asdict(self),
            "fractions": list(self.fractions),
            "rule": "cell = (floor(lon / cell_deg), floor(lat / cell_deg)); draw = first 8 bytes "
            "of sha256('{seed}:{cell_x}:{cell_y}') / 2**64; split = the first of train, "
            "validation, test whose cumulative fraction exceeds draw",
        }
