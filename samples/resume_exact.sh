#!/bin/sh
# Resuming is exact: two epochs straight and one epoch + --resume for the
# second must save byte-identical models. Usage: resume_exact.sh SAMPLE [ARGS]
set -eu
sample=$1
shift
dir=$(mktemp -d)
trap 'rm -rf "$dir"' EXIT
"$sample" "$@" --epochs 2 --save "$dir/straight.safetensors" >/dev/null
"$sample" "$@" --epochs 1 --checkpoint "$dir/ckpt.safetensors" >/dev/null
"$sample" "$@" --epochs 2 --resume "$dir/ckpt.safetensors" \
    --save "$dir/resumed.safetensors" >/dev/null
if cmp "$dir/straight.safetensors" "$dir/resumed.safetensors"; then
    echo "resume_exact: the resumed model is byte-identical"
else
    echo "resume_exact: the resumed model differs from the straight run" >&2
    exit 1
fi
