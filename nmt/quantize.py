"""int8 search on the CPU (``--precision int8``): a loaded model's matrix products through PyTorch's int8 kernels.

:func:`quantize_model` swaps, once, in place, the layers that hold the model's weight matrices for
int8 ones:

- the output layer W_s, the decoder's W_c and the attention projections (general's and location's
  W_a, local-p's W_p) become :class:`Int8Linear`;
- the encoder LSTM becomes PyTorch's dynamic quantized LSTM (packed sequences, both directions), which
  the encoder calls as it calls :class:`nmt.lstm.PackedLSTM`;
- the decoder LSTM becomes :class:`Int8LSTM`, which steps every layer through PyTorch's quantized
  LSTM cell, as input feeding needs, behind the interface of :class:`nmt.step_lstm.StepLSTM`.

Weights are quantized per output channel (one symmetric scale per row: PyTorch's
``per_channel_dynamic_qconfig``); each call quantizes its input to uint8 over the input's own range
(dynamic quantization), fbgemm / oneDNN multiply int8 by uint8 into int32, and the result comes
back in float32 with the bias added. Embeddings (a lookup), attention scores and softmaxes over the
source states, the LSTM cell's gate nonlinearities and the search's scores stay float32. Concat's
W_a stays float32 (the scorer reads its two halves as weight slices), and so do the vectors v_a and
v_p (one output each: nothing to gain).

PyTorch marks this eager int8 API deprecated in favour of torchao; the kernels are the ones its
quantized modules run, and the deprecation warnings are silenced here (:func:`_deprecations_ignored`).
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.ao.nn.quantized.dynamic import LSTM as DynamicLSTM
from torch.ao.quantization import per_channel_dynamic_qconfig

from nmt.attention import ConcatScorer
from nmt.model import Seq2Seq
from nmt.step_lstm import Steps

_DEPRECATED = r"(torch\.ao\.quantization is deprecated|torch\.quantize_per_tensor, torch\.quantize_per_channel)"


@contextlib.contextmanager
def _deprecations_ignored() -> Iterator[None]:
    """Silence PyTorch's notices that its eager int8 API will move to torchao (the user can do nothing about them)."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=_DEPRECATED)
        yield


def per_channel_int8(weight: Tensor) -> Tensor:
    """``weight`` ``(out, in)`` as a qint8 tensor with one symmetric scale per output row (zero point 0)."""
    observer = per_channel_dynamic_qconfig.weight()
    weight = weight.detach().float()
    observer(weight)
    scales, zero_points = observer.calculate_qparams()
    with _deprecations_ignored():
        return torch.quantize_per_channel(weight, scales.double(), zero_points, observer.ch_axis, torch.qint8)


