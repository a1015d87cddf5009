#!/usr/bin/env bash
# The GPU check of issue 19, meant to finish in under 8 minutes on one H100:
#   1. pytest -m cuda (tests/test_cuda.py): a few updates in fp32, bf16 and fp16 with exact resume,
#      nmt-translate and nmt-align on CUDA, nmt-train under torchrun;
#   2. scripts/gpu_bench.py: the paper's model (4x1000 LSTMs, 50K joint vocabulary, batch 128, input
#      feeding, local-p general) for 200 updates in bf16 and fp32, then beam-5 decoding of 500 sentences.
#
#   scripts/gpu_check.sh                    (from anywhere; runs this checkout's nmt)
#   GPU_CHECK_TINY=1 scripts/gpu_check.sh   (without a GPU: the benchmark's --tiny run on the CPU)
#
# Writes pytest.txt and gpu_check.json (the benchmark's JSON lines) to $OUT if set, else to a new
# temp dir, and prints both. Without CUDA it says "no GPU", runs pytest -m cuda to show the skips and
# exits with pytest's status (0) without the benchmark. Otherwise the exit status is 1 if the tests
# or the benchmark failed.
#
# Device time, estimated (not yet measured on a GPU): the tests about 1-2 minutes (13 tiny trainings,
# 3 translations, 2 alignments and a torchrun job, which starts Python and CUDA anew). The benchmark, per
# precision: 200 updates at the 100K target tokens/s goal with ~31-token targets (30 words + EOS) take
# 128 x 31 x 200 / 100K = 8 s (fp32, or a slower bf16, several times that), plus about 30 s of set-up
# (corpus encoding, building the 222M-parameter model, writing its 0.9 GB checkpoint) and about 10 s
# of decoding: 2-4 minutes for both. Each step has a time limit so that a hang still leaves output.
set -uo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHON="${PYTHON:-python}"
OUT="${OUT:-$(mktemp -d -t gpu_check.XXXXXX)}"
mkdir -p "$OUT"
cd "$REPO" || exit 1
export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"

run_tests() {  # cuBLAS reads its workspace setting once: set for the whole process, before any CUDA call
    CUBLAS_WORKSPACE_CONFIG=:4096:8 timeout 300 "$PYTHON" -m pytest -m cuda -q -rs -p no:cacheprovider 2>&1 |
        tee "$OUT/pytest.txt"
}

run_bench() {
    rm -f "$OUT/gpu_check.json"
    timeout 360 "$PYTHON" scripts/gpu_bench.py --json "$OUT/gpu_check.json" "$@"
}

if ! "$PYTHON" -c 'import sys, torch; sys.exit(not torch.cuda.is_available())'; then
    echo "no GPU: cuda tests skipped (torch.cuda.is_available() is false here), and the benchmark needs one"
    run_tests
    status=$?
    if [[ "${GPU_CHECK_TINY:-0}" == 1 ]]; then
        echo "GPU_CHECK_TINY=1: the benchmark's path with a tiny model on the CPU (its figures mean nothing)"
        run_bench --tiny || status=1
    fi
    echo "output in $OUT"
    exit "$status"
fi

"$PYTHON" -c 'import torch; print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, CUDA {torch.version.cuda}")'
start=$SECONDS
run_tests
tests=$?
echo "tests: $((SECONDS - start)) s, pytest status $tests"
start=$SECONDS
run_bench
bench=$?
echo "benchmark: $((SECONDS - start)) s, status $bench"
echo "output in $OUT"
[[ $tests == 0 && $bench == 0 ]]
