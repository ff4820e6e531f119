#!/usr/bin/env python3
"""xgrad's host conversions between f32 and bf16 / f16 against PyTorch.

Usage: half_torch.py path/to/libxgrad.so   (meson test runs it)

xg_f32_to_bf16, xg_f32_to_f16, xg_bf16_to_f32 and xg_f16_to_f32 (through
ctypes, on torch tensors' memory) must give torch's bits (tensor.to(dtype)
viewed as int16) for:
  1. every 16-bit pattern, widened to f32;
  2. around every 16-bit value v: v itself in f32, one f32 ulp either side,
     the midpoint between v and the next value (a tie: to even), and one
     f32 ulp either side of the midpoint; this covers rounding, overflow to
     Inf (and values just below it), subnormals and signed zeros;
  3. 2^20 random f32 bit patterns, and special values.
NaN: torch's CPU conversions drop the payload (and, for bf16, the sign);
xgrad keeps the sign and the payload's top bits (what the x86 conversion
instructions do), so a NaN must give a quiet NaN of the same sign, with the
payload's top bits, wherever torch gives a NaN.
Exits 77 (skipped) when torch is not installed.
"""
import ctypes as C
import sys

try:
    import torch
except ImportError:
    print("python3-torch is not installed: skipped")
    sys.exit(77)

P = C.c_void_p


def load(path):
    lib = C.CDLL(path)
    for name in ("xg_f32_to_bf16", "xg_bf16_to_f32", "xg_f32_to_f16",
                 "xg_f16_to_f32"):
        getattr(lib, name).restype = None
        getattr(lib, name).argtypes = [P, P, C.c_size_t]
    return lib


def narrow(lib, bits32, dtype):
    """xgrad's 16-bit patterns (int32 tensor, 0..65535) of the f32 values
    with these bit patterns."""
    x = bits32.to(torch.int32).contiguous()
    out = torch.empty(x.numel(), dtype=torch.int16)
    fn = lib.xg_f32_to_bf16 if dtype == torch.bfloat16 else lib.xg_f32_to_f16
    fn(x.data_ptr(), out.data_ptr(), x.numel())
    return out.to(torch.int32) & 0xffff


def widen(lib, bits16, dtype):
    """xgrad's f32 bit patterns (int64 tensor) of these 16-bit patterns."""
    h = bits16.to(torch.int16).contiguous()
    out = torch.empty(h.numel(), dtype=torch.int32)
    fn = lib.xg_bf16_to_f32 if dtype == torch.bfloat16 else lib.xg_f16_to_f32
    fn(h.data_ptr(), out.data_ptr(), h.numel())
    return out.to(torch.int64) & 0xffffffff


def torch_narrow(bits32, dtype):
    f = bits32.to(torch.int32).view(torch.float32)
    return f.to(dtype).view(torch.int16).to(torch.int32) & 0xffff


def is_nan16(h, dtype):
    exp_mask, mant_mask = ((0x7f80, 0x7f) if dtype == torch.bfloat16
                           else (0x7c00, 0x3ff))
    return ((h & exp_mask) == exp_mask) & ((h & mant_mask) != 0)


failures = []


def expect_same(what, got, want, inputs):
    bad = (got != want).nonzero().flatten()
    if bad.numel():
        i = bad[0].item()
        failures.append("%s: %d of %d differ, first input 0x%x: got 0x%x, "
                        "torch 0x%x" % (what, bad.numel(), got.numel(),
                                        inputs[i].item(), got[i].item(),
                                        want[i].item()))
    print("%s: %d values checked" % (what, got.numel()))


def check_narrow(lib, bits32, dtype, what):
    bits32 = bits32 & 0xffffffff
    got = narrow(lib, bits32, dtype)
    want = torch_narrow(bits32, dtype)
    nan_in = ((bits32 & 0x7fffffff) > 0x7f800000)
    ok_nan = is_nan16(want, dtype)
    if not torch.equal(nan_in, ok_nan):
        failures.append("%s: torch's NaNs are not the inputs' NaNs" % what)
    # NaN: quiet, same sign, the payload's top bits.
    shift, quiet = (16, 0x40) if dtype == torch.bfloat16 else (13, 0x200)
    mant = 0x7f if dtype == torch.bfloat16 else 0x3ff
    nan_want = (((bits32 >> 16) & 0x8000) | (0x7f80 if dtype ==
                torch.bfloat16 else 0x7c00) | quiet |
                ((bits32 & 0x7fffff) >> shift) & mant)
    want = torch.where(nan_in, nan_want, want)
    expect_same(what, got, want, bits32)


