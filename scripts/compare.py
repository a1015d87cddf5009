"""Train several configs with one budget, score each on its test sets, and tabulate the results.

    python scripts/compare.py configs/multi30k/*.yaml --out runs/compare_m30k --max-steps 2000 --jobs 2 --threads 1
    python scripts/compare.py configs/multi30k/global_general.yaml configs/multi30k/local_p_general.yaml \\
        --out runs/m30k --test ../shared/data/multi30k/test_2016_flickr \\
        --test ../shared/data/multi30k/test_2017_flickr --seeds 1234 7 99 --aer-corpus data/sample --jobs 2

Each config is resolved as ``nmt-train`` resolves it (an overlay through its ``base:`` chain, then the
``--set`` overrides). Every config (named by its file's stem, so stems must differ) is a *system*;
each of its seeds (``--seeds``; default the config's own ``train.seed``) is one *run*, trained in
``OUT/NAME`` for the config's own seed and in ``OUT/NAME.seedN`` for another seed N. A run trains
until the config's limits (``train.max_epochs``, early stopping with ``train.patience``) or
``--max-steps``; then ``best.pt`` (lowest dev perplexity) translates every test set with beam search
(``--test PREFIX``, repeatable, read as PREFIX.src / PREFIX.tgt; default the config's ``data.test``;
``--beam``, default 5) and the run records, per test set (named by its file stem): BLEU and chrF of
the detokenised output (sacreBLEU, with their signatures); and the dev perplexity of ``best.pt`` and
decoding speed in test sentences per second (translation alone, model loading excluded).

With ``--aer-corpus DIR`` (a sample corpus, ``nmt-sample DIR``) each run also trains the same
configuration on that corpus, in ``OUT/NAME/sample``: the model and training settings of the config,
the data settings and validation interval of ``configs/quickstart.yaml`` with its splits in DIR, and
``--aer-steps`` updates (default 1580: 20 epochs in the Multi30k configs' batches of 64). The AER of
its ``best.pt`` on DIR's dev split against ``dev.align`` is measured as ``nmt-align --gold`` measures it,
with each target word's attention taken from the step that predicts it (the paper's) and from the
step that reads it (``--attention-step input``: models whose attention lags a word score better so).

Resuming: every stage a run finishes (training, each test set, the AER) is recorded in
``OUT/NAME/result.json`` at once, and only the missing stages run when the comparison is started
again with the same budget; a training run interrupted between checkpoints continues from its
``last.pt``. Ctrl-C or SIGTERM (to the comparison or to its process group) stops every run as
``nmt-train`` stops: training checkpoints after its current update, no further stage starts, and
the comparison exits with 128 + the signal's number; a second signal kills the workers at once (a
checkpoint being written stays whole) and exits with 130. A SIGTERM to one worker stops every run
too, and the comparison exits with 1.
``--jobs N --threads T`` runs N runs at once, each with T CPU threads. Progress goes
to stderr; each run's training log to ``OUT/NAME/compare.log``. The table is collected from every
``OUT/*/result.json`` of the given systems measured with this budget (so seeds run by an earlier
comparison appear too): ``OUT/results.md`` (mean ± standard deviation over the seeds) and
``OUT/results.json`` (every run, and the table's numbers), written also when some runs failed, which
makes the exit status 1. ``--collect`` runs nothing and writes the table of what is finished so far
(a matrix between sessions).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import logging
import multiprocessing
import signal
import statistics
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nmt.align import alignment_scores, forced_attention, read_alignments, sentence_links
from nmt.checkpoint import load_model
from nmt.cli.common import add_common_args, run, stop_on_signals, write_lines
from nmt.config import Config, load_config
from nmt.data import read_split
from nmt.device import pick_device
from nmt.errors import NMTError
from nmt.evaluate import corpus_scores
from nmt.train import StopRequest, Trainer
from nmt.translate import Translator, load_translator, translate_lines
from nmt.workers import as_completed

log = logging.getLogger("compare")

QUICKSTART = Path(__file__).resolve().parents[1] / "configs" / "quickstart.yaml"
AER_STEPS = 1580  # 20 epochs of nmt-sample's 5000 pairs in batches of 64; at 10 most runs end mid-climb
METRICS = (("BLEU", "bleu"), ("chrF", "chrf"))  # a test set's columns: header, result key
HELD = {signal.SIGINT, signal.SIGTERM}  # the signals a worker holds until it can handle them


class Stopped(Exception):
    """A stop request (Ctrl-C or SIGTERM to the comparison) ended a run before its last stage."""


class TestSet(NamedTuple):
    """A test set: its column name (the file stem) and ``data.test`` (None: the config's own test split)."""

    name: str
    spec: str | None


class Shared(NamedTuple):
    """The comparison's settings for every run."""

    threads: int
    beam: int
    aer_corpus: Path | None
    aer_steps: int


class Job(NamedTuple):
    """One run (a config with one seed) to train and score."""

    name: str  # the run directory's name
    system: str  # the config's file stem
    config: str
    seed: int
    run_dir: Path
    overrides: tuple[str, ...]
    tests: tuple[TestSet, ...]
    shared: Shared


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare",
        description="Train configs with the same budget, score them on test sets, write a table.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML configs (see configs/multi30k/)")
    parser.add_argument("--out", required=True, help="directory for the runs, results.md and results.json")
    parser.add_argument(
        "--max-steps", type=int, help="training updates per run (default: the configs' max_epochs and patience)"
    )
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run (repeatable)"
    )
    parser.add_argument(
        "--test",
        action="append",
        default=[],
        metavar="PREFIX",
        help="a test set, PREFIX.src + PREFIX.tgt or SRC_FILE,TGT_FILE (repeatable; default: data.test)",
    )
    parser.add_argument(
        "--seeds", type=int, nargs="+", metavar="N", help="train.seed values, one run each (default: the config's)"
    )
    parser.add_argument("--aer-corpus", type=Path, metavar="DIR", help="also measure AER on this sample corpus")
    parser.add_argument(
        "--aer-steps", type=int, default=AER_STEPS, help=f"updates of the AER run (default {AER_STEPS})"
    )
    parser.add_argument("--beam", type=int, default=5, help="beam size for the test translation (default 5)")
    parser.add_argument(
        "--collect",
        action="store_true",
        help="run nothing: write the table of what is finished so far, and log what is left to do",
    )
    parser.add_argument("--jobs", type=int, default=1, help="runs trained at once (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (default 1)")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_compare, build_parser(), argv)


