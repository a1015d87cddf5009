"""Long runs under signals, as subprocesses: SIGINT/SIGTERM checkpoint at the next step boundary and
exit cleanly, and SIGKILL in the middle of writing a checkpoint leaves the previous one loadable."""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from test_cli_train import TINY as CLI_TINY

from nmt.checkpoint import load_checkpoint
from nmt.cli import train as train_cli

TINY = [*CLI_TINY, "train.log_every=1"]  # log every update, so the tests see where training is
WAIT = 120  # seconds any subprocess may take before the test gives up on it

# Saves a big checkpoint into a run directory over and over, printing each step once it is saved;
# the payload is the run's own last.pt (plus ballast), so any complete file is one to resume from.
WRITER = """
import sys, torch
from nmt.checkpoint import load_checkpoint, save_run_checkpoint
run = sys.argv[1]
payload = load_checkpoint(run + "/last.pt")
payload["ballast"] = torch.zeros(8_000_000)  # 32 MB: each save takes long enough to be cut short
while True:
    payload["step"] += 1
    save_run_checkpoint(run, payload, keep_last=2, best=False)
    print(payload["step"], flush=True)
"""


def start_training(config: Path, *overrides: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "nmt.cli.train", "--config", str(config), *TINY, *overrides]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_steps(process: subprocess.Popen[str], metrics: Path, steps: int) -> None:
    """Until the run has logged ``steps`` updates (it is then inside its training loop)."""
    deadline = time.monotonic() + WAIT
    while not metrics.exists() or metrics.read_text(encoding="utf-8").count('"event": "train"') < steps:
        assert process.poll() is None, process.communicate()[1]
        assert time.monotonic() < deadline, "training did not start in time"
        time.sleep(0.05)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_a_signal_saves_a_checkpoint_at_the_next_step_and_resume_continues(config, tmp_path, signum) -> None:
    run = tmp_path / "run"
    # far more updates than the test waits for; no validation, so only the signal writes a checkpoint
    process = start_training(config, "train.max_epochs=1000", "train.valid_every=100000")
    wait_for_steps(process, run / "metrics.jsonl", 3)
    process.send_signal(signum)
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 128 + signum, err
    assert f"{signum.name} received: saving a checkpoint after this update" in err
    assert "continue with the same command and --resume" in err and "Traceback" not in err
    logged = [json.loads(line)["step"] for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    step = load_checkpoint(run / "last.pt")["step"]
    assert step == logged[-1] >= 3  # the last update done is the one saved
    assert train_cli.main(["--config", str(config), *TINY, f"train.max_steps={step + 2}", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == step + 2


def test_sigkill_while_writing_a_checkpoint_keeps_the_previous_one(config, tmp_path) -> None:
    run = tmp_path / "run"
    assert train_cli.main(["--config", str(config), *TINY, "train.max_steps=4", "train.valid_every=2"]) == 0
    rng = random.Random(9)
    cut_short = 0
    for kills in itertools.count(1):  # at least 3 kills, and on until one has cut a write short
        writer = subprocess.Popen([sys.executable, "-c", WRITER, str(run)], stdout=subprocess.PIPE, text=True)
        saved = int(writer.stdout.readline())  # one whole save: the next is under way
        started = time.monotonic()
        saved = int(writer.stdout.readline())
        time.sleep(rng.uniform(0, 1.5 * (time.monotonic() - started)))  # a random moment of a save
        writer.kill()
        saved = max([saved, *map(int, writer.stdout.read().split())])
        writer.wait(timeout=WAIT)
        cut_short += any(".tmp-" in p.name for p in run.iterdir())
        # every file under a checkpoint's name is whole; last.pt is the last save finished
        for path in run.glob("*.pt"):
            load_checkpoint(path)
        assert load_checkpoint(run / "last.pt")["step"] in (saved, saved + 1)
        if (kills >= 3 and cut_short) or kills == 10:
            break
    assert cut_short, "no kill landed in the middle of a write"
    resumed = load_checkpoint(run / "last.pt")["step"]
    assert train_cli.main(["--config", str(config), *TINY, f"train.max_steps={resumed + 2}", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == resumed + 2
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # the next save cleared what the kills left


def test_sigkill_during_training_then_resume(config, tmp_path) -> None:
    """A run that checkpoints at every update, killed without warning, resumes from its last.pt."""
    run = tmp_path / "run"
    process = start_training(config, "train.max_epochs=1000", "train.valid_every=1")
    wait_for_steps(process, run / "metrics.jsonl", 5)
    os.kill(process.pid, signal.SIGKILL)
    process.communicate(timeout=WAIT)
    assert process.returncode == -signal.SIGKILL
    step = load_checkpoint(run / "last.pt")["step"]
    assert step >= 4
    assert train_cli.main(["--config", str(config), *TINY, f"train.max_steps={step + 2}", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == step + 2


def test_a_signal_before_the_first_update_says_nothing_was_saved(config, tmp_path, monkeypatch, capsys) -> None:
    class Interrupted(train_cli.Trainer):
        def __init__(self, **kwargs: object) -> None:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the corpus and tokenizers are prepared
            super().__init__(**kwargs)

    monkeypatch.setattr(train_cli, "Trainer", Interrupted)
    assert train_cli.main(["--config", str(config), *TINY]) == 128 + signal.SIGINT
    assert "stopped by SIGINT; nothing was saved; start again" in capsys.readouterr().err
    assert not (tmp_path / "run" / "last.pt").exists()
    monkeypatch.undo()
    assert train_cli.main(["--config", str(config), *TINY, "train.max_steps=2"]) == 0  # no --resume needed


def test_a_damaged_last_checkpoint_names_the_one_to_resume_from(config, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    assert train_cli.main(["--config", str(config), *TINY, "train.max_steps=4", "train.valid_every=2"]) == 0
    data = bytearray((run / "last.pt").read_bytes())
    data[len(data) // 2] ^= 1  # damage on disk: last.pt is a hard link, so step_00000004.pt is hit too
    (run / "last.pt").write_bytes(bytes(data))
    capsys.readouterr()
    assert train_cli.main(["--config", str(config), *TINY, "train.max_steps=6", "--resume"]) == 1
    err = capsys.readouterr().err
    hint = f"; to resume from step_00000002.pt instead: ln -f {run}/step_00000002.pt {run}/last.pt\n"
    assert err.startswith(f"nmt-train: error: {run}/last.pt: corrupt checkpoint") and err.endswith(hint)
    subprocess.run(["ln", "-f", run / "step_00000002.pt", run / "last.pt"], check=True)
    assert train_cli.main(["--config", str(config), *TINY, "train.max_steps=6", "--resume"]) == 0
    assert load_checkpoint(run / "last.pt")["step"] == 6


def start_comparison(tmp_path: Path, *configs: Path) -> subprocess.Popen[str]:
    """scripts/compare.py on ``configs``, one run at a time, in a process group of its own; each run
    trains far longer than a test waits."""
    sets = [f"--set={override}" for override in (*TINY, "train.max_epochs=1000", "train.valid_every=100000")]
    compare = Path(__file__).resolve().parents[1] / "scripts" / "compare.py"
    argv = [sys.executable, str(compare), *map(str, configs), "--out", str(tmp_path / "out"), *sets]
    argv += ["--test", f"{tmp_path}/data/dev", "--jobs", "1"]
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def wait_for_line(process: subprocess.Popen[str], text: str) -> None:
    """Until the process has printed a line holding ``text`` to stderr."""
    for line in process.stderr:
        if text in line:
            return
    raise AssertionError(f"the process ended without printing {text!r}")


def signal_a_side_thread(pid: int, signum: int) -> None:
    """Send ``signum`` to a thread of process ``pid`` other than its main one that does not hold it,
    as the kernel may do with a signal to the whole process."""
    tgkill = getattr(ctypes.CDLL(None, use_errno=True), "tgkill", None)
    if tgkill is None:
        pytest.skip("needs tgkill (Linux, glibc 2.30 or later) to signal one thread of a process")
    held = {
        int(tid): int(line.split()[1], 16)
        for tid in os.listdir(f"/proc/{pid}/task")
        for line in Path(f"/proc/{pid}/task/{tid}/status").read_text().splitlines()
        if line.startswith("SigBlk:")
    }
    side = [tid for tid, mask in held.items() if tid != pid and not mask >> (signum - 1) & 1]
    if not side:
        pytest.skip("no thread but the main one takes the signal, so the kernel can only hand it to that one")
    assert tgkill(pid, side[0], signum) == 0, os.strerror(ctypes.get_errno())


def test_sigterm_to_a_comparison_checkpoints_its_run_and_starts_no_further_stage(config, tmp_path) -> None:
    out = tmp_path / "out"
    process = start_comparison(tmp_path, config)
    wait_for_steps(process, out / "tiny" / "metrics.jsonl", 3)
    process.send_signal(signal.SIGTERM)  # to the comparison alone: it asks its worker to stop
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 128 + signal.SIGTERM, err
    assert "tiny: stopped before it was finished" in err and "Traceback" not in err
    assert "stopped by SIGTERM; run the same command again to continue" in err
    logged = [json.loads(line)["step"] for line in (out / "tiny" / "metrics.jsonl").read_text().splitlines()]
    assert load_checkpoint(out / "tiny" / "last.pt")["step"] == logged[-1] >= 3
    assert "checkpointed at step" in (out / "tiny" / "compare.log").read_text(encoding="utf-8")
    assert not (out / "tiny" / "result.json").exists() and not list((out / "tiny").glob("dev.hyp.*"))


def test_ctrl_c_while_the_workers_start_stops_every_run_cleanly(config, tmp_path) -> None:
    """The terminal's Ctrl-C reaches every process of the group, the workers while they still import."""
    other = tmp_path / "other.yaml"
    other.write_text(config.read_text(encoding="utf-8"), encoding="utf-8")
    process = start_comparison(tmp_path, config, other)
    wait_for_line(process, "running 2 runs, 1 at a time")
    os.killpg(process.pid, signal.SIGINT)
    _, err = process.communicate(timeout=WAIT)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "stopped by SIGINT; run the same command again to continue" in err
    assert "tiny: stopped before it was finished" in err and "other: stopped before it was finished" in err
    assert not list((tmp_path / "out").glob("*/metrics.jsonl"))  # no run began to train


def test_a_ctrl_c_the_kernel_hands_to_a_side_thread_still_stops_the_comparison(config, tmp_path) -> None:
    """Only the main thread runs Python's handlers; a signal another thread took (torch starts one at
    import) must still reach them while the comparison waits for its runs."""
    process = start_comparison(tmp_path, config)
    wait_for_steps(process, tmp_path / "out" / "tiny" / "metrics.jsonl", 1)  # the comparison waits for it
    try:
        signal_a_side_thread(process.pid, signal.SIGINT)
        _, err = process.communicate(timeout=WAIT)
    finally:  # a skip or a hang leaves no run training
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert process.returncode == 128 + signal.SIGINT, err
    assert "Traceback" not in err and "stopped by SIGINT; run the same command again to continue" in err
    assert "tiny: stopped before it was finished" in err
