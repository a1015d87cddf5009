"""Alignment inspection: Pharaoh files, AER, subword merging, forced decoding, heatmaps."""

from __future__ import annotations

import copy
import json
import re
import struct

import pytest
import torch

from nmt.align import (
    ATTENTION_STEPS,
    GoldAlignment,
    SentenceAttention,
    alignment_scores,
    force_decode,
    forced_attention,
    format_links,
    hard_links,
    merge_pieces,
    parse_links,
    piece_rows,
    read_alignments,
    sentence_links,
    translated_attention,
    word_attention,
    write_alignments,
)
from nmt.checkpoint import load_model, save_checkpoint
from nmt.cli import align as align_cli
from nmt.config import AttentionConfig, Config, DataConfig, DecodeConfig, ModelConfig, to_dict
from nmt.data import Example
from nmt.errors import NMTError
from nmt.heatmaps import plot_heatmap, row_labels, write_heatmaps, write_validation_heatmaps
from nmt.model import Seq2Seq
from nmt.quantize import is_quantized, quantize_model
from nmt.search import decode
from nmt.tokenizer import EOS_ID, SPECIALS, SentencePieceTokenizer, WordTokenizer, word_ids
from nmt.translate import Translator, load_translator

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def gold(sure: set, possible: set = frozenset()) -> GoldAlignment:
    return GoldAlignment(frozenset(sure), frozenset(sure | set(possible)))


# --- Pharaoh files ---------------------------------------------------------------------------


def test_parse_links_sure_and_possible():
    assert parse_links("0-0 1?2 3p4  2-1") == gold({(0, 0), (2, 1)}, {(1, 2), (3, 4)})
    assert parse_links("") == gold(set())


def test_parse_links_one_based():
    assert parse_links("1-1 3?2", one_based=True) == gold({(0, 0)}, {(2, 1)})
    with pytest.raises(NMTError, match=r"gold\.txt:4: bad alignment link '0-1'.*1-based"):
        parse_links("1-1 0-1", one_based=True, where="gold.txt:4")


@pytest.mark.parametrize("token", ["1:2", "1-", "a-b", "1-2-3", "-1-2", "1x2"])
def test_parse_links_rejects_bad_tokens(token):
    with pytest.raises(NMTError, match=f"bad alignment link '{token}'"):
        parse_links(f"0-0 {token}")


def test_read_alignments_names_file_and_line(tmp_path):
    path = tmp_path / "gold.align"
    path.write_text("0-0 1-1\n\n0-1 oops\n", encoding="utf-8")
    with pytest.raises(NMTError, match=r"gold\.align:3: bad alignment link 'oops'"):
        read_alignments(path)
    with pytest.raises(NMTError, match=r"missing\.align: cannot read"):
        read_alignments(tmp_path / "missing.align")


def test_read_alignments_crlf_and_blank_lines(tmp_path):
    path = tmp_path / "gold.align"
    path.write_bytes(b"0-0 1?1\r\n\r\n2-2")
    assert read_alignments(path) == [gold({(0, 0)}, {(1, 1)}), gold(set()), gold({(2, 2)})]


def test_write_then_read_round_trip(tmp_path):
    links = [{(1, 0), (0, 1)}, set(), {(2, 2)}]
    path = tmp_path / "a.txt"
    write_alignments(path, links)
    assert path.read_text(encoding="utf-8") == "0-1 1-0\n\n2-2\n"
    assert [g.sure for g in read_alignments(path)] == links
    assert format_links({(3, 1), (0, 2)}) == "0-2 3-1"


# --- AER, precision, recall ------------------------------------------------------------------


def test_aer_perfect_is_zero():
    ref = gold({(0, 0), (1, 2), (2, 1)})
    scores = alignment_scores([set(ref.sure)], [ref])
    assert (scores.aer, scores.precision, scores.recall) == (0.0, 1.0, 1.0)


def test_aer_disjoint_is_one():
    scores = alignment_scores([{(0, 1), (1, 0)}], [gold({(0, 0), (1, 1)}, {(2, 2)})])
    assert (scores.aer, scores.precision, scores.recall) == (1.0, 0.0, 0.0)


