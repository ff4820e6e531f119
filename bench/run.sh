#!/usr/bin/env bash
# Measures xgrad's training samples against their PyTorch peers, and the
# micro-benchmarks, and prints one markdown table with the conditions.
#
#   bench/run.sh [--quick] [BUILD_DIR]          (default: build)
#
# Workloads: the MLP sample (784-256-10, Adam 1e-3) at batch 64 and 1024
# next to bench/mlp_torch.py, the CNN sample at batch 64 next to
# bench/cnn_torch.py; one epoch each, on MLP_LIMIT (0: all 60,000) and
# CNN_LIMIT (6400) training samples. Each repetition runs xgrad and
# PyTorch with every thread count of TORCH_THREADS, alternating the order
# from one repetition to the next, so that a change of load hits both;
# PyTorch runs with OMP_WAIT_POLICY=PASSIVE (its idle threads sleep instead
# of spinning on the shared cores), and each row keeps the thread count
# whose median is the faster, and says which. Speeds are the medians of
# REPS (5) runs, with min-max; peak RSS is the largest over those runs
# (/usr/bin/time's %M, else getrusage through Python). Then bench_matmul
# (1024^3, next to OpenBLAS when built with it), bench_small_op and
# bench_optim (Adam/AdamW/SGD update rate next to memcpy) run once each
# (they take medians of their own). On the cpu backend the CNN row gets a
# companion: its GEMM work per CPU-second (71.6 MFLOP a training sample
# over the training's CPU time, every thread counted; the sample prints
# it as train_cpu_s) next to bench_matmul's rate on one thread.
#
# --quick: a smoke test of a few seconds a workload: REPS 1, 6400 MLP and
# 640 CNN samples, small micro-benchmarks. Its figures mean nothing.
#
# Environment: REPS, MLP_LIMIT, CNN_LIMIT, TORCH_THREADS ("1 2"), PYTHON
# (first of python3, /usr/bin/python3 that imports torch and numpy; none:
# xgrad alone), XGRAD_BACKEND and XGRAD_NUM_THREADS (as usual: the CPU
# backend uses every online core by default), DATA (a --data folder for
# both), ONLY (an extended regular expression: only the rows whose name
# matches it run, e.g. ONLY=CNN or ONLY='matmul|update').
set -euo pipefail

usage() { sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; }

quick=0
build=build
for arg in "$@"; do
    case $arg in
    --quick) quick=1 ;;
    -h | --help) usage; exit 0 ;;
    -*) echo "run.sh: unknown flag $arg (--quick, --help)" >&2; exit 2 ;;
    *) build=$arg ;;
    esac
done

here=$(cd "$(dirname "$0")" && pwd)
if ((quick)); then
    reps=${REPS:-1} mlp_limit=${MLP_LIMIT:-6400} cnn_limit=${CNN_LIMIT:-640}
    matmul_args=(256 3) small_args=(200 3) optim_args=(3 1)
else
    reps=${REPS:-5} mlp_limit=${MLP_LIMIT:-0} cnn_limit=${CNN_LIMIT:-6400}
    matmul_args=(1024 7) small_args=(1000 7) optim_args=(7 16)
fi
torch_threads=(${TORCH_THREADS:-1 2})
data=()
[[ -z "${DATA:-}" ]] || data=(--data "$DATA")

for sample in mnist_mlp mnist_cnn; do
    if [[ ! -x "$build/samples/$sample" ]]; then
        echo "run.sh: $build/samples/$sample not found; build first: meson setup $build && ninja -C $build" >&2
        exit 1
    fi
done

python=
for candidate in "${PYTHON:-}" python3 /usr/bin/python3; do
    if [[ -n "$candidate" ]] && "$candidate" -c 'import torch, numpy' 2>/dev/null; then
        python=$candidate
        break
    fi
