"""The config tree: YAML in, dotted overrides, and a clear ConfigError for every mistake."""

from __future__ import annotations

import re

import pytest

from nmt.config import (
    AttentionConfig,
    Config,
    ConfigError,
    ModelConfig,
    choose,
    from_dict,
    load_config,
    non_defaults,
    to_dict,
)
from nmt.errors import NMTError

YAML = """\
# a comment
model:
  hidden: 64
  attention:
    score: concat
    align: local-p
train:
  lr: 1        # an int where a float is expected is fine
data:
  max_len: null
"""


@pytest.fixture
def config_file(tmp_path):
    path = tmp_path / "model.yaml"
    path.write_text(YAML, encoding="utf-8")
    return path


def test_yaml_sets_values_and_keeps_the_other_defaults(config_file):
    config = load_config(config_file)
    assert config.model.hidden == 64
    assert config.model.attention == AttentionConfig(score="concat", align="local-p")
    assert config.train.lr == 1.0 and isinstance(config.train.lr, float)
    assert config.data.max_len is None
    assert config.model.embed == ModelConfig().embed
    assert config.decode == Config().decode


def test_no_file_gives_the_defaults():
    assert load_config() == Config()


def test_overrides_win_over_the_file(config_file):
    config = load_config(
        config_file,
        ["model.attention.score=dot", "model.hidden=32", "model.bidirectional=true", "data.max_len=80"],
    )
    assert config.model.attention.score == "dot"
    assert config.model.attention.align == "local-p"
    assert config.model.hidden == 32
    assert config.model.bidirectional is True
    assert config.data.max_len == 80


def test_an_empty_override_value_means_none():
    assert load_config(overrides=["data.max_len="]).data.max_len is None


def test_round_trip_through_a_plain_dict():
    config = load_config(overrides=["model.attention.align=local-m", "model.layers=4"])
    assert from_dict(Config, to_dict(config)) == config


@pytest.mark.parametrize(
    ("override", "hint"),
    [
        ("model.hiden=3", "did you mean 'hidden'"),
        ("model.atention.score=dot", "did you mean 'attention'"),
        ("modle.hidden=3", "did you mean 'model'"),
        ("model.attention.scroe=dot", "did you mean 'score'"),
    ],
)
def test_unknown_keys_suggest_the_closest(override, hint):
    with pytest.raises(ConfigError, match=hint):
        load_config(overrides=[override])


@pytest.mark.parametrize(
    ("override", "key", "expected"),
    [
        ("model.hidden=big", "model.hidden", "int"),
        ("model.hidden=1.5", "model.hidden", "int"),
        ("model.hidden=true", "model.hidden", "int"),
        ("model.bidirectional=1", "model.bidirectional", "bool"),
        ("model.attention.score=3", "model.attention.score", "str"),
        ("train.lr=fast", "train.lr", "float"),
        ("model.attention=dot", "model.attention", "mapping"),
        ("model.hidden.size=3", "model.hidden", "int"),
    ],
)
def test_wrong_types_name_the_key_and_the_type(override, key, expected):
    with pytest.raises(ConfigError, match=rf"{key}: expected (a )?{expected}"):
        load_config(overrides=[override])


def test_floats_may_be_written_without_a_dot():
    assert load_config(overrides=["train.lr=1e-3"]).train.lr == 0.001


@pytest.mark.parametrize("override", ["model.hidden", "=3", "model.hidden=[1"])
def test_malformed_overrides(override):
    with pytest.raises(ConfigError, match=rf"override {re.escape(repr(override))}"):
        load_config(overrides=[override])


