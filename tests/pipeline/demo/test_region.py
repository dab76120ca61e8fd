"""Tests of the fake Sentinel-2 demo region: COGs, STAC items and the Overture extract agree."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from pathlib import Path

import duckdb
import numpy as np
import pyarrow.parquet as pq
import pystac
import pytest
import rasterio
import rasterio.features
import shapely
from pyproj import Transformer

from pipeline.demo import region as demo
from pipeline.demo.flavors import FLAVOR_COLLECTIONS
from pipeline.demo.land_cover import BUILT_UP, CROPLAND, FOREST, GRASSLAND, WATER
from pipeline.demo.region import DemoRegion
from pipeline.demo.scene import DEMO_ACQUISITIONS, Acquisition
from pipeline.geo.bands import L2A_BANDS, SCL

SMALL_BBOX = (10.90, 47.55, 10.95, 47.59)
JULY = dt.datetime(2024, 7, 6, 10, 20, 31, tzinfo=dt.UTC)
ACQS = (
    Acquisition(JULY, 0.25, "full", "05.10", "sentinel-2a"),
    # Same overpass time, so the same surface: differs only in clouds, footprint and baseline.
    Acquisition(JULY, 0.0, "east", "03.01", "sentinel-2b"),
)
KWARGS = {"bbox": SMALL_BBOX, "acquisitions": ACQS, "seed": 0}


@pytest.fixture(scope="module")
def es_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    return demo.generate_demo_region(tmp_path_factory.mktemp("es") / "demo", **KWARGS)


@pytest.fixture(scope="module")
def pc_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    return demo.generate_demo_region(
        tmp_path_factory.mktemp("pc") / "demo", item_flavor="planetary-computer", **KWARGS
    )


@pytest.fixture(scope="module")
def l2a_region(tmp_path_factory: pytest.TempPathFactory) -> DemoRegion:
    return demo.generate_demo_region(
        tmp_path_factory.mktemp("l2a") / "demo", item_flavor="earth-search", **KWARGS
    )


def _items(region: DemoRegion) -> dict[str, dict]:
    return {item["id"]: item for item in demo.load_items(region)}


def _read(region: DemoRegion, item: dict, key: str) -> tuple[np.ndarray, rasterio.Affine]:
    with rasterio.open(region.root / item["assets"][key]["href"]) as src:
        return src.read(1), src.transform


def _truth(region: DemoRegion) -> np.ndarray:
    with rasterio.open(region.root / "truth" / "landcover.tif") as src:
        return src.read(1)


def _tree_digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


def test_layout_and_region(es_region: DemoRegion) -> None:
    assert es_region.crs == "EPSG:32632"
    assert es_region.items_path == es_region.root / "stac" / "items.json"
    assert es_region.item_ids == (
        "S2A_T32TPT_20240706T102031_L2A",
        "S2B_T32TPT_20240706T102031_L2A",
    )
    for item_id in es_region.item_ids:
        names = {p.name for p in (es_region.cog_root / item_id).iterdir()}
        assert names == {f"{b.asset_keys[0]}.tif" for b in (*L2A_BANDS, SCL)}
    manifest = json.loads((es_region.root / "demo.json").read_text())
    assert manifest["params"]["generator_version"] == demo.GENERATOR_VERSION


def test_cogs_are_valid_and_on_native_grids(es_region: DemoRegion) -> None:
    item = _items(es_region)[es_region.item_ids[0]]
    origins = set()
    for band in (*L2A_BANDS, SCL):
        asset = item["assets"][band.asset_keys[0]]
        with rasterio.open(es_region.root / asset["href"]) as src:
            profile = src.profile
            assert src.crs.to_epsg() == 32632
            assert src.res == (band.resolution_m, band.resolution_m)
            assert src.nodata == 0
            assert profile["dtype"] == ("uint8" if band is SCL else "uint16")
            assert profile["tiled"] and profile["blockxsize"] == profile["blockysize"] == 256
            assert profile["compress"] == "deflate"
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.overviews(1) or max(src.width, src.height) <= 256
            assert [src.height, src.width] == asset["proj:shape"]
            assert list(src.transform)[:6] == asset["proj:transform"]
            origins.add((src.transform.c, src.transform.f))
            # The grids nest: origin on a 60 m lattice, size a whole number of 60 m pixels.
            assert src.transform.c % 60 == 0 and src.transform.f % 60 == 0
            assert (src.width * band.resolution_m) % 60 == 0
    assert len(origins) == 1


def test_east_footprint_is_nodata_outside(es_region: DemoRegion) -> None:
    item = _items(es_region)[es_region.item_ids[1]]
    red, transform = _read(es_region, item, "red")
    scl, scl_transform = _read(es_region, item, "scl")
    valid = red > 0
    assert 0.45 < valid.mean() < 0.65
    # The data lies east of a swath edge: the westernmost column is empty, the eastern one full.
    assert not valid[:, 0].any() and valid[:, -1].all()
    assert (scl[:, 0] == 0).all() and (scl[:, -1] > 0).all()
    assert abs((scl > 0).mean() - valid.mean()) < 0.01
    # The item geometry covers exactly the data part.
    geom = shapely.geometry.shape(item["geometry"])
    to_utm = Transformer.from_crs(4326, 32632, always_xy=True)
    utm = shapely.transform(geom, lambda c: np.column_stack(to_utm.transform(c[:, 0], c[:, 1])))
    rows, cols = np.nonzero(np.ones_like(red, bool)[::25, ::25])
    xs, ys = rasterio.transform.xy(transform, rows * 25, cols * 25)
    inside = shapely.contains_xy(utm.buffer(15), xs, ys)
    outside = ~shapely.contains_xy(utm.buffer(-15), xs, ys)
    on_grid = valid[::25, ::25][rows, cols]
    assert (inside | ~on_grid).all() and (outside | on_grid).all()
    assert item["properties"]["s2:nodata_pixel_percentage"] == pytest.approx(
        100 * (scl == 0).mean(), abs=0.01
    )
    assert scl_transform.a == 20


@pytest.mark.parametrize(
    ("flavor", "pixel_offset", "declared", "flag"),
    [
        # Collection 1: the offset is in the pixels and raster:bands says so.
        ("earth-search-c1", 1000, (-0.1, 0), (None, None)),
        # Earth Search sentinel-2-l2a: offset removed, flagged, raster:bands stale on both.
        ("earth-search", 0, (-0.1, -0.1), (True, False)),
        # Planetary Computer: offset in the pixels, only the processing baseline tells.
        ("planetary-computer", 1000, (None, None), (None, None)),
    ],
)
def test_boa_offset_by_flavor_and_processing_baseline(
    flavor: str, pixel_offset: int, declared: tuple, flag: tuple, request: pytest.FixtureRequest
) -> None:
    region = request.getfixturevalue(
        {"earth-search-c1": "es", "earth-search": "l2a", "planetary-computer": "pc"}[flavor]
        + "_region"
    )
    items = _items(region)
    new, old = (items[i] for i in region.item_ids)
    assert new["collection"] == FLAVOR_COLLECTIONS[flavor]
    red_key, nir_key, scl_key = (
        ("B04", "B08", "SCL") if "B04" in new["assets"] else ("red", "nir", "scl")
    )
    truth = _truth(region)
    scl_new, _ = _read(region, new, scl_key)
    scl_old, _ = _read(region, old, scl_key)
    clear = np.isin(scl_new, (4, 5, 6)) & np.isin(scl_old, (4, 5, 6))
    clear10 = np.kron(clear, np.ones((2, 2), bool))  # 20 m -> 10 m
    forest = clear10 & (truth == FOREST)
    assert forest.sum() > 1000
    nir_new = _read(region, new, nir_key)[0][forest].astype(int)
    nir_old = _read(region, old, nir_key)[0][forest].astype(int)
    assert np.median(nir_new - nir_old) == pytest.approx(pixel_offset, abs=3)
    assert 1500 < np.median(nir_old) < 5000  # plain reflectance * 10000 for forest NIR
    for item, offset, applied in zip((new, old), declared, flag, strict=True):
        raster = item["assets"][nir_key].get("raster:bands")
        assert (raster[0]["offset"] if raster else None) == offset
        assert item["properties"].get("earthsearch:boa_offset_applied") == applied
    water = clear10 & (truth == WATER)
    red = _read(region, new, red_key)[0][water].astype(int)
    assert pixel_offset < np.median(red) < pixel_offset + 600  # dark water


def test_clouds_match_target_and_metadata(es_region: DemoRegion) -> None:
    for acq, item in zip(ACQS, demo.load_items(es_region), strict=True):
        scl, _ = _read(es_region, item, "scl")
        inside = scl[scl > 0]
        cloud = np.isin(inside, (8, 9, 10)).mean()
        assert cloud == pytest.approx(acq.cloud_fraction, abs=0.03)
        props = item["properties"]
        assert props["eo:cloud_cover"] == pytest.approx(100 * cloud, abs=0.01)
        assert props["s2:water_percentage"] == pytest.approx(100 * (inside == 6).mean(), abs=0.01)
    cloudy = demo.load_items(es_region)[0]
    scl, _ = _read(es_region, cloudy, "scl")
    assert {3, 4, 8, 9, 10} <= set(np.unique(scl).tolist())  # shadows, cirrus edges
    blue, _ = _read(es_region, cloudy, "blue")
    thick = np.kron(scl == 9, np.ones((2, 2), bool))
    veg = np.kron(scl == 4, np.ones((2, 2), bool))
    assert np.median(blue[thick]) > np.median(blue[veg]) + 3000  # clouds are bright


def test_items_have_required_stac_fields(es_region: DemoRegion, pc_region: DemoRegion) -> None:
    for region in (es_region, pc_region):
        data = json.loads(region.items_path.read_text())
        assert data["type"] == "FeatureCollection"
        ids = [f["id"] for f in data["features"]]
        assert len(set(ids)) == len(ids) == 2 and tuple(ids) == region.item_ids
        for item in data["features"]:
            for key in ("type", "stac_version", "id", "geometry", "bbox", "properties"):
                assert key in item
            assert item["collection"] in ("sentinel-2-c1-l2a", "sentinel-2-l2a")
            assert isinstance(item["links"], list) and item["stac_extensions"]
            props = item["properties"]
            dt.datetime.fromisoformat(props["datetime"].replace("Z", "+00:00"))
            assert props["proj:epsg"] == 32632 and props["instruments"] == ["msi"]
            assert 0 <= props["eo:cloud_cover"] <= 100
            assert props["s2:processing_baseline"] in ("05.10", "03.01")
            lon0, lat0, lon1, lat1 = item["bbox"]
            west_ok = lon0 < SMALL_BBOX[0] or props["s2:nodata_pixel_percentage"] > 30
            assert west_ok and lat0 < SMALL_BBOX[1]
            assert lon1 > SMALL_BBOX[2] and lat1 > SMALL_BBOX[3]
            for asset in item["assets"].values():
                assert "://" not in asset["href"] and not asset["href"].startswith("/")
            parsed = pystac.Item.from_dict(item)  # parses; validation needs the network
            assert parsed.id == item["id"]


def test_assets_findable_by_flavor_keys(es_region: DemoRegion, pc_region: DemoRegion) -> None:
    es = demo.load_items(es_region)[0]
    pc = demo.load_items(pc_region)[0]
    assert pc["id"].startswith("S2A_MSIL2A_20240706T102031_R065_T32TPT_")
    for band in L2A_BANDS:
        es_asset = es["assets"][band.asset_keys[0]]
        pc_asset = pc["assets"][band.asset_keys[1]]
        for region, asset, name in (
            (es_region, es_asset, band.asset_keys[0]),
            (pc_region, pc_asset, band.name),
        ):
            assert (region.root / asset["href"]).is_file()
            assert asset["type"] == "image/tiff; application=geotiff; profile=cloud-optimized"
            assert asset["gsd"] == band.resolution_m
            (info,) = asset["eo:bands"]
            assert info["name"] == name and info["common_name"] == band.common_name
            assert info["center_wavelength"] == band.center_wavelength
        assert "raster:bands" in es_asset and "raster:bands" not in pc_asset
    assert (es_region.root / es["assets"]["scl"]["href"]).is_file()
    assert (pc_region.root / pc["assets"]["SCL"]["href"]).is_file()
    assert pc["properties"]["platform"] == "Sentinel-2A"
    assert pc["properties"]["s2:mgrs_tile"] == "32TPT"
    # Decoys a band lookup must skip: JPEG2000 copies, thumbnail, 3-band TCI; none exist.
    for key in ("red-jp2", "nir-jp2", "thumbnail", "visual"):
        assert not (es_region.root / es["assets"][key]["href"]).exists()
    assert es["assets"]["red-jp2"]["type"] == "image/jp2"
    assert len(pc["assets"]["visual"]["eo:bands"]) == 3
    # Both flavors hold the same pixels.
    a = _read(es_region, es, "red")[0]
    b = _read(pc_region, pc, "B04")[0]
    assert np.array_equal(a, b)


def _overture(region: DemoRegion, sql: str) -> list[tuple]:
    glob = f"{region.overture_root}/theme=*/type=*/*.parquet"
    con = duckdb.connect()
    con.execute(
        f"CREATE VIEW o AS SELECT * FROM read_parquet('{glob}', hive_partitioning=true, "
        "union_by_name=true)"
    )
    return con.execute(sql).fetchall()


def test_overture_extract_reads_with_duckdb(es_region: DemoRegion) -> None:
    counts = dict(
        ((t, ty), n)
        for t, ty, n in _overture(es_region, "SELECT theme, type, count(*) FROM o GROUP BY ALL")
    )
    for key in [
        ("base", "land_cover"),
        ("base", "land_use"),
        ("base", "water"),
        ("base", "infrastructure"),
        ("buildings", "building"),
        ("transportation", "segment"),
        ("places", "place"),
    ]:
        assert counts.get(key, 0) > 0, key
    assert counts[("buildings", "building")] > 50
    assert counts[("base", "land_cover")] < 3000
    cols = {r[0] for r in _overture(es_region, "DESCRIBE SELECT * FROM o")}
    assert {
        "id",
        "geometry",
        "bbox",
        "version",
        "sources",
        "names",
        "class",
        "subtype",
        "source_tags",
        "categories",
        "height",
        "num_floors",
        "road_surface",
        "cartography",
        "is_salt",
        "theme",
        "type",
    } <= cols
    names = {r[0] for r in _overture(es_region, "SELECT names.primary FROM o")}
    assert {"Aldersee", "Emmer", "Kesselbach", "Hauptstraße", "St. Michael"} <= names
    ids = [r[0] for r in _overture(es_region, "SELECT id FROM o")]
    assert len(ids) == len(set(ids))
    for path in sorted(es_region.overture_root.glob("theme=*/type=*/*.parquet")):
        table = pq.read_table(path)
        assert "theme" not in table.column_names and "type" not in table.column_names
        assert [f.name for f in table.schema.field("bbox").type] == ["xmin", "xmax", "ymin", "ymax"]
        geo = json.loads(table.schema.metadata[b"geo"])
        assert geo["version"] == "1.1.0" and geo["primary_column"] == "geometry"
        column = geo["columns"]["geometry"]
        assert column["encoding"] == "WKB" and column["covering"]["bbox"]["xmin"] == [
            "bbox",
            "xmin",
        ]
        geoms = shapely.from_wkb(table.column("geometry").to_numpy(zero_copy_only=False))
        assert shapely.is_valid(geoms).all()
        assert sorted({g.geom_type for g in geoms}) == sorted(column["geometry_types"])
        bbox = table.column("bbox").to_pylist()
        bounds = shapely.bounds(geoms)
        assert all(
            b["xmin"] <= x0 and b["ymax"] >= y1
            for b, (x0, _, _, y1) in zip(bbox, bounds, strict=True)
        )


def _utm_mask(region: DemoRegion, wkbs: list[bytes], shape: tuple[int, int]) -> np.ndarray:
    to_utm = Transformer.from_crs(4326, 32632, always_xy=True)
    geoms = shapely.transform(
        shapely.from_wkb(wkbs), lambda c: np.column_stack(to_utm.transform(c[:, 0], c[:, 1]))
    )
    with rasterio.open(region.root / "truth" / "landcover.tif") as src:
        transform = src.transform
    return rasterio.features.rasterize(
        [(g, 1) for g in geoms], out_shape=shape, transform=transform, dtype="uint8"
    ).astype(bool)


def test_overture_agrees_with_rasters(es_region: DemoRegion) -> None:
    truth = _truth(es_region)
    # DuckDB hands GEOMETRY columns over as WKB (no spatial extension needed).
    sql = "SELECT geometry FROM o WHERE type = 'water' AND class IN ('lake', 'river', 'pond')"
    water_wkb = [r[0] for r in _overture(es_region, sql)]
    water_polys = [w for w in water_wkb if "Polygon" in shapely.from_wkb(w).geom_type]
    assert len(water_polys) >= 3
    water = _utm_mask(es_region, water_polys, truth.shape)
    raster_water = truth == WATER
    iou = (water & raster_water).sum() / (water | raster_water).sum()
    assert iou > 0.85
    # The clear scene's SCL sees water where the map has it.
    item = _items(es_region)[es_region.item_ids[0]]
    scl, _ = _read(es_region, item, "scl")
    scl_water = np.kron(scl == 6, np.ones((2, 2), bool))
    assert water[scl_water].mean() > 0.85
    # Land-cover polygons (30 m, generalised) mostly cover their own class.
    for subtype, code in (
        ("forest", FOREST),
        ("crop", CROPLAND),
        ("urban", BUILT_UP),
    ):
        sql = f"SELECT geometry FROM o WHERE type = 'land_cover' AND subtype = '{subtype}'"
        polys = [r[0] for r in _overture(es_region, sql)]
        mask = _utm_mask(es_region, polys, truth.shape)
        assert (truth[mask] == code).mean() > 0.75, subtype
        assert mask[truth == code].mean() > 0.75, subtype


def test_deterministic_and_ensure_reuses(
    es_region: DemoRegion, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "ensured"
    region = demo.ensure_demo_region(out, **KWARGS)
    assert region.root == out and region.item_ids == es_region.item_ids
    # Same seed and parameters: byte-identical COGs, items and Overture files.
    assert _tree_digest(out) == _tree_digest(es_region.root)
    assert [p.name for p in tmp_path.iterdir()] == ["ensured"]  # no temporary leftovers

    # A second call reuses the folder without generating anything: the generator is not
    # called, and no file or folder is written, replaced or renamed (inode and mtime of every
    # path unchanged; the parent's mtime would change if a temporary sibling came and went).
    def snapshot() -> dict[Path, tuple[int, int]]:
        paths = [tmp_path, out, *out.rglob("*")]
        return {p: (p.stat().st_ino, p.stat().st_mtime_ns) for p in paths}

    before = snapshot()

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError("regenerated a finished region")

    with monkeypatch.context() as m:
        m.setattr(demo, "generate_demo_region", fail)
        again = demo.ensure_demo_region(out, **KWARGS)
    assert again == region
    assert snapshot() == before

    # Other parameters: regenerated in place, and different.
    other = demo.ensure_demo_region(out, **{**KWARGS, "seed": 1})
    assert other.root == out
    digest = _tree_digest(out)
    assert digest["stac/items.json"] != _tree_digest(es_region.root)["stac/items.json"]
    assert json.loads((out / "demo.json").read_text())["params"]["seed"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ensured"]


def test_ensure_refuses_foreign_folder(tmp_path: Path) -> None:
    (tmp_path / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError):
        demo.ensure_demo_region(tmp_path, **KWARGS)
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_default_acquisitions_cover_the_seasons() -> None:
    seasons = {
        "spring": (3, 4, 5),
        "summer": (6, 7, 8),
        "autumn": (9, 10, 11),
        "winter": (12, 1, 2),
    }
    for months in seasons.values():
        acqs = [a for a in DEMO_ACQUISITIONS if a.date.month in months]
        assert len(acqs) == 2
        clear, cloudy = sorted(acqs, key=lambda a: a.cloud_fraction)
        assert clear.cloud_fraction < cloudy.cloud_fraction
    autumn = sorted(
        (a for a in DEMO_ACQUISITIONS if a.date.month in (9, 10, 11)),
        key=lambda a: a.cloud_fraction,
    )
    assert autumn[0].footprint == "east" and autumn[1].footprint == "full"
    assert all(a.date.tzinfo is not None for a in DEMO_ACQUISITIONS)


def test_winter_snow_and_summer_green(tmp_path: Path) -> None:
    winter = Acquisition(dt.datetime(2025, 1, 27, 10, 20, 29, tzinfo=dt.UTC), 0.0)
    region = demo.generate_demo_region(
        tmp_path / "seasons", bbox=SMALL_BBOX, acquisitions=(ACQS[0], winter)
    )
    summer_item, winter_item = demo.load_items(region)
    assert winter_item["properties"]["s2:snow_ice_percentage"] > 10
    assert summer_item["properties"]["s2:snow_ice_percentage"] < 2
    # Vegetation is green in July (reflectance = DN - 1000 at baseline 05.10).
    truth = _truth(region)
    red = _read(region, summer_item, "red")[0].astype(float) - 1000
    nir = _read(region, summer_item, "nir")[0].astype(float) - 1000
    ndvi = (nir - red) / (nir + red)
    assert np.median(ndvi[truth == FOREST]) > 0.6
    assert np.median(ndvi[truth == GRASSLAND]) > 0.4
    scl, _ = _read(region, winter_item, "scl")
    snow = np.kron(scl == 11, np.ones((2, 2), bool))
    swir = _read(region, winter_item, "swir16")[0]
    green = _read(region, winter_item, "green")[0]
    swir10 = np.kron(swir, np.ones((2, 2), swir.dtype))
    assert np.median(green[snow]) > 6000 and np.median(swir10[snow]) < 3000  # NDSI high


def test_invalid_arguments(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="bbox"):
        demo.generate_demo_region(tmp_path / "a", bbox=(11.0, 47.5, 10.0, 47.6))
    with pytest.raises(ValueError, match="baseline"):
        demo.generate_demo_region(
            tmp_path / "b",
            bbox=SMALL_BBOX,
            acquisitions=(Acquisition(JULY, 0.1, processing_baseline="x"),),
        )
