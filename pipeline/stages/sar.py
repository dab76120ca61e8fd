"""Sentinel-1 per sample: the acquisition closest to the optical scene, in dB on the chip grid.

Assets are found by polarisation metadata (asset ``sar:polarizations``, then titles, then key
suffixes), so Planetary Computer ``sentinel-1-rtc`` / ``sentinel-1-grd`` items and other
catalogs' keys all work. Each polarisation is warped onto the chip's exact grid (the optical
chip's CRS, transform and size, whatever the SAR item's own UTM zone or pixel grid) in linear
units, then put in dB. A sample without SAR gets a :class:`SarMissing` with the reason, never a
failure of its optical part. See docs/sentinel-1.md.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal, TypeVar

import numpy as np
import numpy.typing as npt
from rasterio.enums import Resampling
from rasterio.vrt import WarpedVRT
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.core.config import SarConfig, StacConfig
from pipeline.core.errors import AssetError
from pipeline.geo.grid import ChipGrid
from pipeline.geo.sar import POLARISATIONS, Polarisation, SarValues, power_db
from pipeline.io.cog_reads import CogJob, run_cog_jobs
from pipeline.io.stac import open_catalog
from pipeline.stages.scenes import is_cog

__all__ = [
    "SarAcquisition",
    "SarCatalog",
    "SarChip",
    "SarMissing",
    "SarRequest",
    "SarState",
    "asset_band",
    "asset_roles",
    "choose_acquisition",
    "choose_by_cell",
    "data_assets",
    "polarisation_assets",
    "read_sar_chips",
    "resolve_acquisition",
    "sar_for_samples",
    "sar_stac",
    "warp_cogs",
]

NOT_DATA_ROLES = frozenset({"metadata", "thumbnail", "overview", "visual"})
"""Asset roles that never hold backscatter, whatever their title says."""

_Chosen = TypeVar("_Chosen")

SarState = Literal["ok", "no_acquisition", "missing_polarisation", "read_error", "search_error"]
"""What a sample's SAR is: present, or why not."""


@dataclass(frozen=True)
class SarAcquisition:
    """One Sentinel-1 item as the SAR reader needs it.

    Attributes:
        item_id: STAC item id.
        collection: STAC collection id.
        datetime: Acquisition time (UTC).
        platform: e.g. ``SENTINEL-1A``.
        orbit_state: ``sat:orbit_state`` (``ascending`` / ``descending``).
        relative_orbit: ``sat:relative_orbit``.
        footprint: Data footprint in lon/lat.
        hrefs: COG href of each polarisation the item has.
        nodata: Each polarisation's ``raster:bands`` nodata (None: the file's own).
    """

    item_id: str
    collection: str
    datetime: dt.datetime
    platform: str | None
    orbit_state: str | None
    relative_orbit: int | None
    footprint: BaseGeometry
    hrefs: dict[Polarisation, str]
    nodata: dict[Polarisation, float | None]


@dataclass(frozen=True)
class SarChip:
    """A sample's SAR backscatter on its chip grid.

    Attributes:
        acquisition: The item it was read from.
        polarisations: Channel order of ``db``.
        db: (polarisations, size, size) float32 backscatter in dB, NaN = nodata.
        time_offset_s: SAR acquisition time minus optical acquisition time, in seconds.
    """

    acquisition: SarAcquisition
    polarisations: tuple[Polarisation, ...]
    db: npt.NDArray[np.float32]
    time_offset_s: float


@dataclass(frozen=True)
class SarMissing:
    """Why a sample has no SAR; recorded in its row, the optical part is untouched.

    Attributes:
        state: ``no_acquisition``, ``missing_polarisation``, ``read_error`` or
            ``search_error``.
        message: What was looked for and what was found.
    """

    state: SarState
    message: str


@dataclass(frozen=True)
class SarRequest:
    """One sample's SAR to find: its chip grid and when its optical scene was taken."""

    sample_id: str
    grid: ChipGrid
    optical_time: dt.datetime


def asset_roles(asset: dict[str, Any]) -> set[str]:
    """An asset's ``roles``."""
    return {str(r) for r in asset.get("roles") or []}


def asset_band(asset: dict[str, Any], key: str) -> float | None:
    """A number of the asset's first ``raster:bands`` entry (``nodata``, ``scale``...), or None."""
    bands = asset.get("raster:bands") or asset.get("bands") or []
    if bands and isinstance(bands[0], dict) and isinstance(bands[0].get(key), int | float):
        return float(bands[0][key])
    return None


