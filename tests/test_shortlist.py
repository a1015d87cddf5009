"""Vocabulary shortlists: IBM Model 1 finds a corpus's word translations; a whole-vocabulary shortlist
searches exactly as none, a restricted one as a model whose other rows can never win; the file is
refused for other tokenizers, and every CLI mistake is one line."""

from __future__ import annotations

import copy
import random
from collections import Counter
from pathlib import Path

import pytest
import torch
from test_cli_translate import WORDS, make_checkpoint, translate

from nmt import shortlist as shortlists
from nmt.cli import evaluate as evaluate_cli
from nmt.cli import shortlist as shortlist_cli
from nmt.config import DecodeConfig
from nmt.data import ParallelIds, Ragged
from nmt.errors import NMTError
from nmt.quantize import quantize_model
from nmt.search import Ensemble, decode
from nmt.shortlist import Shortlist, build_shortlist, decode_over, load_shortlist, save_shortlist
from nmt.tokenizer import BOS_ID, PAD_ID, SPECIALS, WordTokenizer

pytestmark = pytest.mark.usefixtures("one_thread")

SRC_WORDS = ["a", "b", "c", "d", "e", "f"]
TGT_WORDS = ["u", "v", "w", "x", "y", "z"]
TRANSLATION = dict(zip(SRC_WORDS, ["x", "z", "u", "y", "w", "v"], strict=True))


def word_corpus(pairs: int = 300, seed: int = 0) -> tuple[ParallelIds, WordTokenizer, WordTokenizer]:
    """Sentences of 1-5 distinct source words, each translated word by word (:data:`TRANSLATION`) and shuffled."""
    rng = random.Random(seed)
    src_tok, tgt_tok = WordTokenizer(words=[*SPECIALS, *SRC_WORDS]), WordTokenizer(words=[*SPECIALS, *TGT_WORDS])
    sources, targets = [], []
    for _ in range(pairs):
        words = rng.sample(SRC_WORDS, rng.randint(1, 5))
        translated = [TRANSLATION[w] for w in words]
        rng.shuffle(translated)
        sources.append(" ".join(words))
        targets.append(" ".join(translated))
    return ParallelIds(Ragged.encode(sources, src_tok), Ragged.encode(targets, tgt_tok)), src_tok, tgt_tok


def test_ibm1_finds_the_translation_of_every_word() -> None:
    pairs, src_tok, tgt_tok = word_corpus()
    shortlist = build_shortlist(pairs, src_tok, tgt_tok, k=1, frequent=2, iterations=5)
    for word, translation in TRANSLATION.items():
        assert shortlist.candidates[src_tok.encode(word)[0], 0] == tgt_tok.encode(translation)[0]
    assert (shortlist.candidates[: len(SPECIALS)] == -1).all()  # specials never occur in a source


def test_ibm1_gives_a_distribution_per_source_piece_whatever_the_chunks(monkeypatch) -> None:
    pairs, src_tok, tgt_tok = word_corpus()
    src, tgt, prob = shortlists.ibm1(pairs, src_vocab=src_tok.vocab_size, tgt_vocab=tgt_tok.vocab_size, iterations=3)
    sums = torch.zeros(src_tok.vocab_size + 1, dtype=prob.dtype).index_add_(0, src, prob)
    torch.testing.assert_close(sums[src.unique()], torch.ones(len(src.unique()), dtype=prob.dtype))
    monkeypatch.setattr(shortlists, "LINKS_PER_CHUNK", 7)  # a chunk a sentence pair or two
    assert len(shortlists._chunks(pairs)) > 100
    again = shortlists.ibm1(pairs, src_vocab=src_tok.vocab_size, tgt_vocab=tgt_tok.vocab_size, iterations=3)
    assert torch.equal(again[0], src) and torch.equal(again[1], tgt)
    torch.testing.assert_close(again[2], prob)


def test_frequent_pieces_are_counted_over_the_corpus() -> None:
    pairs, src_tok, tgt_tok = word_corpus()
    shortlist = build_shortlist(pairs, src_tok, tgt_tok, k=2, frequent=3, iterations=1)
    counts = Counter(pairs.tgt.ids.tolist())
    assert shortlist.frequent.tolist() == [i for i, _ in counts.most_common(3)]
    assert len(build_shortlist(pairs, src_tok, tgt_tok, k=2, frequent=50, iterations=1).frequent) == len(TGT_WORDS)


