"""The training loop: data, model, optimiser and schedule, validation, checkpoints, exact resume.

Read :class:`Trainer` top to bottom: ``__init__`` sets everything up (a fresh run, or one
restored from ``last.pt``), :meth:`Trainer.fit` runs updates until a limit, early stopping or
a stop request, validating and checkpointing every ``train.valid_every`` updates.

The objective is the summed token NLL of a batch divided by its number of sentences (the
benchmark's ``loss_normalization: sents``). With ``train.accum_steps = k`` one update sums the
gradients of k batches, each scaled by the sentences of all k, so it equals one update on
their union.

Exact resume: a checkpoint holds the model, optimiser, schedule, GradScaler and RNG states,
and the data position (epoch, batches done). Batch order depends on ``(seed, epoch)`` alone
(:class:`nmt.data.BucketBatcher`), so a resumed run skips the batches already done and
continues with the same parameters, gradients and dropout masks as an uninterrupted run.

Data parallelism (:mod:`nmt.distributed`, under torchrun): the batcher gives each rank a disjoint
shard of every epoch's batches, the model is wrapped in DistributedDataParallel, and each rank
divides its loss by all ranks' sentences (times the world size, as DDP averages), so an update
equals one single-process update on the union of the ranks' batches. Dev perplexity is sharded
and all-reduced, so every rank sees the same number (it drives the best checkpoint, the plateau
schedule and early stopping); greedy BLEU is decoded on rank 0 alone while the others wait at
their next collective. Only rank 0 writes checkpoints, metrics and the config; a checkpoint keeps
every rank's RNG state and resumes with any number of ranks that divides the data the same way.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn
from torch.optim import Optimizer

from nmt.align import write_validation_heatmaps
from nmt.checkpoint import load_checkpoint, save_run_checkpoint
from nmt.config import Config, ConfigError, ModelConfig, TrainConfig, choose, to_dict
from nmt.data import (
    Batch,
    BucketBatcher,
    ParallelIds,
    collate,
    encode_corpus,
    filter_pairs,
    iterate_batches,
    read_split,
)
from nmt.decoder import packed
from nmt.distributed import ONE_PROCESS, Ranks, accumulating, moved_position
from nmt.errors import NMTError
from nmt.evaluate import validation_bleu
from nmt.model import Seq2Seq
from nmt.precision import autocast_for
from nmt.search import check_config
from nmt.tokenizer import (
    PAD_ID,
    SPECIALS,
    Tokenizer,
    build_tokenizers,
    check_tokenizer_config,
    tokenizer_from_state,
)

log = logging.getLogger(__name__)

OPTIMIZERS: dict[str, Callable[[Iterable[nn.Parameter], float], Optimizer]] = {
    "sgd": lambda params, lr: torch.optim.SGD(params, lr=lr),
    "adam": lambda params, lr: torch.optim.Adam(params, lr=lr, fused=True),  # one kernel: 4x faster step on CPU
}
"""``train.optimizer`` -> a constructor taking the parameters and the learning rate."""

DEVICES = ("auto", "cpu", "cuda")

# Config keys a resumed run must share with its checkpoint: they fix the model, the data and the batch stream.
RESUME_FIXED = (
    "model.",
    "data.",
    "train.seed",
    "train.batch_size",
    "train.max_tokens",
    "train.pool_factor",
    "train.balance_tokens",
    "train.accum_steps",
)


# ---------------------------------------------------------------------------------------------
# Learning-rate schedules


class Schedule:
    """A constant learning rate; subclasses change it at epoch ends or after validations.

    The rate itself lives in the optimiser's param groups (and so in its state dict).
    """

    def __init__(self, *, optimizer: Optimizer, config: TrainConfig) -> None:
        self.optimizer = optimizer
        self.config = config

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    def epoch_end(self, epoch: int) -> None:
        """Called once ``epoch`` (1-based: the number of epochs completed) is over."""

    def validated(self, dev_ppl: float) -> None:
        """Called with the dev perplexity of every validation."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""

    def _halve(self, why: str) -> None:
        for group in self.optimizer.param_groups:
            group["lr"] *= 0.5
        log.info("learning rate halved to %g (%s)", self.lr, why)


