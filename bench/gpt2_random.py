#!/usr/bin/env python3
"""Writes a random GPT-2 in Hugging Face's folder layout, for benchmarks.

Usage:
  gpt2_random.py DIR [--layers 12 --heads 12 --embd 768 --context 1024
                      --vocab 50257 --seed 0 --dtype f32|f16|bf16
                      --vocab-json PATH --merges PATH --time-load LIBXGRAD]

DIR gets config.json (a GPT2Config, as transformers writes it) and
model.safetensors (GPT2LMHeadModel's weights under "transformer.", no
lm_head: tied) initialised as GPT-2 was: weights N(0, 0.02), the two c_proj
weights of each block N(0, 0.02 / sqrt(2 layers)), biases 0, LayerNorm
weights 1. The defaults are GPT-2 small's shape (124M parameters, a 475 MiB
F32 file). --vocab-json / --merges copy a tokenizer's files beside them.
--time-load LIBXGRAD then loads the folder with xgrad (xg_gpt_load_hf
through ctypes, on the device XGRAD_BACKEND selects) and prints the
seconds it took. Needs torch and numpy; tensors are made one at a time, so
memory stays near the largest one.
"""
import argparse
import ctypes
import json
import math
import os
import shutil
import struct
import sys
import time

try:
    import torch
except ImportError:
    print("python3-torch is not installed")
    sys.exit(77)


def shapes(a):
    """GPT2LMHeadModel's weights, without the prefix: (name, shape, init)."""
    c, proj = a.embd, 0.02 / math.sqrt(2 * a.layers)
    out = [("wte.weight", [a.vocab, c], 0.02),
           ("wpe.weight", [a.context, c], 0.02)]
    for i in range(a.layers):
        h = "h.%d." % i
        out += [(h + "ln_1.weight", [c], "ones"), (h + "ln_1.bias", [c], 0),
                (h + "attn.c_attn.weight", [c, 3 * c], 0.02),
                (h + "attn.c_attn.bias", [3 * c], 0),
                (h + "attn.c_proj.weight", [c, c], proj),
                (h + "attn.c_proj.bias", [c], 0),
                (h + "ln_2.weight", [c], "ones"), (h + "ln_2.bias", [c], 0),
                (h + "mlp.c_fc.weight", [c, 4 * c], 0.02),
                (h + "mlp.c_fc.bias", [4 * c], 0),
                (h + "mlp.c_proj.weight", [4 * c, c], proj),
                (h + "mlp.c_proj.bias", [c], 0)]
    return out + [("ln_f.weight", [c], "ones"), ("ln_f.bias", [c], 0)]


DTYPES = {"f32": ("F32", torch.float32, 4), "f16": ("F16", torch.float16, 2),
          "bf16": ("BF16", torch.bfloat16, 2)}


def tensor_bytes(shape, init, dtype, gen):
    if init == "ones":
        t = torch.ones(shape)
    elif init == 0:
        t = torch.zeros(shape)
    else:
        t = torch.empty(shape).normal_(0.0, init, generator=gen)
    t = t.to(dtype)
    if dtype == torch.bfloat16:  # numpy has no bfloat16: its raw bits
        t = t.view(torch.int16)
    return t.numpy().tobytes()


def write_model(path, a):
    name, dtype, size = DTYPES[a.dtype]
    entries = sorted(shapes(a))  # transformers' files list names in order
    header, at = {"__metadata__": {"format": "pt"}}, 0
    for n, shape, _ in entries:
        nbytes = size * math.prod(shape)
        header["transformer." + n] = {"dtype": name, "shape": shape,
                                      "data_offsets": [at, at + nbytes]}
        at += nbytes
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    gen = torch.Generator().manual_seed(a.seed)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for n, shape, init in entries:
            f.write(tensor_bytes(shape, init, dtype, gen))
    os.replace(tmp, path)
    return sum(math.prod(s) for _, s, _ in entries)


def write_config(path, a):
    cfg = {"activation_function": "gelu_new",
           "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
           "embd_pdrop": 0.1, "initializer_range": 0.02,
           "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
           "n_ctx": a.context, "n_embd": a.embd, "n_head": a.heads,
           "n_inner": None, "n_layer": a.layers, "n_positions": a.context,
           "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
           "scale_attn_by_inverse_layer_idx": False,
           "scale_attn_weights": True, "tie_word_embeddings": True,
           "torch_dtype": {"f32": "float32", "f16": "float16",
                           "bf16": "bfloat16"}[a.dtype],
           "use_cache": True, "vocab_size": a.vocab}
    if a.vocab == 50257:
        cfg["bos_token_id"] = cfg["eos_token_id"] = 50256
    with open(path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True)
        f.write("\n")


def time_load(lib_path, folder):
    lib = ctypes.CDLL(lib_path)
    lib.xg_gpt_load_hf.restype = ctypes.c_void_p
    lib.xg_gpt_load_hf.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
    lib.xg_module_free.argtypes = [ctypes.c_void_p]
    lib.xg_last_error.restype = ctypes.c_char_p
    lib.xg_device_current()  # open the device outside the timing
    t0 = time.perf_counter()
    m = lib.xg_gpt_load_hf(folder.encode(), None)
    dt = time.perf_counter() - t0
    if not m:
        sys.exit("xg_gpt_load_hf: %s" % lib.xg_last_error().decode())
    print("xg_gpt_load_hf: %.3f s" % dt)
    lib.xg_module_free(ctypes.c_void_p(m))
    lib.xg_shutdown()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir")
    for flag, default in (("layers", 12), ("heads", 12), ("embd", 768),
                          ("context", 1024), ("vocab", 50257), ("seed", 0)):
        p.add_argument("--" + flag, type=int, default=default)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="f32")
    p.add_argument("--vocab-json")
    p.add_argument("--merges")
    p.add_argument("--time-load", metavar="LIBXGRAD")
    a = p.parse_args()
    if a.embd % a.heads:
        p.error("--embd must be a multiple of --heads")
    os.makedirs(a.dir, exist_ok=True)
    t0 = time.perf_counter()
    model = os.path.join(a.dir, "model.safetensors")
    n = write_model(model, a)
    write_config(os.path.join(a.dir, "config.json"), a)
    for src, name in ((a.vocab_json, "vocab.json"), (a.merges, "merges.txt")):
        if src:
            shutil.copyfile(src, os.path.join(a.dir, name))
    print("%s: %d parameters, model.safetensors %d bytes, written in %.1f s"
          % (a.dir, n, os.path.getsize(model), time.perf_counter() - t0))
    if a.time_load:
        time_load(a.time_load, a.dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
