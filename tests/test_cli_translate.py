"""nmt-translate and nmt-evaluate --checkpoint, run in-process on tiny checkpoints in a temp dir."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import pytest
import torch

from nmt.checkpoint import save_checkpoint
from nmt.cli import evaluate as evaluate_cli
from nmt.cli import translate as translate_cli
from nmt.config import AttentionConfig, Config, DataConfig, DecodeConfig, ModelConfig, to_dict
from nmt.model import Seq2Seq
from nmt.tokenizer import SPECIALS, UNK_ID, SentencePieceTokenizer, Tokenizer, WordTokenizer

WORDS = ["the", "cat", "sat", "on", "mat", "a", "dog", "ran", "in", "park"]
TEXT = ["the cat sat on the mat", "a dog ran in the park", "the dog sat", "a cat ran on a mat in the park"]


def make_checkpoint(
    path: Path, tokenizer: Tokenizer, *, seed: int = 0, unk_bias: float = 0.0, attention: AttentionConfig | None = None
) -> Path:
    """A random 1-layer model; ``unk_bias`` added to the <unk> logit makes it say <unk> a lot."""
    attention = attention or AttentionConfig()
    config = Config(
        model=ModelConfig(embed=8, hidden=8, layers=1, dropout=0.0, reverse_source=True, attention=attention),
        decode=DecodeConfig(beam=2, max_len=8, max_len_ratio=2.0, batch_tokens=12),
    )
    torch.manual_seed(seed)
    model = Seq2Seq(config=config.model, src_vocab=tokenizer.vocab_size, tgt_vocab=tokenizer.vocab_size)
    with torch.no_grad():
        model.generator.bias[UNK_ID] += unk_bias
    state = tokenizer.to_state()
    save_checkpoint(
        path, {"config": to_dict(config), "model": model.state_dict(), "tokenizers": {"src": state, "tgt": state}}
    )
    return path


@pytest.fixture(scope="module")
def word_tokenizer() -> WordTokenizer:
    return WordTokenizer(words=[*SPECIALS, *WORDS])


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory, word_tokenizer: WordTokenizer) -> str:
    return str(make_checkpoint(tmp_path_factory.mktemp("ckpt") / "model.pt", word_tokenizer))


@pytest.fixture(scope="module")
def copier(tmp_path_factory: pytest.TempPathFactory, word_tokenizer: WordTokenizer) -> list[str]:
    """Options for a model that says <unk> at every step, replaced by source words: its output
    shows what it read."""
    path = make_checkpoint(tmp_path_factory.mktemp("ckpt") / "unk.pt", word_tokenizer, unk_bias=50.0)
    return ["--checkpoint", str(path), "--replace-unk"]


def translate(argv: list[str], data: bytes, capsys: pytest.CaptureFixture[str], monkeypatch) -> tuple[int, str, str]:
    """Run nmt-translate on ``data`` as stdin; returns (exit status, stdout, stderr)."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data), encoding="utf-8"))
    status = translate_cli.main(argv)
    out, err = capsys.readouterr()
    return status, out, err


def test_one_output_line_for_every_input_line(checkpoint, capsys, monkeypatch) -> None:
    long_line = " ".join(WORDS * 5)  # 50 tokens, over --max-input-len 20
    lines = ["the cat sat", "", "   ", long_line, "\t", "a dog\u2028ran", "a dog ran"]
    data = "\r\n".join(lines).encode()  # Windows line endings, no final newline
    argv = ["--checkpoint", checkpoint, "--max-input-len", "20", "--min-len-ratio", "0.5"]
    status, out, err = translate(argv, data, capsys, monkeypatch)
    assert status == 0
    got = out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)
    assert [got[i] for i in (1, 2, 4)] == ["", "", ""]
    assert all(got[i] for i in (0, 3, 5, 6))  # at least one word each: --min-len-ratio
    assert "input line 4 has 50 tokens; translating its first 20" in err


@pytest.mark.parametrize("workers", ["1", "3"])
def test_order_is_restored(copier, capsys, monkeypatch, workers) -> None:
    # lines of 1-7 words + EOS in batches of at most 24 padded tokens: several batches of several
    # lines, sorted by length, searched one or three at a time; each line alone must come out the same
    lines = [" ".join(WORDS[i : i + 1 + i % 7]) for i in range(10)]
    argv = [*copier, "--batch-tokens", "24", "--workers", workers]
    together = translate(argv, "\n".join(lines).encode(), capsys, monkeypatch)[1]
    alone = [translate(argv, line.encode(), capsys, monkeypatch)[1] for line in lines]
    assert together == "".join(alone)


def test_long_line_is_translated_from_its_prefix(copier, capsys, monkeypatch) -> None:
    words = [*WORDS, *WORDS, "zebra", "gnu", "yak", "emu", "owl"]  # 25 words, the last 5 unknown
    argv = [*copier, "--max-input-len", "20"]
    status, out, err = translate(argv, " ".join(words).encode(), capsys, monkeypatch)
    assert status == 0 and "input line 1 has 25 tokens; translating its first 20" in err
    assert out == translate(argv, " ".join(words[:20]).encode(), capsys, monkeypatch)[1]
    assert set(out.split()) <= set(WORDS)


