"""Issue 14's must-show tables: one modality-aware model, probed per input view and label budget.

Given a trained model folder (``model.modalities: [s2, s1]``, docs/training.md) and a release
with SAR, every ok sample of the release (or ``--split``) is embedded once per **view**:

* ``s2``: the Sentinel-2 bands only;
* ``s1``: the Sentinel-1 polarisations only (samples without SAR are left out);
* ``s2+s1``: both (samples without SAR embed their S2);
* ``s2-half``: S2 with every second of its bands dropped (channels 2, 4, ... of the model's
  S2 bands: for llama3-ms-clip-10, B03, B05, B07, B8A, B12), as channel dropout drops them.

Each view's embeddings go through ``eocap probe``'s protocol (:func:`trainer.probe.run_probe`:
spatially separated train and test, budgets drawn from train, seeds) for the four tasks of
:data:`trainer.probe.TASKS` that have two classes among the embedded samples: every view at
all labels on the samples all views embed (so the views differ only in their inputs, not in
their samples), and the ``s2+s1`` view at 200, 500 and all labels on every sample it embeds.
Written to ``OUT``:

* ``modality-probe.md``: the views table (balanced accuracy at all labels, per task and probe
  model, one column per view) and the budgets table (200 and 500 labels against all, view
  ``s2+s1``), mean ± std over the seeds; a task or view that could not be probed says why;
* ``modality-probe.json``: every score summary per view, the skips, the settings;
* ``embeddings-VIEW.parquet``: the vectors of each view.

Run: ``.venv/bin/python -m benchmarks.modality_probe MODEL RELEASE --out DIR [--split test]
[--seeds 5] [--task vegetation ...] [--block-deg 0.05] [--test-fraction 0.3]``
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.checkpoints import LoadedModel, load_model_folder
from trainer.embed import embed_samples
from trainer.plots import Bar, bar_charts, learning_curves
from trainer.probe import (
    MODELS,
    TASKS,
    ProbeReport,
    read_embeddings,
    read_release_samples,
    run_probe,
    task_labels,
)

BUDGETS: tuple[int | None, ...] = (200, 500, None)
"""The budgets of the tables: the paper's 200-500 labels against all."""
FULL_VIEW = "s2+s1"
"""The view of the budgets table: everything the model takes."""


@dataclass(frozen=True)
class View:
    """One input subset: modalities (None: all the model has) and channels left out."""

    name: str
    modalities: tuple[str, ...] | None
    drop: tuple[str, ...] = ()


def views(loaded: LoadedModel) -> list[View]:
    """The four views of ``loaded``'s model (``s2-half`` drops its odd-numbered S2 bands)."""
    bands = loaded.preprocessing.bands
    return [
        View("s2", ("s2",)),
        View("s1", ("s1",)),
        View(FULL_VIEW, ("s2", "s1")),
        View("s2-half", ("s2",), tuple(bands[1::2])),
    ]


def _cell(summary: dict[str, Any] | None) -> str:
    if summary is None:
        return "–"
    capped = " (capped)" if summary["capped_seeds"] else ""
    return (
        f"{100 * summary['balanced_accuracy_mean']:.1f} ± "
        f"{100 * summary['balanced_accuracy_std']:.1f}{capped}"
    )


def _summaries(report: ProbeReport) -> dict[tuple[str, str, Any], dict[str, Any]]:
    found = {}
    for score in report.scores:
        summary = score.summary()
        found[(summary["task"], summary["model"], summary["budget"])] = summary
    return found


def markdown(
    results: dict[str, ProbeReport],
    budgets: ProbeReport | None,
    skipped: dict[str, str],
    task_skips: dict[str, dict[str, str]],
    tasks: Sequence[str],
    embedded: dict[str, int],
    common: int,
) -> str:
    """The views table and the budgets table."""
    names = [*results, *skipped]
    by_view = {name: _summaries(report) for name, report in results.items()}
    full = {} if budgets is None else _summaries(budgets)
    counts = ", ".join(f"{name} {n}" for name, n in embedded.items())
    lines = [
        "# Probe scores by input view and label budget",
        "",
        "Balanced accuracy (%), mean ± std over seeds; spatially separated train and test.",
        f"Samples embedded per view: {counts}.",
        "",
        "## Views (all labels)",
        "",
        f"Every view on the same {common} samples: those embedded in every view (with S1, the "
        "samples that have SAR), so the columns differ only in the model's inputs.",
        "",
        "| task | probe | " + " | ".join(names) + " |",
        "|---|---|" + "---:|" * len(names),
    ]
    models = sorted({key[1] for found in [*by_view.values(), full] for key in found})
    for task in tasks:
        for model in models:
            cells = [_cell(by_view.get(name, {}).get((task, model, "all"))) for name in names]
            lines.append(f"| {task} | {model} | " + " | ".join(cells) + " |")
    columns = ["all" if b is None else b for b in BUDGETS]
    lines += [
        "",
        f"## Label budgets (view {FULL_VIEW})",
        "",
        f"Every sample the {FULL_VIEW} view embeds (those without SAR as S2 only).",
        "",
        "| task | probe | " + " | ".join(f"{c} labels" for c in columns) + " |",
        "|---|---|" + "---:|" * len(columns),
    ]
    for task in tasks:
        for model in models:
            cells = [_cell(full.get((task, model, c))) for c in columns]
            lines.append(f"| {task} | {model} | " + " | ".join(cells) + " |")
    notes = [f"- {name}: {why}" for name, why in skipped.items()]
    notes += [
        f"- {name} / {task}: {why}"
        for name, whys in task_skips.items()
        for task, why in whys.items()
    ]
    if notes:
        lines += ["", "## Not scored", "", *notes]
    return "\n".join(lines) + "\n"


