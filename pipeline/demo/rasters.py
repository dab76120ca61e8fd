"""Sentinel-2 L2A rasters of one acquisition: the bands' DNs and the SCL layer, as COGs.

A pixel's reflectance mixes end-member spectra by the landscape's shares (crops and grass
greening with the season, leaves on or off, snow above a seasonal snow line), is lit by the
overpass's sun over the terrain and veiled by clouds and their shadows. DNs are reflectance x
10000 plus the offset the item flavor's pixels carry, at each band's native 10, 20 or 60 m; the
scene classification (SCL) is made at 10 m and reduced to 20 m by the most frequent code.
"""

from __future__ import annotations

import datetime
import math
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import rasterio
import rasterio.features
from pyproj import Transformer

from pipeline.demo.land_cover import BARE, BUILT_UP, CROPLAND, FOREST, GRASSLAND, SNOW, WATER
from pipeline.demo.landscape import Landscape
from pipeline.demo.noise import seeded_rng, smooth_noise
from pipeline.demo.scene import Acquisition, SceneGrid, as_utc, footprint_mask
from pipeline.geo.bands import L2A_BANDS

__all__ = [
    "SHADOW_OFFSET_M",
    "Rendered",
    "render_acquisition",
    "write_acquisition_cogs",
    "write_cog",
]

Array = npt.NDArray[Any]

# Surface reflectance of the end members in L2A band order (B01 .. B12 without B10).
_ENDMEMBERS = (
    "water",
    "conifer",
    "decid_on",
    "decid_off",
    "green",
    "soil",
    "dry",
    "urban",
    "rock",
    "snow",
    "asphalt",
)
_SPECTRA: dict[str, tuple[float, ...]] = {
    "water": (0.045, 0.040, 0.038, 0.024, 0.019, 0.014, 0.012, 0.010, 0.009, 0.005, 0.004, 0.003),
    "conifer": (0.025, 0.022, 0.040, 0.022, 0.065, 0.17, 0.21, 0.23, 0.24, 0.085, 0.11, 0.05),
    "decid_on": (0.030, 0.030, 0.065, 0.030, 0.095, 0.28, 0.35, 0.38, 0.39, 0.14, 0.19, 0.085),
    "decid_off": (0.045, 0.045, 0.055, 0.060, 0.075, 0.10, 0.115, 0.125, 0.13, 0.05, 0.18, 0.12),
    "green": (0.035, 0.035, 0.075, 0.035, 0.11, 0.31, 0.39, 0.42, 0.43, 0.15, 0.21, 0.10),
    "soil": (0.065, 0.075, 0.10, 0.13, 0.16, 0.18, 0.20, 0.22, 0.23, 0.10, 0.30, 0.24),
    "dry": (0.055, 0.060, 0.08, 0.095, 0.125, 0.17, 0.19, 0.21, 0.22, 0.085, 0.28, 0.20),
    "urban": (0.09, 0.095, 0.105, 0.115, 0.125, 0.135, 0.145, 0.155, 0.16, 0.07, 0.19, 0.17),
    "rock": (0.15, 0.17, 0.20, 0.23, 0.25, 0.26, 0.27, 0.28, 0.285, 0.13, 0.31, 0.26),
    "snow": (0.80, 0.85, 0.84, 0.82, 0.80, 0.77, 0.75, 0.72, 0.70, 0.33, 0.08, 0.05),
    "asphalt": (0.07, 0.075, 0.08, 0.085, 0.09, 0.095, 0.10, 0.105, 0.11, 0.05, 0.13, 0.12),
}
_CLOUD = np.array(
    (0.62, 0.60, 0.59, 0.59, 0.60, 0.60, 0.60, 0.60, 0.59, 0.32, 0.47, 0.36), np.float32
)
_S_T = np.array([_SPECTRA[e] for e in _ENDMEMBERS], np.float32).T.copy()  # (12 bands, 11)
_SNOW = np.array(_SPECTRA["snow"], np.float32)[:, None]
_ASPHALT = np.array(_SPECTRA["asphalt"], np.float32)[:, None]
_B04, _B08 = 3, 7  # indices of red and NIR in L2A_BANDS