def test_location_scorer_limits_the_input(tmp_path, word_tokenizer, capsys, monkeypatch) -> None:
    location = AttentionConfig(score="location", max_src_len=6)
    path = str(make_checkpoint(tmp_path / "loc.pt", word_tokenizer, attention=location))
    status, out, err = translate(["--checkpoint", path], " ".join(WORDS).encode(), capsys, monkeypatch)
    assert status == 0 and len(out.splitlines()) == 1
    assert "input line 1 has 10 tokens; translating its first 5" in err  # 5 words + EOS = 6 positions


def test_read_lines(tmp_path) -> None:
    path = tmp_path / "in.txt"
    path.write_bytes(b"\xef\xbb\xbfone\r\ntwo \xe2\x80\xa8 still two\r\n\r\nfour")
    assert translate_cli.read_lines(str(path)) == ["one", "two \u2028 still two", "", "four"]
    path.write_bytes(b"")
    assert translate_cli.read_lines(str(path)) == []


def test_n_best_format(checkpoint, capsys, monkeypatch) -> None:
    data = f"{TEXT[0]}\n\n{TEXT[1]}\n".encode()
    status, out, _ = translate(["--checkpoint", checkpoint, "--beam", "3", "--n-best", "3"], data, capsys, monkeypatch)
    assert status == 0
    rows = [line.split(" ||| ") for line in out.splitlines()]
    assert [int(index) for index, _, _ in rows] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [(text, float(score)) for _, text, score in rows[3:6]] == [("", 0.0)] * 3
    for first in (0, 6):
        scores = [float(score) for _, _, score in rows[first : first + 3]]
        assert scores == sorted(scores, reverse=True)
        assert len({text for _, text, _ in rows[first : first + 3]}) == 3
    best = translate(["--checkpoint", checkpoint, "--beam", "3"], data, capsys, monkeypatch)[1].splitlines()
    assert [rows[0][1], rows[6][1]] == [best[0], best[2]]


