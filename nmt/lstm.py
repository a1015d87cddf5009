"""The LSTM with a hand-written backward: a few whole-tensor operations where autograd runs many.

With the gate pre-activations ``gates = [i; f; g; o]`` (``nn.LSTM``'s order, each ``hidden`` wide):

    c_t = σ(f) ⊙ c_{t-1} + σ(i) ⊙ tanh(g),    h_t = σ(o) ⊙ tanh(c_t).

:func:`lstm_cell` runs one step from given pre-activations (the decoder with input feeding, whose
next input needs this step's output). :func:`lstm_packed` runs ``nn.LSTM``'s weights over a packed
sequence layer by layer (the encoder, through :class:`PackedLSTM`): a layer's input products are one
matrix product for all steps, and its backward computes the recurrent weights' gradient of all steps
in one more.

The backward needs, besides the incoming gradients, only derivatives of the forward's values
(:func:`_derivatives`); a layer computes them for all its steps at once.
"""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable
from torch.nn.utils.rnn import PackedSequence


def _forward_step(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """One step's values from ``gates`` ``(rows, 4 * hidden)`` and c_{t-1} ``(rows, hidden)``.

    Returns:
        the activations ``[σ(i); σ(f); tanh(g); σ(o)]`` ``(rows, 4 * hidden)``, and c_t, tanh(c_t)
        and h_t, each ``(rows, hidden)``.
    """
    act = torch.sigmoid(gates)
    i, f, g, o = act.chunk(4, 1)
    torch.tanh(gates.chunk(4, 1)[2], out=g)  # the cell input is a tanh, the three gates sigmoids
    c = torch.addcmul(f * c_prev, i, g)
    tanh_c = torch.tanh(c)
    return act, c, tanh_c, o * tanh_c


def _derivatives(act: Tensor, c_prev: Tensor, tanh_c: Tensor) -> tuple[Tensor, Tensor]:
    """What the backward needs of the forward's values (see :func:`_backward_step`), for any rows.

    Args:
        act: ``[σ(i); σ(f); tanh(g); σ(o)]`` ``(rows, 4 * hidden)``; c_prev, tanh_c: ``(rows, hidden)``.

    Returns:
        P = ``[tanh(g) σ'(i); c_{t-1} σ'(f); σ(i) tanh'(g); tanh(c_t) σ'(o)]`` ``(rows, 4 * hidden)``
        and A = σ(o) tanh'(c_t) ``(rows, hidden)``.
    """
    i, _, g, o = act.chunk(4, 1)
    p = torch.ops.aten.sigmoid_backward(torch.cat([g, c_prev, i, tanh_c], 1), act)
    torch.ops.aten.tanh_backward.grad_input(i, g, grad_input=p.chunk(4, 1)[2])  # g's activation is a tanh
    return p, torch.ops.aten.tanh_backward(o, tanh_c)


def _backward_step(
    p: Tensor, a: Tensor, dh: Tensor, dc_next: Tensor, *, out: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    """The gradients of one step's pre-activations ``(rows, 4 * hidden)`` (into ``out`` if given) and of c_t.

    dc_t = dc_next + dh ⊙ A and d gates = ``[dc_t; dc_t; dc_t; dh] ⊙ P``; the caller multiplies
    dc_t by σ(f) for c_{t-1}.

    Args:
        p, a: :func:`_derivatives` of the step.
        dh: the gradient of h_t; dc_next: of c_t through c_{t+1} (dc_{t+1} ⊙ σ(f_{t+1})), both ``(rows, hidden)``.
    """
    dc = torch.addcmul(dc_next, dh, a)
    return torch.mul(torch.stack([dc, dc, dc, dh], 1).view_as(p), p, out=out), dc


class _Cell(torch.autograd.Function):
    """(gates, c_{t-1}) -> (h_t, c_t) of one step."""

    @staticmethod
    def forward(ctx: FunctionCtx, gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
        act, c, tanh_c, h = _forward_step(gates, c_prev)
        ctx.save_for_backward(act, c_prev, tanh_c)
        return h, c

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, dh: Tensor, dc: Tensor) -> tuple[Tensor, Tensor]:
        act, c_prev, tanh_c = ctx.saved_tensors
        dgates, dc = _backward_step(*_derivatives(act, c_prev, tanh_c), dh, dc)
        return dgates, dc * act.chunk(4, 1)[1]


def lstm_cell(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """h_t and c_t ``(rows, hidden)`` from ``gates`` ``(rows, 4 * hidden)`` and c_{t-1} ``(rows, hidden)``.

    What ``torch.lstm_cell`` computes after its two matrix products, in 6 operations forward and 8
    backward (autograd's: 9 and 12).
    """
    if torch.is_grad_enabled() and (gates.requires_grad or c_prev.requires_grad):
        return _Cell.apply(gates, c_prev)
    _, c, _, h = _forward_step(gates, c_prev)
    return h, c


class _Layer(torch.autograd.Function):
    """(input pre-activations, W_hh, h_0, c_0) -> (h_t of every step, h_n, c_n) over a packed sequence.

    Step t runs the first ``batch_sizes[t]`` rows (longest first); the rows of the input and the
    output are the packed tokens, ``(tokens, ...)``, and the states are ``(batch, hidden)``.
    """

    @staticmethod
    def forward(
        ctx: FunctionCtx, inputs: Tensor, w_hh: Tensor, h0: Tensor, c0: Tensor, batch_sizes: list[int]
    ) -> tuple[Tensor, Tensor, Tensor]:
        gates = inputs.clone()  # (tokens, 4 * hidden); each step adds h_{t-1} W_hhᵀ to its rows in place
        w = w_hh.t().to(gates.dtype)  # under autocast the products run in the input's lower precision
        h, c, start = h0, c0, 0
        saved: list[list[Tensor]] = [[], [], [], [], []]  # per step: act, c_{t-1}, tanh(c_t), h_{t-1}, h_t
        finished_h, finished_c = [], []  # the final states of rows whose sequence has ended
        for rows in batch_sizes:
            if rows < h.size(0):
                finished_h.append(h[rows:])
                finished_c.append(c[rows:])
                h, c = h[:rows], c[:rows]
            step_gates = gates[start : start + rows].addmm_(h if h.dtype == w.dtype else h.to(w.dtype), w)
            act, c_next, tanh_c, h_next = _forward_step(step_gates, c)
            for values, value in zip(saved, (act, c, tanh_c, h, h_next), strict=True):
                values.append(value)
            h, c, start = h_next, c_next, start + rows
        act, c_prev, tanh_c, h_prev, out = (torch.cat(values) for values in saved)
        ctx.save_for_backward(act, c_prev, tanh_c, h_prev, w_hh)
        ctx.batch_sizes = batch_sizes
        return out, torch.cat([h, *finished_h[::-1]]), torch.cat([c, *finished_c[::-1]])

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_out: Tensor, dh_n: Tensor, dc_n: Tensor) -> tuple[Tensor | None, ...]:
        act, c_prev, tanh_c, h_prev, w_hh = ctx.saved_tensors
        sizes = ctx.batch_sizes
        starts, lengths = _layout(sizes)
        p, a = _derivatives(act, c_prev, tanh_c)
        forget = act.chunk(4, 1)[1]
        # the gradient of every h_t: from the output, plus h_n's at each row's last step; the steps' own
        # contributions through h_{t+1} are added to it as the loop reaches them
        last = torch.tensor([starts[length - 1] + row for row, length in enumerate(lengths)], device=d_out.device)
        dh = d_out.index_add(0, last, dh_n)  # (tokens, hidden)
        dc_next = dc_n.clone()  # (batch, hidden): step t reads and writes its first rows
        d_gates = torch.empty_like(p)
        for t in reversed(range(len(sizes))):
            step, rows = slice(starts[t], starts[t] + sizes[t]), sizes[t]
            _, dc = _backward_step(p[step], a[step], dh[step], dc_next[:rows], out=d_gates[step])
            torch.mul(dc, forget[step], out=dc_next[:rows])
            if t:
                dh[starts[t - 1] : starts[t - 1] + rows].addmm_(d_gates[step], w_hh)  # through h_{t-1}
        dh0 = d_gates[: sizes[0]] @ w_hh if ctx.needs_input_grad[2] else None
        return d_gates, d_gates.t() @ h_prev, dh0, dc_next, None


def lstm_packed(rnn: nn.LSTM, packed: PackedSequence, *, dropout: bool) -> tuple[PackedSequence, tuple[Tensor, Tensor]]:
    """``rnn(packed)`` from zero states, through ``rnn``'s weights one layer at a time.

    Each layer's input products are one matrix product over all tokens, its steps :class:`_Layer`.
    A reverse direction reads each sequence backwards: its tokens are the packed tokens reordered.

    Args:
        dropout: apply ``rnn.dropout`` between layers (as ``rnn`` does in training).

    Returns:
        the top layer's outputs, packed like ``packed``, and the final (h, c), each
        ``(layers * directions, batch, hidden)`` in ``packed``'s original row order.
    """
    batch_sizes = packed.batch_sizes.tolist()
    directions = 2 if rnn.bidirectional else 1
    reverse = _reversed_tokens(batch_sizes).to(packed.data.device) if directions == 2 else None
    x, finals = packed.data, []
    for layer in range(rnn.num_layers):
        if layer:
            x = F.dropout(x, rnn.dropout, dropout)
        outputs = []
        for direction in range(directions):
            w_ih, w_hh, b_ih, b_hh = rnn.all_weights[layer * directions + direction]
            zeros = x.new_zeros(batch_sizes[0], w_hh.size(1))
            tokens = x if direction == 0 else x.index_select(0, reverse)
            out, h, c = _Layer.apply(F.linear(tokens, w_ih, b_ih + b_hh), w_hh, zeros, zeros, batch_sizes)
            outputs.append(out if direction == 0 else out.index_select(0, reverse))
            finals.append((h, c))
        x = torch.cat(outputs, 1) if directions == 2 else outputs[0]
    h, c = (torch.stack(states) for states in zip(*finals, strict=True))  # (layers * directions, batch, hidden)
    if packed.unsorted_indices is not None:
        h, c = h.index_select(1, packed.unsorted_indices), c.index_select(1, packed.unsorted_indices)
    return PackedSequence(x, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices), (h, c)


class PackedLSTM(nn.LSTM):
    """``nn.LSTM`` whose call on a packed sequence from zero states runs :func:`lstm_packed` off CUDA.

    On CUDA cuDNN runs each layer as one kernel; elsewhere torch runs a packed sequence through
    autograd's LSTM cell step by step, and :func:`lstm_packed` computes the same in a fraction of the
    operations. Any other call is ``nn.LSTM``'s.
    """

    def forward(
        self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None
    ) -> tuple[Tensor | PackedSequence, tuple[Tensor, Tensor]]:
        if isinstance(input, PackedSequence) and hx is None and not input.data.is_cuda:
            return lstm_packed(self, input, dropout=self.training)
        return super().forward(input, hx)


def _layout(batch_sizes: list[int]) -> tuple[list[int], list[int]]:
    """Where each step's tokens start in a packed sequence, and each sorted row's length."""
    starts = list(itertools.accumulate(batch_sizes[:-1], initial=0))
    return starts, [sum(rows > row for rows in batch_sizes) for row in range(batch_sizes[0])]


def _reversed_tokens(batch_sizes: list[int]) -> Tensor:
    """For each packed token (step t of sorted row b), the packed index of step L_b - 1 - t of the
    same row, where L_b is the row's length: reading it reverses every sequence. ``(tokens,)``"""
    starts, lengths = _layout(batch_sizes)
    return torch.tensor([starts[lengths[b] - 1 - t] + b for t, rows in enumerate(batch_sizes) for b in range(rows)])
