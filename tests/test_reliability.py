"""Issue 9 end to end: every user mistake in every CLI ends in one message and status 1 (2 for
usage), checkpoints never run code, and nmt-translate gives exactly one output line per input line.

The CLIs run in-process (``main(argv)``) on files made in a temp dir; test_signals.py runs the
console scripts as subprocesses.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import io
import os
import pickle
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from test_cli_translate import WORDS, make_checkpoint

from nmt import checkpoint
from nmt import translate as translate_lib
from nmt.cli import align, common, evaluate, sample, train, translate
from nmt.config import AttentionConfig, DataConfig
from nmt.data import Example, collate
from nmt.errors import NMTError
from nmt.objective import dev_perplexity
from nmt.sample import write_sample_corpus
from nmt.tokenizer import SPECIALS, SentencePieceTokenizer, WordTokenizer

CLIS: dict[str, Callable[[Sequence[str] | None], int]] = {
    "nmt-translate": translate.main,
    "nmt-evaluate": evaluate.main,
    "nmt-train": train.main,
    "nmt-align": align.main,
    "nmt-sample": sample.main,
}
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
pytestmark = pytest.mark.usefixtures("one_thread")


class Result(NamedTuple):
    status: int
    out: str
    err: str


def run_cli(prog: str, argv: Sequence[str], stdin: bytes, capsys, monkeypatch) -> Result:
    """Run ``prog`` in-process with ``stdin``; argparse's SystemExit becomes the status."""
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(stdin), encoding="utf-8"))
    try:
        status = CLIS[prog](list(argv))
    except SystemExit as exit_info:
        status = exit_info.code
    out, err = capsys.readouterr()
    return Result(status, out, err)


class _RunsCode:
    """Unpickling this calls ``touch MARKER``: what a crafted checkpoint would do if it were loaded unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (os.system, (f"touch {self.marker}",))


def _with_header(body: bytes) -> bytes:
    """``body`` behind a valid nmt header (right length and checksum), as a forger would write it."""
    return checkpoint._HEADER.pack(checkpoint.MAGIC, len(body), hashlib.sha256(body).digest()) + body


def _bad_checkpoints(directory: Path, good: Path, marker: Path) -> None:
    data = good.read_bytes()
    (directory / "empty.pt").write_bytes(b"")
    (directory / "truncated.pt").write_bytes(data[: len(data) // 2])
    flipped = bytearray(data)
    flipped[-100] ^= 0x01
    (directory / "corrupt.pt").write_bytes(bytes(flipped))
    torch.save({"model": {"w": torch.zeros(2)}}, directory / "foreign.pt")
    (directory / "text.pt").write_text("not a checkpoint\n", encoding="utf-8")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(checkpoint, "VERSION", 99)
        checkpoint.save_checkpoint(directory / "future.pt", {"model": {}})
    checkpoint.save_checkpoint(directory / "evil.pt", {"model": _RunsCode(marker)})
    (directory / "evil-raw.pt").write_bytes(_with_header(pickle.dumps({"model": _RunsCode(marker)}, protocol=2)))
    (directory / "evil-p4.pt").write_bytes(_with_header(pickle.dumps({"model": _RunsCode(marker)}, protocol=4)))


@pytest.fixture(scope="module")
def paths(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Good and bad inputs for every CLI, by name (used as ``{name}`` in the cases' argv)."""
    root = tmp_path_factory.mktemp("reliability")
    words = WordTokenizer(words=[*SPECIALS, *WORDS])
    good = make_checkpoint(root / "model.pt", words)
    make_checkpoint(root / "fewer-words.pt", WordTokenizer(words=[*SPECIALS, *WORDS[:5]]))
    make_checkpoint(root / "location.pt", words, attention=AttentionConfig(score="location", max_src_len=6))
    _bad_checkpoints(root, good, root / "pwned")
    files = {
        "one.txt": b"the cat\n",
        "two.txt": b"the cat\na dog\n",
        "latin.txt": b"the cat\nthe \xe9 cat\n",  # Latin-1, not UTF-8
        "empty.txt": b"",
        "long.txt": " ".join(WORDS).encode() + b"\n",  # 10 words + EOS: over the location model's 6
        "typo.yaml": b"train:\n  lr: 0.1\n  optimiser: sgd\n",
        "broken.yaml": b"train: [1, 2\n",
        "latin.yaml": b"train:\n  save_dir: caf\xe9\n",
        "corpus/empty.en": b"",
        "corpus/empty.de": b"",
        "corpus/uneven.en": b"a b\nc d\n",
        "corpus/uneven.de": b"x y\n",
        "corpus/latin.en": b"a b\nc \xff d\n",
        "corpus/latin.de": b"x y\nz w\n",
    }
    for name, data in files.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(data)
    write_sample_corpus(root / "sample", pairs=30, seed=5)
    (root / "train.yaml").write_text(
        f"data:\n  train: {root}/sample/train\n  dev: {root}/sample/dev\n  tokenizer: word\n  vocab_size: 40\n"
        f"model:\n  embed: 8\n  hidden: 8\n  layers: 1\ntrain:\n  save_dir: {root}/run\n  max_steps: 2\n",
        encoding="utf-8",
    )
    (root / "a-directory").mkdir()
    return {"dir": str(root)}