# Monthly (mid-month) curves: greenness of crops and grass, leaf-on share, snow line (m).
_MONTH_DOY = np.array([15 + 30.44 * m for m in range(12)])
_GREEN = {
    1: (0.25, 0.25, 0.35, 0.60, 0.85, 0.80, 0.45, 0.08, 0.05, 0.12, 0.22, 0.25),  # winter cereal
    2: (0.0, 0.0, 0.0, 0.02, 0.08, 0.40, 0.85, 0.92, 0.70, 0.15, 0.03, 0.0),  # maize
    3: (0.0, 0.0, 0.02, 0.12, 0.50, 0.88, 0.70, 0.20, 0.06, 0.04, 0.02, 0.0),  # spring crop
    0: (0.30, 0.30, 0.42, 0.68, 0.88, 0.86, 0.80, 0.75, 0.70, 0.55, 0.42, 0.33),  # grass
}
_LEAF_ON = (0.0, 0.0, 0.03, 0.30, 0.85, 1.0, 1.0, 1.0, 0.95, 0.60, 0.15, 0.0)
_SNOW_LINE = (850, 900, 1200, 1600, 2000, 2350, 2700, 2850, 2700, 2200, 1500, 1000)


def _seasonal(curve: Sequence[float], doy: Array | float) -> Array:
    """Interpolate a mid-month curve at day(s) of year, wrapping around the year end."""
    xp = np.concatenate([_MONTH_DOY - 365.25, _MONTH_DOY, _MONTH_DOY + 365.25])
    fp = np.tile(np.asarray(curve, dtype=np.float64), 3)
    return np.interp(np.mod(doy, 365.25), xp, fp)


def _sun_position(when: datetime.datetime, lon: float, lat: float) -> tuple[float, float]:
    """Solar azimuth (degrees clockwise from north) and elevation (NOAA approximation)."""
    doy = when.timetuple().tm_yday
    hours = when.hour + when.minute / 60 + when.second / 3600
    g = 2 * math.pi / 365 * (doy - 1 + (hours - 12) / 24)
    decl = (
        0.006918
        - 0.399912 * math.cos(g)
        + 0.070257 * math.sin(g)
        - 0.006758 * math.cos(2 * g)
        + 0.000907 * math.sin(2 * g)
        - 0.002697 * math.cos(3 * g)
        + 0.00148 * math.sin(3 * g)
    )
    eqtime = 229.18 * (
        0.000075
        + 0.001868 * math.cos(g)
        - 0.032077 * math.sin(g)
        - 0.014615 * math.cos(2 * g)
        - 0.040849 * math.sin(2 * g)
    )
    ha = math.radians((hours * 60 + eqtime + 4 * lon) / 4 - 180)
    phi = math.radians(lat)
    cos_zen = math.sin(phi) * math.sin(decl) + math.cos(phi) * math.cos(decl) * math.cos(ha)
    elevation = 90 - math.degrees(math.acos(max(-1.0, min(1.0, cos_zen))))
    az = math.degrees(
        math.atan2(math.sin(ha), math.cos(ha) * math.sin(phi) - math.tan(decl) * math.cos(phi))
    )
    return (az + 180) % 360, elevation


SHADOW_OFFSET_M = (-200.0, 570.0)
"""Cloud shadows fall this far (east, north) from their cloud (the sun is in the south-south-east
at overpass, clouds ~1.5 km high)."""

_CHUNK_ROWS = 300  # a multiple of 6 so every chunk holds whole 20 and 60 m pixels
_CLOUD_RAMP = 0.6  # noise units from a cloud edge to its thick interior
_SHADE = 0.65  # weight of direct sunlight in terrain shading
_NOISE_DN = 2  # per-pixel noise amplitude (DN) ...
_NOISE_SPREAD = 20  # ... on the ~2 * _NOISE_DN / (2 * _NOISE_SPREAD + 1) of pixels it hits:
# sparse and small, because noise ruins the compression of 16-bit DEFLATE tiles
_SCL_PRIORITY = np.array([9, 8, 10, 3, 11, 6, 4, 5, 0], np.uint8)  # ties in the 20 m mode


