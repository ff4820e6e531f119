#!/bin/sh
# --precision on every backend: short runs of the MLP, the CNN and the GPT
# sample in bf16 and f16 agree between cpu, OpenCL and Vulkan (PoCL and
# lavapipe here), and with f32 on cpu.
# Usage: precision_backends.sh XGRAD_INFO MNIST_MLP MNIST_CNN GPT GPT_DATA
# f32 runs on cpu only (the reference of the 16-bit runs; the backends'
# f32 agreement is the conformance tests' and the quick samples'). Checked,
# for each sample:
#   - each backend against cpu in bf16 and f16: every train row of the log
#     has a loss within BACKEND_TOL (relative) of cpu's, the MLP's and CNN's
#     test accuracy is within ACC_TOL of cpu's, the GPT's validation loss
#     within BACKEND_TOL;
#   - on cpu, bf16 and f16 against f32: the last train loss and the GPT's
#     validation loss within PRECISION_TOL (relative), the MLP's test
#     accuracy within PRECISION_ACC_TOL; and each run learns (the last
#     train loss below the first). Not the CNN's accuracy: its run is 6
#     steps (Vulkan on lavapipe trains it at ~15 samples/s), and in f16
#     the loss scaler skips the first (the f16 loss x 65536 overflows),
#     so after 5 steps from random weights its accuracy says little (0.26
#     against 0.45).
# The tolerances are environment variables with the defaults below (a
# wrong one shows that the test can fail). A backend without a device is
# skipped, unless XGRAD_REQUIRE_BACKENDS=1 (a backend this build lacks is
# skipped either way); exit 77 (SKIP) after the cpu checks when neither
# OpenCL nor Vulkan has one. Vulkan runs with the validation layer: any
# message fails. Prints one line per run: losses, accuracy, speed.
set -eu
info=$1 mlp=$2 cnn=$3 gpt=$4 data=$5
# Same precision, the backends differ in the order of their sums, which
# 16-bit runs round every product's output after.
BACKEND_TOL=${BACKEND_TOL:-0.01}
ACC_TOL=${ACC_TOL:-0.02}
PRECISION_TOL=${PRECISION_TOL:-0.05}
PRECISION_ACC_TOL=${PRECISION_ACC_TOL:-0.03}
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "precision_backends: $*" >&2; exit 1; }
require=${XGRAD_REQUIRE_BACKENDS:-0}

# The backends with a device (cpu first). One this build lacks is skipped
# whatever XGRAD_REQUIRE_BACKENDS says.
built=$("$info" | sed -n 's/^backends built: *//p')
backends=cpu
for b in opencl vulkan; do
    case " $built " in
    *" $b "*) ;;
    *) echo "precision_backends: $b: not built, skipped"; continue ;;
    esac
    if XGRAD_BACKEND=$b "$info" >/dev/null 2>&1; then
        backends="$backends $b"
    elif [ "$require" = 1 ]; then
        fail "$b: no device (XGRAD_REQUIRE_BACKENDS=1)"
    else
        echo "precision_backends: $b: no device, skipped"
    fi
done

# run NAME BACKEND PROGRAM ARGS...: the run's output in $dir/NAME.BACKEND.txt
# and its log in .csv; fails on an error or a validation message.
run() {
    name=$1 b=$2
    shift 2
    out=$dir/$name.$b
    XGRAD_BACKEND=$b XGRAD_VK_VALIDATION=1 "$@" --log "$out.csv" \
        >"$out.txt" 2>"$out.err" || {
        cat "$out.err" >&2
        fail "$name on $b: the run failed"
    }
    if grep -qi "vulkan validation" "$out.err"; then
        cat "$out.err" >&2
        fail "$name on $b: Vulkan validation messages (above)"
    fi
}

# losses FILE.csv COLUMN: "step loss" per train row
losses() { awk -F, -v c="$2" '$1 == "train" { print $2, $c }' "$1"; }
# field FILE.txt KEY: KEY=value of the result line
field() { sed -n "s/^result:.* $2=\([^ ]*\).*/\1/p" "$1"; }
# within A B TOL: |A - B| <= TOL * |B|
within() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN {
    d = a - b; if (d < 0) d = -d; if (b < 0) b = -b; exit !(d <= t * b) }'; }
# near A B TOL: |A - B| <= TOL
near() { awk -v a="$1" -v b="$2" -v t="$3" 'BEGIN {
    d = a - b; if (d < 0) d = -d; exit !(d <= t) }'; }

# on PRECISION: the backends that run it
on() { if [ "$1" = f32 ]; then echo cpu; else echo "$backends"; fi; }
# against_cpu VAR P TEST TOL: ${VAR}_${P}_<b> of every other backend that
# ran P against ${VAR}_${P}_cpu, by TEST (near or within) with tolerance TOL.
against_cpu() {
    for b in $(on "$2"); do
        [ "$b" = cpu ] && continue
        eval "v=\$${1}_${2}_$b c=\$${1}_${2}_cpu"
        "$3" "$v" "$c" "$4" ||
            fail "$1 $2: $v on $b, $c on cpu (tolerance $4)"
    done
}

