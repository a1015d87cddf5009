"""Prepare WMT'14 English-German in the layout configs/luong2015/ reads.

    python scripts/prepare_wmt14.py                                  # hub train + local newstests
    python scripts/prepare_wmt14.py --train /data/wmt14/train        # local train.en + train.de
    python scripts/prepare_wmt14.py --tokenize none --train /data/stanford/train \\
        --dev /data/stanford/newstest2013 --test /data/stanford/newstest2014    # already tokenized

Every split becomes ``OUT/{split}.parquet`` (split = train, validation, test) with the WMT
schema the configs read through ``datasets`` (``data.hf_dataset: parquet:data/wmt14/{split}.parquet``):
one ``translation`` column of ``{"en": ..., "de": ...}``. Validation and test are also written
as plain text for nmt-evaluate: ``{split}.en`` and ``{split}.de`` hold what the model reads and
writes, ``{split}.raw.de`` the untokenized reference.

Where each split comes from:

- train: ``--train PREFIX`` (``PREFIX.en`` + ``PREFIX.de``, or ``EN_FILE,DE_FILE``), else the
  Hugging Face hub (``wmt/wmt14``, config ``de-en``: Europarl, Common Crawl, News Commentary).
- validation: ``--dev``, else newstest2013 from ``--newstest-dir`` when it is there, else the hub.
- test: ``--test``, else newstest2014-filtered (the 2,737 sentences Luong et al. 2015 report on;
  the hub's test split is the full 3,003) from ``--newstest-dir``, else the hub.

Text is tokenized with sacreBLEU's 13a tokenizer by default (punctuation split from words), since
the configs use word vocabularies and the paper trained on tokenized text; ``--tokenize none``
keeps it as it is. A second run with the same sources finds everything up to date and writes
nothing (``OUT/manifest.json`` records each split's source, content hash and output hashes).
Without the hub and without ``--train`` the validation and test splits are still written and the
script ends with one message saying how to supply training data.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import socket
import sys
import urllib.parse
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import huggingface_hub.constants
import pyarrow as pa
import pyarrow.parquet as pq
from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

from nmt.cli.common import add_common_args, run, write_lines
from nmt.config import DataConfig, choose
from nmt.data import ParallelText, read_hf, read_text_pair, text_files
from nmt.errors import NMTError

SRC, TGT = "en", "de"
LAYOUT_VERSION = 1  # bump when the files written for a split change
SPLITS = ("validation", "test", "train")  # train last: without it the others are still written
DATA_KEY = {"train": "train", "validation": "dev", "test": "test"}  # our split name -> nmt.data's
OPTION = {"train": "--train", "validation": "--dev", "test": "--test"}
NEWSTEST = {"validation": "newstest2013", "test": "newstest2014-filtered"}
DEFAULT_NEWSTEST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "wmt-newstest-en-de"

TOKENIZERS: dict[str, Callable[[str], str]] = {"13a": Tokenizer13a(), "none": lambda line: line}
"""``--tokenize`` -> the function applied to every line of both languages."""


class Source(NamedTuple):
    """Where one split comes from.

    Attributes:
        description: for messages and the manifest.
        fingerprint: changes whenever the split's content would.
        read: loads the sentence pairs.
    """

    description: str
    fingerprint: str
    read: Callable[[], ParallelText]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prepare_wmt14",
        description="Write WMT'14 English-German as parquet (and plain-text test sets) for configs/luong2015/.",
        epilog=__doc__.split("\n\n", 1)[1],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", default="data/wmt14", help="output directory (default: data/wmt14)")
    parser.add_argument("--train", metavar="PREFIX", help="local training text: PREFIX.en + PREFIX.de, or EN,DE")
    parser.add_argument("--dev", metavar="PREFIX", help="local validation text (default: newstest2013)")
    parser.add_argument("--test", metavar="PREFIX", help="local test text (default: newstest2014-filtered)")
    parser.add_argument(
        "--newstest-dir", default=str(DEFAULT_NEWSTEST_DIR), help="where newstest2013.* and newstest2014-filtered.* are"
    )
    parser.add_argument("--tokenize", default="13a", choices=list(TOKENIZERS), help="applied to all text (default 13a)")
    parser.add_argument("--offline", action="store_true", help="never contact the Hugging Face hub")
    parser.add_argument("--hub", default="wmt/wmt14", help="hub dataset name (default wmt/wmt14)")
    parser.add_argument("--hub-config", default="de-en", help="hub dataset config (default de-en)")
    parser.add_argument("--cache-dir", help="the datasets download cache (default: the datasets default)")
    add_common_args(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    return run(_prepare, build_parser(), argv)


def _prepare(args: argparse.Namespace) -> int:
    out = Path(args.out)
    manifest = _read_manifest(out)
    tokenize = choose(TOKENIZERS, args.tokenize, "--tokenize")
    missing: dict[str, str] = {}  # split -> why it has no data
    for split in SPLITS:
        source = _source(split, args)
        if source is None:
            missing[split] = f"no {split} data: --offline and no {OPTION[split]}"
            continue
        recorded = manifest.get(split)
        if _up_to_date(out, recorded, source, args.tokenize):
            print(f"{split}: up to date ({recorded['pairs']:,} pairs from {source.description})")
            continue
        try:
            text = source.read()
        except NMTError as err:
            missing[split] = f"no {split} data: cannot load {source.description} ({err})"
            continue
        manifest[split] = _write_split(out, split, text, tokenize, source, args.tokenize)
        _write_json(out / "manifest.json", manifest)
        print(f"{split}: wrote {len(text.src):,} pairs from {source.description} to {out}/{split}.*")
    if missing:
        options = " / ".join(OPTION[split] for split in missing)
        raise NMTError(
            f"{'; '.join(missing.values())}. Give local text with {options} PREFIX (PREFIX.en + PREFIX.de, one "
            f"sentence per line, or EN_FILE,DE_FILE), or run where the Hugging Face hub is reachable"
            + (f"; the other splits are ready in {out}" if len(missing) < len(SPLITS) else "")
        )
    return 0


def _source(split: str, args: argparse.Namespace) -> Source | None:
    """The local files given or found for ``split``, else the hub (None when --offline forbids it)."""
    given = getattr(args, DATA_KEY[split])
    if given is None and split in NEWSTEST and Path(args.newstest_dir, f"{NEWSTEST[split]}.{SRC}").exists():
        given = str(Path(args.newstest_dir, NEWSTEST[split]))
    if given is not None:
        files = text_files(DataConfig(src_lang=SRC, tgt_lang=TGT), given, DATA_KEY[split])
        return Source(" + ".join(map(str, files)), _files_hash(files), lambda: read_text_pair(*files))
    if args.offline:
        return None
    hub = DataConfig(src_lang=SRC, tgt_lang=TGT, hf_dataset=args.hub, hf_config=args.hub_config)
    name = getattr(hub, f"hf_{DATA_KEY[split]}_split")
    return Source(
        f"the hub's {args.hub} ({args.hub_config}, split {name})",
        f"hub:{args.hub}:{args.hub_config}:{name}",
        lambda: _read_hub(hub, DATA_KEY[split], args.cache_dir),
    )


def _read_hub(hub: DataConfig, split: str, cache_dir: str | None) -> ParallelText:
    """``split`` from the hub, after a quick check that the hub answers at all (instead of a minute of retries)."""
    endpoint = urllib.parse.urlparse(huggingface_hub.constants.ENDPOINT)
    address = (endpoint.hostname or "huggingface.co", endpoint.port or (80 if endpoint.scheme == "http" else 443))
    try:
        socket.create_connection(address, timeout=10).close()
    except OSError as err:
        raise NMTError(f"the hub is unreachable: cannot connect to {address[0]}:{address[1]} ({err})") from None
    try:
        return read_hf(hub, split, cache_dir=cache_dir)
    except NMTError as err:  # its advice is about configs; the cause is what matters here
        raise NMTError(str(err.__cause__ or err)) from err


def _files_hash(files: Sequence[Path]) -> str:
    """SHA-256 over the files' bytes; a missing file is left for the reader to report."""
    digest = hashlib.sha256()
    for path in files:
        digest.update(str(path).encode() + b"\0")
        if path.exists():
            digest.update(_file_hash(path).encode())
    return digest.hexdigest()


