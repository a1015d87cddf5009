"""Encoder, decoder and Seq2Seq: padding, reversal, incremental decoding and an overfit run."""

from __future__ import annotations

import functools
import itertools

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from nmt.attention import ALIGNMENTS, NO_ATTENTION, SCORERS
from nmt.config import ConfigError, DecodeConfig
from nmt.encoder import reverse_padded
from nmt.search import decode

pytestmark = pytest.mark.usefixtures("seeded", "one_thread")

COMBOS = list(itertools.product(SCORERS, ALIGNMENTS))  # a newly registered scorer or mode is tested too
COMBO_IDS = [f"{score}-{align}" for score, align in COMBOS]
WITH_BASE = [*COMBOS, ("general", NO_ATTENTION)]  # and the non-attentional base model (Table 1)
WITH_BASE_IDS = [*COMBO_IDS, NO_ATTENTION]
ENCODERS = {"plain": {}, "reversed-bidirectional": {"reverse_source": True, "bidirectional": True}}
PAD, BOS, EOS, VOCAB = 0, 2, 3, 11


def padded(lengths: list[int], width: int | None = None) -> tuple[Tensor, Tensor]:
    """Random non-special ids ``(batch, width)`` padded with PAD after each length, and the lengths."""
    ids = torch.randint(4, VOCAB, (len(lengths), width or max(lengths)))
    real = torch.arange(ids.size(1)) < torch.tensor(lengths).unsqueeze(1)
    return ids.masked_fill(~real, PAD), torch.tensor(lengths)


def test_reverse_padded_by_hand():
    x = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0], [6, 0, 0, 0], [7, 8, 9, 10]])
    lengths = torch.tensor([3, 2, 1, 4])
    want = torch.tensor([[3, 2, 1, 0], [5, 4, 0, 0], [6, 0, 0, 0], [10, 9, 8, 7]])
    assert torch.equal(reverse_padded(x, lengths), want)
    features = torch.stack([x, -x], dim=-1)  # (batch, seq_len, 2): trailing dims move with their position
    assert torch.equal(reverse_padded(features, lengths), torch.stack([want, -want], dim=-1))


@pytest.mark.parametrize("variant", ENCODERS.values(), ids=ENCODERS.keys())
def test_encoder_padding_never_leaks(variant, make_model):
    encoder = make_model(**variant).encoder
    src, lengths = padded([5, 3, 1])
    states, (h, c) = encoder(src, lengths)
    noisy = torch.where(src == PAD, torch.randint(1, VOCAB, src.shape), src)
    wider = torch.cat([noisy, torch.randint(1, VOCAB, (3, 2))], dim=1)  # two more columns of padding
    for other in (noisy, wider):
        other_states, (other_h, other_c) = encoder(other, lengths)
        assert torch.equal(other_states[:, :5], states)
        assert torch.equal(other_h, h) and torch.equal(other_c, c)
    real = torch.arange(5) < lengths.unsqueeze(1)
    assert (states[~real] == 0).all()


@pytest.mark.parametrize("bidirectional", [False, True])
def test_reversed_source_reads_the_sentence_backwards(bidirectional, make_model):
    forward = make_model(bidirectional=bidirectional).encoder
    backward = make_model(bidirectional=bidirectional, reverse_source=True).encoder
    backward.load_state_dict(forward.state_dict())
    src, lengths = padded([5, 3, 1])
    states, final = backward(src, lengths)
    flipped_states, flipped_final = forward(reverse_padded(src, lengths), lengths)
    torch.testing.assert_close(states, reverse_padded(flipped_states, lengths), rtol=0, atol=1e-14)
    for got, want in zip(final, flipped_final, strict=True):
        torch.testing.assert_close(got, want, rtol=0, atol=1e-14)


def test_bidirectional_encoder_shapes_and_final_states(make_model):
    encoder = make_model(bidirectional=True, layers=3, hidden=8).encoder
    src, lengths = padded([5, 3, 1])
    states, (h, c) = encoder(src, lengths)
    assert states.shape == (3, 5, 8)
    assert h.shape == c.shape == (3, 3, 8)
    last = states[torch.arange(3), lengths - 1]  # (batch, hidden): the forward half ends here
    torch.testing.assert_close(h[-1, :, :4], last[:, :4], rtol=0, atol=1e-14)
    torch.testing.assert_close(h[-1, :, 4:], states[:, 0, 4:], rtol=0, atol=1e-14)


