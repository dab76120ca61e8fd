"""Sentinel-1 RTC passes over the demo landscape: speckled gamma0 COGs and their STAC items.

Backscatter follows the same land-cover raster as the optical scenes, with typical C-band
gamma0 per class (calm water darkest, forest volume scattering, double-bounce built-up
brightest, wet snow dark), a smooth per-pass moisture field, and multiplicative speckle: linear
power times a Gamma(L, 1/L) draw with L the equivalent number of looks of Planetary Computer's
RTC items (4.4). Items are shaped like Planetary Computer ``sentinel-1-rtc`` items: assets
``vv`` / ``vh`` (titles, role ``data``, ``raster:bands`` nodata -32768), ``sar:*``, ``sat:*``
and ``proj:*`` properties (docs/sentinel-1.md).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, GRASSLAND, SNOW, WATER
from pipeline.demo.landscape import Landscape
from pipeline.demo.noise import seeded_rng, smooth_noise
from pipeline.demo.rasters import write_cog
from pipeline.demo.scene import SceneGrid, iso_utc
from pipeline.demo.stac_items import COG_TYPE, sentinel1_item
from pipeline.geo.sar import SENTINEL_1_DUAL_POL, Polarisation

__all__ = [
    "DEMO_SAR_PASSES",
    "ENL",
    "RTC_NODATA",
    "SarPass",
    "render_backscatter",
    "sar_item_id",
    "sar_stac_item",
    "write_sar_pass",
]

ENL = 4.4
"""Sentinel-1 IW GRD high-resolution equivalent number of looks (sar:looks_equivalent_number)."""
RTC_NODATA = -32768.0
"""Planetary Computer ``sentinel-1-rtc``'s nodata (``raster:bands``)."""
SAR_COLLECTION = "sentinel-1-rtc"
_TITLES: dict[Polarisation, str] = {
    "VV": "VV: vertical transmit, vertical receive",
    "VH": "VH: vertical transmit, horizontal receive",
}

# Typical C-band gamma0 (dB) per land-cover class, (VV, VH).
_CLASS_DB: dict[int, tuple[float, float]] = {
    WATER: (-22.0, -29.0),
    FOREST: (-7.5, -13.0),
    CROPLAND: (-11.0, -17.5),
    GRASSLAND: (-10.0, -17.0),
    BUILT_UP: (-6.0, -12.0),  # the non-impervious part; impervious share below
    BARE: (-13.0, -21.0),
    SNOW: (-16.0, -24.0),  # wet snow absorbs
}
_IMPERVIOUS_DB = (3.0, -5.0)  # walls and ground: double bounce
_ROAD_DB = (-18.0, -26.0)  # smooth asphalt reflects away from the sensor


@dataclass(frozen=True)
class SarPass:
    """One fake Sentinel-1 IW overpass.

    Attributes:
        date: Acquisition time (UTC).
        orbit_state: ``ascending`` (evening over Europe) or ``descending`` (morning).
        relative_orbit: ``sat:relative_orbit``.
        platform: ``SENTINEL-1A`` or ``SENTINEL-1C``.
    """

    date: datetime.datetime
    orbit_state: Literal["ascending", "descending"]
    relative_orbit: int
    platform: str = "SENTINEL-1A"


def _desc(month: int, day: int, year: int = 2024) -> SarPass:
    return SarPass(
        datetime.datetime(year, month, day, 5, 33, 12, tzinfo=datetime.UTC), "descending", 168
    )


def _asc(month: int, day: int, year: int = 2024) -> SarPass:
    return SarPass(
        datetime.datetime(year, month, day, 17, 21, 40, tzinfo=datetime.UTC), "ascending", 117
    )


DEMO_SAR_PASSES: tuple[SarPass, ...] = (
    _desc(4, 12),
    _asc(5, 15),
    _desc(7, 4),
    _asc(8, 13),
    _desc(9, 21),
    _asc(10, 22),
    _desc(12, 20),
    # No pass near 27 January 2025: that scene's samples show the missing-SAR state.
)
"""Passes within 6 days of every demo Sentinel-2 acquisition but the last."""


