"""Radiometry: how many DN to take off each band of a Sentinel-2 L2A item, decided once.

eocap's pixels follow one convention whatever the catalog: reflectance = DN / 10000, no offset
(the pre-04.00 convention, also called "harmonised"), 0 = nodata. From processing baseline 04.00
(25 January 2022) ESA adds ``BOA_ADD_OFFSET = -1000``, so reflectance = (DN - 1000) / 10000, and
catalogs describe that offset differently, sometimes wrongly:

==============================  ===============================  ===========================
catalog, collection             pixels                           metadata
==============================  ===============================  ===========================
Earth Search                    offset already removed by        ``earthsearch:boa_offset_
``sentinel-2-l2a``              Element 84 (``earthsearch:       applied``; ``raster:bands``
                                boa_offset_applied: true``)      offset -0.1 on every item,
                                                                 stale where the flag is true
Earth Search                    offset in (all Collection-1      ``raster:bands`` offset -0.1,
``sentinel-2-c1-l2a``           products are baseline >= 05.00)  correct; no flag
Planetary Computer              offset in from baseline 04.00    ``s2:processing_baseline``
``sentinel-2-l2a``                                               only
==============================  ===============================  ===========================

:func:`decide_offset` reads an item's evidence in a fixed order, first match wins (the
``rule`` recorded on every sample):

1. ``earthsearch-flag``: the item has ``earthsearch:boa_offset_applied``. ``true``: the COGs
   were harmonised, nothing is taken off and ``raster:bands`` is ignored (it is stale).
   ``false``: the offset of the processing baseline is in the pixels.
2. ``raster-bands``: the band asset declares ``raster:bands`` ``offset``/``scale``: take off
   ``-offset / scale`` DN.
3. ``processing-baseline``: ``s2:processing_baseline`` >= 04.00 means 1000 DN.
4. ``collection``: a Collection-1 collection id (``...-c1-...``): 1000 DN.
5. ``none``: no evidence; nothing is taken off.

Users of Earth Search ``sentinel-2-l2a`` report items tagged wrongly in both directions
(Element84/earth-search issues 9, 66, 71; cirrus-earth-search 33), so the pixels are checked
too (:func:`check_pixels`). Vegetation and water (SCL 4 and 6) are dark in the visible bands
(reflectance well under 0.1), so with the offset removed most such pixels have a darkest
visible DN under 1000; with the offset still in, almost none do (that would be a negative
reflectance). When the pixels clearly say the opposite of the metadata, **the pixels win**:
the offset they imply is the one removed, and the sample records ``radiometry_check`` as
``offset_absent_in_pixels`` or ``offset_present_in_pixels``. Too few clear vegetation or
water pixels (cloud, snow, desert, nodata) or a share in between leaves the metadata's
decision in place as ``inconclusive``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "BASELINE_OFFSET_DN",
    "DARK_DN",
    "RADIOMETRY_CHECKS",
    "RADIOMETRY_RULES",
    "OffsetDecision",
    "PixelCheck",
    "baseline_offset",
    "check_pixels",
    "decide_offset",
    "harmonise",
]

BASELINE_OFFSET_DN = 1000
"""``-BOA_ADD_OFFSET`` of processing baselines 04.00 and later, in DN."""

DARK_DN = 1000
"""Raw DN under which a vegetation/water pixel's darkest visible band counts as dark."""

CHECK_SCL = (4, 6)
"""SCL classes whose visible reflectance is reliably dark: vegetation, water."""

CHECK_BANDS = ("B02", "B03", "B04")
"""The visible bands the pixel check reads (every band set has them: the RGB composite)."""

MIN_CHECK_PIXELS = 500
"""Fewer clear vegetation/water pixels than this make the pixel check inconclusive."""

HARMONISED_DARK_SHARE = 0.5
"""At or above this dark share the pixels have no offset in them."""

OFFSET_DARK_SHARE = 0.02
"""At or below this dark share the pixels still carry the offset."""

RadiometryRule = Literal[
    "earthsearch-flag", "raster-bands", "processing-baseline", "collection", "none"
]
RADIOMETRY_RULES: tuple[RadiometryRule, ...] = (
    "earthsearch-flag",
    "raster-bands",
    "processing-baseline",
    "collection",
    "none",
)
"""Every value of the ``radiometry_rule`` column, in the order the rules are tried."""

RadiometryCheck = Literal[
    "consistent", "inconclusive", "offset_absent_in_pixels", "offset_present_in_pixels"
]
RADIOMETRY_CHECKS: tuple[RadiometryCheck, ...] = (
    "consistent",
    "inconclusive",
    "offset_absent_in_pixels",
    "offset_present_in_pixels",
)
"""Every value of the ``radiometry_check`` column; the last two mean the pixels overruled
the metadata."""

EARTHSEARCH_FLAG = "earthsearch:boa_offset_applied"


@dataclass(frozen=True)
class OffsetDecision:
    """What the metadata of one item says is in its pixels.

    Attributes:
        offset_dn: DN to take off each band, by ESA band name.
        rule: Which rule decided (see the module docstring).
    """

    offset_dn: dict[str, int]
    rule: RadiometryRule


