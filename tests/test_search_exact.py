"""Beam search against exhaustive enumeration: with a beam wide enough to hold every prefix, the
n-best list is the n best of all hypotheses, for every length penalty (float64 throughout)."""

from __future__ import annotations

import math
import zlib
from typing import NamedTuple

import pytest
import torch

from nmt.config import DecodeConfig
from nmt.search import LENGTH_PENALTIES, Ensemble, beam_search, decode, length_limits
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID

VOCAB = 6  # PAD, UNK, BOS, EOS and two words: three tokens may continue a prefix
LONGEST = 4  # output tokens at most, so VOCAB ** LONGEST beams hold every prefix
WIDE = VOCAB**LONGEST
PENALTIES = [("none", 0.0), ("average", 0.0), ("gnmt", 0.6), ("gnmt", 1.0), ("gnmt", 2.0)]
pytestmark = pytest.mark.usefixtures("one_thread")  # thousands of tiny rows: a second thread only waits

SOURCES = [[4, 5, EOS_ID], [5, 4, 4, 5, EOS_ID], [5, EOS_ID], [4, 4, 5, 4, 5, 4, EOS_ID], [4, 5, 5, EOS_ID]] * 4


def enumerate_best(model, src: list[int], config: DecodeConfig) -> list[tuple[list[int], float]]:
    """The ``config.n_best`` best hypotheses of one sentence by brute force, best first: every
    output of ``min_out`` to ``max_out`` tokens (no PAD or BOS), scored as search scores it."""
    src_t, lengths = torch.tensor([src]), torch.tensor([len(src)])
    (min_out,), (max_out,) = (limit.tolist() for limit in length_limits(lengths, config))
    penalty = LENGTH_PENALTIES[config.length_penalty]
    state, tokens = model.encode(src_t, lengths), torch.tensor([BOS_ID])
    prefixes: list[tuple[list[int], float]] = [([], 0.0)]  # the live prefixes and their log-probabilities
    hypotheses = []
    for step in range(max_out + 1):
        log_probs, _, state = model.step(tokens, state)  # (prefixes, vocab)
        grown, parents = [], []
        for row, (prefix, so_far) in enumerate(prefixes):
            for word, log_p in enumerate(log_probs[row].tolist()):
                if word in (PAD_ID, BOS_ID) or log_p == -math.inf:
                    continue
                if word == EOS_ID and step >= min_out:
                    hypotheses.append((prefix, (so_far + log_p) / penalty(step + 1, config.alpha)))
                elif word != EOS_ID and step < max_out:
                    grown.append(([*prefix, word], so_far + log_p))
                    parents.append(row)
        if not grown:
            break
        prefixes, tokens = grown, torch.tensor([prefix[-1] for prefix, _ in grown])
        state = state.index_select(torch.tensor(parents))
    return sorted(hypotheses, key=lambda h: -h[1])[: config.n_best]


class TableState(NamedTuple):
    """Rows: the padded source, its length and the tokens fed so far (BOS first)."""

    src: torch.Tensor
    length: torch.Tensor
    prefix: torch.Tensor

    def index_select(self, index: torch.Tensor, *, memory: bool = True) -> TableState:
        return TableState(*(t.index_select(0, index) for t in self))


class RandomTable:
    """A fake model whose next-token distribution after each prefix is a fixed random draw, seeded
    by the sentence's first source id, its length and the prefix: a step table too large to write
    by hand. Its attention is uniform over the source."""

    def __init__(self) -> None:
        self.table: dict[tuple[int, ...], torch.Tensor] = {}

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> TableState:
        return TableState(src, src_lengths, src.new_empty(src.size(0), 0))

    def next_log_probs(self, key: tuple[int, ...]) -> torch.Tensor:
        if key not in self.table:
            generator = torch.Generator().manual_seed(zlib.crc32(bytes(key)))
            self.table[key] = torch.log_softmax(torch.randn(VOCAB, generator=generator, dtype=torch.float64) * 2, 0)
        return self.table[key]

    def step(self, tokens: torch.Tensor, state: TableState) -> tuple[torch.Tensor, torch.Tensor, TableState]:
        prefix = torch.cat([state.prefix, tokens.unsqueeze(1)], dim=1)
        keys = zip(state.src[:, 0].tolist(), state.length.tolist(), prefix.tolist(), strict=True)
        log_probs = torch.stack([self.next_log_probs((first, length, *seen)) for first, length, seen in keys])
        attention = torch.ones(tokens.numel(), state.src.size(1), dtype=torch.float64) / state.length.unsqueeze(1)
        return log_probs, attention, TableState(state.src, state.length, prefix)


def settings(penalty: str, alpha: float, n_best: int) -> DecodeConfig:
    """A beam that holds every prefix; sources of S positions allow min(S, LONGEST) tokens."""
    return DecodeConfig(
        beam=WIDE, n_best=n_best, length_penalty=penalty, alpha=alpha, max_len_ratio=1.0, max_len=LONGEST
    )


def pad(sources: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    lengths = torch.tensor([len(s) for s in sources])
    src = torch.full((len(sources), int(lengths.max())), PAD_ID)
    for i, s in enumerate(sources):
        src[i, : len(s)] = torch.tensor(s)
    return src, lengths


def assert_exact(model, sources: list[list[int]], config: DecodeConfig) -> None:
    """Search (all sentences in one batch) returns the enumeration's n best, scores to 1e-9."""
    for src, got in zip(sources, beam_search(model, *pad(sources), config=config), strict=True):
        want = enumerate_best(model, src, config)
        assert [(h.tokens, h.score) for h in got] == [(t, pytest.approx(s, abs=1e-9)) for t, s in want], src


@pytest.mark.parametrize(("penalty", "alpha"), PENALTIES)
def test_n_best_equals_enumeration_on_random_tables(penalty: str, alpha: float) -> None:
    sources = [[first, *src[1:]] for first, src in enumerate(SOURCES, start=4)]  # a table per sentence
    for n_best in (1, 2, 3):
        assert_exact(RandomTable(), sources, settings(penalty, alpha, n_best))


def tiny_model(make_model, seed: int, **fields: object):
    """A float64 model of :data:`VOCAB` words, its weights uniform in [-2, 2]: peaked enough that a
    search which stops early misses (these seeds made the former stopping rule miss)."""
    torch.manual_seed(seed)
    return make_model(vocab=VOCAB, init=2.0, **fields)


@pytest.mark.parametrize(("penalty", "alpha"), PENALTIES)
def test_n_best_equals_enumeration_on_tiny_models(make_model, penalty: str, alpha: float) -> None:
    for seed in (20, 34):
        model = tiny_model(make_model, seed)
        for n_best in (1, 2, 3):
            assert_exact(model, SOURCES[:5], settings(penalty, alpha, n_best))


def test_an_ensemble_is_searched_exactly(make_model) -> None:
    ensemble = Ensemble(models=[tiny_model(make_model, 24), tiny_model(make_model, 1024, score="dot")])
    for penalty, alpha in PENALTIES:
        for n_best in (1, 3):
            assert_exact(ensemble, SOURCES[:5], settings(penalty, alpha, n_best))


@pytest.mark.parametrize("beam", [1, 3])
def test_hypotheses_keep_the_models_dtype(make_model, beam: int) -> None:
    model = make_model(vocab=VOCAB)
    config = DecodeConfig(beam=beam, n_best=beam, max_len=LONGEST)
    for hyps in decode(model, *pad(SOURCES[:5]), config=config):
        assert hyps and all(h.attention.dtype == torch.float64 for h in hyps)
