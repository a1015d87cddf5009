"""Where a command runs: the one rule for ``train.device`` and the CLIs' ``--device``."""

from __future__ import annotations

import difflib

import torch

from nmt.config import ConfigError
from nmt.errors import NMTError

DEVICES = ("auto", "cpu", "cuda")
"""The device names nmt runs on; ``cuda:N`` names one CUDA device."""


def pick_device(name: str, *, key: str = "train.device") -> torch.device:
    """``auto`` (CUDA where present, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``, checked against this machine.

    Args:
        name: the device name the user gave.
        key: the setting that gave it, for messages: a config key (``train.device``) or an option (``--device``).

    Raises:
        ConfigError: ``name`` is no device name nmt runs on.
        NMTError: ``name`` is a CUDA device this machine does not have.
    """
    option = key.startswith("--")
    given = f"{key} {name}" if option else f"{key}={name}"
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        device = None
    if device is None or device.type not in DEVICES:
        close = difflib.get_close_matches(name, DEVICES, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{key} {name!r} is not a device name; use auto, cpu, cuda or cuda:N{hint}")
    if device.type == "cuda" and not torch.cuda.is_available():
        cpu = f"{key} cpu" if option else f"{key}=cpu or auto"
        problem = ": CUDA is not available here" if option else ", but this machine has no usable CUDA device"
        raise NMTError(f"{given}{problem}; use {cpu}")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise NMTError(f"{given}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device