T = "nmt-train --config {dir}/train.yaml"
TRANSLATE = "nmt-translate --checkpoint {dir}/model.pt"
EVALUATE = "nmt-evaluate --ref {dir}/two.txt"
ALIGN = "nmt-align --checkpoint {dir}/model.pt --out {dir}/aligned"


def case(name: str, command: str, message: str, *, stdin: bytes = b"the cat\n", marks: object = ()) -> object:
    """One bad input: ``command`` (split at spaces, "{dir}" the fixture's temp dir) must fail with ``message``."""
    return pytest.param(command, stdin, message, id=name, marks=marks)


USER_ERRORS = [
    # checkpoints
    case("missing checkpoint", "nmt-translate --checkpoint {dir}/nothere.pt", "nothere.pt: no such checkpoint"),
    case("checkpoint is a directory", "nmt-translate --checkpoint {dir}", "cannot read checkpoint (Is a directory)"),
    case("empty checkpoint", "nmt-translate --checkpoint {dir}/empty.pt", "empty.pt: empty file (0 bytes)"),
    case("truncated checkpoint", "nmt-translate --checkpoint {dir}/truncated.pt", "truncated.pt: truncated checkpoint"),
    case("corrupt checkpoint", "nmt-translate --checkpoint {dir}/corrupt.pt", "corrupt.pt: corrupt checkpoint: the"),
    case("torch file, not nmt", "nmt-translate --checkpoint {dir}/foreign.pt", "foreign.pt: not an nmt checkpoint"),
    case("text file as checkpoint", "nmt-translate --checkpoint {dir}/text.pt", "text.pt: not an nmt checkpoint"),
    case("other version", "nmt-translate --checkpoint {dir}/future.pt", "future.pt: checkpoint version 99 cannot be"),
    case("crafted pickle", "nmt-translate --checkpoint {dir}/evil.pt", "evil.pt: refused to load"),
    case("crafted raw pickle", ALIGN + " --checkpoint {dir}/evil-raw.pt --src {dir}/one.txt", "refused to load"),
    case("crafted protocol-4 pickle", EVALUATE + " --checkpoint {dir}/evil-p4.pt --src {dir}/two.txt", "refused to"),
    case(
        "ensemble vocabulary mismatch",
        TRANSLATE + " {dir}/fewer-words.pt",
        "fewer-words.pt and {dir}/model.pt have different src tokenizers",
    ),
    # input and output files
    case("missing input", TRANSLATE + " --input {dir}/nothere.txt", "nothere.txt: no such file"),
    case("input is a directory", TRANSLATE + " --input {dir}", "{dir}: cannot read (Is a directory)"),
    case(
        "invalid UTF-8 input",
        TRANSLATE + " --input {dir}/latin.txt",
        "latin.txt:2: invalid UTF-8 (byte 0xe9 at column 5); convert the file to UTF-8 (e.g. iconv -f latin1 -t "
        "utf-8) or pass --replace-invalid",
    ),
    case("invalid UTF-8 on stdin", TRANSLATE, "<stdin>:2: invalid UTF-8", stdin=b"ok\n\xc3\n"),
    case("output in a missing dir", TRANSLATE + " --output {dir}/no/out.txt", "{dir}/no is not an existing directory"),
    case("output is a directory", TRANSLATE + " --output {dir}/a-directory", "a-directory: is a directory"),
    case("CUDA where none", TRANSLATE + " --device cuda", "--device cuda: CUDA is not available here", marks=NO_CUDA),
    case("not a device", TRANSLATE + " --device gpu0", "--device 'gpu0' is not a device name"),
    case("bad search setting", TRANSLATE + " --beam 0", "decode.beam must be at least 1"),
    case("unbounded length ratio", TRANSLATE + " --max-len-ratio inf", "decode.max_len_ratio must be a finite number"),
    # nmt-evaluate
    case("hyp/ref line counts", EVALUATE + " --hyp {dir}/one.txt", "one.txt has 1 lines but {dir}/two.txt has 2"),
    case("empty hypotheses", "nmt-evaluate --hyp {dir}/empty.txt --ref {dir}/empty.txt", "empty.txt is empty"),
    case("invalid UTF-8 ref", "nmt-evaluate --hyp {dir}/two.txt --ref {dir}/latin.txt", "latin.txt:2: invalid UTF-8"),
    case("missing reference", "nmt-evaluate --hyp {dir}/two.txt --ref {dir}/nothere.txt", "nothere.txt: no such file"),
    case(
        "BLEU tokenizer not installed",
        "nmt-evaluate --hyp {dir}/two.txt --ref {dir}/two.txt --tokenize ja-mecab",
        "tokenize 'ja-mecab' is not available here: Japanese tokenization requires extra dependencies",
        marks=pytest.mark.skipif(importlib.util.find_spec("MeCab") is not None, reason="MeCab is installed"),
    ),
    case(
        "translations to a missing dir",
        EVALUATE + " --checkpoint {dir}/model.pt --src {dir}/two.txt --output {dir}/no/hyp.txt",
        "{dir}/no is not an existing directory",
    ),
    # nmt-train: configs
    case("missing config", "nmt-train --config {dir}/nothere.yaml", "nothere.yaml: cannot read config (No such file"),
    case("config is a directory", "nmt-train --config {dir}", "cannot read config (Is a directory)"),
    case(
        "unknown key in the config file",
        "nmt-train --config {dir}/typo.yaml",
        "typo.yaml:3: unknown key 'train.optimiser' (did you mean 'optimizer'?)",
    ),
    case("config not YAML", "nmt-train --config {dir}/broken.yaml", "broken.yaml:2: not valid YAML: expected ','"),
    case("config not UTF-8", "nmt-train --config {dir}/latin.yaml", "latin.yaml:2: not valid UTF-8 (byte 0xe9)"),
    case("unknown key in an override", T + " model.hiden=8", "unknown key 'model.hiden' (did you mean 'hidden'?)"),
    case("bad value type", T + " train.lr=fast", "train.lr: expected float, got 'fast'"),
    case("unknown choice", T + " train.optimizer=sdg", "unknown value 'sdg'; choose one of sgd, adam (did you mean"),
    case("override without =", T + " train.lr", "override 'train.lr' is not of the form key=value"),
    case("CUDA for training where none", T + " train.device=cuda", "this machine has no usable CUDA", marks=NO_CUDA),
    case("specials only", T + " data.vocab_size=4", "data.vocab_size=4 leaves no room beside the 4 specials"),
    # model and decode settings are checked before the corpus is read (which would fail here)
    case("bad model setting", T + " model.attention.score=dott data.train=/no", "unknown value 'dott'; choose one of"),
    case("bad decode setting", T + " decode.beam=0 data.train=/no", "decode.beam must be at least 1, got 0"),
    case("bad tokenizer setting", T + " data.tokenizer=wrod data.train=/no", "'wrod'; choose one of sentencepiece"),
    # nmt-train: corpora and the run directory
    case("missing corpus", T + " data.train={dir}/nothere", "nothere.en: no such file"),
    case("empty corpus", T + " data.train={dir}/corpus/empty", "empty.en: empty corpus (no lines)"),
    case("corpus line counts", T + " data.train={dir}/corpus/uneven", "uneven.en has 2 lines but {dir}/corpus/uneven"),
    case("invalid UTF-8 corpus", T + " data.train={dir}/corpus/latin", "latin.en:2: invalid UTF-8 (byte 0xff at col"),
    case("save_dir is a file", T + " train.save_dir={dir}/one.txt", "one.txt: cannot use as train.save_dir"),
    case("resume without a run", T + " train.save_dir={dir}/fresh --resume", "nothing to resume"),
    # nmt-align
    case("nothing to align", ALIGN + " --src {dir}/empty.txt", "empty.txt is empty; there is nothing to align"),
    case("src/tgt counts", ALIGN + " --src {dir}/two.txt --tgt {dir}/one.txt", "two.txt has 2 lines but {dir}/one"),
    case("invalid UTF-8 source", ALIGN + " --src {dir}/latin.txt", "latin.txt:2: invalid UTF-8"),
    case("--out is a file", ALIGN + " --src {dir}/one.txt --out {dir}/one.txt", "cannot make the output directory"),
    # nmt-sample
    case("sample into a file", "nmt-sample {dir}/one.txt", "one.txt: cannot write the sample corpus there"),
    case("too few pairs", "nmt-sample {dir}/s --pairs 2", "--pairs 2 is too few"),
]


