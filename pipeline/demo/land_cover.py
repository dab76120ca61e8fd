"""The land-cover classes of the demo region: the codes of its truth raster.

The landscape paints one class per 10 m pixel (``truth/landcover.tif``); the spectra, the scene
classification and the Overture ``land_cover`` features all follow it.
"""

from __future__ import annotations

__all__ = [
    "BARE",
    "BUILT_UP",
    "CROPLAND",
    "FOREST",
    "GRASSLAND",
    "LAND_COVER_CLASSES",
    "SNOW",
    "WATER",
]

LAND_COVER_CLASSES: dict[int, str] = {
    1: "water",
    2: "forest",
    3: "cropland",
    4: "grassland",
    5: "built_up",
    6: "bare",
    7: "snow",
}
"""Codes of the land-cover truth raster (``truth/landcover.tif``); 0 is unused."""

WATER, FOREST, CROPLAND, GRASSLAND, BUILT_UP, BARE, SNOW = range(1, 8)
