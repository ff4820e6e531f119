#!/usr/bin/env python3
"""Mixed precision against PyTorch: xgrad's loss scaler (xg_grad_scaler_*)
against torch.cuda.amp.GradScaler, and xg_set_autocast(XG_BF16) against
torch.autocast("cpu", dtype=torch.bfloat16).

Usage: amp_torch.py path/to/libxgrad.so   (meson test runs it)

Both train the same parameters with SGD (momentum 0.9) through a scripted
run: gradients with an inf or a NaN at some steps, clean ones at others,
and at some steps unscale, clip_grad_norm, then step. Checked after every
step: the scale (exactly), whether the step was skipped, and the
parameters (float32 rounding). A second run uses the default options.

torch's GradScaler is driven as it is, its state machine (unscale once,
skip on inf, update) included, on CPU tensors: this PyTorch has the two
kernels it calls only for CUDA, so the check supplies them on the CPU from
their documented rules (_amp_foreach_non_finite_check_and_unscale_:
found_inf = 1 when any gradient value is not finite, every gradient
multiplied by inv_scale; _amp_update_scale_: backoff and reset on
found_inf, else count the step and grow after growth_interval of them,
unless the grown scale is inf).

Autocast: a Linear layer and conv2d (with bias) on the same f32 inputs and
parameters under bf16 autocast in both: the outputs are bf16 in both and
their values agree within one bf16 unit in the last place of the largest
output (xgrad rounds the product, then the sum with the bias: a sum that
cancels keeps the product's rounding), the f32 weights' gradients are
f32 and agree within bf16's precision; the cross-entropy loss on the bf16 logits is f32 in both.

Layer norm differs on purpose: PyTorch 1.13's CPU autocast leaves
layer_norm alone (an f32 input gives f32), and the Linear after it casts
that output to bf16; xgrad's layer_norm under autocast computes in f32 and
gives bf16 itself, so the graph keeps no f32 copy. The check: xgrad's
output is bf16 and equals torch's f32 output rounded to bf16 (within one
bf16 unit of the largest value: the f32 sums may round differently), the
Linear on it agrees with torch's Linear on torch's f32 output as above,
and the layer norm's f32 weight gradient agrees within bf16's precision.
Exits 77 (skipped) without torch.
"""
import ctypes as C
import math
import struct
import sys

try:
    import torch
    import torch.cuda.amp.grad_scaler as gs
except ImportError:
    print("python3-torch is not installed: skipped")
    sys.exit(77)

import xgrad_ctypes as xc  # noqa: E402 (same folder)
from xgrad_ctypes import P, Xgrad  # noqa: E402


class SgdOptions(C.Structure):
    _fields_ = [("lr", C.c_float), ("momentum", C.c_float),
                ("dampening", C.c_float), ("weight_decay", C.c_float),
                ("nesterov", C.c_bool)]


class ScalerOptions(C.Structure):
    _fields_ = [("init_scale", C.c_float), ("growth_factor", C.c_float),
                ("backoff_factor", C.c_float), ("growth_interval", C.c_int64)]


# ---- torch's GradScaler on CPU tensors ------------------------------------

def check_and_unscale(grads, found_inf, inv_scale):
    for g in grads:
        if not bool(torch.isfinite(g).all()):
            found_inf.fill_(1.0)
        g.mul_(inv_scale)


def update_scale(scale, growth_tracker, found_inf, growth_factor,
                 backoff_factor, growth_interval):
    if float(found_inf) != 0.0:
        scale.mul_(backoff_factor)
        growth_tracker.fill_(0)
    else:
        successful = int(growth_tracker) + 1
        if successful == growth_interval:
            grown = torch.tensor(float(scale) * growth_factor,
                                 dtype=torch.float32)
            if math.isfinite(float(grown)):
                scale.copy_(grown)
            growth_tracker.fill_(0)
        else:
            growth_tracker.fill_(successful)
    return scale


class Replicator(gs._MultiDeviceReplicator):
    def __init__(self, master_tensor):  # without the CUDA assertion
        self.master = master_tensor
        self._per_device_tensors = {}


torch._amp_foreach_non_finite_check_and_unscale_ = check_and_unscale
torch._amp_update_scale_ = update_scale
gs._MultiDeviceReplicator = Replicator


def torch_scaler(**kw):
    """A GradScaler made as on a CUDA machine, on CPU tensors."""
    available = torch.cuda.is_available
    torch.cuda.is_available = lambda: True
    try:
        s = gs.GradScaler(**kw)
    finally:
        torch.cuda.is_available = available
    s._lazy_init_scale_growth_tracker(torch.device("cpu"))
    return s