@pytest.mark.parametrize(("command", "stdin", "message"), USER_ERRORS)
def test_a_user_mistake_is_one_line_naming_it_and_status_1(paths, capsys, monkeypatch, command, stdin, message):
    prog, *argv = command.format(**paths).split()
    status, out, err = run_cli(prog, [*argv, "--quiet"], stdin, capsys, monkeypatch)
    assert (status, out) == (1, "")
    assert err.startswith(f"{prog}: error: ") and err.count("\n") == 1, err  # one line, no traceback
    assert message.format(**paths) in err


def test_a_message_from_elsewhere_is_still_one_line(paths, capsys, monkeypatch) -> None:
    def hub_failure(*args: object, **kwargs: object) -> None:
        raise NMTError("cannot load the dataset from the hub: Couldn't reach\nhttps://huggingface.co (offline)")

    monkeypatch.setattr(translate, "load_translator", hub_failure)
    status, _, err = run_cli("nmt-translate", ["--checkpoint", "x.pt"], b"", capsys, monkeypatch)
    assert (status, err) == (
        1,
        "nmt-translate: error: cannot load the dataset from the hub: Couldn't reach https://huggingface.co (offline)\n",
    )


def test_crafted_checkpoints_run_no_code(paths, capsys, monkeypatch) -> None:
    for name in ("evil.pt", "evil-raw.pt", "evil-p4.pt"):
        argv = ["--checkpoint", f"{paths['dir']}/{name}"]
        status, _, err = run_cli("nmt-translate", argv, b"a\n", capsys, monkeypatch)
        assert status == 1 and "which could run code; only load checkpoints written by nmt-train" in err
    with pytest.raises(NMTError, match="refused to load"):
        checkpoint.load_model(f"{paths['dir']}/evil.pt")
    assert not Path(paths["dir"], "pwned").exists()


