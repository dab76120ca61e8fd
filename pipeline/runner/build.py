"""Building one shard: every stage, in order, on all samples of the shard at once.

This is the one function the flow's shard task calls. Each stage takes the samples that are
still alive and returns per-sample results or :class:`~pipeline.core.errors.SampleFailure`; a failed
sample keeps its row, with the reason and the stage, and the rest of the shard goes on.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import shapely

from pipeline import __version__
from pipeline.caption.checks import check_caption
from pipeline.caption.interface import Captioner, CaptionInput
from pipeline.caption.registry import make_captioner
from pipeline.caption.template import TemplateCaptioner
from pipeline.core.config import RunConfig
from pipeline.core.config_hash import config_hash
from pipeline.core.errors import SampleFailure
from pipeline.core.types import ChipArea, ChipStats, MapContext
from pipeline.dataset.columns import SampleRecord
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.stats import ShardStats, radiometry_overruled, table_counts, write_stats
from pipeline.dataset.writer import records_table, write_table
from pipeline.geo.grid import ChipGrid
from pipeline.io.cog import clear_http_cache
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.composite import render_rgb
from pipeline.stages.context import map_context
from pipeline.stages.sampling import SampleSpec, ShardPlan
from pipeline.stages.scenes import SceneAssets, SceneChoice, search_scenes

__all__ = ["STAGES", "build_shard", "caption_records", "config_hash", "finish_shard"]

STAGES = ("search", "chips", "composite", "context", "caption", "write")
"""Stage names, in order, as they appear in stats and reports."""


@dataclass
class _Timer:
    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


def _base_record(config: RunConfig, samples: list[SampleSpec]) -> dict[str, SampleRecord]:
    return {
        s.sample_id: SampleRecord(
            sample_id=s.sample_id,
            status="ok",
            location_id=s.location.location_id,
            location_name=s.location.name,
            lon=s.location.lon,
            lat=s.location.lat,
            period=s.period.name,
            period_start=s.period.start,
            period_end=s.period.end,
            overture_release=config.overture.release,
        )
        for s in samples
    }


def _fill_scene(
    rec: SampleRecord, scene: SceneAssets, grid: ChipGrid, rank: int, config: RunConfig
) -> None:
    footprint = grid.footprint_lonlat()
    xmin, ymin, xmax, ymax = footprint.bounds
    bands = config.chips.band_list
    rec.geometry = shapely.to_wkb(footprint)
    rec.bbox = {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax}
    rec.crs = grid.crs
    rec.transform = grid.as_list()
    rec.datetime = scene.datetime
    rec.stac_item_id = scene.item_id
    rec.stac_collection = scene.collection
    rec.scene_cloud_cover = scene.cloud_cover
    rec.scene_rank = rank
    rec.processing_baseline = scene.processing_baseline
    rec.platform = scene.platform
    rec.bands = [b.name for b in bands]
    rec.band_scale = [1e-4] * len(bands)
    rec.band_offset = [0.0] * len(bands)
    rec.radiometry_rule = scene.radiometry.rule


def _fill_chip(rec: SampleRecord, chip: Chip) -> None:
    rec.pixels = chip.pixels
    rec.scl = chip.scl
    rec.offset_removed_dn = [chip.radiometry.offset_dn[name] for name in chip.band_names]
    rec.radiometry_check = chip.radiometry.check
    rec.radiometry_dark_share = chip.radiometry.dark_share
    # ChipStats fields are SampleRecord columns of the same names.
    for name, value in asdict(chip.stats).items():
        setattr(rec, name, value)


def _fill_context(rec: SampleRecord, ctx: MapContext) -> None:
    rec.context = ctx.to_row()
    rec.classes = ctx.classes
    rec.tags = ctx.tags
    rec.names = ctx.names


def _read_with_fallbacks(
    choices: dict[str, SceneChoice], records: dict[str, SampleRecord], config: RunConfig
) -> tuple[dict[str, Chip | SampleFailure], dict[str, ChipGrid]]:
    """Cut every chip; a chip whose COGs fail is cut from its next-best scene, if any."""
    options = {
        sid: [(c.scene, c.grid), *c.fallbacks][: config.chips.max_scene_fallbacks + 1]
        for sid, c in choices.items()
    }
    rank = dict.fromkeys(choices, 0)
    errors: dict[str, list[str]] = {sid: [] for sid in choices}
    chips: dict[str, Chip | SampleFailure] = {}
    pending = list(choices)
    while pending:
        requests = [ChipRequest(sid, *options[sid][rank[sid]]) for sid in pending]
        got = read_chips(
            requests,
            config.chips.band_list,
            threads=config.chips.read_threads,
            max_requests_per_host=config.chips.max_requests_per_host,
        )
        pending = []
        for sid, result in got.items():
            retryable = isinstance(result, SampleFailure) and result.reason.startswith("cog_")
            if retryable and rank[sid] + 1 < len(options[sid]):
                assert isinstance(result, SampleFailure)
                errors[sid].append(f"{options[sid][rank[sid]][0].item_id}: {result.message}")
                rank[sid] += 1
                pending.append(sid)
                continue
            if isinstance(result, SampleFailure) and errors[sid]:
                result = SampleFailure(result.reason, "; ".join([*errors[sid], result.message]))
            chips[sid] = result
            if rank[sid] and isinstance(result, Chip):
                _fill_scene(records[sid], *options[sid][rank[sid]], rank[sid], config)
    return chips, {sid: options[sid][rank[sid]][1] for sid in choices}


def caption_records(
    records: dict[str, SampleRecord],
    alive: dict[str, Any],
    chip_stats: dict[str, ChipStats],
    contexts: dict[str, MapContext],
    config: RunConfig,
    captioner: Captioner | None = None,
) -> None:
    """Caption the live samples, fill their caption columns and run the caption checks.

    A sample whose captioning fails is marked failed but keeps its pixels, so it can be
    captioned again later (``eocap caption``, ``--retry-failed``).
    """
    cfg = config.captioner
    cap = captioner or make_captioner(cfg, seed=config.seed)
    obscured = TemplateCaptioner(seed=config.seed, cloudy_threshold=0.0)
    to_model: list[CaptionInput] = []
    to_rule: list[CaptionInput] = []
    for sid in list(alive):
        stats = chip_stats[sid]
        if stats.cloud_fraction >= cfg.skip_cloud_fraction:
            _fail(
                records,
                alive,
                sid,
                "caption",
                SampleFailure(
                    "too_cloudy",
                    f"cloud fraction {stats.cloud_fraction:.2f} >= "
                    f"captioner.skip_cloud_fraction {cfg.skip_cloud_fraction}",
                ),
                keep_pixels=True,
            )
            continue
        rec = records[sid]
        assert rec.datetime is not None and rec.rgb is not None
        x = CaptionInput(
            sid, rec.period, rec.datetime, rec.lon, rec.lat, contexts[sid], stats, rec.rgb["bytes"]
        )
        # A chip the model cannot see into gets a caption that says so, not a guess.
        hidden = max(stats.cloud_fraction, stats.nodata_fraction) >= cfg.cloudy_threshold
        (to_rule if hidden else to_model).append(x)
    jobs: list[tuple[Captioner, list[CaptionInput]]] = [(cap, to_model), (obscured, to_rule)]
    for backend, inputs in jobs:
        if not inputs:
            continue
        by_id = {x.sample_id: x for x in inputs}
        for result in backend.caption_batch(inputs):
            sid = result.sample_id
            rec = records[sid]
            rec.captioner = backend.name if backend is cap else "rule:obscured"
            rec.prompt_version = backend.prompt_version
            rec.generation_params = backend.generation_params
            if result.caption is None or not result.caption.strip():
                _fail(
                    records,
                    alive,
                    sid,
                    "caption",
                    SampleFailure(
                        result.error_reason or "caption_empty", result.error_message or "no caption"
                    ),
                    keep_pixels=True,
                )
                continue
            rec.caption = result.caption.strip()
            rec.caption_mentions = list(result.mentions)
            rec.qa = [{"question": q, "answer": a} for q, a in result.qa]
            rec.finish_reason = result.finish_reason
            rec.prompt_tokens = result.prompt_tokens
            rec.completion_tokens = result.completion_tokens
            rec.caption_latency_s = result.latency_s
            x = by_id[sid]
            checks = check_caption(
                rec.caption, finish_reason=result.finish_reason, context=x.context, stats=x.stats
            )
            rec.caption_flags = list(checks.flags)
            rec.unsupported_claims = list(checks.unsupported_claims)
            rec.clip_tokens = checks.clip_tokens
            rec.caption_words = checks.words
            rec.caption_language = checks.language


def _fail(
    records: dict[str, SampleRecord],
    alive: dict[str, Any],
    sid: str,
    stage: str,
    err: SampleFailure,
    *,
    keep_pixels: bool = False,
) -> None:
    records[sid].fail(err.reason, f"[{stage}] {err.message}", keep_pixels=keep_pixels)
    alive.pop(sid, None)


def _build_records(
    samples: list[SampleSpec],
    config: RunConfig,
    overture_root: Path,
    captioner: Captioner | None,
    timer: _Timer,
) -> list[SampleRecord]:
    records = _base_record(config, samples)
    alive: dict[str, Any] = {}

    def fail(sid: str, stage: str, err: SampleFailure) -> None:
        _fail(records, alive, sid, stage, err)

    with timer.stage("search"):
        choices = search_scenes(
            samples,
            config.stac,
            config.chips.band_list,
            chip_size=config.chips.size_px,
            resolution=config.chips.resolution_m,
        )
    for sid, choice in choices.items():
        if isinstance(choice, SampleFailure):
            fail(sid, "search", choice)
        else:
            _fill_scene(records[sid], choice.scene, choice.grid, 0, config)
            alive[sid] = choice

    with timer.stage("chips"):
        chips, grids = _read_with_fallbacks(alive, records, config)
    for sid, chip in chips.items():
        if isinstance(chip, SampleFailure):
            fail(sid, "chips", chip)
        else:
            _fill_chip(records[sid], chip)

    with timer.stage("composite"):
        for sid in list(alive):
            chip = chips[sid]
            assert isinstance(chip, Chip)
            records[sid].rgb = {"bytes": render_rgb(chip.pixels, chip.band_names), "path": None}

    with timer.stage("context"):
        contexts = map_context([ChipArea(sid, grids[sid]) for sid in alive], overture_root)
    for sid, ctx in contexts.items():
        _fill_context(records[sid], ctx)

    if config.captioner.stage == "separate":
        # Captions come later, from the caption flow on GPU workers (eocap caption).
        for sid in alive:
            records[sid].status = "pending_caption"
    else:
        with timer.stage("caption"):
            stats = {sid: chip.stats for sid, chip in chips.items() if isinstance(chip, Chip)}
            caption_records(records, alive, stats, contexts, config, captioner)
    return [records[s.sample_id] for s in samples]


def build_shard(
    shard: ShardPlan,
    config: RunConfig,
    *,
    overture_root: Path,
    captioner: Captioner | None = None,
    only: set[str] | None = None,
) -> ShardStats:
    """Build one shard end to end and write it with its stats sidecar.

    Args:
        shard: The planned samples.
        config: The run config.
        overture_root: Local Overture tree (see :func:`pipeline.stages.context.prepare_overture`).
        captioner: Captioner to use; built from the config when ``None``.
        only: Rebuild just these samples of an existing shard (``--retry-failed``): their new
            rows replace the old ones, every other row is kept as it is, order unchanged.

    Returns:
        The shard's stats (also written next to the shard).
    """
    t_start = time.perf_counter()
    timer = _Timer()
    samples = [s for s in shard.samples if only is None or s.sample_id in only]
    if only is not None:
        clear_http_cache()  # a retry must not see what GDAL cached of the failed COGs
    rows = _build_records(samples, config, overture_root, captioner, timer)
    n_bands, size = len(config.chips.band_list), config.chips.size_px
    parquet_path = DatasetLayout(config.output.dir).shard_path(shard.index)
    with timer.stage("write"):
        table = records_table(rows, n_bands=n_bands, size=size)
        if only is not None:
            old = pq.read_table(parquet_path, schema=table.schema)
            kept = old.filter(pc.invert(pc.is_in(old.column("sample_id"), pa.array(list(only)))))
            merged = pa.concat_tables([kept, table])
            position = {s.sample_id: i for i, s in enumerate(shard.samples)}
            order = sorted(
                range(merged.num_rows),
                key=lambda k: position[merged.column("sample_id")[k].as_py()],
            )
            table = merged.take(order)
    return finish_shard(
        table,
        shard.index,
        config,
        stage_seconds=timer.seconds,
        duration_s=time.perf_counter() - t_start,
    )


def finish_shard(
    table: pa.Table,
    index: int,
    config: RunConfig,
    *,
    stage_seconds: dict[str, float],
    duration_s: float,
) -> ShardStats:
    """Write a shard's table and then its stats sidecar, both atomically; return the stats.

    The one place a shard is finished: by the build, a ``--retry-failed`` merge, or the
    separate caption stage. The time of the write itself is added to ``stage_seconds["write"]``
    and to ``duration_s``.
    """
    parquet_path, stats_path = DatasetLayout(config.output.dir).shard_paths(index)
    chash = config_hash(config)
    t0 = time.perf_counter()
    nbytes = write_table(
        table,
        parquet_path,
        row_group_mb=config.output.row_group_mb,
        extra_metadata={
            "config_hash": chash,
            "eocap_version": __version__,
            "dataset": config.name,
            "shard": index,
        },
    )
    written = time.perf_counter() - t0
    seconds = dict(stage_seconds)
    seconds["write"] = seconds.get("write", 0.0) + written
    ok, failed, pending, reasons, flags = table_counts(table)
    sample_ids = table.column("sample_id").to_pylist()
    stats = ShardStats(
        shard=index,
        path=parquet_path.name,
        count=table.num_rows,
        ok=ok,
        failed=failed,
        pending_caption=pending,
        failures_by_reason=reasons,
        stage_seconds={k: round(v, 3) for k, v in seconds.items()},
        duration_s=round(duration_s + written, 3),
        bytes=nbytes,
        finished_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        config_hash=chash,
        sample_ids_sha1=hashlib.sha1("\n".join(sample_ids).encode()).hexdigest(),
        caption_flags=flags,
        radiometry_overruled=radiometry_overruled(table),
    )
    write_stats(stats, stats_path)
    return stats
