"""nmt on the peer benchmark of ``../shared/bench`` (see its README and model.yaml).

Four subcommands, each printing one JSON line on stdout:

``train --steps N [--precision fp32|bf16] [--set KEY=VALUE ...] [--profile-updates 5]``
    Trains the reference model (2x256 LSTMs, general global attention, input feeding,
    dropout 0.2, Adam 1e-3, 64 sentences per batch, clip 5) on the harness's pre-encoded
    Multi30k pieces with nmt's own :class:`nmt.train.Trainer`. Each update is timed with
    the harness's ``timing_hooks.StepLog`` (``WORK/steplog.json``), so ``bench.py
    train-summary`` computes tokens/s exactly as it does for the peers. ``--set`` changes the
    config as ``nmt-train``'s overrides do (e.g. ``train.seed=7``, ``train.pool_factor=1``).
    After training it profiles a few more updates (kept out of the step log) and reports
    ``ops_per_step``: the operations per decoder step, forward and backward, and the costliest
    operations (:func:`ops_per_step`).
``decode --beam K [--precision fp32|bf16|int8] [--shortlist F] [--workers N] [--length-penalty P] [--max-len-ratio R]``
    Decodes ``PREP/test.en`` with the trained model: length-sorted batches of 32
    sentences, at most 100 pieces (and R times the source, if given), no length penalty
    unless asked; ``--workers N`` searches N batches at once (``decode.workers``, :mod:`nmt.workers`) and adds
    ``.workersN`` to the names. Times the decode loop
    (reading, batching, search, writing) into ``WORK/decode.beamK.json`` and writes the
    pieces to ``WORK/hyp.beamK.sp`` for ``bench.py score`` (``beamK.PENALTY`` with a penalty).
    int8 quantizes the model before the clock starts (as nmt-translate does at load) and adds
    ``.int8`` to the names; ``--shortlist`` (from ``nmt-shortlist --checkpoint WORK/run/last.pt``)
    restricts each batch's output layer, adds ``.shortlist`` and reports the mean rows per batch.
``workers --beam K [--precision ...] [--shortlist F] --workers 1 2 [--rounds 5]``
    Searches the test set as ``decode`` does at each ``--workers`` value in turn, ``--rounds`` times
    in one process, and reports each search's sentences/s, their medians and whether the outputs
    agree (:func:`cmd_workers`).
``attention [--src-len 400]``
    Attention time per decoder step for every alignment mode at one source length (the
    issue's goal: local-p at most half of global's at 400 positions).

``scripts/peer_nmt.sh`` calls the first two the way ``run_all.sh`` expects of a toolkit.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

from nmt.allocator import set_up_process_memory
from nmt.attention import ALIGNMENTS, Attention
from nmt.checkpoint import load_model
from nmt.cli.common import positive_int
from nmt.config import (
    AttentionConfig,
    Config,
    DataConfig,
    DecodeConfig,
    ModelConfig,
    TrainConfig,
    to_dict,
    with_overrides,
)
from nmt.errors import NMTError
from nmt.quantize import quantize_model
from nmt.search import LENGTH_PENALTIES, Hypothesis
from nmt.shortlist import load_shortlist
from nmt.tokenizer import EOS_ID
from nmt.train import Trainer
from nmt.translate import Translator, search_batch
from nmt.workers import map_unordered


def spec_config(spec: dict, prep: Path, work: Path, steps: int, precision: str, overrides: list[str]) -> Config:
    """The nmt config that matches ``model.yaml`` field by field, then ``overrides`` (``key=value``)."""
    d, m, t = spec["data"], spec["model"], spec["train"]
    config = Config(
        model=ModelConfig(
            embed=m["emb_size"],
            hidden=m["hidden_size"],
            layers=m["enc_layers"],
            dropout=m["dropout"],
            bidirectional=m["bidirectional_encoder"],
            reverse_source=d["reverse_source"],
            input_feed=m["input_feed"],
            init=0.1,
            attention=AttentionConfig(score=m["attention_score"], align=m["attention"]),
        ),
        data=DataConfig(
            src_lang=d["src_lang"],
            tgt_lang=d["tgt_lang"],
            train=str(prep / "train"),
            dev=str(prep / "valid"),
            test=str(prep / "test"),
            tokenizer="word",  # the files hold SentencePiece pieces already: one "word" per piece
            joint_vocab=True,
            vocab_size=spec["subword"]["vocab_size"] - 3 + 4,  # the non-control pieces + our 4 specials
            max_len=d["max_len"],
            cache_dir=str(work / "cache"),
        ),
        train=TrainConfig(
            save_dir=str(work / "run"),
            device="cpu",
            seed=t["seed"],
            optimizer=t["optimizer"],
            lr=t["learning_rate"],
            schedule="constant",
            batch_size=t["batch_size"],
            clip_norm=t["max_grad_norm"],
            max_steps=steps,
            max_epochs=1000,
            valid_every=steps + 1,  # no validation inside the timed steps
            log_every=t["report_every"],
            precision=precision,
            threads=int(os.environ.get("BENCH_THREADS", t["threads"])),
        ),
    )
    return with_overrides(to_dict(config), overrides)


def cmd_train(args: argparse.Namespace, spec: dict) -> dict:
    from timing_hooks import StepLog, set_threads

    set_threads()
    step_log = StepLog(str(args.work / "steplog.json"))

    class TimedTrainer(Trainer):
        """Stamps each batch's start and token counts; the harness's optimizer hook stamps its end."""

        def _batch(self, index: torch.Tensor):
            batch = super()._batch(index)
            step_log.batch_start(batch.n_tgt_tokens, batch.tgt_out.numel(), batch.n_src_tokens, batch.n_sentences)
            return batch

    trainer = TimedTrainer(config=spec_config(spec, args.prep, args.work, args.steps, args.precision, args.set))
    modules = {name: sum(p.numel() for p in child.parameters()) for name, child in trainer.model.named_children()}
    params = {"total": sum(p.numel() for p in trainer.model.parameters()), "by_module": modules}
    (args.work / "params.json").write_text(json.dumps(params) + "\n")
    result = trainer.fit()
    step_log.dump()
    step_log.path = None  # the updates profiled below are not timed: the file keeps training's alone
    return {
        "steps": result.step,
        "dev_ppl": result.dev_ppl,
        "checkpoint": str(result.checkpoint),
        "params": params,
        "overrides": args.set,
        "ops_per_step": ops_per_step(trainer, updates=args.profile_updates),
    }


_VIEWS_AND_ALLOCATIONS = (
    "view t transpose narrow slice select unsqueeze squeeze as_strided expand permute detach alias "
    "_reshape_alias reshape unbind split chunk empty empty_strided new_empty_strided resize_ lift_fresh"
)
NO_KERNEL = {"aten::" + name for name in _VIEWS_AND_ALLOCATIONS.split()}
"""ATen operations that only make a view or allocate: no arithmetic, no kernel launch on a GPU."""


def ops_per_step(trainer: Trainer, *, updates: int) -> dict:
    """Operations per decoder step of a training update, counted by ``torch.profiler``.

    Profiles ``updates`` updates of the first epoch's batches (after training: the timed run is
    over) and counts the ATen operations that do the work: those that call no other ATen operation
    (a composite such as ``lstm_cell`` counts as the operations it runs) and are not mere views or
    allocations (:data:`NO_KERNEL`). Each is one dispatch on the CPU and one kernel launch on a
    GPU. Backward operations are those the autograd engine runs; the optimiser's and clipping's
    count with the forward ones. A batch's decoder steps are its longest target.

    Returns:
        ``forward`` and ``backward`` (mean operations per decoder step), ``total``, and ``top``: the
        20 operations with the most self CPU time over the profiled updates.
    """
    forward = backward = steps = 0
    totals: dict[str, list[float]] = {}
    for index in trainer.batcher.batches(0)[:updates]:
        batch = trainer._batch(index)
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
            trainer._update([batch])
        steps += batch.tgt_out.size(1)
        for event in prof.events():
            if _does_work(event):
                if _under(event, "autograd::engine"):
                    backward += 1
                else:
                    forward += 1
            entry = totals.setdefault(event.name, [0, 0.0])
            entry[0] += 1
            entry[1] += event.self_cpu_time_total / 1000
    top = sorted(totals.items(), key=lambda item: -item[1][1])[:20]
    return {
        "forward": forward / steps,
        "backward": backward / steps,
        "total": (forward + backward) / steps,
        "updates": updates,
        "decoder_steps": steps,
        "top": [{"op": name, "calls": calls, "self_cpu_ms": round(ms, 2)} for name, (calls, ms) in top],
    }


def _does_work(event) -> bool:
    """An ATen operation that calls no other and is not in :data:`NO_KERNEL`."""
    if not event.name.startswith("aten::") or event.name in NO_KERNEL:
        return False
    return not any(child.name.startswith("aten::") for child in event.cpu_children)


def _under(event, prefix: str) -> bool:
    """Whether a profiler event was called, directly or not, by an event whose name starts with ``prefix``."""
    parent = event.cpu_parent
    while parent is not None:
        if parent.name.startswith(prefix):
            return True
        parent = parent.cpu_parent
    return False


class TestDecoding:
    """The trained model (int8 if asked, with its shortlist if given) over the harness's test sources,
    in the harness's batches: length-sorted, ``decode.batch_size`` sentences each."""

    def __init__(self, args: argparse.Namespace, spec: dict) -> None:
        loaded = load_model(args.work / "run" / "last.pt")
        self.batch_size = spec["decode"]["batch_size"]
        config = DecodeConfig(
            beam=args.beam,
            n_best=1,
            length_penalty=args.length_penalty,
            max_len_ratio=args.max_len_ratio,
            max_len=spec["decode"]["max_len"],
            precision=args.precision,
        )
        if args.precision == "int8":
            quantize_model(loaded.model)
        tokenizers = {"src_tokenizer": loaded.src_tokenizer, "tgt_tokenizer": loaded.tgt_tokenizer}
        shortlist = load_shortlist(args.shortlist, **tokenizers) if args.shortlist else None
        self.translator = Translator(
            loaded.model, loaded.src_tokenizer, loaded.tgt_tokenizer, config, {}, torch.device("cpu"), shortlist
        )
        self.output_rows: list[int] = []  # per batch searched, with a shortlist

    def batches(self, lines: list[str]) -> tuple[list[list[int]], list[list[int]]]:
        """The sources' ids (EOS included) and the batches of their indices."""
        sources = [[*self.translator.src_tokenizer.encode(line), EOS_ID] for line in lines]
        order = sorted(range(len(sources)), key=lambda i: len(sources[i]))
        return sources, [order[first : first + self.batch_size] for first in range(0, len(order), self.batch_size)]

    def best(self, sources: list[list[int]], batches: list[list[int]], *, workers: int) -> list[list[int]]:
        """Each source's best output ids, the batches searched ``workers`` at a time as ``decode.workers`` does
        (``decode()`` picks the grad mode, as in nmt-translate)."""
        found: list[list[int]] = [[] for _ in sources]
        batch_ids = [[sources[i] for i in rows] for rows in batches]
        for number, hyps in map_unordered(self._search, batch_ids, workers=workers):
            for i, sentence in zip(batches[number], hyps, strict=True):
                found[i] = sentence[0].tokens
        return found

    def _search(self, sources: list[list[int]]) -> list[list[Hypothesis]]:
        hyps, kept = search_batch(sources, self.translator)
        if kept is not None:
            self.output_rows.append(kept)
        return hyps

    def about(self, args: argparse.Namespace) -> dict:
        """The settings (and the shortlist's mean rows per batch) for the result."""
        about = {"beam": args.beam, "precision": args.precision, "length_penalty": args.length_penalty}
        if self.output_rows:
            about |= {"shortlist": str(args.shortlist), "shortlist_rows": sum(self.output_rows) / len(self.output_rows)}
        return about


