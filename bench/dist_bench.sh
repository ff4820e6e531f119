#!/usr/bin/env bash
# Data-parallel scaling on this machine: the gpt sample (default model) and
# mnist_mlp with the same global batch on 1 process and on 2 ranks under
# mpirun, alternating run by run; medians. Prints tokens/s or samples/s and
# the gradient sync's split of a step (backward, staging, waiting for the
# sums, bytes reduced per step).
#
#   bench/dist_bench.sh [BUILD_DIR]     (default: build)
#
# Environment: REPS (3), STEPS (60, gpt), XGRAD_BACKEND (cpu). One process
# uses all cores; under mpirun each rank is bound to its own core, so on a
# 2-core machine 2 ranks have the same cores as 1 process: what the figure
# shows is the cost of the communication, not more compute.
set -euo pipefail
build=${1:-build}
reps=${REPS:-3}
steps=${STEPS:-60}
export XGRAD_BACKEND=${XGRAD_BACKEND:-cpu}
mpirun=(mpirun --allow-run-as-root --oversubscribe --mca btl self,vader)
gpt=(--steps "$steps" --eval-every 100000 --eval-batches 1 --generate 0)
mlp=(--epochs 1 --limit 12800 --eval-limit 200)

median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1" | tail -n 1; }

declare -A rate last_sync
for ((i = 1; i <= reps; i++)); do
    for what in gpt1 gpt2 mlp1 mlp2; do
        case $what in
            gpt1) out=$("$build/samples/gpt" "${gpt[@]}" --batch-size 16 2>/dev/null) ;;
            gpt2) out=$("${mpirun[@]}" -np 2 "$build/samples/gpt" "${gpt[@]}" --batch-size 8 2>/dev/null) ;;
            mlp1) out=$("$build/samples/mnist_mlp" "${mlp[@]}" --batch-size 64 2>/dev/null) ;;
            mlp2) out=$("${mpirun[@]}" -np 2 "$build/samples/mnist_mlp" "${mlp[@]}" --batch-size 32 2>/dev/null) ;;
        esac
        line=$(grep '^result:' <<<"$out")
        r=$(field "$line" tokens_per_s)
        [[ -n $r ]] || r=$(field "$line" samples_per_s)
        rate[$what]+="$r "
        sync=$(grep 'gradient sync' <<<"$out" || true)
        echo "run $i $what: $r ${sync:+($sync)}" >&2
        [[ -z $sync ]] || last_sync[$what]=$sync
    done
done
echo "load: $(cut -d' ' -f1-3 /proc/loadavg), $(nproc) cores, backend $XGRAD_BACKEND"
for what in gpt mlp; do
    one=$(tr ' ' '\n' <<<"${rate[${what}1]}" | grep . | median)
    two=$(tr ' ' '\n' <<<"${rate[${what}2]}" | grep . | median)
    unit=$([[ $what == gpt ]] && echo tokens/s || echo samples/s)
    printf '%s: 1 process %s %s, 2 ranks %s %s, ratio %.2f\n' "$what" "$one" \
        "$unit" "$two" "$unit" "$(awk -v a="$two" -v b="$one" 'BEGIN { print a / b }')"
    echo "  2 ranks, ${last_sync[${what}2]:-}"
done
