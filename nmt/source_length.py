"""The longest source a model reads, and what becomes of a longer one: one policy for every caller.

Only the location scorer has a limit: its ``W_a`` knows ``model.attention.max_src_len`` = S_max
positions, EOS included (:attr:`nmt.model.Seq2Seq.max_src_len`; None for every other scorer).

- Training and validation drop the pairs whose source is longer and log how many
  (:func:`readable_rows`): the model could not read them, and a shortened source no longer
  matches its target.
- Translation (``nmt-translate``, ``nmt-evaluate``) and alignment (``nmt-align``) read such a
  line's first S_max − 1 tokens (and EOS), with a warning naming the line (:func:`truncate`), so
  a user never loses an output line. ``decode.max_input_len`` shortens translated lines the same way.
- The model itself raises :class:`~nmt.config.ConfigError` on a longer source: a caller that
  skipped this policy.
"""

from __future__ import annotations

import logging

from torch import Tensor

from nmt.config import ConfigError
from nmt.data import ParallelIds

log = logging.getLogger(__name__)


def readable_rows(pairs: ParallelIds, max_src_len: int, split: str) -> Tensor:
    """The rows ``(kept,)`` of ``pairs`` whose source (EOS included) fits ``max_src_len`` positions.

    The others are dropped with a warning counting them; a split left empty is a ConfigError.
    """
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


def input_limit(max_src_len: int | None, max_input_len: int | None = None) -> int | None:
    """The source tokens (EOS excluded) an input line keeps: the model's limit and ``max_input_len``'s."""
    limits = [n for n in (max_input_len, None if max_src_len is None else max_src_len - 1) if n is not None]
    return min(limits, default=None)


def truncate(ids: list[int], limit: int | None, *, line: int, doing: str = "translating") -> list[int]:
    """``ids`` (EOS excluded) cut to ``limit`` tokens, with a warning naming input ``line`` if they were."""
    if limit is None or len(ids) <= limit:
        return ids
    log.warning("input line %d has %d tokens; %s its first %d", line, len(ids), doing, limit)
    return ids[:limit]
