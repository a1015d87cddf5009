"""Search speed and BLEU of each precision and the shortlist, on the nmt model of a harness run.

After ``scripts/run_bench.sh OUT STEPS onmt nmt``, decode the harness's test set with the nmt model
of ``OUT/nmt`` at every setting (fp32, bf16, int8, fp32 + shortlist, int8 + shortlist) and beam
width of the harness, each in a fresh process after the harness's CPU guard, and score it with the
harness's own scorer; each setting's files go to ``OUT/variants/SETTING``. The shortlist is built
first (``nmt-shortlist``, from the model's training corpus) unless ``OUT/nmt/shortlist.pt``
exists. Prints one JSON object: per setting and beam, sentences/s, BLEU, chrF, the ratio to
OpenNMT-py's sentences/s in ``OUT/results.jsonl`` (where it ran) and the other processes' CPU load
during the decode.

    python scripts/decode_variants.py OUT [--settings fp32 int8 ...] [--beams 5 1] [--workers 2]

``--workers N`` decodes every setting with N batches at once (``decode.workers``), the CPU threads
of ``BENCH_THREADS`` shared among them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SETTINGS: dict[str, list[str]] = {
    "fp32": [],
    "bf16": ["--precision", "bf16"],
    "int8": ["--precision", "int8"],
    "shortlist": ["--shortlist", "{shortlist}"],
    "int8+shortlist": ["--precision", "int8", "--shortlist", "{shortlist}"],
}
"""A setting's name -> its arguments to ``benchmark.py decode``."""


def peer_speeds(results: Path, toolkit: str = "onmt") -> dict[str, float]:
    """``beamN`` -> sentences/s of ``toolkit``'s latest decode in the harness's results (the harness's
    ``redecode.sh`` appends a record), empty if it did not run."""
    speeds: dict[str, float] = {}
    if results.is_file():
        for line in results.read_text().splitlines():
            record = json.loads(line)
            if record.get("toolkit") == toolkit:
                speeds = {beam: d["sents_s"] for beam, d in record.get("decode", {}).items()}
    return speeds


def run(command: list[str], **env: str) -> str:
    """Run ``command``; its stdout, or exit with its stderr's tail."""
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, **env})
    if done.returncode != 0:
        sys.exit(f"{' '.join(command)} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def decode_once(
    out: Path, setting: str, beam: int, workers: int, shortlist: Path, spec: dict, guard_wait: float
) -> dict:
    """Decode and score the test set at one setting and beam; the benchmark's and scorer's figures."""
    harness, work = out / "harness", out / "variants" / setting  # its own files: fp32's and bf16's names are alike
    work.mkdir(parents=True, exist_ok=True)
    if not (work / "run").exists():
        (work / "run").symlink_to(out / "nmt" / "run")
    onmt_python = str(Path(os.environ.get("VENV_ONMT", Path.home() / "bench-run" / "venv-onmt")) / "bin" / "python")
    guard = [onmt_python, str(harness / "cpu_guard.py"), "--label", f"decode_{setting}_beam{beam}"]
    run([*guard, "--wait", str(guard_wait)])
    arguments = [a.format(shortlist=shortlist) for a in SETTINGS[setting]] + ["--workers", str(workers)]
    benchmark = [sys.executable, str(REPO / "scripts" / "benchmark.py"), "--bench-dir", str(harness)]
    benchmark += ["--prep", str(out / "prep"), "--work", str(work), "decode", "--beam", str(beam), *arguments]
    threads = os.environ.get("BENCH_THREADS", "2")
    result = json.loads(run(benchmark, BENCH_THREADS=threads, OMP_NUM_THREADS=threads).splitlines()[-1])
    hyp = Path(result["hyp"])
    tgt = spec["data"]["tgt_lang"]
    reference = Path(os.environ.get("DATA_DIR", REPO.parent / "shared" / "data" / "multi30k"))
    reference = reference / f"{spec['data']['test']}.{tgt}"
    score = [onmt_python, str(harness / "bench.py"), "score", str(hyp), str(reference)]
    score += [str(out / "prep" / f"spm.{tgt}.model"), str(hyp.with_suffix(f".{tgt}"))]
    scored = json.loads(run(score).splitlines()[-1])
    return {
        "sents_s": round(result["n_sents"] / result["decode_s"], 1),
        "bleu": scored["bleu"],
        "chrf": scored["chrf"],
        "other_load_cores": result["other_load_cores"],
        **({"shortlist_rows": round(result["shortlist_rows"], 1)} if "shortlist_rows" in result else {}),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out", type=Path, help="the OUT of scripts/run_bench.sh, with its nmt run")
    parser.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    parser.add_argument("--beams", nargs="+", type=int, help="default: the harness's decode.beams")
    parser.add_argument("--workers", type=int, default=1, help="batches searched at once (decode.workers)")
    parser.add_argument("--guard-wait", type=float, default=900, help="seconds to wait for an idle CPU (then go on)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    checkpoint = out / "nmt" / "run" / "last.pt"
    if not checkpoint.is_file():
        parser.error(f"{checkpoint} is missing: run scripts/run_bench.sh {args.out} STEPS onmt nmt first")
    spec = yaml.safe_load((out / "harness" / "model.yaml").read_text())
    shortlist = out / "nmt" / "shortlist.pt"
    if any("shortlist" in s for s in args.settings) and not shortlist.is_file():
        run(["nmt-shortlist", "--checkpoint", str(checkpoint), "--output", str(shortlist), "--quiet"])
    peers = peer_speeds(out / "results.jsonl")
    table: dict[str, dict[str, dict]] = {}
    for setting in args.settings:
        for beam in args.beams or spec["decode"]["beams"]:
            row = decode_once(out, setting, beam, args.workers, shortlist, spec, args.guard_wait)
            if f"beam{beam}" in peers:
                row["x_onmt"] = round(row["sents_s"] / peers[f"beam{beam}"], 2)
            table.setdefault(setting, {})[f"beam{beam}"] = row
            print(json.dumps({"setting": setting, "beam": beam, **row}), file=sys.stderr)
    print(json.dumps({"onmt_sents_s": peers, "workers": args.workers, "settings": table}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