def _compare(args: argparse.Namespace) -> int:
    if min(args.max_steps or 1, args.aer_steps, args.beam, args.jobs, args.threads) < 1:
        raise NMTError("--max-steps, --aer-steps, --beam, --jobs and --threads must be positive")
    out = Path(args.out)
    jobs = _jobs(args, out)
    out.mkdir(parents=True, exist_ok=True)
    budget = _budget(args)
    pending = []
    for job in jobs:
        earlier = _earlier_result(job, budget)
        missing = _missing(job, earlier)
        if missing:
            pending.append(job)
            log.info("%s: to do: %s", job.name, ", ".join(missing))
        else:
            log.info("%s: done earlier (%s)", job.name, job.run_dir / "result.json")
    received: list[str] = []
    failures, stopped = ({}, []) if args.collect else _run_pending(pending, budget, args.jobs, received)
    systems = list(dict.fromkeys(job.system for job in jobs))
    runs = collect(out, systems, budget)
    tests = list(dict.fromkeys(test.name for job in jobs for test in job.tests))
    rows = summarise(runs, systems, tests)
    _write(out / "results.json", json.dumps({"budget": budget, "systems": rows, "runs": runs}, indent=2) + "\n")
    _write(out / "results.md", markdown_table(rows, runs, budget, tests))
    log.info("wrote %s and %s", out / "results.md", out / "results.json")
    for name, message in failures.items():
        log.error("%s failed: %s", name, message)
    if received:
        log.info("stopped by %s; run the same command again to continue", received[0])
        return 128 + signal.Signals[received[0]].value
    if stopped:  # a worker was signalled, not the comparison
        log.error("stopped before they were finished: %s; run the same command again to continue", ", ".join(stopped))
    return 1 if failures or stopped else 0


def _jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    """One job per config and seed; the config's own seed runs in OUT/NAME, another seed N in OUT/NAME.seedN."""
    names = _distinct([Path(path).stem for path in args.configs], "configs", "a run directory")
    shared = Shared(args.threads, args.beam, args.aer_corpus, args.aer_steps)
    limit = () if args.max_steps is None else (f"train.max_steps={args.max_steps}",)
    jobs = []
    for system, path in zip(names, args.configs, strict=True):
        config = load_config(path, args.set)  # fail now, not hours into the comparison
        specs = args.test or [config.data.test]
        tests = tuple(map(TestSet, _distinct(list(map(_stem, specs)), "test sets", "a column"), specs))
        for seed in args.seeds or [config.train.seed]:
            name = system if seed == config.train.seed else f"{system}.seed{seed}"
            overrides = (*args.set, *limit, f"train.seed={seed}")
            jobs.append(Job(name, system, path, seed, out / name, overrides, tests, shared))
    return jobs


