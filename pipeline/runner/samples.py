"""One sample on its way through a shard's stages, and the one place its row is assembled.

The shard flow (:mod:`pipeline.runner.build`) keeps a :class:`SampleWork` per sample and stores
in it what each stage returned for that sample (scene choice, chip, Sentinel-1, composite, map
context, caption outcome) or the failure that stopped it. Stages never see or change a row:
when they are done, :func:`sample_record` turns each :class:`SampleWork` into its
:class:`~pipeline.dataset.columns.SampleRecord`, once.

A row's status follows from what its sample reached (:func:`status_columns`): ``failed`` with
the stage and reason of its failure, ``pending_caption`` when the build leaves captions to the
separate caption stage, else ``ok``. A sample that failed only in captioning keeps its pixels,
composite and context, so it can be captioned again later.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import shapely

from pipeline.caption.interface import CaptionInput
from pipeline.core.config import RunConfig
from pipeline.core.errors import SampleFailure
from pipeline.core.types import MapContext
from pipeline.dataset.columns import ColumnGroup, SampleRecord, columns_in
from pipeline.geo.grid import ChipGrid
from pipeline.geo.sar import centi_coherence, centi_db
from pipeline.runner.captioning import CaptionOutcome
from pipeline.stages.chips import Chip
from pipeline.stages.coherence import CoherenceChip
from pipeline.stages.sampling import SampleSpec
from pipeline.stages.sar import SarChip, SarMissing
from pipeline.stages.scenes import SceneAssets, SceneChoice

__all__ = [
    "STATUS_COLUMNS",
    "CutChip",
    "SampleWork",
    "ScenePick",
    "StageFailure",
    "sample_record",
    "scene_options",
    "status_columns",
]

STATUS_COLUMNS = columns_in(ColumnGroup.OUTCOME)
"""The row columns that say whether a sample made it, and if not, where and why."""


@dataclass(frozen=True)
class ScenePick:
    """A scene to cut a sample's chip from.

    Attributes:
        scene: The scene's assets.
        grid: The chip's pixel grid in the scene's CRS.
        rank: The scene's place among the sample's covering scenes (0: the best).
    """

    scene: SceneAssets
    grid: ChipGrid
    rank: int


def scene_options(choice: SceneChoice, max_fallbacks: int) -> list[ScenePick]:
    """The scenes a sample's chip may be cut from, best first, at most ``max_fallbacks`` spare."""
    ranked = [(choice.scene, choice.grid), *choice.fallbacks][: max_fallbacks + 1]
    return [ScenePick(scene, grid, rank) for rank, (scene, grid) in enumerate(ranked)]


@dataclass(frozen=True)
class CutChip:
    """A chip and the scene it was cut from (not the best one when that one's COGs failed)."""

    chip: Chip
    scene: ScenePick


@dataclass(frozen=True)
class StageFailure:
    """The failure that stopped a sample, and the stage it stopped in."""

    stage: str
    failure: SampleFailure


@dataclass
class SampleWork:
    """What the stages found for one sample so far; the shard flow fills one field per stage.

    Attributes:
        spec: The planned sample.
        choice: The scenes the search found (best first, then fallbacks).
        cut: The chip and the scene it came from.
        rgb_png: The true-colour composite (PNG bytes).
        context: The chip's map context.
        sar: Its Sentinel-1 chip, or why it has none (None: the run reads no SAR, or the
            sample failed before its chip); never a failure of the sample.
        coherence: Its interferometric coherence, or why it has none (None: the run reads
            none, ``sar.coherence`` unset); never a failure of the sample.
        caption: What captioning gave it (None until captioned, or when the separate caption
            stage will caption it).
        failure: The failure that stopped it; a failed sample goes through no later stage.
    """

    spec: SampleSpec
    choice: SceneChoice | None = None
    cut: CutChip | None = None
    rgb_png: bytes | None = None
    context: MapContext | None = None
    sar: SarChip | SarMissing | None = None
    coherence: CoherenceChip | SarMissing | None = None
    caption: CaptionOutcome | None = None
    failure: StageFailure | None = None

    @property
    def sample_id(self) -> str:
        """The sample's id."""
        return self.spec.sample_id

    @property
    def scene(self) -> ScenePick | None:
        """The scene the row names: its chip's, else the best one the search found."""
        if self.cut is not None:
            return self.cut.scene
        if self.choice is not None:
            return ScenePick(self.choice.scene, self.choice.grid, 0)
        return None

    def caption_input(self) -> CaptionInput:
        """What a captioner needs of the sample (it must have its chip, composite and context)."""
        assert self.cut is not None and self.rgb_png is not None and self.context is not None
        return CaptionInput(
            self.sample_id,
            self.spec.period.name,
            self.cut.scene.scene.datetime,
            self.spec.location.lon,
            self.spec.location.lat,
            self.context,
            self.cut.chip.stats,
            self.rgb_png,
        )