def test_aer_worked_example_with_sure_and_possible_links():
    # S = {0-0, 1-1}; P = S + {2-1, 2-2}; A = {0-0, 2-1, 3-3}
    # |A| = 3, |S| = 2, A∩S = {0-0} (1), A∩P = {0-0, 2-1} (2)
    # AER = 1 - (1 + 2) / (3 + 2) = 0.4; precision = 2/3; recall = 1/2
    ref = gold({(0, 0), (1, 1)}, {(2, 1), (2, 2)})
    scores = alignment_scores([{(0, 0), (2, 1), (3, 3)}], [ref])
    assert scores.aer == pytest.approx(0.4)
    assert scores.precision == pytest.approx(2 / 3)
    assert scores.recall == pytest.approx(1 / 2)
    assert (scores.predicted, scores.sure, scores.possible) == (3, 2, 4)
    assert scores.lagging == 0.0  # 3-3 is wrong, but 3-2 is no gold link either


def test_aer_sums_counts_over_the_corpus():
    # Sentence 1 as in the worked example (AER 0.4); sentence 2: S = A = {0-0} (AER 0).
    # Corpus: |A| = 4, |S| = 3, A∩S = 2, A∩P = 3 -> AER = 1 - 5/7 = 2/7, not the mean 0.2.
    refs = [gold({(0, 0), (1, 1)}, {(2, 1), (2, 2)}), gold({(0, 0)})]
    scores = alignment_scores([{(0, 0), (2, 1), (3, 3)}, {(0, 0)}], refs)
    assert scores.aer == pytest.approx(2 / 7)
    assert scores.sentences == 2


def test_aer_undefined_ratios_are_none():
    scores = alignment_scores([set()], [gold(set(), {(0, 0)})])
    assert (scores.aer, scores.precision, scores.recall, scores.lagging) == (None, None, None, None)
    with pytest.raises(ValueError, match="1 predicted alignments but 2 gold"):
        alignment_scores([set()], [gold(set()), gold(set())])


# --- subwords to words, hard links -----------------------------------------------------------


def test_word_ids():
    assert word_ids(["▁The", "▁hou", "se", "▁is", "▁", "big"]) == [0, 1, 1, 2, 3, 3]
    assert word_ids(["big", "▁house"]) == [0, 1]  # the first piece opens a word with or without ▁
    assert word_ids(["the", "hou", "se"], marker=None) == [0, 1, 2]
    assert word_ids([]) == []


def hand_made_sentence() -> SentenceAttention:
    """Source "Das Häuschen" (▁Das ▁Haus chen), target "the little house" (▁the ▁little ▁hou se).

    As trained models often do, the word-final piece "se" rests its attention on an
    uninformative position (▁Das).
    """
    weights = torch.tensor(
        [  # ▁Das ▁Haus chen </s>
            [0.6, 0.2, 0.1, 0.1],  # ▁the
            [0.1, 0.3, 0.5, 0.1],  # ▁little
            [0.1, 0.5, 0.3, 0.1],  # ▁hou
            [0.8, 0.0, 0.0, 0.2],  # se
            [0.1, 0.0, 0.0, 0.9],  # </s>
        ]
    )
    return SentenceAttention(
        "Das Häuschen",
        "the little house",
        ["▁Das", "▁Haus", "chen"],
        ["▁the", "▁little", "▁hou", "se"],
        [0, 1, 1],
        [0, 1, 2, 2],
        weights,
    )


def test_merge_pieces_sums_source_pieces_and_takes_the_first_target_piece():
    # the:    Das 0.6, Häuschen 0.2 + 0.1 = 0.3
    # little: Das 0.1, Häuschen 0.3 + 0.5 = 0.8
    # house:  its first piece ▁hou: Das 0.1, Häuschen 0.5 + 0.3 = 0.8
    sentence = hand_made_sentence()
    expected = torch.tensor([[0.6, 0.3], [0.1, 0.8], [0.1, 0.8]])
    torch.testing.assert_close(word_attention(sentence), expected)
    torch.testing.assert_close(merge_pieces(sentence.weights[:-1, :-1], [0, 1, 1], [0, 1, 2, 2]), expected)


def test_merge_pieces_mean_averages_target_pieces():
    # house: the mean of ▁hou (0.1, 0.8) and se (0.8, 0.0) = (0.45, 0.4)
    expected = torch.tensor([[0.6, 0.3], [0.1, 0.8], [0.45, 0.4]])
    torch.testing.assert_close(word_attention(hand_made_sentence(), target="mean"), expected)
    with pytest.raises(NMTError, match="target merge: unknown value 'last'"):
        word_attention(hand_made_sentence(), target="last")