def _distinct(names: list[str], what: str, shared: str) -> list[str]:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise NMTError(f"{what} with the same file name would share {shared}: {', '.join(repeated)}")
    return names


def _stem(spec: str | None) -> str:
    """A test set's name: the file stem of a prefix or of the source file (``test`` for a dataset's split)."""
    if spec is None:
        return "test"  # a Hugging Face dataset's test split
    return Path(spec).name if "," not in spec else Path(spec.split(",")[0].strip()).stem


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    """What every run shares; a result measured under another budget is not reused."""
    return {"max_steps": args.max_steps, "overrides": list(args.set), "beam": args.beam, "threads": args.threads}


def _aer_budget(job: Job) -> dict[str, Any]:
    return {"corpus": str(job.shared.aer_corpus), "steps": job.shared.aer_steps}


def _earlier_result(job: Job, budget: dict[str, Any]) -> dict[str, Any]:
    """What ``job`` recorded in an earlier comparison (``{}`` if nothing); another budget is an error."""
    path = job.run_dir / "result.json"
    result = _read_result(path)
    if result is None:
        return {}
    if result.get("budget") != budget:
        raise NMTError(
            f"{path} was measured with another budget ({result.get('budget')}, now {budget}); "
            "use another --out, or delete that run directory"
        )
    if job.shared.aer_corpus is not None and "aer" in result and result["aer"]["budget"] != _aer_budget(job):
        raise NMTError(
            f"{path}: its AER was measured with {result['aer']['budget']}, now {_aer_budget(job)}; "
            "use another --out, or delete that run directory"
        )
    return result


def _read_result(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _missing(job: Job, result: dict[str, Any]) -> list[str]:
    """The stages ``job`` has still to run: training, a test set's scores, the AER."""
    missing = [] if "steps" in result else ["training"]
    missing += [test.name for test in job.tests if test.name not in result.get("tests", {})]
    if job.shared.aer_corpus is not None and not _has_aer(result):
        missing.append("AER")
    return missing


def _run_pending(
    pending: list[Job], budget: dict[str, Any], workers: int, received: list[str]
) -> tuple[dict[str, str], list[str]]:
    """Finish ``pending`` in ``workers`` processes; returns the failures (run name -> message) and the
    runs a stop request ended before they were finished.

    The first Ctrl-C or SIGTERM (its name goes to ``received``) asks every worker to stop: a
    training run checkpoints after its current update, and no further stage or run starts. A
    second one kills the workers (a checkpoint being written stays whole: :mod:`nmt.checkpoint`)
    and raises KeyboardInterrupt.
    """
    if not pending:
        return {}, []
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its own torch threads, no forked locks
    stop = context.Event()
    with stop_on_signals(stop, received, second=signal.default_int_handler):
        signal.pthread_sigmask(signal.SIG_BLOCK, HELD)  # the workers start with them held: see _start_worker
        try:
            pool = concurrent.futures.ProcessPoolExecutor(
                max_workers=workers, mp_context=context, initializer=_start_worker, initargs=(stop,)
            )
            futures = {pool.submit(run_job, job, budget): job for job in pending}
        finally:
            signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)
        log.info("running %d runs, %d at a time: %s", len(pending), workers, ", ".join(j.name for j in pending))
        with pool:
            try:
                return _await(futures)
            except KeyboardInterrupt:
                for child in multiprocessing.active_children():
                    child.kill()
                raise


def _await(futures: dict[concurrent.futures.Future, Job]) -> tuple[dict[str, str], list[str]]:
    """Log each run as it ends; returns the failures (run name -> message) and the runs stopped first."""
    failures: dict[str, str] = {}
    stopped: list[str] = []
    for done, future in enumerate(as_completed(list(futures)), start=1):
        job, progress = futures[future], f"[{done}/{len(futures)}]"
        result, error = _outcome(future)
        if error is not None:
            failures[job.name] = error
            log.error("%s %s failed (see %s): %s", progress, job.name, job.run_dir, error)
        elif result is None:
            stopped.append(job.name)
            log.info("%s %s: stopped before it was finished", progress, job.name)
        else:
            log.info("%s %s: %s", progress, job.name, _summary(result))
    return failures, stopped


