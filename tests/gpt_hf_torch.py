#!/usr/bin/env python3
"""GPT-2 folders in Hugging Face's layout (xg_gpt_load_hf, xg_gpt_save_hf)
against PyTorch.

Usage: gpt_hf_torch.py GPT_HF_EVAL BACKEND   (meson test runs it)

There is no transformers package here, so the folders are written by hand
as transformers' save_pretrained writes a GPT2LMHeadModel: config.json
(a GPT2Config) and model.safetensors, the state_dict of bench/gpt_torch.py's
GPT (the same names as GPT2LMHeadModel's transformer) with or without the
"transformer." prefix, with the attention mask buffers older versions saved
(h.N.attn.bias, a [1, 1, n_positions, n_positions] lower triangle of ones,
and h.N.attn.masked_bias, -1e4) and lm_head.weight (the tied wte) in some,
in F32, F16 and BF16. The weights are far from GPT-2's init (std 0.3,
LayerNorm weights and biases off 1 and 0) so that a layout mistake, such as
a transposed Conv1D weight, moves the loss visibly (checked).

Checked, on BACKEND (tests/gpt_hf_eval runs xgrad there):
  1. each folder's mean cross-entropy on fixed ids, xgrad (f32) against
     torch (float64 from the same f32 weights) within 1e-4 relative;
     the same model saved in F32, F16 and BF16 in one layout: the 16-bit
     files' losses (xgrad) within 1e-2 relative of the f32 file's;
on the CPU also:
  2. a folder saved by xg_gpt_save_hf loads back bit for bit, its
     model.safetensors holds exactly GPT2LMHeadModel's keys and shapes
     ("transformer.wte.weight", ...; no lm_head: tied) in F32, its
     config.json GPT2Config's keys, and torch loads it (strict) into the
     same model with the same loss.
Exits 77 (skipped) without torch or without a device for BACKEND (unless
XGRAD_REQUIRE_BACKENDS=1); a Vulkan validation message fails it.
"""
import json
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import safetensors_torch as st  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402
import gpt_torch  # noqa: E402
import gpt_hf_util as hf  # noqa: E402

VOCAB, POSITIONS, LAYERS, HEADS, EMBD = 61, 20, 2, 3, 24
DIMS = (VOCAB, POSITIONS, LAYERS, HEADS, EMBD)
B, T = 2, 13  # ids; the model sees T - 1 positions


def random_gpt(seed):
    return hf.random_gpt(DIMS, seed, 0.3)


def gpt2_config():
    """A GPT2Config as transformers writes it (config.json)."""
    return {"activation_function": "gelu_new",
            "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
            "bos_token_id": VOCAB - 1, "embd_pdrop": 0.1,
            "eos_token_id": VOCAB - 1, "initializer_range": 0.02,
            "layer_norm_epsilon": 1e-05, "model_type": "gpt2",
            "n_ctx": POSITIONS, "n_embd": EMBD, "n_head": HEADS,
            "n_inner": None, "n_layer": LAYERS, "n_positions": POSITIONS,
            "reorder_and_upcast_attn": False, "resid_pdrop": 0.1,
            "scale_attn_by_inverse_layer_idx": False,
            "scale_attn_weights": True, "summary_activation": None,
            "summary_first_dropout": 0.1, "summary_proj_to_labels": True,
            "summary_type": "cls_index", "summary_use_proj": True,
            "torch_dtype": "float32", "transformers_version": "4.26.0",
            "use_cache": True, "vocab_size": VOCAB}


def write_folder(folder, model, dtype, prefix, masks, lm_head):
    """Writes the folder; returns the state_dict as xgrad should load it
    (the values rounded to dtype, as f32)."""
    os.makedirs(folder)
    with open(os.path.join(folder, "config.json"), "w") as f:
        json.dump(gpt2_config(), f, indent=2, sort_keys=True)
    tensors = hf.hf_tensors(model, DIMS, prefix, masks, dtype)
    loaded = {k: v.to(dtype).float() for k, v in model.state_dict().items()}
    if lm_head:
        tensors["lm_head.weight"] = tensors[prefix + "wte.weight"].clone()
    st.st_write(os.path.join(folder, "model.safetensors"), tensors,
                {"format": "pt"})
    return loaded


