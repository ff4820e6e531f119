#!/bin/sh
# --lr-schedule cosine: the rate the sample reports after each epoch is the
# closed form, computed here with awk, and a checkpoint refuses to resume
# under another schedule. Usage: lr_schedule.sh MNIST_MLP
set -eu
sample=$1
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "lr_schedule: $*" >&2; exit 1; }

# The rate of the last step of epoch EPOCH ("lr=" on its line) against
# base * (step + 1) / warmup in the warmup, else
# base * (1 + cos(pi * (step - warmup) / (total - warmup))) / 2.
expect() { # output epoch step warmup total base
    got=$(sed -n "s/^epoch $2\/[0-9]*:.* lr=\([^ ]*\)$/\1/p" "$1")
    [ -n "$got" ] || fail "no lr on the line of epoch $2"
    awk -v got="$got" -v s="$3" -v w="$4" -v t="$5" -v b="$6" 'BEGIN {
        pi = atan2(0, -1)
        want = s < w ? b * (s + 1) / w : b * (1 + cos(pi * (s - w) / (t - w))) / 2
        d = got - want; if (d < 0) d = -d
        printf "lr_schedule: step %d lr=%s, closed form %.6g\n", s, got, want
        exit !(d <= 0.002 * want)
    }' || fail "step $3: lr $got is not the closed form"
}

# 640 samples in batches of 64: 10 steps per epoch.
common="--limit 640 --batch-size 64 --lr 0.01 --lr-schedule cosine"
"$sample" $common --epochs 2 --warmup 4 >"$dir/a.txt"
expect "$dir/a.txt" 1 9 4 20 0.01
expect "$dir/a.txt" 2 19 4 20 0.01
# A run stopped after 1 of 2 scheduled epochs, still in its warmup.
"$sample" $common --epochs 1 --schedule-epochs 2 --warmup 15 \
    --checkpoint "$dir/ckpt.safetensors" >"$dir/b.txt"
expect "$dir/b.txt" 1 9 15 20 0.01
# Resumed under a schedule of another length or a constant rate: refused.
if "$sample" $common --epochs 2 --warmup 15 --schedule-epochs 3 \
    --resume "$dir/ckpt.safetensors" >/dev/null 2>"$dir/err.txt"; then
    fail "resumed under a cosine schedule of another length"
fi
grep -q "lr_schedule=cosine:15:2" "$dir/err.txt" || fail "unclear refusal: $(cat "$dir/err.txt")"
if "$sample" --limit 640 --batch-size 64 --lr 0.01 --epochs 2 \
    --resume "$dir/ckpt.safetensors" >/dev/null 2>&1; then
    fail "resumed a cosine checkpoint under a constant rate"
fi
# Resumed as it was meant: the rate goes on where it stopped.
"$sample" $common --epochs 2 --warmup 15 \
    --resume "$dir/ckpt.safetensors" >"$dir/c.txt"
expect "$dir/c.txt" 2 19 15 20 0.01
echo "lr_schedule: all rates match the closed form"
