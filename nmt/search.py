"""Greedy and beam search over a model's incremental API, ensembles, and unknown-word replacement.

Search needs only ``encode(src, src_lengths) -> state`` and ``step(tokens, state) ->
(log_probs, attention, state)`` with ``state.index_select(rows)`` (:class:`Decodable`), so
one :class:`~nmt.model.Seq2Seq`, an :class:`Ensemble` of them, or a test's table-driven fake
decode alike. Both searches run every sentence of a batch (and every beam) as rows of one
tensor; a sentence whose search is over leaves the batch, so it costs nothing afterwards.

Every hypothesis ends with EOS: a sentence of ``S`` source tokens (as the model reads them)
gets between ``min_out = ceil(min_len_ratio · S)`` and ``max_out = min(floor(max_len_ratio
· S), max_len)`` output tokens before its EOS; EOS is blocked before ``min_out`` and forced at
``max_out``. A hypothesis's score is its log-probability (EOS included) divided by the
length penalty of its length ``len(tokens) + 1`` (:data:`LENGTH_PENALTIES`).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import torch
from torch import Tensor

from nmt.config import ConfigError, DecodeConfig, choose
from nmt.precision import PRECISIONS, autocast_for
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, UNK_ID, Tokenizer

_EPS = 1e-9  # ratio · length is computed in floating point; 0.1 · 30 must give 3, not 3.0000000000000004


class State(Protocol):
    """A decoder state whose batch rows can be kept, repeated and reordered."""

    def index_select(self, index: Tensor, *, memory: bool = True) -> State: ...


class Decodable(Protocol):
    """What search needs from a model; ``step`` returns fresh tensors, which search may change in place."""

    def encode(self, src: Tensor, src_lengths: Tensor) -> State: ...

    def step(self, tokens: Tensor, state: Any) -> tuple[Tensor, Tensor, State]: ...


class Hypothesis(NamedTuple):
    """One output of the search.

    Attributes:
        tokens: the output ids, without BOS and EOS.
        score: ``log_prob`` divided by the length penalty; the n-best list is sorted by it.
        log_prob: the sum of the log-probabilities of ``tokens`` and the final EOS.
        attention: ``(len(tokens), src_len)`` on the CPU: row t holds the weights of the step
            that produced ``tokens[t]``, over the sentence's true (unpadded) source positions.
    """

    tokens: list[int]
    score: float
    log_prob: float
    attention: Tensor


def _no_penalty(length: int, alpha: float) -> float:
    return 1.0


def _average(length: int, alpha: float) -> float:
    return float(length)


def _gnmt(length: int, alpha: float) -> float:
    """Wu et al. (2016), eq. 14: ((5 + |Y|) / 6)^α."""
    return ((5 + length) / 6) ** alpha


LENGTH_PENALTIES: dict[str, Callable[[int, float], float]] = {
    "none": _no_penalty,
    "average": _average,
    "gnmt": _gnmt,
}
"""``decode.length_penalty``: the divisor of a hypothesis's log-probability, given its length."""


def length_limits(src_lengths: Tensor, config: DecodeConfig) -> tuple[Tensor, Tensor]:
    """``(min_out, max_out)``, each ``(batch,)``: the output tokens (EOS not counted) allowed per sentence."""
    lengths = src_lengths.double()
    max_out = (lengths * config.max_len_ratio + _EPS).floor().long().clamp(max=config.max_len)
    min_out = torch.minimum((lengths * config.min_len_ratio - _EPS).ceil().long(), max_out)
    return min_out, max_out


def check_config(config: DecodeConfig) -> None:
    """Reject ``decode.*`` settings that cannot work, naming the key: the one check of a decode config.

    It runs once, where a config is built (training setup, :func:`nmt.translate.load_translator`);
    searches take a checked config, so a library caller that builds its own checks it first.
    """
    choose(LENGTH_PENALTIES, config.length_penalty, "decode.length_penalty")
    choose(PRECISIONS, config.precision, "decode.precision")
    if config.beam < 1:
        raise ConfigError(f"decode.beam must be at least 1, got {config.beam}")
    if not 1 <= config.n_best <= config.beam:
        raise ConfigError(f"decode.n_best must be between 1 and decode.beam ({config.beam}), got {config.n_best}")
    for key in ("alpha", "min_len_ratio", "max_len_ratio"):
        if not math.isfinite(getattr(config, key)):
            raise ConfigError(f"decode.{key} must be a finite number, got {getattr(config, key)}")
    if config.max_len < 0 or config.max_len_ratio < 0 or config.min_len_ratio < 0 or config.no_repeat_ngram < 0:
        raise ConfigError(
            "decode.max_len, decode.max_len_ratio, decode.min_len_ratio and decode.no_repeat_ngram must not be negative"
        )
    if config.batch_tokens < 1 or config.max_input_len < 1 or config.workers < 1:
        raise ConfigError("decode.batch_tokens, decode.max_input_len and decode.workers must be positive")


