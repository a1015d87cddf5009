"""Train several configs with one budget, score each on its test split, and tabulate the results.

    python scripts/compare.py configs/multi30k/*.yaml --out runs/compare_m30k --max-steps 2000 --jobs 2 --threads 1
    python scripts/compare.py configs/quickstart.yaml configs/multi30k_en_de.yaml --out runs/cmp --max-steps 200 \\
        --set model.hidden=128 --set train.valid_every=100

Each config is resolved as ``nmt-train`` resolves it (an overlay through its ``base:`` chain, then the
overrides). For every config (named by its file's stem, so stems must differ) the script trains in
``OUT/NAME`` with ``train.max_steps`` set to the budget (and ``--set`` overrides applied to all),
continuing a run left there by an interrupted comparison; then it loads ``best.pt`` (lowest dev
perplexity), translates the test split with beam search (``--beam``, default 5) and records:

- BLEU and chrF of the detokenised output (sacreBLEU, with their signatures),
- the dev perplexity of ``best.pt``,
- decoding speed in test sentences per second (translation alone, model loading excluded).

Each finished config leaves ``OUT/NAME/result.json`` and is skipped when the comparison is run
again with the same budget, so a second run resumes. ``--jobs N --threads T`` trains N configs at
once, each with T CPU threads. Progress goes to stderr; each config's training log to
``OUT/NAME/compare.log``. The table is written to ``OUT/results.md`` and the numbers to
``OUT/results.json`` (also when some configs failed, which makes the exit status 1).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import multiprocessing
import sys
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch

from nmt.cli.common import add_common_args, run, write_lines
from nmt.config import load_config
from nmt.data import read_split
from nmt.device import pick_device
from nmt.errors import NMTError
from nmt.evaluate import corpus_scores
from nmt.train import Trainer
from nmt.translate import load_translator, translate_lines

log = logging.getLogger("compare")

COLUMNS = (
    ("config", "name", "{}"),
    ("attention", "attention", "{}"),
    ("input feed", "input_feed", "{}"),
    ("steps", "steps", "{:d}"),
    ("dev ppl", "dev_ppl", "{:.2f}"),
    ("BLEU", "bleu", "{:.2f}"),
    ("chrF", "chrf", "{:.2f}"),
    ("decode sent/s", "sent_per_s", "{:.1f}"),
)
"""Table header, result key, number format."""


class Job(NamedTuple):
    """One config to train and score, with the comparison's shared settings."""

    name: str
    config: str
    run_dir: Path
    overrides: tuple[str, ...]
    threads: int
    beam: int


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="compare",
        description="Train configs with the same budget, score them on their test splits, write a table.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("configs", nargs="+", metavar="CONFIG", help="YAML configs (see configs/multi30k/)")
    parser.add_argument("--out", required=True, help="directory for the runs, results.md and results.json")
    parser.add_argument("--max-steps", type=int, required=True, help="training updates per config (the budget)")
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="config override for every run (repeatable)"
    )
    parser.add_argument("--beam", type=int, default=5, help="beam size for the test translation (default 5)")
    parser.add_argument("--jobs", type=int, default=1, help="configs trained at once (default 1)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per config (default 1)")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_compare, build_parser(), argv)


def _compare(args: argparse.Namespace) -> int:
    if min(args.max_steps, args.beam, args.jobs, args.threads) < 1:
        raise NMTError("--max-steps, --beam, --jobs and --threads must be positive")
    out = Path(args.out)
    jobs = _jobs(args, out)
    out.mkdir(parents=True, exist_ok=True)
    budget = _budget(args)
    results: dict[str, dict[str, Any]] = {}
    pending = []
    for job in jobs:
        earlier = _earlier_result(job, budget)
        if earlier is None:
            pending.append(job)
        else:
            results[job.name] = earlier
            log.info("%s: done earlier (%s)", job.name, job.run_dir / "result.json")
    failures = _run_pending(pending, budget, results, args.jobs)
    ordered = [results[job.name] for job in jobs if job.name in results]
    _write(out / "results.json", json.dumps({"budget": budget, "results": ordered}, indent=2) + "\n")
    _write(out / "results.md", markdown_table(ordered, budget))
    log.info("wrote %s and %s", out / "results.md", out / "results.json")
    for name, message in failures.items():
        log.error("%s failed: %s", name, message)
    return 1 if failures else 0


def _jobs(args: argparse.Namespace, out: Path) -> list[Job]:
    names = [Path(path).stem for path in args.configs]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise NMTError(f"configs with the same file name would share a run directory: {', '.join(repeated)}")
    for path in args.configs:
        load_config(path, args.set)  # fail now, not hours into the comparison
    return [
        Job(name, path, out / name, (*args.set, f"train.max_steps={args.max_steps}"), args.threads, args.beam)
        for name, path in zip(names, args.configs, strict=True)
    ]


def _budget(args: argparse.Namespace) -> dict[str, Any]:
    """What every config shares; a result measured under another budget is not reused."""
    return {"max_steps": args.max_steps, "overrides": list(args.set), "beam": args.beam, "threads": args.threads}


