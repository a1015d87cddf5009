"""nmt-train: train a model from a YAML config with ``key=value`` overrides, resumably."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from nmt.cli.common import add_common_args, run, stop_on_signals
from nmt.config import load_config, non_defaults
from nmt.device import pick_device
from nmt.distributed import process_group
from nmt.progress import Progress
from nmt.train import Trainer

log = logging.getLogger("nmt.train")

EXAMPLES = """\
examples:
  # the quickstart: a sample corpus, then a small model on it (a few minutes on 2 CPU cores)
  nmt-sample data/sample
  nmt-train --config configs/quickstart.yaml

  # override any config key with key=value (YAML values)
  nmt-train --config configs/multi30k_en_de.yaml train.save_dir=runs/m30k train.max_steps=2000 train.device=cpu

  # continue a run from <train.save_dir>/last.pt (after Ctrl-C, a crash, or to train longer)
  nmt-train --config configs/quickstart.yaml --resume train.max_steps=4000

  # data-parallel on the 4 GPUs of one machine (README: "Training on several GPUs or machines")
  torchrun --nproc_per_node 4 --no-python nmt-train --config configs/wmt14_en_de.yaml

the run directory (train.save_dir) receives config.yaml (the resolved config), metrics.jsonl
(one JSON record per log interval and per validation), the tokenizer files, step_*.pt (the
last train.keep_last), last.pt and best.pt (lowest dev perplexity). Ctrl-C or SIGTERM saves a
checkpoint after the current update and exits; a second Ctrl-C stops at once.
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-train",
        description="Train an attention-based NMT model (Luong et al. 2015).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", help="YAML config file (see configs/); without it, the defaults")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.lr=0.5")
    parser.add_argument("--resume", action="store_true", help="continue from <train.save_dir>/last.pt")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_train, build_parser(), argv)


def _train(args: argparse.Namespace) -> int:
    config = load_config(args.config, args.overrides)
    stop = threading.Event()
    received: list[str] = []
    with (
        process_group(pick_device(config.train.device)) as ranks,
        stop_on_signals(stop, received, escalate=ranks.world_size == 1),
    ):
        if not ranks.is_main:  # under torchrun rank 0 logs and draws progress for all; the others only warn
            logging.getLogger().setLevel(logging.WARNING)
        trainer = Trainer(config=config, resume=args.resume, stop=stop, ranks=ranks)
        log.info("config in %s/config.yaml: the defaults but %s", config.train.save_dir, " ".join(non_defaults(config)))
        with logging_redirect_tqdm(), _ProgressBar(disable=args.quiet or not ranks.is_main) as bar:
            result = trainer.fit(on_progress=bar.update)
        del trainer  # its DDP wrapper must go before the process group (see nmt.distributed.process_group)
    best = "none" if result.best_dev_ppl is None else f"{result.best_dev_ppl:.3f}"
    log.info("done: %d updates, best dev perplexity %s; checkpoints in %s", result.step, best, config.train.save_dir)
    if received:
        again = "continue with the same command and --resume" if result.step else "nothing was saved; start again"
        log.info("stopped by %s; %s", received[0], again)
        return 128 + signal.Signals[received[0]].value
    return 0


class _ProgressBar:
    """One tqdm bar on stderr, fed by :class:`nmt.train.Progress` reports."""

    def __init__(self, *, disable: bool) -> None:
        self.disable = disable
        self.bar: tqdm | None = None

    def __enter__(self) -> _ProgressBar:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()

    def update(self, progress: Progress) -> None:
        if self.bar is None:
            self.bar = tqdm(
                total=progress.total_steps,
                initial=progress.step - 1,
                unit="step",
                file=sys.stderr,
                dynamic_ncols=True,
                disable=self.disable,
            )
        self.bar.set_description(f"epoch {progress.epoch}", refresh=False)
        self.bar.set_postfix(
            loss=f"{progress.loss:.3f}",
            ppl=f"{progress.ppl:.2f}",
            lr=f"{progress.lr:.3g}",
            tok_s=f"{progress.tok_s:.0f}",
            refresh=False,
        )
        self.bar.update(progress.step - self.bar.n)


if __name__ == "__main__":
    sys.exit(main())
