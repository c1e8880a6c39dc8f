#!/usr/bin/env bash
# Every GPU claim of the project in one prepared run on one GPU (at most 8 minutes), or its
# CPU rehearsal at tiny shapes (at most 5 minutes):
#
#   benchmarks/gpu_session.sh OUT_DIR               # on a machine with one CUDA GPU
#   benchmarks/gpu_session.sh --rehearse OUT_DIR    # anywhere: every stage on CPU, tiny shapes
#
# Each stage runs in its own process under its own timeout, cut further so the whole run
# stays inside its budget, and writes OUT_DIR/stages/<stage>.json; its output goes to
# OUT_DIR/logs/<stage>.log. OUT_DIR/summary.json holds every stage's status ("ok",
# "skipped: <why>" or "failed: <why>"). Exit status 0 when every stage is ok or skipped.
# PYTHON (default: python) is the interpreter with the project installed.
set -u

mode=gpu
if [ "${1:-}" = "--rehearse" ]; then
    mode=rehearse
    shift
fi
out=${1:?usage: benchmarks/gpu_session.sh [--rehearse] OUT_DIR}
py=${PYTHON:-python}
here=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$out/stages" "$out/logs"
out=$(cd "$out" && pwd)

if [ "$mode" = rehearse ]; then
    budget=300
    flag=--rehearse
    # stage:seconds; the last stage gets whatever the budget has left. The Triton kernels run
    # in Triton's interpreter on CPU.
    plan="env:20 gpu_tests:40 kernels:30 attention_accuracy:30 msda_accuracy:30 model:40 pretrain:300"
else
    budget=480
    flag=
    plan="env:20 gpu_tests:80 kernels:60 attention_accuracy:45 msda_accuracy:30 model:75 pretrain:480"
fi
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 RAY_USAGE_STATS_ENABLED=0 TOKENIZERS_PARALLELISM=false
export GLOO_SOCKET_IFNAME=${GLOO_SOCKET_IFNAME:-lo} HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TORCH_EXTENSIONS_DIR=${TORCH_EXTENSIONS_DIR:-$here/../.cache/torch_extensions}

session_start=$(date +%s)
for item in $plan; do
    stage=${item%%:*}
    limit=${item##*:}
    left=$(( budget - ($(date +%s) - session_start) - 5 ))
    if [ "$left" -lt 5 ]; then
        echo "$stage: not run, the ${budget}s budget is spent"
        continue
    fi
    [ "$limit" -gt "$left" ] && limit=$left
    start=$(date +%s)
    if [ "$stage" = msda_accuracy ] && [ "$mode" = rehearse ]; then
        TRITON_INTERPRET=1 timeout --kill-after=5 "$limit" "$py" "$here/gpu_session.py" "$stage" "$out" $flag \
            >"$out/logs/$stage.log" 2>&1
    else
        timeout --kill-after=5 "$limit" "$py" "$here/gpu_session.py" "$stage" "$out" $flag \
            >"$out/logs/$stage.log" 2>&1
    fi
    rc=$?
    seconds=$(( $(date +%s) - start ))
    printf '{"rc": %d, "seconds": %d, "limit_s": %d}\n' "$rc" "$seconds" "$limit" >"$out/stages/$stage.exit.json"
    echo "$stage: exit $rc after ${seconds}s (limit ${limit}s)"
done
"$py" "$here/gpu_session.py" summarize "$out" $flag
