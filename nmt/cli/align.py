"""nmt-align: attention heatmaps, hard word alignments and AER against gold alignments."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

from nmt.align import (
    ATTENTION_STEPS,
    TARGET_MERGES,
    GoldAlignment,
    SentenceAttention,
    alignment_scores,
    forced_attention,
    read_alignments,
    sentence_links,
    translated_attention,
    write_alignments,
)
from nmt.attention import NO_ATTENTION
from nmt.cli.common import add_common_args, positive_int, read_lines, resolve_device, run
from nmt.errors import NMTError
from nmt.heatmaps import FORMATS, write_heatmaps
from nmt.precision import PRECISIONS, autocast_for
from nmt.translate import load_translator

log = logging.getLogger("nmt.align")

EXAMPLES = """\
examples:
  # force-decode the references, draw 20 heatmaps, score against the sample corpus's gold alignments
  nmt-align --checkpoint runs/quickstart/best.pt --src data/sample/test.en --tgt data/sample/test.de \\
      --gold data/sample/test.align --out runs/quickstart/align --limit 20

  # the attention of the model's own beam-search translations, as SVG
  nmt-align --checkpoint runs/quickstart/best.pt --src input.en --out align --format svg

  # Shift-Att (Chen et al. 2020): a target word takes the attention of the step that reads it,
  # for models whose attention rests on the source of the word just read
  nmt-align --checkpoint runs/quickstart/best.pt --src data/sample/test.en --tgt data/sample/test.de \\
      --gold data/sample/test.align --out runs/quickstart/align-input --attention-step input

outputs in --out: one heatmap per sentence pair (00001.png, ...), index.html showing them all,
alignments.txt (the hard word alignments, Pharaoh i-j, 0-based source-target), and with --gold
scores.json (the AER/precision/recall line also printed on stdout, with the --attention-step used).
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="nmt-align",
        description="Inspect a model's attention as word alignment (Luong et al. 2015, §5.4).",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--checkpoint", required=True, metavar="CKPT", help="the model checkpoint")
    parser.add_argument("--src", required=True, metavar="F", help="source sentences, one per line")
    parser.add_argument(
        "--tgt",
        metavar="F",
        help="reference translations to force-decode; without it the model's beam-search output is used",
    )
    parser.add_argument(
        "--out", required=True, metavar="DIR", help="directory for heatmaps, index.html and alignments.txt"
    )
    parser.add_argument("--format", choices=FORMATS, default="png", help="heatmap image format (default: png)")
    parser.add_argument("--limit", type=positive_int, metavar="N", help="only the first N sentence pairs")
    parser.add_argument(
        "--heatmaps",
        type=int,
        default=100,
        metavar="N",
        help="draw heatmaps of the first N pairs only (default 100; 0: none); alignments and scores cover all",
    )
    parser.add_argument(
        "--gold",
        metavar="F",
        help="gold word alignments, one line per pair (Pharaoh: i-j sure, i?j or ipj possible); needs --tgt",
    )
    parser.add_argument(
        "--target-merge",
        choices=TARGET_MERGES,
        default="first",
        help="a target word's attention: its first piece's (default) or the mean of its pieces'",
    )
    parser.add_argument(
        "--attention-step",
        choices=ATTENTION_STEPS,
        default="predicting",
        help="which decoding step's attention row a target piece takes: the step that predicts it (default), or "
        "the step that reads it as its input (Shift-Att, Chen et al. 2020), for models whose attention rests on "
        "the source of the word just read; the last piece then takes the EOS step's row",
    )
    parser.add_argument("--gold-one-based", action="store_true", help="the gold file counts words from 1")
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:1, ...")
    parser.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        help="as nmt-translate's (default: the checkpoint's decode.precision): fp32; bf16 autocast (fp16: CUDA "
        "only; on the CPU forced decoding keeps its steps in fp32, as training does); int8: weights quantized at "
        "load (CPU only)",
    )
    parser.add_argument(
        "--replace-invalid", action="store_true", help="replace invalid UTF-8 bytes in --src/--tgt instead of failing"
    )
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_align, build_parser(), argv)


