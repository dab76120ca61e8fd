"""Loader throughput: samples per CPU-second of ``SampleDataset`` under a torch DataLoader.

End to end, as a training loop gets them: open the shards, read each row group, decode the
cubes (``read_cubes``), select the bands (all 12), crop to 224 x 224 at a seeded random offset,
normalise ``(x - mean) / std`` to float32 tensors, shuffle (buffer of 256) and collate batches
of 32. Variants, interleaved and repeated over whole epochs, medians:

* ``loader_workers_0``: the DataLoader reads in the training process;
* ``loader_workers_1``: one worker process reads, the training process only receives batches;
* ``floor_read_decode``: the lower bound of the same work without the loader: ``pq.read_table``
  of every shard (all row groups at once) and ``read_cubes``, no crop, no normalisation.

CPU time is that of every process involved: the benchmark's own (``time.process_time``, all
threads) plus its reaped children (``RUSAGE_CHILDREN``: the DataLoader workers, which exit at
the end of each epoch). "samples per CPU-second" is samples divided by that CPU time; wall-clock
samples/s is reported too. The band statistics are computed once from the data, as a release's
``band_stats.json`` would hold them.

Run: ``.venv/bin/python -m benchmarks.loader_torch [--shards /tmp/after-all] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader

from benchmarks._common import RESULTS_DIR, emit, log, machine, median
from pipeline.dataset.loader import SampleDataset, parquet_files
from pipeline.dataset.reader import read_cubes

CROP = 224
BATCH = 32


def _cpu_seconds() -> float:
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def band_stats(files: list[str]) -> dict[str, Any]:
    """Mean and std per band over the first file's cubes (what ``band_stats.json`` holds)."""
    table = pq.read_table(files[0], columns=["bands", "pixels"])
    cubes = read_cubes(table).astype(np.float64)
    names = table["bands"][0].as_py()
    return {
        "bands": {
            b: {"mean": float(cubes[:, i].mean()), "std": float(cubes[:, i].std())}
            for i, b in enumerate(names)
        }
    }


def run_loader(source: str, stats: dict[str, Any], num_workers: int, epoch: int) -> dict[str, Any]:
    """One epoch through a DataLoader; samples, wall and CPU seconds."""
    dataset = SampleDataset(source, band_stats=stats, crop=CROP, random_crop=True, seed=0)
    dataset.set_epoch(epoch)
    loader = DataLoader(dataset, batch_size=BATCH, num_workers=num_workers)
    cpu, wall = _cpu_seconds(), time.perf_counter()
    samples = 0
    for batch in loader:
        assert batch["pixels"].dtype == torch.float32
        assert batch["pixels"].shape[-2:] == (CROP, CROP)
        samples += len(batch["sample_id"])
    del loader  # workers exit and are reaped: their CPU lands in RUSAGE_CHILDREN
    return {
        "samples": samples,
        "wall_s": time.perf_counter() - wall,
        "cpu_s": _cpu_seconds() - cpu,
    }


def run_floor(files: list[str]) -> dict[str, Any]:
    """Read and decode every shard's cubes in one go: the work's lower bound."""
    cpu, wall = _cpu_seconds(), time.perf_counter()
    samples = 0
    for path in files:
        samples += len(read_cubes(pq.read_table(path, columns=["pixels"])))
    return {"samples": samples, "wall_s": time.perf_counter() - wall, "cpu_s": _cpu_seconds() - cpu}


def main() -> None:
    """Run the variants interleaved, print and write the medians."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--shards", default="/tmp/after-all", help="output dir or Parquet folder")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "loader_torch.json")
    args = parser.parse_args()
    files = parquet_files(args.shards)
    stats = band_stats(files)
    runs: dict[str, list[dict[str, Any]]] = {
        "loader_workers_0": [],
        "loader_workers_1": [],
        "floor_read_decode": [],
    }
    for repeat in range(args.repeats):
        for name in runs:
            if name == "floor_read_decode":
                result = run_floor(files)
            else:
                result = run_loader(args.shards, stats, int(name[-1]), repeat)
            runs[name].append(result)
            log(
                f"{name} #{repeat}: {result['samples']} samples, {result['wall_s']:.2f} s wall, "
                f"{result['cpu_s']:.2f} CPU-s"
            )
    summary = {}
    for name, results in runs.items():
        cpu = median([r["cpu_s"] for r in results])
        wall = median([r["wall_s"] for r in results])
        samples = results[0]["samples"]
        summary[name] = {
            "samples": samples,
            "cpu_s": round(cpu, 3),
            "wall_s": round(wall, 3),
            "samples_per_cpu_s": round(samples / cpu, 1),
            "samples_per_wall_s": round(samples / wall, 1),
        }
    emit(
        {
            "benchmark": "loader_torch",
            "source": args.shards,
            "files": len(files),
            "crop": CROP,
            "batch_size": BATCH,
            "torch": torch.__version__,
            "torch_threads": torch.get_num_threads(),
            "machine": machine(),
            "summary": summary,
            "runs": runs,
        },
        args.out,
    )


if __name__ == "__main__":
    main()
