"""The output layer and its loss together, a chunk of rows at a time: Σ_t −log softmax(W_s h̃_t + b)[y_t].

Through autograd the loss keeps the logits of every target token ``(tokens, vocab)``, the largest
tensors of a training step, several times over: the logits, their float32 copy, the log-softmax
saved for the backward and its gradient. Here each chunk of rows (:func:`chunk_rows`) computes its
logits and their NLL and, when a gradient is wanted, at once the gradients of its rows,
``dh̃ = G W``, and its shares of ``dW = Gᵀ h̃`` and ``db = Σ_t G_t`` (``G = softmax − one-hot``, the
gradient of the NLL in the logits); then its logits go. The backward only scales those gradients by
the loss's. The products are autograd's (one forward, two backward), in the same precision: under
autocast the logits and the gradients' products run in its dtype, and so do the log-softmax and G
(each computed in float32 inside its kernel and stored in bf16: the logits are bf16 already and G
goes into bf16 products, so no pass over a chunk's logits only casts them); the NLL is summed in
float32. fp16, whose range is too narrow for G (a probability of 1e-9 underflows, a frequent word's
dW can overflow; autograd's path relies on the gradient scaler there), takes the log-softmax, G and
the gradients' products in float32.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from nmt.precision import ROW_MULTIPLE

CHUNK_LOGITS = {"cpu": 2**21, "cuda": 2**26}
"""About how many logits a chunk holds, by device type (others: the CPU's): on the CPU they stay in
the cache (8 MB in float32: 256 rows of 8000 pieces); on a GPU fewer, larger chunks launch fewer kernels."""


def chunk_rows(device: torch.device, vocab: int) -> int:
    """The rows of a chunk: a multiple of :data:`nmt.precision.ROW_MULTIPLE` (so under CPU autocast
    only a batch's last chunk is padded), at least one multiple."""
    logits = CHUNK_LOGITS.get(device.type, CHUNK_LOGITS["cpu"])
    return max(1, logits // (vocab * ROW_MULTIPLE)) * ROW_MULTIPLE


class _LinearNLL(torch.autograd.Function):
    """(h̃, W, b, targets, dtype, pad) -> the summed NLL; see the module's docstring."""

    @staticmethod
    def forward(
        ctx: FunctionCtx,
        hidden: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        targets: Tensor,
        dtype: torch.dtype,
        pad: bool,
    ) -> Tensor:
        want_hidden, want_weight, want_bias = ctx.needs_input_grad[:3]
        precise = torch.promote_types(dtype, torch.float32)  # of the NLL and the gradients
        products = precise if dtype == torch.float16 else dtype  # of the log-softmax, G and the gradients' products
        ctx.hidden_dtype = hidden.dtype
        w = weight.to(dtype)
        w_products = w if products == dtype else weight.to(products)
        b = None if bias is None else bias.to(dtype)
        d_hidden = hidden.new_empty(hidden.shape, dtype=precise) if want_hidden else None
        d_weight = weight.new_zeros(weight.shape, dtype=precise) if want_weight else None
        d_bias = weight.new_zeros(w.size(0), dtype=precise) if want_bias else None
        total = hidden.new_zeros((), dtype=precise)
        minus_one = hidden.new_full((), -1, dtype=products)
        size = chunk_rows(hidden.device, w.size(0))
        for start in range(0, hidden.size(0), size):
            h = hidden[start : start + size].to(dtype)  # (rows, hidden)
            y = targets[start : start + size]  # (rows,)
            rows = h.size(0)
            padded = F.pad(h, (0, 0, 0, size - rows)) if pad else h  # one shape for oneDNN's bf16 kernels
            logits = F.linear(padded, w, b)[:rows].to(products)  # (rows, vocab)
            log_probs = torch.log_softmax(logits, dim=1)  # (rows, vocab): one fused kernel, not logsumexp and sub_
            total -= log_probs.gather(1, y.unsqueeze(1)).sum(dtype=precise)
            if not (want_hidden or want_weight or want_bias):
                continue
            # G; index_put_, not scatter_add_, whose bf16 kernel took 0.7 ms a chunk for its 256 elements
            g = log_probs.exp_().index_put_((torch.arange(rows, device=y.device), y), minus_one, accumulate=True)
            if want_hidden:
                d_hidden[start : start + rows] = g @ w_products
            if want_weight and products == precise:
                d_weight.addmm_(g.t(), h.to(products))
            elif want_weight:
                d_weight += g.t() @ h  # in the autocast dtype, added up in float32
            if want_bias:
                d_bias += g.sum(0)  # in the products' dtype, as dW, added up in float32
        ctx.save_for_backward(d_hidden, d_weight, d_bias)
        return total

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, d_total: Tensor) -> tuple[Tensor | None, ...]:
        d_hidden, d_weight, d_bias = (None if d is None else d * d_total for d in ctx.saved_tensors)
        d_hidden = None if d_hidden is None else d_hidden.to(ctx.hidden_dtype)
        return d_hidden, d_weight, d_bias, None, None, None


def linear_nll(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> Tensor:
    """The summed NLL of ``targets`` ``(tokens,)`` under softmax(``hidden`` Wᵀ + b), in float32 (or
    float64 for a float64 model).

    Args:
        hidden: h̃ ``(tokens, hidden)``; weight: W ``(vocab, hidden)``; bias: b ``(vocab,)`` or None.

    Under autocast (this call's) the products run in its dtype, on the CPU with every chunk at the
    same number of rows.
    """
    device = hidden.device.type
    autocast = torch.is_autocast_enabled(device)
    dtype = torch.get_autocast_dtype(device) if autocast else torch.promote_types(hidden.dtype, weight.dtype)
    with torch.autocast(device, enabled=False):
        return _LinearNLL.apply(hidden, weight, bias, targets, dtype, autocast and device == "cpu")
