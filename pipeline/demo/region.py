"""A deterministic, fake but realistic Sentinel-2 L2A demo region (torchgeo ``tests/data`` style).

:func:`ensure_demo_region` (or :func:`generate_demo_region`) writes everything the pipeline
reads, all derived from one landscape (:mod:`pipeline.demo.landscape`) so that the pieces agree
with each other:

* ``cogs/<item_id>/<asset_key>.tif``: one Cloud-Optimized GeoTIFF per L2A band (native 10, 20 or
  60 m grid, ``uint16``) and the SCL layer (20 m, ``uint8``) for every acquisition, in the
  bbox's UTM zone, nodata 0 (:mod:`pipeline.demo.rasters`);
* ``stac/items.json``: a GeoJSON FeatureCollection of STAC items shaped like Earth Search v1 or
  Planetary Computer ``sentinel-2-l2a`` items, with hrefs relative to the region root
  (:mod:`pipeline.demo.stac_items`, per :mod:`pipeline.demo.flavors`);
* ``cogs/<sar_item_id>/vv.tif``, ``vh.tif`` and ``stac/sar-items.json``: Sentinel-1 RTC passes
  (linear gamma0, float32, nodata -32768) and their Planetary Computer ``sentinel-1-rtc``-shaped
  items (:mod:`pipeline.demo.sar`);
* ``cogs/<coherence_item_id>/coherence.tif`` and ``stac/coherence-items.json``: 12-day
  interferometric coherence pairs (uint8 hundredths, nodata 0) and their interval items
  (:mod:`pipeline.demo.coherence`);
* ``overture/theme=<theme>/type=<type>/part-00000.parquet``: an Overture Maps extract (GeoParquet
  1.1, WKB in lon/lat) of the same fictional landscape (:mod:`pipeline.demo.overture`);
* ``truth/landcover.tif``: the 10 m land-cover class raster (codes in
  :data:`pipeline.demo.land_cover.LAND_COVER_CLASSES`);
* ``demo.json``: the generator version and parameters, written last (a region without it is
  incomplete).

Everything is a pure function of the parameters and ``seed``: the same call writes
byte-identical files.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.demo.coherence import DEMO_COHERENCE_PAIRS, CoherencePair, write_coherence_pair
from pipeline.demo.flavors import (
    FLAVOR_COLLECTIONS,
    ItemFlavor,
    band_asset_files,
    baseline_offset_dn,
    pixel_offset,
)
from pipeline.demo.land_cover import LAND_COVER_CLASSES
from pipeline.demo.landscape import build_landscape
from pipeline.demo.overture import PlacesSchema, write_overture
from pipeline.demo.rasters import render_acquisition, write_acquisition_cogs, write_cog
from pipeline.demo.sar import DEMO_SAR_PASSES, SarPass, write_sar_pass
from pipeline.demo.scene import DEMO_ACQUISITIONS, DEMO_BBOX, Acquisition, iso_utc, scene_grid
from pipeline.demo.stac_items import stac_item, stac_item_ids

__all__ = [
    "GENERATOR_VERSION",
    "DemoRegion",
    "ensure_demo_region",
    "generate_demo_region",
    "load_coherence_items",
    "load_items",
    "load_sar_items",
    "served_items",
]

GENERATOR_VERSION = "4"
"""Bumped whenever the generated files change, so :func:`ensure_demo_region` regenerates."""


@dataclass(frozen=True)
class DemoRegion:
    """A generated demo region on disk.

    Attributes:
        root: The region folder; item hrefs are relative to it.
        bbox: The requested bbox (lon/lat); the scene grid covers it plus a 1 km margin.
        crs: The UTM CRS of every COG, e.g. ``EPSG:32632``.
        items_path: ``root/stac/items.json``, a GeoJSON FeatureCollection of STAC items.
        overture_root: ``root/overture``, a hive tree ``theme=*/type=*/*.parquet``.
        cog_root: ``root/cogs``, one folder of COGs per item.
        item_ids: Ids of the items, in acquisition order.
        sar_item_ids: Ids of the Sentinel-1 items, in pass order.
        coherence_item_ids: Ids of the coherence items, in pair order.
    """

    root: Path
    bbox: tuple[float, float, float, float]
    crs: str
    items_path: Path
    overture_root: Path
    cog_root: Path
    item_ids: tuple[str, ...]
    sar_item_ids: tuple[str, ...] = ()
    coherence_item_ids: tuple[str, ...] = ()

    @property
    def sar_items_path(self) -> Path:
        """``root/stac/sar-items.json``, the Sentinel-1 items (a FeatureCollection)."""
        return _sar_items_path(self.root)

    @property
    def coherence_items_path(self) -> Path:
        """``root/stac/coherence-items.json``, the coherence items (a FeatureCollection)."""
        return _coherence_items_path(self.root)


def _sar_items_path(root: Path) -> Path:
    """Where a region under ``root`` keeps its Sentinel-1 items."""
    return root / "stac" / "sar-items.json"


def _coherence_items_path(root: Path) -> Path:
    """Where a region under ``root`` keeps its coherence items."""
    return root / "stac" / "coherence-items.json"


def _params(
    bbox: tuple[float, float, float, float],
    acquisitions: Sequence[Acquisition],
    item_flavor: str,
    seed: int,
    places_schema: PlacesSchema = "categories",
    sar_passes: Sequence[SarPass] = DEMO_SAR_PASSES,
    coherence_pairs: Sequence[CoherencePair] = DEMO_COHERENCE_PAIRS,
) -> dict[str, Any]:
    params: dict[str, Any] = {
        "generator_version": GENERATOR_VERSION,
        "bbox": [float(b) for b in bbox],
        "acquisitions": [
            {
                "date": iso_utc(a.date),
                "cloud_fraction": float(a.cloud_fraction),
                "footprint": a.footprint,
                "processing_baseline": a.processing_baseline,
                "platform": a.platform,
            }
            for a in acquisitions
        ],
        "item_flavor": item_flavor,
        "seed": int(seed),
        "sar_passes": [
            {
                "date": iso_utc(p.date),
                "orbit_state": p.orbit_state,
                "relative_orbit": p.relative_orbit,
                "platform": p.platform,
            }
            for p in sar_passes
        ],
        "coherence_pairs": [
            {"start": iso_utc(p.start), "days": p.days, "relative_orbit": p.relative_orbit}
            for p in coherence_pairs
        ],
    }
    if places_schema != "categories":  # absent: categories, as before the parameter existed
        params["places_schema"] = places_schema
    return params


def _fingerprint(params: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()


_OUTPUTS = ("cogs", "stac", "overture", "truth", "demo.json")


def generate_demo_region(
    out_dir: Path,
    *,
    bbox: tuple[float, float, float, float] = DEMO_BBOX,
    acquisitions: Sequence[Acquisition] = DEMO_ACQUISITIONS,
    item_flavor: ItemFlavor = "earth-search-c1",
    seed: int = 0,
    places_schema: PlacesSchema = "categories",
    sar_passes: Sequence[SarPass] = DEMO_SAR_PASSES,
    coherence_pairs: Sequence[CoherencePair] = DEMO_COHERENCE_PAIRS,
) -> DemoRegion:
    """Write a demo region (COGs, STAC items, Overture extract) into ``out_dir``.

    Earlier outputs in ``out_dir`` are replaced; ``demo.json`` is written last, so a folder
    without it is incomplete. Prefer :func:`ensure_demo_region`, which reuses a finished region
    and never leaves a half-written one in place.

    Args:
        out_dir: The region folder (created if missing).
        bbox: lon_min, lat_min, lon_max, lat_max; the scene is its UTM extent plus 1 km.
        acquisitions: The overpasses to fake, one STAC item each.
        item_flavor: The catalog whose items and pixels to copy (:data:`FLAVOR_COLLECTIONS`):
            ``earth-search-c1`` (Earth Search v1 keys ``red``, ``nir08``, ``scl``, offset in
            the pixels and in ``raster:bands``), ``earth-search`` (the same keys, offset
            removed from the pixels, ``earthsearch:boa_offset_applied`` and a stale
            ``raster:bands`` offset) or ``planetary-computer`` (``B04``, ``B8A``, ``SCL``,
            offset in the pixels, no offset metadata).
        seed: Seed of every random choice; the same arguments give byte-identical files.
        places_schema: ``categories`` (``categories.primary`` / ``alternate``, releases before
            September 2026) or ``taxonomy`` (``basic_category`` and ``taxonomy.primary`` /
            ``hierarchy`` / ``alternates`` instead): the same places either way.
        sar_passes: The Sentinel-1 overpasses to fake, one ``sentinel-1-rtc`` item each.
        coherence_pairs: The interferometric pairs to fake, one coherence item each.

    Returns:
        The region.

    Raises:
        ValueError: for a bbox outside UTM range or larger than ~60 km, an unknown flavor,
            footprint or places schema, or a malformed processing baseline.
    """
    if places_schema not in ("categories", "taxonomy"):
        raise ValueError(f"unknown places_schema {places_schema!r}")
    if item_flavor not in FLAVOR_COLLECTIONS:
        raise ValueError(f"unknown item_flavor {item_flavor!r}")
    for acq in acquisitions:
        if acq.footprint not in ("full", "east"):
            raise ValueError(f"unknown footprint {acq.footprint!r}")
        baseline_offset_dn(acq.processing_baseline)
    bbox = (float(bbox[0]), float(bbox[1]), float(bbox[2]), float(bbox[3]))
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in _OUTPUTS:
        target = out_dir / name
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            target.unlink()

    grid = scene_grid(bbox)
    ls = build_landscape(grid, seed)
    ids = stac_item_ids(grid, acquisitions, item_flavor)
    keys = band_asset_files(item_flavor)
    items: list[dict[str, Any]] = []
    # COGs are compressed in a writer thread while the next acquisition renders.
    with ThreadPoolExecutor(max_workers=1) as writer:
        pending: list[Future[None]] = []
        for index, (acq, item_id) in enumerate(zip(acquisitions, ids, strict=True)):
            offset = pixel_offset(item_flavor, acq.processing_baseline)
            rendered = render_acquisition(ls, acq, index, seed, offset)
            for f in pending:
                f.result()
            folder = out_dir / "cogs" / item_id
            pending = [
                writer.submit(write_acquisition_cogs, folder, keys, rendered, grid),
            ]
            items.append(stac_item(item_id, acq, grid, rendered, item_flavor))
        for f in pending:
            f.result()
    sar_items = [write_sar_pass(out_dir, ls, p, i, seed) for i, p in enumerate(sar_passes)]
    coherence_items = [
        write_coherence_pair(out_dir, ls, p, i, seed) for i, p in enumerate(coherence_pairs)
    ]
    write_cog(out_dir / "truth" / "landcover.tif", ls.cls, grid, 10, "nearest")
    write_overture(out_dir / "overture", grid, ls.features, seed, places_schema)
    (out_dir / "stac").mkdir(parents=True, exist_ok=True)
    (out_dir / "stac" / "items.json").write_text(
        json.dumps({"type": "FeatureCollection", "features": items}, indent=1)
    )
    _sar_items_path(out_dir).write_text(
        json.dumps({"type": "FeatureCollection", "features": sar_items}, indent=1)
    )
    _coherence_items_path(out_dir).write_text(
        json.dumps({"type": "FeatureCollection", "features": coherence_items}, indent=1)
    )
    params = _params(
        bbox, acquisitions, item_flavor, seed, places_schema, sar_passes, coherence_pairs
    )
    manifest = {
        "fingerprint": _fingerprint(params),
        "params": params,
        "crs": f"EPSG:{grid.epsg}",
        "grid": {"x0": grid.x0, "y0": grid.y0, "width": grid.width, "height": grid.height},
        "item_ids": ids,
        "sar_item_ids": [i["id"] for i in sar_items],
        "coherence_item_ids": [i["id"] for i in coherence_items],
        "land_cover_classes": {str(k): v for k, v in LAND_COVER_CLASSES.items()},
    }
    (out_dir / "demo.json").write_text(json.dumps(manifest, indent=1))
    return _region(out_dir, manifest)


def _region(root: Path, manifest: dict[str, Any]) -> DemoRegion:
    b = manifest["params"]["bbox"]
    return DemoRegion(
        root=root,
        bbox=(float(b[0]), float(b[1]), float(b[2]), float(b[3])),
        crs=str(manifest["crs"]),
        items_path=root / "stac" / "items.json",
        overture_root=root / "overture",
        cog_root=root / "cogs",
        item_ids=tuple(manifest["item_ids"]),
        sar_item_ids=tuple(manifest.get("sar_item_ids", ())),
        coherence_item_ids=tuple(manifest.get("coherence_item_ids", ())),
    )


def _read_manifest(root: Path) -> dict[str, Any] | None:
    try:
        data = json.loads((root / "demo.json").read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _complete(root: Path, fingerprint: str) -> dict[str, Any] | None:
    manifest = _read_manifest(root)
    if manifest is None or manifest.get("fingerprint") != fingerprint:
        return None
    if not (root / "stac" / "items.json").is_file() or not (root / "overture").is_dir():
        return None
    ids = [
        *manifest.get("item_ids", []),
        *manifest.get("sar_item_ids", []),
        *manifest.get("coherence_item_ids", []),
    ]
    if not all((root / "cogs" / i).is_dir() for i in ids):
        return None
    return manifest


def ensure_demo_region(
    out_dir: Path,
    *,
    bbox: tuple[float, float, float, float] = DEMO_BBOX,
    acquisitions: Sequence[Acquisition] = DEMO_ACQUISITIONS,
    item_flavor: ItemFlavor = "earth-search-c1",
    seed: int = 0,
    places_schema: PlacesSchema = "categories",
    sar_passes: Sequence[SarPass] = DEMO_SAR_PASSES,
    coherence_pairs: Sequence[CoherencePair] = DEMO_COHERENCE_PAIRS,
) -> DemoRegion:
    """Reuse the region in ``out_dir`` if it was generated with the same parameters, else make it.

    A new region is generated in a temporary sibling folder and renamed into place, so an
    interrupted generation never looks complete. A folder holding anything but a region's
    files is never replaced.

    Args:
        out_dir: The region folder.
        bbox: As for :func:`generate_demo_region`.
        acquisitions: As for :func:`generate_demo_region`.
        item_flavor: As for :func:`generate_demo_region`.
        seed: As for :func:`generate_demo_region`.
        places_schema: As for :func:`generate_demo_region`.
        sar_passes: As for :func:`generate_demo_region`.
        coherence_pairs: As for :func:`generate_demo_region`.

    Returns:
        The region.

    Raises:
        FileExistsError: if ``out_dir`` holds files that are not a demo region's.
        ValueError: as for :func:`generate_demo_region`.
    """
    out_dir = Path(out_dir)
    fingerprint = _fingerprint(
        _params(bbox, acquisitions, item_flavor, seed, places_schema, sar_passes, coherence_pairs)
    )
    manifest = _complete(out_dir, fingerprint)
    if manifest is not None:
        return _region(out_dir, manifest)
    if out_dir.exists():
        stray = sorted(p.name for p in out_dir.iterdir() if p.name not in _OUTPUTS)
        if stray:
            raise FileExistsError(f"{out_dir} holds files that are not a demo region's: {stray}")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.tmp-", dir=out_dir.parent))
    try:
        generate_demo_region(
            tmp,
            bbox=bbox,
            acquisitions=acquisitions,
            item_flavor=item_flavor,
            seed=seed,
            places_schema=places_schema,
            sar_passes=sar_passes,
            coherence_pairs=coherence_pairs,
        )
        old: Path | None = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.old-{os.getpid()}-{uuid.uuid4().hex[:8]}")
            os.replace(out_dir, old)
        try:
            os.replace(tmp, out_dir)
        except OSError:
            # Another process put a region there meanwhile: fine if it is the same one.
            manifest = _complete(out_dir, fingerprint)
            if manifest is None:
                raise
            shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    manifest = _complete(out_dir, fingerprint)
    if manifest is None:
        raise RuntimeError(f"demo region in {out_dir} is incomplete after generation")
    return _region(out_dir, manifest)


def load_items(region: DemoRegion) -> list[dict[str, Any]]:
    """The region's STAC items (hrefs relative to ``region.root``)."""
    data = json.loads(region.items_path.read_text())
    features = data.get("features", [])
    if not isinstance(features, list):
        raise ValueError(f"{region.items_path} is not a FeatureCollection")
    return features


def _optional_features(path: Path) -> list[dict[str, Any]]:
    """The features of an optional FeatureCollection file; none if the region lacks it."""
    if not path.is_file():
        return []  # a region copied from one generated before that collection
    features = json.loads(path.read_text()).get("features", [])
    if not isinstance(features, list):
        raise ValueError(f"{path} is not a FeatureCollection")
    return features


def load_sar_items(region: DemoRegion) -> list[dict[str, Any]]:
    """The region's Sentinel-1 items (hrefs relative to ``region.root``); none if it has none."""
    return _optional_features(region.sar_items_path)


def load_coherence_items(region: DemoRegion) -> list[dict[str, Any]]:
    """The region's coherence items (hrefs relative to ``region.root``); none if it has none."""
    return _optional_features(region.coherence_items_path)


def served_items(region: DemoRegion) -> list[dict[str, Any]]:
    """Every item the region's STAC API serves: Sentinel-2, Sentinel-1 and coherence."""
    return load_items(region) + load_sar_items(region) + load_coherence_items(region)
