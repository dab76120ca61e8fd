"""Where and since when Sentinel-2 images the Earth: what a run can hope to find scenes for."""

from __future__ import annotations

import datetime as dt

__all__ = ["FIRST_ACQUISITION_DAY", "LAT_MAX", "LAT_MIN"]

# ESA, "Sentinel-2 observation scenario"
# (https://sentinel.esa.int/web/sentinel/missions/sentinel-2/observation-scenario): the mission
# "systematically acquires data over land and coastal areas in a band of latitude extending from
# 56° South (Isla Hornos, Cape Horn, South America) to 82.8° North (above Greenland)". Older
# ESA pages and the Mission Requirements Document say 84° North; the swath ends at 82.8°
# (measured independently at 82.81°), so 82.8 is the limit scenes exist up to. Further south,
# Antarctica is imaged only on request, not systematically.
LAT_MIN = -56.0
"""Southernmost latitude of Sentinel-2's systematic acquisitions (degrees)."""
LAT_MAX = 82.8
"""Northernmost latitude of Sentinel-2's systematic acquisitions (degrees)."""

# ESA: Sentinel-2A was launched on 23 June 2015 at 01:52 GMT, on a Vega from Kourou; no
# Sentinel-2 scene is older.
FIRST_ACQUISITION_DAY = dt.date(2015, 6, 23)
"""No Sentinel-2 scene was acquired before this day (UTC): Sentinel-2A's launch."""
