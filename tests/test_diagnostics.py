"""Diagnostics: the window centres p_t, their spread over a sentence and their distance to gold."""

from __future__ import annotations

import math

import pytest
import torch

from nmt.align import GoldAlignment
from nmt.data import Example, collate
from nmt.diagnostics import centre_error, centre_spread, gold_positions, window_centres

pytestmark = pytest.mark.usefixtures("seeded", "one_thread")

# source 6 + EOS, 3 + EOS, 1 + EOS; target 4 + EOS, 6 + EOS, 2 + EOS steps
EXAMPLES = [Example([4, 5, 6, 7, 8, 9], [4, 5, 6, 7]), Example([5, 6, 7], [4, 4, 5, 5, 6, 6]), Example([9], [7, 8])]


def batch():
    return collate(EXAMPLES, list(range(len(EXAMPLES))))


@pytest.mark.parametrize("input_feed", [True, False])
def test_local_m_centres_walk_with_t_and_stop_at_the_last_position(input_feed, make_model):
    model = make_model(align="local-m", input_feed=input_feed)
    centres = window_centres(model, batch())
    want = [
        [0, 1, 2, 3, 4, math.nan, math.nan],
        [0, 1, 2, 3, 3, 3, 3],
        [0, 1, 1, math.nan, math.nan, math.nan, math.nan],
    ]
    torch.testing.assert_close(centres, torch.tensor(want), equal_nan=True)


def test_local_p_centres_are_where_the_window_sits(make_model):
    model = make_model(align="local-p", window=1)
    pairs = batch()
    centres = window_centres(model, pairs)
    _, weights = model(pairs.src, pairs.src_lengths, pairs.tgt_in)  # (batch, tgt_len, src_len)
    real_steps = ~centres.isnan()
    assert (
        (centres[real_steps] >= 0)
        & (centres[real_steps] <= (pairs.src_lengths - 1).repeat_interleave(real_steps.sum(1)))
    ).all()
    distance = (torch.arange(weights.size(2)).view(1, 1, -1) - centres.floor().unsqueeze(-1)).abs()
    inside = (distance <= 1) & (torch.arange(weights.size(2)) < pairs.src_lengths.view(-1, 1, 1))
    assert (weights[real_steps.unsqueeze(-1) & ~inside] == 0).all()
    assert (weights[real_steps.unsqueeze(-1) & inside] > 0).all()


def test_centres_leave_the_model_in_its_mode(make_model):
    model = make_model(align="local-p").train()
    window_centres(model, batch())
    assert model.training


def test_global_attention_has_no_centres(make_model):
    model = make_model(align="global")
    assert window_centres(model, batch()) is None
    assert centre_spread(model, [batch()]) is None


def test_spread_of_a_monotonic_walk_by_hand(make_model):
    # local-m: p_t / (S - 1) is 0, 1/4, ..., 1 for S = 5 and 5 steps; one-token sources are left out
    pairs = collate([Example([4, 5, 6, 7], [4, 5, 6, 7]), Example([], [5, 6])], [0, 1])  # S = 5 and S = 1 (EOS alone)
    spread = centre_spread(make_model(align="local-m"), [pairs])
    assert spread.sentences == 1
    assert spread.range == pytest.approx(1.0)
    assert spread.std == pytest.approx(math.sqrt(0.125))


def test_gold_positions_by_hand():
    # source pieces ▁a b ▁c (words 0 0 1), target pieces ▁x ▁y z (words 0 1 1)
    gold = GoldAlignment(sure=frozenset({(1, 0)}), possible=frozenset({(1, 0), (0, 1)}))
    got = gold_positions(gold, [0, 0, 1], [0, 1, 1])
    # x: sure link to c (piece 2); y: no sure link, possible to a (pieces 0-1, mean 0.5); z: not a first piece
    torch.testing.assert_close(got, torch.tensor([2.0, 0.5, math.nan]), equal_nan=True)


def test_centre_error_averages_over_known_positions_and_ignores_extra_steps():
    centres = [torch.tensor([1.0, 5.0, 2.0, 9.0]), torch.tensor([0.0, 0.0])]
    golds = [torch.tensor([2.0, math.nan, 2.0]), torch.tensor([math.nan, 3.0])]
    assert centre_error(centres, golds) == pytest.approx((1.0 + 0.0 + 3.0) / 3)
    assert centre_error([torch.tensor([1.0])], [torch.tensor([math.nan])]) is None
