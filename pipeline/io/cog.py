"""GDAL's environment for reading COGs over HTTP and S3: set once, shared by every chip read.

``s3://`` hrefs are read where :class:`pipeline.io.s3.S3Settings` says: AWS, unsigned (Earth
Search's bucket is public), or the S3-compatible server that ``AWS_ENDPOINT_URL`` names, with the
environment's credentials.
"""

from __future__ import annotations

import ctypes
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import rasterio
from rasterio.session import Session

from pipeline.io.s3 import S3Settings

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
}
"""GDAL settings for reading COGs over HTTP(S) and S3, applied around every read (the S3
endpoint and credentials come from :class:`_S3Session`)."""


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


class _S3Session(Session):  # type: ignore[misc]  # rasterio ships no type hints
    """rasterio's way to hand GDAL S3 settings: it refuses credentials as plain Env options.

    Its options name ``AWS_NO_SIGN_REQUEST`` or credentials, so rasterio's own AWS session
    (boto3's credential chain, where boto3 is installed) never replaces them on open.
    """

    def __init__(self, settings: S3Settings) -> None:
        self._options = settings.gdal_options()

    @classmethod
    def hascreds(cls, config: dict[str, str]) -> bool:
        """Whether ``config`` already says how to reach S3 (rasterio's Session API)."""
        return "AWS_NO_SIGN_REQUEST" in config

    def get_credential_options(self) -> dict[str, str]:
        """The GDAL options of the S3 settings (rasterio's Session API)."""
        return dict(self._options)


@contextmanager
def gdal_env(s3: S3Settings | None = None) -> Iterator[None]:
    """Apply :data:`GDAL_HTTP_ENV` and the S3 settings for the reads in this block.

    Args:
        s3: Where ``s3://`` hrefs are read from; default: :meth:`S3Settings.from_env`.
    """
    session = _S3Session(s3 or S3Settings.from_env())
    with rasterio.Env(session=session, **GDAL_HTTP_ENV):
        yield
