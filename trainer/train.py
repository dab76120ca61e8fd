"""The training loop: contrastive pairs from a release, checkpoints that resume exactly.

One process per GPU under ``torchrun`` (DDP; CPU runs use gloo), one process without it.
Each step: a batch from :func:`trainer.data.train_loader`, captions tokenised (long ones
handled per ``model.long_captions``, counted), chips resized on the device, image and text
embeddings under bf16 autocast on CUDA, the contrastive loss over the global batch
(:mod:`trainer.loss` gathers features across ranks), AdamW with linear warmup and cosine
decay, gradient clipping, and the temperature clamped to 100 as in OpenCLIP. A modality-aware
model (``model.modalities``, :mod:`trainer.modal`) gets its inputs with random modalities and
channels marked absent first (``train.modality_dropout``, ``train.channel_dropout``).

Resume contract: a checkpoint written after step ``s`` holds model, optimiser, scheduler,
every RNG, the loader's state (which samples each worker slot has yielded this epoch) and the
caption-fit counts. Resumed, the run replays steps ``s + 1 ...`` exactly as the uninterrupted
run would have (tested: the losses match step for step), provided ``train.checkpoint_every`` is
a multiple of ``data.num_workers`` (the config checks). ``metrics.csv`` rows after ``s``
written before a kill are dropped on resume, so the log has each step once.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from pipeline.core.errors import EocapError
from trainer.checkpoints import (
    CheckpointError,
    Preprocessing,
    build_model,
    capture_rng,
    latest_checkpoint,
    restore_rng,
    save_model_folder,
    save_train_state,
)
from trainer.config import TrainConfig
from trainer.data import (
    batch_model_input,
    caption_ids,
    read_band_stats,
    read_captions,
    train_dataset,
    train_loader,
)
from trainer.loss import ContrastiveLoss, clamp_logit_scale_, contrastive_loss
from trainer.modal import input_dropout
from trainer.model import ARCHS, MultispectralCLIP
from trainer.text import FitCounts, TextTokenizer

__all__ = [
    "METRICS_COLUMNS",
    "RunPaths",
    "TrainError",
    "TrainResult",
    "autocast_for",
    "build_optimizer",
    "optimisation_step",
    "train",
]

METRICS_COLUMNS = (
    "step",
    "epoch",
    "loss",
    "lr",
    "logit_scale",
    "samples_per_s",
    "captions_whole",
    "captions_sentences",
    "captions_cut",
)
"""The columns of ``metrics.csv`` (one row every ``train.log_every`` steps and at the end)."""


class TrainError(EocapError):
    """A training run that cannot start or go on (what, where, what to do)."""


@dataclass(frozen=True)
class RunPaths:
    """The files of a training run under ``train.output_dir``."""

    root: Path

    @property
    def checkpoints(self) -> Path:
        """``checkpoints/step-NNNNNNN.pt``."""
        return self.root / "checkpoints"

    @property
    def metrics(self) -> Path:
        """``metrics.csv``: :data:`METRICS_COLUMNS`."""
        return self.root / "metrics.csv"

    @property
    def text(self) -> Path:
        """The run's tokenizer (trained once, reused on resume)."""
        return self.root / "text"

    @property
    def model(self) -> Path:
        """The final model folder (Hugging Face + OpenCLIP + eocap settings)."""
        return self.root / "model"

    @property
    def initial_model(self) -> Path:
        """The model as it started (``eval.initial``), scored beside the trained one."""
        return self.root / "model-initial"

    @property
    def config(self) -> Path:
        """The config the run was started with."""
        return self.root / "train-config.json"


@dataclass
class TrainResult:
    """What a run did."""

    steps: int
    epochs_started: int
    samples_seen: int
    seconds: float
    final_loss: float
    fit: FitCounts
    model_dir: Path
    resumed_from: int | None = None
    losses: list[float] = field(default_factory=list)


def _distributed() -> tuple[int, int, int]:
    """(rank, local rank, world size), starting the process group under torchrun."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 0, 1
    if not dist.is_initialized():
        backend = "nccl" if torch.cuda.is_available() else "gloo"
        dist.init_process_group(backend=backend, timeout=dt.timedelta(minutes=30))
    return dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size()


GLOO_DRAIN_S = 0.25
"""Seconds the GIL is handed to gloo's worker threads before the process group goes."""


