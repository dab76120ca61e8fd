"""Chips: windowed reads of every band onto each chip's 10 m grid, harmonised, with cloud stats.

Each (scene, band) COG is opened once per shard and every chip that falls in the scene is cut
from that open dataset; the (scene, band) jobs run in a thread pool with a per-host limit
(:mod:`pipeline.io.cog_reads`). 20 m and 60 m bands are resampled bilinearly onto the chip
grid, SCL with nearest neighbour. A failure to open a COG fails the samples of that scene only,
with the reason; a failure to read one window fails that one sample.

Pixel convention of the output: uint16 DN with reflectance = DN / 10000 (offset removed), and
0 = nodata. Valid pixels that harmonise to 0 or below are stored as 1 so that 0 stays nodata.
The offset taken off is the scene metadata's unless the chip's own pixels contradict it
(:func:`pipeline.geo.radiometry.check_pixels`); each chip records the verdict.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
from rasterio.enums import Resampling
from rasterio.windows import Window

from pipeline.core.errors import SampleFailure
from pipeline.core.types import ChipStats
from pipeline.geo.bands import Band
from pipeline.geo.grid import ChipGrid
from pipeline.geo.radiometry import PixelCheck, check_pixels, harmonise
from pipeline.io.cog_reads import READ_ERRORS, CogError, CogJob, run_cog_jobs
from pipeline.stages.scenes import SceneAssets

__all__ = [
    "Chip",
    "ChipRequest",
    "read_chips",
]


SCL_CLOUD = (8, 9, 10)
SCL_SHADOW = (3,)
SCL_SNOW = (11,)
SCL_WATER = (6,)
UInt16Array = npt.NDArray[np.uint16]
UInt8Array = npt.NDArray[np.uint8]


@dataclass(frozen=True)
class ChipRequest:
    """One chip to cut: a sample's grid inside a chosen scene."""

    sample_id: str
    scene: SceneAssets
    grid: ChipGrid


@dataclass
class Chip:
    """A cut chip.

    Attributes:
        sample_id: The sample.
        pixels: (bands, size, size) uint16, harmonised DN (reflectance x 10000), 0 = nodata.
        scl: (size, size) uint8 scene classification.
        stats: Fractions and indices.
        radiometry: The offset taken off each band and the pixels' verdict on the metadata.
        band_names: Band order of ``pixels``.
    """

    sample_id: str
    pixels: UInt16Array
    scl: UInt8Array
    stats: ChipStats
    radiometry: PixelCheck
    band_names: tuple[str, ...] = field(default=())


def _window(grid: ChipGrid, src: Any) -> tuple[Window, bool]:
    """The chip's window in ``src`` pixel units, and whether it lies inside the raster."""
    x0, y0, x1, y1 = grid.bounds
    t = src.transform
    col = (x0 - t.c) / t.a
    row = (y1 - t.f) / t.e
    width = (x1 - x0) / t.a
    height = (y1 - y0) / -t.e
    inside = col >= 0 and row >= 0 and col + width <= src.width and row + height <= src.height
    return Window(col, row, width, height), inside


def _read_window(src: Any, grid: ChipGrid, resampling: Resampling) -> npt.NDArray[Any]:
    if src.crs is None:
        raise SampleFailure("crs_mismatch", f"COG has no CRS; the item says {grid.crs}")
    if str(src.crs) != grid.crs and src.crs.to_string() != grid.crs:
        raise SampleFailure("crs_mismatch", f"COG CRS {src.crs} differs from item CRS {grid.crs}")
    window, inside = _window(grid, src)
    data = src.read(
        1,
        window=window,
        out_shape=(grid.size, grid.size),
        resampling=resampling,
        boundless=not inside,
        fill_value=0,
    )
    return np.asarray(data)


def _read_bilinear(src: Any, grid: ChipGrid) -> npt.NDArray[Any]:
    return _read_window(src, grid, Resampling.bilinear)


def _read_nearest(src: Any, grid: ChipGrid) -> npt.NDArray[Any]:
    return _read_window(src, grid, Resampling.nearest)


def _failure(error: CogError) -> SampleFailure:
    """A COG's error as the sample's failure: ``cog_open`` fails the scene, ``cog_read`` one."""
    if isinstance(error.error, SampleFailure):
        return error.error
    return SampleFailure("cog_open" if error.opening else "cog_read", str(error))


