"""The checks a training run's config passes before any file is read, so a mistake fails at once."""

from __future__ import annotations

import torch

from nmt.config import Config, ConfigError, ModelConfig, TrainConfig, choose
from nmt.model import Seq2Seq
from nmt.optim import OPTIMIZERS, SCHEDULES
from nmt.precision import INT8, check_precision
from nmt.search import check_config
from nmt.tokenizer import PAD_ID, SPECIALS, check_tokenizer_config


def check_run_config(config: Config) -> None:
    """Every section a run uses: train, model, data (tokenizers), decode (validation decodes with it,
    and every checkpoint carries it)."""
    check_train_config(config.train)
    meta_model(config.model)
    check_tokenizer_config(config.data)
    check_config(config.decode)
    if config.decode.precision == INT8:
        raise ConfigError(
            "decode.precision=int8 quantizes a checkpoint loaded for search (nmt-translate --precision int8); "
            "a training run validates its own fp32 weights: use fp32, bf16 or fp16"
        )


def check_train_config(config: TrainConfig) -> None:
    """Reject ``train.*`` settings that cannot work."""
    checks = [
        ("lr", config.lr > 0),
        ("position_lr_scale", config.position_lr_scale > 0),
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
    check_precision(config.precision, None, key="train.precision", search=False)


def meta_model(config: ModelConfig) -> Seq2Seq:
    """The model of ``config`` on the meta device (no memory, no data): a bad ``model.*`` value fails at once,
    and its :attr:`~nmt.model.Seq2Seq.max_src_len` says which sources it reads before the vocabularies exist."""
    with torch.device("meta"):
        return Seq2Seq(config=config, src_vocab=len(SPECIALS) + 1, tgt_vocab=len(SPECIALS) + 1, pad_id=PAD_ID)