def test_output_file_and_input_file(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    source = tmp_path / "in.txt"
    source.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    target = tmp_path / "out.txt"
    status, out, _ = translate(
        ["--checkpoint", checkpoint, "--input", str(source), "--output", str(target)], b"", capsys, monkeypatch
    )
    assert (status, out) == (0, "")
    assert (
        target.read_text(encoding="utf-8")
        == translate(["--checkpoint", checkpoint], source.read_bytes(), capsys, monkeypatch)[1]
    )


def test_ensemble(checkpoint, tmp_path, word_tokenizer, capsys, monkeypatch) -> None:
    other = str(make_checkpoint(tmp_path / "other.pt", word_tokenizer, seed=1))
    status, out, _ = translate(["--checkpoint", checkpoint, other], "\n".join(TEXT).encode(), capsys, monkeypatch)
    assert status == 0 and len(out.splitlines()) == len(TEXT)
    # an ensemble of a checkpoint with itself translates like the checkpoint
    pair = translate(["--checkpoint", checkpoint, checkpoint], "\n".join(TEXT).encode(), capsys, monkeypatch)[1]
    assert pair == translate(["--checkpoint", checkpoint], "\n".join(TEXT).encode(), capsys, monkeypatch)[1]


def test_replace_unk_with_dictionary(tmp_path, word_tokenizer, capsys, monkeypatch) -> None:
    chatty = str(make_checkpoint(tmp_path / "unk.pt", word_tokenizer, unk_bias=50.0))
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("cat\tKatze\n\ncat\tKater\n", encoding="utf-8")
    data = b"the zebra cat\n"
    plain = translate(["--checkpoint", chatty], data, capsys, monkeypatch)[1].split()
    assert set(plain) == {"<unk>"}
    argv = ["--checkpoint", chatty, "--replace-unk", "--dict", str(dictionary)]
    status, out, _ = translate(argv, data, capsys, monkeypatch)
    assert status == 0
    words = out.split()
    assert len(words) == len(plain)
    assert set(words) <= {"the", "zebra", "Katze"}  # source words, "cat" through the dictionary


def test_replace_unk_needs_a_model_with_attention(tmp_path, word_tokenizer, capsys, monkeypatch) -> None:
    path = make_checkpoint(tmp_path / "base.pt", word_tokenizer, attention=AttentionConfig(align="none"))
    status, out, err = translate(["--checkpoint", str(path), "--replace-unk"], b"the cat\n", capsys, monkeypatch)
    assert (status, out) == (1, "")
    (line,) = err.splitlines()
    assert "base.pt: --replace-unk copies the source word the attention points at" in line
    status, out, _ = translate(["--checkpoint", str(path)], b"the cat\n", capsys, monkeypatch)
    assert status == 0 and len(out.splitlines()) == 1  # without --replace-unk the base model translates


def test_sentencepiece_checkpoint(tmp_path, capsys, monkeypatch) -> None:
    tokenizer = SentencePieceTokenizer.train(lines=TEXT * 20, config=DataConfig(vocab_size=40))
    path = str(make_checkpoint(tmp_path / "spm.pt", tokenizer, unk_bias=50.0))
    data = "the cat\nZürich dog\n".encode()
    status, out, _ = translate(["--checkpoint", path, "--replace-unk"], data, capsys, monkeypatch)
    assert status == 0
    first, second = out.splitlines()
    assert set(first.split()) <= {"the", "cat"} and set(second.split()) <= {"Zürich", "dog"}


@pytest.mark.parametrize(
    ("argv", "data", "message"),
    [
        (["--checkpoint", "missing.pt"], b"a\n", "missing.pt: no such checkpoint"),
        (["--input", "missing.txt"], b"", "missing.txt: no such file"),
        ([], b"the cat\nthe \xff cat\n", "<stdin>:2: invalid UTF-8"),
        (["--beam", "2", "--n-best", "3"], b"a\n", "decode.n_best"),
        (["--dict", "x.tsv"], b"a\n", "--dict is only used with --replace-unk"),
        (["--device", "nonsense"], b"a\n", "--device 'nonsense'"),
        (["--device", "cpu", "--precision", "fp16"], b"a\n", "decode.precision=fp16 needs a CUDA device"),
    ],
)
def test_user_errors_exit_1_with_one_message(checkpoint, capsys, monkeypatch, argv, data, message) -> None:
    if "--checkpoint" not in argv:
        argv = ["--checkpoint", checkpoint, *argv]
    status, out, err = translate(argv, data, capsys, monkeypatch)
    assert (status, out) == (1, "")
    assert err.count("\n") == 1 and err.startswith("nmt-translate: error: ") and message in err


def test_bf16_search_gives_a_line_for_every_line(checkpoint, capsys, monkeypatch) -> None:
    argv = ["--checkpoint", checkpoint, "--precision", "bf16", "--min-len-ratio", "0.5"]
    status, out, _ = translate(argv, b"the cat sat\n\na dog ran\n", capsys, monkeypatch)
    assert status == 0
    got = out.split("\n")
    assert len(got) == 4 and got[0] and got[1] == "" and got[2] and got[3] == ""


def test_bad_dictionary_line(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("cat\tKatze\ndog Hund\n", encoding="utf-8")
    argv = ["--checkpoint", checkpoint, "--replace-unk", "--dict", str(dictionary)]
    status, _, err = translate(argv, b"a\n", capsys, monkeypatch)
    assert status == 1 and f"{dictionary}:2: expected 'source<TAB>target'" in err


def test_replace_invalid(checkpoint, capsys, monkeypatch) -> None:
    status, out, _ = translate(
        ["--checkpoint", checkpoint, "--replace-invalid"], b"the cat\nthe \xff cat\n", capsys, monkeypatch
    )
    assert status == 0 and len(out.splitlines()) == 2


def test_ensemble_needs_the_same_tokenizers(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    other = str(make_checkpoint(tmp_path / "other.pt", WordTokenizer(words=[*SPECIALS, *WORDS[:5]])))
    status, _, err = translate(["--checkpoint", checkpoint, other], b"a\n", capsys, monkeypatch)
    assert status == 1 and "different src tokenizers" in err


def test_evaluate_translates_and_scores(checkpoint, tmp_path, capsys, monkeypatch) -> None:
    source, reference, output = tmp_path / "src.txt", tmp_path / "ref.txt", tmp_path / "hyp.txt"
    source.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    reference.write_text("\n".join(TEXT) + "\n", encoding="utf-8")
    argv = ["--checkpoint", checkpoint, "--src", str(source), "--ref", str(reference), "--output", str(output)]
    assert evaluate_cli.main([*argv, "--metrics", "bleu", "chrf"]) == 0
    one_call = capsys.readouterr().out
    # the same translations as nmt-translate, and the same scores as nmt-evaluate --hyp
    assert (
        output.read_text(encoding="utf-8")
        == translate(["--checkpoint", checkpoint], source.read_bytes(), capsys, monkeypatch)[1]
    )
    assert evaluate_cli.main(["--hyp", str(output), "--ref", str(reference), "--metrics", "bleu", "chrf"]) == 0
    assert capsys.readouterr().out == one_call
    assert one_call.startswith("BLEU = ") and "nrefs:1|case:mixed|eff:no|tok:13a" in one_call


def test_evaluate_source_reference_mismatch(checkpoint, tmp_path, capsys) -> None:
    source, reference = tmp_path / "src.txt", tmp_path / "ref.txt"
    source.write_text("a\nb\n", encoding="utf-8")
    reference.write_text("a\n", encoding="utf-8")
    assert evaluate_cli.main(["--checkpoint", checkpoint, "--src", str(source), "--ref", str(reference)]) == 1
    assert f"{source} has 2 lines but {reference} has 1" in capsys.readouterr().err
