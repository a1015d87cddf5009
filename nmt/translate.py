"""Translating raw lines with a model (or ensemble): tokenise, batch by length, search, restore the
order, detokenise — always exactly ``n_best`` outputs for every input line.

An empty or whitespace-only line gives empty outputs without reaching the model; a line longer
than ``decode.max_input_len`` tokens (or than a location scorer reads) is translated from its
first tokens with a warning; no output contains a line break of any kind.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import torch
from torch.nn.utils.rnn import pad_sequence

from nmt.config import DecodeConfig
from nmt.errors import NMTError
from nmt.search import Decodable, Hypothesis, decode, replace_unknowns, source_words
from nmt.tokenizer import EOS_ID, PAD_ID, Tokenizer

log = logging.getLogger(__name__)


class Translator(NamedTuple):
    """What translating raw lines needs: a model (or ensemble), both tokenizers and the settings."""

    model: Decodable
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer
    config: DecodeConfig
    dictionary: Mapping[str, str]
    device: torch.device


class Output(NamedTuple):
    """One translation of one input line."""

    text: str
    score: float


def translate_lines(
    lines: Sequence[str], translator: Translator, *, progress: Callable[[int], object] | None = None
) -> list[list[Output]]:
    """The ``n_best`` translations of every line, in input order (exactly ``n_best`` per line).

    Lines are sorted by token length (longest first) and cut into batches of at most
    ``batch_tokens`` padded source tokens; ``progress`` hears how many lines each batch finished
    (blank lines count at once).
    """
    config = translator.config
    limit = config.max_input_len
    if getattr(translator.model, "max_src_len", None) is not None:
        limit = min(limit, translator.model.max_src_len - 1)  # the EOS takes a position too
    sources = [_source_ids(number, line, translator.src_tokenizer, limit) for number, line in enumerate(lines, 1)]
    order = sorted((i for i, ids in enumerate(sources) if ids), key=lambda i: -len(sources[i]))
    results = [[Output("", 0.0)] * config.n_best] * len(lines)
    report = progress or (lambda n: None)
    report(len(lines) - len(order))
    for batch in _batches(order, sources, config.batch_tokens):
        src = pad_sequence([torch.tensor(sources[i]) for i in batch], batch_first=True, padding_value=PAD_ID)
        lengths = torch.tensor([len(sources[i]) for i in batch])
        try:
            hyps = decode(translator.model, src.to(translator.device), lengths.to(translator.device), config=config)
        except torch.OutOfMemoryError as err:
            raise NMTError(
                f"out of memory translating a batch of {len(batch)} lines of up to {len(sources[batch[0]])} tokens "
                f"(the longest is input line {batch[0] + 1}); lower --batch-tokens (now {config.batch_tokens}), "
                f"--beam (now {config.beam}) or --max-input-len (now {config.max_input_len})"
            ) from err
        for i, found in zip(batch, hyps, strict=True):
            outputs = [Output(_detokenize(h, lines[i], sources[i], translator), h.score) for h in found]
            results[i] = (outputs + [Output("", -math.inf)] * config.n_best)[: config.n_best]
        report(len(batch))
    return results


def _source_ids(number: int, line: str, tokenizer: Tokenizer, limit: int) -> list[int]:
    """The model's input for ``line``: its ids, cut to ``limit`` tokens, plus EOS; [] for a blank line."""
    ids = tokenizer.encode(line) if line.strip() else []
    if len(ids) > limit:
        log.warning("input line %d has %d tokens; translating its first %d", number, len(ids), limit)
        ids = ids[:limit]
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
