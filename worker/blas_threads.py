"""Keep numpy's BLAS from spawning a thread per core inside the worker.

The worker already splits its CPU deliberately: the event loop on one thread, ONNX Runtime (with
REGIMETRY_ORT_THREADS intra-op threads) on an executor thread. An OpenBLAS pool on top of that oversubscribes
a small machine: the kNN classifier's (256 x 3922 x 16) matmul measured 5-15 ms with the default pool on 2
cores and 1.2 ms pinned to one thread. The variables only take effect before numpy is first imported, hence
this tiny module is imported first by every worker entry point. An explicit setting in the environment wins.
"""

from __future__ import annotations

import os

MATH_THREAD_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def pin_math_threads(n: int = 1) -> None:
    for var in MATH_THREAD_VARS:
        os.environ.setdefault(var, str(n))
