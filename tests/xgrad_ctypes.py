"""What the checks that drive libxgrad through ctypes share
(tests/attention_torch.py, tests/layer_norm_torch.py,
tests/safetensors_torch.py): loading the library with the signatures of the
functions a check calls, and moving tensors between torch and xgrad.

Import it after torch (each check exits 77 without torch first).
"""
import ctypes as C
import struct
import sys

import torch

XG_F32, XG_I32 = 0, 1  # enum xg_dtype (api/xgrad.h)
P = C.c_void_p

# What Xgrad itself calls, and the tensor and module calls most checks
# make; load() adds them to every check's own.
COMMON_SIGS = {
    "xg_tensor_from_data": (P, [P, C.c_int, C.POINTER(C.c_int64), C.c_int]),
    "xg_tensor_read": (C.c_int, [P, P, C.c_size_t]),
    "xg_tensor_numel": (C.c_int64, [P]),
    "xg_tensor_dtype": (C.c_int, [P]),
    "xg_tensor_set_requires_grad": (C.c_int, [P, C.c_bool]),
    "xg_tensor_grad": (P, [P]),
    "xg_tensor_free": (None, [P]),
    "xg_backward": (C.c_int, [P]),
    "xg_module_forward": (P, [P, P]),
    "xg_module_param_count": (C.c_int, [P]),
    "xg_module_param": (P, [P, C.c_int, C.POINTER(C.c_char_p)]),
    "xg_module_save": (C.c_int, [P, C.c_char_p]),
    "xg_module_load": (C.c_int, [P, C.c_char_p]),
    "xg_module_free": (None, [P]),
    "xg_manual_seed": (None, [C.c_uint64]),
    "xg_last_error": (C.c_char_p, []),
    "xg_shutdown": (None, []),
}


def load(path, sigs):
    """The library at path with COMMON_SIGS and sigs, {name: (restype,
    argtypes)}, set on its functions."""
    lib = C.CDLL(path)
    for name, (res, args) in dict(COMMON_SIGS, **sigs).items():
        fn = getattr(lib, name)
        fn.restype, fn.argtypes = res, args
    return lib


class Xgrad:
    """A loaded library and tensors to and from torch; a failed call ends
    the check (sys.exit) with xg_last_error."""
    XG_F32, XG_I32 = XG_F32, XG_I32

    def __init__(self, lib):
        self.lib = lib

    def check(self, ok, what):
        if not ok:
            sys.exit("FAIL %s: %s" % (what, self.lib.xg_last_error().decode()))

    def tensor(self, t, grad=False):
        """A new tensor with t's values and shape: F32 from a floating
        point t (rounded to float32), I32 from an integer one; requiring
        grad when grad."""
        if t.is_floating_point():
            t, dtype, code = t.detach().float().contiguous(), XG_F32, "f"
        else:
            t, dtype, code = t.contiguous(), XG_I32, "i"
        buf = C.create_string_buffer(struct.pack("<%d%s" % (t.numel(), code),
                                                 *t.flatten().tolist()))
        shape = (C.c_int64 * t.dim())(*t.shape)
        x = self.lib.xg_tensor_from_data(buf, dtype, shape, t.dim())
        self.check(x, "tensor_from_data")
        if grad:
            self.check(self.lib.xg_tensor_set_requires_grad(x, True) == 0,
                       "set_requires_grad")
        return x

    def values(self, x, shape, dtype=None):
        """x's values as a torch tensor of this shape: float32 from F32,
        int32 from I32, or converted to dtype when given."""
        n = self.lib.xg_tensor_numel(x)
        buf = C.create_string_buffer(4 * n)
        self.check(self.lib.xg_tensor_read(x, buf, 4 * n) == 0, "read")
        f32 = self.lib.xg_tensor_dtype(x) == XG_F32
        vals = struct.unpack("<%d%s" % (n, "f" if f32 else "i"), buf.raw)
        if dtype is None:
            dtype = torch.float32 if f32 else torch.int32
        return torch.tensor(vals, dtype=dtype).reshape(shape)
