"""Scene search: for each sample, the least cloudy Sentinel-2 L2A scene that covers its chip.

One STAC search per shard, period and 1-degree cell (never one per sample): the search asks for
scenes intersecting the cell's chips in the period, under the cloud limit, sorted by
``eo:cloud_cover``; each sample then takes the first scene whose footprint covers its whole
chip and that has every band the run needs. Bands are found through ``eo:bands`` (or STAC 1.1
``bands``) names, common names and centre wavelengths, with known asset keys as a fallback, so
Earth Search v1 and Planetary Computer items both work.

What each item's pixels carry above the output convention (reflectance = DN / 10000, no
offset) is decided from all of its metadata by :func:`pipeline.geo.radiometry.decide_offset`; the
chip reader then checks that decision against the pixels.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlparse

import pystac_client
import shapely
from pystac_client.exceptions import APIError
from shapely.geometry import shape
from shapely.geometry.base import BaseGeometry

from pipeline.core.config import StacConfig
from pipeline.core.errors import AssetError, PreflightError, SampleFailure
from pipeline.geo.bands import SCL, Band
from pipeline.geo.grid import ChipGrid, chip_grid
from pipeline.geo.radiometry import OffsetDecision, decide_offset
from pipeline.io.cog_reads import check_cog_opens
from pipeline.io.stac import first_resolved, open_catalog
from pipeline.stages.sampling import SampleSpec

__all__ = [
    "SceneAssets",
    "SceneChoice",
    "check_scene_items",
    "is_cog",
    "resolve_scene",
    "search_scenes",
]

COG_MEDIA_HINTS = ("image/tiff", "image/vnd.stac.geotiff")
WAVELENGTH_TOLERANCE_UM = 0.012


@dataclass(frozen=True)
class SceneAssets:
    """What the chip reader needs from one STAC item.

    Attributes:
        item_id: STAC item id.
        collection: STAC collection id.
        datetime: Acquisition time (UTC).
        cloud_cover: ``eo:cloud_cover`` of the whole scene, in percent.
        crs: The scene's CRS, e.g. ``EPSG:32632``.
        footprint: Data footprint in lon/lat.
        band_hrefs: ESA band name to COG href, for every band the run reads.
        scl_href: Href of the scene classification layer.
        radiometry: What the item's metadata says its pixels carry above the convention
            (offset per band and the rule that decided it).
        processing_baseline: ``s2:processing_baseline`` if the item has it.
        platform: e.g. ``sentinel-2a``.
    """

    item_id: str
    collection: str
    datetime: dt.datetime
    cloud_cover: float
    crs: str
    footprint: BaseGeometry
    band_hrefs: dict[str, str]
    scl_href: str
    radiometry: OffsetDecision
    processing_baseline: str | None
    platform: str | None


@dataclass(frozen=True)
class SceneChoice:
    """The scene chosen for one sample, the chip grid in it, and the runners-up.

    Attributes:
        scene: The least cloudy scene that covers the chip.
        grid: The chip's grid in that scene.
        fallbacks: The other covering scenes with their grids, best first, tried in turn
            when the chosen scene's COGs cannot be read.
    """

    scene: SceneAssets
    grid: ChipGrid
    fallbacks: tuple[tuple[SceneAssets, ChipGrid], ...] = ()


def is_cog(asset: dict[str, Any]) -> bool:
    """Whether a STAC asset is a GeoTIFF: by media type, else by the href's extension."""
    media = str(asset.get("type", ""))
    if media:
        return any(h in media for h in COG_MEDIA_HINTS)
    return urlparse(str(asset.get("href", ""))).path.lower().endswith((".tif", ".tiff"))


def _asset_bands(asset: dict[str, Any]) -> list[dict[str, Any]]:
    bands = asset.get("eo:bands") or asset.get("bands") or []
    return [b for b in bands if isinstance(b, dict)]


def _wavelength(info: dict[str, Any]) -> float | None:
    value = info.get("center_wavelength", info.get("eo:center_wavelength"))
    return float(value) if isinstance(value, int | float) else None


def _matches(key: str, asset: dict[str, Any], band: Band) -> bool:
    infos = _asset_bands(asset)
    if len(infos) == 1:
        info = infos[0]
        names = {str(info.get("name", "")).upper(), str(info.get("common_name", "")).upper()}
        if band.name in names:
            return True
        wl = _wavelength(info)
        if wl is not None:
            return abs(wl - band.center_wavelength) <= WAVELENGTH_TOLERANCE_UM
        # A unique common name identifies the band (rededge is shared by B05-B07).
        common = str(info.get("common_name", ""))
        if common and common == band.common_name and band.common_name != "rededge":
            return True
    elif infos:
        return False  # multi-band assets (TCI "visual") are never one band
    return key in band.asset_keys or key.upper() == band.name


