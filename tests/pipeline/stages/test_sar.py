from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.control import GroundControlPoint

from pipeline.core.errors import AssetError
from pipeline.geo.grid import ChipGrid, chip_grid, transformer
from pipeline.stages.sar import (
    SarAcquisition,
    SarChip,
    SarMissing,
    SarRequest,
    choose_acquisition,
    polarisation_assets,
    read_sar_chips,
    resolve_acquisition,
)

COG = "image/tiff; application=geotiff; profile=cloud-optimized"
T0 = dt.datetime(2024, 6, 10, 10, 30, tzinfo=dt.UTC)
# A chip in UTM 32N a few km west of the zone 33 boundary (12 E): Sentinel-1 items there may
# come in zone 33, so the reader must warp, not cut windows.
GRID = chip_grid(11.95, 47.6, "EPSG:32632", 64, 10.0)
NODATA = -32768.0


def centres_in(grid: ChipGrid, crs: str) -> tuple[np.ndarray, np.ndarray]:
    """The chip's pixel centres in ``crs``, as (rows, cols) arrays."""
    cols, rows = np.meshgrid(np.arange(grid.size) + 0.5, np.arange(grid.size) + 0.5)
    xs, ys = grid.transform * (cols, rows)
    return transformer(grid.crs, crs).transform(xs, ys)


def write_tif(path: Path, data: np.ndarray, crs: str, transform: Affine, **extra: Any) -> str:
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=data.shape[1],
        height=data.shape[0],
        count=1,
        dtype=data.dtype.name,
        crs=crs,
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        **extra,
    ) as dst:
        dst.write(data, 1)
    return str(path)


def source_grid_33(res: float, margin_m: float = 600.0) -> tuple[Affine, int, int]:
    """A zone 33 grid of ``res`` m pixels covering GRID with a margin, on a 5 m offset."""
    xs, ys = centres_in(GRID, "EPSG:32633")
    x0 = np.floor((xs.min() - margin_m) / res) * res + 5.0
    y1 = np.ceil((ys.max() + margin_m) / res) * res + 5.0
    width = int((xs.max() - xs.min() + 2 * margin_m) / res) + 1
    height = int((ys.max() - ys.min() + 2 * margin_m) / res) + 1
    return Affine(res, 0.0, x0, 0.0, -res, y1), width, height


def read_one(
    acq: SarAcquisition,
    grid: ChipGrid,
    *,
    polarisations: tuple[str, ...],
    optical_time: dt.datetime,
    kind: str = "power",
) -> SarChip | SarMissing:
    """One sample's chip through the shard reader."""
    request = SarRequest("sample", grid, optical_time)
    return read_sar_chips([(request, acq)], polarisations=polarisations, kind=kind)["sample"]  # type: ignore[arg-type]


def acquisition(hrefs: dict[str, str], nodata: float | None = NODATA) -> SarAcquisition:
    return SarAcquisition(
        item_id="S1A_test",
        collection="sentinel-1-rtc",
        datetime=T0 + dt.timedelta(days=2),
        platform="SENTINEL-1A",
        orbit_state="ascending",
        relative_orbit=117,
        footprint=GRID.footprint_lonlat().buffer(0.1),
        hrefs=hrefs,  # type: ignore[arg-type]
        nodata=dict.fromkeys(hrefs, nodata),  # type: ignore[arg-type]
    )