def sample_ids(model):
    """B rows of T ids sampled from the model (float64) itself: on its own
    samples the loss of a wrongly laid out copy is higher by their KL
    divergence, not by a sum of terms of either sign that may cancel."""
    m = gpt_torch.GPT(VOCAB, POSITIONS, LAYERS, HEADS, EMBD)
    m.load_state_dict(model.state_dict(), strict=True)
    m = m.double().eval()
    g = torch.Generator().manual_seed(5)
    x = torch.randint(0, VOCAB, (B, 1), generator=g)
    with torch.no_grad():
        while x.shape[1] < T:
            p = torch.softmax(m(x)[:, -1], -1)
            x = torch.cat([x, torch.multinomial(p, 1, generator=g)], 1)
    return x


def torch_loss(state, x):
    """The mean cross-entropy in float64 of the GPT holding `state`."""
    return hf.loss64(state, x, DIMS)


def run(exe, backend, *args):
    env = dict(os.environ, XGRAD_BACKEND=backend)
    r = subprocess.run([exe] + [str(a) for a in args], env=env,
                       capture_output=True, text=True)
    sys.stderr.write(r.stderr)
    if "vulkan validation" in r.stderr:
        sys.exit("FAIL: Vulkan validation messages (above)")
    if r.returncode == 77:
        print(r.stdout.strip())
        sys.exit(77)
    if r.returncode != 0:
        sys.exit("FAIL: %s %s: exit %d" % (exe, args[0], r.returncode))
    return r.stdout


def xgrad_loss(exe, backend, folder, x):
    out = run(exe, backend, "loss", folder, B, T, *x.flatten().tolist())
    words = out.split()  # loss L on BACKEND
    assert words[3] == backend, out
    return float(words[1])


def check_losses(exe, backend, tmp):
    model = random_gpt(3)
    x = sample_ids(model)
    variants = [("f32_prefix_masks_lm_head", torch.float32, "transformer.",
                 True, True),
                ("f32_bare", torch.float32, "", False, False),
                ("f16_prefix_masks", torch.float16, "transformer.", True,
                 False),
                ("bf16_bare_masks_lm_head", torch.bfloat16, "", True, True)]
    ok = True
    for name, dtype, prefix, masks, lm_head in variants:
        folder = os.path.join(tmp, name)
        loaded = write_folder(folder, model, dtype, prefix, masks, lm_head)
        want = torch_loss(loaded, x)
        got = xgrad_loss(exe, backend, folder, x)
        rel = abs(got - want) / abs(want)
        print("%s: %-26s torch %.7f xgrad %.7f rel %.2e (limit 1e-4)"
              % (backend, name, want, got, rel))
        ok &= rel <= 1e-4
    # the same model saved in F32, F16 and BF16 (one layout): each 16-bit
    # file's loss within 1e-2 relative of the f32 file's (xgrad's losses);
    # each also matches torch on its rounded weights (1e-4, above)
    same = {}
    for name, dtype in [("f32", torch.float32), ("f16", torch.float16),
                        ("bf16", torch.bfloat16)]:
        folder = os.path.join(tmp, "same_" + name)
        loaded = write_folder(folder, model, dtype, "transformer.", True,
                              False)
        want = torch_loss(loaded, x)
        got = xgrad_loss(exe, backend, folder, x)
        rel = abs(got - want) / abs(want)
        print("%s: %-26s torch %.7f xgrad %.7f rel %.2e (limit 1e-4)"
              % (backend, "same_" + name, want, got, rel))
        ok &= rel <= 1e-4
        same[name] = got
    for name in ("f16", "bf16"):
        rel = abs(same[name] - same["f32"]) / abs(same["f32"])
        print("%s: the %s file's loss %.7f, the f32 file's %.7f: rel %.2e "
              "(limit 1e-2)" % (backend, name, same[name], same["f32"], rel))
        ok &= rel <= 1e-2
    # the test can see a layout mistake: a transposed square Conv1D
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["h.0.attn.c_proj.weight"] = state["h.0.attn.c_proj.weight"].t()
    right = torch_loss(model.state_dict(), x)
    moved = (torch_loss(state, x) - right) / right
    print("a transposed h.0.attn.c_proj.weight raises the loss by %.3g "
          "relative (needed: > 1e-2)" % moved)
    ok &= moved > 1e-2
    return ok


