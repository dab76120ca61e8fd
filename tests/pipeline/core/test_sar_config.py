from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import yaml

from flows.cli import default_config_yaml
from pipeline.core.config import SarConfig, load_config
from pipeline.core.config_hash import config_hash
from pipeline.core.errors import ConfigError
from pipeline.stages.sar import sar_stac

PRE_SAR_DEFAULT_HASH = "58b408d3a2c7d564"
"""The default config's hash before the sar section existed (resumes of old runs depend on it)."""


def load(tmp_path: Path, text: str, env: dict[str, str] | None = None):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return load_config(path, env=env or {})


def test_sar_is_off_by_default_and_existing_hashes_are_unchanged():
    config = load_config(env={})
    assert config.sar is None
    assert config_hash(config) == PRE_SAR_DEFAULT_HASH


def test_an_empty_section_turns_sar_on_with_its_defaults(tmp_path):
    sar = load(tmp_path, "sar: {}\n").sar
    assert sar == SarConfig()
    assert (sar.collection, sar.values, sar.polarisations) == (
        "sentinel-1-rtc",
        "power",
        ["VV", "VH"],
    )
    assert sar.window == dt.timedelta(days=12)


def test_an_environment_variable_turns_sar_on(tmp_path):
    config = load_config(env={"EOCAP_SAR__WINDOW_DAYS": "6"})
    assert config.sar is not None and config.sar.window == dt.timedelta(days=6)


@pytest.mark.parametrize(
    ("text", "field", "words"),
    [
        ("sar:\n  polarisations: [VV, VV]\n", "sar.polarisations", "unique"),
        ("sar:\n  polarisations: []\n", "sar.polarisations", "at least one"),
        ("sar:\n  polarisations: [VV, XX]\n", "sar.polarisations", "VH"),
        ("sar:\n  window_days: 0\n", "sar.window_days", "greater than 0"),
        ("sar:\n  values: decibel\n", "sar.values", "power"),
        ("sar:\n  colection: sentinel-1-grd\n", "sar.colection", "not permitted"),
        ("sar:\n  collection: ''\n", "sar.collection", "at least 1 character"),
        ("sar:\n  coherence: {collection: ''}\n", "sar.coherence.collection", "at least 1"),
        ("sar:\n  coherence: {collection: c, scale: 0}\n", "sar.coherence.scale", "greater than 0"),
        ("stac:\n  collection: ''\n", "stac.collection", "at least 1 character"),
    ],
)
def test_invalid_sar_settings_name_their_field(tmp_path, text, field, words):
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text)
    assert info.value.field.startswith(field)
    assert words in str(info.value)


def test_what_sar_reads_changes_the_hash_and_where_it_is_served_does_not(tmp_path):
    on = load(tmp_path, "sar: {}\n")
    assert config_hash(on) != PRE_SAR_DEFAULT_HASH
    moved = on.with_updates(
        {
            "sar.api_url": "https://planetarycomputer.microsoft.com/api/stac/v1",
            "sar.signing": "planetary-computer",
            "sar.signing_key_env": "PC_SDK_SUBSCRIPTION_KEY",
            "stac.signing_key_env": "PC_SDK_SUBSCRIPTION_KEY",
        }
    )
    assert config_hash(moved) == config_hash(on)  # where and how it is fetched is no data
    for field, value in (
        ("window_days", 6),
        ("collection", "sentinel-1-grd"),
        ("polarisations", ["VV"]),
    ):
        assert config_hash(on.with_updates({f"sar.{field}": value})) != config_hash(on)


def test_the_documented_default_config_shows_sar_off_and_still_loads(tmp_path):
    text = default_config_yaml()
    assert "sar: null" in text and "Sentinel-1 per sample" in text
    assert load(tmp_path, text).sar is None
    assert yaml.safe_load(text)["sar"] is None


PRE_COHERENCE_SAR_HASH = "6bd138c63491819b"
"""The hash of the default config with `sar: {}` before `sar.coherence` existed."""


def test_coherence_is_off_by_default_and_sar_hashes_are_unchanged(tmp_path):
    on = load(tmp_path, "sar: {}\n")
    assert on.sar is not None and on.sar.coherence is None
    assert config_hash(on) == PRE_COHERENCE_SAR_HASH


def test_a_coherence_section_names_its_collection_and_changes_the_hash(tmp_path):
    config = load(
        tmp_path,
        "sar:\n  coherence:\n    collection: sentinel-1-coherence\n    scale: 0.01\n",
    )
    assert config.sar is not None and config.sar.coherence is not None
    coherence = config.sar.coherence
    assert (coherence.collection, coherence.polarisation, coherence.scale) == (
        "sentinel-1-coherence",
        "VV",
        0.01,
    )
    assert coherence.window == dt.timedelta(days=12)
    assert config_hash(config) != PRE_COHERENCE_SAR_HASH
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "sar:\n  coherence: {}\n")
    assert info.value.field.startswith("sar.coherence.collection")


def test_sentinel_1_may_come_from_another_catalog_with_its_own_signing():
    stac = load_config(env={}).stac  # Sentinel-2 from an unsigned catalog
    assert stac.signing == "none" and stac.signing_key_env is None
    assert sar_stac(SarConfig(), stac) == stac  # nothing of its own: the stac section's
    own = sar_stac(
        SarConfig(
            api_url="https://planetarycomputer.microsoft.com/api/stac/v1",
            signing="planetary-computer",
            signing_key_env="PC_SDK_SUBSCRIPTION_KEY",
        ),
        stac,
    )
    assert own.api_url == "https://planetarycomputer.microsoft.com/api/stac/v1"
    assert (own.signing, own.signing_key_env) == ("planetary-computer", "PC_SDK_SUBSCRIPTION_KEY")
    assert own.signing_token_url == stac.signing_token_url and own.timeout_s == stac.timeout_s
