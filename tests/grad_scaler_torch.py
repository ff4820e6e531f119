#!/usr/bin/env python3
"""xgrad's loss scaler (xg_grad_scaler_*) against torch.cuda.amp.GradScaler.

Usage: grad_scaler_torch.py path/to/libxgrad.so   (meson test runs it)

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
unless the grown scale is inf). Exits 77 (skipped) without torch.
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
    lib.xg_shutdown()
    if not ok:
        sys.exit(1)
    print("grad scaler: %d steps x 3 runs agree with torch's GradScaler" %
          len(SCRIPT))


if __name__ == "__main__":
    main()
