"""Training throughput (issue 12): samples/s and peak memory of the multispectral CLIP trainer.

Measured in one run, on CUDA when there is one (else the CPU), ``--device`` to choose:

* ``flops``: FLOPs per sample counted by ``torch.utils.flop_counter.FlopCounterMode`` (2 per
  multiply-add): the image forward, the text forward, and a whole training step's forward and
  backward, of the ``--arch`` model in fp32.
* ``synthetic``: full training steps of ``MultispectralCLIP(ARCHS[--arch], the 10 Llama3-MS-CLIP
  bands, eos_id=49407)`` on one fixed batch of random pixels ``[B, 10, S, S]`` and random token
  ids (77 positions, an end token at a random length, padding after it): forward, symmetric
  InfoNCE (:func:`trainer.loss.contrastive_loss`), backward, gradient clipping, AdamW
  (``trainer.train``'s parameter groups), temperature clamp: ``trainer.train.optimisation_step``
  itself, under ``trainer.train``'s autocast for each precision (fp32, bf16). Precisions
  alternate block by block (``--repeats`` blocks each, ``--warmup`` untimed steps then
  ``--steps`` timed ones per block); samples/s is the median over blocks, and bf16/fp32 their
  ratio. Peak memory per block: on CUDA ``torch.cuda.max_memory_allocated`` (weights, gradients
  and AdamW state included); on the CPU the process's peak resident set (``VmHWM`` of
  ``/proc/self/status``, reset before each block through ``/proc/self/clear_refs``), and its
  rise over the resident set at the block's start (the activations, mostly).
* ``loader``: the real input path without the model: ``trainer.data.train_dataset`` (the
  release's training split, the 10 bands as raw uint16 DN) under ``trainer.data.train_loader``
  with ``--loader-workers`` worker processes, batches of
  ``--loader-batch``, ``--loader-epochs`` epochs per run, repeated and interleaved. CPU time is
  every process's: this one (``time.process_time``) plus its reaped workers
  (``RUSAGE_CHILDREN``); samples are those the workers read (a worker's last short batch is
  read, then dropped). Beside it, the training process's own per-sample work:
  ``trainer.data.caption_ids`` (CLIP BPE, long captions by sentences) in CPU time, and
  ``trainer.data.to_model_input`` (normalisation with the release's ``band_stats.json`` and
  bicubic resize to the model's side) on the training device (CPU time on the CPU,
  synchronised wall time on CUDA).
* ``feeding``: loader cores needed to keep the device busy = (samples/s of the fastest
  precision) x (CPU-seconds per sample of the loader workers); with the training process's
  caption tokenisation (and, on the CPU, the resize) added; and the same for the issue's goal
  of 1,000 samples/s.
* ``end_to_end``: ``trainer.train.train`` itself on the release for ``--e2e-warmup`` +
  ``--e2e-steps`` steps (``stop_after``: no checkpoint, no export), CLIP's tokenizer,
  ``--e2e-arch`` (tiny on the CPU, vit-b-16 on CUDA) at ``--e2e-batch`` with
  ``--e2e-workers``; its samples/s over the steps after the warmup, against the synthetic
  steps of the same model, batch and precision (``auto``: bf16 on CUDA, fp32 on the CPU)
  measured in the same run.

Run (CPU): ``python -m benchmarks.train_throughput --release /tmp/bench-release --batch 8
--steps 3``; (GPU): ``python -m benchmarks.train_throughput --device cuda --batch 256 --steps 20
--release /tmp/bench-release``. A release: ``eocap release output/demo /tmp/bench-release``.
"""

from __future__ import annotations

import argparse
import resource
import shutil
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode

from benchmarks._common import RESULTS_DIR, emit, log, machine, median
from pipeline.dataset.bands import BAND_PRESETS
from pipeline.dataset.layout import ReleaseLayout
from pipeline.dataset.loader import SampleDataset, parquet_files
from trainer.checkpoints import Preprocessing
from trainer.config import TrainConfig
from trainer.data import caption_ids, to_model_input, train_dataset, train_loader
from trainer.loss import contrastive_loss
from trainer.model import ARCHS, MultispectralCLIP
from trainer.text import FitCounts, TextTokenizer
from trainer.train import (
    autocast_for,
    build_optimizer,
    optimisation_step,
    preprocessing_of,
    train,
)

