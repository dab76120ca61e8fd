"""The ``eocap`` command line: one entry point, subcommands that teach.

Run ``eocap --help`` for the list and ``eocap COMMAND --help`` for each command's options.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import os
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from flows.session import EXIT_ALL_FAILED, Session, stop_on_signals
from pipeline.core.config import RunConfig, load_config
from pipeline.core.yaml_config import documented_yaml, parse_set_options
from pipeline.dataset.layout import DatasetLayout
from pipeline.runner.plan import check_run_config, preflight, preflight_captions
from pipeline.runner.progress import StageProgress
from pipeline.runner.report import RunReport, all_failed
from pipeline.stages.sampling import plan_locations
from trainer.cli import add_trainer_parsers
from validation.cli import add_review_parser, normalize_argv

console = Console(stderr=True)

DEMO_DATA_DIR = Path(os.environ.get("EOCAP_DEMO_DIR", "demo-data"))

EPILOG = """\
examples:
  eocap demo                          build the demo dataset offline (servers started for you)
  eocap demo --captioner openai       the same, captioned through an OpenAI-compatible server
  eocap config > my-run.yaml          write the default config, documented, to edit
  eocap plan my-run.yaml              how many samples and shards a config makes (no work)
  eocap check my-run.yaml             every check `eocap run` makes before work, and no work
  eocap run my-run.yaml               build the dataset a config describes (resumes)
  eocap status output/my-run          shards done/partial/pending, failures by reason
  eocap run my-run.yaml --retry-failed   retry only the failed samples of finished shards
  eocap run my-run.yaml --set output.shard_size=1000 --set runtime.workers=8
  eocap deploy my-run.yaml --cron "0 2 * * *"   a nightly run that extends the dataset
  eocap serve-demo                    serve the demo STAC API and COGs until Ctrl-C
  eocap review output/demo            the review app: experts rate and correct captions
  eocap release output/demo release/demo   a release: HF layout, sample index, STAC, card
  eocap export-captions output/demo captions.parquet   the Llama3-MS-CLIP caption table
  eocap train --print-config > train.yaml   train a multispectral CLIP on a release (`train`)
  eocap eval MODEL --benchmark eurosat=/data/EuroSAT_MS   zero-shot accuracy and mAP@100
  eocap embed MODEL RELEASE embeddings.parquet   image embeddings (sample_id, vector)
  eocap probe MODEL RELEASE --out probes/   few-shot probes: learning curves at 10..all labels

Config values can also come from the environment: EOCAP_STAC__API_URL=..., EOCAP_OUTPUT__DIR=...
A failure prints one line; `eocap --debug COMMAND ...` prints the traceback as well.
Docs: docs/configuration.md (regions, checks, errors), docs/architecture.md (stages),
docs/dataset-schema.md (columns), docs/production.md, docs/training.md (trainer, evaluation).
"""


def _load(path: Path | None, sets: Sequence[str]) -> RunConfig:
    config = load_config(path)
    updates = parse_set_options(sets)
    return config.with_updates(updates) if updates else config


def _add_sar_rows(table: Table, sar_states: dict[str, int], coh_states: dict[str, int]) -> None:
    """The Sentinel-1 and coherence states of the samples, one row each (none without SAR)."""
    for state, n in sar_states.items():
        table.add_row(f"  Sentinel-1: {state}", str(n))
    for state, n in coh_states.items():
        table.add_row(f"  coherence: {state}", str(n))


def _print_report(report: RunReport) -> None:
    table = Table(title="eocap run report", show_header=False)
    table.add_row("output", report.output_dir)
    table.add_row("shards", f"{report.shards} ({report.shards_built_now} built now)")
    pending = f", {report.pending_caption} waiting for captions" if report.pending_caption else ""
    table.add_row("samples", f"{report.samples}: {report.ok} ok, {report.failed} failed{pending}")
    for reason, n in report.failures_by_reason.items():
        table.add_row(f"  failed: {reason}", str(n))
    for flag, n in report.caption_flags.items():
        table.add_row(f"  caption flag: {flag}", f"{n} of {report.ok}")
    for check, n in report.radiometry_overruled.items():
        table.add_row(f"  pixels overruled metadata: {check}", str(n))
    _add_sar_rows(table, report.sar_states, report.coh_states)
    table.add_row("size", f"{report.bytes / 1e6:.1f} MB")
    table.add_row("wall time", f"{report.wall_seconds:.1f} s")
    total = sum(report.stage_seconds.values()) or 1.0
    for stage, secs in report.stage_seconds.items():
        table.add_row(f"  {stage}", f"{secs:.1f} s ({100 * secs / total:.0f}% of shard time)")
    Console().print(table)
    layout = DatasetLayout(Path(report.output_dir))
    Console().print(
        f"Shards are in [bold]{layout.shards_dir}[/bold]. Open them with pyarrow, DuckDB "
        f"(SELECT caption FROM '{layout.shards_glob}') or "
        f"datasets.load_dataset('parquet', data_files='{layout.shards_glob}')."
    )


def _run(config: RunConfig, session: Session, *, retry_failed: bool = False) -> int:
    """Check a config, build its dataset, print the report; the exit code."""
    session.use_prefect()
    from flows.build_dataset import run_build

    console.print(f"Checking config, STAC API {config.stac.api_url} and Overture data...")
    # The run's one check, before Prefect starts: a bad config prints one plain line.
    checked = preflight(config)
    # One bar for shards and one per stage (search, chips, sar, composite, context, caption,
    # write) with its rate and ETA; they update as each shard's stats come back.
    with (
        session.run_log(checked.output.dir),
        StageProgress(console, workers=checked.runtime.workers) as progress,
    ):
        report = run_build(checked, progress.on_shard, retry_failed=retry_failed)
    return _finish(report)


def _finish(report: RunReport) -> int:
    """Print a run's report; the exit code: :data:`EXIT_ALL_FAILED` if no sample succeeded."""
    _print_report(report)
    failed = all_failed(report)
    if failed is None:
        return 0
    console.print(f"[bold red]error:[/bold red] {failed}", soft_wrap=True)
    return EXIT_ALL_FAILED


