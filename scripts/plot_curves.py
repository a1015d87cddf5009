"""Plot dev BLEU (or dev perplexity) against training time for several runs, from their ``metrics.jsonl``.

    python scripts/plot_curves.py runs/m30k/global_general runs/m30k/local_p_general --out curves.png
    python scripts/plot_curves.py runs/m30k/global_general runs/m30k/local_p_general --table

Each run directory's ``metrics.jsonl`` gives one line, labelled with the directory as given: a point
per validation (``valid`` records), placed at the training time spent up to that update. The metric
is the greedy dev BLEU that training logs with ``train.valid_bleu: true``, or dev perplexity (on a
log scale) when some run did not log BLEU or with ``--metric ppl``.

Training time is the time of the updates alone, without validation and checkpointing: the sum of
the logging windows (``train`` records, each the time since the record before it). A run resumed
from a checkpoint redoes the updates after it, so the records an interrupted session wrote for them
are dropped; a window that took more than five times the run's median time per update spans the
break of a resumed run and counts the median instead, as do updates no window covers (those between
the last log record and a validation).

``--table`` prints, as a Markdown table, every validation of each run: its dev perplexity, greedy
dev BLEU (where logged), training minutes by the same clock, and local-p's p_t range (where logged),
a row per validated step, labelled with its epoch.
"""

from __future__ import annotations

import argparse
import itertools
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from nmt.cli.common import add_common_args, run
from nmt.errors import NMTError

METRICS = {"bleu": ("dev_bleu", "dev BLEU (greedy)"), "ppl": ("dev_ppl", "dev perplexity")}
"""``--metric`` -> the key of ``valid`` records, the axis label."""
GAP = 5.0  # a window this many times slower than the median spans a resume


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="plot_curves",
        description="Plot dev BLEU or perplexity against training time from run directories' metrics.jsonl.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("runs", nargs="+", metavar="RUN_DIR", help="run directories holding metrics.jsonl")
    parser.add_argument("--out", metavar="PNG", help="the image to write")
    parser.add_argument("--table", action="store_true", help="print each validation's figures as a Markdown table")
    parser.add_argument(
        "--metric", choices=METRICS, help="bleu or ppl (default: bleu if every run logged it, else ppl)"
    )
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(lambda args: _plot(args, parser), parser, argv)


def _plot(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if args.out is None and not args.table:
        parser.error("give --out PNG, --table or both")
    records = {path.rstrip("/"): read_records(Path(path) / "metrics.jsonl") for path in args.runs}  # by label
    if args.table:
        print(table(records))
    if args.out is None:
        return 0
    logged_bleu = all(any("dev_bleu" in r for r in run) for run in records.values())
    metric = args.metric or ("bleu" if logged_bleu else "ppl")
    curves = {name: curve(run, METRICS[metric][0]) for name, run in records.items()}
    for name, points in curves.items():
        if not points:
            raise NMTError(f"{name}: no validation with {METRICS[metric][0]} in its metrics.jsonl; nothing to plot")
    draw(curves, METRICS[metric][1], Path(args.out), log_scale=metric == "ppl")
    return 0


def read_records(path: Path) -> list[dict[str, Any]]:
    """The ``train`` and ``valid`` records of a ``metrics.jsonl``, in file order."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise NMTError(f"{path}: cannot read ({err.strerror or err}); give run directories of nmt-train") from err
    records = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except ValueError as err:
            raise NMTError(f"{path}:{number}: not a JSON record ({err})") from err
        if record.get("event") in ("train", "valid"):
            records.append(record)
    return records


def current(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The records of the run as it stands: a ``train`` record covers the updates after ``step - steps``,
    so records past that step were written by a session whose updates a resumed run redid."""
    kept: list[dict[str, Any]] = []
    for record in records:
        if record["event"] == "train":
            while kept and kept[-1]["step"] > record["step"] - record["steps"]:
                kept.pop()
        kept.append(record)
    return kept


def curve(records: Sequence[dict[str, Any]], key: str) -> list[tuple[float, float]]:
    """``(training seconds, value of key)`` at each validation that logged ``key`` (see the module's notes)."""
    records = current(records)
    windows = [(record, before) for before, record in itertools.pairwise(records) if record["event"] == "train"]
    if not windows:
        return []
    rate = statistics.median((record["time"] - before["time"]) / record["steps"] for record, before in windows)
    elapsed, covered, points = 0.0, 0, []
    for before, record in itertools.pairwise([None, *records]):
        if record["event"] == "train":
            start, typical = record["step"] - record["steps"], record["steps"] * rate
            measured = typical if before is None else record["time"] - before["time"]
            elapsed += (start - covered) * rate + (measured if measured <= GAP * typical else typical)
            covered = record["step"]
        elif key in record:
            points.append((elapsed + (record["step"] - covered) * rate, record[key]))
    return points


def table(runs: dict[str, list[dict[str, Any]]]) -> str:
    """Each run's validations side by side (see the module's notes), as Markdown: a row per validated
    step, ``–`` where a run has no validation there or lacks a figure (minutes: no log record yet)."""
    cells: dict[str, dict[int, str]] = {}  # run -> step -> cell
    labels: dict[int, str] = {}  # step -> "epoch (step)", from the first run validating there
    headers = []
    for name, records in runs.items():
        validations = [record for record in current(records) if record["event"] == "valid"]
        minutes = [f"{seconds / 60:.1f}" for seconds, _ in curve(records, "dev_ppl")] or ["–"] * len(validations)
        cells[name] = {}
        for record, spent in zip(validations, minutes, strict=True):
            bleu = f"{record['dev_bleu']:.2f}" if "dev_bleu" in record else "–"
            centre = f" ({record['centre_range']:.2f})" if "centre_range" in record else ""
            cells[name][record["step"]] = f"{record['dev_ppl']:.2f}, {bleu}, {spent}{centre}"
            labels.setdefault(record["step"], f"{record.get('epoch', '?')} ({record['step']})")
        ranges = any("centre_range" in record for record in validations)
        headers.append(f"{name}: dev ppl, BLEU, minutes" + (" (p_t range)" if ranges else ""))
    lines = ["| epoch (updates) | " + " | ".join(headers) + " |", "|---|" + "---|" * len(runs)]
    for step in sorted(labels):
        lines.append(f"| {labels[step]} | " + " | ".join(run.get(step, "–") for run in cells.values()) + " |")
    return "\n".join(lines)


def draw(curves: dict[str, list[tuple[float, float]]], label: str, path: Path, *, log_scale: bool) -> None:
    """One line per run, training time in minutes across, ``label`` up; written to ``path``."""
    from matplotlib.figure import Figure  # slow to import: only here

    fig = Figure(figsize=(7, 4.5), layout="constrained")
    axes = fig.add_subplot()
    for name, points in curves.items():
        axes.plot([seconds / 60 for seconds, _ in points], [value for _, value in points], marker="o", label=name)
    if log_scale:
        axes.set_yscale("log")
    axes.set_xlabel("training time (minutes, validation excluded)")
    axes.set_ylabel(label)
    axes.grid(alpha=0.3)
    axes.legend()
    try:
        fig.savefig(path, dpi=120)
    except OSError as err:
        raise NMTError(f"{path}: cannot write the plot ({err.strerror or err})") from err


if __name__ == "__main__":
    sys.exit(main())