# ---- the scripted run ------------------------------------------------------

# Per step: None (clean), "inf" or "nan" in one gradient value, and whether
# the step unscales and clips first.
SCRIPT = [(None, False), (None, True), (None, False), (None, False),
          ("inf", False), (None, True), (None, False), ("nan", True),
          ("inf", False), (None, False), (None, False), (None, True),
          (None, False), ("nan", False), (None, False), (None, False),
          (None, False), (None, False)]


def grad_at(k, bad):
    g = torch.tensor([1.0 + k, -2.0, 0.25 * (k % 3), 3.0 - 0.5 * k])
    if bad:
        g[2] = float(bad)
    return g


def run(lib, xg, options, scaler_kw, max_norm=1.5):
    ok = True
    s = lib.xg_grad_scaler_new(C.byref(options) if options else None)
    xg.check(s, "grad_scaler_new")
    p0 = torch.tensor([0.5, -1.0, 2.0, 0.0])
    xp = xg.tensor(p0, grad=True)
    sgd = SgdOptions(lr=0.1, momentum=0.9)
    opt = lib.xg_optim_sgd(C.byref(C.c_void_p(xp)), 1, C.byref(sgd))
    xg.check(opt, "optim_sgd")
    tp = p0.clone().requires_grad_(True)
    topt = torch.optim.SGD([tp], lr=0.1, momentum=0.9)
    ts = torch_scaler(**scaler_kw)
    for k, (bad, clip) in enumerate(SCRIPT):
        g = grad_at(k, bad)
        # xgrad
        scope = lib.xg_scope_begin()
        loss = lib.xg_sum_all(lib.xg_mul(xp, xg.tensor(g)))
        xg.check(lib.xg_backward(lib.xg_grad_scaler_scale(s, loss)) == 0,
                 "backward")
        if clip:
            xg.check(lib.xg_grad_scaler_unscale(s, opt) == 0, "unscale")
            xg.check(lib.xg_clip_grad_norm(C.byref(C.c_void_p(xp)), 1,
                                           max_norm, None) == 0, "clip")
        stepped = C.c_bool(False)
        xg.check(lib.xg_grad_scaler_step(s, opt, C.byref(stepped)) == 0,
                 "step")
        xg.check(lib.xg_grad_scaler_update(s) == 0, "update")
        lib.xg_optim_zero_grad(opt)
        lib.xg_scope_end(scope)
        # torch
        tloss = (tp * g).sum()
        (tloss * ts._scale).backward()
        if clip:
            ts.unscale_(topt)
            torch.nn.utils.clip_grad_norm_([tp], max_norm)
        ts.step(topt)
        found = sum(float(v) for v in
                    ts._per_optimizer_states[id(topt)]["found_inf_per_device"]
                    .values())
        ts.update()
        topt.zero_grad()
        want_scale = ts.get_scale()
        got_scale = lib.xg_grad_scaler_get_scale(s)
        got_p = xg.values(xp, (4,))
        if got_scale != want_scale or stepped.value != (found == 0) or \
                not torch.allclose(got_p, tp.detach(), rtol=1e-6, atol=1e-6):
            print("FAIL step %d (%s%s): scale %g want %g, stepped %s want "
                  "%s, params %s want %s" % (
                      k, bad or "clean", ", clipped" if clip else "",
                      got_scale, want_scale, stepped.value, found == 0,
                      got_p.tolist(), tp.detach().tolist()))
            ok = False
        if lib.xg_grad_scaler_growth_tracker(s) != ts._get_growth_tracker():
            print("FAIL step %d: growth tracker %d want %d" % (
                k, lib.xg_grad_scaler_growth_tracker(s),
                ts._get_growth_tracker()))
            ok = False
    lib.xg_optim_free(opt)
    lib.xg_tensor_free(xp)
    lib.xg_grad_scaler_free(s)
    return ok


XG_BF16 = 2  # enum xg_dtype


def values_f32(lib, xg, x, shape):
    n = lib.xg_tensor_numel(x)
    buf = (C.c_float * n)()
    xg.check(lib.xg_tensor_read_f32(x, buf, n) == 0, "read_f32")
    return torch.tensor(list(buf), dtype=torch.float32).reshape(shape)


def close(what, got, want, rtol, atol):
    if torch.allclose(got, want, rtol=rtol, atol=atol):
        return True
    print("FAIL %s: max difference %g" % (what, float((got - want).abs()
                                                      .max())))
    return False


