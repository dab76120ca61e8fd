"""STAC items of the demo acquisitions, shaped like the item flavor's catalog.

Earth Search v1 items (``earth-search-c1``, ``earth-search``: asset keys ``red``, ``nir08``,
``scl``, ``raster:bands``, ``mgrs:*`` and ``earthsearch:*`` properties) or Planetary Computer
``sentinel-2-l2a`` items (``B04``, ``B8A``, ``SCL``, ``s2:*`` and ``sat:*`` properties), with
hrefs relative to the region root, cloud and SCL percentages counted from the rendered rasters,
and the assets real items have but the demo never writes (``visual``, thumbnails, JP2).
"""

from __future__ import annotations

import datetime
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import shapely
from pyproj import Transformer
from shapely.geometry import mapping

from pipeline.demo.flavors import (
    FLAVOR_COLLECTIONS,
    ItemFlavor,
    band_asset_files,
    baseline_offset_dn,
    declared_offset,
)
from pipeline.demo.rasters import Rendered
from pipeline.demo.scene import Acquisition, SceneGrid, as_utc, footprint_polygon, iso_utc
from pipeline.geo.bands import L2A_BANDS, Band

__all__ = ["COG_TYPE", "geojson_footprint", "sentinel1_item", "stac_item", "stac_item_ids"]

_FWHM = {
    "B01": 0.027,
    "B02": 0.098,
    "B03": 0.045,
    "B04": 0.038,
    "B05": 0.019,
    "B06": 0.018,
    "B07": 0.028,
    "B08": 0.145,
    "B8A": 0.033,
    "B09": 0.026,
    "B11": 0.143,
    "B12": 0.242,
}
_ES_TITLES = {
    "B01": "Coastal aerosol (band 1)",
    "B02": "Blue (band 2)",
    "B03": "Green (band 3)",
    "B04": "Red (band 4)",
    "B05": "Red edge 1 (band 5)",
    "B06": "Red edge 2 (band 6)",
    "B07": "Red edge 3 (band 7)",
    "B08": "NIR 1 (band 8)",
    "B8A": "NIR 2 (band 8A)",
    "B09": "NIR 3 (band 9)",
    "B11": "SWIR 1 (band 11)",
    "B12": "SWIR 2 (band 12)",
}
_PC_TITLES = {
    "B01": "Band 1 - Coastal aerosol",
    "B02": "Band 2 - Blue",
    "B03": "Band 3 - Green",
    "B04": "Band 4 - Red",
    "B05": "Band 5 - Vegetation red edge 1",
    "B06": "Band 6 - Vegetation red edge 2",
    "B07": "Band 7 - Vegetation red edge 3",
    "B08": "Band 8 - NIR",
    "B8A": "Band 8A - Vegetation red edge 4",
    "B09": "Band 9 - Water vapor",
    "B11": "Band 11 - SWIR (1.6)",
    "B12": "Band 12 - SWIR (2.2)",
}
COG_TYPE = "image/tiff; application=geotiff; profile=cloud-optimized"
"""The media type of every demo COG asset, as the real catalogs give it."""
_ES_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.1.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
    "https://stac-extensions.github.io/mgrs/v1.0.0/schema.json",
    "https://stac-extensions.github.io/grid/v1.0.0/schema.json",
    "https://stac-extensions.github.io/view/v1.0.0/schema.json",
    "https://stac-extensions.github.io/processing/v1.1.0/schema.json",
]
_PC_EXTENSIONS = [
    "https://stac-extensions.github.io/eo/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/projection/v1.0.0/schema.json",
]
_LICENSE_LINK = {
    "rel": "license",
    "href": "https://sentinel.esa.int/documents/247904/690755/Sentinel_Data_Legal_Notice",
}


