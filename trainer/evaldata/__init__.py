"""The Llama3-MS-CLIP evaluation datasets, read from their published on-disk layouts.

EuroSAT-MS, BigEarthNet-S2 and METER-ML readers, the protocol's zero-shot prompts
(:mod:`trainer.evaldata.templates`) and fake copies for tests (:mod:`trainer.evaldata.fake`).
See docs/evaluation-datasets.md for each dataset's layout, band order and radiometry.
"""

from __future__ import annotations

from trainer.evaldata.base import BenchmarkDataError, BenchmarkDataset, BenchmarkSample
from trainer.evaldata.bigearthnet import BigEarthNet
from trainer.evaldata.eurosat import EuroSAT
from trainer.evaldata.meterml import MeterML
from trainer.evaldata.registry import BENCHMARKS, open_benchmark
from trainer.evaldata.templates import TEMPLATES, prompts

__all__ = [
    "BENCHMARKS",
    "TEMPLATES",
    "BenchmarkDataError",
    "BenchmarkDataset",
    "BenchmarkSample",
    "BigEarthNet",
    "EuroSAT",
    "MeterML",
    "open_benchmark",
    "prompts",
]
