"""Luong attention: a *scorer* times an *alignment mode* (Luong et al. 2015, §3.1-3.2).

A scorer says how well the target state h_t matches a source state h̄_s (eq. 8 and
the location score); an alignment mode says which source positions are scored and how
the scores become weights a_t(s): globally over the whole sentence (eq. 7), or in a
window of 2D+1 positions around a centre p_t that is monotonic (local-m) or predicted
(local-p, eq. 9-10). Both are small classes chosen by name from the registries
``SCORERS`` and ``ALIGNMENTS``; adding one is a class and a dict line.

Local modes score only their window, so a step costs O(D), not O(S).

``model.attention.align: none`` (:data:`NO_ATTENTION`) is the paper's non-attentional base
model (Table 1's first rows): :class:`NoAttention` stands in for the attention and the
decoder drops W_c. It is not an alignment mode, so it is not in ``ALIGNMENTS``;
:func:`build_attention` picks between the two.
"""

from __future__ import annotations

import logging
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.config import AttentionConfig, ConfigError, choose

log = logging.getLogger(__name__)


class Memory(NamedTuple):
    """The encoder output as attention reads it, prepared once per batch.

    Attributes:
        values: h̄_s, ``(batch, src_len, hidden)``.
        keys: the scorer's projection of the values, ``(batch, src_len, key_dim)``.
        lengths: true source lengths, ``(batch,)``.
        padding: added to the scores: 0 on real positions, -inf on padding, ``(batch, src_len)``
            (one addition per step where ``masked_fill`` would take three operations).
    """

    values: Tensor
    keys: Tensor
    lengths: Tensor
    padding: Tensor

    def index_select(self, index: Tensor) -> Memory:
        """Keep (and repeat or reorder) the batch rows named by ``index`` ``(new_batch,)``."""
        return Memory(*(t.index_select(0, index) for t in self))


def batched_dot(query: Tensor, keys: Tensor) -> Tensor:
    """h_tᵀ k_s for every target step and source position.

    Args:
        query: ``(batch, tgt_len, dim)``.
        keys: ``(batch, src_len, dim)`` shared by all steps, or ``(batch, tgt_len, window, dim)``.

    Returns:
        ``(batch, tgt_len, src_len)`` or ``(batch, tgt_len, window)``.
    """
    if keys.dim() == 3:
        return torch.bmm(query, keys.transpose(1, 2))
    return torch.einsum("btd,btwd->btw", query, keys)


def gather_positions(states: Tensor, positions: Tensor) -> Tensor:
    """``states[b, positions[b, t, w]]`` for every batch row b: the window's source states.

    One ``index_select`` of whole rows of the flattened states: 2.5x faster than advanced
    indexing (batch 32, window 21, 256 units), and its backward is a row-wise ``index_add``.

    Args:
        states: ``(batch, src_len, dim)``; positions: ``(batch, tgt_len, window)`` in [0, src_len).

    Returns:
        ``(batch, tgt_len, window, dim)``.
    """
    batch, src_len, dim = states.shape
    flat = positions + torch.arange(batch, device=positions.device).view(-1, 1, 1) * src_len
    return states.reshape(batch * src_len, dim).index_select(0, flat.flatten()).view(*positions.shape, dim)


class Scorer(nn.Module):
    """score(h_t, h̄_s). ``prepare`` runs once per batch; ``forward`` once per step."""

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__()

    def prepare(self, values: Tensor) -> Tensor:
        """Keys for :meth:`forward`: ``(batch, src_len, hidden) -> (batch, src_len, key_dim)``."""
        return values

    def forward(self, query: Tensor, keys: Tensor, positions: Tensor | None) -> Tensor:
        """Scores of ``query`` ``(batch, tgt_len, hidden)`` against ``keys``.

        ``keys`` is ``(batch, src_len, key_dim)`` (all positions, ``positions`` None) or
        ``(batch, tgt_len, window, key_dim)`` gathered at ``positions`` ``(batch, tgt_len, window)``.
        Returns ``(batch, tgt_len, src_len)`` or ``(batch, tgt_len, window)``.
        """
        raise NotImplementedError


