"""Corpus reading (text files, Hugging Face schema), user errors, the token-id cache, filtering,
collate, and the bucketed batcher's partition / determinism / sharding properties."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from nmt.config import DataConfig
from nmt.data import (
    BucketBatcher,
    Example,
    ParallelIds,
    ParallelText,
    Ragged,
    collate,
    encode_corpus,
    filter_pairs,
    iterate_batches,
    read_split,
)
from nmt.errors import NMTError
from nmt.tokenizer import BOS_ID, EOS_ID, PAD_ID, WordTokenizer

EN = ["the dog sleeps", "a cat sees the dog", "hello"]
DE = ["der Hund schläft", "eine Katze sieht den Hund", "hallo"]


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def lines(sentences: list[str]) -> str:
    return "".join(f"{s}\n" for s in sentences)


# --- reading ------------------------------------------------------------------------------------


def test_text_pair_by_prefix_and_by_explicit_files(tmp_path) -> None:
    write(tmp_path / "train.en", lines(EN))
    write(tmp_path / "train.de", "der Hund schläft\r\neine Katze sieht den Hund\r\nhallo")  # CRLF, no final newline
    by_prefix = read_split(DataConfig(train=str(tmp_path / "train")), "train")
    assert (by_prefix.src, by_prefix.tgt) == (EN, DE)
    write(tmp_path / "src.txt", "\ufeff" + lines(DE))  # a byte-order mark is not part of the first line
    explicit = read_split(DataConfig(dev=f"{tmp_path / 'src.txt'}, {tmp_path / 'train.en'}"), "dev")
    assert (explicit.src, explicit.tgt) == (DE, EN)


def test_line_separators_inside_a_line_do_not_split_it(tmp_path) -> None:
    odd = ["a\u2028b", "c\x85d", "e\x0cf"]  # str.splitlines would split each of these
    write(tmp_path / "x.en", lines(odd))
    write(tmp_path / "x.de", lines(["1", "2", "3"]))
    assert read_split(DataConfig(test=str(tmp_path / "x")), "test").src == odd


def test_missing_file_names_it(tmp_path) -> None:
    write(tmp_path / "train.en", lines(EN))
    with pytest.raises(NMTError, match=r"train\.de: no such file"):
        read_split(DataConfig(train=str(tmp_path / "train")), "train")


def test_empty_corpus_is_an_error(tmp_path) -> None:
    write(tmp_path / "e.en", "")
    write(tmp_path / "e.de", "")
    with pytest.raises(NMTError, match=r"e\.en: empty corpus"):
        read_split(DataConfig(train=str(tmp_path / "e")), "train")


def test_mismatched_line_counts_name_both_files_and_counts(tmp_path) -> None:
    src = write(tmp_path / "m.en", lines(EN))
    tgt = write(tmp_path / "m.de", lines(DE[:2]))
    with pytest.raises(NMTError) as err:
        read_split(DataConfig(train=str(tmp_path / "m")), "train")
    assert f"{src} has 3 lines but {tgt} has 2" in str(err.value)


def test_invalid_utf8_names_file_and_line(tmp_path) -> None:
    write(tmp_path / "u.en", lines(EN))
    bad = write(tmp_path / "u.de", "der Hund\ndie Katze\nM\xfcnchen\n".encode("latin-1"))
    with pytest.raises(NMTError, match=rf"{bad}:3: invalid UTF-8 \(byte 0xfc at column 2\)"):
        read_split(DataConfig(train=str(tmp_path / "u")), "train")


def test_unset_split_and_bad_file_spec(tmp_path) -> None:
    with pytest.raises(NMTError, match=r"no dev data: set data\.dev"):
        read_split(DataConfig(), "dev")
    with pytest.raises(NMTError, match="exactly two files"):
        read_split(DataConfig(train="a,b,c"), "train")


def hf_rows(src: list[str], tgt: list[str]) -> list[dict]:
    return [{"translation": {"en": s, "de": t}} for s, t in zip(src, tgt, strict=True)]


@pytest.fixture
def hf_files(tmp_path) -> Path:
    """train/validation splits of the WMT schema as JSON lines and as parquet."""
    import datasets

    root = tmp_path / "hf"
    write(root / "train.jsonl", lines([json.dumps(r) for r in hf_rows(EN, DE)]))
    write(root / "validation.jsonl", lines([json.dumps(r) for r in hf_rows(EN[:1], DE[:1])]))
    for split in ("train", "validation"):
        datasets.Dataset.from_list(hf_rows(EN, DE)[: 3 if split == "train" else 1]).to_parquet(
            root / f"{split}.parquet"
        )
    return root


@pytest.mark.parametrize("fmt", ["json", "parquet"])
def test_hugging_face_schema_from_local_files(hf_files, tmp_path, fmt) -> None:
    suffix = "jsonl" if fmt == "json" else "parquet"
    config = DataConfig(hf_dataset=f"{fmt}:{hf_files}/{{split}}.{suffix}")
    train = read_split(config, "train", hf_cache_dir=tmp_path / "cache")
    assert (train.src, train.tgt) == (EN, DE)
    dev = read_split(config, "dev", hf_cache_dir=tmp_path / "cache")
    assert (dev.src, dev.tgt) == (EN[:1], DE[:1])
    reverse = read_split(DataConfig(src_lang="de", tgt_lang="en", hf_dataset=config.hf_dataset), "train")
    assert (reverse.src, reverse.tgt) == (DE, EN)


def test_hugging_face_schema_errors(hf_files, tmp_path) -> None:
    with pytest.raises(NMTError, match=r"no 'fr' in the translation column \(it has en, de\)"):
        read_split(DataConfig(tgt_lang="fr", hf_dataset=f"json:{hf_files}/{{split}}.jsonl"), "train")
    write(tmp_path / "flat" / "train.jsonl", lines([json.dumps({"en": "a", "de": "b"})]))
    with pytest.raises(NMTError, match="no 'translation' column"):
        read_split(DataConfig(hf_dataset=f"json:{tmp_path}/flat/{{split}}.jsonl"), "train")
    with pytest.raises(NMTError, match=r"has no \{split\}"):
        read_split(DataConfig(hf_dataset=f"json:{hf_files}/train.jsonl"), "train")
    with pytest.raises(NMTError, match=r"test\.jsonl: no such file"):
        read_split(DataConfig(hf_dataset=f"json:{hf_files}/{{split}}.jsonl"), "test")


def test_hub_failure_says_how_to_use_local_files(monkeypatch, tmp_path) -> None:
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)  # fail at once, as without network
    with pytest.raises(NMTError) as err:
        read_split(DataConfig(hf_dataset="wmt/wmt14", hf_config="de-en"), "dev", hf_cache_dir=tmp_path)
    message = str(err.value)
    assert "wmt/wmt14 (de-en, split validation)" in message
    assert "data.hf_dataset='parquet:DIR/{split}.parquet'" in message


# --- token ids, cache, filtering --------------------------------------------------------------------


class CountingTokenizer(WordTokenizer):
    """A word tokenizer that counts its encode_many calls."""

    calls = 0

    def encode_many(self, texts):
        CountingTokenizer.calls += 1
        return super().encode_many(texts)


def word_tokenizer(words: list[str]) -> CountingTokenizer:
    return CountingTokenizer(words=["<pad>", "<unk>", "<s>", "</s>", *words])


def test_encode_corpus_uses_the_cache_on_the_second_run(tmp_path, caplog) -> None:
    text = ParallelText(EN, DE, "test corpus")
    src, tgt = word_tokenizer(["the", "dog", "sleeps"]), word_tokenizer(["der", "Hund"])
    CountingTokenizer.calls = 0
    first = encode_corpus(text, src, tgt, cache_dir=tmp_path)
    assert CountingTokenizer.calls == 2
    assert first[0] == Example([4, 5, 6], [4, 5, 1])
    assert first[2] == Example([1], [1])
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        second = encode_corpus(text, src, tgt, cache_dir=tmp_path)
    assert CountingTokenizer.calls == 2  # nothing encoded again
    assert "token-id cache hit" in caplog.text
    assert [second[i] for i in range(3)] == [first[i] for i in range(3)]
    # another corpus or another tokenizer misses the cache
    encode_corpus(ParallelText(EN, [*DE[:2], "tschüss"], "edited"), src, tgt, cache_dir=tmp_path)
    encode_corpus(text, src, word_tokenizer(["Hund"]), cache_dir=tmp_path)
    assert CountingTokenizer.calls == 6
    assert len(list(tmp_path.glob("ids-*.pt"))) == 3


def test_unreadable_cache_is_ignored(tmp_path, caplog) -> None:
    text = ParallelText(EN, DE, "test corpus")
    src = tgt = word_tokenizer(["the", "dog"])
    encode_corpus(text, src, tgt, cache_dir=tmp_path)
    (cached,) = tmp_path.glob("ids-*.pt")
    cached.write_bytes(cached.read_bytes()[:20])
    with caplog.at_level(logging.WARNING, logger="nmt.data"):
        again = encode_corpus(text, src, tgt, cache_dir=tmp_path)
    assert "ignoring the unreadable token-id cache" in caplog.text
    assert again[1].src == [1, 1, 1, 4, 5]


def pairs_of_lengths(src_lengths: list[int], tgt_lengths: list[int]) -> ParallelIds:
    """Pairs whose ids are 10 + their position in the corpus (so rows can be told apart)."""
    sides = []
    for lengths in (src_lengths, tgt_lengths):
        length = torch.tensor(lengths, dtype=torch.int64)
        start = torch.cumsum(length, 0) - length
        ids = torch.cat([torch.full((n,), 10 + i, dtype=torch.int32) for i, n in enumerate(lengths)])
        sides.append(Ragged(ids, start, length))
    return ParallelIds(*sides)


def test_filter_by_length_ratio_and_emptiness(caplog) -> None:
    pairs = pairs_of_lengths([3, 0, 6, 2, 4, 1], [3, 2, 5, 7, 4, 3])
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        kept = filter_pairs(pairs, max_len=5, max_ratio=2.0)
    # row 1: empty source; row 2: 6 > 5; row 3: 7 > 5; row 5: 3 / 1 > 2; rows 0 and 4 stay
    assert [kept[i].src[0] for i in range(len(kept))] == [10, 14]
    assert "kept 2 of 6 sentence pairs; dropped 1 with an empty side, 2 longer than 5 tokens, 1 with" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="nmt.data"):
        assert len(filter_pairs(pairs, max_len=None, max_ratio=None)) == 5
    assert caplog.messages == ["kept 5 of 6 sentence pairs; dropped 1 with an empty side"]  # no rule that is off
    with pytest.raises(NMTError, match="no sentence pair is left"):
        filter_pairs(pairs, max_len=1, max_ratio=None)


# --- batches ----------------------------------------------------------------------------------------


def test_collate_adds_specials_and_pads() -> None:
    batch = collate([Example([5, 6], [7]), Example([8], [9, 10, 11])], [4, 1])
    assert batch.src.tolist() == [[5, 6, EOS_ID], [8, EOS_ID, PAD_ID]]
    assert batch.src_lengths.tolist() == [3, 2]
    assert batch.tgt_in.tolist() == [[BOS_ID, 7, PAD_ID, PAD_ID], [BOS_ID, 9, 10, 11]]
    assert batch.tgt_out.tolist() == [[7, EOS_ID, PAD_ID, PAD_ID], [9, 10, 11, EOS_ID]]
    assert batch.index.tolist() == [4, 1]
    assert (batch.n_sentences, batch.n_src_tokens, batch.n_tgt_tokens) == (2, 5, 6)
    assert all(t.dtype == torch.int64 for t in batch)


def all_batches(batcher_args: dict, world_size: int, epoch: int) -> list[list[torch.Tensor]]:
    """Every rank's batches of one epoch."""
    return [BucketBatcher(**batcher_args, rank=r, world_size=world_size).batches(epoch) for r in range(world_size)]