def status_columns(failure: StageFailure | None, *, captioned: bool) -> dict[str, Any]:
    """The :data:`STATUS_COLUMNS` of a row, from its sample's failure and whether it has a caption.

    Args:
        failure: The failure that stopped the sample, if any.
        captioned: Whether captioning ran on the sample (else it waits for the caption stage).
    """
    if failure is not None:
        return {
            "status": "failed",
            "error_reason": failure.failure.reason,
            "error_message": f"[{failure.stage}] {failure.failure.message}",
        }
    return {
        "status": "ok" if captioned else "pending_caption",
        "error_reason": None,
        "error_message": None,
    }


def _scene_columns(pick: ScenePick, config: RunConfig) -> dict[str, Any]:
    footprint = pick.grid.footprint_lonlat()
    xmin, ymin, xmax, ymax = footprint.bounds
    scene = pick.scene
    bands = config.chips.band_list
    return {
        "geometry": shapely.to_wkb(footprint),
        "bbox": {"xmin": xmin, "ymin": ymin, "xmax": xmax, "ymax": ymax},
        "crs": pick.grid.crs,
        "transform": pick.grid.as_list(),
        "datetime": scene.datetime,
        "stac_item_id": scene.item_id,
        "stac_collection": scene.collection,
        "scene_cloud_cover": scene.cloud_cover,
        "scene_rank": pick.rank,
        "processing_baseline": scene.processing_baseline,
        "platform": scene.platform,
        "bands": [b.name for b in bands],
        "band_scale": [1e-4] * len(bands),
        "band_offset": [0.0] * len(bands),
        "radiometry_rule": scene.radiometry.rule,
    }


def _chip_columns(chip: Chip) -> dict[str, Any]:
    return {
        "pixels": chip.pixels,
        "scl": chip.scl,
        "offset_removed_dn": [chip.radiometry.offset_dn[name] for name in chip.band_names],
        "radiometry_check": chip.radiometry.check,
        "radiometry_dark_share": chip.radiometry.dark_share,
        # ChipStats fields are SampleRecord columns of the same names.
        **asdict(chip.stats),
    }


def _context_columns(context: MapContext) -> dict[str, Any]:
    return {
        "context": context.to_row(),
        "classes": context.classes,
        "tags": context.tags,
        "names": context.names,
    }


def _sar_columns(sar: SarChip | SarMissing) -> dict[str, Any]:
    if isinstance(sar, SarMissing):
        return {"sar_state": sar.state, "sar_message": sar.message}
    acquisition = sar.acquisition
    return {
        "sar_state": "ok",
        "sar_item_id": acquisition.item_id,
        "sar_collection": acquisition.collection,
        "sar_platform": acquisition.platform,
        "sar_orbit_state": acquisition.orbit_state,
        "sar_relative_orbit": acquisition.relative_orbit,
        "sar_datetime": acquisition.datetime,
        "sar_time_offset_s": sar.time_offset_s,
        "sar_polarisations": list(sar.polarisations),
        "sar_db": centi_db(sar.db),
    }


def _coherence_columns(coherence: CoherenceChip | SarMissing) -> dict[str, Any]:
    if isinstance(coherence, SarMissing):
        return {"coh_state": coherence.state, "coh_message": coherence.message}
    item = coherence.item
    return {
        "coh_state": "ok",
        "coh_item_id": item.item_id,
        "coh_start_datetime": item.start,
        "coh_end_datetime": item.end,
        "coh_time_offset_s": coherence.time_offset_s,
        "coherence": centi_coherence(coherence.coherence)[None],  # (COH, size, size)
    }


def sample_record(work: SampleWork, config: RunConfig) -> SampleRecord:
    """The shard row of a sample, from everything its stages returned."""
    spec = work.spec
    scene = work.scene
    return SampleRecord(
        sample_id=spec.sample_id,
        location_id=spec.location.location_id,
        location_name=spec.location.name,
        lon=spec.location.lon,
        lat=spec.location.lat,
        period=spec.period.name,
        period_start=spec.period.start,
        period_end=spec.period.end,
        overture_release=config.overture.release,
        rgb=None if work.rgb_png is None else {"bytes": work.rgb_png, "path": None},
        **status_columns(work.failure, captioned=work.caption is not None),
        **({} if scene is None else _scene_columns(scene, config)),
        **({} if work.cut is None else _chip_columns(work.cut.chip)),
        **({} if work.context is None else _context_columns(work.context)),
        **({} if work.sar is None else _sar_columns(work.sar)),
        **({} if work.coherence is None else _coherence_columns(work.coherence)),
        **({} if work.caption is None else work.caption.columns()),
    )
