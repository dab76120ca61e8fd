"""Bottom layer above ``geo``: errors, configuration and its hash, the plain data types shared.

The types (:mod:`pipeline.core.types`) live here so that captioners, checks and the dataset
contract use them without importing rasterio or DuckDB.
"""
