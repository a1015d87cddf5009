"""The source side: embeddings and a stacked (optionally bidirectional) LSTM over packed sequences."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from nmt.config import ConfigError, ModelConfig
from nmt.lstm import PackedLSTM
from nmt.packing import Packing


def reverse_padded(x: Tensor, lengths: Tensor) -> Tensor:
    """Reverse the first ``lengths[b]`` positions of every row; padding stays in place.

    Args:
        x: ``(batch, seq_len, ...)``.
        lengths: ``(batch,)``.
    """
    positions = torch.arange(x.size(1), device=x.device).unsqueeze(0)  # (1, seq_len)
    flipped = lengths.unsqueeze(1) - 1 - positions
    index = torch.where(flipped >= 0, flipped, positions)  # (batch, seq_len)
    index = index.view(*index.shape, *([1] * (x.dim() - 2))).expand_as(x)
    return x.gather(1, index)


class Encoder(nn.Module):
    """Reads the source into states h̄_s and the final (h, c) of every layer.

    With ``reverse_source`` the LSTM reads each sentence backwards (Sutskever et al. 2014);
    its outputs are flipped back, so attention positions always follow the source text.
    A bidirectional encoder gives each direction ``hidden / 2`` cells and concatenates them.

    The LSTM is :class:`nmt.lstm.PackedLSTM` (``nn.LSTM``, fast on a packed sequence off CUDA); int8
    search swaps in PyTorch's dynamic quantized LSTM (:mod:`nmt.quantize`), which takes the same call.
    """

    def __init__(self, *, vocab: int, config: ModelConfig, pad_id: int) -> None:
        super().__init__()
        directions = 2 if config.bidirectional else 1
        if config.hidden % directions:
            raise ConfigError(f"model.hidden must be even for a bidirectional encoder, got {config.hidden}")
        self.reverse = config.reverse_source
        self.bidirectional = config.bidirectional
        self.embed = nn.Embedding(vocab, config.embed, padding_idx=pad_id)
        self.dropout = nn.Dropout(config.dropout)
        self.rnn = PackedLSTM(
            config.embed,
            config.hidden // directions,
            num_layers=config.layers,
            dropout=config.dropout if config.layers > 1 else 0.0,
            bidirectional=config.bidirectional,
            batch_first=True,
        )

    def forward(self, src: Tensor, lengths: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """Encode a padded batch.

        Args:
            src: token ids ``(batch, src_len)``.
            lengths: true lengths ``(batch,)``, each at least 1.

        Returns:
            states ``(batch, src_len, hidden)`` (zero on padding) and the final
            ``(h, c)``, each ``(layers, batch, hidden)``.
        """
        if self.reverse:
            src = reverse_padded(src, lengths)
        emb = self.dropout(self.embed(src))  # (batch, src_len, embed)
        packing = Packing.of(lengths, src.size(1))
        packed = packing.pack(emb)
        out, (h, c) = self.rnn(packed)
        states = packing.pad(out.data)  # (batch, src_len, hidden)
        if self.reverse:
            states = reverse_padded(states, lengths)
        if self.bidirectional:
            h, c = (self._join_directions(x) for x in (h, c))
        return states, (h, c)

    @staticmethod
    def _join_directions(x: Tensor) -> Tensor:
        """``(layers * 2, batch, hidden / 2) -> (layers, batch, hidden)``: forward and backward side by side."""
        layers2, batch, half = x.shape
        return x.view(layers2 // 2, 2, batch, half).transpose(1, 2).reshape(layers2 // 2, batch, 2 * half)
