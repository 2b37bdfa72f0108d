#!/bin/bash
# The GPU measurements the open issues ask for, as one prepared run for a lent device machine
# (the workplace's `device` tool: one H100/H200, about 15 minutes of device time per session).
#
#   bash scripts/device-checks.sh --fetch-wheels   # here, once: the pure-Python wheels the device
#                                                  # image lacks (dm-haiku, jmp, folx, ...) into .wheels/
#   bash scripts/device-checks.sh --quick          # here: the same cases at toy sizes on the CPU
#   # on the device:  run(command="bash scripts/device-checks.sh", carry=[".wheels"], timeout_s=570)
#
# Each case is one `freeenergy bench --json` (median of --repeats timed steps after compilation),
# written to $OUT/<case>.json (stderr to $OUT/<case>.err), under its own time limit so that one
# slow compilation does not cost the rest; the cases run in the order of the issues (the electron
# gas, the one-component plasma, hydrogen). $OUT/summary.txt lists case, exit status, seconds
# and the step time. Without $OUT (a CPU dry run) the files go to runs/device-checks/.
set -u
cd "$(dirname "$0")/.."
WHEELS="pip jmp==0.0.4 dm-haiku==0.0.17 folx==0.2.30 jaxtyping wadler-lindig tabulate absl-py"
if [ "${1:-}" = "--fetch-wheels" ]; then
    mkdir -p .wheels && python -m pip download --no-deps -q -d .wheels ${WHEELS#pip }
    ls .wheels; exit $?
fi
QUICK=0; [ "${1:-}" = "--quick" ] && QUICK=1
OUT="${OUT:-runs/device-checks}"; mkdir -p "$OUT"
if [ -d .wheels ] && ! python -c "import haiku, folx" 2>/dev/null; then
    python -m pip install -q --no-deps --target .deps .wheels/*.whl || exit 3
    export PYTHONPATH="$PWD/.deps${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python -c "import jax; print('jax', jax.__version__, jax.devices())" | tee "$OUT/devices.txt"

# name | per-case limit (s) | bench options ; --quick swaps the sizes for toy ones. Compilation
# is most of a case's time (hydrogen: minutes); the whole list stops at BUDGET seconds, a case
# that would not fit in what is left is skipped (named in summary.txt).
BUDGET="${BUDGET:-540}"; T0=$(date +%s)
CASES=(
  "ueg2d_n29_b1024|110|--dim 2 --n 29 --rs 10 --theta 0.15 --twist 0.25 0.25 --batch 1024 --mc-steps 50"
  "ocp_n54_b1024|100|--system ocp --dim 3 --n 54 --rs 1 --gamma 10 --batch 1024"
  "h_n16_t2_b512|160|--system hydrogen --n 16 --rs 1.25 --temperature-K 6000 --twists 2 --batch 512 --mc-steps 20"
  "h_n32_b256|130|--system hydrogen --n 32 --rs 1.25 --temperature-K 6000 --batch 256 --mc-steps 20"
  "ocp_n128_b1024|120|--system ocp --dim 3 --n 128 --rs 1 --gamma 10 --batch 1024 --proton-flow-chunk 256"
  "h_n54_b256|150|--system hydrogen --n 54 --rs 1.25 --temperature-K 6000 --batch 256 --mc-steps 20"
)
QUICK_OPTS=(
  "--dim 2 --n 5 --rs 10 --theta 0.15 --twist 0.25 0.25 --batch 8 --mc-steps 2 --van-hidden 8 --backflow-hidden 8"
  "--system ocp --dim 3 --n 4 --rs 1 --gamma 10 --batch 8 --proton-flow-layers 3 --proton-flow-hidden 8"
  "--system hydrogen --n 4 --rs 1.25 --temperature-K 6000 --twists 2 --batch 16 --mc-steps 2 --proton-flow-layers 3 --proton-flow-hidden 8 --van-hidden 8 --backflow-hidden 8"
  "--system hydrogen --n 4 --rs 1.25 --temperature-K 6000 --batch 8 --mc-steps 2 --proton-flow-layers 3 --proton-flow-hidden 8 --van-hidden 8 --backflow-hidden 8"
  "--system ocp --dim 3 --n 4 --rs 1 --gamma 10 --batch 8 --proton-flow-layers 3 --proton-flow-hidden 8 --proton-flow-chunk 4"
)
: > "$OUT/summary.txt"
for i in "${!CASES[@]}"; do
    IFS='|' read -r name limit opts <<< "${CASES[$i]}"
    repeats=3
    if [ $QUICK = 1 ]; then
        [ $i -ge ${#QUICK_OPTS[@]} ] && break
        opts="${QUICK_OPTS[$i]}"; limit=300; repeats=2
    fi
    start=$(date +%s); left=$(( BUDGET - (start - T0) ))
    if [ $QUICK = 0 ] && [ "$left" -lt "$limit" ]; then
        echo "$name skipped: ${left}s of the ${BUDGET}s budget left" | tee -a "$OUT/summary.txt"
        continue
    fi
    timeout --signal=TERM --kill-after=10 "$limit" python freeenergy.py bench $opts \
        --repeats $repeats --json > "$OUT/$name.json" 2> "$OUT/$name.err"
    rc=$?
    step=$(python -c "import json,sys; d=json.load(open(sys.argv[1])); print(d.get('step_s', d.get('step', '?')))" "$OUT/$name.json" 2>/dev/null || echo "-")
    echo "$name rc=$rc $(( $(date +%s) - start ))s step=$step" | tee -a "$OUT/summary.txt"
done
