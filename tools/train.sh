#!/usr/bin/env bash
# The main job: install what is missing, build, and train the MLP sample on
# Fashion-MNIST on the default backend (XGRAD_BACKEND, else auto).
# Extra arguments go to samples/mnist_mlp (try --help).
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup.sh
# shellcheck disable=SC2086
xg_install $XG_BUILD_PKGS $XG_DATA_PKGS
xg_build build
exec ./build/samples/mnist_mlp "$@"
