"""Sentinel-1 interferometric coherence per sample, from a configured collection.

Coherence products differ from backscatter ones in two ways this module handles: an item is
often an interval (a 12-day pair's reference and secondary dates, or a season, in
``start_datetime`` / ``end_datetime``) rather than one instant, and values come as 0..1 floats
or as scaled integers (``raster:bands`` ``scale``, e.g. bytes in hundredths). The search per
1-degree cell, the missing states and the warped read onto the chip grid are the backscatter
reader's (:mod:`pipeline.stages.sar`). See docs/sentinel-1.md.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.core.config import CoherenceConfig, SarConfig
from pipeline.core.errors import AssetError
from pipeline.geo.grid import ChipGrid
from pipeline.geo.sar import POLARISATIONS
from pipeline.stages.sar import (
    SarCatalog,
    SarMissing,
    SarRequest,
    asset_band,
    asset_roles,
    choose_by_cell,
    data_assets,
    warp_cogs,
)

__all__ = [
    "CoherenceChip",
    "CoherenceItem",
    "choose_coherence",
    "coherence_asset",
    "coherence_for_samples",
    "item_interval",
    "read_coherence_chips",
    "resolve_coherence",
]


@dataclass(frozen=True)
class CoherenceItem:
    """One coherence item as the reader needs it.

    Attributes:
        item_id: STAC item id.
        collection: STAC collection id.
        start: Start of the item's interval (its ``datetime`` for an instant item).
        end: End of the interval (its ``datetime`` for an instant item).
        footprint: Data footprint in lon/lat.
        href: The coherence COG.
        nodata: The asset's ``raster:bands`` nodata (None: the file's own).
        scale: coherence = DN * scale + offset.
        offset: See ``scale``.
    """

    item_id: str
    collection: str
    start: dt.datetime
    end: dt.datetime
    footprint: BaseGeometry
    href: str
    nodata: float | None
    scale: float
    offset: float

    @property
    def midpoint(self) -> dt.datetime:
        """The middle of the interval: the item's time against the optical scene's."""
        return self.start + (self.end - self.start) / 2


@dataclass(frozen=True)
class CoherenceChip:
    """A sample's coherence on its chip grid.

    Attributes:
        item: The item it was read from.
        coherence: (size, size) float32 coherence 0..1, NaN = nodata.
        time_offset_s: The item's midpoint minus the optical acquisition time, in seconds.
    """

    item: CoherenceItem
    coherence: npt.NDArray[np.float32]
    time_offset_s: float


def _time(value: object) -> dt.datetime:
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def item_interval(item: dict[str, Any]) -> tuple[dt.datetime, dt.datetime]:
    """An item's time as an interval: ``start_datetime`` .. ``end_datetime``, else its instant.

    Raises:
        AssetError: if the item has neither (STAC requires one of them).
    """
    props = item.get("properties", {})
    if props.get("start_datetime") and props.get("end_datetime"):
        return _time(props["start_datetime"]), _time(props["end_datetime"])
    if props.get("datetime"):
        when = _time(props["datetime"])
        return when, when
    raise AssetError(f"{item.get('id')}: neither datetime nor start/end_datetime")


def _other_polarisation(asset_key: str, asset: dict[str, Any], wanted: str) -> bool:
    """Whether the asset is declared or named for polarisations that leave ``wanted`` out."""
    own = {str(p).upper() for p in asset.get("sar:polarizations") or []}
    if own:
        return own != {wanted}
    words = set(re.split(r"[^A-Z]+", f"{asset_key} {asset.get('title', '')}".upper()))
    named = words & set(POLARISATIONS)
    return bool(named) and wanted not in named


def _coherence_rank(asset_key: str, asset: dict[str, Any]) -> int | None:
    """How surely an asset holds coherence: 0 by role, 1 by title, 2 by key; or None."""
    if "coherence" in asset_roles(asset):
        return 0
    if "coherence" in str(asset.get("title", "")).lower():
        return 1
    if "coh" in asset_key.lower():
        return 2
    return None


def coherence_asset(item: dict[str, Any], config: CoherenceConfig) -> dict[str, Any]:
    """The item's coherence COG asset, by ``config.asset`` or else by metadata.

    Without ``config.asset``, the surest match wins (ties: the smaller key): role
    ``coherence``; a title containing "coherence"; a key containing ``coh`` (any case). Only
    COG assets without metadata/thumbnail/overview roles count, and one declared
    (``sar:polarizations``) or named (a key or title word ``HH``...) for other polarisations
    than ``config.polarisation`` is skipped; so is the whole item when its own
    ``sar:polarizations`` lacks it.

    Raises:
        AssetError: saying what is missing.
    """
    pol = config.polarisation
    declared = item.get("properties", {}).get("sar:polarizations")
    if declared and pol not in {str(p).upper() for p in declared}:
        raise AssetError(f"{item.get('id')}: sar:polarizations {declared} lacks {pol}")
    data = data_assets(item)
    if config.asset is not None:
        if config.asset not in data:
            raise AssetError(f"{item.get('id')}: no COG asset {config.asset!r}")
        return data[config.asset]
    ranked = [
        (rank, key)
        for key, asset in data.items()
        if (rank := _coherence_rank(key, asset)) is not None
        and not _other_polarisation(key, asset, pol)
    ]
    if not ranked:
        raise AssetError(f"{item.get('id')}: no {pol} coherence COG asset")
    return data[min(ranked)[1]]


def resolve_coherence(item: dict[str, Any], config: CoherenceConfig) -> CoherenceItem:
    """Read one STAC item's interval, coherence asset and value scaling.

    Raises:
        AssetError: if it has no time or no coherence asset.
    """
    asset = coherence_asset(item, config)
    start, end = item_interval(item)
    if config.scale is not None:
        scale, offset = config.scale, config.offset
    else:
        scale = asset_band(asset, "scale") or 1.0
        offset = asset_band(asset, "offset") or 0.0
    return CoherenceItem(
        item_id=str(item["id"]),
        collection=str(item.get("collection", "")),
        start=start,
        end=end,
        footprint=shape(item["geometry"]),
        href=str(asset["href"]),
        nodata=asset_band(asset, "nodata"),
        scale=scale,
        offset=offset,
    )


def choose_coherence(
    items: Iterable[dict[str, Any]],
    *,
    grid: ChipGrid,
    optical_time: dt.datetime,
    config: CoherenceConfig,
) -> CoherenceItem | SarMissing:
    """The coherence item that covers the chip and is closest in time to the optical scene.

    An item whose interval contains ``optical_time`` beats every other; then the smallest
    ``|midpoint - optical_time|`` within ``config.window``; ties: the earlier midpoint, then
    the smaller item id, so the choice never depends on the server's order.

    Returns:
        The chosen item, or :class:`SarMissing` (``no_acquisition``, or
        ``missing_polarisation`` when covering items in time lacked the coherence asset).
    """
    chip = grid.footprint_lonlat()
    ranked: list[tuple[bool, dt.timedelta, dt.datetime, str, CoherenceItem]] = []
    lacking: list[str] = []
    for item in items:
        try:
            start, end = item_interval(item)
        except AssetError:
            continue  # not a valid STAC item (no time at all): nothing to choose
        contains = start <= optical_time <= end
        distance = abs(start + (end - start) / 2 - optical_time)
        if not (contains or distance <= config.window):
            continue
        if not shape(item["geometry"]).covers(chip):
            continue
        try:
            found = resolve_coherence(item, config)
        except AssetError as exc:
            lacking.append(str(exc))
            continue
        ranked.append((not contains, distance, found.midpoint, found.item_id, found))
    if ranked:
        return min(ranked, key=lambda r: r[:4])[4]
    if lacking:
        return SarMissing("missing_polarisation", "; ".join(lacking[:3]))
    return SarMissing(
        "no_acquisition",
        f"no {config.collection} item covers the chip within {config.window_days:g} days "
        f"of {optical_time.isoformat()}",
    )


def read_coherence_chips(
    chosen: Iterable[tuple[SarRequest, CoherenceItem]],
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> dict[str, CoherenceChip | SarMissing]:
    """Warp each sample's coherence onto its chip grid (bilinear in DN, then scaled).

    Scaling is linear, so interpolating DN then scaling equals scaling then interpolating;
    values are clipped to 0..1 (scaled integers and resampling never leave it by much).

    Returns:
        For each sample id, its :class:`CoherenceChip`, or :class:`SarMissing`
        (``read_error``) naming the COG that failed.
    """
    pairs = list(chosen)
    jobs: dict[str, tuple[float | None, list[SarRequest]]] = {}
    for req, found in pairs:
        jobs.setdefault(found.href, (found.nodata, []))[1].append(req)
    arrays, failures = warp_cogs(jobs, threads=threads, max_requests_per_host=max_requests_per_host)
    out: dict[str, CoherenceChip | SarMissing] = {}
    for req, found in pairs:
        if req.sample_id in failures:
            out[req.sample_id] = failures[req.sample_id]
            continue
        dn = arrays[found.href, req.sample_id]
        out[req.sample_id] = CoherenceChip(
            item=found,
            coherence=np.clip(dn * np.float32(found.scale) + np.float32(found.offset), 0, 1),
            time_offset_s=(found.midpoint - req.optical_time).total_seconds(),
        )
    return out


def coherence_for_samples(
    requests: list[SarRequest],
    sar: SarConfig,
    catalog: SarCatalog,
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> dict[str, CoherenceChip | SarMissing]:
    """Find and read every sample's coherence (``sar.coherence``), as SAR is found and read.

    Args:
        requests: The samples of one shard that have an optical chip.
        sar: The run's SAR settings; ``sar.coherence`` must be set.
        catalog: The shard's Sentinel-1 catalog, shared with
            :func:`pipeline.stages.sar.sar_for_samples` (opened once for both).
        threads: Parallel COG jobs (see :func:`pipeline.stages.sar.warp_cogs`).
        max_requests_per_host: COG jobs in flight per host (as above).

    Returns:
        For each sample id, its :class:`CoherenceChip` or the :class:`SarMissing` that says
        why not; never an exception for one sample's coherence.

    Raises:
        ValueError: if ``sar.coherence`` is unset.
    """
    config = sar.coherence
    if config is None:
        raise ValueError("sar.coherence is unset: no coherence collection to read")
    chosen, missing = choose_by_cell(
        requests,
        catalog=catalog,
        collection=config.collection,
        window=config.window,
        choose=lambda items, req: choose_coherence(
            items, grid=req.grid, optical_time=req.optical_time, config=config
        ),
    )
    out: dict[str, CoherenceChip | SarMissing] = dict(missing)
    out.update(
        read_coherence_chips(chosen, threads=threads, max_requests_per_host=max_requests_per_host)
    )
    return out
