"""Reading the files of a release wherever it lies: a folder, an http(s) URL, S3 or the Hub.

A release (docs/release.md) is a tree of files under a root. :func:`open_release_source`
turns a root written as a local path, ``http(s)://host/base``, ``s3://bucket/prefix`` or
``hf://datasets/ORG/NAME[@REVISION]/path`` into a :class:`ReleaseSource`: one small interface
to read a whole file (streamed to disk, hashed on the way), a byte range of a file (one
Parquet row group) or a file's tail (its footer).

* http(s): httpx with timeouts; connection errors, timeouts, 429 and 5xx answers are retried
  with exponential backoff, the way ``pipeline.io.stac`` retries STAC requests.
* ``hf://``: the Hub's HTTPS ``resolve`` URL of the file, through the http transport, with
  ``HF_TOKEN`` as bearer token if set; ``HF_ENDPOINT`` replaces ``https://huggingface.co``
  (a mirror, or a local server in the tests).
* ``s3://``: obstore, configured from the standard AWS environment variables
  (``AWS_ACCESS_KEY_ID``, ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION``, ``AWS_ENDPOINT_URL`` for
  an S3-compatible server such as MinIO or moto; plain ``http://`` endpoints are allowed).
"""

from __future__ import annotations

import hashlib
import io
import os
import time
import urllib.parse
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

from pipeline.core.errors import EocapError
from pipeline.io.atomic import atomic_write
from pipeline.io.s3 import S3Settings

__all__ = [
    "HF_DEFAULT_ENDPOINT",
    "HttpSource",
    "LocalSource",
    "ReleaseSource",
    "RemoteError",
    "S3Source",
    "hf_resolve_url",
    "open_release_source",
]

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
CHUNK_BYTES = 1 << 20
"""Bytes per streamed chunk of a whole-file download."""


class RemoteError(EocapError):
    """A release file could not be read, or its bytes are not the ones its hash names."""


