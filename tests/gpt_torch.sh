#!/bin/sh
# gpt_torch.sh PYTHON GPT_TORCH_PY GPT_EXPORT BACKEND
# Runs tests/gpt_export on the CPU (and on BACKEND when it is another),
# then bench/gpt_torch.py check on the results: the CPU run against
# PyTorch, BACKEND's run against the CPU's. Without a device for BACKEND
# the test is skipped (77), unless XGRAD_REQUIRE_BACKENDS=1; a Vulkan
# validation message fails it.
set -u
py=$1 script=$2 export=$3 backend=$4
dir=$(mktemp -d) || exit 1
trap 'rm -rf "$dir"' EXIT
mkdir "$dir/cpu" "$dir/$backend" 2>/dev/null
XGRAD_BACKEND=cpu "$export" "$dir/cpu" || exit 1
dirs="$dir/cpu"
if [ "$backend" != cpu ]; then
    XGRAD_BACKEND=$backend "$export" "$dir/$backend" 2>"$dir/stderr"
    rc=$?
    cat "$dir/stderr" >&2
    if grep -q "vulkan validation" "$dir/stderr"; then
        echo "gpt_torch.sh: Vulkan validation messages (above)"
        exit 1
    fi
    [ $rc -eq 0 ] || exit $rc
    dirs="$dir/cpu $dir/$backend"
fi
# shellcheck disable=SC2086
"$py" "$script" check $dirs
