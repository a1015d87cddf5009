"""Attention as word alignment (Luong et al. 2015, §5.4): Pharaoh files, AER, hard links.

Heatmaps of the same attention are drawn by :mod:`nmt.heatmaps`.

A *link* ``(i, j)`` joins source word ``i`` and target word ``j`` (0-based whitespace words).
Pharaoh files hold one sentence pair per line, links separated by spaces: ``i-j`` is a
sure link, ``i?j`` (or ``ipj``) a possible one.

The model attends over subword *pieces* plus EOS. Forced decoding gives one attention row
per decoding step: step ``t`` reads target piece ``t - 1`` (BOS at step 0) and predicts
piece ``t`` (EOS at the last step). Which step's row stands for target piece ``i`` is the
*attention step* (``ATTENTION_STEPS``):

- ``predicting`` (default): step ``i``, the step that predicts the piece (Luong et al.
  2015, §5.4); the EOS-predicting row is left over;
- ``input``: step ``i + 1``, the step that reads the piece as its input, Shift-Att of
  Chen et al. (2020, "Accurate Word Alignment Induction from Neural Machine
  Translation", EMNLP). The last piece takes the EOS-predicting row and the
  BOS-reading row is left over. Some trained models attend at step ``t`` to the source of
  the piece they have just read rather than of the one they predict; their alignments
  come from these rows.

To compare with word-level gold alignments the chosen rows are merged into words, after
dropping the EOS column (EOS is no word):

- a source word's weight is the **sum** over its pieces: the attention mass that lands
  anywhere on the word;
- a target word's row is, by default, the row of its **first** piece (``TARGET_MERGES``;
  ``mean`` averages the rows of all its pieces instead). The decoder picks the source word
  to translate when it starts a target word; the later pieces of a word follow from the
  target side and their attention often rests on some uninformative position (README.md,
  "Design notes", compares the two rules).

A hard alignment then links every target word to the source word of highest weight,
the paper's one-to-one extraction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from nmt.config import choose
from nmt.data import Batch, Example, collate
from nmt.errors import NMTError
from nmt.model import Seq2Seq
from nmt.source_length import input_limit, truncate
from nmt.tokenizer import Tokenizer
from nmt.translate import Translator, search_lines

LINK = re.compile(r"(\d+)([-?p])(\d+)")

Link = tuple[int, int]  # (source word, target word)


class GoldAlignment(NamedTuple):
    """A gold alignment of one sentence pair; ``possible`` includes every sure link."""

    sure: frozenset[Link]
    possible: frozenset[Link]


class AlignmentScores(NamedTuple):
    """Corpus-level scores of predicted links A against gold sure S and possible P links.

    A ratio is None where its denominator is zero (e.g. recall without sure links).
    """

    aer: float | None  # 1 - (|A∩S| + |A∩P|) / (|A| + |S|)
    precision: float | None  # |A∩P| / |A|
    recall: float | None  # |A∩S| / |S|
    lagging: float | None  # share of A gold only for the target word before its own: attention a word behind
    sentences: int
    predicted: int  # |A|
    sure: int  # |S|
    possible: int  # |P|


class SentenceAttention(NamedTuple):
    """One sentence pair's attention at the piece level.

    Attributes:
        src_text, tgt_text: the sentences as text.
        src_pieces, tgt_pieces: their pieces, EOS excluded.
        src_words, tgt_words: the word index of every piece (see :func:`nmt.tokenizer.word_ids`).
        weights: ``(len(tgt_pieces) + 1, len(src_pieces) + 1)``: one row per target piece
            plus the EOS step, one column per source piece plus the source EOS.
    """

    src_text: str
    tgt_text: str
    src_pieces: list[str]
    tgt_pieces: list[str]
    src_words: list[int]
    tgt_words: list[int]
    weights: Tensor


def parse_links(line: str, *, one_based: bool = False, where: str = "") -> GoldAlignment:
    """Parse one Pharaoh line; ``where`` (``file:line``) prefixes the error message."""
    offset = 1 if one_based else 0
    sure, possible = set(), set()
    for token in line.split():
        match = LINK.fullmatch(token)
        link = (int(match[1]) - offset, int(match[3]) - offset) if match else (-1, -1)
        if min(link) < 0:
            base = "1-based" if one_based else "0-based"
            raise NMTError(
                f"{where}: bad alignment link {token!r}; expected i-j (sure) or i?j / ipj (possible) "
                f"with {base} word indices"
            )
        possible.add(link)
        if match[2] == "-":
            sure.add(link)
    return GoldAlignment(frozenset(sure), frozenset(possible))


def read_alignments(path: str | Path, *, one_based: bool = False) -> list[GoldAlignment]:
    """Read a Pharaoh file, one :class:`GoldAlignment` per line (an empty line has no links)."""
    try:
        data = Path(path).read_bytes()
    except OSError as err:
        raise NMTError(f"{path}: cannot read alignments ({err.strerror or err})") from err
    lines = data.split(b"\n")  # only at LF, as the text files it pairs with
    if lines[-1] == b"":
        lines.pop()
    return [
        parse_links(raw.decode("utf-8", errors="replace"), one_based=one_based, where=f"{path}:{number}")
        for number, raw in enumerate(lines, start=1)
    ]


def format_links(links: Iterable[Link]) -> str:
    """``i-j`` links in Pharaoh format, sorted by source then target word."""
    return " ".join(f"{i}-{j}" for i, j in sorted(links))


def write_alignments(path: str | Path, alignments: Iterable[Iterable[Link]]) -> None:
    """Write one line of sure links per sentence pair."""
    Path(path).write_text("".join(format_links(links) + "\n" for links in alignments), encoding="utf-8")


def alignment_scores(predicted: Sequence[Iterable[Link]], gold: Sequence[GoldAlignment]) -> AlignmentScores:
    """AER, precision and recall summed over a corpus (Och & Ney 2003), and the share of predicted
    links that lag: wrong for their target word j but gold for word j - 1. A model whose attention at
    the step predicting word j still reads the source of word j - 1 (the word just fed in) shows it
    there; ``nmt-align --attention-step input`` reads such a model's alignment one step later.

    Raises:
        ValueError: if ``predicted`` and ``gold`` hold different numbers of sentences.
    """
    if len(predicted) != len(gold):
        raise ValueError(f"{len(predicted)} predicted alignments but {len(gold)} gold ones")
    a = s = p = a_s = a_p = behind = 0
    for links, ref in zip(predicted, gold, strict=True):
        links = set(links)
        a, s, p = a + len(links), s + len(ref.sure), p + len(ref.possible)
        a_s, a_p = a_s + len(links & ref.sure), a_p + len(links & ref.possible)
        behind += sum((i, j - 1) in ref.possible for i, j in links - ref.possible)
    return AlignmentScores(
        aer=1.0 - (a_s + a_p) / (a + s) if a + s else None,
        precision=a_p / a if a else None,
        recall=a_s / s if s else None,
        lagging=behind / a if a else None,
        sentences=len(gold),
        predicted=a,
        sure=s,
        possible=p,
    )


def _first_piece(pieces: Tensor) -> Tensor:
    """Keep each word's first piece: ``(tgt_pieces, tgt_words)`` one-hot to row selectors."""
    return pieces * (pieces.cumsum(0) == 1)


