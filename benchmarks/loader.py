"""Pixel storage (issue 11): how a shard stores its cubes, chosen by decode speed and size.

One demo shard (default ``/tmp/after-all/shards/00000.parquet``: 64 samples of 12 x 264 x 264
uint16 + 264 x 264 SCL) is rewritten once per variant, every other column as it is, and each
variant is measured in the same run:

* ``decode_samples_per_cpu_s``: samples per CPU-second (``time.process_time``, all threads) to
  read the ``pixels`` column from the file and turn it into one (rows, bands, size, size)
  uint16 numpy array; best of ``--repeats``;
* ``mb_per_sample``: file size / samples (the whole shard, all columns);
* ``write_ms_per_sample``: wall time per sample to encode the cubes and write the shard;
* ``reader_needs``: what a reader without eocap needs to get the cube.

Variants (``pixels`` and ``scl`` stored alike):

* ``v1_nested_delta_zstd3``: today's (schema 1.2) nested ``fixed_size_list`` columns,
  DELTA_BINARY_PACKED + zstd 3, written by ``pipeline.dataset.writer``;
* ``binary_<codec>``: one ``binary`` value per sample, the raw little-endian C-order bytes,
  compressed by Parquet (zstd 1/3, lz4, none);
* ``shuffled_binary_<codec>``: the same bytes byte-shuffled first (all low bytes, then all
  high bytes: two planes), compressed by Parquet; unshuffled with numpy;
* ``blosc2_<shuffle>_<codec>``: a Blosc2 frame per sample (byte or bit shuffle + lz4/zstd),
  stored uncompressed by Parquet; needs the ``blosc2`` package (skipped if missing);
* ``per_band_shuffled_lz4``: a list of one shuffled binary per band (Major TOM stores one
  GeoTIFF per band), Parquet lz4;
* ``v2``: what ``pipeline.dataset.writer`` writes now (byte planes, zstd 1: the chosen
  variant, through the real writer and ``read_cubes``).

Also timed: the pipeline's whole shard write (``write_shard``: records to file) in schema 1.2
and 2.0.

Then, for ``v2``, the row group size: shard size, footer size, CPU time to read every column
but the cubes (a DuckDB-style scan of the small columns), and a single-sample read from the
local file through pyarrow (``ParquetFile.read_row_group`` of one row group, ``pixels`` only,
and all columns, pyarrow's default pre-buffering) with a file wrapper that counts reads and
bytes, the footer's (read once per file) apart.

Run: ``.venv/bin/python -m benchmarks.loader [--shard PATH] [--repeats 3]``
"""

from __future__ import annotations

import argparse
import io
import json
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import RESULTS_DIR, emit, log, machine

DEFAULT_SHARD = Path("/tmp/after-all/shards/00000.parquet")
ROW_GROUP_SIZES = (1, 2, 4, 8, 16, 64)

Encode = Callable[[npt.NDArray[Any]], pa.Array]
Decode = Callable[[pa.ChunkedArray, tuple[int, ...], np.dtype[Any]], npt.NDArray[Any]]


def _shuffle(cube: npt.NDArray[Any]) -> bytes:
    """Byte planes: every value's first byte, then every second byte (little-endian)."""
    le = np.ascontiguousarray(cube, cube.dtype.newbyteorder("<"))
    return np.ascontiguousarray(le.view(np.uint8).reshape(-1, cube.dtype.itemsize).T).tobytes()