done
[[ -n "$python" ]] || echo "run.sh: no python3 that imports torch and numpy; xgrad alone" >&2

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# run CMD...: runs CMD, sets `line` to its last `result:` line and `rss_kb`
# to its peak resident set (KiB; "" if unknown). On failure its output goes
# to stderr and the script stops.
run() {
    local status=0
    if [[ -x /usr/bin/time ]]; then
        /usr/bin/time -o "$tmp/rss" -f '%M' "$@" >"$tmp/out" 2>&1 || status=$?
    elif [[ -n "$python" ]]; then
        "$python" -c 'import resource, subprocess, sys
r = subprocess.run(sys.argv[2:]).returncode
open(sys.argv[1], "w").write("%d\n" % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
sys.exit(r)' "$tmp/rss" "$@" >"$tmp/out" 2>&1 || status=$?
    else
        : >"$tmp/rss"
        "$@" >"$tmp/out" 2>&1 || status=$?
    fi
    if ((status != 0)); then
        printf 'run.sh: failed (%d): %s\n' "$status" "$*" >&2
        cat "$tmp/out" >&2
        exit 1
    fi
    line=$(grep '^result:' "$tmp/out" | tail -n 1 || true)
    rss_kb=$(tail -n 1 "$tmp/rss" 2>/dev/null | tr -dc 0-9 || true)
}

# field LINE NAME: the value of NAME=... in a result line.
field() { sed -n "s/.* $2=\([^ ]*\).*/\1/p" <<<"$1"; }

# stats V...: "median min max" of the numbers.
stats() {
    printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 }
        END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              print m, v[1], v[NR] }'
}

# max V...: the largest number ("" if none).
max() { printf '%s\n' "$@" | sort -g | tail -n 1; }

mib() { [[ -n "$1" ]] && awk -v k="$1" 'BEGIN { printf "%.0f", k / 1024 }' || echo "n/a"; }

# speed MEDIAN MIN MAX: "41,234 (40,100-42,000)".
speed() { awk -v m="$1" -v a="$2" -v b="$3" 'function c(x,  s, r) {
        s = sprintf("%.0f", x); r = ""
        while (length(s) > 3) { r = "," substr(s, length(s) - 2) r; s = substr(s, 1, length(s) - 3) }
        return s r }
    BEGIN { printf "%s (%s-%s)", c(m), c(a), c(b) }'; }

rows=()    # markdown rows of the table
notes=()   # lines under it

# want NAME: whether ONLY (if set) selects the row NAME.
want() { [[ -z ${ONLY:-} ]] || grep -Eq -- "$ONLY" <<<"$1"; }