def check_autocast(lib, xg):
    ok = True
    torch.manual_seed(0)
    x = torch.randn(8, 24)
    w = torch.randn(16, 24) * 0.3
    b = torch.randn(16)
    img = torch.randn(2, 3, 7, 7)
    cw = torch.randn(5, 3, 3, 3) * 0.3
    cb = torch.randn(5)
    labels = torch.tensor([0, 3, 5, 7, 1, 15, 2, 9])
    # torch
    tw, tcw = w.clone().requires_grad_(True), cw.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        ty = torch.nn.functional.linear(x, tw, b)
        tz = torch.nn.functional.conv2d(img, tcw, cb)
        tloss = torch.nn.functional.cross_entropy(ty, labels)
    (tloss + tz.float().sum() * 1e-3).backward()
    # xgrad: the same through its Linear layer's parameters
    lin = linear_with(lib, xg, w, b)
    xw = lib.xg_module_param(lin, 0, None)
    xcw = xg.tensor(cw, grad=True)
    scope = lib.xg_scope_begin()
    was = lib.xg_set_autocast(XG_BF16)
    xy = lib.xg_module_forward(lin, xg.tensor(x))
    xz = lib.xg_conv2d(xg.tensor(img), xcw, xg.tensor(cb), None)
    xl = lib.xg_cross_entropy(xy, xg.tensor(labels.int()))
    lib.xg_set_autocast(was)
    xg.check(xy and xz and xl, "forward under autocast")
    for what, t, want in [("linear", xy, XG_BF16), ("conv2d", xz, XG_BF16),
                          ("cross_entropy", xl, xc.XG_F32)]:
        if lib.xg_tensor_dtype(t) != want:
            print("FAIL %s: dtype %d, want %d" % (what, lib.xg_tensor_dtype(t),
                                                  want))
            ok = False
    if tloss.dtype != torch.float32 or ty.dtype != torch.bfloat16:
        print("FAIL torch's dtypes changed: %s %s" % (tloss.dtype, ty.dtype))
        ok = False
    # a bf16 unit in the last place of the largest value: 2^-7 of it
    ok &= close("linear", values_f32(lib, xg, xy, (8, 16)), ty.float(),
                2 ** -7, 2 ** -7 * float(ty.float().abs().max()))
    ok &= close("conv2d", values_f32(lib, xg, xz, tuple(tz.shape)),
                tz.float(), 2 ** -7, 2 ** -7 * float(tz.float().abs().max()))
    ok &= close("loss", values_f32(lib, xg, xl, ()), tloss, 1e-2, 1e-3)
    zsum = lib.xg_mul_scalar(lib.xg_sum_all(xz), C.c_float(1e-3))
    xg.check(lib.xg_backward(lib.xg_add(xl, zsum)) == 0, "backward")
    for what, p, tp, shape in [("linear weight", xw, tw, (16, 24)),
                               ("conv weight", xcw, tcw, (5, 3, 3, 3))]:
        g = lib.xg_tensor_grad(p)
        if lib.xg_tensor_dtype(g) != xc.XG_F32:
            print("FAIL %s: gradient not f32" % what)
            ok = False
        ok &= close(what + " gradient", values_f32(lib, xg, g, shape),
                    tp.grad, 2 ** -6, 2e-3 * float(tp.grad.abs().max()))
    lib.xg_scope_end(scope)
    lib.xg_tensor_free(xcw)
    lib.xg_module_free(lin)
    ok &= check_layer_norm(lib, xg)
    if ok:
        print("autocast: bf16 Linear, conv2d, layer norm and cross-entropy "
              "agree with torch.autocast")
    return ok