# check NAME COLUMN: every backend's run NAME against cpu's
check() {
    name=$1 col=$2
    tol=$BACKEND_TOL
    losses "$dir/$name.cpu.csv" "$col" >"$dir/$name.cpu.loss"
    [ -s "$dir/$name.cpu.loss" ] || fail "$name on cpu: no train rows"
    set -- $(head -n 1 "$dir/$name.cpu.loss") $(tail -n 1 "$dir/$name.cpu.loss")
    awk -v a="$2" -v b="$4" 'BEGIN { exit !(b < a) }' ||
        fail "$name on cpu: the loss went from $2 to $4"
    for b in $(on "${name##*.}"); do
        [ "$b" = cpu ] && continue
        losses "$dir/$name.$b.csv" "$col" >"$dir/$name.$b.loss"
        cut -d' ' -f1 "$dir/$name.$b.loss" >"$dir/steps.$b"
        cut -d' ' -f1 "$dir/$name.cpu.loss" | cmp -s - "$dir/steps.$b" ||
            fail "$name: $b's train rows are not cpu's steps"
        paste -d' ' "$dir/$name.cpu.loss" "$dir/$name.$b.loss" |
            while read -r step l_cpu _ l_b; do
                within "$l_b" "$l_cpu" "$tol" || {
                    echo "$name: step $step: loss $l_b on $b, $l_cpu on" \
                         "cpu (tolerance $tol)" >&2
                    exit 1
                }
            done || fail "$name: $b disagrees with cpu"
    done
}

# ---- MLP and CNN: losses and test accuracy ------------------------------
mlp_args="--limit 1024 --eval-limit 1000 --epochs 1 --log-every 4"
cnn_args="--limit 96 --eval-limit 200 --epochs 1 --log-every 1 --batch-size 16"
for sample in mlp cnn; do
    if [ $sample = mlp ]; then prog=$mlp args=$mlp_args; else prog=$cnn args=$cnn_args; fi
    for p in f32 bf16 f16; do
        for b in $(on "$p"); do
            # shellcheck disable=SC2086
            run "$sample.$p" "$b" "$prog" $args --precision "$p"
            acc=$(field "$dir/$sample.$p.$b.txt" test_acc)
            rate=$(field "$dir/$sample.$p.$b.txt" samples_per_s)
            last=$(losses "$dir/$sample.$p.$b.csv" 4 | tail -n 1 | cut -d' ' -f2)
            echo "$sample $p $b: last loss $last, test_acc $acc, samples/s $rate"
            [ -n "$acc" ] || fail "$sample $p on $b: no test_acc"
            eval "acc_${sample}_${p}_$b=$acc"
            eval "last_${sample}_${p}_$b=$last"
        done
        check "$sample.$p" 4
        against_cpu "acc_$sample" "$p" near "$ACC_TOL"
    done
    for p in bf16 f16; do
        eval "a=\$acc_${sample}_${p}_cpu f=\$acc_${sample}_f32_cpu"
        [ $sample = cnn ] || near "$a" "$f" "$PRECISION_ACC_TOL" ||
            fail "$sample $p: test_acc $a, f32 $f (tolerance $PRECISION_ACC_TOL)"
        eval "l=\$last_${sample}_${p}_cpu f=\$last_${sample}_f32_cpu"
        within "$l" "$f" "$PRECISION_TOL" ||
            fail "$sample $p: last loss $l, f32 $f (tolerance $PRECISION_TOL)"
    done
done

# ---- GPT: losses and validation loss --------------------------------------
gpt_args="--data $data --layers 1 --heads 2 --embd 32 --context 32
          --batch-size 4 --steps 30 --eval-every 30 --eval-batches 4
          --log-every 3"
for p in f32 bf16 f16; do
    for b in $(on "$p"); do
        # shellcheck disable=SC2086
        run "gpt.$p" "$b" "$gpt" $gpt_args --precision "$p"
        val=$(field "$dir/gpt.$p.$b.txt" val_loss)
        train=$(field "$dir/gpt.$p.$b.txt" train_loss)
        rate=$(field "$dir/gpt.$p.$b.txt" tokens_per_s)
        echo "gpt $p $b: train_loss $train, val_loss $val, tokens/s $rate"
        [ -n "$val" ] || fail "gpt $p on $b: no val_loss"
        eval "val_${p}_$b=$val train_${p}_$b=$train"
    done
    check "gpt.$p" 3
    against_cpu val "$p" within "$BACKEND_TOL"
done
for p in bf16 f16; do
    for k in val train; do
        eval "v=\$${k}_${p}_cpu f=\$${k}_f32_cpu"
        within "$v" "$f" "$PRECISION_TOL" ||
            fail "gpt $p: ${k}_loss $v, f32 $f (tolerance $PRECISION_TOL)"
    done
done

[ "$backends" = cpu ] && { echo "precision_backends: no GPU backend: SKIP"; exit 77; }
echo "precision_backends: ok ($backends)"
