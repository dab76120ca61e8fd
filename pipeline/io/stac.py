"""STAC API transport: pystac-client with timeouts and retries, and Planetary Computer signing.

Retries are urllib3's ``Retry`` mounted by pystac-client's ``StacApiIO`` on its requests
session: connection errors, timeouts, 429 and 5xx answers are retried with exponential backoff
and jitter (``stac.max_retries``, ``stac.backoff_s``), POST searches included, a server's
``Retry-After`` honoured.

Planetary Computer keeps its COGs in Azure Blob Storage containers that need a SAS token, one
per storage account and container, from its token endpoint (``GET
{stac.signing_token_url}/{account}/{container}`` answering ``{"token": ..., "msft:expiry":
...}``). Signing is pystac-client's ``modifier`` hook: each page of search results is signed as
it arrives, so the stages only ever see readable hrefs.

The modifier is :class:`PlanetaryComputerSigner`, not the ``planetary-computer`` package's
``sign_inplace`` (1.0.0), because that package

* reads its token endpoint only from ``PC_SDK_SAS_URL`` or ``~/.planetarycomputer/settings.env``
  (which it loads into ``os.environ``), once per process, into a cached global ``Settings``:
  following ``stac.signing_token_url`` per run would mean overwriting that global;
* requests tokens without a timeout: a token endpoint that accepts the connection and never
  answers blocks the shard for good (checked: ``sign_url`` was still waiting after 20 s),
  where every other request here gives up after ``stac.timeout_s`` and is retried;
* renews a token only with under 60 s left, but hrefs signed during the search are read
  afterwards, in the chips stage.

The signer fetches tokens through the catalog's own ``StacApiIO`` session: the same timeout and
retries as the searches. Some collections (``sentinel-1-rtc``) get tokens only for a
Planetary Computer account: its subscription key, read from the environment variable that
``stac.signing_key_env`` names, goes with every token request as ``Ocp-Apim-Subscription-Key``
(and to no other host). The key is sent through the session directly, not
``StacApiIO.request``, whose debug log prints request headers.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

import pystac
import pystac_client
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO
from urllib3 import Retry

from pipeline.core.config import StacConfig
from pipeline.core.errors import AssetError, PreflightError

__all__ = [
    "BLOB_HOST_SUFFIX",
    "SAMPLE_ITEMS",
    "CollectionSample",
    "PlanetaryComputerSigner",
    "SigningError",
    "check_catalog",
    "first_resolved",
    "open_catalog",
    "subscription_key",
]

BLOB_HOST_SUFFIX = ".blob.core.windows.net"
SUBSCRIPTION_KEY_HEADER = "Ocp-Apim-Subscription-Key"
"""The header of a Planetary Computer account key (its SAS API's API Management gateway)."""
_Resolved = TypeVar("_Resolved")

# A cached token is renewed this long before it expires: hrefs signed during the search must
# still be valid when the chips stage reads them.
TOKEN_RENEWAL_S = 300.0
RETRY_STATUSES = (429, 500, 502, 503, 504)
MAX_BACKOFF_S = 30.0


class SigningError(APIError):
    """No SAS token could be had for an href (``status_code``: the token endpoint's answer)."""


class PlanetaryComputerSigner:
    """A pystac-client ``modifier`` that appends Planetary Computer SAS tokens to Blob hrefs.

    Tokens are cached per storage account and container until :data:`TOKEN_RENEWAL_S` before
    they expire. One signer serves one catalog (one thread).

    Args:
        token_url: The SAS token endpoint; ``/{account}/{container}`` is appended.
        io: The transport that fetches tokens (its session's retries and its timeout apply).
        subscription_key: A Planetary Computer account key for collections that need one;
            None: anonymous tokens.
    """

    def __init__(self, token_url: str, io: StacApiIO, subscription_key: str | None = None) -> None:
        self.token_url = token_url.rstrip("/")
        self.io = io
        self._headers = {SUBSCRIPTION_KEY_HEADER: subscription_key} if subscription_key else {}
        self._tokens: dict[tuple[str, str], tuple[str, float]] = {}

    def __call__(
        self, obj: pystac.Collection | pystac.Item | pystac.ItemCollection | dict[Any, Any]
    ) -> None:
        """Sign, in place, the asset hrefs of a page of search results or of an item.

        Collections are left as they are: their own assets (thumbnails, item tables) are never
        read here, and some sit in public accounts the token endpoint does not serve.

        Raises:
            SigningError: if a token cannot be had.
        """
        if isinstance(obj, pystac.Item):
            for asset in obj.assets.values():
                asset.href = self.sign(asset.href)
        elif isinstance(obj, pystac.ItemCollection):
            for item in obj:
                self(item)
        elif isinstance(obj, dict) and obj.get("type") in ("Feature", "FeatureCollection"):
            for feature in obj.get("features", [obj]):
                for asset in feature.get("assets", {}).values():
                    asset["href"] = self.sign(str(asset["href"]))

    def sign(self, href: str) -> str:
        """Return ``href`` with a SAS token, or unchanged if it is no Blob URL or is signed.

        Raises:
            SigningError: if a token cannot be had.
        """
        url = urlparse(href)
        if not url.netloc.endswith(BLOB_HOST_SUFFIX) or "sig=" in url.query:
            return href
        account = url.netloc.split(".")[0]
        container = url.path.lstrip("/").split("/")[0]
        return f"{href}{'&' if url.query else '?'}{self._token(account, container)}"

    def _token(self, account: str, container: str) -> str:
        cached = self._tokens.get((account, container))
        if cached and cached[1] - time.time() > TOKEN_RENEWAL_S:
            return cached[0]
        url = f"{self.token_url}/{account}/{container}"
        try:
            body = json.loads(self._get(url))
            token = str(body["token"])
            expiry = dt.datetime.fromisoformat(str(body["msft:expiry"])).timestamp()
        except (APIError, KeyError, ValueError) as exc:
            status = getattr(exc, "status_code", None)
            detail = f"HTTP {status} {exc}" if status else str(exc)
            hint = ""
            if status in (401, 403) and not self._headers:
                hint = (
                    " (this container serves tokens only to a Planetary Computer account, as "
                    "sentinel-1-rtc's does: put the account's key in an environment variable "
                    "and name it in signing_key_env)"
                )
            error = SigningError(
                f"no SAS token for {account}/{container} from {url}: {detail}{hint}"
            )
            error.status_code = status
            raise error from exc
        self._tokens[(account, container)] = (token, expiry)
        return token

    def _get(self, url: str) -> str:
        """GET ``url`` with the account key, through the session's retries and timeout."""
        try:
            response = self.io.session.get(url, headers=self._headers, timeout=self.io.timeout)
        except Exception as exc:  # any transport failure, as StacApiIO.request reports it
            raise APIError(str(exc)) from exc
        if not 200 <= response.status_code < 300:
            raise APIError.from_response(response)
        return response.text


def subscription_key(stac: StacConfig) -> str | None:
    """The account key that ``stac.signing_key_env`` names, or None when it names none.

    Raises:
        APIError: when the variable it names is unset or empty (say so, rather than sign
            anonymously and fail on every token).
    """
    if stac.signing_key_env is None:
        return None
    key = os.environ.get(stac.signing_key_env, "").strip()
    if not key:
        raise APIError(
            f"signing_key_env names {stac.signing_key_env}, which is not set: export the "
            "Planetary Computer account key in it, or unset signing_key_env"
        )
    return key


def open_catalog(stac: StacConfig, *, timeout_s: float | None = None) -> pystac_client.Client:
    """Open the STAC API with a timeout and retries; search results come signed if configured.

    Args:
        stac: STAC settings.
        timeout_s: Per-request timeout instead of ``stac.timeout_s``.

    Raises:
        APIError: if the catalog cannot be opened after the retries.
    """
    retry = Retry(
        total=stac.max_retries,
        backoff_factor=stac.backoff_s,
        backoff_jitter=stac.backoff_s,
        backoff_max=MAX_BACKOFF_S,
        status_forcelist=RETRY_STATUSES,
        allowed_methods=None,  # searches are POSTs: safe to repeat, they change nothing
        respect_retry_after_header=True,
        raise_on_status=False,
    )
    io = StacApiIO(max_retries=retry)
    signer = (
        PlanetaryComputerSigner(stac.signing_token_url, io, subscription_key(stac))
        if stac.signing == "planetary-computer"
        else None
    )
    # The timeout goes to open(), not StacApiIO(): open() sets the io's timeout to its own
    # argument, None (no timeout at all) when left out (pystac-client issue #791).
    return pystac_client.Client.open(
        stac.api_url, stac_io=io, modifier=signer, timeout=timeout_s or stac.timeout_s
    )


SAMPLE_ITEMS = 3
"""Items of each collection the preflight reads: signed where signing is on, and shown to the
caller, who checks that they hold what the run reads."""


@dataclass(frozen=True)
class CollectionSample:
    """What the preflight read of one collection.

    Attributes:
        items: Up to :data:`SAMPLE_ITEMS` items (signed where signing is on).
        interval: The collection's overall temporal extent (an end None is open), or None
            where it declares none.
    """

    items: list[dict[str, Any]]
    interval: tuple[dt.datetime | None, dt.datetime | None] | None


def check_catalog(
    stac: StacConfig,
    collections: Mapping[str, str],
    *,
    url_field: str = "stac.api_url",
    key_field: str = "stac.signing_key_env",
    where: Mapping[str, Any] | None = None,
) -> dict[str, CollectionSample]:
    """Fail fast if a catalog is unreachable, a collection missing, or its items unsignable.

    A few items of each collection are searched (:data:`SAMPLE_ITEMS`), and with Planetary
    Computer signing signed: a token endpoint that refuses (``sentinel-1-rtc`` without an
    account key answers 403) or does not answer would otherwise fail every sample of the run,
    one search at a time.

    Args:
        stac: The catalog's settings.
        collections: For each config field (``stac.collection``, ``sar.collection``...), the
            collection it names.
        url_field: The field to blame when the catalog cannot be opened.
        key_field: The field to blame when the account key's variable is unset, or the token
            endpoint refuses the key (or its absence).
        where: More search arguments for the sampled items (``bbox``, ``datetime``).

    Returns:
        For each field, what was read of its collection: its items (none for an empty
        collection, or none where ``where`` points) and its temporal extent.

    Raises:
        PreflightError: naming the field at fault.
    """
    if stac.signing == "planetary-computer":
        try:
            subscription_key(stac)
        except APIError as exc:
            raise PreflightError(key_field, str(exc)) from None
    try:
        client = open_catalog(stac, timeout_s=min(stac.timeout_s, 10.0))
    except Exception as exc:  # any transport or parse failure means "unusable"
        raise PreflightError(url_field, f"cannot open STAC API {stac.api_url}: {exc}") from None
    sampled: dict[str, CollectionSample] = {}
    for field, collection in collections.items():
        try:
            found = client.get_collection(collection)
        except Exception as exc:
            found, detail = None, f": {exc}"
        else:
            detail = ""
        if found is None:  # pystac-client returns None for a 404 on some versions
            raise PreflightError(
                field, f"collection {collection!r} not found at {stac.api_url}{detail}"
            )
        sampled[field] = CollectionSample(
            items=_sample_items(client, collection, url_field, key_field, dict(where or {})),
            interval=_overall_interval(found),
        )
    return sampled


def first_resolved(
    items: Iterable[dict[str, Any]], resolve: Callable[[dict[str, Any]], _Resolved]
) -> tuple[_Resolved | None, list[tuple[dict[str, Any], Exception]]]:
    """The first item ``resolve`` accepts, and the items before it with what refused them.

    Items can be broken one by one (an asset missing, a bad date), so a preflight refuses a
    collection only when none of its sampled items resolves as the run will resolve them.
    """
    refused: list[tuple[dict[str, Any], Exception]] = []
    for item in items:
        try:
            return resolve(item), refused
        except (AssetError, KeyError, ValueError) as exc:
            refused.append((item, exc))
    return None, refused


def _overall_interval(collection: Any) -> tuple[dt.datetime | None, dt.datetime | None] | None:
    """A collection's overall temporal extent (STAC: the first interval), or None if unknown."""
    try:
        start, end = collection.extent.temporal.intervals[0]
    except (AttributeError, IndexError, TypeError, ValueError):
        return None
    return start, end


def _sample_items(
    client: pystac_client.Client,
    collection: str,
    url_field: str,
    key_field: str,
    where: dict[str, Any],
) -> list[dict[str, Any]]:
    """A few items of ``collection``, signed by the catalog's signer if it has one."""
    try:
        search = client.search(
            collections=[collection], max_items=SAMPLE_ITEMS, limit=SAMPLE_ITEMS, **where
        )
        return list(search.items_as_dicts())
    except SigningError as exc:
        field = key_field if exc.status_code in (401, 403) else "stac.signing_token_url"
        raise PreflightError(field, f"cannot sign {collection!r} items: {exc}") from None
    except APIError as exc:
        raise PreflightError(url_field, f"cannot search {collection!r}: {exc}") from None
    except NotImplementedError as exc:  # pystac-client: the API does not conform to item search
        raise PreflightError(url_field, f"the STAC API cannot search items: {exc}") from None
