"""The final fit beyond one machine's memory: ``lightgbm.dask`` on a ``distributed`` cluster, guarded.

Only the *final* fit of a large training table runs here (:func:`final_booster` picks the engine): the
Optuna search stays on one machine, on a time-stratified sample (``tune_sample_rows``), and the fit
boosts the backtest's fixed number of rounds at its parameters, so the distributed fit needs no
validation rows and no early stopping. It returns a plain ``lightgbm.Booster``, so the scoring bundle
is the same kind whichever engine fitted it.

``lightgbm.dask`` is known to hang rather than fail in some situations (LightGBM's issue tracker,
label ``dask``); each has a guard here:

* concurrent ``fit`` calls on one cluster hang at random (#4942): one fit at a time per process
  (a lock), on data that is persisted before the fit starts;
* early stopping hangs the workers that stop while the others wait (#6351, #7009): fixed rounds,
  no ``eval_set``;
* a worker that holds no rows, or an empty partition, breaks or stalls the network setup
  (#3882, #5537): rows are split into equal non-empty chunks placed round-robin on the workers, and
  a table with fewer rows than chunks is refused;
* port collisions (``Binding port ... failed``, #3753): ``local_listen_port``/``machines`` are
  removed from the inherited parameters so LightGBM picks and holds a free port on each worker,
  unless ``training.dask.machines`` pins them;
* a worker that dies or restarts mid-fit leaves the others waiting on their sockets (#5920, #4771):
  the fit is watched; a lost worker or the wall-clock ``timeout_s`` cancels the fit's tasks and raises
  :class:`DaskFitError` (:class:`DaskFitTimeout`), and LightGBM's own socket ``time_out`` is set to
  the same budget so a stuck worker thread frees itself;
* over-subscription (workers' event loops starve, #6196): ``lightgbm.dask`` gives each worker
  ``num_threads`` = its Dask threads, so a cluster for this fit should have ``threads_per_worker`` at
  most the worker's cores.

``tree_learner="data"``: every worker builds histograms on its own rows and they are summed; the
features are few (tens) and the rows many, which is the case data-parallel learning is made for.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from typing import Any

import numpy as np

from leadscore.training.config import DaskTrainingConfig, TrainingConfig
from leadscore.training.seed_average import seed_averaged
from leadscore.training.threads import lightgbm_threads
from leadscore.training.tune import import_lightgbm, make_dataset

#: parameters that are LightGBM-network or single-machine settings, never passed to a distributed fit
_NETWORK_PARAMS = ("local_listen_port", "local_port", "port", "machines", "workers", "nodes", "machine_list_filename",
                   "num_machines", "num_machine", "time_out", "num_threads", "early_stopping_round",
                   "early_stopping_rounds", "n_iter_no_change", "num_iterations", "n_estimators", "num_boost_round")
#: key prefixes of the tasks ``lightgbm.dask`` submits for one fit (cancelled when the fit is abandoned)
_FIT_TASKS = ("_train_part", "_acquire_port", "itemgetter")
_ONE_FIT = threading.Lock()


class DaskFitError(RuntimeError):
    """The distributed fit could not run or was abandoned (the workers may need a restart)."""


class DaskFitTimeout(DaskFitError):
    """The distributed fit did not finish within ``training.dask.timeout_s``."""


def use_dask(client: Any, rows: int, cfg: DaskTrainingConfig) -> bool:
    """Whether a final fit on ``rows`` rows goes to the cluster: a client was given and the table is large."""
    return client is not None and rows >= cfg.min_rows


def final_booster(
    X: np.ndarray, y: np.ndarray, weight: np.ndarray | None, categorical: list[int], params: dict[str, Any],
    rounds: int, cfg: TrainingConfig, client: Any = None,
) -> Any:
    """The final fit of ``rounds`` rounds at ``params``: on the cluster when :func:`use_dask`, else here;
    ``lightgbm.refit_seeds`` boosters averaged into one (:mod:`training.seed_average`)."""
    if use_dask(client, len(y), cfg.dask):
        return seed_averaged(lambda p: fit_booster_dask(client, X, y, weight, categorical=categorical, params=p,
                                                        rounds=rounds, cfg=cfg.dask), params, cfg.lightgbm.refit_seeds)
    train_set = make_dataset(X, y, categorical, params={"max_bin": cfg.lightgbm.max_bin}, weight=weight)
    params = {**params, "num_threads": lightgbm_threads(cfg.lightgbm, len(y))}
    return seed_averaged(lambda p: import_lightgbm().train(p, train_set, num_boost_round=max(1, rounds)), params,
                         cfg.lightgbm.refit_seeds)


def _running_workers(client: Any) -> dict[str, int]:
    """Address -> threads of the workers that can take work (paused or closing ones cannot)."""
    workers = client.scheduler_info().get("workers", {})
    return {a: int(w.get("nthreads", 1)) for a, w in workers.items() if w.get("status", "running") == "running"}


def _scatter_chunks(client: Any, workers: Sequence[str], arrays: Sequence[np.ndarray | None],
                    chunks: int) -> list[Any]:
    """Split each array into the same ``chunks`` non-empty row ranges, chunk i of every array on one
    worker (round-robin), and wrap them as persisted dask arrays (None stays None)."""
    import dask.array as da

    bounds = np.linspace(0, len(next(a for a in arrays if a is not None)), chunks + 1).astype(int)
    out: list[Any] = []
    for a in arrays:
        if a is None:
            out.append(None)
            continue
        parts = []
        for i in range(chunks):
            piece = np.ascontiguousarray(a[bounds[i]:bounds[i + 1]])
            # hash=False: each fit's pieces get keys of their own, so cancelling an abandoned fit can never
            # take the equal pieces of the next fit with it (content-hashed keys would be shared)
            future = client.scatter(piece, workers=[workers[i % len(workers)]], direct=True, hash=False)
            parts.append(da.from_delayed(future, shape=piece.shape, dtype=piece.dtype))
        out.append(da.concatenate(parts, axis=0))
    return out


def _cancel_fit_tasks(client: Any) -> None:
    keys = [k for k in list(client.futures) if str(k).startswith(_FIT_TASKS)]
    if keys:
        from distributed import Future as DaskFuture

        client.cancel([DaskFuture(k, client) for k in keys], force=True)


def _watch(client: Any, job: Future[Any], workers: Sequence[str], timeout_s: float) -> Any:
    """Wait for ``job``; abandon it when a data worker leaves or ``timeout_s`` passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        left = deadline - time.monotonic()
        try:
            return job.result(timeout=max(0.0, min(0.5, left)))
        except FutureTimeout:
            pass
        lost = set(workers) - set(_running_workers(client))
        if lost:
            _cancel_fit_tasks(client)
            raise DaskFitError(f"Dask worker(s) {', '.join(sorted(lost))} left or paused (memory) during the "
                               "LightGBM fit; the fit was abandoned (restart the cluster before fitting again)")
        if time.monotonic() >= deadline:
            _cancel_fit_tasks(client)
            raise DaskFitTimeout(f"the distributed LightGBM fit did not finish within {timeout_s:g} s "
                                 "(training.dask.timeout_s); its tasks were cancelled")