def views_chart(
    results: dict[str, ProbeReport], tasks: Sequence[str], output: Path, probe: str = "logistic"
) -> tuple[Path, Path]:
    """``output`` .svg and .png: per task, one bar per view (``probe`` model, all labels)."""
    by_view = {name: _summaries(report) for name, report in results.items()}
    panels = []
    for task in tasks:
        key = (task, probe, "all")
        found = [(name, f[key]) for name, f in by_view.items() if key in f]
        if not found:
            continue
        classes = next(t.classes for r in results.values() for t in r.tasks if t.name == task)
        bars = [
            Bar(name, s["balanced_accuracy_mean"], s["balanced_accuracy_std"]) for name, s in found
        ]
        panels.append((task, 1 / len(classes), [bars]))
    return bar_charts(panels, [f"{probe}, all labels"], "balanced accuracy", output)


def modality_probe(
    loaded: LoadedModel,
    release: str,
    out: Path,
    *,
    model_ref: str,
    split: str | None = None,
    tasks: Sequence[str] = tuple(TASKS),
    models: Sequence[str] = tuple(MODELS),
    seeds: Sequence[int] = range(5),
    block_deg: float = 0.05,
    test_fraction: float = 0.3,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Embed every view, probe each, write the tables; returns what the JSON holds."""
    out.mkdir(parents=True, exist_ok=True)
    samples = read_release_samples(release, split)
    skipped: dict[str, str] = {}
    task_skips: dict[str, dict[str, str]] = {}
    embedded: dict[str, int] = {}
    vectors_of: dict[str, dict[str, Any]] = {}
    for view in views(loaded):
        path = out / f"embeddings-{view.name}.parquet"
        try:
            embedded[view.name] = embed_samples(
                loaded,
                release,
                path,
                split=split,
                batch_size=batch_size,
                model_ref=model_ref,
                modalities=view.modalities,
                drop_channels=view.drop,
            )
        except ValueError as exc:
            skipped[view.name] = str(exc)
            continue
        if not embedded[view.name]:
            skipped[view.name] = "no sample has these channels"
            continue
        ids, vectors = read_embeddings(path)
        vectors_of[view.name] = dict(zip(ids, vectors, strict=True))
    common = sorted(set.intersection(*(set(v) for v in vectors_of.values()))) if vectors_of else []

    def probe(view: str, ids: list[str], budgets: Sequence[int | None]) -> ProbeReport:
        vectors = np.stack([vectors_of[view][i] for i in ids])
        report = ProbeReport(block_deg, test_fraction, list(seeds))
        for name in tasks:
            try:
                one = run_probe(
                    ids,
                    vectors,
                    samples,
                    [task_labels(TASKS[name], samples)],
                    models=models,
                    budgets=budgets,
                    seeds=seeds,
                    block_deg=block_deg,
                    test_fraction=test_fraction,
                )
            except ValueError as exc:
                task_skips.setdefault(view, {})[name] = str(exc)
                continue
            report.tasks.extend(one.tasks)
            report.scores.extend(one.scores)
        return report

    results = {view: probe(view, common, (None,)) for view in vectors_of} if common else {}
    budgets = None
    if FULL_VIEW in vectors_of:
        budgets = probe(FULL_VIEW, sorted(vectors_of[FULL_VIEW]), BUDGETS)
    text = markdown(results, budgets, skipped, task_skips, tasks, embedded, len(common))
    summary = {
        "model": model_ref,
        "release": release,
        "split": split,
        "views": {v.name: {"modalities": v.modalities, "drop": v.drop} for v in views(loaded)},
        "common_samples": len(common),
        "results": {name: report.to_json() for name, report in results.items()},
        "budgets": None if budgets is None else budgets.to_json(),
        "embedded": embedded,
        "skipped_views": skipped,
        "skipped_tasks": task_skips,
    }
    (out / "modality-probe.md").write_text(text)
    (out / "modality-probe.json").write_text(json.dumps(summary, indent=2) + "\n")
    if results:
        views_chart(results, tasks, out / "modality-views")
    if budgets is not None and budgets.tasks:
        learning_curves(budgets.curves(), "balanced accuracy", out / "modality-budgets")
    return summary


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("model", type=Path, help="a modality-aware model folder")
    parser.add_argument("release", help="the release (folder or URL), with SAR")
    parser.add_argument("--out", type=Path, required=True, help="folder for tables, embeddings")
    parser.add_argument("--split", help="only this release split (default: all)")
    parser.add_argument("--task", action="append", choices=list(TASKS), help="default: all four")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--block-deg", type=float, default=0.05)
    parser.add_argument("--test-fraction", type=float, default=0.3)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args(argv)
    modality_probe(
        load_model_folder(args.model),
        args.release,
        args.out,
        model_ref=str(args.model),
        split=args.split,
        tasks=args.task or tuple(TASKS),
        seeds=range(args.seeds),
        block_deg=args.block_deg,
        test_fraction=args.test_fraction,
        batch_size=args.batch_size,
    )
    sys.stdout.write((args.out / "modality-probe.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
