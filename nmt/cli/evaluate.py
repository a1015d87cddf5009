"""nmt-evaluate: sacreBLEU scores of translations, or translate-and-score in one call.

    nmt-evaluate --hyp test.hyp.de --ref test.de [--ref test2.de] [--metrics bleu chrf ter] [--tokenize 13a]
    nmt-evaluate --checkpoint run/best.pt --src test.en --ref test.de [--beam 5 ...] [--output test.hyp.de]

Prints one line per metric on stdout: sacreBLEU's summary, a tab, and the signature that
says how the number was computed. ``--tokenize`` is BLEU's tokenizer: ``13a`` for raw text,
``none`` for pre-tokenized text (like multi-bleu), ``intl``, ``zh``, ``char``, ...
The second form translates ``--src`` exactly as nmt-translate would (same options).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from nmt.cli.common import (
    add_common_args,
    add_decode_args,
    check_output,
    load_translator,
    read_lines,
    run,
    translate_with_progress,
    write_lines,
)
from nmt.errors import NMTError
from nmt.evaluate import METRICS, TOKENIZERS, corpus_scores


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nmt-evaluate", description=__doc__.split("\n\n")[0])
    parser.add_argument("--hyp", metavar="F", help="translations to score, one per line")
    parser.add_argument("--ref", nargs="+", action="extend", required=True, metavar="F", help="reference file(s)")
    parser.add_argument("--metrics", nargs="+", default=["bleu"], choices=list(METRICS), help="default: bleu")
    parser.add_argument("--tokenize", default="13a", choices=list(TOKENIZERS), help="BLEU tokenizer (default 13a)")
    parser.add_argument("--src", metavar="F", help="with --checkpoint: source text to translate and score")
    parser.add_argument("--output", metavar="F", help="with --checkpoint: also write the translations here")
    add_decode_args(parser, required=False)
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    return run(lambda args: _evaluate(args, parser), parser, argv)


def _evaluate(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if (args.hyp is None) == (args.checkpoint is None):
        parser.error("give either --hyp, or --checkpoint with --src")
    if args.checkpoint and args.src is None:
        parser.error("--checkpoint needs --src, the text to translate")
    if args.hyp and (args.src or args.output):
        parser.error("--src and --output go with --checkpoint, not --hyp")
    references = [read_lines(path, replace_invalid=args.replace_invalid) for path in args.ref]
    if args.hyp:
        hypotheses = read_lines(args.hyp, replace_invalid=args.replace_invalid)
        _check_counts(args.hyp, hypotheses, args.ref, references)
    else:
        check_output(args.output)
        translator = load_translator(args, n_best=1)
        sources = read_lines(args.src, replace_invalid=args.replace_invalid)
        _check_counts(args.src, sources, args.ref, references)
        hypotheses = [best.text for (best,) in translate_with_progress(sources, translator, quiet=args.quiet)]
        if args.output:
            write_lines(hypotheses, args.output)
    for score in corpus_scores(hypotheses, references, metrics=args.metrics, tokenize=args.tokenize):
        print(f"{score.text}\t{score.signature}")
    sys.stdout.flush()
    return 0


def _check_counts(name: str, lines: list[str], ref_paths: list[str], references: list[list[str]]) -> None:
    """``lines`` must not be empty and every reference must have as many; the error names the files and counts."""
    if not lines:
        raise NMTError(f"{name} is empty; there is nothing to score")
    for path, ref in zip(ref_paths, references, strict=True):
        if len(ref) != len(lines):
            raise NMTError(
                f"{name} has {len(lines)} lines but {path} has {len(ref)}; "
                "hypotheses and references must match line for line"
            )


if __name__ == "__main__":
    sys.exit(main())