def _earlier_result(job: Job, budget: dict[str, Any]) -> dict[str, Any] | None:
    path = job.run_dir / "result.json"
    try:
        result = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if result.get("budget") != budget:
        raise NMTError(
            f"{path} was measured with another budget ({result.get('budget')}, now {budget}); "
            "use another --out, or delete that run directory"
        )
    return result


def _run_pending(
    pending: list[Job], budget: dict[str, Any], results: dict[str, dict[str, Any]], workers: int
) -> dict[str, str]:
    """Train and score ``pending`` in ``workers`` processes; fill ``results``, return the failures."""
    failures: dict[str, str] = {}
    if not pending:
        return failures
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: its own torch threads, no forked locks
    with concurrent.futures.ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        futures = {pool.submit(run_job, job): job for job in pending}
        log.info("training %d configs, %d at a time: %s", len(pending), workers, ", ".join(j.name for j in pending))
        for done, future in enumerate(concurrent.futures.as_completed(futures), start=1):
            job = futures[future]
            result, error = future.result()
            if error is not None:
                failures[job.name] = error
                log.error("[%d/%d] %s failed (see %s): %s", done, len(pending), job.name, job.run_dir, error)
                continue
            result["budget"] = budget
            _write(job.run_dir / "result.json", json.dumps(result, indent=2) + "\n")
            results[job.name] = result
            log.info(
                "[%d/%d] %s: BLEU %.2f, chrF %.2f, dev ppl %s, %.1f sent/s (trained in %.0f s)",
                done,
                len(pending),
                job.name,
                result["bleu"],
                result["chrf"],
                "n/a" if result["dev_ppl"] is None else f"{result['dev_ppl']:.2f}",
                result["sent_per_s"],
                result["train_s"],
            )
    return failures


def run_job(job: Job) -> tuple[dict[str, Any] | None, str | None]:
    """Train and score one config (in a worker process); returns (result, None) or (None, error message)."""
    job.run_dir.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(
        level=logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        filename=job.run_dir / "compare.log",
        force=True,
    )
    torch.set_num_threads(job.threads)
    try:
        return _train_and_score(job), None
    except NMTError as err:
        logging.getLogger("compare").error("%s", err)
        return None, str(err)
    except Exception as err:  # a worker reports every failure instead of killing the pool
        logging.getLogger("compare").error("%s", traceback.format_exc())
        return None, f"{type(err).__name__}: {err}"


def _train_and_score(job: Job) -> dict[str, Any]:
    overrides = [*job.overrides, f"train.save_dir={job.run_dir}", f"train.threads={job.threads}"]
    config = load_config(job.config, overrides)
    start = time.perf_counter()
    trained = Trainer(config=config, resume=(job.run_dir / "last.pt").exists()).fit()
    train_s = time.perf_counter() - start

    device = pick_device(config.train.device)
    translator = load_translator([job.run_dir / "best.pt"], device, decode={"beam": job.beam, "n_best": 1})
    test = read_split(config.data, "test", hf_cache_dir=config.data.cache_dir)
    start = time.perf_counter()
    outputs = translate_lines(test.src, translator)
    decode_s = time.perf_counter() - start
    hypotheses = [best.text for best, *_ in outputs]
    write_lines(hypotheses, str(job.run_dir / f"test.hyp.{config.data.tgt_lang}"))
    bleu, chrf = corpus_scores(hypotheses, [test.tgt], metrics=("bleu", "chrf"))
    attention = config.model.attention
    return {
        "name": job.name,
        "config": job.config,
        "attention": f"{attention.align}, {attention.score}",
        "input_feed": "yes" if config.model.input_feed else "no",
        "steps": trained.step,
        "dev_ppl": trained.best_dev_ppl,
        "bleu": bleu.score,
        "bleu_signature": bleu.signature,
        "chrf": chrf.score,
        "chrf_signature": chrf.signature,
        "test": test.origin,
        "test_sentences": len(test.src),
        "sent_per_s": len(test.src) / max(decode_s, 1e-9),
        "train_s": train_s,
    }


def markdown_table(results: Sequence[dict[str, Any]], budget: dict[str, Any]) -> str:
    """The results as a Markdown table, then the budget and the sacreBLEU signatures under it."""
    lines = [
        "| " + " | ".join(header for header, _, _ in COLUMNS) + " |",
        "|" + "|".join("---" if key in ("name", "attention", "input_feed") else "---:" for _, key, _ in COLUMNS) + "|",
    ]
    for result in results:
        cells = ["n/a" if result[key] is None else fmt.format(result[key]) for _, key, fmt in COLUMNS]
        lines.append("| " + " | ".join(cells) + " |")
    overrides = " ".join(budget["overrides"])
    lines += [
        "",
        f"Budget: train.max_steps={budget['max_steps']}{f' with {overrides}' if overrides else ''}; "
        f"test translated with beam {budget['beam']}; {budget['threads']} CPU thread(s) per config.",
    ]
    for metric in ("bleu", "chrf"):
        signatures = sorted({result[f"{metric}_signature"] for result in results})
        lines += [f"{'BLEU' if metric == 'bleu' else 'chrF'} signature: `{sig}`" for sig in signatures]
    return "\n".join(lines) + "\n"


def _write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` all or nothing."""
    write_lines(text.splitlines(), str(path))


if __name__ == "__main__":
    sys.exit(main())