@pytest.mark.parametrize(
    ("target", "rows"),
    [
        ("first", lambda sums: [sums[0], sums[1], sums[4], sums[5]]),
        ("mean", lambda sums: [sums[0], sums[1:4].mean(), sums[4], sums[5]]),
    ],
)
def test_merge_pieces_keeps_row_mass(target, rows):
    # Summing over a source word's pieces loses no mass, so a word's row sums to its first
    # piece's row sum (first) or to the mean row sum of its pieces (mean).
    weights = torch.rand(6, 5)
    merged = merge_pieces(weights, [0, 0, 1, 2, 2], [0, 1, 1, 1, 2, 3], target=target)
    assert merged.shape == (4, 3)
    torch.testing.assert_close(merged.sum(1), torch.stack(rows(weights.sum(1))))


def test_hard_links_pick_the_strongest_source_word_and_ignore_eos():
    # the -> Das, little -> Häuschen, house -> Häuschen (by ▁hou; by the mean it would be Das).
    # The EOS column (0.9 in the EOS row) and the EOS row never produce a link.
    sentence = hand_made_sentence()
    assert sentence_links(sentence) == hard_links(word_attention(sentence)) == {(0, 0), (1, 1), (1, 2)}
    assert sentence_links(sentence, target="mean") == {(0, 0), (1, 1), (0, 2)}


def test_hard_links_ties_and_empty_source():
    assert hard_links(torch.tensor([[0.5, 0.5], [0.2, 0.8]])) == {(0, 0), (1, 1)}
    assert hard_links(torch.zeros(3, 0)) == set()
    assert hard_links(torch.zeros(0, 3)) == set()


# --- attention step: the row that predicts a piece, or the row that reads it (Shift-Att) -----


def one_piece_words(weights: torch.Tensor) -> SentenceAttention:
    """A sentence whose every word is one piece, with ``weights`` ``(tgt + 1, src + 1)``."""
    src = [f"▁s{k}" for k in range(weights.size(1) - 1)]
    tgt = [f"▁t{k}" for k in range(weights.size(0) - 1)]
    return SentenceAttention(" ".join(src), " ".join(tgt), src, tgt, word_ids(src), word_ids(tgt), weights)


@pytest.mark.parametrize("seed", range(4))
def test_attention_steps_link_by_their_definition(seed):
    # Target word i (one piece) links to the source word of highest weight in the row of
    # step i (predicting) or of step i + 1, the step whose decoder input it is (input);
    # the EOS column never wins a link. Written straight from the definitions, no library help.
    weights = torch.rand(6, 5, generator=torch.Generator().manual_seed(seed))
    sentence = one_piece_words(weights)
    n_src = weights.size(1) - 1

    def links(step_of: int) -> set:
        return {(max(range(n_src), key=lambda i: weights[j + step_of, i].item()), j) for j in range(5)}

    assert sentence_links(sentence) == sentence_links(sentence, attention_step="predicting") == links(0)
    assert sentence_links(sentence, attention_step="input") == links(1)


def test_input_step_undoes_attention_on_the_word_just_read():
    # The measured failure in miniature: at step t the model attends to the source of the
    # target word it has just read (t - 1), and at step 0 (reading BOS) to the source EOS.
    # Gold links word k to word k. Predicting: 0-0 (an all-zero row ties to 0), 0-1, 1-2, 2-3,
    # AER 1 - (1 + 1) / (4 + 4) = 0.75. Input: the diagonal, AER 0.
    weights = torch.zeros(5, 5)
    weights[0, 4] = 1.0
    weights[1:, :4] = torch.eye(4)
    sentence = one_piece_words(weights)
    ref = gold({(k, k) for k in range(4)})
    predicting, shifted = sentence_links(sentence), sentence_links(sentence, attention_step="input")
    assert predicting == {(0, 0), (0, 1), (1, 2), (2, 3)}
    assert shifted == ref.sure
    assert alignment_scores([predicting], [ref]).aer == pytest.approx(0.75)
    assert alignment_scores([predicting], [ref]).lagging == pytest.approx(0.75)  # 0-1, 1-2, 2-3: a word behind
    assert alignment_scores([shifted], [ref])[:4] == (0.0, 1.0, 1.0, 0.0)


