#!/usr/bin/env bash
# The side-by-side peer benchmark with nmt in it: ../shared/bench/run_all.sh on a copy of
# the harness (the shared one is read-only) that also holds a peer_nmt.sh calling this
# repo's scripts/peer_nmt.sh (and a peer_nmt_bf16.sh running it with NMT_PRECISION=bf16).
#
#   scripts/run_bench.sh OUTDIR [STEPS] [TOOLKITS...]     (default toolkits: onmt joey nmt nmt_bf16)
#
# Needs the harness's venvs (../shared/bench/setup_venvs.sh) and nmt installed for python3.
# Env: BENCH_DIR (the harness, default ../shared/bench), DATA_DIR (raw Multi30k, default
# ../shared/data/multi30k), and the harness's own variables (BENCH_THREADS, ...).
# Output: OUTDIR/results.jsonl and OUTDIR/summary.md (the harness's table).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/.." && pwd)"
OUT="${1:?usage: run_bench.sh OUTDIR [STEPS] [TOOLKITS...]}"
STEPS="${2:-2000}"
shift $(( $# >= 2 ? 2 : 1 ))
TOOLKITS=("${@:-onmt joey nmt nmt_bf16}")
SRC="$(cd "${BENCH_DIR:-$REPO/../shared/bench}" && pwd)"
export DATA_DIR="$(cd "${DATA_DIR:-$REPO/../shared/data/multi30k}" && pwd -P)"
mkdir -p "$OUT"
OUT="$(cd "$OUT" && pwd)"
rm -rf "$OUT/harness"
cp -r "$SRC" "$OUT/harness"
chmod -R u+w "$OUT/harness"
cat >"$OUT/harness/peer_nmt.sh" <<WRAP
#!/usr/bin/env bash
BENCH_DIR="$OUT/harness" exec "$HERE/peer_nmt.sh" "\$@"
WRAP
cat >"$OUT/harness/peer_nmt_bf16.sh" <<WRAP
#!/usr/bin/env bash
NMT_PRECISION=bf16 BENCH_DIR="$OUT/harness" exec "$HERE/peer_nmt.sh" "\$@"
WRAP
chmod +x "$OUT/harness/peer_nmt.sh" "$OUT/harness/peer_nmt_bf16.sh"
# shellcheck disable=SC2068
exec "$OUT/harness/run_all.sh" "$OUT" "$STEPS" ${TOOLKITS[@]}
