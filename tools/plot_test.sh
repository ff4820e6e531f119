#!/bin/sh
# tools/plot.py draws well-formed logs and refuses the rest with a clear
# message. Usage: plot_test.sh PYTHON PLOT_PY
set -eu
python=$1
plot=$2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
fail() { echo "plot_test: $*" >&2; exit 1; }
header=kind,step,epoch,loss,lr,samples_per_s,elapsed_s,accuracy
printf '%s\n' "$header" \
    'train,5,0.5000,1.800000,0.001,900.0,0.100,' \
    'train,10,1.0000,1.100000,0.001,950.0,0.200,' \
    'eval,10,1.0000,,,,0.500,0.700000' \
    'train,15,1.5000,0.900000,0.001,940.0,0.600,' \
    'train,20,2.0000,0.800000,0.001,960.0,0.700,' \
    'eval,20,2.0000,,,,1.000,0.750000' >"$dir/a.csv"
sed 's/0.700000$/0.710000/' "$dir/a.csv" >"$dir/b.csv"

# expect STATUS MESSAGE ARGS...: plot.py exits STATUS saying MESSAGE.
expect() {
    want=$1 msg=$2
    shift 2
    status=0
    "$python" "$plot" "$@" >"$dir/out" 2>&1 || status=$?
    [ "$status" = "$want" ] || fail "$*: exit $status, not $want: $(cat "$dir/out")"
    grep -q -- "$msg" "$dir/out" || fail "$*: no '$msg' in: $(cat "$dir/out")"
}

"$python" "$plot" -o "$dir/ab.png" --label first "$dir/a.csv" "$dir/b.csv"
[ "$(head -c 4 "$dir/ab.png" | tail -c 3)" = PNG ] || fail "ab.png is not a PNG"

# the gpt sample's log: validation loss by step in the second panel
printf '%s\n' kind,step,loss,lr,tokens_per_s,elapsed_s,val_loss \
    'train,20,2.500000,0.001,9000.0,1.000,' \
    'eval,20,,,,1.100,2.400000' 'train,40,2.100000,0.001,9100.0,2.000,' \
    'eval,40,,,,2.100,2.050000' >"$dir/gpt.csv"
"$python" "$plot" -o "$dir/gpt.png" "$dir/gpt.csv" "$dir/gpt.csv"
[ "$(head -c 4 "$dir/gpt.png" | tail -c 3)" = PNG ] || fail "gpt.png is not a PNG"
expect 1 "different kinds" -o "$dir/x.png" "$dir/a.csv" "$dir/gpt.csv"

expect 1 "missing.csv" -o "$dir/x.png" "$dir/missing.csv"
printf 'step,loss\n1,2\n' >"$dir/other.csv"
expect 1 "not a training log" -o "$dir/x.png" "$dir/other.csv"
printf '%s\ntrain,x,0.1,1,0.001,1,1,\n' "$header" >"$dir/nan.csv"
expect 1 "nan.csv:2: step 'x' is not a number" -o "$dir/x.png" "$dir/nan.csv"
printf '%s\ntrain,1,0.1\n' "$header" >"$dir/short.csv"
expect 1 "short.csv:2: 3 cells" -o "$dir/x.png" "$dir/short.csv"
printf '%s\n' "$header" >"$dir/empty.csv"
expect 1 "empty.csv: no rows" -o "$dir/x.png" "$dir/empty.csv"
expect 1 "writing" -o "$dir/no/such/dir/x.png" "$dir/a.csv"
expect 2 "2 labels for 1 logs" -o "$dir/x.png" --label a --label b "$dir/a.csv"
[ ! -e "$dir/x.png" ] || fail "a PNG was written for a bad log"
echo "plot_test: plots and refusals as expected"