def test_input_step_with_pieces_takes_the_eos_row_for_the_last_piece():
    # Shifted rows of the hand-made sentence: ▁the takes step 1's, ▁little step 2's, ▁hou step
    # 3's, se the EOS step's (0.1, 0, 0 | 0.9).
    # the:    Das 0.1, Häuschen 0.3 + 0.5 = 0.8
    # little: Das 0.1, Häuschen 0.5 + 0.3 = 0.8
    # house:  first piece ▁hou: Das 0.8, Häuschen 0.0; mean of ▁hou and se: (0.45, 0.0)
    sentence = hand_made_sentence()
    first = torch.tensor([[0.1, 0.8], [0.1, 0.8], [0.8, 0.0]])
    torch.testing.assert_close(word_attention(sentence, attention_step="input"), first)
    mean = torch.tensor([[0.1, 0.8], [0.1, 0.8], [0.45, 0.0]])
    torch.testing.assert_close(word_attention(sentence, target="mean", attention_step="input"), mean)
    assert sentence_links(sentence, attention_step="input") == {(1, 0), (1, 1), (0, 2)}


def test_piece_rows_shapes_and_unknown_step():
    weights = torch.arange(12.0).view(4, 3)  # 3 target pieces + the EOS step
    torch.testing.assert_close(piece_rows(weights), weights[:3])
    torch.testing.assert_close(piece_rows(weights, attention_step="input"), weights[1:])
    for step in ATTENTION_STEPS:
        assert piece_rows(torch.ones(1, 3), attention_step=step).shape == (0, 3)  # empty target: the EOS step only
    with pytest.raises(NMTError, match="attention step: unknown value 'output'; choose one of predicting, input"):
        word_attention(hand_made_sentence(), attention_step="output")


# --- forced decoding -------------------------------------------------------------------------


def tiny_model(align: str = "global", **fields) -> Seq2Seq:
    attention = AttentionConfig(align=align, window=2)
    config = ModelConfig(attention=attention, **{"embed": 8, "hidden": 8, "layers": 1, "dropout": 0.0, **fields})
    return Seq2Seq(config=config, src_vocab=12, tgt_vocab=12).eval()


EXAMPLES = [Example([4, 5, 6], [7, 8]), Example([9], [4, 5, 6, 7, 8]), Example([5, 6, 7, 8, 9, 10], [])]


@pytest.mark.parametrize("align", ["global", "local-m", "local-p"])
def test_force_decode_gives_one_row_per_reference_token_plus_eos(align):
    torch.manual_seed(0)
    attn = force_decode(tiny_model(align), EXAMPLES, batch_size=2)
    assert [a.shape for a in attn] == [(len(ex.tgt) + 1, len(ex.src) + 1) for ex in EXAMPLES]
    for a in attn:
        assert torch.all(a >= 0) and torch.all(a.sum(1) <= 1 + 1e-5)


def test_force_decode_matches_each_pair_decoded_alone():
    torch.manual_seed(0)
    model = tiny_model(reverse_source=True)
    batched = force_decode(model, EXAMPLES)
    for (src, ref), attn in zip(EXAMPLES, batched, strict=True):
        with torch.no_grad():
            _, alone = model(torch.tensor([[*src, EOS_ID]]), torch.tensor([len(src) + 1]), torch.tensor([[2, *ref]]))
        torch.testing.assert_close(attn, alone[0])
        torch.testing.assert_close(attn.sum(1), torch.ones(len(ref) + 1))  # global: rows are distributions


def test_force_decode_runs_in_eval_mode_and_restores_the_mode():
    torch.manual_seed(0)
    model = tiny_model(dropout=0.5).train()
    first, second = force_decode(model, EXAMPLES[:1]), force_decode(model, EXAMPLES[:1])
    torch.testing.assert_close(first, second)  # no dropout noise
    assert model.training


WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran"]


@pytest.fixture(scope="module")
def words() -> WordTokenizer:
    return WordTokenizer(words=[*SPECIALS, *WORDS])


