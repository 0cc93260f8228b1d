"""Server processes started by a benchmark stop with it: on normal exit, an error, SIGTERM or SIGINT.

Why this is more than ``proc.terminate()``: BentoML's process manager starts each worker in a session
of its own, so neither a signal to the server nor ``killpg`` of its group reaches a worker whose
server is stuck or gone; and a benchmark killed with SIGTERM runs no ``finally`` at all by default.
So the whole process tree is listed *before* it is signalled, the root gets SIGTERM (``leadscore
serve`` and ``bentoml serve`` stop their workers on it), and whatever of the tree is still alive after
the grace period is killed. :func:`stop_on_signals` turns SIGTERM into ``SystemExit`` so the
benchmark's ``finally`` (which calls :func:`stop_tree`) runs.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from types import FrameType


def stop_tree(proc: subprocess.Popen[bytes], timeout: float = 30.0, group: bool = False) -> list[int]:
    """SIGTERM to ``proc`` (to its process group if ``group``), then SIGKILL to every process of its tree
    still alive after ``timeout`` s. Returns the pids that had to be killed."""
    import psutil

    if proc.poll() is not None:
        return []
    try:
        root = psutil.Process(proc.pid)
        tree = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []
    with contextlib.suppress(ProcessLookupError):
        if group:
            os.killpg(proc.pid, signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(tree, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.kill()
    psutil.wait_procs(alive, timeout=10)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)
    return [p.pid for p in alive]


@contextlib.contextmanager
def stop_on_signals() -> Iterator[None]:
    """Within the block, SIGTERM and SIGINT raise ``SystemExit`` in the main thread, so ``finally``
    clauses (stopping servers) run; the previous handlers are restored after."""

    def leave(signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    previous = {sig: signal.signal(sig, leave) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
