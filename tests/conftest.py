"""Shared builders: small float64 attention modules and models, and a tiny training run's config."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import torch

from nmt.attention import Attention
from nmt.config import AttentionConfig, ModelConfig
from nmt.model import Seq2Seq
from nmt.sample import write_sample_corpus


@pytest.fixture(autouse=True)
def no_stale_log_handler() -> Iterator[None]:
    """A command's main() run in-process binds the root logger to the test's captured stderr, which
    pytest closes after the test; drop that handler, so no later test logs to a closed stream."""
    root = logging.getLogger()
    before = set(root.handlers)
    yield
    for handler in set(root.handlers) - before:
        if type(handler) is logging.StreamHandler:
            root.removeHandler(handler)


@pytest.fixture
def seeded() -> None:
    """Fixed random inputs, so a failure reproduces (use with ``pytest.mark.usefixtures``)."""
    torch.manual_seed(0)


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Run on one intra-op thread: tiny tensors gain nothing from more, and on a loaded 2-core
    machine OpenMP threads waiting on each other made a small training loop ten times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def make_attention() -> Callable[..., Attention]:
    """``make_attention(score, align, hidden=6, window=2, max_src_len=12)``: a float64 module."""

    def build(score: str, align: str, *, hidden: int = 6, window: int = 2, max_src_len: int = 12) -> Attention:
        config = AttentionConfig(score=score, align=align, window=window, max_src_len=max_src_len)
        return Attention(hidden=hidden, config=config).double()

    return build


@pytest.fixture
def make_model() -> Callable[..., Seq2Seq]:
    """``make_model(vocab=11, init=0.3, **model_fields)``: a small float64 Seq2Seq in eval mode.

    ``score``, ``align``, ``window`` and ``max_src_len`` go to the attention section; the rest to
    :class:`ModelConfig` (defaults: embed 5, hidden 6, 2 layers, no dropout).
    """

    def build(*, vocab: int = 11, **fields: object) -> Seq2Seq:
        attention_keys = {f.name for f in dataclasses.fields(AttentionConfig)}
        attention = AttentionConfig(**{k: fields.pop(k) for k in list(fields) if k in attention_keys})
        fields = {"embed": 5, "hidden": 6, "layers": 2, "dropout": 0.0, "init": 0.3, **fields}
        config = ModelConfig(attention=attention, **fields)
        return Seq2Seq(config=config, src_vocab=vocab, tgt_vocab=vocab).double().eval()

    return build


@pytest.fixture
def config(tmp_path: Path) -> Path:
    """A config file for the sample language (80 training pairs) writing into tmp_path/run."""
    write_sample_corpus(tmp_path / "data", pairs=96, seed=3)
    path = tmp_path / "tiny.yaml"
    path.write_text(
        f"data:\n  train: {tmp_path}/data/train\n  dev: {tmp_path}/data/dev\ntrain:\n  save_dir: {tmp_path}/run\n",
        encoding="utf-8",
    )
    return path
