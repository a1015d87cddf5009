"""The target side: a stacked LSTM with attention (or none, for the base model) and (by default) input feeding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from nmt.attention import Memory, build_attention
from nmt.config import ModelConfig
from nmt.packing import Packing
from nmt.step_linear import Linear
from nmt.step_lstm import PreparedLSTM, StepLSTM, Steps


class DecoderState(NamedTuple):
    """Everything the decoder carries from one step to the next.

    Attributes:
        hidden: h of every layer, ``(layers, batch, hidden)``.
        cell: c of every layer, ``(layers, batch, hidden)``.
        feed: the attentional state h̃_{t-1}, ``(batch, hidden)`` (zeros before the first step).
        memory: the prepared source states.
        lstm: the LSTM's weights prepared for input feeding (:meth:`nmt.step_lstm.StepLSTM.prepare`): None
            until the first step with input feeding prepares them; the steps after it reuse them (search).
        step: the index t of the next target step (the same for every row).
    """

    hidden: Tensor
    cell: Tensor
    feed: Tensor
    memory: Memory
    lstm: PreparedLSTM | None
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
            self.lstm,
            self.step,
        )


def packed(padded: Tensor, lengths: Tensor) -> PackedSequence:
    """The first ``lengths[b]`` positions of each row of ``padded`` ``(batch, len, ...)``, packed.

    ``.data`` is ``(tokens, ...)``: time-major, and within each step the rows longest first
    (``.sorted_indices``), so step t is the first ``.batch_sizes[t]`` rows of the sorted batch.
    """
    return Packing.of(lengths, padded.size(1)).pack(padded)


class Decoder(nn.Module):
    """h_t = LSTM(y_{t-1} [; h̃_{t-1}]), c_t = attention, h̃_t = tanh(W_c [c_t; h_t]) (eq. 5).

    With ``model.attention.align: none`` (the paper's base model) there is no c_t and no W_c:
    h̃_t = h_t, and the attention weights returned are zeros.

    With input feeding (§3.3) each step needs the previous h̃, so the LSTM runs one step at
    a time (:mod:`nmt.step_lstm`); without it the LSTM runs over the whole target at once and
    attention for all steps is one batched call. Both paths give the same numbers for the same
    inputs. Int8 search swaps the LSTM and W_c for their int8 versions (:mod:`nmt.quantize`).
    """

    def __init__(self, *, vocab: int, config: ModelConfig, pad_id: int) -> None:
        super().__init__()
        self.input_feed = config.input_feed
        self.embed = nn.Embedding(vocab, config.embed, padding_idx=pad_id)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = StepLSTM(
            config.embed + (config.hidden if config.input_feed else 0),
            config.hidden,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            batch_first=True,
        )
        self.attention = build_attention(hidden=config.hidden, config=config.attention)
        self.W_c = Linear(2 * config.hidden, config.hidden, bias=False) if self.attention.attends else None

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
            attentional = self.dropout(attentional)
            if lengths is not None:
                return packed(attentional, lengths).data, packed(weights, lengths).data, None
            state = DecoderState(h, c, attentional[:, -1], state.memory, state.lstm, state.step + tgt.size(1))
            return attentional, weights, state
        lstm = self.rnn.prepare() if state.lstm is None else state.lstm
        if lengths is None:
            batch, tgt_len = tgt.shape
            emb = self.dropout(self.embed(tgt.t().flatten()))  # (tgt_len * batch, embed), step by step
            sizes = [batch] * tgt_len
            return self._feed_steps(lstm.steps(emb, sizes), sizes, state._replace(lstm=lstm), stack=True)
        tokens = packed(tgt, lengths)
        sizes = tokens.batch_sizes.tolist()
        steps = lstm.steps(self.dropout(self.embed(tokens.data)), sizes)  # embeddings (tokens, embed)
        state = state.index_select(tokens.sorted_indices)
        attentional, attention, _ = self._feed_steps(steps, sizes, state, stack=False)
        return attentional, attention, None

    def _feed_steps(
        self, steps: Steps, sizes: list[int], state: DecoderState, *, stack: bool
    ) -> tuple[Tensor, Tensor, DecoderState]:
        """The input-feeding loop: one LSTM step and one attention per target position.

        Step t runs the first ``sizes[t]`` rows of ``state`` (non-increasing: rows that have ended drop
        out) through ``steps`` (:data:`nmt.step_lstm.Steps`). ``stack`` gives ``(batch, steps, ...)``
        outputs (every step of every row); otherwise the steps' rows are concatenated, ``(sum of sizes, ...)``.
        """
        hidden, cell, feed, memory = list(state.hidden.unbind(0)), list(state.cell.unbind(0)), state.feed, state.memory
        combine = None if self.W_c is None else self.W_c.steps(sizes)  # W_c at each step
        masks = self._dropout_masks(len(hidden), sizes, feed)
        outputs, attention = [], []
        for t, size in enumerate(sizes):
            if size < feed.size(0):
                hidden, cell, feed = [h[:size] for h in hidden], [c[:size] for c in cell], feed[:size]
                memory = Memory(*(m[:size] for m in memory))
            drop = None if masks is None else masks[t]  # (layers, size, hidden)
            x = steps(t, feed, hidden, cell, drop)  # (size, hidden); hidden, cell updated
            context, w = self.attention(x.unsqueeze(1), memory, state.step + t)  # (size, 1, hidden), (size, 1, src_len)
            if combine is not None:
                x = torch.tanh(combine(t, torch.cat([context.squeeze(1), x], 1)))  # h̃_t = tanh(W_c [c_t; h_t])
            feed = x if drop is None else x * drop[-1]  # dropout of h̃
            outputs.append(feed)
            attention.append(w.squeeze(1))
        h, c = torch.stack(hidden), torch.stack(cell)  # (layers, rows, hidden)
        new_state = DecoderState(h, c, feed, memory, state.lstm, state.step + len(sizes))
        join = torch.stack if stack else torch.cat
        return join(outputs, dim=int(stack)), join(attention, dim=int(stack)), new_state

    def _dropout_masks(self, layers: int, sizes: list[int], like: Tensor) -> Sequence[Tensor] | None:
        """The input-feeding loop's dropout, drawn for all steps at once (None without dropout).

        Step t's masks are ``(layers, sizes[t], hidden)`` keep-masks scaled by 1 / (1 - p), so ``x * mask``
        is ``F.dropout(x, p)``: ``layers - 1`` between the LSTM layers, the last for h̃ (both rates are
        ``model.dropout``).
        """
        p = self.dropout.p
        if not self.training or p == 0:
            return None
        masks = like.new_empty(layers, sum(sizes), like.size(-1)).bernoulli_(1 - p).div_(1 - p)
        return masks.split(sizes, 1)

    def _attend(self, out: Tensor, memory: Memory, first_step: int) -> tuple[Tensor, Tensor]:
        """h̃ = tanh(W_c [c_t; h_t]), or h_t without attention, for ``out`` ``(batch, steps, hidden)``
        (before dropout)."""
        context, weights = self.attention(out, memory, first_step)
        if self.W_c is not None:
            out = torch.tanh(self.W_c(torch.cat([context, out], dim=-1)))  # (batch, steps, hidden)
        return out, weights
