"""Data-parallel training: two gloo processes on the CPU equal one process with the same global batch."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml
from test_train import tiny_config

from nmt.checkpoint import load_checkpoint, step_path
from nmt.cli import train as cli
from nmt.config import Config, to_dict
from nmt.distributed import Ranks, moved_position, ranks_from_environment
from nmt.errors import NMTError
from nmt.progress import Progress
from nmt.sample import write_sample_corpus
from nmt.train import Trainer

SIGNALLED_STEP = 2  # rank 1 alone receives SIGTERM after this update


def settings(corpus: Path, save_dir: Path, *overrides: str) -> Config:
    """test_train's tiny model without dropout, on 80 pairs in 10 batches an epoch: 5 for each of 2 ranks.

    An update accumulates 2 batches on each rank.
    """
    return tiny_config(
        corpus,
        save_dir,
        "model.dropout=0.0",
        "train.device=cpu",
        "train.optimizer=sgd",
        "train.lr=1.0",
        "train.max_tokens=96",  # batches of 5 to 12 sentences, so normalising by the wrong count shows
        "train.pool_factor=null",  # one sorted pool: 10 batches an epoch, whether or not 2 ranks share them
        "train.accum_steps=2",
        "train.valid_every=2",
        "train.max_steps=8",
        *overrides,
    )


def config_file(config: Config, path: Path) -> str:
    path.write_text(yaml.safe_dump(to_dict(config)), encoding="utf-8")
    return str(path)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(rank_main: Callable[..., None], *args: object) -> None:
    """Run ``rank_main(rank, *args)`` in 2 fresh processes, as torchrun would; fail if either fails or hangs."""
    ranks = mp.start_processes(rank_main, args=args, nprocs=2, start_method="spawn", join=False)
    deadline = time.monotonic() + 120
    while not ranks.join(timeout=1):  # re-raises a rank's exception
        if time.monotonic() > deadline:
            for process in ranks.processes:
                process.kill()
            pytest.fail("the ranks did not finish in 120 s: one waits at a collective the other never reaches")


def torchrun_environment(rank: int, port: int) -> None:
    """The variables torchrun sets for rank ``rank`` of 2 on one machine."""
    os.environ.update(
        RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port)
    )


def run_rank(rank: int, ports: list[int], jobs: list[list[str]], out: Path) -> None:
    """Rank ``rank`` of 2 runs nmt-train once for each argv in ``jobs``: one torchrun job after another.

    In the first job rank 1 sends itself SIGTERM after update ``SIGNALLED_STEP``, and each rank
    keeps the parameters it ends with in ``out/rank<r>.pt`` (only rank 0 writes checkpoints).
    """
    fit = Trainer.fit

    def fit_and_keep(trainer: Trainer, on_progress: object) -> object:
        def progress(report: Progress) -> None:
            on_progress(report)
            if rank == 1 and report.step == SIGNALLED_STEP:
                os.kill(os.getpid(), signal.SIGTERM)

        result = fit(trainer, progress)
        torch.save({"model": trainer.model.state_dict(), "step": result.step}, out / f"rank{rank}.pt")
        return result

    for job, (port, argv) in enumerate(zip(ports, jobs, strict=True)):
        torchrun_environment(rank, port)
        Trainer.fit = fit_and_keep if job == 0 else fit  # this is a child process: nothing else sees the patch
        assert cli.main(argv) == (128 + signal.SIGTERM if job == 0 and rank == 1 else 0)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(corpus, out): nmt-train runs of 2 gloo processes in ``out``, rank 0's checkpoints in ``out/<run>``.

    run: stopped by SIGTERM to rank 1; full: 5 updates with dropout; split: the same in 2 + resume + 3.
    """
    corpus, out = tmp_path_factory.mktemp("corpus"), tmp_path_factory.mktemp("two_ranks")
    write_sample_corpus(corpus, pairs=96, seed=7)
    configs = [
        settings(corpus, out / "run"),
        settings(corpus, out / "full", "model.dropout=0.3", "train.max_steps=5"),
        settings(corpus, out / "split", "model.dropout=0.3", "train.max_steps=2"),
        settings(corpus, out / "split", "model.dropout=0.3", "train.max_steps=5"),
    ]
    jobs = [["--quiet", "--config", config_file(config, out / f"job{i}.yaml")] for i, config in enumerate(configs)]
    jobs[-1].append("--resume")
    launch(run_rank, [free_port() for _ in jobs], jobs, out)
    return corpus, out


