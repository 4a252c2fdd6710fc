"""The thread pool on which :func:`~crossres.transforms.functional.degrade` resamples a uint8 batch's size groups.

Each pool thread runs its own torch calls on one OpenMP thread (the pool is the parallelism), and the pool lives as
long as the process that made it.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import torch

__all__ = ["caller_modes", "thread_pool"]


@contextmanager
def caller_modes(inference: bool, grad: bool) -> Iterator[None]:
    """The caller's inference and grad mode (both thread-local) in a pool thread."""
    with torch.inference_mode(inference), torch.set_grad_enabled(grad):
        yield


_POOL: tuple[int, int, ThreadPoolExecutor] | None = None
_POOL_LOCK = threading.Lock()


def thread_pool(workers: int) -> ThreadPoolExecutor:
    """A pool of ``workers`` threads kept for the life of the process; a forked process (a DataLoader worker) makes
    its own.

    A fresh thread's first torch call pays for starting its OpenMP team, so the threads are kept.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[:2] != (os.getpid(), workers):
            if _POOL is not None and _POOL[0] == os.getpid():
                _POOL[2].shutdown(wait=False)
            pool = ThreadPoolExecutor(workers, thread_name_prefix="crossres-degrade", initializer=_one_openmp_thread)
            _POOL = (os.getpid(), workers, pool)
        return _POOL[2]


def _one_openmp_thread() -> None:
    """Pool-thread initializer: this thread's own torch calls run on it alone (the pool is the parallelism).

    ``torch.set_num_threads`` would change the whole process; OpenMP's ``omp_set_num_threads`` sets the calling
    thread's team size only (OpenMP 4.5 §3.2.1); nested teams would oversubscribe the cores. A no-op where torch's
    OpenMP runtime is not a loaded ``libgomp``.
    """
    runtime = _libgomp()
    if runtime is not None:
        torch.get_num_threads()  # ATen's per-thread set-up first, which would reset the team size afterwards
        runtime.omp_set_num_threads(1)


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime torch has loaded (Linux), or ``None``.

    Other wheels bring their own copies (simsimd, under albumentations): torch's own is the one in its ``lib``
    folder, else the only one loaded.
    """
    if "ATen parallel backend: OpenMP" not in torch.__config__.parallel_info():
        return None
    try:
        with open("/proc/self/maps") as maps:
            paths = {line.split()[-1] for line in maps if os.path.basename(line.split()[-1]).startswith("libgomp")}
    except OSError:
        return None
    torch_lib = os.path.realpath(os.path.join(os.path.dirname(torch.__file__), "lib"))
    bundled = {path for path in paths if os.path.dirname(os.path.realpath(path)) == torch_lib}
    candidates = bundled or paths
    return ctypes.CDLL(candidates.pop()) if len(candidates) == 1 else None
