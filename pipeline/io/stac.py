"""STAC API transport: opening a catalog with pystac-client, retries, Planetary Computer signing."""

from __future__ import annotations

import datetime as dt
import threading
import time
from urllib.parse import urlparse

import httpx
import pystac_client
from pystac_client.stac_api_io import StacApiIO
from urllib3 import Retry

from pipeline.core.config import StacConfig


class PlanetaryComputerSigner:
    """Appends Planetary Computer SAS tokens to Azure Blob hrefs (tokens cached until expiry).

    Args:
        token_url: The SAS token endpoint; the account and container are appended.
        timeout_s: HTTP timeout.
    """

    def __init__(self, token_url: str, timeout_s: float = 30.0) -> None:
        self.token_url = token_url.rstrip("/")
        self.timeout_s = timeout_s
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}
        self._lock = threading.Lock()

    def __call__(self, href: str) -> str:
        """Return ``href`` with a SAS token, or unchanged if it is not an Azure Blob URL."""
        url = urlparse(href)
        if not url.netloc.endswith(".blob.core.windows.net") or "sig=" in url.query:
            return href
        account = url.netloc.split(".")[0]
        container = url.path.lstrip("/").split("/")[0]
        return f"{href}{'&' if url.query else '?'}{self._token(account, container)}"

    def _token(self, account: str, container: str) -> str:
        with self._lock:
            cached = self._tokens.get((account, container))
            if cached and cached[1] > time.time() + 300:
                return cached[0]
            resp = httpx.get(f"{self.token_url}/{account}/{container}", timeout=self.timeout_s)
            resp.raise_for_status()
            body = resp.json()
            expiry = dt.datetime.fromisoformat(str(body["msft:expiry"]).replace("Z", "+00:00"))
            token = str(body["token"])
            self._tokens[(account, container)] = (token, expiry.timestamp())
            return token


def open_catalog(stac: StacConfig, *, timeout_s: float | None = None) -> pystac_client.Client:
    """Open the STAC API with retries (429/5xx/timeouts, POST included) and a timeout.

    Raises:
        APIError: if the catalog cannot be opened after the retries.
    """
    retry = Retry(
        total=stac.max_retries,
        backoff_factor=stac.backoff_s,
        backoff_jitter=stac.backoff_s,
        backoff_max=30.0,
        status_forcelist=(429, 500, 502, 503, 504),
        allowed_methods=None,  # searches are POSTs: safe to repeat, they change nothing
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    io = StacApiIO(max_retries=retry, timeout=timeout_s or stac.timeout_s)
    return pystac_client.Client.open(stac.api_url, stac_io=io)