def data_assets(item: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """An item's COG assets that may hold data (no metadata, thumbnail or overview role)."""
    return {
        key: asset
        for key, asset in (item.get("assets") or {}).items()
        if is_cog(asset) and not asset_roles(asset) & NOT_DATA_ROLES
    }


def _match_rank(key: str, asset: dict[str, Any], pol: Polarisation) -> int | None:
    """How surely an asset holds ``pol``: 0 by its own metadata, 1 by title, 2 by key; or None."""
    own = [str(p).upper() for p in asset.get("sar:polarizations") or []]
    if own:
        return 0 if own == [pol] else None  # a multi-channel file is never one channel
    title = str(asset.get("title", "")).upper()
    if title == pol or title.startswith((f"{pol}:", f"{pol} ")):
        return 1
    upper = key.upper()
    if upper == pol or upper.endswith((f"-{pol}", f"_{pol}")):
        return 2
    return None


def polarisation_assets(
    item: dict[str, Any], polarisations: Iterable[Polarisation]
) -> dict[Polarisation, dict[str, Any]]:
    """The data asset of each polarisation, found by metadata rather than by one catalog's keys.

    The surest match wins (ties: the smaller key): the asset's own ``sar:polarizations`` is
    exactly ``[P]``; its title starts with ``P:`` or ``P ``; its key is ``P`` or ends in ``-P``
    / ``_P`` (any case). Only COG assets without metadata/thumbnail roles count, and a
    polarisation the item's ``sar:polarizations`` leaves out is absent whatever assets it lists.

    Raises:
        AssetError: naming the first polarisation without an asset.
    """
    props = item.get("properties", {})
    declared = {str(p).upper() for p in props.get("sar:polarizations") or POLARISATIONS}
    data = data_assets(item)
    found: dict[Polarisation, dict[str, Any]] = {}
    for pol in polarisations:
        if pol not in declared:
            raise AssetError(f"{item.get('id')}: sar:polarizations {sorted(declared)} lacks {pol}")
        ranked = [
            (rank, key)
            for key, asset in data.items()
            if (rank := _match_rank(key, asset, pol)) is not None
        ]
        if not ranked:
            raise AssetError(f"{item.get('id')}: no COG asset for polarisation {pol}")
        found[pol] = data[min(ranked)[1]]
    return found


def resolve_acquisition(
    item: dict[str, Any], polarisations: Iterable[Polarisation]
) -> SarAcquisition:
    """Read one STAC item's time, orbit and polarisation assets.

    Raises:
        AssetError: if a wanted polarisation has no asset.
    """
    props = item.get("properties", {})
    assets = polarisation_assets(item, polarisations)
    relative_orbit = props.get("sat:relative_orbit")
    return SarAcquisition(
        item_id=str(item["id"]),
        collection=str(item.get("collection", "")),
        datetime=dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00")),
        platform=props.get("platform"),
        orbit_state=props.get("sat:orbit_state"),
        relative_orbit=None if relative_orbit is None else int(relative_orbit),
        footprint=shape(item["geometry"]),
        hrefs={pol: str(asset["href"]) for pol, asset in assets.items()},
        nodata={pol: asset_band(asset, "nodata") for pol, asset in assets.items()},
    )


def choose_acquisition(
    items: Iterable[dict[str, Any]],
    *,
    grid: ChipGrid,
    optical_time: dt.datetime,
    window: dt.timedelta,
    polarisations: tuple[Polarisation, ...],
) -> SarAcquisition | SarMissing:
    """The item closest in time to the optical scene that covers the chip and has every channel.

    Ties (same absolute offset) go to the earlier acquisition, then to the smaller item id, so
    the choice never depends on the order a server returns items in.

    Args:
        items: Candidate STAC items (dicts), e.g. one search's results for a shard cell.
        grid: The sample's chip grid (the optical chip's).
        optical_time: Acquisition time of the sample's optical scene.
        window: Largest allowed ``|SAR time - optical time|``.
        polarisations: Channels the acquisition must have.

    Returns:
        The chosen acquisition, or :class:`SarMissing` (``no_acquisition``, or
        ``missing_polarisation`` when covering items in the window lacked a channel).
    """
    chip = grid.footprint_lonlat()
    ranked: list[tuple[dt.timedelta, dt.datetime, str, SarAcquisition]] = []
    lacking: list[str] = []
    for item in items:
        props = item.get("properties", {})
        when = dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00"))
        if abs(when - optical_time) > window or not shape(item["geometry"]).covers(chip):
            continue
        try:
            acq = resolve_acquisition(item, polarisations)
        except AssetError as exc:
            lacking.append(str(exc))
            continue
        ranked.append((abs(when - optical_time), when, acq.item_id, acq))
    if ranked:
        return min(ranked, key=lambda r: r[:3])[3]
    if lacking:
        return SarMissing("missing_polarisation", "; ".join(lacking[:3]))
    days = window.total_seconds() / 86400
    return SarMissing(
        "no_acquisition",
        f"no Sentinel-1 item covers the chip within {days:g} days of {optical_time.isoformat()}",
    )


def _warped(src: Any, grid: ChipGrid, nodata: float | None) -> npt.NDArray[np.float32]:
    """``src``'s band 1 on the chip grid: bilinear in the source's (linear) units, NaN = none."""
    with WarpedVRT(
        src,
        crs=grid.crs,
        transform=grid.transform,
        width=grid.size,
        height=grid.size,
        resampling=Resampling.bilinear,
        src_nodata=nodata if nodata is not None else src.nodata,
        nodata=np.nan,
        dtype="float32",
    ) as vrt:
        return np.asarray(vrt.read(1), dtype=np.float32)


def warp_cogs(
    jobs: Mapping[str, tuple[float | None, list[SarRequest]]],
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> tuple[dict[tuple[str, str], npt.NDArray[np.float32]], dict[str, SarMissing]]:
    """Warp every requested chip from each COG, each COG opened once (:mod:`pipeline.io.cog_reads`).

    Args:
        jobs: For each COG href, its nodata (None: the file's own) and the samples to read.
        threads: Parallel COG jobs; None: as :func:`pipeline.io.cog_reads.default_read_threads`
            says for the hrefs.
        max_requests_per_host: COG jobs in flight per host across every reader in the process
            (``chips.max_requests_per_host``, shared with the optical reads).

    Returns:
        The float32 chips by (href, sample id), in the COG's units (NaN = nodata); and for
        each sample a COG failed for, the :class:`SarMissing` (``read_error``) naming it.
    """
    cog_jobs = [
        CogJob(
            href,
            {req.sample_id: req.grid for req in reqs},
            partial(_warped, nodata=nodata),
        )
        for href, (nodata, reqs) in jobs.items()
    ]
    results = run_cog_jobs(cog_jobs, threads=threads, max_requests_per_host=max_requests_per_host)
    arrays: dict[tuple[str, str], npt.NDArray[np.float32]] = {}
    failures: dict[str, SarMissing] = {}
    for job, result in zip(cog_jobs, results, strict=True):
        for sample_id, error in result.errors.items():
            failures.setdefault(sample_id, SarMissing("read_error", str(error)))
        for sample_id, array in result.values.items():
            arrays[job.href, sample_id] = array
    return arrays, failures


def read_sar_chips(
    chosen: Iterable[tuple[SarRequest, SarAcquisition]],
    *,
    polarisations: tuple[Polarisation, ...],
    kind: SarValues = "power",
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> dict[str, SarChip | SarMissing]:
    """Warp each sample's channels onto its chip grid and convert to dB.

    Each (item, polarisation) COG is opened once for all the samples that chose its item
    (opening costs more than a window read over HTTP); jobs run in a thread pool.

    Args:
        chosen: Each sample's request and the acquisition chosen for it.
        polarisations: Channels, in output order (every acquisition has them).
        kind: Whether the COGs hold linear power or amplitude.
        threads: Parallel COG jobs (see :func:`warp_cogs`).
        max_requests_per_host: COG jobs in flight per host (see :func:`warp_cogs`).

    Returns:
        For each sample id, its :class:`SarChip`, or :class:`SarMissing` (``read_error``)
        naming the COG that failed.
    """
    pairs = list(chosen)
    # One job per COG href (unique per item and polarisation), whoever chose it.
    jobs: dict[str, tuple[float | None, list[SarRequest]]] = {}
    for req, acq in pairs:
        for pol in polarisations:
            jobs.setdefault(acq.hrefs[pol], (acq.nodata[pol], []))[1].append(req)
    linear, failures = warp_cogs(jobs, threads=threads, max_requests_per_host=max_requests_per_host)
    out: dict[str, SarChip | SarMissing] = {}
    for req, acq in pairs:
        if req.sample_id in failures:
            out[req.sample_id] = failures[req.sample_id]
            continue
        channels = [
            power_db(linear[acq.hrefs[pol], req.sample_id], kind=kind) for pol in polarisations
        ]
        out[req.sample_id] = SarChip(
            acquisition=acq,
            polarisations=polarisations,
            db=np.stack(channels),
            time_offset_s=(acq.datetime - req.optical_time).total_seconds(),
        )
    return out


class SarCatalog:
    """The catalog Sentinel-1 (and coherence) is searched in for one shard, opened at most once.

    Backscatter and coherence search the same catalog (:func:`sar_stac`); opening it costs a
    round trip, and all its retries when it is down, so one shard's readers share one open and
    one failure to open.
    """

    def __init__(self, sar: SarConfig, stac: StacConfig) -> None:
        self.stac = sar_stac(sar, stac)
        self._opened: Any = None

    def open(self) -> Any:
        """The pystac-client ``Client``, or the :class:`SarMissing` saying why it cannot open."""
        if self._opened is None:
            try:
                self._opened = open_catalog(self.stac)
            except Exception as exc:  # any transport or parse failure: SAR missing, optical on
                self._opened = SarMissing(
                    "search_error", f"cannot open STAC API {self.stac.api_url}: {exc}"
                )
        return self._opened


def _search_items(
    client: Any,
    collection: str,
    window: dt.timedelta,
    requests: list[SarRequest],
    max_items: int,
) -> list[dict[str, Any]]:
    """Every item of ``collection`` over the requests' chips within ``window`` of any."""
    lons, lats = [], []
    for req in requests:
        x0, y0, x1, y1 = req.grid.footprint_lonlat().bounds
        lons += [x0, x1]
        lats += [y0, y1]
    start = min(r.optical_time for r in requests) - window
    end = max(r.optical_time for r in requests) + window
    search = client.search(
        collections=[collection],
        bbox=[min(lons), min(lats), max(lons), max(lats)],
        datetime=f"{start.isoformat()}/{end.isoformat()}",
        max_items=max_items,
        limit=min(max_items, 100),
    )
    return list(search.items_as_dicts())


def choose_by_cell(
    requests: list[SarRequest],
    *,
    catalog: SarCatalog,
    collection: str,
    window: dt.timedelta,
    choose: Callable[[list[dict[str, Any]], SarRequest], _Chosen | SarMissing],
) -> tuple[list[tuple[SarRequest, _Chosen]], dict[str, SarMissing]]:
    """One STAC search per 1-degree cell of the requests, then ``choose`` an item per sample.

    Args:
        requests: The samples of one shard that have an optical chip.
        catalog: The catalog to search (opened on the first search, if not yet).
        collection: The collection to search.
        window: How far before the first and after the last optical time to search.
        choose: A sample's pick among its cell's items, or why there is none.

    Returns:
        The samples with their chosen items, and the others' :class:`SarMissing`
        (``search_error`` when the catalog could not be opened or searched); never an
        exception for one sample.
    """
    cells: dict[tuple[int, int], list[SarRequest]] = {}
    for req in requests:
        centre = req.grid.footprint_lonlat().centroid
        cells.setdefault((math.floor(centre.x), math.floor(centre.y)), []).append(req)
    chosen: list[tuple[SarRequest, _Chosen]] = []
    missing: dict[str, SarMissing] = {}
    if not requests:
        return chosen, missing
    client = catalog.open()
    if isinstance(client, SarMissing):
        return chosen, dict.fromkeys((r.sample_id for r in requests), client)
    for cell in cells.values():
        try:
            items = _search_items(client, collection, window, cell, catalog.stac.max_items)
        except Exception as exc:  # as above: one failed search never fails the optical part
            for req in cell:
                missing[req.sample_id] = SarMissing("search_error", f"{collection}: {exc}")
            continue
        for req in cell:
            found = choose(items, req)
            if isinstance(found, SarMissing):
                missing[req.sample_id] = found
            else:
                chosen.append((req, found))
    return chosen, missing


def sar_stac(sar: SarConfig, stac: StacConfig) -> StacConfig:
    """The catalog Sentinel-1 is searched in: ``stac`` with what ``sar`` sets of its own."""
    own = {"api_url": sar.api_url, "signing": sar.signing, "signing_key_env": sar.signing_key_env}
    return stac.model_copy(update={k: v for k, v in own.items() if v is not None})


def sar_for_samples(
    requests: list[SarRequest],
    sar: SarConfig,
    catalog: SarCatalog,
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> dict[str, SarChip | SarMissing]:
    """Find and read every sample's SAR: one STAC search per 1-degree cell, reads in threads.

    Args:
        requests: The samples of one shard that have an optical chip.
        sar: The run's SAR settings.
        catalog: The shard's Sentinel-1 catalog (``SarCatalog(sar, stac)``), shared with
            :func:`pipeline.stages.coherence.coherence_for_samples`.
        threads: Parallel COG jobs (see :func:`warp_cogs`).
        max_requests_per_host: COG jobs in flight per host (see :func:`warp_cogs`).

    Returns:
        For each sample id, its :class:`SarChip` or the :class:`SarMissing` that says why not;
        never an exception for one sample's SAR.
    """
    pols = tuple(sar.polarisations)
    chosen, missing = choose_by_cell(
        requests,
        catalog=catalog,
        collection=sar.collection,
        window=sar.window,
        choose=lambda items, req: choose_acquisition(
            items,
            grid=req.grid,
            optical_time=req.optical_time,
            window=sar.window,
            polarisations=pols,
        ),
    )
    out: dict[str, SarChip | SarMissing] = dict(missing)
    out.update(
        read_sar_chips(
            chosen,
            polarisations=pols,
            kind=sar.values,
            threads=threads,
            max_requests_per_host=max_requests_per_host,
        )
    )
    return out
