"""What a training checkpoint holds to resume a run exactly, and whether a run may resume from it.

A checkpoint holds the model, optimiser, schedule, GradScaler and RNG states, and the data
position (epoch, batches done). Batch order depends on ``(seed, epoch)`` alone
(:class:`nmt.data.BucketBatcher`), so a resumed run skips the batches already done and continues
with the same parameters, gradients and dropout masks as an uninterrupted run. Under data
parallelism the checkpoint keeps every rank's RNG state and resumes with any number of ranks that
divides the data the same way (:func:`nmt.distributed.moved_position`).
"""

from __future__ import annotations

import dataclasses
import logging
import math
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import yaml

from nmt.checkpoint import load_checkpoint
from nmt.errors import NMTError

log = logging.getLogger(__name__)

RESUME_FIXED = (
    "model.",
    "data.",
    "train.seed",
    "train.batch_size",
    "train.max_tokens",
    "train.pool_factor",
    "train.balance_tokens",
    "train.accum_steps",
)
"""Config keys a resumed run must share with its checkpoint: they fix the model, the data and the batch stream."""


@dataclass
class DataPosition:
    """Where in the batch stream a run stands."""

    epoch: int = 0  # epochs completed
    batches_done: int = 0  # of the current epoch, by each rank
    world_size: int = 1  # the data-parallel ranks that shared each epoch


@dataclass
class Best:
    """The best validation so far, and how many validations since failed to improve on it."""

    dev_ppl: float = math.inf
    step: int = 0
    bad_validations: int = 0


@dataclass
class RunState:
    """The payload of a training checkpoint (:func:`nmt.checkpoint.save_run_checkpoint`).

    Attributes:
        config: the resolved config as a nested dict (what :func:`nmt.checkpoint.load_model` reads).
        model, optimizer, scheduler, scaler: the state dicts.
        tokenizers: ``{"src": ..., "tgt": ...}``, each :meth:`nmt.tokenizer.Tokenizer.to_state`.
        rank_rng: every rank's :func:`rng_state`, in rank order.
        position: the data position after ``step`` updates.
        step: the updates done.
        best: the best validation so far.
    """

    config: dict[str, Any]
    model: dict[str, Any]
    tokenizers: dict[str, Any]
    optimizer: dict[str, Any]
    scheduler: dict[str, Any]
    scaler: dict[str, Any]
    rank_rng: list[dict[str, Any]]
    position: DataPosition = field(default_factory=DataPosition)
    step: int = 0
    best: Best = field(default_factory=Best)

    def to_payload(self) -> dict[str, Any]:
        """The checkpoint's dict: plain values and tensors only (checkpoints load with ``weights_only``)."""
        payload = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        del payload["position"]
        return {**payload, "data_position": dataclasses.asdict(self.position), "best": dataclasses.asdict(self.best)}

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RunState:
        """Read a checkpoint's dict, also one written before this class.

        Older checkpoints stored the epoch a second time at the top level and rank 0's RNG
        state as ``rng`` (the first ones without ``rank_rng`` and without a world size: one process).
        """
        plain = {key: payload[key] for key in ("config", "model", "tokenizers", "optimizer", "scheduler", "scaler")}
        return cls(
            **plain,
            rank_rng=payload.get("rank_rng") or [payload["rng"]],
            position=DataPosition(**{"world_size": 1, **payload["data_position"]}),
            step=payload["step"],
            best=Best(**payload["best"]),
        )

    def rng_for(self, rank: int, world_size: int) -> dict[str, Any]:
        """The RNG state rank ``rank`` of ``world_size`` resumes with.

        Each rank draws its own dropout masks; with another number of ranks they cannot match
        the saved run's anyway, so every rank takes rank 0's.
        """
        same_ranks = self.position.world_size == world_size and len(self.rank_rng) == world_size
        return self.rank_rng[rank] if same_ranks else self.rank_rng[0]


def load_run_state(save_dir: Path, config: dict[str, Any]) -> RunState:
    """The state in ``save_dir/last.pt``, checked to resume a run of ``config`` (a nested dict).

    Raises:
        NMTError: there is no checkpoint, it cannot be read (naming an older one to resume from),
            or ``config`` changes a key of :data:`RESUME_FIXED` (naming the overrides that would resume).
    """
    path = save_dir / "last.pt"
    if not path.exists():
        raise NMTError(f"{path}: nothing to resume (no checkpoint in train.save_dir); start without --resume")
    try:
        payload = load_checkpoint(path)
    except NMTError as err:
        older = sorted(save_dir.glob("step_*.pt"))[-2:-1]  # last.pt is a link to the newest
        hint = f"; to resume from {older[0].name} instead: ln -f {older[0]} {path}" if older else ""
        raise NMTError(f"{err}{hint}") from err
    check_resumable(path, payload["config"], config)
    return RunState.from_payload(payload)


def check_fresh(save_dir: Path) -> None:
    """A run started without ``--resume`` must not write over one in ``save_dir``."""
    if (save_dir / "last.pt").exists():
        raise NMTError(
            f"{save_dir} already holds a run (last.pt); pass --resume to continue it, or choose another train.save_dir"
        )


def check_resumable(path: Path, old: dict[str, Any], new: dict[str, Any]) -> None:
    """Refuse to resume the checkpoint at ``path`` (config ``old``) with a config ``new`` that changes the run.

    Keys outside :data:`RESUME_FIXED` may change (e.g. ``train.max_steps``); each change is logged.
    """
    changed = changed_keys(old, new)
    fixed = [key for key in changed if key.startswith(RESUME_FIXED)]
    if fixed:
        diffs = "; ".join(f"{k}: {_lookup(old, k)!r} -> {_lookup(new, k)!r}" for k in fixed)
        as_yaml = [yaml.safe_dump(_lookup(old, k), default_flow_style=True).splitlines()[0] for k in fixed]
        undo = " ".join(f"{k}={value}" for k, value in zip(fixed, as_yaml, strict=True))
        raise NMTError(
            f"{path}: cannot resume with a different model, data or batch stream ({diffs}); "
            f"resume with {undo}, or start a new run"
        )
    for key in changed:
        log.info("resuming with %s changed: %r -> %r", key, _lookup(old, key), _lookup(new, key))


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """The RNG states a resumed run needs to draw the same dropout masks."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
