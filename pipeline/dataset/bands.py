"""The bands a dataset holds, for the readers of the dataset contract (the trainer, notebooks).

The Sentinel-2 band table is defined once, in :mod:`pipeline.geo.bands`; consumers that may
import only the dataset contract get it from here.
"""

from __future__ import annotations

from pipeline.geo.bands import BAND_PRESETS, L2A_BANDS, Band, band_by_name, resolve_band_names

__all__ = ["BAND_PRESETS", "L2A_BANDS", "Band", "band_by_name", "resolve_band_names"]
