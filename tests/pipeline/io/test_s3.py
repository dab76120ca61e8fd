"""``s3://`` for real: Overture releases and COGs read from a moto S3 server on 127.0.0.1.

The server (tests/s3.py) is found the way a researcher's MinIO or cloud bucket is: through
``AWS_ENDPOINT_URL`` and the AWS credential variables. The Overture release is laid out as
Overture's own bucket (``release/<id>/theme=*/type=*/*.parquet``, a STAC catalog beside it).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from pipeline.core.config import OvertureConfig
from pipeline.core.errors import PreflightError
from pipeline.geo.bands import L2A_BANDS
from pipeline.io.duckdb import connect_duckdb
from pipeline.io.overture import OVERTURE_TYPES, available_releases, read_catalog
from pipeline.io.s3 import S3Settings
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.context import check_overture, map_context, prepare_overture
from tests.conftest import SMALL_BBOX, make_config
from tests.pipeline.io.test_overture import write_catalog
from tests.pipeline.stages.test_chips import requests_for
from tests.pipeline.stages.test_context import chips_over
from tests.s3 import S3Server

RELEASE = "2026-01-21.0"
OLDER = "2025-12-17.0"
BUCKET = "overturemaps-test"


def test_settings_follow_the_aws_environment():
    local = S3Settings.from_env(
        {
            "AWS_ENDPOINT_URL": "http://127.0.0.1:9000",
            "AWS_ACCESS_KEY_ID": "id",
            "AWS_SECRET_ACCESS_KEY": "secret",
            "AWS_DEFAULT_REGION": "eu-central-1",
        }
    )
    assert (local.endpoint, local.use_ssl, local.region) == (
        "127.0.0.1:9000",
        False,
        "eu-central-1",
    )
    assert local.gdal_options() == {
        "AWS_S3_ENDPOINT": "127.0.0.1:9000",
        "AWS_HTTPS": "NO",
        "AWS_VIRTUAL_HOSTING": "FALSE",
        "AWS_REGION": "eu-central-1",
        "AWS_NO_SIGN_REQUEST": "NO",
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "secret",
    }
    # The S3-specific endpoint wins, as in the AWS SDKs; https by default.
    s3_only = S3Settings.from_env(
        {"AWS_ENDPOINT_URL": "http://a:1", "AWS_ENDPOINT_URL_S3": "https://s3.example:8443"}
    )
    assert (s3_only.endpoint, s3_only.use_ssl, s3_only.signed) == ("s3.example:8443", True, False)
    assert s3_only.gdal_options()["AWS_NO_SIGN_REQUEST"] == "YES"
    with pytest.raises(ValueError, match="AWS_ENDPOINT_URL"):
        S3Settings.from_env({"AWS_ENDPOINT_URL": "http://"})


def test_production_reads_overtures_bucket_anonymously_in_its_region():
    # Credentials for the researcher's own buckets never sign requests to Overture's.
    settings = S3Settings.from_env({"AWS_ACCESS_KEY_ID": "id", "AWS_SECRET_ACCESS_KEY": "secret"})
    con = connect_duckdb(httpfs=True, s3=settings)
    secrets = dict(con.execute("SELECT name, secret_string FROM duckdb_secrets()").fetchall())
    overture = secrets["eocap_overture"]
    assert "region=us-west-2" in overture and "key_id" not in overture
    assert "key_id=id" in secrets["eocap_s3"]
    which = "SELECT name FROM which_secret(?, 's3')"
    url = "s3://overturemaps-us-west-2/release/2026-01-21.0/theme=base/type=land/x.parquet"
    assert con.execute(which, [url]).fetchone() == ("eocap_overture",)
    assert con.execute(which, ["s3://my-bucket/x.parquet"]).fetchone() == ("eocap_s3",)
    # GDAL stays unsigned against AWS (Earth Search's and Overture's buckets are public).
    assert settings.gdal_options() == {"AWS_NO_SIGN_REQUEST": "YES"}


@pytest.fixture
def overture_bucket(region, s3: S3Server) -> str:
    """Two releases of the test region laid out as Overture's bucket, with a STAC catalog."""
    for release in (OLDER, RELEASE):
        s3.upload_tree(region.overture_root, f"s3://{BUCKET}/release/{release}")
    catalog = region.root.parent / "overture-catalog"
    if not catalog.exists():
        write_catalog(catalog, [OLDER, RELEASE])
    s3.upload_tree(catalog, f"s3://{BUCKET}/release")
    return f"s3://{BUCKET}/release"


