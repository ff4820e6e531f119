#!/bin/sh
# --log: the CSV training log has the documented header and rows, its
# losses average to the epoch lines' train_loss, its eval rows hold the
# printed test accuracies, a resumed run continues it as if uninterrupted,
# and a log that cannot be written is a clean error.
# Usage: log_csv.sh MNIST_MLP [FINETUNE]
set -eu
mlp=$1
finetune=${2:-}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "log_csv: $*" >&2; exit 1; }
header=kind,step,epoch,loss,lr,samples_per_s,elapsed_s,accuracy

# The rows' shape: kind, 8 cells, the cells each kind uses, steps never
# going back (train steps strictly rising), epoch = step / STEPS_PER_EPOCH
# for train rows. Prints nothing; fails with the first problem.
check_rows() { # log steps_per_epoch
    [ "$(head -n 1 "$1")" = "$header" ] || fail "$1: header is not $header"
    awk -F, -v per="$2" 'NR > 1 {
        if (NF != 8) { print "row " NR ": " NF " cells"; exit 1 }
        if ($2 < step || $7 < elapsed) { print "row " NR ": goes back"; exit 1 }
        step = $2; elapsed = $7
        if ($1 == "train") {
            if ($2 <= last_train) { print "row " NR ": train step repeated"; exit 1 }
            last_train = $2
            if ($4 == "" || $5 <= 0 || $6 <= 0 || $8 != "") {
                print "row " NR ": train cells"; exit 1 }
            if (sprintf("%.4f", $2 / per) != $3) {
                print "row " NR ": epoch " $3 " is not step / " per; exit 1 }
        } else if ($1 == "eval") {
            if ($4 != "" || $5 != "" || $6 != "" || $8 == "" || $3 != int($3)) {
                print "row " NR ": eval cells"; exit 1 }
        } else { print "row " NR ": kind " $1; exit 1 }
    }' "$1" >"$dir/why" || fail "$1: $(cat "$dir/why")"
}

# Eval row N's accuracy, to 4 places as the epoch lines print it.
eval_acc() { # log n
    awk -F, -v n="$2" '$1 == "eval" && ++k == n { printf "%.4f", $8 }' "$1"
}

# 640 samples in batches of 64: 10 steps an epoch; rows every 3 steps
# (3, 6, 9, 12, ...) cross the epoch's end, and the run's last steps get a
# row of their own (20).
common="--limit 640 --batch-size 64"
"$mlp" $common --epochs 2 --log "$dir/a.csv" --log-every 3 >"$dir/a.txt"
check_rows "$dir/a.csv" 10
[ "$(awk -F, '$1 == "train" { s = $2 } END { print s }' "$dir/a.csv")" = 20 ] ||
    fail "no train row at the last step"
[ "$(grep -c '^eval,' "$dir/a.csv")" = 2 ] || fail "not one eval row per epoch"
for e in 1 2; do
    printed=$(sed -n "s/^epoch $e\/2:.* test_acc=\([^ ]*\).*/\1/p" "$dir/a.txt")
    [ "$(eval_acc "$dir/a.csv" $e)" = "$printed" ] ||
        fail "eval row $e: accuracy $(eval_acc "$dir/a.csv" $e), epoch line $printed"
done
result=$(sed -n 's/^result:.* test_acc=\([^ ]*\).*/\1/p' "$dir/a.txt")
[ "$(eval_acc "$dir/a.csv" 2)" = "$result" ] ||
    fail "last eval row $(eval_acc "$dir/a.csv" 2), result line $result"
# Each row's loss is the mean of its steps: weighted by them, the rows
# give the mean of the two epochs' train_loss.
awk -F, -v printed="$(sed -n 's/^epoch .*train_loss=\([^ ]*\).*/\1/p' \
    "$dir/a.txt" | tr '\n' ' ')" '
    $1 == "train" { sum += $4 * ($2 - step); step = $2 }
    END { split(printed, l, " "); want = (l[1] + l[2]) / 2; got = sum / step
          printf "log_csv: mean loss of the rows %.5f, of the epochs %.5f\n", got, want
          d = got - want; exit !(d < 2e-4 && d > -2e-4) }' "$dir/a.csv" ||
    fail "the rows' losses do not average to the epochs' train_loss"

