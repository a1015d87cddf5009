"""Tokenizers: fixed special ids, round trips, state that survives weights_only loading, vocab sizes."""

from __future__ import annotations

import io
import logging

import pytest
import torch

from nmt.config import ConfigError, DataConfig
from nmt.errors import NMTError
from nmt.tokenizer import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    SPECIALS,
    TOKENIZERS,
    UNK_ID,
    SentencePieceTokenizer,
    WordTokenizer,
    build_tokenizers,
    tokenizer_from_state,
)

EN = [f"the {a} dog sees the {b} cat" for a in ("big", "small", "old") for b in ("red", "black", "young")] * 5
DE = [f"der {a} Hund sieht die {b} Katze" for a in ("große", "kleine", "alte") for b in ("rote", "schwarze")] * 5


def config(**fields) -> DataConfig:
    return DataConfig(**{"vocab_size": 30, **fields})


@pytest.fixture(scope="module")
def spm_tokenizers() -> dict[str, SentencePieceTokenizer]:
    return {
        kind: SentencePieceTokenizer.train(lines=EN + DE, config=config(spm_model_type=kind))
        for kind in ("unigram", "bpe")
    }


@pytest.mark.parametrize("kind", ["unigram", "bpe"])
def test_sentencepiece_specials_round_trip_and_state(spm_tokenizers, kind) -> None:
    tok = spm_tokenizers[kind]
    assert [tok.id_to_piece(i) for i in (PAD_ID, UNK_ID, BOS_ID, EOS_ID)] == ["<pad>", "<unk>", "<s>", "</s>"]
    text = "the old dog sees die rote Katze"
    ids = tok.encode(text)
    assert min(ids) > EOS_ID  # encode adds no specials
    assert tok.decode([BOS_ID, *ids, EOS_ID, PAD_ID]) == text
    assert "".join(tok.pieces(text)).replace("▁", " ").strip() == text
    assert tok.encode_many([text, "der Hund"]) == [ids, tok.encode("der Hund")]
    buffer = io.BytesIO()
    torch.save(tok.to_state(), buffer)
    buffer.seek(0)
    again = tokenizer_from_state(torch.load(buffer, weights_only=True))
    assert isinstance(again, SentencePieceTokenizer)
    assert again.encode(text) == ids and again.vocab_size == tok.vocab_size == 30


def test_sentencepiece_shrinks_a_vocab_too_large_for_the_text(caplog) -> None:
    with caplog.at_level(logging.WARNING, logger="nmt.tokenizer"):
        tok = SentencePieceTokenizer.train(lines=EN, config=config(vocab_size=5000))
    assert 4 < tok.vocab_size < 5000
    assert f"at most {tok.vocab_size} sentencepiece pieces, not 5000" in caplog.text
    assert tok.decode(tok.encode(EN[0])) == EN[0]


def test_sentencepiece_vocab_smaller_than_the_alphabet_is_a_user_error() -> None:
    with pytest.raises(NMTError, match=r"set data\.vocab_size to at least"):
        SentencePieceTokenizer.train(lines=EN, config=config(vocab_size=8))


def test_word_tokenizer_keeps_the_most_frequent_words() -> None:
    # counts: a 3, b 2, c 2, d 1 -> with 4 specials, vocab_size 7 keeps a, then b and c (tie, alphabetical)
    tok = WordTokenizer.train(lines=["a b a c", "d c a b"], config=config(vocab_size=7))
    assert [tok.id_to_piece(i) for i in range(tok.vocab_size)] == [*SPECIALS, "a", "b", "c"]
    assert tok.encode("a  d\tc") == [4, UNK_ID, 6]
    assert tok.decode([BOS_ID, 4, UNK_ID, 6, EOS_ID, PAD_ID]) == "a <unk> c"
    assert tok.pieces("c d") == ["c", "<unk>"]
    assert tokenizer_from_state(tok.to_state()).encode("c b a") == [6, 5, 4]


def test_word_vocabulary_must_start_with_the_specials() -> None:
    with pytest.raises(NMTError, match="must start with the specials"):
        WordTokenizer(words=["a", "b"])


def test_build_joint_tokenizers_saves_one_model(tmp_path) -> None:
    src, tgt = build_tokenizers(config(), EN, DE, tmp_path)
    assert src is tgt
    assert (tmp_path / "tokenizer.joint.model").read_bytes() == src.to_state()["model_proto"]
    assert src.decode(src.encode(DE[0])) == DE[0]


def test_build_per_language_word_tokenizers(tmp_path) -> None:
    src, tgt = build_tokenizers(config(tokenizer="word", joint_vocab=False, vocab_size=100), EN, DE, tmp_path)
    assert src.encode("dog Hund") == [src.encode("dog")[0], UNK_ID]
    assert tgt.encode("dog Hund") == [UNK_ID, tgt.encode("Hund")[0]]
    assert (tmp_path / "tokenizer.de.vocab").read_text(encoding="utf-8").split("\n")[:5] == [*SPECIALS, "Hund"]
    assert (tmp_path / "tokenizer.en.vocab").exists()


def test_unknown_tokenizer_kind_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'sentencepiece'"):
        build_tokenizers(config(tokenizer="sentencepeice"), EN, DE, "unused")
    with pytest.raises(ConfigError, match=r"data\.spm_model_type"):
        SentencePieceTokenizer.train(lines=EN, config=config(spm_model_type="wordpiece"))


def test_every_registered_kind_round_trips_its_state() -> None:
    for name, kind in TOKENIZERS.items():
        tok = kind.train(lines=EN, config=config())
        assert tok.kind == name
        assert tokenizer_from_state(tok.to_state()).encode(EN[1]) == tok.encode(EN[1])