def leave_process_group() -> None:
    """Wait for every rank, then destroy the process group without deadlocking.

    A gloo worker thread frees a finished collective (and, through a barrier, the collectives
    before it) after the caller has returned, and takes the GIL to drop tensors that Python
    created (``all_gather_object``'s, the loss's gather). The group's destructor joins those
    threads while holding the GIL: a rank whose DDP reducer (it holds the group) was freed, as
    :func:`train` returned, while a worker still waited for the GIL hung for good, about 1 CPU
    run in 20 under load (torch 2.13: ``~ProcessGroupGloo`` in ``thread.join``, its worker in
    ``gil_scoped_acquire``). A process that ended with such a worker aborted instead (SIGABRT,
    "terminate called without an active exception"). Sleeping releases the GIL, so the workers
    finish first.
    """
    dist.barrier()
    if dist.get_backend() == "gloo":
        time.sleep(GLOO_DRAIN_S)
    dist.destroy_process_group()


def _device(local_rank: int) -> torch.device:
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        # fp32 matmuls (precision: fp32, and outside autocast) on TF32 tensor cores
        torch.set_float32_matmul_precision("high")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def build_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.AdamW:
    """AdamW; gains, biases and the temperature are not decayed (OpenCLIP's rule)."""
    decay: list[nn.Parameter] = []
    keep: list[nn.Parameter] = []
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        exempt = param.ndim < 2 or "norm" in name or "bias" in name or "logit_scale" in name
        (keep if exempt else decay).append(param)
    loop = config.train
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": loop.weight_decay},
            {"params": keep, "weight_decay": 0.0},
        ],
        lr=loop.lr,
        betas=loop.betas,
        eps=loop.eps,
    )


def lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Learning-rate multiplier at ``step``: linear warmup to 1, then cosine decay to 0."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(total - warmup, 1)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _tokenizer(config: TrainConfig, paths: RunPaths, resuming: bool) -> TextTokenizer:
    if resuming and paths.text.is_dir():
        return TextTokenizer.load(paths.text)
    if config.model.tokenizer == "clip":
        tokenizer = TextTokenizer.clip()
    else:
        captions = read_captions(config.data.source, config.data.train_split)
        if not captions:
            raise TrainError(
                f"no captions in {config.data.source} split {config.data.train_split}: "
                "train on a captioned release"
            )
        tokenizer = TextTokenizer.train(captions, vocab_size=config.model.vocab_size)
    tokenizer.save(paths.text)
    return tokenizer


def autocast_for(config: TrainConfig, device: torch.device) -> Any:
    """bf16 autocast when ``train.precision`` asks for it (``auto``: on CUDA), else nothing."""
    bf16 = config.train.precision == "bf16" or (
        config.train.precision == "auto" and device.type == "cuda"
    )
    if not bf16:
        return nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def optimisation_step(
    forward: nn.Module,
    model: MultispectralCLIP,
    optimizer: torch.optim.Optimizer,
    loss_fn: ContrastiveLoss,
    pixels: Tensor,
    ids: Tensor,
    *,
    autocast: Any,
    grad_clip: float | None,
) -> Tensor:
    """One step: forward under ``autocast``, loss, backward, clip, AdamW, temperature clamp.

    ``forward`` is the module called (the DDP wrapper, or ``model`` itself); the temperature and
    bias are read from ``model``. The learning-rate schedule is the caller's. Returns the loss.
    """
    with autocast:
        image, text = forward(pixels, ids)
        scale = model.logit_scale.exp()
        loss = loss_fn(image.float(), text.float(), scale, model.logit_bias)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    clamp_logit_scale_(model.logit_scale)
    detached: Tensor = loss.detach()
    return detached


def _dropout_generator(seed: int, rank: int, step: int) -> torch.Generator:
    """The modality/channel dropout draws of one step and rank.

    Seeded per step rather than drawn from torch's global generator, which a resumed run's
    new DataLoader iterator advances: the draws after a resume are the uninterrupted run's.
    """
    entropy = np.random.SeedSequence([seed, rank, step]).generate_state(1)[0]
    return torch.Generator().manual_seed(int(entropy))


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows after ``step`` (written by a killed run after its last checkpoint)."""
    if not path.is_file():
        return
    with path.open(newline="") as handle:
        rows = [r for r in csv.DictReader(handle) if int(r["step"]) <= step]
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=METRICS_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)


def _unwrap(model: nn.Module) -> MultispectralCLIP:
    inner = model.module if isinstance(model, DistributedDataParallel) else model
    assert isinstance(inner, MultispectralCLIP)
    return inner


def preprocessing_of(config: TrainConfig) -> Preprocessing:
    """The run's preprocessing: bands, normalisation from the band stats, sizes."""
    arch = ARCHS[config.model.arch]
    try:
        return Preprocessing.from_band_stats(
            read_band_stats(config),
            config.data.band_names(),
            image_size=config.model.image_size or arch.image_size,
            crop=config.data.crop,
            modalities=config.model.modalities,
            polarisations=config.data.polarisations,
        )
    except (OSError, ValueError) as exc:
        raise TrainError(f"cannot read band statistics for {config.data.source}: {exc}") from None


