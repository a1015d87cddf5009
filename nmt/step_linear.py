"""A weight applied at every step of a loop, whose gradient is one matrix product for all steps.

Autograd differentiates ``y_t = b_t + x_t Wᵀ`` one step at a time: at every step a product for W's
gradient and an addition to the sum of them. :class:`StepLinear` keeps the steps' inputs instead and,
when the gradient reaches W, computes ``dW = Σ_t dy_tᵀ x_t`` as one product of all steps' rows (as
cuDNN does for a recurrent layer). The steps' gradients for x_t still come from autograd, step by step.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import FunctionCtx, once_differentiable

from nmt.precision import in_autocast_dtype, padded_rows


class _Steps(torch.autograd.Function):
    """(bases, W) -> bases; its backward gives W the gradient of every step's ``x_t Wᵀ``.

    The steps' inputs are appended to ``inputs`` after this forward, as the loop runs; they are all
    there when the backward runs, since that waits for every step's backward.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, bases: Tensor, weight: Tensor, inputs: list[Tensor]) -> Tensor:
        ctx.inputs, ctx.weight_dtype = inputs, weight.dtype
        return bases.view_as(bases)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_bases: Tensor) -> tuple[Tensor, Tensor, None]:
        inputs = torch.cat(ctx.inputs)  # (rows, in), the steps' rows in order, as those of d_bases
        dtype = ctx.weight_dtype  # a weight cast for autocast takes its gradient in its own precision
        return d_bases, d_bases.to(dtype).t() @ inputs.to(dtype), None


class StepLinear:
    """``y_t = b_t + x_t Wᵀ`` for the steps t = 0, 1, ... of a loop, each called once and in order.

    Args:
        weight: W ``(out, in)``; under autocast, already in its dtype (:func:`nmt.precision.in_autocast_dtype`).
        bases: every step's b_t, the steps' rows one after another, ``(rows, out)`` (views allowed,
            e.g. a bias expanded); cast to W's dtype once, here, not at every step.
        sizes: the rows of each step.
    """

    def __init__(self, weight: Tensor, bases: Tensor, sizes: list[int]) -> None:
        self.inputs: list[Tensor] = []
        self.track = torch.is_grad_enabled() and weight.requires_grad
        self.weight_t = weight.detach().t() if self.track else weight.t()
        bases = _Steps.apply(bases, weight, self.inputs) if self.track else bases
        self.bases = bases.to(weight.dtype).split(sizes)

    def __call__(self, t: int, x: Tensor) -> Tensor:
        """``y_t`` ``(rows_t, out)`` for step ``t``'s input ``x`` ``(rows_t, in)``."""
        if self.track:
            self.inputs.append(x.detach())
        return torch.addmm(self.bases[t], x, self.weight_t)


class Linear(nn.Linear):
    """``nn.Linear`` that also gives the two views of itself search and the input-feeding loop ask
    for; int8 search's layer (:class:`nmt.quantize.Int8Linear`) gives the same two, so no caller
    asks which it holds."""

    def forward(self, x: Tensor) -> Tensor:
        """``(..., in) -> (..., out)``; under CPU autocast a matrix of rows is computed padded
        (:func:`nmt.precision.padded_rows`)."""
        padded, rows = padded_rows(x)
        return super().forward(padded)[:rows]

    def steps(self, sizes: list[int]) -> Callable[[int, Tensor], Tensor]:
        """The layer at a loop's steps, ``y_t = layer(t, x_t)``, step t with ``sizes[t]`` rows: a
        :class:`StepLinear`, under autocast with the weight cast once."""
        weight = in_autocast_dtype(self.weight)
        bias = weight.new_zeros(()) if self.bias is None else self.bias
        return StepLinear(weight, bias.expand(sum(sizes), self.out_features), sizes)

    def rows(self, index: Tensor) -> Callable[[Tensor], Tensor]:
        """The layer restricted to its output rows ``index`` ``(rows,)`` (a shortlist's):
        ``(..., in) -> (..., rows)``."""
        bias = None if self.bias is None else self.bias.index_select(0, index)
        weight = self.weight.index_select(0, index)
        return lambda x: F.linear(x, weight, bias)