class ReleaseSource(ABC):
    """The files under one release root, read by relative path (``data/train-...parquet``).

    Attributes:
        location: The root as the user wrote it, for messages.
    """

    location: str

    @abstractmethod
    def _stream(self, path: str) -> Iterator[bytes]:
        """The whole file, in chunks."""

    @abstractmethod
    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from byte ``start``."""

    @abstractmethod
    def read_tail(self, path: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes of ``path`` (all of it if shorter) and the file's size."""

    def read(self, path: str) -> bytes:
        """The whole file ``path``."""
        return b"".join(self._stream(path))

    def download(
        self,
        path: str,
        target: Path,
        *,
        sha256: str | None = None,
        on_bytes: Callable[[int], None] | None = None,
    ) -> str:
        """Stream ``path`` to ``target`` atomically, hashing it on the way; return its sha256.

        Args:
            path: File under the root.
            target: Local file to write; replaced only once every byte arrived (and matched).
            sha256: Expected hash: a mismatch raises and leaves ``target`` as it was.
            on_bytes: Called with the size of each chunk as it arrives (progress).

        Raises:
            RemoteError: if the file cannot be read or its hash is not ``sha256``.
        """
        digest = hashlib.sha256()
        with atomic_write(target) as tmp, tmp.open("wb") as out:
            for chunk in self._stream(path):
                digest.update(chunk)
                out.write(chunk)
                if on_bytes is not None:
                    on_bytes(len(chunk))
            if sha256 is not None and digest.hexdigest() != sha256:
                raise RemoteError(
                    f"{self.location}/{path}: sha256 {digest.hexdigest()} differs from "
                    f"SHA256SUMS ({sha256}): the source file is damaged or changed; "
                    "tell its publisher, or pull from another copy"
                )
        return digest.hexdigest()

    def close(self) -> None:  # noqa: B027 - sources without connections have nothing to close
        """Release connections."""

    def __enter__(self) -> ReleaseSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class LocalSource(ReleaseSource):
    """A release in a local folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)

    def _file(self, path: str) -> Path:
        file = self.root / path
        if not file.is_file():
            raise RemoteError(f"{file}: no such file; is {self.root} a release folder?")
        return file

    def _stream(self, path: str) -> Iterator[bytes]:
        with self._file(path).open("rb") as f:
            while chunk := f.read(CHUNK_BYTES):
                yield chunk

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from byte ``start``."""
        with self._file(path).open("rb") as f:
            f.seek(start)
            return f.read(length)

    def read_tail(self, path: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes of ``path`` and the file's size."""
        file = self._file(path)
        size = file.stat().st_size
        return self.read_range(path, max(0, size - length), length), size


_RETRY_STATUS = frozenset({429, 500, 502, 503, 504})


class HttpSource(ReleaseSource):
    """A release under an http(s) base URL, read with Range requests.

    Args:
        base_url: The release root (``https://host/releases/v1``).
        headers: Sent with every request (``Authorization`` for the Hub).
        timeout_s: Connect and read timeout of each request.
        max_retries: Retries of a request after a connection error, timeout, 429 or 5xx.
        backoff_s: First retry delay; doubled for each further retry.
    """

    def __init__(
        self,
        base_url: str,
        *,
        headers: dict[str, str] | None = None,
        timeout_s: float = 30.0,
        max_retries: int = 4,
        backoff_s: float = 0.5,
        location: str | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/") + "/"
        self.location = location or base_url.rstrip("/")
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        # The Hub answers resolve URLs with a redirect to its CDN.
        self.client = httpx.Client(headers=headers or {}, timeout=timeout_s, follow_redirects=True)

    def url(self, path: str) -> str:
        """The URL of ``path`` under the base URL."""
        return self.base_url + urllib.parse.quote(path)

    def _attempts(self) -> Iterator[int]:
        """Attempt numbers; sleeps before each retry."""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
            yield attempt

    def _check(self, response: httpx.Response, path: str, attempt: int) -> bool:
        """Whether ``response`` is usable; False to retry it; raises when it is final."""
        if response.status_code in _RETRY_STATUS and attempt < self.max_retries:
            return False
        if response.status_code == 404:
            raise RemoteError(
                f"{self.url(path)}: not found (404); is {self.location} a release root?"
            )
        if response.status_code >= 400:
            raise RemoteError(
                f"{self.url(path)}: HTTP {response.status_code}; check the URL and credentials"
            )
        return True

    def _get(self, path: str, headers: dict[str, str]) -> httpx.Response:
        for attempt in self._attempts():
            try:
                response = self.client.get(self.url(path), headers=headers)
            except httpx.TransportError as exc:
                if attempt == self.max_retries:
                    raise RemoteError(
                        f"{self.url(path)}: {type(exc).__name__} after {attempt + 1} tries "
                        f"({exc}); check the network and rerun (a pull resumes)"
                    ) from exc
                continue
            if self._check(response, path, attempt):
                return response
        raise AssertionError("unreachable: the last attempt returns or raises")

    def _stream(self, path: str) -> Iterator[bytes]:
        for attempt in self._attempts():
            sent = 0
            try:
                with self.client.stream("GET", self.url(path)) as response:
                    if not self._check(response, path, attempt):
                        continue
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        sent += len(chunk)
                        yield chunk
                    return
            except httpx.TransportError as exc:
                # A retry after bytes went out would repeat them: only a clean start retries.
                if sent or attempt == self.max_retries:
                    raise RemoteError(
                        f"{self.url(path)}: {type(exc).__name__} after {sent} bytes "
                        f"({exc}); check the network and rerun (a pull resumes)"
                    ) from exc

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from byte ``start``: one Range request."""
        response = self._get(path, {"Range": f"bytes={start}-{start + length - 1}"})
        if response.status_code == 206:
            body = response.content
        else:  # a server that ignores Range sends the whole file
            body = response.content[start : start + length]
        if len(body) != length:
            raise RemoteError(
                f"{self.url(path)}: asked for {length} bytes at {start}, got {len(body)}; "
                "the file is shorter than the release index says"
            )
        return body

    def read_tail(self, path: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes of ``path`` (a suffix Range request) and the file's size."""
        response = self._get(path, {"Range": f"bytes=-{length}"})
        if response.status_code != 206:
            return response.content[-length:], len(response.content)
        total = response.headers.get("content-range", "").rpartition("/")[2]
        if not total.isdigit():
            raise RemoteError(
                f"{self.url(path)}: a range answer without the file size "
                f"(Content-Range {response.headers.get('content-range')!r})"
            )
        return response.content, int(total)

    def close(self) -> None:
        """Close the connection pool."""
        self.client.close()


class S3Source(ReleaseSource):
    """A release under ``s3://bucket/prefix``, read with obstore.

    Credentials, region and endpoint come from the standard AWS environment variables
    (obstore reads them); an ``http://`` ``AWS_ENDPOINT_URL`` (a local S3-compatible server)
    is allowed.
    """

    def __init__(self, url: str, *, env: dict[str, str] | None = None) -> None:
        parsed = urllib.parse.urlparse(url)
        self.location = url.rstrip("/")
        settings = S3Settings.from_env(env)
        self.store = settings.obstore(parsed.netloc, parsed.path.strip("/") or None)

    def _fail(self, path: str, exc: Exception) -> RemoteError:
        return RemoteError(
            f"{self.location}/{path}: {type(exc).__name__}: {str(exc).splitlines()[0]}; "
            "check the path and the AWS_* credentials and endpoint"
        )

    def _stream(self, path: str) -> Iterator[bytes]:
        import obstore

        try:
            result = obstore.get(self.store, path)
            for chunk in result.stream(min_chunk_size=CHUNK_BYTES):
                yield bytes(chunk)
        except (OSError, ValueError, RuntimeError) as exc:  # obstore's errors subclass these
            raise self._fail(path, exc) from exc

    def read_range(self, path: str, start: int, length: int) -> bytes:
        """``length`` bytes of ``path`` from byte ``start``: one ranged GET."""
        import obstore

        try:
            return bytes(obstore.get_range(self.store, path, start=start, length=length))
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._fail(path, exc) from exc

    def read_tail(self, path: str, length: int) -> tuple[bytes, int]:
        """The last ``length`` bytes of ``path`` (a suffix GET) and the object's size."""
        import obstore

        try:
            result = obstore.get(self.store, path, options={"range": {"suffix": length}})
            return bytes(result.bytes()), int(result.meta["size"])
        except (OSError, ValueError, RuntimeError) as exc:
            raise self._fail(path, exc) from exc


def hf_resolve_url(url: str, *, endpoint: str | None = None) -> str:
    """The HTTPS base URL of ``hf://datasets/ORG/NAME[@REVISION][/path]``.

    ``endpoint`` (default: ``HF_ENDPOINT``, else ``https://huggingface.co``) is the Hub's host.
    """
    rest = url.removeprefix("hf://")
    parts = rest.split("/")
    if len(parts) < 3 or parts[0] != "datasets" or not parts[1] or not parts[2]:
        raise RemoteError(
            f"{url}: not a Hub dataset URL; write hf://datasets/ORG/NAME[@REVISION][/PATH]"
        )
    name, _, revision = parts[2].partition("@")
    rest_at = 3
    if revision == "refs" and len(parts) >= 5:  # refs/pr/N, refs/convert/parquet: 3 segments
        revision = "/".join(["refs", parts[3], parts[4]])
        rest_at = 5
    host = (endpoint or os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")
    # A revision such as refs/pr/1 is one path segment of the resolve URL.
    rev = urllib.parse.quote(revision or "main", safe="")
    sub = "/".join(p for p in parts[rest_at:] if p)
    return f"{host}/datasets/{parts[1]}/{name}/resolve/{rev}/{sub}".rstrip("/")


def open_release_source(root: str | Path) -> ReleaseSource:
    """The release under ``root``: a folder, an http(s) URL, ``s3://`` or ``hf://datasets/``."""
    text = str(root)
    scheme = text.split("://", 1)[0].lower() if "://" in text else ""
    if scheme in ("http", "https"):
        return HttpSource(text)
    if scheme == "hf":
        token = os.environ.get("HF_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else None
        return HttpSource(hf_resolve_url(text), headers=headers, location=text.rstrip("/"))
    if scheme == "s3":
        return S3Source(text)
    if scheme in ("", "file"):
        folder = Path(text.removeprefix("file://"))
        if not folder.is_dir():
            raise RemoteError(f"{folder}: no such folder; give a release folder or URL")
        return LocalSource(folder)
    raise RemoteError(f"{text}: unknown scheme {scheme!r}; use a path, http(s)://, s3:// or hf://")


def upload_tree(local: Path, url: str, *, env: dict[str, str] | None = None) -> list[str]:
    """Copy every file below ``local`` to ``s3://bucket/prefix``, keeping relative paths.

    Hidden files (a pull's ``.pull/`` state) stay behind. ``SHA256SUMS`` goes last, so a
    reader never finds a checksum list naming files that are not there yet.

    Returns:
        The relative paths uploaded, in upload order.

    Raises:
        RemoteError: if ``url`` is not ``s3://`` or an upload fails.
    """
    import obstore

    parsed = urllib.parse.urlparse(url)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise RemoteError(f"{url}: uploads go to s3://bucket/prefix; write a local folder instead")
    store = S3Settings.from_env(env).obstore(parsed.netloc, parsed.path.strip("/") or None)
    names = sorted(
        p.relative_to(local).as_posix()
        for p in local.rglob("*")
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(local).parts)
    )
    names.sort(key=lambda n: n == "SHA256SUMS")
    for name in names:
        try:
            obstore.put(store, name, (local / name).read_bytes())
        except (OSError, ValueError, RuntimeError) as exc:  # obstore's errors subclass these
            raise RemoteError(f"{url}/{name}: upload failed: {exc}; check the bucket") from exc
    return names


def is_remote(location: str | Path) -> bool:
    """Whether ``location`` is a URL that :func:`open_release_source` reads remotely."""
    schemes = ("http", "https", "s3", "hf")
    return isinstance(location, str) and location.split("://", 1)[0] in schemes


class RangeReader(io.RawIOBase, ABC):
    """A read-only, seekable file of known size whose bytes come from :meth:`_read_at`.

    pyarrow reads a Parquet file through it by seeking to what it needs (the footer, then the
    row groups and columns asked for), so the subclass decides where those bytes come from.
    """

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size
        self.position = 0

    @abstractmethod
    def _read_at(self, start: int, length: int) -> bytes:
        """``length`` bytes from ``start`` (never past the end)."""

    def readable(self) -> bool:
        """Always: the file is for reading."""
        return True

    def seekable(self) -> bool:
        """Always: readers seek to the parts they need."""
        return True

    def tell(self) -> int:
        """The current position."""
        return self.position

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        """Move to ``offset`` from the start, the current position or the end."""
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self.position, io.SEEK_END: self.size}[whence]
        self.position = max(0, base + offset)
        return self.position

    def readinto(self, buffer: Any) -> int:
        """Fill ``buffer`` from the current position; 0 at the end."""
        length = min(len(buffer), self.size - self.position)
        if length <= 0:
            return 0
        data = self._read_at(self.position, length)
        buffer[: len(data)] = data
        self.position += len(data)
        return len(data)


class RemoteFile(RangeReader):
    """One remote file as a seekable, read-only file object: each read is one range request.

    For readers that seek to what they need (pyarrow reading a Parquet footer, then only the
    row groups and columns asked for), so a sample costs its own bytes, not the file's.
    """

    def __init__(self, url: str) -> None:
        root, _, self.name = url.rstrip("/").rpartition("/")
        self.source = open_release_source(root)
        super().__init__(self.source.read_tail(self.name, 1)[1])
        self.requests = 0

    def _read_at(self, start: int, length: int) -> bytes:
        self.requests += 1
        return self.source.read_range(self.name, start, length)

    def close(self) -> None:
        self.source.close()
        super().close()
