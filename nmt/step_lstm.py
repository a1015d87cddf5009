"""The decoder's LSTM run one target position at a time, as input feeding needs (§3.3).

The decoder asks its LSTM for prepared weights (:meth:`StepLSTM.prepare`; once per search, as the
decoder state carries them from step to step), asks those for one call's steps
(:meth:`PreparedLSTM.steps`) and runs step t of every layer with ``steps(t, x, hidden, cell, masks)``.
:class:`StepLSTM` prepares float weights (:class:`StepWeights`); int8 search swaps in
:class:`nmt.quantize.Int8LSTM`, which has the same two methods, so the decoder's loop never asks
which it runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nmt.lstm import lstm_cell
from nmt.precision import in_autocast_dtype
from nmt.step_linear import StepLinear

Steps = Callable[[int, Tensor, list[Tensor], list[Tensor], Tensor | None], Tensor]
"""One call's steps: ``steps(t, x, hidden, cell, masks)`` runs step t of every layer from the first
layer's non-embedding input x = h̃_{t-1} ``(rows_t, hidden)``; ``hidden`` and ``cell`` are per-layer
``(rows_t, hidden)`` states, replaced in place by the new ones; ``masks`` (training only, else None)
holds the dropout keep-masks, ``masks[l - 1]`` ``(rows_t, hidden)`` before layer l (a further one
is the caller's). Returns the top layer's output ``(rows_t, hidden)``."""


class PreparedLSTM(Protocol):
    """The decoder LSTM's weights, prepared for input-feeding steps."""

    def steps(self, emb: Tensor, sizes: list[int]) -> Steps:
        """One decoder call's steps (see :data:`Steps`): step t reads the embeddings of its ``sizes[t]`` rows,
        ``emb`` ``(sum of sizes, embed)`` holding the steps' rows one after another."""
        ...


class StepLSTM(nn.LSTM):
    """The decoder's stacked ``nn.LSTM`` (batch first): over a whole target as ``nn.LSTM`` (no input
    feeding), or one step at a time through :meth:`prepare`."""

    def prepare(self) -> StepWeights:
        """The weights arranged for steps with input feeding (the input is ``[embedding; h̃]``), under
        autocast cast to its dtype once (:func:`nmt.precision.in_autocast_dtype`)."""
        embed = self.input_size - self.hidden_size
        w_ih, w_hh, b_ih, b_hh = zip(*self.all_weights, strict=True)
        recurrent = [torch.cat([w[:, embed:] if layer == 0 else w, w_hh[layer]], 1) for layer, w in enumerate(w_ih)]
        # b_ih + b_hh layer by layer: the gradients of stacked biases would share memory, and accumulate wrongly
        return StepWeights(
            w_ih[0][:, :embed],
            [b + b_hh[layer] for layer, b in enumerate(b_ih)],
            [in_autocast_dtype(w) for w in recurrent],
        )


class StepWeights(NamedTuple):
    """The decoder LSTM's float weights arranged for one step at a time with input feeding.

    Step t's gates of layer l are ``inputs_l + [x_l; h_l] @ recurrent[l]ᵀ``: x_0 = h̃_{t-1} and
    inputs_0 = W_ih's embedding columns times the embedding of y_{t-1} plus the biases, computed for
    all steps at once; x_l = dropout(h_{l-1}) and inputs_l the biases above. One product per layer
    and step, not ``torch.lstm_cell``'s two.

    Attributes:
        embed: layer 0's ``W_ih`` columns that read the embedding, ``(4 * hidden, embed)``.
        bias: ``b_ih + b_hh`` of every layer, each ``(4 * hidden,)``.
        recurrent: per layer ``[W_ih; W_hh]`` side by side (layer 0: W_ih's h̃ columns), ``(4 * hidden, 2 * hidden)``.
    """

    embed: Tensor
    bias: list[Tensor]
    recurrent: list[Tensor]

    def steps(self, emb: Tensor, sizes: list[int]) -> Steps:
        """:meth:`PreparedLSTM.steps`; every weight's gradient is one product for all steps (:class:`StepLinear`)."""
        rows = sum(sizes)
        inputs = F.linear(emb, self.embed, self.bias[0])  # (rows, 4 * hidden)
        bases = [inputs, *(bias.expand(rows, -1) for bias in self.bias[1:])]
        layers = [StepLinear(w, base, sizes) for w, base in zip(self.recurrent, bases, strict=True)]

        def step(t: int, x: Tensor, hidden: list[Tensor], cell: list[Tensor], masks: Tensor | None) -> Tensor:
            for layer, linear in enumerate(layers):
                if layer and masks is not None:
                    x = x * masks[layer - 1]  # dropout between layers, as nn.LSTM's
                gates = linear(t, torch.cat([x, hidden[layer]], 1))  # (rows_t, 4 * hidden)
                hidden[layer], cell[layer] = lstm_cell(gates, cell[layer])
                x = hidden[layer]
            return x

        return step
