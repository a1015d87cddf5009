"""fp32 outputs are unchanged by speed work: every variant of tests/golden.py against the stored file."""

from __future__ import annotations

import json

import golden
import pytest
import torch


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(golden.PATH.read_text(encoding="utf-8"))


@pytest.mark.parametrize("variant", golden.VARIANTS)
def test_outputs_match_the_stored_ones(variant: str, stored: dict) -> None:
    got, want = golden.outputs(golden.VARIANTS[variant]), stored[variant]
    for key in ("log_probs", "attention"):
        torch.testing.assert_close(torch.tensor(got[key]), torch.tensor(want[key]), rtol=1e-5, atol=1e-5)
    for beam in ("beam1", "beam3"):
        for got_hyps, want_hyps in zip(got[beam], want[beam], strict=True):
            assert [h["tokens"] for h in got_hyps] == [h["tokens"] for h in want_hyps]
            assert [h["log_prob"] for h in got_hyps] == pytest.approx([h["log_prob"] for h in want_hyps], abs=1e-4)