def cmd_run(args: argparse.Namespace) -> int:
    """Build the dataset a config describes.

    Exit codes: 0 done (some samples may have failed: see the report), 1 an error (one line
    says what and what to do; the traceback is in OUTPUT/logs/), 2 the config was refused
    before any work, 3 the run finished but every sample failed (the line says why and what
    to change), 130/143 stopped by SIGINT/SIGTERM (run again to resume).
    """
    return _run(_load(args.config, args.set), args.session, retry_failed=args.retry_failed)


def cmd_demo(args: argparse.Namespace) -> int:
    """Generate the demo region, serve it on 127.0.0.1 and build its dataset.

    With --captioner openai the captions come from a tiny random-weight LLaVA-Next served by
    `transformers serve` (the protocol of `vllm serve`); with --captioner transformers the
    same model runs in-process. Their text is random; the mechanics are the production ones.
    """
    from pipeline.demo.coherence import COHERENCE_COLLECTION
    from pipeline.demo.region import ensure_demo_region, served_items
    from pipeline.demo.servers import serve_demo, start_transformers_server
    from pipeline.demo.tiny_llava import ensure_tiny_llava_next

    t0 = time.perf_counter()
    console.print(f"Demo region in {args.data_dir} (generated once, then reused)...")
    region = ensure_demo_region(args.data_dir)
    console.print(f"  ready in {time.perf_counter() - t0:.1f} s: {len(region.item_ids)} scenes")
    output = args.output or Path(
        "output/demo" if args.captioner == "template" else f"output/demo-{args.captioner}"
    )
    updates: dict[str, Any] = {
        "overture.source": str(region.overture_root),
        "output.dir": str(output),
        "captioner.backend": args.captioner,
    }
    with contextlib.ExitStack() as stack:
        if args.captioner != "template":
            model = ensure_tiny_llava_next(args.data_dir / "tiny-llava-next")
            updates["captioner.model"] = str(model)
            if args.captioner == "openai":
                server = stack.enter_context(start_transformers_server(model))
                console.print(f"  caption server (transformers serve) at {server.url}")
                updates["captioner.base_url"] = server.url.rstrip("/")
        config = _load(args.config, args.set).with_updates(updates)
        if config.sar is None:  # the demo region has Sentinel-1 passes and coherence: read them
            config = config.with_updates(
                {"sar": {"coherence": {"collection": COHERENCE_COLLECTION}}}
            )
        servers = stack.enter_context(serve_demo(region.root, served_items(region)))
        console.print(f"  STAC API at {servers.stac_url}, COGs at {servers.files.url}")
        code = _run(config.with_updates({"stac.api_url": servers.stac_url}), args.session)
    if code:
        return code
    console.print(
        "Next, have experts review the captions (docs/review.md):\n"
        f"  .venv/bin/eocap review user {output} admin --role admin\n"
        f"  .venv/bin/eocap review campaign {output} pilot --size 60\n"
        f"  .venv/bin/eocap review {output}"
    )
    return 0


