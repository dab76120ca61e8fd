from __future__ import annotations

import numpy as np

from pipeline.geo.sar import power_db


def test_power_db_is_ten_log10_of_linear_power():
    power = np.array([1.0, 0.1, 0.001, 2.0, 100.0])
    np.testing.assert_allclose(power_db(power), [0.0, -10.0, -30.0, 3.0103, 20.0], atol=1e-4)


def test_amplitude_is_squared_before_db():
    amplitude = np.array([1.0, 10.0, 0.1], dtype=np.float32)
    np.testing.assert_allclose(power_db(amplitude, kind="amplitude"), [0.0, 20.0, -20.0], atol=1e-4)


def test_nodata_nonpositive_and_nonfinite_are_nan():
    values = np.array([-32768.0, 0.0, -0.5, np.nan, np.inf, 0.5], dtype=np.float32)
    db = power_db(values, nodata=-32768.0)
    assert db.dtype == np.float32
    assert np.isnan(db[:5]).all()
    assert abs(db[5] - (-3.0103)) < 1e-4


def test_a_positive_nodata_value_is_masked_before_conversion():
    db = power_db(np.array([7.0, 8.0]), nodata=7.0)
    assert np.isnan(db[0]) and abs(db[1] - 9.0309) < 1e-4
