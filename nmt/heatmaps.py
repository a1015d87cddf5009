"""Attention heatmaps: one figure per sentence pair and an ``index.html`` showing them with their hard alignments.

matplotlib is imported where a figure is drawn, so importing this module (as training does) stays cheap.
"""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from pathlib import Path

from nmt.align import ATTENTION_STEPS, SentenceAttention, format_links, labelled_attention, sentence_links
from nmt.config import choose
from nmt.data import Example
from nmt.errors import NMTError
from nmt.model import Seq2Seq
from nmt.tokenizer import Tokenizer

BOS_LABEL = "<s>"
EOS_LABEL = "</s>"
FORMATS = ("png", "svg")


def row_labels(sentence: SentenceAttention, *, attention_step: str = "predicting") -> list[str]:
    """The label of each decoding step's row: the target piece whose row it is under ``attention_step``.

    ``predicting`` labels a step with the piece it predicts (EOS last), ``input`` with the piece
    it reads (BOS first; Shift-Att, see :mod:`nmt.align`). The one special label marks the row
    no piece takes.
    """
    if choose(ATTENTION_STEPS, attention_step, "attention step"):
        return [BOS_LABEL, *sentence.tgt_pieces]
    return [*sentence.tgt_pieces, EOS_LABEL]


def plot_heatmap(
    sentence: SentenceAttention, path: str | Path, *, title: str | None = None, attention_step: str = "predicting"
) -> None:
    """Draw the piece attention: source pieces across (columns), decoding steps down (rows).

    Each row is labelled with the target piece that takes it under ``attention_step``
    (:func:`row_labels`). The figure grows with the sentence lengths so every label keeps
    its size; source labels are rotated. The format follows the file suffix (png or svg).
    """
    from matplotlib.figure import Figure  # slow to import: only where a figure is drawn

    weights = sentence.weights.float().numpy()
    rows, cols = weights.shape
    fig = Figure(figsize=(2.5 + 0.3 * cols, 1.5 + 0.3 * rows), layout="constrained")
    ax = fig.add_subplot()
    image = ax.imshow(weights, cmap="Greys", vmin=0.0, vmax=1.0, aspect="equal", interpolation="nearest")
    ax.set_xticks(range(cols), [*sentence.src_pieces, EOS_LABEL][:cols], rotation=90, fontsize=8)
    ax.set_yticks(range(rows), row_labels(sentence, attention_step=attention_step)[:rows], fontsize=8)
    ax.tick_params(top=True, labeltop=True, bottom=False, labelbottom=False)
    ax.xaxis.set_label_position("top")
    ax.set_xlabel("source")
    ax.set_ylabel(f"target ({attention_step} step)")
    if title:
        ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, shrink=min(1.0, 4.0 / max(rows, 1) + 0.5), label="attention weight")
    fig.savefig(path, dpi=100)


def write_heatmaps(
    out_dir: str | Path,
    sentences: Iterable[SentenceAttention],
    *,
    fmt: str = "png",
    target: str = "first",
    attention_step: str = "predicting",
) -> Path:
    """One heatmap per sentence pair (``00001.png``, ...) and an ``index.html`` showing them all.

    The index also lists each pair's hard alignment (target pieces merged by ``target``, their
    rows picked by ``attention_step``, see :func:`nmt.align.word_attention`).

    Returns:
        the path of ``index.html``.
    """
    if fmt not in FORMATS:
        raise NMTError(f"unknown heatmap format {fmt!r}; choose one of {', '.join(FORMATS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sections = []
    for number, sentence in enumerate(sentences, start=1):
        name = f"{number:05d}.{fmt}"
        plot_heatmap(sentence, out / name, title=f"sentence {number}", attention_step=attention_step)
        links = format_links(sentence_links(sentence, target=target, attention_step=attention_step))
        sections.append(
            f'<section id="s{number}"><h2>sentence {number}</h2>\n'
            f"<p>source: {html.escape(sentence.src_text)}</p>\n"
            f"<p>target: {html.escape(sentence.tgt_text)}</p>\n"
            f"<p>hard alignment (source-target words): <code>{html.escape(links)}</code></p>\n"
            f'<img src="{name}" alt="attention heatmap of sentence {number}"></section>\n'
        )
    index = out / "index.html"
    index.write_text(
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>Attention heatmaps</title>\n'
        "<style>img { max-width: 100%; } section { margin-bottom: 2em; }</style></head>\n"
        f"<body><h1>Attention heatmaps ({len(sections)} sentence pairs)</h1>\n"
        f"<p>each target piece takes the row of its <code>{html.escape(attention_step)}</code> step</p>\n"
        f"{''.join(sections)}</body></html>\n",
        encoding="utf-8",
    )
    return index


def write_validation_heatmaps(
    model: Seq2Seq,
    src_tokenizer: Tokenizer,
    tgt_tokenizer: Tokenizer,
    examples: Sequence[Example],
    out_dir: str | Path,
    *,
    fmt: str = "png",
) -> Path:
    """Force-decode a few validation pairs (ids, e.g. ``corpus.dev[i]``) and write their heatmaps.

    Meant for the training loop at each validation; the model's train/eval mode is kept.

    Returns:
        the path of ``index.html``.
    """
    texts = [(src_tokenizer.decode(ex.src), tgt_tokenizer.decode(ex.tgt)) for ex in examples]
    sentences = labelled_attention(model, (src_tokenizer, tgt_tokenizer), texts, examples, batch_size=32)
    return write_heatmaps(out_dir, sentences, fmt=fmt)
