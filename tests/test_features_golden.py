"""The default configuration's feature values are pinned: a registry refactor must not move a single bit.

``tests/data/features_golden.json`` holds a digest per column of (a) the training dataset built from
a generated CRM and (b) the features at arbitrary instants of that CRM, computed by the feature code
*before* the registry rewrite. A family switched off by default adds no column, so the shipped
default's values and schema hash stay exactly what trained models were fed. Regenerate only for an
intended change of meaning (and bump ``FEATURE_CODE_VERSION``) or of rounding alone:
``python -m tests.test_features_golden > tests/data/features_golden.json``. The one rounding change
so far (issue 12): the decayed sums (``decay_*`` and the rule's points, hence ``rule_score``) became
running products of per-activity factors, within 1e-12 relative of the direct sum
(``test_features_kernel.test_decayed_sums_equal_the_direct_formula``). No version bump for that: no
value means anything else, and a model trained before sees the same numbers to 13 digits.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from leadscore.config import Settings

GOLDEN = Path(__file__).parent / "data" / "features_golden.json"
CRM = {"n_leads": 1500, "months": 8, "seed": 11}  # shared with test_features_parity (generated once)


def _digest(values: pd.Series) -> str:
    if values.dtype == np.float64:
        blob = np.ascontiguousarray(values.to_numpy()).tobytes()
    elif str(values.dtype).startswith("datetime64"):
        blob = values.astype("int64").to_numpy().tobytes()
    else:
        blob = "\x1f".join("\x00" if not isinstance(v, str) else v for v in values.astype(object)).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def digests(settings: Settings) -> dict[str, object]:
    from leadscore.features import compute
    from leadscore.features.build import build_dataset
    from leadscore.features.schema import schema_hash
    from leadscore.features.testing import generated_history

    history = generated_history(settings, **CRM)
    dataset, _ = build_dataset(history, settings)
    rng = np.random.default_rng(2)
    leads = history.leads["lead_id"].to_numpy(dtype=object)
    start = history.leads["created_at"].min()
    span = (history.cutoff - start).total_seconds()
    moments = pd.DataFrame({"lead_id": leads[rng.integers(0, len(leads), 400)],
                            "as_of": start + pd.to_timedelta(rng.uniform(0, span, 400), unit="s")})
    moments["as_of"] = moments["as_of"].astype("datetime64[us, UTC]")
    arbitrary = compute(history, moments, settings)
    return {
        "schema_hash": schema_hash(settings),
        "rows": [len(dataset), len(arbitrary)],
        "dataset": {c: _digest(dataset[c]) for c in dataset.columns},
        "arbitrary": {c: _digest(arbitrary[c]) for c in arbitrary.columns},
    }


def test_default_features_are_bit_identical_to_the_pinned_ones(settings: Settings) -> None:
    expected = json.loads(GOLDEN.read_text())
    got = digests(settings)
    assert got["schema_hash"] == expected["schema_hash"]
    assert got["rows"] == expected["rows"]
    for part in ("dataset", "arbitrary"):
        assert list(got[part]) == list(expected[part]), part  # type: ignore[call-overload]
        changed = [c for c in expected[part] if got[part][c] != expected[part][c]]  # type: ignore[index]
        assert not changed, (part, changed)


if __name__ == "__main__":
    from leadscore.config import load_settings

    print(json.dumps(digests(load_settings(Path(__file__).resolve().parent.parent / "configs")), indent=1))
