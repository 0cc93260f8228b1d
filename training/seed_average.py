"""A booster that is the average of several boosters differing only in their random seed.

Why: on the generated CRMs one refit booster's test AUC moves by about ±0.01 with nothing but its seed
(the row and column subsamples, and with ``extra_trees`` the random split thresholds): seed 1 of the
3,000-lead CRM, the refit of the same chosen parameters and rounds, five seeds: 0.785-0.795 (default
config) and 0.805-0.827 (``extra_trees: true``), a spread as wide as the gap to AutoGluon's one
randomised LightGBMXT there (0.807 unloaded, 0.821-0.827 when the load cut its rounds). The average of
the five boosters' log-odds scored 0.800 and 0.826: most of that variance is gone, at k fits' cost.

The average is itself one LightGBM model: the trees of all boosters in one model, each tree's leaf
values divided by their number. Its raw score is the mean of their raw scores (a sum of trees), and so
are its per-feature contributions (TreeSHAP is linear in the trees), so a bundle, the scorer and the
reasons read it like any other booster. The first tree of each booster carries LightGBM's starting
score (``boost_from_average``); divided and summed it is the mean starting score.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from leadscore.training.tune import import_lightgbm

_TREES = "\nTree="
_END = "end of trees"


def seed_params(params: dict[str, Any], index: int) -> dict[str, Any]:
    """The parameters of the ``index``-th booster: the same, with its own master ``seed``.

    LightGBM derives its bagging, feature-fraction and extra-trees seeds from ``seed`` when they are not
    set, so one key varies every random choice; index 0 keeps the parameters as they are.
    """
    if index == 0:
        return params
    return {**params, "seed": int(params.get("seed", 0)) + 7919 * index}


def average_boosters(boosters: Sequence[Any]) -> Any:
    """One booster whose raw score is the mean of ``boosters``' raw scores (see the module docstring)."""
    if not boosters:
        raise ValueError("no booster to average")
    if len(boosters) == 1:
        return boosters[0]
    texts = [str(b.model_to_string()) for b in boosters]  # each cut at its best round, if any
    head, first = texts[0].split(_TREES, 1)
    tail = first[first.index(_END):]
    # tree_sizes indexes the trees of one model by byte length: the merged model is parsed without it
    head = "\n".join(line for line in head.split("\n") if not line.startswith("tree_sizes="))
    blocks: list[str] = []
    for text in texts:
        body = text[text.index(_TREES) + len(_TREES):text.index(_END)]
        for block in body.split(_TREES):
            blocks.append(f"Tree={len(blocks)}{block[block.index(chr(10)):]}")
    merged = import_lightgbm().Booster(model_str=head + "\n" + "".join(blocks) + tail)
    k = float(len(boosters))
    for tree, info in enumerate(merged.dump_model()["tree_info"]):
        for leaf in range(int(info["num_leaves"])):
            merged.set_leaf_output(tree, leaf, merged.get_leaf_output(tree, leaf) / k)
    return merged


def seed_averaged(fit: Callable[[dict[str, Any]], Any], params: dict[str, Any], seeds: int) -> Any:
    """``fit(params)`` once per seed (:func:`seed_params`), the boosters averaged into one."""
    return average_boosters([fit(seed_params(params, i)) for i in range(max(1, seeds))])


__all__ = ["average_boosters", "seed_averaged", "seed_params"]
