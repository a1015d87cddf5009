"""Tokenizers: text <-> ids, with the four special ids fixed for every kind.

Two kinds, registered in :data:`TOKENIZERS` under the names ``data.tokenizer`` takes:

- ``sentencepiece``: a unigram or BPE model trained on the training text (Kudo & Richardson, 2018);
- ``word``: whitespace-separated words, the top-K most frequent kept, the rest mapped to ``<unk>``
  (the 50K-word vocabularies of Luong et al., 2015).

``encode`` never adds BOS/EOS; the data pipeline does (see nmt/data.py). ``to_state`` holds only
plain values (str/int/bytes/list/dict), so a tokenizer travels inside a checkpoint that is read with
``torch.load(weights_only=True)``; :func:`tokenizer_from_state` rebuilds it.
"""

from __future__ import annotations

import abc
import collections
import hashlib
import io
import logging
import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import sentencepiece as spm

from nmt.config import ConfigError, DataConfig, choose
from nmt.errors import NMTError

logger = logging.getLogger(__name__)

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3
SPECIALS = ("<pad>", "<unk>", "<s>", "</s>")


WORD_MARKER = "▁"  # sentencepiece's word-boundary mark: a piece starting with it opens a word


def word_ids(pieces: Sequence[str], *, marker: str | None = WORD_MARKER) -> list[int]:
    """The word index of every piece.

    A piece opens a new word if it is the first or starts with ``marker``; with
    ``marker=None`` (word-level tokenizers) every piece is a word of its own.
    """
    ids, word = [], -1
    for k, piece in enumerate(pieces):
        if marker is None or k == 0 or piece.startswith(marker):
            word += 1
        ids.append(word)
    return ids


class Tokenizer(abc.ABC):
    """Text <-> ids; ids 0..3 are always PAD, UNK, BOS, EOS."""

    kind: str  # the registry name, stored in the state

    @property
    @abc.abstractmethod
    def vocab_size(self) -> int:
        """The number of ids, specials included."""

    @abc.abstractmethod
    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, without BOS/EOS."""

    @abc.abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """The text of ``ids``; PAD, BOS and EOS are left out."""

    @abc.abstractmethod
    def id_to_piece(self, i: int) -> str:
        """The surface form of one id (a subword piece with its "▁" marker, a word, or a special)."""

    @abc.abstractmethod
    def to_state(self) -> dict[str, Any]:
        """Everything needed to rebuild this tokenizer, as plain values."""

    @abc.abstractmethod
    def save(self, directory: Path, name: str) -> Path:
        """Write the tokenizer in its native file format as ``directory/name.<suffix>``; return the file."""

    def fingerprint(self) -> str:
        """A SHA-256 (hex) of :meth:`to_state`: equal for tokenizers that give every text the same ids."""
        return hashlib.sha256(repr(sorted(self.to_state().items())).encode()).hexdigest()

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        """``encode`` for many texts at once."""
        return [self.encode(text) for text in texts]

    def pieces(self, text: str) -> list[str]:
        """The tokens the model sees for ``text``."""
        return [self.id_to_piece(i) for i in self.encode(text)]

    word_marker: str | None = None
    """The mark of a piece that opens a whitespace word (None: every piece is a word)."""

    def word_ids(self, pieces: Sequence[str]) -> list[int]:
        """The index of the whitespace word each of ``pieces`` belongs to (see :func:`word_ids`)."""
        return word_ids(pieces, marker=self.word_marker)


class SentencePieceTokenizer(Tokenizer):
    """A trained sentencepiece model (unigram or BPE), held as its serialized proto."""

    kind = "sentencepiece"
    word_marker = WORD_MARKER

    def __init__(self, *, model_proto: bytes) -> None:
        self._proto = bytes(model_proto)
        self._sp = spm.SentencePieceProcessor(model_proto=self._proto)

    @classmethod
    def train(cls, *, lines: Sequence[str], config: DataConfig) -> SentencePieceTokenizer:
        """Train on ``lines`` with ``config.vocab_size`` pieces, shrinking it if the text is too small."""
        vocab_size = config.vocab_size
        try:
            return cls(model_proto=_train_spm(lines, config, vocab_size))
        except RuntimeError as err:
            largest = re.search(r"Vocabulary size too high \(\d+\)\. Please set it to a value <= (\d+)", str(err))
            if largest is None:
                raise _spm_error(err, vocab_size) from err
            vocab_size = int(largest.group(1))
        logger.warning(
            "the training text allows at most %d sentencepiece pieces, not %d; using %d",
            vocab_size,
            config.vocab_size,
            vocab_size,
        )
        return cls(model_proto=_train_spm(lines, config, vocab_size))

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    def encode(self, text: str) -> list[int]:
        return self._sp.encode(text)

    def encode_many(self, texts: Sequence[str]) -> list[list[int]]:
        return self._sp.encode(list(texts), num_threads=os.cpu_count() or 1)

    def decode(self, ids: Sequence[int]) -> str:
        return self._sp.decode([int(i) for i in ids])

    def id_to_piece(self, i: int) -> str:
        return self._sp.id_to_piece(int(i))

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "model_proto": self._proto}

    def save(self, directory: Path, name: str) -> Path:
        target = directory / f"{name}.model"
        target.write_bytes(self._proto)
        return target


def _train_spm(lines: Sequence[str], config: DataConfig, vocab_size: int) -> bytes:
    """Run the sentencepiece trainer in memory; returns the model proto."""
    model = io.BytesIO()
    spm.set_random_generator_seed(1)  # the sentence sample, hence the model, is reproducible
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        model_type=choose(SPM_MODEL_TYPES, config.spm_model_type, "data.spm_model_type"),
        vocab_size=vocab_size,
        character_coverage=1.0,
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        input_sentence_size=config.spm_input_sentence_size,
        shuffle_input_sentence=True,
        num_threads=os.cpu_count() or 1,
        minloglevel=2,
    )
    return model.getvalue()


def _spm_error(err: RuntimeError, vocab_size: int) -> NMTError:
    """A sentencepiece training failure as a user-facing message."""
    too_small = re.search(r"smaller than required_chars\. \d+ vs (\d+)", str(err))
    if too_small:
        return NMTError(
            f"data.vocab_size={vocab_size} is smaller than the {too_small.group(1)} characters and specials "
            f"of the training text; set data.vocab_size to at least {too_small.group(1)}"
        )
    return NMTError(f"sentencepiece training failed: {err}")


SPM_MODEL_TYPES = {"unigram": "unigram", "bpe": "bpe"}


class WordTokenizer(Tokenizer):
    """Whitespace-separated words; ``words`` lists the vocabulary by id, the four specials first."""

    kind = "word"

    def __init__(self, *, words: Sequence[str]) -> None:
        if tuple(words[: len(SPECIALS)]) != SPECIALS:
            raise NMTError(f"a word vocabulary must start with the specials {', '.join(SPECIALS)}")
        self._words = list(words)
        self._ids = {w: i for i, w in enumerate(self._words)}

    @classmethod
    def train(cls, *, lines: Sequence[str], config: DataConfig) -> WordTokenizer:
        """Keep the ``config.vocab_size - 4`` most frequent words (ties broken alphabetically)."""
        counts = collections.Counter(word for line in lines for word in line.split())
        ranked = sorted(counts, key=lambda w: (-counts[w], w))
        kept = [w for w in ranked if w not in SPECIALS][: max(0, config.vocab_size - len(SPECIALS))]
        logger.info("word vocabulary: %d of %d distinct words kept", len(kept), len(counts))
        return cls(words=[*SPECIALS, *kept])

    @property
    def vocab_size(self) -> int:
        return len(self._words)

    def encode(self, text: str) -> list[int]:
        return [self._ids.get(w, UNK_ID) for w in text.split()]

    def decode(self, ids: Sequence[int]) -> str:
        skipped = {PAD_ID, BOS_ID, EOS_ID}
        return " ".join(self._words[int(i)] for i in ids if int(i) not in skipped)

    def id_to_piece(self, i: int) -> str:
        return self._words[int(i)]

    def to_state(self) -> dict[str, Any]:
        return {"kind": self.kind, "words": list(self._words)}

    def save(self, directory: Path, name: str) -> Path:
        target = directory / f"{name}.vocab"
        target.write_text("".join(f"{w}\n" for w in self._words), encoding="utf-8")
        return target


TOKENIZERS: dict[str, type[SentencePieceTokenizer] | type[WordTokenizer]] = {
    "sentencepiece": SentencePieceTokenizer,
    "word": WordTokenizer,
}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild a tokenizer from :meth:`Tokenizer.to_state`."""
    kind = choose(TOKENIZERS, state.get("kind", "?"), "tokenizer state 'kind'")
    fields = {k: v for k, v in state.items() if k != "kind"}
    return kind(**fields)


