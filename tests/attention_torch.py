#!/usr/bin/env python3
"""xg_attention against PyTorch (Debian's python3-torch, 1.13).

Usage: attention_torch.py path/to/libxgrad.so   (meson test runs it)

PyTorch 1.13 has no F.scaled_dot_product_attention (it came in 2.0), so the
reference is the attention written out in torch, in float64: scores
scale * q k^T, the causal mask (query i sees key j iff j <= i + offset),
softmax (a row that sees no key gives zeros), dropout on the weights, the
product with v; its gradients come from torch.autograd. xgrad (driven
through ctypes, on the device XGRAD_BACKEND names) computes the same
output and the gradients of sum(out * g) for q, k and v.

Dropout: xgrad draws the mask from the thread's generator, Tq * Tk
elements per head, as rand_uniform would: after xg_manual_seed(s), a
rand_uniform of B * H * Tq * Tk elements gives the u of the mask (an
element is dropped iff u < p), which the reference then applies.
Exits 77 (skipped) when torch is not installed.
"""
import ctypes as C
import math
import sys

try:
    import torch
except ImportError:
    print("python3-torch is not installed: skipped")
    sys.exit(77)

import xgrad_ctypes as xc  # noqa: E402 (same folder)


class Params(C.Structure):
    """struct xg_attention_params (api/xgrad.h)."""
    _fields_ = [("scale", C.c_float), ("causal", C.c_bool),
                ("causal_offset", C.c_int64), ("dropout_p", C.c_float),
                ("training", C.c_bool)]


def load_xgrad(path):
    P = xc.P
    return xc.load(path, {
        "xg_rand_uniform": (P, [C.POINTER(C.c_int64), C.c_int, C.c_float,
                                C.c_float]),
        "xg_attention": (P, [P, P, P, C.POINTER(Params)]),
        "xg_mul": (P, [P, P]),
        "xg_sum_all": (P, [P]),
    })


class Xgrad(xc.Xgrad):
    def values(self, x, shape):
        return super().values(x, shape, torch.float64)

    def uniform(self, seed, n):
        """The first n numbers the generator gives after manual_seed."""
        self.lib.xg_manual_seed(seed)
        shape = (C.c_int64 * 1)(n)
        u = self.lib.xg_rand_uniform(shape, 1, 0.0, 1.0)
        self.check(u, "rand_uniform")
        out = self.values(u, (n,))
        self.lib.xg_tensor_free(u)
        return out

    def attention(self, q, k, v, g, params, seed):
        """out and the gradients of sum(out * g) for q, k, v."""
        lib = self.lib
        lib.xg_manual_seed(seed)
        xs = [self.tensor(t) for t in (q, k, v)]
        for x in xs:
            self.check(lib.xg_tensor_set_requires_grad(x, True) == 0, "grad")
        gt = self.tensor(g)
        out = lib.xg_attention(xs[0], xs[1], xs[2], C.byref(params))
        self.check(out, "attention")
        prod = lib.xg_mul(out, gt)
        loss = lib.xg_sum_all(prod)
        self.check(loss, "loss")
        self.check(lib.xg_backward(loss) == 0, "backward")
        res = [self.values(out, q.shape)]
        res += [self.values(lib.xg_tensor_grad(x), t.shape)
                for x, t in zip(xs, (q, k, v))]
        for t in [loss, prod, out, gt] + xs:
            lib.xg_tensor_free(t)
        return res


