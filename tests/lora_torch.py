#!/usr/bin/env python3
"""xgrad's LoRA (api/nn/lora.c, api/io/peft.c) against LoRA written here in
PyTorch (Debian's python3-torch 1.13) over the GPT of bench/gpt_torch.py.

Usage: lora_torch.py path/to/lora_export BACKEND   (meson test runs it)

BACKEND cpu: runs lora_export DIR on the CPU and checks
  1. training: the same init (init.safetensors, lora_A included) trained
     for 10 AdamW steps with LoRA on c_attn and c_proj (r 4, alpha 8,
     dropout 0) in torch gives xgrad's losses within 1e-4 relative, and
     xgrad's logits after training within 1e-4;
  2. the base weights in final.safetensors are bit for bit init's;
  3. the adapter xgrad saved in PEFT's format: the keys, shapes, dtypes
     and metadata of adapter_model.safetensors and the fields of
     adapter_config.json are what PEFT writes for GPT2LMHeadModel (PEFT is
     not installed: the expectations are written from its documented
     format); its tensors load into the torch LoRA model (prefix
     stripped), which gives xgrad's logits;
  4. reloaded into a fresh xgrad model and merged: logits within 1e-5 of
     the adapted model's (lora_export checks it too); the merged
     state_dict loads into the plain torch GPT (strict) and gives the
     adapted logits;
  5. adapters written here as PEFT writes them (keys without and with the
     adapter name "default", a config with fields of newer PEFT releases)
     load into xgrad (lora_export load) and give torch's logits; broken
     adapters (wrong peft_type, a missing key, an unknown key, a wrong
     shape, a target not in the model) are refused naming the key or
     field and the file.
BACKEND opencl / vulkan: runs lora_export on the CPU and on BACKEND (which
  runs its own checks of the base weights, reloading and merging) and
  compares the losses: within 1e-4 relative. Skipped (77) without a device
  for BACKEND unless XGRAD_REQUIRE_BACKENDS=1; a Vulkan validation message
  fails it.
Exits 77 (skipped) when torch is not installed.
"""
import json
import math
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "bench"))
import safetensors_torch as st  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import gpt_torch as G  # noqa: E402

R, ALPHA, TARGETS = 4, 8, ("c_attn", "c_proj")
PREFIX = "base_model.model.transformer."


def lora_forward(self, x):
    """PEFT's Linear/Conv1D LoRA forward: base + B(A(dropout(x))) * s."""
    return (G.Conv1D.forward(self, x) +
            self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling)


