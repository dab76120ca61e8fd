"""The contract every benchmark reader keeps: a sample, the dataset base class, its errors.

A reader indexes its dataset's published split and label files when constructed and reads
one sample's files per ``__getitem__`` (lazy, so a DataLoader's workers share the work).
Pixels come back in eocap's convention (float32 reflectance x 10000, no offset), bands in the
order asked for. See docs/evaluation-datasets.md for each dataset's layout and radiometry.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import rasterio
from rasterio.errors import RasterioError

from pipeline.core.errors import EocapError

__all__ = [
    "SENTINEL2_BANDS",
    "BenchmarkDataError",
    "BenchmarkDataset",
    "BenchmarkEntry",
    "BenchmarkSample",
    "read_tif",
]


SENTINEL2_BANDS: tuple[str, ...] = (
    "B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B10", "B11", "B12",
)  # fmt: skip
"""The 13 Sentinel-2 MSI bands by wavelength (Level-1C has all; L2A drops B10)."""


class BenchmarkDataError(EocapError):
    """A benchmark file is missing, unreadable or malformed; the message names the path."""


@dataclass(frozen=True)
class BenchmarkSample:
    """One benchmark image with its labels.

    Attributes:
        pixels: ``[len(bands), H, W]`` float32 in eocap's convention (reflectance x 10000,
            no offset), bands in the order the dataset was opened with.
        labels: Class indices into the dataset's ``classes`` (exactly one for single-label
            datasets; possibly none for a multi-label patch whose labels all fall outside
            the nomenclature).
        key: The file or patch id, for reports.
    """

    pixels: npt.NDArray[np.float32]
    labels: tuple[int, ...]
    key: str


@dataclass(frozen=True)
class BenchmarkEntry:
    """What a reader's index holds per sample before any pixel is read.

    Attributes:
        key: The file or patch id.
        location: The sample's file (EuroSAT) or folder (BigEarthNet, METER-ML).
        labels: Class indices into the dataset's ``classes``, or None when they sit in a
            label file beside the pixels that is read with them (BigEarthNet v1.0).
    """

    key: str
    location: Path
    labels: tuple[int, ...] | None


class BenchmarkDataset(abc.ABC):
    """A zero-shot benchmark read from its published on-disk layout.

    Subclasses set the class attributes, index the split in :meth:`_index` and read one
    sample's pixels in :meth:`_read`.

    Attributes:
        name: Registry name (``eurosat``, ``bigearthnet``, ``meterml``).
        classes: Class names as prompted; a label is an index into it.
        multilabel: Whether a sample may carry several labels.
        level: Processing level of the files, ``L1C`` (top of atmosphere) or ``L2A``
            (bottom of atmosphere).
        available_bands: ESA names of the bands the files hold, in spectral order.
        splits: Split names accepted by ``split``.
        root: The folder the dataset was opened at.
        bands: The bands read, in the order asked for.
        split: The split read, or None for every sample on disk.
    """

    name: ClassVar[str]
    classes: ClassVar[tuple[str, ...]]
    multilabel: ClassVar[bool]
    level: ClassVar[str]
    available_bands: ClassVar[tuple[str, ...]]
    splits: ClassVar[tuple[str, ...]] = ("train", "val", "test")

    def __init__(
        self, root: str | Path, *, bands: Sequence[str], split: str | None = "test"
    ) -> None:
        """Index the split; no pixel is read yet.

        Args:
            root: The folder holding the dataset as published (see docs/evaluation-datasets.md).
            bands: ESA band names to read (``B02``, ``B8A``...), in the order wanted.
            split: One of :attr:`splits`, or None for every sample on disk.

        Raises:
            ValueError: for a band the dataset lacks, a band named twice, or an unknown split.
            BenchmarkDataError: when the layout, a split file or a label file is missing or
                malformed.
        """
        self.root = Path(root)
        self.bands = self._check_bands(bands)
        if split is not None and split not in self.splits:
            raise ValueError(
                f"{self.name}: unknown split {split!r}; splits are {', '.join(self.splits)}"
            )
        self.split = split
        self._entries = self._index()

    def __len__(self) -> int:
        return len(self._entries)

    def __getitem__(self, index: int) -> BenchmarkSample:
        entry = self._entries[index]
        labels = entry.labels if entry.labels is not None else self._read_labels(entry)
        return BenchmarkSample(pixels=self._read(entry), labels=labels, key=entry.key)

    @abc.abstractmethod
    def _index(self) -> list[BenchmarkEntry]:
        """List the split's samples and their labels, in a stable order."""

    @abc.abstractmethod
    def _read(self, entry: BenchmarkEntry) -> npt.NDArray[np.float32]:
        """Read one sample's :attr:`bands` as ``[len(bands), H, W]`` float32."""

    def _read_labels(self, entry: BenchmarkEntry) -> tuple[int, ...]:
        """Read the labels of an entry indexed without them (see :class:`BenchmarkEntry`)."""
        raise NotImplementedError(f"{self.name} indexes every label up front ({entry.key})")

    def _check_bands(self, bands: Sequence[str]) -> tuple[str, ...]:
        names = tuple(band.upper() for band in bands)
        if not names:
            raise ValueError(f"{self.name}: no bands requested")
        missing = [band for band in names if band not in self.available_bands]
        if missing:
            raise ValueError(
                f"{self.name} has no band {', '.join(missing)}; "
                f"its files hold {', '.join(self.available_bands)}"
            )
        if len(set(names)) != len(names):
            raise ValueError(f"{self.name}: band list {list(bands)} names a band twice")
        return names


def read_tif(path: Path, indexes: Sequence[int]) -> npt.NDArray[np.float32]:
    """Read 1-based band ``indexes`` of a GeoTIFF at its native size as float32.

    Args:
        path: The file.
        indexes: Band numbers (1-based, rasterio's convention).

    Returns:
        ``[len(indexes), H, W]`` float32.

    Raises:
        BenchmarkDataError: naming ``path`` when the file is missing, unreadable, or has
            fewer bands than asked for.
    """
    if not path.is_file():
        raise BenchmarkDataError(f"missing file {path}")
    try:
        with rasterio.open(path) as src:
            if max(indexes) > src.count:
                raise BenchmarkDataError(
                    f"{path} holds {src.count} band(s), expected at least {max(indexes)}"
                )
            pixels: npt.NDArray[np.float32] = src.read(list(indexes), out_dtype="float32")
            return pixels
    except RasterioError as error:
        raise BenchmarkDataError(f"cannot read {path}: {error}") from error