def main():
    if len(sys.argv) != 2:
        sys.exit("usage: half_torch.py libxgrad.so")
    lib = load(sys.argv[1])
    all16 = torch.arange(65536, dtype=torch.int64)
    for dtype, name in ((torch.bfloat16, "bf16"), (torch.float16, "f16")):
        # 1. widening, every pattern
        got = widen(lib, all16, dtype)
        ref = all16.to(torch.int16).view(dtype).to(torch.float32)
        want = ref.view(torch.int32).to(torch.int64) & 0xffffffff
        if dtype == torch.float16:
            # torch widens a NaN to a quiet NaN with its sign and payload,
            # as xgrad does; checked bit for bit
            pass
        expect_same("%s -> f32 (all 65536)" % name, got, want, all16)
        # 2. every value, its neighbours and the midpoints to the next
        finite = ref[torch.isfinite(ref)].to(torch.float64)
        vals = finite.to(torch.float32)
        nxt = torch.nextafter(finite, torch.tensor(float("inf"),
                                                   dtype=torch.float64))
        # the next 16-bit value up, in f64 (exact); the largest finite's
        # "next" is the overflow threshold's other side: 2 * max - prev
        up16 = (all16.to(torch.int16).view(dtype).to(torch.float64))
        del nxt
        pos = up16[torch.isfinite(up16) & (up16 >= 0)]
        pos = torch.sort(pos).values
        mids = (pos[:-1] + pos[1:]) / 2  # exact in f32 (one more bit)
        big = pos[-1]
        ulp = big - pos[-2]
        mids = torch.cat([mids, (big + ulp / 2).reshape(1)])  # overflow tie
        points = torch.cat([vals.to(torch.float64), mids, -mids])
        p32 = points.to(torch.float32)
        b = p32.view(torch.int32).to(torch.int64)
        cand = torch.cat([b, b - 1, b + 1]) & 0xffffffff
        cand = cand[(cand & 0x7fffffff) <= 0x7f800000]
        check_narrow(lib, cand, dtype, "f32 -> %s (ties, neighbours)" % name)
        # 3. random patterns and special values
        g = torch.Generator().manual_seed(14)
        rnd = torch.randint(0, 1 << 32, (1 << 20,), generator=g,
                            dtype=torch.int64)
        special = torch.tensor([
            0x00000000, 0x80000000, 0x7f800000, 0xff800000,  # 0, Inf
            0x7fc00000, 0xffc00000, 0x7f800001, 0xff800001,  # NaNs
            0x7fa00000, 0xffbfffff, 0x7fffffff, 0xffc12345,
            0x00000001, 0x807fffff, 0x00400000, 0x00012345,  # subnormals
            0x477fe000, 0x477fefff, 0x477ff000, 0x477ff001,  # f16 max
            0xc77fe000, 0xc77ff000, 0x38800000, 0x387fffff,  # min normal
            0x33800000, 0x33000000, 0x33000001, 0xb3000001,  # min sub
            0x7f7fffff, 0xff7fffff, 0x7f7f8000, 0x7f7f7fff,  # f32 max
            0x3f808000, 0x3f818000, 0x3f808001, 0x3f80ffff,  # bf16 ties
        ], dtype=torch.int64)
        check_narrow(lib, torch.cat([special, rnd]), dtype,
                     "f32 -> %s (special, 2^20 random)" % name)
        # odd lengths and offsets: the vector loops' tails
        for n in (1, 7, 8, 9, 15, 16, 17, 33):
            for off in (0, 1, 3):
                seg = rnd[off:off + n]
                check_narrow(lib, seg, dtype, "f32 -> %s n=%d off=%d" %
                             (name, n, off))
    for f in failures:
        print("FAIL", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