def cmd_decode(args: argparse.Namespace, spec: dict) -> dict:
    from timing_hooks import cpu_snapshot, other_load, set_threads

    if len(args.workers) != 1:
        raise NMTError("decode takes one --workers value (the workers command compares several)")
    workers = args.workers[0]
    set_threads()
    test = TestDecoding(args, spec)
    src_path = args.prep / f"test.{spec['data']['src_lang']}"
    snap = cpu_snapshot()
    start = time.perf_counter()
    lines = src_path.read_text(encoding="utf-8").splitlines()
    sources, batches = test.batches(lines)
    outputs = [test.translator.tgt_tokenizer.decode(ids) for ids in test.best(sources, batches, workers=workers)]
    name = f"beam{args.beam}" + ("" if args.length_penalty == "none" else f".{args.length_penalty}")
    name += (".int8" if args.precision == "int8" else "") + (".shortlist" if test.translator.shortlist else "")
    name += f".workers{workers}" if workers > 1 else ""
    hyp = args.work / f"hyp.{name}.sp"
    hyp.write_text("\n".join(outputs) + "\n", encoding="utf-8")
    decode_s = time.perf_counter() - start
    result = {"decode_s": decode_s, "n_sents": len(lines), "workers": workers, **test.about(args)}
    result |= {"other_load_cores": other_load(snap, cpu_snapshot()), "hyp": str(hyp)}  # the pieces, for bench.py score
    (args.work / f"decode.{name}.json").write_text(json.dumps(result) + "\n")
    return result