ProgressHook = Callable[[int, int, float, float], None]
"""Called after each step with (step, total steps, loss, samples/s)."""


def train(
    config: TrainConfig,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    on_step: ProgressHook | None = None,
) -> TrainResult:
    """Train per ``config``; ``resume`` continues from the newest checkpoint.

    Args:
        config: The run.
        resume: Continue the run in ``train.output_dir`` from its newest checkpoint.
        stop_after: Stop after this step (as a kill would, without the final export); for
            benchmarks and tests of the resume contract.
        on_step: Progress callback.

    Raises:
        TrainError: for an output dir that holds another run (without ``resume``), or one
            with nothing to resume, and for data that cannot train.
    """
    paths = RunPaths(config.output_dir)
    existing = latest_checkpoint(paths.checkpoints)
    if existing is not None and not resume:
        raise TrainError(
            f"{paths.root} already holds checkpoints ({existing.name}): pass --resume to go on, "
            "or set train.output_dir to a new folder"
        )
    if resume and existing is None:
        raise TrainError(f"nothing to resume in {paths.checkpoints}: start without --resume")
    rank, local_rank, world = _distributed()
    device = _device(local_rank)
    paths.root.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        paths.config.write_text(config.model_dump_json(indent=2) + "\n")
    try:
        tokenizer = _tokenizer(config, paths, resume)
        prep = preprocessing_of(config)
        dataset = train_dataset(config, prep, rank=rank, world_size=world)
    except (OSError, pa.ArrowException) as exc:
        raise TrainError(
            f"cannot read split {config.data.train_split} of {config.data.source}: {exc}; "
            "data.source must be a release (`eocap release OUTPUT DIR`)"
        ) from None
    loss_fn = contrastive_loss(config.train.loss)
    try:
        model = build_model(
            config.model,
            prep.bands,
            tokenizer,
            init_logit_scale=loss_fn.init_logit_scale,
            init_logit_bias=loss_fn.init_logit_bias,
            seed=config.train.seed,
            polarisations=prep.polarisations,
        )
    except CheckpointError as exc:
        raise TrainError(str(exc)) from None
    model.set_gradient_checkpointing(config.model.gradient_checkpointing)
    model.to(device)
    wrapped: nn.Module = (
        DistributedDataParallel(model, device_ids=[local_rank] if device.type == "cuda" else None)
        if world > 1
        else model
    )
    optimizer = build_optimizer(model, config)
    loop = config.train
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: lr_factor(s, warmup=loop.warmup_steps, total=loop.steps)
    )
    if len(dataset) < loop.batch_size * max(config.data.num_workers, 1):
        raise TrainError(
            f"split {config.data.train_split} of {config.data.source} has {len(dataset)} samples "
            f"per rank, fewer than batch_size x workers: lower train.batch_size"
        )
    loader = train_loader(dataset, config, pin_memory=device.type == "cuda")

    step, epoch, resumed_from = 0, 0, None
    fit = FitCounts()
    if resume and existing is not None:
        saved = torch.load(existing, map_location="cpu", weights_only=False)
        model.load_state_dict(saved["model"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        dataset.load_state_dict(saved["loader"][rank])
        restore_rng(saved["rng"])
        step, epoch, resumed_from = int(saved["step"]), int(saved["epoch"]), int(saved["step"])
        fit = FitCounts(**saved["fit"])
        if rank == 0:
            _truncate_metrics(paths.metrics, step)
    else:
        dataset.set_epoch(0)
        if rank == 0 and config.eval.initial:
            _save_model(paths.initial_model, model, tokenizer, prep, config, steps=0, fit=fit)

    metrics_file = paths.metrics.open("a", newline="") if rank == 0 else None
    writer = csv.DictWriter(metrics_file, fieldnames=METRICS_COLUMNS) if metrics_file else None
    if writer is not None and metrics_file is not None and metrics_file.tell() == 0:
        writer.writeheader()
    losses: list[float] = []
    started = time.perf_counter()
    window_start, window_samples = started, 0
    samples_seen = 0
    epochs_started = 0
    last = stop_after if stop_after is not None else loop.steps
    loss_value = float("nan")
    try:
        while step < last:
            epochs_started += 1
            # consumed: batches of this epoch since the loader state was set (resume point)
            for consumed, batch in enumerate(loader, start=1):
                ids = caption_ids(
                    tokenizer,
                    batch["caption"],
                    batch["sample_id"],
                    context_length=config.model.context_length,
                    policy=config.model.long_captions,
                    seed=loop.seed,
                    epoch=epoch,
                    counts=fit,
                )
                pixels = batch_model_input(batch, prep, device)
                if loop.modality_dropout or loop.channel_dropout:
                    pixels = input_dropout(
                        pixels,
                        prep.layout,
                        modality_p=loop.modality_dropout,
                        channel_p=loop.channel_dropout,
                        generator=_dropout_generator(loop.seed, rank, step),
                    )
                loss = optimisation_step(
                    wrapped,
                    model,
                    optimizer,
                    loss_fn,
                    pixels,
                    ids.to(device, non_blocking=True),
                    autocast=autocast_for(config, device),
                    grad_clip=loop.grad_clip,
                )
                scheduler.step()
                step += 1
                batch_samples = len(batch["sample_id"]) * world
                samples_seen += batch_samples
                window_samples += batch_samples
                loss_value = float(loss)
                losses.append(loss_value)
                now = time.perf_counter()
                rate = window_samples / max(now - window_start, 1e-9)
                if on_step is not None and rank == 0:
                    on_step(step, loop.steps, loss_value, rate)
                if writer is not None and (step % loop.log_every == 0 or step == loop.steps):
                    writer.writerow(
                        {
                            "step": step,
                            "epoch": epoch,
                            "loss": f"{loss_value:.6f}",
                            "lr": f"{scheduler.get_last_lr()[0]:.6g}",
                            "logit_scale": f"{float(model.logit_scale.detach().exp()):.4f}",
                            "samples_per_s": f"{rate:.2f}",
                            "captions_whole": fit.whole,
                            "captions_sentences": fit.sentences,
                            "captions_cut": fit.cut,
                        }
                    )
                    assert metrics_file is not None
                    metrics_file.flush()
                    window_start, window_samples = now, 0
                if step % loop.checkpoint_every == 0 or step == loop.steps:
                    _checkpoint(
                        paths,
                        prep,
                        model,
                        optimizer,
                        scheduler,
                        dataset,
                        config,
                        step=step,
                        epoch=epoch,
                        consumed=consumed,
                        fit=fit,
                        rank=rank,
                        world=world,
                    )
                if step >= last:
                    break
            else:
                epoch += 1
                dataset.set_epoch(epoch)
                continue
            break
    finally:
        if metrics_file is not None:
            metrics_file.close()
    seconds = time.perf_counter() - started
    if stop_after is None and rank == 0:
        _save_model(paths.model, model, tokenizer, prep, config, steps=step, fit=fit)
    if world > 1:
        leave_process_group()
    return TrainResult(
        steps=step,
        epochs_started=epochs_started,
        samples_seen=samples_seen,
        seconds=seconds,
        final_loss=loss_value,
        fit=fit,
        model_dir=paths.model,
        resumed_from=resumed_from,
        losses=losses,
    )


def _save_model(
    folder: Path,
    model: MultispectralCLIP,
    tokenizer: TextTokenizer,
    prep: Preprocessing,
    config: TrainConfig,
    *,
    steps: int,
    fit: FitCounts,
) -> None:
    save_model_folder(
        folder,
        model,
        tokenizer,
        prep,
        context_length=config.model.context_length,
        extra={"run": config.name, "steps": steps, "captions": fit.as_dict()},
    )


def _checkpoint(
    paths: RunPaths,
    prep: Preprocessing,
    model: MultispectralCLIP,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    dataset: Any,
    config: TrainConfig,
    *,
    step: int,
    epoch: int,
    consumed: int,
    fit: FitCounts,
    rank: int,
    world: int,
) -> None:
    """Save the training state after ``step``; every rank's loader state goes to rank 0."""
    loader_state = dataset.state_after(
        consumed,
        batch_size=config.train.batch_size,
        num_workers=config.data.num_workers,
        drop_last=True,
    )
    states: list[Any] = [loader_state]
    if world > 1:
        states = [None] * world
        dist.all_gather_object(states, loader_state)
    if rank != 0:
        return
    save_train_state(
        paths.checkpoints,
        step,
        {
            "step": step,
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "loader": states,
            "rng": capture_rng(),
            "fit": fit.as_dict(),
            "model_description": model.describe(),
            "preprocessing": asdict(prep),
            "context_length": config.model.context_length,
        },
        keep=config.train.keep_checkpoints,
    )
