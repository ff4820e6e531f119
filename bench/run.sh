#!/usr/bin/env bash
# Runs xgrad's mnist_mlp next to the PyTorch reference (bench/mlp_torch.py)
# on the same settings, then the micro-benchmarks, and prints markdown.
#
#   bench/run.sh [BUILD_DIR]          (default: build)
#
# Environment: REPS (3) timed 1-epoch runs of each, ACC_EPOCHS (3) epochs of
# the accuracy run, TORCH_THREADS (2), PYTHON (first of python3,
# /usr/bin/python3 that imports torch and numpy), XGRAD_BACKEND (as usual).
# Speed is the median samples/s of the 1-epoch runs; accuracy comes from one
# ACC_EPOCHS run of each.
set -euo pipefail

build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
reps=${REPS:-3}
acc_epochs=${ACC_EPOCHS:-3}
settings=(--batch-size 64 --lr 1e-3 --optimizer adam --hidden 256 --seed 0)
mlp="$build/samples/mnist_mlp"

if [[ ! -x "$mlp" ]]; then
    echo "run.sh: $mlp not found; build first: meson setup $build && ninja -C $build" >&2
    exit 1
fi

python=
for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c 'import torch, numpy' 2>/dev/null; then
        python=$candidate
        break
    fi
done

# The `result:` line of a command; on failure its output goes to stderr.
result() {
    local out
    if ! out=$("$@" 2>&1); then
        printf 'run.sh: failed: %s\n%s\n' "$*" "$out" >&2
        return 1
    fi
    grep '^result:' <<<"$out" | tail -n 1
}

# field LINE NAME: the value of NAME=... in a result line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# measure NAME CMD...: sets speed_NAME (median samples/s), acc_NAME,
# backend_NAME.
measure() {
    local name=$1 line speeds=()
    shift
    for ((i = 1; i <= reps; i++)); do
        line=$(result "$@" --epochs 1)
        speeds+=("$(field "$line" samples_per_s)")
        echo "  $name run $i/$reps: $line" >&2
    done
    printf -v "speed_$name" '%s' "$(printf '%s\n' "${speeds[@]}" | median)"
    printf -v "backend_$name" '%s' "$(field "$line" backend)"
    line=$(result "$@" --epochs "$acc_epochs")
    echo "  $name accuracy run: $line" >&2
    printf -v "acc_$name" '%s' "$(field "$line" test_acc)"
}

echo "measuring ($reps x 1 epoch + 1 x $acc_epochs epochs each; progress on stderr)" >&2
measure xgrad "$mlp" "${settings[@]}"
if [[ -n "$python" ]]; then
    measure torch "$python" "$here/mlp_torch.py" --threads "${TORCH_THREADS:-2}" "${settings[@]}"
else
    echo "run.sh: no python3 that imports torch and numpy; skipping the PyTorch reference" >&2
fi

echo
echo "## Fashion-MNIST MLP 784-256-10, Adam 1e-3, batch 64 ($(nproc) cores)"
echo
echo "| implementation | backend | samples/s (median of $reps) | xgrad / torch | test_acc after $acc_epochs epochs |"
echo "|---|---|---:|---:|---:|"
if [[ -n "$python" ]]; then
    ratio=$(awk -v a="$speed_xgrad" -v b="$speed_torch" 'BEGIN { printf "%.2f", a / b }')
    echo "| xgrad | $backend_xgrad | $speed_xgrad | $ratio | $acc_xgrad |"
    echo "| PyTorch ($("$python" -c 'import torch; print(torch.__version__)'), ${TORCH_THREADS:-2} threads) | $backend_torch | $speed_torch | 1.00 | $acc_torch |"
else
    echo "| xgrad | $backend_xgrad | $speed_xgrad | n/a | $acc_xgrad |"
fi

echo
echo "## Micro-benchmarks"
echo
echo '```'
for bench in bench_matmul bench_small_op; do
    if [[ -x "$build/bench/$bench" ]]; then
        "$build/bench/$bench"
    else
        echo "$bench: not built"
    fi
done
echo '```'
