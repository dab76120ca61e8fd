"""Sentinel-1 12-day interferometric coherence over the demo landscape: COGs and STAC items.

C-band repeat-pass coherence follows how stable the scatterers are between two passes: high
on buildings and bare rock, low on water (it moves) and forest (leaves and branches move);
cropland is in between and seasonal, lowest while crops grow in summer and highest over bare
or stubble fields (Kellndorfer et al. 2022, Sci Data 9:73, whose global seasonal 12-day VV
coherence shows these levels). A smooth per-pair weather field (rain and wind between the
passes decorrelate) and the estimator's spread are added.

Items are pair products with an interval (``start_datetime`` / ``end_datetime``: the two
acquisitions, ``datetime`` null) and one asset ``coherence`` (role ``coherence``), stored like
the Global Seasonal Sentinel-1 Interferometric Coherence tiles: uint8 hundredths, nodata 0,
``raster:bands`` ``scale`` 0.01 (docs/sentinel-1.md).
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, GRASSLAND, SNOW, WATER
from pipeline.demo.landscape import Landscape
from pipeline.demo.noise import seeded_rng, smooth_noise
from pipeline.demo.rasters import write_cog
from pipeline.demo.scene import SceneGrid, iso_utc
from pipeline.demo.stac_items import COG_TYPE, sentinel1_item

__all__ = [
    "COHERENCE_COLLECTION",
    "COHERENCE_SCALE",
    "DEMO_COHERENCE_PAIRS",
    "CoherencePair",
    "coherence_item_id",
    "coherence_stac_item",
    "render_coherence",
    "write_coherence_pair",
]

COHERENCE_COLLECTION = "sentinel-1-coherence"
"""The demo's coherence collection (``sar.coherence.collection``)."""
COHERENCE_SCALE = 0.01
"""Stored DN times this is coherence (``raster:bands`` scale); DN 0 is nodata."""

# 12-day VV coherence per land-cover class, (growing season Apr-Sep, rest of the year).
_CLASS_COHERENCE: dict[int, tuple[float, float]] = {
    WATER: (0.08, 0.08),
    FOREST: (0.15, 0.22),  # leafless deciduous crowns move less
    CROPLAND: (0.22, 0.45),  # growing crops decorrelate; bare and stubble fields hold
    GRASSLAND: (0.30, 0.40),
    BUILT_UP: (0.55, 0.60),  # the gardens and yards; impervious share below
    BARE: (0.70, 0.72),  # rock and gravel
    SNOW: (0.12, 0.12),  # wet snow changes between passes
}
_IMPERVIOUS_COHERENCE = 0.88
_ROAD_COHERENCE = 0.55  # traffic and smooth asphalt (little signal) bring it down
_ESTIMATOR_SD = 0.04  # spread of the coherence estimate over a few tens of looks


@dataclass(frozen=True)
class CoherencePair:
    """One fake 12-day interferometric pair (reference and secondary acquisition).

    Attributes:
        start: The reference (first) acquisition, UTC.
        days: Repeat interval in days.
        relative_orbit: ``sat:relative_orbit`` of both acquisitions.
    """

    start: datetime.datetime
    days: int = 12
    relative_orbit: int = 168

    @property
    def end(self) -> datetime.datetime:
        """The secondary acquisition."""
        return self.start + datetime.timedelta(days=self.days)


def _pair(month: int, day: int) -> CoherencePair:
    return CoherencePair(datetime.datetime(2024, month, day, 5, 33, 12, tzinfo=datetime.UTC))


DEMO_COHERENCE_PAIRS: tuple[CoherencePair, ...] = (
    _pair(4, 12),  # contains 14 April
    _pair(7, 4),  # contains 6 July
    _pair(8, 9),  # contains 10 and 15 August
    _pair(9, 15),  # contains 20 and 24 September
    _pair(12, 8),  # contains 18 December
    # None near 11 May, 19 or 25 October and 27 January: those samples show no_acquisition.
)
"""Pairs around most demo Sentinel-2 scenes, descending orbit 168 like the SAR passes."""


def _growing(when: datetime.datetime) -> bool:
    return 4 <= when.month <= 9


def render_coherence(
    ls: Landscape, pair: CoherencePair, index: int, seed: int
) -> npt.NDArray[np.float32]:
    """Coherence 0..1 of one pair on the 10 m scene grid."""
    season = 0 if _growing(pair.start + (pair.end - pair.start) / 2) else 1
    mean = np.full(ls.cls.shape, 0.3, np.float64)
    for cls, levels in _CLASS_COHERENCE.items():
        mean[ls.cls == cls] = levels[season]
    mean = (1 - ls.urban) * mean + ls.urban * _IMPERVIOUS_COHERENCE
    mean = (1 - ls.road) * mean + ls.road * _ROAD_COHERENCE
    weather = smooth_noise(seeded_rng(seed, "coh-weather", index), ls.cls.shape, [1500], [1])
    mean *= 1.0 + 0.1 * weather  # rain or wind between the passes: +-10 %
    spread = seeded_rng(seed, "coh-estimate", index).normal(0.0, _ESTIMATOR_SD, ls.cls.shape)
    return np.clip(mean + spread, 0.01, 1.0).astype(np.float32)


def coherence_item_id(pair: CoherencePair) -> str:
    """A HyP3-like pair id: S1_<orbit>_<reference>_<secondary>_VV_COH<days>_DEMO."""
    first, second = (d.strftime("%Y%m%dT%H%M%S") for d in (pair.start, pair.end))
    return f"S1_{pair.relative_orbit:03d}_{first}_{second}_VV_COH{pair.days:02d}_DEMO"


def coherence_stac_item(item_id: str, pair: CoherencePair, grid: SceneGrid) -> dict[str, Any]:
    """The STAC item of one pair (relative hrefs): an interval, one ``coherence`` asset."""
    properties = {
        "datetime": None,
        "start_datetime": iso_utc(pair.start),
        "end_datetime": iso_utc(pair.end),
        "sar:polarizations": ["VV"],
        "sar:product_type": "COH",
        "sat:orbit_state": "descending",
        "sat:relative_orbit": pair.relative_orbit,
    }
    assets = {
        "coherence": {
            "href": f"cogs/{item_id}/coherence.tif",
            "type": COG_TYPE,
            "title": f"VV {pair.days}-day interferometric coherence",
            "roles": ["data", "coherence"],
            "raster:bands": [
                {
                    "nodata": 0,
                    "data_type": "uint8",
                    "scale": COHERENCE_SCALE,
                    "offset": 0.0,
                    "spatial_resolution": 10,
                }
            ],
        }
    }
    return sentinel1_item(item_id, COHERENCE_COLLECTION, grid, properties, assets)


def write_coherence_pair(
    out_dir: Path, ls: Landscape, pair: CoherencePair, index: int, seed: int
) -> dict[str, Any]:
    """Render one pair, write ``cogs/<item id>/coherence.tif`` (uint8 DN); return its item."""
    item_id = coherence_item_id(pair)
    coherence = render_coherence(ls, pair, index, seed)
    dn = np.clip(np.rint(coherence / COHERENCE_SCALE), 1, 100).astype(np.uint8)  # 0: nodata
    write_cog(out_dir / "cogs" / item_id / "coherence.tif", dn, ls.grid, 10, "average")
    return coherence_stac_item(item_id, pair, ls.grid)