def _file_hash(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _up_to_date(out: Path, recorded: dict[str, Any] | None, source: Source, tokenize: str) -> bool:
    """Whether ``out`` already holds exactly what this source and tokenization would write."""
    if recorded is None or recorded.get("layout") != LAYOUT_VERSION:
        return False
    if (recorded.get("fingerprint"), recorded.get("tokenize")) != (source.fingerprint, tokenize):
        return False
    files = recorded.get("files", {})
    return all((out / name).is_file() and _file_hash(out / name) == sha for name, sha in files.items())


def _write_split(
    out: Path, split: str, text: ParallelText, tokenize: Callable[[str], str], source: Source, tokenize_name: str
) -> dict[str, Any]:
    """Write ``split``'s files (each atomically) and return its manifest entry."""
    raw = [[_one_line(line) for line in side] for side in (text.src, text.tgt)]
    src, tgt = ([tokenize(line) for line in side] for side in raw)
    sides = [pa.array(side, pa.large_string()) for side in (src, tgt)]  # 64-bit offsets: over 2 GB of text
    column = pa.StructArray.from_arrays(sides, names=[SRC, TGT])
    out.mkdir(parents=True, exist_ok=True)
    _write_parquet(out / f"{split}.parquet", pa.table({"translation": column}))
    written = [f"{split}.parquet"]
    if split != "train":  # plain text for nmt-evaluate --src/--ref
        for name, lines in ((f"{split}.{SRC}", src), (f"{split}.{TGT}", tgt), (f"{split}.raw.{TGT}", raw[1])):
            write_lines(lines, str(out / name))
            written.append(name)
    return {
        "layout": LAYOUT_VERSION,
        "source": source.description,
        "fingerprint": source.fingerprint,
        "tokenize": tokenize_name,
        "pairs": len(src),
        "files": {name: _file_hash(out / name) for name in written},
    }


def _one_line(text: str) -> str:
    """A sentence as one line: a newline inside it (hub data may hold one) would shift every later line."""
    return " ".join(text.splitlines()) if "\n" in text or "\r" in text else text


def _write_parquet(path: Path, table: pa.Table) -> None:
    """Write ``table`` all or nothing: a temporary file beside ``path``, then a rename."""
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        pq.write_table(table, partial)
        os.replace(partial, path)
    except OSError as err:
        partial.unlink(missing_ok=True)
        raise NMTError(f"{path}: cannot write ({err.strerror or err})") from err


def _read_manifest(out: Path) -> dict[str, Any]:
    path = out / "manifest.json"
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # none yet, or unreadable: every split is written again
        return {}


def _write_json(path: Path, value: dict[str, Any]) -> None:
    write_lines(json.dumps(value, indent=2).splitlines(), str(path))


if __name__ == "__main__":
    sys.exit(main())
