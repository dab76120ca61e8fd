"""Coherence per sample: asset lookup, interval items, scaled values warped onto the chip."""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pytest

from pipeline.core.config import CoherenceConfig
from pipeline.core.errors import AssetError
from pipeline.geo.sar import (
    COHERENCE_NODATA,
    centi_coherence,
    coherence_from_centi,
)
from pipeline.stages.coherence import (
    CoherenceChip,
    choose_coherence,
    coherence_asset,
    read_coherence_chips,
    resolve_coherence,
)
from pipeline.stages.sar import SarMissing, SarRequest
from tests.pipeline.stages.test_sar import COG, GRID, centres_in, source_grid_33, write_tif

T0 = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
CONFIG = CoherenceConfig(collection="coherence")


def iso(when: dt.datetime) -> str:
    return when.isoformat().replace("+00:00", "Z")


def coh_item(
    assets: dict[str, dict[str, Any]],
    *,
    when: dt.datetime | None = None,
    interval: tuple[dt.datetime, dt.datetime] | None = None,
    item_id: str = "coh_item",
    pols: list[str] | None = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {"datetime": None if when is None else iso(when)}
    if interval is not None:
        props |= {"start_datetime": iso(interval[0]), "end_datetime": iso(interval[1])}
    if pols is not None:
        props["sar:polarizations"] = pols
    return {
        "id": item_id,
        "collection": "coherence",
        "geometry": GRID.footprint_lonlat().buffer(0.05).__geo_interface__,
        "properties": props,
        "assets": assets,
    }


def cog(href: str = "coh.tif", **extra: Any) -> dict[str, Any]:
    return {"href": href, "type": COG, **extra}


def pair(start: dt.datetime, item_id: str, days: int = 12) -> dict[str, Any]:
    """A 12-day pair item (HyP3-like): an interval, no datetime, a coherence-role asset."""
    return coh_item(
        {"coh": cog(roles=["coherence"])},
        interval=(start, start + dt.timedelta(days=days)),
        item_id=item_id,
    )


def test_scaled_percent_in_another_zone_lands_on_the_chip_as_a_fraction(tmp_path):
    # DN in percent (raster:bands scale 0.01): a plane in DN, bilinear-interpolated, is the
    # plane at every chip pixel's centre carried into zone 33, divided by 100. The source's
    # nodata (0) stays out of the interpolation: a pixel beside it is not pulled towards 0.
    transform, width, height = source_grid_33(20.0)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    sx, sy = transform * (cols, rows)

    def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 20.0 + 0.02 * (x - transform.c) + 0.01 * (transform.f - y)

    dn = plane(sx, sy).astype(np.float32)
    dn[:, : width // 8] = 0.0  # a nodata strip west of the chip
    href = write_tif(tmp_path / "coh.tif", dn, "EPSG:32633", transform, nodata=0.0)
    band = {"nodata": 0, "scale": 0.01, "offset": 0.0, "data_type": "float32"}
    found = resolve_coherence(
        coh_item({"coherence": cog(href, **{"raster:bands": [band]})}, when=T0), CONFIG
    )
    assert (found.scale, found.nodata) == (0.01, 0.0)
    request = SarRequest("s", GRID, T0 - dt.timedelta(days=1))
    chip = read_coherence_chips([(request, found)])["s"]
    assert isinstance(chip, CoherenceChip)
    assert chip.coherence.shape == (64, 64) and chip.coherence.dtype == np.float32
    cx, cy = centres_in(GRID, "EPSG:32633")
    np.testing.assert_allclose(chip.coherence, np.clip(plane(cx, cy) / 100, 0, 1), atol=1e-4)
    assert chip.time_offset_s == 86400


def test_a_configured_scale_replaces_the_metadata_and_values_are_clipped(tmp_path):
    transform, width, height = source_grid_33(20.0)
    dn = np.full((height, width), 250, np.uint8)  # 250 * 0.005 = 1.25: clipped to 1
    dn[: height // 2] = 120  # 0.6
    href = write_tif(tmp_path / "coh.tif", dn, "EPSG:32633", transform)
    config = CoherenceConfig(collection="coherence", scale=0.005)
    item = coh_item({"coh_vv": cog(href, **{"raster:bands": [{"scale": 0.01}]})}, when=T0)
    found = resolve_coherence(item, config)
    chip = read_coherence_chips([(SarRequest("s", GRID, T0), found)])["s"]
    assert isinstance(chip, CoherenceChip)
    assert np.nanmax(chip.coherence) == 1.0 and np.nanmin(chip.coherence) == pytest.approx(0.6)


def test_an_unreadable_cog_is_a_read_error(tmp_path):
    found = resolve_coherence(coh_item({"coh": cog(str(tmp_path / "absent.tif"))}, when=T0), CONFIG)
    missing = read_coherence_chips([(SarRequest("s", GRID, T0), found)])["s"]
    assert isinstance(missing, SarMissing) and missing.state == "read_error"
    assert "absent.tif" in missing.message


def test_the_asset_is_found_by_role_then_title_then_key_and_polarisation():
    role = cog("role.tif", roles=["coherence"])
    title = cog("title.tif", title="Coherence VV", roles=["data"])
    key = cog("key.tif")
    assert coherence_asset(coh_item({"a": key, "b": title, "c": role}), CONFIG) is role
    assert coherence_asset(coh_item({"coh": key, "b": title}), CONFIG) is title
    assert coherence_asset(coh_item({"COH12_VV": key, "amp": cog("amp.tif")}), CONFIG) is key
    # Kellndorfer et al.'s tiles name the polarisation: an HH coherence is not VV's.
    hh, vv = cog("hh.tif"), cog("vv.tif")
    assert coherence_asset(coh_item({"COH12_HH": hh, "COH12_VV": vv}), CONFIG) is vv
    declared = cog("d.tif", roles=["coherence"], **{"sar:polarizations": ["HH"]})
    with pytest.raises(AssetError, match="no VV coherence"):
        coherence_asset(coh_item({"coh": declared}), CONFIG)
    with pytest.raises(AssetError, match="lacks VV"):
        coherence_asset(coh_item({"coh": key}, pols=["HH"]), CONFIG)
    # Thumbnails are never data; a configured key wins over every rule.
    thumb = cog("t.tif", roles=["thumbnail", "coherence"])
    with pytest.raises(AssetError, match="no VV coherence"):
        coherence_asset(coh_item({"coh": thumb}), CONFIG)
    named = CoherenceConfig(collection="coherence", asset="amp")
    assert coherence_asset(coh_item({"amp": key, "coh": role}), named) is key


def test_an_interval_containing_the_scene_wins_over_a_closer_midpoint():
    containing = pair(T0 - dt.timedelta(days=11), "pair_containing")  # midpoint 5 days before
    closer = coh_item({"coh": cog()}, when=T0 + dt.timedelta(days=2), item_id="instant_closer")
    found = choose_coherence([closer, containing], grid=GRID, optical_time=T0, config=CONFIG)
    assert not isinstance(found, SarMissing) and found.item_id == "pair_containing"
    assert found.midpoint == T0 - dt.timedelta(days=5)
    # Without a containing interval the nearest midpoint within the window wins.
    later = pair(T0 + dt.timedelta(days=1), "pair_later")  # midpoint 7 days after
    found = choose_coherence([later, closer], grid=GRID, optical_time=T0, config=CONFIG)
    assert not isinstance(found, SarMissing) and found.item_id == "instant_closer"


def test_a_season_containing_the_scene_is_eligible_beyond_the_window():
    season = coh_item(
        {"COH12": cog()},
        interval=(dt.datetime(2024, 6, 1, tzinfo=dt.UTC), dt.datetime(2024, 8, 31, tzinfo=dt.UTC)),
        item_id="N48E011_summer",
    )
    found = choose_coherence([season], grid=GRID, optical_time=T0, config=CONFIG)
    assert not isinstance(found, SarMissing) and found.item_id == "N48E011_summer"


def test_nothing_in_the_window_and_a_missing_asset_are_told_apart():
    far = pair(T0 + dt.timedelta(days=20), "far")  # midpoint 26 days after
    missing = choose_coherence([far], grid=GRID, optical_time=T0, config=CONFIG)
    assert isinstance(missing, SarMissing) and missing.state == "no_acquisition"
    assert "within 12 days" in missing.message
    no_asset = coh_item({"amplitude": cog()}, interval=(T0, T0 + dt.timedelta(days=12)))
    missing = choose_coherence([no_asset, far], grid=GRID, optical_time=T0, config=CONFIG)
    assert isinstance(missing, SarMissing) and missing.state == "missing_polarisation"


def test_stored_coherence_is_hundredths_with_255_for_nodata():
    values = np.array([0.0, 0.004, 0.456, 1.0, 1.2, np.nan], np.float32)
    stored = centi_coherence(values)
    assert stored.dtype == np.uint8
    assert stored.tolist() == [0, 0, 46, 100, 100, COHERENCE_NODATA]
    back = coherence_from_centi(stored)
    assert back[:5].tolist() == pytest.approx([0.0, 0.0, 0.46, 1.0, 1.0]) and np.isnan(back[5])
