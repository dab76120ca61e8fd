"""Transport to the outside world: STAC API, COGs over HTTP, DuckDB, Overture releases, serving.

Nothing here decides what a sample is; stages call these to reach data.
"""
