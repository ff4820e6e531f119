#!/usr/bin/env python3
"""Modules defined in C (tests/residual_model.h) against the same network
written with torch.nn (Debian's python3-torch).

Usage: modules_torch.py path/to/modules_export   (meson test runs it)

Checked:
  1. naming and order: the parameter and buffer names xgrad enumerates are
     torch's named_parameters() and named_buffers(), in the same order;
  2. a model trained and saved by xgrad (xg_module_save) loads into the
     torch module with load_state_dict(strict=True) and gives xgrad's
     outputs on the same input (within 1e-5);
  3. a torch state_dict loads into the C model (xg_module_load), which
     then gives torch's outputs.
Exits 77 (skipped) when torch is not installed.
"""
import collections
import os
import subprocess
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_torch as st  # noqa: E402  (exits 77 without torch)
import torch  # noqa: E402

IN, HID, OUT = 4, 8, 3


class ResidualBlock(torch.nn.Module):
    def __init__(self, h):
        super().__init__()
        self.fc1 = torch.nn.Linear(h, 2 * h)
        self.fc2 = torch.nn.Linear(2 * h, h)

    def forward(self, x):
        return x + self.fc2(torch.relu(self.fc1(x)))


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("in_mean", torch.zeros(IN))
        self.transformer = torch.nn.ModuleDict(collections.OrderedDict(
            inp=torch.nn.Linear(IN, HID),
            h=torch.nn.ModuleList([ResidualBlock(HID), ResidualBlock(HID)])))
        self.head = torch.nn.Sequential(collections.OrderedDict(
            act=torch.nn.ReLU(), out=torch.nn.Linear(HID, OUT)))
        self.logit_scale = torch.nn.Parameter(torch.ones(1))

    def forward(self, x):
        h = self.transformer.inp(x - self.in_mean)
        for block in self.transformer.h:
            h = block(h)
        return self.head(h) * self.logit_scale


def run(exe, *args):
    done = subprocess.run([exe] + list(args), capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit("FAIL %s %s: %s" % (exe, " ".join(args), done.stderr))


def names_match(meta):
    net = Net()
    for kind, ours, theirs in (
            ("parameters", meta["params"].split(),
             [n for n, _ in net.named_parameters()]),
            ("buffers", meta["buffers"].split(),
             [n for n, _ in net.named_buffers()])):
        assert ours == theirs, "%s: xgrad %s, torch %s" % (kind, ours, theirs)
    print("ok: names and order match named_parameters / named_buffers (%d)"
          % len(meta["params"].split()))


def xgrad_to_torch(folder):
    tensors, meta = st.st_read(os.path.join(folder, "io.safetensors"))
    names_match(meta)
    assert float(meta["loss_last"]) < float(meta["loss_first"]), meta
    model, _ = st.st_read(os.path.join(folder, "model.safetensors"))
    net = Net()
    net.load_state_dict(model, strict=True)
    net.eval()
    with torch.no_grad():
        want = net(tensors["x"])
    torch.testing.assert_close(tensors["y"], want, atol=1e-5, rtol=0)
    print("ok: a model trained and saved by xgrad loads into torch (strict) "
          "and gives its outputs; loss %s -> %s"
          % (meta["loss_first"], meta["loss_last"]))
    return tensors["x"]


def torch_to_xgrad(exe, folder, x):
    torch.manual_seed(4)
    net = Net()
    with torch.no_grad():
        net.in_mean.copy_(torch.randn(IN))
        net.logit_scale.fill_(1.5)
    net.eval()
    model = os.path.join(folder, "torch.safetensors")
    st.st_write(model, net.state_dict(), {"format": "pt"})
    xin = os.path.join(folder, "x.safetensors")
    st.st_write(xin, {"x": x})
    out = os.path.join(folder, "out.safetensors")
    run(exe, "forward", model, xin, out)
    got, _ = st.st_read(out)
    with torch.no_grad():
        want = net(x)
    torch.testing.assert_close(got["y"], want, atol=1e-5, rtol=0)
    print("ok: a torch state_dict loads into the C-defined modules")


def main():
    exe = sys.argv[1]
    with tempfile.TemporaryDirectory() as folder:
        run(exe, "train", folder)
        x = xgrad_to_torch(folder)
        torch_to_xgrad(exe, folder, x)


if __name__ == "__main__":
    main()