def _linear(db: float) -> float:
    return float(10.0 ** (db / 10.0))


def render_backscatter(
    ls: Landscape, sar_pass: SarPass, index: int, seed: int
) -> dict[Polarisation, npt.NDArray[np.float32]]:
    """Linear gamma0 power of one pass on the 10 m scene grid, VV and VH, speckled."""
    shape = ls.cls.shape
    out: dict[Polarisation, npt.NDArray[np.float32]] = {}
    for channel, pol in enumerate(SENTINEL_1_DUAL_POL):
        mean = np.zeros(shape, np.float64)
        for cls, dbs in _CLASS_DB.items():
            mean[ls.cls == cls] = _linear(dbs[channel])
        # Mix in linear power: a pixel's return is the sum of its parts' returns.
        mean = (1 - ls.urban) * mean + ls.urban * _linear(_IMPERVIOUS_DB[channel])
        mean = (1 - ls.road) * mean + ls.road * _linear(_ROAD_DB[channel])
        moisture = smooth_noise(
            seeded_rng(seed, "sar-moisture", index), shape, [800, 200], [1, 0.5]
        )
        land = ls.cls != WATER
        mean[land] *= 10.0 ** (0.1 * moisture[land])  # +-1 dB of soil moisture and roughness
        speckle = seeded_rng(seed, "sar-speckle", index, pol).gamma(ENL, 1.0 / ENL, size=shape)
        out[pol] = (mean * speckle).astype(np.float32)
    return out


def sar_item_id(sar_pass: SarPass) -> str:
    """A Planetary Computer RTC-style id (S1A_IW_GRDH_1SDV_<start>_<stop>_<orbit>_..._rtc)."""
    start = sar_pass.date.strftime("%Y%m%dT%H%M%S")
    stop = (sar_pass.date + datetime.timedelta(seconds=25)).strftime("%Y%m%dT%H%M%S")
    unit = sar_pass.platform[-1]  # SENTINEL-1A -> A
    return f"S1{unit}_IW_GRDH_1SDV_{start}_{stop}_{sar_pass.relative_orbit:06d}_DEMO00_rtc"


def sar_stac_item(item_id: str, sar_pass: SarPass, grid: SceneGrid) -> dict[str, Any]:
    """The Planetary Computer ``sentinel-1-rtc``-shaped item of one pass (relative hrefs)."""
    assets: dict[str, Any] = {
        pol.lower(): {
            "href": f"cogs/{item_id}/{pol.lower()}.tif",
            "type": COG_TYPE,
            "title": title,
            "roles": ["data"],
            "raster:bands": [
                {"nodata": RTC_NODATA, "data_type": "float32", "spatial_resolution": 10}
            ],
        }
        for pol, title in _TITLES.items()
    }
    assets["rendered_preview"] = {
        "href": f"cogs/{item_id}/preview.png",
        "type": "image/png",
        "title": "VV, VH False-color composite",
        "roles": ["overview"],
    }
    properties = {
        "datetime": iso_utc(sar_pass.date),
        "platform": sar_pass.platform,
        "sar:polarizations": list(SENTINEL_1_DUAL_POL),
        "sar:product_type": "GRD",
        "sar:looks_equivalent_number": ENL,
        "sat:orbit_state": sar_pass.orbit_state,
        "sat:relative_orbit": sar_pass.relative_orbit,
    }
    return sentinel1_item(item_id, SAR_COLLECTION, grid, properties, assets)


def write_sar_pass(
    out_dir: Path, ls: Landscape, sar_pass: SarPass, index: int, seed: int
) -> dict[str, Any]:
    """Render one pass, write its ``cogs/<item id>/vv.tif`` and ``vh.tif``; return its item."""
    item_id = sar_item_id(sar_pass)
    for pol, power in render_backscatter(ls, sar_pass, index, seed).items():
        path = out_dir / "cogs" / item_id / f"{pol.lower()}.tif"
        write_cog(path, power, ls.grid, 10, "average", nodata=RTC_NODATA)
    return sar_stac_item(item_id, sar_pass, ls.grid)
