#!/usr/bin/env bash
# Stress test for stalls: many short training runs, several at a time on the same cores (the load
# under which the XLA CPU runtime once sat in a futex wait forever). Each run has a hard timeout
# and the watchdog on; the table says how each ended.
#
#   [STRESS_STEPS=5] bash scripts/stress-hangs.sh [RUNS=20] [PARALLEL=2] [TIMEOUT_S=900] [-- extra train flags]
#
# Writes stress-hangs/results.tsv (run, exit status, wall s) and prints the counts: exit 0 =
# finished, 75 = the watchdog ended a stalled step, 124 = killed by the timeout (a hang the
# watchdog missed). Exits 1 if any run neither finished nor was caught by the watchdog.
set -u
runs=${1:-20}; parallel=${2:-2}; limit=${3:-900}
shift $(( $# < 3 ? $# : 3 )); [[ ${1:-} == -- ]] && shift
here=$(cd "$(dirname "$0")/.." && pwd)
out=${STRESS_DIR:-stress-hangs}
rm -rf "$out"; mkdir -p "$out"
one() {
  local i=$1; local t0; t0=$(date +%s.%N)
  timeout -s KILL "$limit" python "$here/freeenergy.py" train --dim 2 --n 29 --rs 1 --theta 0.15 \
    --steps "${STRESS_STEPS:-5}" --batch 8 --mc-steps 1 --watchdog-first-s 600 --watchdog-min-s 120 --out "$out/run_$i" "${@:2}" \
    >"$out/run_$i.log" 2>&1
  local rc=$?; [[ $rc == 137 ]] && rc=124
  printf '%s\t%s\t%.1f\n' "$i" "$rc" "$(echo "$(date +%s.%N) - $t0" | bc)" >>"$out/results.tsv"
}
export -f one; export here out limit STRESS_STEPS
seq 1 "$runs" | xargs -P "$parallel" -I{} bash -c 'one "$@"' _ {} "$@"
sort -n "$out/results.tsv" -o "$out/results.tsv"
awk -F'\t' '{n[$2]++; t+=$3} END {printf "runs %d: ", NR; for (k in n) printf "exit %s x%d  ", k, n[k]; printf "(mean wall %.1f s)\n", t/NR}' "$out/results.tsv"
! awk -F'\t' '$2 != 0 && $2 != 75 {bad=1} END {exit !bad}' "$out/results.tsv"
