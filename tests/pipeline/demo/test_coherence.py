from __future__ import annotations

import numpy as np
import pytest
import rasterio

from pipeline.core.config import CoherenceConfig
from pipeline.demo.coherence import (
    COHERENCE_COLLECTION,
    DEMO_COHERENCE_PAIRS,
    coherence_item_id,
    render_coherence,
)
from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, WATER
from pipeline.demo.landscape import Landscape, build_landscape
from pipeline.demo.region import load_coherence_items
from pipeline.demo.scene import DEMO_ACQUISITIONS, scene_grid
from pipeline.stages.coherence import item_interval, resolve_coherence
from tests.conftest import SMALL_BBOX

SUMMER, WINTER = DEMO_COHERENCE_PAIRS[1], DEMO_COHERENCE_PAIRS[4]


@pytest.fixture(scope="module")
def landscape() -> Landscape:
    return build_landscape(scene_grid(SMALL_BBOX), 0)


def mean_of(coherence: np.ndarray, landscape: Landscape, cls: int) -> float:
    return float(coherence[landscape.cls == cls].mean())


def test_coherence_follows_the_land_cover(landscape):
    coh = render_coherence(landscape, SUMMER, 1, seed=0)
    assert coh.dtype == np.float32 and coh.min() > 0 and coh.max() <= 1
    water, forest, crop = (mean_of(coh, landscape, c) for c in (WATER, FOREST, CROPLAND))
    built = float(coh[(landscape.cls == BUILT_UP) & (landscape.urban > 0.5)].mean())
    assert water < 0.15 and forest < 0.25 and built > 0.7
    assert water < forest < crop < built
    if (landscape.cls == BARE).any():
        assert mean_of(coh, landscape, BARE) > 0.6


def test_growing_crops_decorrelate_and_winter_fields_hold(landscape):
    summer = render_coherence(landscape, SUMMER, 1, seed=0)
    winter = render_coherence(landscape, WINTER, 4, seed=0)
    assert mean_of(summer, landscape, CROPLAND) + 0.15 < mean_of(winter, landscape, CROPLAND)
    # Built-up surfaces do not care about the season (only the weather between passes).
    urban = (landscape.cls == BUILT_UP) & (landscape.urban > 0.5)
    assert abs(float(summer[urban].mean() - winter[urban].mean())) < 0.1


def test_the_pairs_contain_most_scenes_and_leave_some_without():
    def contained(when):
        return any(p.start <= when <= p.end for p in DEMO_COHERENCE_PAIRS)

    covered = [contained(a.date) for a in DEMO_ACQUISITIONS]
    assert sum(covered) >= 4 and not all(covered)
    assert not contained(DEMO_ACQUISITIONS[-1].date)


def test_the_region_carries_coherence_items_read_as_scaled_bytes(region):
    items = load_coherence_items(region)
    assert [i["id"] for i in items] == list(region.coherence_item_ids)
    assert [i["id"] for i in items] == [coherence_item_id(p) for p in DEMO_COHERENCE_PAIRS]
    assert {i["collection"] for i in items} == {COHERENCE_COLLECTION}
    pair = DEMO_COHERENCE_PAIRS[0]
    assert item_interval(items[0]) == (pair.start, pair.end)
    assert items[0]["properties"]["datetime"] is None
    found = resolve_coherence(items[0], CoherenceConfig(collection=COHERENCE_COLLECTION))
    assert (found.scale, found.nodata) == (0.01, 0.0)
    with rasterio.open(region.root / found.href) as src:
        assert (src.crs.to_string(), src.nodata, src.dtypes[0]) == (region.crs, 0, "uint8")
        dn = src.read(1)
    assert dn.min() >= 1 and dn.max() <= 100