def cmd_serve_demo(args: argparse.Namespace) -> int:
    """Serve the demo STAC API and COGs until Ctrl-C, SIGTERM or SIGHUP stops both servers."""
    from pipeline.demo.region import ensure_demo_region, served_items
    from pipeline.demo.servers import serve_demo

    region = ensure_demo_region(args.data_dir)
    items = served_items(region)
    # Stopping is how a server ends: the signal unwinds the with block, which stops both.
    with (
        contextlib.suppress(KeyboardInterrupt),
        serve_demo(
            region.root, items, stac_port=args.stac_port, files_port=args.files_port
        ) as servers,
    ):
        Console().print(
            f"STAC API: {servers.stac_url}\nCOGs:     {servers.files.url}\n"
            f"Overture: {region.overture_root}\nCtrl-C to stop."
        )
        while True:
            signal.pause()
    return 0


def cmd_generate_demo(args: argparse.Namespace) -> int:
    """Generate (or reuse) the demo region's COGs, STAC items and Overture extract."""
    from pipeline.demo.region import ensure_demo_region

    t0 = time.perf_counter()
    region = ensure_demo_region(args.data_dir)
    Console().print(
        f"Demo region at {region.root}: {len(region.item_ids)} scenes, items "
        f"{region.items_path}, Overture {region.overture_root} "
        f"({time.perf_counter() - t0:.1f} s)"
    )
    return 0


def cmd_caption(args: argparse.Namespace) -> int:
    """Caption the pending rows of a run built with captioner.stage: separate (GPU workers)."""
    session: Session = args.session
    session.use_prefect()
    from flows.build_dataset import run_captions

    # The run's one check, before Prefect starts; the caption server must answer now.
    config = preflight_captions(_load(args.config, args.set))
    with session.run_log(config.output.dir):
        report = run_captions(config)
    return _finish(report)


