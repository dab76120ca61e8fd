"""The shards open with GeoPandas, as docs/dataset-schema.md promises: GeoParquet 1.1 read back."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import pyarrow.parquet as pq
import shapely

from pipeline.dataset.layout import DatasetLayout
from tests.conftest import SMALL_BBOX

METADATA = ["sample_id", "status", "lon", "lat", "geometry", "bbox", "cloud_fraction", "caption"]
"""The sample metadata: every column but the pixel cubes and the RGB preview."""


def test_shards_open_as_a_geodataframe_of_sample_footprints(review_dataset: Path):
    layout = DatasetLayout(review_dataset)
    paths = list(layout.finished_shards().values())
    assert paths
    frame = gpd.GeoDataFrame(
        gpd.pd.concat([gpd.read_parquet(p, columns=METADATA) for p in paths], ignore_index=True)
    )
    assert frame.geometry.name == "geometry" and frame.crs is not None
    assert frame.crs.equals("OGC:CRS84") or frame.crs.to_epsg() == 4326
    assert len(frame) == sum(pq.read_metadata(p).num_rows for p in paths)
    ok = frame[frame.status == "ok"]
    assert len(ok) > 0 and ok.geometry.geom_type.eq("Polygon").all()
    # Each footprint holds its chip centre and lies in the region (plus half a chip).
    centres = gpd.points_from_xy(ok.lon, ok.lat)
    assert ok.geometry.contains(gpd.GeoSeries(centres, index=ok.index, crs=frame.crs)).all()
    assert shapely.box(*SMALL_BBOX).buffer(0.03).covers(shapely.box(*ok.total_bounds))
    # The bbox covering column agrees with the geometries.
    boxes = ok.bbox.apply(lambda b: (b["xmin"], b["ymin"], b["xmax"], b["ymax"]))
    for bounds, geom in zip(boxes, ok.geometry, strict=True):
        assert all(abs(a - b) < 1e-9 for a, b in zip(bounds, geom.bounds, strict=True))
