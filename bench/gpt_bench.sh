#!/usr/bin/env bash
# The gpt sample next to the same model in PyTorch (bench/gpt_torch.py
# bench): training tokens/s and peak RSS, runs alternating between the two,
# medians and the ratio; then generation tokens/s with and without the KV
# cache. The machine may be busy: the alternation and the medians are what
# make the ratio fair.
#
#   bench/gpt_bench.sh [BUILD_DIR]            (default: build)
#
# Environment: REPS (5) runs of each, STEPS (30) timed steps per run,
# CONFIGS (the sample's default and a larger one, as "layers heads embd
# context batch" separated by ';'), TORCH_THREADS (2), PYTHON (the first of
# python3, /usr/bin/python3 that imports torch), GEN (200) tokens for the
# generation figures, XGRAD_BACKEND (as usual). PyTorch runs with
# OMP_WAIT_POLICY=PASSIVE: on a shared machine its OpenMP threads would
# otherwise spin, and measure the machine's load more than PyTorch.
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
reps=${REPS:-5}
steps=${STEPS:-30}
configs=${CONFIGS:-"4 4 128 128 16;8 8 512 256 8"}
gpt="$build/samples/gpt"
[[ -x "$gpt" ]] || { echo "gpt_bench.sh: $gpt not found: build first" >&2; exit 1; }
python=
for c in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [[ -n "$c" ]] && "$c" -c 'import torch' 2>/dev/null; then python=$c; break; fi
done
[[ -n "$python" ]] || { echo "gpt_bench.sh: no python3 with torch" >&2; exit 1; }
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
data=$(mktemp)
trap 'rm -f "$data"' EXIT
# random bytes: speed does not depend on the text
head -c 2000000 /dev/urandom >"$data"

echo "| config (layers heads embd context batch) | xgrad tokens/s | torch tokens/s | ratio | xgrad peak RSS MB | torch peak RSS MB |"
echo "|---|---|---|---|---|---|"
IFS=';' read -ra cfgs <<<"$configs"
for cfg in "${cfgs[@]}"; do
    read -r l h e c b <<<"$cfg"
    xs=() ts=() xm=() tm=()
    for ((i = 0; i < reps; i++)); do
        # both count every step, the first included
        out=$(/usr/bin/time -f 'maxrss_kb=%M' "$gpt" --data "$data" \
              --layers "$l" --heads "$h" --embd "$e" --context "$c" \
              --batch-size "$b" --steps "$steps" \
              --eval-every 1000000 --eval-batches 1 2>&1)
        xs+=("$(sed -n 's/.* tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        xm+=("$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' <<<"$out")")
        out=$(OMP_WAIT_POLICY=PASSIVE "$python" "$here/gpt_torch.py" bench --layers "$l" --heads "$h" \
              --embd "$e" --context "$c" --batch-size "$b" --steps "$steps" \
              --threads "${TORCH_THREADS:-2}")
        ts+=("$(sed -n 's/.*torch_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        tm+=("$(sed -n 's/.*peak_rss_mb=\([0-9.]*\).*/\1/p' <<<"$out")")
    done
    x=$(printf '%s\n' "${xs[@]}" | median)
    t=$(printf '%s\n' "${ts[@]}" | median)
    mx=$(printf '%s\n' "${xm[@]}" | median)
    mt=$(printf '%s\n' "${tm[@]}" | median)
    printf '| %s | %.0f | %.0f | %.2f | %.0f | %.0f |\n' "$cfg" "$x" "$t" \
        "$(echo "$x / $t" | bc -l)" "$(echo "$mx / 1024" | bc -l)" "$mt"
done

gen=${GEN:-200}
# generation: the default model, untrained unless MODEL names a file the
# sample saved (--save); the rate does not depend on the weights
echo
echo "| generation ($gen tokens, default model) | tokens/s |"
echo "|---|---|"
for mode in "KV cache" "no KV cache"; do
    flag=()
    [[ $mode == "no KV cache" ]] && flag=(--no-kv-cache)
    rs=()
    for ((i = 0; i < reps; i++)); do
        out=$("$gpt" --data "$data" --steps 0 --eval-batches 1 ${MODEL:+--load "$MODEL"} \
              --generate "$gen" "${flag[@]}" 2>/dev/null | grep -a '^result:')
        rs+=("$(sed -n 's/.* gen_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
    done
    printf '| %s | %.1f |\n' "$mode" "$(printf '%s\n' "${rs[@]}" | median)"
done