@pytest.mark.parametrize("align", ["global", "local-p"])
def test_translated_attention_is_the_search_attention_plus_eos(words, align):
    torch.manual_seed(0)
    model = tiny_model(align)
    sources = ["the cat sat on the mat", "a dog", "dog"]
    config = DecodeConfig(beam=3, max_len_ratio=2.0)
    translator = Translator(model, words, words, config, {}, torch.device("cpu"))
    sentences = translated_attention(translator, sources, batch_size=2)
    for text, sentence in zip(sources, sentences, strict=True):
        ids = words.encode(text)
        (best, *_) = decode(model, torch.tensor([[*ids, EOS_ID]]), torch.tensor([len(ids) + 1]), config=config)[0]
        assert sentence.tgt_pieces == [words.id_to_piece(i) for i in best.tokens]
        assert sentence.tgt_text == words.decode(best.tokens)
        assert sentence.src_pieces == text.split() and sentence.src_words == list(range(len(ids)))
        torch.testing.assert_close(sentence.weights[:-1], best.attention.float())
        assert sentence.weights.shape == (len(best.tokens) + 1, len(ids) + 1)
        # the input step's rows are the search's own, shifted, and the last is the added EOS step's
        shifted = piece_rows(sentence.weights, attention_step="input")
        torch.testing.assert_close(shifted[:-1], best.attention[1:].float())
        torch.testing.assert_close(shifted[-1:], sentence.weights[-1:])


def test_forced_attention_labels_pieces_and_words(words):
    torch.manual_seed(0)
    (sentence,) = forced_attention(tiny_model(), words, words, ["the cat sat"], ["a zebra ran"])
    assert sentence.src_pieces == ["the", "cat", "sat"] and sentence.tgt_pieces == ["a", "<unk>", "ran"]
    assert sentence.tgt_words == [0, 1, 2] and sentence.weights.shape == (4, 4)
    assert words.word_ids(["▁a", "b"]) == [0, 1]


def test_empty_sentences_have_no_words_and_no_links(words):
    torch.manual_seed(0)
    empty_src, empty_ref = forced_attention(tiny_model(), words, words, ["", "the cat"], ["a", ""])
    assert empty_src.weights.shape == (2, 1) and word_attention(empty_src).shape == (1, 0)
    assert empty_ref.weights.shape == (1, 3) and word_attention(empty_ref).shape == (0, 2)
    assert hard_links(word_attention(empty_src)) == hard_links(word_attention(empty_ref)) == set()
    assert word_attention(empty_src, attention_step="input").shape == (1, 0)
    assert word_attention(empty_ref, attention_step="input").shape == (0, 2)


def test_sentencepiece_words_follow_the_marker(tmp_path):
    lines = ["the little houses stand in the old town", "a small house", "the houses are little"] * 20
    tokenizer = SentencePieceTokenizer.train(lines=lines, config=DataConfig(vocab_size=40))
    pieces = [tokenizer.id_to_piece(i) for i in tokenizer.encode("the little houses")]
    assert len(pieces) > 3  # the small vocabulary splits words into pieces
    ids = tokenizer.word_ids(pieces)
    assert ids[-1] == 2 and [ids[k] for k in range(len(pieces)) if pieces[k].startswith("▁")] == [0, 1, 2]


# --- heatmaps --------------------------------------------------------------------------------