class DotScorer(Scorer):
    """score = h_tᵀ h̄_s."""

    def forward(self, query: Tensor, keys: Tensor, positions: Tensor | None) -> Tensor:
        return batched_dot(query, keys)


class GeneralScorer(Scorer):
    """score = h_tᵀ W_a h̄_s; the keys W_a h̄_s are computed once per batch."""

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__(hidden=hidden, config=config)
        self.W_a = nn.Linear(hidden, hidden, bias=False)

    def prepare(self, values: Tensor) -> Tensor:
        return self.W_a(values)

    def forward(self, query: Tensor, keys: Tensor, positions: Tensor | None) -> Tensor:
        return batched_dot(query, keys)


class ConcatScorer(Scorer):
    """score = v_aᵀ tanh(W_a [h_t; h̄_s]), with W_a split into its h_t and h̄_s halves."""

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__(hidden=hidden, config=config)
        self.hidden = hidden
        self.W_a = nn.Linear(2 * hidden, hidden, bias=False)
        self.v_a = nn.Linear(hidden, 1, bias=False)

    def prepare(self, values: Tensor) -> Tensor:
        return F.linear(values, self.W_a.weight[:, self.hidden :])

    def forward(self, query: Tensor, keys: Tensor, positions: Tensor | None) -> Tensor:
        q = F.linear(query, self.W_a.weight[:, : self.hidden]).unsqueeze(2)  # (batch, tgt_len, 1, hidden)
        if keys.dim() == 3:
            keys = keys.unsqueeze(1)  # (batch, 1, src_len, hidden)
        return self.v_a(torch.tanh(q + keys)).squeeze(-1)


class LocationScorer(Scorer):
    """a_t = softmax(W_a h_t): one score per source *position*, whatever the word there.

    W_a knows ``model.attention.max_src_len`` positions. Callers drop or cut longer sources first
    (:mod:`nmt.source_length`); one that reaches the scorer (EOS included) is a :class:`ConfigError`,
    never silently truncated.
    """

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__(hidden=hidden, config=config)
        self.max_src_len = config.max_src_len
        self.W_a = nn.Linear(hidden, config.max_src_len, bias=False)

    def prepare(self, values: Tensor) -> Tensor:
        if values.size(1) > self.max_src_len:
            raise ConfigError(
                f"a source of {values.size(1)} tokens (EOS included) is longer than the location scorer's "
                f"model.attention.max_src_len={self.max_src_len}; raise it, or drop or shorten longer sources "
                "(data.max_len)"
            )
        return values

    def forward(self, query: Tensor, keys: Tensor, positions: Tensor | None) -> Tensor:
        scores = self.W_a(query)  # (batch, tgt_len, max_src_len)
        if positions is None:
            return scores[..., : keys.size(1)]
        return scores.gather(-1, positions)


class Alignment(nn.Module):
    """Turns scores into weights a_t(s) and the context c_t = Σ_s a_t(s) h̄_s."""

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__()

    def forward(self, query: Tensor, memory: Memory, scorer: Scorer, first_step: int) -> tuple[Tensor, Tensor]:
        """Attend from ``query`` ``(batch, tgt_len, hidden)``, the states of target steps
        ``first_step, first_step + 1, ...``.

        Returns:
            context ``(batch, tgt_len, hidden)`` and weights ``(batch, tgt_len, src_len)``.
        """
        raise NotImplementedError


class GlobalAlignment(Alignment):
    """a_t(s) = softmax over all real source positions of score(h_t, h̄_s) (eq. 7)."""

    def forward(self, query: Tensor, memory: Memory, scorer: Scorer, first_step: int) -> tuple[Tensor, Tensor]:
        scores = scorer(query, memory.keys, None)  # (batch, tgt_len, src_len)
        scores = scores + memory.padding.unsqueeze(1)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights, memory.values), weights


