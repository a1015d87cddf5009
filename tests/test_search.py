"""Search against a fake model whose step probabilities are a hand-written table, and
properties of search on a small real model (beam 1 = greedy, alone = in a batch, ...)."""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import pytest
import torch

from nmt.config import ConfigError, DecodeConfig
from nmt.search import (
    LENGTH_PENALTIES,
    Ensemble,
    Hypothesis,
    beam_search,
    check_config,
    decode,
    greedy_search,
    length_limits,
    repeated_ngrams,
    replace_unknowns,
    source_words,
)
from nmt.tokenizer import BOS_ID, EOS_ID, UNK_ID, WordTokenizer, word_ids

A, B = 4, 5  # the fake's two words; ids 0-3 are PAD, UNK, BOS, EOS
VOCAB = 6

# Sentence "7": what follows each output prefix (tokens after BOS), as probabilities.
# A prefix not listed ends with certainty (EOS 1.0).
TABLE = {
    (): {A: 0.6, B: 0.4},
    (A,): {EOS_ID: 0.4, A: 0.35, B: 0.25},
    (B,): {A: 0.75, EOS_ID: 0.25},
    (B, A): {EOS_ID: 0.6, A: 0.2, B: 0.2},
    (A, A): {EOS_ID: 0.5, A: 0.25, B: 0.25},
}
# Sentence "8": greedy would say "A A".
REPEATING = {
    (): {A: 0.9, B: 0.1},
    (A,): {A: 0.6, EOS_ID: 0.4},
}
# Sentence "6": two poor hypotheses finish early while a strong beam lives on.
TRAP = {
    (): {A: 0.99, B: 0.01},
    (A,): {A: 0.99, EOS_ID: 0.01},
    (A, A): {A: 0.99, EOS_ID: 0.01},
}
TABLES = {6: TRAP, 7: TABLE, 8: REPEATING}
# Sentence 7's source: 4 positions, the last being the source EOS_ID.
SRC_7 = [7, 9, 9, EOS_ID]


class FakeState(NamedTuple):
    """Rows: the padded source, its length and the tokens fed so far (BOS first)."""

    src: torch.Tensor
    length: torch.Tensor
    prefix: torch.Tensor

    def index_select(self, index: torch.Tensor, *, memory: bool = True) -> FakeState:
        src, length = (t.index_select(0, index) for t in (self.src, self.length)) if memory else (self.src, self.length)
        return FakeState(src, length, self.prefix.index_select(0, index))


class FakeModel:
    """``step`` looks the output prefix up in ``TABLES[src[0]]``; the attention is one-hot on
    position ``previous token % source length``, so a hypothesis's attention rows are known too.
    ``rows`` records the batch size of every step."""

    def __init__(self) -> None:
        self.rows: list[int] = []

    def encode(self, src: torch.Tensor, src_lengths: torch.Tensor) -> FakeState:
        return FakeState(src, src_lengths, src.new_empty(src.size(0), 0))

    def step(self, tokens: torch.Tensor, state: FakeState) -> tuple[torch.Tensor, torch.Tensor, FakeState]:
        self.rows.append(tokens.numel())
        prefix = torch.cat([state.prefix, tokens.unsqueeze(1)], dim=1)
        log_probs = torch.full((tokens.numel(), VOCAB), -math.inf, dtype=torch.float64)
        for row, (key, seen) in enumerate(zip(state.src[:, 0].tolist(), prefix.tolist(), strict=True)):
            for word, p in TABLES[key].get(tuple(seen[1:]), {EOS_ID: 1.0}).items():
                log_probs[row, word] = math.log(p)
        attention = torch.nn.functional.one_hot(tokens % state.length, state.src.size(1)).double()
        return log_probs, attention, FakeState(state.src, state.length, prefix)