def test_a_batchs_vocabulary_by_hand() -> None:
    candidates = torch.tensor([[-1, -1], [-1, -1], [-1, -1], [-1, -1], [9, 5], [7, -1], [12, 4]])
    shortlist = Shortlist(candidates, torch.tensor([11, 4]), "s", "t")
    src = torch.tensor([[5, 4, 3], [4, 3, PAD_ID]])  # source ids 3 (EOS), 4, 5 and padding
    assert shortlist.vocabulary(src).tolist() == [0, 1, 2, 3, 4, 5, 7, 9, 11]


def sources() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    lengths = torch.tensor([7, 6, 6, 4, 2, 1])
    src = torch.randint(4, 30, (6, 7)).masked_fill(torch.arange(7) >= lengths.unsqueeze(1), PAD_ID)
    return src, lengths


def model_of(make_model, seed: int, **fields: object):
    torch.manual_seed(seed)
    return make_model(vocab=30, init=1.0, **fields)


def hypotheses(found) -> list[list[tuple]]:
    return [[(h.tokens, h.score, h.log_prob, h.attention.tolist()) for h in hyps] for hyps in found]


@pytest.mark.parametrize("beam", [1, 3])
@pytest.mark.parametrize("kind", ["model", "ensemble"])
def test_a_whole_vocabulary_shortlist_searches_exactly_as_none(make_model, beam: int, kind: str) -> None:
    model = model_of(make_model, 0)
    if kind == "ensemble":
        model = Ensemble(models=[model, model_of(make_model, 1, score="dot")])
    config = DecodeConfig(beam=beam, n_best=beam, max_len=9)
    src, lengths = sources()
    want = decode(model, src, lengths, config=config)
    assert hypotheses(decode_over(model, torch.arange(30), src, lengths, config=config)) == hypotheses(want)