def _mean_of_pieces(pieces: Tensor) -> Tensor:
    """Average each word's pieces: ``(tgt_pieces, tgt_words)`` one-hot to column-normalised weights."""
    return pieces / pieces.sum(0).clamp(min=1)


TARGET_MERGES: dict[str, Callable[[Tensor], Tensor]] = {"first": _first_piece, "mean": _mean_of_pieces}
"""How a target word's attention row comes from its pieces' rows (see the module docstring)."""

ATTENTION_STEPS: dict[str, int] = {"predicting": 0, "input": 1}
"""Target piece ``i`` takes the attention row of forced-decoding step ``i + ATTENTION_STEPS[name]``:
the step that predicts it, or the step that reads it (Shift-Att, Chen et al. 2020; see the module docstring)."""


def piece_rows(weights: Tensor, *, attention_step: str = "predicting") -> Tensor:
    """The attention row of every target piece, as ``attention_step`` (a name in :data:`ATTENTION_STEPS`) picks it.

    Args:
        weights: ``(tgt_pieces + 1, src_cols)``, one row per forced-decoding step, EOS step included.

    Returns:
        ``(tgt_pieces, src_cols)``: row ``i`` is step ``i``'s (predicting) or step ``i + 1``'s (input).
    """
    offset = choose(ATTENTION_STEPS, attention_step, "attention step")
    return weights[offset : offset + weights.size(0) - 1]  # one of the steps is left over