class Halving(Schedule):
    """Luong et al. (2015, §4.1): halve the rate after every epoch past ``train.halve_after_epoch``."""

    def epoch_end(self, epoch: int) -> None:
        if epoch >= self.config.halve_after_epoch:
            self._halve(f"epoch {epoch} done")


class Plateau(Schedule):
    """Halve the rate whenever dev perplexity fails to improve on the best seen so far."""

    def __init__(self, *, optimizer: Optimizer, config: TrainConfig) -> None:
        super().__init__(optimizer=optimizer, config=config)
        self.best = math.inf

    def validated(self, dev_ppl: float) -> None:
        if dev_ppl < self.best:
            self.best = dev_ppl
        else:
            self._halve(f"dev perplexity {dev_ppl:.2f} is no better than {self.best:.2f}")

    def state_dict(self) -> dict[str, Any]:
        return {"best": self.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.best = state["best"]


SCHEDULES: dict[str, type[Schedule]] = {"constant": Schedule, "halving": Halving, "plateau": Plateau}


# ---------------------------------------------------------------------------------------------
# One update and one validation


class StepResult(NamedTuple):
    """What one update saw: summed NLL, predicted target tokens, sentences, gradient norm (before clipping)."""

    nll: float
    tokens: int
    sentences: int
    grad_norm: float


def summed_nll(model: nn.Module, batch: Batch, autocast: Callable[[], contextlib.AbstractContextManager]) -> Tensor:
    """The summed token NLL of ``batch`` in float32; the decoder steps, output layer and loss skip padding."""
    lengths = batch.tgt_lengths
    with autocast():
        logits, _ = model(batch.src, batch.src_lengths, batch.tgt_in, lengths)  # (tokens, vocab)
    return F.cross_entropy(logits.float(), packed(batch.tgt_out, lengths).data, reduction="sum")


def train_step(
    model: nn.Module,
    batches: Sequence[Batch],
    optimizer: Optimizer,
    *,
    clip_norm: float,
    autocast: Callable[[], contextlib.AbstractContextManager],
    scaler: torch.amp.GradScaler,
    ranks: Ranks = ONE_PROCESS,
) -> StepResult | None:
    """One update from ``batches`` (already on the model's device); None if a loss or gradient was not finite.

    The loss of each batch is its summed NLL over the sentences of all batches, so k batches of b
    sentences give the gradient of one batch of k·b. A skipped update leaves parameters untouched.

    Under data parallelism ``model`` is wrapped by :meth:`Ranks.wrap`, which averages the ranks'
    gradients; dividing by all ranks' sentences over the world size makes the update equal one
    on the union of every rank's batches. The result counts all ranks' batches, and every rank
    decides the same way whether to skip (the summed NLL is non-finite on all if on one).
    """
    (sentences,) = ranks.sum([sum(b.n_sentences for b in batches)])
    divisor = sentences / ranks.world_size  # DDP averages gradients over the ranks
    optimizer.zero_grad(set_to_none=True)
    losses = []
    for i, batch in enumerate(batches):
        with accumulating(model, last=i == len(batches) - 1):
            loss = summed_nll(model, batch, autocast)
            scaler.scale(loss / divisor).backward()  # every rank runs every backward: DDP syncs in it
        losses.append(loss.detach())
    nll, tokens = ranks.sum([float(torch.stack(losses).sum()), sum(b.n_tgt_tokens for b in batches)])
    if not math.isfinite(nll):
        return None
    scaler.unscale_(optimizer)
    grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), clip_norm))
    if not math.isfinite(grad_norm) and not scaler.is_enabled():  # fp16's scaler skips such steps itself
        return None
    scaler.step(optimizer)
    scaler.update()
    return StepResult(nll, int(tokens), int(sentences), grad_norm)


