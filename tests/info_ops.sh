#!/usr/bin/env bash
# xgrad-info --ops against the op list: one line per XG_OP row of ops.def,
# in order, each naming the op and giving cpu:f32 (the reference runs every
# op on f32). With XGRAD_REQUIRE_BACKENDS=1 the column of every backend this
# build has (OpenCL, Vulkan) must be there too, and give f32 for every op
# but cast (a backend's casts come with its 16-bit support).
# 16-bit: on cpu every op with an element type T runs bf16 and f16 (the
# core widens what has no kernel, marked "(w)"), natively for the ops that
# only move values (copy, fill, copy_strided, cast), matmul and the
# elementwise families (UNARY, UNARY_BACKWARD, SCALAR, BINARY); the
# f32-only updates (no T in their row) list f32 alone; and xgrad-info shows the CPU's
# 16-bit features and the native / widened counts, and each backend's
# 16-bit features are words of its own (cpu: f16c avx512_bf16; opencl:
# cl_khr_fp16; vulkan: storageBuffer16BitAccess shaderFloat16).
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
t_ops=$(sed -n 's/^XG_OP(\([a-z0-9_]*\), *\([A-Z_]*\), *"\([a-zA-Z]*\)", *"\([a-zA-Z]*\)".*/\1 \2 \3\4/p' "$ops_def")
while read -r op family rules; do
    line=$(echo "$got" | grep "^$op ")
    cpu=$(echo "$line" | sed 's/.* cpu:\([^ ]*\).*/\1/')
    case $rules in
    *T*) want16="bf16(w),f16(w)" ;;
    *) want16="" ;;
    esac
    case $op in
    copy|fill|copy_strided|cast|matmul) want16="bf16,f16" ;;
    esac
    case $family in
    UNARY|UNARY_BACKWARD|SCALAR|BINARY) want16="bf16,f16" ;;
    esac
    case $cpu in
    f32,bf16*|f32,i32,bf16*) [ -n "$want16" ] && [ "${cpu#*,bf16}" != "$cpu" ] &&
        [ "bf16${cpu#*,bf16}" = "$want16" ] && continue ;;
    f32) [ -z "$want16" ] && continue ;;
    esac
    echo "info_ops: $op on cpu gives '$cpu', want f32 and '$want16'" >&2
    exit 1
done <<< "$t_ops"
summary=$("$info")
# (here-strings, not `echo | grep -q`: under pipefail a grep that quits
# early can fail the pipeline)
if grep -q -w f16c /proc/cpuinfo 2>/dev/null &&
    ! grep -q "16-bit features: .*f16c" <<< "$summary"; then
    printf 'info_ops: the CPU'"'"'s f16c is not shown in\n%s\n' "$summary" >&2
    exit 1
fi
# Each backend names its 16-bit features in its own terms: the CPU its
# conversion instructions, OpenCL the half-arithmetic extension, Vulkan its
# 16-bit storage and arithmetic features; any other word (another backend's,
# or stale memory) fails.
bad=$(echo "$summary" | awk '
    /^[a-z]+:$/ { backend = substr($1, 1, length($1) - 1) }
    /16-bit features:/ {
        sub(/.*16-bit features: /, "")
        if ($0 == "none reported") next
        n = split($0, words, " ")
        for (i = 1; i <= n; i++) {
            w = words[i]
            ok = (backend == "cpu" && (w == "f16c" || w == "avx512_bf16")) ||
                 (backend == "opencl" && w == "cl_khr_fp16") ||
                 (backend == "vulkan" && (w == "storageBuffer16BitAccess" ||
                                          w == "shaderFloat16"))
            if (!ok) print backend ": " w
        }
    }')
if [ -n "$bad" ]; then
    echo "info_ops: 16-bit features a backend cannot have:" >&2
    echo "$bad" >&2
    exit 1
fi
grep -q "bf16 ops: [0-9]* native, [0-9]* widened" <<< "$summary" ||
    { echo "info_ops: no 16-bit op counts in xgrad-info" >&2; exit 1; }
echo "info_ops: $(echo "$want" | wc -l) ops, f32 on: $backends; 16-bit on cpu"