@dataclass(frozen=True)
class PixelCheck:
    """The pixels' verdict on one chip, and the offset finally removed.

    Attributes:
        offset_dn: DN taken off each band (the metadata's unless the pixels overruled it).
        check: ``consistent``, ``inconclusive``, or which way the pixels contradicted.
        dark_share: Share of clear vegetation/water pixels whose darkest visible raw DN is
            under :data:`DARK_DN`; ``None`` when there were too few such pixels.
    """

    offset_dn: dict[str, int]
    check: RadiometryCheck
    dark_share: float | None


def baseline_offset(baseline: str | None) -> int | None:
    """The DN offset of a processing baseline such as ``"05.10"``: 1000 from 04.00 on.

    Returns:
        The offset, or ``None`` for a missing or malformed baseline.
    """
    if baseline is None:
        return None
    try:
        major, minor = (int(p) for p in str(baseline).split(".")[:2])
    except ValueError:
        return None
    return BASELINE_OFFSET_DN if (major, minor) >= (4, 0) else 0


def _raster_offset(asset: Mapping[str, Any]) -> int | None:
    raster = asset.get("raster:bands") or []
    if not raster or not isinstance(raster[0], Mapping) or "offset" not in raster[0]:
        return None
    scale = float(raster[0].get("scale", 1e-4)) or 1e-4
    return round(-float(raster[0]["offset"]) / scale)


def decide_offset(
    collection: str, properties: Mapping[str, Any], band_assets: Mapping[str, Mapping[str, Any]]
) -> OffsetDecision:
    """Decide from an item's metadata how many DN its pixels carry above the convention.

    Args:
        collection: The item's collection id.
        properties: The item's properties.
        band_assets: ESA band name -> the asset that holds it.

    Returns:
        The offset per band and the rule that decided it (first match, module docstring).
    """
    from_baseline = baseline_offset(properties.get("s2:processing_baseline"))
    flag = properties.get(EARTHSEARCH_FLAG)
    if isinstance(flag, bool):
        if flag:
            return OffsetDecision(dict.fromkeys(band_assets, 0), "earthsearch-flag")
        if from_baseline is not None:
            return OffsetDecision(dict.fromkeys(band_assets, from_baseline), "earthsearch-flag")
    declared = {name: _raster_offset(asset) for name, asset in band_assets.items()}
    if declared and all(v is not None for v in declared.values()):
        return OffsetDecision({k: int(v or 0) for k, v in declared.items()}, "raster-bands")
    if from_baseline is not None:
        return OffsetDecision(dict.fromkeys(band_assets, from_baseline), "processing-baseline")
    if "-c1-" in f"-{collection.lower()}-":
        return OffsetDecision(dict.fromkeys(band_assets, BASELINE_OFFSET_DN), "collection")
    return OffsetDecision(dict.fromkeys(band_assets, 0), "none")


def check_pixels(
    raw: npt.NDArray[np.uint16],
    scl: npt.NDArray[np.uint8],
    band_names: Sequence[str],
    decision: OffsetDecision,
) -> PixelCheck:
    """Check a chip's raw pixels against the metadata's decision; the pixels win a contradiction.

    Args:
        raw: (bands, size, size) DN as read from the COGs, before any offset is taken off.
        scl: (size, size) scene classification.
        band_names: Band order of ``raw``.
        decision: What the item's metadata says (:func:`decide_offset`).

    Returns:
        The offset to take off each band and the verdict.
    """
    index = {name: i for i, name in enumerate(band_names)}
    visible_bands = [index[b] for b in CHECK_BANDS if b in index]
    if not visible_bands:
        return PixelCheck(decision.offset_dn, "inconclusive", None)
    darkest = raw[visible_bands].min(axis=0)
    candidates = np.isin(scl, CHECK_SCL) & (darkest > 0)
    n = int(candidates.sum())
    if n < MIN_CHECK_PIXELS:
        return PixelCheck(decision.offset_dn, "inconclusive", None)
    share = float((darkest[candidates] < DARK_DN).sum()) / n
    says_offset = any(v > 0 for v in decision.offset_dn.values())
    if share >= HARMONISED_DARK_SHARE:
        if not says_offset:
            return PixelCheck(decision.offset_dn, "consistent", round(share, 4))
        offsets = dict.fromkeys(decision.offset_dn, 0)
        return PixelCheck(offsets, "offset_absent_in_pixels", round(share, 4))
    if share <= OFFSET_DARK_SHARE:
        if says_offset:
            return PixelCheck(decision.offset_dn, "consistent", round(share, 4))
        offsets = dict.fromkeys(decision.offset_dn, BASELINE_OFFSET_DN)
        return PixelCheck(offsets, "offset_present_in_pixels", round(share, 4))
    return PixelCheck(decision.offset_dn, "inconclusive", round(share, 4))


def harmonise(
    raw: npt.NDArray[np.uint16], band_names: Sequence[str], offset_dn: Mapping[str, int]
) -> npt.NDArray[np.uint16]:
    """Take each band's offset off in place; valid pixels stay >= 1 so that 0 stays nodata."""
    for i, name in enumerate(band_names):
        offset = offset_dn.get(name, 0)
        if offset == 0:
            continue
        band = raw[i]
        valid = band > 0
        band[valid] = np.clip(band[valid].astype(np.int32) - offset, 1, 65535).astype(np.uint16)
    return raw
