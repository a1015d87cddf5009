"""The configuration tree: dataclasses loaded from YAML, overridden with ``a.b=value``.

Every section owns its defaults. Unknown keys and values of the wrong type fail at once
with a :class:`ConfigError` that names the dotted key and, for typos, the closest valid
key ("did you mean"). Names that select a registered class (a scorer, an optimizer, ...)
are checked with :func:`choose` where the registry lives, and the error lists the choices.
A file may overlay another, giving only what differs (``base: PATH``; see :func:`load_config`).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml

from nmt.errors import NMTError

T = TypeVar("T")

BASE_KEY = "base"  # a config file's top-level key naming the file it overlays


class ConfigError(NMTError, ValueError):
    """A user mistake in a config file or an override; the message says what to fix.

    ``key`` is the dotted key at fault where there is one, so a file's error can name its line.
    """

    def __init__(self, message: str, key: str | None = None) -> None:
        super().__init__(message)
        self.key = key


@dataclass
class AttentionConfig:
    """Luong attention: a scorer (how h_t meets h̄_s) times an alignment mode (where)."""

    score: str = "general"  # dot | general | concat | location
    align: str = "global"  # global | local-m | local-p | none (no attention: the base model)
    window: int = 10  # D: local windows span [p_t - D, p_t + D]
    max_src_len: int = 128  # S_max, the number of positions the location scorer knows


@dataclass
class ModelConfig:
    """The stacked LSTM encoder-decoder (DESIGN.md §1)."""

    embed: int = 256
    hidden: int = 256
    layers: int = 2
    dropout: float = 0.2
    bidirectional: bool = False
    reverse_source: bool = False
    input_feed: bool = True
    init: float = 0.1  # parameters start uniform in [-init, init]
    tie_embeddings: bool = False  # share the target embedding with the output layer
    attention: AttentionConfig = field(default_factory=AttentionConfig)


@dataclass
class DataConfig:
    """Where the corpus comes from and how it becomes batches of subword ids."""

    src_lang: str = "en"
    tgt_lang: str = "de"
    # Plain-text corpora: a path prefix per split, read as PREFIX.src_lang / PREFIX.tgt_lang.
    train: str | None = None
    dev: str | None = None
    test: str | None = None
    # Hugging Face datasets with a `translation` column: a hub name (with hf_config) or
    # local parquet/JSON files given as `parquet:path` / `json:path`.
    hf_dataset: str | None = None
    hf_config: str | None = None
    hf_train_split: str = "train"
    hf_dev_split: str = "validation"
    hf_test_split: str = "test"
    tokenizer: str = "sentencepiece"  # sentencepiece | word
    spm_model_type: str = "unigram"  # unigram | bpe
    joint_vocab: bool = True
    vocab_size: int = 8000
    spm_input_sentence_size: int = 2_000_000  # sentencepiece trains on a random sample of this many lines
    max_len: int | None = 50  # drop training pairs longer than this (tokens); None keeps all
    max_len_ratio: float | None = None  # drop pairs whose length ratio exceeds this
    cache_dir: str | None = None  # token-id cache; default: <save_dir>/cache
    replace_invalid: bool = False  # invalid UTF-8 in a text corpus becomes U+FFFD (warned), not an error


@dataclass
class TrainConfig:
    """The training loop: optimisation, schedule, validation and checkpoints."""

    save_dir: str = "runs/default"
    device: str = "auto"  # auto | cpu | cuda
    seed: int = 1234
    optimizer: str = "adam"  # sgd | adam
    lr: float = 0.001
    position_lr_scale: float = 0.1  # local-p's position network (W_p, v_p) learns at lr times this
    schedule: str = "constant"  # constant | halving | plateau
    halve_after_epoch: int = 5  # 'halving': halve the lr every epoch after this one
    batch_size: int = 64  # sentences per batch (used when max_tokens is None)
    max_tokens: int | None = None  # or about this many target tokens per batch
    pool_factor: int | None = None  # batches sorted by length together (None: the whole corpus; 1: random batches)
    balance_tokens: bool = True  # each batch_size batch joins short and long pairs: about equal tokens per batch
    accum_steps: int = 1
    clip_norm: float = 5.0
    max_steps: int | None = None
    max_epochs: int = 10
    valid_every: int = 500
    valid_bleu: bool = False
    valid_heatmaps: int = 0  # draw attention heatmaps of the first N dev pairs at each validation (0: off)
    patience: int | None = None  # stop after this many validations without improvement
    max_nonfinite: int = 5  # stop after this many non-finite losses in a row (each such batch is skipped)
    keep_last: int = 3
    log_every: int = 50
    precision: str = "fp32"  # fp32 | bf16 | fp16
    threads: int | None = None  # torch.set_num_threads on CPU; None leaves torch's choice


@dataclass
class DecodeConfig:
    """Search settings shared by validation, nmt-translate and nmt-evaluate."""

    beam: int = 5
    n_best: int = 1
    length_penalty: str = "none"  # none | average | gnmt
    alpha: float = 0.6  # GNMT length-penalty exponent
    min_len_ratio: float = 0.0
    max_len_ratio: float = 1.5
    max_len: int = 200  # hard cap on generated tokens
    no_repeat_ngram: int = 0
    batch_tokens: int = 4000
    replace_unk: bool = False
    max_input_len: int = 250  # longer sources are translated from their first max_input_len tokens (warned)
    precision: str = "fp32"  # fp32 | bf16 | fp16 (CUDA): autocast during search
    workers: int = 1  # batches searched at once, each on its own thread with its share of the CPU threads


@dataclass
class Config:
    """The whole tree; the resolved copy travels inside every checkpoint."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


