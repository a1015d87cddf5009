"""The paper's model on one GPU, through the user's commands: training speed, peak memory, beam-5 speed.

    python scripts/gpu_bench.py [--steps 200] [--precisions bf16 fp32] [--json FILE] [--work DIR]
    python scripts/gpu_bench.py --tiny          # seconds on a CPU: the whole path with a 2x32 model

For each precision, ``nmt-train --config configs/luong2015/local_p_general.yaml`` (4x1000 LSTMs,
1000-dim embeddings, input feeding, local-p general attention, reversed source, unidirectional
encoder, dropout 0.2, SGD, 128 sentences per batch) runs ``--steps`` updates in-process (so this
process can read the peak GPU memory) on a synthetic corpus with a 50K joint word vocabulary,
then ``nmt-translate --beam 5 --min-len-ratio 1`` decodes ``--sentences`` source sentences in the same precision.

The corpus: Zipfian words (``w0``, ``w1``, ...; rank r drawn with probability ~ 1/r), sentences
of 10-50 words like WMT's after the paper's 50-word filter, one target per source of a similar
length; every vocabulary word occurs, so the word vocabulary (``data.tokenizer: word``, no
tokenizer training beyond counting) holds exactly ``data.vocab_size`` entries.

Prints one JSON line per precision and a summary line (also appended to ``--json``):

- ``tgt_tok_s``: target tokens (EOS included, nmt's count) per second over the updates after
  ``--warmup``, from the run's ``metrics.jsonl`` (each ``train`` record gives its window's
  tokens/s; windows are weighted by their time, the gaps between records);
- ``peak_mem_gib``: ``torch.cuda.max_memory_allocated`` over the training run;
- ``beam5_sent_s``: sentences/s of nmt-translate, its fixed costs (loading the checkpoint,
  building the model) removed by timing a call on the first ``WARM_SENTENCES`` lines too.

fp32 on CUDA is what nmt-train runs: its matrix products in TF32 (the Trainer allows it).
"""

from __future__ import annotations

import argparse
import gc
import itertools
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from nmt.cli import train as train_cli
from nmt.cli import translate as translate_cli
from nmt.config import load_config
from nmt.model import Seq2Seq
from nmt.tokenizer import SPECIALS

ROOT = Path(__file__).resolve().parents[1]
PAPER_CONFIG = ROOT / "configs" / "luong2015" / "local_p_general.yaml"
GOAL_TOK_S = 100_000  # issue 19: the paper's model in bf16 on one H100/H200
MIN_WORDS, MAX_WORDS = 10, 50
WARM_SENTENCES = 10
DEV_PAIRS = 64
TINY = {
    "model": ("model.layers=2", "model.hidden=32", "model.embed=32", "train.threads=1"),  # 1 thread: seconds on 2 cores
    "vocab": 500,
    "steps": 3,
    "batch_size": 32,
    "sentences": 20,
    "warmup": 1,
    "log_every": 1,
}


def sentences(count: int, weights: torch.Tensor, generator: torch.Generator, lengths: torch.Tensor) -> list[str]:
    """``count`` lines of Zipfian words, line i holding ``lengths[i]`` of them."""
    ids = torch.multinomial(weights, int(lengths.sum()), replacement=True, generator=generator).tolist()
    lines, start = [], 0
    for length in lengths.tolist():
        lines.append(" ".join(f"w{i}" for i in ids[start : start + length]))
        start += length
    return lines


