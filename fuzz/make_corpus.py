#!/usr/bin/env python3
"""Writes the seed corpus of fuzz_safetensors into fuzz/corpus/.

Small files, valid and invalid, written from the format's description
(8-byte little-endian header length, JSON header padded with spaces to a
multiple of 8, raw little-endian data). The valid checkpoints fit the
harness's model: "fc" = Linear(2, 2). Run again after editing; the output
is deterministic.
"""
import json
import os
import struct

HERE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus")
SIZES = {"F32": 4, "I32": 4, "I64": 8, "F16": 2, "BF16": 2, "U8": 1,
         "BOOL": 1, "F64": 8, "I8": 1, "I16": 2}


def pack(tensors, metadata=None, pad=True):
    """tensors: [(name, dtype, shape, bytes)] in data order."""
    header, data = {}, b""
    if metadata is not None:
        header["__metadata__"] = metadata
    for name, dtype, shape, blob in tensors:
        header[name] = {"dtype": dtype, "shape": shape,
                        "data_offsets": [len(data), len(data) + len(blob)]}
        data += blob
    return raw(json.dumps(header, separators=(",", ":")), data, pad)


def raw(text, data=b"", pad=True):
    text = text.encode()
    if pad:
        text += b" " * (-len(text) % 8)
    return struct.pack("<Q", len(text)) + text + data


def f32(*v):
    return struct.pack("<%df" % len(v), *v)


def i64(*v):
    return struct.pack("<%dq" % len(v), *v)


def fc(w=(1.0, 2.0, 3.0, 4.0), b=(0.5, -0.5)):
    return [("fc.weight", "F32", [2, 2], f32(*w)), ("fc.bias", "F32", [2], f32(*b))]


def f16(*v):
    return struct.pack("<%de" % len(v), *v)


def bf16(*v):
    """The upper halves of the floats' bits (exact for these values)."""
    return b"".join(struct.pack("<f", x)[2:] for x in v)


def gpt2(prefix="transformer.", dtypes=("F32",), extra=()):
    """The harness's tiny GPT-2 (vocab 4, context 4, 1 layer, 2 wide) as
    a GPT2LMHeadModel state_dict; the weights cycle through `dtypes`."""
    c, shapes = 2, [("wte.weight", [4, 2]), ("wpe.weight", [4, 2])]
    shapes += [("h.0.ln_1.weight", [c]), ("h.0.ln_1.bias", [c]),
               ("h.0.attn.c_attn.weight", [c, 3 * c]),
               ("h.0.attn.c_attn.bias", [3 * c]),
               ("h.0.attn.c_proj.weight", [c, c]),
               ("h.0.attn.c_proj.bias", [c]),
               ("h.0.ln_2.weight", [c]), ("h.0.ln_2.bias", [c]),
               ("h.0.mlp.c_fc.weight", [c, 4 * c]),
               ("h.0.mlp.c_fc.bias", [4 * c]),
               ("h.0.mlp.c_proj.weight", [4 * c, c]),
               ("h.0.mlp.c_proj.bias", [c]),
               ("ln_f.weight", [c]), ("ln_f.bias", [c])]
    out = []
    for i, (name, shape) in enumerate(shapes):
        dtype = dtypes[i % len(dtypes)]
        n = shape[0] * (shape[1] if len(shape) > 1 else 1)
        values = [0.25 * ((i + k) % 7 - 3) for k in range(n)]
        blob = {"F32": f32, "F16": f16, "BF16": bf16}[dtype](*values)
        out.append((prefix + name, dtype, shape, blob))
    return out + list(extra)


def checkpoint(kind):
    meta = {"format": "xgrad-checkpoint-1", "optimizer": kind, "lr": "0.00999999978",
            "optimizer_steps": "3", "epoch": "1", "step": "3", "rng_seed": "42",
            "rng_offset": "7"}
    state = []
    for name, shape, n in (("fc.weight", [2, 2], 4), ("fc.bias", [2], 2)):
        state.append(("optim.%s.step" % name, "I64", [], i64(3)))
        if kind == "sgd":
            state.append(("optim.%s.momentum_buffer" % name, "F32", shape, f32(*[0.1] * n)))
        else:
            state.append(("optim.%s.exp_avg" % name, "F32", shape, f32(*[0.1] * n)))
            state.append(("optim.%s.exp_avg_sq" % name, "F32", shape, f32(*[0.01] * n)))
    return pack(fc() + state, meta)


