#!/usr/bin/env python3
"""xg_layer_norm and its LayerNorm layer against PyTorch.

Usage: layer_norm_torch.py path/to/libxgrad.so   (meson test runs it)

xgrad is driven through ctypes on the CPU backend. Checked:
  1. forward and gradients (of sum(y * r) for fixed random r) for x,
     weight and bias against torch.nn.functional.layer_norm evaluated in
     float64, over short and long rows, with and without weight and bias,
     several eps, and rows with a large common offset. xgrad's error must
     stay within a fixed bound and within a small multiple of torch's own
     float32 error;
  2. xg_layer_norm_layer: parameter names, ones and zeros, and a saved
     state_dict loads into torch.nn.LayerNorm (strict), and back, with
     equal outputs.
Exits 77 (skipped) when torch is not installed.
"""
import ctypes as C
import os
import sys
import tempfile

try:
    import torch
    import torch.nn.functional as F
except ImportError:
    print("python3-torch is not installed: skipped")
    sys.exit(77)

from safetensors_torch import st_read, st_write  # noqa: E402 (same folder)
import xgrad_ctypes as xc  # noqa: E402 (same folder)
from xgrad_ctypes import P, Xgrad  # noqa: E402


def load_xgrad(path):
    return xc.load(path, {
        "xg_layer_norm": (P, [P, P, P, C.c_float]),
        "xg_mul": (P, [P, P]),
        "xg_sum_all": (P, [P]),
        "xg_scope_begin": (P, []),
        "xg_scope_end": (None, [P]),
        "xg_layer_norm_layer": (P, [C.c_int64, C.c_float, C.c_bool, C.c_bool]),
    })


def xgrad_layer_norm(xg, x, w, b, eps, r):
    """y and the gradients of sum(y * r) for x, w, b (None where absent)."""
    lib = xg.lib
    scope = lib.xg_scope_begin()
    xt = xg.tensor(x, True)
    wt = xg.tensor(w, True) if w is not None else None
    bt = xg.tensor(b, True) if b is not None else None
    y = lib.xg_layer_norm(xt, wt, bt, eps)
    xg.check(y, "layer_norm")
    loss = lib.xg_sum_all(lib.xg_mul(y, xg.tensor(r)))
    xg.check(loss and lib.xg_backward(loss) == 0, "backward")
    out = [xg.values(y, x.shape)]
    for t, like in ((xt, x), (wt, w), (bt, b)):
        out.append(xg.values(lib.xg_tensor_grad(t), like.shape)
                   if t is not None else None)
    lib.xg_scope_end(scope)
    return out


def torch_layer_norm(x, w, b, eps, r, dtype):
    """The same in torch, computed in `dtype`."""
    leaves = [t.detach().to(dtype).requires_grad_(True) if t is not None
              else None for t in (x, w, b)]
    y = F.layer_norm(leaves[0], (x.shape[-1],), leaves[1], leaves[2], eps)
    (y * r.to(dtype)).sum().backward()
    return [y.detach().double()] + [t.grad.double() if t is not None else None
                                    for t in leaves]


def max_err(a, ref):
    return (a.double() - ref).abs().max().item()


