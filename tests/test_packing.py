"""Packing by index against torch's pack_padded_sequence / pad_packed_sequence."""

from __future__ import annotations

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from nmt.packing import Packing

pytestmark = pytest.mark.usefixtures("seeded")


def test_packing_matches_torch_s() -> None:
    padded, lengths = torch.randn(4, 6, 3), torch.tensor([2, 6, 1, 4])
    want = pack_padded_sequence(padded, lengths, batch_first=True, enforce_sorted=False)
    got = Packing.of(lengths, 6).pack(padded)
    for name in ("data", "batch_sizes", "sorted_indices", "unsorted_indices"):
        assert torch.equal(getattr(got, name), getattr(want, name)), name


def test_equal_lengths_keep_their_row_order() -> None:
    packing = Packing.of(torch.tensor([2, 3, 2, 3]), 3)
    assert packing.sorted_indices.tolist() == [1, 3, 0, 2]
    assert packing.batch_sizes.tolist() == [4, 4, 2]


def test_padding_again_restores_the_batch_with_zeros_on_padding() -> None:
    padded, lengths = torch.randn(3, 5, 2), torch.tensor([5, 2, 3])
    packing = Packing.of(lengths, 5)
    want, _ = pad_packed_sequence(packing.pack(padded), batch_first=True, total_length=5)
    got = packing.pad(packing.pack(padded).data)
    assert torch.equal(got, want)
    assert torch.equal(got[1, 2:], torch.zeros(3, 2))


def test_gradients_pass_gradcheck() -> None:
    packing = Packing.of(torch.tensor([1, 4, 3]), 4)
    padded = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x: packing.pad(packing.pack(x).data * 2), (padded,))
