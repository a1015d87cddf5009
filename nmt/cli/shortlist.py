"""nmt-shortlist: a vocabulary shortlist for a model, from its training corpus, for ``--shortlist``.

    nmt-shortlist --checkpoint run/best.pt                  # writes run/shortlist.pt
    nmt-shortlist --checkpoint run/best.pt --train data/train --k 50 --frequent 100 --output run/sl.pt
    nmt-translate --checkpoint run/best.pt --shortlist run/shortlist.pt < test.en

The corpus is the checkpoint's ``data.train`` (text files or a Hugging Face dataset), or ``--train``
(a prefix read as PREFIX.<src_lang> and PREFIX.<tgt_lang>, or SRC_FILE,TGT_FILE) where the run's
relative paths do not lead from here. It is tokenized with the checkpoint's own tokenizers and
filtered as training filtered it (``data.max_len``, ``data.max_len_ratio``). Each source piece keeps
its ``--k`` most probable target pieces under IBM Model 1 (``--iterations`` of EM), and every batch
gets the ``--frequent`` most frequent target pieces (:mod:`nmt.shortlist`). The file records the
fingerprints of both tokenizers, so a model with other tokenizers refuses it.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from nmt.checkpoint import load_model
from nmt.cli.common import add_common_args, check_output, positive_int, run
from nmt.data import encode_corpus, filter_pairs, read_split
from nmt.errors import NMTError
from nmt.shortlist import build_shortlist, save_shortlist

log = logging.getLogger("nmt.shortlist")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-shortlist",
        description=__doc__.split("\n\n")[0],
        epilog="Use the file with nmt-translate or nmt-evaluate --shortlist F.",
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="the model (its tokenizers and config)")
    parser.add_argument(
        "--train", metavar="SPEC", help="the training corpus, if not the checkpoint's data.train: PREFIX or SRC,TGT"
    )
    parser.add_argument("--k", type=positive_int, default=50, help="target pieces kept per source piece (50)")
    parser.add_argument(
        "--frequent", type=positive_int, metavar="N", default=100, help="most frequent target pieces kept (100)"
    )
    parser.add_argument("--iterations", type=positive_int, metavar="N", default=5, help="IBM Model 1 EM iterations (5)")
    parser.add_argument("--output", metavar="F", help="where to write it (default: shortlist.pt beside CKPT)")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_shortlist, build_parser(), argv)


def _shortlist(args: argparse.Namespace) -> int:
    output = Path(args.output) if args.output else Path(args.checkpoint).with_name("shortlist.pt")
    check_output(str(output))
    loaded = load_model(args.checkpoint)
    data = loaded.config.data if args.train is None else dataclasses.replace(loaded.config.data, train=args.train)
    try:
        text = read_split(data, "train", hf_cache_dir=data.cache_dir)
    except NMTError as err:
        if args.train is not None:
            raise
        raise NMTError(f"{err} (the checkpoint's data.train); pass --train where the training corpus is now") from err
    pairs = encode_corpus(text, loaded.src_tokenizer, loaded.tgt_tokenizer, cache_dir=None)
    pairs = filter_pairs(pairs, max_len=data.max_len, max_ratio=data.max_len_ratio)
    log.info("IBM Model 1 on %d sentence pairs of %s, %d iterations", len(pairs), text.origin, args.iterations)
    shortlist = build_shortlist(
        pairs, loaded.src_tokenizer, loaded.tgt_tokenizer, k=args.k, frequent=args.frequent, iterations=args.iterations
    )
    about = {
        "checkpoint": str(args.checkpoint),
        "corpus": text.origin,
        "pairs": len(pairs),
        "model": "ibm1",
        "k": args.k,
        "frequent": args.frequent,
        "iterations": args.iterations,
    }
    save_shortlist(output, shortlist, about=about)
    listed = (shortlist.candidates >= 0).sum(1).float()
    log.info(
        "wrote %s: %.1f target pieces per source piece on average (of %d), %d frequent pieces",
        output,
        float(listed[listed > 0].mean()) if bool((listed > 0).any()) else 0.0,
        args.k,
        len(shortlist.frequent),
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
