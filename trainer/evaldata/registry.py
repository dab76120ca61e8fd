"""Benchmark readers by name, for configs and the CLI (``eocap eval``)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from trainer.evaldata.base import BenchmarkDataset
from trainer.evaldata.bigearthnet import BigEarthNet
from trainer.evaldata.eurosat import EuroSAT
from trainer.evaldata.meterml import MeterML

__all__ = ["BENCHMARKS", "open_benchmark"]

BENCHMARKS: dict[str, type[BenchmarkDataset]] = {
    reader.name: reader for reader in (EuroSAT, BigEarthNet, MeterML)
}
"""Every benchmark reader, keyed by its ``name``."""


def open_benchmark(
    name: str, root: str | Path, *, bands: Sequence[str], split: str | None = "test"
) -> BenchmarkDataset:
    """Open benchmark ``name`` at ``root``, reading ``bands`` of ``split``.

    Raises:
        ValueError: for an unknown benchmark name (and see :class:`BenchmarkDataset`).
    """
    reader = BENCHMARKS.get(name)
    if reader is None:
        raise ValueError(f"unknown benchmark {name!r}; benchmarks are {', '.join(BENCHMARKS)}")
    return reader(root, bands=bands, split=split)
