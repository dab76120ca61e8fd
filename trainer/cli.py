"""``eocap train``, ``eocap eval``, ``eocap embed``, ``eocap probe``, ``eocap export-model``.

Registered by ``flows.cli`` (the one CLI). Torch and transformers load inside the commands,
so ``eocap --help`` stays fast and works without the ``train`` extra.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

from pipeline.core.errors import ConfigError
from pipeline.core.yaml_config import parse_set_options

__all__ = ["add_trainer_parsers"]

console = Console(stderr=True)

EPILOG = """\
examples:
  eocap release output/demo output/demo-release --cell-deg 0.02   a release with a test split
  eocap train                          train the tiny demo model on output/demo-release (CPU)
  eocap train --print-config > train.yaml    every field, documented
  eocap train train.yaml --resume      continue from the newest checkpoint, exactly
  eocap train train.yaml --procs 8     DDP on 8 GPUs of this machine (torchrun underneath)
  eocap eval output/train/model --benchmark eurosat=/data/EuroSAT_MS
  eocap embed output/train/model output/demo-release embeddings.parquet
  eocap probe output/train/model output/demo-release --out output/probe   the four tasks

Docs: docs/training.md, docs/evaluation-datasets.md.
"""


def _error(message: str) -> int:
    console.print(f"[bold red]error:[/bold red] {message}", soft_wrap=True)
    return 2


def _missing_extra(exc: ImportError) -> int:
    return _error(
        f"the trainer needs the train extra ({exc.name} is missing): pip install 'eocap[train]'"
    )


def _reexec_under_torchrun(procs: int, argv: Sequence[str]) -> None:
    """Start ``procs`` processes of this command with torchrun (one machine, standalone)."""
    args = [a for a in argv if not a.startswith("--procs")]
    if "--procs" in argv:  # the value followed as its own argument
        i = list(argv).index("--procs")
        args = [*argv[:i], *argv[i + 2 :]]
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={procs}",
        "-m",
        "flows.cli",
        *args,
    ]
    os.execv(sys.executable, command)


def cmd_train(args: argparse.Namespace) -> int:
    """Train a multispectral CLIP on a release, then evaluate it and write the model folder.

    Writes into train.output_dir: checkpoints/step-NNNNNNN.pt (resume with --resume),
    metrics.csv and training-curves.svg, eval/eval.{json,md}, and model/ (a Hugging Face
    CLIPModel folder with OpenCLIP weights, eocap_model.json and README.md, the model card).
    Under torchrun (or --procs N) every process trains its share; rank 0 writes and evaluates.
    """
    from trainer.config import default_train_yaml, load_train_config

    if args.print_config:
        sys.stdout.write(default_train_yaml())
        return 0
    config = load_train_config(args.config)
    if args.set:
        config = config.with_updates(parse_set_options(args.set))
    if args.procs > 1 and "LOCAL_RANK" not in os.environ:
        _reexec_under_torchrun(args.procs, sys.argv[1:])
    try:
        return _train_and_report(config, resume=args.resume)
    except ImportError as exc:
        return _missing_extra(exc)


def _train_and_report(config: Any, *, resume: bool) -> int:
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    from trainer.card import write_model_card
    from trainer.checkpoints import CheckpointError, load_model_folder
    from trainer.evaluate import write_report
    from trainer.plots import training_curves_svg
    from trainer.train import RunPaths, TrainError, train

    paths = RunPaths(config.output_dir)
    rank = int(os.environ.get("RANK", "0"))
    columns = (
        TextColumn("[bold]train[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("loss {task.fields[loss]:.4f}  {task.fields[rate]:.1f} samples/s"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=console, disable=rank != 0) as progress:
        task = progress.add_task("train", total=config.train.steps, loss=float("nan"), rate=0.0)

        def on_step(step: int, total: int, loss: float, rate: float) -> None:
            progress.update(task, completed=step, loss=loss, rate=rate)

        try:
            result = train(config, resume=resume, on_step=on_step)
        except (TrainError, CheckpointError, ConfigError) as exc:
            return _error(str(exc))
    if rank != 0:
        return 0
    curves = training_curves_svg(paths.metrics, paths.root / "training-curves.svg")
    loaded = load_model_folder(result.model_dir)
    results = _evaluate(loaded, config, "trained")
    if config.eval.initial and paths.initial_model.is_dir():
        results = _evaluate(load_model_folder(paths.initial_model), config, "initial") + results
    if results:
        write_report(results, paths.root / "eval")
    write_model_card(
        result.model_dir,
        config,
        results,
        steps=result.steps,
        samples_seen=result.samples_seen,
        captions=result.fit.as_dict(),
    )
    out = Console()
    resumed = f", resumed from step {result.resumed_from}" if result.resumed_from else ""
    out.print(
        f"trained {result.steps} steps ({result.samples_seen} pairs, "
        f"{result.samples_seen / max(result.seconds, 1e-9):.1f} samples/s{resumed}); "
        f"final loss {result.final_loss:.4f}"
    )
    fit = result.fit
    out.print(
        f"captions: {fit.whole} whole, {fit.sentences} sampled sentences, {fit.cut} cut "
        f"(context {config.model.context_length})"
    )
    _print_results(out, results)
    out.print(f"model: {result.model_dir} (README.md is its card); curves: {curves}")
    return 0


def _evaluate(loaded: Any, config: Any, model: str) -> list[Any]:
    """The config's evaluations of one model: the held-out split, then each benchmark."""
    from trainer.evaldata import open_benchmark
    from trainer.evaluate import evaluate_benchmark, evaluate_held_out

    results = []
    ev = config.eval
    if ev.held_out:
        try:
            results.append(
                evaluate_held_out(
                    loaded,
                    config.data.source,
                    config.data.eval_split,
                    min_class_samples=ev.min_class_samples,
                    batch_size=ev.batch_size,
                    bootstrap=ev.bootstrap,
                    seed=config.train.seed,
                )
            )
        except (ValueError, FileNotFoundError) as exc:
            console.print(f"[yellow]held-out evaluation skipped:[/yellow] {exc}", soft_wrap=True)
    for ref in ev.benchmarks:
        dataset = open_benchmark(
            ref.name, ref.root, bands=loaded.preprocessing.bands, split=ref.split
        )
        results.append(
            evaluate_benchmark(
                loaded,
                dataset,
                batch_size=ev.batch_size,
                bootstrap=ev.bootstrap,
                seed=config.train.seed,
            )
        )
    for result in results:
        result.model = model
    return results


