"""On a CUDA GPU: training in fp32, bf16 and fp16 resumes exactly, nmt-translate and nmt-align run
there, and nmt-train runs under torchrun. Every test is marked ``cuda`` and skips without a GPU;
``scripts/gpu_check.sh`` runs them (``pytest -m cuda``).

The CLIs run in-process (``main(argv)``) on the sample corpus of conftest's ``config`` fixture
with test_cli_train's tiny model; torchrun runs as a subprocess.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_cli_train import TINY

from nmt.checkpoint import load_checkpoint, load_model
from nmt.cli import align as align_cli
from nmt.cli import shortlist as shortlist_cli
from nmt.cli import train as train_cli
from nmt.cli import translate as translate_cli
from nmt.search import decode
from nmt.shortlist import decode_over

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not torch.cuda.is_available(),
        reason="needs a CUDA GPU (torch.cuda.is_available() is false); scripts/gpu_check.sh runs these on one",
    ),
]

ROOT = Path(__file__).resolve().parents[1]
STEPS = 12  # 80 training pairs in batches of 8: 10 updates an epoch, so the resumed half crosses an epoch end
WAIT = 300  # seconds a torchrun job may take (it starts Python, CUDA and the ranks)


@pytest.fixture
def deterministic(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Deterministic CUDA kernels, so that two runs of the same updates agree bit for bit.

    Without them an exact comparison would test luck: e.g. the backward of local attention's
    window gather is an ``index_add`` whose atomic adds land in any order. Deterministic cuBLAS
    products need a workspace setting (PyTorch raises without it); cuBLAS reads it when the
    process first uses it, so scripts/gpu_check.sh also sets it before pytest starts.
    """
    monkeypatch.setenv("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    before = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    yield
    torch.use_deterministic_algorithms(before)


def train(config: Path, save_dir: Path, *overrides: str, resume: bool = False) -> dict[str, Any]:
    """nmt-train on CUDA into ``save_dir``; returns the last checkpoint."""
    argv = ["--quiet", "--config", str(config), *TINY, "train.device=cuda", f"train.save_dir={save_dir}", *overrides]
    assert train_cli.main([*argv, "--resume"] if resume else argv) == 0
    return load_checkpoint(save_dir / "last.pt")


def assert_resumes_exactly(config: Path, tmp_path: Path, *settings: str) -> dict[str, Any]:
    """STEPS updates in one run equal STEPS/2 + resume + STEPS/2; returns the straight run's checkpoint."""
    full = train(config, tmp_path / "full", *settings, f"train.max_steps={STEPS}")
    train(config, tmp_path / "split", *settings, f"train.max_steps={STEPS // 2}")
    split = train(config, tmp_path / "split", *settings, f"train.max_steps={STEPS}", resume=True)
    assert full["step"] == split["step"] == STEPS
    assert math.isfinite(full["best"]["dev_ppl"])
    assert full["model"].keys() == split["model"].keys()
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, split["model"][name]), name
    return full


@pytest.mark.usefixtures("deterministic")
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_training_on_cuda_resumes_exactly(config: Path, tmp_path: Path, precision: str) -> None:
    """Optimizer, data position, dropout masks (1 layer, dropout 0.2: torch's CUDA generator) and,
    in fp16, the gradient scaler's state carry over on CUDA."""
    full = assert_resumes_exactly(config, tmp_path, f"train.precision={precision}")
    assert bool(full["scaler"]) == (precision == "fp16")  # the scaler's state is saved only when it scales


@pytest.mark.usefixtures("deterministic")
def test_dropout_masks_resume_exactly_on_cuda(config: Path, tmp_path: Path) -> None:
    """test_train's CPU check on CUDA: dropout 0.3 on 2 layers.

    The encoder's ``nn.LSTM`` applies dropout between its layers inside cuDNN, which draws from a
    dropout state of its own (seeded from torch's CUDA generator on first use), not from the
    generator state a checkpoint saves; this test shows whether resuming still gives the same masks.
    """
    assert_resumes_exactly(config, tmp_path, "model.layers=2", "model.dropout=0.3")


def test_a_model_trained_on_cuda_translates_and_aligns_there(config: Path, tmp_path: Path) -> None:
    """The paper's local-p general attention: beam 5 in every precision, forced and free alignment."""
    train(config, tmp_path / "run", "model.attention.align=local-p", "train.max_steps=3")
    checkpoint = str(tmp_path / "run" / "last.pt")
    data = config.parent / "data"  # conftest's sample corpus
    src, tgt, gold = (str(data / f"test.{suffix}") for suffix in ("en", "de", "align"))
    lines = Path(src).read_bytes().count(b"\n")
    for precision in ("fp32", "bf16", "fp16"):
        out = tmp_path / f"hyp.{precision}"
        argv = ["--checkpoint", checkpoint, "--device", "cuda", "--beam", "5", "--precision", precision]
        assert translate_cli.main(["--quiet", *argv, "--input", src, "--output", str(out)]) == 0
        assert out.read_bytes().count(b"\n") == lines, precision

    argv = ["--quiet", "--checkpoint", checkpoint, "--device", "cuda", "--src", src, "--heatmaps", "2"]
    free = tmp_path / "free"
    assert align_cli.main([*argv, "--out", str(free)]) == 0  # the attention of its own beam-search output
    assert (free / "alignments.txt").read_bytes().count(b"\n") == lines
    for precision in ("fp32", "bf16", "fp16"):
        forced = tmp_path / f"forced.{precision}"
        extra = ["--tgt", tgt, "--gold", gold, "--out", str(forced), "--precision", precision]
        assert align_cli.main([*argv, *extra]) == 0, precision
        assert (forced / "alignments.txt").read_bytes().count(b"\n") == lines
        scores = json.loads((forced / "scores.json").read_text(encoding="utf-8"))
        assert 0.0 <= scores["aer"] <= 1.0 and scores["sentences"] == lines


