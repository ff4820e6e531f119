#!/bin/sh
# The gpt sample's --log: the header, a train row every --log-every steps,
# an eval row at step 0 and at every validation with the val_loss the run
# printed.
# Usage: gpt_log.sh GPT [ARGS]
set -eu
gpt=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$gpt" "$@" --steps 6 --eval-every 3 --log-every 2 --log "$dir/log.csv" \
    >"$dir/out" 2>/dev/null
head -n 1 "$dir/log.csv" |
    grep -qx 'kind,step,loss,lr,tokens_per_s,elapsed_s,val_loss'
train=$(grep -c '^train,' "$dir/log.csv")
evals=$(grep '^eval,' "$dir/log.csv" | cut -d, -f2 | tr '\n' ' ')
[ "$train" -eq 3 ] || { echo "gpt_log: $train train rows, want 3" >&2; exit 1; }
[ "$evals" = "0 3 6 " ] || { echo "gpt_log: eval rows at '$evals'" >&2; exit 1; }
logged=$(grep '^eval,6,' "$dir/log.csv" | cut -d, -f7)
printed=$(sed -n 's/^step 6: .*val_loss \([0-9.]*\)$/\1/p' "$dir/out")
awk -v a="$logged" -v b="$printed" 'BEGIN { d = a - b; exit !(d < 1e-4 && d > -1e-4) }' ||
    { echo "gpt_log: logged val_loss $logged, printed $printed" >&2; exit 1; }
echo "gpt_log: OK"