def choose(registry: dict[str, T], name: str, key: str) -> T:
    """Look ``name`` up in ``registry``; a miss names the key, the choices and a near match."""
    if name in registry:
        return registry[name]
    raise ConfigError(f"{key}: unknown value {name!r}; choose one of {', '.join(registry)}{_hint(name, registry)}")


def _hint(name: str, options: typing.Iterable[str]) -> str:
    close = difflib.get_close_matches(str(name), list(options), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _check_value(value: Any, hint: Any, key: str) -> Any:
    """Return ``value`` converted to the annotated type, or raise a ConfigError."""
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping of {hint.__name__} keys, got {value!r}", key)
        return from_dict(hint, value, key)
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(hint):
            return None
        (inner,) = [a for a in typing.get_args(hint) if a is not type(None)]
        return _check_value(value, inner, key)
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}", key)
        (inner,) = typing.get_args(hint)
        return [_check_value(v, inner, f"{key}[{i}]") for i, v in enumerate(value)]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str):
        return _float_from_text(value, key)
    if isinstance(value, bool) != (hint is bool) or not isinstance(value, hint):
        raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}", key)
    return value


def _float_from_text(value: str, key: str) -> float:
    """YAML reads ``1e-3`` (no dot) as a string; take it as the number it plainly is."""
    try:
        return float(value)
    except ValueError:
        raise ConfigError(f"{key}: expected float, got {value!r}", key) from None


def from_dict(cls: type[T], values: dict[str, Any], prefix: str = "") -> T:
    """Build dataclass ``cls`` from a nested dict, rejecting unknown keys and bad types."""
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for name, value in values.items():
        key = f"{prefix}.{name}" if prefix else name
        if name not in names:
            raise ConfigError(f"unknown key {key!r}{_hint(name, names)}; valid keys here: {', '.join(names)}", key)
        kwargs[name] = _check_value(value, hints[name], key)
    return cls(**kwargs)


def to_dict(config: Any) -> dict[str, Any]:
    """The plain nested dict of a config (what checkpoints and run directories store)."""
    return dataclasses.asdict(config)


def non_defaults(config: Config) -> list[str]:
    """``key=value`` for every key where ``config`` differs from the defaults: the overrides that rebuild it."""
    default = flatten(to_dict(Config()))
    return [
        f"{key}={value if isinstance(value, str) else json.dumps(value)}"
        for key, value in flatten(to_dict(config)).items()
        if value != default[key]
    ]