def _print_results(out: Console, results: Sequence[Any]) -> None:
    from rich.table import Table

    if not results:
        return
    table = Table(title="zero-shot evaluation (95% bootstrap CI)")

    def pct(value: float | None, interval: tuple[float, float] | None) -> str:
        if value is None or interval is None:
            return "n/a"
        return f"{100 * value:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}]"

    columns = ("model", "dataset", "images", "classes", "accuracy", "balanced", "chance", "mAP@100")
    for column in columns:
        table.add_column(column)
    for r in results:
        table.add_row(
            r.model,
            f"{r.dataset} ({r.split or 'all'})",
            str(r.samples),
            str(len(r.classes)),
            pct(r.accuracy, r.accuracy_ci),
            pct(r.balanced_accuracy, r.balanced_accuracy_ci),
            f"{100 * r.chance_uniform:.1f} / {100 * r.chance_majority:.1f}",
            pct(r.map_at_100, r.map_at_100_ci),
        )
    out.print(table)


def _benchmark_refs(items: Sequence[str]) -> list[Any]:
    from trainer.config import BenchmarkRef

    refs = []
    for item in items:
        if "=" not in item:
            raise ConfigError(item, "--benchmark takes NAME=ROOT[:SPLIT], e.g. eurosat=/data/es")
        name, rest = item.split("=", 1)
        root, _, split = (
            rest.partition(":")
            if ":" in rest and not Path(rest).exists()
            else (
                rest,
                "",
                "test",
            )
        )
        refs.append(BenchmarkRef(name=name, root=root, split=split or "test"))  # type: ignore[arg-type]
    return refs


def cmd_eval(args: argparse.Namespace) -> int:
    """Zero-shot classification and mAP@100 retrieval of a model folder (Llama3-MS-CLIP protocol).

    Benchmarks are read from their published on-disk layouts (docs/evaluation-datasets.md);
    --held-out scores a release split with classes from its Overture context. Results go to
    OUT/eval.json and OUT/eval.md (default: beside the model).
    """
    try:
        from trainer.checkpoints import CheckpointError, load_model_folder
        from trainer.config import EvalConfig, TrainConfig
        from trainer.evaldata import BenchmarkDataError
        from trainer.evaluate import write_report
    except ImportError as exc:
        return _missing_extra(exc)
    try:
        loaded = load_model_folder(args.model)
        refs = _benchmark_refs(args.benchmark)
        data = {"source": args.held_out or "."}
        config = TrainConfig.model_validate(
            {
                "data": {**data, "eval_split": args.split},
                "eval": EvalConfig(
                    held_out=args.held_out is not None,
                    benchmarks=refs,
                    batch_size=args.batch_size,
                    bootstrap=args.bootstrap,
                    min_class_samples=args.min_class_samples,
                ).model_dump(),
            }
        )
        if not refs and args.held_out is None:
            return _error("nothing to evaluate: give --benchmark NAME=ROOT and/or --held-out")
        results = _evaluate(loaded, config, args.model.name)
        if results:
            write_report(results, args.out or args.model.parent / "eval")
    except (CheckpointError, BenchmarkDataError, ValueError) as exc:
        return _error(str(exc))
    _print_results(Console(), results)
    return 0


