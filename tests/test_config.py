"""The config tree: YAML in, dotted overrides, and a clear ConfigError for every mistake."""

from __future__ import annotations

import re

import pytest

from nmt.config import AttentionConfig, Config, ConfigError, ModelConfig, choose, from_dict, load_config, to_dict
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
