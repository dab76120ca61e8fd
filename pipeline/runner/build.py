"""Building one shard: every stage, in order, on all samples of the shard at once.

This is the one function the flow's shard task calls. Each stage takes the samples that are
still alive and returns a result or a :class:`~pipeline.core.errors.SampleFailure` per sample;
the shard flow stores it in the sample's :class:`~pipeline.runner.samples.SampleWork`. A failed
sample goes through no later stage but keeps its row, with the reason and the stage, and the
rest of the shard goes on. Rows are assembled once, after the last stage
(:func:`~pipeline.runner.samples.sample_record`), then written by
:func:`~pipeline.runner.finish.finish_shard`.

Here: the stage timer, the stage order, and the scene fallbacks of the chip stage (a chip whose
COGs fail is cut from the sample's next-best scene).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.caption.interface import Captioner
from pipeline.core.config import RunConfig
from pipeline.core.errors import SampleFailure
from pipeline.core.types import ChipArea
from pipeline.dataset.columns import SampleRecord
from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.stats import ShardStats
from pipeline.dataset.writer import records_table
from pipeline.io.cog import clear_http_cache
from pipeline.runner.captioning import caption_samples
from pipeline.runner.finish import finish_shard
from pipeline.runner.retry import merge_retried
from pipeline.runner.samples import (
    CutChip,
    SampleWork,
    ScenePick,
    StageFailure,
    sample_record,
    scene_options,
)
from pipeline.stages.chips import Chip, ChipRequest, read_chips
from pipeline.stages.coherence import coherence_for_samples
from pipeline.stages.composite import render_rgb
from pipeline.stages.context import map_context
from pipeline.stages.sampling import SampleSpec, ShardPlan
from pipeline.stages.sar import SarCatalog, SarRequest, sar_for_samples
from pipeline.stages.scenes import SceneChoice, search_scenes

__all__ = ["STAGES", "StageTimer", "build_records", "build_shard"]

STAGES = ("search", "chips", "sar", "composite", "context", "caption", "write")
"""Stage names, in order, as they appear in stats and reports."""


@dataclass
class StageTimer:
    """Wall seconds spent in each stage of :data:`STAGES`."""

    seconds: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Add the time spent in the ``with`` block to stage ``name``."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - t0


def _read_with_fallbacks(
    choices: dict[str, SceneChoice], config: RunConfig
) -> dict[str, CutChip | SampleFailure]:
    """Cut every chip; a chip whose COGs fail is cut from its next-best scene, if any.

    At most ``chips.max_scene_fallbacks`` spare scenes are tried; a chip that fails in all of
    them fails with the errors of every scene tried.
    """
    options = {
        sid: scene_options(c, config.chips.max_scene_fallbacks) for sid, c in choices.items()
    }
    given_up: dict[str, list[str]] = {sid: [] for sid in choices}  # one error per scene left
    out: dict[str, CutChip | SampleFailure] = {}
    pending = list(choices)
    while pending:
        picks: dict[str, ScenePick] = {sid: options[sid][len(given_up[sid])] for sid in pending}
        got = read_chips(
            [ChipRequest(sid, p.scene, p.grid) for sid, p in picks.items()],
            config.chips.band_list,
            threads=config.chips.read_threads,
            max_requests_per_host=config.chips.max_requests_per_host,
        )
        pending = []
        for sid, result in got.items():
            pick = picks[sid]
            if isinstance(result, Chip):
                out[sid] = CutChip(result, pick)
            elif result.reason.startswith("cog_") and pick.rank + 1 < len(options[sid]):
                given_up[sid].append(f"{pick.scene.item_id}: {result.message}")
                pending.append(sid)
            elif given_up[sid]:
                out[sid] = SampleFailure(result.reason, "; ".join([*given_up[sid], result.message]))
            else:
                out[sid] = result
    return out


def _run_stages(
    samples: Sequence[SampleSpec],
    config: RunConfig,
    overture_root: Path,
    captioner: Captioner | None,
    timer: StageTimer,
) -> list[SampleWork]:
    """Every stage on the samples; what each returned is stored in its sample's work."""
    works = {s.sample_id: SampleWork(s) for s in samples}

    def fail(work: SampleWork, stage: str, failure: SampleFailure) -> None:
        work.failure = StageFailure(stage, failure)

    with timer.stage("search"):
        choices = search_scenes(
            samples,
            config.stac,
            config.chips.band_list,
            chip_size=config.chips.size_px,
            resolution=config.chips.resolution_m,
        )
    # Live samples with what the last stage gave them, in the order the search returned them.
    searched: list[tuple[SampleWork, SceneChoice]] = []
    for sid, choice in choices.items():
        if isinstance(choice, SampleFailure):
            fail(works[sid], "search", choice)
        else:
            works[sid].choice = choice
            searched.append((works[sid], choice))

    with timer.stage("chips"):
        results = _read_with_fallbacks({w.sample_id: c for w, c in searched}, config)
    cut: list[tuple[SampleWork, CutChip]] = []
    for work, _ in searched:
        result = results[work.sample_id]
        if isinstance(result, SampleFailure):
            fail(work, "chips", result)
        else:
            work.cut = result
            cut.append((work, result))

    # Sentinel-1 (sar:): a sample without it records why and stays ok, so no failure here.
    # Coherence (sar.coherence) is part of the same stage, and as optional.
    if config.sar is not None:
        requests = [SarRequest(w.sample_id, c.scene.grid, c.scene.scene.datetime) for w, c in cut]
        catalog = SarCatalog(config.sar, config.stac)  # one open serves SAR and coherence
        threads, per_host = config.chips.read_threads, config.chips.max_requests_per_host
        with timer.stage("sar"):
            sar = sar_for_samples(
                requests, config.sar, catalog, threads=threads, max_requests_per_host=per_host
            )
            coherence = (
                {}
                if config.sar.coherence is None
                else coherence_for_samples(
                    requests, config.sar, catalog, threads=threads, max_requests_per_host=per_host
                )
            )
        for work, _ in cut:
            work.sar = sar[work.sample_id]
            work.coherence = coherence.get(work.sample_id)

    with timer.stage("composite"):
        for work, c in cut:
            work.rgb_png = render_rgb(c.chip.pixels, c.chip.band_names)

    with timer.stage("context"):
        contexts = map_context([ChipArea(w.sample_id, c.scene.grid) for w, c in cut], overture_root)
    for work, _ in cut:
        work.context = contexts[work.sample_id]

    # With captioner.stage: separate, captions come later, from the caption flow on GPU
    # workers (eocap caption): the rows wait as pending_caption.
    if config.captioner.stage != "separate":
        with timer.stage("caption"):
            outcomes = caption_samples([w.caption_input() for w, _ in cut], config, captioner)
        for work, _ in cut:
            work.caption = outcomes[work.sample_id]
            if work.caption.failure is not None:
                fail(work, "caption", work.caption.failure)
    return [works[s.sample_id] for s in samples]