def _mgrs(grid: SceneGrid) -> tuple[int, str, str]:
    """UTM zone, latitude band and 100 km grid square of the scene centre (MGRS)."""
    zone = grid.epsg % 100
    xc, yc = grid.x0 + grid.width_m / 2, grid.y0 - grid.height_m / 2
    _, lat = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(xc, yc)
    bands = "CDEFGHJKLMNPQRSTUVWX"
    lat_band = bands[min(len(bands) - 1, max(0, int((lat + 80) // 8)))]
    columns = ("ABCDEFGH", "JKLMNPQR", "STUVWXYZ")[(zone - 1) % 3]
    column = columns[int(xc // 100_000) - 1]
    # The southern false northing (10 000 km) is a multiple of the 2000 km letter cycle.
    row = "ABCDEFGHJKLMNPQRSTUV"[(int(yc // 100_000) + (5 if zone % 2 == 0 else 0)) % 20]
    return zone, lat_band, column + row


def geojson_footprint(grid: SceneGrid, footprint: str) -> tuple[dict[str, Any], list[float]]:
    """A footprint (``full`` or ``east``) as a lon/lat GeoJSON geometry and its bbox."""
    poly = footprint_polygon(grid, footprint).segmentize(5000.0)
    to_ll = Transformer.from_crs(grid.epsg, 4326, always_xy=True)
    ll = shapely.transform(poly, lambda c: np.column_stack(to_ll.transform(c[:, 0], c[:, 1])))
    ll = shapely.orient_polygons(shapely.set_precision(ll, 1e-7))
    return mapping(ll), [round(float(b), 7) for b in ll.bounds]


def _percent(part: int, whole: int) -> float:
    return round(100.0 * part / whole, 6) if whole else 0.0


def _scl_properties(r: Rendered) -> dict[str, float]:
    c = r.counts
    return {
        "s2:nodata_pixel_percentage": _percent(r.total - r.valid, r.total),
        "s2:saturated_defective_pixel_percentage": 0.0,
        "s2:dark_features_percentage": 0.0,
        "s2:cloud_shadow_percentage": _percent(c.get(3, 0), r.valid),
        "s2:vegetation_percentage": _percent(c.get(4, 0), r.valid),
        "s2:not_vegetated_percentage": _percent(c.get(5, 0), r.valid),
        "s2:water_percentage": _percent(c.get(6, 0), r.valid),
        "s2:unclassified_percentage": 0.0,
        "s2:medium_proba_clouds_percentage": _percent(c.get(8, 0), r.valid),
        "s2:high_proba_clouds_percentage": _percent(c.get(9, 0), r.valid),
        "s2:thin_cirrus_percentage": _percent(c.get(10, 0), r.valid),
        "s2:snow_ice_percentage": _percent(c.get(11, 0), r.valid),
    }


def _cloud_cover(r: Rendered) -> float:
    return _percent(sum(r.counts.get(k, 0) for k in (8, 9, 10)), r.valid)


def stac_item_ids(
    grid: SceneGrid, acquisitions: Sequence[Acquisition], flavor: ItemFlavor
) -> list[str]:
    """Item ids in the flavor's naming scheme, one per acquisition, made unique by a sequence."""
    zone, lat_band, square = _mgrs(grid)
    tile = f"{zone:02d}{lat_band}{square}"
    ids: list[str] = []
    for acq in acquisitions:
        when = as_utc(acq.date)
        sat = "S2" + acq.platform.strip()[-1:].upper()
        seq = 0
        while True:
            if flavor == "earth-search":
                iid = f"{sat}_{tile}_{when:%Y%m%d}_{seq}_L2A"
            elif flavor == "earth-search-c1":
                iid = f"{sat}_T{tile}_{when + datetime.timedelta(seconds=seq):%Y%m%dT%H%M%S}_L2A"
            else:
                proc = when + datetime.timedelta(hours=5, minutes=39, seconds=29 + seq)
                iid = f"{sat}_MSIL2A_{when:%Y%m%dT%H%M%S}_R065_T{tile}_{proc:%Y%m%dT%H%M%S}"
            if iid not in ids:
                break
            seq += 1
        ids.append(iid)
    return ids


def stac_item(
    item_id: str,
    acq: Acquisition,
    grid: SceneGrid,
    r: Rendered,
    flavor: ItemFlavor,
) -> dict[str, Any]:
    """The STAC item (a GeoJSON Feature) of one rendered acquisition, shaped like the flavor's."""
    when = as_utc(acq.date)
    geometry, bbox = geojson_footprint(grid, acq.footprint)
    zone, lat_band, square = _mgrs(grid)
    tile = f"{zone:02d}{lat_band}{square}"
    keys = band_asset_files(flavor)
    offset = baseline_offset_dn(acq.processing_baseline)
    declared = declared_offset(flavor, acq.processing_baseline)
    processed = iso_utc(when + datetime.timedelta(hours=5, minutes=39, seconds=29))
    baseline = acq.processing_baseline
    product_uri = (
        f"S2{acq.platform[-1:].upper()}_MSIL2A_{when:%Y%m%dT%H%M%S}_N{baseline.replace('.', '')}"
        f"_R065_T{tile}_{when + datetime.timedelta(hours=5, minutes=39, seconds=29):%Y%m%dT%H%M%S}"
        ".SAFE"
    )
    doy = when.timetuple().tm_yday
    common: dict[str, Any] = {
        "datetime": iso_utc(when),
        "instruments": ["msi"],
        "eo:cloud_cover": _cloud_cover(r),
        "proj:epsg": grid.epsg,
        "s2:processing_baseline": baseline,
        "s2:product_type": "S2MSI2A",
        "s2:product_uri": product_uri,
        "s2:datatake_type": "INS-NOBS",
        "s2:reflectance_conversion_factor": round(
            1 + 0.0334 * math.cos(2 * math.pi * (doy - 4) / 365.25), 9
        ),
        **_scl_properties(r),
    }

    def proj(res: int) -> dict[str, Any]:
        h, w = grid.shape(res)
        return {"proj:shape": [h, w], "proj:transform": [res, 0, grid.x0, 0, -res, grid.y0]}

    def es_band_asset(b: Band, key: str, href: str, media_type: str) -> dict[str, Any]:
        # One Earth Search band asset: the COG, and its JPEG2000 twin a band lookup must skip.
        return {
            "href": href,
            "type": media_type,
            "title": f"{_ES_TITLES[b.name]} - {b.resolution_m}m",
            "eo:bands": [_eo_band(b, key, _ES_TITLES[b.name])],
            "gsd": b.resolution_m,
            **proj(b.resolution_m),
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint16",
                    "bits_per_sample": 15,
                    "spatial_resolution": b.resolution_m,
                    "scale": 0.0001,
                    "offset": -declared / 10000,
                }
            ],
            "roles": ["data", "reflectance"],
        }

    assets: dict[str, dict[str, Any]] = {}
    if flavor in ("earth-search", "earth-search-c1"):
        c1 = flavor == "earth-search-c1"
        bucket = (
            "e84-earth-search-sentinel-data/sentinel-2-c1-l2a"
            if c1
            else "sentinel-cogs/sentinel-s2-l2a-cogs"
        )
        for b in L2A_BANDS:
            key = keys[b.name]
            assets[key] = es_band_asset(b, key, f"cogs/{item_id}/{key}.tif", COG_TYPE)
        assets["scl"] = {
            "href": f"cogs/{item_id}/scl.tif",
            "type": COG_TYPE,
            "title": "Scene classification map (SCL)",
            "gsd": 20,
            **proj(20),
            "raster:bands": [
                {"nodata": 0, "data_type": "uint8", "spatial_resolution": 20, "unit": "none"}
            ],
            "roles": ["data"],
        }
        rgb = [L2A_BANDS[i] for i in (3, 2, 1)]
        assets["visual"] = {
            "href": f"cogs/{item_id}/TCI.tif",  # never written: a trap for band lookups
            "type": COG_TYPE,
            "title": "True color image",
            "eo:bands": [_eo_band(b, keys[b.name], _ES_TITLES[b.name]) for b in rgb],
            **proj(10),
            "roles": ["visual"],
        }
        assets["thumbnail"] = {
            "href": f"cogs/{item_id}/thumbnail.jpg",
            "type": "image/jpeg",
            "title": "Thumbnail image",
            "roles": ["thumbnail"],
        }
        for b in L2A_BANDS:
            if b.resolution_m != 10:
                continue
            key = keys[b.name]
            jp2 = f"cogs/{item_id}/jp2/{b.name}.jp2"  # never written
            assets[f"{key}-jp2"] = es_band_asset(b, key, jp2, "image/jp2")
        properties = {
            "created": processed,
            "platform": acq.platform,
            "constellation": "sentinel-2",
            "mgrs:utm_zone": zone,
            "mgrs:latitude_band": lat_band,
            "mgrs:grid_square": square,
            "grid:code": f"MGRS-{tile}",
            "view:sun_azimuth": round(r.sun_azimuth, 6),
            "view:sun_elevation": round(r.sun_elevation, 6),
            "s2:sequence": "0" if c1 else item_id.split("_")[-2],
            "earthsearch:s3_path": (
                f"s3://{bucket}/{zone}/{lat_band}/{square}/{when:%Y}/{when.month}/{item_id}"
            ),
            # Element 84 removed the baseline's offset from every sentinel-2-l2a COG that had one.
            **({} if c1 else {"earthsearch:boa_offset_applied": offset > 0}),
            "processing:software": {"sentinel2-to-stac": "0.1.1"},
            **common,
            "updated": processed,
        }
        extensions = _ES_EXTENSIONS
    else:
        for b in L2A_BANDS:
            key = keys[b.name]
            title = f"{_PC_TITLES[b.name]} - {b.resolution_m}m"
            assets[key] = {
                "href": f"cogs/{item_id}/{key}.tif",
                "type": COG_TYPE,
                "title": title,
                "eo:bands": [_eo_band(b, key, title)],
                "gsd": b.resolution_m,
                **proj(b.resolution_m),
                "roles": ["data"],
            }
        assets["SCL"] = {
            "href": f"cogs/{item_id}/SCL.tif",
            "type": COG_TYPE,
            "title": "Scene classfication map (SCL)",  # sic: the typo is Planetary Computer's
            "gsd": 20,
            **proj(20),
            "roles": ["data"],
        }
        rgb = [L2A_BANDS[i] for i in (3, 2, 1)]
        assets["visual"] = {
            "href": f"cogs/{item_id}/TCI.tif",  # never written
            "type": COG_TYPE,
            "title": "True color image",
            "eo:bands": [_eo_band(b, keys[b.name], f"{_PC_TITLES[b.name]} - 10m") for b in rgb],
            "gsd": 10,
            **proj(10),
            "roles": ["data"],
        }
        assets["preview"] = {
            "href": f"cogs/{item_id}/preview.png",  # never written
            "type": "image/png",
            "title": "Rendered preview",
            "rel": "preview",
            "roles": ["overview"],
        }
        properties = {
            **common,
            "platform": "Sentinel-" + acq.platform.strip()[-2:].upper(),
            "constellation": "Sentinel 2",
            "s2:mgrs_tile": tile,
            "s2:generation_time": processed,
            "s2:mean_solar_azimuth": round(r.sun_azimuth, 6),
            "s2:mean_solar_zenith": round(90 - r.sun_elevation, 6),
            "sat:orbit_state": "descending",
            "sat:relative_orbit": 65,
        }
        extensions = _PC_EXTENSIONS
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "stac_extensions": extensions,
        "id": item_id,
        "collection": FLAVOR_COLLECTIONS[flavor],
        "geometry": geometry,
        "bbox": bbox,
        "properties": properties,
        "links": [_LICENSE_LINK],
        "assets": assets,
    }


def _eo_band(band: Band, name: str, description: str) -> dict[str, Any]:
    return {
        "name": name,
        "common_name": band.common_name,
        "description": description,
        "center_wavelength": band.center_wavelength,
        "full_width_half_max": _FWHM[band.name],
    }


_SENTINEL_1_EXTENSIONS = [
    "https://stac-extensions.github.io/sar/v1.0.0/schema.json",
    "https://stac-extensions.github.io/sat/v1.0.0/schema.json",
    "https://stac-extensions.github.io/raster/v1.1.0/schema.json",
]


def sentinel1_item(
    item_id: str,
    collection: str,
    grid: SceneGrid,
    properties: dict[str, Any],
    assets: dict[str, Any],
) -> dict[str, Any]:
    """A Sentinel-1 product's item on ``grid`` (10 m, full footprint): backscatter or coherence.

    ``properties`` holds what differs by product (times, polarisations, product type, orbit);
    the envelope, the IW C-band facts and the projection are added here.
    """
    geometry, bbox = geojson_footprint(grid, "full")
    h, w = grid.shape(10)
    return {
        "type": "Feature",
        "stac_version": "1.0.0",
        "id": item_id,
        "collection": collection,
        "geometry": geometry,
        "bbox": bbox,
        "properties": {
            **properties,
            "constellation": "Sentinel-1",
            "sar:instrument_mode": "IW",
            "sar:frequency_band": "C",
            "proj:epsg": grid.epsg,
            "proj:shape": [h, w],
            "proj:transform": [10.0, 0.0, grid.x0, 0.0, -10.0, grid.y0],
        },
        "assets": assets,
        "links": [],
        "stac_extensions": list(_SENTINEL_1_EXTENSIONS),
    }