def decode(model: Decodable, src: Tensor, src_lengths: Tensor, *, config: DecodeConfig) -> list[list[Hypothesis]]:
    """Greedy search for ``config.beam == 1``, beam search otherwise (see those), under autocast
    to ``config.precision``; ``config`` has passed :func:`check_config`. For int8 the caller has
    quantized the model (:func:`nmt.quantize.quantize_model`; :func:`nmt.translate.load_translator` does).

    It leaves a caller's inference mode: that mode turns off autocast's cache of cast weights,
    so every step would cast every weight matrix again (README.md, "Design notes"). fp32
    search is as fast either way.
    """
    search = greedy_search if config.beam == 1 else beam_search
    autocast = autocast_for(src.device, config.precision, key="decode.precision", search=True)
    with torch.inference_mode(False), autocast():
        return search(model, src, src_lengths, config=config)


def repeated_ngrams(history: Tensor, n: int, vocab: int) -> Tensor:
    """True where the next token would repeat an n-gram already in ``history``.

    Args:
        history: the tokens so far, ``(rows, steps)``.

    Returns:
        ``(rows, vocab)`` bool.
    """
    rows, steps = history.shape
    if n < 1 or steps < n:
        return torch.zeros(rows, vocab, dtype=torch.bool, device=history.device)
    windows = history.unfold(1, n, 1)  # (rows, steps - n + 1, n): every n-gram so far
    current = history[:, steps - n + 1 :].unsqueeze(1)  # (rows, 1, n - 1): the n-gram being continued
    match = (windows[..., :-1] == current).all(-1)  # (rows, steps - n + 1)
    hits = torch.zeros(rows, vocab, device=history.device).scatter_add_(1, windows[..., -1], match.float())
    return hits > 0


class _Limits(NamedTuple):
    """Each sentence's output lengths (:func:`length_limits`) and the steps at which they bind."""

    min_out: Tensor  # (batch,)
    max_out: Tensor  # (batch,)
    blocked_until: int  # the first step at which no sentence's EOS is blocked
    forced_from: int  # the first step at which some sentence's EOS is forced

    @classmethod
    def of(cls, src_lengths: Tensor, config: DecodeConfig) -> _Limits:
        min_out, max_out = length_limits(src_lengths, config)
        return cls(min_out, max_out, max(min_out.tolist(), default=0), min(max_out.tolist(), default=0))

    def at(self, step: int, sentences: Tensor) -> tuple[Tensor | None, Tensor | None]:
        """``(min_out, max_out)`` of the rows of ``sentences`` ``(rows,)`` at ``step``, each None where it
        binds no row: :func:`_constrain` then builds no mask (on most steps)."""
        blocked = self.min_out[sentences] if step < self.blocked_until else None
        return blocked, self.max_out[sentences] if step >= self.forced_from else None


def _constrain(
    log_probs: Tensor, step: int, history: Tensor, min_out: Tensor | None, max_out: Tensor | None, no_repeat: int
) -> Tensor:
    """Set to -inf, in place, what may not come next: PAD, BOS, repeated n-grams, EOS before
    ``min_out``, and all but EOS at ``max_out``. Full ``(rows, vocab)`` masks only where needed:
    this runs every step.

    Args:
        log_probs: ``(rows, vocab)``, this step's fresh output; history: ``(rows, step)``;
        min_out, max_out: ``(rows,)``, each None on a step where it cannot apply to any row (:meth:`_Limits.at`).
    """
    log_probs[:, PAD_ID] = float("-inf")
    log_probs[:, BOS_ID] = float("-inf")
    if no_repeat:
        log_probs.masked_fill_(repeated_ngrams(history, no_repeat, log_probs.size(1)), float("-inf"))
    if min_out is not None:
        log_probs[:, EOS_ID].masked_fill_(step < min_out, float("-inf"))
    if max_out is not None:
        at_limit = (step >= max_out).nonzero().squeeze(1)  # (ending,) rows that must end now
        if at_limit.numel():
            eos = log_probs[at_limit, EOS_ID]
            log_probs[at_limit] = float("-inf")
            log_probs[at_limit, EOS_ID] = eos
    return log_probs


