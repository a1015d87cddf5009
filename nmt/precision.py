"""Numeric precision: ``fp32``, or autocast to ``bf16`` or ``fp16`` (CUDA only), for training
(``train.precision``) and for search (``decode.precision``, ``--precision``); ``int8`` for search
on the CPU only.

Under autocast the matrix products run in the lower precision; softmaxes, the loss and the
search scores stay in float32. On the CPU, training and search alike keep the encoder and decoder
steps in float32 and run only the output layer in bf16 (:func:`step_loop_precision`). A CPU
without AVX-512 BF16 or AMX emulates bf16 products, many times slower than fp32: asking for bf16
there logs a warning (:func:`warn_emulated_bf16`).

``int8`` has no autocast: the weights of the output layer, the LSTMs and the attention
projections are quantized once, when a checkpoint is loaded for search, and run through
PyTorch's int8 kernels (:mod:`nmt.quantize`). It cannot train, and those kernels exist for the
CPU alone.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable

import torch
from torch import Tensor

from nmt.config import ConfigError, choose

log = logging.getLogger(__name__)

PRECISIONS: dict[str, torch.dtype | None] = {
    "fp32": None,
    "bf16": torch.bfloat16,
    "fp16": torch.float16,
    "int8": None,
}
"""A precision's name -> its autocast dtype (None: no autocast)."""

INT8 = "int8"
"""The precision whose weights are quantized at load (:func:`nmt.quantize.quantize_model`): search on the CPU only."""


def check_precision(precision: str, device: torch.device | None, *, key: str, search: bool) -> None:
    """Reject a precision that cannot run: unknown, int8 for training or off the CPU, fp16 off CUDA.

    ``device`` None checks what can be checked before the device is known; ``key`` names the setting.
    """
    choose(PRECISIONS, precision, key)
    if precision == INT8 and not search:
        raise ConfigError(
            f"{key}=int8 is for search only (weights quantized when a checkpoint is loaded: "
            "nmt-translate --precision int8); train in fp32, bf16 or fp16"
        )
    if device is None:
        return
    if precision == INT8 and device.type != "cpu":
        raise ConfigError(f"{key}=int8 runs on the CPU only (PyTorch's int8 kernels); use --device cpu, or bf16/fp16")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError(f"{key}=fp16 needs a CUDA device; use bf16 or fp32 on the CPU")


def autocast_for(
    device: torch.device, precision: str, *, key: str, search: bool = False
) -> Callable[[], contextlib.AbstractContextManager]:
    """A factory of autocast contexts for ``precision`` on ``device``; ``key`` names the setting in errors,
    ``search`` allows int8 (no autocast: the model was quantized at load)."""
    check_precision(precision, device, key=key, search=search)
    dtype = PRECISIONS[precision]
    if dtype is None:
        return contextlib.nullcontext
    if dtype == torch.bfloat16 and device.type == "cpu" and not native_cpu_bf16():
        warn_emulated_bf16(key)
    return lambda: torch.autocast(device.type, dtype=dtype)


@functools.cache
def native_cpu_bf16() -> bool:
    """Whether this CPU multiplies bf16 matrices in hardware (AVX-512 BF16 or AMX), as oneDNN sees it
    (asked once: search builds its autocast for every batch)."""
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


@functools.cache
def warn_emulated_bf16(key: str) -> None:
    """Warn, once per setting, that bf16 on this CPU is emulated."""
    log.warning(
        "%s=bf16 on a CPU without AVX-512 BF16 or AMX: its bf16 products are emulated, many times slower "
        "than fp32 (training 15x slower on an AVX2 AMD EPYC; README, 'Speed'); use fp32 on this machine",
        key,
    )


def in_autocast_dtype(tensor: Tensor) -> Tensor:
    """``tensor`` cast to the autocast dtype of its device where autocast is on there (a floating
    tensor only), else ``tensor`` itself.

    For weights used at every step of a loop: autocast caches the casts of parameters only, so a
    weight arranged from parameters (concatenated, transposed) is cast again at each step unless
    it is cast once, here.
    """
    device = tensor.device.type
    if not tensor.is_floating_point() or not torch.is_autocast_enabled(device):
        return tensor
    return tensor.to(torch.get_autocast_dtype(device))


ROW_MULTIPLE = 256
"""Under CPU autocast, the output layer's rows are padded to a multiple of this (see :func:`padded_rows`)."""


def step_loop_precision(device: torch.device) -> contextlib.AbstractContextManager:
    """The precision of the encoder and decoder steps: on the CPU float32 even under autocast, elsewhere
    autocast's.

    On the CPU bf16 products run through oneDNN, which compiles a kernel for every shape; the steps'
    products are small and change shape as sentences end, so in bf16 they cost more than they save
    (README, "Design notes"), while the output layer's large product gains, in training and in search
    alike. On CUDA all run in bf16.
    """
    if device.type == "cpu" and torch.is_autocast_enabled("cpu"):
        return torch.autocast("cpu", enabled=False)
    return contextlib.nullcontext()


def padded_rows(x: Tensor) -> tuple[Tensor, int]:
    """``x`` ``(rows, features)`` with zero rows added up to a multiple of :data:`ROW_MULTIPLE` under
    CPU autocast (few distinct shapes, so oneDNN compiles few kernels), and its real row count.

    Only a matrix of more rows than that is padded: a training batch's tokens, not a search step's
    hypotheses, which padding would multiply.
    """
    rows = x.size(0)
    if x.device.type != "cpu" or not torch.is_autocast_enabled("cpu") or x.dim() != 2 or rows <= ROW_MULTIPLE:
        return x, rows
    return torch.nn.functional.pad(x, (0, 0, 0, -rows % ROW_MULTIPLE)), rows