def cmd_embed(args: argparse.Namespace) -> int:
    """Write the image embeddings of shards or a release as Parquet (sample_id, vector).

    SOURCE is a release (folder or URL), a pipeline output dir, or Parquet files; every ok
    sample is embedded with the model's bands and normalisation. Vectors are L2-normalised.
    """
    try:
        from rich.progress import Progress

        from trainer.checkpoints import CheckpointError, load_model_folder
        from trainer.embed import embed_samples
    except ImportError as exc:
        return _missing_extra(exc)
    try:
        loaded = load_model_folder(args.model)
        with Progress(console=console, transient=True) as progress:
            task = progress.add_task("embedding", total=None)
            n = embed_samples(
                loaded,
                args.source,
                args.output,
                split=args.split,
                batch_size=args.batch_size,
                model_ref=str(args.model),
                modalities=args.modalities,
                drop_channels=args.drop_bands,
                on_samples=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (CheckpointError, FileNotFoundError, KeyError, ValueError) as exc:
        return _error(str(exc))
    Console().print(f"{n} embeddings written to {args.output}")
    return 0


def cmd_probe(args: argparse.Namespace) -> int:
    """Few-shot probes: scikit-learn models on embeddings at 10-500 and all labels.

    EMBEDDINGS is a model folder (the release is embedded first, into OUT/embeddings.parquet)
    or the Parquet file of `eocap embed`. Labels are the paper's four tasks from the
    release's Overture context (--task, default all four) and/or a file of labelled points
    (--labels). Train and test never share a spatial block (--block-deg). Writes OUT/probe.md,
    OUT/probe.json and OUT/learning-curves.{png,svg}.
    """
    try:
        from rich.progress import Progress

        from trainer.checkpoints import CheckpointError, load_model_folder
        from trainer.embed import embed_samples
        from trainer.plots import learning_curves
        from trainer.probe import (
            MODELS,
            TASKS,
            file_labels,
            read_embeddings,
            read_release_samples,
            run_probe,
            task_labels,
        )
    except ImportError as exc:
        return _missing_extra(exc)
    tasks = args.task or ([] if args.labels else list(TASKS))
    models = args.model or list(MODELS)
    for kind, names, known in (("task", tasks, TASKS), ("model", models, MODELS)):
        unknown = sorted(set(names) - set(known))
        if unknown:
            return _error(f"unknown {kind} {', '.join(unknown)} (known: {', '.join(known)})")
    try:
        with Progress(console=console, transient=True) as progress:
            embeddings = args.embeddings
            if embeddings.is_dir():
                embeddings = args.out / "embeddings.parquet"
                task = progress.add_task("embedding", total=None)
                embed_samples(
                    load_model_folder(args.embeddings),
                    args.release,
                    embeddings,
                    split=args.split,
                    batch_size=args.batch_size,
                    model_ref=str(args.embeddings),
                    modalities=args.modalities,
                    drop_channels=args.drop_bands,
                    on_samples=lambda done, total: progress.update(
                        task, completed=done, total=total
                    ),
                )
            ids, vectors = read_embeddings(embeddings)
            samples = read_release_samples(args.release, args.split)
            label_sets = [task_labels(TASKS[name], samples) for name in tasks]
            if args.labels:
                label_sets.append(file_labels(args.labels, samples, label_column=args.label_column))
            task = progress.add_task("probing", total=None)
            report = run_probe(
                ids,
                vectors,
                samples,
                label_sets,
                models=models,
                seeds=range(args.seeds),
                block_deg=args.block_deg,
                test_fraction=args.test_fraction,
                on_fit=lambda done, total: progress.update(task, completed=done, total=total),
            )
    except (CheckpointError, FileNotFoundError, KeyError, ValueError, OSError) as exc:
        return _error(str(exc))
    json_path, md_path = report.write(args.out)
    svg, png = learning_curves(report.curves(), "balanced accuracy", args.out / "learning-curves")
    out = Console()
    for summary in report.tasks:
        out.print(f"{summary.name}: {summary.samples} samples, {summary.classes}")
    out.print(f"probe tables: {md_path}, {json_path}; learning curves: {png}, {svg}")
    return 0


def cmd_export_model(args: argparse.Namespace) -> int:
    """Export a training checkpoint (checkpoints/step-*.pt) as a model folder.

    The folder loads in transformers' CLIPModel, holds the OpenCLIP weights and config, and
    eocap_model.json (bands, normalisation); `eocap eval` and `eocap embed` read it. A
    modality-aware model (model.modalities) has no CLIPModel or OpenCLIP form: its folder
    holds its own safetensors, which eocap reads, and the command says so.
    """
    try:
        from trainer.checkpoints import MODEL_FILE, CheckpointError, export_checkpoint
    except ImportError as exc:
        return _missing_extra(exc)
    try:
        export_checkpoint(args.checkpoint, args.folder)
        settings = json.loads((args.folder / MODEL_FILE).read_text())
    except CheckpointError as exc:
        return _error(str(exc))
    Console().print(f"model folder written to {args.folder}")
    if "formats" in settings:
        Console().print(f"[yellow]{settings['formats']}[/yellow]", soft_wrap=True)
    return 0


def _names(text: str) -> list[str]:
    """A comma-separated list of names."""
    return [name.strip() for name in text.split(",") if name.strip()]


def _add_selection_arguments(p: argparse.ArgumentParser) -> None:
    """--modalities and --drop-bands: what a modality-aware model embeds."""
    p.add_argument(
        "--modalities",
        type=_names,
        metavar="s2,s1",
        help="embed only these modalities of a modality-aware model (default: all it has); "
        "samples with none of them are left out",
    )
    p.add_argument(
        "--drop-bands",
        type=_names,
        default=[],
        metavar="B05,B06,...",
        help="leave out these channels (S2 bands or S1 polarisations) of a modality-aware "
        "model, as channel dropout does in training",
    )


def add_trainer_parsers(add: Callable[[str, Any, str], argparse.ArgumentParser]) -> None:
    """Register the trainer's subcommands with ``flows.cli``'s ``add``."""
    p = add("train", cmd_train, "train a multispectral CLIP on a release (docs/training.md)")
    p.epilog = EPILOG
    p.add_argument("config", type=Path, nargs="?", help="train config YAML (default: the demo)")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="override a config field, e.g. --set train.steps=100",
    )
    p.add_argument(
        "--resume", action="store_true", help="continue from the newest checkpoint, exactly"
    )
    p.add_argument(
        "--print-config", action="store_true", help="print the default config, documented"
    )
    p.add_argument(
        "--procs",
        type=int,
        default=1,
        help="processes (GPUs) on this machine: runs torchrun --standalone (default: 1)",
    )
    p = add("eval", cmd_eval, "zero-shot accuracy and mAP@100 of a model folder")
    p.add_argument("model", type=Path, help="a model folder (train.output_dir/model)")
    p.add_argument(
        "--benchmark",
        action="append",
        default=[],
        metavar="NAME=ROOT[:SPLIT]",
        help="eurosat, bigearthnet or meterml at ROOT in its published layout (split: test)",
    )
    p.add_argument("--held-out", metavar="RELEASE", help="score a release split (--split)")
    p.add_argument("--split", default="test", help="the release split (default: test)")
    p.add_argument(
        "--out", type=Path, help="folder for eval.json and eval.md (default: MODEL/../eval)"
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (1000)")
    p.add_argument("--min-class-samples", type=int, default=3)
    p = add("embed", cmd_embed, "write image embeddings (sample_id, vector) as Parquet")
    p.add_argument("model", type=Path, help="a model folder")
    p.add_argument("source", help="a release, output dir or Parquet files")
    p.add_argument("output", type=Path, help="the Parquet file to write")
    p.add_argument("--split", help="only this release split")
    p.add_argument("--batch-size", type=int, default=64)
    _add_selection_arguments(p)
    p = add("probe", cmd_probe, "few-shot probes of embeddings (10-500 and all labels)")
    p.add_argument("embeddings", type=Path, help="a model folder, or `eocap embed`'s Parquet")
    p.add_argument("release", help="the release (folder or URL) the samples come from")
    p.add_argument("--out", type=Path, required=True, help="folder for the tables and plots")
    p.add_argument("--split", help="only this release split (default: all)")
    p.add_argument(
        "--task",
        action="append",
        help="a task from the Overture context, e.g. cropland (repeatable; default: all four "
        "unless --labels; a wrong name lists them)",
    )
    p.add_argument("--labels", type=Path, help="GeoJSON or Parquet of labelled points")
    p.add_argument("--label-column", default="label", help="the label file's class column")
    p.add_argument(
        "--model",
        action="append",
        help="a probe model, e.g. logistic (repeatable; default: all; a wrong name lists them)",
    )
    p.add_argument("--seeds", type=int, default=5, help="splits and draws per budget (5)")
    p.add_argument(
        "--block-deg", type=float, default=0.05, help="spatial block size, degrees (0.05)"
    )
    p.add_argument("--test-fraction", type=float, default=0.3, help="share held out (0.3)")
    p.add_argument("--batch-size", type=int, default=64, help="embedding batch size (64)")
    _add_selection_arguments(p)
    p = add("export-model", cmd_export_model, "export a training checkpoint as a model folder")
    p.add_argument("checkpoint", type=Path, help="checkpoints/step-NNNNNNN.pt of a run")
    p.add_argument("folder", type=Path, help="the model folder to write")
