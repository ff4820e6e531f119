#!/usr/bin/env python3
"""xgrad's model files against PyTorch (Debian's python3-torch).

Usage: safetensors_torch.py path/to/libxgrad.so   (meson test runs it)

Debian's torch comes without the safetensors package, so the format is
written and read here with struct + json, the way safetensors.torch does
(tensors sorted by name, header padded with spaces to a multiple of 8).
xgrad is driven through ctypes. Checked:
  1. a torch state_dict loads into the same xgrad model: equal parameters
     (bit for bit) and equal outputs;
  2. a model saved by xgrad loads into torch with load_state_dict(strict):
     equal parameters and outputs;
  3. an xgrad Adam checkpoint carries torch.optim.Adam's state: installed
     into torch, one more step gives the parameters xgrad computes;
  4. an I64 tensor written by torch loads into xgrad as I32;
  5. F16 and BF16 tensors written from torch load as F32 with the bits of
     torch's .float(): every one of the 65536 bit patterns of each
     (subnormals, infinities, NaNs), and values made by torch;
  6. the same tensors load as XG_F16 / XG_BF16 with the stored bits
     (xg_safetensors_tensor_as_stored), and saved by xgrad in their own
     dtype, torch reads them back bit for bit as float16 / bfloat16.
Exits 77 (skipped) when torch is not installed.
"""
import collections
import ctypes as C
import json
import os
import struct
import sys
import tempfile

try:
    import torch
except ImportError:
    print("python3-torch is not installed: skipped")
    sys.exit(77)

import xgrad_ctypes as xc  # noqa: E402 (same folder)

# struct codes. Both 16-bit floats travel as their raw bits ("h" on an int16
# view of the tensor): BF16 has no struct code, and "e" would go through
# Python floats and lose NaN payloads.
FORMATS = {"F32": ("f", torch.float32), "I64": ("q", torch.int64),
           "I32": ("i", torch.int32), "F16": ("e", torch.float16),
           "BF16": ("h", torch.bfloat16)}
DTYPE_NAMES = {torch.float32: "F32", torch.int64: "I64", torch.int32: "I32",
               torch.float16: "F16", torch.bfloat16: "BF16"}


def st_pack(t, code):
    """t's values (contiguous) as little-endian bytes."""
    if t.dtype in (torch.float16, torch.bfloat16):
        t, code = t.view(torch.int16), "h"
    return struct.pack("<%d%s" % (t.numel(), code), *t.flatten().tolist())


def st_unpack(blob, dtype, code, shape):
    half = dtype in (torch.float16, torch.bfloat16)
    code = "h" if half else code
    count = len(blob) // struct.calcsize(code)
    values = struct.unpack("<%d%s" % (count, code), blob)
    if half:
        return torch.tensor(values, dtype=torch.int16).view(dtype).reshape(
            shape)
    return torch.tensor(values, dtype=dtype).reshape(shape)