BANDS = BAND_PRESETS["llama3-ms-clip-10"]
EOS_ID = 49407  # CLIP's end-of-text token (trainer.text.TextTokenizer.clip().end_id)
GOAL_SAMPLES_PER_S = 1000.0  # issue 12: per H100, fed by <= 4 loader cores
GIB = 2**30


def _cpu_seconds() -> tuple[float, float]:
    """CPU seconds of this process (all threads), and of its reaped children (loader workers)."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time(), children.ru_utime + children.ru_stime


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _proc_status_bytes(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) * 1024
    raise OSError(f"no {field} in /proc/self/status")


class PeakMemory:
    """Peak memory of a block: CUDA's allocator peak, or the process's peak resident set."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.start = 0

    def _current(self) -> int:
        if self.device.type == "cuda":
            return torch.cuda.memory_allocated(self.device)
        return _proc_status_bytes("VmRSS")

    def reset(self) -> None:
        """Start a block: forget the peak so far (on the CPU: Linux's clear_refs, value 5)."""
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        else:
            Path("/proc/self/clear_refs").write_text("5")
        self.start = self._current()

    def peak(self) -> dict[str, float]:
        """The block's peak, and its rise over the block's start, in GiB."""
        if self.device.type == "cuda":
            top = torch.cuda.max_memory_allocated(self.device)
        else:
            top = _proc_status_bytes("VmHWM")
        return {
            "peak_gib": round(top / GIB, 3),
            "peak_over_start_gib": round((top - self.start) / GIB, 3),
        }


