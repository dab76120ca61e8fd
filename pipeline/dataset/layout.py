"""Where everything of a dataset lies: the one definition of an output directory's layout.

::

    run.json                        config (overture.release resolved: the run's pinned
                                    release), config hash, eocap version
    manifest.parquet                every planned sample (id, shard, location, period)
    shards/00000.parquet            samples (see docs/dataset-schema.md)
    shards/_stats/00000_stats.json  the shard's stats: the shard is done iff this exists
    shards/_review/00000_review.parquet  ``eocap review apply``: review results per sample_id
    report.json                     the last run's summary
    logs/eocap-<UTC time>.log       each run's warnings and errors, tracebacks included
    overture/<release>/             the run's extract of a remote Overture release
    review/reviews.db               the review app's SQLite database (unless it uses PostgreSQL)
    review/chips/                   chip images, cached when a review campaign is drawn
    releases/                       published releases of the dataset (nothing writes it yet)

Stats and review results live in ``_``-prefixed folders so that the shards folder reads as one
Parquet dataset (pyarrow and DuckDB skip ``_``-prefixed paths). Files are written atomically
(:mod:`pipeline.io.atomic`), so readers never see half a file; a writer killed mid-write leaves
a temporary file (:meth:`DatasetLayout.temp_files`).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from pipeline.io.atomic import TEMP_GLOB

__all__ = ["SPLITS", "DatasetLayout", "ReleaseLayout"]

_INDEX = re.compile(r"^(\d+)")


def _temp_files_of(path: Path) -> Iterator[Path]:
    return path.parent.glob(f".{path.name}.tmp-*")  # see pipeline.io.atomic.temp_path


def _by_index(paths: Iterator[Path]) -> dict[int, Path]:
    """Paths by the shard index their names start with, in index order."""
    found = {}
    for path in paths:
        match = _INDEX.match(path.name)
        if match:
            found[int(match.group(1))] = path
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class DatasetLayout:
    """The paths of one dataset (a run's ``output.dir``).

    Attributes:
        root: The output directory.
    """

    root: Path

    @property
    def run_json(self) -> Path:
        """The run's config and config hash."""
        return self.root / "run.json"

    @property
    def manifest(self) -> Path:
        """Every planned sample."""
        return self.root / "manifest.parquet"

    @property
    def report(self) -> Path:
        """The last run's summary."""
        return self.root / "report.json"

    @property
    def logs_dir(self) -> Path:
        """One log file per command run on the dataset (``eocap run``, ``eocap caption``)."""
        return self.root / "logs"

    def log_path(self, started: dt.datetime) -> Path:
        """The log file of a command started at ``started`` (UTC)."""
        return self.logs_dir / f"eocap-{started:%Y%m%dT%H%M%S.%fZ}.log"

    @property
    def shards_dir(self) -> Path:
        """The shards: one Parquet dataset."""
        return self.root / "shards"

    @property
    def shards_glob(self) -> str:
        """The shard files as a glob, for DuckDB and ``datasets``."""
        return str(self.shards_dir / "*.parquet")

    @property
    def stats_dir(self) -> Path:
        """The shards' stats sidecars."""
        return self.shards_dir / "_stats"

    @property
    def review_results_dir(self) -> Path:
        """Review results per shard, beside the shards (``eocap review apply``)."""
        return self.shards_dir / "_review"

    @property
    def review_dir(self) -> Path:
        """The review app's own state: its default database and chip image cache."""
        return self.root / "review"

    @property
    def review_db(self) -> Path:
        """The review app's default SQLite database."""
        return self.review_dir / "reviews.db"

    @property
    def review_chips_dir(self) -> Path:
        """Chip images cached for review campaigns."""
        return self.review_dir / "chips"

    @property
    def overture_dir(self) -> Path:
        """Extracts of remote Overture releases, one folder per release."""
        return self.root / "overture"

    @property
    def releases_dir(self) -> Path:
        """Published releases of the dataset (reserved: nothing writes it yet)."""
        return self.root / "releases"

    def overture_extract(self, release: str) -> Path:
        """The extract of Overture release ``release`` (a Hive tree)."""
        return self.overture_dir / release

    def shard_path(self, index: int) -> Path:
        """The Parquet file of shard ``index``."""
        return self.shards_dir / f"{index:05d}.parquet"

    def stats_path(self, index: int) -> Path:
        """The stats sidecar of shard ``index``; the shard is done iff it exists."""
        return self.stats_dir / f"{index:05d}_stats.json"

    def review_results_path(self, index: int) -> Path:
        """The review results of shard ``index``."""
        return self.review_results_dir / f"{index:05d}_review.parquet"

    def shard_paths(self, index: int) -> tuple[Path, Path]:
        """(Parquet file, stats sidecar) of shard ``index``."""
        return self.shard_path(index), self.stats_path(index)

    def finished_shards(self) -> dict[int, Path]:
        """The Parquet file of every done shard (one with stats), by index."""
        done = _by_index(self.stats_dir.glob("*_stats.json"))
        return {i: self.shard_path(i) for i in done if self.shard_path(i).exists()}

    def review_results(self) -> dict[int, Path]:
        """The review results files there are, by shard index."""
        return _by_index(self.review_results_dir.glob("*_review.parquet"))

    def is_partial(self, index: int) -> bool:
        """Whether shard ``index`` has a Parquet file or a temporary file but no stats."""
        parquet = self.shard_path(index)
        written = parquet.exists() or any(_temp_files_of(parquet))
        return written and not self.stats_path(index).exists()

    def temp_files(self) -> Iterator[Path]:
        """Temporary files of the manifest, shard and stats writers (garbage once they died)."""
        for folder in (self.root, self.shards_dir, self.stats_dir):
            yield from folder.glob(TEMP_GLOB)


SPLITS = ("train", "validation", "test")
"""The splits of a release, in the order their rows are written."""

_DATA_FILE = re.compile(r"^(train|validation|test)-(\d{5})-of-(\d{5})\.parquet$")


@dataclass(frozen=True)
class ReleaseLayout:
    """The paths of one release (``eocap release``; docs/release.md is the contract).

    ::

        README.md                               dataset card (YAML front matter + body)
        data/{split}-NNNNN-of-NNNNN.parquet     samples (Hugging Face Hub layout)
        metadata.parquet                        GeoParquet sample index (file, row group, bytes)
        band_stats.json                         per-band statistics of the train split
        collection.json                         STAC collection
        release.json                            version, source, split rule, counts
        SHA256SUMS                              ``sha256sum`` lines of every file above
        .pull/state.json                        a pull's progress (``eocap pull``; not summed)

    Attributes:
        root: The release folder.
    """

    root: Path

    # Names relative to the root, also for a release read remotely (``eocap pull``).
    README: ClassVar[str] = "README.md"
    INDEX: ClassVar[str] = "metadata.parquet"
    BAND_STATS: ClassVar[str] = "band_stats.json"
    COLLECTION: ClassVar[str] = "collection.json"
    RELEASE_JSON: ClassVar[str] = "release.json"
    SHA256SUMS: ClassVar[str] = "SHA256SUMS"
    PULL_STATE: ClassVar[str] = ".pull/state.json"
    DESCRIPTIVE: ClassVar[tuple[str, ...]] = (README, BAND_STATS, COLLECTION)
    """Files that describe the whole release; a pull copies them unchanged."""

    @property
    def readme(self) -> Path:
        """The dataset card."""
        return self.root / self.README

    @property
    def data_dir(self) -> Path:
        """The sample files."""
        return self.root / "data"

    @property
    def metadata(self) -> Path:
        """The sample index (GeoParquet)."""
        return self.root / self.INDEX

    @property
    def band_stats(self) -> Path:
        """Per-band statistics over the train split's valid pixels."""
        return self.root / self.BAND_STATS

    @property
    def collection(self) -> Path:
        """The STAC collection of the release."""
        return self.root / self.COLLECTION

    @property
    def release_json(self) -> Path:
        """Version, source config hash, split rule and counts."""
        return self.root / self.RELEASE_JSON

    @property
    def sha256sums(self) -> Path:
        """Checksums of every file of the release, ``sha256sum`` format."""
        return self.root / self.SHA256SUMS

    @property
    def pull_state(self) -> Path:
        """A pull's progress, so a killed pull resumes."""
        return self.root / self.PULL_STATE

    def data_file(self, split: str, index: int, count: int) -> Path:
        """Data file ``index`` of the ``count`` files of ``split``."""
        return self.data_dir / f"{split}-{index:05d}-of-{count:05d}.parquet"

    def data_files(self) -> list[Path]:
        """The data files there are: by split (train, validation, test), then index."""
        found = [p for p in self.data_dir.glob("*.parquet") if _DATA_FILE.match(p.name)]

        def key(path: Path) -> tuple[int, str]:
            match = _DATA_FILE.match(path.name)
            assert match is not None
            return SPLITS.index(match.group(1)), path.name

        return sorted(found, key=key)

    def relative(self, path: Path) -> str:
        """``path`` relative to the release root, with ``/`` (as in metadata and SHA256SUMS)."""
        return path.relative_to(self.root).as_posix()