def _outcome(future: concurrent.futures.Future) -> tuple[dict[str, Any] | None, str | None]:
    """What :func:`run_job` returned, or the failure of a worker that died under it."""
    try:
        return future.result()
    except concurrent.futures.process.BrokenProcessPool:
        return None, "its worker process died (killed, or out of memory); run the same command again to continue"


def _summary(result: dict[str, Any]) -> str:
    scores = ", ".join(f"{name} BLEU {test['bleu']:.2f}" for name, test in result["tests"].items())
    aer = f", AER {result['aer']['aer']:.3f}" if result.get("aer", {}).get("aer") is not None else ""
    return f"{scores}, dev ppl {_num(result['dev_ppl'])}{aer}"


def _num(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}"


_STOP: StopRequest = threading.Event()  # a worker's stop request: the comparison's shared event (_start_worker)


def _start_worker(stop: StopRequest) -> None:
    """Make ``stop`` the worker's stop request, set by the comparison on Ctrl-C or SIGTERM and by a
    SIGTERM to the worker itself (:func:`_stop_worker`); Ctrl-C, which a terminal sends to every
    process, is the comparison's. Both signals were held since the worker started, so none that
    came while it imported is lost; they arrive now."""
    global _STOP
    _STOP = stop
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, _stop_worker)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, HELD)


def _stop_worker(signum: int, frame: object) -> None:
    """A worker's first SIGTERM stops every run (the event is shared); a second ends the worker."""
    _STOP.set()
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def run_job(job: Job, budget: dict[str, Any]) -> tuple[dict[str, Any] | None, str | None]:
    """Run the missing stages of one run (in a worker process); returns (result, None), (None, error
    message), or (None, None) if a stop request ended it first."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        filename=job.run_dir / "compare.log",
        force=True,
    )
    torch.set_num_threads(job.shared.threads)
    try:
        return _finish(job, budget), None
    except Stopped as stopped:
        logging.getLogger("compare").info("%s", stopped)
        return None, None
    except NMTError as err:
        logging.getLogger("compare").error("%s", err)
        return None, str(err)
    except Exception as err:  # a worker reports every failure instead of killing the pool
        logging.getLogger("compare").error("%s", traceback.format_exc())
        return None, f"{type(err).__name__}: {err}"


def _finish(job: Job, budget: dict[str, Any]) -> dict[str, Any]:
    """Train, score each test set and measure the AER, skipping what ``result.json`` holds already.

    ``result.json`` is rewritten after every stage, so an interruption loses the current stage only;
    a stop request ends training with a checkpoint and starts no further stage (raises :class:`Stopped`).
    """
    _check_stop("before training")
    path = job.run_dir / "result.json"
    result = _earlier_result(job, budget)
    overrides = [*job.overrides, f"train.save_dir={job.run_dir}", f"train.threads={job.shared.threads}"]
    config = load_config(job.config, overrides)
    if "steps" not in result:
        attention = config.model.attention
        result = {
            "name": job.name,
            "system": job.system,
            "config": job.config,
            "seed": job.seed,
            "budget": budget,
            "attention": f"{attention.align}, {attention.score}",
            "input_feed": "yes" if config.model.input_feed else "no",
            **_train(config),
        }
        _write(path, json.dumps(result, indent=2) + "\n")
    tests = result.setdefault("tests", {})
    for test, scores in _scores(job, config, [test for test in job.tests if test.name not in tests]):
        tests[test.name] = scores
        _write(path, json.dumps(result, indent=2) + "\n")
    if job.shared.aer_corpus is not None and not _has_aer(result):
        _check_stop("before the AER")
        sample = on_sample(config, job.shared.aer_corpus, job.shared.aer_steps, save_dir=job.run_dir / "sample")
        result["aer"] = {**_sample_aer(sample, job.shared.aer_corpus), "budget": _aer_budget(job)}
        _write(path, json.dumps(result, indent=2) + "\n")
    return result


def _check_stop(when: str) -> None:
    if _STOP.is_set():
        raise Stopped(f"stop requested {when}; run the comparison again to continue")


def _train(config: Config) -> dict[str, Any]:
    """Train (or continue) the run in ``train.save_dir``; how it ended. A stop request raises
    :class:`Stopped` once training has checkpointed."""
    start = time.perf_counter()
    trained = Trainer(config=config, resume=(Path(config.train.save_dir) / "last.pt").exists(), stop=_STOP).fit()
    if trained.reason == "stop requested":
        raise Stopped(f"stop requested: checkpointed at step {trained.step}; run the comparison again to continue")
    return {
        "steps": trained.step,
        "epochs": trained.epoch,
        "stopped": trained.reason,
        "dev_ppl": trained.best_dev_ppl,
        "train_s": time.perf_counter() - start,  # this call's: a resumed run's last part only
    }


def _scores(job: Job, config: Config, tests: Sequence[TestSet]) -> Iterator[tuple[TestSet, dict[str, Any]]]:
    """Each of ``tests`` with the scores of the run's ``best.pt`` on it (the model is loaded only if needed)."""
    if not tests:
        return
    device = pick_device(config.train.device)
    translator = load_translator([job.run_dir / "best.pt"], device, decode={"beam": job.shared.beam, "n_best": 1})
    for test in tests:
        _check_stop(f"before scoring {test.name}")
        yield test, _score(config, test, translator, job.run_dir)