def _unshuffle(buf: Any, shape: tuple[int, ...], dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    planes = np.frombuffer(buf, np.uint8).reshape(dtype.itemsize, -1)
    out = planes[-1].astype(dtype)
    for plane in planes[-2::-1]:  # shift-or on whole planes: 10x faster than a transpose
        out <<= 8
        out |= plane
    return out.reshape(shape)


def _binary(encode_one: Callable[[npt.NDArray[Any]], bytes]) -> Encode:
    def encode(cubes: npt.NDArray[Any]) -> pa.Array:
        return pa.array([encode_one(c) for c in cubes], type=pa.binary())

    return encode


def _decode_raw(col: pa.ChunkedArray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    arr = col.combine_chunks()
    # The offsets are regular (every value the same size): the data buffer is the cube stack.
    start = int(np.frombuffer(arr.buffers()[1], np.int32)[arr.offset])
    n = len(arr) * int(np.prod(shape))
    return np.frombuffer(arr.buffers()[2], dtype.newbyteorder("<"), n, start).reshape(
        len(arr), *shape
    )


def _decode_shuffled(col: pa.ChunkedArray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    out = np.empty((len(col), *shape), dtype)
    for i, value in enumerate(col.combine_chunks()):
        out[i] = _unshuffle(value.as_buffer(), shape, dtype)
    return out


def _blosc2_codec(shuffle: str, codec: str) -> tuple[Encode, Decode] | None:
    try:
        import blosc2
    except ImportError:
        return None
    cparams = {
        "codec": getattr(blosc2.Codec, codec.upper()),
        "clevel": 1 if codec == "zstd" else 5,
        "filters": [getattr(blosc2.Filter, shuffle.upper())],
        "nthreads": 1,
    }

    def encode_one(cube: npt.NDArray[Any]) -> bytes:
        return bytes(blosc2.compress2(np.ascontiguousarray(cube), **cparams))

    def decode(col: pa.ChunkedArray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
        out = np.empty((len(col), *shape), dtype)
        for i, value in enumerate(col.combine_chunks()):
            blosc2.decompress2(value.as_buffer(), dst=out[i])
        return out

    blosc2.set_nthreads(1)
    return _binary(encode_one), decode


def _per_band_shuffled(cubes: npt.NDArray[Any]) -> pa.Array:
    return pa.array([[_shuffle(band) for band in c] for c in cubes], type=pa.list_(pa.binary()))


def _decode_per_band(col: pa.ChunkedArray, shape: tuple[int, ...], dtype: np.dtype[Any]) -> Any:
    out = np.empty((len(col), *shape), dtype)
    for i, bands in enumerate(col.combine_chunks()):
        for b, value in enumerate(bands.values):
            out[i, b] = _unshuffle(value.as_buffer(), shape[1:], dtype)
    return out


@dataclass(frozen=True)
class Variant:
    """A way to store the cubes: how to encode them, Parquet's codec, and how to decode."""

    name: str
    encode: Encode
    decode: Decode
    compression: str | None
    level: int | None
    reader_needs: str


def variants() -> list[Variant]:
    """Every variant whose packages are installed."""
    raw = _binary(lambda c: np.ascontiguousarray(c, c.dtype.newbyteorder("<")).tobytes())
    shuf = _binary(_shuffle)
    out = [
        Variant(f"binary_{name}", raw, _decode_raw, comp, level, "pyarrow + numpy (np.frombuffer)")
        for name, comp, level in (
            ("zstd1", "zstd", 1),
            ("zstd3", "zstd", 3),
            ("lz4", "lz4", None),
            ("none", "none", None),
        )
    ]
    out += [
        Variant(
            f"shuffled_binary_{name}",
            shuf,
            _decode_shuffled,
            comp,
            level,
            "pyarrow + numpy (frombuffer, reshape to byte planes, transpose)",
        )
        for name, comp, level in (("lz4", "lz4", None), ("zstd1", "zstd", 1), ("zstd3", "zstd", 3))
    ]
    for shuffle, codec in (("shuffle", "lz4"), ("shuffle", "zstd"), ("bitshuffle", "zstd")):
        codecs = _blosc2_codec(shuffle, codec)
        if codecs is not None:
            out.append(
                Variant(
                    f"blosc2_{shuffle}_{codec}",
                    *codecs,
                    "none",
                    None,
                    "pyarrow + the blosc2 package (C library)",
                )
            )
    out.append(
        Variant(
            "per_band_shuffled_lz4",
            _per_band_shuffled,
            _decode_per_band,
            "lz4",
            None,
            "pyarrow + numpy, one value per band",
        )
    )
    return out


class CountingFile(io.RawIOBase):
    """A local file that counts the reads pyarrow makes and the bytes they return."""

    def __init__(self, path: Path) -> None:
        self._f = path.open("rb")
        self.reads = 0
        self.bytes = 0

    def readable(self) -> bool:
        """Yes: it is read."""
        return True

    def seekable(self) -> bool:
        """Yes: pyarrow seeks to column chunks."""
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        """Move the file position."""
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        """The file position."""
        return self._f.tell()

    def readinto(self, b: Any) -> int:
        """Read into ``b``, counting the read and its bytes."""
        n = self._f.readinto(b)
        self.reads += 1
        self.bytes += n or 0
        return n or 0

    def close(self) -> None:
        """Close the file."""
        self._f.close()
        super().close()


def _single_sample_read(path: Path, row: int, columns: list[str] | None) -> dict[str, int]:
    """Reads and bytes of opening ``path`` (its footer), then of the row group holding ``row``.

    The row group's ``columns`` are read as pyarrow does by default (pre-buffered, coalesced).
    """
    f = CountingFile(path)
    pf = pq.ParquetFile(pa.PythonFile(f, mode="r"))
    opened = {"footer_reads": f.reads, "footer_bytes": f.bytes}
    f.reads = f.bytes = 0
    start = 0
    for i in range(pf.metadata.num_row_groups):
        n = pf.metadata.row_group(i).num_rows
        if row < start + n:
            pf.read_row_group(i, columns=columns)
            break
        start += n
    f.close()
    return {**opened, "reads": f.reads, "bytes": f.bytes}


def _footer_bytes(path: Path) -> int:
    with path.open("rb") as f:
        f.seek(-8, 2)
        return int.from_bytes(f.read(4), "little") + 8


def _write(table: pa.Table, path: Path, variant: Variant, rows_per_group: int) -> None:
    from pipeline.dataset.columns import COLUMNS
    from pipeline.dataset.writer import leaf_paths

    cubes = {p for c in ("pixels", "scl") for p in leaf_paths(c, table.schema.field(c).type)}
    leaves = [p for f in table.schema for p in leaf_paths(f.name, f.type)]
    codec = {p: variant.compression if p in cubes else "zstd" for p in leaves}
    pq.write_table(
        table,
        path,
        row_group_size=rows_per_group,
        compression=codec,
        compression_level={
            p: (variant.level if p in cubes else 3) for p in leaves if codec[p] == "zstd"
        },
        use_dictionary=[c.name for c in COLUMNS if c.dictionary],
        write_statistics=[c.name for c in COLUMNS if c.statistics],
    )


def _records(source: pa.Table) -> list[Any]:
    """The shard's rows as records with numpy cubes, for the pipeline's ``write_shard``."""
    from pipeline.dataset.columns import CUBE_COLUMNS, SampleRecord
    from pipeline.dataset.reader import read_cubes

    cubes = {c: read_cubes(source, c) for c in CUBE_COLUMNS}
    rows = source.drop_columns(list(CUBE_COLUMNS)).to_pylist()
    return [
        SampleRecord(**row, **{c: cubes[c][i] for c in CUBE_COLUMNS}) for i, row in enumerate(rows)
    ]


def run(shard: Path, repeats: int, workdir: Path) -> dict[str, Any]:
    """Every variant on ``shard``, the pipeline's shard write, then the v2 row group sizes."""
    from pipeline.dataset import writer
    from pipeline.dataset.reader import read_cubes

    source = pq.read_table(shard)
    n = source.num_rows
    pixels = read_cubes(source, "pixels")
    scl = read_cubes(source, "scl")
    shape, dtype = pixels.shape[1:], pixels.dtype
    log(f"{shard}: {n} samples, pixels {pixels.shape} {dtype}")
    results: dict[str, dict[str, Any]] = {}

    def measure(
        name: str, write: Callable[[Path], None], decode: Callable[[Path], Any], needs: str
    ) -> None:
        path = workdir / f"{name}.parquet"
        write_s = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            write(path)
            write_s.append(time.perf_counter() - t0)
        cpu = []
        for _ in range(repeats):
            t0 = time.process_time()
            got = decode(path)
            cpu.append(time.process_time() - t0)
        assert np.array_equal(got, pixels), name
        results[name] = {
            "decode_samples_per_cpu_s": round(n / min(cpu), 1),
            "mb_per_sample": round(path.stat().st_size / n / 1e6, 3),
            "write_ms_per_sample": round(min(write_s) / n * 1e3, 2),
            "reader_needs": needs,
        }
        log(f"{name}: {results[name]}")

    def read_pixels(path: Path) -> Any:
        return read_cubes(pq.read_table(path, columns=["pixels"]), "pixels")

    # Today's table is the shard as read (its nested lists already built: this favours v1).
    measure(
        "v1_nested_delta_zstd3",
        lambda p: writer.write_table(source, p),
        read_pixels,
        "pyarrow + numpy (flatten the nested lists)",
    )
    measure(
        "v2",
        lambda p: writer.write_table(
            writer.with_v2_cubes(source, {"pixels": pixels, "scl": scl}), p
        ),
        read_pixels,
        "pyarrow + numpy: the recipe in docs/dataset-schema.md",
    )
    others = source.drop_columns(["pixels", "scl"])
    for v in variants():

        def write(path: Path, v: Variant = v) -> None:
            table = others.append_column("pixels", v.encode(pixels)).append_column(
                "scl", v.encode(scl)
            )
            _write(table, path, v, writer.ROWS_PER_GROUP)

        def decode(path: Path, v: Variant = v) -> Any:
            return v.decode(pq.read_table(path, columns=["pixels"]).column("pixels"), shape, dtype)

        measure(v.name, write, decode, v.reader_needs)
    base = results["v1_nested_delta_zstd3"]
    for r in results.values():
        r["decode_vs_v1"] = round(
            r["decode_samples_per_cpu_s"] / base["decode_samples_per_cpu_s"], 2
        )
        r["size_vs_v1"] = round(r["mb_per_sample"] / base["mb_per_sample"], 3)
        r["write_speed_vs_v1"] = round(base["write_ms_per_sample"] / r["write_ms_per_sample"], 2)

    # The pipeline's whole shard write, records to file, in both versions (like for like).
    records = _records(source)
    n_bands, size = pixels.shape[1], pixels.shape[-1]
    write_shard: dict[str, float] = {}
    for version in ("1.2", "2.0"):
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            writer.write_shard(
                records, workdir / "ws.parquet", n_bands=n_bands, size=size, version=version
            )
            times.append(time.perf_counter() - t0)
        write_shard[version] = round(min(times) / n * 1e3, 2)
    write_shard_result = {
        "write_shard_ms_per_sample": write_shard,
        "write_shard_speed_v2_over_v1": round(write_shard["1.2"] / write_shard["2.0"], 2),
    }
    log(f"write_shard: {write_shard_result}")

    row_groups: dict[str, Any] = {}
    v2 = writer.with_v2_cubes(source, {"pixels": pixels, "scl": scl})
    for rows in ROW_GROUP_SIZES:
        path = workdir / f"v2_rg{rows}.parquet"
        writer.write_table(v2, path, rows_per_group=rows)
        mid = n // 2
        small = [c for c in source.column_names if c not in ("pixels", "scl")]
        scan = []
        for _ in range(repeats):
            t0 = time.process_time()
            pq.read_table(path, columns=small)
            scan.append(time.process_time() - t0)
        row_groups[str(rows)] = {
            "file_mb": round(path.stat().st_size / 1e6, 3),
            "footer_kb": round(_footer_bytes(path) / 1e3, 1),
            "scan_other_columns_cpu_ms": round(min(scan) * 1e3, 1),
            "one_sample_pixels": _single_sample_read(path, mid, ["pixels"]),
            "one_sample_all_columns": _single_sample_read(path, mid, None),
        }
        log(f"rows per group {rows}: {row_groups[str(rows)]}")
    return {
        "shard": str(shard),
        "samples": n,
        "pixels_shape": list(shape),
        "rows_per_group_of_variants": writer.ROWS_PER_GROUP,
        "variants": results,
        **write_shard_result,
        "v2_row_groups": row_groups,
    }


def main() -> None:
    """Run the comparison and write benchmarks/results/loader_storage.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.loader")
    parser.add_argument("--shard", type=Path, default=DEFAULT_SHARD)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "loader_storage.json")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        result = run(args.shard, args.repeats, Path(tmp))
    emit({"benchmark": "loader_storage", "machine": machine(), **result}, args.out)
    print(json.dumps(result["variants"], indent=1))


if __name__ == "__main__":
    main()