def test_overture_release_from_s3_equals_the_local_extraction(
    region, s3: S3Server, overture_bucket: str, tmp_path: Path
):
    cfg = OvertureConfig(
        source=f"{overture_bucket}/{{release}}",
        release=RELEASE,
        catalog_url=f"{overture_bucket}/catalog.json",
    )
    catalog = read_catalog(cfg.catalog_url)  # over s3://, with DuckDB httpfs
    assert (catalog.latest, catalog.releases) == (RELEASE, (RELEASE, OLDER))
    assert available_releases(cfg) == [RELEASE, OLDER]
    check_overture(cfg)  # one file's schema per type, read from the bucket

    from_s3 = prepare_overture(cfg, [SMALL_BBOX], tmp_path / "s3")
    local = OvertureConfig(source=f"file://{region.overture_root}", release="local")
    from_file = prepare_overture(local, [SMALL_BBOX], tmp_path / "file")
    for type_name, theme in OVERTURE_TYPES.items():
        part = Path(f"theme={theme}") / f"type={type_name}" / "part-00000.parquet"
        assert pq.read_table(from_s3 / part).equals(pq.read_table(from_file / part)), type_name
    chips = chips_over(region)
    assert map_context(chips, from_s3) == map_context(chips, region.overture_root)


def test_missing_s3_release_names_the_source(s3: S3Server, overture_bucket: str):
    cfg = OvertureConfig(source=f"s3://{BUCKET}/release/2020-01-01.0")
    with pytest.raises(PreflightError) as info:
        check_overture(cfg)
    assert info.value.field == "overture.source"
    assert "s3://overturemaps-test/release/2020-01-01.0/theme=" in str(info.value)


def test_missing_s3_catalog_names_catalog_url(s3: S3Server):
    s3.create_bucket(BUCKET)
    with pytest.raises(PreflightError) as info:
        read_catalog(f"s3://{BUCKET}/no-such/catalog.json")
    assert info.value.field == "overture.catalog_url"
    assert "\n" not in str(info.value)


def test_chips_from_s3_hrefs_equal_the_http_read(region, servers, s3: S3Server, tmp_path: Path):
    requests = requests_for(make_config(region, servers, tmp_path))
    scenes = {r.scene.item_id for r in requests}
    for item_id in scenes:
        s3.upload_tree(region.cog_root / item_id, f"s3://sentinel-cogs-test/cogs/{item_id}")

    def on_s3(href: str) -> str:
        return "s3://sentinel-cogs-test/" + href.split("/", 3)[3]

    s3_requests = [
        dataclasses.replace(
            r,
            scene=dataclasses.replace(
                r.scene,
                band_hrefs={b: on_s3(h) for b, h in r.scene.band_hrefs.items()},
                scl_href=on_s3(r.scene.scl_href),
            ),
        )
        for r in requests
    ]
    assert s3_requests[0].scene.scl_href.startswith("s3://sentinel-cogs-test/cogs/")
    over_http = read_chips(requests, L2A_BANDS, threads=4)
    over_s3 = read_chips(s3_requests, L2A_BANDS, threads=4)
    assert set(over_s3) == set(over_http)
    for sample_id, chip in over_s3.items():
        expected = over_http[sample_id]
        assert isinstance(chip, Chip) and isinstance(expected, Chip), chip
        np.testing.assert_array_equal(chip.pixels, expected.pixels)
        np.testing.assert_array_equal(chip.scl, expected.scl)


def test_unreadable_s3_cog_fails_only_its_samples(region, servers, s3: S3Server, tmp_path: Path):
    request = requests_for(make_config(region, servers, tmp_path))[0]
    s3.create_bucket("sentinel-cogs-test")
    missing = "s3://sentinel-cogs-test/no-such-scene/red.tif"
    scene = dataclasses.replace(
        request.scene, band_hrefs=dict.fromkeys(request.scene.band_hrefs, missing)
    )
    result = read_chips([ChipRequest(request.sample_id, scene, request.grid)], L2A_BANDS)
    failure = result[request.sample_id]
    assert not isinstance(failure, Chip)
    assert failure.reason == "cog_open" and missing in failure.message
