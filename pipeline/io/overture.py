"""Overture releases: which ones exist and which is the newest.

Overture publishes a STAC catalog (``overture.catalog_url``, by default
https://stac.overturemaps.org/catalog.json). Its root catalog has a ``latest`` field naming the
newest release and one ``child`` link per release that is on S3 (``.../<release-id>/catalog.json``);
only the newest releases stay on S3, and the catalog lists exactly those. ``overture.release:
latest`` is resolved from it (see :func:`pipeline.runner.plan.resolve_release`, which also pins the
result per output dir). A mirror of the releases in another bucket may keep its catalog beside them:
an ``s3://`` catalog URL is read with DuckDB httpfs, from where :class:`pipeline.io.s3.S3Settings`
says. A local tree of releases (``<folder>/<release-id>/theme=*/type=*``) lists its own folders.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import httpx

from pipeline.core.config import OvertureConfig
from pipeline.core.errors import PreflightError
from pipeline.io.duckdb import connect_duckdb

__all__ = ["CATALOG_TIMEOUT_S", "Catalog", "available_releases", "read_catalog", "release_key"]

CATALOG_TIMEOUT_S = 30.0
"""Seconds to wait for the release catalog."""

_RELEASE_ID = re.compile(r"(\d{4}-\d{2}-\d{2})\.(\d+)")


def release_key(release: str) -> tuple[str, int, str]:
    """Sort key of a release id: ``YYYY-MM-DD.N`` by date, then N as a number."""
    m = _RELEASE_ID.fullmatch(release)
    return (m[1], int(m[2]), "") if m else ("", -1, release)


@dataclass(frozen=True)
class Catalog:
    """What Overture's release catalog says.

    Attributes:
        releases: The release ids it links to, newest first.
        latest: The release it names ``latest`` (the newest if it names none).
    """

    releases: tuple[str, ...]
    latest: str


def _release_of(href: str) -> str:
    """The release id of a child link: ``./2025-09-24.0/catalog.json`` or an absolute URL."""
    parts = href.rstrip("/").split("/")
    return parts[-2] if parts[-1].endswith(".json") and len(parts) > 1 else parts[-1]


def _read_json(url: str) -> Any:
    """The JSON document at an ``http(s)://`` or ``s3://`` URL (one GET)."""
    if url.startswith("s3://"):
        con = connect_duckdb(httpfs=True)
        row = con.execute("SELECT content FROM read_text(?)", [url]).fetchone()
        return json.loads(row[0] if row else "")
    response = httpx.get(url, timeout=CATALOG_TIMEOUT_S, follow_redirects=True)
    response.raise_for_status()
    return response.json()


def read_catalog(url: str) -> Catalog:
    """Read the release catalog at ``url`` (one GET, over HTTP(S) or S3).

    Raises:
        PreflightError: naming ``overture.catalog_url`` if it cannot be read or lists no
            releases.
    """
    try:
        doc = _read_json(url)
    except (httpx.HTTPError, duckdb.Error, ValueError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise PreflightError(
            "overture.catalog_url", f"cannot read Overture's release catalog {url}: {first}"
        ) from None
    links = doc.get("links") if isinstance(doc, dict) else None
    hrefs = [
        str(link["href"])
        for link in links or []
        if isinstance(link, dict) and link.get("rel") == "child" and link.get("href")
    ]
    releases = tuple(sorted({_release_of(h) for h in hrefs}, key=release_key, reverse=True))
    if not releases:
        raise PreflightError(
            "overture.catalog_url", f"{url} is not a release catalog: it has no child links"
        )
    latest = doc.get("latest")
    return Catalog(releases, latest if isinstance(latest, str) and latest else releases[0])


def available_releases(cfg: OvertureConfig) -> list[str]:
    """The releases a ``{release}`` source holds, newest first.

    For an ``s3://`` source, the releases in Overture's catalog; for a local folder, its
    subfolders that hold ``theme=*`` folders.

    Raises:
        PreflightError: naming ``overture.source`` if the local folder does not exist, or
            ``overture.catalog_url`` if the catalog cannot be read.
    """
    if cfg.is_remote:
        return list(read_catalog(cfg.catalog_url).releases)
    root = Path(cfg.releases_root)
    if not root.is_dir():
        raise PreflightError("overture.source", f"Overture folder {root} does not exist")
    found = (d.name for d in root.iterdir() if d.is_dir() and any(d.glob("theme=*")))
    return sorted(found, key=release_key, reverse=True)


@dataclass(frozen=True)
class TypeColumns:
    """The columns eocap reads of one Overture type, besides ``geometry`` and ``bbox``.

    Attributes:
        theme: The type's theme (the ``theme=`` folder).
        cls: Where a feature's class comes from: per feature, the first of these columns that
            the file has and that is not null there. A file must have at least one of them.
        subtype: Whether ``subtype`` is read (the feature's kind where its class is null).
        name: Whether ``names.primary`` is read.
        tags: Whether ``source_tags`` (OSM tags) is read.
    """

    theme: str
    cls: tuple[str, ...]
    subtype: bool = True
    name: bool = True
    tags: bool = False

    def attributes(self) -> list[str]:
        """The columns read besides geometry, bbox and the class."""
        wanted = (
            ("subtype", self.subtype),
            ("names.primary", self.name),
            ("source_tags", self.tags),
        )
        return [col for col, read in wanted if read]

    def required(self) -> list[str]:
        """The columns every file of the type must have (besides one of :attr:`cls`)."""
        return ["geometry", "bbox.xmin", "bbox.ymin", "bbox.xmax", "bbox.ymax", *self.attributes()]


OVERTURE_COLUMNS: dict[str, TypeColumns] = {
    "land": TypeColumns("base", ("class",), tags=True),
    "land_cover": TypeColumns("base", ("subtype",), name=False),
    "land_use": TypeColumns("base", ("class",), tags=True),
    "water": TypeColumns("base", ("class",), tags=True),
    "infrastructure": TypeColumns("base", ("class",), tags=True),
    "building": TypeColumns("buildings", ("class",)),
    "segment": TypeColumns("transportation", ("class",)),
    # Places: taxonomy.primary (schema 1.15+, December 2025 releases on) succeeds
    # categories.primary (dropped in the September 2026 release); both are the most specific
    # category, so classes stay at one level across releases. basic_category (1.13+, coarser)
    # only names places that have neither.
    "place": TypeColumns(
        "places", ("taxonomy.primary", "categories.primary", "basic_category"), subtype=False
    ),
}
"""The Overture types the context uses and the columns it reads of each."""


OVERTURE_TYPES: dict[str, str] = {t: c.theme for t, c in OVERTURE_COLUMNS.items()}
"""The Overture types the context uses, with their themes."""
