"""StepLinear against autograd's step-by-step products (float64); the float layer under CPU autocast."""

from __future__ import annotations

import pytest
import torch

from nmt.precision import padded_rows
from nmt.step_linear import Linear, StepLinear

pytestmark = pytest.mark.usefixtures("seeded")
SIZES = [4, 4, 2, 1]  # rows per step, non-increasing as in a packed batch


def run(weight: torch.Tensor, bases: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """A small recurrence y_t = b_t + x_t Wᵀ with x_{t+1} = tanh(y_t), the steps' outputs concatenated."""
    linear, outputs, x = StepLinear(weight, bases, SIZES), [], x0
    for t, rows in enumerate(SIZES):
        x = torch.tanh(linear(t, x[:rows]))
        outputs.append(x)
    return torch.cat(outputs)


def test_values_and_gradients_are_autograd_s() -> None:
    weight = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    bases = torch.randn(sum(SIZES), 3, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    got = run(weight, bases, x0)
    want, x = [], x0
    for t, b in enumerate(bases.split(SIZES)):
        x = torch.tanh(b + x[: SIZES[t]] @ weight.t())
        want.append(x)
    want = torch.cat(want)
    torch.testing.assert_close(got, want, rtol=1e-14, atol=1e-14)
    upstream = torch.randn_like(want)
    got_grads = torch.autograd.grad(got, [weight, bases, x0], upstream)
    want_grads = torch.autograd.grad(want, [weight, bases, x0], upstream)
    for a, b in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_gradcheck_with_an_expanded_bias() -> None:
    weight = torch.randn(3, 3, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(3, dtype=torch.float64, requires_grad=True)
    x0 = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda w, b, x: run(w, b.expand(sum(SIZES), 3), x), (weight, bias, x0))


def test_without_gradients_nothing_is_kept() -> None:
    weight, bases = torch.randn(3, 3, requires_grad=True), torch.randn(sum(SIZES), 3)
    with torch.no_grad():
        linear = StepLinear(weight, bases, SIZES)
        y = linear(0, torch.randn(4, 3))
    assert linear.inputs == [] and y.grad_fn is None


@pytest.mark.parametrize(("rows", "padded"), [(300, 512), (256, 256), (40, 40)])
def test_cpu_autocast_pads_a_training_batchs_rows_only(rows: int, padded: int) -> None:
    x = torch.randn(rows, 8)
    assert padded_rows(x) == (x, rows)  # no autocast: as it is
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got, real = padded_rows(x)
    assert (got.shape, real) == ((padded, 8), rows)
    assert torch.equal(got[:rows], x) and not got[rows:].any()


def test_linear_under_cpu_autocast_gives_the_real_rows_in_bf16() -> None:
    torch.manual_seed(0)
    layer, x = Linear(8, 5), torch.randn(300, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = layer(x)
    assert got.shape == (300, 5) and got.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), layer(x), rtol=0.02, atol=0.02)
