from __future__ import annotations

from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import from_bounds

from pipeline.core.errors import SampleFailure
from pipeline.geo.bands import L2A_BANDS
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.scenes import SceneChoice
from tests.conftest import make_config, search_all


def requests_for(config) -> list[ChipRequest]:
    _, choices = search_all(config)
    out = []
    for sid, c in choices.items():
        assert isinstance(c, SceneChoice)
        out.append(ChipRequest(sid, c.scene, c.grid))
    return out


def local_path(region_root: Path, href: str) -> Path:
    return region_root / href.split("/", 3)[3]


def test_chips_over_http_match_the_files(region, servers, tmp_path):
    config = make_config(region, servers, tmp_path)
    reqs = requests_for(config)
    chips = read_chips(reqs, L2A_BANDS, threads=4)
    assert len(chips) == len(reqs)
    for req in reqs:
        chip = chips[req.sample_id]
        assert isinstance(chip, Chip), chip
        assert chip.pixels.shape == (12, 264, 264) and chip.pixels.dtype == np.uint16
        assert chip.scl.shape == (264, 264)
        # 10 m band: exactly the file's window, minus the baseline-04.00 offset.
        href = req.scene.band_hrefs["B04"]
        with rasterio.open(local_path(region.root, href)) as src:
            raw = src.read(1, window=from_bounds(*req.grid.bounds, src.transform)).astype(int)
        expected = np.where(raw == 0, 0, np.clip(raw - 1000, 1, None))
        np.testing.assert_array_equal(chip.pixels[3], expected)
        # 20 m band: resampled onto the 10 m grid, same mean as the native window.
        href = req.scene.band_hrefs["B11"]
        with rasterio.open(local_path(region.root, href)) as src:
            raw20 = src.read(1, window=from_bounds(*req.grid.bounds, src.transform)).astype(float)
        valid = raw20 > 0
        if valid.all():
            assert abs(chip.pixels[10].mean() - (raw20.mean() - 1000)) < 0.02 * raw20.mean()
        assert 0 <= chip.stats.cloud_fraction <= 1
        assert chip.stats.ndvi_mean is None or -1 <= chip.stats.ndvi_mean <= 1


def test_clouds_show_in_stats(region, servers, tmp_path):
    config = make_config(region, servers, tmp_path, **{"stac.max_cloud_cover": 100})
    reqs = requests_for(config)
    chips = read_chips(reqs, L2A_BANDS)
    cloud = [c.stats.cloud_fraction for c in chips.values() if isinstance(c, Chip)]
    assert max(cloud) < 0.5  # the least cloudy scenes were chosen
    stats = [c.stats for c in chips.values() if isinstance(c, Chip)]
    assert any(s.water_fraction > 0 or s.ndwi_mean is not None for s in stats)


def _drop_crs(path: Path) -> None:
    """Rewrite the GeoTIFF at ``path`` with its pixels and transform but no CRS."""
    with rasterio.open(path) as src:
        data, profile = src.read(), src.profile
    profile.pop("crs", None)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)


def test_missing_and_corrupt_cogs_fail_only_their_samples(region_copy, tmp_path):
    from pipeline.demo.region import load_items
    from pipeline.demo.servers import serve_demo

    with serve_demo(region_copy.root, load_items(region_copy)) as srv:
        config = make_config(region_copy, srv, tmp_path)
        reqs = requests_for(config)
        by_scene: dict[str, list[str]] = {}
        for r in reqs:
            by_scene.setdefault(r.scene.item_id, []).append(r.sample_id)
        scenes = sorted(by_scene, key=lambda k: -len(by_scene[k]))
        assert len(scenes) >= 3
        truncated, garbage, missing = scenes[0], scenes[1], scenes[2]
        cogs = region_copy.cog_root
        red = cogs / truncated / "red.tif"
        red.write_bytes(red.read_bytes()[: red.stat().st_size // 3])
        (cogs / garbage / "swir16.tif").write_bytes(b"this is not a tiff" * 100)
        (cogs / missing / "scl.tif").unlink()
        chips = read_chips(reqs, L2A_BANDS, threads=4)
    for sid in by_scene[garbage] + by_scene[missing]:
        failure = chips[sid]
        assert isinstance(failure, SampleFailure), sid
        assert failure.reason == "cog_open"
    # A truncated COG still opens (its header is intact): chips whose tiles are gone fail.
    cut = [chips[s] for s in by_scene[truncated]]
    assert any(isinstance(c, SampleFailure) for c in cut)
    assert all(c.reason == "cog_read" for c in cut if isinstance(c, SampleFailure))
    assert "swir16.tif" in chips[by_scene[garbage][0]].message  # type: ignore[union-attr]
    assert "scl.tif" in chips[by_scene[missing][0]].message  # type: ignore[union-attr]
    others = [s for k, v in by_scene.items() if k not in scenes[:3] for s in v]
    assert all(isinstance(chips[s], Chip) for s in others)


def test_a_cog_without_a_crs_fails_its_samples_not_the_shard(region_copy, tmp_path):
    from pipeline.demo.region import load_items
    from pipeline.demo.servers import serve_demo

    with serve_demo(region_copy.root, load_items(region_copy)) as srv:
        reqs = requests_for(make_config(region_copy, srv, tmp_path))
        scene = reqs[0].scene.item_id
        _drop_crs(region_copy.cog_root / scene / "nir.tif")
        chips = read_chips(reqs, L2A_BANDS, threads=2)
    for r in reqs:
        chip = chips[r.sample_id]
        if r.scene.item_id != scene:
            assert isinstance(chip, Chip)
            continue
        assert isinstance(chip, SampleFailure) and chip.reason == "crs_mismatch"
        assert "COG has no CRS" in chip.message
