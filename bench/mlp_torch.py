#!/usr/bin/env python3
"""PyTorch reference for samples/mnist_mlp.c: the same MLP, data,
normalisation, optimizer and batch size, printing the same lines:

    epoch 1/3: train_loss=0.5123 test_acc=0.8421 time=4.1s samples/s=14634
    result: backend=torch model=mlp epochs=3 train_samples=60000 test_acc=0.8812 samples_per_s=41234

Reads the IDX files with gzip + numpy (no torchvision). samples_per_s counts
training samples over training wall time, evaluation excluded.
"""
import argparse
import gzip
import os
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

DEFAULT_DATA = "/usr/share/datasets/fashion-mnist"
MEAN, STD = 0.2860, 0.3530
EVAL_BATCH = 1000


def read_idx(path):
    """An IDX file (plain or .gz) as a numpy array of unsigned bytes."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype != 0x08:
        sys.exit(f"mlp_torch: {path}: not a u8 IDX file")
    dims = struct.unpack(f">{ndim}I", data[4:4 + 4 * ndim])
    values = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if values.size != int(np.prod(dims)):
        sys.exit(f"mlp_torch: {path}: data length does not match the header")
    return values.reshape(dims)


def find(directory, name):
    for candidate in (name, name + ".gz"):
        path = os.path.join(directory, candidate)
        if os.path.exists(path):
            return path
    sys.exit(f"mlp_torch: {os.path.join(directory, name)}[.gz] not found")


def load(directory, prefix):
    """Images [n, 784] float32 normalised as mnist_mlp does; labels int64."""
    images = read_idx(find(directory, f"{prefix}-images-idx3-ubyte"))
    labels = read_idx(find(directory, f"{prefix}-labels-idx1-ubyte"))
    x = (images.reshape(len(images), -1).astype(np.float32) / 255.0 - MEAN) / STD
    return torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))


def build_model(widths):
    layers, width = [], 784
    for hidden in widths:
        layers += [nn.Linear(width, hidden), nn.ReLU()]
        width = hidden
    layers.append(nn.Linear(width, 10))
    return nn.Sequential(*layers)


def make_optimizer(name, params, lr):
    if name == "sgd":
        return torch.optim.SGD(params, lr=lr)
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr)
    return torch.optim.Adam(params, lr=lr)


def train_epoch(model, opt, x, y, batch, generator, augment=None,
                before_step=None):
    """Returns (mean loss, seconds). The loss is summed on the tensor side
    and read once, as mnist_mlp does. augment(images) -> images transforms
    each batch; before_step() runs before every step (a schedule)."""
    start = time.perf_counter()
    total, steps = torch.zeros(()), 0
    for idx in torch.randperm(len(x), generator=generator).split(batch):
        images = augment(x[idx]) if augment else x[idx]
        if before_step:
            before_step()
        loss = F.cross_entropy(model(images), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        total += loss.detach()
        steps += 1
    mean = total.item() / steps
    return mean, time.perf_counter() - start


@torch.no_grad()
def evaluate(model, x, y):
    correct = 0
    for start in range(0, len(x), EVAL_BATCH):
        pred = model(x[start:start + EVAL_BATCH]).argmax(dim=1)
        correct += (pred == y[start:start + EVAL_BATCH]).sum().item()
    return correct / len(x)


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    p.add_argument("--hidden", default="256")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    args.hidden = [int(w) for w in args.hidden.split(",")]
    return args


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = load(args.data, "train")
    test_x, test_y = load(args.data, "t10k")
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    model = build_model(args.hidden)
    opt = make_optimizer(args.optimizer, model.parameters(), args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    print(f"device: torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    train_seconds, acc = 0.0, 0.0
    for epoch in range(args.epochs):
        loss, seconds = train_epoch(model, opt, train_x, train_y,
                                    args.batch_size, generator)
        train_seconds += seconds
        acc = evaluate(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs}: train_loss={loss:.4f} "
              f"test_acc={acc:.4f} time={seconds:.1f}s "
              f"samples/s={len(train_x) / seconds:.0f}", flush=True)
    print(f"result: backend=torch model=mlp epochs={args.epochs} "
          f"train_samples={len(train_x)} test_acc={acc:.4f} "
          f"samples_per_s={len(train_x) * args.epochs / train_seconds:.0f}")


if __name__ == "__main__":
    main()
