"""What the CLIs share: logging to stderr, ``--debug``, one error path for user mistakes, reading and
writing lines, the device, and the search options with the translator they load."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from tqdm import tqdm

from nmt import data, translate
from nmt.allocator import set_up_process_memory
from nmt.device import pick_device
from nmt.errors import NMTError
from nmt.precision import PRECISIONS
from nmt.search import LENGTH_PENALTIES
from nmt.translate import Output, Translator, translate_lines

if TYPE_CHECKING:  # nmt.train is heavy, and only nmt-train and compare.py stop training on signals
    from nmt.train import StopRequest

log = logging.getLogger(__name__)


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")


def run(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, configure logging and memory (:mod:`nmt.allocator`) and call ``main``;
    user errors become one line and exit 1.

    argparse itself exits with status 2 on usage errors; Ctrl-C exits with 130, and a reader
    that closes stdout early (``| head``) ends the command quietly with 141, like SIGPIPE.
    """
    args = parser.parse_intermixed_args(argv)  # positionals may follow options: nmt-train --quiet a=1 --resume b=2
    logging.basicConfig(
        level=logging.WARNING if args.quiet else logging.INFO,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
        force=True,
    )
    set_up_process_memory()
    try:
        return main(args)
    except NMTError as err:
        if args.debug:
            raise
        print(f"{parser.prog}: error: {' '.join(str(err).splitlines())}", file=sys.stderr)  # one line, always
        return 1
    except KeyboardInterrupt:
        print(f"{parser.prog}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # the reader went away (``| head``): stop quietly, as cat and grep do
        if args.debug:
            raise
        with contextlib.suppress(OSError, ValueError):  # no flush at exit may hit the closed pipe again
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 128 + signal.SIGPIPE


SIGNALS = {signal.SIGINT: signal.default_int_handler, signal.SIGTERM: signal.SIG_DFL}


@contextlib.contextmanager
def stop_on_signals(
    stop: StopRequest,
    received: list[str],
    *,
    escalate: bool = True,
    second: Callable[[int, object], None] | None = None,
) -> Iterator[None]:
    """SIGINT/SIGTERM set ``stop`` (training checkpoints and returns); a second signal acts at once:
    SIGINT raises KeyboardInterrupt and SIGTERM ends the process, or either calls ``second``.

    Under torchrun (``escalate=False``) every signal only sets ``stop``: torchrun passes the
    terminal's Ctrl-C on to its workers, which then see it twice, and kills them itself if they
    have not exited 30 s (its default) after it was signalled.
    """

    def handler(signum: int, frame: object) -> None:
        received.append(signal.Signals(signum).name)
        again = " (again to stop now)" if escalate else ""
        log.warning("%s received: saving a checkpoint after this update%s", received[-1], again)
        stop.set()
        if escalate:
            signal.signal(signum, second or SIGNALS[signum])

    if threading.current_thread() is not threading.main_thread():  # signals can only be handled there
        yield
        return
    previous = {signum: signal.signal(signum, handler) for signum in SIGNALS}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


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
    "workers",
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
        "--precision",
        choices=list(PRECISIONS),
        help="fp32; search under bf16 autocast (fp16: CUDA only); int8: weights quantized at load (CPU only)",
    )
    parser.add_argument(
        "--workers",
        type=positive_int,
        metavar="N",
        help="search N batches at once, each on its own thread with 1/N of the CPU threads (pays with small batches)",
    )
    parser.add_argument(
        "--shortlist",
        metavar="F",
        help="compute only the output rows this file (from nmt-shortlist) lists for each batch's source pieces",
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


def positive_int(text: str) -> int:
    """An argparse ``type``: a whole number of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def resolve_device(name: str) -> torch.device:
    """``--device``: :func:`nmt.device.pick_device`, the rule ``train.device`` follows too."""
    return pick_device(name, key="--device")


def load_translator(args: argparse.Namespace, *, n_best: int | None = None) -> Translator:
    """:func:`nmt.translate.load_translator` of ``args.checkpoint`` with the search options given in ``args``."""
    given = {field: getattr(args, field) for field in _DECODE_FIELDS} | {"n_best": n_best}
    decode = {key: value for key, value in given.items() if value is not None}
    device = resolve_device(args.device)
    translator = translate.load_translator(args.checkpoint, device, decode=decode, shortlist=args.shortlist)
    if args.dict and not translator.config.replace_unk:
        raise NMTError("--dict is only used with --replace-unk; add --replace-unk")
    dictionary = read_dictionary(args.dict, replace_invalid=args.replace_invalid) if args.dict else {}
    return translator._replace(dictionary=dictionary)


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
