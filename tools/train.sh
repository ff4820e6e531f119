#!/usr/bin/env bash
# The main job: install what is missing, build, and train a sample on the
# default backend (XGRAD_BACKEND, else auto): the MLP on Fashion-MNIST, or
# the sample named first: mlp, cnn, finetune or gpt (a GPT on the fortunes
# corpus). Further arguments go to the sample (try --help):
#   ./tools/train.sh --epochs 10
#   ./tools/train.sh gpt --steps 500 --generate 300
set -euo pipefail
cd "$(dirname "$0")/.."
. tools/setup.sh
sample=mnist_mlp
case "${1:-}" in
    mlp) sample=mnist_mlp; shift ;;
    cnn) sample=mnist_cnn; shift ;;
    finetune) sample=finetune; shift ;;
    gpt) sample=gpt; shift ;;
esac
# shellcheck disable=SC2086
xg_install $XG_BUILD_PKGS $XG_DATA_PKGS
xg_build build
exec "./build/samples/$sample" "$@"
