"""Keep freed memory in the process instead of handing it back to the system (glibc only).

Every training step allocates and frees the same large buffers (the ``(tokens, vocab)``
logits and their gradient, tens of MB each). glibc serves blocks above its mmap threshold
with fresh ``mmap`` calls and returns them on ``free``, so each step pays page faults and
zero-filling for all of them again: about a tenth of a CPU training step's time (2x256
reference model, 2 cores: 10% of the process's time in the kernel). Raising the mmap and
trim thresholds makes the C heap reuse those blocks, as jemalloc or tcmalloc would. The
price is that the resident size stays at its peak once reached.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import sys

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's <malloc.h>
_M_MMAP_THRESHOLD = -3
_KEEP_BYTES = 2**31 - 1  # the largest value mallopt's int takes: blocks below 2 GiB come from the heap


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