def _index(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    with np.errstate(divide="ignore", invalid="ignore"):
        out: npt.NDArray[np.float32] = (a - b) / (a + b)
    return out


def _mean(values: npt.NDArray[np.float32]) -> float | None:
    values = values[np.isfinite(values)]
    return round(float(values.mean()), 4) if values.size else None


def chip_stats(pixels: UInt16Array, scl: UInt8Array, band_names: tuple[str, ...]) -> ChipStats:
    """Fractions from SCL and the pixels, and NDVI/NDWI/brightness over clear valid pixels."""
    nodata = (pixels == 0).all(axis=0) | (scl == 0)
    n = float(scl.size)
    clear = ~nodata & ~np.isin(scl, SCL_CLOUD + SCL_SHADOW)
    idx = {name: i for i, name in enumerate(band_names)}

    def band(name: str) -> npt.NDArray[np.float32] | None:
        return pixels[idx[name]].astype(np.float32)[clear] if name in idx else None

    red, green, blue, nir = band("B04"), band("B03"), band("B02"), band("B08")
    ndvi = _mean(_index(nir, red)) if nir is not None and red is not None else None
    ndwi = _mean(_index(green, nir)) if nir is not None and green is not None else None
    bright = (
        _mean((red + green + blue) / 30000.0)
        if red is not None and green is not None and blue is not None
        else None
    )
    return ChipStats(
        nodata_fraction=round(float(nodata.sum()) / n, 4),
        cloud_fraction=round(float(np.isin(scl, SCL_CLOUD).sum()) / n, 4),
        cloud_shadow_fraction=round(float(np.isin(scl, SCL_SHADOW).sum()) / n, 4),
        snow_fraction=round(float(np.isin(scl, SCL_SNOW).sum()) / n, 4),
        water_fraction=round(float(np.isin(scl, SCL_WATER).sum()) / n, 4),
        ndvi_mean=ndvi,
        ndwi_mean=ndwi,
        brightness_mean=bright,
    )


def read_chips(
    requests: list[ChipRequest],
    bands: tuple[Band, ...],
    *,
    threads: int | None = None,
    max_requests_per_host: int = 16,
) -> dict[str, Chip | SampleFailure]:
    """Cut every requested chip, every band, opening each (scene, band) COG once.

    Args:
        requests: Chips to cut (any number of scenes).
        bands: Bands in output order.
        threads: Parallel (scene, band) jobs; None: as
            :func:`pipeline.io.cog_reads.default_read_threads` says for their hrefs.
        max_requests_per_host: Jobs in flight per host across every caller in the process.

    Returns:
        For each sample id, its :class:`Chip` or the :class:`SampleFailure` that stopped it.
    """
    by_scene: dict[str, list[ChipRequest]] = {}
    for req in requests:
        by_scene.setdefault(req.scene.item_id, []).append(req)
    # One job per (scene, band) COG; its requests are that scene's chips.
    jobs: list[tuple[str, CogJob[ChipGrid, npt.NDArray[Any]]]] = []
    for reqs in by_scene.values():
        scene = reqs[0].scene
        grids = {r.sample_id: r.grid for r in reqs}
        for band in bands:
            jobs.append((band.name, CogJob(scene.band_hrefs[band.name], grids, _read_bilinear)))
        jobs.append(("SCL", CogJob(scene.scl_href, grids, _read_nearest)))
    size = requests[0].grid.size if requests else 0
    cubes = {r.sample_id: np.zeros((len(bands), size, size), np.uint16) for r in requests}
    scls = {r.sample_id: np.zeros((size, size), np.uint8) for r in requests}
    failures: dict[str, SampleFailure] = {}
    band_index = {b.name: i for i, b in enumerate(bands)}
    results = run_cog_jobs(
        [job for _, job in jobs],
        threads=threads,
        max_requests_per_host=max_requests_per_host,
        read_errors=(*READ_ERRORS, SampleFailure),
    )
    for (name, _), result in zip(jobs, results, strict=True):
        for sid, err in result.errors.items():
            failures.setdefault(sid, _failure(err))
        for sid, arr in result.values.items():
            if name == "SCL":
                scls[sid] = arr.astype(np.uint8)
            else:
                cubes[sid][band_index[name]] = arr  # raw DN: harmonised once all are in
    names = tuple(b.name for b in bands)
    out: dict[str, Chip | SampleFailure] = {}
    for req in requests:
        sid = req.sample_id
        if sid in failures:
            out[sid] = failures[sid]
            continue
        radiometry = check_pixels(cubes[sid], scls[sid], names, req.scene.radiometry)
        pixels = harmonise(cubes[sid], names, radiometry.offset_dn)
        stats = chip_stats(pixels, scls[sid], names)
        if math.isclose(stats.nodata_fraction, 1.0):
            out[sid] = SampleFailure("all_nodata", f"chip in {req.scene.item_id} is all nodata")
            continue
        out[sid] = Chip(sid, pixels, scls[sid], stats, radiometry, names)
    return out