def _collect(
    finished: list[list[Hypothesis]],
    sentences: Tensor,
    history: Tensor,
    log_probs: Tensor,
    attention: Tensor,
    src_lengths: Tensor,
    config: DecodeConfig,
) -> None:
    """Append ended hypotheses to ``finished[sentence]``.

    Args:
        sentences: ``(ended,)`` positions in the input batch; history: ``(ended, steps)``;
        log_probs: ``(ended,)``, EOS included; attention: ``(ended, steps, src_len)``.
    """
    penalty = LENGTH_PENALTIES[config.length_penalty](history.size(1) + 1, config.alpha)
    attention = attention.cpu()
    lengths = src_lengths[sentences].tolist()
    rows = zip(sentences.tolist(), history.tolist(), log_probs.tolist(), lengths, strict=True)
    for i, (sentence, tokens, log_prob, length) in enumerate(rows):
        finished[sentence].append(Hypothesis(tokens, log_prob / penalty, log_prob, attention[i, :, :length]))


class StoppingRule:
    """When a sentence's beam search may stop without changing its n-best list.

    It keeps, per sentence, the normalised scores of its n best finished hypotheses, and a table
    ``best_penalty[a, b]``: the largest length penalty of a hypothesis length in ``[a, b]``
    (lengths count the EOS). A live beam's log-probability ``s`` (≤ 0) can only fall, so no
    hypothesis grown from it scores better than ``s`` over the largest penalty of a length it may
    still end at; once the n-th best finished hypothesis scores at least that for every live
    beam, the n-best list is final.
    """

    def __init__(self, *, batch: int, max_out: Tensor, config: DecodeConfig) -> None:
        self.penalty = functools.partial(LENGTH_PENALTIES[config.length_penalty], alpha=config.alpha)
        self.max_out = max_out  # (batch,)
        top = int(max_out.max()) + 2 if max_out.numel() else 1
        lengths = torch.tensor([self.penalty(length) for length in range(top)], dtype=torch.float64)
        below = torch.ones(top, top, dtype=torch.bool).tril(-1)  # (a, b): b < a, no length
        best = lengths.expand(top, top).masked_fill(below, float("-inf")).cummax(dim=1).values
        self.best_penalty = best.to(max_out.device)  # (top, top)
        self.kept = torch.full((batch, config.n_best), float("-inf"), dtype=torch.float64, device=max_out.device)

    def add(self, alive: Tensor, log_probs: Tensor, ended: Tensor, step: int) -> None:
        """Count the hypotheses that ended at ``step`` (their length: ``step + 1``).

        Args:
            alive: ``(sents,)`` the sentences; log_probs: ``(sents, k)`` candidates' log-probabilities;
            ended: ``(sents, k)`` which of them are finished hypotheses.
        """
        scores = log_probs.double().masked_fill(~ended, float("-inf")) / self.penalty(step + 1)
        n = self.kept.size(1)
        self.kept[alive] = torch.cat([self.kept[alive], scores], dim=1).topk(n, dim=1).values

    def done(self, alive: Tensor, best_live: Tensor, step: int) -> Tensor:
        """``(sents,)`` bool: which sentences may stop after ``step``, given the best log-probability of
        their live beams ``(sents,)`` (``-inf`` for none), which have ``step + 1`` tokens."""
        first = min(step + 2, len(self.best_penalty) - 1)  # the shortest length a live beam may end at
        reachable = best_live / self.best_penalty[first, self.max_out[alive] + 1]
        return (self.kept[alive, -1] >= reachable) | (step >= self.max_out[alive])


def _attention_dtype(weights: Tensor) -> torch.dtype:
    """The dtype hypotheses keep attention in: the model's (float64 stays float64), at least float32
    (bf16 and fp16 weights under autocast are widened)."""
    return torch.promote_types(weights.dtype, torch.float32)


def _extend(history: Tensor, attention: Tensor, tokens: Tensor, weights: Tensor) -> tuple[Tensor, Tensor]:
    """The histories extended by this step.

    Args:
        history: ``(rows, step)``; attention: ``(rows, step, src_len)``; tokens: the rows' new tokens
        ``(rows,)``; weights: their attention at this step ``(rows, src_len)``.

    Returns:
        history ``(rows, step + 1)`` and attention ``(rows, step + 1, src_len)``.
    """
    history = torch.cat([history, tokens.unsqueeze(1)], dim=1)
    attention = torch.cat([attention, weights.unsqueeze(1).to(attention.dtype)], dim=1)
    return history, attention


