"""Content breadth: how many different kinds of content the lead consumed in the last N days.

The generated CRM's and the importers' activities carry no content id (``properties`` holds the same
``{"asset": "whitepaper"}`` for every download, and the online event cache does not keep
``properties`` at all), so "distinct pieces" cannot be counted honestly; what is real is which
*content types* were consumed: a lead who downloaded a whitepaper *and* attended a webinar has
engaged with two kinds of content. Types and window are parameters::

    features:
      families:
        content_breadth: {enabled: true, window_days: 30, types: [content_download, webinar_attended]}

Off by default: switched on, it adds a column, which changes the schema hash, and every shipped
model (trained without it) would be refused by serving until retrained.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from numba import njit
from pydantic import BaseModel, ConfigDict, Field

from leadscore.errors import ConfigError
from leadscore.features.kernel import DAY_US
from leadscore.features.registry import Family
from leadscore.features.schema import FeatureSpec, feature

if TYPE_CHECKING:
    from leadscore.config import Settings


class ContentParams(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    window_days: int = Field(default=30, ge=1)
    types: list[str] = Field(default_factory=lambda: ["content_download", "webinar_attended"], min_length=1)


def _codes(settings: Settings, params: ContentParams) -> list[int]:
    names = settings.activity_names
    unknown = [t for t in params.types if t not in names]
    if unknown:
        raise ConfigError(f"features.families.content_breadth.types: {unknown} not in the activity catalogue")
    return [names.index(t) for t in params.types]


def _columns(settings: Settings, params: ContentParams) -> list[FeatureSpec]:
    _codes(settings, params)
    labels = " and ".join(settings.activity(t).label for t in params.types)
    w = params.window_days
    return [feature(f"content_kinds_{w}d", "float64", "interest",
                    f"Distinct content activity types ({', '.join(params.types)}) in the last {w} days.",
                    f"Engaged with {{value}} kind[|s] of content ({labels}) in the last {w} days",
                    concept="content", unit="count")]


def _params(settings: Settings, params: ContentParams) -> tuple[Any, ...]:
    is_content = np.zeros(len(settings.activities), dtype=np.bool_)
    is_content[_codes(settings, params)] = True
    return is_content, np.int64(params.window_days * DAY_US)


@njit(cache=True)
def kernel(row: np.ndarray, off: int, p: Any, x: Any, lead: int, t: int, lo: int, hi: int) -> None:
    is_content, win = p
    seen = np.zeros(is_content.shape[0], dtype=np.bool_)
    n = 0
    for j in range(hi - 1, lo - 1, -1):
        if t - x.act_t[j] >= win:
            break
        k = x.act_k[j]
        if is_content[k] and not seen[k]:
            seen[k] = True
            n += 1
    row[off] = n


FAMILY = Family(
    name="content_breadth",
    order=90,
    doc="Distinct kinds of content (download, webinar, ...) consumed in the last window_days.",
    columns=_columns,
    inputs=frozenset({"act_t", "act_k"}),
    kernel=kernel,
    params=_params,
    Params=ContentParams,
    enabled_by_default=False,
)
