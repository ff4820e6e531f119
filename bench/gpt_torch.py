#!/usr/bin/env python3
"""xgrad's GPT (api/nn/gpt.c) written again in PyTorch (Debian's
python3-torch 1.13), with the same parameter names and layouts, for
checking and for side-by-side figures.

Usage:
  gpt_torch.py check DIR [OTHER_DIR ...]
      DIR holds what tests/gpt_export writes (on one backend): the initial
      state_dict, 20 batches, the initial logits on batch 0 and the 20
      training losses. The same model is loaded into torch from the same
      file and trained on the same batches with the same AdamW groups and
      clipping. Fails unless the logits agree within 1e-4 and every loss
      within 1e-3 relative. Each OTHER_DIR (the same export on another
      backend) must give losses within 1e-3 relative of DIR's.
  gpt_torch.py bench [--layers 4 --heads 4 --embd 128 --context 128
                      --batch-size 16 --vocab 256 --steps 30 --threads 2
                      --positions N --lora R --precision f32|bf16|f16]
      training tokens/s of the same model and step (forward, backward,
      clipping, AdamW) on random tokens, every step counted; prints
      "torch_tokens_per_s=N" and the peak RSS. --positions: the model's
      context when longer than the window (--context); --lora R: LoRA of
      rank R (alpha 2R, dropout 0.05) on c_attn, the rest frozen.
      --precision bf16|f16: the forward pass and the loss under
      torch.autocast("cpu", dtype) (f32 weights, gradients and AdamW
      state; PyTorch 1.13's CPU autocast supports only bf16: f16 exits 77
      with its error); also prints the bytes of the
      parameters, gradients and optimizer state and those the autograd
      graph saved for the backward of the last step (saved_mb).
  gpt_torch.py curve INIT BATCHES OUT.csv [--lr 1e-3 --cosine --warmup N]
      trains from INIT (the gpt sample's --save-init file) on the batches
      that the sample wrote with --dump-batches and writes OUT.csv in the
      sample's --log format: the mean training loss every --log-every
      steps (20) and the validation loss every --eval-every steps (100),
      on the same validation batches; tools/plot.py draws both logs.
Exits 77 (skipped) when torch is not installed.
"""
import argparse
import math
import os
import resource
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                "..", "tests"))
import safetensors_torch as st  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402


class Conv1D(torch.nn.Module):
    """GPT-2's Conv1D: y = x W + b with W [in, out]."""

    def __init__(self, n_in, n_out, bias):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(n_in, n_out))
        self.bias = torch.nn.Parameter(torch.zeros(n_out)) if bias else None

    def forward(self, x):
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class LayerNorm(torch.nn.Module):
    def __init__(self, n, bias, eps):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.ones(n))
        self.bias = torch.nn.Parameter(torch.zeros(n)) if bias else None
        self.eps = eps

    def forward(self, x):
        return F.layer_norm(x, x.shape[-1:], self.weight, self.bias, self.eps)


class Attention(torch.nn.Module):
    def __init__(self, c, heads, bias, dropout):
        super().__init__()
        self.c_attn = Conv1D(c, 3 * c, bias)
        self.c_proj = Conv1D(c, c, bias)
        self.heads, self.dropout = heads, dropout

    def forward(self, x):
        b, t, c = x.shape
        h, d = self.heads, c // self.heads
        q, k, v = self.c_attn(x).view(b, t, 3, h, d).permute(2, 0, 3, 1, 4)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(d)
        mask = torch.ones(t, t, dtype=torch.bool).tril()
        s = s.masked_fill(~mask, float("-inf"))
        p = F.dropout(torch.softmax(s, -1), self.dropout, self.training)
        y = (p @ v).transpose(1, 2).reshape(b, t, c)
        return F.dropout(self.c_proj(y), self.dropout, self.training)


class MLP(torch.nn.Module):
    def __init__(self, c, bias, dropout):
        super().__init__()
        self.c_fc = Conv1D(c, 4 * c, bias)
        self.c_proj = Conv1D(4 * c, c, bias)
        self.dropout = dropout

    def forward(self, x):
        y = self.c_proj(F.gelu(self.c_fc(x), approximate="tanh"))
        return F.dropout(y, self.dropout, self.training)


class Block(torch.nn.Module):
    def __init__(self, c, heads, bias, dropout, eps):
        super().__init__()
        self.ln_1 = LayerNorm(c, bias, eps)
        self.attn = Attention(c, heads, bias, dropout)
        self.ln_2 = LayerNorm(c, bias, eps)
        self.mlp = MLP(c, bias, dropout)

    def forward(self, x):
        x = x + self.attn(self.ln_1(x))
        return x + self.mlp(self.ln_2(x))


