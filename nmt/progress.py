"""What training reports as it goes: progress after every update, log records, ``metrics.jsonl``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, NamedTuple

from nmt.objective import StepResult, perplexity


class Progress(NamedTuple):
    """Reported after every update (for a progress bar); averages run over the current logging window."""

    step: int
    total_steps: int
    epoch: int
    loss: float  # summed NLL per sentence (the objective)
    ppl: float
    lr: float
    tok_s: float  # predicted target tokens per second


class Window:
    """Running sums over the updates since the last log record."""

    def __init__(self) -> None:
        self.nll, self.tokens, self.sentences, self.steps = 0.0, 0, 0, 0
        self.start = time.perf_counter()

    def add(self, result: StepResult) -> None:
        self.nll += result.nll
        self.tokens += result.tokens
        self.sentences += result.sentences
        self.steps += 1

    def progress(self, step: int, total: int, epoch: int, lr: float) -> Progress:
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        loss = self.nll / max(self.sentences, 1)
        return Progress(step, total, epoch, loss, perplexity(self.nll, self.tokens), lr, self.tokens / elapsed)

    def record(self, step: int, epoch: int, lr: float) -> dict[str, Any]:
        """The window as a ``metrics.jsonl`` record (event ``train``)."""
        values = self.progress(step, 0, epoch, lr)._asdict()
        del values["total_steps"]
        return {"event": "train", **values, "steps": self.steps}


class Metrics:
    """``metrics.jsonl`` in a run directory: one JSON record per line, each stamped with the time.

    Only the process that writes files (``enabled``) appends; the others' records go nowhere.
    """

    def __init__(self, path: Path, *, enabled: bool) -> None:
        self.path = path
        self.enabled = enabled

    def write(self, record: dict[str, Any]) -> None:
        if self.enabled:
            with open(self.path, "a", encoding="utf-8") as file:
                file.write(json.dumps({**record, "time": time.time()}) + "\n")
