"""Numeric precision: ``fp32``, or autocast to ``bf16`` or ``fp16`` (CUDA only), for training
(``train.precision``) and for search (``decode.precision``, ``--precision``).

Under autocast the matrix products run in the lower precision; softmaxes, the loss and the
search scores stay in float32. On a CPU with AVX-512 BF16 (or AMX) bf16 roughly doubles the
speed of the matrix products; elsewhere it may be slower than fp32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable

import torch

from nmt.config import ConfigError, choose

PRECISIONS: dict[str, torch.dtype | None] = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
"""A precision's name -> its autocast dtype (None: no autocast)."""


def autocast_for(device: torch.device, precision: str, *, key: str) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``precision`` on ``device``; ``key`` names the setting in errors."""
    dtype = choose(PRECISIONS, precision, key)
    if dtype is torch.float16 and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device.type, dtype=dtype)
