#!/bin/sh
# Data-parallel training under mpirun on one backend (see tests/meson.build).
# Usage: dist.sh MPIRUN DIST_OPS DIST_TRAIN MNIST_MLP GPT BACKEND
set -eu
mpirun=$1 ops=$2 train=$3 mlp=$4 gpt=$5 backend=$6
export XGRAD_BACKEND=$backend
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
# As root (CI), with more ranks than cores; shared memory between ranks.
run() {
    n=$1
    shift
    timeout 600 "$mpirun" --allow-run-as-root --oversubscribe \
        --mca btl self,vader -np "$n" "$@"
}
say() { echo "dist.sh [$backend]: $*"; }

# 1. The API, with one rank and with two.
run 1 "$ops"
run 2 "$ops"

# 2. Two ranks with batch 32 = one process with batch 64 (the MLP) or one
#    process playing both ranks' BatchNorm shares (the CNN), after 20 Adam
#    steps, within 1e-5 of the largest parameter.
for model in mlp cnn; do
    run 2 "$train" train "$model" "$dir/two-$model.safetensors"
    "$train" train "$model" "$dir/one-$model.safetensors" --emulate 2
    "$train" compare "$dir/two-$model.safetensors" \
        "$dir/one-$model.safetensors" 1e-5
    say "$model: 2 ranks match one process"
done

# 3. The mnist_mlp sample itself: 2 ranks x 32 against 1 x 64, 20 steps.
common="--epochs 1 --limit 1280 --eval-limit 500 --seed 3"
# shellcheck disable=SC2086
"$mlp" $common --batch-size 64 --save "$dir/mlp1.safetensors" > "$dir/one.txt"
# shellcheck disable=SC2086
run 2 "$mlp" $common --batch-size 32 --save "$dir/mlp2.safetensors" \
    > "$dir/two.txt" 2> "$dir/two.err"
"$train" compare "$dir/mlp2.safetensors" "$dir/mlp1.safetensors" 1e-5
# rank 0 alone prints: one result line, counting both ranks' samples
test "$(grep -c '^result:' "$dir/two.txt")" = 1
grep -q 'train_samples=1280' "$dir/two.txt"
grep -q '^data-parallel: 2 ranks x batch 32 = 64 per step' "$dir/two.txt"
say "mnist_mlp: 2 ranks match one process, rank 0 alone prints"

# 4. --resume: exact with the same world size, refused with another.
# shellcheck disable=SC2086
run 2 "$mlp" --limit 640 --eval-limit 200 --epochs 2 \
    --save "$dir/straight.safetensors" > /dev/null 2>&1
# shellcheck disable=SC2086
run 2 "$mlp" --limit 640 --eval-limit 200 --epochs 1 \
    --checkpoint "$dir/ckpt.safetensors" > /dev/null 2>&1
# shellcheck disable=SC2086
run 2 "$mlp" --limit 640 --eval-limit 200 --epochs 2 \
    --resume "$dir/ckpt.safetensors" --save "$dir/resumed.safetensors" \
    > /dev/null 2>&1
cmp "$dir/straight.safetensors" "$dir/resumed.safetensors"
if "$mlp" --limit 640 --eval-limit 200 --epochs 2 \
    --resume "$dir/ckpt.safetensors" > /dev/null 2> "$dir/refused.err"; then
    say "a resume with 1 rank of a 2-rank checkpoint was not refused" >&2
    exit 1
fi
grep -q 'world_size=2, this run 1' "$dir/refused.err"
say "resume: exact with 2 ranks, refused with 1"

# 5. A rank that fails ends the job: rank 1 cannot read its data, rank 0
#    waits in the first collective; the job must end, with an error.
start=$(date +%s)
if run 1 "$mlp" --limit 640 --epochs 1 : -np 1 "$mlp" --limit 640 \
    --epochs 1 --data "$dir/nowhere" > /dev/null 2> "$dir/failed.err"; then
    say "a job with a failing rank exited 0" >&2
    exit 1
fi
grep -q 'rank 1 of 2 failed' "$dir/failed.err"
say "a failing rank ended the job in $(( $(date +%s) - start )) s"

# 6. A killed rank ends the job too (mpirun sees it die): rank 1 of a long
#    gpt run is killed once it trains; the job must be over in 60 s.
"$mpirun" --allow-run-as-root --oversubscribe --mca btl self,vader -np 2 \
    sh -c 'echo $$ > "$0/pid.$OMPI_COMM_WORLD_RANK"; exec "$@"' "$dir" \
    "$gpt" --data "$(dirname "$0")/../README.md" --layers 1 --heads 2 \
    --embd 32 --context 32 --batch-size 4 --steps 100000 --eval-every 100000 \
    > /dev/null 2> "$dir/killed.err" &
job=$!
i=0
while [ ! -s "$dir/pid.1" ] && [ $i -lt 600 ]; do sleep 0.1; i=$((i + 1)); done
sleep 3
kill -9 "$(cat "$dir/pid.1")"
start=$(date +%s)
i=0
while kill -0 "$job" 2> /dev/null && [ $i -lt 600 ]; do
    sleep 0.1
    i=$((i + 1))
done
if kill -0 "$job" 2> /dev/null; then
    kill -9 "$job" 2> /dev/null || true
    say "the job still ran 60 s after a rank was killed" >&2
    exit 1
fi
if wait "$job"; then
    say "a job with a killed rank exited 0" >&2
    exit 1
fi
say "a killed rank ended the job in $(( $(date +%s) - start )) s"
echo "dist.sh [$backend]: all checks passed"
