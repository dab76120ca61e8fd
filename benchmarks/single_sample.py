"""One sample over HTTP: requests and bytes to read a single sample, release vs a build shard.

A researcher who wants one chip should not download a shard. Both sides are served by the
project's Range-capable file server on 127.0.0.1 and read with the same code
(``pipeline.io.remote.RemoteFile`` under ``pyarrow.parquet.ParquetFile``, reading one row group
and its columns):

- ``shard``: a build shard as ``eocap run`` writes it (its row groups sized for writing);
- ``release``: the same samples in a release written by ``eocap release`` (small row groups),
  read the same way, and also through the sample index (``metadata.parquet`` says which row
  group and which bytes: one footer read plus one range).

Run: ``python -m benchmarks.single_sample --output OUTPUT_DIR`` (a built output, e.g. the demo).
Writes ``benchmarks/results/single_sample.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from benchmarks._common import RESULTS_DIR, log, machine
from pipeline.dataset.layout import DatasetLayout, ReleaseLayout
from pipeline.dataset.pull import fetch_row_groups
from pipeline.dataset.reader import read_cubes
from pipeline.dataset.release import ReleaseOptions, make_release
from pipeline.demo.servers import start_file_server
from pipeline.io.remote import ReleaseSource, RemoteFile, open_release_source


class CountingFile(RemoteFile):
    """A :class:`RemoteFile` that adds up the bytes it fetched."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.bytes = 0
        self.requests = 1  # the size probe of RemoteFile.__init__

    def readinto(self, buffer: Any) -> int:
        """Read as :class:`RemoteFile` does, counting the bytes."""
        n = super().readinto(buffer)
        self.bytes += n
        return n


def read_one(url: str, row_group: int, row: int) -> dict[str, Any]:
    """Read one sample's pixels through pyarrow over HTTP; count requests and bytes."""
    f = CountingFile(url)
    table = pq.ParquetFile(f).read_row_group(row_group, columns=["sample_id", "pixels", "bands"])
    cube = read_cubes(table.slice(row, 1))[0]
    return {
        "requests": f.requests,
        "bytes": f.bytes,
        "file_bytes": f.size,
        "sample_pixel_bytes": cube.nbytes,
        "rows_in_group": table.num_rows,
    }


class CountingSource:
    """A release source that counts the requests and bytes it served."""

    def __init__(self, source: ReleaseSource) -> None:
        self.source, self.location = source, source.location
        self.requests = self.bytes = 0

    def read_tail(self, path: str, length: int) -> tuple[bytes, int]:
        """Count, then read as the wrapped source does."""
        data, size = self.source.read_tail(path, length)
        self.requests, self.bytes = self.requests + 1, self.bytes + len(data)
        return data, size

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """Count, then read as the wrapped source does."""
        data = self.source.read_range(path, start, length)
        self.requests, self.bytes = self.requests + 1, self.bytes + len(data)
        return data


def read_by_index(root_url: str, sample_id: str) -> dict[str, Any]:
    """Through the sample index: the file's footer and the sample's row group, decoded."""
    with open_release_source(root_url) as plain:
        index = pq.read_table(
            pa.BufferReader(plain.read(ReleaseLayout.INDEX)),
            filters=[("sample_id", "=", sample_id)],
        ).to_pylist()[0]
        source = CountingSource(plain)
        group = (
            index["row_group"],
            index["byte_offset"],
            index["byte_length"],
            index["range_sha256"],
        )
        parquet = fetch_row_groups(source, index["file"], [group])  # type: ignore[arg-type]
        rows = parquet.read_row_group(index["row_group"], columns=["sample_id", "pixels"])
        cube = read_cubes(rows.slice(index["row_in_group"], 1))[0]
    return {
        "requests": source.requests,
        "bytes": source.bytes,
        "file_bytes": parquet.metadata.serialized_size,
        "sample_pixel_bytes": cube.nbytes,
        "note": "metadata.parquet read once per session, not counted",
    }


def main(argv: list[str] | None = None) -> None:
    """Measure single-sample reads of a built output and of its release."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--output", type=Path, required=True, help="a built output dir")
    parser.add_argument("--rows-per-group", type=int, default=ReleaseOptions().rows_per_group)
    parser.add_argument("--samples-per-file", type=int, default=ReleaseOptions().samples_per_file)
    args = parser.parse_args(argv)
    out = DatasetLayout(args.output)
    shard = sorted(out.finished_shards().values())[0]
    with tempfile.TemporaryDirectory() as tmp:
        release_dir = Path(tmp) / "release"
        log("writing the release")
        make_release(
            args.output,
            release_dir,
            ReleaseOptions(
                rows_per_group=args.rows_per_group, samples_per_file=args.samples_per_file
            ),
        )
        release = ReleaseLayout(release_dir)
        first = pq.read_table(release.metadata).to_pylist()[0]
        meta = pq.ParquetFile(shard).metadata
        middle = meta.num_row_groups // 2
        served_root = Path(tmp)
        shutil.copyfile(shard, served_root / "shard.parquet")  # the server follows no links
        server = start_file_server(served_root)
        try:
            base = server.url.rstrip("/")
            log("reading one sample three ways")
            result = {
                "machine": machine(),
                "shard": read_one(f"{base}/shard.parquet", middle, 0),
                "release": read_one(
                    f"{base}/release/{first['file']}", first["row_group"], first["row_in_group"]
                ),
                "release_by_index": read_by_index(f"{base}/release", first["sample_id"]),
                "rows_per_group": args.rows_per_group,
                "samples_per_file": args.samples_per_file,
            }
        finally:
            server.stop()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / "single_sample.json").write_text(json.dumps(result, indent=2) + "\n")
    for name in ("shard", "release", "release_by_index"):
        r = result[name]
        log(f"{name}: {r['requests']} requests, {r['bytes'] / 1e6:.2f} MB")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