def fit_booster_dask(
    client: Any, X: np.ndarray, y: np.ndarray, weight: np.ndarray | None = None, *, categorical: list[int],
    params: dict[str, Any], rounds: int, cfg: DaskTrainingConfig,
) -> Any:
    """Fit ``rounds`` rounds of a binary LightGBM on the cluster behind ``client``; return its Booster.

    ``X`` is the encoded matrix, ``y`` the 0/1 label, ``weight`` the sample weights (recency decay) or
    None; ``params`` the single-machine parameters (network and thread settings in them are replaced).
    Raises :class:`DaskFitError` when the cluster has no running worker, the table is smaller than its
    chunks, a worker leaves mid-fit, or (:class:`DaskFitTimeout`) ``cfg.timeout_s`` passes.
    """
    import_lightgbm()
    from lightgbm.dask import DaskLGBMClassifier

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if not _ONE_FIT.acquire(timeout=cfg.timeout_s):
        raise DaskFitTimeout(f"another distributed LightGBM fit held the cluster for over {cfg.timeout_s:g} s")
    job: Future[Any] | None = None
    try:
        workers = sorted(_running_workers(client))
        if not workers:
            raise DaskFitError("the Dask cluster has no running worker")
        chunks = len(workers) * cfg.partitions_per_worker
        if len(y) < chunks:
            raise DaskFitError(f"{len(y)} rows cannot fill {chunks} partitions (every worker needs rows)")
        dX, dy, dw = _scatter_chunks(client, workers, [X, y, weight], chunks)
        fixed = {k: v for k, v in params.items() if k not in _NETWORK_PARAMS}
        network: dict[str, Any] = {"machines": cfg.machines} if cfg.machines else {}
        model = DaskLGBMClassifier(
            client=client, n_estimators=max(1, rounds), tree_learner="data",
            # LightGBM's socket time-out is in minutes: a worker stuck on the network gives up by itself
            time_out=max(1, math.ceil(cfg.timeout_s / 60)),
            **network, **fixed,
        )
        pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="leadscore-dask-fit")
        job = pool.submit(model.fit, dX, dy, sample_weight=dw, categorical_feature=categorical or "auto")
        # the lock is held until the fit's thread ends, even an abandoned one: no second fit overlaps it
        job.add_done_callback(lambda _job: _ONE_FIT.release())
        pool.shutdown(wait=False)
        return _watch(client, job, workers, cfg.timeout_s).booster_
    finally:
        if job is None:
            _ONE_FIT.release()

__all__ = ["DaskFitError", "DaskFitTimeout", "final_booster", "fit_booster_dask", "use_dask"]