def test_shortlist_search_on_cuda_and_int8_refused_there(config: Path, tmp_path: Path, capsys) -> None:
    """A whole-vocabulary shortlist searches exactly as none on the GPU too; nmt-translate --shortlist runs
    there; --precision int8 there (nmt-translate, nmt-align) is one line and exit 1 (PyTorch's int8
    kernels are the CPU's)."""
    train(config, tmp_path / "run", "train.max_steps=3")
    checkpoint = str(tmp_path / "run" / "last.pt")
    assert shortlist_cli.main(["--quiet", "--checkpoint", checkpoint]) == 0  # the run's own corpus
    loaded = load_model(checkpoint, "cuda")
    src = torch.randint(4, loaded.src_tokenizer.vocab_size, (5, 9), device="cuda")
    lengths = torch.tensor([9, 8, 8, 5, 2], device="cuda")
    src = src.masked_fill(torch.arange(9, device="cuda") >= lengths.unsqueeze(1), 0)
    vocab = torch.arange(loaded.tgt_tokenizer.vocab_size, device="cuda")
    want = decode(loaded.model, src, lengths, config=loaded.config.decode)
    got = decode_over(loaded.model, vocab, src, lengths, config=loaded.config.decode)
    assert [[(h.tokens, h.score) for h in g] for g in got] == [[(h.tokens, h.score) for h in w] for w in want]

    src_file = config.parent / "data" / "test.en"
    out = tmp_path / "hyp.shortlist"
    argv = ["--quiet", "--checkpoint", checkpoint, "--device", "cuda", "--input", str(src_file)]
    assert translate_cli.main([*argv, "--shortlist", str(tmp_path / "run" / "shortlist.pt"), "--output", str(out)]) == 0
    assert out.read_bytes().count(b"\n") == src_file.read_bytes().count(b"\n")
    capsys.readouterr()
    assert translate_cli.main([*argv, "--precision", "int8"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8 runs on the CPU only" in err
    align = ["--quiet", "--checkpoint", checkpoint, "--device", "cuda", "--src", str(src_file), "--precision", "int8"]
    assert align_cli.main([*align, "--out", str(tmp_path / "align")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "int8 runs on the CPU only" in err


def launcher() -> list[str]:
    """What torchrun starts: the ``nmt-train`` console script as the README does, or (where the
    package is not installed, only on PYTHONPATH) its module."""
    script = shutil.which("nmt-train")
    return ["--no-python", script] if script else ["--module", "nmt.cli.train"]


def torchrun(ranks: int, *argv: str) -> tuple[int, str]:
    """``torchrun --standalone --nproc_per_node RANKS`` of nmt-train; (exit status, stderr).

    The job gets its own session so that a hung one is killed with every rank it started.
    """
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(ranks)]
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))  # this checkout's nmt
    with subprocess.Popen(
        [*command, *launcher(), *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": path},
        start_new_session=True,
    ) as job:
        try:
            _, err = job.communicate(timeout=WAIT)
        except subprocess.TimeoutExpired:
            os.killpg(job.pid, signal.SIGKILL)
            pytest.fail(f"torchrun did not finish in {WAIT} s; its stderr ends:\n{job.communicate()[1][-3000:]}")
    return job.returncode, err


@pytest.mark.parametrize(
    "ranks",
    [
        1,
        pytest.param(
            2, marks=pytest.mark.skipif(torch.cuda.device_count() < 2, reason="NCCL between 2 ranks needs 2 GPUs")
        ),
    ],
)
def test_nmt_train_runs_under_torchrun_on_cuda(config: Path, tmp_path: Path, ranks: int) -> None:
    """The README's ``torchrun --standalone --nproc_per_node N --no-python nmt-train ... train.device=cuda``.

    One rank joins no process group (``nmt.distributed.process_group`` skips it for a world of
    one), so it checks the launch and the device torchrun's LOCAL_RANK picks; NCCL itself needs 2 GPUs.
    """
    status, err = torchrun(ranks, "--config", str(config), *TINY, "train.device=cuda", "train.max_steps=2")
    assert status == 0, err[-3000:]
    assert "on cuda:0" in err  # rank 0's "model: N parameters on cuda:0 (fp32)"
    if ranks > 1:
        assert f"{ranks} ranks joined the nccl process group" in err
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 2
