from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import default_config_yaml, main
from pipeline.core.config import RunConfig, load_config
from pipeline.core.errors import ConfigError, PreflightError
from pipeline.runner.plan import plan_run, preflight, preflight_captions


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("chips:\n  bands: [B02, B03, B04, B13]\n", "chips.bands", "unknown band 'B13'"),
        ("chips:\n  bands: no-such-preset\n", "chips.bands", "unknown band preset"),
        ("chips:\n  bands: [B08, B11]\n", "chips.bands", "RGB composite"),
        ("region:\n  bbox: [10, 91, 11, 92]\n", "region.bbox", "latitude 91"),
        (
            "region:\n  points:\n    - {lon: 10, lat: 47}\n    - {lon: 10, lat: -95}\n",
            "region.points[1].lat",
            "latitude -95",
        ),
        ("region:\n  bbox: [11, 47, 10, 48]\n", "region.bbox", "swap them"),
        ("region:\n  bbox: [10, 48, 11, 47]\n", "region.bbox", "lat_min 48.0 is not below"),
        (
            "periods:\n  - {name: s, start: 2024-06-01, end: 2024-05-01}\n",
            "periods[0]",
            "before start",
        ),
        (
            "periods:\n  - {name: s, start: 2024-13-01, end: 2024-05-01}\n",
            "periods[0].start",
            "date",
        ),
        ("stac:\n  max_cloud_cover: 150\n", "stac.max_cloud_cover", "less than or equal"),
        ("output:\n  shard_size: 0\n", "output.shard_size", "greater than or equal"),
        # At 0 every chip would be captioned "obscured", or fail too_cloudy.
        ("captioner:\n  cloudy_threshold: 0\n", "captioner.cloudy_threshold", "greater than 0"),
        (
            "captioner:\n  skip_cloud_fraction: 0\n",
            "captioner.skip_cloud_fraction",
            "greater than 0",
        ),
        ("stacc:\n  api_url: x\n", "stacc", "Extra inputs"),
        (
            "overture:\n  source: s3://bucket/{release}/extract\n",
            "overture.source",
            "last path segment",
        ),
        ("overture:\n  release: latest\n", "overture.release", "needs a source with {release}"),
    ],
)
def test_bad_config_names_the_field(tmp_path: Path, yaml_text: str, field: str, words: str):
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, yaml_text), env={})
    assert info.value.field == field
    assert words in str(info.value)


def test_defaults_run_the_demo():
    config = load_config(env={})
    assert config == RunConfig()
    assert config.chips.size_px == 264 and config.chips.resolution_m == 10
    assert [b.name for b in config.chips.band_list][:3] == ["B01", "B02", "B03"]
    assert len(config.chips.band_list) == 12
    assert [p.name for p in config.periods] == ["spring", "summer", "autumn", "winter"]


def test_llama3_ms_clip_preset():
    config = load_config(env={}).with_updates({"chips.bands": "llama3-ms-clip-10"})
    assert [b.name for b in config.chips.band_list] == [
        "B02",
        "B03",
        "B04",
        "B05",
        "B06",
        "B07",
        "B08",
        "B8A",
        "B11",
        "B12",
    ]


def test_env_overrides_yaml(tmp_path: Path):
    path = write(tmp_path, "output:\n  shard_size: 10\n")
    config = load_config(
        path,
        env={
            "EOCAP_OUTPUT__SHARD_SIZE": "20",
            "EOCAP_STAC__API_URL": "http://example.test/v1",
            "EOCAP_DEMO_DIR": "ignored",
        },
    )
    assert config.output.shard_size == 20
    assert config.stac.api_url == "http://example.test/v1"


def test_env_override_is_validated():
    with pytest.raises(ConfigError, match=r"chips\.size_px"):
        load_config(env={"EOCAP_CHIPS__SIZE_PX": "huge"})


def test_default_config_yaml_round_trips(tmp_path: Path):
    text = default_config_yaml()
    assert "# Grid spacing between chip centres in metres." in text
    assert load_config(write(tmp_path, text), env={}) == RunConfig()


def _default_config(tmp_path: Path) -> RunConfig:
    """The defaults, writing into ``tmp_path``: never the checkout's output/demo, which
    `make demo` (Sentinel-1 on, another config hash) may have filled."""
    return load_config(env={}).with_updates({"output.dir": str(tmp_path / "out")})


