"""Sentinel-1 backscatter facts: polarisations and the linear-to-dB conversion.

Backscatter is resampled in linear power and only then put in decibels: the mean of dB values
is the log of a geometric mean, biased low against the physical (linear) mean.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "POLARISATIONS",
    "SENTINEL_1_DUAL_POL",
    "Polarisation",
    "SarValues",
    "power_db",
]

Polarisation = Literal["VV", "VH", "HH", "HV"]
"""Transmit and receive polarisation of one Sentinel-1 channel (SAR extension spelling)."""
POLARISATIONS: tuple[Polarisation, ...] = ("VV", "VH", "HH", "HV")
SENTINEL_1_DUAL_POL: tuple[Polarisation, ...] = ("VV", "VH")
"""Sentinel-1's usual acquisition over land (IW mode, VV+VH): the default SAR channels."""

SarValues = Literal["power", "amplitude"]
"""What a catalog's pixels are: linear power (gamma0/sigma0 RTC) or amplitude (GRD DN)."""

Float32Array = npt.NDArray[np.float32]


def power_db(
    values: npt.NDArray[np.floating], *, nodata: float | None = None, kind: SarValues = "power"
) -> Float32Array:
    """Backscatter in dB, ``10 * log10(power)``; NaN where there is no valid power.

    Args:
        values: Linear power, or amplitude when ``kind`` is ``amplitude`` (squared first).
        nodata: The source's nodata value, compared before any conversion.
        kind: What ``values`` are.

    Returns:
        float32 dB, NaN where ``values`` is nodata, not finite, or not positive (no log).
    """
    linear = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(linear) & (linear > 0)
    if nodata is not None:
        valid &= linear != nodata
    power = linear * linear if kind == "amplitude" else linear
    out = np.full(linear.shape, np.nan, dtype=np.float32)
    out[valid] = (10.0 * np.log10(power[valid])).astype(np.float32)
    return out