class GPT(torch.nn.Module):
    def __init__(self, vocab, context, layers, heads, c, dropout=0.0,
                 bias=True, eps=1e-5):
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, c)
        self.wpe = torch.nn.Embedding(context, c)
        self.h = torch.nn.ModuleList(
            [Block(c, heads, bias, dropout, eps) for _ in range(layers)])
        self.ln_f = LayerNorm(c, bias, eps)
        self.dropout = dropout

    def forward(self, ids):
        t = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(t))
        x = F.dropout(x, self.dropout, self.training)
        for block in self.h:
            x = block(x)
        return self.ln_f(x) @ self.wte.weight.t()  # tied output projection


def lora_forward(self, x):
    """PEFT's Conv1D LoRA forward: base + B(A(dropout(x))) * scaling."""
    return (Conv1D.forward(self, x) +
            self.lora_B(self.lora_A(self.lora_dropout(x))) * self.scaling)


def add_lora(model, r, alpha, dropout, targets=("c_attn",)):
    """LoRA on every Conv1D named in targets, as PEFT makes it; the rest
    frozen."""
    for p in model.parameters():
        p.requires_grad_(False)
    for name, mod in model.named_modules():
        if name.split(".")[-1] in targets and isinstance(mod, Conv1D):
            n_in, n_out = mod.weight.shape
            mod.lora_A = torch.nn.Linear(n_in, r, bias=False)
            mod.lora_B = torch.nn.Linear(r, n_out, bias=False)
            torch.nn.init.zeros_(mod.lora_B.weight)
            mod.lora_dropout = torch.nn.Dropout(dropout)
            mod.scaling = alpha / r
            mod.forward = lora_forward.__get__(mod)
    return model


def adamw(model, lr, weight_decay):
    """GPT-2's groups: decay on the Conv1D weights only."""
    decay, rest = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        is_matrix = name.endswith(("c_attn.weight", "c_proj.weight",
                                   "c_fc.weight"))
        (decay if is_matrix else rest).append(p)
    return torch.optim.AdamW([{"params": decay, "weight_decay": weight_decay},
                              {"params": rest, "weight_decay": 0.0}], lr=lr)


def step(model, opt, x, y, dtype=None):
    if dtype is None:
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                               y.reshape(-1))
    else:
        with torch.autocast("cpu", dtype=dtype):
            logits = model(x)
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                   y.reshape(-1))
    opt.zero_grad()
    loss.backward()
    torch.nn.utils.clip_grad_norm_(
        [p for p in model.parameters() if p.requires_grad], 1.0)
    opt.step()
    return loss.item()


def check(dirs):
    out, meta = st.st_read(os.path.join(dirs[0], "out.safetensors"))
    vocab, context, layers, heads, c = map(int, meta["config"].split())
    init, _ = st.st_read(os.path.join(dirs[0], "init.safetensors"))
    batches, _ = st.st_read(os.path.join(dirs[0], "batches.safetensors"))
    model = GPT(vocab, context, layers, heads, c)
    model.load_state_dict(init, strict=True)
    ok = True

    model.eval()
    with torch.no_grad():
        logits = model(batches["x0"].long())
    err = (logits - out["logits"]).abs().max().item()
    print("initial logits: max |torch - xgrad| = %.3g (limit 1e-4)" % err)
    ok &= err <= 1e-4

    model.train()
    opt = adamw(model, 1e-3, 0.1)
    xs = [float(v) for v in meta["losses"].split()]
    worst = 0.0
    for k, xg_loss in enumerate(xs):
        loss = step(model, opt, batches["x%d" % k].long(),
                    batches["y%d" % k].long())
        rel = abs(loss - xg_loss) / abs(loss)
        worst = max(worst, rel)
        print("step %2d: torch %.6f xgrad %.6f rel %.2e" % (k, loss, xg_loss,
                                                            rel))
    print("losses: worst relative difference %.3g (limit 1e-3)" % worst)
    ok &= worst <= 1e-3 and len(xs) == 20
    for other in dirs[1:]:
        _, m2 = st.st_read(os.path.join(other, "out.safetensors"))
        ys = [float(v) for v in m2["losses"].split()]
        rel = max(abs(a - b) / abs(a) for a, b in zip(xs, ys))
        print("%s vs %s: worst relative loss difference %.3g (limit 1e-3)"
              % (other, dirs[0], rel))
        ok &= rel <= 1e-3 and len(ys) == len(xs)
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def bench(a):
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    model = GPT(a.vocab, a.positions or a.context, a.layers, a.heads, a.embd,
                a.dropout)
    for name, p in model.named_parameters():
        if p.dim() == 2:
            torch.nn.init.normal_(p, 0.0, 0.02)
    if a.lora:
        add_lora(model, a.lora, 2.0 * a.lora, 0.05)
    opt = adamw(model, 1e-3, 0.1)
    model.train()

    def batch():
        x = torch.randint(0, a.vocab, (a.batch_size, a.context + 1))
        return x[:, :-1], x[:, 1:]

    dtype = {"f32": None, "bf16": torch.bfloat16,
             "f16": torch.float16}[a.precision]
    if dtype is not None:
        try:
            with torch.autocast("cpu", dtype=dtype):
                pass
        except RuntimeError as e:
            print("precision=%s: torch %s: %s" % (a.precision,
                                                  torch.__version__, e))
            return 77
    t0 = time.perf_counter()  # every step counts, the first included
    for _ in range(a.steps - 1):
        step(model, opt, *batch(), dtype)
    saved = {}  # the last step: what the graph saves, by storage

    def pack(t):
        saved[t.storage().data_ptr()] = t.storage().nbytes()
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        step(model, opt, *batch(), dtype)
    dt = time.perf_counter() - t0
    rate = a.steps * a.batch_size * a.context / dt
    print("torch %s layers=%d heads=%d embd=%d context=%d batch=%d "
          "threads=%d lora=%d" % (torch.__version__, a.layers, a.heads,
                                  a.embd, a.context, a.batch_size, a.threads,
                                  a.lora))
    print("torch_tokens_per_s=%.0f peak_rss_mb=%.0f" % (rate, peak_rss_mb()))

    def mb(ts):
        return sum(t.numel() * t.element_size() for t in ts) / 2.0**20
    ps = [p for p in model.parameters() if p.requires_grad]
    print("precision=%s params_mb=%.1f grads_mb=%.1f optim_mb=%.1f "
          "saved_mb=%.1f" % (a.precision, mb(model.parameters()),
                             mb(p.grad for p in ps if p.grad is not None),
                             mb(v for s in opt.state.values()
                                for v in s.values() if torch.is_tensor(v)),
                             sum(saved.values()) / 2.0**20))
    return 0