def test_choose_lists_the_choices_and_a_near_match():
    registry = {"adam": 1, "sgd": 2}
    assert choose(registry, "sgd", "train.optimizer") == 2
    with pytest.raises(ConfigError, match=r"train\.optimizer: unknown value 'adma'; choose one of adam, sgd"):
        choose(registry, "adma", "train.optimizer")


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (b"model: [1, 2\n", r":2: not valid YAML: expected ',' or '\]', but got '<stream end>' \(while parsing a flow"),
        (b"- model\n", ": expected a mapping"),
        (b"model: ok\nx: caf\xe9\n", r":2: not valid UTF-8 \(byte 0xe9\)"),
        (b"model:\n  hidden: 8\n  hiden: 8\n", r":3: unknown key 'model\.hiden' \(did you mean 'hidden'\?\)"),
        (b"train:\n  seed: 1\n  lr: fast\n", r":3: train\.lr: expected float"),
        (b"\nmodle: {}\n", r":2: unknown key 'modle'"),
    ],
)
def test_a_bad_file_is_named_with_its_line(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_bytes(text)
    with pytest.raises(ConfigError, match=re.escape(str(path)) + problem):
        load_config(path)


def test_a_mistake_in_the_file_is_reported_even_with_overrides(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model:\n  hiden: 8\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=re.escape(f"{path}:2:")):
        load_config(path, ["model.hidden=8"])


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(NMTError, match=r"missing\.yaml: cannot read config"):
        load_config(tmp_path / "missing.yaml")


# ---------------------------------------------------------------------------------------------
# Overlays: a file names a base and gives only what differs


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def test_an_overlay_merges_its_sections_key_by_key_into_the_base(tmp_path):
    write(
        tmp_path / "family.yaml",
        "model:\n  hidden: 64\n  attention:\n    score: dot\n    window: 4\ntrain:\n  lr: 0.5\n",
    )
    overlay = write(tmp_path / "family/local.yaml", "base: ../family.yaml\nmodel:\n  attention:\n    align: local-m\n")
    config = load_config(overlay)
    assert config.model.hidden == 64 and config.train.lr == 0.5
    assert config.model.attention == AttentionConfig(score="dot", align="local-m", window=4)


def test_an_overlay_equals_its_base_with_its_keys_as_overrides(tmp_path):
    base = write(tmp_path / "base.yaml", YAML)
    overlay = write(tmp_path / "overlay.yaml", "base: base.yaml\nmodel:\n  layers: 3\n  attention: {score: dot}\n")
    assert load_config(overlay) == load_config(base, ["model.layers=3", "model.attention.score=dot"])


def test_overrides_win_over_the_whole_chain(tmp_path):
    write(tmp_path / "base.yaml", YAML)
    overlay = write(tmp_path / "overlay.yaml", "base: base.yaml\nmodel:\n  hidden: 32\n")
    assert load_config(overlay, ["model.hidden=16"]).model.hidden == 16


def test_a_base_may_have_a_base_and_each_path_is_relative_to_the_file_naming_it(tmp_path):
    write(tmp_path / "a/root.yaml", "model:\n  hidden: 8\n  layers: 3\n  embed: 5\n")
    write(tmp_path / "b/middle.yaml", "base: ../a/root.yaml\nmodel:\n  layers: 2\n  embed: 6\n")
    leaf = write(tmp_path / "b/c/leaf.yaml", "base: ../middle.yaml\nmodel:\n  embed: 7\n")
    model = load_config(leaf).model
    assert (model.hidden, model.layers, model.embed) == (8, 2, 7)


def test_the_resolved_config_has_no_base_key(tmp_path):
    write(tmp_path / "base.yaml", YAML)
    overlay = write(tmp_path / "overlay.yaml", "base: base.yaml\n")
    assert "base" not in to_dict(load_config(overlay))
    assert load_config(overlay) == load_config(tmp_path / "base.yaml")


def test_an_unknown_key_in_an_overlay_names_the_overlay_and_its_line(tmp_path):
    write(tmp_path / "base.yaml", YAML)
    overlay = write(tmp_path / "overlay.yaml", "base: base.yaml\nmodel:\n  hiden: 8\n")
    with pytest.raises(
        ConfigError, match=re.escape(f"{overlay}:3: unknown key 'model.hiden' (did you mean 'hidden'?)")
    ):
        load_config(overlay)


def test_a_mistake_in_a_base_names_the_base_and_the_chain_that_reached_it(tmp_path):
    base = write(tmp_path / "base.yaml", "train:\n  lr: fast\n")
    overlay = write(tmp_path / "overlay.yaml", "base: base.yaml\n")
    expected = f"{base}:2: train.lr: expected float, got 'fast' (in the chain of bases {overlay} -> {base})"
    with pytest.raises(ConfigError, match=re.escape(expected)):
        load_config(overlay)


def test_a_missing_base_names_the_file_that_referred_to_it(tmp_path):
    overlay = write(tmp_path / "overlay.yaml", "model:\n  hidden: 8\nbase: gone.yaml\n")
    with pytest.raises(ConfigError, match=re.escape(f"{overlay}:3: base: no config file {tmp_path / 'gone.yaml'}")):
        load_config(overlay)


def test_a_base_must_be_a_path(tmp_path):
    overlay = write(tmp_path / "overlay.yaml", "base: [a.yaml, b.yaml]\n")
    with pytest.raises(ConfigError, match=re.escape(f"{overlay}:1: base: expected the path of a config file")):
        load_config(overlay)


@pytest.mark.parametrize("length", [1, 3])
def test_a_cycle_of_bases_is_refused_and_named(tmp_path, length):
    names = [f"c{i}.yaml" for i in range(length)]
    for name, base in zip(names, names[1:] + names[:1], strict=True):
        write(tmp_path / name, f"base: {base}\n")
    cycle = " -> ".join(str(tmp_path / name) for name in [*names, names[0]])
    with pytest.raises(ConfigError, match=re.escape(f"comes back to a file it passed: {cycle}")):
        load_config(tmp_path / names[0])


def test_non_defaults_are_the_overrides_that_rebuild_a_config(config_file):
    config = load_config(config_file)
    assert non_defaults(config) == [
        "model.hidden=64",
        "model.attention.score=concat",
        "model.attention.align=local-p",
        "data.max_len=null",
        "train.lr=1.0",
    ]
    assert load_config(overrides=non_defaults(config)) == config
