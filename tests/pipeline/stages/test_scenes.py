from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO

from pipeline.core.config import StacConfig, load_config
from pipeline.core.errors import AssetError, PreflightError, SampleFailure
from pipeline.demo.region import load_items
from pipeline.demo.servers import absolutize_items, free_port, start_stac_server
from pipeline.geo.bands import L2A_BANDS, band_by_name
from pipeline.io.stac import PlanetaryComputerSigner, subscription_key
from pipeline.stages.sampling import plan_shards
from pipeline.stages.scenes import SceneChoice, check_scene_items, resolve_scene, search_scenes
from tests.conftest import make_config, search_all
from tests.faults import FaultPlan, fault_proxy


@pytest.mark.parametrize(
    ("flavor", "rule", "offset"),
    [
        ("earth-search-c1", "raster-bands", 1000),
        ("earth-search", "earthsearch-flag", 0),
        ("planetary-computer", "processing-baseline", 1000),
    ],
)
def test_least_cloudy_covering_scene(flavor, rule, offset, request, tmp_path):
    prefix = {"earth-search-c1": "", "earth-search": "l2a_", "planetary-computer": "pc_"}[flavor]
    reg = request.getfixturevalue(f"{prefix}region")
    srv = request.getfixturevalue(f"{prefix}servers")
    config = make_config(reg, srv, tmp_path)
    items = {i["id"]: i for i in load_items(reg)}
    samples, result = search_all(config)
    assert len(result) == len(samples) == 8
    east_only = {
        i
        for i, it in items.items()
        if it["properties"]["eo:cloud_cover"] < 5
        and it["properties"]["datetime"].startswith("2024-09")
    }
    assert len(east_only) == 1
    fell_back = 0
    for s in samples:
        choice = result[s.sample_id]
        assert isinstance(choice, SceneChoice), choice
        item = items[choice.scene.item_id]
        assert item["properties"]["datetime"][:10] >= str(s.period.start)
        assert item["properties"]["datetime"][:10] <= str(s.period.end)
        if s.period.name == "summer":
            # The clearer July scene beats the 45 % August one everywhere.
            assert item["properties"]["datetime"].startswith("2024-07")
        else:
            fell_back += choice.scene.item_id not in east_only
        assert set(choice.scene.band_hrefs) == {b.name for b in L2A_BANDS}
        assert all(
            h.startswith("http://127.0.0.1") and h.endswith(".tif")
            for h in choice.scene.band_hrefs.values()
        )
        assert choice.scene.radiometry.offset_dn == {b.name: offset for b in L2A_BANDS}
        assert choice.scene.radiometry.rule == rule
        assert choice.scene.crs == "EPSG:32632"
        assert choice.scene.footprint.covers(choice.grid.footprint_lonlat())
    # Western chips are outside the swath of the clear autumn scene and fall back.
    assert 0 < fell_back < 4


def test_both_catalog_shapes_pick_the_same_acquisitions(
    region, servers, pc_region, pc_servers, tmp_path
):
    _, es = search_all(make_config(region, servers, tmp_path))
    _, pc = search_all(make_config(pc_region, pc_servers, tmp_path))
    for sid in es:
        assert es[sid].scene.datetime == pc[sid].scene.datetime  # type: ignore[union-attr]


def test_cloud_limit_leaves_no_scene(region, servers, tmp_path):
    config = make_config(region, servers, tmp_path, **{"stac.max_cloud_cover": 0.5})
    _, result = search_all(config)
    failures = [r for r in result.values() if isinstance(r, SampleFailure)]
    assert failures and all(f.reason == "no_scene" for f in failures)
    assert "cloud cover <= 0.5%" in failures[0].message


def test_period_without_scenes(region, servers, tmp_path):
    config = make_config(
        region,
        servers,
        tmp_path,
        periods=[{"name": "spring", "start": "2024-03-01", "end": "2024-05-31"}],
    )
    _, result = search_all(config)
    assert {r.reason for r in result.values()} == {"no_scene"}  # type: ignore[union-attr]


def test_stac_server_down_is_a_sample_failure(region, tmp_path):
    config = load_config(env={}).with_updates(
        {
            "stac.api_url": f"http://127.0.0.1:{free_port()}/",
            "stac.backoff_s": 0.01,
            "region.points": [{"lon": 10.9, "lat": 47.57}],
            "region.bbox": None,
        }
    )
    samples = plan_shards(config)[0].samples
    result = search_scenes(
        samples, config.stac, config.chips.band_list, chip_size=264, resolution=10
    )
    assert len(result) == len(samples)
    for failure in result.values():
        assert isinstance(failure, SampleFailure) and failure.reason == "stac_error"
        assert "cannot open STAC API" in failure.message