def cmd_workers(args: argparse.Namespace, spec: dict) -> dict:
    """Search the test set at each ``--workers`` value in turn, ``--rounds`` times, in one process
    (the order reversed every other round): this machine's speed drifts between processes by more
    than the workers change it. Sentences/s of each search, their medians, and whether every value
    gave the same outputs."""
    from timing_hooks import cpu_snapshot, other_load, set_threads

    set_threads()
    test = TestDecoding(args, spec)
    lines = (args.prep / f"test.{spec['data']['src_lang']}").read_text(encoding="utf-8").splitlines()
    sources, batches = test.batches(lines)
    test.best(sources, batches, workers=1)  # warm-up, untimed
    speeds: dict[int, list[float]] = {workers: [] for workers in args.workers}
    outputs = {}
    snap = cpu_snapshot()
    for turn in range(args.rounds):
        for workers in args.workers if turn % 2 == 0 else args.workers[::-1]:
            start = time.perf_counter()
            outputs[workers] = test.best(sources, batches, workers=workers)
            speeds[workers].append(round(len(lines) / (time.perf_counter() - start), 1))
    medians = {workers: round(statistics.median(found), 1) for workers, found in speeds.items()}
    return {
        **test.about(args),
        "n_sents": len(lines),
        "threads": torch.get_num_threads(),
        "sents_s": speeds,
        "median_sents_s": medians,
        "x_first": {workers: round(median / medians[args.workers[0]], 3) for workers, median in medians.items()},
        "same_outputs": all(found == outputs[args.workers[0]] for found in outputs.values()),
        "other_load_cores": other_load(snap, cpu_snapshot()),
    }


