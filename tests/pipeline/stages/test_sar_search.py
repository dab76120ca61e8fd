from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import rasterio
from rasterio.windows import from_bounds

from pipeline.core.config import Period, SarConfig, StacConfig
from pipeline.core.errors import PreflightError
from pipeline.demo.coherence import (
    COHERENCE_COLLECTION,
    DEMO_COHERENCE_PAIRS,
    write_coherence_pair,
)
from pipeline.demo.landscape import build_landscape
from pipeline.demo.sar import DEMO_SAR_PASSES, write_sar_pass
from pipeline.demo.scene import scene_grid
from pipeline.demo.servers import (
    absolutize_items,
    free_port,
    serve_demo,
    start_file_server,
    start_stac_server,
)
from pipeline.geo.grid import chip_grid
from pipeline.stages.coherence import CoherenceChip, coherence_for_samples
from pipeline.stages.sar import (
    SarCatalog,
    SarChip,
    SarMissing,
    SarRequest,
    sar_for_samples,
)
from pipeline.stages.sar_checks import check_sar_sources
from tests.conftest import SMALL_BBOX
from tests.faults import FaultPlan, fault_proxy

PASSES = (DEMO_SAR_PASSES[2], DEMO_SAR_PASSES[3])  # 4 July descending, 13 August ascending


@pytest.fixture(scope="module")
def sar_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict], str]:
    root = tmp_path_factory.mktemp("sar")
    ls = build_landscape(scene_grid(SMALL_BBOX), 0)
    items = [write_sar_pass(root, ls, p, i, seed=0) for i, p in enumerate(PASSES)]
    return root, items, f"EPSG:{ls.grid.epsg}"


def request(sample_id: str, lon: float, lat: float, crs: str, when: dt.datetime) -> SarRequest:
    return SarRequest(sample_id, chip_grid(lon, lat, crs, 64, 10.0), when)


def test_each_sample_gets_its_closest_pass_over_http_or_a_missing_state(sar_root):
    root, items, crs = sar_root
    july = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    august = dt.datetime(2024, 8, 10, 10, 20, tzinfo=dt.UTC)
    winter = dt.datetime(2024, 12, 1, 10, 20, tzinfo=dt.UTC)
    requests = [
        request("july", 10.90, 47.575, crs, july),
        request("august", 10.88, 47.565, crs, august),
        request("winter", 10.90, 47.575, crs, winter),
        request("outside", 12.5, 47.575, "EPSG:32633", july),
    ]
    with serve_demo(root, items) as srv:
        sar = SarConfig(window_days=12)
        found = sar_for_samples(requests, sar, SarCatalog(sar, StacConfig(api_url=srv.stac_url)))
    assert set(found) == {"july", "august", "winter", "outside"}
    july_chip, august_chip = found["july"], found["august"]
    assert isinstance(july_chip, SarChip) and isinstance(august_chip, SarChip)
    assert july_chip.acquisition.item_id == items[0]["id"]
    assert july_chip.acquisition.orbit_state == "descending"
    assert july_chip.time_offset_s == (PASSES[0].date - july).total_seconds() < 0
    assert august_chip.acquisition.item_id == items[1]["id"]
    assert (august_chip.acquisition.relative_orbit, august_chip.time_offset_s > 0) == (117, True)
    for name in ("winter", "outside"):
        missing = found[name]
        assert isinstance(missing, SarMissing) and missing.state == "no_acquisition"
    # Pixels read over HTTP are the file's pixels in dB (the chip grid is the COG's grid).
    with rasterio.open(root / items[0]["assets"]["vv"]["href"]) as src:
        raw = src.read(1, window=from_bounds(*requests[0].grid.bounds, src.transform))
    np.testing.assert_allclose(july_chip.db[0], 10 * np.log10(raw), atol=1e-4)


def test_an_unreachable_catalog_is_a_missing_state_for_every_sample(sar_root):
    _, _, crs = sar_root
    when = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    sar = SarConfig(api_url="http://127.0.0.1:9/")
    found = sar_for_samples(
        [request("a", 10.90, 47.575, crs, when)],
        sar,
        SarCatalog(sar, StacConfig(max_retries=0, timeout_s=2)),
    )
    assert isinstance(found["a"], SarMissing) and found["a"].state == "search_error"
    assert "127.0.0.1:9" in found["a"].message


@pytest.fixture(scope="module")
def sar_and_coherence_root(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, list[dict], str]:
    """Two SAR passes and the coherence pair containing 6 July, over the small region."""
    root = tmp_path_factory.mktemp("sar-coh")
    ls = build_landscape(scene_grid(SMALL_BBOX), 0)
    items = [write_sar_pass(root, ls, p, i, seed=0) for i, p in enumerate(PASSES)]
    items.append(write_coherence_pair(root, ls, DEMO_COHERENCE_PAIRS[1], 1, seed=0))
    return root, items, f"EPSG:{ls.grid.epsg}"