@torch.no_grad()
def greedy_search(
    model: Decodable, src: Tensor, src_lengths: Tensor, *, config: DecodeConfig
) -> list[list[Hypothesis]]:
    """The most probable token at every step, for every sentence of ``src`` ``(batch, src_len)`` at once.

    Returns:
        for each sentence, in input order, a list holding its one hypothesis.
    """
    batch = src.size(0)
    limits = _Limits.of(src_lengths, config)
    state = model.encode(src, src_lengths)
    alive = torch.arange(batch, device=src.device)  # (rows,): each row's sentence
    tokens = src.new_full((batch,), BOS_ID)
    history = src.new_empty(batch, 0)  # (rows, step)
    attention = torch.empty(batch, 0, src.size(1), device=src.device)  # (rows, step, src_len)
    scores = torch.zeros(batch, device=src.device)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while alive.numel():
        log_probs, weights, state = model.step(tokens, state)  # (rows, vocab), (rows, src_len)
        if step == 0:
            attention = attention.to(_attention_dtype(weights))
        log_probs = _constrain(log_probs, step, history, *limits.at(step, alive), config.no_repeat_ngram)
        best, tokens = log_probs.max(dim=1)  # (rows,)
        scores = scores + best
        ended = tokens == EOS_ID
        if ended.any():  # most steps end no sentence: nothing to collect or drop
            _collect(finished, alive[ended], history[ended], scores[ended], attention[ended], src_lengths, config)
            keep = (~ended).nonzero().squeeze(1)
            tokens, history, attention, weights = tokens[keep], history[keep], attention[keep], weights[keep]
            alive, scores, state = alive[keep], scores[keep], state.index_select(keep)
        history, attention = _extend(history, attention, tokens, weights)
        step += 1
    return finished


@torch.no_grad()
def beam_search(model: Decodable, src: Tensor, src_lengths: Tensor, *, config: DecodeConfig) -> list[list[Hypothesis]]:
    """Beam search of width k = ``config.beam`` for every sentence of ``src`` ``(batch, src_len)`` at once.

    Each step scores all k · vocab continuations of a sentence's k beams and keeps the best
    2k: those of them that end in EOS and rank among the first k become finished hypotheses,
    and the best k that do not become the next beams. A sentence is done at ``max_out``, where
    every beam is forced to end, or once no live beam can beat its ``n_best``-th finished
    hypothesis (:class:`StoppingRule`). So the n-best list is the best of what the beam kept, and
    with k ≥ vocab ** max_out nothing is pruned and it is exactly the n best of all outputs. With
    beam 1 this is greedy search.

    Returns:
        for each sentence, in input order, its ``config.n_best`` best hypotheses (fewer only if
        fewer could be found), best first by normalised score.
    """
    k, batch = config.beam, src.size(0)
    device = src.device
    limits = _Limits.of(src_lengths, config)
    stopping = StoppingRule(batch=batch, max_out=limits.max_out, config=config)
    state = model.encode(src, src_lengths)  # (batch,) rows until the first step has run
    alive = torch.arange(batch, device=device)  # (sents,): the live sentences
    scores = torch.full((batch, k), float("-inf"), device=device)  # (sents, k) cumulative log-probs
    scores[:, 0] = 0.0  # all k beams start identical: grow only the first
    tokens = src.new_full((batch,), BOS_ID)  # after the first step, rows are sentence-major: sent · k + beam
    history = src.new_empty(batch * k, 0)  # (rows, step)
    attention = torch.empty(batch * k, 0, src.size(1), device=device)  # (rows, step, src_len)
    finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
    step = 0
    while alive.numel():
        sents = alive.numel()
        log_probs, weights, state = model.step(tokens, state)  # (rows, vocab), (rows, src_len)
        row_sent = alive.repeat_interleave(k)  # (rows,): each row's sentence
        if step == 0:  # a sentence's k beams start identical: its one row ran, now it becomes k
            log_probs, weights, state = log_probs[row_sent], weights[row_sent], state.index_select(row_sent)
            attention = attention.to(_attention_dtype(weights))
        log_probs = _constrain(log_probs, step, history, *limits.at(step, row_sent), config.no_repeat_ngram)
        vocab = log_probs.size(1)
        candidates = (scores.view(-1, 1) + log_probs).view(sents, k * vocab)
        top, index = candidates.topk(2 * k, dim=1)  # (sents, 2k)
        words = index % vocab
        rows = index // vocab + torch.arange(sents, device=device).unsqueeze(1) * k  # (sents, 2k) parent rows

        ends = (words == EOS_ID) & top.isfinite()
        ends[:, k:] = False  # an EOS behind k live candidates cannot be among the k best
        parents = rows[ends]
        ended_sents = alive.unsqueeze(1).expand(-1, 2 * k)[ends]
        _collect(finished, ended_sents, history[parents], top[ends], attention[parents], src_lengths, config)
        stopping.add(alive, top[:, :k], ends[:, :k], step)

        next_scores, pick = top.masked_fill(words == EOS_ID, float("-inf")).topk(k, dim=1)  # (sents, k)
        done = stopping.done(alive, next_scores[:, 0], step)  # (sents,)
        keep = (~done).nonzero().squeeze(1)
        parents = rows.gather(1, pick)[keep].flatten()  # (rows',)
        tokens = words.gather(1, pick)[keep].flatten()
        history, attention = _extend(history[parents], attention[parents], tokens, weights[parents])
        state = state.index_select(parents, memory=keep.numel() < sents)  # memory moves only when sentences end
        alive, scores = alive[keep], next_scores[keep]
        step += 1
    return [sorted(hyps, key=lambda h: -h.score)[: config.n_best] for hyps in finished]