def cmd_status(args: argparse.Namespace) -> int:
    """Show where a run stands: shards done, partial and pending; failures; throughput."""
    from pipeline.runner.report import run_status

    st = run_status(args.output)
    table = Table(title=f"eocap status: {st.output_dir}", show_header=False)
    table.add_row(
        "shards", f"{st.done} done, {st.partial} partial, {st.pending} pending (of {st.shards})"
    )
    table.add_row(
        "samples",
        f"{st.samples_written} written of {st.samples_planned} planned: "
        f"{st.ok} ok, {st.failed} failed, {st.pending_caption} waiting for captions",
    )
    for reason, n in st.failures_by_reason.items():
        table.add_row(f"  failed: {reason}", str(n))
    for flag, n in st.caption_flags.items():
        table.add_row(f"  caption flag: {flag}", str(n))
    for check, n in st.radiometry_overruled.items():
        table.add_row(f"  pixels overruled metadata: {check}", str(n))
    _add_sar_rows(table, st.sar_states, st.coh_states)
    table.add_row(
        "throughput",
        f"{st.samples_per_shard_second} samples per shard-second "
        f"({st.shard_seconds} shard-seconds)",
    )
    Console().print(table)
    if st.failed:
        Console().print("Retry the failed samples: eocap run CONFIG --retry-failed")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Rewrite every schema 1.2 shard of an output dir in the current schema, shard by shard.

    Each shard is replaced atomically and its stats sidecar updated, so the command can be
    killed at any moment and run again to finish; shards of 2.0 or later are skipped (2.0
    reads as 2.1, with null Sentinel-1 columns). The pixels
    and every other column stay identical (docs/dataset-schema.md).
    """
    from pipeline.dataset.migrate import migrate_output

    try:
        summary = migrate_output(args.output)
    except FileNotFoundError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 2
    saved = summary.bytes_before - summary.bytes_after
    console.print(
        f"migrated {summary.migrated} shards ({saved / 1e6:.1f} MB smaller), "
        f"{summary.already_current} already current, "
        f"{summary.stats_corrected} stats sidecars corrected"
    )
    return 0


def cmd_deploy(args: argparse.Namespace) -> int:
    """Serve a scheduled Prefect deployment of a config's build until interrupted.

    Each scheduled run re-reads the config and resumes the dataset (done shards are skipped),
    e.g. a nightly run that extends it with new regions or a new season. With PREFECT_API_URL
    pointing at a Prefect server the deployment, its schedule and its runs appear in the UI.
    """
    args.session.use_prefect()
    from prefect import serve

    from flows.build_dataset import make_deployment

    check_run_config(load_config(args.config))  # fail now on a bad config, not at 2 a.m.
    deployment = make_deployment(
        args.config,
        name=args.name,
        cron=args.cron,
        interval_s=args.interval,
        retry_failed=args.retry_failed,
        stage=args.flow,
    )
    when = args.cron or (f"every {args.interval:g} s" if args.interval else "on demand")
    Console().print(f"Serving deployment {args.name!r} ({when}); Ctrl-C to stop.")
    serve(deployment)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    """Print how many locations, samples and shards a config makes; does no work.

    The config passes the checks that need no server first (periods, coverage, at least one
    chip), as `eocap check` and `eocap run` do.
    """
    config = _load(args.config, args.set)
    check_run_config(config)
    locations = plan_locations(config.region, config.chips.size_m, seed=config.seed)
    n = len(locations) * len(config.periods)
    n_shards = (n + config.output.shard_size - 1) // config.output.shard_size
    print(
        f"{n} samples ({n // len(config.periods)} locations x {len(config.periods)} periods) "
        f"in {n_shards} shards of up to {config.output.shard_size}; output {config.output.dir}"
    )
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    """Run every check `eocap run` runs before any work, and nothing else.

    The config's fields; the periods (over, and within Sentinel-2's years); the region (inside
    Sentinel-2's coverage, at least one chip); the output folder (empty, or a run of the same
    config); the Overture release and its columns; the STAC API and collection; with `sar:`,
    the Sentinel-1 catalog (its key variable) and the backscatter and coherence collections;
    the prompt; the caption server (backend openai). A refusal names the field and what to
    change.
    """
    config = preflight(_load(args.config, args.set))
    Console().print(
        f"config ok; STAC API {config.stac.api_url} and Overture release "
        f"{config.overture.release} reachable"
    )
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    """Print the default config as YAML with every field's documentation."""
    sys.stdout.write(default_config_yaml())
    return 0


def default_config_yaml() -> str:
    """The default run config as commented YAML."""
    return documented_yaml(
        RunConfig, "eocap run config: every field with its default. Edit and pass to `eocap run`."
    )


# --- release and export-captions (docs/release.md) ---


def cmd_release(args: argparse.Namespace) -> int:
    """Write a release of a built output: the files docs/release.md describes.

    RELEASE_DIR gets data/{train,validation,test}-NNNNN-of-NNNNN.parquet (ok samples, review
    results applied), metadata.parquet (where each sample lies, byte ranges included),
    band_stats.json, collection.json (STAC), the dataset card README.md, release.json and
    SHA256SUMS. Splits are spatial: a sample's 0.1 degree cell decides it, by a seeded hash.
    Releasing the same output twice gives byte-identical files. Upload RELEASE_DIR as a
    Hugging Face dataset repo as it is (`hf upload --repo-type dataset NAME RELEASE_DIR`).
    """
    from rich.progress import Progress

    from pipeline.dataset.release import ReleaseError, ReleaseOptions, make_release
    from pipeline.dataset.splits import SplitRule
    from pipeline.io.remote import RemoteError, upload_tree

    try:
        fractions = tuple(float(f) for f in args.fractions.split(","))
        rule = SplitRule(fractions, args.seed, args.cell_deg)  # type: ignore[arg-type]
    except ValueError as exc:
        console.print(f"[bold red]error:[/bold red] --fractions/--cell-deg: {exc}", soft_wrap=True)
        return 2
    options = ReleaseOptions(
        split_rule=rule,
        samples_per_file=args.samples_per_file,
        rows_per_group=args.rows_per_group,
        include_failed=args.include_failed,
    )
    remote = str(args.release_dir).startswith("s3://")
    try:
        with contextlib.ExitStack() as stack, Progress(console=console, transient=True) as progress:
            # An s3:// release is written to a local folder first, then uploaded as it is.
            local = Path(stack.enter_context(tempfile.TemporaryDirectory())) if remote else None
            task = progress.add_task("reading shards", total=None)
            summary = make_release(
                args.output,
                local or Path(args.release_dir),
                options,
                on_shard=lambda done, total: progress.update(task, completed=done, total=total),
            )
            if local is not None:
                progress.update(task, description=f"uploading to {args.release_dir}")
                upload_tree(local, args.release_dir)
    except (ReleaseError, RemoteError) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return 2
    counts = ", ".join(f"{split} {n}" for split, n in summary.counts.items())
    Console().print(
        f"Release in [bold]{args.release_dir}[/bold]: {counts} samples, "
        f"{len(summary.files)} files, {summary.bytes / 1e6:.1f} MB (checksums in SHA256SUMS)."
    )
    empty = [split for split, n in summary.counts.items() if n == 0]
    if empty:
        Console().print(
            f"No sample fell into {', '.join(empty)}: the output spans few "
            f"{args.cell_deg:g} degree cells; try a smaller --cell-deg or another --seed."
        )
    return 0


