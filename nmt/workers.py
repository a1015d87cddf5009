"""Several batches searched at once, each on its own thread (``decode.workers``).

Search runs a batch as many small operations one after another (a step's products are a few
dozen rows), and most of them are too small for PyTorch to split across threads: with two CPU
threads a batch leaves one of them idle much of the time. Giving each of ``workers`` threads its
own batch and ``1/workers`` of the CPU threads keeps them all busy, as CTranslate2's
``inter_threads`` does. Each batch's search is the same computation whichever thread runs it.
"""

from __future__ import annotations

import concurrent.futures
from collections.abc import Callable, Iterator, Sequence
from typing import TypeVar

import torch

T = TypeVar("T")
R = TypeVar("R")

POLL = 0.5
"""Seconds a wait for other threads or processes sleeps between looks at the signals: see :func:`as_completed`."""


def as_completed(futures: Sequence[concurrent.futures.Future]) -> Iterator[concurrent.futures.Future]:
    """``futures`` as they finish (those that finish together in the given order), waiting at most
    :data:`POLL` seconds at a time. The kernel may hand Ctrl-C or SIGTERM to any thread that does
    not hold it (torch starts one at import), and only the main thread runs Python's handlers: in
    one unbroken wait it would sleep through the signal until the work ended by itself."""
    remaining = list(futures)
    while remaining:
        done, _ = concurrent.futures.wait(remaining, timeout=POLL, return_when=concurrent.futures.FIRST_COMPLETED)
        yield from (future for future in remaining if future in done)
        remaining = [future for future in remaining if future not in done]


def map_unordered(function: Callable[[T], R], items: Sequence[T], *, workers: int) -> Iterator[tuple[int, R]]:
    """``(i, function(items[i]))`` for every item, on ``workers`` threads, as each finishes.

    One worker calls ``function`` in this thread, in order. Several split the CPU threads
    (``torch.get_num_threads()``, at least one each) while they run and restore them afterwards. An
    exception of ``function`` is raised here; it, Ctrl-C or a caller that stops reading cancels the
    items not yet started (those running finish in the background).
    """
    if workers == 1:
        yield from ((i, function(item)) for i, item in enumerate(items))
        return
    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, threads // workers))  # read by each new thread at its first parallel operation
    pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="nmt-search")
    try:
        futures = {pool.submit(function, item): i for i, item in enumerate(items)}
        for future in as_completed(list(futures)):
            yield futures[future], future.result()
    finally:
        pool.shutdown(wait=False, cancel_futures=True)
        torch.set_num_threads(threads)