@pytest.mark.parametrize(
    ("prog", "argv"),
    [
        ("nmt-translate", ["--checkpoint", "{dir}/model.pt", "--beam", "many"]),
        ("nmt-translate", []),  # --checkpoint is required
        ("nmt-evaluate", ["--hyp", "{dir}/two.txt", "--ref", "{dir}/two.txt", "--src", "{dir}/two.txt"]),
        ("nmt-train", ["--epochs", "3"]),
        ("nmt-align", ["--checkpoint", "{dir}/model.pt", "--src", "{dir}/one.txt"]),  # no --out
        ("nmt-sample", []),
    ],
)
def test_usage_errors_exit_2(paths, capsys, monkeypatch, prog, argv) -> None:
    status, out, err = run_cli(prog, [arg.format(**paths) for arg in argv], b"", capsys, monkeypatch)
    assert (status, out) == (2, "")
    assert err.splitlines()[-1].startswith(f"{prog}: error: ") and "Traceback" not in err


@pytest.mark.parametrize(
    ("prog", "argv"),
    [
        ("nmt-translate", ["--checkpoint", "{dir}/truncated.pt"]),
        ("nmt-evaluate", ["--hyp", "{dir}/one.txt", "--ref", "{dir}/two.txt"]),
        ("nmt-train", ["--config", "{dir}/typo.yaml"]),
        ("nmt-align", ["--checkpoint", "{dir}/model.pt", "--src", "{dir}/empty.txt", "--out", "{dir}/al"]),
        ("nmt-sample", ["{dir}/one.txt"]),
    ],
)
def test_debug_shows_the_traceback(paths, monkeypatch, prog, argv) -> None:
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(b""), encoding="utf-8"))
    with pytest.raises(NMTError):
        CLIS[prog]([*(arg.format(**paths) for arg in argv), "--debug"])