def _align(args: argparse.Namespace) -> int:
    if args.gold and not args.tgt:
        raise NMTError("--gold needs --tgt: AER scores the attention of the force-decoded reference translations")
    sources = read_lines(args.src, replace_invalid=args.replace_invalid)[: args.limit]
    if not sources:
        raise NMTError(f"{args.src} is empty; there is nothing to align")
    references = read_lines(args.tgt, replace_invalid=args.replace_invalid)[: args.limit] if args.tgt else None
    if references is not None and len(references) != len(sources):
        raise NMTError(
            f"{args.src} has {len(sources)} lines but {args.tgt} has {len(references)}; "
            "give one reference per source line"
        )
    gold = read_alignments(args.gold, one_based=args.gold_one_based) if args.gold else None
    if gold is not None and len(gold) < len(sources):
        raise NMTError(f"{args.gold} has {len(gold)} lines but there are {len(sources)} sentence pairs to score")
    out = Path(args.out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise NMTError(f"{out}: cannot make the output directory ({err.strerror or err}); use another --out") from err
    device = resolve_device(args.device)
    decode = {"precision": args.precision} if args.precision else None
    translator = load_translator([args.checkpoint], device, decode=decode)  # int8: quantized there, once
    if not translator.model.decoder.attention.attends:
        raise NMTError(
            f"{args.checkpoint}: this model has no attention (model.attention.align: {NO_ATTENTION}), so it "
            "gives no alignments; align with a model trained with attention"
        )
    autocast = autocast_for(device, translator.config.precision, key="decode.precision", search=True)
    with autocast():
        if references is not None:
            tokenizers = translator.src_tokenizer, translator.tgt_tokenizer
            sentences = forced_attention(translator.model, *tokenizers, sources, references)
        else:
            sentences = translated_attention(translator, sources)
    if gold is not None:
        _check_gold(args.gold, gold, sentences, one_based=args.gold_one_based)
    drawn = sentences[: max(args.heatmaps, 0)]
    bar = tqdm(drawn, desc="heatmaps", unit="pair", file=sys.stderr, disable=args.quiet or None, leave=False)
    step = args.attention_step
    index = write_heatmaps(out, bar, fmt=args.format, target=args.target_merge, attention_step=step)
    predicted = [sentence_links(s, target=args.target_merge, attention_step=step) for s in sentences]
    write_alignments(out / "alignments.txt", predicted)
    log.info("wrote %d heatmaps, %s and %s (rows of the %s step)", len(drawn), index, out / "alignments.txt", step)
    if gold is not None:
        scores = alignment_scores(predicted, gold[: len(sentences)])._asdict()
        line = json.dumps({**scores, "attention_step": step})
        print(line)
        (out / "scores.json").write_text(line + "\n", encoding="utf-8")
    return 0


def _check_gold(
    path: str, gold: Sequence[GoldAlignment], sentences: Sequence[SentenceAttention], *, one_based: bool
) -> None:
    """Every gold link must join words of its pair; a link outside hints at 1-based indices."""
    for number, (ref, sentence) in enumerate(zip(gold, sentences, strict=False), start=1):
        n_src, n_tgt = max(sentence.src_words, default=-1) + 1, max(sentence.tgt_words, default=-1) + 1
        outside = sorted((i, j) for i, j in ref.possible if i >= n_src or j >= n_tgt)
        if outside:
            i, j = (k + one_based for k in outside[0])  # as written in the file
            hint = "" if one_based else "; if the file counts words from 1, add --gold-one-based"
            raise NMTError(
                f"{path}:{number}: link {i}-{j} lies outside the pair ({n_src} source words, "
                f"{n_tgt} target words){hint}"
            )


if __name__ == "__main__":
    sys.exit(main())