def merge_pieces(
    weights: Tensor, src_words: Sequence[int], tgt_words: Sequence[int], *, target: str = "first"
) -> Tensor:
    """Piece attention ``(tgt_pieces, src_pieces)`` to word attention ``(tgt_words, src_words)``.

    Sums over a source word's pieces; a target word's row is chosen by ``target``, a name
    in :data:`TARGET_MERGES`.
    """
    src = _one_hot(src_words, weights.dtype)  # (src_pieces, src_words)
    tgt = choose(TARGET_MERGES, target, "target merge")(_one_hot(tgt_words, weights.dtype))  # (tgt_pieces, tgt_words)
    return tgt.T @ weights @ src


def _one_hot(ids: Sequence[int], dtype: torch.dtype) -> Tensor:
    """``(len(ids), max(ids) + 1)``: row k is 1 in column ids[k]."""
    out = torch.zeros(len(ids), max(ids, default=-1) + 1, dtype=dtype)
    out[torch.arange(len(ids)), torch.tensor(list(ids), dtype=torch.long)] = 1
    return out


def word_attention(sentence: SentenceAttention, *, target: str = "first", attention_step: str = "predicting") -> Tensor:
    """The sentence's word attention ``(tgt_words, src_words)``, EOS column dropped.

    Args:
        sentence: its piece attention.
        target: how a target word's row comes from its pieces' rows (:data:`TARGET_MERGES`).
        attention_step: which decoding step's row a target piece takes (:data:`ATTENTION_STEPS`):
            ``predicting`` (the EOS step's row is dropped) or ``input``, Shift-Att (Chen et al.
            2020; the BOS-reading step's row is dropped).
    """
    rows = piece_rows(sentence.weights, attention_step=attention_step)[:, :-1]  # (tgt_pieces, src_pieces)
    return merge_pieces(rows, sentence.src_words, sentence.tgt_words, target=target)


def sentence_links(
    sentence: SentenceAttention, *, target: str = "first", attention_step: str = "predicting"
) -> set[Link]:
    """The hard word alignment of one sentence pair (see :func:`word_attention` and :func:`hard_links`)."""
    return hard_links(word_attention(sentence, target=target, attention_step=attention_step))


def hard_links(word_weights: Tensor) -> set[Link]:
    """Link every target word to its source word of highest weight (§5.4), ties to the first.

    Args:
        word_weights: ``(tgt_words, src_words)``.
    """
    if word_weights.size(1) == 0:
        return set()
    return {(int(i), j) for j, i in enumerate(word_weights.argmax(dim=1).tolist())}


@contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Run ``model`` in eval mode (no dropout) and restore its mode afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


def _batches(examples: Sequence[Example], batch_size: int, device: torch.device) -> Iterator[tuple[range, Batch]]:
    """Consecutive batches of ``examples`` and the positions they hold."""
    for start in range(0, len(examples), batch_size):
        rows = range(start, min(start + batch_size, len(examples)))
        yield rows, collate([examples[i] for i in rows], list(rows)).to(device)


