"""nmt-train in-process: a few updates on a tiny corpus, resume, signals, user errors."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest
import yaml

from nmt.checkpoint import load_checkpoint, load_model
from nmt.cli import train as cli
from nmt.config import load_config, to_dict

TINY = (
    "data.tokenizer=word",
    "data.vocab_size=60",
    "model.embed=12",
    "model.hidden=12",
    "model.layers=1",
    "train.batch_size=8",
    "train.valid_every=3",
    "train.log_every=2",
    "train.threads=1",
)


def test_trains_a_few_steps_and_writes_the_run_directory(
    config: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    overlay = tmp_path / "overlay" / "tiny_dot.yaml"  # the run directory holds the resolved config, not the overlay
    overlay.parent.mkdir()
    overlay.write_text(f"base: ../{config.name}\nmodel:\n  attention:\n    score: dot\n", encoding="utf-8")
    assert cli.main(["--config", str(overlay), *TINY, "train.max_steps=5"]) == 0
    run = tmp_path / "run"
    assert {"config.yaml", "metrics.jsonl", "tokenizer.joint.vocab", "last.pt", "best.pt"} <= {
        p.name for p in run.iterdir()
    }
    resolved = to_dict(load_config(overlay, [*TINY, "train.max_steps=5"]))
    assert yaml.safe_load((run / "config.yaml").read_text(encoding="utf-8")) == resolved
    assert resolved["model"]["attention"]["score"] == "dot" and resolved["data"]["train"] == f"{tmp_path}/data/train"
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [(r["event"], r["step"]) for r in records] == [
        ("train", 2),
        ("valid", 3),
        ("train", 4),
        ("valid", 5),  # the end of training is validated too
    ]
    loaded = load_model(run / "last.pt")
    assert loaded.config.model.hidden == 12 and loaded.config.train.max_steps == 5
    assert load_checkpoint(run / "last.pt")["step"] == 5
    assert load_checkpoint(run / "last.pt")["config"] == resolved
    out, err = capsys.readouterr()
    assert out == ""  # stdout carries data only
    assert "dev perplexity" in err
    changed = "model.embed=12 model.hidden=12 model.layers=1 model.attention.score=dot data.train="
    logged = f"config in {run}/config.yaml: the defaults but {changed}"
    assert logged in err


def test_resume_trains_on_to_a_higher_max_steps(config: Path, tmp_path: Path) -> None:
    assert cli.main(["--config", str(config), *TINY, "train.max_steps=3"]) == 0
    assert cli.main(["--config", str(config), *TINY, "--resume", "train.max_steps=6"]) == 0  # options between overrides
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 6


def test_sigterm_saves_a_checkpoint_and_resume_finishes(
    config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    update = cli._ProgressBar.update

    def terminate_at_step_4(bar: cli._ProgressBar, progress: cli.Progress) -> None:
        update(bar, progress)
        if progress.step == 4:
            os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(cli._ProgressBar, "update", terminate_at_step_4)
    assert cli.main(["--config", str(config), *TINY, "train.max_steps=8"]) == 128 + signal.SIGTERM
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 4
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers restored
    monkeypatch.undo()
    assert cli.main(["--config", str(config), *TINY, "train.max_steps=8", "--resume"]) == 0
    assert load_checkpoint(tmp_path / "run" / "last.pt")["step"] == 8


def test_user_mistakes_give_one_line_and_status_1(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["--config", str(config), "train.optimiser=sgd"]) == 1
    err = capsys.readouterr().err
    assert "unknown key 'train.optimiser' (did you mean 'optimizer'?)" in err
    assert "Traceback" not in err
    assert cli.main(["--config", str(config), *TINY, "--resume"]) == 1
    assert "nothing to resume" in capsys.readouterr().err
    assert cli.main(["--config", str(config), "data.train=/nonexistent/corpus"]) == 1
    assert "/nonexistent/corpus.en: no such file" in capsys.readouterr().err
    overlay = config.with_name("overlay.yaml")
    overlay.write_text("base: tiny.yml\n", encoding="utf-8")
    assert cli.main(["--config", str(overlay)]) == 1
    err = capsys.readouterr().err
    assert err == f"nmt-train: error: {overlay}:1: base: no config file {config.with_name('tiny.yml')}\n"


def test_help_shows_examples(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--help"])
    assert exit_info.value.code == 0
    assert "nmt-train --config configs/quickstart.yaml" in capsys.readouterr().out
