"""Sentinel-1 facts: polarisations, the linear-to-dB conversion, stored coherence.

Backscatter is resampled in linear power and only then put in decibels: the mean of dB values
is the log of a geometric mean, biased low against the physical (linear) mean. Interferometric
coherence (0..1) is stored in hundredths, like backscatter in hundredths of a dB.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

__all__ = [
    "CENTI_DB_NODATA",
    "CENTI_DB_PER_DB",
    "COHERENCE_CHANNELS",
    "COHERENCE_NODATA",
    "COHERENCE_PER_UNIT",
    "POLARISATIONS",
    "SENTINEL_1_DUAL_POL",
    "Polarisation",
    "SarValues",
    "centi_coherence",
    "centi_db",
    "coherence_from_centi",
    "db_from_centi",
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

CENTI_DB_NODATA = -32768
"""Stored backscatter value of a pixel without data (int16's minimum; NaN in dB)."""
CENTI_DB_PER_DB = 100
"""Stored backscatter is hundredths of a dB: ``stored = round(CENTI_DB_PER_DB * dB)``."""
_CENTI_DB_RANGE = (CENTI_DB_NODATA + 1, 32767)  # -327.67 .. 327.67 dB: far beyond any echo

COHERENCE_CHANNELS = ("COH",)
"""The channel of the stored coherence cube: one repeat-pass coherence magnitude per sample."""
COHERENCE_NODATA = 255
"""Stored coherence of a pixel without data (NaN as a fraction); valid values are 0..100."""
COHERENCE_PER_UNIT = 100
"""Stored coherence is hundredths: ``stored = round(COHERENCE_PER_UNIT * coherence)``."""


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


def _fixed_point(
    values: npt.NDArray[np.floating], per_unit: int, nodata: int, low: int, high: int, dtype: Any
) -> npt.NDArray[Any]:
    """``round(per_unit * values)`` clipped to ``low..high`` in ``dtype``; NaN -> ``nodata``."""
    floats = np.asarray(values, dtype=np.float64)
    valid = np.isfinite(floats)
    out = np.full(floats.shape, nodata, dtype=dtype)
    out[valid] = np.clip(np.rint(per_unit * floats[valid]), low, high)
    return out


def _from_fixed_point(stored: npt.NDArray[np.integer], per_unit: int, nodata: int) -> Float32Array:
    """The float32 values of :func:`_fixed_point`'s integers, NaN for ``nodata``."""
    values = np.asarray(stored)
    out = values.astype(np.float32) / np.float32(per_unit)
    out[values == nodata] = np.nan
    return out


def centi_db(db: npt.NDArray[np.floating]) -> npt.NDArray[np.int16]:
    """Backscatter in dB as stored: int16 hundredths of a dB, :data:`CENTI_DB_NODATA` for NaN.

    ``round(100 * dB)``, clipped to int16 (never onto the nodata value). 0.01 dB is far below
    speckle, and int16 is half the bytes of float32.
    """
    return _fixed_point(db, CENTI_DB_PER_DB, CENTI_DB_NODATA, *_CENTI_DB_RANGE, np.int16)


def db_from_centi(stored: npt.NDArray[np.integer]) -> Float32Array:
    """Stored hundredths of a dB (:func:`centi_db`) back to float32 dB, NaN for nodata."""
    return _from_fixed_point(stored, CENTI_DB_PER_DB, CENTI_DB_NODATA)


def centi_coherence(coherence: npt.NDArray[np.floating]) -> npt.NDArray[np.uint8]:
    """Coherence (0..1) as stored: uint8 hundredths, :data:`COHERENCE_NODATA` for NaN.

    ``round(100 * coherence)`` clipped to 0..100: 0.01 is below the estimator's own spread
    (a few hundredths at the usual tens of looks), and one byte per pixel.
    """
    return _fixed_point(
        coherence, COHERENCE_PER_UNIT, COHERENCE_NODATA, 0, COHERENCE_PER_UNIT, np.uint8
    )


def coherence_from_centi(stored: npt.NDArray[np.integer]) -> Float32Array:
    """Stored hundredths (:func:`centi_coherence`) back to float32 coherence, NaN for nodata."""
    return _from_fixed_point(stored, COHERENCE_PER_UNIT, COHERENCE_NODATA)