def check_layer_norm(lib, xg):
    """layer_norm -> Linear under bf16 autocast (see the module's doc)."""
    ok = True
    torch.manual_seed(1)
    x = torch.randn(8, 24) * 2 + 0.5
    lw = torch.rand(24) + 0.5
    lb = torch.randn(24) * 0.1
    w = torch.randn(16, 24) * 0.3
    b = torch.randn(16)
    tlw = lw.clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        tn = torch.nn.functional.layer_norm(x, (24,), tlw, lb, 1e-5)
        ty = torch.nn.functional.linear(tn, w, b)
    if tn.dtype != torch.float32 or ty.dtype != torch.bfloat16:
        print("FAIL torch's layer_norm/linear dtypes changed: %s %s"
              % (tn.dtype, ty.dtype))
        ok = False
    ty.float().sum().backward()
    xlw = xg.tensor(lw, grad=True)
    lin = linear_with(lib, xg, w, b)
    scope = lib.xg_scope_begin()
    was = lib.xg_set_autocast(XG_BF16)
    xn = lib.xg_layer_norm(xg.tensor(x), xlw, xg.tensor(lb), C.c_float(1e-5))
    xy = lib.xg_module_forward(lin, xn) if xn else None
    lib.xg_set_autocast(was)
    xg.check(xn and xy, "layer_norm under autocast")
    for what, t in [("layer_norm", xn), ("linear after it", xy)]:
        if lib.xg_tensor_dtype(t) != XG_BF16:
            print("FAIL %s: dtype %d, want bf16" % (what,
                                                    lib.xg_tensor_dtype(t)))
            ok = False
    want = tn.detach().bfloat16().float()
    ok &= close("layer_norm", values_f32(lib, xg, xn, (8, 24)), want, 0,
                2 ** -8 * float(want.abs().max()))
    ok &= close("linear after layer_norm", values_f32(lib, xg, xy, (8, 16)),
                ty.float(), 2 ** -7, 2 ** -7 * float(ty.float().abs().max()))
    xg.check(lib.xg_backward(lib.xg_sum_all(xy)) == 0, "backward")
    g = lib.xg_tensor_grad(xlw)
    if lib.xg_tensor_dtype(g) != xc.XG_F32:
        print("FAIL layer_norm weight: gradient not f32")
        ok = False
    ok &= close("layer_norm weight gradient", values_f32(lib, xg, g, (24,)),
                tlw.grad, 2 ** -6, 2e-3 * float(tlw.grad.abs().max()))
    lib.xg_scope_end(scope)
    lib.xg_tensor_free(xlw)
    lib.xg_module_free(lin)
    return ok


def xg_bytes(t):
    return C.create_string_buffer(struct.pack("<%df" % t.numel(),
                                              *t.flatten().tolist()))


def linear_with(lib, xg, w, b):
    """An xgrad Linear(24, 16) holding torch's weight w and bias b."""
    lin = lib.xg_linear(24, 16, True)
    xg.check(lin, "linear")
    for i, v in enumerate([w, b]):
        p = lib.xg_module_param(lin, i, None)
        xg.check(lib.xg_tensor_write(p, xg_bytes(v), 4 * v.numel()) == 0,
                 "write")
    return lin


def main():
    lib = xc.load(sys.argv[1], {
        "xg_grad_scaler_new": (P, [P]),
        "xg_grad_scaler_scale": (P, [P, P]),
        "xg_grad_scaler_unscale": (C.c_int, [P, P]),
        "xg_grad_scaler_step": (C.c_int, [P, P, P]),
        "xg_grad_scaler_update": (C.c_int, [P]),
        "xg_grad_scaler_get_scale": (C.c_float, [P]),
        "xg_grad_scaler_growth_tracker": (C.c_int64, [P]),
        "xg_grad_scaler_free": (None, [P]),
        "xg_optim_sgd": (P, [P, C.c_int, P]),
        "xg_optim_zero_grad": (None, [P]),
        "xg_optim_free": (None, [P]),
        "xg_clip_grad_norm": (C.c_int, [P, C.c_int, C.c_float, P]),
        "xg_sum_all": (P, [P]),
        "xg_mul": (P, [P, P]),
        "xg_scope_begin": (P, []),
        "xg_scope_end": (None, [P]),
        "xg_set_autocast": (C.c_int, [C.c_int]),
        "xg_linear": (P, [C.c_int64, C.c_int64, C.c_bool]),
        "xg_conv2d": (P, [P, P, P, P]),
        "xg_cross_entropy": (P, [P, P]),
        "xg_tensor_read_f32": (C.c_int, [P, P, C.c_size_t]),
        "xg_tensor_write": (C.c_int, [P, P, C.c_size_t]),
        "xg_mul_scalar": (P, [P, C.c_float]),
        "xg_add": (P, [P, P]),
        "xg_layer_norm": (P, [P, P, P, C.c_float]),
    })
    xg = Xgrad(lib)
    small = ScalerOptions(init_scale=1024.0, growth_factor=2.0,
                          backoff_factor=0.5, growth_interval=3)
    ok = run(lib, xg, small, dict(init_scale=1024.0, growth_factor=2.0,
                                  backoff_factor=0.5, growth_interval=3))
    # other factors: growth 4, backoff 0.25, interval 2
    odd = ScalerOptions(init_scale=3.0, growth_factor=4.0,
                        backoff_factor=0.25, growth_interval=2)
    ok &= run(lib, xg, odd, dict(init_scale=3.0, growth_factor=4.0,
                                 backoff_factor=0.25, growth_interval=2))
    ok &= run(lib, xg, None, {})  # both defaults
    if ok:
        print("grad scaler: %d steps x 3 runs agree with torch's GradScaler"
              % len(SCRIPT))
    ok &= check_autocast(lib, xg)
    lib.xg_shutdown()
    if not ok:
        sys.exit(1)


if __name__ == "__main__":
    main()
