"""nmt.workers: batches searched on several threads at once."""

from __future__ import annotations

import signal
import threading
import time

import pytest
import torch

from nmt.workers import map_unordered


@pytest.fixture
def two_threads():
    """torch at two CPU threads for the test, as it was afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("workers", [1, 2, 5])
def test_every_item_once_with_its_index(workers: int) -> None:
    items = list(range(23))
    found = dict(map_unordered(lambda x: x * x, items, workers=workers))
    assert found == {i: i * i for i in items}


def test_one_worker_runs_in_order_in_the_calling_thread() -> None:
    threads = []
    out = list(map_unordered(lambda x: threads.append(threading.current_thread()) or x, "abc", workers=1))
    assert out == [(0, "a"), (1, "b"), (2, "c")] and set(threads) == {threading.current_thread()}


def test_workers_run_at_the_same_time_each_with_its_share_of_the_cpu_threads(two_threads) -> None:
    barrier = threading.Barrier(2, timeout=10)  # broken, and the test fails, unless two calls wait together

    def work(item: int) -> tuple[int, str]:
        barrier.wait()
        return torch.get_num_threads(), threading.current_thread().name

    found = [result for _, result in map_unordered(work, [0, 1], workers=2)]
    assert [threads for threads, _ in found] == [1, 1]
    assert len({name for _, name in found}) == 2 and all(name.startswith("nmt-search") for _, name in found)
    assert torch.get_num_threads() == 2  # restored


def test_an_error_in_a_worker_is_raised_to_the_caller_and_the_rest_cancelled(two_threads) -> None:
    started = []

    def work(item: int) -> int:
        started.append(item)
        if item == 0:
            raise ValueError("bad batch")
        time.sleep(0.05)
        return item

    with pytest.raises(ValueError, match="bad batch"):
        list(map_unordered(work, list(range(100)), workers=2))
    time.sleep(0.2)  # what was running has finished
    assert len(started) < 100
    assert torch.get_num_threads() == 2


def test_ctrl_c_that_reaches_a_worker_thread_stops_the_wait(two_threads) -> None:
    """The kernel may hand a Ctrl-C to any thread; only the main thread runs Python's handler, and it
    must not sleep through it until the busy workers end."""
    release = threading.Event()
    started = []

    def work(item: int) -> int:
        started.append(threading.get_ident())
        release.wait(timeout=30)
        return item

    timer = threading.Timer(0.3, lambda: signal.pthread_kill(started[0], signal.SIGINT))
    begin = time.monotonic()
    timer.start()
    try:
        with pytest.raises(KeyboardInterrupt):
            list(map_unordered(work, list(range(10)), workers=2))
        assert time.monotonic() - begin < 5  # at most one poll after the signal, not when the workers end
    finally:
        release.set()
        timer.cancel()
    assert len(started) == 2  # the others were cancelled