@contextmanager
def behind_proxies(
    root: Path, items: list[dict], stac_plan: FaultPlan, cog_plan: FaultPlan
) -> Iterator[str]:
    """The region's COG server and STAC API, each behind a counting proxy; yields the API URL.

    The items' hrefs name the COG proxy, so every COG request a reader makes is counted.
    """
    files = start_file_server(root)
    try:
        with fault_proxy(files.url, cog_plan) as cog_url:
            stac = start_stac_server(absolutize_items(items, cog_url))
            try:
                with fault_proxy(stac.url, stac_plan) as stac_url:
                    yield stac_url
            finally:
                stac.stop()
    finally:
        files.stop()


@pytest.mark.parametrize("per_host", [1, 4])
def test_sar_and_coherence_share_one_catalog_open_and_the_per_host_limit(
    sar_and_coherence_root, per_host
):
    root, items, crs = sar_and_coherence_root
    july = dt.datetime(2024, 7, 6, 10, 20, tzinfo=dt.UTC)
    august = dt.datetime(2024, 8, 10, 10, 20, tzinfo=dt.UTC)
    requests = [
        request("july", 10.90, 47.575, crs, july),
        request("august", 10.88, 47.565, crs, august),
    ]
    sar = SarConfig(window_days=12, coherence={"collection": COHERENCE_COLLECTION})
    stac_plan, cog_plan = FaultPlan(), FaultPlan(delay_s=0.05)
    with behind_proxies(root, items, stac_plan, cog_plan) as stac_url:
        catalog = SarCatalog(sar, StacConfig(api_url=stac_url))
        reads = {"threads": 4, "max_requests_per_host": per_host}
        backscatter = sar_for_samples(requests, sar, catalog, **reads)
        coherence = coherence_for_samples(requests, sar, catalog, **reads)
    assert all(isinstance(backscatter[r.sample_id], SarChip) for r in requests)
    assert isinstance(coherence["july"], CoherenceChip)
    assert isinstance(coherence["august"], SarMissing)  # no pair near 10 August here
    # Backscatter and coherence searched the catalog once opened: one landing page request.
    assert stac_plan.seen.count("GET /") == 1
    assert sum("/search" in s for s in stac_plan.seen) == 2
    # 4 COG jobs (2 passes x VV, VH; each opened once) and the coherence COG. With one job
    # per host allowed, no two COGs were ever read at once (GDAL may fetch one COG's ranges
    # in parallel: that is one job); with 4 allowed, they were.
    cogs = {s.split(" ")[1].split("?")[0] for s in cog_plan.seen}
    assert len(cogs) == 5
    if per_host == 1:
        assert cog_plan.max_paths_in_flight == 1
    else:
        assert cog_plan.max_paths_in_flight > 1


RTC_BLOB = "https://sentinel1euwestrtc.blob.core.windows.net/sentinel1-grd-rtc"


@pytest.fixture(scope="module")
def blob_sar_stac_url(sar_root) -> Iterator[str]:
    """A real STAC API serving the SAR passes with Azure Blob hrefs, as sentinel-1-rtc's."""
    _, items, _ = sar_root
    blob = absolutize_items(items, RTC_BLOB)
    with start_stac_server(blob) as stac:
        yield stac.url


JULY = Period(name="july", start=dt.date(2024, 7, 1), end=dt.date(2024, 7, 31))


def check(sar: SarConfig, stac: StacConfig) -> None:
    """The run's Sentinel-1 checks over the small region in July."""
    check_sar_sources(sar, stac, bounds=SMALL_BBOX, period=JULY)


def test_preflight_signs_items_so_a_missing_account_key_stops_the_run_first(
    blob_sar_stac_url, token_endpoint, monkeypatch
):
    token_endpoint.account_key = "k3y"  # sentinel-1-rtc: tokens for an account only
    stac = StacConfig(signing_token_url=token_endpoint.url, max_retries=0)
    sar = SarConfig(api_url=blob_sar_stac_url, signing="planetary-computer")
    with pytest.raises(PreflightError) as info:
        check(sar, stac)
    # Without the check every sample of the run would record search_error, shard by shard.
    assert info.value.field == "sar.signing_key_env"
    assert "HTTP 403" in str(info.value) and "signing_key_env" in str(info.value)
    monkeypatch.setenv("EOCAP_TEST_PC_KEY", "k3y")
    with pytest.raises(PreflightError) as info:
        check(sar.model_copy(update={"signing_key_env": "EOCAP_TEST_PC_KEY"}), stac)
    assert token_endpoint.calls == ["sentinel1euwestrtc/sentinel1-grd-rtc"]
    # Signed, the check opens one COG: Azure is out of reach here, so that is what stops it.
    assert info.value.field == "sar.collection"
    assert f"cannot open a COG of sentinel-1-rtc ({RTC_BLOB}/" in str(info.value)
    assert "?sv=1&sig=sentinel1euwestrtc1" in str(info.value)