def cmd_attention(args: argparse.Namespace, spec: dict) -> dict:
    """Mean time of one decoder step's attention (batch 32, general scorer, D=10) per alignment mode."""
    torch.manual_seed(0)
    hidden, batch = spec["model"]["hidden_size"], spec["decode"]["batch_size"]
    values = torch.randn(batch, args.src_len, hidden)
    lengths = torch.full((batch,), args.src_len)
    query = torch.randn(batch, 1, hidden)
    micros = {}
    for align in ALIGNMENTS:
        attention = Attention(hidden=hidden, config=AttentionConfig(score="general", align=align, window=10))
        with torch.inference_mode():
            memory = attention.prepare(values, lengths)
            for _ in range(20):
                attention(query, memory, args.src_len // 2)
            start = time.perf_counter()
            for _ in range(args.repeats):
                attention(query, memory, args.src_len // 2)
        micros[align] = round((time.perf_counter() - start) / args.repeats * 1e6, 1)
    ratios = {align: round(us / micros["global"], 3) for align, us in micros.items()}
    return {"src_len": args.src_len, "batch": batch, "us_per_step": micros, "ratio_to_global": ratios}


COMMANDS = {"train": cmd_train, "decode": cmd_decode, "workers": cmd_workers, "attention": cmd_attention}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=COMMANDS)
    parser.add_argument("--bench-dir", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "bench")
    parser.add_argument("--prep", type=Path, help="the harness's prepared data (bench.py prep)")
    parser.add_argument("--work", type=Path, help="this toolkit's work directory")
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "int8"))
    parser.add_argument("--shortlist", type=Path, help="decode: a file of nmt-shortlist for the trained model")
    parser.add_argument(
        "--workers",
        type=positive_int,
        nargs="+",
        default=[1],
        help="decode: batches searched at once, as decode.workers; workers: the values to compare",
    )
    parser.add_argument("--rounds", type=positive_int, default=5, help="workers: how many times each value searches")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="train: a config override")
    parser.add_argument("--profile-updates", type=int, default=5, help="train: updates profiled for ops_per_step")
    parser.add_argument("--beam", type=int, default=5)
    parser.add_argument("--length-penalty", default="none", choices=list(LENGTH_PENALTIES), help="decode: as decode.*")
    parser.add_argument("--max-len-ratio", type=float, default=1e9, help="decode: as decode.* (default: no ratio cap)")
    parser.add_argument("--src-len", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args(argv)
    if args.command != "attention" and (args.prep is None or args.work is None):
        parser.error(f"{args.command} needs --prep and --work")
    sys.path.insert(0, str(args.bench_dir))
    set_up_process_memory()  # as the nmt-* commands do
    spec = yaml.safe_load((args.bench_dir / "model.yaml").read_text())
    if args.work is not None:
        args.work.mkdir(parents=True, exist_ok=True)
    try:
        print(json.dumps(COMMANDS[args.command](args, spec)))
    except NMTError as err:
        parser.error(str(err))
    return 0


if __name__ == "__main__":
    sys.exit(main())
