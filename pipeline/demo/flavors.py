"""The catalogs the demo imitates (item flavors): collection ids, asset keys and radiometry."""

from __future__ import annotations

from typing import Literal

from pipeline.geo.bands import L2A_BANDS, SCL
from pipeline.geo.radiometry import BASELINE_OFFSET_DN, baseline_offset

__all__ = [
    "FLAVOR_COLLECTIONS",
    "ItemFlavor",
    "band_asset_files",
    "baseline_offset_dn",
    "declared_offset",
    "pixel_offset",
]

ItemFlavor = Literal["earth-search-c1", "earth-search", "planetary-computer"]

FLAVOR_COLLECTIONS: dict[str, str] = {
    "earth-search-c1": "sentinel-2-c1-l2a",
    "earth-search": "sentinel-2-l2a",
    "planetary-computer": "sentinel-2-l2a",
}
"""The STAC collection id of each item flavor, as its catalog names it.

Each flavor copies its catalog's radiometry (see :mod:`pipeline.geo.radiometry`):
``earth-search-c1`` (Earth Search ``sentinel-2-c1-l2a``): the baseline's offset is in the
pixels and ``raster:bands`` declares it; ``earth-search`` (Earth Search ``sentinel-2-l2a``):
Element 84 removed the offset from the COGs and says so with ``earthsearch:boa_offset_applied:
true``, while ``raster:bands`` still declares ``offset: -0.1`` on every item (stale);
``planetary-computer``: the offset is in the pixels, only ``s2:processing_baseline`` tells.
"""


def baseline_offset_dn(baseline: str) -> int:
    """DN offset of a processing baseline: +1000 (BOA_ADD_OFFSET) from 04.00 on."""
    offset = baseline_offset(baseline)
    if offset is None:
        raise ValueError(f"processing baseline {baseline!r} is not like '05.10'")
    return offset


def pixel_offset(flavor: ItemFlavor, baseline: str) -> int:
    """DN the flavor's COGs carry above reflectance x 10000: none where Element 84 removed it."""
    return 0 if flavor == "earth-search" else baseline_offset_dn(baseline)


def declared_offset(flavor: ItemFlavor, baseline: str) -> int:
    """DN offset the flavor's items declare in ``raster:bands``.

    Earth Search ``sentinel-2-l2a`` declares -0.1 on every item, also where its COGs no longer
    carry the offset; Collection 1 declares the offset its pixels carry.
    """
    return BASELINE_OFFSET_DN if flavor == "earth-search" else baseline_offset_dn(baseline)


def band_asset_files(flavor: ItemFlavor) -> dict[str, str]:
    """ESA band name (and ``SCL``) -> asset key of the flavor; the COG file is ``<key>.tif``."""
    i = 1 if flavor == "planetary-computer" else 0
    return {b.name: b.asset_keys[i] for b in (*L2A_BANDS, SCL)}