@pytest.mark.parametrize("beam", [1, 3])
def test_an_int8_whole_vocabulary_shortlist_searches_as_none_up_to_float_rounding(make_model, beam: int) -> None:
    """int8's shortlisted rows apply each row's scale after the product, the whole layer's kernel inside it."""
    model = quantize_model(copy.deepcopy(model_of(make_model, 0)).float())
    config = DecodeConfig(beam=beam, n_best=beam, max_len=9, precision="int8")
    src, lengths = sources()
    want = decode(model, src, lengths, config=config)
    got = decode_over(model, torch.arange(30), src, lengths, config=config)
    for got_hyps, want_hyps in zip(got, want, strict=True):
        assert [h.tokens for h in got_hyps] == [h.tokens for h in want_hyps]
        for g, w in zip(got_hyps, want_hyps, strict=True):
            assert (g.score, g.log_prob) == pytest.approx((w.score, w.log_prob), rel=1e-5)
            torch.testing.assert_close(g.attention, w.attention, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("beam", [1, 3])
def test_a_restricted_search_is_the_search_of_a_model_without_the_other_rows(make_model, beam: int) -> None:
    """Rows outside the shortlist given a bias of -inf can never win: the full search of that model
    finds the shortlisted hypotheses with the same scores (normalised over the rows alike)."""
    model = model_of(make_model, 2)
    vocab = torch.tensor([0, 1, 2, 3, 6, 9, 17, 21, 28])
    config = DecodeConfig(beam=beam, n_best=beam, max_len=9)
    src, lengths = sources()
    got = decode_over(model, vocab, src, lengths, config=config)
    outside = torch.ones(30, dtype=torch.bool).index_fill_(0, vocab, False)
    with torch.no_grad():
        model.generator.bias.masked_fill_(outside, float("-inf"))
    want = decode(model, src, lengths, config=config)
    allowed = set(vocab.tolist()) - {PAD_ID, BOS_ID}
    for got_hyps, want_hyps in zip(got, want, strict=True):
        assert [h.tokens for h in got_hyps] == [h.tokens for h in want_hyps]
        assert [h.score for h in got_hyps] == pytest.approx([h.score for h in want_hyps], abs=1e-9)
        assert all(set(h.tokens) <= allowed for h in got_hyps)


def test_the_file_keeps_the_shortlist_and_refuses_other_tokenizers(tmp_path: Path) -> None:
    pairs, src_tok, tgt_tok = word_corpus(pairs=30)
    shortlist = build_shortlist(pairs, src_tok, tgt_tok, k=2, frequent=2, iterations=2)
    path = tmp_path / "shortlist.pt"
    save_shortlist(path, shortlist, about={"k": 2})
    loaded = load_shortlist(path, src_tokenizer=src_tok, tgt_tokenizer=tgt_tok)
    assert torch.equal(loaded.candidates, shortlist.candidates) and torch.equal(loaded.frequent, shortlist.frequent)
    assert loaded[2:] == shortlist[2:]  # the fingerprints
    with pytest.raises(NMTError, match="built for another target tokenizer"):
        load_shortlist(path, src_tokenizer=src_tok, tgt_tokenizer=WordTokenizer(words=[*SPECIALS, *TGT_WORDS[:-1]]))
    with pytest.raises(NMTError, match="built for another source tokenizer"):
        load_shortlist(path, src_tokenizer=tgt_tok, tgt_tokenizer=tgt_tok)
    (tmp_path / "text.pt").write_text("not a shortlist", encoding="utf-8")
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    for name, message in [("missing.pt", "no such shortlist"), ("text.pt", "not a readable"), ("other.pt", "not a")]:
        with pytest.raises(NMTError, match=message):
            load_shortlist(tmp_path / name, src_tokenizer=src_tok, tgt_tokenizer=tgt_tok)


@pytest.fixture
def run(tmp_path: Path) -> tuple[str, str]:
    """A checkpoint of the word language and a training corpus for it: (checkpoint, corpus prefix)."""
    checkpoint = make_checkpoint(tmp_path / "model.pt", WordTokenizer(words=[*SPECIALS, *WORDS]))
    rng = random.Random(0)
    lines = [" ".join(rng.sample(WORDS, rng.randint(2, 6))) for _ in range(40)]
    for lang, text in (("en", lines), ("de", [" ".join(reversed(line.split())) for line in lines])):
        (tmp_path / f"train.{lang}").write_text("\n".join(text) + "\n", encoding="utf-8")
    return str(checkpoint), str(tmp_path / "train")


def test_nmt_shortlist_then_translate_and_evaluate_with_it(run, tmp_path, capsys, monkeypatch) -> None:
    checkpoint, corpus = run
    assert shortlist_cli.main(["--checkpoint", checkpoint, "--train", corpus, "--k", "2", "--frequent", "1"]) == 0
    path = tmp_path / "shortlist.pt"  # beside the checkpoint
    tokenizer = WordTokenizer(words=[*SPECIALS, *WORDS])
    shortlist = load_shortlist(path, src_tokenizer=tokenizer, tgt_tokenizer=tokenizer)
    assert shortlist.candidates.shape == (tokenizer.vocab_size, 2) and len(shortlist.frequent) == 1
    lines = ["the cat sat", "", "a dog ran in the park"]
    for precision in ("fp32", "int8"):
        argv = ["--checkpoint", checkpoint, "--shortlist", str(path), "--precision", precision, "--min-len-ratio", "1"]
        status, out, err = translate(argv, "\n".join(lines).encode(), capsys, monkeypatch)
        assert status == 0 and "output rows per batch on average" in err
        for line, output in zip(lines, out.split("\n"), strict=False):
            vocab = shortlist.vocabulary(torch.tensor([tokenizer.encode(line)], dtype=torch.long))
            assert set(output.split()) <= {tokenizer.id_to_piece(i) for i in vocab.tolist()}
    (tmp_path / "test.en").write_text("the cat sat\n", encoding="utf-8")
    (tmp_path / "test.de").write_text("sat cat the\n", encoding="utf-8")
    argv = ["--checkpoint", checkpoint, "--src", str(tmp_path / "test.en"), "--ref", str(tmp_path / "test.de")]
    assert evaluate_cli.main([*argv, "--shortlist", str(path)]) == 0
    assert capsys.readouterr().out.startswith("BLEU")


def test_user_errors_are_one_line(run, tmp_path, capsys, monkeypatch) -> None:
    checkpoint, corpus = run
    assert shortlist_cli.main(["--checkpoint", checkpoint]) == 1  # the checkpoint's config names no corpus
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "pass --train where the training corpus is now" in err
    with pytest.raises(SystemExit, match="2"):  # argparse's usage error
        shortlist_cli.main(["--checkpoint", checkpoint, "--train", corpus, "--k", "0"])
    assert "must be at least 1" in capsys.readouterr().err
    other = make_checkpoint(tmp_path / "other.pt", WordTokenizer(words=[*SPECIALS, *WORDS[:-2]]))
    assert shortlist_cli.main(["--checkpoint", str(other), "--train", corpus, "--output", str(tmp_path / "o.pt")]) == 0
    capsys.readouterr()
    for path, message in [(tmp_path / "o.pt", "built for another source tokenizer"), ("nope.pt", "no such shortlist")]:
        status, out, err = translate(
            ["--checkpoint", checkpoint, "--shortlist", str(path)], b"a\n", capsys, monkeypatch
        )
        assert (status, out) == (1, "")
        assert err.count("\n") == 1 and err.startswith("nmt-translate: error: ") and message in err