# workload NAME XGRAD_CMD... -- TORCH_CMD...: alternating runs; appends a row.
# With `mflop` set (the workload's GEMM work per training sample, MFLOP),
# also sets `gflop_cpu` to the median over xgrad's runs of that work's rate
# per CPU-second (train_samples x mflop / train_cpu_s).
workload() {
    want "$1" || return 0
    local name=$1 xs=() xr=() xg=() t i k first
    shift
    local xcmd=() tcmd=()
    while [[ $1 != -- ]]; do xcmd+=("$1"); shift; done
    shift
    tcmd=("$@")
    declare -A ts tr
    for t in "${torch_threads[@]}"; do ts[$t]= tr[$t]=; done
    for ((i = 1; i <= reps; i++)); do
        # xgrad first on odd repetitions, last on even ones.
        local order=(x)
        if [[ -n "$python" ]]; then
            for t in "${torch_threads[@]}"; do order+=("$t"); done
            ((i % 2)) || order=("${order[@]:1}" x)
        fi
        for k in "${order[@]}"; do
            if [[ $k == x ]]; then
                run "${xcmd[@]}"
                xs+=("$(field "$line" samples_per_s)") xr+=("$rss_kb")
                [[ -z ${mflop:-} ]] || xg+=("$(awk -v s="$(field "$line" train_samples)" \
                    -v c="$(field "$line" train_cpu_s)" -v m="$mflop" \
                    'BEGIN { printf "%.1f", (c > 0 ? s * m / 1000 / c : 0) }')")
                backend=$(field "$line" backend)
                echo "  $name $i/$reps xgrad: $line rss_kb=$rss_kb" >&2
            else
                OMP_WAIT_POLICY=PASSIVE run "$python" "${tcmd[@]}" --threads "$k"
                ts[$k]+=" $(field "$line" samples_per_s)" tr[$k]+=" $rss_kb"
                echo "  $name $i/$reps torch $k threads: $line rss_kb=$rss_kb" >&2
            fi
        done
    done
    read -r xm xa xb <<<"$(stats "${xs[@]}")"
    gflop_cpu=
    [[ -z ${mflop:-} ]] || read -r gflop_cpu _ <<<"$(stats "${xg[@]}")"
    local xcell xrss peer="n/a" ratio="n/a" trss="n/a" best= bm=0 ba bb
    xcell=$(speed "$xm" "$xa" "$xb")
    xrss=$(mib "$(max "${xr[@]}")")
    if [[ -n "$python" ]]; then
        local other=()
        for t in "${torch_threads[@]}"; do
            read -r m a b <<<"$(stats ${ts[$t]})"
            other+=("$t thread$([[ $t == 1 ]] || echo s): $(speed "$m" "$a" "$b")")
            if [[ -z "$best" ]] || awk -v m="$m" -v b="$bm" 'BEGIN { exit !(m > b) }'; then
                best=$t bm=$m ba=$a bb=$b
            fi
        done
        peer="$(speed "$bm" "$ba" "$bb"), $best thread$([[ $best == 1 ]] || echo s)"
        ratio=$(awk -v a="$xm" -v b="$bm" 'BEGIN { printf "%.2f", a / b }')
        trss=$(mib "$(max ${tr[$best]})")
        notes+=("- $name, PyTorch samples/s by thread count: $(IFS=';'; echo "${other[*]}" | sed 's/;/; /g')")
    fi
    rows+=("| $name: samples/s | $xcell | $peer | $ratio | $xrss | $trss |")
}

backend=
load_before=$(cat /proc/loadavg)
cpu=$(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)
echo "measuring: REPS=$reps, progress on stderr" >&2

mlp=(--lr 1e-3 --optimizer adam --hidden 256 --seed 0 --epochs 1 --limit "$mlp_limit" "${data[@]}")
workload "MLP 784-256-10 Adam, batch 64" "$build/samples/mnist_mlp" --batch-size 64 "${mlp[@]}" \
    -- "$here/mlp_torch.py" --batch-size 64 "${mlp[@]}"
workload "MLP 784-256-10 Adam, batch 1024" "$build/samples/mnist_mlp" --batch-size 1024 "${mlp[@]}" \
    -- "$here/mlp_torch.py" --batch-size 1024 "${mlp[@]}"
cnn=(--batch-size 64 --lr 1e-3 --optimizer adam --seed 0 --epochs 1 --limit "$cnn_limit" "${data[@]}")
# The CNN's GEMM-shaped work per training sample, forward and backward:
# conv 1 (1->32, 3x3, 26x26 out) forward and weight gradient 2 x 0.389,
# conv 2 (32->64, 3x3, 24x24 out) forward, input and weight gradients
# 3 x 21.23, linear 9216->128 3 x 2.36, linear 128->10 3 x 0.0026 MFLOP.
mflop=71.57
workload "CNN (MNIST example) Adam, batch 64" "$build/samples/mnist_cnn" "${cnn[@]}" \
    -- "$here/cnn_torch.py" "${cnn[@]}"
mflop=

