"""A run's Sentinel-1 sources, checked before any work (``eocap check``, ``eocap run``).

A wrong Sentinel-1 source never fails a sample: each one records ``no_acquisition``,
``missing_polarisation``, ``search_error`` or ``read_error`` and stays ok, so a misnamed
collection, a product of another kind, polarisations the region is not acquired in, a missing
account key or COGs out of reach would cost a whole run without stopping it. These checks read
a few items of each collection over the region in the first period (polarisations depend on
where: HH/HV over polar ice, VV/VH over most land), resolve them as the run will, and open one
COG of each. No items there and then passes: the samples will say ``no_acquisition``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from pipeline.core.config import Period, SarConfig, StacConfig
from pipeline.core.errors import AssetError, PreflightError
from pipeline.geo.sar import POLARISATIONS, Polarisation
from pipeline.io.cog_reads import check_cog_opens
from pipeline.io.stac import CollectionSample, check_catalog, first_resolved
from pipeline.stages.coherence import resolve_coherence
from pipeline.stages.sar import polarisation_assets, resolve_acquisition, sar_stac

__all__ = ["check_sar_sources"]

SEARCH_MARGIN_DEG = 0.1
"""Degrees added around the region for the sampled items: a point region is a zero-size box."""


def check_sar_sources(
    sar: SarConfig,
    stac: StacConfig,
    *,
    bounds: tuple[float, float, float, float],
    period: Period,
) -> None:
    """Fail fast if the Sentinel-1 sources cannot give this run what it asks for.

    Args:
        sar: The run's SAR settings.
        stac: The run's STAC settings (what ``sar`` does not set of its own).
        bounds: The region's lon/lat bounds.
        period: The run's first period.

    Raises:
        PreflightError: naming ``sar.collection``, ``sar.polarisations``,
            ``sar.coherence.collection`` / ``sar.coherence.asset``, the catalog's URL
            (``sar.api_url``, else ``stac.api_url``), its account key (``sar.signing_key_env``,
            unless only ``stac.signing_key_env`` names one) or its signing (``sar.signing``).
    """
    collections = {"sar.collection": sar.collection}
    window = sar.window
    if sar.coherence is not None:
        collections["sar.coherence.collection"] = sar.coherence.collection
        window = max(window, sar.coherence.window)
    start = dt.datetime.combine(period.start, dt.time(), dt.UTC) - window
    end = dt.datetime.combine(period.end, dt.time.max, dt.UTC) + window
    west, south, east, north = bounds
    m = SEARCH_MARGIN_DEG
    sampled = check_catalog(
        sar_stac(sar, stac),
        collections,
        url_field="sar.api_url" if sar.api_url is not None else "stac.api_url",
        # A key is Sentinel-1's to set unless the stac section's key is the one in use.
        key_field=(
            "stac.signing_key_env"
            if sar.signing_key_env is None and stac.signing_key_env is not None
            else "sar.signing_key_env"
        ),
        where={
            "bbox": [
                max(west - m, -180),
                max(south - m, -90),
                min(east + m, 180),
                min(north + m, 90),
            ],
            "datetime": f"{start.isoformat()}/{end.isoformat()}",
        },
    )
    # Sentinel-1 from a catalog of its own is signed by its own setting.
    own = sar.signing is not None or sar.api_url is not None
    signing_field = "sar.signing" if own else "stac.signing"
    for field, collection in collections.items():
        _check_time(field, collection, sampled[field], start, end)
    _check_backscatter(sampled["sar.collection"].items, sar, signing_field, period)
    if sar.coherence is not None:
        _check_coherence(sampled["sar.coherence.collection"].items, sar, signing_field)


def _check_time(
    field: str, collection: str, sample: CollectionSample, start: dt.datetime, end: dt.datetime
) -> None:
    """Refuse a period outside the collection's time span, when its items agree.

    Both must say so: no item over the region then, and a declared temporal extent that
    ends before (or starts after) the searched span. A catalog's extent alone can be stale;
    items alone can be missing for a place (the open ocean) that the run covers anyway.
    """
    if sample.items or sample.interval is None:
        return
    first, last = sample.interval
    if (last is None or last >= start) and (first is None or first <= end):
        return
    since = "…" if first is None else f"{first:%Y-%m-%d}"
    until = "…" if last is None else f"{last:%Y-%m-%d}"
    raise PreflightError(
        field,
        f"{collection} spans {since} to {until} and has no item over the region in "
        f"{start:%Y-%m-%d} to {end:%Y-%m-%d} (the first period and the window): choose "
        "periods inside its span, or another collection",
    )


def _polarisations(item: dict[str, Any]) -> list[Polarisation]:
    """The polarisations ``item`` has a COG of."""
    found = []
    for pol in POLARISATIONS:
        try:
            polarisation_assets(item, [pol])
        except AssetError:
            continue
        found.append(pol)
    return found


def _check_backscatter(
    items: Sequence[dict[str, Any]], sar: SarConfig, signing_field: str, period: Period
) -> None:
    if not items:
        return
    acquisition, refused = first_resolved(
        items, lambda item: resolve_acquisition(item, sar.polarisations)
    )
    if acquisition is not None:
        check_cog_opens(
            acquisition.hrefs[sar.polarisations[0]],
            field="sar.collection",
            signing_field=signing_field,
            what=f"a COG of {sar.collection}",
        )
        return
    errors = [str(exc) for _, exc in refused]
    held = sorted({pol for item in items for pol in _polarisations(item)})
    if held:
        raise PreflightError(
            "sar.polarisations",
            f"{sar.collection} items over the region in period {period.name!r} hold "
            f"{', '.join(held)}, not {', '.join(sar.polarisations)}: ask for what is acquired "
            "there (HH/HV over polar ice, VV/VH over most land)",
        )
    raise PreflightError(
        "sar.collection",
        f"{sar.collection} items hold no Sentinel-1 polarisation COG ({'; '.join(errors[:2])}): "
        "is it a Sentinel-1 backscatter collection?",
    )


def _check_coherence(items: Sequence[dict[str, Any]], sar: SarConfig, signing_field: str) -> None:
    config = sar.coherence
    if config is None or not items:
        return
    found, refused = first_resolved(items, lambda item: resolve_coherence(item, config))
    if found is not None:
        check_cog_opens(
            found.href,
            field="sar.coherence.collection",
            signing_field=signing_field,
            what=f"a COG of {config.collection}",
        )
        return
    errors = [str(exc) for _, exc in refused]
    raise PreflightError(
        "sar.coherence.asset" if config.asset is not None else "sar.coherence.collection",
        f"no {config.collection} item read has a {config.polarisation} coherence COG "
        f"({'; '.join(errors[:2])})",
    )
