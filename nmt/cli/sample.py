"""nmt-sample: write the built-in toy English->German corpus with its gold alignments."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nmt.cli.common import add_common_args, run
from nmt.sample import write_sample_corpus

EXAMPLES = """examples:
  nmt-sample data/sample                 # 6000 pairs: train 5000, dev 500, test 500
  nmt-sample data/tiny --pairs 600 --seed 7
writes OUT_DIR/{train,dev,test}.{en,de} (one sentence per line) and OUT_DIR/{train,dev,test}.align
(gold word alignments, Pharaoh format: "i-j" sure, "i?j" possible, 0-based English-German word indices)."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-sample",
        description="Generate the sample English->German corpus (deterministic for a given seed).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("out_dir", metavar="OUT_DIR", help="directory to write the corpus into")
    parser.add_argument("--pairs", type=int, default=6000, help="sentence pairs in all (default: 6000)")
    parser.add_argument("--seed", type=int, default=1234, help="random seed (default: 1234)")
    add_common_args(parser)
    return parser


def _main(args: argparse.Namespace) -> int:
    write_sample_corpus(args.out_dir, pairs=args.pairs, seed=args.seed)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    return run(_main, build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