class LocalAlignment(Alignment):
    """Softmax over the window [p_t - D, p_t + D] ∩ [0, S-1] around a centre p_t; zero elsewhere.

    Subclasses give the centre and may reweight the softmax (local-p's Gaussian).
    """

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__(hidden=hidden, config=config)
        if config.window < 1:
            raise ConfigError(f"model.attention.window must be >= 1 for local attention, got {config.window}")
        self.window = config.window
        self.register_buffer("offsets", torch.arange(-config.window, config.window + 1), persistent=False)

    def centre(self, query: Tensor, lengths: Tensor, steps: Tensor) -> Tensor:
        """p_t, ``(batch, tgt_len)`` float, inside [0, length - 1] of each sentence."""
        raise NotImplementedError

    def reweight(self, weights: Tensor, positions: Tensor, centre: Tensor) -> Tensor:
        """Adjust window weights ``(batch, tgt_len, window)``; the identity unless overridden."""
        return weights

    def forward(self, query: Tensor, memory: Memory, scorer: Scorer, first_step: int) -> tuple[Tensor, Tensor]:
        batch, tgt_len, _ = query.shape
        src_len = memory.values.size(1)
        steps = torch.arange(first_step, first_step + tgt_len, device=query.device)
        centre = self.centre(query, memory.lengths, steps)  # (batch, tgt_len)
        positions = centre.detach().floor().long().unsqueeze(-1) + self.offsets  # (batch, tgt_len, window)
        valid = (positions >= 0) & (positions < memory.lengths.view(-1, 1, 1))
        positions = positions.clamp(0, src_len - 1)
        scores = scorer(query, gather_positions(memory.keys, positions), positions)  # (batch, tgt_len, window)
        weights = torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=-1)
        weights = self.reweight(weights, positions, centre)
        context = torch.einsum("btw,btwd->btd", weights, gather_positions(memory.values, positions))
        full = weights.new_zeros(batch, tgt_len, src_len).scatter_add(2, positions, weights)
        return context, full


class LocalMonotonic(LocalAlignment):
    """local-m: p_t = min(t, S - 1), source and target assumed monotonically aligned."""

    def centre(self, query: Tensor, lengths: Tensor, steps: Tensor) -> Tensor:
        return torch.minimum(steps.view(1, -1), (lengths - 1).view(-1, 1)).to(query.dtype)


class LocalPredictive(LocalAlignment):
    """local-p: p_t = (S - 1) · sigmoid(v_pᵀ tanh(W_p h_t)) (eq. 9), weights times
    exp(-(s - p_t)² / 2σ²) with σ = D/2 (eq. 10), not renormalised.

    In its first 10-20 Adam updates the sigmoid saturates (|v_pᵀ tanh(W_p h_t)| ≈ 8) and p_t
    sits at one end of every sentence. A window narrower than the sentence then gives the far
    positions neither weight nor gradient, so p_t stays there for hundreds of updates; a window
    that covers the sentence from either end lets the content scores find the words and p_t
    follow them (see :mod:`nmt.diagnostics`, which measures it, and :func:`check_window`).
    """

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__(hidden=hidden, config=config)
        self.W_p = nn.Linear(hidden, hidden, bias=False)
        self.v_p = nn.Linear(hidden, 1, bias=False)
        self.two_sigma_sq = 2 * (config.window / 2) ** 2

    def position_parameters(self) -> list[nn.Parameter]:
        """W_p and v_p: what predicts p_t (the optimiser gives them a rate of their own)."""
        return [*self.W_p.parameters(), *self.v_p.parameters()]

    def centre(self, query: Tensor, lengths: Tensor, steps: Tensor) -> Tensor:
        ratio = torch.sigmoid(self.v_p(torch.tanh(self.W_p(query)))).squeeze(-1)  # (batch, tgt_len)
        return (lengths - 1).view(-1, 1).to(ratio.dtype) * ratio

    def reweight(self, weights: Tensor, positions: Tensor, centre: Tensor) -> Tensor:
        distance = positions.to(weights.dtype) - centre.unsqueeze(-1)
        return weights * torch.exp(-distance.square() / self.two_sigma_sq)


def check_window(config: AttentionConfig, src_lengths: Tensor) -> None:
    """Warn when local-p's window cannot reach across a typical training source from either end.

    p_t saturates at one end of every sentence in the first updates (see :class:`LocalPredictive`);
    it recovers only if the window centred there still covers the words to translate, which needs
    D ≥ S - 1 for a source of S positions.

    Args:
        src_lengths: the training sources' lengths, EOS included, ``(pairs,)``.
    """
    if ALIGNMENTS.get(config.align) is not LocalPredictive or not src_lengths.numel():
        return
    typical = int(src_lengths.median())
    if config.window < typical - 1:
        log.warning(
            "local-p with model.attention.window=%d: half the training sources are longer than %d positions, "
            "and the predicted position p_t starts stuck at one end of every sentence, where a window this "
            "narrow gives the far words no weight and no gradient (README, 'local-p'); use "
            "model.attention.window=%d (the median source length less one) or more",
            config.window,
            config.window + 1,
            typical - 1,
        )


