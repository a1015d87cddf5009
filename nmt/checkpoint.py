"""Checkpoints: atomic writes, safe loading, and the run directory's rotation of step files.

A checkpoint file is a 48-byte header followed by an ordinary ``torch.save`` body::

    b"NMT-CKPT"  | body length (8 bytes, big-endian) | SHA-256 of the body (32 bytes) | body

The header lets :func:`load_checkpoint` tell a truncated file (shorter than its recorded
length) from a corrupt one (wrong checksum) from a foreign one (no magic) before any
unpickling happens; the body is then read with ``torch.load(weights_only=True)``, which
accepts tensors and plain Python values only, so a crafted file cannot run code.

Writes go to a temporary file in the same directory, are flushed and fsynced, and only
then renamed over the final name (``os.replace`` is atomic), so a crash mid-write leaves
the previous checkpoint untouched and no partial file under the final name.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import re
import shutil
import struct
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, NamedTuple

import torch

from nmt.config import Config, ConfigError, from_dict
from nmt.errors import NMTError, first_line
from nmt.model import Seq2Seq
from nmt.tokenizer import PAD_ID, Tokenizer, tokenizer_from_state

log = logging.getLogger(__name__)

FORMAT = "nmt-checkpoint"
VERSION = 1
MAGIC = b"NMT-CKPT"
_HEADER = struct.Struct(">8sQ32s")  # magic, body length, sha256 of the body
_CHUNK = 1 << 20
_STEP_FILE = re.compile(r"step_(\d+)\.pt")
_TEMP_FILE = re.compile(r"\..+\.tmp-(\d+)")  # what save_checkpoint and _replace_with_link write first
IMPLIED = {"train": {"balance_tokens": False, "position_lr_scale": 1.0}}
"""Config keys added since the first version-1 checkpoints, and what a checkpoint without one did."""


class LoadedModel(NamedTuple):
    """A model ready to translate: ``model`` is in eval mode on the requested device."""

    model: Seq2Seq
    config: Config
    src_tokenizer: Tokenizer
    tgt_tokenizer: Tokenizer


class _HashingWriter:
    """A write-only file wrapper that counts and hashes every byte on its way to disk."""

    def __init__(self, file: IO[bytes]) -> None:
        self.file = file
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.sha256.update(data)
        self.size += len(data)
        return self.file.write(data)

    def flush(self) -> None:
        self.file.flush()


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically (:func:`write_atomically`).

    ``payload`` should hold tensors and plain Python values only; :func:`load_checkpoint`
    refuses anything else. The keys "format" and "version" are added here.
    """

    def write(file: IO[bytes]) -> None:
        file.write(bytes(_HEADER.size))
        body = _HashingWriter(file)
        torch.save({**payload, "format": FORMAT, "version": VERSION}, body)
        file.seek(0)
        file.write(_HEADER.pack(MAGIC, body.size, body.sha256.digest()))

    write_atomically(path, write)