def synthetic_batch(
    model: MultispectralCLIP, batch: int, device: torch.device, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Random normalised pixels and token ids: one end token per row, padding (0) after it."""
    arch = model.arch
    gen = torch.Generator().manual_seed(seed)
    side = arch.image_size
    pixels = torch.randn((batch, len(model.bands), side, side), generator=gen)
    context = arch.context_length
    ids = torch.randint(1, EOS_ID, (batch, context), generator=gen)  # below the end token
    lengths = torch.randint(8, context, (batch,), generator=gen)
    positions = torch.arange(context)
    ids[positions > lengths[:, None]] = model.pad_id
    ids[torch.arange(batch), lengths] = EOS_ID
    return pixels.to(device), ids.to(device)


def count_flops(arch_name: str) -> dict[str, float]:
    """GFLOP per sample (2 per multiply-add) of the forward passes and of a training step."""
    model = MultispectralCLIP(ARCHS[arch_name], BANDS, eos_id=EOS_ID)
    loss_fn = contrastive_loss("clip")
    batch = 2  # a contrastive loss needs a pair of pairs; FLOPs scale with the batch
    pixels, ids = synthetic_batch(model, batch, torch.device("cpu"))

    def gflop(work: Callable[[], Any]) -> float:
        counter = FlopCounterMode(display=False)
        with counter:
            work()
        return counter.get_total_flops() / batch / 1e9

    with torch.no_grad():
        image = gflop(lambda: model.encode_image(pixels))
        text = gflop(lambda: model.encode_text(ids))

    def forward_backward() -> None:
        image_features, text_features = model(pixels, ids)
        loss_fn(image_features, text_features, model.logit_scale.exp()).backward()

    step = gflop(forward_backward)
    return {
        "image_forward_gflop": round(image, 2),
        "text_forward_gflop": round(text, 2),
        "forward_gflop": round(image + text, 2),
        "train_step_gflop": round(step, 2),
        "train_step_over_forward": round(step / (image + text), 3),
    }


def measure_synthetic(
    config: TrainConfig,
    arch_name: str,
    precisions: list[str],
    device: torch.device,
    *,
    batch: int,
    steps: int,
    warmup: int,
    repeats: int,
    grad_checkpointing: bool,
) -> dict[str, Any]:
    """Synthetic training steps per precision, blocks interleaved; medians and peaks."""
    torch.manual_seed(0)
    model = MultispectralCLIP(ARCHS[arch_name], BANDS, eos_id=EOS_ID).to(device)
    model.train()
    model.set_gradient_checkpointing(grad_checkpointing)
    optimizer = build_optimizer(model, config)
    loss_fn = contrastive_loss("clip")
    pixels, ids = synthetic_batch(model, batch, device)
    configs = {p: config.with_updates({"train.precision": p}) for p in precisions}

    def step(precision: str) -> torch.Tensor:
        return optimisation_step(
            model,
            model,
            optimizer,
            loss_fn,
            pixels,
            ids,
            autocast=autocast_for(configs[precision], device),
            grad_clip=config.train.grad_clip,
        )

    for precision in precisions:  # AdamW's state exists before any block is measured
        step(precision)
    memory = PeakMemory(device)
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in precisions}
    for repeat in range(repeats):
        for precision in precisions:
            for _ in range(warmup):
                step(precision)
            _sync(device)
            memory.reset()
            start = time.perf_counter()
            for _ in range(steps):
                loss = step(precision)
            loss_value = float(loss)  # waits for the device
            seconds = time.perf_counter() - start
            run = {
                "seconds": round(seconds, 4),
                "samples_per_s": batch * steps / seconds,
                "loss": round(loss_value, 4),
                **memory.peak(),
            }
            runs[precision].append(run)
            log(
                f"synthetic {arch_name} {precision} #{repeat}: "
                f"{run['samples_per_s']:.2f} samples/s, peak {run['peak_gib']:.2f} GiB"
            )
    summary = {
        p: {
            "samples_per_s": round(median([r["samples_per_s"] for r in rs]), 3),
            "peak_gib": max(r["peak_gib"] for r in rs),
            "peak_over_start_gib": max(r["peak_over_start_gib"] for r in rs),
        }
        for p, rs in runs.items()
    }
    out: dict[str, Any] = {
        "arch": arch_name,
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
        "image_size": model.arch.image_size,
        "bands": list(model.bands),
        "batch": batch,
        "steps": steps,
        "warmup": warmup,
        "repeats": repeats,
        "grad_checkpointing": grad_checkpointing,
        "summary": summary,
        "runs": runs,
    }
    if "fp32" in summary and "bf16" in summary:
        out["bf16_over_fp32"] = round(
            summary["bf16"]["samples_per_s"] / summary["fp32"]["samples_per_s"], 3
        )
    return out


def _loader_config(base: TrainConfig, *, batch: int, workers: int) -> TrainConfig:
    return base.with_updates(
        {
            "train.batch_size": batch,
            "data.num_workers": workers,
            "train.checkpoint_every": max(workers, 1),
        }
    )


def replicated_release(source: str, copies: int, into: Path) -> str:
    """A release whose training split is ``source``'s ``copies`` times over (symbolic links).

    A small demo release starts loader workers every few dozen samples; copies make an
    epoch long enough that worker start-up weighs as little as it does on a real release.
    """
    layout = ReleaseLayout(Path(source))
    target = ReleaseLayout(into)
    target.data_dir.mkdir(parents=True)
    shutil.copy(layout.band_stats, target.band_stats)
    train = [Path(f) for f in parquet_files(source, "train")]
    for copy in range(copies):
        for index, path in enumerate(train):
            name = target.data_file("train", copy * len(train) + index, copies * len(train))
            name.symlink_to(path.resolve())
    return str(into)


def run_loader_epochs(
    config: TrainConfig,
    device: torch.device,
    *,
    epochs: int,
    first_epoch: int,
    batched: bool = True,
    float_in_workers: bool = False,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """``epochs`` epochs of the training loader; samples read and CPU seconds, and the batches.

    ``float_in_workers``: the baseline (:func:`float32_in_workers`); ``batched`` False
    iterates the dataset itself in this process, without a DataLoader or batches.
    """
    prep = preprocessing_of(config)
    workers = config.data.num_workers
    dataset = train_dataset(config, prep, rank=0, world_size=1)
    if float_in_workers:
        dataset = float32_in_workers(config, prep)
    loader: Iterable[Any] = dataset
    if batched:
        loader = train_loader(dataset, config, pin_memory=device.type == "cuda")
        if float_in_workers:
            loader.collate_fn = stack_pairs
    batches: list[dict[str, Any]] = []
    read = delivered = 0
    cpu_start, wall_start = _cpu_seconds(), time.perf_counter()
    for epoch in range(first_epoch, first_epoch + epochs):
        dataset.set_epoch(epoch)
        read += sum(dataset.slot_counts(workers))
        for item in loader:  # exhausted: the workers exit and are reaped
            if not batched:
                delivered += 1
                continue
            delivered += len(item["sample_id"])
            if epoch == first_epoch:
                batches.append(item)
    wall = time.perf_counter() - wall_start
    main_cpu, workers_cpu = (
        end - start for end, start in zip(_cpu_seconds(), cpu_start, strict=True)
    )
    result = {
        "samples_read": read,
        "samples_delivered": delivered,
        "wall_s": wall,
        "cpu_s": main_cpu + workers_cpu,
        "main_cpu_s": main_cpu,
        "workers_cpu_s": workers_cpu,
    }
    return result, batches


def float32_in_workers(config: TrainConfig, prep: Preprocessing) -> SampleDataset:
    """The baseline input path: workers normalise to float32 (twice uint16's bytes)."""
    return SampleDataset(
        config.data.source,
        split=config.data.train_split,
        bands=prep.bands,
        band_stats=prep.band_stats(),
        crop=prep.crop,
        random_crop=prep.crop is not None,
        shuffle_buffer=config.data.shuffle_buffer,
        seed=config.train.seed,
        rank=0,
        world_size=1,
    )


def stack_pairs(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """The baseline's collate: ``torch.stack`` into private memory, copied again to be sent."""
    return {
        "pixels": torch.stack([s["pixels"] for s in samples]),
        "caption": [s["caption"] or "" for s in samples],
        "sample_id": [s["sample_id"] for s in samples],
    }


def measure_loader(
    base: TrainConfig,
    device: torch.device,
    *,
    batch: int,
    workers: list[int],
    epochs: int,
    repeats: int,
) -> dict[str, Any]:
    """The real input path without the model: loader workers, tokenisation, resize.

    Variants, interleaved: ``dataset_only`` (the dataset iterated in this process: read,
    decode, select, crop; no batches), ``workers_N`` (the trainer's loader: raw uint16 chips
    stacked into shared memory by ``default_collate``), and ``workers_N_float32`` (the
    baseline: workers normalise to float32 and ``torch.stack`` into private memory, which
    pickling copies into shared memory: four times the bytes written per sample).
    """
    variants: dict[str, tuple[int | None, bool]] = {"dataset_only": (None, False)}
    variants.update({f"workers_{w}": (w, False) for w in workers})
    widest = max(workers)
    variants[f"workers_{widest}_float32"] = (widest, True)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    batches: list[dict[str, Any]] = []
    for repeat in range(repeats):
        for name, (w, baseline) in variants.items():
            config = _loader_config(base, batch=batch, workers=w or 0)
            result, got = run_loader_epochs(
                config,
                device,
                epochs=epochs,
                first_epoch=repeat * epochs,
                batched=w is not None,
                float_in_workers=baseline,
            )
            batches = batches or got
            runs[name].append(result)
            log(
                f"loader {name} #{repeat}: {result['samples_read']} samples read, "
                f"{result['wall_s']:.2f} s wall, {result['cpu_s']:.2f} CPU-s"
            )
    summary = {}
    for name, results in runs.items():
        cpu = median([r["cpu_s"] for r in results])
        wall = median([r["wall_s"] for r in results])
        read = results[0]["samples_read"]
        summary[name] = {
            "samples_read": read,
            "samples_delivered": results[0]["samples_delivered"],
            "cpu_s": round(cpu, 3),
            "main_cpu_s": round(median([r["main_cpu_s"] for r in results]), 3),
            "wall_s": round(wall, 3),
            "samples_per_cpu_s": round(read / cpu, 1),
            "samples_per_wall_s": round(read / wall, 1),
        }
    prep = preprocessing_of(base)
    tokenizer = TextTokenizer.clip()
    fit = FitCounts()
    samples = sum(len(b["sample_id"]) for b in batches)
    cpu = time.process_time()
    for b in batches:
        caption_ids(
            tokenizer,
            b["caption"],
            b["sample_id"],
            context_length=base.model.context_length,
            policy=base.model.long_captions,
            seed=0,
            epoch=0,
            counts=fit,
        )
    tokenize_s = (time.process_time() - cpu) / samples
    pixels = batches[0]["pixels"].to(device)
    to_model_input(pixels, prep)  # first call: kernels and buffers
    resizes = 5
    _sync(device)
    clock = time.perf_counter if device.type == "cuda" else time.process_time
    start = clock()
    for _ in range(resizes):
        resized = to_model_input(pixels, prep)
    _sync(device)
    resize_s = (clock() - start) / (resizes * len(pixels))
    trainer_rate = summary[f"workers_{widest}"]["samples_per_cpu_s"]
    return {
        "source": base.data.source,
        "split": base.data.train_split,
        "bands": list(prep.bands),
        "native_size": list(pixels.shape[-2:]),
        "model_size": list(resized.shape[-2:]),
        "batch": batch,
        "epochs_per_run": epochs,
        "repeats": repeats,
        "summary": summary,
        "loader_samples_per_cpu_s": trainer_rate,
        "loader_cpu_ms_per_sample": round(1000 / trainer_rate, 3),
        "float32_baseline_cpu_ms_per_sample": round(
            1000 / summary[f"workers_{widest}_float32"]["samples_per_cpu_s"], 3
        ),
        "baseline_over_ours_cpu": round(
            summary[f"workers_{widest}"]["samples_per_cpu_s"]
            / summary[f"workers_{widest}_float32"]["samples_per_cpu_s"],
            3,
        ),
        "dataset_only_cpu_ms_per_sample": round(
            1000 / summary["dataset_only"]["samples_per_cpu_s"], 3
        ),
        "tokenize_cpu_ms_per_sample": round(tokenize_s * 1000, 3),
        "caption_fit": fit.as_dict(),
        "resize_device": device.type,
        "resize_ms_per_sample": round(resize_s * 1000, 3),
        "runs": runs,
    }


def feeding(
    synthetic: dict[str, Any], loader: dict[str, Any], device: torch.device
) -> dict[str, Any]:
    """Loader cores (CPU-seconds per second) that keep the device at its synthetic rate."""
    best = max(synthetic["summary"], key=lambda p: synthetic["summary"][p]["samples_per_s"])
    rate = synthetic["summary"][best]["samples_per_s"]
    loader_s = loader["loader_cpu_ms_per_sample"] / 1000
    main_s = loader["tokenize_cpu_ms_per_sample"] / 1000
    if device.type == "cpu":  # the resize runs on the training device: here, CPU cores
        main_s += loader["resize_ms_per_sample"] / 1000
    return {
        "device_samples_per_s": rate,
        "device_precision": best,
        "loader_cores": round(rate * loader_s, 3),
        "training_process_cores": round(rate * main_s, 3),
        "goal_samples_per_s": GOAL_SAMPLES_PER_S,
        "goal_loader_cores": round(GOAL_SAMPLES_PER_S * loader_s, 2),
        "goal_training_process_cores": round(GOAL_SAMPLES_PER_S * main_s, 2),
    }


def measure_end_to_end(
    base: TrainConfig,
    device: torch.device,
    *,
    arch_name: str,
    batch: int,
    workers: int,
    warmup: int,
    steps: int,
) -> dict[str, Any]:
    """``trainer.train.train`` on the release; samples/s after the warmup steps."""
    stamps: list[float] = []

    def on_step(step: int, total: int, loss: float, rate: float) -> None:
        stamps.append(time.perf_counter())

    last = warmup + steps
    with tempfile.TemporaryDirectory(prefix="eocap-train-bench-") as out:
        config = base.with_updates(
            {
                "model.arch": arch_name,
                "model.tokenizer": "clip",
                "train.batch_size": batch,
                "train.precision": "auto",
                "train.steps": last + 1,  # never reached: no final checkpoint or export
                "train.checkpoint_every": max(workers, 1) * (last + 1),
                "train.log_every": last + 1,
                "train.output_dir": out,
                "data.num_workers": workers,
            }
        )
        result = train(config, stop_after=last, on_step=on_step)
    seconds = stamps[-1] - stamps[warmup - 1]
    rate = batch * steps / seconds
    log(f"end to end {arch_name}: {rate:.2f} samples/s over {steps} steps")
    return {
        "arch": arch_name,
        "batch": batch,
        "workers": workers,
        "precision": "auto",
        "warmup": warmup,
        "steps": steps,
        "epochs_started": result.epochs_started,
        "seconds": round(seconds, 3),
        "samples_per_s": round(rate, 3),
        "caption_fit": result.fit.as_dict(),
    }


def main() -> None:
    """Measure the parts asked for, print and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--release", default="/tmp/bench-release", help="a release folder")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--arch", default="vit-b-16", choices=sorted(ARCHS))
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per block")
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps per block")
    parser.add_argument("--repeats", type=int, default=3, help="blocks per precision")
    parser.add_argument("--precisions", default="fp32,bf16")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--loader-batch", type=int, default=32)
    parser.add_argument("--loader-workers", default="1,2", help="worker counts, comma-separated")
    parser.add_argument("--loader-epochs", type=int, default=1)
    parser.add_argument(
        "--loader-copies", type=int, default=8, help="the training split this many times over"
    )
    parser.add_argument("--e2e-arch", choices=sorted(ARCHS), help="default: tiny on the CPU")
    parser.add_argument("--e2e-batch", type=int, default=16)
    parser.add_argument("--e2e-workers", type=int, help="default: 0 on the CPU, 4 on CUDA")
    parser.add_argument("--e2e-warmup", type=int, default=3)
    parser.add_argument("--e2e-steps", type=int, default=20)
    parser.add_argument(
        "--parts", default="flops,synthetic,loader,e2e", help="which parts, comma-separated"
    )
    parser.add_argument("--out", type=Path, help="default: results/train_throughput_DEV_ARCH")
    args = parser.parse_args()
    device = torch.device(args.device)
    parts = set(args.parts.split(","))
    base = TrainConfig().with_updates(
        {"data.source": args.release, "data.bands": "llama3-ms-clip-10", "model.arch": args.arch}
    )
    result: dict[str, Any] = {
        "benchmark": "train_throughput",
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cuda_tf32_matmul": torch.backends.cuda.matmul.allow_tf32,
        "machine": machine(),
        "args": {k: str(v) for k, v in vars(args).items()},
    }
    if "flops" in parts:
        result["flops"] = count_flops(args.arch)
        log(f"flops {args.arch}: {result['flops']}")
    if "synthetic" in parts:
        result["synthetic"] = measure_synthetic(
            base,
            args.arch,
            args.precisions.split(","),
            device,
            batch=args.batch,
            steps=args.steps,
            warmup=args.warmup,
            repeats=args.repeats,
            grad_checkpointing=args.grad_checkpointing,
        )
    if "loader" in parts:
        with tempfile.TemporaryDirectory(prefix="eocap-loader-bench-") as copied:
            source = replicated_release(args.release, args.loader_copies, Path(copied))
            result["loader"] = measure_loader(
                base.with_updates({"data.source": source}),
                device,
                batch=args.loader_batch,
                workers=[int(w) for w in args.loader_workers.split(",")],
                epochs=args.loader_epochs,
                repeats=args.repeats,
            )
        result["loader"]["copies_of_the_training_split"] = args.loader_copies
    if "synthetic" in parts and "loader" in parts:
        result["feeding"] = feeding(result["synthetic"], result["loader"], device)
        if "flops" in parts:
            rate = result["feeding"]["device_samples_per_s"]
            step_gflop = result["flops"]["train_step_gflop"]
            result["feeding"]["achieved_tflop_s"] = round(rate * step_gflop / 1000, 3)
            result["feeding"]["goal_tflop_s"] = round(GOAL_SAMPLES_PER_S * step_gflop / 1000, 1)
    if "e2e" in parts:
        arch = args.e2e_arch or ("vit-b-16" if device.type == "cuda" else "tiny")
        workers = args.e2e_workers if args.e2e_workers is not None else 4 * (device.type == "cuda")
        e2e = measure_end_to_end(
            base,
            device,
            arch_name=arch,
            batch=args.e2e_batch,
            workers=workers,
            warmup=args.e2e_warmup,
            steps=args.e2e_steps,
        )
        same = measure_synthetic(
            base,
            arch,
            ["auto"],
            device,
            batch=args.e2e_batch,
            steps=args.e2e_steps,
            warmup=args.e2e_warmup,
            repeats=1,
            grad_checkpointing=False,
        )
        e2e["synthetic_same_config_samples_per_s"] = same["summary"]["auto"]["samples_per_s"]
        e2e["over_synthetic"] = round(
            e2e["samples_per_s"] / e2e["synthetic_same_config_samples_per_s"], 3
        )
        result["end_to_end"] = e2e
    out = args.out or RESULTS_DIR / f"train_throughput_{device.type}_{args.arch}.json"
    emit(result, out)


if __name__ == "__main__":
    main()
