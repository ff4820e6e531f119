#!/usr/bin/env bash
# Training speed of two builds side by side: the MLP and CNN samples on every
# backend that has a device, runs alternating between the builds, the median
# samples/s of each and their ratio (new / old). For checking that a change
# keeps training speed; the machine may be busy, the alternation and the
# medians are what make the ratio fair.
#
#   bench/compare.sh OLD_BUILD NEW_BUILD
#
# Environment: REPS (5) runs of each build per line, BACKENDS ("cpu opencl
# vulkan"), MODELS ("mlp cnn"), and the training samples per run: MLP_LIMIT_CPU (60000),
# CNN_LIMIT_CPU (3200), MLP_LIMIT_GPU (12800), CNN_LIMIT_GPU (640) (the
# software GPU drivers, PoCL and lavapipe, are slow), and DATA, a --data
# folder for both (a copy of Fashion-MNIST with a shorter test set keeps
# the evaluation, which samples/s leaves out, from taking most of the time).
set -euo pipefail
old=$1 new=$2
reps=${REPS:-5}
backends=${BACKENDS:-cpu opencl vulkan}

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# speed BUILD BACKEND MODEL LIMIT: samples/s of one 1-epoch run.
speed() {
    local line
    line=$(XGRAD_BACKEND=$2 "$1/samples/mnist_$3" --epochs 1 --limit "$4" \
           ${DATA:+--data "$DATA"} 2>/dev/null | grep '^result:') || return 1
    sed -n 's/.* samples_per_s=\([0-9.]*\).*/\1/p' <<<"$line"
}

echo "| backend | model | old samples/s | new samples/s | new / old |"
echo "|---|---|---|---|---|"
for b in $backends; do
    if ! XGRAD_BACKEND=$b "$new/tools/xgrad-info" >/dev/null 2>&1; then
        echo "compare.sh: no $b device, skipped" >&2
        continue
    fi
    for model in ${MODELS:-mlp cnn}; do
        if [ "$b" = cpu ]; then
            [ $model = mlp ] && limit=${MLP_LIMIT_CPU:-60000} || limit=${CNN_LIMIT_CPU:-3200}
        else
            [ $model = mlp ] && limit=${MLP_LIMIT_GPU:-12800} || limit=${CNN_LIMIT_GPU:-640}
        fi
        o=() n=()
        for ((i = 0; i < reps; i++)); do
            o+=("$(speed "$old" "$b" $model "$limit")")
            n+=("$(speed "$new" "$b" $model "$limit")")
        done
        mo=$(printf '%s\n' "${o[@]}" | median)
        mn=$(printf '%s\n' "${n[@]}" | median)
        echo "compare.sh: $b $model old ${o[*]} new ${n[*]}" >&2
        printf '| %s | %s | %s | %s | %.3f |\n' "$b" $model "$mo" "$mn" \
            "$(awk -v a="$mn" -v b="$mo" 'BEGIN { print a / b }')"
    done
done
