"""A run: preflight, planning, the shard list, and the report at the end.

The flow in ``flows/`` strings these together; they are plain functions so the CLI, the tests
and the benchmarks call the same code. Each run is checked once, before any work
(:func:`preflight`, by whoever starts the run: ``eocap run`` or a deployment's entry flow;
``eocap check`` runs the same checks and ``eocap plan`` their offline part,
:func:`check_run_config`); the build flow then plans it (:func:`plan_run`, the only writer of
``run.json`` and the manifest), and the caption stage only reads what the build planned
(:func:`planned_shards`). What a run writes where (``output.dir``) is
:class:`~pipeline.dataset.layout.DatasetLayout`.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NewType

import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from pipeline import __version__
from pipeline.caption.prompts import load_prompt
from pipeline.caption.registry import IN_PROCESS_BACKENDS, check_in_process
from pipeline.core.config import LATEST_RELEASE, Period, RegionConfig, RunConfig
from pipeline.core.config_hash import config_hash
from pipeline.core.errors import ConfigError, PreflightError, disk_full_names
from pipeline.dataset.layout import DatasetLayout
from pipeline.geo.coverage import FIRST_ACQUISITION_DAY, LAT_MAX, LAT_MIN
from pipeline.io.atomic import atomic_write
from pipeline.io.overture import read_catalog
from pipeline.io.stac import check_catalog
from pipeline.stages.context import check_overture, check_overture_covers, prepare_overture
from pipeline.stages.sampling import (
    Location,
    ShardPlan,
    check_region_fits,
    iter_shards,
    plan_locations,
    region_geometry,
    region_parts,
    write_manifest,
)
from pipeline.stages.sar_checks import check_sar_sources
from pipeline.stages.scenes import check_scene_items

__all__ = [
    "CheckedConfig",
    "RunPlan",
    "check_coverage",
    "check_periods",
    "check_run_config",
    "plan_run",
    "planned_shards",
    "preflight",
    "preflight_captions",
    "resolve_release",
]

CheckedConfig = NewType("CheckedConfig", RunConfig)
"""A run config that passed :func:`preflight` (its Overture release resolved): what the build
and caption flows take, so that a run is checked once, by whoever starts it."""


def resolve_release(config: RunConfig) -> RunConfig:
    """The config with ``overture.release: latest`` replaced by the run's release.

    That is the release pinned in ``output.dir/run.json`` if the output dir holds a run (a
    resumed run never changes release), else the newest in Overture's catalog
    (``overture.catalog_url``). Any other release is returned as it is.

    Raises:
        PreflightError: naming ``overture.catalog_url`` if the catalog cannot be read.
    """
    if config.overture.release != LATEST_RELEASE:
        return config
    run_json = DatasetLayout(config.output.dir).run_json
    pinned: object = None
    if run_json.exists():
        stored = json.loads(run_json.read_text()).get("config", {})
        pinned = stored.get("overture", {}).get("release")
    if isinstance(pinned, str) and pinned != LATEST_RELEASE:
        return config.with_updates({"overture.release": pinned})
    return config.with_updates(
        {"overture.release": read_catalog(config.overture.catalog_url).latest}
    )


def check_periods(periods: Sequence[Period], today: dt.date) -> None:
    """Refuse a period that Sentinel-2 has no scenes for, or not all of them yet.

    A period partly in the future (ending today or later) is refused too: its shards would be
    built from the scenes acquired so far and, once done, never rebuilt (a run resumes by
    skipping finished shards), so the same config would give different data on another day.

    Args:
        periods: The run's periods.
        today: Today's date in UTC.

    Raises:
        ConfigError: naming ``periods[i].start`` or ``periods[i].end``.
    """
    for i, period in enumerate(periods):
        name = f"period '{period.name}'"
        if period.end < FIRST_ACQUISITION_DAY:
            raise ConfigError(
                f"periods[{i}].end",
                f"{name} ends {period.end}, before Sentinel-2's first scene (Sentinel-2A was "
                f"launched {FIRST_ACQUISITION_DAY}): every sample would fail with no_scene; "
                f"give dates from {FIRST_ACQUISITION_DAY} on",
            )
        if period.start > today:
            raise ConfigError(
                f"periods[{i}].start",
                f"{name} starts {period.start}, after today ({today}, UTC): no scene of it "
                "exists yet and every sample would fail with no_scene; give a period that is "
                "over",
            )
        if period.end >= today:
            raise ConfigError(
                f"periods[{i}].end",
                f"{name} ends {period.end}, not before today ({today}, UTC): its shards would "
                "be built from the scenes acquired so far and never rebuilt; end it before "
                "today, or add it once it is over",
            )


def check_coverage(region: RegionConfig) -> None:
    """Refuse a region reaching beyond the latitudes Sentinel-2 images systematically.

    Raises:
        ConfigError: naming the region's field (``region.points[i]`` for a point).
    """
    if region.points is not None:
        places = [(f"region.points[{i}]", p.lat, p.lat) for i, p in enumerate(region.points)]
    else:
        _, south, _, north = region_geometry(region).bounds
        places = [(region.field_name, south, north)]
    for field, south, north in places:
        if north > LAT_MAX or south < LAT_MIN:
            lat = north if north > LAT_MAX else south
            raise ConfigError(
                field,
                f"the region reaches latitude {lat:g}, outside Sentinel-2's systematic "
                f"coverage ({-LAT_MIN:g} S to {LAT_MAX:g} N, ESA): chips there would find no "
                f"scene; keep the region between latitudes {LAT_MIN:g} and {LAT_MAX:g}",
            )


def check_run_config(config: RunConfig, *, today: dt.date | None = None) -> None:
    """The checks of a run that need no server: periods, coverage, at least one chip.

    Part of :func:`preflight`; ``eocap plan`` runs them alone.

    Args:
        config: The run config.
        today: Today's date; default: today in UTC.

    Raises:
        ConfigError: naming the field at fault.
    """
    check_periods(config.periods, today or dt.datetime.now(dt.UTC).date())
    check_coverage(config.region)
    check_region_fits(config.region, config.chips.size_m)


def preflight(config: RunConfig, *, today: dt.date | None = None) -> CheckedConfig:
    """Check everything a run needs before any work, from its config to its servers.

    The checks, in order: :func:`check_run_config` (periods, coverage, at least one chip), the
    output folder (empty, or a run of this config), the Overture release, the STAC API and
    collection (3 items read: signed, and holding the run's bands), with ``sar:`` the
    Sentinel-1 catalog and its collections, the prompt, and with ``captioner.stage: inline``
    the captioner (:func:`_check_captioner`; with ``separate`` the caption flow checks it, on
    the GPU hosts: a build host need not wait for them).

    ``eocap check`` and ``eocap run`` both call this, so a config that passes the one passes
    the other's checks; nothing a run checks later depends on the data.

    Args:
        config: The run config.
        today: Today's date, for the periods (:func:`check_run_config`).

    Returns:
        The config with its Overture release resolved (:func:`resolve_release`).

    Raises:
        ConfigError: naming the field at fault (``PreflightError`` for unusable values).
    """
    check_run_config(config, today=today)
    config = resolve_release(config)
    _check_output(config, config_hash(config))
    check_overture(config.overture)
    check_overture_covers(config.overture, [part.bounds for part in region_parts(config.region)])
    items = check_catalog(config.stac, {"stac.collection": config.stac.collection})
    check_scene_items(
        items["stac.collection"].items, config.chips.band_list, config.stac.collection
    )
    if config.sar is not None:
        check_sar_sources(
            config.sar,
            config.stac,
            bounds=region_geometry(config.region).bounds,
            period=config.periods[0],
        )
    load_prompt(config.captioner.prompt)
    if config.captioner.stage == "inline":
        _check_captioner(config)
    return CheckedConfig(config)


def preflight_captions(config: RunConfig) -> CheckedConfig:
    """Check what the caption flow (``eocap caption``, on the GPU hosts) needs, and no more.

    The shards hold everything captioning reads, so neither the STAC catalogs (nor their
    account keys) nor Overture are needed there: the output folder must hold a run of this
    config, the prompt must exist and the captioner must be usable.

    Returns:
        The config with its Overture release as the run pinned it.

    Raises:
        ConfigError: naming the field at fault (``PreflightError`` for unusable values).
    """
    if not DatasetLayout(config.output.dir).run_json.exists():
        raise PreflightError(
            "output.dir",
            f"{config.output.dir} holds no run: build it first (`eocap run` with "
            "captioner.stage: separate), then caption it",
        )
    config = resolve_release(config)
    _check_output(config, config_hash(config))
    load_prompt(config.captioner.prompt)
    _check_captioner(config)
    return CheckedConfig(config)


def _check_captioner(config: RunConfig) -> None:
    """The captioner is usable: its server serves the model, or its model and device exist.

    Backend ``openai``: the server answers and serves ``captioner.model``. In-process backends
    (``transformers``, ``vllm``, ``fast``): the model is a model folder or a hub id, and the
    device one this host has.
    """
    if config.captioner.backend == "openai":
        from pipeline.caption.backends.openai import OpenAICaptioner

        OpenAICaptioner.from_config(config.captioner).check()
    elif config.captioner.backend in IN_PROCESS_BACKENDS:
        check_in_process(config.captioner)


@dataclass
class RunPlan:
    """What a run will do, without holding its samples (they are made per shard).

    Attributes:
        config: The run config, its Overture release resolved (pinned in ``run.json``): the
            config to build shards with.
        locations: Every chip centre of the run, in shard order (compact: the samples of a
            million-sample run are never all in memory).
        n_shards: Number of shards.
        n_samples: Number of planned samples.
        overture_root: Local Overture tree to join against.
        output_dir: The run's output folder.
    """

    config: RunConfig
    locations: list[Location]
    n_shards: int
    n_samples: int
    overture_root: Path
    output_dir: Path

    def iter_shards(self) -> Iterator[ShardPlan]:
        """Every shard, made on demand."""
        return iter_shards(self.config, self.locations)

    def is_done(self, index: int) -> bool:
        """Whether shard ``index`` has its stats file."""
        return DatasetLayout(self.output_dir).stats_path(index).exists()

    def iter_pending(self) -> Iterator[ShardPlan]:
        """The shards without a stats file, made on demand."""
        return (s for s in self.iter_shards() if not self.is_done(s.index))


def _check_output(config: RunConfig, chash: str) -> None:
    run_json = DatasetLayout(config.output.dir).run_json
    if run_json.exists():
        previous = json.loads(run_json.read_text()).get("config_hash")
        if previous != chash:
            raise ConfigError(
                "output.dir",
                f"{config.output.dir} holds a dataset built with another config (hash "
                f"{previous}, now {chash}); choose a new output.dir or delete the old one",
            )


def plan_run(config: RunConfig) -> RunPlan:
    """Plan the run, write ``run.json`` and the manifest, and list the shards still to build.

    ``overture.release: latest`` is resolved (:func:`resolve_release`) and the resolved id is
    written to ``run.json``, so later plans of the same output dir keep it.

    Raises:
        ConfigError: if ``output.dir`` holds a dataset made with a different config.
    """
    config = resolve_release(config)
    chash = config_hash(config)
    _check_output(config, chash)
    locations = plan_locations(config.region, config.chips.size_m, seed=config.seed)
    out = config.output.dir
    layout = DatasetLayout(out)
    with disk_full_names(out):
        out.mkdir(parents=True, exist_ok=True)
        with atomic_write(layout.run_json) as tmp:
            tmp.write_text(
                json.dumps(
                    {
                        "config_hash": chash,
                        "eocap_version": __version__,
                        "config": config.model_dump(mode="json"),
                    },
                    indent=2,
                )
            )
        n_shards, n_samples = write_manifest(iter_shards(config, locations), layout.manifest)
        # Temp files of writers killed mid-write are garbage: their shards have no stats, so
        # they are pending and will be written again.
        for stale in layout.temp_files():
            stale.unlink(missing_ok=True)
        boxes = [part.bounds for part in region_parts(config.region)]
        extract = layout.overture_extract(config.overture.release)
        overture_root = prepare_overture(config.overture, boxes, extract)
    return RunPlan(config, locations, n_shards, n_samples, overture_root, out)


def chip_within_region(config: RunConfig, geometry_wkb: bytes, tolerance_deg: float = 1e-4) -> bool:
    """Whether a sample's footprint lies in the configured region (points: always true)."""
    if config.region.points is not None:
        return True
    region = region_geometry(config.region).buffer(tolerance_deg)
    return bool(region.covers(shapely.from_wkb(geometry_wkb)))


def planned_shards(config: RunConfig) -> int:
    """How many shards the run in ``output.dir`` was planned with; reads, writes nothing.

    Raises:
        ConfigError: if ``output.dir`` holds no planned run, or one of another config.
    """
    _check_output(config, config_hash(config))
    return manifest_shards(config.output.dir)


def manifest_shards(output_dir: Path) -> int:
    """The number of shards in the manifest of the run in ``output_dir``.

    Raises:
        ConfigError: if ``output_dir`` holds no run (no manifest).
    """
    manifest = DatasetLayout(output_dir).manifest
    if not manifest.exists():
        raise ConfigError("output.dir", f"{output_dir} holds no eocap run (no {manifest.name})")
    shards = pq.read_table(manifest, columns=["shard"]).column("shard")
    return len(pc.unique(shards))