def add_lora(model, r, alpha, targets):
    """LoRA on every Conv1D whose name is a target; freezes the rest."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in model.named_modules():
        if name.split(".")[-1] in targets and isinstance(mod, G.Conv1D):
            n_in, n_out = mod.weight.shape
            mod.lora_A = torch.nn.Linear(n_in, r, bias=False)
            mod.lora_B = torch.nn.Linear(r, n_out, bias=False)
            torch.nn.init.zeros_(mod.lora_B.weight)
            mod.lora_dropout = torch.nn.Identity()
            mod.scaling = alpha / r
            mod.forward = lora_forward.__get__(mod)
    return model


def lora_model(meta, state):
    vocab, context, layers, heads, c = map(int, meta["config"].split())
    model = add_lora(G.GPT(vocab, context, layers, heads, c), R, ALPHA,
                     TARGETS)
    model.load_state_dict(state, strict=True)
    return model


def run(exe, args, backend="cpu"):
    env = dict(os.environ, XGRAD_BACKEND=backend)
    return subprocess.run([exe] + args, capture_output=True, text=True,
                          env=env)


def eval_logits(model, x):
    model.eval()
    with torch.no_grad():
        return model(x.long())


class Checker:
    def __init__(self):
        self.ok = True

    def __call__(self, cond, what):
        print("%s: %s" % ("ok" if cond else "FAILED", what))
        self.ok &= bool(cond)


def check_training(d, chk):
    out, meta = st.st_read(os.path.join(d, "out.safetensors"))
    init, _ = st.st_read(os.path.join(d, "init.safetensors"))
    final, _ = st.st_read(os.path.join(d, "final.safetensors"))
    batches, _ = st.st_read(os.path.join(d, "batches.safetensors"))
    lr = float(meta["lr"])
    model = lora_model(meta, init)
    trainable = [n for n, p in model.named_parameters() if p.requires_grad]
    chk(all(".lora_A." in n or ".lora_B." in n for n in trainable) and
        len(trainable) == 2 * 3 * 2, "%d trainable tensors, all LoRA's"
        % len(trainable))
    opt = torch.optim.AdamW([p for p in model.parameters()
                             if p.requires_grad], lr=lr)
    model.train()
    xs = [float(v) for v in meta["losses"].split()]
    worst = 0.0
    for k, xg_loss in enumerate(xs):
        x, y = batches["x%d" % k].long(), batches["y%d" % k].long()
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        rel = abs(loss.item() - xg_loss) / abs(loss.item())
        worst = max(worst, rel)
        print("step %d: torch %.7f xgrad %.7f rel %.2e" % (k, loss.item(),
                                                          xg_loss, rel))
    chk(len(xs) == 10 and worst <= 1e-4,
        "losses: worst relative difference %.3g (limit 1e-4)" % worst)
    err = (eval_logits(model, batches["x0"]) - out["logits"]).abs().max()
    chk(err <= 1e-4, "logits after training: max |torch - xgrad| = %.3g "
        "(limit 1e-4)" % err)
    same = [n for n in init if ".lora_" not in n and
            torch.equal(init[n], final[n])]
    base = [n for n in init if ".lora_" not in n]
    chk(len(same) == len(base) == 28, "base weights bit for bit unchanged: "
        "%d of %d" % (len(same), len(base)))
    moved = max((final[n] - model.state_dict()[n]).abs().max().item()
                for n in final if ".lora_" in n)
    print("trained LoRA weights: max |torch - xgrad| = %.3g" % moved)
    return model, out, meta, init, batches


def expected_keys(layers):
    """PEFT's adapter keys for GPT2LMHeadModel: the target's full name in
    the wrapped model (base_model.model.transformer.h.{i}...), then
    lora_A.weight / lora_B.weight, without the adapter name."""
    keys = {}
    for i in range(layers):
        for mod, n_in, n_out in (("attn.c_attn", 32, 96),
                                 ("attn.c_proj", 32, 32),
                                 ("mlp.c_proj", 128, 32)):
            base = "%sh.%d.%s" % (PREFIX, i, mod)
            keys[base + ".lora_A.weight"] = [R, n_in]
            keys[base + ".lora_B.weight"] = [n_out, R]
    return keys


def check_peft_files(d, chk, model, out, batches):
    adapter = os.path.join(d, "adapter")
    tensors, meta = st.st_read(os.path.join(adapter,
                                            "adapter_model.safetensors"))
    want = expected_keys(2)
    got = {k: list(v.shape) for k, v in tensors.items()}
    chk(got == want, "adapter_model.safetensors: %d keys with PEFT's names "
        "and shapes" % len(got))
    chk(all(v.dtype == torch.float32 for v in tensors.values()),
        "adapter tensors are F32")
    chk(meta == {"format": "pt"}, "metadata %r (PEFT writes "
        "{'format': 'pt'})" % (meta,))
    cfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    # LoraConfig's fields as PEFT's save_pretrained writes them
    expect = {"peft_type": "LORA", "r": R, "lora_alpha": ALPHA,
              "lora_dropout": 0.0, "fan_in_fan_out": True, "bias": "none",
              "task_type": "CAUSAL_LM", "inference_mode": True,
              "base_model_name_or_path": "xgrad/tiny-gpt",
              "init_lora_weights": True, "modules_to_save": None,
              "layers_to_transform": None, "layers_pattern": None,
              "rank_pattern": {}, "alpha_pattern": {}, "revision": None,
              "use_rslora": False, "use_dora": False, "auto_mapping": None}
    wrong = {k: cfg.get(k, "(missing)") for k, v in expect.items()
             if cfg.get(k, "(missing)") != v or
             type(cfg.get(k)) is not type(v)}
    chk(not wrong, "adapter_config.json fields%s" %
        ("" if not wrong else ": wrong %r" % wrong))
    chk(isinstance(cfg.get("target_modules"), list) and
        sorted(cfg["target_modules"]) == sorted(TARGETS),
        "target_modules %r" % cfg.get("target_modules"))
    # the adapter's tensors in the torch model give xgrad's logits
    state = model.state_dict()
    for k, v in tensors.items():
        state[k[len(PREFIX):]] = v
    model.load_state_dict(state, strict=True)
    err = (eval_logits(model, batches["x0"]) - out["logits"]).abs().max()
    chk(err <= 1e-4, "torch with xgrad's adapter: max |torch - xgrad| = "
        "%.3g (limit 1e-4)" % err)


def check_reload_merge(d, chk, meta, out, batches, model):
    for name in ("logits_reloaded", "logits_merged"):
        err = (out[name] - out["logits"]).abs().max()
        chk(err <= 1e-5, "%s: max |diff| from the adapted logits %.3g "
            "(limit 1e-5)" % (name, err))
    merged, _ = st.st_read(os.path.join(d, "merged.safetensors"))
    vocab, context, layers, heads, c = map(int, meta["config"].split())
    plain = G.GPT(vocab, context, layers, heads, c)
    plain.load_state_dict(merged, strict=True)
    err = (eval_logits(plain, batches["x0"]) -
           eval_logits(model, batches["x0"])).abs().max()
    chk(err <= 1e-4, "merged state_dict in the plain torch GPT: max |diff| "
        "from torch's adapted logits %.3g (limit 1e-4)" % err)


def write_adapter(path, tensors, config):
    os.makedirs(path, exist_ok=True)
    st.st_write(os.path.join(path, "adapter_model.safetensors"), tensors,
                {"format": "pt"})
    with open(os.path.join(path, "adapter_config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)


def check_peft_made(exe, d, chk, model, batches):
    """Adapters as PEFT's save_pretrained writes them, into xgrad."""
    # torch's own trained adapter, moved off zero so that B matters
    torch.manual_seed(3)
    lora = {}
    for n, p in model.state_dict().items():
        if ".lora_" in n:
            lora[PREFIX + n] = p + 0.01 * torch.randn_like(p)
    state = model.state_dict()
    for k, v in lora.items():
        state[k[len(PREFIX):]] = v
    model.load_state_dict(state, strict=True)
    want = eval_logits(model, batches["x0"])
    config = {  # a newer PEFT's fields; the targets in another order
        "alpha_pattern": {}, "auto_mapping": None,
        "base_model_name_or_path": "gpt2", "bias": "none",
        "corda_config": None, "eva_config": None, "exclude_modules": None,
        "fan_in_fan_out": True, "inference_mode": True,
        "init_lora_weights": True, "layer_replication": None,
        "layers_pattern": None, "layers_to_transform": None,
        "loftq_config": {}, "lora_alpha": ALPHA, "lora_bias": False,
        "lora_dropout": 0.05, "megatron_config": None,
        "megatron_core": "megatron.core", "modules_to_save": None,
        "peft_type": "LORA", "r": R, "rank_pattern": {}, "revision": None,
        "target_modules": ["c_proj", "c_attn"], "task_type": "CAUSAL_LM",
        "trainable_token_indices": None, "use_dora": False,
        "use_rslora": False}
    base = os.path.join(d, "base.safetensors")
    named = {k.replace(".lora_A.", ".lora_A.default.")
             .replace(".lora_B.", ".lora_B.default."): v
             for k, v in lora.items()}
    for label, tensors in (("PEFT's keys", lora),
                           ("keys with the adapter name", named)):
        path = os.path.join(d, "peft_" + label.split()[0].replace("'", ""))
        write_adapter(path, tensors, config)
        res = os.path.join(path, "logits.safetensors")
        done = run(exe, ["load", base, path, res])
        if done.returncode != 0:
            chk(False, "PEFT-made adapter (%s): %s" % (label, done.stderr))
            continue
        got, _ = st.st_read(res)
        err = (got["logits"] - want).abs().max()
        chk(err <= 1e-4, "PEFT-made adapter (%s) in xgrad: max |xgrad - "
            "torch| = %.3g (limit 1e-4)" % (label, err))

    def refused(label, tensors, cfg, must):
        path = os.path.join(d, "bad_%d" % refused.n)
        refused.n += 1
        write_adapter(path, tensors, cfg)
        done = run(exe, ["load", base, path, os.path.join(path, "x")])
        msg = done.stderr.strip()
        chk(done.returncode == 1 and all(m in msg for m in must),
            "refused: %s: %s" % (label, msg))
    refused.n = 0
    cfg_file, st_file = "adapter_config.json", "adapter_model.safetensors"
    a0 = PREFIX + "h.0.attn.c_attn.lora_A.weight"
    refused("peft_type", lora, dict(config, peft_type="PREFIX_TUNING"),
            ["peft_type", "PREFIX_TUNING", cfg_file])
    refused("a missing key", {k: v for k, v in lora.items() if k != a0},
            config, [a0, "missing", st_file])
    extra = dict(lora)
    extra[PREFIX + "h.0.mlp.c_fc.lora_A.weight"] = torch.zeros(R, 32)
    refused("an unknown key", extra, config,
            ["h.0.mlp.c_fc.lora_A.weight", "unknown", st_file])
    bad = dict(lora)
    bad[a0] = torch.zeros(R, 33)
    refused("a wrong shape", bad, config, [a0, "[4,33]", st_file])
    refused("a target not in the model", lora,
            dict(config, target_modules=["c_attn", "c_proj", "q_proj"]),
            ["q_proj", cfg_file])
    refused("use_dora", lora, dict(config, use_dora=True),
            ["use_dora", cfg_file])


