"""A calibrator interpolates a long array in sorted order: the same bits as ``np.interp`` in any order."""

from __future__ import annotations

import numpy as np

from leadscore.training.calibration import Calibrator, fit_isotonic, fit_sigmoid


def _same(got: np.ndarray, want: np.ndarray) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype
    np.testing.assert_array_equal(got.view(np.int64), want.view(np.int64))


def test_a_calibrator_on_a_long_array_is_np_interp_to_the_bit() -> None:
    """Fitted tables (sigmoid, isotonic with repeated knots), values on the knots, between them, outside,
    NaN and infinite, long arrays and short ones; and a hand-made table whose knots are not sorted (numpy's
    order of evaluation kept)."""
    rng = np.random.default_rng(3)
    p = rng.random(4000)
    y = (rng.random(4000) < p).astype(float)
    tables = [fit_sigmoid(p, y), fit_isotonic(np.round(p, 2), y),
              Calibrator("isotonic", np.array([0.0, 0.2, 0.2, 0.5, 0.5, 1.0]), np.array([0.0, 0.1, 0.3, 0.3, 0.6, 1.0])),
              Calibrator("isotonic", np.array([0.0, 0.6, 0.3, 1.0]), np.array([0.0, 0.2, 0.5, 1.0]))]
    for cal in tables:
        values = np.concatenate([p, cal.x, (cal.x[:-1] + cal.x[1:]) / 2, [-1.0, 2.0, np.nan, -np.inf, np.inf, -0.0]])
        rng.shuffle(values)
        for q in (values, values[:10], values[::3]):
            _same(cal(q), np.interp(q, cal.x, cal.y))
        assert float(cal(float(p[0]))) == float(np.interp(float(p[0]), cal.x, cal.y))
    assert not tables[-1]._sorted and tables[0]._sorted