def test_bidirectional_needs_an_even_hidden_size(make_model):
    with pytest.raises(ConfigError, match=r"model\.hidden must be even"):
        make_model(bidirectional=True, hidden=7)


def forced(model, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
    """Teacher forcing as log-probabilities ``(batch, tgt_len, vocab)`` and attention ``(batch, tgt_len, src_len)``."""
    logits, weights = model(src, lengths, tgt_in)
    return torch.log_softmax(logits, dim=-1), weights


def stepped(model, src: Tensor, lengths: Tensor, tgt_in: Tensor) -> tuple[Tensor, Tensor]:
    """The same through ``encode`` and one ``step`` per target token."""
    state = model.encode(src, lengths)
    log_probs, weights = [], []
    for tokens in tgt_in.unbind(1):
        lp, w, state = model.step(tokens, state)
        log_probs.append(lp)
        weights.append(w)
    return torch.stack(log_probs, dim=1), torch.stack(weights, dim=1)


@pytest.mark.parametrize("variant", ENCODERS.values(), ids=ENCODERS.keys())
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize(("score", "align"), WITH_BASE, ids=WITH_BASE_IDS)
def test_step_by_step_equals_teacher_forcing(score, align, input_feed, variant, make_model):
    model = make_model(score=score, align=align, window=2, input_feed=input_feed, **variant)
    src, lengths = padded([5, 3, 1])
    tgt_in = torch.randint(1, VOCAB, (3, 8))  # longer than every source
    with torch.no_grad():
        for got, want in zip(stepped(model, src, lengths, tgt_in), forced(model, src, lengths, tgt_in), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize(("score", "align"), WITH_BASE, ids=WITH_BASE_IDS)
def test_a_sentence_alone_equals_it_inside_a_padded_batch(score, align, input_feed, make_model):
    model = make_model(score=score, align=align, window=2, input_feed=input_feed)
    src, src_lengths = padded([5, 3, 1])
    tgt_in, tgt_lengths = padded([4, 6, 2])
    with torch.no_grad():
        log_probs, weights = forced(model, src, src_lengths, tgt_in)
        for b, (s, t) in enumerate(zip(src_lengths.tolist(), tgt_lengths.tolist(), strict=True)):
            alone_log_probs, alone_weights = forced(
                model, src[b : b + 1, :s], src_lengths[b : b + 1], tgt_in[b : b + 1, :t]
            )
            torch.testing.assert_close(log_probs[b, :t], alone_log_probs[0], rtol=1e-12, atol=1e-12)
            torch.testing.assert_close(weights[b, :t, :s], alone_weights[0], rtol=1e-12, atol=1e-12)
            assert (weights[b, :, s:] == 0).all()


@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
@pytest.mark.parametrize(("score", "align"), WITH_BASE, ids=WITH_BASE_IDS)
def test_teacher_forcing_with_target_lengths_computes_the_real_positions_alone(score, align, input_feed, make_model):
    """Packed: step by step, the longest rows first; the same logits, attention and gradients as padded,
    and with the targets given, their loss without logits (nmt.chunked_loss) and its gradients."""
    model = make_model(score=score, align=align, window=2, input_feed=input_feed)
    src, src_lengths = padded([5, 3, 1, 4])
    tgt_in, tgt_lengths = padded([4, 6, 2, 5], width=7)  # one column of padding beyond the longest
    tgt_out = torch.randint(4, VOCAB, tgt_in.shape)
    order = [(b, t) for t in range(7) for b in (1, 3, 0, 2) if t < tgt_lengths[b]]  # longest first at each step
    rows, steps = map(list, zip(*order, strict=True))

    logits, weights = model(src, src_lengths, tgt_in)
    want_loss = F.cross_entropy(logits[rows, steps], tgt_out[rows, steps], reduction="sum")
    want_grads = torch.autograd.grad(want_loss, list(model.parameters()), allow_unused=True)
    got_logits, got_weights = model(src, src_lengths, tgt_in, tgt_lengths)
    got_loss = F.cross_entropy(got_logits, tgt_out[rows, steps], reduction="sum")
    got_grads = torch.autograd.grad(got_loss, list(model.parameters()), allow_unused=True)
    nll, nll_weights = model(src, src_lengths, tgt_in, tgt_lengths, targets=tgt_out[rows, steps])
    nll_grads = torch.autograd.grad(nll, list(model.parameters()), allow_unused=True)

    torch.testing.assert_close(got_logits, logits[rows, steps], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got_weights, weights[rows, steps], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll, want_loss, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(nll_weights, got_weights, rtol=0, atol=0)
    for got, nll_got, want in zip(got_grads, nll_grads, want_grads, strict=True):
        assert (got is None) == (nll_got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
            torch.testing.assert_close(nll_got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_decoder_follows_the_equations(input_feed, make_model):
    """h_t = LSTM([y_{t-1}; h̃_{t-1}]) (§3.3), h̃_t = tanh(W_c [c_t; h_t]) (eq. 5), logits = W_s h̃_t,
    one ``nn.LSTM`` step at a time; without input feeding h̃_{t-1} is simply left out."""
    model = make_model(align="local-m", window=1, input_feed=input_feed)
    decoder = model.decoder
    src, lengths = padded([5, 3, 1])
    tgt_in = torch.randint(1, VOCAB, (3, 7))
    with torch.no_grad():
        states, (h, c) = model.encoder(src, lengths)
        memory = decoder.attention.prepare(states, lengths)
        feed = torch.zeros(3, 1, 6, dtype=torch.float64)
        logits = []
        for t in range(7):
            x = decoder.embed(tgt_in[:, t : t + 1])  # (batch, 1, embed)
            out, (h, c) = decoder.rnn(torch.cat([x, feed], dim=-1) if input_feed else x, (h, c))
            context, _ = decoder.attention(out, memory, t)
            feed = torch.tanh(decoder.W_c(torch.cat([context, out], dim=-1)))
            logits.append(model.generator(feed))
        got, _ = model(src, lengths, tgt_in)
    torch.testing.assert_close(got, torch.cat(logits, dim=1), rtol=1e-12, atol=1e-12)


def test_input_feeding_dropout_draws_every_step_s_masks_at_once(make_model):
    """``x * mask`` is ``F.dropout(x, p)``: masks of 0 and 1 / (1 - p), one per layer boundary and one for h̃."""
    decoder = make_model(dropout=0.5, layers=3).decoder.train()
    masks = decoder._dropout_masks(3, [4, 2, 1], torch.zeros(4, 6, dtype=torch.float64))
    assert [m.shape for m in masks] == [(3, 4, 6), (3, 2, 6), (3, 1, 6)]
    values = torch.cat([m.flatten() for m in masks])
    assert set(values.tolist()) == {0.0, 2.0}
    assert decoder.eval()._dropout_masks(3, [4], torch.zeros(4, 6)) is None


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_search_prepares_the_decoder_lstm_weights_once(input_feed, beam, make_model, monkeypatch):
    """The state carries ``[W_ih; W_hh]`` from the first step to the next, through beam reordering; teacher
    forcing prepares them once per call, and without input feeding nothing is prepared."""
    model = make_model(input_feed=input_feed)
    prepare, calls = model.decoder.rnn.prepare, []

    def counted():
        calls.append(prepare())
        return calls[-1]

    monkeypatch.setattr(model.decoder.rnn, "prepare", counted)
    src, lengths = padded([5, 3, 1])
    decode(model, src, lengths, config=DecodeConfig(beam=beam, max_len=6, min_len_ratio=1.0))  # 5 steps at least
    assert len(calls) == int(input_feed)
    model(src, lengths, torch.randint(4, VOCAB, (3, 4)))
    assert len(calls) == 2 * int(input_feed)


@pytest.mark.parametrize("align", [*ALIGNMENTS, NO_ATTENTION])
def test_reordering_the_state_reorders_the_next_step(align, make_model):
    model = make_model(align=align, window=2)
    src, lengths = padded([5, 3, 1])
    tokens = torch.randint(1, VOCAB, (3,))
    with torch.no_grad():
        _, _, state = model.step(tokens, model.encode(src, lengths))
        order = torch.tensor([2, 0, 0, 1])  # reorder, repeat and drop rows, as beam search does
        log_probs, weights, _ = model.step(tokens[order], state.index_select(order))
        want_log_probs, want_weights, _ = model.step(tokens, state)
    torch.testing.assert_close(log_probs, want_log_probs[order], rtol=0, atol=1e-14)
    torch.testing.assert_close(weights, want_weights[order], rtol=0, atol=1e-14)


def test_local_p_position_network_learns_through_the_loss(make_model):
    model = make_model(align="local-p", window=2).train()
    src, lengths = padded([7, 4])
    tgt_in, tgt_out = torch.randint(1, VOCAB, (2, 6)), torch.randint(1, VOCAB, (2, 6))
    logits, _ = model(src, lengths, tgt_in)
    F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten()).backward()
    align = model.decoder.attention.align
    for param in (align.W_p.weight, align.v_p.weight):
        assert param.grad.abs().sum() > 0


def test_bf16_on_the_cpu_runs_the_steps_in_float32_and_the_output_layer_in_bf16(make_model) -> None:
    """In teacher forcing and in search alike: encoder and decoder in float32, W_s in bf16."""
    model = make_model(vocab=11).float()
    src, lengths, tgt = torch.randint(4, 11, (3, 5)), torch.tensor([5, 4, 2]), torch.randint(4, 11, (3, 4))
    seen = []
    for name in ("encoder", "decoder", "generator"):
        hook = functools.partial(lambda name, module, args, out: seen.append((name, _first(out).dtype)), name)
        getattr(model, name).register_forward_hook(hook)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits, _ = model(src, lengths, tgt)
        log_probs, _, _ = model.step(tgt[:, 0], model.encode(src, lengths))
    steps = [("encoder", torch.float32), ("decoder", torch.float32), ("generator", torch.bfloat16)]
    assert seen == steps + steps
    assert (logits.dtype, log_probs.dtype) == (torch.bfloat16, torch.float32)


def _first(out: Tensor | tuple) -> Tensor:
    """A module's output tensor, or the first of its outputs."""
    return out[0] if isinstance(out, tuple) else out


def test_initialisation_is_uniform_with_zero_padding_rows(make_model):
    model = make_model(init=0.05)
    for param in model.parameters():
        assert param.abs().max() <= 0.05
    for embed in (model.encoder.embed, model.decoder.embed):
        assert (embed.weight[PAD] == 0).all()


def test_tied_embeddings_share_one_matrix(make_model):
    model = make_model(tie_embeddings=True, embed=6, hidden=6)
    assert model.generator.weight is model.decoder.embed.weight
    src, src_lengths = padded([3, 2])
    tgt_in, tgt_lengths = padded([3, 1])
    targets = torch.tensor([5, 6, 7, 8])  # the packed order: step 0 of both, then the longer's steps 1 and 2
    logits, _ = model(src, src_lengths, tgt_in, tgt_lengths)
    (want,) = torch.autograd.grad(F.cross_entropy(logits, targets, reduction="sum"), model.generator.weight)
    nll, _ = model(src, src_lengths, tgt_in, tgt_lengths, targets=targets)
    (got,) = torch.autograd.grad(nll, model.generator.weight)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)  # the output layer's and the embedding's parts
    with pytest.raises(ConfigError, match="tie_embeddings"):
        make_model(tie_embeddings=True, embed=5, hidden=6)


@pytest.mark.parametrize("fields", [{"dropout": 1.0}, {"hidden": 0}, {"layers": 0}])
def test_bad_sizes_are_config_errors(fields, make_model):
    with pytest.raises(ConfigError):
        make_model(**fields)


def test_location_scorer_bounds_the_source_length(make_model):
    model = make_model(score="location", max_src_len=5)
    assert model.max_src_len == 5
    assert make_model(score="general").max_src_len is None
    src, lengths = padded([6, 2])
    with pytest.raises(ConfigError, match=r"max_src_len=5"):
        model(src, lengths, torch.randint(1, VOCAB, (2, 3)))


def swapped_pairs(count: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """A toy task with local reordering: ``a b c d e -> b a d c e``, 4-8 tokens, EOS-terminated.

    Returns src ``(count, 9)``, src_lengths ``(count,)``, tgt_in and tgt_out ``(count, 9)``.
    """
    lengths = torch.randint(4, 9, (count, 1), generator=generator)
    positions = torch.arange(9).unsqueeze(0)  # (1, 9)
    partner = torch.where((positions ^ 1) < lengths, positions ^ 1, positions)  # (count, 9)
    words = torch.randint(4, VOCAB, (count, 9), generator=generator)
    swapped = words.gather(1, partner)

    def finish(ids: Tensor) -> Tensor:  # EOS at each length, PAD after it
        return torch.where(positions < lengths, ids, PAD).scatter(1, lengths, EOS)

    tgt_in = torch.cat([torch.full((count, 1), BOS), torch.where(positions < lengths, swapped, PAD)[:, :-1]], dim=1)
    return finish(words), lengths.squeeze(1) + 1, tgt_in, finish(swapped)


def learns(model, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_out: Tensor) -> None:
    """Adam on one batch must fit it within 600 steps: loss under 0.05 and every teacher-forced argmax
    right. (Where it gets there differs between CPU kinds: 300 steps were enough on AMD, not on Intel.)"""
    optimizer = torch.optim.Adam(model.parameters(), lr=0.02)
    real = tgt_out != PAD
    for _ in range(600):
        logits, _ = model(src, src_lengths, tgt_in)
        loss = F.cross_entropy(logits.flatten(0, 1), tgt_out.flatten(), ignore_index=PAD)
        exact = torch.equal(logits.argmax(-1)[real], tgt_out[real])
        if loss.item() < 0.05 and exact:
            return
        optimizer.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
    assert loss.item() < 0.05
    assert exact, "teacher-forced argmax (so greedy search) is not exact"


@pytest.mark.parametrize("align", ["global", "local-m", "local-p"])
def test_a_tiny_model_learns_to_swap_neighbours(align, make_model):
    model = make_model(align=align, window=2, embed=16, hidden=32, layers=1, init=0.1).float().train()
    src, src_lengths, tgt_in, tgt_out = swapped_pairs(32, torch.Generator().manual_seed(0))
    learns(model, src, src_lengths, tgt_in, tgt_out)


# ---------------------------------------------------------------------------------------------
# The non-attentional base model (Luong et al. 2015, Table 1): model.attention.align = none


@pytest.mark.parametrize("input_feed", [True, False], ids=["feed", "no-feed"])
def test_base_model_outputs_the_top_lstm_state_and_zero_attention(input_feed, make_model):
    """h̃_t = h_t (no context, no W_c), logits = W_s h_t; with input feeding h_{t-1} is fed back."""
    model = make_model(align=NO_ATTENTION, input_feed=input_feed)
    decoder = model.decoder
    src, lengths = padded([5, 3, 1])
    tgt_in = torch.randint(1, VOCAB, (3, 7))
    with torch.no_grad():
        _, (h, c) = model.encoder(src, lengths)
        feed = torch.zeros(3, 1, 6, dtype=torch.float64)
        logits = []
        for t in range(7):
            x = decoder.embed(tgt_in[:, t : t + 1])  # (batch, 1, embed)
            feed, (h, c) = decoder.rnn(torch.cat([x, feed], dim=-1) if input_feed else x, (h, c))
            logits.append(model.generator(feed))
        got, weights = model(src, lengths, tgt_in)
    torch.testing.assert_close(got, torch.cat(logits, dim=1), rtol=1e-12, atol=1e-12)
    assert weights.shape == (3, 7, 5)
    assert (weights == 0).all()


def test_base_model_has_no_attention_parameters(make_model):
    base = dict(make_model(align=NO_ATTENTION).named_parameters())
    assert not [name for name in base if name.startswith(("decoder.attention.", "decoder.W_c"))]
    # the dot scorer has no parameters, so the attentional model has exactly W_c (hidden x 2 hidden) more
    dot = dict(make_model(score="dot", align="global").named_parameters())
    assert set(dot) - set(base) == {"decoder.W_c.weight"}
    assert sum(p.numel() for p in dot.values()) - sum(p.numel() for p in base.values()) == 6 * 12


def test_no_attention_is_not_an_alignment_mode_and_a_typo_lists_every_choice(make_model):
    assert NO_ATTENTION not in ALIGNMENTS  # the attention tests' weights sum to one over ALIGNMENTS
    with pytest.raises(ConfigError, match=r"choose one of global, local-m, local-p, none \(did you mean 'none'\?\)"):
        make_model(align="nnoe")


@pytest.mark.parametrize("beam", [1, 3])
def test_search_on_the_base_model_scores_what_teacher_forcing_scores(beam, make_model):
    model = make_model(align=NO_ATTENTION)
    src, lengths = padded([5, 3, 1])
    with torch.no_grad():
        found = decode(model, src, lengths, config=DecodeConfig(beam=beam, n_best=beam, max_len_ratio=2.0))
        for b, hypotheses in enumerate(found):
            assert len(hypotheses) == beam
            for hyp in hypotheses:
                tgt_in = torch.tensor([[BOS, *hyp.tokens]])
                log_probs, _ = forced(model, src[b : b + 1, : lengths[b]], lengths[b : b + 1], tgt_in)
                expected = log_probs[0].gather(1, torch.tensor([[*hyp.tokens, EOS]]).T).sum()
                assert hyp.log_prob == pytest.approx(expected.item(), abs=1e-9)
                assert hyp.attention.shape == (len(hyp.tokens), lengths[b]) and (hyp.attention == 0).all()


@pytest.mark.parametrize("reverse_source", [False, True], ids=["base", "reverse"])
def test_a_tiny_base_model_learns_to_copy(reverse_source, make_model):
    """Without attention the whole source must pass through the encoder's final state."""
    model = make_model(align=NO_ATTENTION, reverse_source=reverse_source, embed=16, hidden=32, layers=1, init=0.1)
    model = model.float().train()
    src, src_lengths, _, _ = swapped_pairs(32, torch.Generator().manual_seed(0))
    tgt_out = src  # the words, EOS, padding
    tgt_in = torch.cat([torch.full((32, 1), BOS), src.masked_fill(src == EOS, PAD)[:, :-1]], dim=1)
    learns(model, src, src_lengths, tgt_in, tgt_out)


def test_training_is_the_same_under_relabelled_ids(make_model) -> None:
    """Relabel the ids (specials kept) in the data and in every id-indexed row of a model: the
    loss and five Adam updates stay the same (float64), so a tokenizer's id order changes a run
    only through which initial rows its pieces draw."""
    vocab = 20
    model = make_model(vocab=vocab).train()
    relabelled = make_model(vocab=vocab).train()
    relabelled.load_state_dict(model.state_dict())
    new_id = torch.cat([torch.arange(4), 4 + torch.randperm(vocab - 4, generator=torch.Generator().manual_seed(0))])
    old_id = torch.argsort(new_id)
    with torch.no_grad():
        for rows in ("encoder.embed.weight", "decoder.embed.weight", "generator.weight", "generator.bias"):
            relabelled.get_parameter(rows).copy_(model.get_parameter(rows)[old_id])
    src, src_lengths, tgt_in, tgt_out = swapped_pairs(6, torch.Generator().manual_seed(1))
    runs = []
    for net, ids in ((model, torch.arange(vocab)), (relabelled, new_id)):
        optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
        losses = []
        for _ in range(5):
            logits, _ = net(ids[src], src_lengths, ids[tgt_in])
            loss = F.cross_entropy(logits.flatten(0, 1), ids[tgt_out].flatten(), ignore_index=PAD)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
        runs.append(losses)
    assert runs[0] == pytest.approx(runs[1], abs=1e-12)
    for name in ("decoder.rnn.weight_hh_l0", "encoder.rnn.weight_ih_l1", "decoder.W_c.weight"):
        torch.testing.assert_close(model.get_parameter(name), relabelled.get_parameter(name), rtol=0, atol=1e-12)
    torch.testing.assert_close(model.generator.weight[old_id], relabelled.generator.weight, rtol=0, atol=1e-12)