def check_tokenizer_config(config: DataConfig) -> type[SentencePieceTokenizer] | type[WordTokenizer]:
    """The tokenizer class ``data.tokenizer`` names, once the tokenizer settings are checked (no text needed)."""
    kind = choose(TOKENIZERS, config.tokenizer, "data.tokenizer")
    choose(SPM_MODEL_TYPES, config.spm_model_type, "data.spm_model_type")
    if config.vocab_size <= len(SPECIALS):
        raise ConfigError(f"data.vocab_size={config.vocab_size} leaves no room beside the {len(SPECIALS)} specials")
    return kind


def build_tokenizers(
    config: DataConfig, src_lines: Sequence[str], tgt_lines: Sequence[str], save_dir: str | Path
) -> tuple[Tokenizer, Tokenizer]:
    """Train the (source, target) tokenizers on the training text and save them in ``save_dir``.

    With ``config.joint_vocab`` one tokenizer is trained on both sides and returned twice; it is
    saved as ``tokenizer.joint.*``, otherwise as ``tokenizer.<lang>.*`` (``.model`` for
    sentencepiece, ``.vocab`` with one word per line for the word kind).
    """
    kind = check_tokenizer_config(config)
    save_dir = Path(save_dir)
    save_dir.mkdir(parents=True, exist_ok=True)
    if config.joint_vocab:
        joint = kind.train(lines=[*src_lines, *tgt_lines], config=config)
        _log_saved(joint, joint.save(save_dir, "tokenizer.joint"))
        return joint, joint
    src = kind.train(lines=src_lines, config=config)
    tgt = kind.train(lines=tgt_lines, config=config)
    _log_saved(src, src.save(save_dir, f"tokenizer.{config.src_lang}"))
    _log_saved(tgt, tgt.save(save_dir, f"tokenizer.{config.tgt_lang}"))
    return src, tgt


def _log_saved(tokenizer: Tokenizer, path: Path) -> None:
    logger.info("%s tokenizer with %d ids saved to %s", tokenizer.kind, tokenizer.vocab_size, path)