def main_cpu(exe):
    chk = Checker()
    with tempfile.TemporaryDirectory() as d:
        done = run(exe, [d])
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        if done.returncode != 0:
            print("lora_export failed (%d)" % done.returncode)
            return 1
        model, out, meta, init, batches = check_training(d, chk)
        check_peft_files(d, chk, model, out, batches)
        check_reload_merge(d, chk, meta, out, batches, model)
        check_peft_made(exe, d, chk, model, batches)
    print("OK" if chk.ok else "FAILED")
    return 0 if chk.ok else 1


def main_backend(exe, backend):
    with tempfile.TemporaryDirectory() as d:
        runs = {}
        for b in ("cpu", backend):
            os.mkdir(os.path.join(d, b))
            done = run(exe, [os.path.join(d, b)], b)
            sys.stdout.write(done.stdout)
            sys.stderr.write(done.stderr)
            if b == "vulkan" and "vulkan validation" in done.stderr:
                print("Vulkan validation messages (above)")
                return 1
            if done.returncode != 0:
                return done.returncode  # 77: no device for the backend
            _, meta = st.st_read(os.path.join(d, b, "out.safetensors"))
            runs[b] = [float(v) for v in meta["losses"].split()]
        xs, ys = runs["cpu"], runs[backend]
        rel = max(abs(a - b) / abs(a) for a, b in zip(xs, ys))
        ok = len(xs) == len(ys) == 10 and rel <= 1e-4
        print("%s vs cpu: worst relative loss difference %.3g (limit 1e-4)"
              % (backend, rel))
        print("OK" if ok else "FAILED")
        return 0 if ok else 1


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    exe, backend = sys.argv[1], sys.argv[2]
    return main_cpu(exe) if backend == "cpu" else main_backend(exe, backend)


if __name__ == "__main__":
    sys.exit(main())
