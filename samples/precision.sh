#!/bin/sh
# --precision: the MLP learns in bf16 and f16 (mixed precision) about as
# well as in f32 on the same short run, the header says which precision,
# and a checkpoint of one precision refuses a resume in another.
# Usage: precision.sh MNIST_MLP
# Checked per precision: the last train row of the log has a loss below
# 0.6 of the first's (the run learns), and the test accuracy is at most
# 0.03 below f32's. Prints each precision's first and last loss, accuracy
# and samples/s.
set -eu
mlp=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "precision: $*" >&2; exit 1; }

# 4000 samples, batches of 64: 63 steps; a train row every 8 steps.
common="--limit 4000 --eval-limit 2000 --epochs 1 --log-every 8"
for p in f32 bf16 f16; do
    "$mlp" $common --precision "$p" --log "$dir/$p.csv" >"$dir/$p.txt" ||
        fail "$p: the run failed"
    grep -q "precision=$p" "$dir/$p.txt" || fail "$p: not in the header"
    first=$(awk -F, '$1 == "train" { print $4; exit }' "$dir/$p.csv")
    last=$(awk -F, '$1 == "train" { l = $4 } END { print l }' "$dir/$p.csv")
    acc=$(sed -n 's/^result:.* test_acc=\([^ ]*\).*/\1/p' "$dir/$p.txt")
    rate=$(sed -n 's/^result:.* samples_per_s=\([^ ]*\).*/\1/p' "$dir/$p.txt")
    echo "$p: loss $first -> $last, test_acc $acc, samples/s $rate"
    awk -v a="$first" -v b="$last" 'BEGIN { exit !(b < 0.6 * a) }' ||
        fail "$p: the loss went from $first to $last"
    eval "acc_$p=$acc"
done
for p in bf16 f16; do
    eval "acc=\$acc_$p"
    awk -v a="$acc" -v f="$acc_f32" 'BEGIN { exit !(a >= f - 0.03) }' ||
        fail "$p: test_acc $acc, f32 $acc_f32"
done

# A checkpoint records its precision; another one cannot resume it.
"$mlp" --limit 640 --epochs 1 --precision f16 \
    --checkpoint "$dir/ckpt.safetensors" >/dev/null
if "$mlp" --limit 640 --epochs 2 --precision bf16 \
        --resume "$dir/ckpt.safetensors" >/dev/null 2>"$dir/err"; then
    fail "a bf16 run resumed an f16 checkpoint"
fi
grep -q "precision=f16, this run bf16" "$dir/err" ||
    fail "the refusal does not name both precisions: $(cat "$dir/err")"
# ... nor a bad name
if "$mlp" --precision f64 --epochs 0 >/dev/null 2>"$dir/err"; then
    fail "--precision f64 was accepted"
fi
grep -q "f32, bf16 or f16" "$dir/err" || fail "bad --precision: $(cat "$dir/err")"
echo "precision: ok"
