"""GDAL's environment for reading COGs over HTTP: set once, shared by every chip read."""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio

GDAL_HTTP_ENV: dict[str, str | int | bool] = {
    # Without this GDAL lists the remote "directory" on every open: 22 requests instead of 3.
    "GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR",
    "CPL_VSIL_CURL_ALLOWED_EXTENSIONS": ".tif,.tiff,.TIF",
    "GDAL_HTTP_MERGE_CONSECUTIVE_RANGES": "YES",
    "GDAL_HTTP_MULTIPLEX": "YES",
    "VSI_CACHE": "TRUE",
    "GDAL_HTTP_TIMEOUT": 30,
    "GDAL_HTTP_CONNECTTIMEOUT": 10,
    "GDAL_HTTP_MAX_RETRY": 3,
    "GDAL_HTTP_RETRY_DELAY": 1,
    "GDAL_HTTP_RETRY_CODES": "429,500,502,503,504",
    "AWS_NO_SIGN_REQUEST": "YES",
}
"""GDAL settings for reading COGs over HTTP(S) and S3, applied around every read."""


def clear_http_cache() -> bool:
    """Forget what GDAL cached of remote files (sizes, headers, blocks) in this process.

    A retry must read a COG afresh: one that was broken or missing when it failed may have been
    repaired or replaced since. rasterio does not wrap ``VSICurlClearCache``; the GDAL library
    its wheel bundles is already loaded, so it is called through ctypes.

    Returns:
        Whether the cache was cleared (False if no bundled GDAL library was found).
    """
    libs = sorted(Path(rasterio.__file__).parent.parent.glob("rasterio.libs/libgdal*.so*"))
    if not libs:
        return False
    ctypes.CDLL(str(libs[0])).VSICurlClearCache()
    return True


@contextmanager
def gdal_env() -> Iterator[None]:
    """Apply :data:`GDAL_HTTP_ENV` for the reads in this block (thread-local in rasterio)."""
    with rasterio.Env(**GDAL_HTTP_ENV):
        yield
