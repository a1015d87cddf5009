"""Packed sequences by index: one gather to pack a padded batch and one scatter to pad it again.

``pack_padded_sequence`` and ``pad_packed_sequence`` copy step by step, forward and backward;
:class:`Packing` computes where every real position goes once per batch and moves them all at once.
The order is theirs: time-major, and within a step the rows longest first.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import PackedSequence


class Packing(NamedTuple):
    """Where the real positions of a padded batch ``(batch, length, ...)`` go in a packed sequence.

    Attributes:
        index: the packed tokens' flat positions ``row * length + t`` in the padded batch, ``(tokens,)``.
        batch_sizes: the rows of each step, ``(steps,)`` on the CPU.
        sorted_indices: the batch rows longest first (ties in row order), ``(batch,)``.
        unsorted_indices: its inverse, ``(batch,)``.
        length: the padded length.
    """

    index: Tensor
    batch_sizes: Tensor
    sorted_indices: Tensor
    unsorted_indices: Tensor
    length: int

    @classmethod
    def of(cls, lengths: Tensor, length: int) -> Packing:
        """The packing of rows of ``lengths`` ``(batch,)`` (each at least 1) padded to ``length``."""
        device = lengths.device
        sorted_lengths, order = lengths.cpu().sort(descending=True, stable=True)
        steps = torch.arange(int(sorted_lengths[0])).unsqueeze(1)  # (steps, 1)
        alive = steps < sorted_lengths  # (steps, batch): which sorted rows run at each step
        index = (order * length + steps)[alive]  # step by step, sorted rows in order
        inverse = torch.empty_like(order).scatter_(0, order, torch.arange(order.numel()))
        return cls(index.to(device), alive.sum(1), order.to(device), inverse.to(device), length)

    def pack(self, padded: Tensor) -> PackedSequence:
        """The real positions of ``padded`` ``(batch, length, ...)``: ``.data`` is ``(tokens, ...)``."""
        data = padded.flatten(0, 1).index_select(0, self.index)
        return PackedSequence(data, self.batch_sizes, self.sorted_indices, self.unsorted_indices)

    def pad(self, data: Tensor) -> Tensor:
        """Packed ``data`` ``(tokens, ...)`` back in a padded batch ``(batch, length, ...)``, zeros on padding."""
        batch = self.sorted_indices.numel()
        padded = data.new_zeros(batch * self.length, *data.shape[1:]).index_copy(0, self.index, data)
        return padded.view(batch, self.length, *data.shape[1:])