class Int8Linear(nn.Module):
    """y = W x + b with W in int8 per output channel, prepacked for the CPU kernel; x is quantized per call.

    Inputs ``(..., in_features)`` float32 give ``(..., out_features)`` float32.
    """

    def __init__(self, *, weight: Tensor, bias: Tensor | None) -> None:
        """``weight``: qint8 ``(out, in)`` (:func:`per_channel_int8`); ``bias``: float32 ``(out,)``."""
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.packed = torch.ops.quantized.linear_prepack(weight, bias)  # the kernel's own layout

    @classmethod
    def from_float(cls, linear: nn.Linear) -> Int8Linear:
        bias = None if linear.bias is None else linear.bias.detach().float()
        return cls(weight=per_channel_int8(linear.weight), bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        # reduce_range: 7-bit inputs, as PyTorch's dynamic Linear uses, so no int16 sum saturates on x86
        return torch.ops.quantized.linear_dynamic(x, self.packed, reduce_range=True)

    def weight_and_bias(self) -> tuple[Tensor, Tensor | None]:
        """The qint8 weight ``(out, in)`` and the float bias, as packed."""
        return torch.ops.quantized.linear_unpack(self.packed)

    @functools.cached_property
    def unpacked(self) -> tuple[Tensor, Tensor, Tensor]:
        """The int8 values ``(out, in)``, the scales ``(out,)`` and the bias ``(out,)`` (zeros without one),
        unpacked once for :meth:`rows` (unpacking the 8,001-row output layer took 14 of a shortlisted batch's
        25 ms). The zero points are all 0 (symmetric weights: :func:`per_channel_int8`)."""
        weight, bias = self.weight_and_bias()
        bias = weight.new_zeros(self.out_features, dtype=torch.float32) if bias is None else bias
        return weight.int_repr(), weight.q_per_channel_scales().float(), bias

    def rows(self, index: Tensor) -> Callable[[Tensor], Tensor]:
        """The layer restricted to its output rows ``index`` ``(rows,)`` (a shortlist's), ``(..., in) ->
        (..., rows)``: the same int8 values and scales.

        The rows are packed as one tensor of scale 1, and row j's scale s_j multiplies the product
        after it: s_j (q_j · x) + b_j is the product the kernel computes from a per-channel weight, but
        packing a per-channel weight reads its scales one at a time (3.2 of the 4.2 ms that packing
        1,827 rows of 256 took, once per batch).
        """
        values, scales, bias = self.unpacked
        index = index.to(values.device)
        unit = torch._make_per_tensor_quantized_tensor(values.index_select(0, index), 1.0, 0)
        packed = torch.ops.quantized.linear_prepack(unit, None)
        scales, bias = scales.index_select(0, index), bias.index_select(0, index)
        return lambda x: torch.addcmul(bias, torch.ops.quantized.linear_dynamic(x, packed, reduce_range=True), scales)

    def steps(self, sizes: list[int]) -> Callable[[int, Tensor], Tensor]:
        """The layer at a loop's steps, as :meth:`nmt.step_linear.Linear.steps`: each step a call."""
        return lambda t, x: self(x)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 per channel"


class Int8LSTM(nn.Module):
    """A unidirectional stacked ``nn.LSTM`` with int8 gate weights, run one step of every layer at a time.

    It takes the decoder's calls of the :class:`nmt.step_lstm.StepLSTM` it replaces: :meth:`prepare`
    and :meth:`steps` for the input-feeding loop, and :meth:`forward` over a ``(batch, steps, input)``
    sequence (the decoder without input feeding), step by step. Search only: no dropout.
    """

    def __init__(self, rnn: nn.LSTM) -> None:
        super().__init__()
        if rnn.bidirectional or rnn.proj_size or not rnn.bias or not rnn.batch_first:
            raise ValueError("Int8LSTM takes a unidirectional, batch-first nn.LSTM with biases and no projection")
        self.layers = []  # per layer: packed W_ih (with b_ih), packed W_hh (with b_hh), b_ih, b_hh
        for w_ih, w_hh, b_ih, b_hh in rnn.all_weights:
            b_ih, b_hh = b_ih.detach().float(), b_hh.detach().float()
            packed_ih = torch.ops.quantized.linear_prepack(per_channel_int8(w_ih), b_ih)
            packed_hh = torch.ops.quantized.linear_prepack(per_channel_int8(w_hh), b_hh)
            self.layers.append((packed_ih, packed_hh, b_ih, b_hh))

    def step(self, x: Tensor, hidden: list[Tensor], cell: list[Tensor]) -> Tensor:
        """One time step of every layer, each through PyTorch's quantized LSTM cell.

        Args:
            x: the first layer's input ``(batch, input)``.
            hidden, cell: per-layer ``(batch, hidden)`` states, replaced in place by the new ones.

        Returns:
            the top layer's output ``(batch, hidden)``.
        """
        for layer, weights in enumerate(self.layers):
            hidden[layer], cell[layer] = torch.ops.quantized.quantized_lstm_cell_dynamic(
                x, (hidden[layer], cell[layer]), *weights
            )
            x = hidden[layer]
        return x

    def prepare(self) -> Int8LSTM:
        """The weights prepared for input-feeding steps (:class:`nmt.step_lstm.PreparedLSTM`): packed at load."""
        return self

    def steps(self, emb: Tensor, sizes: list[int]) -> Steps:
        """:meth:`nmt.step_lstm.PreparedLSTM.steps`: step t's first layer reads ``[emb_t; h̃_{t-1}]``."""
        embs = emb.split(sizes)  # step t's (rows_t, embed)

        def step(t: int, x: Tensor, hidden: list[Tensor], cell: list[Tensor], masks: Tensor | None) -> Tensor:
            return self.step(torch.cat([embs[t], x], 1), hidden, cell)  # masks: None (no dropout in search)

        return step

    def forward(self, inputs: Tensor, hx: tuple[Tensor, Tensor]) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """``inputs`` ``(batch, steps, input)`` and ``(h, c)`` ``(layers, batch, hidden)`` ->
        outputs ``(batch, steps, hidden)`` and the last ``(h, c)``."""
        hidden, cell = list(hx[0].unbind(0)), list(hx[1].unbind(0))
        outputs = torch.stack([self.step(x, hidden, cell) for x in inputs.unbind(1)], dim=1)
        return outputs, (torch.stack(hidden), torch.stack(cell))


def quantize_model(model: Seq2Seq) -> Seq2Seq:
    """Swap ``model``'s weight matrices for int8 ones, in place (see the module's docstring); returns ``model``.

    The model must be a float32 model in eval mode on the CPU: the result searches; it cannot train,
    move to another device or be saved.
    """
    if model.training or any(p.dtype != torch.float32 or p.device.type != "cpu" for p in model.parameters()):
        raise ValueError("int8 quantizes a float32 model in eval mode on the CPU")
    for parent, name, linear in _projections(model):
        setattr(parent, name, Int8Linear.from_float(linear))
    model.encoder.rnn = _dynamic_lstm(model.encoder.rnn)
    model.decoder.rnn = Int8LSTM(model.decoder.rnn)
    return model


def is_quantized(model: Seq2Seq) -> bool:
    """Whether :func:`quantize_model` has run on ``model``."""
    return isinstance(model.generator, Int8Linear)


def _projections(model: Seq2Seq) -> list[tuple[nn.Module, str, nn.Linear]]:
    """``(parent, name, layer)`` of every ``nn.Linear`` with more than one output that its module calls
    as a layer: all but concat's W_a (read as weight slices) and the vectors v_a, v_p."""
    return [
        (parent, name, child)
        for parent in model.modules()
        if not isinstance(parent, ConcatScorer)
        for name, child in parent.named_children()
        if isinstance(child, nn.Linear) and child.out_features > 1
    ]


def _dynamic_lstm(rnn: nn.LSTM) -> DynamicLSTM:
    """PyTorch's dynamic quantized LSTM of ``rnn`` (a subclass such as :class:`nmt.lstm.PackedLSTM` too), its
    weights int8 per output channel."""
    plain = nn.LSTM(  # from_float takes nn.LSTM itself alone
        rnn.input_size, rnn.hidden_size, rnn.num_layers, bidirectional=rnn.bidirectional, batch_first=rnn.batch_first
    )
    plain.load_state_dict(rnn.state_dict())
    plain.qconfig = per_channel_dynamic_qconfig  # what from_float reads the weight observer from
    with _deprecations_ignored():
        return DynamicLSTM.from_float(plain)