def test_a_linear_plane_in_another_zone_and_resolution_lands_exactly_on_the_chip(tmp_path):
    # Bilinear interpolation reproduces a plane exactly, so every chip pixel must hold the
    # plane's value at that pixel's centre carried into zone 33: a shifted, flipped or
    # mis-zoned read fails by far more than the tolerance.
    transform, width, height = source_grid_33(20.0)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    sx, sy = transform * (cols, rows)

    def plane(x: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.02 + 2e-5 * (x - transform.c) + 4e-5 * (transform.f - y)

    href = write_tif(tmp_path / "vv.tif", plane(sx, sy).astype(np.float32), "EPSG:32633", transform)
    chip = read_one(acquisition({"VV": href}), GRID, polarisations=("VV",), optical_time=T0)
    assert isinstance(chip, SarChip)
    assert chip.db.shape == (1, 64, 64) and chip.db.dtype == np.float32
    cx, cy = centres_in(GRID, "EPSG:32633")
    np.testing.assert_allclose(chip.db[0], 10 * np.log10(plane(cx, cy)), atol=0.01)
    assert chip.time_offset_s == 2 * 86400


def test_samples_sharing_an_item_read_from_one_open_cog_and_fail_alone(tmp_path):
    transform, width, height = source_grid_33(20.0)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    sx, _ = transform * (cols, rows)
    power = (0.01 + 1e-5 * (sx - transform.c)).astype(np.float32)
    good = acquisition({"VV": write_tif(tmp_path / "vv.tif", power, "EPSG:32633", transform)})
    broken = acquisition({"VV": str(tmp_path / "missing.tif")})
    east = ChipGrid(GRID.crs, GRID.transform * Affine.translation(20, 0), GRID.size)
    found = read_sar_chips(
        [
            (SarRequest("a", GRID, T0), good),
            (SarRequest("b", east, T0), good),
            (SarRequest("c", GRID, T0), broken),
        ],
        polarisations=("VV",),
    )
    a, b, c = found["a"], found["b"], found["c"]
    assert isinstance(a, SarChip) and isinstance(b, SarChip)
    # The grid 20 pixels east sees the same ground 20 columns earlier.
    np.testing.assert_allclose(b.db[0][:, :-20], a.db[0][:, 20:], atol=1e-3)
    assert isinstance(c, SarMissing) and c.state == "read_error"


def test_water_dark_built_up_bright_and_nodata_stays_out_of_the_interpolation(tmp_path):
    # Zone 33 at 10 m on a 5 m offset: west of a north-south line water (0.001 = -30 dB), east
    # built-up (0.5 = -3.01 dB), and a nodata square in the built-up part.
    transform, width, height = source_grid_33(10.0)
    cols, rows = np.meshgrid(np.arange(width) + 0.5, np.arange(height) + 0.5)
    sx, sy = transform * (cols, rows)
    cx, cy = centres_in(GRID, "EPSG:32633")
    split = float(np.median(cx))
    power = np.where(sx < split, 0.001, 0.5).astype(np.float32)
    hole = (sx > split + 100) & (sx < split + 200) & (sy > cy.mean() - 50) & (sy < cy.mean() + 50)
    power[hole] = NODATA
    vv = write_tif(tmp_path / "vv.tif", power, "EPSG:32633", transform)
    vh = write_tif(tmp_path / "vh.tif", power / 10, "EPSG:32633", transform)
    chip = read_one(
        acquisition({"VV": vv, "VH": vh}), GRID, polarisations=("VV", "VH"), optical_time=T0
    )
    assert isinstance(chip, SarChip)
    west, east = cx < split - 20, cx > split + 20
    dy = np.abs(cy - cy.mean())
    in_hole = (cx > split + 105) & (cx < split + 195) & (dy < 45)
    near_hole = (cx > split + 95) & (cx < split + 205) & (dy < 55)
    assert west.sum() > 500 and (east & ~near_hole).sum() > 500 and in_hole.sum() > 20
    np.testing.assert_allclose(chip.db[0][west], -30.0, atol=1e-3)
    np.testing.assert_allclose(chip.db[0][east & ~near_hole], -3.0103, atol=1e-3)
    # Nodata is left out of the interpolation, not mixed into it: no pixel more than 5 m
    # outside the square is lost, and none inside it takes a value.
    assert np.isnan(chip.db[0][in_hole]).all()
    assert not np.isnan(chip.db[0][~near_hole]).any()
    np.testing.assert_allclose(chip.db[1][west], -40.0, atol=1e-3)


def test_the_part_of_a_chip_outside_the_item_is_nan(tmp_path):
    transform, _, height = source_grid_33(10.0)
    cx, _ = centres_in(GRID, "EPSG:32633")
    # The raster stops at the chip's middle column (in zone 33).
    cut = int((float(np.median(cx)) - transform.c) / 10.0)
    power = np.full((height, cut), 0.1, dtype=np.float32)
    href = write_tif(tmp_path / "vv.tif", power, "EPSG:32633", transform)
    chip = read_one(acquisition({"VV": href}), GRID, polarisations=("VV",), optical_time=T0)
    assert isinstance(chip, SarChip)
    edge = transform.c + cut * 10.0
    np.testing.assert_allclose(chip.db[0][cx < edge - 20], -10.0, atol=1e-4)
    assert np.isnan(chip.db[0][cx > edge + 20]).all()


def test_grd_amplitude_georeferenced_by_gcps_is_squared_and_warped(tmp_path):
    # GRD measurement TIFFs have no geotransform, only ground control points in lon/lat.
    lon0, lat0, lon1, lat1 = GRID.footprint_lonlat().buffer(0.01).bounds
    size = 200
    gcps = [
        GroundControlPoint(
            row=r, col=c, x=lon0 + (lon1 - lon0) * c / size, y=lat1 - (lat1 - lat0) * r / size
        )
        for r in (0, size)
        for c in (0, size)
    ]
    amplitude = np.full((size, size), 100, dtype=np.uint16)
    with rasterio.open(
        tmp_path / "iw-vv.tiff",
        "w",
        driver="GTiff",
        width=size,
        height=size,
        count=1,
        dtype="uint16",
        gcps=gcps,
        crs="EPSG:4326",
    ) as dst:
        dst.write(amplitude, 1)
    acq = acquisition({"VV": str(tmp_path / "iw-vv.tiff")}, nodata=0.0)
    chip = read_one(acq, GRID, polarisations=("VV",), optical_time=T0, kind="amplitude")
    assert isinstance(chip, SarChip)
    np.testing.assert_allclose(chip.db[0], 40.0, atol=1e-3)  # 10 log10(100^2)


def test_an_unreadable_cog_is_a_missing_state_not_an_exception(tmp_path):
    missing = read_one(
        acquisition({"VV": str(tmp_path / "absent.tif")}),
        GRID,
        polarisations=("VV",),
        optical_time=T0,
    )
    assert isinstance(missing, SarMissing) and missing.state == "read_error"
    assert "absent.tif" in missing.message


# --- asset lookup by polarisation ---


def item(
    assets: dict[str, dict[str, Any]],
    *,
    pols: list[str] | None = None,
    when: dt.datetime = T0,
    item_id: str = "S1A_item",
    geometry: Any = None,
) -> dict[str, Any]:
    props: dict[str, Any] = {
        "datetime": when.isoformat().replace("+00:00", "Z"),
        "platform": "SENTINEL-1A",
        "sat:orbit_state": "descending",
        "sat:relative_orbit": 22,
    }
    if pols is not None:
        props["sar:polarizations"] = pols
    footprint = geometry or GRID.footprint_lonlat().buffer(0.05).__geo_interface__
    return {
        "id": item_id,
        "collection": "sentinel-1-rtc",
        "geometry": footprint,
        "properties": props,
        "assets": assets,
    }


RECEIVE = {"VV": "vertical", "VH": "horizontal"}


def pc_rtc_assets() -> dict[str, dict[str, Any]]:
    """Planetary Computer sentinel-1-rtc's data assets (keys, titles, roles, raster:bands)."""
    return {
        pol.lower(): {
            "href": f"https://example.blob.core.windows.net/rtc/{pol.lower()}.tif",
            "type": COG,
            "roles": ["data"],
            "title": f"{pol}: vertical transmit, {RECEIVE[pol]} receive",
            "raster:bands": [{"nodata": -32768, "data_type": "float32"}],
        }
        for pol in ("VV", "VH")
    } | {
        "thumbnail": {"href": "https://x/t.png", "type": "image/png", "roles": ["thumbnail"]},
        "rendered_preview": {"href": "https://x/p.png", "type": "image/png", "title": "VV preview"},
    }


def test_planetary_computer_rtc_assets_are_found_with_their_nodata():
    acq = resolve_acquisition(item(pc_rtc_assets(), pols=["VV", "VH"]), ("VV", "VH"))
    assert acq.hrefs == {
        "VV": "https://example.blob.core.windows.net/rtc/vv.tif",
        "VH": "https://example.blob.core.windows.net/rtc/vh.tif",
    }
    assert acq.nodata == {"VV": -32768.0, "VH": -32768.0}
    assert (acq.orbit_state, acq.relative_orbit, acq.platform) == ("descending", 22, "SENTINEL-1A")
    assert acq.datetime == T0


def test_assets_with_unusual_keys_are_found_by_their_own_polarisation_metadata():
    assets = {
        "measurement_1": {"href": "b1.tif", "type": COG, "sar:polarizations": ["VH"]},
        "measurement_2": {"href": "b2.tif", "type": COG, "sar:polarizations": ["VV"]},
        "both": {"href": "both.tif", "type": COG, "sar:polarizations": ["VV", "VH"]},
        # A title naming VV loses to an asset whose own metadata says VV.
        "quicklook": {"href": "q.tif", "type": COG, "title": "VV quicklook"},
    }
    found = polarisation_assets(item(assets, pols=["VV", "VH"]), ("VV", "VH"))
    assert found["VV"]["href"] == "b2.tif" and found["VH"]["href"] == "b1.tif"


def test_grd_style_keys_match_by_suffix_and_metadata_assets_are_skipped():
    assets = {
        "schema-product-vv": {"href": "p.xml", "type": "application/xml", "roles": ["metadata"]},
        "iw-vv": {"href": "iw-vv.tiff", "type": COG, "roles": ["data"]},
        "IW_VH": {"href": "iw-vh.tiff"},  # no media type: the .tiff extension says GeoTIFF
    }
    found = polarisation_assets(item(assets), ("VV", "VH"))
    assert found["VV"]["href"] == "iw-vv.tiff" and found["VH"]["href"] == "iw-vh.tiff"


def test_a_polarisation_the_item_does_not_declare_is_absent():
    assets = pc_rtc_assets()
    with pytest.raises(AssetError, match="lacks VH"):
        polarisation_assets(item(assets, pols=["VV"]), ("VV", "VH"))
    with pytest.raises(AssetError, match="no COG asset for polarisation HH"):
        polarisation_assets(item(assets), ("HH",))


# --- choosing the acquisition ---


def test_the_closest_covering_acquisition_in_the_window_is_chosen():
    far_away = {"type": "Polygon", "coordinates": [[[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]]}
    items = [
        item(pc_rtc_assets(), when=T0 + dt.timedelta(days=5), item_id="five_days"),
        item(pc_rtc_assets(), when=T0 - dt.timedelta(days=3), item_id="three_days_before"),
        item(pc_rtc_assets(), when=T0, item_id="same_time_elsewhere", geometry=far_away),
        item(pc_rtc_assets(), when=T0 + dt.timedelta(hours=1), item_id="no_vh", pols=["VV"]),
        item(pc_rtc_assets(), when=T0 + dt.timedelta(days=20), item_id="outside_window"),
    ]
    chosen = choose_acquisition(
        items, grid=GRID, optical_time=T0, window=dt.timedelta(days=12), polarisations=("VV", "VH")
    )
    assert isinstance(chosen, SarAcquisition) and chosen.item_id == "three_days_before"


def test_equal_offsets_go_to_the_earlier_acquisition_whatever_the_order():
    before = item(pc_rtc_assets(), when=T0 - dt.timedelta(days=2), item_id="b")
    after = item(pc_rtc_assets(), when=T0 + dt.timedelta(days=2), item_id="a")
    for order in ([before, after], [after, before]):
        chosen = choose_acquisition(
            order, grid=GRID, optical_time=T0, window=dt.timedelta(days=6), polarisations=("VV",)
        )
        assert isinstance(chosen, SarAcquisition) and chosen.item_id == "b"


def test_no_acquisition_and_missing_polarisation_are_told_apart():
    late = [item(pc_rtc_assets(), when=T0 + dt.timedelta(days=30))]
    none = choose_acquisition(
        late, grid=GRID, optical_time=T0, window=dt.timedelta(days=6), polarisations=("VV",)
    )
    assert isinstance(none, SarMissing) and none.state == "no_acquisition"
    hh_only = [item({"hh": {"href": "hh.tif", "type": COG}}, pols=["HH"])]
    lacking = choose_acquisition(
        hh_only, grid=GRID, optical_time=T0, window=dt.timedelta(days=6), polarisations=("VV",)
    )
    assert isinstance(lacking, SarMissing) and lacking.state == "missing_polarisation"
