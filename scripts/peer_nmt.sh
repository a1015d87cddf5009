#!/usr/bin/env bash
# Peer benchmark: nmt on the reference model of ../shared/bench/model.yaml, with the
# interface of the harness's peer_onmt.sh / peer_joey.sh so run_all.sh can run it.
#
#   peer_nmt.sh WORKDIR [STEPS]
#
# Needs: the harness directory in BENCH_DIR (default: ../shared/bench beside this repo),
# its venv-onmt for bench.py's helpers (VENV_ONMT), and nmt installed in NMT_PYTHON's
# environment (default: python3). Env overrides as in the harness: DATA_DIR, PREP_DIR,
# BENCH_THREADS, BENCH_RESULTS, BENCH_GEMM_JSON; NMT_PRECISION (fp32 | bf16: training and decoding);
# NMT_SET: space-separated training config overrides, e.g. "train.seed=7 train.pool_factor=1".
# Output: WORKDIR/result.json (one JSON line, also appended to BENCH_RESULTS and printed), toolkit
# "nmt" (fp32) or "nmt-bf16".
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
BENCH="${BENCH_DIR:-$REPO/../shared/bench}"
[ -f "$BENCH/bench.py" ] || { echo "peer_nmt: no harness at $BENCH (set BENCH_DIR)" >&2; exit 2; }
BENCH="$(cd "$BENCH" && pwd)"
WORK="${1:?usage: peer_nmt.sh WORKDIR [STEPS]}"
PY="${VENV_ONMT:-$HOME/bench-run/venv-onmt}/bin/python"
NMT_PY="${NMT_PYTHON:-python3}"
[ -x "$PY" ] || { echo "peer_nmt: no python at $PY (run $BENCH/setup_venvs.sh onmt)" >&2; exit 2; }
STEPS="${2:-$("$PY" "$BENCH/bench.py" get train.steps)}"
DATA_DIR="$(cd "${DATA_DIR:-$BENCH/../data/multi30k}" && pwd -P)"
mkdir -p "$WORK"
WORK="$(cd "$WORK" && pwd)"
PREP_DIR="${PREP_DIR:-$WORK/prep}"
export BENCH_THREADS="${BENCH_THREADS:-2}"
export OMP_NUM_THREADS="$BENCH_THREADS" MKL_NUM_THREADS="$BENCH_THREADS"
export BENCH_RESULTS="${BENCH_RESULTS:-$HOME/bench-run/results.jsonl}"
PRECISION="${NMT_PRECISION:-fp32}"
T=/usr/bin/time
log() { echo "[peer_nmt $(date +%H:%M:%S)] $*" >&2; }

log "data $DATA_DIR -> prep $PREP_DIR"
"$PY" "$BENCH/bench.py" prep "$DATA_DIR" "$PREP_DIR"
"$NMT_PY" "$BENCH/bench.py" meta "$WORK" nmt "$STEPS" "$DATA_DIR" "$PREP_DIR" nmt sentencepiece sacrebleu numpy

rm -rf "$WORK/run" "$WORK/steplog.json" "$WORK/guard.jsonl"
guard() { "$PY" "$BENCH/cpu_guard.py" --label "$1" >>"$WORK/guard.jsonl"; }
BENCH_CMD=("$NMT_PY" "$HERE/benchmark.py" --bench-dir "$BENCH" --prep "$PREP_DIR" --work "$WORK")
read -ra SETS <<<"${NMT_SET:-}"
guard train
log "train $STEPS steps (threads $BENCH_THREADS) ${NMT_SET:-}"
"$T" -v -o "$WORK/train.time" "${BENCH_CMD[@]}" train --steps "$STEPS" --precision "$PRECISION" "${SETS[@]/#/--set=}" \
  >"$WORK/train.stdout" 2>&1 \
  || { log "training failed, see $WORK/train.stdout"; tail -30 "$WORK/train.stdout" >&2; exit 1; }
"$PY" "$BENCH/bench.py" train-summary "$WORK/steplog.json" >&2

TEST="$("$PY" "$BENCH/bench.py" get data.test)"
TGT="$("$PY" "$BENCH/bench.py" get data.tgt_lang)"
for BEAM in $("$PY" "$BENCH/bench.py" get decode.beams); do
  guard "decode_beam$BEAM"
  log "decode $TEST beam $BEAM"
  "$T" -v -o "$WORK/decode.beam$BEAM.time" "${BENCH_CMD[@]}" decode --beam "$BEAM" --precision "$PRECISION" \
    >"$WORK/decode.beam$BEAM.log" 2>&1 \
    || { log "decode failed, see $WORK/decode.beam$BEAM.log"; tail -30 "$WORK/decode.beam$BEAM.log" >&2; exit 1; }
  "$PY" "$BENCH/bench.py" score "$WORK/hyp.beam$BEAM.sp" "$DATA_DIR/$TEST.$TGT" \
    "$PREP_DIR/spm.$TGT.model" "$WORK/hyp.beam$BEAM.$TGT" >"$WORK/score.beam$BEAM.json"
  log "$(cut -c1-160 "$WORK/score.beam$BEAM.json")"
done

"$PY" "$BENCH/bench.py" collect "$WORK" "nmt$([ "$PRECISION" = fp32 ] || echo "-$PRECISION")"