@dataclass
class _Clouds:
    alpha: Array  # float32 opacity 0..1
    bright: Array  # float32 cloud-top brightness factor
    code: Array  # uint8 SCL code of cloud pixels (8, 9, 10) else 0
    shadow: Array  # float32 shadow strength 0..1


def _clouds(grid: SceneGrid, acq: Acquisition, fp: Array, rng: np.random.Generator) -> _Clouds:
    """Clouds from smooth noise thresholded so they cover ``cloud_fraction`` of the footprint."""
    shape = grid.shape(10)
    zeros = np.zeros(shape, np.float32)
    cf = min(1.0, max(0.0, float(acq.cloud_fraction)))
    if cf <= 0.0:
        return _Clouds(zeros, zeros, np.zeros(shape, np.uint8), zeros)
    c = smooth_noise(rng, shape, [3500, 1400, 500, 160], [1.0, 0.7, 0.4, 0.2])
    thr = -np.inf if cf >= 1.0 else float(np.quantile(c[fp], 1.0 - cf))
    cloud = c > thr
    tau = np.where(cloud, np.clip((c - thr) / _CLOUD_RAMP, 0.0, 1.0), 0.0).astype(np.float32)
    code = np.zeros(shape, np.uint8)
    code[cloud] = 10  # thin cirrus at the edges
    code[cloud & (tau >= 0.12)] = 8
    code[tau >= 0.4] = 9
    alpha = np.where(cloud, 0.18 + 0.82 * np.clip(tau / 0.5, 0.0, 1.0) ** 0.8, 0.0)
    alpha = alpha.astype(np.float32)
    # Opacity and brightness saturate inside thick clouds: flat tops compress well.
    bright = (0.85 + 0.25 * np.clip(tau / 0.5, 0.0, 1.0)).astype(np.float32)
    thick = np.where(tau >= 0.12, alpha, 0.0)
    dx = round(SHADOW_OFFSET_M[0] / 10)
    dy = -round(SHADOW_OFFSET_M[1] / 10)  # north is up: negative rows
    shadow = np.zeros(shape, np.float32)
    h, w = shape
    src = thick[max(0, -dy) : h - max(0, dy), max(0, -dx) : w - max(0, dx)]
    shadow[max(0, dy) : h - max(0, -dy), max(0, dx) : w - max(0, -dx)] = src
    shadow[cloud] = 0.0
    return _Clouds(alpha, bright, code, shadow)


@dataclass
class Rendered:
    """One acquisition's rasters and the statistics its STAC item reports."""

    dn: dict[str, Array]  # band name -> uint16 at native resolution
    scl: Array  # uint8 at 20 m
    counts: dict[int, int]  # SCL code -> 20 m pixels inside the footprint
    valid: int  # 20 m pixels inside the footprint
    total: int  # 20 m pixels in the scene
    sun_azimuth: float
    sun_elevation: float


