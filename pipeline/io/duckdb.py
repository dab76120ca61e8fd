"""DuckDB connections whose extensions load from installed wheels, never from the internet."""

from __future__ import annotations

from pathlib import Path

import duckdb


def _extension_path(name: str) -> str:
    module = __import__(f"duckdb_extension_{name}")
    path = Path(str(module.__file__)).parent / "extensions" / f"v{duckdb.__version__}"
    return str(path / f"{name}.duckdb_extension")


def connect_duckdb(*, httpfs: bool = False) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the spatial extension loaded from its pip wheel (no download).

    Args:
        httpfs: Also load httpfs (from ``duckdb-extension-httpfs``) to read ``s3://``.
    """
    con = duckdb.connect(
        config={"autoinstall_known_extensions": "false", "autoload_known_extensions": "false"}
    )
    con.execute(f"LOAD '{_extension_path('spatial')}'")
    if httpfs:
        con.execute(f"LOAD '{_extension_path('httpfs')}'")
        con.execute("SET s3_region = 'us-west-2'")
    return con