def _find_asset(assets: dict[str, dict[str, Any]], band: Band) -> tuple[str, dict[str, Any]]:
    # Known keys first: cheap and unambiguous; then any COG asset whose metadata matches.
    for key in band.asset_keys:
        asset = assets.get(key)
        if (
            asset is not None
            and is_cog(asset)
            and (not _asset_bands(asset) or _matches(key, asset, band))
        ):
            return key, asset
    for key, asset in assets.items():
        if is_cog(asset) and _asset_bands(asset) and _matches(key, asset, band):
            return key, asset
    raise AssetError(f"no COG asset for band {band.name}")


def _find_scl(assets: dict[str, dict[str, Any]]) -> dict[str, Any]:
    for key in SCL.asset_keys:
        if key in assets and is_cog(assets[key]):
            return assets[key]
    for asset in assets.values():
        title = str(asset.get("title", "")).lower()
        if is_cog(asset) and "scene classification" in title:
            return asset
    raise AssetError("no scene classification (SCL) asset")


def _item_crs(item: dict[str, Any], asset: dict[str, Any]) -> str:
    for src in (asset, item.get("properties", {})):
        code = src.get("proj:code")
        if code:
            return str(code)
        epsg = src.get("proj:epsg")
        if epsg:
            return f"EPSG:{int(epsg)}"
    raise AssetError("item has no proj:code or proj:epsg")


def resolve_scene(item: dict[str, Any], bands: Iterable[Band]) -> SceneAssets:
    """Find every band's COG, the SCL layer, the CRS and the radiometry of one STAC item.

    Args:
        item: A STAC item as a dict (Earth Search v1 or Planetary Computer shape).
        bands: Bands the run reads.

    Raises:
        AssetError: if a band, the SCL layer or the CRS cannot be found.
    """
    props = item.get("properties", {})
    assets: dict[str, dict[str, Any]] = item.get("assets", {})
    baseline = props.get("s2:processing_baseline")
    baseline = None if baseline is None else str(baseline)
    band_assets: dict[str, dict[str, Any]] = {}
    crs = None
    for band in bands:
        _key, asset = _find_asset(assets, band)
        band_assets[band.name] = asset
        crs = crs or _item_crs(item, asset)
    scl = _find_scl(assets)
    crs = crs or _item_crs(item, scl)
    collection = str(item.get("collection", ""))
    return SceneAssets(
        item_id=str(item["id"]),
        collection=collection,
        datetime=dt.datetime.fromisoformat(str(props["datetime"]).replace("Z", "+00:00")),
        cloud_cover=float(props.get("eo:cloud_cover", math.nan)),
        crs=crs,
        footprint=shape(item["geometry"]),
        band_hrefs={k: str(a["href"]) for k, a in band_assets.items()},
        scl_href=str(scl["href"]),
        radiometry=decide_offset(collection, props, band_assets),
        processing_baseline=baseline,
        platform=props.get("platform"),
    )


def check_scene_items(
    items: Sequence[dict[str, Any]], bands: Iterable[Band], collection: str
) -> None:
    """Fail fast if no sampled item holds what the run reads, or its COGs do not open.

    A collection of another product (Level-1C has no SCL, Sentinel-1 no optical band) would
    otherwise fail every sample with ``missing_band``, and unreadable COGs (unsigned Planetary
    Computer hrefs, a requester-pays bucket, a host out of reach) with ``cog_open``. One item
    may be broken: only when every sampled item fails is the run refused; the SCL COG of the
    first good item is opened.

    Args:
        items: Items of ``collection`` (:func:`pipeline.io.stac.check_catalog`); none (an
            empty collection) passes: its samples will say ``no_scene``.
        bands: The bands the run reads.
        collection: The collection's id, for the message.

    Raises:
        PreflightError: naming ``stac.collection`` (with the first items' reasons, or the COG
            that did not open) or ``stac.signing`` (an unsigned Azure Blob COG).
    """
    bands = tuple(bands)
    scene, refused = first_resolved(items, lambda item: resolve_scene(item, bands))
    if scene is not None:
        check_cog_opens(
            scene.scl_href,
            field="stac.collection",
            signing_field="stac.signing",
            what=f"a COG of {collection}",
        )
    elif refused:
        errors = [f"{item.get('id')}: {exc}" for item, exc in refused]
        raise PreflightError(
            "stac.collection",
            f"items of {collection!r} lack what the run reads ({'; '.join(errors[:2])}): "
            "choose a Sentinel-2 Level-2A collection, or bands it has (chips.bands)",
        )