# Resumed: the interrupted run's log, with rows from past its checkpoint
# and a torn last line, continues as the straight run's (all but the
# timings: samples_per_s and elapsed_s).
"$mlp" $common --epochs 2 --log "$dir/straight.csv" --log-every 5 >/dev/null
"$mlp" $common --epochs 1 --log "$dir/resumed.csv" --log-every 5 \
    --checkpoint "$dir/ckpt.safetensors" >/dev/null
printf 'train,15,1.5000,0.1,0.001,1.0,9.0,\ntrain,2' >>"$dir/resumed.csv"
"$mlp" $common --epochs 2 --log "$dir/resumed.csv" --log-every 5 \
    --resume "$dir/ckpt.safetensors" >/dev/null
cut -d, -f1-5,8 "$dir/straight.csv" >"$dir/straight.cut"
cut -d, -f1-5,8 "$dir/resumed.csv" >"$dir/resumed.cut"
diff "$dir/straight.cut" "$dir/resumed.cut" >&2 ||
    fail "the resumed log differs from the straight run's"

# Logs that cannot be written, or are not logs, are errors (exit 1), found
# before training.
for bad in "$dir/no/such/dir/x.csv" "$dir"; do
    status=0
    "$mlp" $common --epochs 1 --log "$bad" >/dev/null 2>"$dir/err" || status=$?
    [ "$status" = 1 ] && grep -q -- "--log $bad:" "$dir/err" ||
        fail "--log $bad: exit $status, $(cat "$dir/err")"
done
echo "not a log" >"$dir/other.csv"
status=0
"$mlp" $common --epochs 2 --log "$dir/other.csv" \
    --resume "$dir/ckpt.safetensors" >/dev/null 2>"$dir/err" || status=$?
[ "$status" = 1 ] && grep -q "not a training log" "$dir/err" ||
    fail "resumed onto a file that is not a log: exit $status"
[ "$(cat "$dir/other.csv")" = "not a log" ] || fail "a non-log file was changed"

# finetune: a log per phase, each eval row the accuracy it prints.
if [ -n "$finetune" ]; then
    "$finetune" --pretrain-limit 640 --few 128 --epochs 2 \
        --model "$dir/features.safetensors" --log "$dir/ft.csv" >"$dir/ft.txt"
    for phase in pretrain finetune scratch; do
        [ -f "$dir/ft-$phase.csv" ] || fail "no ft-$phase.csv"
    done
    check_rows "$dir/ft-pretrain.csv" 10
    check_rows "$dir/ft-finetune.csv" 2
    check_rows "$dir/ft-scratch.csv" 2
    want=$(sed -n 's/^pretrained .*test_acc=\([^ ]*\)$/\1/p' "$dir/ft.txt")
    [ "$(eval_acc "$dir/ft-pretrain.csv" 1)" = "$want" ] ||
        fail "pretrain log: $(eval_acc "$dir/ft-pretrain.csv" 1), printed $want"
    want=$(sed -n 's/^result:.* finetune_acc=\([^ ]*\).*/\1/p' "$dir/ft.txt")
    [ "$(eval_acc "$dir/ft-finetune.csv" 2)" = "$want" ] ||
        fail "finetune log: $(eval_acc "$dir/ft-finetune.csv" 2), result $want"
    want=$(sed -n 's/^result:.* scratch_acc=\([^ ]*\)$/\1/p' "$dir/ft.txt")
    [ "$(eval_acc "$dir/ft-scratch.csv" 2)" = "$want" ] ||
        fail "scratch log: $(eval_acc "$dir/ft-scratch.csv" 2), result $want"
fi
echo "log_csv: the logs match the runs"