def flatten(values: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict as ``{"a.b": value}``."""
    out: dict[str, Any] = {}
    for key, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def apply_override(values: dict[str, Any], override: str) -> None:
    """Set ``a.b.c=value`` (value parsed as YAML) inside the nested dict ``values``."""
    key, sep, raw = override.partition("=")
    if not sep or not key:
        raise ConfigError(f"override {override!r} is not of the form key=value (e.g. train.lr=0.5)")
    *parents, leaf = key.strip().split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override {override!r}: {part!r} is not a section")
    try:
        node[leaf] = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        problem = " ".join(str(err).split())
        raise ConfigError(f"override {override!r}: the value is not valid YAML ({problem})") from err


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = ()) -> Config:
    """Read a YAML file (or start from defaults), resolve its ``base`` chain and apply ``key=value`` overrides.

    A file may name another as ``base: PATH`` (relative to the file naming it) and give only what
    differs: its keys are applied to the base's as if each were a ``key=value`` override, so a
    section merges key by key and any other value replaces the base's. A base may have a base of
    its own; a chain that comes back to a file it passed is refused.
    """
    values = {} if path is None else _resolve(Path(path), ())
    return with_overrides(values, overrides)


def with_overrides(values: dict[str, Any], overrides: typing.Sequence[str]) -> Config:
    """The :class:`Config` of the nested dict ``values`` after the ``key=value`` ``overrides``."""
    for override in overrides:
        apply_override(values, override)
    return from_dict(Config, values)


def _resolve(path: Path, chain: tuple[Path, ...]) -> dict[str, Any]:
    """The values of the file at ``path`` over those of its base chain; ``chain`` is the files that led here."""
    text, values = _read(path)
    base = values.pop(BASE_KEY, None)
    _check_file(path, text, values, chain)
    if base is None:
        return values
    where = f"{path}:{_line_of(text, BASE_KEY)}: {BASE_KEY}"
    if not isinstance(base, str):
        raise ConfigError(f"{where}: expected the path of a config file, got {base!r}", BASE_KEY)
    base_path = path.parent / base
    chain = (*chain, path)
    if not base_path.is_file():
        raise ConfigError(f"{where}: no config file {base_path}", BASE_KEY)
    if base_path.resolve() in {link.resolve() for link in chain}:
        cycle = " -> ".join(map(str, (*chain, base_path)))
        raise ConfigError(f"{where}: the chain of bases comes back to a file it passed: {cycle}", BASE_KEY)
    return _merge(_resolve(base_path, chain), values)


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    """``overlay`` over ``base``: a section (mapping) in both merges key by key, any other value replaces."""
    merged = dict(base)
    for key, value in overlay.items():
        both_sections = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _merge(merged[key], value) if both_sections else value
    return merged


def _read(path: Path) -> tuple[str, dict[str, Any]]:
    """The text of a config file and its top-level mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read config ({err.strerror or err})") from err
    except UnicodeDecodeError as err:
        line = err.object.count(b"\n", 0, err.start) + 1
        raise ConfigError(
            f"{path}:{line}: not valid UTF-8 (byte 0x{err.object[err.start]:02x}); save the config as UTF-8"
        ) from err
    try:
        values = yaml.safe_load(text) or {}
    except yaml.YAMLError as err:
        raise ConfigError(_yaml_error(path, err)) from err
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: expected a mapping of sections at the top level")
    return text, values


def _yaml_error(path: Path, err: yaml.YAMLError) -> str:
    """A YAML syntax error in one line: ``FILE:LINE: not valid YAML: problem (context from line N)``."""
    mark = getattr(err, "problem_mark", None)
    if mark is None:
        return f"{path}: not valid YAML: {' '.join(str(err).split())}"
    context, start = getattr(err, "context", None), getattr(err, "context_mark", None)
    where = f" ({context} from line {start.line + 1})" if context and start else ""
    return f"{path}:{mark.line + 1}: not valid YAML: {err.problem}{where}"


def _check_file(path: Path, text: str, values: dict[str, Any], chain: tuple[Path, ...]) -> None:
    """Validate the file on its own, so its mistakes are reported with the file, line and the files that led to it."""
    try:
        from_dict(Config, values)
    except ConfigError as err:
        line = _line_of(text, err.key)
        via = f" (in the chain of bases {' -> '.join(map(str, (*chain, path)))})" if chain else ""
        raise ConfigError(f"{path}:{line}: {err}{via}" if line else f"{path}: {err}{via}", err.key) from err


def _line_of(text: str, key: str | None) -> int | None:
    """The 1-based line where dotted ``key`` is written in YAML ``text`` (its deepest part found)."""
    node, line = yaml.compose(text), None
    for part in key.split(".") if key else []:
        pairs = node.value if isinstance(node, yaml.MappingNode) else []
        found = [(k, v) for k, v in pairs if k.value == part.split("[")[0]]
        if not found:
            break
        name, node = found[0]
        line = name.start_mark.line + 1
    return line