def png_size(path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def sentence_of_length(src_len: int, tgt_len: int) -> SentenceAttention:
    src = [f"▁src{k}" for k in range(src_len)]
    tgt = [f"▁tgt{k}" for k in range(tgt_len)]
    weights = torch.softmax(torch.arange((tgt_len + 1) * (src_len + 1), dtype=torch.float).view(tgt_len + 1, -1), 1)
    return SentenceAttention(" ".join(src), " ".join(tgt), src, tgt, word_ids(src), word_ids(tgt), weights)


def test_heatmap_is_a_png_whose_size_grows_with_the_sentence(tmp_path):
    plot_heatmap(sentence_of_length(4, 3), tmp_path / "short.png")
    plot_heatmap(sentence_of_length(40, 30), tmp_path / "long.png")
    short, long = png_size(tmp_path / "short.png"), png_size(tmp_path / "long.png")
    assert all(200 <= side <= 1200 for side in short), short
    assert all(800 <= side <= 5000 for side in long), long
    assert long[0] > short[0] + 800 and long[1] > short[1] + 600  # ~30 px per extra token


def test_write_heatmaps_svg_and_escaped_index(tmp_path):
    sentence = hand_made_sentence()._replace(src_text="<b>Das & Häuschen</b>")
    index = write_heatmaps(tmp_path / "out", [sentence, sentence_of_length(2, 2)], fmt="svg")
    assert index == tmp_path / "out" / "index.html"
    assert (tmp_path / "out" / "00001.svg").read_text(encoding="utf-8").lstrip().startswith("<?xml")
    page = index.read_text(encoding="utf-8")
    assert "&lt;b&gt;Das &amp; Häuschen&lt;/b&gt;" in page and "<b>Das" not in page
    assert 'src="00001.svg"' in page and 'src="00002.svg"' in page
    assert "<code>0-0 1-1 1-2</code>" in page
    with pytest.raises(NMTError, match="unknown heatmap format 'jpg'"):
        write_heatmaps(tmp_path / "out", [sentence], fmt="jpg")


def test_heatmap_rows_are_labelled_with_the_piece_that_takes_them(tmp_path):
    sentence = hand_made_sentence()
    assert row_labels(sentence) == ["▁the", "▁little", "▁hou", "se", "</s>"]
    assert row_labels(sentence, attention_step="input") == ["<s>", "▁the", "▁little", "▁hou", "se"]
    index = write_heatmaps(tmp_path / "out", [sentence], fmt="svg", attention_step="input")
    page = index.read_text(encoding="utf-8")
    assert "<code>input</code> step" in page and "<code>0-2 1-0 1-1</code>" in page


def test_validation_heatmaps_from_ids_keep_the_training_mode(words, tmp_path):
    torch.manual_seed(0)
    model = tiny_model(dropout=0.3).train()
    examples = [Example(words.encode("the cat sat"), words.encode("a cat")), Example(words.encode("dog"), [])]
    index = write_validation_heatmaps(model, words, words, examples, tmp_path / "step_200")
    assert model.training
    assert sorted(p.name for p in index.parent.iterdir()) == ["00001.png", "00002.png", "index.html"]
    assert "source: the cat sat" in index.read_text(encoding="utf-8")


# --- nmt-align -------------------------------------------------------------------------------

SOURCES = ["the cat sat on the mat", "a dog ran", "the dog sat on a mat"]
REFERENCES = ["a cat sat on a mat", "the dog ran", "a dog sat"]
GOLD = "0-0 1-1 2-2 3-3 4?4 5-5\n0-0 1-1 2-2\n0-0 1-1 2-2 4?0\n"


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, words) -> dict[str, str]:
    """A tiny random checkpoint with word tokenizers and a three-line corpus with gold links."""
    root = tmp_path_factory.mktemp("align")
    torch.manual_seed(0)
    config = Config(model=ModelConfig(embed=8, hidden=8, layers=1, dropout=0.0), decode=DecodeConfig(beam=2))
    model = Seq2Seq(config=config.model, src_vocab=words.vocab_size, tgt_vocab=words.vocab_size)
    tokenizers = {"src": words.to_state(), "tgt": words.to_state()}
    save_checkpoint(
        root / "model.pt", {"config": to_dict(config), "model": model.state_dict(), "tokenizers": tokenizers}
    )
    files = {"ckpt": root / "model.pt", "src": root / "src.txt", "tgt": root / "tgt.txt", "gold": root / "gold.align"}
    files["src"].write_text("\n".join(SOURCES) + "\n", encoding="utf-8")
    files["tgt"].write_text("\n".join(REFERENCES) + "\n", encoding="utf-8")
    files["gold"].write_text(GOLD, encoding="utf-8")
    return {name: str(path) for name, path in files.items()}


def align(corpus, out, *extra: str) -> list[str]:
    return ["--checkpoint", corpus["ckpt"], "--src", corpus["src"], "--out", str(out), "--quiet", *extra]


