"""The dataset-building flow: plan, then one Prefect task per shard, then a report.

Tasks are coarse on purpose: one task run per shard (thousands of per-sample task runs would
swamp a Prefect server and its UI). Shards run in parallel on Prefect's thread-pool task runner
(``runtime.workers``); IO inside a shard uses its own thread pool.

By default Prefect starts a temporary local server for the run; set ``PREFECT_API_URL`` to use
a long-running server and see runs in its UI.

The flows take a :data:`~pipeline.runner.plan.CheckedConfig`: whoever starts a run checks it
once, outside the flow (``eocap run`` and ``eocap caption`` before any Prefect work, so a bad
config prints one plain line; the deployable ``*_from_file`` flows when they load their file).
A deployed run in which every sample failed ends its flow run Failed, saying why.
"""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prefect import flow, get_client, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.concurrency.sync import concurrency
from prefect.exceptions import ObjectAlreadyExists
from prefect.futures import as_completed
from prefect.task_runners import ThreadPoolTaskRunner

from pipeline.caption.registry import IN_PROCESS_BACKENDS
from pipeline.core.config import RunConfig, load_config
from pipeline.core.errors import RunFailedError
from pipeline.dataset.stats import ShardStats
from pipeline.runner.build import build_shard
from pipeline.runner.caption import caption_shard, shards_pending_caption
from pipeline.runner.plan import (
    CheckedConfig,
    RunPlan,
    plan_run,
    planned_shards,
    preflight,
    preflight_captions,
)
from pipeline.runner.progress import StageRates
from pipeline.runner.report import RunReport, all_failed, summarize
from pipeline.runner.retry import failed_samples
from pipeline.stages.sampling import ShardPlan

CAPTION_LIMIT = "eocap-caption"
"""Prefect global concurrency limit held by each caption-stage shard task."""

__all__ = [
    "CAPTION_LIMIT",
    "build_dataset",
    "build_dataset_from_file",
    "caption_dataset",
    "caption_dataset_from_file",
    "make_deployment",
    "run_build",
    "run_captions",
    "task_runner",
]


@task(name="plan-run", cache_policy=NO_CACHE)
def plan_run_task(config: CheckedConfig) -> RunPlan:
    """Manifest, ``run.json``, Overture extract, list of pending shards."""
    return plan_run(config)


@task(name="build-shard", cache_policy=NO_CACHE, task_run_name="build-shard-{shard.index:05d}")
def build_shard_task(
    shard: ShardPlan, config: RunConfig, overture_root: Path, only: set[str] | None = None
) -> ShardStats:
    """Build one shard (all stages) and write it with its stats; ``only``: retry these."""
    return build_shard(shard, config, overture_root=overture_root, only=only)


ShardCallback = Callable[[ShardStats, int, int], None]


@flow(name="eocap-build-dataset", validate_parameters=False)
def build_dataset(
    config: CheckedConfig, on_shard: ShardCallback | None = None, retry_failed: bool = False
) -> RunReport:
    """Build (or resume) the dataset a config describes.

    Args:
        config: The run config, checked (:func:`~pipeline.runner.plan.preflight`).
        on_shard: Called with (stats, done, total) after each shard, for progress display
            (``pipeline.runner.progress.StageProgress.on_shard`` draws bars per stage).
        retry_failed: Also rebuild the failed samples of finished shards, keeping their other
            rows as they are.
    """
    t0 = time.perf_counter()
    plan = plan_run_task(config)
    work: Iterator[tuple[ShardPlan, set[str] | None]] = ((s, None) for s in plan.iter_pending())
    if retry_failed:
        work = itertools.chain(work, failed_samples(plan))
    # A bounded window of submitted shards: memory stays flat however many shards a run has,
    # and a freed worker gets the next shard at once.
    window = 2 * config.runtime.workers
    in_flight: list[Any] = []
    built: list[ShardStats] = []
    total = plan.n_shards
    rates = StageRates(config.runtime.workers)  # per-stage rates and ETA, in the flow's log
    logger = get_run_logger()

    def collect(until: int) -> None:
        while len(in_flight) > until:
            done = next(as_completed(in_flight))
            in_flight.remove(done)
            stats = done.result()
            built.append(stats)
            rates.add(stats, len(built), total)
            logger.info(rates.summary())
            if on_shard is not None:
                on_shard(stats, len(built), total)

    for shard, only in work:
        in_flight.append(build_shard_task.submit(shard, plan.config, plan.overture_root, only))
        collect(window - 1)
    collect(0)
    built.sort(key=lambda s: s.shard)
    return summarize(plan.output_dir, plan.n_shards, built, time.perf_counter() - t0)


def task_runner(config: RunConfig) -> Any:
    """The Prefect task runner ``runtime`` asks for."""
    rt = config.runtime
    if rt.task_runner == "dask":
        from prefect_dask.task_runners import DaskTaskRunner

        if rt.dask_address:
            return DaskTaskRunner(address=rt.dask_address)
        return DaskTaskRunner(
            cluster_class="distributed.LocalCluster",
            cluster_kwargs={
                "n_workers": rt.workers,
                "threads_per_worker": 1,
                "processes": True,
                "dashboard_address": None,
            },
        )
    return ThreadPoolTaskRunner(max_workers=rt.workers)


