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
import dataclasses
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import torch
from tqdm import tqdm

from nmt import data
from nmt.checkpoint import load_model
from nmt.cli.common import add_common_args, run
from nmt.errors import NMTError
from nmt.precision import PRECISIONS
from nmt.search import LENGTH_PENALTIES, Ensemble, check_config
from nmt.translate import Output, Translator, translate_lines

# DecodeConfig fields with an option of the same name; options left out keep the checkpoint's value
_DECODE_FIELDS = (
    "beam",
    "length_penalty",
    "alpha",
    "min_len_ratio",
    "max_len_ratio",
    "max_len",
    "no_repeat_ngram",
    "batch_tokens",
    "replace_unk",
    "max_input_len",
    "precision",
)


def add_decode_args(parser: argparse.ArgumentParser, *, required: bool) -> None:
    """The options nmt-translate and nmt-evaluate share: checkpoints, device and search settings."""
    parser.add_argument(
        "--checkpoint", nargs="+", required=required, metavar="CKPT", help="one checkpoint, or several for an ensemble"
    )
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument("--beam", type=int, help="beam size; 1 is greedy search")
    parser.add_argument("--length-penalty", choices=list(LENGTH_PENALTIES), help="length normalisation")
    parser.add_argument("--alpha", type=float, help="the GNMT length penalty's exponent")
    parser.add_argument("--min-len-ratio", type=float, help="at least this many output tokens per source token")
    parser.add_argument("--max-len-ratio", type=float, help="at most this many output tokens per source token")
    parser.add_argument("--max-len", type=int, help="at most this many output tokens")
    parser.add_argument("--no-repeat-ngram", type=int, metavar="N", help="never repeat an n-gram of this size")
    parser.add_argument("--batch-tokens", type=int, metavar="N", help="about N source tokens per batch")
    parser.add_argument("--max-input-len", type=int, metavar="N", help="translate longer lines from N tokens")
    parser.add_argument(
        "--precision", choices=list(PRECISIONS), help="fp32, or search under bf16 autocast (fp16: CUDA only)"
    )
    parser.add_argument(
        "--replace-unk",
        action=argparse.BooleanOptionalAction,
        help="replace each <unk> by the most attended source word (or its --dict translation)",
    )
    parser.add_argument("--dict", metavar="F", help="source<TAB>target word translations for --replace-unk")
    parser.add_argument(
        "--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes in the input instead of failing"
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


def resolve_device(name: str) -> torch.device:
    """``auto`` is cuda where available, else cpu; anything else must be a torch device name."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise NMTError(f"--device {name!r} is not a device name (try cpu, cuda or cuda:0)") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise NMTError(f"--device {name}: CUDA is not available here; use --device cpu")
    if device.type == "cuda" and (device.index or 0) >= torch.cuda.device_count():
        raise NMTError(f"--device {name}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0")
    return device


def load_translator(args: argparse.Namespace, *, n_best: int | None = None) -> Translator:
    """Load ``args.checkpoint`` (one model or an ensemble) with settings from the checkpoint and ``args``."""
    device = resolve_device(args.device)
    loaded = [load_model(path, device) for path in args.checkpoint]
    first = loaded[0]
    for path, other in zip(args.checkpoint[1:], loaded[1:], strict=True):
        for side in ("src_tokenizer", "tgt_tokenizer"):
            if getattr(other, side).to_state() != getattr(first, side).to_state():
                raise NMTError(
                    f"{path} and {args.checkpoint[0]} have different {side.split('_')[0]} tokenizers; "
                    "an ensemble needs checkpoints trained with the same vocabularies"
                )
    given = {field: getattr(args, field) for field in _DECODE_FIELDS} | {"n_best": n_best}
    config = dataclasses.replace(first.config.decode, **{k: v for k, v in given.items() if v is not None})
    check_config(config)
    if config.batch_tokens < 1 or config.max_input_len < 1:
        raise NMTError("--batch-tokens and --max-input-len must be positive")
    for path, entry in zip(args.checkpoint, loaded, strict=True):
        if config.replace_unk and not entry.model.decoder.attention.attends:
            raise NMTError(
                f"{path}: --replace-unk copies the source word the attention points at, but this model has no "
                "attention (model.attention.align: none); translate without --replace-unk"
            )
    if args.dict and not config.replace_unk:
        raise NMTError("--dict is only used with --replace-unk; add --replace-unk")
    model = first.model if len(loaded) == 1 else Ensemble(models=[entry.model for entry in loaded])
    dictionary = read_dictionary(args.dict, replace_invalid=args.replace_invalid) if args.dict else {}
    return Translator(model, first.src_tokenizer, first.tgt_tokenizer, config, dictionary, device)


def translate_with_progress(lines: Sequence[str], translator: Translator, *, quiet: bool) -> list[list[Output]]:
    """:func:`nmt.translate.translate_lines` with a progress bar on stderr counting sentences."""
    with tqdm(total=len(lines), unit="sent", file=sys.stderr, disable=quiet or None, leave=False) as bar:
        return translate_lines(lines, translator, progress=bar.update)


def read_lines(path: str | None, *, replace_invalid: bool = False) -> list[str]:
    """:func:`nmt.data.read_lines` of ``path`` (stdin when None), pointing at ``--replace-invalid``."""
    return data.read_lines(path, replace_invalid=replace_invalid, remedy="pass --replace-invalid")


def read_dictionary(path: str, *, replace_invalid: bool = False) -> dict[str, str]:
    """A ``source<TAB>target`` word dictionary for ``--replace-unk``; blank lines are skipped.

    A source word listed twice keeps its first translation (dictionaries list the most
    probable first). A line that is not ``word<TAB>word`` raises NMTError naming the line.
    """
    dictionary: dict[str, str] = {}
    for number, line in enumerate(read_lines(path, replace_invalid=replace_invalid), start=1):
        if not line.strip():
            continue
        source, tab, target = line.partition("\t")
        if not tab or not source.strip() or not target.strip():
            raise NMTError(f"{path}:{number}: expected 'source<TAB>target', got {line!r}")
        dictionary.setdefault(source.strip(), target.strip())
    return dictionary


def check_output(path: str | None) -> None:
    """Fail before any work if ``path`` cannot take the output: a directory, or a file in a missing directory."""
    if path is None:
        return
    target = Path(path)
    if target.is_dir():
        raise NMTError(f"{path}: is a directory; give the name of a file for the output")
    if not target.parent.is_dir():
        raise NMTError(f"{path}: {target.parent} is not an existing directory; create it or write elsewhere")


def write_lines(lines: Sequence[str], path: str | None) -> None:
    """Write ``lines`` to ``path`` (all or nothing: a temporary file renamed into place) or to stdout."""
    data = "".join(f"{line}\n" for line in lines).encode("utf-8")
    if path is None:
        sys.stdout.flush()
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    try:
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise NMTError(f"{path}: cannot write the output ({err.strerror or err})") from err


if __name__ == "__main__":
    sys.exit(main())
