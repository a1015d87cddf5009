"""The fp32 outputs that speed work must leave unchanged, for one small fixed-seed model per variant:
teacher-forcing log-probabilities and attention, and greedy and beam search results.

``python tests/golden.py`` rewrites ``tests/data/golden_fp32.json`` (``test_golden.py`` compares
against it). The file was written by the code before the speed work (commit fdab040); rewrite
it only with a change that is meant to alter the model's numbers, and say so in the commit.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import torch
from torch.nn.utils.rnn import pad_sequence

from nmt.config import AttentionConfig, DecodeConfig, ModelConfig
from nmt.model import Seq2Seq
from nmt.search import decode
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID

PATH = Path(__file__).with_name("data") / "golden_fp32.json"
VOCAB = 13
VARIANTS: dict[str, dict[str, Any]] = {
    "general-global-feed": {"score": "general", "align": "global"},
    "dot-local-m-bidirectional-reversed": {
        "score": "dot",
        "align": "local-m",
        "bidirectional": True,
        "reverse_source": True,
    },
    "concat-local-p": {"score": "concat", "align": "local-p"},
    "location-global": {"score": "location", "align": "global"},
    "general-global-no-feed": {"score": "general", "align": "global", "input_feed": False},
    "no-attention": {"align": "none"},
}


def build(fields: dict[str, Any]) -> Seq2Seq:
    """The variant's model, fp32, eval mode, from seed 0."""
    fields = dict(fields)
    attention_keys = {f.name for f in dataclasses.fields(AttentionConfig)}
    attention = AttentionConfig(
        **{"window": 2, "max_src_len": 12, **{k: fields.pop(k) for k in list(fields) if k in attention_keys}}
    )
    config = ModelConfig(embed=8, hidden=8, layers=2, dropout=0.0, init=0.3, attention=attention, **fields)
    torch.manual_seed(0)
    return Seq2Seq(config=config, src_vocab=VOCAB, tgt_vocab=VOCAB).eval()


def padded(rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
    """``(batch, len)`` ids padded with PAD, and the lengths."""
    tensors = [torch.tensor(row) for row in rows]
    return pad_sequence(tensors, batch_first=True, padding_value=PAD_ID), torch.tensor([len(r) for r in rows])


def outputs(fields: dict[str, Any]) -> dict[str, Any]:
    """Everything the golden file holds for one variant (plain lists and floats)."""
    model = build(fields)
    generator = torch.Generator().manual_seed(1)
    words = lambda n: torch.randint(4, VOCAB, (n,), generator=generator).tolist()  # noqa: E731
    src, src_lengths = padded([[*words(n), EOS_ID] for n in (6, 3, 9)])
    tgt_in, _ = padded([[BOS_ID, *words(n)] for n in (5, 7, 2)])
    result: dict[str, Any] = {}
    with torch.no_grad():
        logits, attention = model(src, src_lengths, tgt_in)
        result["log_probs"] = torch.log_softmax(logits, -1).tolist()
        result["attention"] = attention.tolist()
        for beam in (1, 3):
            config = DecodeConfig(beam=beam, n_best=beam, max_len_ratio=2.0, max_len=15)
            result[f"beam{beam}"] = [
                [{"tokens": h.tokens, "log_prob": h.log_prob} for h in hyps]
                for hyps in decode(model, src, src_lengths, config=config)
            ]
    return result


def main() -> None:
    PATH.parent.mkdir(exist_ok=True)
    golden = {name: outputs(fields) for name, fields in VARIANTS.items()}
    PATH.write_text(json.dumps(golden) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
