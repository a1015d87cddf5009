"""The target side: a stacked LSTM with attention (or none, for the base model) and (by default) input feeding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence

from nmt.attention import Memory, build_attention
from nmt.config import ModelConfig


class DecoderState(NamedTuple):
    """Everything the decoder carries from one step to the next.

    Attributes:
        hidden: h of every layer, ``(layers, batch, hidden)``.
        cell: c of every layer, ``(layers, batch, hidden)``.
        feed: the attentional state h̃_{t-1}, ``(batch, hidden)`` (zeros before the first step).
        memory: the prepared source states.
        step: the index t of the next target step (the same for every row).
    """

    hidden: Tensor
    cell: Tensor
    feed: Tensor
    memory: Memory
    step: int

    def index_select(self, index: Tensor, *, memory: bool = True) -> DecoderState:
        """Keep, repeat or reorder batch rows (beam search); ``index`` is ``(new_batch,)``.

        ``memory=False`` leaves the memory rows as they are: right when every new row reads the
        same source as the row it replaces (beams reordered within their sentences), and it
        saves copying the encoder states at every step.
        """
        return DecoderState(
            self.hidden.index_select(1, index),
            self.cell.index_select(1, index),
            self.feed.index_select(0, index),
            self.memory.index_select(index) if memory else self.memory,
            self.step,
        )


def packed(padded: Tensor, lengths: Tensor) -> PackedSequence:
    """The first ``lengths[b]`` positions of each row of ``padded`` ``(batch, len, ...)``, packed.

    ``.data`` is ``(tokens, ...)``: time-major, and within each step the rows longest first
    (``.sorted_indices``), so step t is the first ``.batch_sizes[t]`` rows of the sorted batch.
    """
    return pack_padded_sequence(padded, lengths.cpu(), batch_first=True, enforce_sorted=False)


def lstm_step(rnn: nn.LSTM, x: Tensor, hidden: list[Tensor], cell: list[Tensor]) -> Tensor:
    """One time step of the stacked ``rnn`` through its own weights, layer by layer.

    A one-step call of ``nn.LSTM`` runs the fused oneDNN kernel, whose backward costs about ten
    times more than these cell calls on the CPU (README.md, "Design notes"). Dropout between
    layers matches ``nn.LSTM``'s.

    Args:
        x: the first layer's input ``(batch, input)``.
        hidden, cell: per-layer ``(batch, hidden)`` states, replaced in place by the new ones.

    Returns:
        the top layer's output ``(batch, hidden)``.
    """
    if not isinstance(rnn, nn.LSTM):  # int8 search: the LSTM steps itself (nmt.quantize.Int8LSTM)
        return rnn.step(x, hidden, cell)
    for layer, weights in enumerate(rnn.all_weights):
        if layer:
            x = F.dropout(x, rnn.dropout, rnn.training)
        hidden[layer], cell[layer] = torch.lstm_cell(x, (hidden[layer], cell[layer]), *weights)
        x = hidden[layer]
    return x


class Decoder(nn.Module):
    """h_t = LSTM(y_{t-1} [; h̃_{t-1}]), c_t = attention, h̃_t = tanh(W_c [c_t; h_t]) (eq. 5).

    With ``model.attention.align: none`` (the paper's base model) there is no c_t and no W_c:
    h̃_t = h_t, and the attention weights returned are zeros.

    With input feeding (§3.3) each step needs the previous h̃, so the LSTM runs one step at
    a time; without it the LSTM runs over the whole target at once and attention for all
    steps is one batched call. Both paths give the same numbers for the same inputs.
    """

    def __init__(self, *, vocab: int, config: ModelConfig, pad_id: int) -> None:
        super().__init__()
        self.input_feed = config.input_feed
        self.embed = nn.Embedding(vocab, config.embed, padding_idx=pad_id)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = nn.LSTM(
            config.embed + (config.hidden if config.input_feed else 0),
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.attention = build_attention(hidden=config.hidden, config=config.attention)
        self.W_c = nn.Linear(2 * config.hidden, config.hidden, bias=False) if self.attention.attends else None

    def forward(
        self, tgt: Tensor, state: DecoderState, lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor, DecoderState | None]:
        """Run the decoder over ``tgt`` ``(batch, tgt_len)`` (previous target tokens).

        With ``lengths`` ``(batch,)`` (teacher forcing) only the real positions come out, in the
        order of :func:`packed` ``(tgt, lengths).data``, and there is no state to go on from. With
        input feeding, step t runs just the rows longer than t, so padding costs nothing; without
        it, the one LSTM call and the attention run over the padded batch and only h̃ is packed.

        Returns:
            h̃ ``(batch, tgt_len, hidden)`` (after dropout), attention weights
            ``(batch, tgt_len, src_len)`` and the state after the last step; with ``lengths``,
            h̃ ``(tokens, hidden)``, weights ``(tokens, src_len)`` and None.
        """
        if not self.input_feed:
            emb = self.dropout(self.embed(tgt))  # (batch, tgt_len, embed)
            out, (h, c) = self.rnn(emb, (state.hidden, state.cell))  # out: (batch, tgt_len, hidden)
            attentional, weights = self._attend(out, state.memory, state.step)
            if lengths is not None:
                return packed(attentional, lengths).data, packed(weights, lengths).data, None
            return attentional, weights, DecoderState(h, c, attentional[:, -1], state.memory, state.step + tgt.size(1))
        if lengths is None:
            # unbind: one backward for all steps, not one per slice
            return self._feed_steps(self.dropout(self.embed(tgt)).unbind(1), state, stack=True)
        tokens = packed(tgt, lengths)
        steps = self.dropout(self.embed(tokens.data)).split(tokens.batch_sizes.tolist())  # (rows_t, embed)
        attentional, weights, _ = self._feed_steps(steps, state.index_select(tokens.sorted_indices), stack=False)
        return attentional, weights, None

    def _feed_steps(
        self, steps: Sequence[Tensor], state: DecoderState, *, stack: bool
    ) -> tuple[Tensor, Tensor, DecoderState]:
        """The input-feeding loop: one LSTM step and one attention per target position.

        Step t reads the embeddings ``steps[t]`` ``(rows_t, embed)`` and runs the first
        ``rows_t`` rows of ``state`` (non-increasing: rows that have ended drop out). ``stack``
        gives ``(batch, steps, ...)`` outputs (every step of every row); otherwise the steps'
        rows are concatenated, ``(sum of rows_t, ...)``.
        """
        hidden, cell, feed, memory = list(state.hidden.unbind(0)), list(state.cell.unbind(0)), state.feed, state.memory
        outputs, weights = [], []
        for t, emb_t in enumerate(steps):
            rows = emb_t.size(0)
            if rows < feed.size(0):
                hidden, cell, feed = [h[:rows] for h in hidden], [c[:rows] for c in cell], feed[:rows]
                memory = Memory(*(m[:rows] for m in memory))
            x = torch.cat([emb_t, feed], dim=-1)  # (rows, embed + hidden)
            out = lstm_step(self.rnn, x, hidden, cell)  # (rows, hidden); hidden, cell updated
            attentional, w = self._attend(out.unsqueeze(1), memory, state.step + t)
            feed = attentional.squeeze(1)
            outputs.append(feed)
            weights.append(w.squeeze(1))
        new_state = DecoderState(torch.stack(hidden), torch.stack(cell), feed, memory, state.step + len(steps))
        join = torch.stack if stack else torch.cat
        return join(outputs, dim=int(stack)), join(weights, dim=int(stack)), new_state

    def _attend(self, out: Tensor, memory: Memory, first_step: int) -> tuple[Tensor, Tensor]:
        """h̃ = dropout(tanh(W_c [c_t; h_t])), or dropout(h_t) without attention, for ``out``
        ``(batch, steps, hidden)``."""
        context, weights = self.attention(out, memory, first_step)
        if self.W_c is not None:
            out = torch.tanh(self.W_c(torch.cat([context, out], dim=-1)))  # (batch, steps, hidden)
        return self.dropout(out), weights