def render_acquisition(
    ls: Landscape, acq: Acquisition, index: int, seed: int, pixel_offset: int
) -> Rendered:
    """Render the acquisition number ``index`` of the landscape.

    Args:
        ls: The landscape.
        acq: The acquisition.
        index: Its position among the region's acquisitions (keys its random streams).
        seed: The region's seed.
        pixel_offset: DN added to reflectance x 10000 (the item flavor's pixel offset).
    """
    grid = ls.grid
    h, w = grid.shape(10)
    when = as_utc(acq.date)
    doy = when.timetuple().tm_yday + when.hour / 24
    lon_c, lat_c = Transformer.from_crs(grid.epsg, 4326, always_xy=True).transform(
        grid.x0 + grid.width_m / 2, grid.y0 - grid.height_m / 2
    )
    sun_az, sun_el = _sun_position(when, lon_c, lat_c)
    key = (acq.date.isoformat(), index)
    fp = footprint_mask(grid, acq.footprint, 10)
    clouds = _clouds(grid, acq, fp, seeded_rng(seed, "clouds", *key))
    snow_line = float(_seasonal(_SNOW_LINE, doy))
    leaf_on = float(_seasonal(_LEAF_ON, doy))
    el, az = math.radians(max(sun_el, 5.0)), math.radians(sun_az)
    sun = (math.sin(az) * math.cos(el), math.cos(az) * math.cos(el), math.sin(el))

    dn = {b.name: np.zeros(grid.shape(b.resolution_m), np.uint16) for b in L2A_BANDS}
    scl20 = np.zeros(grid.shape(20), np.uint8)
    fps = {res: footprint_mask(grid, acq.footprint, res) for res in (20, 60)}

    def chunk(r0: int, r1: int) -> None:
        rows = r1 - r0
        sl = slice(r0, r1)
        cls = ls.cls[sl].ravel()
        n = cls.size
        is_f = (cls == FOREST).astype(np.float32)
        is_c = cls == CROPLAND
        is_g = (cls == GRASSLAND).astype(np.float32)
        is_b = (cls == BUILT_UP).astype(np.float32)
        # Greenness: per crop type, shifted per parcel; mountain grass greens up later.
        elev = ls.elev[sl].ravel()
        shift = ls.pheno_shift[sl].ravel()
        lag = np.clip((elev - 800.0) / 1200.0, 0.0, 1.0) * 35.0
        g_grass = _seasonal(_GREEN[0], doy + shift - lag).astype(np.float32)
        crop = ls.crop[sl].ravel()
        g_crop = np.zeros(n, np.float32)
        for t in (1, 2, 3):
            m = crop == t
            if m.any():
                g_crop[m] = _seasonal(_GREEN[t], doy + shift[m])
        decid = ls.decid[sl].ravel()
        urban = ls.urban[sl].ravel()
        garden = is_b * (1.0 - urban)
        ab = np.empty((len(_ENDMEMBERS), n), np.float32)
        ab[0] = cls == WATER
        ab[1] = is_f * (1.0 - decid)
        ab[2] = is_f * decid * leaf_on
        ab[3] = is_f * decid * (1.0 - leaf_on)
        ab[4] = np.where(is_c, g_crop, 0.0) + (is_g + garden) * g_grass
        ab[5] = np.where(is_c, 1.0 - g_crop, 0.0)
        ab[6] = (is_g + garden) * (1.0 - g_grass)
        ab[7] = is_b * urban
        ab[8] = cls == BARE
        ab[9] = cls == SNOW
        road = ls.road[sl].ravel()
        ab[:10] *= 1.0 - road
        ab[10] = road
        refl = _S_T @ ab  # (12, n): linear mixing of the end members
        # Brightness texture and terrain illumination (diffuse light keeps shadows lit).
        se, sn = ls.slope_e[sl].ravel(), ls.slope_n[sl].ravel()
        cos_i = (-se * sun[0] - sn * sun[1] + sun[2]) / np.sqrt(se * se + sn * sn + 1.0)
        illum = np.clip(1.0 - _SHADE + _SHADE * cos_i / sun[2], 0.15, 1.8)
        refl *= (ls.bright[sl].ravel() * np.where(cls == WATER, 1.0, illum))[None, :]
        # Snow: above a seasonal snow line; trees and streets hold less of it.
        snow = np.clip((elev - snow_line + 120.0 * ls.snow_noise[sl].ravel()) / 150.0, 0, 1)
        snow *= np.select([cls == FOREST, cls == BUILT_UP, cls == WATER], [0.6, 0.8, 0.0], 1.0)
        snow[cls == SNOW] = 1.0
        snow = snow.astype(np.float32)
        refl += snow[None, :] * (_SNOW - refl)
        ndvi = (refl[_B08] - refl[_B04]) / (refl[_B08] + refl[_B04] + 1e-6)
        # Clouds over shadowed ground; cirrus is a faint veil.
        shadow = clouds.shadow[sl].ravel()
        refl *= (1.0 - 0.65 * shadow)[None, :]
        alpha = clouds.alpha[sl].ravel()
        cloud_top = _CLOUD[:, None] * clouds.bright[sl].ravel()[None, :]
        refl += alpha[None, :] * (cloud_top - refl)
        dnf = refl * 10000.0 + pixel_offset
        noise_rng = seeded_rng(seed, "noise", *key, r0)
        for bi, band in enumerate(L2A_BANDS):
            f = band.resolution_m // 10
            img = dnf[bi].reshape(rows, w)
            if f > 1:
                img = img.reshape(rows // f, f, w // f, f).mean(axis=(1, 3))
            # Noise at the native grid, so averaging does not spread it over every pixel.
            noise = noise_rng.integers(-_NOISE_SPREAD, _NOISE_SPREAD + 1, img.shape, np.int8)
            noise[np.abs(noise) > _NOISE_DN] = 0
            out = np.clip(np.rint(img) + noise, 1, 65535).astype(np.uint16)
            r0f, r1f = r0 // f, r1 // f
            mask = fp[sl] if f == 1 else fps[band.resolution_m][r0f:r1f]
            out[~mask] = 0
            dn[band.name][r0f:r1f] = out
        # Scene classification at 10 m, then the most frequent code per 20 m pixel.
        scl = np.where(ndvi > 0.4, 4, 5).astype(np.uint8)
        scl[(cls == WATER) & (snow < 0.5)] = 6
        scl[snow >= 0.5] = 11
        scl[shadow > 0.3] = 3
        code = clouds.code[sl].ravel()
        scl = np.where(code > 0, code, scl)
        scl[~fp[sl].ravel()] = 0
        blocks = scl.reshape(rows // 2, 2, w // 2, 2)
        counts = np.stack([(blocks == c).sum(axis=(1, 3)) for c in _SCL_PRIORITY])
        mode = _SCL_PRIORITY[counts.argmax(axis=0)]
        mode[~fps[20][r0 // 2 : r1 // 2]] = 0
        scl20[r0 // 2 : r1 // 2] = mode

    # Chunks are independent (their noise streams are keyed by row), so threads may run them
    # in any order; numpy releases the GIL in the heavy parts.
    starts = range(0, h, _CHUNK_ROWS)
    with ThreadPoolExecutor(max_workers=_workers()) as pool:
        for fut in [pool.submit(chunk, r0, min(h, r0 + _CHUNK_ROWS)) for r0 in starts]:
            fut.result()

    inside = scl20[fps[20]]
    values, freq = np.unique(inside, return_counts=True)
    return Rendered(
        dn=dn,
        scl=scl20,
        counts={int(a): int(b) for a, b in zip(values, freq, strict=True)},
        valid=int(inside.size),
        total=int(scl20.size),
        sun_azimuth=sun_az,
        sun_elevation=sun_el,
    )


def _workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


def write_cog(
    path: Path, data: Array, grid: SceneGrid, res: int, resampling: str, nodata: float = 0
) -> None:
    """Write a raster on the ``res`` m grid as a DEFLATE COG; ``resampling`` makes overviews."""
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = data.shape
    with rasterio.open(
        path,
        "w",
        driver="COG",
        width=w,
        height=h,
        count=1,
        dtype=data.dtype.name,
        crs=f"EPSG:{grid.epsg}",
        transform=grid.transform(res),
        nodata=nodata,
        compress="DEFLATE",
        predictor=3 if data.dtype.kind == "f" else 2,
        blocksize=256,
        resampling=resampling,
        num_threads="ALL_CPUS",
    ) as dst:
        dst.write(data, 1)


def write_acquisition_cogs(
    folder: Path, keys: dict[str, str], r: Rendered, grid: SceneGrid
) -> None:
    """Write an acquisition's COGs into ``folder``, one ``<asset key>.tif`` per band and SCL."""
    for band in L2A_BANDS:
        write_cog(
            folder / f"{keys[band.name]}.tif", r.dn[band.name], grid, band.resolution_m, "average"
        )
    write_cog(folder / f"{keys['SCL']}.tif", r.scl, grid, 20, "nearest")