@torch.no_grad()
def dev_perplexity(
    model: nn.Module,
    batches: Iterable[Batch],
    *,
    device: torch.device,
    autocast: Callable[[], contextlib.AbstractContextManager],
    ranks: Ranks = ONE_PROCESS,
) -> float:
    """exp(summed NLL / predicted tokens) over ``batches`` of all ranks; the model is left in eval mode.

    Each rank passes its own share of the split; every rank returns the same number.
    """
    model.eval()
    nll, tokens = 0.0, 0
    for batch in batches:
        batch = batch.to(device)
        try:
            nll += summed_nll(model, batch, autocast).item()
        except torch.OutOfMemoryError as err:
            raise NMTError(
                f"out of memory validating {_describe([batch])}; lower train.batch_size (or train.max_tokens), "
                "which size the dev batches too"
            ) from err
        tokens += batch.n_tgt_tokens
    return perplexity(*ranks.sum([nll, tokens]))


def perplexity(nll: float, tokens: int) -> float:
    """exp(nll / tokens), inf where that overflows."""
    mean = nll / max(tokens, 1)
    return math.exp(mean) if mean < 700 else math.inf


# ---------------------------------------------------------------------------------------------
# Setup helpers


def pick_device(name: str) -> torch.device:
    """``train.device``: auto (CUDA when present), cpu, or cuda (an error where there is none)."""
    choose(dict.fromkeys(DEVICES), name, "train.device")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise NMTError("train.device=cuda, but this machine has no usable CUDA device; use train.device=cpu or auto")
    return torch.device(name)


def check_train_config(config: TrainConfig) -> None:
    """Reject settings that cannot work before any data is read."""
    checks = [
        ("lr", config.lr > 0),
        ("batch_size", config.batch_size >= 1),
        ("max_tokens", config.max_tokens is None or config.max_tokens >= 1),
        ("accum_steps", config.accum_steps >= 1),
        ("clip_norm", config.clip_norm > 0),
        ("max_steps", config.max_steps is None or config.max_steps >= 1),
        ("max_epochs", config.max_epochs >= 1),
        ("valid_every", config.valid_every >= 1),
        ("log_every", config.log_every >= 1),
        ("keep_last", config.keep_last >= 1),
        ("patience", config.patience is None or config.patience >= 1),
        ("max_nonfinite", config.max_nonfinite >= 1),
    ]
    for key, ok in checks:
        if not ok:
            raise ConfigError(f"train.{key} must be positive, got {getattr(config, key)!r}")
    choose(OPTIMIZERS, config.optimizer, "train.optimizer")
    choose(SCHEDULES, config.schedule, "train.schedule")


def check_model_config(config: ModelConfig) -> None:
    """Build the model on the meta device (no memory, no data) so that a bad model.* value fails at once."""
    with torch.device("meta"):
        Seq2Seq(config=config, src_vocab=len(SPECIALS) + 1, tgt_vocab=len(SPECIALS) + 1, pad_id=PAD_ID)


def make_run_dir(save_dir: Path) -> None:
    """Create ``train.save_dir`` (a file there, or a path that cannot be created, is a user error)."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NMTError(f"{save_dir}: cannot use as train.save_dir ({err.strerror or err}); choose another") from err


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device


def rng_state() -> dict[str, Any]:
    """The RNG states a resumed run needs to draw the same dropout masks."""
    state: dict[str, Any] = {"python": random.getstate(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def changed_keys(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two nested config dicts."""
    keys = []
    for key in sorted(old.keys() | new.keys()):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys


def _lookup(values: dict[str, Any], dotted: str) -> Any:
    for part in dotted.split("."):
        values = values.get(part) if isinstance(values, dict) else None
    return values


# ---------------------------------------------------------------------------------------------
# Data