def st_write(path, tensors, metadata=None):
    header, blobs, at = {}, [], 0
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        code = FORMATS[DTYPE_NAMES[t.dtype]][0]
        blob = st_pack(t, code)
        header[name] = {"dtype": DTYPE_NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [at, at + len(blob)]}
        blobs.append(blob)
        at += len(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def st_read(path):
    """The tensors (in file order) and metadata; checks the layout."""
    raw = open(path, "rb").read()
    (n,) = struct.unpack("<Q", raw[:8])
    assert n % 8 == 0 and raw[8:9] == b"{", "header length or start"
    header = json.loads(raw[8:8 + n].decode())
    metadata = header.pop("__metadata__", {})
    data, at = raw[8 + n:], 0
    tensors = collections.OrderedDict()
    for name, e in sorted(header.items(), key=lambda kv: kv[1]["data_offsets"]):
        begin, end = e["data_offsets"]
        assert begin == at, "hole or overlap before " + name
        code, dtype = FORMATS[e["dtype"]]
        tensors[name] = st_unpack(data[begin:end], dtype, code, e["shape"])
        at = end
    assert at == len(data), "bytes after the last tensor"
    return tensors, metadata


class TrainState(C.Structure):
    _fields_ = [("epoch", C.c_int64), ("step", C.c_int64),
                ("rng_seed", C.c_uint64), ("rng_offset", C.c_uint64)]


def load_xgrad(path):
    P = xc.P
    return xc.load(path, {
        "xg_sequential": (P, []),
        "xg_linear": (P, [C.c_int64, C.c_int64, C.c_bool]),
        "xg_relu_layer": (P, []),
        "xg_sequential_add": (C.c_int, [P, C.c_char_p, P]),
        "xg_cross_entropy": (P, [P, P]),
        "xg_optim_for_module": (P, [P, C.c_char_p, C.c_float]),
        "xg_optim_zero_grad": (None, [P]),
        "xg_optim_step": (C.c_int, [P]),
        "xg_optim_free": (None, [P]),
        "xg_checkpoint_save": (C.c_int, [C.c_char_p, P, P,
                                         C.POINTER(TrainState),
                                         C.POINTER(C.c_char_p)]),
        "xg_safetensors_open": (C.c_int, [C.c_char_p, C.POINTER(P)]),
        "xg_safetensors_tensor": (P, [P, C.c_char_p]),
        "xg_safetensors_tensor_as_stored": (P, [P, C.c_char_p]),
        "xg_safetensors_close": (None, [P]),
        "xg_safetensors_writer_new": (P, []),
        "xg_safetensors_writer_add": (C.c_int, [P, C.c_char_p, P]),
        "xg_safetensors_writer_save": (C.c_int, [P, C.c_char_p]),
        "xg_safetensors_writer_free": (None, [P]),
    })


class Xgrad(xc.Xgrad):
    def mlp(self, seed):
        """fc1: Linear(4, 8), ReLU, fc2: Linear(8, 3), as torch_mlp()."""
        lib = self.lib
        lib.xg_manual_seed(seed)
        m = lib.xg_sequential()
        self.check(lib.xg_sequential_add(m, b"fc1", lib.xg_linear(4, 8, True)) == 0, "add")
        self.check(lib.xg_sequential_add(m, None, lib.xg_relu_layer()) == 0, "add")
        self.check(lib.xg_sequential_add(m, b"fc2", lib.xg_linear(8, 3, True)) == 0, "add")
        return m

    def params(self, m):
        out = collections.OrderedDict()
        for i in range(self.lib.xg_module_param_count(m)):
            name = C.c_char_p()
            p = self.lib.xg_module_param(m, i, C.byref(name))
            out[name.value.decode()] = p
        return out

    def forward(self, m, x):
        xt = self.tensor(x)
        y = self.lib.xg_module_forward(m, xt)
        self.check(y, "forward")
        out = self.values(y, (x.shape[0], 3))
        self.lib.xg_tensor_free(y)
        self.lib.xg_tensor_free(xt)
        return out


def torch_mlp():
    return torch.nn.Sequential(collections.OrderedDict(
        fc1=torch.nn.Linear(4, 8), act=torch.nn.ReLU(),
        fc2=torch.nn.Linear(8, 3)))


def same_params(xg, m, sd, what):
    for name, p in xg.params(m).items():
        got = xg.values(p, sd[name].shape)
        assert torch.equal(got, sd[name]), "%s: %s differs" % (what, name)


def torch_to_xgrad(xg, folder, x):
    torch.manual_seed(0)
    net = torch_mlp()
    path = os.path.join(folder, "torch.safetensors")
    st_write(path, net.state_dict(), {"format": "pt"})
    m = xg.mlp(123)
    xg.check(xg.lib.xg_module_load(m, path.encode()) == 0, "module_load")
    same_params(xg, m, net.state_dict(), "torch -> xgrad")
    torch.testing.assert_close(xg.forward(m, x), net(x).detach(),
                               atol=1e-6, rtol=1e-5)
    xg.lib.xg_module_free(m)
    print("ok: a torch state_dict loads into xgrad")


def xgrad_to_torch(xg, folder, x):
    m = xg.mlp(7)
    path = os.path.join(folder, "xgrad.safetensors")
    xg.check(xg.lib.xg_module_save(m, path.encode()) == 0, "module_save")
    tensors, metadata = st_read(path)
    assert metadata == {"format": "pt"}, metadata
    net = torch_mlp()
    net.load_state_dict(tensors, strict=True)
    same_params(xg, m, net.state_dict(), "xgrad -> torch")
    torch.testing.assert_close(net(x).detach(), xg.forward(m, x),
                               atol=1e-6, rtol=1e-5)
    xg.lib.xg_module_free(m)
    print("ok: an xgrad model loads into torch (strict)")


def xgrad_step(xg, m, opt, x, y):
    lib = xg.lib
    xt, yt = xg.tensor(x), xg.tensor(y)
    lib.xg_optim_zero_grad(opt)
    logits = lib.xg_module_forward(m, xt)
    loss = lib.xg_cross_entropy(logits, yt)
    xg.check(loss and lib.xg_backward(loss) == 0, "backward")
    xg.check(lib.xg_optim_step(opt) == 0, "step")
    for t in (loss, logits, xt, yt):
        lib.xg_tensor_free(t)


def adam_state_matches_torch(xg, folder, x, y):
    lib = xg.lib
    m = xg.mlp(11)
    opt = lib.xg_optim_for_module(m, b"adam", C.c_float(0.01))
    for _ in range(3):
        xgrad_step(xg, m, opt, x, y)
    path = os.path.join(folder, "ckpt.safetensors")
    state = TrainState(1, 3, 0, 0)
    xg.check(lib.xg_checkpoint_save(path.encode(), m, opt, C.byref(state),
                                    None) == 0, "checkpoint_save")
    tensors, metadata = st_read(path)
    assert metadata["format"] == "xgrad-checkpoint-1", metadata
    net = torch_mlp()
    net.load_state_dict({k: v for k, v in tensors.items()
                         if not k.startswith("optim.")}, strict=True)
    topt = torch.optim.Adam(net.parameters(), lr=float(metadata["lr"]))
    for name, p in net.named_parameters():
        step = tensors["optim.%s.step" % name]
        assert step.dtype == torch.int64 and step.dim() == 0
        topt.state[p] = {"step": torch.tensor(float(step)),
                         "exp_avg": tensors["optim.%s.exp_avg" % name],
                         "exp_avg_sq": tensors["optim.%s.exp_avg_sq" % name]}
    topt.zero_grad()
    torch.nn.functional.cross_entropy(net(x), y.long()).backward()
    topt.step()
    xgrad_step(xg, m, opt, x, y)
    for name, p in xg.params(m).items():
        torch.testing.assert_close(xg.values(p, tuple(net.state_dict()[name].shape)),
                                   net.state_dict()[name], atol=1e-6, rtol=1e-5)
    lib.xg_optim_free(opt)
    lib.xg_module_free(m)
    print("ok: xgrad's Adam checkpoint continues in torch.optim.Adam")


def int64_loads_as_int32(xg, folder):
    path = os.path.join(folder, "labels.safetensors")
    labels = torch.tensor([[3, -1], [7, 2 ** 31 - 1]], dtype=torch.int64)
    st_write(path, {"labels": labels})
    st = C.c_void_p()
    xg.check(xg.lib.xg_safetensors_open(path.encode(), C.byref(st)) == 0, "open")
    t = xg.lib.xg_safetensors_tensor(st, b"labels")
    xg.check(t, "safetensors_tensor")
    assert torch.equal(xg.values(t, (2, 2)), labels.int())
    xg.lib.xg_tensor_free(t)
    xg.lib.xg_safetensors_close(st)
    print("ok: torch int64 loads as I32")


def float_bits(xg, x):
    """The raw bits of an F32 tensor (NaN payloads untouched)."""
    n = xg.lib.xg_tensor_numel(x)
    buf = C.create_string_buffer(4 * n)
    xg.check(xg.lib.xg_tensor_read(x, buf, 4 * n) == 0, "read")
    return torch.tensor(struct.unpack("<%di" % n, buf.raw), dtype=torch.int32)


def halves_load_exactly(xg, folder):
    path = os.path.join(folder, "halves.safetensors")
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    made = torch.tensor([1.0, -2.5, 1e-7, -6e-5, 65504.0, 1e30, -0.0,
                         float("inf"), float("-inf"), float("nan")])
    tensors = {"f16_all": every.view(torch.float16).reshape(256, 256),
               "bf16_all": every.view(torch.bfloat16).reshape(2, 128, 256),
               "f16_made": made.half(), "bf16_made": made.bfloat16(),
               "bf16_tiny": torch.tensor([1e-39, -9.2e-41, 3e38],
                                         dtype=torch.bfloat16)}
    st_write(path, tensors)
    st = C.c_void_p()
    xg.check(xg.lib.xg_safetensors_open(path.encode(), C.byref(st)) == 0, "open")
    for name, t in sorted(tensors.items()):
        x = xg.lib.xg_safetensors_tensor(st, name.encode())
        xg.check(x, "safetensors_tensor " + name)
        assert xg.lib.xg_tensor_dtype(x) == Xgrad.XG_F32, name
        want = t.float().flatten().view(torch.int32)
        got = float_bits(xg, x)
        bad = (got != want).nonzero().flatten()
        assert bad.numel() == 0, "%s: %d values differ from torch's .float()," \
            " first at %d: xgrad %08x torch %08x" % (
                name, bad.numel(), bad[0], got[bad[0]].item() & 0xffffffff,
                want[bad[0]].item() & 0xffffffff)
        xg.lib.xg_tensor_free(x)
    # the special values are there: subnormal halves, infinities, NaNs
    f = tensors["f16_all"].float()
    assert (f.abs() < 6.2e-5).sum() > 1000 and f.isinf().sum() == 2
    assert f.isnan().sum() == 2046 and tensors["bf16_tiny"].float()[0] != 0
    xg.lib.xg_safetensors_close(st)
    print("ok: F16 and BF16 load as torch's .float(), all 2 x 65536 patterns")


XG_BF16, XG_F16 = 2, 3  # enum xg_dtype (api/xgrad.h)


def halves_round_trip(xg, folder):
    path = os.path.join(folder, "halves16.safetensors")
    every = torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16)
    made = torch.randn(3, 5) * 100
    tensors = {"f16_all": every.view(torch.float16).reshape(256, 256),
               "bf16_all": every.view(torch.bfloat16).reshape(2, 128, 256),
               "f16_made": made.half(), "bf16_made": made.bfloat16()}
    st_write(path, tensors)
    st = C.c_void_p()
    lib = xg.lib
    xg.check(lib.xg_safetensors_open(path.encode(), C.byref(st)) == 0, "open")
    w = lib.xg_safetensors_writer_new()
    loaded = []
    for name, t in sorted(tensors.items()):
        x = lib.xg_safetensors_tensor_as_stored(st, name.encode())
        xg.check(x, "safetensors_tensor_as_stored " + name)
        want_dtype = XG_F16 if t.dtype == torch.float16 else XG_BF16
        assert lib.xg_tensor_dtype(x) == want_dtype, name
        n = lib.xg_tensor_numel(x)
        buf = C.create_string_buffer(2 * n)
        xg.check(lib.xg_tensor_read(x, buf, 2 * n) == 0, "read " + name)
        got = torch.tensor(struct.unpack("<%dh" % n, buf.raw),
                           dtype=torch.int16)
        assert torch.equal(got, t.flatten().view(torch.int16)), name
        xg.check(lib.xg_safetensors_writer_add(w, name.encode(), x) == 0,
                 "writer_add " + name)
        loaded.append(x)
    out = os.path.join(folder, "saved16.safetensors")
    xg.check(lib.xg_safetensors_writer_save(w, out.encode()) == 0, "save")
    lib.xg_safetensors_writer_free(w)
    for x in loaded:
        lib.xg_tensor_free(x)
    lib.xg_safetensors_close(st)
    back, _ = st_read(out)
    raw = open(out, "rb").read()
    header = json.loads(raw[8:8 + struct.unpack("<Q", raw[:8])[0]])
    for name, t in tensors.items():
        assert header[name]["dtype"] == DTYPE_NAMES[t.dtype], name
        assert back[name].dtype == t.dtype, name
        assert torch.equal(back[name].view(torch.int16),
                           t.view(torch.int16)), name + " bits"
    print("ok: F16 and BF16 load as XG_F16 / XG_BF16 and save back to "
          "torch bit for bit")


def main():
    xg = Xgrad(load_xgrad(sys.argv[1]))
    torch.manual_seed(1)
    x = torch.randn(5, 4)
    y = torch.tensor([0, 1, 2, 1, 0], dtype=torch.int32)
    with tempfile.TemporaryDirectory() as folder:
        torch_to_xgrad(xg, folder, x)
        xgrad_to_torch(xg, folder, x)
        adam_state_matches_torch(xg, folder, x, y)
        int64_loads_as_int32(xg, folder)
        halves_load_exactly(xg, folder)
        halves_round_trip(xg, folder)
    xg.lib.xg_shutdown()


if __name__ == "__main__":
    main()