def seeds():
    t4 = '"t":{"dtype":"F32","shape":[1],"data_offsets":%s}'
    yield "valid_module", pack(fc(), {"format": "pt"})
    yield "valid_empty", pack([])
    yield "valid_ckpt_adam", checkpoint("adam")
    yield "valid_ckpt_adamw", checkpoint("adamw")
    yield "valid_ckpt_sgd", checkpoint("sgd")
    yield "valid_dtypes", pack([
        ("i64", "I64", [3], i64(1, -2, 3)), ("big", "I64", [], i64(2 ** 40)),
        ("i32", "I32", [2], struct.pack("<2i", 7, -8)),
        ("half", "F16", [2], b"\x00\x3c\x00\xc0"), ("mask", "BOOL", [3], b"\1\0\1"),
        ("empty", "F32", [0, 3], b""), ("scalar", "F32", [], f32(2.5)),
        ("u8", "U8", [1, 1, 1, 1, 1, 1], b"\x07")], {"k": "v"})
    # 16-bit floats: zeros, subnormals, the largest, infinities, NaNs
    yield "valid_halves", pack([
        ("f16", "F16", [8], b"\x00\x80\x01\x00\xff\x03\xff\x7b\x00\x7c"
                            b"\x00\xfc\x00\x7e\x01\x7c"),
        ("bf16", "BF16", [2, 4], b"\x00\x80\x01\x00\x7f\x00\x7f\x7f"
                                 b"\x80\x7f\x80\xff\xc0\x7f\x81\x7f")])
    yield "valid_gpt2", pack(gpt2(), {"format": "pt"})
    yield "valid_gpt2_halves", pack(gpt2("", ("F16", "BF16", "F32"), [
        ("h.0.attn.bias", "F32", [1, 1, 4, 4], f32(*[1.0] * 16)),
        ("h.0.attn.masked_bias", "F32", [], f32(-1e4))]))
    tied = gpt2()
    yield "valid_gpt2_lm_head", pack(tied + [("lm_head.weight",) + tied[0][1:]])
    yield "bad_gpt2_shape", pack(gpt2()[:2] + [("transformer.h.0.ln_1.weight",
                                                 "F32", [3], f32(1, 1, 1))]
                                 + gpt2()[3:])
    yield "bad_reversed", raw("{%s}" % (t4 % "[4,0]"), bytes(4))
    yield "bad_hole", raw('{%s,"u":{"dtype":"F32","shape":[1],"data_offsets":[8,12]}}'
                          % (t4 % "[0,4]"), bytes(12))
    yield "bad_overlap", raw('{%s,"u":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}'
                             % (t4 % "[0,4]"), bytes(8))
    yield "bad_trailing", raw("{%s}" % (t4 % "[0,4]"), bytes(9))
    yield "bad_truncated", raw("{%s}" % (t4 % "[0,4]"), bytes(2))
    yield "bad_dtype", raw('{"t":{"dtype":"F17","shape":[1],"data_offsets":[0,4]}}', bytes(4))
    yield "bad_duplicate", raw("{%s,%s}" % (t4 % "[0,4]", t4 % "[0,4]"), bytes(4))
    yield "bad_nesting", raw('{"__metadata__":{"a":' + "[" * 40 + "]" * 40 + "}}")
    yield "bad_header_length", struct.pack("<Q", 2 ** 40) + b"{}"
    yield "bad_shape", raw('{"t":{"dtype":"F32","shape":[-1,4294967296],'
                           '"data_offsets":[0,4]}}', bytes(4))
    yield "bad_ckpt_shape", pack([("fc.weight", "F32", [4], f32(1, 2, 3, 4)),
                                  ("fc.bias", "F32", [2], f32(0, 0))],
                                 {"format": "xgrad-checkpoint-1", "optimizer": "adam"})


def main():
    os.makedirs(HERE, exist_ok=True)
    for name, blob in seeds():
        with open(os.path.join(HERE, name + ".safetensors"), "wb") as f:
            f.write(blob)


if __name__ == "__main__":
    main()