def _score(config: Config, test: TestSet, translator: Translator, run_dir: Path) -> dict[str, Any]:
    """BLEU, chrF and decoding time of ``translator`` on ``test``; the output goes to ``run_dir/NAME.hyp.TGT``."""
    data = config.data if test.spec is None else dataclasses.replace(config.data, test=test.spec)
    pairs = read_split(data, "test", hf_cache_dir=config.data.cache_dir)
    start = time.perf_counter()
    outputs = translate_lines(pairs.src, translator)
    decode_s = time.perf_counter() - start
    hypotheses = [best.text for best, *_ in outputs]
    write_lines(hypotheses, str(run_dir / f"{test.name}.hyp.{config.data.tgt_lang}"))
    bleu, chrf = corpus_scores(hypotheses, [pairs.tgt], metrics=("bleu", "chrf"))
    return {
        "bleu": bleu.score,
        "bleu_signature": bleu.signature,
        "chrf": chrf.score,
        "chrf_signature": chrf.signature,
        "origin": pairs.origin,
        "sentences": len(pairs.src),
        "decode_s": decode_s,
    }


def on_sample(config: Config, corpus: Path, steps: int, *, save_dir: Path) -> Config:
    """``config`` trained on the sample corpus in ``corpus`` instead: the quickstart's data settings and
    validation interval, ``steps`` updates, no early stopping; model and optimisation stay as they are."""
    quickstart = load_config(QUICKSTART)
    data = dataclasses.replace(quickstart.data, **{split: str(corpus / split) for split in ("train", "dev", "test")})
    train = dataclasses.replace(
        config.train,
        save_dir=str(save_dir),
        max_steps=steps,
        max_epochs=steps,  # never the limit: an epoch has one update at least
        valid_every=quickstart.train.valid_every,
        patience=None,
        valid_bleu=False,
    )
    return dataclasses.replace(config, data=data, train=train)


def _has_aer(result: dict[str, Any]) -> bool:
    """Whether ``result`` holds both AERs (runs before the input step's was added hold one: measured again)."""
    return "input_step" in result.get("aer", {})


def _sample_aer(config: Config, corpus: Path) -> dict[str, Any]:
    """Train ``config`` (or continue it), then the AER of its ``best.pt`` on the dev split against ``dev.align``:
    the predicting step's at the top level, the input step's under ``input_step``."""
    trained = _train(config)
    loaded = load_model(Path(config.train.save_dir) / "best.pt", pick_device(config.train.device))
    dev = read_split(config.data, "dev")
    gold = read_alignments(corpus / "dev.align")
    sentences = forced_attention(loaded.model, loaded.src_tokenizer, loaded.tgt_tokenizer, dev.src, dev.tgt)
    scores, shifted = (
        alignment_scores([sentence_links(sentence, attention_step=step) for sentence in sentences], gold)
        for step in ("predicting", "input")
    )
    input_step = {"aer": shifted.aer, "lagging": shifted.lagging}
    return {**scores._asdict(), "input_step": input_step, "steps": trained["steps"], "dev_ppl": trained["dev_ppl"]}


# ---------------------------------------------------------------------------------------------
# The table


def collect(out: Path, systems: Sequence[str], budget: dict[str, Any]) -> list[dict[str, Any]]:
    """Every run of ``systems`` under ``out`` trained with ``budget``, systems in the given order."""
    found = [_read_result(path) for path in sorted(out.glob("*/result.json"))]
    runs = [run for run in found if run is not None and run.get("budget") == budget and run.get("system") in systems]
    return sorted((run for run in runs if "steps" in run), key=lambda run: systems.index(run["system"]))