def test_two_ranks_update_like_one_process_with_their_union_and_stop_together(
    two_ranks: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, out = two_ranks
    ranks = [torch.load(out / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["step"] for r in ranks] == [SIGNALLED_STEP, SIGNALLED_STEP]  # the signal stopped both
    saved = load_checkpoint(out / "run" / "last.pt")
    assert saved["step"] == SIGNALLED_STEP
    assert saved["data_position"] == {"epoch": 0, "batches_done": 2 * SIGNALLED_STEP, "world_size": 2}

    # One process accumulating 4 batches per update takes the same global batches (10 of them an epoch either way).
    single = Trainer(config=settings(corpus, tmp_path, f"train.max_steps={SIGNALLED_STEP}", "train.accum_steps=4"))
    initial = {name: tensor.clone() for name, tensor in single.model.state_dict().items()}
    result = single.fit()
    records = [json.loads(line) for line in (out / "run" / "metrics.jsonl").read_text().splitlines()]
    (valid,) = [r for r in records if r["event"] == "valid"]  # at step 2; the ranks score halves of the dev set
    assert valid["step"] == SIGNALLED_STEP and valid["dev_ppl"] == pytest.approx(result.dev_ppl, rel=1e-5)
    for name, expected in single.model.state_dict().items():
        assert not torch.equal(expected, initial[name]), name  # every parameter took part in the updates
        assert torch.equal(ranks[0]["model"][name], ranks[1]["model"][name]), name
        assert torch.equal(ranks[0]["model"][name], saved["model"][name]), name
        torch.testing.assert_close(ranks[0]["model"][name], expected, rtol=1e-5, atol=1e-6, msg=name)


def test_two_ranks_resume_exactly_with_their_own_dropout_masks(two_ranks: tuple[Path, Path]) -> None:
    """5 updates in one run equal 2 + resume + 3 on 2 ranks, across an epoch end (3 updates an epoch)."""
    _, out = two_ranks
    full, split = (load_checkpoint(out / run / "last.pt") for run in ("full", "split"))
    assert full["data_position"] == split["data_position"] == {"epoch": 1, "batches_done": 4, "world_size": 2}
    assert full["step"] == split["step"] == 5
    resumed_from = load_checkpoint(step_path(out / "split", 2))["rank_rng"]
    assert not torch.equal(resumed_from[0]["torch"], resumed_from[1]["torch"])  # each rank draws its own masks
    for name, tensor in full["model"].items():
        assert torch.equal(tensor, split["model"][name]), name


def test_resume_with_another_number_of_ranks_continues_or_says_why_not(
    two_ranks: tuple[Path, Path], tmp_path: Path
) -> None:
    corpus, out = two_ranks
    run = tmp_path / "run"
    run.mkdir()
    (run / "last.pt").write_bytes((out / "run" / "last.pt").read_bytes())

    three = Ranks(rank=0, world_size=3)  # 10 batches do not split into 3 equal shares: 12 smaller ones do
    with pytest.raises(NMTError, match=r"last\.pt: written by 2 data-parallel ranks, resumed with 3.*12 batches"):
        Trainer(config=settings(corpus, run), resume=True, ranks=three)

    resumed = Trainer(config=settings(corpus, run, f"train.max_steps={SIGNALLED_STEP + 1}"), resume=True)
    assert (resumed.epoch, resumed.batches_done) == (0, 4 * SIGNALLED_STEP)  # both ranks' batches are done
    resumed.fit()
    position = load_checkpoint(run / "last.pt")["data_position"]
    assert position == {"epoch": 0, "batches_done": 4 * SIGNALLED_STEP + 2, "world_size": 1}


@pytest.mark.parametrize(
    ("done", "saved_world", "world_size", "expected"),
    [(3, 2, 2, 3), (3, 2, 1, 6), (3, 2, 3, 2), (4, 1, 2, 2), (5, 2, 1, 10)],
)
def test_a_position_moves_to_the_same_global_batch(done: int, saved_world: int, world_size: int, expected: int) -> None:
    moved = moved_position(
        Path("last.pt"), done=done, saved_world=saved_world, saved_batches=12, world_size=world_size, batches=12
    )
    assert moved == expected
    assert moved * world_size == done * saved_world


def test_a_position_that_does_not_divide_among_the_ranks_is_refused() -> None:
    with pytest.raises(
        NMTError, match=r"do not divide among 4 data-parallel ranks\); resume with 2 data-parallel ranks"
    ):
        moved_position(Path("last.pt"), done=3, saved_world=2, saved_batches=12, world_size=4, batches=12)


def test_ranks_come_from_the_torchrun_environment() -> None:
    assert ranks_from_environment({}) == Ranks()
    assert ranks_from_environment({"RANK": "0", "WORLD_SIZE": "1"}) == Ranks()
    assert ranks_from_environment({"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1"}) == Ranks(5, 8, 1)
    with pytest.raises(NMTError, match="LOCAL_RANK is not set"):
        ranks_from_environment({"RANK": "1", "WORLD_SIZE": "2"})
    with pytest.raises(NMTError, match="RANK=2, WORLD_SIZE=2, LOCAL_RANK=0 do not describe"):
        ranks_from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(NMTError, match="WORLD_SIZE='two' is not an integer"):
        ranks_from_environment({"RANK": "0", "WORLD_SIZE": "two"})


def test_one_process_communicates_nothing() -> None:
    one = Ranks()
    assert one.sum([2, 0.5]) == [2.0, 0.5] and one.any(True) and not one.any(False)
    assert one.broadcast("x") == "x" and one.gather("x") == ["x"]
    model = torch.nn.Linear(2, 2)
    assert one.wrap(model) is model
    assert one.device(torch.device("cpu")) == torch.device("cpu")
    assert Ranks(rank=3, world_size=4, local_rank=1).device(torch.device("cuda")) == torch.device("cuda", 1)