def test_replace_invalid_turns_bad_bytes_into_u_fffd(paths, capsys, monkeypatch) -> None:
    latin = f"{paths['dir']}/latin.txt"
    argv = ["--hyp", latin, "--ref", latin, "--replace-invalid", "--metrics", "chrf"]
    status, out, _ = run_cli("nmt-evaluate", argv, b"", capsys, monkeypatch)
    assert status == 0 and out.startswith("chrF2 = 100.00")
    copier = ["--checkpoint", f"{paths['dir']}/model.pt", "--replace-unk", "--replace-invalid", "--input", latin]
    status, out, _ = run_cli("nmt-translate", copier, b"", capsys, monkeypatch)
    assert status == 0 and len(out.split("\n")) == 3
    argv = ["--checkpoint", f"{paths['dir']}/model.pt", "--src", latin, "--out", f"{paths['dir']}/al-latin"]
    assert run_cli("nmt-align", [*argv, "--replace-invalid", "--quiet"], b"", capsys, monkeypatch).status == 0
    argv = [*f"--config {paths['dir']}/train.yaml train.save_dir={paths['dir']}/latin-run".split(), "train.max_steps=1"]
    argv += [f"data.train={paths['dir']}/corpus/latin", "data.replace_invalid=true"]
    status, _, err = run_cli("nmt-train", argv, b"", capsys, monkeypatch)
    assert status == 0 and "latin.en:2: invalid UTF-8 (byte 0xff at column 3) and maybe further on: replaced" in err


@pytest.mark.parametrize("tgt", [[], ["--tgt", "{dir}/long.txt"]], ids=["translated", "forced"])
def test_every_command_reads_a_long_source_from_its_first_tokens(paths, capsys, monkeypatch, tgt) -> None:
    """One policy (nmt.source_length): a source longer than a location scorer reads loses its tail, never its line."""
    model, long = f"{paths['dir']}/location.pt", f"{paths['dir']}/long.txt"  # 10 words + EOS, over the model's 6
    out = f"{paths['dir']}/al-long-{len(tgt)}"
    argv = ["--checkpoint", model, "--src", long, *(a.format(**paths) for a in tgt), "--out", out, "--heatmaps", "0"]
    status, _, err = run_cli("nmt-align", argv, b"", capsys, monkeypatch)
    doing = "aligning" if tgt else "translating"  # the reference, or the model's own translation
    assert status == 0 and f"input line 1 has 10 tokens; {doing} its first 5" in err
    links = Path(out, "alignments.txt").read_text().splitlines()
    assert len(links) == 1 and all(int(link.split("-")[0]) < 5 for link in links[0].split())
    status, stdout, err = run_cli("nmt-translate", ["--checkpoint", model, "--input", long], b"", capsys, monkeypatch)
    assert status == 0 and len(stdout.splitlines()) == 1
    assert "input line 1 has 10 tokens; translating its first 5" in err


