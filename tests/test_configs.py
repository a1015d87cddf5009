"""Every shipped config loads and builds; the paper and Multi30k families are overlays of one base each,
stating only what differs from it and what their names say; the scripts that run and report the
families: scripts/compare.py (its table, resuming, seeds, test sets and AER), scripts/plot_curves.py
and scripts/prepare_wmt14.py (its layout and idempotence)."""

from __future__ import annotations

import importlib.util
import itertools
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import torch
import yaml

from nmt.attention import ALIGNMENTS, NO_ATTENTION, SCORERS
from nmt.config import BASE_KEY, DecodeConfig, flatten, load_config, to_dict
from nmt.data import read_split
from nmt.model import Seq2Seq
from nmt.sample import write_sample_corpus
from nmt.tokenizer import EOS_ID
from nmt.train import Trainer

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted((ROOT / "configs").rglob("*.yaml"))
LUONG = sorted((ROOT / "configs" / "luong2015").glob("*.yaml"))
MULTI30K = sorted((ROOT / "configs" / "multi30k").glob("*.yaml"))
# Each family directory configs/NAME/ holds overlays of configs/NAME.yaml.
FAMILY_BASE = {path: path.parent.with_suffix(".yaml") for path in LUONG + MULTI30K}
OVERLAYS = [path for path in CONFIGS if BASE_KEY in yaml.safe_load(path.read_text(encoding="utf-8"))]
TINY = ("model.hidden=8", "model.embed=8", "model.layers=1", "model.attention.max_src_len=12")

# The paper's settings (Luong et al. 2015, §4.1), with dropout 0.2 and its 12-epoch schedule.
PAPER = {
    "model.embed": 1000,
    "model.hidden": 1000,
    "model.layers": 4,
    "model.dropout": 0.2,
    "model.reverse_source": True,
    "model.bidirectional": False,
    "model.init": 0.1,
    "data.tokenizer": "word",
    "data.joint_vocab": False,
    "data.vocab_size": 50000,
    "data.max_len": 50,
    "data.hf_dataset": "parquet:data/wmt14/{split}.parquet",
    "train.optimizer": "sgd",
    "train.lr": 1.0,
    "train.schedule": "halving",
    "train.max_epochs": 12,
    "train.halve_after_epoch": 8,
    "train.batch_size": 128,
    "train.max_tokens": None,
    "train.accum_steps": 1,
    "train.clip_norm": 5.0,
}
# Issue 17's converged matrix: the paper's systems (Table 4, concat and input feeding off) on Multi30k.
PAPER_SYSTEMS = {
    "global_location",
    "global_dot",
    "global_general",
    "local_m_dot",
    "local_m_general",
    "local_p_dot",
    "local_p_general",
    "global_concat",
    "global_general_nofeed",
}
MULTI30K_TRAIN_PAIRS = 29_000
# What a file of a family may state: what its name says, and where it saves.
NAMED_BY_FILE = {"model.attention.score", "model.attention.align", "model.input_feed", "train.save_dir"}
# Table 1's first two rows come before dropout, so they train 10 epochs, halving after the 5th (§4.1).
NO_DROPOUT = {"model.dropout": 0.0, "train.max_epochs": 10, "train.halve_after_epoch": 5}
BEFORE_DROPOUT = {"base": NO_DROPOUT | {"model.reverse_source": False}, "base_reverse": NO_DROPOUT}
# Table 1 top to bottom: each row's file and the keys it changes from the row above (save_dir aside).
TABLE1 = {
    "base": set(),
    "base_reverse": {"model.reverse_source"},
    "base_reverse_dropout": set(NO_DROPOUT),
    "global_location_nofeed": {"model.attention.score", "model.attention.align"},
    "global_location": {"model.input_feed"},
    "local_p_general": {"model.attention.score", "model.attention.align"},
    "local_p_general_unk": {"decode.replace_unk"},
}


