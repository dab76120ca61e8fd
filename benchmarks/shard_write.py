"""Shard writing throughput: ``pipeline.dataset.writer.write_shard`` in MB/s against baselines.

The records are real: the first shards of the demo config (default 2 x 64 samples) built by the
pipeline's own stages up to the write (``pipeline.runner.build.build_records``: STAC search
against the demo STAC API, 12-band 264 x 264 uint16 cubes + SCL cut from the demo COGs over
HTTP, the true-colour PNG, the Overture context, template captions and caption checks). Each variant
writes the same shards to ``/tmp`` (page cache, no fsync), interleaved and repeated; medians:

* ``ours``: ``write_shard`` = ``records_table`` (records -> Arrow) + ``write_table`` (zstd 3,
  dictionary on the low-cardinality columns only, statistics on a few columns, ~100 MB row
  groups, GeoParquet + Hugging Face metadata, temp file + rename); both parts also timed alone;
* ``pyarrow_default``: ``pq.write_table`` of the same Arrow table with pyarrow's defaults
  (snappy, dictionary and statistics on every column);
* ``npy_pixels``: ``np.save`` of the shard's stacked pixel cubes and SCL (the bytes that
  dominate a shard, uncompressed): the raw-dump floor;
* ``v0_plain_pixels``: the baseline, ours before dc61245 (issue 4): the same ``write_table``
  without ``column_encoding=DELTA_BINARY_PACKED`` on the ``pixels``/``scl`` leaf columns (both
  read back identical by pyarrow and DuckDB, checked here; read-back times reported). It
  writes a ready Arrow table, so compare it with ``ours_write_table_only`` (like for like);
* ``diag_pixels_binary``: a diagnostic, not a drop-in: the same table and write options, with
  ``pixels`` and ``scl`` as one ``binary`` value per row instead of nested fixed-size lists
  (this is what the nested lists cost in Parquet: a repetition/definition level per value and
  uint16 widened to INT32).

MB/s: "uncompressed" = Arrow in-memory size of the shard table (for ``npy_pixels``: the bytes
dumped) divided by wall time; "file" = bytes on disk divided by wall time.

Run: ``.venv/bin/python -m benchmarks.shard_write [--shards 2] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import (
    DEFAULT_DATA_DIR,
    Timing,
    demo_config,
    demo_region,
    emit,
    log,
    machine,
    median,
    timed,
)


def build_records(config: Any, n_shards: int) -> list[list[Any]]:
    """The records of the first ``n_shards`` shards, built by the pipeline's own stages."""
    from pipeline.runner.build import StageTimer, build_records
    from pipeline.stages.sampling import plan_shards

    out = []
    for shard in plan_shards(config)[:n_shards]:
        records = build_records(
            shard.samples,
            config,
            overture_root=Path(config.overture.source),
            timer=StageTimer(),
        )
        ok = sum(r.status == "ok" for r in records)
        log(f"shard {shard.index}: {len(records)} records ({ok} ok) built")
        out.append(records)
    return out


def _binary_pixels(table: pa.Table) -> pa.Table:
    """The same table with ``pixels`` and ``scl`` as raw bytes per row (diagnostic)."""
    for name in ("pixels", "scl"):
        col = table.column(name).combine_chunks()
        values = col
        while pa.types.is_fixed_size_list(values.type):
            values = values.flatten()
        flat = np.asarray(values).reshape(len(col), -1)
        valid = np.asarray(col.is_valid())
        arr = pa.array([r.tobytes() if v else None for r, v in zip(flat, valid, strict=True)])
        idx = table.schema.get_field_index(name)
        table = table.set_column(idx, pa.field(name, pa.binary()), arr)
    return table


class _PlainParquet:
    """``pyarrow.parquet`` whose ``write_table`` drops ``column_encoding`` (no delta)."""

    def __getattr__(self, name: str) -> Any:
        return getattr(pq, name)

    @staticmethod
    def write_table(table: pa.Table, where: Any, **kw: Any) -> None:
        kw.pop("column_encoding", None)
        pq.write_table(table, where, **kw)