def test_missing_overture_path_fails_preflight(tmp_path: Path):
    config = _default_config(tmp_path).with_updates({"overture.source": str(tmp_path / "nope")})
    with pytest.raises(PreflightError) as info:
        preflight(config)
    assert info.value.field == "overture.source"


def test_unreachable_stac_fails_preflight(region, tmp_path: Path):
    from pipeline.demo.servers import free_port

    config = _default_config(tmp_path).with_updates(
        {
            "overture.source": str(region.overture_root),
            "stac.api_url": f"http://127.0.0.1:{free_port()}/",
            "stac.backoff_s": 0.01,  # retried like any STAC request, then reported
        }
    )
    with pytest.raises(PreflightError) as info:
        preflight(config)
    assert info.value.field == "stac.api_url"


def test_unknown_collection_fails_preflight(region, servers, tmp_path: Path):
    config = _default_config(tmp_path).with_updates(
        {
            "overture.source": str(region.overture_root),
            "stac.api_url": servers.stac_url,
            "stac.collection": "landsat-c2-l2",
        }
    )
    with pytest.raises(PreflightError) as info:
        preflight(config)
    assert info.value.field == "stac.collection"


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = write(tmp_path, "region:\n  bbox: [10, 47, 11, 99]\n")
    assert main(["plan", str(path)]) == 2
    assert "region.bbox" in capsys.readouterr().err


def test_cli_run_with_bad_overture_stops_before_work(tmp_path: Path, capsys):
    out = tmp_path / "out"
    code = main(
        [
            "run",
            str(write(tmp_path, "")),
            "--set",
            f"overture.source={tmp_path}/x",
            "--set",
            f"output.dir={out}",
        ]
    )
    assert code == 2
    assert "overture.source" in capsys.readouterr().err
    assert not out.exists()


def test_caption_transport_does_not_change_the_config_hash():
    from pipeline.core.config_hash import config_hash

    config = load_config(env={})
    moved = config.with_updates(
        {
            "captioner.base_url": "http://gpu-host-b:8000/v1",
            "captioner.gpu_workers": 4,
            "captioner.max_concurrency": 128,
            "captioner.timeout_s": 600,
        }
    )
    assert config_hash(moved) == config_hash(config)
    for field, value in (("model", "other-model"), ("prompt", "llama3-ms-clip-v1")):
        assert config_hash(config.with_updates({f"captioner.{field}": value})) != config_hash(
            config
        )


def test_a_separate_caption_stage_does_not_need_the_caption_server_to_build(config):
    from pipeline.demo.servers import free_port

    dead = {
        "captioner.backend": "openai",
        "captioner.base_url": f"http://127.0.0.1:{free_port()}/v1",
        "captioner.server_wait_s": 0,
        "captioner.max_retries": 0,
    }
    separate = config.with_updates({**dead, "captioner.stage": "separate"})
    assert preflight(separate).captioner.base_url == dead["captioner.base_url"]
    with pytest.raises(ConfigError, match="captioner"):
        preflight(config.with_updates(dead))  # inline: the build captions
    with pytest.raises(ConfigError) as info:
        preflight_captions(separate)  # the caption flow: nothing built yet
    assert info.value.field == "output.dir" and "holds no run" in str(info.value)
    plan_run(preflight(separate))  # the build's plan: run.json and the manifest
    with pytest.raises(ConfigError, match="captioner"):
        preflight_captions(separate)  # the caption flow checks the server


def test_the_caption_flow_needs_neither_the_catalogs_nor_overture(config, tmp_path):
    from pipeline.demo.servers import free_port

    built = config.with_updates({"captioner.stage": "separate", "sar": {}})
    plan_run(preflight(built))
    # A GPU host: no STAC API, no Sentinel-1 account key, no Overture copy. None of them is
    # read to caption the shards, so none of them may stop it.
    gpu_host = built.with_updates(
        {
            "stac.api_url": f"http://127.0.0.1:{free_port()}/",
            "sar.signing": "planetary-computer",
            "sar.signing_key_env": "EOCAP_TEST_NO_SUCH_KEY",
            "overture.source": str(tmp_path / "no-overture-here"),
        }
    )
    assert preflight_captions(gpu_host).output.dir == built.output.dir
    with pytest.raises(ConfigError):
        preflight(gpu_host)  # the build needs all three