lengths_strategy = st.lists(st.integers(1, 30), min_size=1, max_size=120)


@settings(max_examples=60, deadline=None)
@given(
    lengths=lengths_strategy,
    batch_size=st.integers(1, 9),
    max_tokens=st.one_of(st.none(), st.integers(1, 80)),
    pool_factor=st.one_of(st.none(), st.integers(1, 4)),
    balance_tokens=st.booleans(),
    world_size=st.integers(1, 4),
    epoch=st.integers(0, 3),
)
def test_every_pair_once_per_epoch_with_equal_shares(
    lengths, batch_size, max_tokens, pool_factor, balance_tokens, world_size, epoch
) -> None:
    n, tgt = len(lengths), torch.tensor(lengths)
    args = {
        "tgt_lengths": tgt,
        "batch_size": batch_size,
        "max_tokens": max_tokens,
        "pool_factor": pool_factor,
        "balance_tokens": balance_tokens,
        "seed": 7,
    }
    try:
        per_rank = all_batches(args, world_size, epoch)
    except NMTError as err:
        # only when splitting batches up to one pair each cannot reach a multiple of world_size
        assert "cannot be shared evenly" in str(err)
        unsharded = BucketBatcher(**args)  # the batcher checks epoch 0 as it is built
        assert any(-(-unsharded.count(e) // world_size) * world_size > n for e in (0, epoch))
        return
    assert len({len(b) for b in per_rank}) == 1  # the same number of batches for every rank
    assert len(per_rank[0]) == BucketBatcher(**args, world_size=world_size).count(epoch)
    seen = torch.cat([index for batches in per_rank for index in batches]).sort().values
    assert seen.tolist() == list(range(n))  # nothing dropped, nothing twice
    for index in (index for batches in per_rank for index in batches):
        assert len(index) >= 1
        if max_tokens is None:
            assert len(index) <= batch_size
        elif len(index) > 1:
            assert len(index) * int(tgt[index].max()) <= max_tokens


def test_batches_are_length_buckets() -> None:
    tgt = torch.tensor([5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 1, 5])
    batcher = BucketBatcher(tgt_lengths=tgt, batch_size=3, balance_tokens=False, seed=0)
    ranges = sorted((int(tgt[b].min()), int(tgt[b].max())) for b in batcher.batches(0))
    assert ranges == [(1, 2), (3, 5), (5, 7), (8, 10)]  # sorted by length, cut every 3


@pytest.mark.parametrize("n, batch_size", [(100, 10), (100, 5), (103, 10)])
def test_balanced_batches_join_the_shortest_and_longest_pairs_left(n: int, batch_size: int) -> None:
    tgt = torch.randperm(n, generator=torch.Generator().manual_seed(0)) + 1  # the lengths 1..n, shuffled
    short, long = batch_size // 2, batch_size - batch_size // 2
    full = n // batch_size
    expected = {
        frozenset(range(i * short + 1, (i + 1) * short + 1))
        | frozenset(range(n - (i + 1) * long + 1, n - i * long + 1))
        for i in range(full)
    }
    if n % batch_size:
        expected.add(frozenset(range(full * short + 1, n - full * long + 1)))
    batches = BucketBatcher(tgt_lengths=tgt, batch_size=batch_size, seed=1).batches(0)
    assert {frozenset(tgt[b].tolist()) for b in batches} == expected
    if batch_size % 2 == 0 and n % batch_size == 0:
        assert {int(tgt[b].sum()) for b in batches} == {batch_size * (n + 1) // 2}  # every batch the same tokens
    tokens = BucketBatcher(tgt_lengths=tgt, batch_size=batch_size, max_tokens=60, seed=1).batches(0)
    assert all(torch.equal(tgt[b].sort().values, tgt[b]) for b in tokens)  # max_tokens batches are cut in order


def test_pools_mix_lengths_and_regroup_pairs_every_epoch() -> None:
    tgt = torch.arange(1, 101)  # all lengths differ: a batch of one sorted pool spans batch_size - 1
    spans, groups = {}, {}
    for pool_factor in (None, 4, 1):
        batcher = BucketBatcher(tgt_lengths=tgt, batch_size=5, pool_factor=pool_factor, balance_tokens=False, seed=2)
        batches = [batcher.batches(epoch) for epoch in (0, 1)]
        spans[pool_factor] = sum(int(tgt[b].max() - tgt[b].min()) for b in batches[0]) / len(batches[0])
        groups[pool_factor] = [{frozenset(b.tolist()) for b in epoch} for epoch in batches]
        assert batcher.count(0) == batcher.count(1) == 20
        for b in batches[0]:
            assert torch.equal(tgt[b], tgt[b].sort().values)  # sorted within the batch
    assert spans[None] == 4 and 4 < spans[4] < spans[1]  # one pool sorts all; a pool of 1 batch is random
    assert groups[None][0] == groups[None][1]  # distinct lengths: the same batches every epoch
    assert groups[4][0] != groups[4][1] and groups[1][0] != groups[1][1]
    tied = BucketBatcher(tgt_lengths=torch.full((20,), 7), batch_size=5, seed=2)  # one sorted pool, equal lengths
    assert {frozenset(b.tolist()) for b in tied.batches(0)} != {frozenset(b.tolist()) for b in tied.batches(1)}


def test_epochs_are_deterministic_and_differ() -> None:
    torch.manual_seed(0)
    lengths = torch.randint(1, 20, (200,))
    batcher = BucketBatcher(tgt_lengths=lengths, batch_size=8, seed=3)
    again = BucketBatcher(tgt_lengths=lengths, batch_size=8, seed=3)
    other_seed = BucketBatcher(tgt_lengths=lengths, batch_size=8, seed=4)

    def as_lists(batches):
        return [b.tolist() for b in batches]

    assert as_lists(batcher.batches(1)) == as_lists(again.batches(1))
    assert as_lists(batcher.batches(1)) != as_lists(batcher.batches(2))
    assert as_lists(batcher.batches(1)) != as_lists(other_seed.batches(1))
    assert as_lists(batcher.batches(1, skip=5)) == as_lists(batcher.batches(1))[5:]


def test_sharding_errors() -> None:
    lengths = torch.tensor([1, 2])
    with pytest.raises(NMTError, match="cannot be shared evenly among 3 ranks"):
        BucketBatcher(tgt_lengths=lengths, batch_size=4, seed=0, world_size=3)
    with pytest.raises(NMTError, match="rank 2 is outside"):
        BucketBatcher(tgt_lengths=lengths, batch_size=4, seed=0, rank=2, world_size=2)


def test_iterate_batches_collates_the_right_pairs() -> None:
    pairs = pairs_of_lengths([1, 2, 3, 4, 5], [2, 2, 3, 3, 1])
    batcher = BucketBatcher(tgt_lengths=pairs.lengths()[1], batch_size=2, seed=1)
    batches = list(iterate_batches(pairs, batcher, epoch=0))
    assert sorted(int(i) for b in batches for i in b.index) == [0, 1, 2, 3, 4]
    for batch in batches:
        for row, i in enumerate(batch.index.tolist()):
            assert batch.src[row, 0] == 10 + i and batch.src_lengths[row] == [1, 2, 3, 4, 5][i] + 1


def test_unwritable_cache_only_warns(tmp_path, caplog) -> None:
    blocker = write(tmp_path / "not-a-dir", "")
    src = tgt = word_tokenizer(["the", "dog"])
    with caplog.at_level(logging.WARNING, logger="nmt.data"):
        pairs = encode_corpus(ParallelText(EN, DE, "test corpus"), src, tgt, cache_dir=blocker / "cache")
    assert "cannot write the token-id cache" in caplog.text
    assert pairs[0].src == [4, 5, 1]
