"""The training objective: one update's loss and gradient, and dev perplexity.

The objective is the summed token NLL of a batch divided by its number of sentences (OpenNMT-py's
``loss_normalization: sents``). With ``train.accum_steps = k`` one update sums the gradients of k
batches, each scaled by the sentences of all k, so it equals one update on their union.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.optim import Optimizer

from nmt.data import Batch
from nmt.decoder import packed
from nmt.distributed import ONE_PROCESS, Ranks, accumulating
from nmt.errors import NMTError

Autocast = Callable[[], contextlib.AbstractContextManager]


class StepResult(NamedTuple):
    """What one update saw: summed NLL, predicted target tokens, sentences, gradient norm (before clipping)."""

    nll: float
    tokens: int
    sentences: int
    grad_norm: float


def summed_nll(model: nn.Module, batch: Batch, autocast: Autocast) -> Tensor:
    """The summed token NLL of ``batch`` in float32 (float64 for a float64 model); the decoder steps, output
    layer and loss skip padding."""
    lengths = batch.tgt_lengths
    with autocast():
        nll, _ = model(batch.src, batch.src_lengths, batch.tgt_in, lengths, targets=packed(batch.tgt_out, lengths).data)
    return nll


def train_step(
    model: nn.Module,
    batches: Sequence[Batch],
    optimizer: Optimizer,
    *,
    clip_norm: float,
    autocast: Autocast,
    scaler: torch.amp.GradScaler,
    ranks: Ranks = ONE_PROCESS,
) -> StepResult | None:
    """One update from ``batches`` (already on the model's device); None if a loss or gradient was not finite.

    The loss of each batch is its summed NLL over the sentences of all batches, so k batches of b
    sentences give the gradient of one batch of k·b. A skipped update leaves parameters untouched.

    Under data parallelism ``model`` is wrapped by :meth:`Ranks.wrap`, which averages the ranks'
    gradients; dividing by all ranks' sentences over the world size makes the update equal one
    on the union of every rank's batches. The result counts all ranks' batches, and every rank
    decides the same way whether to skip (the summed NLL is non-finite on all if on one).
    """
    (sentences,) = ranks.sum([sum(b.n_sentences for b in batches)])
    divisor = sentences / ranks.world_size  # DDP averages gradients over the ranks
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for i, batch in enumerate(batches):
        with accumulating(model, last=i == len(batches) - 1):
            loss = summed_nll(model, batch, autocast)
            scaler.scale(loss / divisor).backward()  # every rank runs every backward: DDP syncs in it
        losses.append(loss.detach())
    nll, tokens = ranks.sum([float(torch.stack(losses).sum()), sum(b.n_tgt_tokens for b in batches)])
    if not math.isfinite(nll):
        return None
    scaler.unscale_(optimizer)
    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
    if not math.isfinite(grad_norm) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
        return None
    scaler.step(optimizer)
    scaler.update()
    return StepResult(nll, int(tokens), int(sentences), grad_norm)


@torch.no_grad()
def dev_perplexity(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device,
    autocast: Autocast,
    ranks: Ranks = ONE_PROCESS,
) -> float:
    """exp(summed NLL / predicted tokens) over ``batches`` of all ranks; the model is left in eval mode.

    Each rank passes its own share of the split; every rank returns the same number.
    """
    model.eval()
    nll, tokens = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        try:
            nll += summed_nll(model, batch, autocast).item()
        except torch.OutOfMemoryError as err:
            raise NMTError(
                f"out of memory validating {describe([batch])}; lower train.batch_size (or train.max_tokens), "
                "which size the dev batches too"
            ) from err
        tokens += batch.n_tgt_tokens
    return perplexity(*ranks.sum([nll, tokens]))


def perplexity(nll: float, tokens: int) -> float:
    """exp(nll / tokens), inf where that overflows."""
    mean = nll / max(tokens, 1)
    return math.exp(mean) if mean < 700 else math.inf


def describe(group: Sequence[Batch]) -> str:
    """The size of an update's batches, for messages."""
    longest = max(b.tgt_out.size(1) for b in group)
    return (
        f"{len(group)} batch(es) holding {sum(b.n_sentences for b in group)} sentences and "
        f"{sum(b.n_tgt_tokens for b in group)} target tokens (longest target: {longest} tokens)"
    )
