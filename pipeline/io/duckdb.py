"""DuckDB connections whose extensions load from installed wheels, never from the internet."""

from __future__ import annotations

from pathlib import Path

import duckdb

from pipeline.io.s3 import S3Settings


def _extension_path(name: str) -> str:
    module = __import__(f"duckdb_extension_{name}")
    path = Path(str(module.__file__)).parent / "extensions" / f"v{duckdb.__version__}"
    return str(path / f"{name}.duckdb_extension")


def connect_duckdb(
    *, httpfs: bool = False, s3: S3Settings | None = None
) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the spatial extension loaded from its pip wheel (no download).

    Args:
        httpfs: Also load httpfs (from ``duckdb-extension-httpfs``) to read ``s3://`` and
            ``http(s)://``, with S3 secrets from ``s3``.
        s3: Where ``s3://`` is read from; default: :meth:`S3Settings.from_env`.
    """
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    con.execute(f"LOAD '{_extension_path('spatial')}'")
    if httpfs:
        con.execute(f"LOAD '{_extension_path('httpfs')}'")
        for statement in (s3 or S3Settings.from_env()).duckdb_secrets():
            con.execute(statement)
    return con
