"""GeoParquet 1.1 ``geo`` file metadata, for every Parquet file eocap writes with geometries.

The shards and the demo's Overture-like files share one layout: WKB polygons (or lines,
points) in lon/lat in a ``geometry`` column, with a ``bbox`` struct column
(``xmin``/``ymin``/``xmax``/``ymax``) as the GeoParquet covering that readers filter on.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

__all__ = ["GEOPARQUET_VERSION", "geo_metadata"]

GEOPARQUET_VERSION = "1.1.0"

_BBOX_FIELDS = ("xmin", "ymin", "xmax", "ymax")


def _bounds(boxes: pa.ChunkedArray) -> list[float] | None:
    """(xmin, ymin, xmax, ymax) over a bbox struct column; ``None`` if every box is null."""
    if boxes.null_count == len(boxes):
        return None
    return [
        pc.min(pc.struct_field(boxes, "xmin")).as_py(),
        pc.min(pc.struct_field(boxes, "ymin")).as_py(),
        pc.max(pc.struct_field(boxes, "xmax")).as_py(),
        pc.max(pc.struct_field(boxes, "ymax")).as_py(),
    ]


def geo_metadata(table: pa.Table, geometry_types: Sequence[str]) -> bytes:
    """The ``geo`` file metadata of ``table``: JSON, ready for the schema metadata.

    Args:
        table: Rows with a WKB ``geometry`` column in lon/lat and its ``bbox`` covering column.
        geometry_types: The geometry types the file holds (``Polygon``, ``LineString``...).

    Returns:
        The metadata, with the bounds of all boxes (left out when every box is null).
    """
    column: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": list(geometry_types),
        "covering": {"bbox": {k: ["bbox", k] for k in _BBOX_FIELDS}},
    }
    bounds = _bounds(table.column("bbox"))
    if bounds is not None:
        column["bbox"] = bounds
    meta = {
        "version": GEOPARQUET_VERSION,
        "primary_column": "geometry",
        "columns": {"geometry": column},
    }
    return json.dumps(meta).encode()