def write_corpus(directory: Path, *, pairs: dict[str, int], words: int, seed: int = 0) -> None:
    """``{split}.en`` / ``{split}.de`` for each split's number of pairs; all ``words`` words occur in train.en
    (it needs ``words / MIN_WORDS`` pairs for that)."""
    generator = torch.Generator().manual_seed(seed)
    weights = 1.0 / torch.arange(1, words + 1, dtype=torch.float64)  # Zipf's law, exponent 1
    directory.mkdir(parents=True, exist_ok=True)
    for split, count in pairs.items():
        src_len = torch.randint(MIN_WORDS, MAX_WORDS + 1, (count,), generator=generator)
        ratio = torch.empty(count, dtype=torch.float64).uniform_(0.8, 1.25, generator=generator)
        tgt_len = (src_len * ratio).round().long().clamp(MIN_WORDS, MAX_WORDS)
        src = sentences(count, weights, generator, src_len)
        if split == "train":  # every word once: the first lines hold the vocabulary in random order
            every = [f"w{i}" for i in torch.randperm(words, generator=generator).tolist()]
            ends = src_len.cumsum(0).tolist()
            covering = [" ".join(every[end - n : end]) for end, n in zip(ends, src_len.tolist(), strict=True)]
            covering = [line for line in covering if line]
            src[: len(covering)] = covering
        for lang, lines in (("en", src), ("de", sentences(count, weights, generator, tgt_len))):
            (directory / f"{split}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


def overrides(args: argparse.Namespace, work: Path, precision: str) -> list[str]:
    """The paper config's changes: the synthetic corpus, a joint vocabulary, the run's length and precision."""
    return [
        "data.hf_dataset=null",
        f"data.train={work}/data/train",
        f"data.dev={work}/data/dev",
        "data.joint_vocab=true",
        f"data.vocab_size={args.vocab}",
        f"data.cache_dir={work}/cache",  # encoded once, read by every precision's run
        f"train.save_dir={work}/run-{precision}",
        f"train.device={args.device}",
        f"train.precision={precision}",
        f"train.batch_size={args.batch_size}",
        f"train.max_steps={args.steps}",
        f"train.valid_every={args.steps}",  # one validation, after the timed updates
        f"train.log_every={args.log_every}",
        "train.keep_last=1",
        *args.model,
        *args.set,
    ]


def steady_tok_s(metrics: Path, warmup: int) -> tuple[float, int]:
    """Target tokens/s over the updates after ``warmup``, and how many updates that is.

    A ``train`` record's ``tok_s`` covers the updates since the one before; its duration is the
    gap between their ``time`` stamps (the record at ``warmup`` or later starts the clock).
    """
    records = [json.loads(line) for line in metrics.read_text(encoding="utf-8").splitlines()]
    train = [r for r in records if r["event"] == "train"]
    timed = [(r, r["time"] - before["time"]) for before, r in itertools.pairwise(train) if before["step"] >= warmup]
    if not timed:
        raise SystemExit(f"{metrics}: no training record after update {warmup}; run more --steps or lower --warmup")
    seconds = sum(gap for _, gap in timed)
    return sum(r["tok_s"] * gap for r, gap in timed) / seconds, sum(r["steps"] for r, _ in timed)


def train(args: argparse.Namespace, work: Path, precision: str) -> dict[str, Any]:
    """Run nmt-train in this process; its speed, peak GPU memory and wall time."""
    cuda = args.device == "cuda"
    if cuda:
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    status = train_cli.main(["--quiet", "--config", str(PAPER_CONFIG), *overrides(args, work, precision)])
    wall = time.perf_counter() - start
    if status != 0:
        raise SystemExit(f"nmt-train ({precision}) failed with status {status}")
    tok_s, updates = steady_tok_s(work / f"run-{precision}" / "metrics.jsonl", args.warmup)
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {
        "tgt_tok_s": round(tok_s),
        "timed_updates": updates,
        "train_wall_s": round(wall, 1),
        "peak_mem_gib": None if peak is None else round(peak, 2),
    }


def translate(args: argparse.Namespace, work: Path, precision: str) -> dict[str, Any]:
    """Beam-5 nmt-translate of the test sources: sentences/s without its fixed costs.

    A model of a few hundred updates on random words has not learnt when to stop: ``--min-len-ratio 1``
    makes each translation at least as long as its source (up to the default 1.5 times), as real ones are.
    """
    checkpoint = str(work / f"run-{precision}" / "last.pt")
    source = work / "data" / "test.en"
    warm = work / "data" / "warm.en"
    lines = source.read_text(encoding="utf-8").splitlines(keepends=True)
    warm.write_text("".join(lines[:WARM_SENTENCES]), encoding="utf-8")
    seconds = {}
    for name, path in (("warm", warm), ("all", source)):
        argv = ["--quiet", "--checkpoint", checkpoint, "--device", args.device, "--beam", "5", "--min-len-ratio", "1"]
        argv += ["--precision", precision, "--input", str(path), "--output", str(work / f"hyp.{name}.{precision}")]
        start = time.perf_counter()
        if translate_cli.main(argv) != 0:
            raise SystemExit(f"nmt-translate ({precision}) failed")
        seconds[name] = time.perf_counter() - start
    hypotheses = (work / f"hyp.all.{precision}").read_text(encoding="utf-8").splitlines()
    gap = seconds["all"] - seconds["warm"]  # too small to time where decoding costs next to nothing (--tiny)
    return {
        "beam5_sent_s": round((len(lines) - WARM_SENTENCES) / gap, 1) if gap > 0.05 else None,
        "beam5_wall_s": round(seconds["all"], 1),
        "decode_sentences": len(lines),
        "hyp_words": sum(len(h.split()) for h in hypotheses),
    }


def parameters(args: argparse.Namespace) -> int:
    """The model's size, built on the meta device (no memory)."""
    config = load_config(PAPER_CONFIG, args.model)
    with torch.device("meta"):
        model = Seq2Seq(config=config.model, src_vocab=args.vocab, tgt_vocab=args.vocab)
    return sum(p.numel() for p in model.parameters())


def summary(results: list[dict[str, Any]]) -> dict[str, Any]:
    by = {r["precision"]: r for r in results}
    line: dict[str, Any] = {"summary": True, "goal_bf16_tgt_tok_s": GOAL_TOK_S}
    for name, r in by.items():
        line[f"{name}_tgt_tok_s"] = r["tgt_tok_s"]
    if "bf16" in by:
        line["bf16_meets_goal"] = by["bf16"]["tgt_tok_s"] >= GOAL_TOK_S
    if {"bf16", "fp32"} <= by.keys():
        line["bf16_over_fp32"] = round(by["bf16"]["tgt_tok_s"] / by["fp32"]["tgt_tok_s"], 2)
    return line


def emit(line: dict[str, Any], path: Path | None) -> None:
    """Print one JSON line (and append it to ``path``)."""
    text = json.dumps(line)
    print(text, flush=True)
    if path is not None:
        with open(path, "a", encoding="utf-8") as file:
            file.write(text + "\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tiny", action="store_true", help="a 2x32 model, 500 words, 3 updates, 20 sentences")
    parser.add_argument("--steps", type=int, help="training updates per precision (default 200)")
    parser.add_argument("--batch-size", type=int, help="sentences per batch (default 128, the paper's)")
    parser.add_argument("--sentences", type=int, help="source sentences decoded with beam 5 (default 500)")
    parser.add_argument("--warmup", type=int, help="updates left out of tokens/s (default 20)")
    parser.add_argument("--vocab", type=int, help="joint word vocabulary, specials included (default 50000)")
    parser.add_argument("--precisions", nargs="+", default=["bf16", "fp32"], choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="further nmt-train overrides")
    parser.add_argument("--json", type=Path, help="also append the JSON lines to this file")
    parser.add_argument("--work", type=Path, help="keep the corpus and runs here (default: a temp dir, removed)")
    args = parser.parse_args(argv)
    size = TINY if args.tiny else {"vocab": 50_000, "steps": 200, "batch_size": 128, "sentences": 500, "warmup": 20}
    for key in ("vocab", "steps", "batch_size", "sentences", "warmup"):
        if getattr(args, key) is None:
            setattr(args, key, size[key])
    args.model = list(TINY["model"]) if args.tiny else []
    args.log_every = TINY["log_every"] if args.tiny else 10
    args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device == "cpu" and not args.tiny:
        parser.error("no GPU (torch.cuda.is_available() is false): the paper's model needs one; --tiny runs on a CPU")
    if args.steps <= args.warmup:
        parser.error(f"--steps {args.steps} leaves nothing to time after --warmup {args.warmup}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="gpu_bench.") as temp:
        work = args.work or Path(temp)
        words = args.vocab - len(SPECIALS)
        train_pairs = max(args.steps * args.batch_size, words // MIN_WORDS + 1)  # every update a new batch
        write_corpus(work / "data", pairs={"train": train_pairs, "dev": DEV_PAIRS, "test": args.sentences}, words=words)
        setting = {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu",
            "torch": torch.__version__,
            "model": "tiny 2x32" if args.tiny else "paper 4x1000",
            "params": parameters(args),
            "vocab": args.vocab,
            "batch_size": args.batch_size,
            "steps": args.steps,
        }
        results = []
        for precision in args.precisions:
            result = {"precision": precision, **setting, **train(args, work, precision)}
            results.append({**result, **translate(args, work, precision)})
            emit(results[-1], args.json)
        emit(summary(results), args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