def _search(
    client: pystac_client.Client, stac: StacConfig, bbox: tuple[float, ...], datetime: str
) -> list[dict[str, Any]]:
    search = client.search(
        collections=[stac.collection],
        bbox=list(bbox),
        datetime=datetime,
        filter={"op": "<=", "args": [{"property": "eo:cloud_cover"}, stac.max_cloud_cover]},
        filter_lang="cql2-json",
        sortby=[{"field": "eo:cloud_cover", "direction": "asc"}],
        max_items=stac.max_items,
        limit=min(stac.max_items, 100),
    )
    items = list(search.items_as_dicts())
    # Servers may ignore filter or sortby: enforce both here, deterministically.
    items = [
        i
        for i in items
        if float(i.get("properties", {}).get("eo:cloud_cover", 100.0)) <= stac.max_cloud_cover
    ]
    items.sort(
        key=lambda i: (
            float(i["properties"].get("eo:cloud_cover", 100.0)),
            str(i["properties"].get("datetime", "")),
            str(i["id"]),
        )
    )
    return items


def search_scenes(
    samples: Iterable[SampleSpec],
    stac: StacConfig,
    bands: tuple[Band, ...],
    *,
    chip_size: int,
    resolution: float,
) -> dict[str, SceneChoice | SampleFailure]:
    """Choose a scene for every sample.

    Args:
        samples: The samples of one shard.
        stac: STAC settings.
        bands: Bands every chosen scene must have.
        chip_size: Chip size in pixels.
        resolution: Pixel size in metres.

    Returns:
        For each sample id, its :class:`SceneChoice` or a :class:`SampleFailure` (reasons
        ``stac_error``, ``no_scene``, ``missing_band``).
    """
    groups: dict[tuple[str, int, int], list[SampleSpec]] = {}
    for s in samples:
        key = (s.period.name, math.floor(s.location.lon), math.floor(s.location.lat))
        groups.setdefault(key, []).append(s)
    out: dict[str, SceneChoice | SampleFailure] = {}
    try:
        client = open_catalog(stac)
    except (APIError, OSError, ValueError) as exc:
        failure = SampleFailure("stac_error", f"cannot open STAC API {stac.api_url}: {exc}")
        return {s.sample_id: failure for group in groups.values() for s in group}
    resolved: dict[str, SceneAssets | AssetError] = {}
    for group in groups.values():
        # Approximate chip outlines (local UTM) bound the search; exact grids come per scene.
        half_deg_lat = chip_size * resolution / 2 / 111_000 * 1.2
        lats = [s.location.lat for s in group]
        half_deg_lon = half_deg_lat / max(math.cos(math.radians(max(map(abs, lats)))), 0.01)
        lons = [s.location.lon for s in group]
        bbox = (
            max(min(lons) - half_deg_lon, -180.0),
            max(min(lats) - half_deg_lat, -90.0),
            min(max(lons) + half_deg_lon, 180.0),
            min(max(lats) + half_deg_lat, 90.0),
        )
        try:
            items = _search(client, stac, bbox, group[0].period.stac_datetime)
        except (APIError, OSError) as exc:
            for s in group:
                out[s.sample_id] = SampleFailure("stac_error", f"scene search failed: {exc}")
            continue
        for s in group:
            out[s.sample_id] = _choose(s, items, bands, resolved, chip_size, resolution, stac)
    return out


def _choose(
    sample: SampleSpec,
    items: list[dict[str, Any]],
    bands: tuple[Band, ...],
    resolved: dict[str, SceneAssets | AssetError],
    chip_size: int,
    resolution: float,
    stac: StacConfig,
) -> SceneChoice | SampleFailure:
    covering: list[tuple[SceneAssets, ChipGrid]] = []
    asset_errors: list[str] = []
    for item in items:
        scene = resolved.get(item["id"])
        if scene is None:
            try:
                scene = resolve_scene(item, bands)
            except AssetError as exc:
                scene = exc
            resolved[item["id"]] = scene
        if isinstance(scene, AssetError):
            if shape(item["geometry"]).intersects(
                shapely.Point(sample.location.lon, sample.location.lat)
            ):
                asset_errors.append(f"{item['id']}: {scene}")
            continue
        grid = chip_grid(sample.location.lon, sample.location.lat, scene.crs, chip_size, resolution)
        if scene.footprint.covers(grid.footprint_lonlat()):
            covering.append((scene, grid))
    if covering:
        scene, grid = covering[0]
        return SceneChoice(scene, grid, tuple(covering[1:]))
    if asset_errors:
        return SampleFailure("missing_band", "; ".join(asset_errors[:3]))
    return SampleFailure(
        "no_scene",
        f"no {stac.collection} scene with cloud cover <= {stac.max_cloud_cover:g}% covers the "
        f"chip in {sample.period.name} ({sample.period.start}..{sample.period.end}); "
        f"{len(items)} scene(s) intersect the area",
    )
