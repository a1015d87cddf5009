"""Corpus scores with sacreBLEU (BLEU, chrF, TER), and the greedy validation BLEU of training.

Every score travels with its sacreBLEU signature (``nrefs:1|case:mixed|eff:no|tok:13a|...``),
so a reported number says how it was computed. ``tokenize`` applies to BLEU only: ``13a``
(sacreBLEU's default, for raw text), ``intl``, ``none`` (for pre-tokenized text, like the
multi-bleu figures of Luong et al. 2015), ``zh``, ``char``, and the ones that need extras or a
download (``ja-mecab``, ``ko-mecab``, ``flores101``, ...).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import NamedTuple

from sacrebleu.metrics import BLEU, CHRF, TER
from sacrebleu.metrics.base import Metric

from nmt.config import DecodeConfig, choose
from nmt.data import Batch
from nmt.errors import NMTError
from nmt.search import Decodable, decode
from nmt.tokenizer import Tokenizer


class Score(NamedTuple):
    """One corpus-level score.

    Attributes:
        metric: the registry name (``bleu``, ``chrf``, ``ter``).
        score: the number (higher is better, except TER).
        signature: sacreBLEU's signature of the settings.
        text: sacreBLEU's one-line summary, e.g. ``BLEU = 27.31 59.2/33.4/... (BP = 1.000 ...)``.
    """

    metric: str
    score: float
    signature: str
    text: str


METRICS: dict[str, Callable[[str], Metric]] = {
    "bleu": lambda tokenize: BLEU(tokenize=tokenize),
    "chrf": lambda tokenize: CHRF(),
    "ter": lambda tokenize: TER(),
}
"""Metric name -> a sacreBLEU metric, given the BLEU tokenizer name."""

TOKENIZERS: dict[str, str] = {name: name for name in BLEU.TOKENIZERS}


def corpus_scores(
    hypotheses: Sequence[str],
    references: Sequence[Sequence[str]],
    *,
    metrics: Sequence[str] = ("bleu",),
    tokenize: str = "13a",
) -> list[Score]:
    """Score ``hypotheses`` against one or more reference streams.

    Args:
        hypotheses: one line per segment.
        references: reference streams, each with one line per segment.
        metrics: names from :data:`METRICS`.
        tokenize: BLEU's tokenizer, a name from :data:`TOKENIZERS`.
    """
    choose(TOKENIZERS, tokenize, "tokenize")
    builders = [choose(METRICS, name, "metrics") for name in metrics]
    for i, stream in enumerate(references):
        if len(stream) != len(hypotheses):
            raise ValueError(f"reference stream {i} has {len(stream)} lines, the hypotheses {len(hypotheses)}")
    scores = []
    for name, build in zip(metrics, builders, strict=True):
        try:
            metric = build(tokenize)
        except (RuntimeError, OSError) as err:
            raise NMTError(f"tokenize {tokenize!r} is not available here: {' '.join(str(err).split())}") from err
        result = metric.corpus_score(list(hypotheses), [list(stream) for stream in references])
        scores.append(Score(name, float(result.score), str(metric.get_signature()), str(result)))
    return scores


def validation_bleu(
    model: Decodable,
    batches: Iterable[Batch],
    references: Sequence[str],
    tgt_tokenizer: Tokenizer,
    *,
    config: DecodeConfig | None = None,
) -> Score:
    """Greedy-decode every batch and score BLEU (13a) of the detokenised output.

    Args:
        model: in eval mode, on the batches' device.
        batches: cover every example of the split once; ``batch.index`` gives each
            row's position in ``references``.
        references: the raw target sentences of the split, in order.
        tgt_tokenizer: turns output ids back into text.
        config: length limits, penalties and precision (``beam`` and ``n_best`` are taken as 1).
    """
    config = dataclasses.replace(config or DecodeConfig(), beam=1, n_best=1)
    hypotheses: list[str | None] = [None] * len(references)
    for batch in batches:
        results = decode(model, batch.src, batch.src_lengths, config=config)  # greedy, at decode.precision
        for position, (best,) in zip(batch.index.tolist(), results, strict=True):
            hypotheses[position] = tgt_tokenizer.decode(best.tokens)
    missing = [i for i, text in enumerate(hypotheses) if text is None]
    if missing:
        raise ValueError(f"the validation batches missed {len(missing)} of {len(references)} examples")
    return corpus_scores(hypotheses, [references])[0]