@pytest.mark.parametrize(
    ("options", "target", "step"),
    [
        ([], "first", "predicting"),
        (["--target-merge", "mean"], "mean", "predicting"),
        (["--attention-step", "input"], "first", "input"),
        (["--target-merge", "mean", "--attention-step", "input"], "mean", "input"),
    ],
)
def test_cli_force_decodes_writes_heatmaps_alignments_and_scores(corpus, tmp_path, capsys, options, target, step):
    out = tmp_path / "out"
    extra = ["--tgt", corpus["tgt"], "--gold", corpus["gold"], "--limit", "2", *options]
    assert align_cli.main(align(corpus, out, *extra)) == 0
    stdout = capsys.readouterr().out
    assert sorted(p.name for p in out.iterdir()) == [
        "00001.png",
        "00002.png",
        "alignments.txt",
        "index.html",
        "scores.json",
    ]
    # the hard links are those of the library on the checkpoint's model
    loaded = load_model(corpus["ckpt"])
    sentences = forced_attention(loaded.model, loaded.src_tokenizer, loaded.tgt_tokenizer, SOURCES[:2], REFERENCES[:2])
    predicted = [sentence_links(s, target=target, attention_step=step) for s in sentences]
    assert [g.sure for g in read_alignments(out / "alignments.txt")] == predicted
    other = "input" if step == "predicting" else "predicting"
    assert predicted != [sentence_links(s, target=target, attention_step=other) for s in sentences]  # a telling case
    # stdout is one JSON line, the same as scores.json, scoring the first two gold lines with the rows it names
    (line,) = stdout.splitlines()
    scores = alignment_scores(predicted, read_alignments(corpus["gold"])[:2])._asdict()
    assert json.loads(line) == {**scores, "attention_step": step}
    assert (out / "scores.json").read_text(encoding="utf-8") == line + "\n"
    assert json.loads(line)["sentences"] == 2 and json.loads(line)["sure"] == 8


def test_cli_draws_only_the_first_heatmaps_but_aligns_every_pair(corpus, tmp_path):
    out = tmp_path / "out"
    assert align_cli.main(align(corpus, out, "--heatmaps", "1")) == 0
    assert [p.name for p in out.glob("*.png")] == ["00001.png"]
    assert len((out / "alignments.txt").read_text(encoding="utf-8").split("\n")) == len(SOURCES) + 1


@pytest.mark.parametrize("step", ["predicting", "input"])
def test_cli_without_references_aligns_the_translations(corpus, tmp_path, capsys, step):
    out = tmp_path / "out"
    assert align_cli.main(align(corpus, out, "--format", "svg", "--attention-step", step)) == 0
    assert capsys.readouterr().out == ""
    assert len(list(out.glob("*.svg"))) == len(SOURCES)
    sentences = translated_attention(load_translator([corpus["ckpt"]], torch.device("cpu")), SOURCES)
    predicted = [sentence_links(s, attention_step=step) for s in sentences]
    assert [g.sure for g in read_alignments(out / "alignments.txt")] == predicted


def spy_on_attention(monkeypatch) -> list[tuple[str, bool, object, str | None]]:
    """Replace the CLI's forced and translated attention by spies that record, per call, which ran, whether
    the model was quantized, the CPU's autocast dtype (False: none) and the search's precision."""
    calls = []

    def spy(name, function):
        def called(model_or_translator, *args, **kwargs):
            autocast = torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu")
            searching = isinstance(model_or_translator, Translator)
            model = model_or_translator.model if searching else model_or_translator
            precision = model_or_translator.config.precision if searching else None
            calls.append((name, is_quantized(model), autocast, precision))
            return function(model_or_translator, *args, **kwargs)

        monkeypatch.setattr(align_cli, name, called)

    spy("forced_attention", forced_attention)
    spy("translated_attention", translated_attention)
    return calls


@pytest.mark.parametrize("references", [True, False])
def test_cli_aligns_with_an_int8_model(corpus, tmp_path, references, monkeypatch):
    """--precision int8 quantizes the model once and aligns with it: the links of the library on an int8 copy."""
    calls = spy_on_attention(monkeypatch)
    out = tmp_path / "out"
    extra = ["--tgt", corpus["tgt"]] if references else []
    assert align_cli.main(align(corpus, out, "--precision", "int8", "--heatmaps", "0", *extra)) == 0
    want = ("forced_attention", True, False, None) if references else ("translated_attention", True, False, "int8")
    assert calls == [want]
    loaded = load_model(corpus["ckpt"])
    model, tokenizers = quantize_model(copy.deepcopy(loaded.model)), (loaded.src_tokenizer, loaded.tgt_tokenizer)
    if references:
        sentences = forced_attention(model, *tokenizers, SOURCES, REFERENCES)
    else:
        config = DecodeConfig(**{**to_dict(loaded.config)["decode"], "precision": "int8"})
        sentences = translated_attention(Translator(model, *tokenizers, config, {}, torch.device("cpu")), SOURCES)
    assert [g.sure for g in read_alignments(out / "alignments.txt")] == [sentence_links(s) for s in sentences]


