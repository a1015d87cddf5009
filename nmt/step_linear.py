"""A weight applied at every step of a loop, whose gradient is one matrix product for all steps.

Autograd differentiates ``y_t = b_t + x_t Wᵀ`` one step at a time: at every step a product for W's
gradient and an addition to the sum of them. :class:`StepLinear` keeps the steps' inputs instead and,
when the gradient reaches W, computes ``dW = Σ_t dy_tᵀ x_t`` as one product of all steps' rows (as
cuDNN does for a recurrent layer). The steps' gradients for x_t still come from autograd, step by step.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable


class _Steps(torch.autograd.Function):
    """(bases, W) -> bases; its backward gives W the gradient of every step's ``x_t Wᵀ``.

    The steps' inputs are appended to ``inputs`` after this forward, as the loop runs; they are all
    there when the backward runs, since that waits for every step's backward.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, bases: Tensor, weight: Tensor, inputs: list[Tensor]) -> Tensor:
        ctx.inputs = inputs
        return bases.view_as(bases)

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_bases: Tensor) -> tuple[Tensor, Tensor, None]:
        inputs = torch.cat(ctx.inputs)  # (rows, in), the steps' rows in order, as those of d_bases
        return d_bases, d_bases.t() @ inputs.to(d_bases.dtype), None


class StepLinear:
    """``y_t = b_t + x_t Wᵀ`` for the steps t = 0, 1, ... of a loop, each called once and in order.

    Args:
        weight: W ``(out, in)``.
        bases: every step's b_t, the steps' rows one after another, ``(rows, out)`` (views allowed,
            e.g. a bias expanded).
        sizes: the rows of each step.
    """

    def __init__(self, weight: Tensor, bases: Tensor, sizes: list[int]) -> None:
        self.inputs: list[Tensor] = []
        self.track = torch.is_grad_enabled() and weight.requires_grad
        self.weight_t = weight.detach().t() if self.track else weight.t()
        self.bases = (_Steps.apply(bases, weight, self.inputs) if self.track else bases).split(sizes)

    def __call__(self, t: int, x: Tensor) -> Tensor:
        """``y_t`` ``(rows_t, out)`` for step ``t``'s input ``x`` ``(rows_t, in)``."""
        if self.track:
            self.inputs.append(x.detach())
        return torch.addmm(self.bases[t], x, self.weight_t)