def test_unsigned_planetary_computer_hrefs_name_the_signing_setting(blob_sar_stac_url):
    sar = SarConfig(api_url=blob_sar_stac_url)  # Sentinel-1 from PC, left unsigned
    with pytest.raises(PreflightError) as info:
        check(sar, StacConfig(max_retries=0))
    assert info.value.field == "sar.signing"
    assert "without a SAS token" in str(info.value)


def test_preflight_names_the_token_endpoint_when_it_does_not_answer(blob_sar_stac_url):
    stac = StacConfig(signing_token_url="http://127.0.0.1:9/api/sas/v1/token", max_retries=0)
    sar = SarConfig(api_url=blob_sar_stac_url, signing="planetary-computer")
    with pytest.raises(PreflightError) as info:
        check(sar, stac)
    assert info.value.field == "stac.signing_token_url"
    assert "no SAS token for sentinel1euwestrtc/sentinel1-grd-rtc" in str(info.value)


@pytest.fixture(scope="module")
def sar_and_coherence_stac(sar_and_coherence_root) -> Iterator[str]:
    root, items, _ = sar_and_coherence_root
    with serve_demo(root, items) as srv:
        yield srv.stac_url


COHERENCE = {"collection": COHERENCE_COLLECTION}


@pytest.mark.parametrize(
    ("updates", "field", "words"),
    [
        ({"polarisations": ["HH", "HV"]}, "sar.polarisations", "hold VH, VV, not HH, HV"),
        (
            {"coherence": {"collection": "sentinel-1-rtc"}},
            "sar.coherence.collection",
            "no sentinel-1-rtc item read has a VV coherence COG",
        ),
        (
            {"coherence": {**COHERENCE, "asset": "coh"}},
            "sar.coherence.asset",
            "no COG asset 'coh'",
        ),
    ],
    ids=["polarisations not acquired there", "backscatter as coherence", "no such asset"],
)
def test_sources_that_would_leave_every_sample_without_sar_are_refused(
    sar_and_coherence_stac, updates, field, words
):
    stac = StacConfig(api_url=sar_and_coherence_stac)
    check(SarConfig(window_days=12, coherence=COHERENCE), stac)  # as the demo serves them
    with pytest.raises(PreflightError) as info:
        check(SarConfig(**{"window_days": 12, "coherence": COHERENCE, **updates}), stac)
    assert info.value.field == field and words in str(info.value)


def test_no_items_there_and_then_pass_inside_the_collections_span(sar_and_coherence_stac):
    # Between the 4 July and 13 August passes: the samples will record no_acquisition, as
    # they should; nothing says the source is wrong.
    gap = Period(name="gap", start=dt.date(2024, 7, 20), end=dt.date(2024, 7, 25))
    sar = SarConfig(window_days=1, polarisations=["HH"])
    stac = StacConfig(api_url=sar_and_coherence_stac)
    check_sar_sources(sar, stac, bounds=SMALL_BBOX, period=gap)


@pytest.mark.parametrize(
    ("period", "field", "words"),
    [
        (
            Period(name="2023", start=dt.date(2023, 6, 1), end=dt.date(2023, 6, 30)),
            "sar.collection",
            "sentinel-1-rtc spans 2024-07-04 to 2024-08-13 and has no item over the region",
        ),
        (
            # Backscatter on 13 August; the one coherence pair ended on 16 July.
            Period(name="august", start=dt.date(2024, 8, 10), end=dt.date(2024, 8, 14)),
            "sar.coherence.collection",
            f"{COHERENCE_COLLECTION} spans 2024-07-04 to 2024-07-16",
        ),
    ],
    ids=["backscatter", "coherence"],
)
def test_a_period_outside_a_collections_span_is_refused(
    sar_and_coherence_stac, period, field, words
):
    sar = SarConfig(window_days=1, coherence=COHERENCE)
    stac = StacConfig(api_url=sar_and_coherence_stac)
    with pytest.raises(PreflightError) as info:
        check_sar_sources(sar, stac, bounds=SMALL_BBOX, period=period)
    assert info.value.field == field and words in str(info.value)


def test_a_cog_host_out_of_reach_is_refused_before_the_run(sar_and_coherence_root):
    _, items, _ = sar_and_coherence_root
    gone = f"http://127.0.0.1:{free_port()}"
    with (
        start_stac_server(absolutize_items(items, gone)) as stac,
        pytest.raises(PreflightError) as info,
    ):
        check(SarConfig(window_days=12), StacConfig(api_url=stac.url, max_retries=0))
    assert info.value.field == "sar.collection"
    assert f"cannot open a COG of sentinel-1-rtc ({gone}/cogs/" in str(info.value)