def test_a_cuda_device_that_is_not_there(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert common.resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(NMTError, match=r"--device cuda:1: this machine has 1 CUDA device\(s\), numbered from 0"):
        common.resolve_device("cuda:1")


def test_out_of_memory_while_translating_names_the_batch(paths, capsys, monkeypatch) -> None:
    def out_of_memory(*args: object, **kwargs: object) -> None:
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    monkeypatch.setattr(translate_lib, "decode", out_of_memory)
    argv = ["--checkpoint", f"{paths['dir']}/model.pt", "--batch-tokens", "100"]
    status, out, err = run_cli("nmt-translate", argv, b"the cat\na dog ran\n\n", capsys, monkeypatch)
    assert (status, out) == (1, "")
    assert "out of memory translating a batch of 2 lines of up to 4 tokens (the longest is input line 2)" in err
    assert "lower --batch-tokens (now 100), --beam (now 2) or --max-input-len (now 250)" in err


def test_out_of_memory_while_validating_names_the_batch() -> None:
    class Hungry(torch.nn.Module):
        def forward(self, *args: object, **kwargs: object) -> None:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")

    batch = collate([Example([4, 5], [6, 7, 8]), Example([4], [6])], [0, 1])
    with pytest.raises(
        NMTError, match=r"validating 1 batch\(es\) holding 2 sentences and 6 target tokens .*batch_size"
    ):
        dev_perplexity(Hungry(), [batch], device=torch.device("cpu"), autocast=contextlib.nullcontext)


def test_the_next_save_removes_what_a_killed_save_left(tmp_path) -> None:
    with subprocess.Popen([sys.executable, "-c", "pass"]) as gone:
        pass  # the with waits for it to end
    left = tmp_path / f".step_00000007.pt.tmp-{gone.pid}"
    in_flight = tmp_path / f".step_00000009.pt.tmp-{os.getpid()}"  # a save of a process that is still running
    left.write_bytes(b"half a checkpoint")
    in_flight.write_bytes(b"being written")
    checkpoint.save_run_checkpoint(tmp_path, {"step": 8}, keep_last=2, best=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == [in_flight.name, "last.pt", "step_00000008.pt"]


# ---------------------------------------------------------------------------------------------
# nmt-translate never loses or shifts a line


@pytest.fixture(scope="module")
def copiers(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    """Options for models that say <unk> at every step, replaced by the most attended source word:
    what comes out depends on what each line says. One per tokenizer kind."""
    root = tmp_path_factory.mktemp("copiers")
    spm = SentencePieceTokenizer.train(
        lines=[" ".join(WORDS[i:] + WORDS[:i]) for i in range(10)] * 5, config=DataConfig(vocab_size=30)
    )
    tokenizers = {"word": WordTokenizer(words=[*SPECIALS, *WORDS]), "sentencepiece": spm}
    return {
        kind: ["--checkpoint", str(make_checkpoint(root / f"{kind}.pt", tokenizer, unk_bias=50.0)), "--replace-unk"]
        for kind, tokenizer in tokenizers.items()
    }


def translate_bytes(argv: Sequence[str], data: bytes, capsys, monkeypatch) -> list[str]:
    """nmt-translate's output lines for ``data`` on stdin: each ends with LF and holds no other line break
    (CR, U+2028, U+0085, ...: anything ``str.splitlines`` splits at)."""
    status, out, err = run_cli("nmt-translate", [*argv, "--quiet"], data, capsys, monkeypatch)
    assert status == 0, err
    assert out == "" or out.endswith("\n")
    assert out.splitlines() == out.split("\n")[:-1]
    return out.splitlines()


EDGE_LINES = {
    "empty": "",
    "spaces": "   ",
    "tab": "\t",
    "control characters": "\x00\x01\x07\x1b\x7f",
    "separators str.splitlines splits at": "the\x0bcat\x0cran\x1c\x1d\x1e\x85on\u2028the\u2029mat",
    "only unknown words": "zebra gnu yak",
    "lone carriage return inside": "the cat\rsat",
    "very long": " ".join(WORDS * 100),  # 1000 words, over --max-input-len
    "one huge word": "x" * 100_000,
    "mixed scripts": "the кот 猫 قطة 😀 e\u0301 sat",
    "a dog": "a dog ran",
}


@pytest.mark.parametrize("kind", ["word", "sentencepiece"])
@pytest.mark.parametrize("eol", ["\n", "\r\n"])
def test_every_awkward_line_gives_exactly_one_output_line(copiers, capsys, monkeypatch, kind, eol) -> None:
    lines = list(EDGE_LINES.values())
    argv = [*copiers[kind], "--max-input-len", "30"]
    for final_newline in (True, False):  # the last line is non-empty, so a missing final LF loses nothing
        data = eol.join(lines) + (eol if final_newline else "")
        out = translate_bytes(argv, data.encode(), capsys, monkeypatch)
        assert len(out) == len(lines)
        assert out[:3] == ["", "", ""]  # blank lines stay blank
        assert all(out[4:])  # the copier says something for every line with a word in it
        assert out == [translate_bytes(argv, f"{line}\n".encode(), capsys, monkeypatch)[0] for line in lines]


def test_line_breaks_inside_a_dictionary_translation_stay_on_one_line(copiers, tmp_path, capsys, monkeypatch):
    dictionary = tmp_path / "dict.tsv"
    dictionary.write_text("zebra\tZe\rbra\u2028Zebra\x85Zeb\x0bra\x1cZ\u2029z\n", encoding="utf-8")
    argv = [*copiers["word"], "--dict", str(dictionary)]
    out = translate_bytes(argv, b"zebra\n\nzebra zebra\n", capsys, monkeypatch)
    assert len(out) == 3 and "Ze bra Zebra Zeb ra Z z" in out[0]


def test_a_byte_order_mark_is_not_a_line(copiers, capsys, monkeypatch) -> None:
    out = translate_bytes(copiers["word"], "\ufeffthe cat\n\na dog\n".encode(), capsys, monkeypatch)
    assert out == translate_bytes(copiers["word"], b"the cat\n\na dog\n", capsys, monkeypatch)


# characters from several scripts, marks, joiners, controls and Unicode line/paragraph separators;
# LF separates lines and a CR before it belongs to the line ending, so lines neither hold LF nor end in CR
_ALPHABET = "ab é ß кот λ 中文 ع ש क ✓😀 \u0301\u200d\u200f\u00a0\t\r\x00\x01\x07\x0b\x0c\x1b\x1c\x7f\x85\u2028\u2029"
_LINE = st.one_of(
    st.just(""),
    st.sampled_from(["", " ", "\t", "\x00", "\u2028", "\x85 \x0c"]),
    st.lists(st.one_of(st.sampled_from(WORDS), st.text(_ALPHABET, min_size=1, max_size=5)), max_size=8)
    .map(" ".join)
    .map(lambda line: line.rstrip("\r")),
)


@settings(
    max_examples=40,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    lines=st.lists(_LINE, min_size=1, max_size=7),
    eol=st.sampled_from(["\n", "\r\n"]),
    final_newline=st.booleans(),
    kind=st.sampled_from(["word", "sentencepiece"]),
)
def test_random_lines_keep_their_count_and_order(copiers, capsys, monkeypatch, lines, eol, final_newline, kind):
    """Each output line is the translation of the input line at the same place: the same as
    translating that line alone (batches of several lines, sorted by length, then restored)."""
    data = eol.join(lines) + (eol if final_newline or lines[-1] == "" else "")
    argv = [*copiers[kind], "--batch-tokens", "24", "--max-input-len", "12"]
    out = translate_bytes(argv, data.encode(), capsys, monkeypatch)
    assert len(out) == len(lines)
    alone = {line: translate_bytes(argv, f"{line}\n".encode(), capsys, monkeypatch)[0] for line in set(lines)}
    assert out == [alone[line] for line in lines]
    n_best = translate_bytes([*argv, "--n-best", "2"], data.encode(), capsys, monkeypatch)
    assert [int(row.split(" ||| ")[0]) for row in n_best] == [i for i in range(len(lines)) for _ in range(2)]
    assert [row.split(" ||| ")[1] for row in n_best[::2]] == out


# ---------------------------------------------------------------------------------------------
# The console scripts themselves


def console(*argv: str, stdin: bytes = b"") -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, input=stdin.decode(), capture_output=True, text=True, timeout=120, check=False)


def test_console_scripts_report_user_errors_in_one_line(paths) -> None:
    root = paths["dir"]
    result = console("nmt-translate", "--checkpoint", f"{root}/truncated.pt", stdin=b"a\n")
    assert (result.returncode, result.stdout) == (1, "")
    assert result.stderr.startswith(f"nmt-translate: error: {root}/truncated.pt: truncated checkpoint: ")
    assert result.stderr.count("\n") == 1
    debug = console("nmt-translate", "--checkpoint", f"{root}/truncated.pt", "--debug", stdin=b"a\n")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "NMTError" in debug.stderr


def test_a_closed_stdout_stops_quietly(paths) -> None:
    """``nmt-translate ... | head -0``: the reader is gone before the output comes."""
    argv = ["nmt-translate", "--checkpoint", f"{paths['dir']}/model.pt", "--quiet"]
    with subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        process.stdout.close()
        _, err = process.communicate(b"the cat\n" * 50, timeout=120)
    assert process.returncode == 141 and err == b""