def run_build(config: CheckedConfig, on_shard: ShardCallback | None = None, **kw: Any) -> RunReport:
    """Run :func:`build_dataset` on the task runner ``runtime`` asks for."""
    result = build_dataset.with_options(task_runner=task_runner(config))(config, on_shard, **kw)
    assert isinstance(result, RunReport)
    return result


@task(name="caption-shard", cache_policy=NO_CACHE, task_run_name="caption-shard-{index:05d}")
def caption_shard_task(index: int, config: RunConfig) -> ShardStats:
    """Caption one shard's pending rows, holding one slot of the ``eocap-caption`` limit."""
    with concurrency(CAPTION_LIMIT, occupy=1, strict=True):
        return caption_shard(index, config)


def _ensure_caption_limit(slots: int) -> None:
    """Create or resize the ``eocap-caption`` limit; caption hosts may start at the same time."""
    with get_client(sync_client=True) as client:
        try:
            client.upsert_global_concurrency_limit_by_name(CAPTION_LIMIT, slots)
        except ObjectAlreadyExists:  # another process created it between read and create
            client.upsert_global_concurrency_limit_by_name(CAPTION_LIMIT, slots)


@flow(name="eocap-caption-dataset", validate_parameters=False)
def caption_dataset(config: CheckedConfig) -> RunReport:
    """Caption every ``pending_caption`` row of a run built with ``captioner.stage: separate``.

    Its own flow (and deployment), for GPU workers: each shard task holds one slot of the
    Prefect global concurrency limit ``eocap-caption`` (``captioner.gpu_workers`` slots), so
    however many workers run this flow, each GPU server gets one shard at a time. It plans
    nothing: the shards are those the build planned (read from its manifest).

    Args:
        config: The run config, checked for captioning
            (:func:`~pipeline.runner.plan.preflight_captions`).
    """
    t0 = time.perf_counter()
    n_shards = planned_shards(config)
    _ensure_caption_limit(config.captioner.gpu_workers)
    futures = [
        caption_shard_task.submit(index, config)
        for index in shards_pending_caption(config.output.dir, range(n_shards))
    ]
    built = sorted((f.result() for f in futures), key=lambda s: s.shard)
    return summarize(config.output.dir, n_shards, built, time.perf_counter() - t0)


def run_captions(config: CheckedConfig) -> RunReport:
    """Run :func:`caption_dataset`: ``captioner.gpu_workers`` shard threads against servers.

    A process with an in-process model (``transformers``, ``vllm``, ``fast``) is one GPU worker
    and captions one shard at a time: more threads would only wait for its model while holding
    slots of the ``eocap-caption`` limit that other GPU workers could use.
    """
    in_process = config.captioner.backend in IN_PROCESS_BACKENDS
    workers = 1 if in_process else config.captioner.gpu_workers
    runner: Any = ThreadPoolTaskRunner(max_workers=workers)
    result = caption_dataset.with_options(task_runner=runner)(config)
    assert isinstance(result, RunReport)
    return result


@flow(name="eocap-build-dataset-from-file")
def build_dataset_from_file(config_path: str, retry_failed: bool = False) -> dict[str, Any]:
    """Deployable entry point: build the dataset a YAML config describes (JSON parameters).

    Scheduled runs re-read the file (and ``EOCAP_*`` variables) each time, so a nightly run
    that extends a dataset picks up new regions or periods edited into the config. A run
    resumes the previous one: finished shards are skipped.
    """
    config = preflight(load_config(config_path))
    return _succeeded(run_build(config, retry_failed=retry_failed))


@flow(name="eocap-caption-dataset-from-file")
def caption_dataset_from_file(config_path: str) -> dict[str, Any]:
    """Deployable entry point of the caption flow (GPU workers): caption pending rows."""
    return _succeeded(run_captions(preflight_captions(load_config(config_path))))


def _succeeded(report: RunReport) -> dict[str, Any]:
    """A deployed run's report; a run in which every sample failed fails its flow run.

    Raises:
        RunFailedError: saying why the samples failed and what to change.
    """
    failed = all_failed(report)
    if failed is not None:
        raise RunFailedError(failed)
    return report.to_json()


def make_deployment(
    config_path: Path,
    *,
    name: str,
    cron: str | None = None,
    interval_s: float | None = None,
    retry_failed: bool = False,
    stage: str = "build",
) -> Any:
    """A Prefect deployment of the build flow (or, ``stage="caption"``, the caption flow)."""
    path = str(config_path.resolve())
    if stage == "caption":
        return caption_dataset_from_file.to_deployment(
            name=name,
            cron=cron,
            interval=interval_s,
            parameters={"config_path": path},
            description=f"eocap captioning of {config_path}",
            tags=["eocap", "gpu"],
        )
    return build_dataset_from_file.to_deployment(
        name=name,
        cron=cron,
        interval=interval_s,
        parameters={"config_path": path, "retry_failed": retry_failed},
        description=f"eocap dataset build from {config_path}",
        tags=["eocap"],
    )
