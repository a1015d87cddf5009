"""A training run's corpus: read train and dev, train (or reuse) the tokenizers, encode, filter."""

from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

import torch

from nmt.config import Config
from nmt.data import ParallelIds, encode_corpus, filter_pairs, read_split
from nmt.source_length import readable_rows
from nmt.tokenizer import Tokenizer, build_tokenizers


class Corpus(NamedTuple):
    """The tokenizers and the token ids a run trains and validates on."""

    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    train: ParallelIds
    dev: ParallelIds
    dev_references: list[str]  # the raw target sentences of ``dev``, in order


def prepare_corpus(config: Config, tokenizers: tuple[Tokenizer, Tokenizer] | None, max_src_len: int | None) -> Corpus:
    """Read train and dev, train the tokenizers (unless given), encode (cached) and filter.

    ``max_src_len`` (the model's :attr:`~nmt.model.Seq2Seq.max_src_len`) drops the sources the
    model cannot read (:mod:`nmt.source_length`).
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
        train = train.select(readable_rows(train, max_src_len, "training"))
        dev_rows = readable_rows(dev, max_src_len, "dev")
    references = [dev_text.tgt[i] for i in dev_rows.tolist()]
    return Corpus(*tokenizers, train, dev.select(dev_rows), references)
