"""Checkpoints: atomic writes, refusal of crafted pickles, truncation and corruption detection, rotation."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from nmt import checkpoint
from nmt.checkpoint import load_checkpoint, load_model, save_checkpoint, save_run_checkpoint
from nmt.config import Config, ModelConfig, to_dict
from nmt.errors import NMTError
from nmt.model import Seq2Seq
from nmt.tokenizer import WordTokenizer


def _payload(step: int = 0) -> dict:
    return {"step": step, "weights": torch.arange(6.0).view(2, 3), "rng": (3, (1, 2), None), "blob": b"\x00\xff"}


def test_round_trip_keeps_tensors_and_plain_values(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "a.pt", _payload(7))
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded["step"] == 7
    assert torch.equal(loaded["weights"], torch.arange(6.0).view(2, 3))
    assert loaded["rng"] == (3, (1, 2), None)
    assert loaded["blob"] == b"\x00\xff"
    assert (loaded["format"], loaded["version"]) == (checkpoint.FORMAT, checkpoint.VERSION)


def test_interrupted_save_keeps_previous_checkpoint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "last.pt"
    save_checkpoint(path, _payload(1))

    def crash_midway(obj: object, file: checkpoint._HashingWriter) -> None:
        file.write(b"PK\x03\x04 half of a zip")
        raise KeyboardInterrupt  # e.g. Ctrl-C while the body is being written

    monkeypatch.setattr(checkpoint.torch, "save", crash_midway)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, _payload(2))
    assert load_checkpoint(path)["step"] == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # no temp file left behind


class _RunsCode:
    def __reduce__(self) -> tuple:
        return (os.system, ("touch pwned",))


def test_crafted_pickle_is_refused_without_running_code(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    save_checkpoint(tmp_path / "evil.pt", {"model": _RunsCode()})  # valid header and checksum
    with pytest.raises(NMTError, match=r"evil\.pt: refused to load.*posix\.system"):
        load_checkpoint(tmp_path / "evil.pt")
    assert not (tmp_path / "pwned").exists()


def test_truncated_checkpoint_is_reported_as_truncated(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    save_checkpoint(path, _payload())
    data = path.read_bytes()
    for size in (len(data) - 1, len(data) // 2, 20):
        path.write_bytes(data[:size])
        with pytest.raises(NMTError, match=r"a\.pt: truncated checkpoint"):
            load_checkpoint(path)


def test_flipped_byte_is_reported_as_corrupt(tmp_path: Path) -> None:
    path = tmp_path / "a.pt"
    save_checkpoint(path, _payload())
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(NMTError, match=r"a\.pt: corrupt checkpoint: the checksum"):
        load_checkpoint(path)


def test_foreign_missing_and_wrong_version_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.save({"model": {}}, tmp_path / "plain.pt")
    with pytest.raises(NMTError, match=r"plain\.pt: not an nmt checkpoint"):
        load_checkpoint(tmp_path / "plain.pt")
    with pytest.raises(NMTError, match=r"nothere\.pt: no such checkpoint"):
        load_checkpoint(tmp_path / "nothere.pt")
    monkeypatch.setattr(checkpoint, "VERSION", 99)
    save_checkpoint(tmp_path / "future.pt", _payload())
    monkeypatch.undo()
    with pytest.raises(NMTError, match=r"future\.pt: checkpoint version 99 cannot be read"):
        load_checkpoint(tmp_path / "future.pt")


def test_run_checkpoints_keep_last_k_plus_best_and_last(tmp_path: Path) -> None:
    for step in (10, 20, 30, 40):
        save_run_checkpoint(tmp_path, _payload(step), keep_last=2, best=step == 20)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == ["best.pt", "last.pt", "step_00000030.pt", "step_00000040.pt"]
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 20  # outlives its pruned step file
    assert load_checkpoint(tmp_path / "last.pt")["step"] == 40


def test_load_model_rebuilds_model_and_tokenizers(tmp_path: Path) -> None:
    config = Config(model=ModelConfig(embed=8, hidden=8, layers=1))
    src = WordTokenizer(words=["<pad>", "<unk>", "<s>", "</s>", "a", "b"])
    tgt = WordTokenizer(words=["<pad>", "<unk>", "<s>", "</s>", "x"])
    model = Seq2Seq(config=config.model, src_vocab=src.vocab_size, tgt_vocab=tgt.vocab_size)
    payload = {
        "config": to_dict(config),
        "model": model.state_dict(),
        "tokenizers": {"src": src.to_state(), "tgt": tgt.to_state()},
    }
    save_checkpoint(tmp_path / "m.pt", payload)
    loaded = load_model(tmp_path / "m.pt")
    assert not loaded.model.training
    assert loaded.config == config
    assert loaded.src_tokenizer.encode("a b c") == [4, 5, 1]
    assert loaded.tgt_tokenizer.vocab_size == 5
    for name, tensor in model.state_dict().items():
        assert torch.equal(loaded.model.state_dict()[name], tensor), name


def test_load_model_reports_a_checkpoint_without_a_model(tmp_path: Path) -> None:
    save_checkpoint(tmp_path / "opt.pt", {"config": to_dict(Config())})
    with pytest.raises(NMTError, match=r"opt\.pt: incomplete or mismatched checkpoint"):
        load_model(tmp_path / "opt.pt")