def gpt2_keys():
    """GPT2LMHeadModel's state_dict keys and shapes for the sizes above,
    without the mask buffers and the tied lm_head."""
    c = EMBD
    keys = {"transformer.wte.weight": [VOCAB, c],
            "transformer.wpe.weight": [POSITIONS, c],
            "transformer.ln_f.weight": [c], "transformer.ln_f.bias": [c]}
    for i in range(LAYERS):
        h = "transformer.h.%d." % i
        keys.update({h + "ln_1.weight": [c], h + "ln_1.bias": [c],
                     h + "attn.c_attn.weight": [c, 3 * c],
                     h + "attn.c_attn.bias": [3 * c],
                     h + "attn.c_proj.weight": [c, c],
                     h + "attn.c_proj.bias": [c],
                     h + "ln_2.weight": [c], h + "ln_2.bias": [c],
                     h + "mlp.c_fc.weight": [c, 4 * c],
                     h + "mlp.c_fc.bias": [4 * c],
                     h + "mlp.c_proj.weight": [4 * c, c],
                     h + "mlp.c_proj.bias": [c]})
    return keys


def check_saved(exe, tmp):
    model = random_gpt(4)
    src = os.path.join(tmp, "saved_src")
    loaded = write_folder(src, model, torch.float16, "", True, True)
    out = os.path.join(tmp, "saved", "nested")  # created by the save
    print(run(exe, "cpu", "resave", src, out).strip())
    tensors, meta = st.st_read(os.path.join(out, "model.safetensors"))
    assert meta == {"format": "pt"}, meta
    want = gpt2_keys()
    assert sorted(tensors) == sorted(want), \
        "keys: extra %s, missing %s" % (sorted(set(tensors) - set(want)),
                                        sorted(set(want) - set(tensors)))
    for k, t in tensors.items():
        assert list(t.shape) == want[k] and t.dtype == torch.float32, k
    with open(os.path.join(out, "config.json")) as f:
        cfg = json.load(f)
    for k, v in {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
                 "n_layer": LAYERS, "n_head": HEADS, "n_embd": EMBD,
                 "n_positions": POSITIONS, "n_ctx": POSITIONS,
                 "vocab_size": VOCAB, "layer_norm_epsilon": 1e-5,
                 "activation_function": "gelu_new", "resid_pdrop": 0.1,
                 "embd_pdrop": 0.1, "attn_pdrop": 0.1,
                 "tie_word_embeddings": True}.items():
        assert cfg.get(k) == v, "config.json %s: %r, expected %r" % (
            k, cfg.get(k), v)
    state = {k[len("transformer."):]: t for k, t in tensors.items()}
    for k, t in state.items():
        assert torch.equal(t.view(torch.int32),
                           loaded[k].view(torch.int32)), k
    x = sample_ids(model)
    before, after = torch_loss(loaded, x), torch_loss(state, x)
    assert before == after, (before, after)
    print("ok: the saved folder has GPT2LMHeadModel's keys, shapes and "
          "config; torch loads it (strict), loss %.7f" % after)


def main():
    exe, backend = sys.argv[1], sys.argv[2]
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        ok = check_losses(exe, backend, tmp)
        if backend == "cpu":
            check_saved(exe, tmp)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
