"""The hand-written LSTM backward against torch's own LSTM: values and gradients in float64."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

import nmt.lstm
from nmt.lstm import PackedLSTM, lstm_cell, lstm_packed

pytestmark = pytest.mark.usefixtures("seeded")
DOUBLE = {"dtype": torch.float64}


def assert_same_values_and_gradients(got: list[torch.Tensor], want: list[torch.Tensor], leaves: list[torch.Tensor]):
    """``got`` equals ``want`` and so do the gradients of a random weighting of them for every leaf."""
    weights = [torch.randn_like(t) for t in want]
    want_grads = torch.autograd.grad(sum((w * v).sum() for w, v in zip(weights, want, strict=True)), leaves)
    got_grads = torch.autograd.grad(sum((w * v).sum() for w, v in zip(weights, got, strict=True)), leaves)
    for a, b in [*zip(got, want, strict=True), *zip(got_grads, want_grads, strict=True)]:
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_the_cell_computes_what_torch_lstm_cell_does() -> None:
    x, h, c = torch.randn(3, 5, **DOUBLE), torch.randn(3, 4, **DOUBLE), torch.randn(3, 4, **DOUBLE)
    w_ih, w_hh, b = torch.randn(16, 5, **DOUBLE), torch.randn(16, 4, **DOUBLE), torch.randn(16, **DOUBLE)
    leaves = [t.requires_grad_() for t in (x, h, c, w_ih, w_hh, b)]
    want = torch.lstm_cell(x, (h, c), w_ih, w_hh, b, None)
    got = lstm_cell(torch.addmm(b, torch.cat([x, h], 1), torch.cat([w_ih, w_hh], 1).t()), c)
    assert_same_values_and_gradients(got, want, leaves)


def test_the_cell_gradient_passes_gradcheck() -> None:
    gates = torch.randn(3, 8, **DOUBLE, requires_grad=True)
    c = torch.randn(3, 2, **DOUBLE, requires_grad=True)
    assert torch.autograd.gradcheck(lstm_cell, (gates, c))


def test_without_gradients_the_cell_records_no_graph() -> None:
    gates, c = torch.randn(2, 8, requires_grad=True), torch.randn(2, 2)
    with torch.no_grad():
        h, c = lstm_cell(gates, c)
    assert h.grad_fn is None and c.grad_fn is None


@pytest.mark.parametrize("bidirectional", [False, True], ids=["forward", "bidirectional"])
@pytest.mark.parametrize("layers", [1, 2])
def test_a_packed_sequence_runs_as_through_nn_lstm(bidirectional: bool, layers: int) -> None:
    """Outputs, final states and every gradient (inputs and weights) equal ``nn.LSTM``'s, rows unsorted."""
    rnn = nn.LSTM(5, 4, num_layers=layers, bidirectional=bidirectional, batch_first=True).double()
    x = torch.randn(4, 6, 5, **DOUBLE, requires_grad=True)
    lengths = torch.tensor([3, 6, 1, 6])
    want_out, want_states = rnn(pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False))
    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    got_out, got_states = lstm_packed(rnn, packed, dropout=False)
    leaves = [x, *rnn.parameters()]
    assert_same_values_and_gradients([got_out.data, *got_states], [want_out.data, *want_states], leaves)
    assert torch.equal(got_out.batch_sizes, want_out.batch_sizes)


class Packed(nn.Module):
    """``lstm_packed`` as a module, so ``torch.func.functional_call`` can swap its weights."""

    def __init__(self, rnn: nn.LSTM, packed: PackedSequence) -> None:
        super().__init__()
        self.rnn, self.packed = rnn, packed

    def forward(self, data: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out, (h, c) = lstm_packed(self.rnn, self.packed._replace(data=data), dropout=False)
        return out.data, h, c


def test_a_packed_layer_passes_gradcheck() -> None:
    rnn = nn.LSTM(3, 2, bidirectional=True).double()
    x = torch.randn(3, 4, 3, **DOUBLE)
    module = Packed(rnn, pack_padded_sequence(x, torch.tensor([2, 4, 1]), batch_first=True, enforce_sorted=False))
    names = [f"rnn.{name}" for name, _ in rnn.named_parameters()]

    def run(data: torch.Tensor, *weights: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return torch.func.functional_call(module, dict(zip(names, weights, strict=True)), (data,))

    inputs = [module.packed.data.requires_grad_(), *(p.detach().requires_grad_() for p in rnn.parameters())]
    assert torch.autograd.gradcheck(run, inputs)


def test_dropout_between_layers_only_in_training() -> None:
    rnn = nn.LSTM(5, 4, num_layers=2, dropout=0.5, batch_first=True)
    packed = pack_padded_sequence(torch.randn(2, 3, 5), torch.tensor([3, 2]), batch_first=True)
    with torch.no_grad():
        want, _ = lstm_packed(rnn, packed, dropout=False)
        again, _ = lstm_packed(rnn, packed, dropout=False)
        dropped, _ = lstm_packed(rnn, packed, dropout=True)
    assert torch.equal(want.data, again.data)
    assert not torch.equal(want.data, dropped.data)


def test_packed_lstm_runs_lstm_packed_on_a_packed_sequence_from_zero_states(monkeypatch) -> None:
    """It is ``nn.LSTM`` with the same weights; only a packed call without states takes :func:`lstm_packed`."""
    rnn = PackedLSTM(5, 4, num_layers=2, batch_first=True).double()
    plain = nn.LSTM(5, 4, num_layers=2, batch_first=True).double()
    plain.load_state_dict(rnn.state_dict())
    calls = []

    def counted(*args, **kwargs):
        calls.append(1)
        return lstm_packed(*args, **kwargs)

    def flat(result) -> list[torch.Tensor]:
        out, (h, c) = result
        return [out.data if isinstance(out, PackedSequence) else out, h, c]

    monkeypatch.setattr(nmt.lstm, "lstm_packed", counted)
    x = torch.randn(3, 4, 5, **DOUBLE)
    packed = pack_padded_sequence(x, torch.tensor([4, 2, 3]), batch_first=True, enforce_sorted=False)
    states = (torch.randn(2, 3, 4, **DOUBLE), torch.randn(2, 3, 4, **DOUBLE))
    with torch.no_grad():
        for got, want in zip(flat(rnn(packed)), flat(plain(packed)), strict=True):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        assert len(calls) == 1
        for args in ((x,), (x, states), (packed, states)):  # nn.LSTM's own call
            assert all(map(torch.equal, flat(rnn(*args)), flat(plain(*args))))
    assert len(calls) == 1
