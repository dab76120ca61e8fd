"""Sentinel-2 L2A band definitions and how to find them in any STAC catalog.

Catalogs name the same band differently: Earth Search v1 uses common-name asset keys (``red``,
``nir08``, ``scl``), Planetary Computer uses ESA names (``B04``, ``B8A``, ``SCL``). Bands are
therefore identified by their ESA name, with the asset keys of known catalogs, the STAC
common name and the centre wavelength as evidence (see :mod:`pipeline.stages.scenes`).
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "BAND_PRESETS",
    "L2A_BANDS",
    "SCL",
    "SCL_CLASSES",
    "Band",
    "band_by_name",
    "resolve_band_names",
]


@dataclass(frozen=True)
class Band:
    """One Sentinel-2 spectral band.

    Attributes:
        name: ESA band name, e.g. ``B8A``; the canonical id used in configs and shards.
        common_name: STAC ``eo`` common name (not unique: B05-B07 are all ``rededge``).
        center_wavelength: Centre wavelength in micrometres (Sentinel-2A).
        resolution_m: Native ground sampling distance in metres.
        asset_keys: Asset keys this band has in known catalogs, most specific first.
    """

    name: str
    common_name: str
    center_wavelength: float
    resolution_m: int
    asset_keys: tuple[str, ...]


L2A_BANDS: tuple[Band, ...] = (
    Band("B01", "coastal", 0.443, 60, ("coastal", "B01")),
    Band("B02", "blue", 0.490, 10, ("blue", "B02")),
    Band("B03", "green", 0.560, 10, ("green", "B03")),
    Band("B04", "red", 0.665, 10, ("red", "B04")),
    Band("B05", "rededge", 0.705, 20, ("rededge1", "B05")),
    Band("B06", "rededge", 0.740, 20, ("rededge2", "B06")),
    Band("B07", "rededge", 0.783, 20, ("rededge3", "B07")),
    Band("B08", "nir", 0.842, 10, ("nir", "B08")),
    Band("B8A", "nir08", 0.865, 20, ("nir08", "B8A")),
    Band("B09", "nir09", 0.945, 60, ("nir09", "B09")),
    Band("B11", "swir16", 1.610, 20, ("swir16", "B11")),
    Band("B12", "swir22", 2.190, 20, ("swir22", "B12")),
)
"""The 12 bands of Sentinel-2 Level-2A (B10, cirrus, is dropped by L2A processing)."""

SCL = Band("SCL", "scl", 0.0, 20, ("scl", "SCL"))
"""The L2A scene classification layer, read beside the spectral bands for cloud masks."""

SCL_CLASSES: dict[int, str] = {
    0: "no_data",
    1: "saturated_or_defective",
    2: "dark_area_pixels",
    3: "cloud_shadows",
    4: "vegetation",
    5: "not_vegetated",
    6: "water",
    7: "unclassified",
    8: "cloud_medium_probability",
    9: "cloud_high_probability",
    10: "thin_cirrus",
    11: "snow",
}
"""SCL codes as defined by ESA's L2A product specification."""

BAND_PRESETS: dict[str, tuple[str, ...]] = {
    "l2a-12": tuple(b.name for b in L2A_BANDS),
    # Llama3-MS-CLIP drops the two 60 m atmospheric bands (B01, B09).
    "llama3-ms-clip-10": ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12"),
    "rgb": ("B04", "B03", "B02"),
}
"""Named band sets accepted by ``chips.bands`` in the run config."""

_BY_NAME = {b.name: b for b in L2A_BANDS}


def band_by_name(name: str) -> Band:
    """Return the band with ESA name ``name`` (case-insensitive).

    Raises:
        KeyError: if ``name`` is not an L2A band.
    """
    band = _BY_NAME.get(name.upper())
    if band is None:
        raise KeyError(f"unknown band {name!r}; L2A bands are {', '.join(_BY_NAME)}")
    return band


def resolve_band_names(spec: str | list[str] | tuple[str, ...]) -> tuple[Band, ...]:
    """Turn a preset name or a list of band names into bands, in spectral order as given.

    Raises:
        KeyError: for an unknown preset or band.
    """
    if isinstance(spec, str):
        if spec not in BAND_PRESETS:
            raise KeyError(f"unknown band preset {spec!r}; presets are {', '.join(BAND_PRESETS)}")
        spec = BAND_PRESETS[spec]
    bands = tuple(band_by_name(n) for n in spec)
    if len({b.name for b in bands}) != len(bands):
        raise KeyError(f"band list {list(spec)} names a band twice")
    return bands