def test_resolve_finds_bands_by_metadata_not_keys(region):
    item = load_items(region)[0]
    # Rename every asset key: bands must still be found through eo:bands wavelengths.
    item["assets"] = {f"asset{i}": a for i, a in enumerate(item["assets"].values())}
    for a in item["assets"].values():
        if a.get("roles") == ["data"] and "eo:bands" not in a:
            a["title"] = "Scene classification map (SCL)"
    scene = resolve_scene(item, L2A_BANDS)
    assert scene.band_hrefs["B8A"].endswith("nir08.tif")
    assert scene.band_hrefs["B05"].endswith("rededge1.tif")
    assert scene.scl_href.endswith("scl.tif")


def test_jp2_and_multiband_assets_are_skipped(region):
    item = load_items(region)[0]
    scene = resolve_scene(item, L2A_BANDS)
    assert not any(h.endswith(".jp2") for h in scene.band_hrefs.values())


def test_missing_band_raises(region):
    item = load_items(region)[0]
    del item["assets"]["swir16"]
    with pytest.raises(AssetError, match="B11"):
        resolve_scene(item, L2A_BANDS)
    resolve_scene(item, [band_by_name("B02")])  # other bands still resolve


def test_old_processing_baseline_has_no_offset(pc_region):
    item = load_items(pc_region)[0]
    assert "raster:bands" not in item["assets"]["B04"]
    assert resolve_scene(item, L2A_BANDS).radiometry.offset_dn["B04"] == 1000
    item["properties"]["s2:processing_baseline"] = "03.01"
    assert resolve_scene(item, L2A_BANDS).radiometry.offset_dn["B04"] == 0


BLOB_ROOT = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2"


@pytest.fixture(scope="module")
def blob_stac_url(pc_region) -> Iterator[str]:
    """A real STAC API serving the Planetary Computer items with Azure Blob hrefs."""
    items = load_items(pc_region)
    for item in items:
        for asset in item["assets"].values():
            asset["href"] = f"{BLOB_ROOT}/{asset['href']}"
    with start_stac_server(items) as stac:
        yield stac.url


def _pc_config(pc_region, pc_servers, tmp_path, stac_url: str, token_url: str):
    return make_config(
        pc_region,
        pc_servers,
        tmp_path,
        **{
            "stac.api_url": stac_url,
            "stac.signing": "planetary-computer",
            "stac.signing_token_url": token_url,
            "stac.backoff_s": 0.01,
        },
    )


def test_planetary_computer_search_results_come_signed(
    pc_region, pc_servers, blob_stac_url, token_endpoint, tmp_path
):
    config = _pc_config(pc_region, pc_servers, tmp_path, blob_stac_url, token_endpoint.url)
    samples, result = search_all(config)
    assert len(result) == len(samples) == 8
    for choice in result.values():
        assert isinstance(choice, SceneChoice), choice
        for href in [*choice.scene.band_hrefs.values(), choice.scene.scl_href]:
            assert href.startswith(BLOB_ROOT) and href.endswith(".tif?sv=1&sig=sentinel2l2a011")
    # One token for the container, cached across every item and search of the run.
    assert token_endpoint.calls == ["sentinel2l2a01/sentinel2-l2"]


def test_planetary_computer_token_endpoint_errors_are_retried(
    pc_region, pc_servers, blob_stac_url, token_endpoint, tmp_path
):
    plan = FaultPlan(errors=2)
    with fault_proxy(token_endpoint.url, plan) as token_url:
        config = _pc_config(pc_region, pc_servers, tmp_path, blob_stac_url, token_url)
        _, result = search_all(config)
    assert all(isinstance(c, SceneChoice) for c in result.values())
    assert len(plan.seen) == 3 and len(token_endpoint.calls) == 1


def test_planetary_computer_token_endpoint_down_is_a_stac_error(
    pc_region, pc_servers, blob_stac_url, tmp_path
):
    token_url = f"http://127.0.0.1:{free_port()}/api/sas/v1/token"
    config = _pc_config(pc_region, pc_servers, tmp_path, blob_stac_url, token_url)
    _, result = search_all(config.with_updates({"stac.max_retries": 1}))
    for failure in result.values():
        assert isinstance(failure, SampleFailure) and failure.reason == "stac_error"
        assert "no SAS token for sentinel2l2a01/sentinel2-l2" in failure.message


def test_planetary_computer_signing(token_endpoint):
    sign = PlanetaryComputerSigner(token_endpoint.url, StacApiIO(timeout=5)).sign
    href = f"{BLOB_ROOT}/32/T/PT/B04.tif"
    assert sign(href) == href + "?sv=1&sig=sentinel2l2a011"
    assert sign(href + "?a=1") == href + "?a=1&sv=1&sig=sentinel2l2a011"
    assert token_endpoint.calls == ["sentinel2l2a01/sentinel2-l2"]  # cached per container
    signed = sign(href)
    assert sign(signed) == signed  # already signed
    assert sign("http://127.0.0.1/x.tif") == "http://127.0.0.1/x.tif"


