"""The one-moment rule score (Python scalars) has the bits of the array version for every kind of rule."""

from __future__ import annotations

import numpy as np

from leadscore.features.plan import Plan, rule_score_one, rule_scores


def test_scalar_rule_score_equals_the_array_version_bit_for_bit() -> None:
    rules = ((("seniority", frozenset({"vp", "c_level"}), -np.inf, np.inf, 15.0)),
             ("employees", None, 50.0, 500.0, 7.3),  # a range, NaN in none
             ("employees", frozenset({"100", "2.5"}), -np.inf, np.inf, -3.1),  # numbers as strings ("{:g}")
             ("seniority", frozenset({"director"}), -np.inf, np.inf, 0.1))
    p = Plan(schema=[], sources=[], categories={}, rule_row=-1, rules=rules)
    rng = np.random.default_rng(0)
    titles = ["vp", "c_level", "director", "staff", float("nan")]
    numbers = [float("nan"), 100.0, 2.5, 50.0, 500.0, 49.999, 1e6, -0.0]
    for _ in range(300):
        row = {"seniority": titles[rng.integers(len(titles))], "employees": numbers[rng.integers(len(numbers))]}
        act = float(rng.choice([0.0, -0.0, 12.7, 1e-17, 333.3]))

        def column(name: str, row: dict[str, object] = row) -> np.ndarray:
            v = row[name]
            return np.array([v], dtype=np.float64) if isinstance(v, float) else np.array([v], dtype=object)

        want = rule_scores(p, np.array([act]), column)[0]
        got = rule_score_one(p, act, row.__getitem__)
        assert np.array([got]).tobytes() == np.array([want]).tobytes(), (row, act, got, want)
