"""A real S3-compatible server on 127.0.0.1 for the ``s3://`` tests: moto's server mode.

`moto_server` runs as a child process (its own interpreter, like a MinIO would), so DuckDB's
httpfs, GDAL's /vsis3/ and boto3 talk to it over HTTP exactly as they talk to AWS. Code under test
finds it through the AWS SDKs' standard variables (:attr:`S3Server.env`), which the ``s3``
fixture in tests/conftest.py sets for one test.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import boto3
import httpx

from pipeline.demo.servers import HOST, free_port, stop_process

ACCESS_KEY_ID = "eocap-test-key"
SECRET_ACCESS_KEY = "eocap-test-secret"  # moto accepts any credentials
REGION = "us-east-1"


@dataclass
class S3Server:
    """A running moto S3 server.

    Attributes:
        endpoint_url: ``http://127.0.0.1:PORT``.
        process: The server process.
        log_path: Its stdout and stderr.
        env: What a client needs: ``AWS_ENDPOINT_URL``, ``AWS_ACCESS_KEY_ID``,
            ``AWS_SECRET_ACCESS_KEY``, ``AWS_REGION`` (dummy credentials; moto checks none).
    """

    endpoint_url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(init=False)

    def __post_init__(self) -> None:
        self.env = {
            "AWS_ENDPOINT_URL": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY_ID,
            "AWS_SECRET_ACCESS_KEY": SECRET_ACCESS_KEY,
            "AWS_REGION": REGION,
        }

    def client(self) -> Any:
        """A boto3 S3 client of this server (independent of the process environment)."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=ACCESS_KEY_ID,
            aws_secret_access_key=SECRET_ACCESS_KEY,
            region_name=REGION,
        )

    def create_bucket(self, bucket: str) -> str:
        """Create ``bucket`` (no error if it exists); return its ``s3://`` URL."""
        client = self.client()
        with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou):
            client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}"

    def upload_tree(self, local: Path, url: str) -> list[str]:
        """Copy every file under ``local`` to ``url`` (``s3://bucket/prefix``), keeping paths.

        The bucket is created if needed. Symlinks are followed.

        Returns:
            The ``s3://`` URLs written, sorted.
        """
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.create_bucket(bucket)
        client = self.client()
        written = []
        for path in sorted(p for p in local.rglob("*") if p.is_file()):
            key = "/".join(filter(None, [prefix.strip("/"), path.relative_to(local).as_posix()]))
            client.upload_file(str(path), bucket, key)
            written.append(f"s3://{bucket}/{key}")
        return written

    def list_urls(self, url: str) -> list[str]:
        """Every object under ``url`` (``s3://bucket/prefix``), as ``s3://`` URLs, sorted."""
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        paginator = self.client().get_paginator("list_objects_v2")
        pages = paginator.paginate(Bucket=bucket, Prefix=prefix)
        keys = (obj["Key"] for page in pages for obj in page.get("Contents", []))
        return sorted(f"s3://{bucket}/{key}" for key in keys)

    def stop(self) -> None:
        """Terminate the server and wait for it (kill after 5 s)."""
        stop_process(self.process)


def _spawn(port: int, log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "moto.server", "-H", HOST, "-p", str(port)],
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@contextlib.contextmanager
def serve_s3(log_dir: Path, *, timeout_s: float = 60.0) -> Iterator[S3Server]:
    """Run a moto S3 server on a free port of 127.0.0.1 until the block ends.

    Raises:
        RuntimeError: if the server exits or does not answer within ``timeout_s``.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / "moto.log"
    # moto cannot bind port 0 and report it: a port chosen here may be taken before the child
    # binds it, so a child that exits at once is started again on another port.
    for _attempt in range(3):
        port = free_port()
        server = S3Server(f"http://{HOST}:{port}", _spawn(port, log_path), log_path)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and server.process.poll() is None:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{server.endpoint_url}/moto-api/", timeout=2).status_code < 500:
                    try:
                        yield server
                    finally:
                        server.stop()
                    return
            time.sleep(0.1)
        server.stop()
        if time.monotonic() >= deadline:
            break
    raise RuntimeError(f"moto S3 server did not start: {log_path.read_text()[-2000:]}")