def check_case(xg, shape, affine, eps, offset, seed):
    g = torch.Generator().manual_seed(seed)
    cols = shape[-1]
    x = torch.randn(shape, generator=g) + offset
    w = torch.rand(cols, generator=g) + 0.5 if affine[0] else None
    b = torch.randn(cols, generator=g) if affine[1] else None
    r = torch.randn(shape, generator=g)
    got = xgrad_layer_norm(xg, x, w, b, eps, r)
    ref = torch_layer_norm(x, w, b, eps, r, torch.float64)
    t32 = torch_layer_norm(x, w, b, eps, r, torch.float32)
    what = "layer_norm x %s weight=%d bias=%d eps=%g offset=%g" % (
        list(shape), affine[0], affine[1], eps, offset)
    ok = True
    for name, a, want, tf in zip(("y", "dx", "dweight", "dbias"), got, ref,
                                 t32):
        if want is None:
            continue
        scale = max(want.abs().max().item(), 1.0)
        err, terr = max_err(a, want), max_err(tf, want)
        # a fixed bound relative to the values' scale (sums over many rows
        # or columns are allowed their length's rounding), and no more than
        # a few times torch's own float32 error
        n = max(shape[-1], x.numel() // cols)
        bound = scale * 1e-6 * max(16.0, n ** 0.5 * 4)
        if not (err <= bound or err <= 4 * terr):
            print("FAIL %s: %s off by %.3g (bound %.3g, torch float32 %.3g)"
                  % (what, name, err, bound, terr))
            ok = False
    if ok:
        print("ok   %s" % what)
    return ok


def check_module(xg, folder):
    lib = xg.lib
    ok = True
    for affine, bias, want in ((True, True, ["weight", "bias"]),
                               (True, False, ["weight"]),
                               (False, True, [])):
        m = lib.xg_layer_norm_layer(12, 1e-5, affine, bias)
        xg.check(m, "layer_norm_layer")
        names = []
        for i in range(lib.xg_module_param_count(m)):
            name = C.c_char_p()
            p = lib.xg_module_param(m, i, C.byref(name))
            names.append(name.value.decode())
            v = xg.values(p, (12,))
            init = 1.0 if names[-1] == "weight" else 0.0
            if not torch.equal(v, torch.full((12,), init)):
                print("FAIL LayerNorm %s starts at %s" % (names[-1], v))
                ok = False
        if names != want:
            print("FAIL LayerNorm(affine=%d, bias=%d) names %s, want %s"
                  % (affine, bias, names, want))
            ok = False
        if not bias:  # torch 1.13's LayerNorm has no bias=False
            lib.xg_module_free(m)
            continue
        # xgrad -> torch: the saved state_dict loads (strict)
        path = os.path.join(folder, "ln.safetensors").encode()
        xg.check(lib.xg_module_save(m, path) == 0, "module_save")
        tensors, _ = st_read(path.decode())
        tm = torch.nn.LayerNorm(12, eps=1e-5, elementwise_affine=affine)
        tm.load_state_dict(tensors, strict=True)
        # torch -> xgrad: random parameters load, outputs agree
        with torch.no_grad():
            for p in tm.parameters():
                p.copy_(torch.randn(p.shape))
        st_write(path.decode(), tm.state_dict())
        xg.check(lib.xg_module_load(m, path) == 0, "module_load")
        x = torch.randn(3, 5, 12)
        scope = lib.xg_scope_begin()
        y = lib.xg_module_forward(m, xg.tensor(x))
        xg.check(y, "module_forward")
        got = xg.values(y, x.shape)
        lib.xg_scope_end(scope)
        err = max_err(got, tm(x).detach().double())
        if err > 1e-5:
            print("FAIL LayerNorm(affine=%d) output off by %.3g from torch"
                  % (affine, err))
            ok = False
        lib.xg_module_free(m)
    if ok:
        print("ok   LayerNorm layer: names, initial values, state_dicts")
    return ok


def main():
    xg = Xgrad(load_xgrad(sys.argv[1]))
    cases = [
        ((1, 1), (1, 1), 1e-5, 0.0),
        ((5, 3), (1, 1), 1e-5, 0.0),
        ((333, 3), (0, 0), 1e-5, 0.0),
        ((4, 127), (1, 0), 1e-5, 0.0),
        ((4, 127), (0, 1), 0.1, 0.0),
        ((2, 3, 768), (1, 1), 1e-5, 0.0),
        ((64, 768), (1, 1), 1e-6, 0.0),
        ((2, 4099), (1, 1), 1e-5, 0.0),
        ((2, 50000), (1, 1), 1e-5, 0.0),
        ((7, 768), (1, 1), 1e-5, 1000.0),  # a large common offset
        ((333, 5), (1, 1), 0.0, -30.0),
    ]
    ok = True
    for i, (shape, affine, eps, offset) in enumerate(cases):
        ok &= check_case(xg, shape, affine, eps, offset, 100 + i)
    with tempfile.TemporaryDirectory() as folder:
        ok &= check_module(xg, folder)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