def reference(q, k, v, g, scale, causal, offset, p, u):
    """Attention in float64 torch and its gradients."""
    q, k, v = (t.detach().clone().double().requires_grad_(True)
               for t in (q, k, v))
    tq, tk = q.shape[2], k.shape[2]
    s = scale * q @ k.transpose(-1, -2)
    i = torch.arange(tq).reshape(tq, 1)
    j = torch.arange(tk).reshape(1, tk)
    sees = (j <= i + offset) if causal else torch.ones(tq, tk, dtype=torch.bool)
    has_key = sees.any(-1, keepdim=True)
    s = torch.where(sees, s, torch.tensor(-math.inf, dtype=torch.float64))
    s = torch.where(has_key, s, torch.zeros((), dtype=torch.float64))
    w = torch.where(has_key, torch.softmax(s, -1),
                    torch.zeros((), dtype=torch.float64))
    if p > 0:
        keep = (u.reshape(w.shape) >= p).double()
        w = w * keep / (1 - p)
    out = w @ v
    (out * g.double()).sum().backward()
    return [out.detach(), q.grad, k.grad, v.grad]


# B, H, Tq, Tk, D, causal, offset, dropout p, scale (0: 1/sqrt(D))
CASES = [
    (1, 1, 1, 1, 1, True, 0, 0.0, 0.0),
    (2, 3, 7, 7, 5, True, 0, 0.0, 0.0),
    (2, 3, 7, 7, 5, False, 0, 0.0, 0.0),
    (1, 3, 7, 7, 1, True, 0, 0.0, 0.0),          # heads of size 1
    (2, 2, 65, 65, 64, True, 0, 0.0, 0.0),
    (1, 2, 130, 130, 32, False, 0, 0.0, 0.0),
    (1, 2, 130, 130, 32, True, 0, 0.0, 0.5),
    (1, 2, 17, 17, 128, False, 0, 0.0, 0.0),
    (1, 2, 17, 17, 128, True, 0, 0.0, 0.0),
    (2, 2, 7, 20, 8, True, 13, 0.0, 0.0),        # a KV cache: Tk - Tq
    (1, 1, 1, 70, 16, True, 69, 0.0, 0.0),       # one new token
    (1, 2, 9, 9, 4, True, -3, 0.0, 0.0),         # rows that see no key
    (1, 1, 5, 5, 3, True, -5, 0.0, 0.0),         # no row sees a key
    (2, 1, 33, 40, 16, True, 7, 0.3, 0.0),       # dropout
    (1, 2, 65, 65, 64, False, 0, 0.1, 0.0),
    (1, 1, 7, 7, 5, True, 0, 0.9, 0.0),
]


def main():
    xg = Xgrad(load_xgrad(sys.argv[1]))
    torch.manual_seed(3)
    failures = 0
    for n, (b, h, tq, tk, d, causal, off, p, scale) in enumerate(CASES):
        q = torch.randn(b, h, tq, d)
        k = torch.randn(b, h, tk, d)
        v = torch.randn(b, h, tk, d)
        g = torch.randn(b, h, tq, d)
        seed = 1000 + n
        u = xg.uniform(seed, b * h * tq * tk) if p > 0 else None
        params = Params(scale, causal, off, p, True)
        got = xg.attention(q, k, v, g, params, seed)
        ref = reference(q, k, v, g, scale if scale else 1 / math.sqrt(d),
                        causal, off, p, u)
        desc = ("B=%d H=%d Tq=%d Tk=%d D=%d causal=%d offset=%d p=%g "
                "scale=%g" % (b, h, tq, tk, d, causal, off, p, scale))
        for name, a, r in zip(("out", "dq", "dk", "dv"), got, ref):
            # relative to each element, or to the largest one for the small
            atol = 1e-3 * float(r.abs().max()) + 1e-6
            err = (a - r).abs() / (atol + r.abs())
            if not torch.isfinite(a).all() or err.max() > 1e-3:
                at = int(err.argmax())
                print("FAIL %s: %s differs: %g vs torch %g (element %d)" %
                      (desc, name, a.flatten()[at], r.flatten()[at], at))
                failures += 1
        print("ok   %s" % desc if failures == 0 else "...  %s" % desc)
    xg.lib.xg_shutdown()
    if failures:
        sys.exit("%d comparison(s) failed" % failures)


if __name__ == "__main__":
    main()
