"""Seq2Seq: encoder, attentional decoder and the output layer p(y_t | y_<t, x) = softmax(W_s h̃_t)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from nmt.chunked_loss import linear_nll
from nmt.config import ConfigError, ModelConfig
from nmt.decoder import Decoder, DecoderState
from nmt.encoder import Encoder
from nmt.precision import step_loop_precision
from nmt.step_linear import Linear


class Seq2Seq(nn.Module):
    """The Luong et al. (2015) model.

    ``forward`` is teacher forcing over a whole target; ``encode`` + ``step`` decode one
    token at a time for search, carrying a :class:`DecoderState` that beam search
    reorders with ``state.index_select``.
    """

    def __init__(self, *, config: ModelConfig, src_vocab: int, tgt_vocab: int, pad_id: int = 0) -> None:
        super().__init__()
        if config.layers < 1 or config.hidden < 1 or config.embed < 1:
            raise ConfigError("model.layers, model.hidden and model.embed must be positive")
        if not 0.0 <= config.dropout < 1.0:
            raise ConfigError(f"model.dropout must be in [0, 1), got {config.dropout}")
        self.config = config
        self.encoder = Encoder(vocab=src_vocab, config=config, pad_id=pad_id)
        self.decoder = Decoder(vocab=tgt_vocab, config=config, pad_id=pad_id)
        self.generator = Linear(config.hidden, tgt_vocab)  # W_s
        for p in self.parameters():
            nn.init.uniform_(p, -config.init, config.init)
        with torch.no_grad():
            for embed in (self.encoder.embed, self.decoder.embed):
                embed.weight[pad_id].zero_()
        if config.tie_embeddings:
            if config.embed != config.hidden:
                raise ConfigError(
                    f"model.tie_embeddings needs model.embed == model.hidden, got {config.embed} and {config.hidden}"
                )
            self.generator.weight = self.decoder.embed.weight

    @property
    def max_src_len(self) -> int | None:
        """The longest source the attention can read (location scorer), else None."""
        return self.decoder.attention.max_src_len

    def encode(self, src: Tensor, src_lengths: Tensor) -> DecoderState:
        """The decoder's first state for ``src`` ``(batch, src_len)`` with ``src_lengths`` ``(batch,)``."""
        with step_loop_precision(src.device):
            states, (h, c) = self.encoder(src, src_lengths)
            memory = self.decoder.attention.prepare(states, src_lengths)
        feed = states.new_zeros(src.size(0), self.config.hidden)
        return DecoderState(h, c, feed, memory, None, 0)

    def forward(
        self,
        src: Tensor,
        src_lengths: Tensor,
        tgt_in: Tensor,
        tgt_lengths: Tensor | None = None,
        *,
        targets: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing.

        Args:
            src: ``(batch, src_len)``; src_lengths: ``(batch,)``;
            tgt_in: the target shifted right (BOS first), ``(batch, tgt_len)``;
            tgt_lengths: ``(batch,)`` true target lengths, to compute the real positions alone;
            targets: with ``tgt_lengths``, the tokens to predict at the real positions ``(tokens,)``
                (:func:`nmt.decoder.packed` ``(tgt_out, tgt_lengths).data``).

        Returns:
            logits ``(batch, tgt_len, tgt_vocab)`` and attention ``(batch, tgt_len, src_len)``;
            with ``tgt_lengths``, logits ``(tokens, tgt_vocab)`` and attention ``(tokens, src_len)``
            of the real positions, in the order of :func:`nmt.decoder.packed` ``(tgt_out, tgt_lengths).data``;
            with ``targets``, instead of the logits their summed NLL, a scalar computed without
            keeping them (:func:`nmt.chunked_loss.linear_nll`).
        """
        attentional, weights = self.attend(src, src_lengths, tgt_in, tgt_lengths)
        if targets is not None:
            return linear_nll(attentional, self.generator.weight, self.generator.bias, targets), weights
        return self.generator(attentional), weights

    def attend(
        self, src: Tensor, src_lengths: Tensor, tgt_in: Tensor, tgt_lengths: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Teacher forcing up to the output layer (what needs the attention alone: alignment, diagnostics).

        Returns:
            the attentional states h̃ ``(batch, tgt_len, hidden)`` and attention ``(batch, tgt_len,
            src_len)``; with ``tgt_lengths``, ``(tokens, hidden)`` and ``(tokens, src_len)`` as in :meth:`forward`.
        """
        state = self.encode(src, src_lengths)  # which sets its own precision
        with step_loop_precision(src.device):
            attentional, weights, _ = self.decoder(tgt_in, state, tgt_lengths)
        return attentional, weights

    def step(
        self, tokens: Tensor, state: DecoderState, *, output: Callable[[Tensor], Tensor] | None = None
    ) -> tuple[Tensor, Tensor, DecoderState]:
        """One decoding step from the previous tokens ``(batch,)``; on the CPU under autocast only the
        output layer runs in its dtype (:func:`nmt.precision.step_loop_precision`).

        ``output`` replaces W_s: a vocabulary shortlist's rows of it (:mod:`nmt.shortlist`), ``(batch,
        hidden) -> (batch, rows)``; the log-probabilities are then normalised over those rows.

        Returns:
            log-probabilities ``(batch, tgt_vocab)`` (or ``(batch, rows)``), attention ``(batch, src_len)``,
            next state.
        """
        with step_loop_precision(tokens.device):
            attentional, weights, state = self.decoder(tokens.unsqueeze(1), state)
        logits = (self.generator if output is None else output)(attentional.squeeze(1))
        log_probs = torch.log_softmax(logits, dim=-1, dtype=torch.promote_types(logits.dtype, torch.float32))
        return log_probs, weights.squeeze(1), state
