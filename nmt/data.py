"""Parallel corpora: raw text -> token ids (cached on disk) -> filtered pairs -> bucketed batches.

A training run uses it like this::

    text = read_split(config.data, "train")                      # ParallelText of raw lines
    src_tok, tgt_tok = build_tokenizers(config.data, text.src, text.tgt, save_dir)  # nmt.tokenizer
    pairs = encode_corpus(text, src_tok, tgt_tok, cache_dir=cache_dir)
    pairs = filter_pairs(pairs, max_len=config.data.max_len, max_ratio=config.data.max_len_ratio)
    batcher = BucketBatcher(tgt_lengths=pairs.lengths()[1], batch_size=64, seed=1234)
    for batch in iterate_batches(pairs, batcher, epoch=0): ...

A split comes from plain-text files (``data.<split>``: a prefix read as ``PREFIX.<src_lang>`` and
``PREFIX.<tgt_lang>``, or two explicit files ``SRC_FILE,TGT_FILE``) or, when that is unset, from a
Hugging Face dataset with the WMT schema: a ``translation`` column of ``{lang: sentence}`` dicts
(``data.hf_dataset``: a hub name, or ``parquet:PATTERN`` / ``json:PATTERN`` for local files where
``{split}`` in the pattern stands for the split name).
"""

from __future__ import annotations

import array
import glob
import hashlib
import itertools
import logging
import os
import pickle
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch
from torch import Tensor
from torch.nn.utils.rnn import pad_sequence

from nmt.config import DataConfig
from nmt.errors import NMTError
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer

if TYPE_CHECKING:
    import datasets

logger = logging.getLogger(__name__)

SPLITS = ("train", "dev", "test")
HF_LOCAL_FORMATS = ("parquet", "json")
CACHE_VERSION = 2
ENCODE_CHUNK = 100_000  # sentences encoded per call; bounds the memory of Python int lists


class ParallelText(NamedTuple):
    """The raw sentence pairs of one split; ``origin`` names where they came from, for messages."""

    src: list[str]
    tgt: list[str]
    origin: str


# ---------------------------------------------------------------------------------------------
# Reading


def read_split(config: DataConfig, split: str, *, hf_cache_dir: str | Path | None = None) -> ParallelText:
    """The sentence pairs of ``split`` (train | dev | test) from text files or a Hugging Face dataset."""
    if split not in SPLITS:
        raise NMTError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    spec = getattr(config, split)
    if spec is not None:
        return read_text_pair(*text_files(config, spec, split), replace_invalid=config.replace_invalid)
    if config.hf_dataset is not None:
        return read_hf(config, split, cache_dir=hf_cache_dir)
    raise NMTError(
        f"no {split} data: set data.{split} (a prefix read as PREFIX.{config.src_lang} and "
        f"PREFIX.{config.tgt_lang}, or two files SRC_FILE,TGT_FILE) or data.hf_dataset"
    )


def text_files(config: DataConfig, spec: str, split: str) -> tuple[Path, Path]:
    """The (source, target) files named by ``data.<split>``."""
    if "," not in spec:
        return Path(f"{spec}.{config.src_lang}"), Path(f"{spec}.{config.tgt_lang}")
    files = [part.strip() for part in spec.split(",")]
    if len(files) != 2 or not all(files):
        raise NMTError(f"data.{split}={spec!r}: give a prefix or exactly two files, SRC_FILE,TGT_FILE")
    return Path(files[0]), Path(files[1])


def read_text_pair(src_path: Path, tgt_path: Path, *, replace_invalid: bool = False) -> ParallelText:
    """Line-aligned source and target files; their line counts must agree."""
    src = read_lines(src_path, replace_invalid=replace_invalid)
    tgt = read_lines(tgt_path, replace_invalid=replace_invalid)
    if not src:
        raise NMTError(f"{src_path}: empty corpus (no lines)")
    if len(src) != len(tgt):
        raise NMTError(
            f"{src_path} has {len(src)} lines but {tgt_path} has {len(tgt)}; "
            "the two sides of a corpus must have one line per sentence, line for line"
        )
    return ParallelText(src, tgt, f"{src_path} + {tgt_path}")