class EnsembleState(NamedTuple):
    """The states of every model of an :class:`Ensemble`, reordered together."""

    states: tuple[Any, ...]

    def index_select(self, index: Tensor, *, memory: bool = True) -> EnsembleState:
        return EnsembleState(tuple(state.index_select(index, memory=memory) for state in self.states))


class Ensemble:
    """Several models with the same vocabularies, decoding as one: at every step the
    log-probabilities (and attention weights) of the members are averaged."""

    def __init__(self, *, models: Sequence[Decodable]) -> None:
        if not models:
            raise ValueError("an ensemble needs at least one model")
        self.models = list(models)

    @property
    def max_src_len(self) -> int | None:
        """The shortest source limit among the members (location scorers), else None."""
        limits = [m.max_src_len for m in self.models if getattr(m, "max_src_len", None) is not None]
        return min(limits, default=None)

    def encode(self, src: Tensor, src_lengths: Tensor) -> EnsembleState:
        return EnsembleState(tuple(model.encode(src, src_lengths) for model in self.models))

    def step(self, tokens: Tensor, state: EnsembleState) -> tuple[Tensor, Tensor, EnsembleState]:
        """Averaged ``(batch, vocab)`` log-probabilities, averaged ``(batch, src_len)`` attention, next state."""
        outputs = [model.step(tokens, s) for model, s in zip(self.models, state.states, strict=True)]
        log_probs = torch.stack([out[0] for out in outputs]).mean(0)
        attention = torch.stack([out[1] for out in outputs]).mean(0)
        return log_probs, attention, EnsembleState(tuple(out[2] for out in outputs))


def source_words(text: str, pieces: Sequence[str], word_of: Sequence[int]) -> list[str]:
    """The word of ``text`` that each of its ``pieces`` (as the model read them, maybe a prefix) belongs to.

    ``word_of`` is each piece's word index (``Tokenizer.word_ids``).
    """
    words = text.split()
    # a normalisation that splits words unlike str.split leaves the piece's own text
    return [words[i] if i < len(words) else piece.lstrip("▁") for piece, i in zip(pieces, word_of, strict=True)]


def replace_unknowns(
    hypothesis: Hypothesis, piece_words: Sequence[str], tokenizer: Tokenizer, dictionary: Mapping[str, str]
) -> str:
    """The detokenised text of ``hypothesis`` with every UNK replaced (Luong et al. 2015, §4.1).

    The replacement for the UNK at step t is the source word under the most attended source
    piece of that step (the source EOS is never chosen), translated by ``dictionary`` when it
    has the word and copied otherwise. It stands as a word of its own between the decoded
    stretches of known tokens.

    Args:
        piece_words: the word of every source piece, from :func:`source_words`.
    """
    parts, start = [], 0
    tokens = hypothesis.tokens
    for t, token in enumerate(tokens):
        if token == UNK_ID:
            word = piece_words[int(hypothesis.attention[t, : len(piece_words)].argmax())]
            parts += [tokenizer.decode(tokens[start:t]), dictionary.get(word, word)]
            start = t + 1
    parts.append(tokenizer.decode(tokens[start:]))
    return " ".join(part for part in parts if part)