def curve(a):
    torch.set_num_threads(a.threads)
    init, meta = st.st_read(a.init)
    batches, bmeta = st.st_read(a.batches)
    vocab, context, layers, heads, c = (int(meta["gpt." + k]) for k in (
        "vocab_size", "context", "n_layer", "n_head", "n_embd"))
    model = GPT(vocab, context, layers, heads, c)
    model.load_state_dict(init, strict=True)
    opt = adamw(model, a.lr, a.weight_decay)
    steps = int(bmeta["steps"])
    n_val = int(bmeta["eval_batches"])
    val = [(batches["val_x%d" % k].long(), batches["val_y%d" % k].long())
           for k in range(n_val)]
    t0 = time.perf_counter()
    window, n_window = 0.0, 0
    with open(a.out, "w") as f:  # the gpt sample's --log format
        f.write("kind,step,loss,lr,tokens_per_s,elapsed_s,val_loss\n")
        for k in range(steps + 1):
            if k % a.eval_every == 0 or k == steps:
                model.eval()
                with torch.no_grad():  # the mean of the batches' means
                    vl = sum(F.cross_entropy(model(x).reshape(-1, vocab),
                                             y.reshape(-1)).item()
                             for x, y in val) / n_val
                model.train()
                f.write("eval,%d,,,,%.3f,%.6f\n"
                        % (k, time.perf_counter() - t0, vl))
                print("step %d val_loss %.4f" % (k, vl), flush=True)
            if k == steps:
                break
            lr = a.lr
            if a.cosine:
                if k < a.warmup:
                    lr = a.lr * (k + 1) / a.warmup
                else:
                    p = min(1.0, (k - a.warmup) / max(1, steps - a.warmup))
                    lr = a.lr * (1 + math.cos(math.pi * p)) / 2
            for g in opt.param_groups:
                g["lr"] = lr
            window += step(model, opt, batches["x%d" % k].long(),
                           batches["y%d" % k].long())
            n_window += 1
            if (k + 1) % a.log_every == 0 or k + 1 == steps:
                f.write("train,%d,%.6f,%.6g,,%.3f,\n"
                        % (k + 1, window / n_window, lr,
                           time.perf_counter() - t0))
                window, n_window = 0.0, 0
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__)
        return 2
    mode = sys.argv[1]
    if mode == "check":
        return check(sys.argv[2:])
    p = argparse.ArgumentParser(prog="gpt_torch.py " + mode)
    p.add_argument("--threads", type=int, default=2)
    if mode == "bench":
        for flag, default in (("layers", 4), ("heads", 4), ("embd", 128),
                              ("context", 128), ("batch-size", 16),
                              ("vocab", 256), ("steps", 30),
                              ("positions", 0), ("lora", 0)):
            p.add_argument("--" + flag, type=int, default=default)
        p.add_argument("--dropout", type=float, default=0.0)
        p.add_argument("--precision", choices=("f32", "bf16", "f16"),
                       default="f32")
        return bench(p.parse_args(sys.argv[2:]))
    if mode == "curve":
        for name in ("init", "batches", "out"):
            p.add_argument(name)
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--weight-decay", type=float, default=0.1)
        p.add_argument("--eval-every", type=int, default=100)
        p.add_argument("--log-every", type=int, default=20)
        p.add_argument("--cosine", action="store_true")
        p.add_argument("--warmup", type=int, default=0)
        return curve(p.parse_args(sys.argv[2:]))
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