def read_lines(
    path: str | Path | None, *, replace_invalid: bool = False, remedy: str = "set data.replace_invalid=true"
) -> list[str]:
    """The lines of a UTF-8 text file, or of stdin when ``path`` is None (LF or CRLF endings; a
    final newline is optional; a leading byte-order mark is dropped).

    Lines are split at "\\n" only: ``str.splitlines`` would also split at U+2028, U+0085 and
    others, shifting every later line. Invalid UTF-8 is an error naming the line, the byte and
    ``remedy``, or with ``replace_invalid`` becomes U+FFFD (with one warning).
    """
    name = "<stdin>" if path is None else str(path)
    try:
        raw = sys.stdin.buffer.read() if path is None else Path(path).read_bytes()
    except FileNotFoundError as err:
        raise NMTError(f"{name}: no such file") from err
    except OSError as err:
        raise NMTError(f"{name}: cannot read ({err.strerror or err})") from err
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        line, column = raw.count(b"\n", 0, err.start) + 1, err.start - raw.rfind(b"\n", 0, err.start)
        where = f"{name}:{line}: invalid UTF-8 (byte 0x{raw[err.start]:02x} at column {column})"
        if not replace_invalid:
            raise NMTError(f"{where}; convert the file to UTF-8 (e.g. iconv -f latin1 -t utf-8) or {remedy}") from err
        logger.warning("%s and maybe further on: replaced by U+FFFD", where)
        text = raw.decode("utf-8", errors="replace")
    lines = text.removeprefix("\ufeff").split("\n")
    if lines[-1] == "":
        lines.pop()
    return [line.removesuffix("\r") for line in lines]


def read_hf(config: DataConfig, split: str, *, cache_dir: str | Path | None = None) -> ParallelText:
    """A split of a Hugging Face dataset with the WMT schema, from the hub or from local files."""
    import datasets  # imported here: slow to import, and only this source needs it

    name = getattr(config, f"hf_{split}_split")
    fmt, sep, pattern = config.hf_dataset.partition(":")
    cache = None if cache_dir is None else str(cache_dir)
    if sep and fmt in HF_LOCAL_FORMATS:
        files = _local_files(pattern, name)
        origin = f"{fmt} files {pattern.replace('{split}', name)}"
        try:
            table = datasets.load_dataset(fmt, data_files=files, split="train", cache_dir=cache)
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
            raise NMTError(f"{origin}: cannot read as {fmt}: {err}") from err
    else:
        origin = f"Hugging Face dataset {config.hf_dataset} ({config.hf_config}, split {name})"
        try:
            table = datasets.load_dataset(config.hf_dataset, config.hf_config, split=name, cache_dir=cache)
        except (OSError, ValueError, datasets.exceptions.DatasetsError) as err:
            raise NMTError(
                f"cannot load the {origin} from the hub: {err}. Without network access, save the dataset "
                "as parquet or JSON-lines files elsewhere and point at them with "
                "data.hf_dataset='parquet:DIR/{split}.parquet' (or 'json:DIR/{split}.jsonl'; {split} "
                "stands for the split name), or give plain-text files with data.train/dev/test"
            ) from err
    return _translation_pairs(table, config, origin)


def _local_files(pattern: str, split_name: str) -> list[str]:
    """The local files of one split: ``{split}`` in ``pattern`` replaced by the split name, globbed."""
    if "{split}" not in pattern:
        raise NMTError(
            f"data.hf_dataset pattern {pattern!r} has no {{split}}; write e.g. 'parquet:DIR/{{split}}.parquet' "
            "so that train, dev and test read their own files"
        )
    concrete = pattern.replace("{split}", split_name)
    files = sorted(glob.glob(concrete))
    if not files:
        raise NMTError(f"{concrete}: no such file (data.hf_dataset, split {split_name!r})")
    return files