class Corpus(NamedTuple):
    """The tokenizers and the token ids a run trains and validates on."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    train: ParallelIds
    dev: ParallelIds
    dev_references: list[str]  # the raw target sentences of ``dev``, in order


def prepare_corpus(config: Config, tokenizers: tuple[Tokenizer, Tokenizer] | None, max_src_len: int | None) -> Corpus:
    """Read train and dev, train the tokenizers (unless given), encode (cached) and filter.

    ``max_src_len`` (the location scorer's S_max) drops sources the model cannot read.
    """
    save_dir = Path(config.train.save_dir)
    cache_dir = Path(config.data.cache_dir) if config.data.cache_dir else save_dir / "cache"
    train_text = read_split(config.data, "train", hf_cache_dir=config.data.cache_dir)
    if tokenizers is None:
        tokenizers = build_tokenizers(config.data, train_text.src, train_text.tgt, save_dir)
    train = encode_corpus(train_text, *tokenizers, cache_dir=cache_dir)
    train = filter_pairs(train, max_len=config.data.max_len, max_ratio=config.data.max_len_ratio)
    dev_text = read_split(config.data, "dev", hf_cache_dir=config.data.cache_dir)
    dev = encode_corpus(dev_text, *tokenizers, cache_dir=cache_dir)
    dev_rows = torch.arange(len(dev))
    if max_src_len is not None:
        train = train.select(_readable(train, max_src_len, "training"))
        dev_rows = _readable(dev, max_src_len, "dev")
    references = [dev_text.tgt[i] for i in dev_rows.tolist()]
    return Corpus(*tokenizers, train, dev.select(dev_rows), references)


def _readable(pairs: ParallelIds, max_src_len: int, split: str) -> Tensor:
    """Rows whose source (EOS included) fits ``max_src_len`` positions; the others are dropped with a warning."""
    src_lengths, _ = pairs.lengths()
    keep = (src_lengths <= max_src_len).nonzero().squeeze(1)
    if len(keep) < len(pairs):
        log.warning(
            "dropped %d %s pairs whose source is longer than model.attention.max_src_len=%d",
            len(pairs) - len(keep),
            split,
            max_src_len,
        )
    if len(keep) == 0:
        raise ConfigError(f"no {split} pair fits model.attention.max_src_len={max_src_len}; raise it")
    return keep


# ---------------------------------------------------------------------------------------------
# The loop


class Progress(NamedTuple):
    """Reported after every update (for a progress bar); averages run over the current logging window."""

    step: int
    total_steps: int
    epoch: int
    loss: float  # summed NLL per sentence (the objective)
    ppl: float
    lr: float
    tok_s: float  # predicted target tokens per second


class TrainResult(NamedTuple):
    """How a run ended."""

    step: int  # updates done
    epoch: int  # epochs completed
    reason: str  # why training ended: max_steps | max_epochs | early stopping (...) | stop requested
    dev_ppl: float | None  # of the last validation
    best_dev_ppl: float | None
    checkpoint: Path | None  # the last checkpoint written


class _Window:
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


class Trainer:
    """Trains one run in ``train.save_dir`` (fresh, or resumed from its ``last.pt``).

    Args:
        config: the resolved configuration.
        resume: continue from ``<save_dir>/last.pt``; without it the run directory must hold no checkpoint.
        stop: once set (e.g. by a signal handler), training checkpoints after the current update and returns.
            Under data parallelism it is enough to set it on one rank: all stop after the same update.
        ranks: this process's place among data-parallel processes (from :func:`nmt.distributed.process_group`);
            only rank 0 writes files.
    """

    def __init__(
        self,
        *,
        config: Config,
        resume: bool = False,
        stop: threading.Event | None = None,
        ranks: Ranks = ONE_PROCESS,
    ) -> None:
        check_train_config(config.train)
        check_model_config(config.model)
        check_tokenizer_config(config.data)
        check_config(config.decode)  # validation decodes with it, and every checkpoint carries it
        self.config, self.tc = config, config.train
        self.save_dir = Path(self.tc.save_dir)
        make_run_dir(self.save_dir)
        self.stop = stop or threading.Event()
        self.ranks, self.is_main = ranks, ranks.is_main
        self.device = ranks.device(pick_device(self.tc.device))
        self.autocast = autocast_for(self.device, self.tc.precision, key="train.precision")
        if self.tc.threads is not None and self.device.type == "cpu":
            torch.set_num_threads(self.tc.threads)
        if self.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        seed_everything(self.tc.seed)
        restored = self._checkpoint_to_resume() if resume else None
        if not resume and (self.save_dir / "last.pt").exists():
            raise NMTError(
                f"{self.save_dir} already holds a run (last.pt); pass --resume to continue it, "
                "or choose another train.save_dir"
            )

        tokenizers = None
        if restored is not None:
            tokenizers = tuple(tokenizer_from_state(restored["tokenizers"][side]) for side in ("src", "tgt"))
        max_src_len = config.model.attention.max_src_len if config.model.attention.score == "location" else None
        self.corpus = self._prepare_corpus(tokenizers, max_src_len)
        self.batcher = self._train_batcher(ranks)
        dev_batcher = BucketBatcher(
            tgt_lengths=self.corpus.dev.lengths()[1],
            batch_size=self.tc.batch_size,
            max_tokens=self.tc.max_tokens,
            seed=0,
        )
        self.dev_batches = list(iterate_batches(self.corpus.dev, dev_batcher, epoch=0))

        self.model = Seq2Seq(
            config=config.model,
            src_vocab=self.corpus.src_tokenizer.vocab_size,
            tgt_vocab=self.corpus.tgt_tokenizer.vocab_size,
            pad_id=PAD_ID,
        ).to(self.device)
        self.optimizer = OPTIMIZERS[self.tc.optimizer](self.model.parameters(), self.tc.lr)
        self.schedule = SCHEDULES[self.tc.schedule](optimizer=self.optimizer, config=self.tc)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.tc.precision == "fp16")
        self.step, self.epoch, self.batches_done = 0, 0, 0
        self.best = {"dev_ppl": math.inf, "step": 0, "bad_validations": 0}
        self.last_dev_ppl: float | None = None
        self.checkpoint: Path | None = None
        if restored is not None:
            self._restore(restored)
        self.network = ranks.wrap(self.model)  # what updates run through: the model, or its DDP wrapper
        if self.is_main:
            self._write_run_files()
        log.info(
            "model: %s parameters on %s (%s); %d training pairs in %d batches per epoch%s",
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            self.device,
            self.tc.precision,
            len(self.corpus.train),
            self.batcher.count(self.epoch),
            f" (rank {ranks.rank} of {ranks.world_size})" if ranks.world_size > 1 else "",
        )

    def _prepare_corpus(self, tokenizers: tuple[Tokenizer, Tokenizer] | None, max_src_len: int | None) -> Corpus:
        """The corpus, with the same tokenizers on every rank.

        Resuming, every rank has the checkpoint's tokenizers. A fresh run trains them on rank 0,
        which also fills the token-id cache, while the others wait; they then take rank 0's
        tokenizers and read the cache.
        """
        if tokenizers is not None:
            return prepare_corpus(self.config, tokenizers, max_src_len)
        corpus = prepare_corpus(self.config, None, max_src_len) if self.is_main else None
        states = self.ranks.broadcast(
            None if corpus is None else (corpus.src_tokenizer.to_state(), corpus.tgt_tokenizer.to_state())
        )
        if corpus is None:
            corpus = prepare_corpus(self.config, tuple(map(tokenizer_from_state, states)), max_src_len)
        return corpus

    def _train_batcher(self, ranks: Ranks) -> BucketBatcher:
        """The training batches of ``ranks.rank`` when ``ranks.world_size`` ranks share each epoch."""
        return BucketBatcher(
            tgt_lengths=self.corpus.train.lengths()[1],
            batch_size=self.tc.batch_size,
            max_tokens=self.tc.max_tokens,
            pool_factor=self.tc.pool_factor,
            balance_tokens=self.tc.balance_tokens,
            seed=self.tc.seed,
            rank=ranks.rank,
            world_size=ranks.world_size,
        )

    # -- the loop --------------------------------------------------------------------------

    def fit(self, on_progress: Callable[[Progress], None] | None = None) -> TrainResult:
        """Train until ``max_steps``, ``max_epochs``, early stopping or a stop request; checkpoint and return."""
        steps_per_epoch = math.ceil(self.batcher.count(self.epoch) / self.tc.accum_steps)
        total = min(steps_per_epoch * self.tc.max_epochs, self.tc.max_steps or math.inf)
        window, nonfinite = _Window(), 0
        saved_step = validated_step = self.step
        self.model.train()
        reason = self._reason_to_stop()
        if reason is None:
            for rows in self._updates():
                group = [self._batch(index) for index in rows]
                result = self._update(group)
                if result is None:
                    nonfinite = self._skip_nonfinite(nonfinite + 1, group)
                else:
                    nonfinite = 0
                    self.step += 1
                    window.add(result)
                    if on_progress is not None:
                        on_progress(window.progress(self.step, total, self.epoch + 1, self.schedule.lr))
                    if self.step % self.tc.log_every == 0:
                        self._log_train(window)
                        window = _Window()
                    if self.step % self.tc.valid_every == 0:
                        self._save(best=self._validate())
                        saved_step = validated_step = self.step
                        window = _Window()  # throughput excludes validation and checkpointing
                reason = self._reason_to_stop()
                if reason is not None:
                    break
            else:
                reason = "max_epochs"
        if reason != "stop requested" and validated_step != self.step:
            self._save(best=self._validate())
        elif saved_step != self.step:
            self._save(best=False)
        log.info("training ended at step %d with %d epochs complete: %s", self.step, self.epoch, reason)
        best = self.best["dev_ppl"]
        return TrainResult(
            self.step, self.epoch, reason, self.last_dev_ppl, best if math.isfinite(best) else None, self.checkpoint
        )

    def _updates(self) -> Iterator[list[Tensor]]:
        """The pair indices of each remaining update's batches, epoch after epoch.

        The data position moves on as each update is handed out, and an epoch ends (the
        schedule hears of it) only when the next update is asked for, so a checkpoint taken
        between two updates resumes at exactly the next one.
        """
        while self.epoch < self.tc.max_epochs:
            batches = self.batcher.batches(self.epoch)
            while self.batches_done < len(batches):
                rows = batches[self.batches_done : self.batches_done + self.tc.accum_steps]
                self.batches_done += len(rows)
                yield rows
            self.epoch += 1
            self.batches_done = 0
            self.schedule.epoch_end(self.epoch)

    def _update(self, group: Sequence[Batch]) -> StepResult | None:
        try:
            return train_step(
                self.network,
                group,
                self.optimizer,
                clip_norm=self.tc.clip_norm,
                autocast=self.autocast,
                scaler=self.scaler,
                ranks=self.ranks,
            )
        except torch.OutOfMemoryError as err:
            raise NMTError(
                f"out of memory at step {self.step + 1} on {_describe(group)}; lower train.batch_size "
                "(or train.max_tokens) and raise train.accum_steps to keep the update size"
            ) from err

    def _batch(self, index: Tensor) -> Batch:
        """The training pairs at ``index`` ``(batch,)`` as a padded batch on the device."""
        return collate([self.corpus.train[i] for i in index.tolist()], index).to(self.device)

    def _reason_to_stop(self) -> str | None:
        """Why training must stop before the next update, if it must (the same answer on every rank)."""
        stop = self.ranks.any(self.stop.is_set())  # a signal to one rank stops all after the same update
        if self.tc.max_steps is not None and self.step >= self.tc.max_steps:
            return "max_steps"
        if self.tc.patience is not None and self.best["bad_validations"] >= self.tc.patience:
            return f"early stopping (no better dev perplexity in {self.tc.patience} validations)"
        if stop:
            return "stop requested"
        return None

    def _skip_nonfinite(self, count: int, group: Sequence[Batch]) -> int:
        log.warning(
            "non-finite loss or gradient at step %d (%s): update skipped (%d in a row)",
            self.step + 1,
            _describe(group),
            count,
        )
        if count >= self.tc.max_nonfinite:
            raise NMTError(
                f"{count} non-finite losses in a row at step {self.step + 1}; training diverged. "
                "Lower train.lr, check train.clip_norm, use train.precision=fp32, or resume from an earlier "
                f"checkpoint in {self.save_dir}"
            )
        return count

    # -- validation ------------------------------------------------------------------------

    def _validate(self) -> bool:
        """Dev perplexity (and greedy BLEU if asked); returns whether it is the best so far.

        Each rank scores its share of the dev batches and the sums are all-reduced, so every rank
        takes the same decisions from the perplexity. BLEU, only reported, is decoded on rank 0.
        """
        shard = self.dev_batches[self.ranks.rank :: self.ranks.world_size]
        ppl = dev_perplexity(self.model, shard, device=self.device, autocast=self.autocast, ranks=self.ranks)
        record: dict[str, Any] = {"event": "valid", "step": self.step, "epoch": self.epoch + 1, "dev_ppl": ppl}
        if self.tc.valid_bleu and self.is_main:
            with self.autocast():
                score = validation_bleu(
                    self.model,
                    (b.to(self.device) for b in self.dev_batches),
                    self.corpus.dev_references,
                    self.corpus.tgt_tokenizer,
                    config=self.config.decode,
                )
            record["dev_bleu"] = score.score
        if self.tc.valid_heatmaps and self.is_main:
            examples = [self.corpus.dev[i] for i in range(min(self.tc.valid_heatmaps, len(self.corpus.dev)))]
            out = self.save_dir / "heatmaps" / f"step_{self.step:08d}"
            tokenizers = self.corpus.src_tokenizer, self.corpus.tgt_tokenizer
            record["heatmaps"] = str(write_validation_heatmaps(self.model, *tokenizers, examples, out))
        self.model.train()
        improved = ppl < self.best["dev_ppl"]
        if improved:
            self.best = {"dev_ppl": ppl, "step": self.step, "bad_validations": 0}
        else:
            self.best["bad_validations"] += 1
        self.schedule.validated(ppl)
        self.last_dev_ppl = ppl
        record["best"] = improved
        log.info(
            "step %d: dev perplexity %.3f%s%s",
            self.step,
            ppl,
            f", greedy BLEU {record['dev_bleu']:.2f}" if "dev_bleu" in record else "",
            " (best)" if improved else f" (best {self.best['dev_ppl']:.3f} at step {self.best['step']})",
        )
        self._metrics(record)
        return improved

    # -- files -----------------------------------------------------------------------------

    def _checkpoint_to_resume(self) -> dict[str, Any]:
        path = self.save_dir / "last.pt"
        if not path.exists():
            raise NMTError(f"{path}: nothing to resume (no checkpoint in train.save_dir); start without --resume")
        try:
            payload = load_checkpoint(path)
        except NMTError as err:
            older = sorted(self.save_dir.glob("step_*.pt"))[-2:-1]  # last.pt is a link to the newest
            hint = f"; to resume from {older[0].name} instead: ln -f {older[0]} {path}" if older else ""
            raise NMTError(f"{err}{hint}") from err
        old, new = payload["config"], to_dict(self.config)
        changed = changed_keys(old, new)
        fixed = [key for key in changed if key.startswith(RESUME_FIXED)]
        if fixed:
            diffs = "; ".join(f"{k}: {_lookup(old, k)!r} -> {_lookup(new, k)!r}" for k in fixed)
            as_yaml = [yaml.safe_dump(_lookup(old, k), default_flow_style=True).splitlines()[0] for k in fixed]
            undo = " ".join(f"{k}={value}" for k, value in zip(fixed, as_yaml, strict=True))
            raise NMTError(
                f"{path}: cannot resume with a different model, data or batch stream ({diffs}); "
                f"resume with {undo}, or start a new run"
            )
        for key in changed:
            log.info("resuming with %s changed: %r -> %r", key, _lookup(old, key), _lookup(new, key))
        return payload

    def _restore(self, payload: dict[str, Any]) -> None:
        position, world = payload["data_position"], self.ranks.world_size
        saved_world = position["world_size"]
        self.batches_done = moved_position(
            self.save_dir / "last.pt",
            done=position["batches_done"],
            saved_world=saved_world,
            saved_batches=self._train_batcher(Ranks(world_size=saved_world)).count(position["epoch"]) * saved_world,
            world_size=world,
            batches=self.batcher.count(position["epoch"]) * world,
        )
        if saved_world != world:
            log.warning(
                "resuming a run of %d data-parallel rank(s) with %d: batches per update %d -> %d",
                saved_world,
                world,
                saved_world * self.tc.accum_steps,
                world * self.tc.accum_steps,
            )
        self.model.load_state_dict(payload["model"])
        self.optimizer.load_state_dict(payload["optimizer"])
        self.schedule.load_state_dict(payload["scheduler"])
        self.scaler.load_state_dict(payload["scaler"])
        # Each rank draws its own dropout masks; with other ranks they cannot match the saved run's anyway.
        same_ranks = saved_world == world and "rank_rng" in payload
        set_rng_state(payload["rank_rng"][self.ranks.rank] if same_ranks else payload["rng"])
        self.epoch = position["epoch"]
        self.step, self.best = payload["step"], payload["best"]
        log.info("resumed from step %d (epoch %d, %d batches into it)", self.step, self.epoch + 1, self.batches_done)

    def _payload(self, rank_rng: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "config": to_dict(self.config),
            "model": self.model.state_dict(),
            "tokenizers": {"src": self.corpus.src_tokenizer.to_state(), "tgt": self.corpus.tgt_tokenizer.to_state()},
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.schedule.state_dict(),
            "scaler": self.scaler.state_dict(),
            "rng": rank_rng[0],
            "rank_rng": rank_rng,  # every rank's, in rank order
            "data_position": {
                "epoch": self.epoch,
                "batches_done": self.batches_done,  # by each rank
                "world_size": self.ranks.world_size,
            },
            "step": self.step,
            "epoch": self.epoch,
            "best": dict(self.best),
        }

    def _save(self, *, best: bool) -> None:
        rank_rng = self.ranks.gather(rng_state())
        if not self.is_main:
            return
        payload = self._payload(rank_rng)
        self.checkpoint = save_run_checkpoint(self.save_dir, payload, keep_last=self.tc.keep_last, best=best)
        log.info("saved %s%s", self.checkpoint, " (best)" if best else "")

    def _write_run_files(self) -> None:
        self.save_dir.mkdir(parents=True, exist_ok=True)
        text = yaml.safe_dump(to_dict(self.config), sort_keys=False, allow_unicode=True)
        (self.save_dir / "config.yaml").write_text(text, encoding="utf-8")

    def _log_train(self, window: _Window) -> None:
        progress = window.progress(self.step, 0, self.epoch + 1, self.schedule.lr)
        log.info(
            "step %d: loss %.3f, ppl %.2f, lr %g, %.0f tgt tok/s",
            self.step,
            progress.loss,
            progress.ppl,
            progress.lr,
            progress.tok_s,
        )
        record = {k: v for k, v in progress._asdict().items() if k != "total_steps"}
        self._metrics({"event": "train", **record, "steps": window.steps})

    def _metrics(self, record: dict[str, Any]) -> None:
        if self.is_main:
            with open(self.save_dir / "metrics.jsonl", "a", encoding="utf-8") as file:
                file.write(json.dumps({**record, "time": time.time()}) + "\n")


def _describe(group: Sequence[Batch]) -> str:
    """The size of an update's batches, for messages."""
    longest = max(b.tgt_out.size(1) for b in group)
    return (
        f"{len(group)} batch(es) holding {sum(b.n_sentences for b in group)} sentences and "
        f"{sum(b.n_tgt_tokens for b in group)} target tokens (longest target: {longest} tokens)"
    )
