"""Track where a model's attention looks, checkpoint by checkpoint, against gold word alignments.

    python scripts/centres.py runs/qs_localp/step_*.pt --src data/sample/dev.en --tgt data/sample/dev.de \\
        --gold data/sample/dev.align --plot runs/qs_localp/centres.png

For every checkpoint one JSON line on stdout:

- ``spread_std`` / ``spread_range``: how far the window centre p_t / (S - 1) moves over a sentence
  (:func:`nmt.diagnostics.centre_spread`; local modes only);
- ``centre_error``: mean |p_t - gold position| in source pieces (:func:`nmt.diagnostics.centre_error`);
- ``attention_error``: the same for the attention's mean position Σ_s a_t(s)·s (every mode);
- ``aer``: as ``nmt-align`` computes it (first target piece, source pieces summed);
- ``grad``: gradient norms on the dev pairs (summed NLL per sentence, as training), per parameter group.

``--plot`` draws p_t (local-p) or the attention's mean position (other modes) against the gold
position for the first ``--sentences`` pairs, from the last checkpoint given.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from matplotlib.figure import Figure

from nmt.align import GoldAlignment, alignment_scores, forced_attention, read_alignments, sentence_links
from nmt.checkpoint import load_checkpoint, load_model
from nmt.cli.common import add_common_args, run
from nmt.data import Example, collate, read_lines
from nmt.diagnostics import centre_error, centre_spread, gold_positions, window_centres
from nmt.errors import NMTError
from nmt.objective import summed_nll

GROUPS = ("W_p", "v_p", "W_a", "W_c", "encoder", "decoder.rnn", "generator")


def grad_norms(model: torch.nn.Module, batches: Sequence) -> dict[str, float]:
    """Gradient norm of each parameter group (and of all) for the mean NLL per sentence of ``batches``."""
    model.train()
    torch.manual_seed(0)
    model.zero_grad()
    sentences = sum(b.n_sentences for b in batches)
    for batch in batches:
        (summed_nll(model, batch, contextlib.nullcontext) / sentences).backward()
    norms = {}
    for group in GROUPS:
        grads = [p.grad for name, p in model.named_parameters() if group in name and p.grad is not None]
        norms[group] = float(torch.stack([g.norm() for g in grads]).norm()) if grads else None
    norms["all"] = float(torch.stack([p.grad.norm() for p in model.parameters() if p.grad is not None]).norm())
    model.zero_grad()
    model.eval()
    return norms


def read_pairs(args: argparse.Namespace) -> tuple[list[str], list[str], list[GoldAlignment]]:
    """The first ``--limit`` sources, references and gold alignments, one of each per sentence pair."""
    files = (args.src, args.tgt)
    sources, references = [read_lines(name, remedy="convert it to UTF-8")[: args.limit] for name in files]
    gold = read_alignments(args.gold)[: args.limit]
    if not len(sources) == len(references) == len(gold):
        raise NMTError(
            f"{args.src}, {args.tgt} and {args.gold} give {len(sources)}, {len(references)} and {len(gold)} "
            "pairs; give one line of each per sentence pair"
        )
    return sources, references, gold


def measure(path: Path, sources: list[str], references: list[str], gold: list[GoldAlignment]) -> tuple[dict, list]:
    loaded = load_model(path)
    model, src_tok, tgt_tok = loaded.model.eval(), loaded.src_tokenizer, loaded.tgt_tokenizer
    sentences = forced_attention(model, src_tok, tgt_tok, sources, references)
    golds = [gold_positions(g, s.src_words, s.tgt_words) for g, s in zip(gold, sentences, strict=True)]
    examples = [Example(src_tok.encode(s), tgt_tok.encode(t)) for s, t in zip(sources, references, strict=True)]
    batches = [
        collate(examples[i : i + 64], list(range(i, min(i + 64, len(examples))))) for i in range(0, len(examples), 64)
    ]
    centres = []
    for batch in batches:
        found = window_centres(model, batch)
        centres += [None] * batch.n_sentences if found is None else list(found)
    means = [s.weights @ torch.arange(s.weights.size(1), dtype=torch.float32) for s in sentences]  # (tgt+1,)
    spread = centre_spread(model, batches)
    record = {
        "checkpoint": str(path),
        "step": load_checkpoint(path).get("step"),
        "spread_std": spread and spread.std,
        "spread_range": spread and spread.range,
        "centre_error": None if centres[0] is None else centre_error(centres, golds),
        "attention_error": centre_error(means, golds),
        "aer": alignment_scores([sentence_links(s) for s in sentences], gold).aer,
        "grad": grad_norms(model, batches[:2]),
    }
    traces = [(c if c is not None else m, m, g) for c, m, g in zip(centres, means, golds, strict=True)]
    return record, traces


def plot(traces: list, sentences: int, path: Path, title: str) -> None:
    cols = min(sentences, 4)
    rows = math.ceil(sentences / cols)
    fig = Figure(figsize=(4 * cols, 3.2 * rows), layout="constrained")
    for k, (centre, mean, gold) in enumerate(traces[:sentences]):
        ax = fig.add_subplot(rows, cols, k + 1)
        steps = torch.arange(gold.numel())
        ax.plot(steps, centre[: gold.numel()], "o-", label="p_t (window centre)", markersize=3)
        ax.plot(steps, mean[: gold.numel()], "s:", label="attention mean position", markersize=3)
        known = ~gold.isnan()
        ax.plot(steps[known], gold[known], "kx", label="gold position", markersize=7)
        ax.set_xlabel("target piece t")
        ax.set_ylabel("source piece")
        ax.set_title(f"dev pair {k + 1}", fontsize=9)
    fig.axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=10)
    fig.savefig(path, dpi=90)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="centres", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("checkpoints", nargs="+", type=Path)
    parser.add_argument("--src", required=True)
    parser.add_argument("--tgt", required=True)
    parser.add_argument("--gold", required=True)
    parser.add_argument("--limit", type=int, default=None, help="only the first N pairs")
    parser.add_argument("--plot", type=Path, help="PNG of p_t against the gold position (last checkpoint)")
    parser.add_argument("--sentences", type=int, default=8)
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_centres, build_parser(), argv)


def _centres(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    pairs = read_pairs(args)  # once: every checkpoint is measured on the same pairs
    for path in args.checkpoints:
        record, traces = measure(path, *pairs)
        print(json.dumps(record), flush=True)
    if args.plot:
        plot(traces, args.sentences, args.plot, f"{args.checkpoints[-1]} (step {record['step']})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
