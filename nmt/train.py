"""The training loop: a run set up in small steps, then updates, validation and checkpoints until a limit.

Read :class:`Trainer` top to bottom: ``__init__`` sets everything up (a fresh run, or one
restored from ``last.pt``), :meth:`Trainer.fit` runs updates until a limit, early stopping or
a stop request, validating and checkpointing every ``train.valid_every`` updates. The parts live
in their own modules: the objective (:mod:`nmt.objective`), optimisers and schedules
(:mod:`nmt.optim`), the corpus (:mod:`nmt.corpus`), what a checkpoint holds and how a run
resumes (:mod:`nmt.run_state`), and progress and metrics (:mod:`nmt.progress`).

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

import logging
import math
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import torch
import yaml
from torch import Tensor

from nmt.attention import check_window
from nmt.checkpoint import save_run_checkpoint
from nmt.checks import check_run_config, meta_model
from nmt.config import Config, to_dict
from nmt.corpus import Corpus, prepare_corpus
from nmt.data import Batch, BucketBatcher, collate, iterate_batches
from nmt.device import pick_device
from nmt.diagnostics import centre_spread, predicts_centre
from nmt.distributed import ONE_PROCESS, Ranks, moved_position
from nmt.errors import NMTError
from nmt.evaluate import validation_bleu
from nmt.heatmaps import write_validation_heatmaps
from nmt.model import Seq2Seq
from nmt.objective import StepResult, describe, dev_perplexity, train_step
from nmt.optim import OPTIMIZERS, SCHEDULES, parameter_groups
from nmt.precision import autocast_for
from nmt.progress import Metrics, Progress, Window
from nmt.run_state import (
    Best,
    DataPosition,
    RunState,
    check_fresh,
    load_run_state,
    rng_state,
    seed_everything,
    set_rng_state,
)
from nmt.tokenizer import PAD_ID, tokenizer_from_state

log = logging.getLogger(__name__)

STUCK_RANGE = 0.1
"""A local-p centre that moves over less of a sentence than this (p_t / (S - 1)) is stuck: runs whose
p_t had not learned showed 0.00-0.05 on the sample corpus, learning ones 0.7-0.98."""


class StopRequest(Protocol):
    """What asks training to stop: a :class:`threading.Event`, or a :mod:`multiprocessing` one shared
    with worker processes (``scripts/compare.py``)."""

    def set(self) -> None: ...

    def is_set(self) -> bool: ...


class TrainResult(NamedTuple):
    """How a run ended."""

    step: int  # updates done
    epoch: int  # epochs completed
    reason: str  # why training ended: max_steps | max_epochs | early stopping (...) | stop requested
    dev_ppl: float | None  # of the last validation
    best_dev_ppl: float | None
    checkpoint: Path | None  # the last checkpoint written


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
        stop: StopRequest | None = None,
        ranks: Ranks = ONE_PROCESS,
    ) -> None:
        check_run_config(config)
        self.config, self.tc = config, config.train
        self.stop = stop or threading.Event()
        self.ranks, self.is_main = ranks, ranks.is_main
        self.save_dir = make_run_dir(Path(self.tc.save_dir))
        self.metrics = Metrics(self.save_dir / "metrics.jsonl", enabled=self.is_main)
        self.device = self._set_up_device()
        self.autocast = autocast_for(self.device, self.tc.precision, key="train.precision")
        seed_everything(self.tc.seed)
        restored = load_run_state(self.save_dir, to_dict(config)) if resume else None
        if not resume:
            check_fresh(self.save_dir)

        self.corpus = self._prepare_corpus(restored)
        if self.is_main:
            check_window(config.model.attention, self.corpus.train.lengths()[0])
        self.batcher = self._train_batcher(ranks)
        self.dev_batches = self._dev_batches()

        self.model = self._build_model()
        self.optimizer = OPTIMIZERS[self.tc.optimizer](parameter_groups(self.model, self.tc), self.tc.lr)
        self.schedule = SCHEDULES[self.tc.schedule](optimizer=self.optimizer, config=self.tc)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=self.tc.precision == "fp16")

        self.step, self.position, self.best = 0, DataPosition(world_size=ranks.world_size), Best()
        self.last_dev_ppl: float | None = None
        self.checkpoint: Path | None = None
        if restored is not None:
            self._restore(restored)
        self.saved_step = self.validated_step = self.step
        self.network = ranks.wrap(self.model)  # what updates run through: the model, or its DDP wrapper
        if self.is_main:
            self._write_config()
        self._log_setup()

    @property
    def epoch(self) -> int:
        """The epochs completed: one whose last update is done counts, though the next is not begun."""
        done = self.position.batches_done  # 0: none of this epoch yet, so its batches need not be dealt out
        return self.position.epoch + (done > 0 and done >= self.batcher.count(self.position.epoch))

    @property
    def batches_done(self) -> int:
        """The batches of the current epoch this rank has done."""
        return self.position.batches_done

    # -- setup, in the order __init__ runs it ------------------------------------------------

    def _set_up_device(self) -> torch.device:
        """This rank's device (``train.device``), and torch's settings for it."""
        device = self.ranks.device(pick_device(self.tc.device))
        if self.tc.threads is not None and device.type == "cpu":
            torch.set_num_threads(self.tc.threads)
        if device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        return device

    def _prepare_corpus(self, restored: RunState | None) -> Corpus:
        """The corpus, with the same tokenizers on every rank; sources the model cannot read are dropped.

        Resuming, every rank has the checkpoint's tokenizers. A fresh run trains them on rank 0,
        which also fills the token-id cache, while the others wait; they then take rank 0's
        tokenizers and read the cache.
        """
        max_src_len = meta_model(self.config.model).max_src_len
        if restored is not None:
            tokenizers = tuple(tokenizer_from_state(restored.tokenizers[side]) for side in ("src", "tgt"))
            return prepare_corpus(self.config, tokenizers, max_src_len)
        corpus = prepare_corpus(self.config, None, max_src_len) if self.is_main else None
        states = self.ranks.broadcast(None if corpus is None else _tokenizer_states(corpus))
        if corpus is None:
            corpus = prepare_corpus(self.config, tuple(map(tokenizer_from_state, states.values())), max_src_len)
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

    def _dev_batches(self) -> list[Batch]:
        """The dev split in batches sized like the training batches, in one fixed order."""
        dev = self.corpus.dev
        batcher = BucketBatcher(
            tgt_lengths=dev.lengths()[1], batch_size=self.tc.batch_size, max_tokens=self.tc.max_tokens, seed=0
        )
        return list(iterate_batches(dev, batcher, epoch=0))

    def _build_model(self) -> Seq2Seq:
        return Seq2Seq(
            config=self.config.model,
            src_vocab=self.corpus.src_tokenizer.vocab_size,
            tgt_vocab=self.corpus.tgt_tokenizer.vocab_size,
            pad_id=PAD_ID,
        ).to(self.device)

    def _restore(self, state: RunState) -> None:
        """Continue where ``state`` stopped: parameters, optimiser, schedule, scaler, RNG and data position."""
        self.model.load_state_dict(state.model)
        self.optimizer.load_state_dict(state.optimizer)
        self.schedule.load_state_dict(state.scheduler)
        self.scaler.load_state_dict(state.scaler)
        set_rng_state(state.rng_for(self.ranks.rank, self.ranks.world_size))
        epoch = state.position.epoch
        self.position = DataPosition(epoch, self._batches_done(state.position), self.ranks.world_size)
        self.step, self.best = state.step, state.best
        log.info(
            "resumed from step %d (epoch %d, %d batches into it)", self.step, epoch + 1, self.position.batches_done
        )

    def _batches_done(self, saved: DataPosition) -> int:
        """The batches of ``saved.epoch`` this rank has done, when ``saved.world_size`` ranks did them."""
        world, saved_world = self.ranks.world_size, saved.world_size
        if saved_world != world:
            log.warning(
                "resuming a run of %d data-parallel rank(s) with %d: batches per update %d -> %d",
                saved_world,
                world,
                saved_world * self.tc.accum_steps,
                world * self.tc.accum_steps,
            )
        return moved_position(
            self.save_dir / "last.pt",
            done=saved.batches_done,
            saved_world=saved_world,
            saved_batches=self._train_batcher(Ranks(world_size=saved_world)).count(saved.epoch) * saved_world,
            world_size=world,
            batches=self.batcher.count(saved.epoch) * world,
        )

    def _write_config(self) -> None:
        text = yaml.safe_dump(to_dict(self.config), sort_keys=False, allow_unicode=True)
        (self.save_dir / "config.yaml").write_text(text, encoding="utf-8")

    def _log_setup(self) -> None:
        log.info(
            "model: %s parameters on %s (%s); %d training pairs in %d batches per epoch%s",
            f"{sum(p.numel() for p in self.model.parameters()):,}",
            self.device,
            self.tc.precision,
            len(self.corpus.train),
            self.batcher.count(self.position.epoch),
            f" (rank {self.ranks.rank} of {self.ranks.world_size})" if self.ranks.world_size > 1 else "",
        )

    # -- the loop --------------------------------------------------------------------------

    def fit(self, on_progress: Callable[[Progress], None] | None = None) -> TrainResult:
        """Train until ``max_steps``, ``max_epochs``, early stopping or a stop request; checkpoint and return."""
        self.model.train()
        reason = self._reason_to_stop() or self._train(on_progress or (lambda progress: None))
        if reason != "stop requested" and self.validated_step != self.step:
            self._save(best=self._validate())
        elif self.saved_step != self.step:
            self._save(best=False)
        log.info("training ended at step %d with %d epochs complete: %s", self.step, self.epoch, reason)
        best = self.best.dev_ppl if math.isfinite(self.best.dev_ppl) else None
        return TrainResult(self.step, self.epoch, reason, self.last_dev_ppl, best, self.checkpoint)

    def _train(self, on_progress: Callable[[Progress], None]) -> str:
        """Run updates until there is a reason to stop; returns it."""
        steps_per_epoch = math.ceil(self.batcher.count(self.position.epoch) / self.tc.accum_steps)
        total = min(steps_per_epoch * self.tc.max_epochs, self.tc.max_steps or math.inf)
        window, nonfinite = Window(), 0
        for rows in self._updates():
            group = [self._batch(index) for index in rows]
            result = self._update(group)
            if result is None:
                nonfinite = self._skip_nonfinite(nonfinite + 1, group)
            else:
                nonfinite = 0
                self.step += 1
                window.add(result)
                on_progress(window.progress(self.step, total, self.position.epoch + 1, self.schedule.lr))
                window = self._log_and_validate(window)
            reason = self._reason_to_stop()
            if reason is not None:
                return reason
        return "max_epochs"

    def _updates(self) -> Iterator[list[Tensor]]:
        """The pair indices of each remaining update's batches, epoch after epoch.

        The data position moves on as each update is handed out, and an epoch ends (the
        schedule hears of it) only when the next update is asked for, so a checkpoint taken
        between two updates resumes at exactly the next one.
        """
        position = self.position
        while position.epoch < self.tc.max_epochs:
            batches = self.batcher.batches(position.epoch)
            while position.batches_done < len(batches):
                rows = batches[position.batches_done : position.batches_done + self.tc.accum_steps]
                position.batches_done += len(rows)
                yield rows
            position.epoch += 1
            position.batches_done = 0
            self.schedule.epoch_end(position.epoch)

    def _batch(self, index: Tensor) -> Batch:
        """The training pairs at ``index`` ``(batch,)`` as a padded batch on the device."""
        return collate([self.corpus.train[i] for i in index.tolist()], index).to(self.device)

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
                f"out of memory at step {self.step + 1} on {describe(group)}; lower train.batch_size "
                "(or train.max_tokens) and raise train.accum_steps to keep the update size"
            ) from err

    def _skip_nonfinite(self, count: int, group: Sequence[Batch]) -> int:
        log.warning(
            "non-finite loss or gradient at step %d (%s): update skipped (%d in a row)",
            self.step + 1,
            describe(group),
            count,
        )
        if count >= self.tc.max_nonfinite:
            raise NMTError(
                f"{count} non-finite losses in a row at step {self.step + 1}; training diverged. "
                "Lower train.lr, check train.clip_norm, use train.precision=fp32, or resume from an earlier "
                f"checkpoint in {self.save_dir}"
            )
        return count

    def _log_and_validate(self, window: Window) -> Window:
        """Log every ``log_every`` updates, validate and checkpoint every ``valid_every``.

        Returns the window to go on with: a fresh one after either.
        """
        if self.step % self.tc.log_every == 0:
            record = window.record(self.step, self.position.epoch + 1, self.schedule.lr)
            log.info(
                "step %d: loss %.3f, ppl %.2f, lr %g, %.0f tgt tok/s",
                *(record[key] for key in ("step", "loss", "ppl", "lr", "tok_s")),
            )
            self.metrics.write(record)
            window = Window()
        if self.step % self.tc.valid_every == 0:
            self._save(best=self._validate())
            window = Window()  # throughput excludes validation and checkpointing
        return window

    def _reason_to_stop(self) -> str | None:
        """Why training must stop before the next update, if it must (the same answer on every rank)."""
        stop = self.ranks.any(self.stop.is_set())  # a signal to one rank stops all after the same update
        if self.tc.max_steps is not None and self.step >= self.tc.max_steps:
            return "max_steps"
        if self.tc.patience is not None and self.best.bad_validations >= self.tc.patience:
            return f"early stopping (no better dev perplexity in {self.tc.patience} validations)"
        if stop:
            return "stop requested"
        return None

    # -- validation ------------------------------------------------------------------------

    def _validate(self) -> bool:
        """Dev perplexity (and greedy BLEU and heatmaps if asked); returns whether it is the best so far.

        Each rank scores its share of the dev batches and the sums are all-reduced, so every rank
        takes the same decisions from the perplexity. BLEU and heatmaps, only reported, are rank 0's.
        """
        shard = self.dev_batches[self.ranks.rank :: self.ranks.world_size]
        ppl = dev_perplexity(self.model, shard, device=self.device, autocast=self.autocast, ranks=self.ranks)
        record: dict[str, Any] = {"event": "valid", "step": self.step, "epoch": self.position.epoch + 1, "dev_ppl": ppl}
        if self.tc.valid_bleu and self.is_main:
            record["dev_bleu"] = self._dev_bleu()
        if self.tc.valid_heatmaps and self.is_main:
            record["heatmaps"] = str(self._heatmaps())
        spread = None  # how far local-p's p_t moves: a stuck one shows here
        if self.is_main and predicts_centre(self.model):
            spread = centre_spread(self.model, (b.to(self.device) for b in self.dev_batches))
        if spread is not None:
            record["centre_range"], record["centre_std"] = spread.range, spread.std
        self.model.train()
        improved = ppl < self.best.dev_ppl
        if improved:
            self.best = Best(ppl, self.step)
        else:
            self.best.bad_validations += 1
        self.schedule.validated(ppl)
        self.last_dev_ppl, self.validated_step = ppl, self.step
        record["best"] = improved
        log.info(
            "step %d: dev perplexity %.3f%s%s%s",
            self.step,
            ppl,
            f", greedy BLEU {record['dev_bleu']:.2f}" if "dev_bleu" in record else "",
            f", p_t range {spread.range:.2f}" if spread is not None else "",
            " (best)" if improved else f" (best {self.best.dev_ppl:.3f} at step {self.best.step})",
        )
        if spread is not None and spread.range < STUCK_RANGE:
            log.warning(
                "step %d: local attention's centre p_t moves over only %.2f of a dev sentence on average: it is "
                "stuck (README, 'local-p'); a wider model.attention.window lets it recover",
                self.step,
                spread.range,
            )
        self.metrics.write(record)
        return improved

    def _dev_bleu(self) -> float:
        """Greedy BLEU of the dev split (``decode`` settings)."""
        with self.autocast():
            score = validation_bleu(
                self.model,
                (b.to(self.device) for b in self.dev_batches),
                self.corpus.dev_references,
                self.corpus.tgt_tokenizer,
                config=self.config.decode,
            )
        return score.score

    def _heatmaps(self) -> Path:
        """Attention heatmaps of the first ``valid_heatmaps`` dev pairs; returns their ``index.html``."""
        dev = self.corpus.dev
        examples = [dev[i] for i in range(min(self.tc.valid_heatmaps, len(dev)))]
        out = self.save_dir / "heatmaps" / f"step_{self.step:08d}"
        return write_validation_heatmaps(
            self.model, self.corpus.src_tokenizer, self.corpus.tgt_tokenizer, examples, out
        )

    # -- checkpoints -----------------------------------------------------------------------

    def _save(self, *, best: bool) -> None:
        """Checkpoint the run (rank 0 writes; every rank gives its RNG state)."""
        self.saved_step = self.step
        rank_rng = self.ranks.gather(rng_state())
        if not self.is_main:
            return
        payload = self._run_state(rank_rng).to_payload()
        self.checkpoint = save_run_checkpoint(self.save_dir, payload, keep_last=self.tc.keep_last, best=best)
        log.info("saved %s%s", self.checkpoint, " (best)" if best else "")

    def _run_state(self, rank_rng: list[dict[str, Any]]) -> RunState:
        return RunState(
            config=to_dict(self.config),
            model=self.model.state_dict(),
            tokenizers=_tokenizer_states(self.corpus),
            optimizer=self.optimizer.state_dict(),
            scheduler=self.schedule.state_dict(),
            scaler=self.scaler.state_dict(),
            rank_rng=rank_rng,
            position=self.position,
            step=self.step,
            best=self.best,
        )


def make_run_dir(save_dir: Path) -> Path:
    """Create ``train.save_dir`` (a file there, or a path that cannot be created, is a user error)."""
    try:
        save_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NMTError(f"{save_dir}: cannot use as train.save_dir ({err.strerror or err}); choose another") from err
    return save_dir


def _tokenizer_states(corpus: Corpus) -> dict[str, Any]:
    return {"src": corpus.src_tokenizer.to_state(), "tgt": corpus.tgt_tokenizer.to_state()}
