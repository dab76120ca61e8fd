"""The generated tables of the dataset docs: ``python -m pipeline.dataset.docs --write-docs MD``.

docs/dataset-schema.md shows the column table (:mod:`pipeline.dataset.columns`), docs/release.md
the sample index (:data:`pipeline.dataset.release.INDEX_FIELDS`); tests fail when a document
differs from what this writes.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from pipeline.dataset.columns import markdown_tables, render_docs
from pipeline.dataset.release import index_markdown_table

__all__ = ["DOCS_COMMAND", "doc_tables", "main"]

DOCS_COMMAND = (
    "python -m pipeline.dataset.docs --write-docs docs/dataset-schema.md "
    "--write-docs docs/release.md"
)
"""Regenerates the generated tables of the schema and release documents."""


def doc_tables(doc: Path) -> dict[str, str]:
    """The generated tables of a document, by marker name: the release doc's or the schema doc's."""
    if doc.name == "release.md":
        return {"index": index_markdown_table()}
    return markdown_tables()


def main(argv: Sequence[str] | None = None) -> int:
    """Print the schema doc's tables, or write each document's tables into it."""
    parser = argparse.ArgumentParser(prog="python -m pipeline.dataset.docs")
    parser.add_argument(
        "--write-docs", type=Path, action="append", metavar="MD", help="update MD in place"
    )
    args = parser.parse_args(argv)
    if not args.write_docs:
        sys.stdout.write("\n\n".join(markdown_tables().values()) + "\n")
        return 0
    for path in args.write_docs:
        path.write_text(render_docs(path.read_text(), doc_tables(path)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