def _translation_pairs(table: datasets.Dataset, config: DataConfig, origin: str) -> ParallelText:
    """The (src, tgt) sentences of a dataset whose ``translation`` column maps language codes to text."""
    if "translation" not in table.column_names:
        raise NMTError(
            f"{origin}: no 'translation' column (it has {', '.join(table.column_names)}); expected the WMT "
            f"schema, translation = {{'{config.src_lang}': ..., '{config.tgt_lang}': ...}}"
        )
    flat = table.flatten()
    sides = []
    for lang in (config.src_lang, config.tgt_lang):
        column = f"translation.{lang}"
        if column not in flat.column_names:
            found = [c.removeprefix("translation.") for c in flat.column_names if c.startswith("translation.")]
            raise NMTError(f"{origin}: no {lang!r} in the translation column (it has {', '.join(found)})")
        sides.append([text or "" for text in flat[column]])
    if not sides[0]:
        raise NMTError(f"{origin}: empty corpus (no rows)")
    return ParallelText(sides[0], sides[1], origin)


# ---------------------------------------------------------------------------------------------
# Token ids


@dataclass(frozen=True)
class Ragged:
    """Variable-length id sequences stored flat: sequence i is ``ids[start[i] : start[i] + length[i]]``.

    Attributes:
        ids: every sequence's ids, one after another ``(total,)`` int32.
        start: ``(n,)`` int64 offsets into ``ids``.
        length: ``(n,)`` int64.
    """

    ids: Tensor
    start: Tensor
    length: Tensor

    @classmethod
    def encode(cls, texts: Sequence[str], tokenizer: Tokenizer) -> Ragged:
        """Encode ``texts`` chunk by chunk into flat storage."""
        flat, lengths = array.array("i"), array.array("q")
        for first in range(0, len(texts), ENCODE_CHUNK):
            encoded = tokenizer.encode_many(texts[first : first + ENCODE_CHUNK])
            flat.extend(itertools.chain.from_iterable(encoded))
            lengths.extend(len(ids) for ids in encoded)
        length = torch.tensor(lengths, dtype=torch.int64)
        start = torch.cumsum(length, 0) - length
        return cls(torch.tensor(flat, dtype=torch.int32), start, length)

    def __len__(self) -> int:
        return len(self.length)

    def __getitem__(self, i: int) -> list[int]:
        first = int(self.start[i])
        return self.ids[first : first + int(self.length[i])].tolist()

    def select(self, rows: Tensor) -> Ragged:
        """The sequences at ``rows`` (the flat ids are shared, not copied)."""
        return Ragged(self.ids, self.start[rows], self.length[rows])

    def tensors(self) -> list[Tensor]:
        """``[ids, start, length]``: ``Ragged(*r.tensors())`` rebuilds it."""
        return [self.ids, self.start, self.length]


class Example(NamedTuple):
    """One sentence pair as tokenizer ids, without BOS/EOS."""

    src: list[int]
    tgt: list[int]


@dataclass(frozen=True)
class ParallelIds:
    """The token ids of a corpus's sentence pairs; ``pairs[i]`` is an :class:`Example`."""

    src: Ragged
    tgt: Ragged

    def __len__(self) -> int:
        return len(self.src)

    def __getitem__(self, i: int) -> Example:
        return Example(self.src[i], self.tgt[i])

    def lengths(self) -> tuple[Tensor, Tensor]:
        """Source and target lengths ``(n,)`` as the model sees them (EOS / BOS added)."""
        return self.src.length + 1, self.tgt.length + 1

    def select(self, rows: Tensor) -> ParallelIds:
        return ParallelIds(self.src.select(rows), self.tgt.select(rows))


def encode_corpus(
    text: ParallelText, src_tok: Tokenizer, tgt_tok: Tokenizer, *, cache_dir: str | Path | None
) -> ParallelIds:
    """The token ids of ``text``, read from ``cache_dir`` when this corpus and these tokenizers were seen before.

    The cache file is named by a hash of the sentences and of both tokenizers' states, so an
    edited corpus or a retrained tokenizer never reuses stale ids. ``cache_dir=None`` disables it.
    """
    path = None if cache_dir is None else Path(cache_dir) / f"ids-{_cache_key(text, src_tok, tgt_tok)}.pt"
    if path is not None and path.exists():
        cached = _load_cached(path)
        if cached is not None:
            logger.info("token-id cache hit for %s: %s", text.origin, path)
            return cached
    pairs = ParallelIds(Ragged.encode(text.src, src_tok), Ragged.encode(text.tgt, tgt_tok))
    logger.info("encoded %d sentence pairs of %s", len(pairs), text.origin)
    if path is not None:
        _save_cached(path, pairs)
    return pairs