def test_an_account_key_goes_with_token_requests_and_its_absence_is_explained(
    token_endpoint, monkeypatch
):
    token_endpoint.account_key = "k3y"
    href = f"{BLOB_ROOT}/32/T/PT/B04.tif"
    anonymous = PlanetaryComputerSigner(token_endpoint.url, StacApiIO(timeout=5)).sign
    with pytest.raises(APIError, match=r"HTTP 403 .*Planetary Computer account.*signing_key_env"):
        anonymous(href)
    monkeypatch.setenv("EOCAP_TEST_PC_KEY", "k3y")
    stac = StacConfig(signing="planetary-computer", signing_key_env="EOCAP_TEST_PC_KEY")
    keyed = PlanetaryComputerSigner(
        token_endpoint.url, StacApiIO(timeout=5), subscription_key(stac)
    ).sign
    assert keyed(href) == href + "?sv=1&sig=sentinel2l2a011"
    monkeypatch.setenv("EOCAP_TEST_PC_KEY", "")
    with pytest.raises(APIError, match="EOCAP_TEST_PC_KEY, which is not set"):
        subscription_key(stac)


def test_planetary_computer_token_is_renewed_before_it_expires(token_endpoint):
    sign = PlanetaryComputerSigner(token_endpoint.url, StacApiIO(timeout=5)).sign
    href = f"{BLOB_ROOT}/32/T/PT/B04.tif"
    # Two minutes left: too little for hrefs that the chips stage reads later.
    token_endpoint.expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=2)
    assert sign(href).endswith("sig=sentinel2l2a011")
    assert sign(href).endswith("sig=sentinel2l2a012")
    token_endpoint.expiry = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=45)
    assert sign(href).endswith("sig=sentinel2l2a013")
    assert sign(href).endswith("sig=sentinel2l2a013")
    assert len(token_endpoint.calls) == 3


def test_stac_errors_and_stalls_are_retried(region, servers, tmp_path):
    plan = FaultPlan(errors=2, stalls=1, stall_s=2.0)
    with fault_proxy(servers.stac_url, plan) as url:
        config = make_config(
            region,
            servers,
            tmp_path,
            **{"stac.api_url": url, "stac.timeout_s": 0.5, "stac.backoff_s": 0.01},
        )
        _, result = search_all(config)
    assert all(isinstance(c, SceneChoice) for c in result.values())
    assert plan.seen[:4] == ["GET /"] * 4  # 500, 500, timeout, then the landing page


def test_stac_errors_past_max_retries_are_a_sample_failure(region, servers, tmp_path):
    plan = FaultPlan(errors=100)
    with fault_proxy(servers.stac_url, plan) as url:
        config = make_config(
            region,
            servers,
            tmp_path,
            **{"stac.api_url": url, "stac.max_retries": 2, "stac.backoff_s": 0.01},
        )
        _, result = search_all(config)
    assert len(plan.seen) == 3  # the first try and two retries
    for failure in result.values():
        assert isinstance(failure, SampleFailure) and failure.reason == "stac_error"
        assert "cannot open STAC API" in failure.message


def test_scene_items_refuse_only_when_every_sampled_item_lacks_what_the_run_reads(region):
    good = absolutize_items(load_items(region), str(region.root))[0]  # COGs as local files
    no_scl = {
        **good,
        "id": "no-scl",
        "assets": {k: v for k, v in good["assets"].items() if k != "scl"},
    }
    check_scene_items([no_scl, good], L2A_BANDS, "c")  # one broken item: its samples fail alone
    check_scene_items([], L2A_BANDS, "c")  # an empty collection: its samples say no_scene
    with pytest.raises(PreflightError) as info:
        check_scene_items([no_scl, {**no_scl, "id": "no-scl-2"}], L2A_BANDS, "c")
    assert info.value.field == "stac.collection"
    assert "no-scl: " in str(info.value) and "SCL" in str(info.value)


def test_scene_items_whose_cogs_do_not_open_are_refused(region):
    gone = f"http://127.0.0.1:{free_port()}"
    items = absolutize_items(load_items(region), gone)
    with pytest.raises(PreflightError) as info:
        check_scene_items(items[:1], L2A_BANDS, "c")
    assert info.value.field == "stac.collection"
    assert f"cannot open a COG of c ({gone}/" in str(info.value)
    blob = absolutize_items(load_items(region), BLOB_ROOT)  # Planetary Computer's, unsigned
    with pytest.raises(PreflightError) as info:
        check_scene_items(blob[:1], L2A_BANDS, "sentinel-2-l2a")
    assert info.value.field == "stac.signing" and "without a SAS token" in str(info.value)