SCORERS: dict[str, type[Scorer]] = {
    "dot": DotScorer,
    "general": GeneralScorer,
    "concat": ConcatScorer,
    "location": LocationScorer,
}

ALIGNMENTS: dict[str, type[Alignment]] = {
    "global": GlobalAlignment,
    "local-m": LocalMonotonic,
    "local-p": LocalPredictive,
}


class Attention(nn.Module):
    """A scorer and an alignment mode, both chosen by name from ``config``."""

    attends = True  # the decoder combines the context with h_t through W_c (eq. 5)

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__()
        self.scorer = choose(SCORERS, config.score, "model.attention.score")(hidden=hidden, config=config)
        self.align = choose(ALIGNMENTS, config.align, "model.attention.align")(hidden=hidden, config=config)

    @property
    def max_src_len(self) -> int | None:
        """The longest source the scorer can read (location), else None."""
        return getattr(self.scorer, "max_src_len", None)

    def prepare(self, values: Tensor, lengths: Tensor) -> Memory:
        """Memory for ``values`` ``(batch, src_len, hidden)`` with true ``lengths`` ``(batch,)``."""
        return Memory(values, self.scorer.prepare(values), lengths, padding_scores(values, lengths))

    def forward(self, query: Tensor, memory: Memory, first_step: int = 0) -> tuple[Tensor, Tensor]:
        """Context ``(batch, tgt_len, hidden)`` and weights ``(batch, tgt_len, src_len)``."""
        return self.align(query, memory, self.scorer, first_step)


NO_ATTENTION = "none"
"""``model.attention.align`` of the non-attentional base model (Table 1's first three rows)."""


class NoAttention(nn.Module):
    """No attention at all: the decoder's output is h̃_t = h_t, with no context and no W_c.

    The weights it reports are zeros ``(batch, tgt_len, src_len)`` (and so is the context
    Σ_s a_t(s) h̄_s), so search and the training loop need no special case. It has no parameters;
    ``model.attention.score``, ``window`` and ``max_src_len`` do not apply.
    """

    attends = False  # h̃_t = h_t: the decoder has no W_c
    max_src_len = None  # any source length

    def __init__(self, *, hidden: int, config: AttentionConfig) -> None:
        super().__init__()

    def prepare(self, values: Tensor, lengths: Tensor) -> Memory:
        """Memory for ``values`` ``(batch, src_len, hidden)``: nothing is projected (keys are the values)."""
        return Memory(values, values, lengths, padding_scores(values, lengths))

    def forward(self, query: Tensor, memory: Memory, first_step: int = 0) -> tuple[Tensor, Tensor]:
        """Zero context ``(batch, tgt_len, hidden)`` (a view, nothing allocated) and zero weights
        ``(batch, tgt_len, src_len)``."""
        batch, tgt_len, _ = query.shape
        weights = query.new_zeros(batch, tgt_len, memory.values.size(1))
        return query.new_zeros(()).expand_as(query), weights


def build_attention(*, hidden: int, config: AttentionConfig) -> Attention | NoAttention:
    """The decoder's attention: :class:`Attention` for an alignment mode, :class:`NoAttention` for ``none``."""
    choices = {**dict.fromkeys(ALIGNMENTS, Attention), NO_ATTENTION: NoAttention}
    return choose(choices, config.align, "model.attention.align")(hidden=hidden, config=config)


def padding_scores(values: Tensor, lengths: Tensor) -> Tensor:
    """0 on real positions and -inf on padding, ``(batch, src_len)``, for ``values`` ``(batch, src_len, ...)``."""
    padding = torch.arange(values.size(1), device=values.device) >= lengths.unsqueeze(1)
    return values.new_zeros(padding.shape).masked_fill_(padding, float("-inf"))
