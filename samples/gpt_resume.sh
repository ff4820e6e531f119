#!/bin/sh
# The gpt sample resumes exactly: 2N steps straight and N steps + --resume
# for the rest save byte-identical models (dropout on, so the generator's
# state must come back too). Usage: gpt_resume.sh GPT N [ARGS]
set -eu
gpt=$1 n=$2
shift 2
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$gpt" "$@" --steps $((2 * n)) --save "$dir/straight.safetensors" >/dev/null
"$gpt" "$@" --steps "$n" --checkpoint "$dir/ckpt.safetensors" >/dev/null
"$gpt" "$@" --steps $((2 * n)) --resume "$dir/ckpt.safetensors" \
    --save "$dir/resumed.safetensors" >/dev/null
if cmp "$dir/straight.safetensors" "$dir/resumed.safetensors"; then
    echo "gpt_resume: the resumed model is byte-identical"
else
    echo "gpt_resume: the resumed model differs from the straight run" >&2
    exit 1
fi
# another batch size cannot continue the run
if "$gpt" "$@" --steps $((2 * n)) --batch-size 3 \
        --resume "$dir/ckpt.safetensors" >/dev/null 2>"$dir/err"; then
    echo "gpt_resume: a resume with another batch size was accepted" >&2
    exit 1
fi
grep -q "batch-size" "$dir/err"
