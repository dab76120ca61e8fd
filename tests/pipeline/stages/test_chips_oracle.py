"""Oracle for the chip reader: every band of a chip against the source COG read directly.

The chips come from :func:`pipeline.stages.chips.read_chips` over HTTP (the build's reader); the
oracle opens the same COG files from disk with rasterio, cuts the chip's window by its bounds
and applies the dataset's pixel convention by hand: the region's Collection-1 items carry the
baseline-04.00 offset of 1000 DN in every band, and a source 0 (nodata) stays 0.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import shapely
from rasterio.enums import Resampling
from rasterio.windows import from_bounds

from pipeline.geo.bands import L2A_BANDS
from pipeline.geo.grid import ChipGrid, chip_grid
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.scenes import SceneAssets, SceneChoice
from tests.conftest import make_config, search_all

OFFSET_DN = 1000  # earth-search-c1 flavour, baseline >= 04.00: the offset is in the pixels
EAST_ONLY = "S2A_T32TPT_20240920T102000_L2A"  # the acquisition whose data covers only the east


def local_path(region_root: Path, href: str) -> Path:
    return region_root / href.split("/", 3)[3]


def source_window(path: Path, grid: ChipGrid, resampling: Resampling) -> np.ndarray:
    """The chip's window of a COG on disk, on the chip's 10 m grid (rasterio, not the reader)."""
    with rasterio.open(path) as src:
        window = from_bounds(*grid.bounds, src.transform)
        assert window.col_off >= 0 and window.row_off >= 0
        assert window.col_off + window.width <= src.width
        assert window.row_off + window.height <= src.height
        return src.read(
            1, window=window, out_shape=(grid.size, grid.size), resampling=resampling
        ).astype(np.int64)


def expected_pixels(raw: np.ndarray) -> np.ndarray:
    """The dataset convention by hand: offset off, valid pixels at least 1, nodata 0 kept."""
    return np.where(raw == 0, 0, np.clip(raw - OFFSET_DN, 1, None))


@pytest.fixture(scope="module")
def scenes_and_requests(region, servers, tmp_path_factory):
    config = make_config(region, servers, tmp_path_factory.mktemp("oracle-chips"))
    _, choices = search_all(config)
    requests: list[ChipRequest] = []
    scenes: dict[str, SceneAssets] = {}
    for sid, choice in choices.items():
        assert isinstance(choice, SceneChoice), choice
        requests.append(ChipRequest(sid, choice.scene, choice.grid))
        for scene, _ in ((choice.scene, choice.grid), *choice.fallbacks):
            scenes[scene.item_id] = scene
    return scenes, requests


def edge_request(scenes: dict[str, SceneAssets]) -> ChipRequest:
    """A chip centred on the western data edge of the east-only scene: partly nodata."""
    scene = scenes[EAST_ONLY]
    footprint = scene.footprint
    lat = footprint.centroid.y
    x0, _, x1, _ = footprint.bounds
    crossing = footprint.intersection(shapely.LineString([(x0 - 1, lat), (x1 + 1, lat)]))
    lon = crossing.bounds[0]  # where the data starts along that parallel
    return ChipRequest("edge", scene, chip_grid(lon, lat, scene.crs, 264, 10.0))


def check_chip_against_source(region, req: ChipRequest, chip: Chip) -> dict[str, np.ndarray]:
    assert chip.band_names == tuple(b.name for b in L2A_BANDS)
    assert chip.pixels.shape == (len(L2A_BANDS), req.grid.size, req.grid.size)
    raws = {}
    for i, band in enumerate(L2A_BANDS):
        path = local_path(region.root, req.scene.band_hrefs[band.name])
        resampling = Resampling.nearest if band.resolution_m == 10 else Resampling.bilinear
        raw = source_window(path, req.grid, resampling)
        raws[band.name] = raw
        got = chip.pixels[i].astype(np.int64)
        np.testing.assert_array_equal(
            got, expected_pixels(raw), err_msg=f"{req.sample_id} band {band.name}"
        )
        # Source nodata is nodata in the chip, and only there.
        np.testing.assert_array_equal(got == 0, raw == 0, err_msg=band.name)
    scl = source_window(local_path(region.root, req.scene.scl_href), req.grid, Resampling.nearest)
    np.testing.assert_array_equal(chip.scl.astype(np.int64), scl)
    return raws


def test_every_band_of_every_chip_matches_its_source_cog(region, scenes_and_requests):
    _, requests = scenes_and_requests
    assert len(requests) >= 4
    chips = read_chips(requests, L2A_BANDS, threads=4)
    for req in requests:
        chip = chips[req.sample_id]
        assert isinstance(chip, Chip), chip
        assert chip.radiometry.offset_dn == dict.fromkeys(chip.band_names, OFFSET_DN)
        raws = check_chip_against_source(region, req, chip)
        # The bands are told apart by their own data: no two bands of a chip are equal.
        names = list(raws)
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                assert not np.array_equal(raws[names[a]], raws[names[b]]), (names[a], names[b])


def test_a_partly_nodata_chip_keeps_its_nodata_zero(region, scenes_and_requests):
    scenes, _ = scenes_and_requests
    req = edge_request(scenes)
    chip = read_chips([req], L2A_BANDS, threads=4)["edge"]
    assert isinstance(chip, Chip), chip
    raws = check_chip_against_source(region, req, chip)
    red = raws["B04"]
    nodata_share = float((red == 0).mean())
    assert 0.2 < nodata_share < 0.8, nodata_share  # the chip really straddles the data edge
    for i, band in enumerate(L2A_BANDS):
        band_nodata = raws[band.name] == 0
        assert band_nodata.any() and (~band_nodata).any(), band.name
        assert (chip.pixels[i][band_nodata] == 0).all(), band.name
        assert (chip.pixels[i][~band_nodata] >= 1).all(), band.name
    # West of the edge is nodata, east of it is data.
    assert (chip.pixels[:, :, 0] == 0).all() and (chip.pixels[:, :, -1] > 0).all()
    assert chip.stats.nodata_fraction == pytest.approx(nodata_share, abs=0.02)
