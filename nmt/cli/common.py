"""What every CLI shares: logging to stderr, ``--debug``, and one error path for user mistakes."""

from __future__ import annotations

import argparse
import contextlib
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence

from nmt.allocator import keep_freed_memory
from nmt.errors import NMTError


def add_common_args(parser: argparse.ArgumentParser) -> None:
    """Options every command takes."""
    parser.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    parser.add_argument("--quiet", action="store_true", help="log warnings and errors only")


def run(main: Callable[[argparse.Namespace], int], parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> int:
    """Parse ``argv``, configure logging and the C heap (:func:`keep_freed_memory`) and call ``main``;
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
    keep_freed_memory()
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
