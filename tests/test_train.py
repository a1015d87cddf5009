"""The training loop: exact resume, gradient accumulation, schedules, non-finite losses, early stopping."""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from nmt import precision
from nmt import train as train_module
from nmt.checkpoint import load_checkpoint, save_checkpoint
from nmt.config import Config, ConfigError, ModelConfig, TrainConfig, load_config
from nmt.data import Example, collate
from nmt.device import pick_device
from nmt.errors import NMTError
from nmt.model import Seq2Seq
from nmt.objective import train_step
from nmt.optim import Halving, Plateau, parameter_groups
from nmt.precision import autocast_for
from nmt.progress import Progress
from nmt.sample import write_sample_corpus
from nmt.train import Trainer


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """80 training, 8 dev and 8 test pairs of the package's sample language."""
    directory = tmp_path_factory.mktemp("corpus")
    write_sample_corpus(directory, pairs=96, seed=7)
    return directory


def tiny_config(corpus: Path, save_dir: Path, *overrides: str) -> Config:
    """A model of a few thousand parameters on the word-level sample corpus: 10 batches an epoch."""
    return load_config(
        None,
        [
            f"data.train={corpus}/train",
            f"data.dev={corpus}/dev",
            "data.tokenizer=word",
            "data.vocab_size=60",
            "model.embed=12",
            "model.hidden=12",
            "model.layers=2",
            "model.dropout=0.3",  # dropout masks must resume exactly too
            f"train.save_dir={save_dir}",
            "train.batch_size=8",
            "train.valid_every=4",
            "train.log_every=2",
            "train.threads=1",
            *overrides,
        ],
    )


