"""A PyTorch ``IterableDataset`` over shards or a release: sharded, shuffled, resumable.

Only this module of :mod:`pipeline.dataset` imports torch: researchers and the trainer import
it, nothing else in the pipeline does.

Unit of work. The dataset reads Parquet *row groups*: a unit is (file, row group). Per epoch,
the units are put in order (a permutation seeded by ``seed + epoch`` when ``shuffle``, else
file order) and dealt round-robin to ``world_size x num_workers`` *slots*: unit ``i`` goes to
slot ``i mod slots``, and slot ``rank * num_workers + worker_id`` is what one DataLoader worker
of one rank reads. Every unit belongs to exactly one slot, so in one epoch every selected
sample is yielded exactly once over all ranks and workers: no duplicates, no gaps.

Uneven counts. Row groups differ in size and rarely divide evenly, so slots (and ranks) may
yield different numbers of samples: that is the default, and it is exact. DDP needs the same
number of batches on every rank; ``drop_uneven=True`` makes every slot stop after the smallest
slot's count, dropping the rest of the epoch's tail on the other slots (which samples are
dropped changes every epoch when shuffled). Nothing is ever padded or repeated.

Shuffling. Within a slot, rows pass through a shuffle buffer of ``shuffle_buffer`` samples
(seeded by ``seed``, ``epoch`` and the slot): once the buffer is full, each new row replaces a
random one, which is yielded; the rest comes out in a random order at the end.

Resume. ``state_dict()`` holds the epoch and how many samples each worker slot of this rank
has yielded; after ``load_state_dict`` each slot yields exactly the samples it had not yet
yielded, in the order it would have. The skipped part is replayed on row references only
(the buffer's choices do not depend on pixels), so only the rows still to be yielded are
read. Counting: iterated in this process (``num_workers=0``), the dataset counts itself; under
a DataLoader with workers the counting happens in the workers, so the training loop asks
:meth:`SampleDataset.state_after` for the state after the batches it consumed (the
DataLoader hands out batches from its workers in turn; that rule is what it replays). After
a resume the DataLoader starts its turns at worker 0 again, so with workers each worker's
stream continues exactly, and the batch order is the same when the consumed batch count was a
multiple of ``num_workers``.

Modalities. ``modalities`` selects the sensors by name (:data:`MODALITIES`): ``s2`` gives
``pixels`` (Sentinel-2, the default), ``s1`` gives ``sar_db`` (Sentinel-1 backscatter) and
``sar_ok``, ``coh`` gives ``coherence`` (Sentinel-1 interferometric coherence, channel ``COH``)
and ``coh_ok``; a sample without SAR (coherence) gets an all-nodata ``sar_db`` (``coherence``) of
the same shape, so batches collate, and ``sar_ok`` (``coh_ok``) False. A crop cuts the same
window from every modality.

Pixels are decoded only by :func:`pipeline.dataset.reader.read_cubes`, whatever the shard
schema version stores. Files are opened by one function (:func:`open_parquet`, or the
``opener`` given), so a remote transport plugs in there.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torch.utils.data import IterableDataset, get_worker_info

from pipeline.dataset.layout import DatasetLayout, ReleaseLayout
from pipeline.dataset.reader import read_cubes
from pipeline.geo.sar import (
    CENTI_DB_NODATA,
    CENTI_DB_PER_DB,
    COHERENCE_CHANNELS,
    COHERENCE_NODATA,
    COHERENCE_PER_UNIT,
    coherence_from_centi,
    db_from_centi,
)
from pipeline.io.remote import RemoteFile, is_remote, open_release_source

__all__ = [
    "CENTI_DB_NODATA",
    "CENTI_DB_PER_DB",
    "COHERENCE_CHANNELS",
    "COHERENCE_NODATA",
    "COHERENCE_PER_UNIT",
    "MODALITIES",
    "Modality",
    "SampleDataset",
    "open_parquet",
    "parquet_files",
    "read_release_file",
    "sample_key",
    "stored_modalities",
]

_ALWAYS_READ = ("sample_id", "status", "bands", "caption")
_STATE_VERSION = 1


@dataclass(frozen=True)
class Modality:
    """A sensor a sample may carry, and the shard columns that hold it.

    Attributes:
        name: What ``modalities=`` calls it.
        cube: Its cube column, also the sample's key for it.
        channel: What one channel is called in messages.
        channels: The column naming the cube's channels in stored order; None: ``names``.
        names: The cube's channels when every sample has the same (``channels`` is None).
        state: The column saying whether a sample has it (``ok``); None: every read sample
            has it.
        ok: The sample's key saying whether it has it (with ``state``).
        nodata: The stored value of a pixel without data (a sample without it: all).
        decode: Stored values to float32 with NaN for nodata (None: ``s2``, normalised by
            the band statistics instead).
    """

    name: str
    cube: str
    channel: str
    channels: str | None = None
    names: tuple[str, ...] = ()
    state: str | None = None
    ok: str | None = None
    nodata: int = 0
    decode: Callable[[npt.NDArray[Any]], npt.NDArray[np.float32]] | None = None


MODALITIES: dict[str, Modality] = {
    "s2": Modality("s2", cube="pixels", channel="band", channels="bands"),
    "s1": Modality(
        "s1",
        cube="sar_db",
        channel="polarisation",
        channels="sar_polarisations",
        state="sar_state",
        ok="sar_ok",
        nodata=CENTI_DB_NODATA,
        decode=db_from_centi,
    ),
    "coh": Modality(
        "coh",
        cube="coherence",
        channel="channel",
        names=COHERENCE_CHANNELS,
        state="coh_state",
        ok="coh_ok",
        nodata=COHERENCE_NODATA,
        decode=coherence_from_centi,
    ),
}
"""The modalities the loader selects by name: Sentinel-2 L2A, Sentinel-1 backscatter and
Sentinel-1 interferometric coherence."""


def open_parquet(path: str) -> pq.ParquetFile:
    """Open one Parquet file for reading: the one place the loader touches storage.

    A URL (``http(s)://``, ``s3://``, ``hf://``) is read by range requests: the footer, then
    only the row groups and columns the loader asks for.
    """
    if is_remote(path):
        return pq.ParquetFile(RemoteFile(path))
    return pq.ParquetFile(path)


def stored_modalities(
    source: str | Path | Sequence[str | Path],
    split: str | None = None,
    opener: Callable[[str], pq.ParquetFile] = open_parquet,
) -> tuple[str, ...]:
    """The :data:`MODALITIES` every file of ``source`` stores (a footer read per file).

    Sentinel-2 is in every shard; Sentinel-1 only in those of schema 2.1 or later.
    """
    names = [set(opener(path).schema_arrow.names) for path in parquet_files(source, split)]
    return tuple(m.name for m in MODALITIES.values() if all(m.cube in n for n in names))


def read_release_file(root: str | Path, name: str) -> bytes:
    """One file of a release by its name in the layout (``band_stats.json``), local or remote."""
    if is_remote(root):
        with open_release_source(str(root)) as source:
            return source.read(name)
    return (Path(root) / name).read_bytes()


def _remote_release_files(root: str, split: str | None) -> list[str]:
    """The data files of a remote release, from its sample index (a listing needs no bucket)."""
    with open_release_source(root) as source:
        index = pq.read_table(pa.BufferReader(source.read(ReleaseLayout.INDEX)))
    files = sorted(
        {
            f
            for f, s in zip(index["file"].to_pylist(), index["split"].to_pylist(), strict=True)
            if split is None or s == split
        }
    )
    if not files:
        raise FileNotFoundError(f"no data file in {root}{'' if split is None else f' for {split}'}")
    return [f"{root.rstrip('/')}/{f}" for f in files]


def parquet_files(source: str | Path | Sequence[str | Path], split: str | None = None) -> list[str]:
    """The Parquet files of ``source``: a list of files, a release, an output dir or a folder.

    A release root reads ``data/*.parquet`` (only ``data/<split>-*.parquet`` given ``split``),
    a pipeline output dir its finished shards (:meth:`DatasetLayout.finished_shards`), any
    other folder its ``*.parquet``; sorted.
    """
    if not isinstance(source, str | Path):
        return [str(p) for p in source]
    if is_remote(source):
        return _remote_release_files(str(source), split)
    root = Path(source)
    if not root.is_dir():
        return [str(root)]
    release = ReleaseLayout(root)
    if release.data_dir.is_dir():
        files = sorted(release.data_dir.glob(f"{split or ''}*.parquet"))
        if split is not None:
            files = [f for f in files if f.name.startswith(f"{split}-")]
    elif DatasetLayout(root).shards_dir.is_dir():
        files = list(DatasetLayout(root).finished_shards().values())
    else:
        files = sorted(root.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"no Parquet files in {root}{'' if split is None else f' for split {split}'}: "
            "pass a release, an output dir or files"
        )
    return [str(p) for p in files]


@dataclass(frozen=True)
class _Unit:
    """One row group, and the rows of it the dataset yields."""

    file: int
    row_group: int
    rows: tuple[int, ...]


@dataclass
class _Entry:
    """A shuffle-buffer slot: a row reference, and the row's data once read."""

    unit: int
    row: int
    sample: dict[str, Any] | None = None


@dataclass
class _Stream:
    """What one slot's iteration has yielded so far, and where it began (resume)."""

    start: int = 0
    yielded: int = 0
    units: list[int] = field(default_factory=list)


def _distributed() -> tuple[int, int]:
    """(rank, world_size): torch.distributed if initialised, else RANK/WORLD_SIZE, else (0, 1)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def _load_band_stats(band_stats: str | Path | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(band_stats, Mapping):
        return band_stats
    return json.loads(Path(band_stats).read_text())  # type: ignore[no-any-return]


def sample_key(sample_id: str) -> int:
    """A stable integer of a sample id (Python's ``hash`` of a str differs per process)."""
    return int.from_bytes(hashlib.sha1(sample_id.encode()).digest()[:8], "little")


class SampleDataset(IterableDataset[dict[str, Any]]):
    """Samples of Parquet shards or release files as ``{"pixels", "caption", "sample_id", ...}``.

    A sample holds ``pixels`` (``s2``: bands x size x size), ``sar_db`` and ``sar_ok`` (``s1``:
    polarisations x size x size, and whether the sample has SAR: ``sar_state`` is ``ok``),
    ``coherence`` and ``coh_ok`` (``coh``: 1 x size x size, ``coh_state`` is ``ok``),
    ``caption``, ``sample_id`` and the ``columns`` asked for.

    Args:
        source: Files, a release root, a pipeline output dir, or a folder of Parquet files
            (see :func:`parquet_files`).
        split: Of a release root, only this split's files (``train``, ``validation``, ``test``).
        modalities: Names of the sensors to return (:data:`MODALITIES`): ``s2`` (Sentinel-2
            ``pixels``), ``s1`` (Sentinel-1 ``sar_db`` and ``sar_ok``), ``coh`` (Sentinel-1
            ``coherence`` and ``coh_ok``); ``s1`` and ``coh`` need shards with their columns
            (schema 2.1 or later, or ValueError).
        bands: Band names to return, in this order; the row's ``bands`` column says where each
            is stored. None: every stored band, in stored order.
        polarisations: Of ``s1``, the polarisations to return in this order (``VV``, ``VH``);
            None: every stored one, in stored order (``sar_polarisations``).
        band_stats: ``band_stats.json`` (path or parsed) of a release: pixels become
            ``(x - mean) / std`` per band. None: pixels are the stored values as float32.
        raw: Cubes in their stored dtype, never normalised: ``pixels`` uint16 DN, ``sar_db``
            int16 hundredths of a dB (-32768: nodata), ``coherence`` uint8 hundredths (255:
            nodata). Half the bytes of float32 through a
            DataLoader's worker pipes, for a consumer that converts on its device (the trainer
            does). Not with ``band_stats``. False: ``pixels`` float32 (normalised with
            ``band_stats``), ``sar_db`` float32 dB and ``coherence`` float32 0..1, NaN for
            nodata. A sample without SAR (coherence) gets an all-nodata cube of the same shape.
        crop: Return ``crop`` x ``crop`` pixels, the same window of every modality; None: the
            whole chip.
        random_crop: Crop at a random offset (seeded by ``seed``, the epoch and the sample id,
            so the same whatever the worker layout); False: the centre.
        columns: Other columns to return, by name, as Python values.
        statuses: Only rows whose ``status`` is one of these; None: every row.
        shuffle: Shuffle units per epoch and samples through the buffer.
        shuffle_buffer: Samples held in the shuffle buffer (1: no shuffling within units).
        seed: Seed of every random choice.
        rank: This process's rank; None: from torch.distributed, else ``RANK``, else 0.
        world_size: Number of ranks; None: from torch.distributed, else ``WORLD_SIZE``, else 1.
        drop_uneven: Every slot yields only the smallest slot's count (for DDP).
        opener: Opens a file path for reading (:func:`open_parquet`); a picklable callable.
    """

    def __init__(
        self,
        source: str | Path | Sequence[str | Path],
        *,
        split: str | None = None,
        modalities: Sequence[str] = ("s2",),
        bands: Sequence[str] | None = None,
        polarisations: Sequence[str] | None = None,
        band_stats: str | Path | Mapping[str, Any] | None = None,
        raw: bool = False,
        crop: int | None = None,
        random_crop: bool = False,
        columns: Sequence[str] = (),
        statuses: Sequence[str] | None = ("ok",),
        shuffle: bool = True,
        shuffle_buffer: int = 256,
        seed: int = 0,
        rank: int | None = None,
        world_size: int | None = None,
        drop_uneven: bool = False,
        opener: Callable[[str], pq.ParquetFile] = open_parquet,
    ) -> None:
        super().__init__()
        env_rank, env_world = _distributed()
        self.rank = env_rank if rank is None else rank
        self.world_size = env_world if world_size is None else world_size
        if not 0 <= self.rank < self.world_size:
            raise ValueError(
                f"rank {self.rank} is not in 0..{self.world_size - 1}: fix rank or world_size"
            )
        if shuffle_buffer < 1:
            raise ValueError(f"shuffle_buffer is {shuffle_buffer}: use 1 or more")
        unknown = [m for m in modalities if m not in MODALITIES]
        if unknown or not modalities:
            raise ValueError(
                f"modalities {list(modalities)}: choose one or more of {', '.join(MODALITIES)}"
            )
        self.modalities = [MODALITIES[m] for m in dict.fromkeys(modalities)]
        self.files = parquet_files(source, split)
        self.bands = None if bands is None else list(bands)
        self.polarisations = None if polarisations is None else list(polarisations)
        if raw and band_stats is not None:
            raise ValueError("raw pixels are never normalised: pass band_stats or raw, not both")
        self.stats = None if band_stats is None else _load_band_stats(band_stats)
        self.raw = raw
        self.crop = crop
        self.random_crop = random_crop
        self.columns = [c for c in columns if c not in ("pixels", *_ALWAYS_READ)]
        self.statuses = None if statuses is None else set(statuses)
        self.shuffle = shuffle
        self.shuffle_buffer = shuffle_buffer if shuffle else 1
        self.seed = seed
        self.drop_uneven = drop_uneven
        self.opener = opener
        self.epoch = 0
        self._skip: list[int] | None = None  # per worker slot of this rank, from load_state_dict
        self._counted: dict[int, _Stream] = {}  # slot streams iterated in this process
        self._open: dict[int, pq.ParquetFile] = {}
        self.units = self._index()

    # -- the units and who reads them -----------------------------------------------------

    def _index(self) -> list[_Unit]:
        """Every row group with at least one selected row, in file order."""
        units = []
        for i in range(len(self.files)):
            parquet = self._file(i)
            absent = [m.name for m in self.modalities if m.cube not in parquet.schema_arrow.names]
            if absent:
                raise ValueError(
                    f"{self.files[i]} has no {absent[0]} column ({MODALITIES[absent[0]].cube}): "
                    "built before that modality (Sentinel-1: schema 2.1 and a run with sar:); "
                    f"choose from the modalities it has"
                )
            if self.statuses is None:
                statuses = None
            else:
                statuses = parquet.read(columns=["status"]).column("status")
            start = 0
            for rg in range(parquet.num_row_groups):
                n = parquet.metadata.row_group(rg).num_rows
                if statuses is None:
                    rows = tuple(range(n))
                else:
                    part = statuses.slice(start, n)
                    mask = pc.is_in(part, value_set=pa.array(sorted(self.statuses or ())))
                    rows = tuple(
                        int(r) for r in np.flatnonzero(mask.to_numpy(zero_copy_only=False))
                    )
                start += n
                if rows:
                    units.append(_Unit(i, rg, rows))
        return units

    def _file(self, index: int) -> pq.ParquetFile:
        if index not in self._open:
            self._open[index] = self.opener(self.files[index])
        return self._open[index]

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_open"] = {}  # open files stay in the process that opened them
        return state

    def __len__(self) -> int:
        """Samples this rank yields in this epoch, iterated in this process."""
        return sum(self.slot_counts(0))

    def set_epoch(self, epoch: int) -> None:
        """Read epoch ``epoch`` next (its unit order, buffer and crops); forget any resume point."""
        self.epoch = epoch
        self._skip = None
        self._counted = {}

    def _epoch_units(self) -> list[int]:
        order = np.arange(len(self.units))
        if self.shuffle:
            order = np.random.default_rng([self.seed, self.epoch]).permutation(order)
        return [int(u) for u in order]

    def _slot_units(self, slot: int, slots: int) -> list[int]:
        return self._epoch_units()[slot::slots]

    def _slot_count(self, units: Sequence[int]) -> int:
        return sum(len(self.units[u].rows) for u in units)

    def _quota(self, num_workers: int) -> int | None:
        """Samples each slot yields under ``drop_uneven``; None: all of its own."""
        if not self.drop_uneven:
            return None
        slots = self.world_size * num_workers
        order = self._epoch_units()
        return min(self._slot_count(order[s::slots]) for s in range(slots))

    def slot_counts(self, num_workers: int) -> list[int]:
        """Samples each worker of this rank yields this epoch, with ``num_workers`` workers."""
        workers = max(num_workers, 1)
        slots = self.world_size * workers
        order = self._epoch_units()
        quota = self._quota(workers)
        counts = []
        for w in range(workers):
            n = self._slot_count(order[self.rank * workers + w :: slots])
            counts.append(n if quota is None else min(n, quota))
        return counts

    # -- iteration --------------------------------------------------------------------------

    def __iter__(self) -> Iterator[dict[str, Any]]:
        info = get_worker_info()
        worker, workers = (0, 1) if info is None else (info.id, info.num_workers)
        if self._skip is not None and len(self._skip) != workers:
            raise ValueError(
                f"the state was saved with {len(self._skip)} workers per rank, this loader has "
                f"{workers}: resume with num_workers={len(self._skip)}"
            )
        slot = self.rank * workers + worker
        units = self._slot_units(slot, self.world_size * workers)
        quota = self._quota(workers)
        skip = 0 if self._skip is None else self._skip[worker]
        stream = _Stream(start=skip, yielded=skip, units=units)
        if info is None:
            self._counted[worker] = stream
        return self._iterate(stream, slot, quota)

    def _iterate(self, stream: _Stream, slot: int, quota: int | None) -> Iterator[dict[str, Any]]:
        rng = np.random.default_rng([self.seed, self.epoch, slot])
        buffer: list[_Entry] = []
        position = 0  # samples this slot has handed out (yielded or skipped) this epoch
        reading = False  # whether rows are read as they enter the buffer (past the skip)

        def emit(entry: _Entry) -> Iterator[dict[str, Any]]:
            nonlocal position, reading
            if quota is not None and position >= quota:
                return
            position += 1
            if position <= stream.start:
                return
            if not reading:  # the first sample after the skipped ones: read what is buffered
                self._fill([entry, *buffer])
                reading = True
            assert entry.sample is not None
            stream.yielded += 1
            yield self._finish(entry.sample)

        for unit in stream.units:
            if quota is not None and position >= quota:
                return
            entries = [_Entry(unit, row) for row in self.units[unit].rows]
            for entry in entries:
                if reading and entry.sample is None:
                    self._fill(entries)
                if len(buffer) < self.shuffle_buffer:
                    buffer.append(entry)
                    continue
                j = int(rng.integers(len(buffer)))
                out, buffer[j] = buffer[j], entry
                yield from emit(out)
                if reading and entry.sample is None:  # became reading on this very emit
                    self._fill(entries)
        for j in rng.permutation(len(buffer)):
            yield from emit(buffer[int(j)])

    def _fill(self, entries: Sequence[_Entry]) -> None:
        """Read the rows of ``entries`` that have no data yet, one row group read per unit."""
        wanted: dict[int, list[_Entry]] = {}
        for entry in entries:
            if entry.sample is None:
                wanted.setdefault(entry.unit, []).append(entry)
        for unit, unit_entries in wanted.items():
            rows = self._read_unit(self.units[unit], [e.row for e in unit_entries])
            for entry, sample in zip(unit_entries, rows, strict=True):
                entry.sample = sample

    def _read_unit(self, unit: _Unit, rows: Sequence[int]) -> list[dict[str, Any]]:
        """The given rows of one row group, channel-selected and cropped, still as stored."""
        cubes = [m.cube for m in self.modalities]
        about = [c for m in self.modalities for c in (m.channels, m.state) if c is not None]
        names = list(dict.fromkeys([*_ALWAYS_READ, *cubes, *about, *self.columns]))
        table = self._file(unit.file).read_row_group(unit.row_group, columns=names)
        if list(rows) != list(range(table.num_rows)):
            table = table.take(pa.array(rows, pa.int64()))
        decoded = {c: read_cubes(table, c) for c in cubes}
        meta = table.drop_columns(cubes).to_pylist()
        return [self._select({c: decoded[c][i] for c in cubes}, row) for i, row in enumerate(meta)]

    def _select(self, cubes: dict[str, npt.NDArray[Any]], row: dict[str, Any]) -> dict[str, Any]:
        sid = row["sample_id"]
        window = None
        if self.crop is not None:
            window = self._window(sid, *next(iter(cubes.values())).shape[-2:])
        out: dict[str, Any] = {}
        for modality in self.modalities:
            out |= self._channels(modality, cubes[modality.cube], row, window)
        extra = {c: row[c] for c in self.columns}
        return {**out, "caption": row["caption"], "sample_id": sid, **extra}

    def _channels(
        self,
        modality: Modality,
        cube: npt.NDArray[Any],
        row: dict[str, Any],
        window: tuple[slice, slice] | None,
    ) -> dict[str, Any]:
        """One modality of a row: its wanted channels in order, cropped (s2 also its band names).

        A row without the modality (``s1`` whose ``sar_state`` is not ``ok``) gets all nodata,
        of the wanted channel count (else the stored cube's), and its ``ok`` key False.
        """
        sid = row["sample_id"]
        wanted = {"s2": self.bands, "s1": self.polarisations}.get(modality.name)
        if window is not None:
            cube = cube[:, window[0], window[1]]  # a view: only the window is copied, below
        present = modality.state is None or row[modality.state] == "ok"
        flag = {} if modality.ok is None else {modality.ok: present}
        if not present:
            shape = (len(wanted) if wanted is not None else cube.shape[0], *cube.shape[1:])
            return {modality.cube: np.full(shape, modality.nodata, cube.dtype), **flag}
        if modality.channels is None:
            stored = list(modality.names)
        else:
            stored = list(row[modality.channels] or [])
        names = stored if wanted is None else wanted
        missing = [b for b in names if b not in stored]
        if missing:
            raise KeyError(
                f"{modality.channel} {missing[0]} is not in sample {sid} "
                f"({modality.channels} {','.join(stored)}): choose from those"
            )
        cube = np.take(cube, [stored.index(b) for b in names], axis=0)
        if modality.name == "s2":
            return {"pixels": cube, "bands": names}
        return {modality.cube: cube, **flag}

    def _window(self, sample_id: str, height: int, width: int) -> tuple[slice, slice]:
        """The crop window of a sample (rows, columns), the same for each of its modalities."""
        size = self.crop
        assert size is not None
        if size > min(height, width):
            raise ValueError(
                f"crop {size} is larger than sample {sample_id} ({height}x{width}): crop smaller"
            )
        if self.random_crop:
            rng = np.random.default_rng([self.seed, self.epoch, sample_key(sample_id)])
            top = int(rng.integers(height - size + 1))
            left = int(rng.integers(width - size + 1))
        else:
            top, left = (height - size) // 2, (width - size) // 2
        return slice(top, top + size), slice(left, left + size)

    def _finish(self, sample: dict[str, Any]) -> dict[str, Any]:
        """The sample as returned: float32 cubes (pixels normalised with band stats), or raw."""
        out = {k: v for k, v in sample.items() if k != "bands"}
        if "pixels" in sample:
            out["pixels"] = self._optical(sample["pixels"], sample["bands"])
        for modality in self.modalities:
            if modality.decode is not None:
                stored = sample[modality.cube]
                values = np.ascontiguousarray(stored) if self.raw else modality.decode(stored)
                out[modality.cube] = torch.from_numpy(values)
        return out

    def _optical(self, pixels: npt.NDArray[Any], bands: Sequence[str]) -> torch.Tensor:
        """Sentinel-2 pixels as returned: raw uint16, else float32 (normalised by band stats)."""
        if self.raw:
            return torch.from_numpy(np.ascontiguousarray(pixels))
        values = pixels.astype(np.float32)
        if self.stats is not None:
            per_band = self.stats["bands"]
            mean = np.array([per_band[b]["mean"] for b in bands], np.float32)
            std = np.array([per_band[b]["std"] for b in bands], np.float32)
            values -= mean[:, None, None]  # in place: (x - mean) / std, one array
            values /= std[:, None, None]
        return torch.from_numpy(values)

    # -- resume -----------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Epoch and samples yielded per worker slot, of iteration in this process.

        Under a DataLoader with workers, use :meth:`state_after` instead.
        """
        if not self._counted:
            yielded = list(self._skip or [0])
        else:
            yielded = [self._counted[w].yielded for w in sorted(self._counted)]
        return self._state(yielded)

    def _state(self, yielded: list[int]) -> dict[str, Any]:
        return {
            "version": _STATE_VERSION,
            "epoch": self.epoch,
            "seed": self.seed,
            "rank": self.rank,
            "world_size": self.world_size,
            "yielded": yielded,
        }

    def state_after(
        self, batches: int, *, batch_size: int, num_workers: int, drop_last: bool = False
    ) -> dict[str, Any]:
        """The state after a DataLoader over this dataset handed out ``batches`` batches.

        The DataLoader (``in_order=True``, the default) takes one batch from each worker in
        turn, skipping exhausted workers; each worker batches its own samples (its last batch
        short, or dropped with ``drop_last``). Counts continue from a loaded state.
        """
        workers = max(num_workers, 1)
        start = self._skip or [0] * workers
        if len(start) != workers:
            raise ValueError(
                f"the loaded state has {len(start)} workers per rank, not {workers}: "
                f"pass num_workers={len(start)}"
            )
        totals = self.slot_counts(num_workers)
        sizes: list[list[int]] = []
        for w in range(workers):
            left = totals[w] - start[w]
            full, rest = divmod(left, batch_size)
            sizes.append([batch_size] * full + ([rest] if rest and not drop_last else []))
        yielded = list(start)
        handed = 0
        for turn in range(max((len(s) for s in sizes), default=0)):
            for w in range(workers):
                if handed == batches:
                    return self._state(yielded)
                if turn < len(sizes[w]):
                    yielded[w] += sizes[w][turn]
                    handed += 1
        if handed < batches:
            raise ValueError(
                f"{batches} batches consumed but the epoch has only {handed}: "
                "pass the batches of this epoch"
            )
        return self._state(yielded)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Resume: the next iteration yields exactly the samples not yet yielded."""
        for key in ("seed", "rank", "world_size"):
            if state[key] != getattr(self, key):
                raise ValueError(
                    f"the state has {key}={state[key]}, this dataset {getattr(self, key)}: "
                    "make them equal"
                )
        self.epoch = int(state["epoch"])
        self._skip = [int(n) for n in state["yielded"]]
        self._counted = {}
