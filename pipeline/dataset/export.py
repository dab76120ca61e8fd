"""``eocap export-captions``: our captions in the Llama3-MS-CLIP caption table's columns.

IBM's released table (Llama3-SSL4EO-S12 captions) has one row per sample and season with
``caption``, ``question_1`` ... ``question_3`` (the model's answers to the three questions of
its multi-turn prompt), ``file`` (the Zarr file holding the pixels), ``sample_id``, ``time_id``
(the timestamp's index within the location's four seasons) and the Overture ``classes``,
``tags`` and ``names`` lists. Ours maps column for column:

- ``question_N``: the answer of turn N of the ``qa`` column (null for the template captioner,
  which asks no question);
- ``file``: the shard holding the sample's pixels, relative to the output directory;
- ``time_id``: the index of the sample's period among the run's periods (``run.json``), so
  with four seasonal periods 0 ... 3, as theirs.
"""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv
import pyarrow.parquet as pq

from pipeline.dataset.layout import DatasetLayout
from pipeline.dataset.reader import read_shard
from pipeline.dataset.release import ReleaseError
from pipeline.io.atomic import atomic_write

__all__ = ["CAPTION_TABLE_SCHEMA", "caption_table", "export_captions"]

CAPTION_TABLE_SCHEMA = pa.schema(
    [
        ("caption", pa.string()),
        ("question_1", pa.string()),
        ("question_2", pa.string()),
        ("question_3", pa.string()),
        ("file", pa.string()),
        ("sample_id", pa.string()),
        ("time_id", pa.int32()),
        ("classes", pa.list_(pa.string())),
        ("tags", pa.list_(pa.string())),
        ("names", pa.list_(pa.string())),
    ]
)
"""The Llama3-MS-CLIP caption table's columns, in their order."""

_READ = ["sample_id", "status", "period", "caption", "qa", "classes", "tags", "names"]


def caption_table(output: Path) -> pa.Table:
    """The captioned (``ok``) samples of a built output as :data:`CAPTION_TABLE_SCHEMA` rows.

    Raises:
        ReleaseError: if ``output`` has no ``run.json`` or no finished shard.
    """
    layout = DatasetLayout(output)
    if not layout.run_json.exists():
        raise ReleaseError(f"{output} has no run.json: give the output directory of a run")
    periods = [p["name"] for p in json.loads(layout.run_json.read_text())["config"]["periods"]]
    shards = layout.finished_shards()
    if not shards:
        raise ReleaseError(f"{output} has no finished shard: build it with `eocap run`")
    parts = []
    for path in shards.values():
        table = read_shard(path, _READ)
        table = table.filter(pc.equal(table.column("status"), "ok"))
        answers: list[list[str | None]] = [[], [], []]
        for turns in table.column("qa").to_pylist():
            turns = turns or []
            for n in range(3):
                answers[n].append(turns[n]["answer"] if n < len(turns) else None)
        relative = path.relative_to(layout.root).as_posix()
        columns = {
            "caption": table.column("caption"),
            **{f"question_{n + 1}": pa.array(answers[n], pa.string()) for n in range(3)},
            "file": pa.array([relative] * table.num_rows, pa.string()),
            "sample_id": table.column("sample_id"),
            "time_id": pa.array(
                [periods.index(p) for p in table.column("period").to_pylist()], pa.int32()
            ),
            **{c: table.column(c) for c in ("classes", "tags", "names")},
        }
        parts.append(
            pa.table([columns[f.name] for f in CAPTION_TABLE_SCHEMA], schema=CAPTION_TABLE_SCHEMA)
        )
    return pa.concat_tables(parts).combine_chunks()


def export_captions(output: Path, path: Path) -> int:
    """Write :func:`caption_table` to ``path``: CSV if it ends in ``.csv``, else Parquet.

    In CSV the list columns are JSON arrays (CSV has no lists). Returns the row count.
    """
    table = caption_table(output)
    with atomic_write(path) as tmp:
        if path.suffix.lower() == ".csv":
            lists = ("classes", "tags", "names")
            flat = table.drop_columns(list(lists))
            for name in lists:
                flat = flat.append_column(
                    name,
                    pa.array(
                        [
                            json.dumps(v or [], ensure_ascii=False)
                            for v in table.column(name).to_pylist()
                        ],
                        pa.string(),
                    ),
                )
            pcsv.write_csv(flat.select(CAPTION_TABLE_SCHEMA.names), tmp)
        else:
            pq.write_table(table, tmp, compression="zstd")
    return int(table.num_rows)