def _cache_key(text: ParallelText, src_tok: Tokenizer, tgt_tok: Tokenizer) -> str:
    digest = hashlib.sha256(f"nmt token-id cache v{CACHE_VERSION}".encode())
    for side in (text.src, text.tgt):
        digest.update(f"\0{len(side)}\0".encode())
        for line in side:
            digest.update(line.encode("utf-8", "surrogatepass") + b"\n")
    for tokenizer in (src_tok, tgt_tok):
        digest.update(tokenizer.fingerprint().encode())
    return digest.hexdigest()[:32]


def _save_cached(path: Path, pairs: ParallelIds) -> None:
    """Write the cache atomically: a crash leaves either no file or a whole one. A failure only warns."""
    partial = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"src": pairs.src.tensors(), "tgt": pairs.tgt.tensors()}, partial)
        os.replace(partial, path)
    except OSError as err:
        logger.warning("cannot write the token-id cache %s (%s); the next run encodes again", path, err)


def _load_cached(path: Path) -> ParallelIds | None:
    """The cached ids, or None (with a warning) when the file cannot be read."""
    try:
        tensors = torch.load(path, weights_only=True)
        return ParallelIds(Ragged(*tensors["src"]), Ragged(*tensors["tgt"]))
    except (OSError, RuntimeError, EOFError, pickle.UnpicklingError, KeyError, TypeError) as err:
        logger.warning("ignoring the unreadable token-id cache %s (%s); encoding again", path, err)
        return None


def filter_pairs(pairs: ParallelIds, *, max_len: int | None, max_ratio: float | None) -> ParallelIds:
    """Drop pairs with an empty side, a side over ``max_len`` tokens, or a length ratio over ``max_ratio``.

    Lengths count tokenizer ids (without BOS/EOS); the ratio is longer side / shorter side.
    """
    src, tgt = pairs.src.length, pairs.tgt.length
    empty = (src == 0) | (tgt == 0)
    too_long = torch.maximum(src, tgt) > max_len if max_len is not None else torch.zeros_like(empty)
    ratio = torch.maximum(src, tgt) / torch.minimum(src, tgt).clamp(min=1)
    skewed = ratio > max_ratio if max_ratio is not None else torch.zeros_like(empty)
    keep = ~(empty | too_long | skewed)
    kept = int(keep.sum())
    dropped = [f"{int(empty.sum())} with an empty side"]  # each pair counted under the first rule it breaks
    if max_len is not None:
        dropped.append(f"{int((too_long & ~empty).sum())} longer than {max_len} tokens")
    if max_ratio is not None:
        dropped.append(f"{int((skewed & ~too_long & ~empty).sum())} with a length ratio over {max_ratio}")
    logger.info("kept %d of %d sentence pairs; dropped %s", kept, len(pairs), ", ".join(dropped))
    if kept == 0:
        raise NMTError(
            f"no sentence pair is left after filtering (data.max_len={max_len}, "
            f"data.max_len_ratio={max_ratio}); raise the limits or check the corpus"
        )
    return pairs.select(torch.nonzero(keep).squeeze(1))


# ---------------------------------------------------------------------------------------------
# Batches


class Batch(NamedTuple):
    """Padded tensors of a batch; ``index`` holds each pair's position in its dataset.

    Attributes:
        src: ``(batch, src_len)`` source ids + EOS, PAD-padded.
        src_lengths: ``(batch,)`` true source lengths (EOS included).
        tgt_in: ``(batch, tgt_len)`` BOS + target ids, PAD-padded (decoder input).
        tgt_out: ``(batch, tgt_len)`` target ids + EOS, PAD-padded (what the decoder predicts).
        index: ``(batch,)``.
    """

    src: Tensor
    src_lengths: Tensor
    tgt_in: Tensor
    tgt_out: Tensor
    index: Tensor

    @property
    def n_sentences(self) -> int:
        return self.src.size(0)

    @property
    def n_src_tokens(self) -> int:
        """Source tokens, EOS included, padding excluded."""
        return int(self.src_lengths.sum())

    @property
    def tgt_lengths(self) -> Tensor:
        """``(batch,)`` predicted target tokens of each pair (EOS included)."""
        return (self.tgt_out != PAD_ID).sum(1)

    @property
    def n_tgt_tokens(self) -> int:
        """Predicted target tokens (EOS included, padding excluded): the loss's token count."""
        return int(self.tgt_lengths.sum())

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in self))