def cmd_export_captions(args: argparse.Namespace) -> int:
    """Write the captions as the Llama3-MS-CLIP caption table, to compare with theirs.

    Columns: caption, question_1..3 (answers of the multi-turn prompt's questions; null for
    the template captioner), file (the shard), sample_id, time_id (index of the period among
    the run's periods), classes, tags, names. Parquet, or CSV when FILE ends in .csv (list
    columns as JSON arrays).
    """
    from pipeline.dataset.export import export_captions
    from pipeline.dataset.release import ReleaseError

    try:
        n = export_captions(args.output, args.file)
    except ReleaseError as exc:
        console.print(f"[bold red]error:[/bold red] {exc}", soft_wrap=True)
        return 2
    Console().print(f"{n} captions written to {args.file}")
    return 0


def add_release_parsers(sub: Any) -> None:
    """The ``release`` and ``export-captions`` subcommands."""
    from pipeline.dataset.release import ReleaseOptions  # its defaults are the CLI's

    defaults = ReleaseOptions()
    p = sub.add_parser(
        "release",
        help="write a release (Hugging Face layout, sample index, STAC, card) of an output",
        description=cmd_release.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_release)
    p.add_argument("output", type=Path, help="the run's output directory (run.json, shards/)")
    p.add_argument(
        "release_dir",
        help="a new or empty folder, a previous release, or s3://bucket/prefix (built locally, "
        "then uploaded; credentials and endpoint from the AWS_* variables)",
    )
    p.add_argument(
        "--include-failed",
        action="store_true",
        help="keep failed and uncaptioned samples too (default: only status ok)",
    )
    p.add_argument(
        "--fractions",
        default="0.8,0.1,0.1",
        help="train,validation,test shares of cells (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the split hash (%(default)s)")
    p.add_argument(
        "--cell-deg",
        type=float,
        default=0.1,
        help="split cell size in degrees: all samples of a cell share a split (%(default)s)",
    )
    p.add_argument(
        "--samples-per-file",
        type=int,
        default=defaults.samples_per_file,
        help="samples per data file (%(default)s)",
    )
    p.add_argument(
        "--rows-per-group",
        type=int,
        default=defaults.rows_per_group,
        help="rows per Parquet row group: one range read fetches this many (%(default)s)",
    )
    p = sub.add_parser(
        "export-captions",
        help="write the captions as the Llama3-MS-CLIP caption table (Parquet or CSV)",
        description=cmd_export_captions.__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(func=cmd_export_captions)
    p.add_argument("output", type=Path, help="the run's output directory")
    p.add_argument("file", type=Path, help="the table to write: .parquet, or .csv")


# --- end of release and export-captions ---


# --- eocap pull / eocap verify (pipeline/dataset/pull.py, verify.py; docs/release.md) -------


def _csv(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def _bbox(text: str) -> tuple[float, float, float, float]:
    parts = [float(v) for v in text.split(",")]
    if len(parts) != 4:
        raise argparse.ArgumentTypeError(
            f"{text!r}: give W,S,E,N in degrees, e.g. 10.8,47.5,11,47.7"
        )
    return parts[0], parts[1], parts[2], parts[3]


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: give a date as YYYY-MM-DD") from exc


def cmd_pull(args: argparse.Namespace) -> int:
    """Fetch the samples of a release that match the filters into a release folder of its own.

    SOURCE is a release folder, an http(s) URL, s3://bucket/prefix (AWS_* environment
    variables, AWS_ENDPOINT_URL for S3-compatible servers) or hf://datasets/ORG/NAME[@REV]
    (HF_TOKEN, HF_ENDPOINT). Whole files are fetched where every sample of a file is selected,
    else only the selected row groups, each checked against its hash. Rerun to resume.
    """
    from rich.progress import (
        BarColumn,
        DownloadColumn,
        Progress,
        TimeRemainingColumn,
        TransferSpeedColumn,
    )

    from pipeline.dataset.pull import PullError, PullFilter, plan_pull, pull_release
    from pipeline.io.remote import RemoteError, open_release_source

    filters = PullFilter(
        bbox=args.bbox,
        start=args.start,
        end=args.end,
        classes=args.classes,
        max_cloud=args.max_cloud,
        exclude_flags=args.exclude_flags,
        review_status=args.review_status,
        split=args.split,
        max_samples=args.max_samples,
    )
    try:
        with open_release_source(args.source) as source:
            plan = plan_pull(source, args.dest, filters)
            whole = sum(f.whole for f in plan.files)
            console.print(
                f"{plan.samples} samples in {len(plan.files)} files ({whole} fetched whole, "
                f"the others by row group) from {source.location} to {args.dest}"
            )
            with Progress(
                "[progress.description]{task.description}",
                BarColumn(),
                DownloadColumn(),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=console,
            ) as progress:
                task = progress.add_task("pull", total=plan.total_bytes)
                fetched = pull_release(plan, lambda n: progress.advance(task, n))
    except (PullError, RemoteError) as exc:
        console.print(f"[bold red]error:[/bold red] {exc}")
        return 1
    console.print(
        f"{args.dest}: {plan.samples} samples, {len(fetched)} files fetched now, "
        f"{len(plan.files) - len(fetched)} kept from before; "
        f"check it with `eocap verify {args.dest}`"
    )
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    """Check a release folder: SHA256SUMS, and metadata.parquet against the data files."""
    from pipeline.dataset.verify import verify_release

    problems = verify_release(args.dir)
    for line in problems:
        print(line)
    if problems:
        console.print(f"[bold red]{len(problems)} problems[/bold red] in {args.dir}")
        return 1
    console.print(f"{args.dir}: ok")
    return 0


def add_pull_parsers(add: Any) -> None:
    """The ``pull`` and ``verify`` subcommands."""
    p = add("pull", cmd_pull, "fetch a filtered subset of a release (folder, http, s3, hf)")
    p.add_argument("source", help="release root: folder, https://..., s3://..., hf://datasets/...")
    p.add_argument("dest", type=Path, help="folder to write the pulled release to (resumes)")
    p.add_argument("--bbox", type=_bbox, metavar="W,S,E,N", help="footprints intersecting this")
    p.add_argument("--start", type=_date, metavar="DATE", help="acquired on or after (YYYY-MM-DD)")
    p.add_argument("--end", type=_date, metavar="DATE", help="acquired on or before (YYYY-MM-DD)")
    p.add_argument("--classes", type=_csv, default=(), metavar="a,b", help="any of these classes")
    p.add_argument("--max-cloud", type=float, metavar="F", help="cloud fraction at most F")
    p.add_argument(
        "--exclude-flags", type=_csv, default=(), metavar="f,g", help="no caption flag of these"
    )
    p.add_argument("--review-status", metavar="S", help="consensus review status, e.g. approved")
    p.add_argument("--split", choices=["train", "validation", "test"])
    p.add_argument("--max-samples", type=int, metavar="N", help="the first N matches, index order")
    p = add("verify", cmd_verify, "check a release folder's hashes and sample index")
    p.add_argument("dir", type=Path, help="the release folder")


# --- end of eocap pull / eocap verify ---------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``eocap``."""
    parser = argparse.ArgumentParser(
        prog="eocap",
        description="Turn places on Earth into a captioned multispectral Sentinel-2 dataset: "
        "STAC scene search, COG chips, Overture Maps context, captions, Parquet shards.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--debug",
        action="store_true",
        help="on failure, print the traceback (always in the run's log file, OUTPUT/logs/) "
        "and Prefect's own reports of failed flow and task runs",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func: Any, help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(
            name,
            help=help_text,
            description=func.__doc__,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        p.set_defaults(func=func)
        return p

    def config_args(p: argparse.ArgumentParser, required: bool) -> None:
        p.add_argument(
            "config",
            type=Path,
            nargs=None if required else "?",
            help="run config YAML (see `eocap config`)",
        )
        p.add_argument(
            "--set",
            action="append",
            default=[],
            metavar="FIELD=VALUE",
            help="override a config field, e.g. --set output.shard_size=100",
        )

    p = add("demo", cmd_demo, "build the demo dataset offline, servers included")
    config_args(p, required=False)
    p.add_argument(
        "--data-dir",
        type=Path,
        default=DEMO_DATA_DIR,
        help="where the demo region is generated (default: %(default)s)",
    )
    p.add_argument(
        "--output",
        type=Path,
        default=None,
        help="output directory (default: output/demo, or output/demo-CAPTIONER)",
    )
    p.add_argument(
        "--captioner",
        choices=["template", "openai", "transformers"],
        default="template",
        help="template (default); openai: a tiny LLaVA-Next behind `transformers serve`; "
        "transformers: the same model in-process",
    )
    p = add("run", cmd_run, "build the dataset a config describes (resumes where it stopped)")
    config_args(p, required=True)
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="also rebuild the failed samples of finished shards (their ok rows are kept)",
    )
    p = add("deploy", cmd_deploy, "serve a scheduled Prefect deployment of a config's build")
    p.add_argument("config", type=Path, help="run config YAML")
    p.add_argument("--name", default="eocap-nightly", help="deployment name (%(default)s)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--cron", help='cron schedule, e.g. "0 2 * * *" (02:00 daily)')
    when.add_argument("--interval", type=float, help="schedule every N seconds")
    p.add_argument(
        "--retry-failed",
        action="store_true",
        help="each run also retries the failed samples of finished shards",
    )
    p.add_argument(
        "--flow",
        choices=["build", "caption"],
        default="build",
        help="build (CPU workers) or caption (GPU workers, captioner.stage: separate)",
    )
    p = add(
        "caption",
        cmd_caption,
        "caption the pending rows of a run (captioner.stage: "
        "separate), one GPU worker slot per shard",
    )
    config_args(p, required=True)
    p = add("status", cmd_status, "show a run's shards (done/partial/pending) and failures")
    p.add_argument("output", type=Path, help="the run's output directory")
    p = add("migrate", cmd_migrate, "rewrite an output's schema 1.2 shards as 2.0 (resumable)")
    p.add_argument("output", type=Path, help="the run's output directory")
    p = add("plan", cmd_plan, "count the samples and shards of a config, without work")
    config_args(p, required=False)
    p = add("check", cmd_check, "run every check `eocap run` makes before work, and no work")
    config_args(p, required=False)
    add("config", cmd_config, "print the default config, documented, as YAML")
    p = add("serve-demo", cmd_serve_demo, "serve the demo STAC API and COGs until stopped")
    p.add_argument("--data-dir", type=Path, default=DEMO_DATA_DIR)
    p.add_argument("--stac-port", type=int, default=8765)
    p.add_argument("--files-port", type=int, default=8766)
    p = add("generate-demo", cmd_generate_demo, "generate the demo region's data only")
    p.add_argument("--data-dir", type=Path, default=DEMO_DATA_DIR)
    add_review_parser(sub)
    add_release_parsers(sub)
    add_pull_parsers(add)
    add_trainer_parsers(add)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit code (flows.session: 2 for config errors, 1 for others).

    A failure prints one line; the traceback goes to the run's log file, and with ``--debug``
    to the terminal. SIGTERM and SIGHUP stop a command as Ctrl-C does, servers included.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(normalize_argv(argv))
    tempfile.tempdir = None
    with stop_on_signals(), Session(argv, debug=args.debug) as session:
        args.session = session
        try:
            code: int = args.func(args)
        except (Exception, KeyboardInterrupt) as exc:
            return session.fail(exc)
    return code


if __name__ == "__main__":
    sys.exit(main())
