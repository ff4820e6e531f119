#!/usr/bin/env bash
# Every test: install what is missing (including the CPU drivers PoCL and
# lavapipe, so the OpenCL and Vulkan suites run without a GPU), build, and
# run all suites; then the core suites with the built-in GEMM instead of
# OpenBLAS, threads sharing a device under ThreadSanitizer, the CPU suites
# again under AddressSanitizer and
# UndefinedBehaviorSanitizer, the safetensors loader under libFuzzer for a
# minute and the IDX reader for 30 s. With every driver installed a missing
# device fails its suite instead of being skipped. Arguments go to the
# first `meson test`.
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup.sh
# shellcheck disable=SC2086
xg_install $XG_BUILD_PKGS $XG_DATA_PKGS $XG_TEST_PKGS
# shellcheck disable=SC2086
if xg_install $XG_DRIVER_PKGS; then
    export XGRAD_REQUIRE_BACKENDS=1
else
    echo "xgrad: without those drivers the OpenCL and Vulkan suites are" \
         "reported as SKIPPED" >&2
fi

echo "== all suites" >&2
xg_build build-test -Dtests=enabled
# bpe-npm fails instead of skipping when it cannot install gpt-3-encoder
XGRAD_REQUIRE_NPM=1 meson test -C build-test --print-errorlogs "$@"

echo "== core suites with the built-in GEMM (no OpenBLAS)" >&2
xg_build build-noblas -Dtests=enabled -Dblas=disabled -Dopencl=disabled \
    -Dvulkan=disabled
meson test -C build-noblas --print-errorlogs --suite core

echo "== threads sharing a device, under ThreadSanitizer" >&2
if [ ! -f build-tsan/build.ninja ]; then
    meson setup build-tsan -Dtests=enabled -Db_sanitize=thread \
        -Dbuildtype=debug -Dblas=disabled -Dopencl=disabled \
        -Dvulkan=disabled >&2
fi
ninja -C build-tsan tests/threads_train >&2
TSAN_OPTIONS=halt_on_error=1 meson test -C build-tsan --no-rebuild \
    --print-errorlogs threads

echo "== CPU suites under ASan + UBSan" >&2
xg_build build-asan -Dtests=enabled -Dopencl=disabled -Dvulkan=disabled \
    -Db_sanitize=address,undefined -Dbuildtype=debug
ASAN_OPTIONS=detect_leaks=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    meson test -C build-asan --print-errorlogs --suite core --suite samples

echo "== safetensors loader under libFuzzer (60 s)" >&2
CC=clang xg_build build-fuzz -Dfuzz=enabled -Dtests=disabled \
    -Dopencl=disabled -Dvulkan=disabled
rm -rf build-fuzz/corpus && mkdir -p build-fuzz/corpus
build-fuzz/fuzz/fuzz_safetensors -max_total_time=60 -print_final_stats=1 \
    -dict=fuzz/safetensors.dict -artifact_prefix=build-fuzz/ \
    build-fuzz/corpus fuzz/corpus

echo "== IDX reader under libFuzzer (30 s)" >&2
rm -rf build-fuzz/corpus_idx && mkdir -p build-fuzz/corpus_idx
build-fuzz/fuzz/fuzz_idx -max_total_time=30 -print_final_stats=1 \
    -malloc_limit_mb=512 -artifact_prefix=build-fuzz/ \
    build-fuzz/corpus_idx fuzz/corpus_idx