@torch.no_grad()
def force_decode(model: Seq2Seq, examples: Sequence[Example], *, batch_size: int = 32) -> list[Tensor]:
    """Teacher-forced attention: feed each reference to the decoder and keep its weights.

    Args:
        model: run in eval mode (and put back in its mode afterwards).
        examples: source and reference ids, without BOS/EOS.
        batch_size: sentence pairs per forward pass.

    Returns:
        per pair, ``(len(ex.tgt) + 1, len(ex.src) + 1)`` float32 on the CPU: one row per
        reference token plus the EOS step, one column per source token plus EOS, no padding.
    """
    device = next(model.parameters()).device
    result = []
    with _evaluating(model):
        for rows, batch in _batches(examples, batch_size, device):
            _, attn = model.attend(batch.src, batch.src_lengths, batch.tgt_in)  # (batch, tgt_len, src_len)
            for b, i in enumerate(rows):
                src, tgt = examples[i]
                result.append(attn[b, : len(tgt) + 1, : len(src) + 1].float().cpu())
    return result


def labelled_attention(
    model: Seq2Seq,
    tokenizers: tuple[Tokenizer, Tokenizer],
    texts: Sequence[tuple[str, str]],
    examples: Sequence[Example],
    batch_size: int,
) -> list[SentenceAttention]:
    """Force-decode ``examples`` and label each pair's weights with its texts (``(source, target)``) and pieces."""
    src_tok, tgt_tok = tokenizers
    weights = force_decode(model, examples, batch_size=batch_size)
    result = []
    for (src_text, tgt_text), (src, tgt), w in zip(texts, examples, weights, strict=True):
        src_pieces = [src_tok.id_to_piece(i) for i in src]
        tgt_pieces = [tgt_tok.id_to_piece(i) for i in tgt]
        words = src_tok.word_ids(src_pieces), tgt_tok.word_ids(tgt_pieces)
        result.append(SentenceAttention(src_text, tgt_text, src_pieces, tgt_pieces, *words, w))
    return result


def forced_attention(
    model: Seq2Seq,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    sources: Sequence[str],
    references: Sequence[str],
    *,
    batch_size: int = 32,
) -> list[SentenceAttention]:
    """The attention of ``model`` force-decoding each reference translation (§5.4).

    A source longer than the model reads is cut, with a warning (:mod:`nmt.source_length`).
    """
    limit = input_limit(model.max_src_len)
    examples = [
        Example(truncate(src_tokenizer.encode(s), limit, line=number, doing="aligning"), tgt_tokenizer.encode(t))
        for number, (s, t) in enumerate(zip(sources, references, strict=True), start=1)
    ]
    texts = list(zip(sources, references, strict=True))
    return labelled_attention(model, (src_tokenizer, tgt_tokenizer), texts, examples, batch_size)


def translated_attention(
    translator: Translator, sources: Sequence[str], *, batch_size: int = 32
) -> list[SentenceAttention]:
    """The attention of ``translator``'s best translation of each source, with its search settings.

    The sources are translated as :func:`nmt.translate.search_lines` translates them (a blank
    line gets an empty translation, a source longer than the model reads is cut), then
    ``batch_size`` pairs at a time are force-decoded: those weights equal the search's own step
    by step and add the EOS step, so both attention steps (:data:`ATTENTION_STEPS`) apply: the
    last piece's ``input`` row is that EOS step's, even where the search stopped at its length
    limit without predicting EOS.

    Raises:
        TypeError: for an ensemble's translator (one model's attention aligns).
    """
    model, src_tokenizer, tgt_tokenizer = translator.model, translator.src_tokenizer, translator.tgt_tokenizer
    if not isinstance(model, Seq2Seq):
        raise TypeError(f"alignments come from one model's attention, not from {type(model).__name__}")
    with _evaluating(model):
        searched = search_lines(sources, translator)
    hypotheses = [found.hypotheses[0].tokens if found.hypotheses else [] for found in searched]
    texts = [(s, tgt_tokenizer.decode(h)) for s, h in zip(sources, hypotheses, strict=True)]
    examples = [Example(found.source[:-1], h) for found, h in zip(searched, hypotheses, strict=True)]
    return labelled_attention(model, (src_tokenizer, tgt_tokenizer), texts, examples, batch_size)
