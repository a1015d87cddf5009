"""The process's memory: freed blocks kept for reuse, and oneDNN's caches of compiled kernels bounded.

:func:`keep_freed_memory` (glibc only): every training step allocates and frees the same
large buffers (the ``(tokens, vocab)`` logits and their gradient, tens of MB each). glibc serves
blocks above its mmap threshold with fresh ``mmap`` calls and returns them on ``free``, so each
step pays page faults and zero-filling for all of them again: about a tenth of a CPU training
step's time (2x256 reference model, 2 cores: 10% of the process's time in the kernel). Raising
the mmap and trim thresholds makes the C heap reuse those blocks, as jemalloc or tcmalloc would. The
price is that the resident size stays at its peak once reached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: blocks below 2 GiB come from the heap
KERNEL_CACHE_CAPACITY = 32
"""Compiled oneDNN kernels kept (oneDNN's and PyTorch's ideep default: 1024 each)."""


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds for this process; False where that is not possible
    (another C library, another system), which changes nothing but speed."""
    if not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        mallopt = ctypes.CDLL(name).mallopt
    except (OSError, AttributeError, TypeError):  # musl has no mallopt; find_library may find nothing
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, _KEEP_BYTES) and mallopt(_M_TRIM_THRESHOLD, _KEEP_BYTES))


def bound_kernel_caches(capacity: int = KERNEL_CACHE_CAPACITY) -> None:
    """Keep at most ``capacity`` compiled kernels in each of oneDNN's caches (its primitive cache and
    PyTorch's ideep cache), unless the user's environment sets them.

    On the CPU, bf16 products run through oneDNN, which compiles a kernel for every shape it meets
    and keeps it with its scratch memory. The decoder's steps shrink row by row as sentences end,
    so training meets hundreds of shapes, and at the default capacities bf16 held several times
    fp32's resident memory (README, "Design notes"). Only effective before the first oneDNN call:
    oneDNN reads these environment variables then.
    """
    for name in ("ONEDNN_PRIMITIVE_CACHE_CAPACITY", "LRU_CACHE_CAPACITY"):
        os.environ.setdefault(name, str(capacity))


def set_up_process_memory() -> None:
    """What every nmt process does first: :func:`keep_freed_memory` and :func:`bound_kernel_caches`."""
    keep_freed_memory()
    bound_kernel_caches()
