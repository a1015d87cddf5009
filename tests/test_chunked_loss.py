"""linear_nll against autograd's cross-entropy of the output layer: values and gradients, across chunk edges."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from nmt import chunked_loss
from nmt.chunked_loss import chunk_rows, linear_nll

pytestmark = pytest.mark.usefixtures("seeded", "small_chunks")
CHUNK_ROWS = 256  # of these tests' vocabulary of 11 (small_chunks)


@pytest.fixture
def small_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Chunks of 256 rows of 11 logits, so that a test's few hundred rows cross chunk edges."""
    monkeypatch.setitem(chunked_loss.CHUNK_LOGITS, "cpu", CHUNK_ROWS * 11)


def leaves(rows: int, dtype: torch.dtype = torch.float64) -> tuple[torch.Tensor, ...]:
    """h̃ ``(rows, 6)``, W ``(11, 6)``, b ``(11,)`` that want gradients, and targets ``(rows,)``."""
    hidden, weight, bias = (
        torch.randn(*shape, dtype=dtype, requires_grad=True) for shape in ((rows, 6), (11, 6), (11,))
    )
    return hidden, weight, bias, torch.randint(0, 11, (rows,))


def reference(hidden, weight, bias, targets) -> torch.Tensor:
    return F.cross_entropy(F.linear(hidden, weight, bias), targets, reduction="sum")


def gradients(loss: torch.Tensor, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return torch.autograd.grad(loss, leaves)


@pytest.mark.parametrize("rows", [1, CHUNK_ROWS - 1, CHUNK_ROWS, 2 * CHUNK_ROWS + 3])
def test_value_and_gradients_are_those_of_the_cross_entropy(rows: int) -> None:
    hidden, weight, bias, targets = leaves(rows)
    got, want = linear_nll(hidden, weight, bias, targets), reference(hidden, weight, bias, targets)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, want)
    got_grads, want_grads = gradients(3.0 * got, hidden, weight, bias), gradients(3.0 * want, hidden, weight, bias)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)


def test_without_a_bias_and_for_the_hidden_states_alone() -> None:
    hidden, weight, _, targets = leaves(CHUNK_ROWS + 5)
    weight.requires_grad_(False)
    got = linear_nll(hidden, weight, None, targets)
    want = reference(hidden, weight, None, targets)
    torch.testing.assert_close(gradients(got, hidden), gradients(want, hidden))


def test_without_gradients_it_keeps_none() -> None:
    hidden, weight, bias, targets = leaves(7)
    with torch.no_grad():
        loss = linear_nll(hidden, weight, bias, targets)
    assert loss.grad_fn is None
    torch.testing.assert_close(loss, reference(hidden, weight, bias, targets).detach())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_under_cpu_autocast_the_products_run_in_its_dtype_and_the_loss_in_float32(dtype: torch.dtype) -> None:
    hidden, weight, bias, targets = leaves(CHUNK_ROWS + 9, torch.float32)
    with torch.autocast("cpu", dtype=dtype):
        got = linear_nll(hidden, weight, bias, targets)
        want = F.cross_entropy(F.linear(hidden, weight, bias).float(), targets, reduction="sum")
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want, rtol=1e-3, atol=0)
    for g, w in zip(gradients(got, hidden, weight, bias), gradients(want, hidden, weight, bias), strict=True):
        assert g.dtype == w.dtype == torch.float32
        torch.testing.assert_close(g, w, rtol=0.02, atol=0.02)


def test_fp16_keeps_small_probabilities_from_underflowing() -> None:
    """A probability of about 1e-9, below fp16's smallest number, still reaches dW."""
    weight = torch.zeros(3, 2, requires_grad=True)
    hidden = torch.tensor([[1.0, 0.0]])
    bias = torch.tensor([0.0, -20.7, 0.0])  # p(1) = exp(-20.7) / (2 + exp(-20.7)) ≈ 5e-10
    with torch.autocast("cpu", dtype=torch.float16):
        (d_weight,) = gradients(linear_nll(hidden, weight, bias, torch.tensor([0])), weight)
    assert 3e-10 < d_weight[1, 0] < 7e-10


def test_chunks_fill_the_cache_on_the_cpu_and_are_larger_on_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.undo()  # the module's own sizes
    assert chunk_rows(torch.device("cpu"), 8000) == 256
    assert chunk_rows(torch.device("cpu"), 50_000) == 256  # never fewer rows than one multiple
    assert chunk_rows(torch.device("cuda"), 50_000) == 1280
