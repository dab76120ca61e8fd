"""The captioning rules a run applies, inline in a shard build or in the separate caption stage.

* A chip at least ``captioner.skip_cloud_fraction`` cloudy is not captioned (``too_cloudy``).
* A chip the model cannot see into (cloud or nodata at least ``captioner.cloudy_threshold``)
  gets a rule caption that says so (``rule:obscured``), not a guess.
* Every other chip goes to the configured backend.
* Every caption is checked (:func:`pipeline.caption.checks.check_caption`).

:func:`caption_samples` returns a :class:`CaptionOutcome` per chip; whoever writes the row turns
it into the caption columns (:meth:`CaptionOutcome.columns`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.caption.checks import CaptionChecks, check_caption
from pipeline.caption.interface import Captioner, CaptionInput, CaptionResult
from pipeline.caption.registry import make_captioner
from pipeline.caption.template import TemplateCaptioner
from pipeline.core.config import RunConfig
from pipeline.core.errors import SampleFailure
from pipeline.dataset.columns import ColumnGroup, columns_in

__all__ = ["CAPTION_RESULT_COLUMNS", "CaptionOutcome", "caption_samples"]

CAPTION_RESULT_COLUMNS = columns_in(ColumnGroup.CAPTION)
"""The row columns captioning fills (the row's status aside)."""

OBSCURED_CAPTIONER = "rule:obscured"
"""The ``captioner`` of chips the model cannot see into."""


@dataclass(frozen=True)
class CaptionOutcome:
    """What captioning gave one chip: a checked caption, or why there is none.

    Attributes:
        failure: Why there is no caption (``too_cloudy``, or the backend's error); ``None``
            when there is one.
        captioner: The backend that answered (``None`` when the chip was never sent).
        prompt_version: That backend's prompt version.
        generation_params: That backend's generation settings (JSON).
        result: The backend's result, when it gave a caption.
        checks: The caption checks, when there is a caption.
    """

    failure: SampleFailure | None
    captioner: str | None = None
    prompt_version: str | None = None
    generation_params: str | None = None
    result: CaptionResult | None = None
    checks: CaptionChecks | None = None

    def columns(self) -> dict[str, Any]:
        """Every one of :data:`CAPTION_RESULT_COLUMNS` (``None`` where there is no caption)."""
        values: dict[str, Any] = dict.fromkeys(CAPTION_RESULT_COLUMNS)
        values.update(
            captioner=self.captioner,
            prompt_version=self.prompt_version,
            generation_params=self.generation_params,
        )
        r, c = self.result, self.checks
        if r is None or r.caption is None or c is None:
            return values
        values.update(
            caption=r.caption.strip(),
            caption_mentions=list(r.mentions),
            qa=[{"question": q, "answer": a} for q, a in r.qa],
            finish_reason=r.finish_reason,
            prompt_tokens=r.prompt_tokens,
            completion_tokens=r.completion_tokens,
            caption_latency_s=r.latency_s,
            caption_flags=list(c.flags),
            unsupported_claims=list(c.unsupported_claims),
            clip_tokens=c.clip_tokens,
            caption_words=c.words,
            caption_language=c.language,
        )
        return values


def _outcome(
    result: CaptionResult, x: CaptionInput, backend: Captioner, name: str
) -> CaptionOutcome:
    failure = None
    checks = None
    if result.caption is None or not result.caption.strip():
        failure = SampleFailure(
            result.error_reason or "caption_empty", result.error_message or "no caption"
        )
    else:
        checks = check_caption(
            result.caption.strip(),
            finish_reason=result.finish_reason,
            context=x.context,
            stats=x.stats,
        )
    return CaptionOutcome(
        failure,
        captioner=name,
        prompt_version=backend.prompt_version,
        generation_params=backend.generation_params,
        result=None if failure else result,
        checks=checks,
    )


def caption_samples(
    inputs: Sequence[CaptionInput], config: RunConfig, captioner: Captioner | None = None
) -> dict[str, CaptionOutcome]:
    """Caption chips by the rules above; one outcome per sample id.

    Args:
        inputs: The chips to caption.
        config: The run config (``captioner`` section and ``seed``).
        captioner: Captioner to use; built from the config when ``None``.
    """
    cfg = config.captioner
    model = captioner or make_captioner(cfg, seed=config.seed)
    obscured = TemplateCaptioner(seed=config.seed, cloudy_threshold=0.0)
    outcomes: dict[str, CaptionOutcome] = {}
    to_model: list[CaptionInput] = []
    to_rule: list[CaptionInput] = []
    for x in inputs:
        if x.stats.cloud_fraction >= cfg.skip_cloud_fraction:
            outcomes[x.sample_id] = CaptionOutcome(
                SampleFailure(
                    "too_cloudy",
                    f"cloud fraction {x.stats.cloud_fraction:.2f} >= "
                    f"captioner.skip_cloud_fraction {cfg.skip_cloud_fraction}",
                )
            )
            continue
        hidden = max(x.stats.cloud_fraction, x.stats.nodata_fraction) >= cfg.cloudy_threshold
        (to_rule if hidden else to_model).append(x)
    jobs: list[tuple[Captioner, str, list[CaptionInput]]] = [
        (model, model.name, to_model),
        (obscured, OBSCURED_CAPTIONER, to_rule),
    ]
    for backend, name, batch in jobs:
        if not batch:
            continue
        by_id = {x.sample_id: x for x in batch}
        for result in backend.caption_batch(batch):
            outcomes[result.sample_id] = _outcome(result, by_id[result.sample_id], backend, name)
    return outcomes