def write_atomically(path: str | Path, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write`` on a temporary file beside ``path``, fsync it and rename it to ``path`` (``os.replace``
    is atomic): a crash leaves the former file or none, never a partial one. Errors propagate."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`, checking size, checksum and version.

    Raises:
        NMTError: naming the file, if it is missing, unreadable, truncated, corrupt, not an nmt
            checkpoint, written by another version, or holds objects that are not plain data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as file:
            _check_body(path, file)
            file.seek(_HEADER.size)
            with warnings.catch_warnings():  # a foreign pickle protocol is refused below, not warned about
                warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
                payload = torch.load(file, map_location="cpu", weights_only=True)
    except FileNotFoundError as err:
        raise NMTError(f"{path}: no such checkpoint; check the path (runs keep best.pt and last.pt)") from err
    except OSError as err:
        raise NMTError(f"{path}: cannot read checkpoint ({err.strerror or err})") from err
    except pickle.UnpicklingError as err:
        culprit = re.search(r"GLOBAL (\S+)", str(err))  # else a pickle instruction torch does not allow
        raise NMTError(
            f"{path}: refused to load: the checkpoint holds objects other than tensors and plain values "
            f"({culprit.group(1) if culprit else 'unsupported pickle instructions'}), which could run code; "
            "only load checkpoints written by nmt-train"
        ) from err
    except RuntimeError as err:
        raise NMTError(f"{path}: corrupt checkpoint; its body cannot be read ({first_line(err)})") from err
    _check_version(path, payload)
    config = payload.get("config")
    if isinstance(config, dict):  # an older checkpoint's config states what it did, not today's defaults
        for section, implied in IMPLIED.items():
            config[section] = {**implied, **config.get(section, {})}
    return payload


def _check_body(path: Path, file: IO[bytes]) -> None:
    """Compare the file with its header: magic, then length (truncation), then checksum."""
    header = file.read(_HEADER.size)
    if not header:
        raise NMTError(
            f"{path}: empty file (0 bytes): not a checkpoint, or one whose write or copy failed; "
            "use another checkpoint such as best.pt or last.pt"
        )
    if not header.startswith(MAGIC[: len(header)]):
        raise NMTError(f"{path}: not an nmt checkpoint (no {MAGIC.decode()} header); pass a file written by nmt-train")
    if len(header) < _HEADER.size:
        raise NMTError(f"{path}: truncated checkpoint: only {len(header)} bytes, less than its header")
    _, length, digest = _HEADER.unpack(header)
    size = os.fstat(file.fileno()).st_size - _HEADER.size
    if size < length:
        raise NMTError(
            f"{path}: truncated checkpoint: {size} of {length} body bytes present "
            "(the copy or write was cut short); use another checkpoint such as best.pt or last.pt"
        )
    if size > length:
        raise NMTError(f"{path}: corrupt checkpoint: {size - length} unexpected bytes after the recorded body")
    sha256 = hashlib.sha256()
    for chunk in iter(lambda: file.read(_CHUNK), b""):
        sha256.update(chunk)
    if sha256.digest() != digest:
        raise NMTError(f"{path}: corrupt checkpoint: the checksum does not match (damaged on disk or in transfer)")


def _check_version(path: Path, payload: Any) -> None:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise NMTError(f"{path}: not an nmt checkpoint (its format is not {FORMAT!r})")
    version = payload.get("version")
    if version != VERSION:
        raise NMTError(
            f"{path}: checkpoint version {version!r} cannot be read by this nmt (reads version {VERSION}); "
            "use the nmt release that wrote it"
        )


def load_model(path: str | Path, device: str | torch.device = "cpu") -> LoadedModel:
    """The model, its resolved config and both tokenizers from a checkpoint; the model is in eval mode."""
    payload = load_checkpoint(path)
    try:
        config = from_dict(Config, payload["config"])
        src = tokenizer_from_state(payload["tokenizers"]["src"])
        tgt = tokenizer_from_state(payload["tokenizers"]["tgt"])
        model = Seq2Seq(config=config.model, src_vocab=src.vocab_size, tgt_vocab=tgt.vocab_size, pad_id=PAD_ID)
        model.load_state_dict(payload["model"])
    except ConfigError as err:
        raise NMTError(f"{path}: the checkpoint's config is not valid for this nmt: {err}") from err
    except (KeyError, TypeError, RuntimeError) as err:
        raise NMTError(f"{path}: incomplete or mismatched checkpoint ({first_line(err)})") from err
    model.to(device).eval()
    return LoadedModel(model, config, src, tgt)


def step_path(save_dir: str | Path, step: int) -> Path:
    """The file of the checkpoint taken after ``step`` updates."""
    return Path(save_dir) / f"step_{step:08d}.pt"


def save_run_checkpoint(save_dir: str | Path, payload: dict[str, Any], *, keep_last: int, best: bool) -> Path:
    """Save ``payload`` as the step file for ``payload["step"]``, point ``last.pt`` (and ``best.pt``) at it.

    ``last.pt`` and ``best.pt`` are hard links to the step file where the file system allows
    (else copies), each swapped in atomically. Only the newest ``keep_last`` step files stay.
    """
    save_dir = Path(save_dir)
    path = step_path(save_dir, payload["step"])
    save_checkpoint(path, payload)
    _replace_with_link(path, save_dir / "last.pt")
    if best:
        _replace_with_link(path, save_dir / "best.pt")
    _prune(save_dir, keep_last)
    _remove_stale_temp_files(save_dir)
    return path


def _replace_with_link(src: Path, dst: Path) -> None:
    tmp = dst.with_name(f".{dst.name}.tmp-{os.getpid()}")
    tmp.unlink(missing_ok=True)
    _link_or_copy(src, tmp)
    os.replace(tmp, dst)
    _fsync_dir(dst.parent)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
        with open(dst, "rb+") as file:
            os.fsync(file.fileno())


def _prune(save_dir: Path, keep_last: int) -> None:
    """Delete all but the ``keep_last`` newest step files (best.pt and last.pt are separate links)."""
    steps = sorted(p for p in save_dir.iterdir() if _STEP_FILE.fullmatch(p.name))
    for old in steps[: max(len(steps) - keep_last, 0)]:
        old.unlink()
        log.debug("removed old checkpoint %s", old)


def _remove_stale_temp_files(save_dir: Path) -> None:
    """Delete the temporary files of saves cut short (by SIGKILL, a crash, a full disk): their process is gone."""
    for path in save_dir.iterdir():
        match = _TEMP_FILE.fullmatch(path.name)
        if match and not _running(int(match.group(1))):
            path.unlink(missing_ok=True)
            log.info("removed %s, left by a save that was cut short", path)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process exists
    except ProcessLookupError:
        return False
    except PermissionError:  # it does, under another user
        pass
    return True


def _fsync_dir(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