# Micro-benchmarks: once each.
micro_out=
micro() {
    want "$2" || return 1
    local bin=$build/bench/$1
    shift 2
    if [[ ! -x "$bin" ]]; then
        notes+=("- $(basename "$bin"): not built")
        return 1
    fi
    echo "  $(basename "$bin") $*" >&2
    run "$bin" "$@"
    micro_out+=$(cat "$tmp/out")$'\n'
}
if micro bench_matmul "matmul" "${matmul_args[@]}"; then
    g=$(field "$line" gflops) ob=$(field "$line" openblas_gflops) n=${matmul_args[0]}
    if [[ -n "$ob" ]]; then
        rows+=("| matmul ${n}^3 f32: GFLOP/s | $g | $ob, OpenBLAS sgemm | $(awk -v a="$g" -v b="$ob" 'BEGIN { printf "%.2f", a / b }') | $(mib "$rss_kb") | |")
    else
        rows+=("| matmul ${n}^3 f32: GFLOP/s | $g | n/a | n/a | $(mib "$rss_kb") | |")
    fi
fi
# The CNN's GEMM work per CPU-second next to one thread's sgemm (1024^3):
# how much of the machine's GEMM rate the training step turns into work.
if [[ -n ${gflop_cpu:-} && $backend == cpu && -x "$build/bench/bench_matmul" ]]; then
    XGRAD_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 run "$build/bench/bench_matmul" "${matmul_args[@]}"
    g1=$(field "$line" gflops)
    rows+=("| CNN GEMM work (71.6 MFLOP a sample): GFLOP per CPU-second | $gflop_cpu | $g1, sgemm on 1 thread | $(awk -v a="$gflop_cpu" -v b="$g1" 'BEGIN { printf "%.2f", a / b }') | | |")
fi
if micro bench_small_op "one small op" "${small_args[@]}"; then
    rows+=("| one small op (add of 1,000 floats), queued: µs | $(field "$line" us_per_op) | | | $(mib "$rss_kb") | |")
fi
if micro bench_optim "adam adamw sgd update" "${optim_args[@]}"; then
    while read -r l; do
        n=$(field "$l" n) mc=$(field "$l" memcpy_gbs)
        for opt in adam adamw sgd_momentum sgd; do
            v=$(field "$l" ${opt}_gbs)
            rows+=("| $opt update, $((n >> 20))M parameters: GB/s | $v | $mc, memcpy | $(awk -v a="$v" -v b="$mc" 'BEGIN { printf "%.2f", a / b }') | $(mib "$rss_kb") | |")
        done
    done < <(grep '^result: bench=optim' <<<"$micro_out")
fi
load_after=$(cat /proc/loadavg)

torch_version=n/a
[[ -z "$python" ]] || torch_version=$("$python" -c 'import torch; print(torch.__version__)')
echo
echo "## xgrad ($backend backend) and PyTorch $torch_version$( ((quick)) && echo ' (--quick: smoke test, not a measurement)')"
echo
echo "- CPU: $cpu, $(nproc) cores; xgrad threads: ${XGRAD_NUM_THREADS:-all cores}; $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "- load average before: $load_before; after: $load_after"
echo "- samples/s: median (min-max) of $reps one-epoch runs of each, xgrad and PyTorch alternating;"
echo "  MLP on $( ((mlp_limit)) && echo "$mlp_limit" || echo "all 60,000") training samples, CNN on $cnn_limit; evaluation excluded"
echo "- PyTorch: OMP_WAIT_POLICY=PASSIVE, the faster of $(sed 's/ /, /g' <<<"${torch_threads[*]}") threads (named in each row; both below)"
echo "- micro-benchmarks: one run each, medians of their own runs; bench_optim's peer is a memcpy of"
echo "  2 arrays into 2 others (16 bytes per parameter), the faster of 1 thread and xgrad's thread count"
echo
echo "| benchmark | xgrad | peer | xgrad / peer | xgrad peak RSS MiB | peer peak RSS MiB |"
echo "|---|---:|---:|---:|---:|---:|"
printf '%s\n' "${rows[@]}"
echo
printf '%s\n' "${notes[@]}"
echo
echo '```'
printf '%s' "$micro_out" | grep -v '^result:'
echo '```'
