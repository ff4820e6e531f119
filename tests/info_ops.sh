#!/usr/bin/env bash
# xgrad-info --ops against the op list: one line per XG_OP row of ops.def,
# in order, each naming the op and giving cpu:f32 (the reference runs every
# op on f32). With XGRAD_REQUIRE_BACKENDS=1 the column of every backend this
# build has (OpenCL, Vulkan) must be there too, and give f32 for every op
# but cast (a backend's casts come with its 16-bit support).
#   info_ops.sh XGRAD_INFO OPS_DEF
set -euo pipefail
info=$1 ops_def=$2
want=$(sed -n 's/^XG_OP(\([a-z0-9_]*\),.*/\1/p' "$ops_def")
got=$("$info" --ops)
diff <(echo "$want") <(echo "$got" | cut -d' ' -f1) ||
    { echo "info_ops: the op column differs from ops.def" >&2; exit 1; }
backends=cpu
if [ "${XGRAD_REQUIRE_BACKENDS:-0}" = 1 ]; then # every backend built here
    backends=$("$info" | sed -n 's/^backends built: *//p')
fi
for b in $backends; do
    lines=$got
    [ "$b" = cpu ] || lines=$(echo "$got" | grep -v '^cast ' || true)
    bad=$(echo "$lines" | grep -v " $b:\(f32\|[a-z0-9,]*,f32\)\( \|,\|$\)" || true)
    if [ -n "$bad" ]; then
        echo "info_ops: ops without f32 on $b:" >&2
        echo "$bad" >&2
        exit 1
    fi
done
echo "info_ops: $(echo "$want" | wc -l) ops, f32 on: $backends"