def build_records(
    samples: Sequence[SampleSpec],
    config: RunConfig,
    *,
    overture_root: Path,
    timer: StageTimer,
    captioner: Captioner | None = None,
) -> list[SampleRecord]:
    """The rows of ``samples``, in their order, after every stage up to the write.

    Args:
        samples: The samples to build.
        config: The run config.
        overture_root: Local Overture tree (see :func:`pipeline.stages.context.prepare_overture`).
        timer: Gets the wall time of each stage.
        captioner: Captioner to use; built from the config when ``None``.
    """
    works = _run_stages(samples, config, overture_root, captioner, timer)
    return [sample_record(work, config) for work in works]


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
    timer = StageTimer()
    samples = [s for s in shard.samples if only is None or s.sample_id in only]
    if only is not None:
        clear_http_cache()  # a retry must not see what GDAL cached of the failed COGs
    rows = build_records(
        samples, config, overture_root=overture_root, timer=timer, captioner=captioner
    )
    with timer.stage("write"):
        table = records_table(
            rows,
            n_bands=len(config.chips.band_list),
            size=config.chips.size_px,
            n_polarisations=None if config.sar is None else len(config.sar.polarisations),
        )
        if only is not None:
            old = DatasetLayout(config.output.dir).shard_path(shard.index)
            table = merge_retried(table, old, shard)
    return finish_shard(
        table,
        shard.index,
        config,
        stage_seconds=timer.seconds,
        duration_s=time.perf_counter() - t_start,
    )
