"""Translating raw lines with a model (or ensemble): tokenise, batch by length, search, restore the
order, detokenise — always exactly ``n_best`` outputs for every input line.

An empty or whitespace-only line gives empty outputs without reaching the model; a line longer
than ``decode.max_input_len`` tokens (or than a location scorer reads) is translated from its
first tokens with a warning (:mod:`nmt.source_length`); no output contains a line break of any kind.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from nmt.checkpoint import load_model
from nmt.config import DecodeConfig
from nmt.errors import NMTError
from nmt.precision import INT8, check_precision
from nmt.quantize import quantize_model
from nmt.search import Decodable, Ensemble, Hypothesis, check_config, decode, replace_unknowns, source_words
from nmt.shortlist import Shortlist, decode_over, load_shortlist
from nmt.source_length import input_limit, truncate
from nmt.tokenizer import EOS_ID, PAD_ID, Tokenizer
from nmt.workers import map_unordered

log = logging.getLogger(__name__)


class Translator(NamedTuple):
    """What translating raw lines needs: a model (or ensemble), both tokenizers and the settings; with a
    ``shortlist``, search computes only the output rows it lists for each batch."""

    model: Decodable
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    config: DecodeConfig
    dictionary: Mapping[str, str]
    device: torch.device
    shortlist: Shortlist | None = None


class Output(NamedTuple):
    """One translation of one input line."""

    text: str
    score: float


class Searched(NamedTuple):
    """What search found for one input line."""

    source: list[int]  # the ids the model read, EOS included; [] for a blank line
    hypotheses: list[Hypothesis]  # best first; [] for a blank line


def load_translator(
    checkpoints: Sequence[str | Path],
    device: torch.device,
    *,
    decode: Mapping[str, Any] | None = None,
    dictionary: Mapping[str, str] | None = None,
    shortlist: str | Path | None = None,
) -> Translator:
    """One checkpoint, or several as an ensemble, ready to translate on ``device``.

    With ``decode.precision`` int8 the models' weights are quantized here, once (:mod:`nmt.quantize`).

    Args:
        checkpoints: the model files; an ensemble's must share both tokenizers.
        device: where the models run.
        decode: ``decode.*`` settings that replace the first checkpoint's (e.g. ``{"beam": 10}``).
        dictionary: source word -> target word, for ``decode.replace_unk``.
        shortlist: a file of :mod:`nmt.shortlist` built with the checkpoints' tokenizers.

    Raises:
        NMTError: naming the file, for unreadable files, mismatched tokenizers, invalid
            ``decode`` settings (int8 off the CPU), ``replace_unk`` with a model that has no attention,
            or a shortlist built for other tokenizers.
    """
    loaded = [load_model(path, device) for path in checkpoints]
    first = loaded[0]
    for path, other in zip(checkpoints[1:], loaded[1:], strict=True):
        for side in ("src_tokenizer", "tgt_tokenizer"):
            if getattr(other, side).to_state() != getattr(first, side).to_state():
                raise NMTError(
                    f"{path} and {checkpoints[0]} have different {side.split('_')[0]} tokenizers; "
                    "an ensemble needs checkpoints trained with the same vocabularies"
                )
    config = dataclasses.replace(first.config.decode, **(decode or {}))
    check_config(config)
    check_precision(config.precision, device, key="decode.precision", search=True)
    for path, entry in zip(checkpoints, loaded, strict=True):
        if config.replace_unk and not entry.model.decoder.attention.attends:
            raise NMTError(
                f"{path}: --replace-unk copies the source word the attention points at, but this model has no "
                "attention (model.attention.align: none); translate without --replace-unk"
            )
    rows = None  # the shortlist
    if shortlist is not None:
        rows = load_shortlist(shortlist, src_tokenizer=first.src_tokenizer, tgt_tokenizer=first.tgt_tokenizer)
    models = [quantize_model(entry.model) if config.precision == INT8 else entry.model for entry in loaded]
    model = models[0] if len(models) == 1 else Ensemble(models=models)
    return Translator(model, first.src_tokenizer, first.tgt_tokenizer, config, dictionary or {}, device, rows)


def translate_lines(
    lines: Sequence[str], translator: Translator, *, progress: Callable[[int], object] | None = None
) -> list[list[Output]]:
    """The ``n_best`` translations of every line, in input order (exactly ``n_best`` per line).

    See :func:`search_lines`; a blank line gives empty outputs scored 0, a search that found
    fewer than ``n_best`` hypotheses fills up with empty ones scored -inf.
    """
    n_best = translator.config.n_best
    results = []
    for line, found in zip(lines, search_lines(lines, translator, progress=progress), strict=True):
        if not found.source:
            results.append([Output("", 0.0)] * n_best)
            continue
        outputs = [Output(_detokenize(h, line, found.source, translator), h.score) for h in found.hypotheses]
        results.append((outputs + [Output("", -math.inf)] * n_best)[:n_best])
    return results


def search_lines(
    lines: Sequence[str], translator: Translator, *, progress: Callable[[int], object] | None = None
) -> list[Searched]:
    """Search every line, in input order: the path every translation and alignment of raw text takes.

    Lines are sorted by token length (longest first) and cut into batches of at most
    ``batch_tokens`` padded source tokens, searched ``workers`` at a time (:mod:`nmt.workers`);
    ``progress`` hears how many lines each batch finished (blank lines count at once). With a
    shortlist, the mean number of output rows per batch is logged.
    """
    config = translator.config
    rows: list[int] = []  # output rows per batch, with a shortlist
    limit = input_limit(getattr(translator.model, "max_src_len", None), config.max_input_len)
    sources = [_source_ids(number, line, translator.src_tokenizer, limit) for number, line in enumerate(lines, 1)]
    order = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: -len(sources[i]))
    results = [Searched(ids, []) for ids in sources]
    report = progress or (lambda n: None)
    report(len(lines) - len(order))

    def search(batch: list[int]) -> list[list[Hypothesis]]:
        try:
            hyps, kept = search_batch([sources[i] for i in batch], translator)
        except torch.OutOfMemoryError as err:
            raise NMTError(
                f"out of memory translating a batch of {len(batch)} lines of up to {len(sources[batch[0]])} tokens "
                f"(the longest is input line {batch[0] + 1}); lower --batch-tokens (now {config.batch_tokens}), "
                f"--beam (now {config.beam}) or --max-input-len (now {config.max_input_len})"
            ) from err
        if kept is not None:
            rows.append(kept)
        return hyps

    batches = _batches(order, sources, config.batch_tokens)
    for number, hyps in map_unordered(search, batches, workers=config.workers):
        for i, found in zip(batches[number], hyps, strict=True):
            results[i] = Searched(sources[i], found)
        report(len(batches[number]))
    if rows:
        log.info(
            "shortlist: %.0f output rows per batch on average (%d batches, of %d target pieces)",
            sum(rows) / len(rows),
            len(rows),
            translator.tgt_tokenizer.vocab_size,
        )
    return results


def search_batch(sources: Sequence[list[int]], translator: Translator) -> tuple[list[list[Hypothesis]], int | None]:
    """Search one batch of source ids (EOS included) as one padded tensor on the translator's device.

    Returns:
        each source's hypotheses, and with a shortlist the number of output rows it kept for the batch
        (else None).
    """
    src = pad_sequence([torch.tensor(ids) for ids in sources], batch_first=True, padding_value=PAD_ID)
    src = src.to(translator.device)
    lengths = torch.tensor([len(ids) for ids in sources], device=translator.device)
    if translator.shortlist is None:
        return decode(translator.model, src, lengths, config=translator.config), None
    vocab = translator.shortlist.vocabulary(src)
    return decode_over(translator.model, vocab, src, lengths, config=translator.config), len(vocab)


def _source_ids(number: int, line: str, tokenizer: Tokenizer, limit: int | None) -> list[int]:
    """The model's input for ``line``: its ids, cut to ``limit`` tokens, plus EOS; [] for a blank line."""
    ids = truncate(tokenizer.encode(line), limit, line=number) if line.strip() else []
    return [*ids, EOS_ID] if ids else []


def _batches(order: list[int], sources: list[list[int]], batch_tokens: int) -> list[list[int]]:
    """Cut ``order`` (longest first) into batches whose padded size stays within ``batch_tokens``."""
    batches: list[list[int]] = []
    for i in order:
        if batches and (len(batches[-1]) + 1) * len(sources[batches[-1][0]]) <= batch_tokens:
            batches[-1].append(i)
        else:
            batches.append([i])
    return batches


def _detokenize(hypothesis: Hypothesis, line: str, source: list[int], translator: Translator) -> str:
    """The hypothesis as raw text on one line (with unknown words replaced if asked)."""
    tgt = translator.tgt_tokenizer
    if translator.config.replace_unk:
        src = translator.src_tokenizer
        pieces = [src.id_to_piece(i) for i in source[:-1]]
        piece_words = source_words(line, pieces, src.word_ids(pieces))
        text = replace_unknowns(hypothesis, piece_words, tgt, translator.dictionary)
    else:
        text = tgt.decode(hypothesis.tokens)
    return " ".join(text.splitlines())  # no line break of any kind (\r, U+2028, U+0085, ...) may split the line