def write_plain(table: pa.Table, path: Path, meta: dict[str, Any]) -> None:
    """``write_table`` as before dc61245: pixel leaves without delta encoding."""
    from pipeline.dataset import writer

    original = writer.pq
    writer.pq = _PlainParquet()  # type: ignore[assignment]
    try:
        writer.write_table(table, path, extra_metadata=meta)
    finally:
        writer.pq = original


def _read_seconds(path: Path, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        with timed() as t:
            pq.read_table(path, columns=["pixels", "scl"])
        times.append(t.wall_s)
    return median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=2, help="demo shards (64 samples each)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--work-dir", type=Path, default=Path("/tmp/eocap-bench"))
    parser.add_argument("--out", type=Path, default=None, help="write results JSON here")
    args = parser.parse_args(argv)

    from pipeline.dataset.writer import records_table, write_shard, write_table
    from pipeline.demo.region import load_items
    from pipeline.demo.servers import serve_demo

    info_machine = machine()  # before the work: load average at start
    region = demo_region(args.data_dir)
    args.work_dir.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="shard-write-", dir=args.work_dir))
    with serve_demo(region.root, load_items(region)) as servers:
        config = demo_config(
            **{
                "stac.api_url": servers.stac_url,
                "overture.source": str(region.overture_root),
                "output.dir": str(work / "out"),
            }
        )
        shards = build_records(config, args.shards)
    n_bands, size = len(config.chips.band_list), config.chips.size_px
    meta = {"config_hash": "bench", "eocap_version": "bench", "dataset": "bench", "shard": 0}
    tables = [records_table(r, n_bands=n_bands, size=size) for r in shards]
    binaries = [_binary_pixels(t) for t in tables]
    arrow_mb = sum(t.nbytes for t in tables) / 1e6
    pixel_mb = (
        sum(
            sum(r.pixels.nbytes + r.scl.nbytes for r in recs if r.pixels is not None)
            for recs in shards
        )
        / 1e6
    )
    samples = sum(len(r) for r in shards)
    log(f"{samples} records, Arrow tables {arrow_mb:.1f} MB, pixel cubes + SCL {pixel_mb:.1f} MB")

    def ours(i: int, path: Path) -> None:
        write_shard(shards[i], path, n_bands=n_bands, size=size, extra_metadata=meta)

    def ours_table_only(i: int, path: Path) -> None:
        records_table(shards[i], n_bands=n_bands, size=size)

    def ours_write_only(i: int, path: Path) -> None:
        write_table(tables[i], path, extra_metadata=meta)

    def pyarrow_default(i: int, path: Path) -> None:
        pq.write_table(tables[i], path)

    def npy_pixels(i: int, path: Path) -> None:
        recs = [r for r in shards[i] if r.pixels is not None]
        with path.open("wb") as f:
            np.save(f, np.stack([r.pixels for r in recs]))
            np.save(f, np.stack([r.scl for r in recs]))

    def v0_plain_pixels(i: int, path: Path) -> None:
        write_plain(tables[i], path, meta)

    def diag_pixels_binary(i: int, path: Path) -> None:
        write_table(binaries[i], path, extra_metadata=meta)

    variants = {
        "ours": ours,
        "ours_records_table_only": ours_table_only,
        "ours_write_table_only": ours_write_only,
        "pyarrow_default": pyarrow_default,
        "npy_pixels": npy_pixels,
        "v0_plain_pixels": v0_plain_pixels,
        "diag_pixels_binary": diag_pixels_binary,
    }
    runs: dict[str, list[Timing]] = {k: [] for k in variants}
    sizes: dict[str, int] = {}
    ours_write_table_only = "ours_write_table_only"
    for rep in range(args.repeats + 1):  # the first round is a warm-up
        for name, fn in variants.items():
            folder = work / name
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir()
            with timed() as t:
                for i in range(len(shards)):
                    fn(i, folder / f"{i:05d}.{'npy' if name == 'npy_pixels' else 'parquet'}")
            sizes[name] = sum(p.stat().st_size for p in folder.iterdir())
            if rep:
                runs[name].append(t)
                log(f"rep {rep}/{args.repeats} {name}: {t.wall_s:.2f} s wall, {t.cpu_s:.2f} s CPU")
    check = pq.read_table(work / "ours" / "00000.parquet")
    assert check.num_rows == len(shards[0]) and check.schema == tables[0].schema
    delta = pq.read_table(work / "v0_plain_pixels" / "00000.parquet")
    delta_ok = delta.equals(check)
    import duckdb

    sql = "SELECT sum(list_sum(flatten(flatten(pixels)))::HUGEINT) FROM '{}'"
    delta_ok = delta_ok and (
        duckdb.sql(sql.format(work / "ours" / "00000.parquet")).fetchall()
        == duckdb.sql(sql.format(work / "v0_plain_pixels" / "00000.parquet")).fetchall()
    )
    read_s = {
        k: round(_read_seconds(work / k / "00000.parquet", args.repeats), 3)
        for k in ("ours", "v0_plain_pixels", "pyarrow_default")
    }

    res: dict[str, Any] = {}
    for name, ts in runs.items():
        wall = median([t.wall_s for t in ts])
        cpu = median([t.cpu_s for t in ts])
        uncompressed = pixel_mb if name == "npy_pixels" else arrow_mb
        file_mb = sizes[name] / 1e6
        res[name] = {
            "wall_s": round(wall, 3),
            "cpu_s": round(cpu, 3),
            "file_mb": round(file_mb, 2) if name != "ours_records_table_only" else None,
            "uncompressed_mb_per_s": round(uncompressed / wall, 1),
            "file_mb_per_s": round(file_mb / wall, 1) if file_mb else None,
            "ms_per_sample": round(1000 * wall / samples, 2),
            "runs_wall_s": [round(t.wall_s, 3) for t in ts],
        }
    o = res["ours"]
    result = {
        "benchmark": "shard_write",
        "machine": info_machine,
        "params": {
            "shards": len(shards),
            "samples": samples,
            "repeats": args.repeats,
            "arrow_mb": round(arrow_mb, 1),
            "pixels_scl_mb": round(pixel_mb, 1),
            "bands": n_bands,
            "chip_px": size,
        },
        "variants": res,
        "ratios": {
            "ours_over_pyarrow_default_uncompressed_mb_s": round(
                o["uncompressed_mb_per_s"] / res["pyarrow_default"]["uncompressed_mb_per_s"], 2
            ),
            "ours_file_size_over_pyarrow_default": round(
                o["file_mb"] / res["pyarrow_default"]["file_mb"], 2
            ),
            "ours_over_npy_uncompressed_mb_s": round(
                o["uncompressed_mb_per_s"] / res["npy_pixels"]["uncompressed_mb_per_s"], 3
            ),
            "write_table_share_of_ours": round(
                res[ours_write_table_only]["wall_s"] / o["wall_s"], 2
            ),
            "ours_write_table_over_v0_plain_write_table": round(
                res["v0_plain_pixels"]["wall_s"] / res[ours_write_table_only]["wall_s"], 2
            ),
            "ours_file_size_over_v0_plain": round(
                o["file_mb"] / res["v0_plain_pixels"]["file_mb"], 2
            ),
            "diag_binary_over_ours_write_table": round(
                res[ours_write_table_only]["wall_s"] / res["diag_pixels_binary"]["wall_s"], 2
            ),
        },
        "v0_plain_identical_in_pyarrow_and_duckdb": delta_ok,
        "read_back_pixels_scl_s_first_shard": read_s,
        "work_dir": str(work),
    }
    shutil.rmtree(work, ignore_errors=True)
    emit(result, args.out)


if __name__ == "__main__":
    main()
