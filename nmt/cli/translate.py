"""nmt-translate: raw text in, raw text out, exactly one output line for every input line.

    nmt-translate --checkpoint run/best.pt < test.en > test.hyp.de
    nmt-translate --checkpoint a.pt b.pt c.pt --input test.en --output test.hyp.de --beam 10
    nmt-translate --checkpoint run/best.pt --n-best 3 --beam 5 < test.en

Input is read as UTF-8 lines (LF or CRLF), tokenised with the checkpoint's own source
tokenizer, sorted by length into batches of about ``--batch-tokens`` source tokens, searched,
restored to input order and detokenised with the checkpoint's target tokenizer. Several
checkpoints form an ensemble (they must share both tokenizers).

- An empty or whitespace-only line gives an empty line; the model does not see it.
- A line longer than ``decode.max_input_len`` tokens (or than a location scorer can read) is
  translated from its first tokens, with a warning on stderr naming the line.
- Invalid UTF-8 is an error naming the line, unless ``--replace-invalid`` (bad bytes become U+FFFD).
- Lines are split at LF only (a CR before it is dropped); U+2028, U+0085 and other separators stay
  inside their line, and any line break in a translation (say, copied by ``--replace-unk``) becomes
  a space, so the output splits into the same lines however it is read.

With ``--n-best K`` every input line gives exactly K lines ``index ||| hypothesis ||| score``:
``index`` is the 0-based input line number, ``score`` the normalised search score (best
first). An empty input line gives K lines with an empty hypothesis and score 0; a search that
found fewer than K hypotheses fills up with empty ones scored -inf.

Search settings default to the checkpoint's ``decode`` section; the options override them.
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-translate",
        description=__doc__.split("\n\n")[0],
        epilog="Search options left out keep the checkpoint's decode settings. With --n-best K each input line "
        "gives K lines 'index ||| hypothesis ||| score' (0-based index, best first).",
    )
    add_decode_args(parser, required=True)
    parser.add_argument("--input", metavar="F", help="source text, one sentence per line (default: stdin)")
    parser.add_argument("--output", metavar="F", help="where translations go (default: stdout)")
    parser.add_argument("--n-best", type=int, metavar="K", help="print the K best hypotheses of every line")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_translate, build_parser(), argv)


def _translate(args: argparse.Namespace) -> int:
    check_output(args.output)
    translator = load_translator(args, n_best=args.n_best)
    lines = read_lines(args.input, replace_invalid=args.replace_invalid)
    results = translate_with_progress(lines, translator, quiet=args.quiet)
    if translator.config.n_best == 1:
        out = [best.text for best, *_ in results]
    else:
        out = [f"{i} ||| {h.text} ||| {h.score:.4f}" for i, hyps in enumerate(results) for h in hyps]
    write_lines(out, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