def test_cli_aligns_under_bf16_autocast_and_refuses_fp16_on_the_cpu(corpus, tmp_path, capsys, monkeypatch):
    """bf16 searches and force-decodes under autocast; on the CPU teacher forcing keeps its steps in
    float32 (as training does), so forced alignment there is fp32's."""
    calls = spy_on_attention(monkeypatch)
    args = align(corpus, tmp_path / "bf16", "--heatmaps", "0", "--device", "cpu", "--precision", "bf16")
    assert align_cli.main(args) == 0
    assert align_cli.main([*args, "--tgt", corpus["tgt"]]) == 0
    assert calls == [
        ("translated_attention", False, torch.bfloat16, "bf16"),
        ("forced_attention", False, torch.bfloat16, None),
    ]
    fp32 = align(corpus, tmp_path / "fp32", "--heatmaps", "0", "--device", "cpu", "--tgt", corpus["tgt"])
    assert align_cli.main(fp32) == 0
    assert (tmp_path / "bf16" / "alignments.txt").read_text() == (tmp_path / "fp32" / "alignments.txt").read_text()
    capsys.readouterr()  # a CPU without bf16 instructions warns
    assert align_cli.main([*fp32, "--precision", "fp16"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("nmt-align: error: decode.precision=fp16 needs a CUDA device"), line


@pytest.mark.parametrize(
    ("extra", "gold", "message"),
    [
        (["--tgt", "tgt"], "0-0\n0-x\n", r"gold\.align:2: bad alignment link '0-x'"),
        (
            ["--tgt", "tgt", "--limit", "2"],
            "0-0\n0-3\n",
            r"gold\.align:2: link 0-3 lies outside the pair \(3 source words, 3 target",
        ),
        (["--tgt", "tgt", "--limit", "2", "--gold-one-based"], "1-1\n1-4\n", r"gold\.align:2: link 1-4 lies outside"),
        (["--tgt", "tgt", "--gold-one-based"], "1-1\n0-1\n", r"gold\.align:2: bad alignment link '0-1'"),
        (["--tgt", "tgt"], "0-0\n", r"gold\.align has 1 lines but there are 3 sentence pairs"),
        ([], "0-0\n", "--gold needs --tgt"),
    ],
)
def test_cli_bad_gold_exits_1_with_one_message(corpus, tmp_path, capsys, extra, gold, message):
    path = tmp_path / "gold.align"
    path.write_text(gold, encoding="utf-8")
    extra = [corpus["tgt"] if arg == "tgt" else arg for arg in extra]
    assert align_cli.main(align(corpus, tmp_path / "out", *extra, "--gold", str(path))) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("nmt-align: error: ") and re.search(message, line), line


def test_cli_mismatched_references_and_missing_checkpoint(corpus, tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("a cat\n", encoding="utf-8")
    assert align_cli.main(align(corpus, tmp_path / "out", "--tgt", str(short))) == 1
    assert "has 3 lines but" in capsys.readouterr().err
    args = align(corpus, tmp_path / "out")
    args[1] = str(tmp_path / "missing.pt")
    assert align_cli.main(args) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert "missing.pt: no such checkpoint" in line


def test_cli_refuses_a_model_without_attention(corpus, words, tmp_path, capsys):
    config = Config(model=ModelConfig(embed=8, hidden=8, layers=1, attention=AttentionConfig(align="none")))
    model = Seq2Seq(config=config.model, src_vocab=words.vocab_size, tgt_vocab=words.vocab_size)
    tokenizers = {"src": words.to_state(), "tgt": words.to_state()}
    path = tmp_path / "base.pt"
    save_checkpoint(path, {"config": to_dict(config), "model": model.state_dict(), "tokenizers": tokenizers})
    args = align(corpus, tmp_path / "out", "--tgt", corpus["tgt"])
    args[1] = str(path)
    assert align_cli.main(args) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.splitlines()
    assert line.startswith("nmt-align: error: ") and "base.pt: this model has no attention" in line, line
