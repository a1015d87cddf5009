"""sacreBLEU wrappers against hand-computed scores, validation BLEU, and nmt-evaluate --hyp/--ref."""

from __future__ import annotations

import math

import pytest
import torch

from nmt.cli import evaluate as evaluate_cli
from nmt.config import ConfigError, DecodeConfig
from nmt.data import Example, collate
from nmt.evaluate import corpus_scores, validation_bleu
from nmt.search import greedy_search
from nmt.tokenizer import SPECIALS, WordTokenizer


def test_bleu_by_hand() -> None:
    # every n-gram of "a b c d" is in "a b c d e": precisions 4/4 3/3 2/2 1/1, so BLEU = 100 · BP,
    # BP = exp(1 - ref_len / hyp_len) = exp(1 - 5/4)
    (bleu,) = corpus_scores(["a b c d"], [["a b c d e"]])
    assert bleu.metric == "bleu"
    assert bleu.score == pytest.approx(100 * math.exp(-0.25))
    assert bleu.signature.startswith("nrefs:1|case:mixed|eff:no|tok:13a|")
    assert bleu.text.startswith("BLEU = 77.88 ")


def test_perfect_scores_and_several_references() -> None:
    hyps = ["the cat sat on the mat .", "a dog ran in the park ."]
    refs = [["a cat sat on a mat .", "a dog ran in the park ."], ["the cat sat on the mat .", "a dog ran"]]
    bleu, chrf, ter = corpus_scores(hyps, refs, metrics=["bleu", "chrf", "ter"])
    # each line matches one of its references exactly
    assert (bleu.score, chrf.score, ter.score) == (pytest.approx(100), pytest.approx(100), pytest.approx(0))
    assert bleu.signature.startswith("nrefs:2|")
    assert "chrF2" in chrf.text and ter.text.startswith("TER = 0.00")


def test_tokenize_passes_through() -> None:
    # 13a splits "mat." into "mat ." and the hypothesis matches the reference. With none, "mat."
    # is one unmatched token of 6: n-gram precisions 5/6, 4/5, 3/4, 2/3 (product 1/3), and the
    # brevity penalty exp(1 - 7/6) for 6 tokens against 7.
    hyp, ref = ["the cat sat on the mat."], [["the cat sat on the mat ."]]
    assert corpus_scores(hyp, ref, tokenize="13a")[0].score == pytest.approx(100)
    none = corpus_scores(hyp, ref, tokenize="none")[0]
    assert "tok:none" in none.signature
    assert none.score == pytest.approx(100 * math.exp(-1 / 6) * (1 / 3) ** 0.25)


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="did you mean 'chrf'"):
        corpus_scores(["a"], [["a"]], metrics=["chrF"])
    with pytest.raises(ConfigError, match="did you mean '13a'"):
        corpus_scores(["a"], [["a"]], tokenize="13b")
    with pytest.raises(ValueError, match="reference stream 0 has 2 lines, the hypotheses 1"):
        corpus_scores(["a"], [["a", "b"]])


def test_validation_bleu_equals_scoring_each_greedy_translation(make_model) -> None:
    words = WordTokenizer(words=[*SPECIALS, "a", "b", "c", "d", "e", "f", "g"])  # 11 ids, like the model
    model = make_model(vocab=words.vocab_size)
    sources = [[4, 5, 6], [7], [8, 9, 10, 4], [5, 5]]
    references = ["a b", "c", "d e f", "g"]
    examples = [Example(src, [4]) for src in sources]
    # two batches, in an order other than the dataset's
    batches = [collate([examples[i] for i in index], index) for index in ([2, 0], [3, 1])]
    config = DecodeConfig(max_len=6, max_len_ratio=2.0)
    got = validation_bleu(model, batches, references, words, config=config)
    expected = []
    for src in sources:
        ((best,),) = greedy_search(model, torch.tensor([[*src, 3]]), torch.tensor([len(src) + 1]), config=config)
        expected.append(words.decode(best.tokens))
    assert got == corpus_scores(expected, [references])[0]
    with pytest.raises(ValueError, match="missed 2 of 4"):
        validation_bleu(model, batches[:1], references, words, config=config)


def test_cli_scores_hypotheses(tmp_path, capsys) -> None:
    hyp, ref, ref2 = tmp_path / "hyp", tmp_path / "ref", tmp_path / "ref2"
    hyp.write_text("a b c d\nx y\n", encoding="utf-8")
    ref.write_text("a b c d\nx y\n", encoding="utf-8")
    ref2.write_text("a b c d e\nx y z\n", encoding="utf-8")
    assert evaluate_cli.main(["--hyp", str(hyp), "--ref", str(ref), str(ref2), "--metrics", "bleu", "ter"]) == 0
    bleu, ter = capsys.readouterr().out.splitlines()
    assert bleu.startswith("BLEU = 100.00 ") and "\tnrefs:2|case:mixed|eff:no|tok:13a|" in bleu
    assert ter.startswith("TER = 0.00") and "\tnrefs:2|" in ter


def test_cli_line_count_mismatch(tmp_path, capsys) -> None:
    hyp, ref = tmp_path / "hyp", tmp_path / "ref"
    hyp.write_text("a\nb\nc\n", encoding="utf-8")
    ref.write_text("a\nb\n", encoding="utf-8")
    assert evaluate_cli.main(["--hyp", str(hyp), "--ref", str(ref)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    message = f"{hyp} has 3 lines but {ref} has 2; hypotheses and references must match line for line"
    assert err == f"nmt-evaluate: error: {message}\n"


def test_cli_needs_hyp_or_checkpoint(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        evaluate_cli.main(["--ref", str(tmp_path / "ref")])
    assert exit_info.value.code == 2
    assert "give either --hyp, or --checkpoint with --src" in capsys.readouterr().err