def flat(config: Any) -> dict[str, Any]:
    """The config as ``{"a.b": value}``."""
    return flatten(to_dict(config))


def written(path: Path) -> dict[str, Any]:
    """What an overlay file states itself, as ``{"a.b": value}`` (its base aside)."""
    values = yaml.safe_load(path.read_text(encoding="utf-8"))
    return flatten({key: value for key, value in values.items() if key != BASE_KEY})


def differing(a: dict[str, Any], b: dict[str, Any]) -> set[str]:
    return {key for key in a if a[key] != b[key]}


def config_id(path: Path) -> str:
    return str(path.relative_to(ROOT / "configs"))


def script(name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("path", CONFIGS, ids=config_id)
def test_every_config_loads_and_its_model_runs_at_a_tiny_size(path):
    config = load_config(path, TINY)
    model = Seq2Seq(config=config.model, src_vocab=11, tgt_vocab=13).eval()
    src = torch.tensor([[5, 6, 7, 8, EOS_ID], [9, 10, EOS_ID, 0, 0]])
    tgt_in = torch.tensor([[2, 4, 5, 6], [2, 7, 0, 0]])
    with torch.no_grad():
        logits, attention = model(src, torch.tensor([5, 3]), tgt_in)
    assert logits.shape == (2, 4, 13)
    assert attention.shape == (2, 4, 5)
    assert torch.isfinite(logits).all()
    assert (attention[1, :, 3:] == 0).all()  # no weight on padding


def test_the_families_are_there():
    assert len(LUONG) == 13
    assert len(MULTI30K) == len(SCORERS) * len(ALIGNMENTS) + 1


@pytest.mark.parametrize("path", LUONG + MULTI30K, ids=config_id)
def test_a_family_file_is_an_overlay_of_its_family_base_and_says_how_to_run_it(path):
    assert yaml.safe_load(path.read_text(encoding="utf-8"))[BASE_KEY] == f"../{FAMILY_BASE[path].name}"
    header = path.read_text(encoding="utf-8").splitlines()[:2]
    assert header[0].startswith("# ") and header[1] == f"# Run: nmt-train --config configs/{config_id(path)}"


@pytest.mark.parametrize("path", OVERLAYS, ids=config_id)
def test_an_overlay_states_exactly_what_differs_from_its_base(path):
    base = path.parent / yaml.safe_load(path.read_text(encoding="utf-8"))[BASE_KEY]
    resolved, own = flat(load_config(path)), written(path)
    assert differing(resolved, flat(load_config(base))) == set(own)  # nothing restated, nothing hidden
    assert {key: resolved[key] for key in own} == own
    assert load_config(path) == load_config(base, [f"{key}={yaml.safe_dump(value)}" for key, value in own.items()])


@pytest.mark.parametrize("path", LUONG, ids=lambda p: p.stem)
def test_luong2015_configs_hold_the_papers_settings(path):
    values = flat(load_config(path))
    assert {key: values[key] for key in PAPER} == PAPER | BEFORE_DROPOUT.get(path.stem, {})
    assert values["train.save_dir"] == f"runs/luong2015/{path.stem}"


@pytest.mark.parametrize("path", LUONG, ids=lambda p: p.stem)
def test_luong2015_configs_state_only_what_their_names_say(path):
    allowed = NAMED_BY_FILE | {"decode.replace_unk"} | set(BEFORE_DROPOUT.get(path.stem, {}))
    assert set(written(path)) <= allowed
    values = flat(load_config(path))
    attends = values["model.attention.align"] != NO_ATTENTION
    assert attends == (not path.stem.startswith("base"))
    assert values["model.input_feed"] == (attends and "nofeed" not in path.stem)
    assert values["decode.replace_unk"] == path.stem.endswith("_unk")
    if attends:
        score, align = values["model.attention.score"], values["model.attention.align"]
        assert path.stem.startswith(f"{align.replace('-', '_')}_{score}")


def test_luong2015_table1_rows_each_add_one_thing_to_the_row_above():
    for above, stem in itertools.pairwise(TABLE1):
        values = flat(load_config(ROOT / f"configs/luong2015/{stem}.yaml"))
        previous = flat(load_config(ROOT / f"configs/luong2015/{above}.yaml"))
        assert differing(values, previous) == TABLE1[stem] | {"train.save_dir"}, stem


def test_luong2015_unk_replacement_row_is_the_same_model_decoded_differently():
    model = flat(load_config(ROOT / "configs/luong2015/local_p_general.yaml"))
    unk = flat(load_config(ROOT / "configs/luong2015/local_p_general_unk.yaml"))
    assert differing(unk, model) == {"decode.replace_unk", "train.save_dir"}


def test_multi30k_covers_every_scorer_and_mode_and_input_feeding_off():
    cells = {}
    for path in MULTI30K:
        model = load_config(path).model
        cells[(model.attention.score, model.attention.align, model.input_feed)] = path.stem
    with_feed = {(score, align, True) for score, align in itertools.product(SCORERS, ALIGNMENTS)}
    assert set(cells) == with_feed | {("general", "global", False)}
    for (score, align, feed), stem in cells.items():
        assert stem == f"{align.replace('-', '_')}_{score}" + ("" if feed else "_nofeed")


def test_multi30k_base_is_the_reference_setup_with_a_reversed_source_and_the_default_search():
    base = flat(load_config(ROOT / "configs/multi30k.yaml"))
    assert (base["model.hidden"], base["model.layers"], base["data.vocab_size"], base["train.batch_size"]) == (
        256,
        2,
        8000,
        64,
    )
    assert (base["train.optimizer"], base["train.lr"], base["data.joint_vocab"]) == ("adam", 0.001, True)
    assert base["model.reverse_source"] and load_config(ROOT / "configs/multi30k.yaml").decode == DecodeConfig()


def test_multi30k_family_is_paper_faithful_and_trains_each_cell_to_convergence():
    values = flat(load_config(ROOT / "configs/multi30k.yaml"))
    assert (values["model.bidirectional"], values["model.reverse_source"], values["model.input_feed"]) == (
        False,
        True,
        True,
    )
    assert values["model.dropout"] > 0
    assert values["train.patience"] is not None and values["train.max_epochs"] >= 10
    assert values["train.valid_every"] == math.ceil(MULTI30K_TRAIN_PAIRS / values["train.batch_size"])  # an epoch
    assert values["train.valid_bleu"]  # dev BLEU for scripts/plot_curves.py


def matrix_command(text: str) -> set[str]:
    """The systems (file stems) of the converged matrix's compare command in ``text``."""
    command = text[text.index("python scripts/compare.py configs/multi30k/") : text.index("--out runs/m30k_converged")]
    return set(re.findall(r"configs/multi30k/(\w+)\.yaml", command))


@pytest.mark.parametrize("doc", ["configs/multi30k.yaml", "README.md"])
def test_the_converged_matrix_command_runs_exactly_the_papers_systems(doc):
    assert matrix_command((ROOT / doc).read_text(encoding="utf-8")) == PAPER_SYSTEMS
    assert PAPER_SYSTEMS.issubset(path.stem for path in MULTI30K)


@pytest.mark.parametrize("path", MULTI30K, ids=lambda p: p.stem)
def test_multi30k_configs_state_only_what_their_names_say(path):
    assert set(written(path)) <= NAMED_BY_FILE
    assert flat(load_config(path))["train.save_dir"] == f"runs/multi30k/{path.stem}"


@pytest.mark.skipif(not (ROOT.parent / "shared/data/multi30k").is_dir(), reason="../shared/data/multi30k is absent")
@pytest.mark.parametrize("split", ["train", "dev", "test"])
def test_multi30k_configs_point_at_the_corpus(split):
    data = load_config(MULTI30K[0]).data
    prefix = getattr(data, split)
    for lang in ("en", "de"):
        assert (ROOT / f"{prefix}.{lang}").is_file()


# ---------------------------------------------------------------------------------------------
# scripts/compare.py


def test_compare_writes_a_markdown_table_with_a_column_per_test_set_and_the_seed_spread():
    compare = script("compare")
    test = {"bleu_signature": "nrefs:1|tok:13a", "chrf_signature": "nrefs:1|nc:6", "sentences": 100}
    run = {
        "system": "global_dot",
        "seed": 1234,
        "attention": "global, dot",
        "input_feed": "yes",
        "steps": 2000,
        "dev_ppl": 12.3456,
        "tests": {
            "t16": test | {"bleu": 30.0, "chrf": 55.0, "decode_s": 2.0},
            "t17": test | {"bleu": 20.0, "chrf": 50.0, "decode_s": 2.0},
        },
        "aer": {"aer": 0.4, "input_step": {"aer": 0.3}, "budget": {"corpus": "data/sample", "steps": 790}},
    }
    seed7 = run | {"seed": 7, "dev_ppl": 13.3456, "tests": {"t16": run["tests"]["t16"] | {"bleu": 32.0}}}
    unvalidated = run | {"system": "local_m_dot", "attention": "local-m, dot", "dev_ppl": None}
    del unvalidated["aer"]
    budget = {"max_steps": None, "overrides": ["train.threads=1"], "beam": 5, "threads": 1}
    runs = [run, seed7, unvalidated]
    rows = compare.summarise(runs, ["global_dot", "local_m_dot", "absent"], ["t16", "t17"])
    assert [row["seeds"] for row in rows] == [[1234, 7], [1234]]
    table = compare.markdown_table(rows, runs, budget, ["t16", "t17"])
    assert table.splitlines() == [
        "| config | attention | input feed | seeds | steps | dev ppl | BLEU t16 | chrF t16 | BLEU t17 | chrF t17 "
        "| decode sent/s | AER | AER, input step |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        "| global_dot | global, dot | yes | 2 | 2000 ± 0 | 12.85 ± 0.71 | 31.00 ± 1.41 | 55.00 ± 0.00 | 20.00 | 50.00 "
        "| 50.0 ± 0.0 | 0.400 ± 0.000 | 0.300 ± 0.000 |",
        "| local_m_dot | local-m, dot | yes | 1 | 2000 | n/a | 30.00 | 55.00 | 20.00 | 50.00 | 50.0 | n/a | n/a |",
        "",
        "Budget: the configs' own limits with train.threads=1; test sets translated with beam 5; 1 CPU thread(s) "
        "per run. Several seeds: mean ± standard deviation.",
        "AER: the dev split of data/sample against its gold alignments, each configuration trained 790 updates "
        "there with configs/quickstart.yaml's data settings; a target word's attention from the step that predicts "
        "it, or (input step) from the step that reads it.",
        "BLEU signature: `nrefs:1|tok:13a`",
        "chrF signature: `nrefs:1|nc:6`",
    ]


TINY_RUN = "model:\n  embed: 8\n  hidden: 8\n  layers: 1\n  attention:\n    score: {score}\n    align: {align}\n"


@pytest.fixture
def matrix(tmp_path, monkeypatch):
    """Two tiny configs on a small sample corpus, and how to compare them into tmp_path/out."""
    monkeypatch.syspath_prepend(str(ROOT / "scripts"))  # the worker processes import compare by name
    write_sample_corpus(tmp_path / "data", pairs=72, seed=5)
    data = f"data:\n  train: {tmp_path}/data/train\n  dev: {tmp_path}/data/dev\n  test: {tmp_path}/data/test\n"
    for name, score, align in (("dot", "dot", "global"), ("local", "general", "local-p")):
        text = TINY_RUN.format(score=score, align=align) + data + "train:\n  valid_every: 2\n  batch_size: 16\n"
        (tmp_path / f"{name}.yaml").write_text(text, encoding="utf-8")
    tests = ["--test", f"{tmp_path}/data/test", "--test", f"{tmp_path}/data/dev"]
    common = [*tests, "--out", str(tmp_path / "out"), "--max-steps", "4", "--jobs", "2", "--quiet"]
    aer = ["--aer-corpus", str(tmp_path / "data"), "--aer-steps", "3"]

    def run(*configs: str, seeds: tuple[str, ...] = (), collect: bool = False) -> int:
        paths = [str(tmp_path / f"{name}.yaml") for name in configs]
        extra = [*(["--seeds", *seeds] if seeds else []), *(["--collect"] if collect else [])]
        return script("compare").main([*paths, *common, *aer, *extra])

    return run


@pytest.mark.usefixtures("one_thread")
def test_compare_resumes_an_interrupted_run_skips_finished_ones_and_collects_the_seeds(matrix, tmp_path):
    out = tmp_path / "out"
    # a run interrupted after 2 of its 4 updates, as the comparison starts it
    overrides = [f"train.save_dir={out}/dot", "train.threads=1", "train.max_steps=2", "train.seed=1234"]
    Trainer(config=load_config(tmp_path / "dot.yaml", overrides)).fit()
    assert matrix("dot", "local", collect=True) == 0  # runs nothing: a table of no finished run
    assert not list(out.glob("*/result.json"))
    lines = (out / "results.md").read_text().splitlines()
    assert lines[2] == "" and lines[3].startswith("Budget:")  # the header and its rule, then no row

    assert matrix("dot", "local") == 0
    dot = json.loads((out / "dot/result.json").read_text(encoding="utf-8"))
    assert "resumed from step 2" in (out / "dot/compare.log").read_text(encoding="utf-8")
    assert (dot["steps"], dot["seed"], sorted(dot["tests"]), dot["aer"]["steps"]) == (4, 1234, ["dev", "test"], 3)
    assert 0 <= dot["aer"]["aer"] <= 1 and dot["aer"]["sentences"] == 6
    input_step = dot["aer"]["input_step"]
    assert (out / "dot/test.hyp.de").is_file() and (out / "dot/sample/best.pt").is_file()
    assert 0 <= input_step["aer"] <= 1

    # a run measured before the input step's AER was recorded: only the AER is measured again, on its model
    del dot["aer"]["input_step"]
    (out / "dot/result.json").write_text(json.dumps(dot), encoding="utf-8")
    trained = {path: path.stat().st_mtime_ns for path in (out / "dot").rglob("*.pt")}
    assert matrix("dot", "local") == 0
    assert json.loads((out / "dot/result.json").read_text(encoding="utf-8"))["aer"]["input_step"] == input_step
    assert {path: path.stat().st_mtime_ns for path in trained} == trained

    finished = {path: path.stat().st_mtime_ns for path in out.glob("*/result.json")}
    assert matrix("dot", "local", seeds=("1234", "7")) == 0  # seed 1234 is the configs' own: done earlier
    assert {path: path.stat().st_mtime_ns for path in finished} == finished
    assert sorted(path.parent.name for path in out.glob("*/result.json")) == [
        "dot",
        "dot.seed7",
        "local",
        "local.seed7",
    ]

    assert matrix("dot", "local", collect=True) == 0  # the table so far, both systems
    assert [row["system"] for row in json.loads((out / "results.json").read_text())["systems"]] == ["dot", "local"]
    assert matrix("dot") == 0  # nothing to run; the table collects dot's seeds from disk
    results = json.loads((out / "results.json").read_text(encoding="utf-8"))
    assert [(row["system"], row["seeds"]) for row in results["systems"]] == [("dot", [1234, 7])]
    header, _, row = (out / "results.md").read_text(encoding="utf-8").splitlines()[:3]
    assert "| BLEU test | chrF test | BLEU dev | chrF dev | decode sent/s | AER | AER, input step |" in header
    assert row.startswith("| dot | global, dot | yes | 2 | 4 ± 0 |") and row.count("±") == 9


# ---------------------------------------------------------------------------------------------
# scripts/decode_variants.py


def test_decode_variants_compares_with_the_peers_latest_decode(tmp_path):
    """A redecode of OpenNMT-py appends a record to the harness's results; the ratios use it."""
    results = tmp_path / "results.jsonl"
    records = [("onmt", 81.75), ("nmt", 111.5), ("onmt", 90.15)]
    lines = [json.dumps({"toolkit": toolkit, "decode": {"beam5": {"sents_s": speed}}}) for toolkit, speed in records]
    results.write_text("\n".join(lines) + "\n")
    decode_variants = script("decode_variants")
    assert decode_variants.peer_speeds(results) == {"beam5": 90.15}
    assert decode_variants.peer_speeds(results, "joey") == {}
    assert decode_variants.peer_speeds(tmp_path / "absent.jsonl") == {}


# ---------------------------------------------------------------------------------------------
# scripts/centres.py


@pytest.mark.usefixtures("one_thread")
def test_centres_measures_each_checkpoint_and_plots_p_t_against_gold(tmp_path, capsys):
    write_sample_corpus(tmp_path / "data", pairs=72, seed=5)
    (tmp_path / "local.yaml").write_text(
        TINY_RUN.format(score="general", align="local-p")
        + f"data:\n  train: {tmp_path}/data/train\n  dev: {tmp_path}/data/dev\n"
        + f"train:\n  valid_every: 2\n  batch_size: 16\n  max_steps: 4\n  save_dir: {tmp_path}/run\n",
        encoding="utf-8",
    )
    Trainer(config=load_config(tmp_path / "local.yaml")).fit()
    dev = [f"--src={tmp_path}/data/dev.en", f"--tgt={tmp_path}/data/dev.de", f"--gold={tmp_path}/data/dev.align"]
    checkpoints = [str(tmp_path / "run" / name) for name in ("step_00000002.pt", "step_00000004.pt")]
    centres = script("centres")
    assert centres.main([*checkpoints, *dev, "--plot", str(tmp_path / "centres.png"), "--quiet"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [record["step"] for record in records] == [2, 4]
    for record in records:
        assert 0 <= record["spread_range"] <= 1 and record["centre_error"] >= 0 and 0 <= record["aer"] <= 1
    assert (tmp_path / "centres.png").stat().st_size > 0
    # a user's mistake is one line: here fewer gold alignments than sentence pairs
    (tmp_path / "short.align").write_text("0-0\n", encoding="utf-8")
    assert centres.main([checkpoints[0], *dev[:2], f"--gold={tmp_path}/short.align"]) == 1
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith("centres: error: ") and "give one line of each per sentence pair" in line


# ---------------------------------------------------------------------------------------------
# scripts/plot_curves.py

# One update a second. A validation at step 7 (no log record covers update 7) checkpoints; the session
# then logs step 8 and 10 and is interrupted; the resumed run redoes updates 8-10 after a long break.
RUN_RECORDS = [
    {"event": "train", "step": 2, "steps": 2, "time": 102.0},
    {"event": "train", "step": 4, "steps": 2, "time": 104.0},
    {"event": "valid", "step": 4, "time": 110.0, "dev_ppl": 9.0, "dev_bleu": 1.0},
    {"event": "train", "step": 6, "steps": 2, "time": 112.0},
    {"event": "valid", "step": 7, "time": 120.0, "dev_ppl": 8.0, "dev_bleu": 2.0},
    {"event": "train", "step": 8, "steps": 1, "time": 121.0},
    {"event": "train", "step": 10, "steps": 2, "time": 123.0},
    {"event": "train", "step": 8, "steps": 1, "time": 5000.0},
    {"event": "train", "step": 10, "steps": 2, "time": 5002.0},
    {"event": "valid", "step": 10, "time": 5010.0, "dev_ppl": 7.0, "dev_bleu": 3.0},
]


def test_plot_curves_counts_the_time_of_the_updates_alone_across_a_resume():
    plot = script("plot_curves")
    assert plot.curve(RUN_RECORDS, "dev_bleu") == [(4.0, 1.0), (7.0, 2.0), (10.0, 3.0)]
    assert plot.curve(RUN_RECORDS, "dev_ppl") == [(4.0, 9.0), (7.0, 8.0), (10.0, 7.0)]


def test_plot_curves_tabulates_every_validation_of_each_run(tmp_path, capsys):
    epochs = iter([1, 2, 3])
    with_epochs = [{**r, "epoch": next(epochs)} if r["event"] == "valid" else r for r in RUN_RECORDS]
    local_p = [{**r, "centre_range": 0.5} if r["event"] == "valid" else r for r in with_epochs[:5]]
    no_bleu = [{k: v for k, v in r.items() if k != "dev_bleu"} for r in with_epochs[:3]]
    for name, records in {"global": with_epochs, "local_p": local_p, "nofeed": no_bleu}.items():
        (tmp_path / name).mkdir()
        (tmp_path / name / "metrics.jsonl").write_text("".join(f"{json.dumps(r)}\n" for r in records), encoding="utf-8")
    plot = script("plot_curves")
    assert plot.main([str(tmp_path / name) for name in ("global", "local_p", "nofeed")] + ["--table"]) == 0
    header, rule, *rows = capsys.readouterr().out.splitlines()
    assert header.count("dev ppl, BLEU, minutes") == 3 and header.count("(p_t range)") == 1
    assert rule == "|---|---|---|---|"
    assert rows == [  # minutes of the updates alone: 4, 7 and 10 seconds
        "| 1 (4) | 9.00, 1.00, 0.1 | 9.00, 1.00, 0.1 (0.50) | 9.00, –, 0.1 |",
        "| 2 (7) | 8.00, 2.00, 0.1 | 8.00, 2.00, 0.1 (0.50) | – |",
        "| 3 (10) | 7.00, 3.00, 0.2 | – | – |",
    ]
    # rows follow the steps: a run validating elsewhere, or before its first log record, fills its own
    early = [{"event": "valid", "step": 5, "epoch": 1, "time": 1.0, "dev_ppl": 20.0}]
    assert plot.table({"a": with_epochs, "b": early}).splitlines()[2:] == [
        "| 1 (4) | 9.00, 1.00, 0.1 | – |",
        "| 1 (5) | – | 20.00, –, – |",
        "| 2 (7) | 8.00, 2.00, 0.1 | – |",
        "| 3 (10) | 7.00, 3.00, 0.2 | – |",
    ]
    with pytest.raises(SystemExit) as usage:  # neither --out nor --table: argparse's usage error
        plot.main([str(tmp_path / "global")])
    assert usage.value.code == 2
    assert "give --out PNG, --table or both" in capsys.readouterr().err


def test_plot_curves_writes_a_png_of_bleu_or_of_perplexity_when_a_run_logged_no_bleu(tmp_path, capsys):
    runs = {"global_general": RUN_RECORDS, "local_p_general": RUN_RECORDS[:5]}
    for name, records in runs.items():
        (tmp_path / name).mkdir()
        lines = [json.dumps(record) for record in [{"event": "other"}, *records]]
        (tmp_path / name / "metrics.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    plot = script("plot_curves")
    assert plot.main([str(tmp_path / name) for name in runs] + ["--out", str(tmp_path / "bleu.png")]) == 0
    assert (tmp_path / "bleu.png").read_bytes().startswith(b"\x89PNG")

    without_bleu = [{key: value for key, value in r.items() if key != "dev_bleu"} for r in RUN_RECORDS]
    (tmp_path / "global_general/metrics.jsonl").write_text(
        "".join(f"{json.dumps(r)}\n" for r in without_bleu), encoding="utf-8"
    )
    assert plot.main([str(tmp_path / "global_general"), "--out", str(tmp_path / "ppl.png")]) == 0
    assert (tmp_path / "ppl.png").stat().st_size > 1000
    assert plot.main([str(tmp_path / "absent"), "--out", str(tmp_path / "x.png")]) == 1
    assert "absent/metrics.jsonl: cannot read" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# scripts/prepare_wmt14.py


def write_pair(prefix: Path, en: list[str], de: list[str]) -> None:
    prefix.parent.mkdir(parents=True, exist_ok=True)
    for lang, lines in (("en", en), ("de", de)):
        Path(f"{prefix}.{lang}").write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")


@pytest.fixture
def corpora(tmp_path):
    """A tiny train pair and newstest-named dev/test pairs, as prepare_wmt14.py finds them locally."""
    write_pair(tmp_path / "in/train", ["Hello, world.", "Good night!"], ["Hallo, Welt.", "Gute Nacht!"])
    write_pair(tmp_path / "news/newstest2013", ["It works."], ["Es geht."])
    write_pair(tmp_path / "news/newstest2014-filtered", ["Yes, really."], ["Ja, wirklich."])
    return tmp_path


def prepare(corpora: Path, *extra: str) -> int:
    args = ["--out", str(corpora / "wmt14"), "--newstest-dir", str(corpora / "news"), "--offline", "--quiet", *extra]
    return script("prepare_wmt14").main(args)


def test_prepare_writes_what_the_luong2015_configs_read(corpora, capsys):
    assert prepare(corpora, "--train", str(corpora / "in/train")) == 0
    pattern = f"data.hf_dataset=parquet:{corpora}/wmt14/{{split}}.parquet"
    config = load_config(LUONG[0], [pattern, f"data.cache_dir={corpora}/cache"])
    train = read_split(config.data, "train", hf_cache_dir=config.data.cache_dir)
    assert (train.src, train.tgt) == (["Hello , world .", "Good night !"], ["Hallo , Welt .", "Gute Nacht !"])
    test = read_split(config.data, "test", hf_cache_dir=config.data.cache_dir)
    assert (test.src, test.tgt) == (["Yes , really ."], ["Ja , wirklich ."])
    assert (corpora / "wmt14/test.de").read_text(encoding="utf-8") == "Ja , wirklich .\n"
    assert (corpora / "wmt14/test.raw.de").read_text(encoding="utf-8") == "Ja, wirklich.\n"
    assert (corpora / "wmt14/validation.en").read_text(encoding="utf-8") == "It works .\n"
    assert capsys.readouterr().out.count("wrote") == 3


def test_prepare_a_second_time_is_up_to_date_and_notices_a_changed_source(corpora, capsys):
    assert prepare(corpora, "--train", str(corpora / "in/train")) == 0
    written = {path: path.stat().st_mtime_ns for path in (corpora / "wmt14").iterdir()}
    capsys.readouterr()
    assert prepare(corpora, "--train", str(corpora / "in/train")) == 0
    assert capsys.readouterr().out.count("up to date") == 3
    assert {path: path.stat().st_mtime_ns for path in (corpora / "wmt14").iterdir()} == written

    write_pair(corpora / "news/newstest2013", ["It works again."], ["Es geht wieder."])
    assert prepare(corpora, "--train", str(corpora / "in/train")) == 0
    out = capsys.readouterr().out
    assert "validation: wrote 1 pairs" in out and out.count("up to date") == 2
    assert (corpora / "wmt14/validation.de").read_text(encoding="utf-8") == "Es geht wieder .\n"


def test_prepare_without_training_data_ends_with_one_message(corpora, capsys):
    assert prepare(corpora) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("prepare_wmt14: error: no train data: --offline and no --train.")
    assert "\n" not in err and "Traceback" not in err
    assert (corpora / "wmt14/test.parquet").is_file() and not (corpora / "wmt14/train.parquet").exists()
