"""The shared training procedure: row roles are kept apart, and only the calibration rows calibrate.

Every row carries its own position as a feature (``rid``), so whatever reaches LightGBM, the search or
the calibrator can be traced back to the rows it came from.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from leadscore.config import Settings
from leadscore.training import fit as fit_module
from leadscore.training.fit import RowSets, fit_target

SCHEMA = [{"name": "rid", "dtype": "float64", "group": "fit", "description": "", "template": ""},
          {"name": "visits", "dtype": "float64", "group": "interest", "description": "", "template": ""},
          {"name": "source", "dtype": "str", "group": "fit", "description": "", "template": ""}]


def _data(n: int = 2400, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    visits = rng.poisson(3, n).astype(np.float64)
    source = rng.choice(["ads", "referral", "organic"], n, p=[0.5, 0.2, 0.3])
    y = (rng.random(n) < 1 / (1 + np.exp(-(-3.0 + 0.8 * visits + 2.0 * (source == "referral"))))).astype(float)
    frame = pd.DataFrame({"rid": np.arange(n, dtype=np.float64), "visits": visits,
                          "source": pd.Series(source, dtype="str")})
    return frame, y


def _roles(n: int, seed: int = 1) -> RowSets:
    perm = np.random.default_rng(seed).permutation(n)
    fit, stop, cal, test = np.split(perm, [n // 2, n // 2 + n // 5, n // 2 + 2 * n // 5])
    return RowSets(fit=fit, early_stop=stop, calibration=cal, test=test, tune=np.sort(fit)[::2])


def _ids(X: Any) -> set[int]:
    return {int(v) for v in np.asarray(X)[:, 0]}


@pytest.mark.parametrize("bag_folds", [1, 3])
def test_calibrator_sees_only_calibration_rows(settings: Settings, monkeypatch: pytest.MonkeyPatch,
                                               bag_folds: int) -> None:
    frame, y = _data()
    roles = _roles(len(y))
    seen: dict[str, list[Any]] = {"boost": [], "tune": [], "raw": [], "calibrator": []}
    real_fit, real_tune = fit_module.fit_lightgbm, fit_module.tune_lightgbm
    real_raw, real_cal = fit_module._mean_raw, fit_module.fit_calibrator

    def fit_lightgbm(train_set: Any, valid_set: Any, *args: Any, **kw: Any) -> Any:
        seen["boost"].append((_ids(train_set.data), _ids(valid_set.data)))
        return real_fit(train_set, valid_set, *args, **kw)

    def tune_lightgbm(X_train: Any, y_train: Any, X_val: Any, *args: Any, **kw: Any) -> Any:
        seen["tune"].append((_ids(X_train), _ids(X_val)))
        return real_tune(X_train, y_train, X_val, *args, **kw)

    def mean_raw(boosters: Any, X: Any) -> Any:
        out = real_raw(boosters, X)
        seen["raw"].append((_ids(X), out))
        return out

    def fit_calibrator(p: Any, y_cal: Any, *args: Any, **kw: Any) -> Any:
        seen["calibrator"].append((np.asarray(p), np.asarray(y_cal)))
        return real_cal(p, y_cal, *args, **kw)

    for name, fn in (("fit_lightgbm", fit_lightgbm), ("tune_lightgbm", tune_lightgbm), ("_mean_raw", mean_raw),
                     ("fit_calibrator", fit_calibrator)):
        monkeypatch.setattr(fit_module, name, fn)
    result = fit_target(frame, y, roles, SCHEMA, settings.training, trials=2, bag_folds=bag_folds)

    fit, stop, cal = set(roles.fit.tolist()), set(roles.early_stop.tolist()), set(roles.calibration.tolist())
    test = set(roles.test.tolist())  # type: ignore[union-attr]
    # the search boosts on the tune sample and is scored on the early-stopping rows
    assert seen["tune"] == [(set(roles.tune.tolist()), stop)]  # type: ignore[union-attr]
    # the final booster(s): single = fit / early_stop; bagged = folds over fit + early_stop
    assert len(seen["boost"]) == bag_folds == len(result.boosters) == len(result.rounds)
    for own, held in seen["boost"]:
        assert not (own | held) & (cal | test)
        assert (own, held) == (fit, stop) if bag_folds == 1 else (own | held == fit | stop and not own & held)
    # exactly one calibrator fit, on the raw scores of exactly the calibration rows, with their labels
    (p, y_cal), = seen["calibrator"]
    (cal_ids, cal_raw), = [(ids, out) for ids, out in seen["raw"] if ids & cal]
    assert cal_ids == cal and np.array_equal(p, cal_raw)
    assert np.array_equal(y_cal, y[roles.calibration])
    assert result.rows.calibration is roles.calibration and result.calibrator.method in ("sigmoid", "isotonic")
    scores = result.scores("test")
    assert scores.shape == (len(test),) and ((scores > 0) & (scores < 1)).all()


def test_final_fit_uses_the_reduced_learning_rate(settings: Settings) -> None:
    frame, y = _data(1500)
    result = fit_target(frame, y, _roles(len(y)), SCHEMA, settings.training, trials=1)
    factor = settings.training.lightgbm.final_learning_rate_factor
    assert result.params["learning_rate"] == pytest.approx(result.tune.params["learning_rate"] * factor)
    assert result.model_string().startswith("tree") and result.importance.index.tolist() == ["rid", "visits", "source"]
    summary = result.summary()
    assert summary["rows"] == {"fit": 750, "early_stop": 300, "calibration": 300, "test": 150}
    assert summary["bag_folds"] == 1 and summary["calibration"] == result.calibrator.method


def test_row_roles_must_not_overlap() -> None:
    a, b = np.arange(0, 10), np.arange(10, 20)
    with pytest.raises(ValueError, match="both 'fit' and 'calibration'"):
        RowSets(fit=a, early_stop=b, calibration=np.array([3, 25]))
    with pytest.raises(ValueError, match="both 'early_stop' and 'test'"):
        RowSets(fit=a, early_stop=b, calibration=np.arange(20, 30), test=np.array([19]))
    with pytest.raises(ValueError, match="subset of the 'fit'"):
        RowSets(fit=a, early_stop=b, calibration=np.arange(20, 30), tune=np.array([1, 11]))
    with pytest.raises(ValueError, match="no rows for the 'calibration'"):
        RowSets(fit=a, early_stop=b, calibration=np.array([], dtype=int))
    with pytest.raises(ValueError, match="repeat"):
        RowSets(fit=np.array([1, 1]), early_stop=b, calibration=np.arange(20, 30))
