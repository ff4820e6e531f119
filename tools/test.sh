#!/usr/bin/env bash
# Every test: install what is missing (including the CPU drivers PoCL and
# lavapipe, so the OpenCL and Vulkan suites run without a GPU), build, and
# run all suites. With every driver installed a missing device fails its
# suite instead of being skipped.
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
xg_build build-test -Dtests=enabled
meson test -C build-test --print-errorlogs "$@"