def collate(examples: Sequence[Example], index: Sequence[int] | Tensor) -> Batch:
    """Pad ``examples`` into a :class:`Batch`: source + EOS, BOS + target, target + EOS."""
    src = [torch.tensor([*ex.src, EOS_ID]) for ex in examples]
    tgt_in = [torch.tensor([BOS_ID, *ex.tgt]) for ex in examples]
    tgt_out = [torch.tensor([*ex.tgt, EOS_ID]) for ex in examples]
    return Batch(
        src=pad_sequence(src, batch_first=True, padding_value=PAD_ID),
        src_lengths=torch.tensor([len(s) for s in src]),
        tgt_in=pad_sequence(tgt_in, batch_first=True, padding_value=PAD_ID),
        tgt_out=pad_sequence(tgt_out, batch_first=True, padding_value=PAD_ID),
        index=torch.as_tensor(index, dtype=torch.int64),
    )


class BucketBatcher:
    """Length-bucketed batches of pair indices, reshuffled every epoch from ``(seed, epoch)`` alone.

    Each epoch the pairs are shuffled and split into pools of ``pool_factor`` batches' worth of
    pairs (OpenNMT-py's ``pool_factor``; None: one pool of the whole corpus). Each pool is sorted
    by target length and cut into batches of ``batch_size`` pairs or, with ``max_tokens``, of at
    most that many padded target tokens (one pair at least). The batch order is shuffled.

    With ``balance_tokens`` a ``batch_size`` batch takes half its pairs from the short end of the
    sorted pool and half from the long end, so every batch holds about the same number of target
    tokens. The loss is summed over a batch's tokens and the gradient is clipped per batch, so
    batches of one length each give a long sentence's tokens less weight than a short one's (the
    gradient norm grows with the length, and long batches are clipped). Balanced batches weigh
    every token alike, as random batches do, with fewer decoder steps than random ones.
    ``max_tokens`` batches hold about equal tokens already and are cut in sorted order. README.md
    ("Design notes") has the measurements.

    Ties keep the random order, so pairs of equal target length meet in new batches every epoch
    (sorting by source length as well would fix each batch's pairs for good, which trains much
    worse). Smaller pools mix lengths (1: random batches, as JoeyNMT's). The decoder skips target
    padding (:func:`nmt.decoder.packed`), so mixed lengths cost extra steps, not wasted rows. With
    ``batch_size`` every epoch has the same number of batches; with ``max_tokens`` it can vary a
    little (:meth:`count`).

    Sharding: rank ``r`` of ``world_size`` gets every ``world_size``-th batch of the epoch. The
    largest batches are halved until their count divides by ``world_size``, so every rank gets the
    same number of batches and every pair lands in exactly one batch of one rank.

    Args:
        tgt_lengths: target lengths ``(n,)`` as the model sees them, from ``ParallelIds.lengths()``.
        batch_size: pairs per batch, when ``max_tokens`` is None.
        max_tokens: or the most padded target tokens per batch.
        pool_factor: batches per pool, or None for one pool of the whole corpus.
        balance_tokens: join short and long pairs in each ``batch_size`` batch.
        seed: with the epoch, fixes each epoch's batches.
        rank, world_size: this process's share of the batches in distributed training.
    """

    def __init__(
        self,
        *,
        tgt_lengths: Tensor,
        batch_size: int,
        max_tokens: int | None = None,
        pool_factor: int | None = None,
        balance_tokens: bool = True,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if not 0 <= rank < world_size:
            raise NMTError(f"rank {rank} is outside 0..{world_size - 1}")
        if batch_size < 1 or (max_tokens is not None and max_tokens < 1):
            raise NMTError(f"batch_size ({batch_size}) and max_tokens ({max_tokens}) must be positive")
        if pool_factor is not None and pool_factor < 1:
            raise NMTError(f"pool_factor ({pool_factor}) must be positive, or None to sort the whole corpus")
        self.batch_size, self.max_tokens = batch_size, max_tokens
        self.balance = balance_tokens and max_tokens is None
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self._tgt = tgt_lengths.long()
        n = len(self._tgt)
        per_batch = batch_size if max_tokens is None else -(-n // len(self._cut(self._tgt.sort().values)))
        self._pool = n if pool_factor is None else pool_factor * per_batch
        self._cached: tuple[int, list[Tensor]] = (-1, [])
        self._epoch(0)  # a corpus that cannot be shared among the ranks fails here, not in the first epoch

    def count(self, epoch: int) -> int:
        """Batches per rank in ``epoch``."""
        return len(self._epoch(epoch)) // self.world_size

    def batches(self, epoch: int, skip: int = 0) -> list[Tensor]:
        """This rank's batches of ``epoch`` (pair indices ``(batch,)``), less the first ``skip`` (resuming)."""
        return self._epoch(epoch)[self.rank :: self.world_size][skip:]

    def _epoch(self, epoch: int) -> list[Tensor]:
        """Every rank's batches of ``epoch``, in the order they are dealt out."""
        if self._cached[0] != epoch:
            gen = torch.Generator().manual_seed(_epoch_seed(self.seed, epoch))
            pools = torch.randperm(len(self._tgt), generator=gen).split(self._pool)
            # sorted within each pool, random order among equal lengths
            by_length = [pool[torch.sort(self._tgt[pool], stable=True).indices] for pool in pools]
            if self.balance:
                by_length = [_fold(pool, self.batch_size) for pool in by_length]
            sizes = [size for pool in by_length for size in self._cut(self._tgt[pool])]
            chunks = torch.cat(by_length).split(_divisible(sizes, self.world_size))
            self._cached = (epoch, [chunks[i] for i in torch.randperm(len(chunks), generator=gen).tolist()])
        return self._cached[1]

    def _cut(self, sorted_tgt: Tensor) -> list[int]:
        """Batch sizes along ascending target lengths: ``batch_size`` pairs, or up to ``max_tokens`` padded tokens."""
        if self.max_tokens is None:
            full, rest = divmod(len(sorted_tgt), self.batch_size)
            return [self.batch_size] * full + ([rest] if rest else [])
        sizes, count = [], 0
        for length in sorted_tgt.tolist():  # ascending, so this pair sets the batch's padded length
            if count and (count + 1) * length > self.max_tokens:
                sizes.append(count)
                count = 0
            count += 1
        return [*sizes, count]


def _fold(order: Tensor, batch_size: int) -> Tensor:
    """``order`` (pairs by ascending length) rearranged so that each full run of ``batch_size``
    holds the next shortest half-batch and the next longest; the middle pairs left over come last."""
    full, short = len(order) // batch_size, batch_size // 2
    long = batch_size - short
    head = order[: full * short].view(full, short)
    tail = order[len(order) - full * long :].flip(0).view(full, long)
    return torch.cat([torch.cat([head, tail], dim=1).flatten(), order[full * short : len(order) - full * long]])


def _divisible(sizes: list[int], world_size: int) -> list[int]:
    """Halve the largest batches until their number divides by ``world_size``."""
    sizes = list(sizes)
    while len(sizes) % world_size:
        i = max(range(len(sizes)), key=sizes.__getitem__)
        if sizes[i] < 2:
            raise NMTError(
                f"{sum(sizes)} sentence pairs cannot be shared evenly among {world_size} ranks without "
                "dropping or repeating some; use fewer ranks or batches of more than one pair"
            )
        sizes[i : i + 1] = [sizes[i] // 2, sizes[i] - sizes[i] // 2]
    return sizes


def _epoch_seed(seed: int, epoch: int) -> int:
    return int.from_bytes(hashlib.sha256(f"{seed}:{epoch}".encode()).digest()[:8], "little") >> 1


def iterate_batches(pairs: ParallelIds, batcher: BucketBatcher, *, epoch: int, skip: int = 0) -> Iterator[Batch]:
    """The :class:`Batch` es of ``epoch`` for this rank, after the first ``skip``."""
    for index in batcher.batches(epoch, skip):
        yield collate([pairs[i] for i in index.tolist()], index)