def _decode_speed(run: dict[str, Any]) -> float | None:
    tests = run.get("tests", {}).values()
    seconds = sum(test["decode_s"] for test in tests)
    return sum(test["sentences"] for test in tests) / seconds if seconds > 0 else None


def columns(tests: Sequence[str]) -> list[tuple[str, Callable[[dict[str, Any]], float | None], str]]:
    """The table's numeric columns: header, the value of a run (None: not measured), number format."""

    def of_test(name: str, metric: str) -> Callable[[dict[str, Any]], float | None]:
        return lambda run: run.get("tests", {}).get(name, {}).get(metric)

    return [
        ("steps", lambda run: run["steps"], "{:.0f}"),
        ("dev ppl", lambda run: run["dev_ppl"], "{:.2f}"),
        *((f"{label} {name}", of_test(name, metric), "{:.2f}") for name in tests for label, metric in METRICS),
        ("decode sent/s", _decode_speed, "{:.1f}"),
        ("AER", lambda run: run.get("aer", {}).get("aer"), "{:.3f}"),
        ("AER, input step", lambda run: run.get("aer", {}).get("input_step", {}).get("aer"), "{:.3f}"),
    ]


def summarise(runs: Sequence[dict[str, Any]], systems: Sequence[str], tests: Sequence[str]) -> list[dict[str, Any]]:
    """One row per system: its seeds, and per column the mean and standard deviation over the runs measuring it."""
    rows = []
    for system in systems:
        own = [run for run in runs if run["system"] == system]
        if not own:
            continue
        cells = {}
        for header, value, _ in columns(tests):
            values = [v for v in map(value, own) if v is not None]
            cells[header] = {
                "mean": statistics.fmean(values) if values else None,
                "sd": statistics.stdev(values) if len(values) > 1 else None,
                "n": len(values),
            }
        first = own[0]
        seeds = [run["seed"] for run in own]
        rows.append(
            {
                "system": system,
                "attention": first["attention"],
                "input_feed": first["input_feed"],
                "seeds": seeds,
                "cells": cells,
            }
        )
    return rows


def markdown_table(
    rows: Sequence[dict[str, Any]], runs: Sequence[dict[str, Any]], budget: dict[str, Any], tests: Sequence[str]
) -> str:
    """The rows of :func:`summarise` as a Markdown table, then the budget, the AER setting and the sacreBLEU
    signatures under it."""
    numeric = columns(tests)
    lines = [
        "| " + " | ".join(["config", "attention", "input feed", "seeds", *(header for header, _, _ in numeric)]) + " |",
        "|---|---|---|---:|" + "---:|" * len(numeric),
    ]
    for row in rows:
        cells = [row["system"], row["attention"], row["input_feed"], str(len(row["seeds"]))]
        cells += [_cell(row["cells"][header], fmt) for header, _, fmt in numeric]
        lines.append("| " + " | ".join(cells) + " |")
    limit = "the configs' own limits" if budget["max_steps"] is None else f"train.max_steps={budget['max_steps']}"
    overrides = " ".join(budget["overrides"])
    lines += [
        "",
        f"Budget: {limit}{f' with {overrides}' if overrides else ''}; test sets translated with beam "
        f"{budget['beam']}; {budget['threads']} CPU thread(s) per run. Several seeds: mean ± standard deviation.",
    ]
    aer = sorted({(run["aer"]["budget"]["corpus"], run["aer"]["budget"]["steps"]) for run in runs if "aer" in run})
    lines += [
        f"AER: the dev split of {corpus} against its gold alignments, each configuration trained {steps} updates "
        "there with configs/quickstart.yaml's data settings; a target word's attention from the step that predicts "
        "it, or (input step) from the step that reads it."
        for corpus, steps in aer
    ]
    scored = [test for run in runs for test in run.get("tests", {}).values()]
    for label, metric in METRICS:
        lines += [f"{label} signature: `{sig}`" for sig in sorted({test[f"{metric}_signature"] for test in scored})]
    return "\n".join(lines) + "\n"


def _cell(cell: dict[str, Any], fmt: str) -> str:
    if cell["mean"] is None:
        return "n/a"
    return fmt.format(cell["mean"]) + ("" if cell["sd"] is None else f" ± {fmt.format(cell['sd'])}")


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing."""
    write_lines(text.splitlines(), str(path))


if __name__ == "__main__":
    sys.exit(main())
