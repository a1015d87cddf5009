"""Attention: every scorer × alignment mode against its properties, an oracle and gradcheck."""

from __future__ import annotations

import itertools
import logging
import math

import pytest
import torch
from torch import Tensor, nn

from nmt.attention import ALIGNMENTS, SCORERS, Attention, LocalAlignment, check_window
from nmt.config import AttentionConfig, ConfigError

pytestmark = pytest.mark.usefixtures("seeded", "one_thread")

COMBOS = list(itertools.product(SCORERS, ALIGNMENTS))  # a newly registered scorer or mode is tested too
COMBO_IDS = [f"{score}-{align}" for score, align in COMBOS]
LOCAL = [name for name, cls in ALIGNMENTS.items() if issubclass(cls, LocalAlignment)]


def source(lengths: list[int], hidden: int = 6) -> tuple[Tensor, Tensor]:
    """Values ``(batch, max(lengths), hidden)`` whose padding holds noise, not zeros, and the lengths."""
    return torch.randn(len(lengths), max(lengths), hidden, dtype=torch.float64), torch.tensor(lengths)


def assert_all_close(got: tuple[Tensor, ...], want: tuple[Tensor, ...], tolerance: float = 1e-12) -> None:
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=tolerance, atol=tolerance)


def attend(attention: Attention, query: Tensor, values: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
    return attention(query, attention.prepare(values, lengths))


@pytest.mark.parametrize(("score", "align"), COMBOS, ids=COMBO_IDS)
def test_weights_are_a_distribution_over_the_real_source(score, align, make_attention):
    attention = make_attention(score, align)
    values, lengths = source([7, 4, 1])
    query = torch.randn(3, 9, 6, dtype=torch.float64)
    context, weights = attend(attention, query, values, lengths)
    assert context.shape == (3, 9, 6)
    assert weights.shape == (3, 9, 7)
    assert (weights >= 0).all()
    for b, length in enumerate(lengths.tolist()):
        assert (weights[b, :, length:] == 0).all(), "padding got weight"
    sums = weights.sum(-1)
    if align == "local-p":
        assert ((sums > 0) & (sums <= 1 + 1e-12)).all()
    else:
        torch.testing.assert_close(sums, torch.ones_like(sums))


@pytest.mark.parametrize("align", LOCAL)
@pytest.mark.parametrize("score", SCORERS)
def test_local_weights_vanish_outside_the_window(score, align, make_attention):
    window = 1
    attention = make_attention(score, align, window=window)
    values, lengths = source([7, 5])
    query = torch.randn(2, 8, 6, dtype=torch.float64)
    _, weights = attend(attention, query, values, lengths)
    centre = attention.align.centre(query, lengths, torch.arange(8)).floor()  # (batch, tgt_len)
    distance = (torch.arange(7).view(1, 1, -1) - centre.unsqueeze(-1)).abs()
    real = torch.arange(7) < lengths.view(-1, 1, 1)
    assert (weights[distance > window] == 0).all()
    assert (weights[(distance <= window) & real] > 0).all()


@pytest.mark.parametrize(("score", "align"), COMBOS, ids=COMBO_IDS)
@pytest.mark.parametrize("lengths", [[1, 1], [1, 5]], ids=["one-token", "mixed"])
def test_no_nan_for_one_token_sources_and_long_targets(score, align, lengths, make_attention):
    attention = make_attention(score, align)
    values, lengths = source(lengths)
    values.requires_grad_(True)
    query = torch.randn(2, 9, 6, dtype=torch.float64, requires_grad=True)
    context, weights = attend(attention, query, values, lengths)
    (context.sum() + weights.sum()).backward()
    for tensor in (context, weights, values.grad, query.grad, *(p.grad for p in attention.parameters())):
        assert torch.isfinite(tensor).all()
    assert (weights[0, :, 0] > 0).all()


@pytest.mark.parametrize(("score", "align"), COMBOS, ids=COMBO_IDS)
def test_one_step_at_a_time_equals_all_steps_at_once(score, align, make_attention):
    attention = make_attention(score, align)
    values, lengths = source([7, 3])
    memory = attention.prepare(values, lengths)
    query = torch.randn(2, 9, 6, dtype=torch.float64)
    whole = attention(query, memory)
    steps = [attention(query[:, t : t + 1], memory, t) for t in range(9)]
    assert_all_close(whole, tuple(torch.cat(one_by_one, dim=1) for one_by_one in zip(*steps, strict=True)))


# The oracle: DESIGN.md §1 transcribed one sentence, one target step and one source position
# at a time, reading the modules' own parameters.


def oracle_dot(scorer: nn.Module, h: Tensor, h_s: Tensor, s: int) -> Tensor:
    return h @ h_s


def oracle_general(scorer: nn.Module, h: Tensor, h_s: Tensor, s: int) -> Tensor:
    return h @ (scorer.W_a.weight @ h_s)


def oracle_concat(scorer: nn.Module, h: Tensor, h_s: Tensor, s: int) -> Tensor:
    return scorer.v_a.weight[0] @ torch.tanh(scorer.W_a.weight @ torch.cat([h, h_s]))


def oracle_location(scorer: nn.Module, h: Tensor, h_s: Tensor, s: int) -> Tensor:
    return (scorer.W_a.weight @ h)[s]


def oracle_global(align: nn.Module, h: Tensor, t: int, length: int) -> list[tuple[int, float]]:
    """(position, factor) for every position the softmax covers; the factor multiplies its weight."""
    return [(s, 1.0) for s in range(length)]


def oracle_local_m(align: nn.Module, h: Tensor, t: int, length: int) -> list[tuple[int, float]]:
    p = min(t, length - 1)
    return [(s, 1.0) for s in range(p - align.window, p + align.window + 1) if 0 <= s < length]


def oracle_local_p(align: nn.Module, h: Tensor, t: int, length: int) -> list[tuple[int, float]]:
    p = (length - 1) * torch.sigmoid(align.v_p.weight[0] @ torch.tanh(align.W_p.weight @ h)).item()
    sigma = align.window / 2
    centre = math.floor(p)
    window = range(centre - align.window, centre + align.window + 1)
    return [(s, math.exp(-((s - p) ** 2) / (2 * sigma**2))) for s in window if 0 <= s < length]


ORACLE_SCORES = {"dot": oracle_dot, "general": oracle_general, "concat": oracle_concat, "location": oracle_location}
ORACLE_WINDOWS = {"global": oracle_global, "local-m": oracle_local_m, "local-p": oracle_local_p}


def oracle(attention: Attention, score: str, align: str, query: Tensor, values: Tensor, lengths: Tensor):
    """Context ``(batch, tgt_len, hidden)`` and weights ``(batch, tgt_len, src_len)`` by loops."""
    context = torch.zeros_like(query)
    weights = torch.zeros(query.size(0), query.size(1), values.size(1), dtype=query.dtype)
    for b, length in enumerate(lengths.tolist()):
        for t, h in enumerate(query[b]):
            window = ORACLE_WINDOWS[align](attention.align, h, t, length)
            scores = [ORACLE_SCORES[score](attention.scorer, h, values[b, s], s) for s, _ in window]
            top = max(scores)
            exps = [torch.exp(x - top) for x in scores]
            for (s, factor), e in zip(window, exps, strict=True):
                weights[b, t, s] = e / sum(exps) * factor
                context[b, t] += weights[b, t, s] * values[b, s]
    return context, weights


def test_every_registered_scorer_and_mode_has_an_oracle():
    assert set(SCORERS) == set(ORACLE_SCORES)
    assert set(ALIGNMENTS) == set(ORACLE_WINDOWS)


@pytest.mark.parametrize(("score", "align"), COMBOS, ids=COMBO_IDS)
def test_matches_the_oracle(score, align, make_attention):
    attention = make_attention(score, align)
    values, lengths = source([7, 4, 1])
    query = torch.randn(3, 9, 6, dtype=torch.float64)
    with torch.no_grad():
        got = attend(attention, query, values, lengths)
        want = oracle(attention, score, align, query, values, lengths)
    assert_all_close(got, want, tolerance=1e-11)


@pytest.mark.parametrize("score", SCORERS)
def test_local_m_with_a_window_over_the_whole_sentence_is_global(score, make_attention):
    values, lengths = source([7, 4])
    query = torch.randn(2, 9, 6, dtype=torch.float64)
    local = make_attention(score, "local-m", window=7)
    wide = make_attention(score, "global")
    wide.scorer.load_state_dict(local.scorer.state_dict())
    assert_all_close(attend(local, query, values, lengths), attend(wide, query, values, lengths))


@pytest.mark.parametrize("align", ALIGNMENTS)
def test_general_with_identity_is_dot(align, make_attention):
    values, lengths = source([7, 4])
    query = torch.randn(2, 9, 6, dtype=torch.float64)
    dot = make_attention("dot", align)
    general = make_attention("general", align)
    general.align.load_state_dict(dot.align.state_dict())
    with torch.no_grad():
        general.scorer.W_a.weight.copy_(torch.eye(6))
    assert_all_close(attend(general, query, values, lengths), attend(dot, query, values, lengths))


class PrepareAndAttend(nn.Module):
    """prepare + attend as one forward, so ``functional_call`` can swap every parameter."""

    def __init__(self, attention: Attention) -> None:
        super().__init__()
        self.attention = attention

    def forward(self, query: Tensor, values: Tensor, lengths: Tensor) -> tuple[Tensor, Tensor]:
        return attend(self.attention, query, values, lengths)


@pytest.mark.parametrize(("score", "align"), COMBOS, ids=COMBO_IDS)
def test_gradcheck(score, align, make_attention):
    module = PrepareAndAttend(make_attention(score, align, hidden=3, window=1, max_src_len=5))
    names = [name for name, _ in module.named_parameters()]
    values, lengths = source([4, 2], hidden=3)
    query = torch.randn(2, 3, 3, dtype=torch.float64)
    inputs = [query, values, *(p.detach().clone() for p in module.parameters())]

    def function(query: Tensor, values: Tensor, *params: Tensor) -> tuple[Tensor, Tensor]:
        return torch.func.functional_call(module, dict(zip(names, params, strict=True)), (query, values, lengths))

    assert torch.autograd.gradcheck(function, [x.requires_grad_(True) for x in inputs])


@pytest.mark.parametrize("align", LOCAL)
def test_local_window_must_be_positive(align):
    with pytest.raises(ConfigError, match="window"):
        Attention(hidden=4, config=AttentionConfig(align=align, window=0))


@pytest.mark.parametrize(("key", "name"), [("score", "dott"), ("align", "locl-m")])
def test_unknown_registry_name_lists_the_choices(key, name):
    registry = SCORERS if key == "score" else ALIGNMENTS
    with pytest.raises(ConfigError) as err:
        Attention(hidden=4, config=AttentionConfig(**{key: name}))
    message = str(err.value)
    assert f"model.attention.{key}" in message
    assert ", ".join(registry) in message
    assert "did you mean" in message


@pytest.mark.parametrize("align", ALIGNMENTS)
def test_location_rejects_a_source_longer_than_its_positions(align, make_attention):
    attention = make_attention("location", align, max_src_len=5)
    values, lengths = source([6, 2])
    with pytest.raises(ConfigError, match=r"max_src_len=5"):
        attend(attention, torch.randn(2, 3, 6, dtype=torch.float64), values, lengths)


@pytest.mark.parametrize(
    ("align", "window", "warned"), [("local-p", 10, True), ("local-p", 17, False), ("local-m", 10, False)]
)
def test_local_p_warns_when_the_window_cannot_cover_a_typical_source(align, window, warned, caplog):
    lengths = torch.tensor([12, 18, 18, 25, 30])  # median 18: D = 17 reaches across it from either end
    with caplog.at_level(logging.WARNING, logger="nmt.attention"):
        check_window(AttentionConfig(align=align, window=window), lengths)
    assert ("model.attention.window=17" in caplog.text) == warned