def batch(*sources: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad sources into ``(batch, src_len)`` ids and ``(batch,)`` lengths."""
    lengths = torch.tensor([len(s) for s in sources])
    src = torch.zeros(len(sources), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(sources):
        src[i, : len(s)] = torch.tensor(s)
    return src, lengths


def settings(**fields: object) -> DecodeConfig:
    """Decode settings with no length limits in the way unless asked."""
    return DecodeConfig(**{"max_len_ratio": 10.0, "length_penalty": "none", **fields})


def one_hot_rows(positions: list[int], width: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(torch.tensor(positions), width).float()


def test_greedy_follows_the_table() -> None:
    # step 0: A (0.6) over B (0.4); after A: EOS_ID (0.4) over A (0.35) and B (0.25).
    (hyps,) = greedy_search(FakeModel(), *batch(SRC_7), config=settings(beam=1, n_best=1))
    (best,) = hyps
    assert best.tokens == [A]
    assert best.log_prob == pytest.approx(math.log(0.6 * 0.4))
    # row 0 was produced after BOS (2): position 2 % 4 = 2
    assert torch.equal(best.attention, one_hot_rows([2], 4))


def test_beam_two_by_hand() -> None:
    # step 0: beams A (.6), B (.4).
    # step 1: B A .4*.75 = .30, A EOS_ID .6*.4 = .24, A A .6*.35 = .21, A B .6*.25 = .15, B EOS_ID .4*.25 = .10;
    #   the best 2k = 4 are .30 .24 .21 .15; "A EOS_ID" ranks 2nd (< k): finished [A] .24;
    #   beams: B A (.30), A A (.21).
    # step 2: B A EOS_ID .30*.6 = .18, A A EOS_ID .21*.5 = .105, then .06, .06, .0525, .0525;
    #   both EOS_ID rank among the first 2: finished [B A] .18 and [A A] .105; 3 >= k finished: done.
    # Raw log-probability order: [A] .24 > [B A] .18 > [A A] .105.
    (hyps,) = beam_search(FakeModel(), *batch(SRC_7), config=settings(beam=2, n_best=2))
    assert [h.tokens for h in hyps] == [[A], [B, A]]
    assert [h.log_prob for h in hyps] == pytest.approx([math.log(0.24), math.log(0.18)])
    assert [h.score for h in hyps] == pytest.approx([math.log(0.24), math.log(0.18)])
    # [B A]: B came after BOS (2 % 4 = 2), A after B (5 % 4 = 1)
    assert torch.equal(hyps[1].attention, one_hot_rows([2, 1], 4))


def test_beam_does_not_stop_while_a_live_beam_is_better() -> None:
    # step 1: A A .9801 (live), B EOS .01 (2nd < k: finished [B]), A EOS .0099.
    # step 2: A A A .9703 (live), A A EOS .0098 (2nd: finished [A A]); two finished, but the best
    #   candidate lives, so search goes on (fairseq would stop here with [B] .01 as its best).
    # step 3: A A A EOS .9703 is the best candidate: done.
    (hyps,) = beam_search(FakeModel(), *batch([6, 9, EOS_ID]), config=settings(beam=2, n_best=2))
    assert [h.tokens for h in hyps] == [[A, A, A], [B]]
    assert [h.log_prob for h in hyps] == pytest.approx([3 * math.log(0.99), math.log(0.01)])


@pytest.mark.parametrize(
    ("penalty", "alpha", "expected"),
    [
        # average, length = tokens + EOS_ID: [A] ln(.24)/2 = -0.714, [B A] ln(.18)/3 = -0.572,
        # [A A] ln(.105)/3 = -0.751; the live beams B A A and B A B (.06 each) could still beat [A],
        # and do: ln(.06)/4 = -0.703 (a tie, so either may come second)
        ("average", 0.6, [([B, A], math.log(0.18) / 3), (None, math.log(0.06) / 4)]),
        # gnmt, α = 1, lp = (5 + len) / 6: [A] ln(.24)/(7/6) = -1.223, [B A] ln(.18)/(8/6) = -1.286
        ("gnmt", 1.0, [([A], math.log(0.24) * 6 / 7), ([B, A], math.log(0.18) * 6 / 8)]),
    ],
)
def test_length_penalty_by_hand(penalty: str, alpha: float, expected: list[tuple[list[int] | None, float]]) -> None:
    config = settings(beam=2, n_best=2, length_penalty=penalty, alpha=alpha)
    (hyps,) = beam_search(FakeModel(), *batch(SRC_7), config=config)
    assert [h.tokens for h, (tokens, _) in zip(hyps, expected, strict=True) if tokens] == [t for t, _ in expected if t]
    assert [h.score for h in hyps] == pytest.approx([score for _, score in expected])


def test_no_repeat_ngram_by_hand() -> None:
    # sentence 8 greedily: A (.9), A (.6), EOS_ID -> [A A]; with unigram blocking the second A is
    # banned, so EOS_ID (.4): [A] with .9 * .4.
    src = batch([8, 9, EOS_ID])
    (plain,) = greedy_search(FakeModel(), *src, config=settings(beam=1))
    (blocked,) = greedy_search(FakeModel(), *src, config=settings(beam=1, no_repeat_ngram=1))
    assert plain[0].tokens == [A, A]
    assert blocked[0].tokens == [A]
    assert blocked[0].log_prob == pytest.approx(math.log(0.9 * 0.4))


def test_repeated_ngrams() -> None:
    history = torch.tensor([[A, B, A], [B, B, A]])
    banned = repeated_ngrams(history, 2, VOCAB)
    # row 0 continues "A", seen followed by B; row 1 continues "A", never seen before as a prefix
    assert banned[0].nonzero().flatten().tolist() == [B]
    assert not banned[1].any()
    assert not repeated_ngrams(history, 4, VOCAB).any()  # no 4-gram in 3 tokens


def test_min_and_max_length_by_hand() -> None:
    # min_len_ratio .5 of 4 source positions: at least 2 tokens. Greedy: A; EOS_ID banned, so A (.35);
    # after A A, EOS_ID (.5).
    (hyps,) = greedy_search(FakeModel(), *batch(SRC_7), config=settings(beam=1, min_len_ratio=0.5))
    assert hyps[0].tokens == [A, A]
    assert hyps[0].log_prob == pytest.approx(math.log(0.6 * 0.35 * 0.5))
    # max_len 1: step 1 must end every beam: A EOS_ID .24, B EOS_ID .10.
    (hyps,) = beam_search(FakeModel(), *batch(SRC_7), config=settings(beam=2, n_best=2, max_len=1))
    assert [h.tokens for h in hyps] == [[A], [B]]
    assert [h.log_prob for h in hyps] == pytest.approx([math.log(0.24), math.log(0.1)])


def test_length_limits() -> None:
    config = DecodeConfig(min_len_ratio=0.1, max_len_ratio=1.5, max_len=40)
    min_out, max_out = length_limits(torch.tensor([1, 3, 30, 100]), config)
    assert min_out.tolist() == [1, 1, 3, 10]  # ceil(0.1 · S); 0.1 · 30 is 3, not 4
    assert max_out.tolist() == [1, 4, 40, 40]  # floor(1.5 · S), at most 40


def test_finished_sentences_leave_the_batch() -> None:
    # Greedy: sentence 7 ends at step 1 ([A] EOS_ID), sentence 8 at step 2 ([A A] EOS_ID).
    model = FakeModel()
    results = greedy_search(model, *batch(SRC_7, [8, 9, EOS_ID]), config=settings(beam=1))
    assert [hyps[0].tokens for hyps in results] == [[A], [A, A]]
    assert model.rows == [2, 2, 1]


def test_beam_batch_equals_alone_on_the_table() -> None:
    config = settings(beam=2, n_best=2)
    together = beam_search(FakeModel(), *batch([8, 9, EOS_ID], SRC_7), config=config)
    alone = [beam_search(FakeModel(), *batch(src), config=config)[0] for src in ([8, 9, EOS_ID], SRC_7)]
    for got, want in zip(together, alone, strict=True):
        assert [h.tokens for h in got] == [h.tokens for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want])
        assert all(torch.equal(g.attention, w.attention) for g, w in zip(got, want, strict=True))


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="n_best"):
        check_config(settings(beam=2, n_best=3))
    with pytest.raises(ConfigError, match="did you mean 'average'"):
        check_config(settings(length_penalty="averag"))
    with pytest.raises(ConfigError, match=r"decode\.precision: unknown value 'bf61'"):
        check_config(settings(precision="bf61"))
    with pytest.raises(ConfigError, match=r"decode\.workers must be positive"):
        check_config(settings(workers=0))


# --- a small real model -------------------------------------------------------------------------

REAL = 11  # vocabulary of the conftest model


@pytest.fixture
def sources() -> tuple[torch.Tensor, torch.Tensor]:
    """Three sentences of lengths 5, 3 and 7 over words 4..10, each ending with EOS."""
    generator = torch.Generator().manual_seed(3)
    texts = [[*torch.randint(4, REAL, (n,), generator=generator).tolist(), EOS_ID] for n in (4, 2, 6)]
    return batch(*texts)


def real_settings(**fields: object) -> DecodeConfig:
    return DecodeConfig(**{"max_len_ratio": 3.0, "max_len": 12, **fields})


@pytest.mark.parametrize("model_fields", [{}, {"align": "local-p", "window": 1}, {"input_feed": False}])
def test_beam_one_equals_greedy(make_model, sources, model_fields) -> None:
    model = make_model(vocab=REAL, **model_fields)
    greedy = greedy_search(model, *sources, config=real_settings(beam=1))
    beam = beam_search(model, *sources, config=real_settings(beam=1))
    for (g,), (b,) in zip(greedy, beam, strict=True):
        assert g.tokens == b.tokens
        assert g.log_prob == pytest.approx(b.log_prob)
        torch.testing.assert_close(g.attention, b.attention)


@pytest.mark.parametrize("beam", [1, 3])
def test_bf16_search_runs_the_model_in_bf16(make_model, sources, beam) -> None:
    model = make_model(vocab=REAL).float()
    src, lengths = sources
    fp32 = decode(model, src, lengths, config=real_settings(beam=beam))
    bf16 = decode(model, src, lengths, config=real_settings(beam=beam, precision="bf16"))
    for (a, *_), (b, *_) in zip(fp32, bf16, strict=True):
        assert a.log_prob != b.log_prob  # bf16 products: not the fp32 numbers
        if a.tokens == b.tokens:
            assert b.log_prob == pytest.approx(a.log_prob, abs=0.1)


def test_alone_equals_in_batch(make_model, sources) -> None:
    model = make_model(vocab=REAL)
    src, lengths = sources
    config = real_settings(beam=3, n_best=3, length_penalty="gnmt")
    together = beam_search(model, src, lengths, config=config)
    for i, got in enumerate(together):
        (alone,) = beam_search(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], config=config)
        assert [h.tokens for h in got] == [h.tokens for h in alone]
        assert [h.score for h in got] == pytest.approx([h.score for h in alone])
        for g, a in zip(got, alone, strict=True):
            torch.testing.assert_close(g.attention, a.attention)


@pytest.mark.parametrize("penalty", list(LENGTH_PENALTIES))
def test_n_best_sorted_and_scores_agree_with_teacher_forcing(make_model, sources, penalty) -> None:
    """Each hypothesis's log-probability and attention equal a teacher-forced pass over it."""
    model = make_model(vocab=REAL)
    config = real_settings(beam=4, n_best=4, length_penalty=penalty, alpha=0.8)
    src, lengths = sources
    for i, hyps in enumerate(beam_search(model, src, lengths, config=config)):
        scores = [h.score for h in hyps]
        assert scores == sorted(scores, reverse=True)
        for h in hyps:
            length = len(h.tokens) + 1
            assert h.score == pytest.approx(h.log_prob / LENGTH_PENALTIES[penalty](length, 0.8))
            check_against_teacher_forcing(model, src[i : i + 1, : lengths[i]], lengths[i : i + 1], h)


def check_against_teacher_forcing(model, src: torch.Tensor, lengths: torch.Tensor, h: Hypothesis) -> None:
    tgt_in = torch.tensor([[BOS_ID, *h.tokens]])
    with torch.no_grad():
        logits, attention = model(src, lengths, tgt_in)
    log_probs = torch.log_softmax(logits[0], dim=-1)  # (len + 1, vocab)
    gold = torch.tensor([*h.tokens, EOS_ID])
    assert h.log_prob == pytest.approx(log_probs.gather(1, gold.unsqueeze(1)).sum().item())
    torch.testing.assert_close(h.attention, attention[0, : len(h.tokens)])  # the model's dtype, float64


@pytest.mark.parametrize("beam", [1, 3])
def test_length_limits_hold(make_model, sources, beam) -> None:
    model = make_model(vocab=REAL)
    src, lengths = sources
    for min_ratio, max_ratio, cap in [(0.0, 0.5, 12), (1.0, 1.5, 12), (1.5, 3.0, 4)]:
        config = DecodeConfig(beam=beam, n_best=beam, min_len_ratio=min_ratio, max_len_ratio=max_ratio, max_len=cap)
        min_out, max_out = length_limits(lengths, config)
        for hyps, low, high in zip(decode(model, src, lengths, config=config), min_out, max_out, strict=True):
            assert hyps
            assert all(int(low) <= len(h.tokens) <= int(high) for h in hyps)


@pytest.mark.parametrize("beam", [1, 3])
def test_eos_waits_for_each_sentences_own_min_length(make_model, sources, beam) -> None:
    """A model that always prefers EOS ends each sentence at its own min_out (5, 3 and 7 here), and
    at max_out when that is shorter."""
    model = make_model(vocab=REAL)
    with torch.no_grad():
        model.generator.bias[EOS_ID] += 50.0
    src, lengths = sources
    for max_len in (12, 4):
        config = DecodeConfig(beam=beam, n_best=1, min_len_ratio=1.0, max_len_ratio=3.0, max_len=max_len)
        min_out, _ = length_limits(lengths, config)
        assert [len(hyps[0].tokens) for hyps in decode(model, src, lengths, config=config)] == min_out.tolist()


def test_ensemble_of_a_model_with_itself_equals_the_model(make_model, sources) -> None:
    model = make_model(vocab=REAL)
    config = real_settings(beam=3, n_best=2)
    single = beam_search(model, *sources, config=config)
    pair = beam_search(Ensemble(models=[model, model]), *sources, config=config)
    for got, want in zip(pair, single, strict=True):
        assert [h.tokens for h in got] == [h.tokens for h in want]
        assert [h.score for h in got] == pytest.approx([h.score for h in want])


def test_ensemble_step_averages_log_probs(make_model, sources) -> None:
    first, second = make_model(vocab=REAL), make_model(vocab=REAL, score="dot")
    ensemble = Ensemble(models=[first, second])
    tokens = torch.full((sources[0].size(0),), BOS_ID)
    log_probs, attention, _ = ensemble.step(tokens, ensemble.encode(*sources))
    p1, a1, _ = first.step(tokens, first.encode(*sources))
    p2, a2, _ = second.step(tokens, second.encode(*sources))
    torch.testing.assert_close(log_probs, (p1 + p2) / 2)
    torch.testing.assert_close(attention, (a1 + a2) / 2)


# --- unknown-word replacement -------------------------------------------------------------------


def test_source_words_for_sentencepiece_pieces() -> None:
    pieces = ["▁the", "▁Zür", "ich", "▁", "<unk>", "▁is"]
    ids = word_ids(pieces)
    assert source_words("the Zürich ☃ is", pieces, ids) == ["the", "Zürich", "Zürich", "☃", "☃", "is"]
    assert source_words("the Zürich ☃ is far", pieces[:3], ids[:3]) == ["the", "Zürich", "Zürich"]


def test_replace_unknowns_by_hand() -> None:
    words = WordTokenizer(words=["<pad>", "<unk>", "<s>", "</s>", "das", "ist", "in"])
    das, ist, in_ = 4, 5, 6
    # output "das <unk> in <unk>"; source "the Zürich is in Paris" + EOS_ID (6 positions)
    hyp_tokens = [das, UNK_ID, in_, UNK_ID]
    attention = torch.zeros(4, 6)
    attention[1, 1] = 0.9  # the first UNK looks at "Zürich"
    attention[3, 5] = 0.6  # the second looks mostly at the source EOS_ID ...
    attention[3, 4] = 0.3  # ... which never counts, so at "Paris"
    hyp = Hypothesis(hyp_tokens, 0.0, 0.0, attention)
    pieces = ["the", "Zürich", "is", "in", "Paris"]
    piece_words = source_words("the Zürich is in Paris", pieces, words.word_ids(pieces))
    assert replace_unknowns(hyp, piece_words, words, {}) == "das Zürich in Paris"
    assert replace_unknowns(hyp, piece_words, words, {"Paris": "Paris!"}) == "das Zürich in Paris!"
    assert replace_unknowns(hyp._replace(tokens=[das, ist]), piece_words, words, {}) == "das ist"


@pytest.mark.parametrize("beam", [1, 2])
def test_decode_leaves_a_callers_inference_mode_but_not_no_grad(beam: int) -> None:
    # inference mode turns off autocast's cache of cast weights: bf16 search would re-cast every step
    modes = []

    class Spy(FakeModel):
        def step(self, tokens, state):
            modes.append((torch.is_inference_mode_enabled(), torch.is_grad_enabled()))
            return super().step(tokens, state)

    config = settings(beam=beam, n_best=1)
    with torch.inference_mode():
        inside = decode(Spy(), *batch(SRC_7), config=config)
    assert modes and set(modes) == {(False, False)}
    assert [h.tokens for h in inside[0]] == [h.tokens for h in decode(FakeModel(), *batch(SRC_7), config=config)[0]]


def test_decode_picks_greedy_for_beam_one() -> None:
    # with average length normalisation beam 2 prefers [B A] (see above), greedy says [A]
    config = settings(beam=1, length_penalty="average")
    assert decode(FakeModel(), *batch(SRC_7), config=config)[0][0].tokens == [A]
    wider = dataclasses.replace(config, beam=2)
    assert decode(FakeModel(), *batch(SRC_7), config=wider)[0][0].tokens == [B, A]
