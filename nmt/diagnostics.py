"""Where local attention looks: the window centres p_t of a model, how far they move, how near gold.

A local-p model predicts its centre p_t = (S - 1) · sigmoid(v_pᵀ tanh(W_p h_t)) from the decoder
state alone. If W_p and v_p do not learn, p_t sits at about the same place for every target word
and the window misses most of the words to translate. These functions make that visible:

- :func:`window_centres`: the teacher-forced p_t of every target step of a batch;
- :func:`centre_spread`: how far p_t moves over a sentence (for the training log at each validation of
  a model that predicts p_t: :func:`predicts_centre`);
- :func:`gold_positions` and :func:`centre_error`: how far p_t lies from the source position a gold
  word alignment links the target word to.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from nmt.align import GoldAlignment
from nmt.attention import LocalAlignment, LocalPredictive
from nmt.data import Batch
from nmt.model import Seq2Seq


class CentreSpread(NamedTuple):
    """How far p_t / (S - 1) moves within a sentence, averaged over sentences with S > 1.

    Both lie in [0, 1]: 0 is a centre stuck at one place, a monotonic walk from the first
    source position to the last has range 1 and std about 0.3.
    """

    std: float  # the standard deviation of p_t / (S - 1) over a sentence's target steps
    range: float  # max - min of p_t / (S - 1) over a sentence's target steps
    sentences: int


def local_alignment(model: Seq2Seq) -> LocalAlignment | None:
    """The model's local alignment mode (local-m, local-p), or None for global and no attention."""
    align = getattr(model.decoder.attention, "align", None)
    return align if isinstance(align, LocalAlignment) else None


def predicts_centre(model: Seq2Seq) -> bool:
    """Whether the model learns where its window centre goes (local-p); local-m's walks with t by construction."""
    return isinstance(local_alignment(model), LocalPredictive)


@torch.no_grad()
def window_centres(model: Seq2Seq, batch: Batch) -> Tensor | None:
    """The centre p_t of every teacher-forced target step, in source positions.

    The model runs in eval mode (no dropout) and is put back in its mode afterwards.

    Args:
        model: a Seq2Seq with local attention (otherwise the result is None).
        batch: the pairs to force-decode, on the model's device.

    Returns:
        ``(batch, tgt_len)`` float on the CPU, NaN on padded target steps; None without local attention.
    """
    align = local_alignment(model)
    if align is None:
        return None
    centres: list[Tensor] = []

    def record(module: torch.nn.Module, args: tuple, output: object) -> None:
        query, memory, first_step = args  # query: (batch, steps, hidden)
        steps = torch.arange(first_step, first_step + query.size(1), device=query.device)
        centres.append(align.centre(query, memory.lengths, steps).float().cpu())  # (batch, steps)

    was_training = model.training
    model.eval()
    handle = model.decoder.attention.register_forward_hook(record)
    try:
        model.attend(batch.src, batch.src_lengths, batch.tgt_in)
    finally:
        handle.remove()
        model.train(was_training)
    result = torch.cat(centres, dim=1)  # (batch, tgt_len)
    padding = torch.arange(result.size(1)) >= batch.tgt_lengths.cpu().unsqueeze(1)
    return result.masked_fill(padding, float("nan"))


def centre_spread(model: Seq2Seq, batches: Iterable[Batch]) -> CentreSpread | None:
    """How far the model's window centre moves over a sentence, over all pairs of ``batches``.

    Meant for the training log at each validation (on the dev batches): with a working local-p
    model the range approaches 1; a range near 0 is a stuck p_t. Local-m's centre walks with t
    by construction. Sources of one token (S = 1) have no range and are left out.

    Returns:
        the spread, or None for a model without local attention or without a source of S > 1.
    """
    if local_alignment(model) is None:
        return None
    stds, ranges = [], []
    for batch in batches:
        centres = window_centres(model, batch)  # (batch, tgt_len), NaN on padding
        last = (batch.src_lengths.cpu() - 1).to(centres.dtype).unsqueeze(1)  # S - 1, (batch, 1)
        for row, real in zip(centres / last, batch.src_lengths.tolist(), strict=True):
            row = row[~row.isnan()]
            if real > 1 and row.numel():
                stds.append(row.std(correction=0))
                ranges.append(row.max() - row.min())
    if not stds:
        return None
    return CentreSpread(float(torch.stack(stds).mean()), float(torch.stack(ranges).mean()), len(stds))


def gold_positions(gold: GoldAlignment, src_words: Sequence[int], tgt_words: Sequence[int]) -> Tensor:
    """The source position, in pieces, that a gold alignment gives each target piece.

    A target word's position is the mean over the source words it is linked to (sure links,
    else possible ones) of each source word's mean piece index. Like :mod:`nmt.align`, a target
    word is judged at its first piece: the other pieces, and words without a link, get NaN.

    Args:
        gold: the pair's links (source word, target word).
        src_words, tgt_words: the word index of every source and target piece (EOS excluded).

    Returns:
        ``(len(tgt_words),)`` float.
    """
    src_piece_centre: dict[int, float] = {}
    for word in set(src_words):
        pieces = [k for k, w in enumerate(src_words) if w == word]
        src_piece_centre[word] = sum(pieces) / len(pieces)
    result = torch.full((len(tgt_words),), float("nan"))
    for k, word in enumerate(tgt_words):
        if k and tgt_words[k - 1] == word:
            continue  # not the word's first piece
        links = [i for i, j in gold.sure if j == word] or [i for i, j in gold.possible if j == word]
        linked = [src_piece_centre[i] for i in links if i in src_piece_centre]
        if linked:
            result[k] = sum(linked) / len(linked)
    return result


def centre_error(centres: Sequence[Tensor], golds: Sequence[Tensor]) -> float | None:
    """Mean |p_t - gold position| in source pieces over every target piece with a gold position.

    Args:
        centres: per pair, p_t of its target pieces ``(tgt_pieces,)`` (more steps, e.g. EOS, are ignored).
        golds: per pair, :func:`gold_positions` ``(tgt_pieces,)``.

    Returns:
        the mean, or None when no target piece has a gold position.
    """
    errors = []
    for centre, gold in zip(centres, golds, strict=True):
        centre = centre[: gold.numel()]
        known = ~gold.isnan()
        errors.append((centre[known] - gold[known]).abs())
    joined = torch.cat(errors) if errors else torch.empty(0)
    return float(joined.mean()) if joined.numel() else None