def parameters(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


@pytest.mark.parametrize("interrupt", ["max_steps", "stop request"])
def test_resume_continues_exactly(corpus: Path, tmp_path: Path, interrupt: str) -> None:
    """2N updates in one run equal N updates + resume + N, across an epoch end and an lr halving."""
    settings = ("train.schedule=halving", "train.halve_after_epoch=1", "train.optimizer=adam")
    Trainer(config=tiny_config(corpus, tmp_path / "full", "train.max_steps=14", *settings)).fit()

    stop = threading.Event()

    def stop_at_7(progress: Progress) -> None:
        if progress.step == 7:
            stop.set()  # what the CLI's SIGINT/SIGTERM handler does

    first_steps = "train.max_steps=7" if interrupt == "max_steps" else "train.max_steps=14"
    first = Trainer(config=tiny_config(corpus, tmp_path / "split", first_steps, *settings), stop=stop)
    assert first.fit(on_progress=stop_at_7).step == 7
    resumed = Trainer(config=tiny_config(corpus, tmp_path / "split", "train.max_steps=14", *settings), resume=True)
    result = resumed.fit()

    assert result.step == 14 and result.epoch == 1  # 10 batches an epoch: the halving happened after step 10
    assert resumed.schedule.lr == pytest.approx(0.0005)
    full, split = parameters(tmp_path / "full" / "last.pt"), parameters(tmp_path / "split" / "last.pt")
    assert full.keys() == split.keys()
    for name in full:
        assert torch.equal(full[name], split[name]), name


def _examples(n: int, generator: torch.Generator) -> list[Example]:
    lengths = torch.randint(1, 7, (n, 2), generator=generator).tolist()
    return [
        Example(
            torch.randint(4, 20, (s,), generator=generator).tolist(),
            torch.randint(4, 20, (t,), generator=generator).tolist(),
        )
        for s, t in lengths
    ]


@pytest.mark.parametrize("k", [2, 3])
def test_accumulating_k_batches_equals_one_batch_of_k_times_b(k: int) -> None:
    generator = torch.Generator().manual_seed(k)
    examples = _examples(4 * k, generator)
    torch.manual_seed(0)
    model = Seq2Seq(config=ModelConfig(embed=8, hidden=8, layers=2, dropout=0.0), src_vocab=20, tgt_vocab=20)
    accumulated, whole = model, copy.deepcopy(model)
    micro = [collate(examples[i : i + 4], range(i, i + 4)) for i in range(0, 4 * k, 4)]
    big = collate(examples, range(4 * k))
    results = []
    for net, batches in ((accumulated, micro), (whole, [big])):
        optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
        scaler = torch.amp.GradScaler("cpu", enabled=False)
        results.append(
            train_step(
                net,
                batches,
                optimizer,
                clip_norm=5.0,
                autocast=autocast_for(torch.device("cpu"), "fp32", key="train.precision"),
                scaler=scaler,
            )
        )
    assert results[0].nll == pytest.approx(results[1].nll, rel=1e-5)
    assert results[0].tokens == results[1].tokens == big.n_tgt_tokens
    assert results[0].sentences == results[1].sentences == 4 * k
    assert results[0].grad_norm == pytest.approx(results[1].grad_norm, rel=1e-4)
    for (name, a), b in zip(accumulated.named_parameters(), whole.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)


def test_nonfinite_loss_skips_the_update() -> None:
    model = Seq2Seq(config=ModelConfig(embed=8, hidden=8, layers=1, dropout=0.0), src_vocab=20, tgt_vocab=20)
    with torch.no_grad():
        model.generator.bias[5] = math.nan
    before = copy.deepcopy(model.state_dict())
    batch = collate(_examples(3, torch.Generator().manual_seed(0)), range(3))
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    autocast = autocast_for(torch.device("cpu"), "fp32", key="train.precision")
    result = train_step(model, [batch], optimizer, clip_norm=5.0, autocast=autocast, scaler=scaler)
    assert result is None
    for name, tensor in model.state_dict().items():
        torch.testing.assert_close(tensor, before[name], rtol=0, atol=0, equal_nan=True, msg=name)


def test_repeated_nonfinite_losses_stop_with_a_clear_error(corpus: Path, tmp_path: Path) -> None:
    trainer = Trainer(config=tiny_config(corpus, tmp_path, "train.max_nonfinite=3"))
    with torch.no_grad():
        trainer.model.generator.bias.fill_(math.inf)
    with pytest.raises(NMTError, match="3 non-finite losses in a row at step 1"):
        trainer.fit()


def test_out_of_memory_names_the_batch_and_what_to_change(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(train_module, "train_step", out_of_memory)
    trainer = Trainer(config=tiny_config(corpus, tmp_path, "train.accum_steps=2"))
    with pytest.raises(
        NMTError, match=r"out of memory at step 1 on 2 batch\(es\) holding 16 sentences.*train\.accum_steps"
    ):
        trainer.fit()


def test_early_stopping_after_patience_validations(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    perplexities = iter([5.0, 4.0, 4.5, 4.0, 6.0, 3.0])  # best at the 2nd validation, then no better twice
    monkeypatch.setattr(train_module, "dev_perplexity", lambda *args, **kwargs: next(perplexities))
    result = Trainer(config=tiny_config(corpus, tmp_path, "train.patience=2", "train.max_steps=40")).fit()
    assert result.step == 16  # validations at steps 4, 8, 12, 16
    assert result.reason.startswith("early stopping")
    assert result.best_dev_ppl == 4.0
    assert load_checkpoint(tmp_path / "best.pt")["step"] == 8


def test_early_stopping_at_an_epoch_end_counts_that_epoch_complete(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    perplexities = iter([5.0, 6.0])  # validated once an epoch (10 updates): no better at the 2nd
    monkeypatch.setattr(train_module, "dev_perplexity", lambda *args, **kwargs: next(perplexities))
    overrides = ("train.patience=1", "train.valid_every=10", "train.max_steps=40")
    result = Trainer(config=tiny_config(corpus, tmp_path, *overrides)).fit()
    assert (result.step, result.epoch) == (20, 2) and result.reason.startswith("early stopping")


class _Optimizer:
    def __init__(self, lr: float) -> None:
        self.param_groups = [{"lr": lr}, {"lr": 2 * lr}]


def test_halving_schedule_follows_the_paper() -> None:
    """lr 1.0 for epochs 1-5, then halved after every epoch (Luong et al. 2015, §4.1)."""
    schedule = Halving(optimizer=_Optimizer(1.0), config=TrainConfig(halve_after_epoch=5))
    rates = []
    for epoch in range(1, 11):
        rates.append(schedule.lr)
        schedule.epoch_end(epoch)
    assert rates == [1.0] * 5 + [0.5, 0.25, 0.125, 0.0625, 0.03125]
    assert schedule.optimizer.param_groups[1]["lr"] == 2 * 1.0 / 2**6


def test_plateau_schedule_halves_when_dev_perplexity_does_not_improve() -> None:
    schedule = Plateau(optimizer=_Optimizer(1.0), config=TrainConfig())
    rates = []
    for ppl in (10.0, 8.0, 8.0, 9.0, 7.0, 7.5):
        schedule.validated(ppl)
        rates.append(schedule.lr)
    assert rates == [1.0, 1.0, 0.5, 0.25, 0.25, 0.125]
    restored = Plateau(optimizer=_Optimizer(1.0), config=TrainConfig())
    restored.load_state_dict(schedule.state_dict())
    assert restored.best == 7.0


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_cuda_where_there_is_none_is_a_clear_error() -> None:
    with pytest.raises(NMTError, match=r"train\.device=cuda, but this machine has no usable CUDA device"):
        pick_device("cuda")
    assert pick_device("auto") == torch.device("cpu")
    with pytest.raises(ConfigError, match="fp16 needs a CUDA device"):
        autocast_for(torch.device("cpu"), "fp16", key="train.precision")
    with pytest.raises(ConfigError, match="did you mean 'cuda'"):
        pick_device("cdua")


def test_bf16_autocast_on_cpu_trains(corpus: Path, tmp_path: Path) -> None:
    result = Trainer(config=tiny_config(corpus, tmp_path, "train.precision=bf16", "train.max_steps=3")).fit()
    assert result.step == 3 and result.dev_ppl is not None and math.isfinite(result.dev_ppl)


@pytest.mark.parametrize("native", [True, False])
def test_bf16_on_a_cpu_that_emulates_it_warns_once(native: bool, monkeypatch, caplog) -> None:
    monkeypatch.setattr(precision, "native_cpu_bf16", lambda: native)
    precision.warn_emulated_bf16.cache_clear()
    with caplog.at_level(logging.WARNING, logger="nmt"):
        for _ in range(2):
            autocast_for(torch.device("cpu"), "bf16", key="decode.precision", search=True)
        autocast_for(torch.device("cpu"), "fp32", key="train.precision")
    warnings = [r.getMessage() for r in caplog.records if "emulated" in r.getMessage()]
    assert len(warnings) == (0 if native else 1)
    assert all(w.startswith("decode.precision=bf16 on a CPU without AVX-512 BF16 or AMX") for w in warnings)


def test_resume_refuses_a_different_model_and_a_fresh_run_refuses_an_old_directory(
    corpus: Path, tmp_path: Path
) -> None:
    Trainer(config=tiny_config(corpus, tmp_path, "train.max_steps=2")).fit()
    with pytest.raises(NMTError, match=r"already holds a run \(last.pt\); pass --resume"):
        Trainer(config=tiny_config(corpus, tmp_path, "train.max_steps=4"))
    with pytest.raises(NMTError, match=r"different model.*model.hidden: 12 -> 16\); resume with model.hidden=12,"):
        Trainer(config=tiny_config(corpus, tmp_path, "model.hidden=16"), resume=True)
    with pytest.raises(NMTError, match="nothing to resume"):
        Trainer(config=tiny_config(corpus, tmp_path / "empty"), resume=True)


def test_a_checkpoint_from_before_balanced_batches_resumes_with_its_own_batch_stream(
    corpus: Path, tmp_path: Path
) -> None:
    Trainer(config=tiny_config(corpus, tmp_path, "train.max_steps=2")).fit()
    payload = load_checkpoint(tmp_path / "last.pt")
    del payload["config"]["train"]["balance_tokens"]  # as written before the key existed: sorted cutting
    save_checkpoint(tmp_path / "last.pt", payload)
    assert load_checkpoint(tmp_path / "last.pt")["config"]["train"]["balance_tokens"] is False
    with pytest.raises(NMTError, match=r"balance_tokens: False -> True\); resume with train.balance_tokens=false,"):
        Trainer(config=tiny_config(corpus, tmp_path, "train.max_steps=4"), resume=True)
    sorted_cut = tiny_config(corpus, tmp_path, "train.max_steps=4", "train.balance_tokens=false")
    assert Trainer(config=sorted_cut, resume=True).fit().step == 4


def test_location_scorer_drops_sources_it_cannot_read(corpus: Path, tmp_path: Path) -> None:
    config = tiny_config(corpus, tmp_path, "model.attention.score=location", "model.attention.max_src_len=10")
    trainer = Trainer(config=config)
    src_lengths, _ = trainer.corpus.train.lengths()
    assert 0 < len(trainer.corpus.train) < 80 and int(src_lengths.max()) <= 10
    assert len(trainer.corpus.dev_references) == len(trainer.corpus.dev)


def test_validation_writes_heatmaps_of_the_first_dev_pairs_when_asked(corpus: Path, tmp_path: Path) -> None:
    Trainer(config=tiny_config(corpus, tmp_path, "train.valid_heatmaps=2", "train.max_steps=4")).fit()
    (step_dir,) = (tmp_path / "heatmaps").iterdir()  # one validation, at step 4
    assert step_dir.name == "step_00000004"
    assert sorted(p.name for p in step_dir.iterdir()) == ["00001.png", "00002.png", "index.html"]
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["heatmaps"] for r in records if r["event"] == "valid"] == [str(step_dir / "index.html")]


def test_a_checkpoint_in_the_older_raw_layout_resumes_exactly(corpus: Path, tmp_path: Path) -> None:
    """Before :class:`nmt.run_state.RunState`: the epoch stored twice, rank 0's RNG as ``rng``, no world size."""
    Trainer(config=tiny_config(corpus, tmp_path / "full", "train.max_steps=8")).fit()
    Trainer(config=tiny_config(corpus, tmp_path / "old", "train.max_steps=5")).fit()
    payload = load_checkpoint(tmp_path / "old" / "last.pt")
    position = payload["data_position"]
    payload["epoch"], payload["rng"] = position["epoch"], payload.pop("rank_rng")[0]
    del position["world_size"]
    save_checkpoint(tmp_path / "old" / "last.pt", payload)
    assert Trainer(config=tiny_config(corpus, tmp_path / "old", "train.max_steps=8"), resume=True).fit().step == 8
    full, resumed = parameters(tmp_path / "full" / "last.pt"), parameters(tmp_path / "old" / "last.pt")
    assert all(torch.equal(full[name], resumed[name]) for name in full)
    saved = load_checkpoint(tmp_path / "old" / "last.pt")
    assert "epoch" not in saved and "rng" not in saved and saved["data_position"]["world_size"] == 1


def test_train_device_and_device_options_follow_one_rule(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert pick_device("cuda:1") == torch.device("cuda:1")  # train.device once refused what --device took
    with pytest.raises(NMTError, match=r"train\.device=cuda:2: this machine has 2 CUDA device\(s\)"):
        pick_device("cuda:2")
    with pytest.raises(ConfigError, match=r"--device 'mps' is not a device name"):
        pick_device("mps", key="--device")


def test_importing_the_training_loop_draws_in_no_plotting_library() -> None:
    """matplotlib is imported where a figure is drawn, not by ``import nmt.train``."""
    root = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    code = "import nmt.train, sys; assert 'matplotlib' not in sys.modules, 'nmt.train imported matplotlib'"
    subprocess.run([sys.executable, "-c", code], env=env, check=True)


def test_validation_logs_how_far_local_p_centres_move_and_no_other_modes(corpus: Path, tmp_path: Path, caplog) -> None:
    config = tiny_config(corpus, tmp_path, "model.attention.align=local-p", "model.attention.window=1")
    with caplog.at_level(logging.WARNING, logger="nmt"):
        Trainer(config=config).fit()
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    valid = [r for r in records if r["event"] == "valid"]
    assert valid and all(0 <= r["centre_range"] <= 1 and 0 <= r["centre_std"] <= r["centre_range"] for r in valid)
    assert "model.attention.window=1:" in caplog.text  # the sample's sources are longer than 2 positions
    for align in ("global", "local-m"):  # no centre, or one that walks with t by construction
        Trainer(config=tiny_config(corpus, tmp_path / align, f"model.attention.align={align}")).fit()
        assert all("centre_range" not in json.loads(line) for line in (tmp_path / align / "metrics.jsonl").open())


@pytest.mark.parametrize(("align", "scale", "groups"), [("local-p", 0.1, 2), ("local-p", 1.0, 1), ("global", 0.1, 1)])
def test_local_p_position_network_learns_at_its_own_rate(make_model, align: str, scale: float, groups: int) -> None:
    model = make_model(align=align)
    config = TrainConfig(lr=0.01, position_lr_scale=scale)
    got = parameter_groups(model, config)
    assert len(got) == groups
    assert sum(len(group["params"]) for group in got) == len(list(model.parameters()))
    if groups == 1:  # the plain optimiser, in the model's own order
        assert all(a is b for a, b in zip(got[0]["params"], model.parameters(), strict=True))
    else:
        position = model.decoder.attention.align
        assert got[1] == {"params": [position.W_p.weight, position.v_p.weight], "lr": pytest.approx(0.001)}
