#!/usr/bin/env python3
"""PyTorch reference for samples/mnist_cnn.c: the CNN of PyTorch's MNIST
example (conv 1->32 3x3, ReLU, conv 32->64 3x3, ReLU, max-pool 2, dropout
0.25, flatten, fc 9216->128, ReLU, dropout 0.5, fc 128->10), with --bn a
BatchNorm2d after each convolution; the same data, normalisation, optimizer
and batch size, printing the same lines:

    epoch 1/3: train_loss=0.4123 test_acc=0.8821 time=64.1s samples/s=936
    result: backend=torch model=cnn epochs=3 train_samples=60000 test_acc=0.9112 samples_per_s=936

samples_per_s counts training samples over training wall time, evaluation
excluded. The data loading and training loop are those of bench/mlp_torch.py.
--lr-schedule cosine, --warmup and --augment flip,shift=N mean what they
mean for the sample (the draws differ: torch's generator, not xgrad's).
"""
import argparse
import math
import os
import sys

import torch
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import mlp_torch  # noqa: E402  (read_idx, load, train_epoch, evaluate)


def build_model(bn):
    def conv(c_in, c_out):
        layers = [nn.Conv2d(c_in, c_out, 3)]
        if bn:
            layers.append(nn.BatchNorm2d(c_out))
        return layers + [nn.ReLU()]
    return nn.Sequential(*conv(1, 32), *conv(32, 64), nn.MaxPool2d(2),
                         nn.Dropout(0.25), nn.Flatten(), nn.Linear(9216, 128),
                         nn.ReLU(), nn.Dropout(0.5), nn.Linear(128, 10))


def make_augment(spec, fill, generator):
    """Random flip and shift of a batch [b, c, h, w], as the loader's
    xg_augment: shift by dx, dy in [-n, n] (fill coming in), then mirror."""
    flip, shift = False, 0
    for item in spec.split(","):
        if item == "flip":
            flip = True
        elif item.startswith("shift="):
            shift = int(item[6:])
        elif item != "none":
            sys.exit(f"cnn_torch.py: --augment {spec!r}: expected flip,shift=N")
    if not flip and not shift:
        return None

    def augment(images):
        b, _, h, w = images.shape
        padded = torch.nn.functional.pad(images, (shift,) * 4, value=fill)
        offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=generator)
        out = torch.stack([padded[i, :, dy:dy + h, dx:dx + w]
                           for i, (dy, dx) in enumerate(offsets.tolist())])
        if flip:
            mirror = torch.rand(b, generator=generator) < 0.5
            out[mirror] = out[mirror].flip(-1)
        return out
    return augment


def make_schedule(opt, args, steps_per_epoch):
    """Sets the rate before every step as samples/sample_common.c does."""
    if args.lr_schedule == "constant":
        return None
    total = (args.schedule_epochs or args.epochs) * steps_per_epoch
    step = [0]

    def before_step():
        s, w = step[0], args.warmup
        if s < w:
            lr = args.lr * (s + 1) / w
        else:
            p = min(max((s - w) / (total - w), 0.0), 1.0) if total > w else 1.0
            lr = args.lr * (1 + math.cos(math.pi * p)) / 2
        for group in opt.param_groups:
            group["lr"] = lr
        step[0] += 1
    return before_step


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=mlp_torch.DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    p.add_argument("--bn", action="store_true", help="BatchNorm2d after each conv")
    p.add_argument("--lr-schedule", choices=("constant", "cosine"),
                   default="constant")
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--schedule-epochs", type=int, default=0)
    p.add_argument("--augment", default="none")
    p.add_argument("--limit", type=int, default=0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=2)
    return p.parse_args()


def main():
    args = parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    train_x, train_y = mlp_torch.load(args.data, "train")
    test_x, test_y = mlp_torch.load(args.data, "t10k")
    if args.limit:
        train_x, train_y = train_x[:args.limit], train_y[:args.limit]
    train_x = train_x.reshape(-1, 1, 28, 28)
    test_x = test_x.reshape(-1, 1, 28, 28)
    model = build_model(args.bn)
    opt = mlp_torch.make_optimizer(args.optimizer, model.parameters(), args.lr)
    generator = torch.Generator().manual_seed(args.seed)
    augment = make_augment(args.augment, -mlp_torch.MEAN / mlp_torch.STD,
                           generator)
    before_step = make_schedule(opt, args,
                                math.ceil(len(train_x) / args.batch_size))
    name = "cnn_bn" if args.bn else "cnn"
    print(f"device: torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    train_seconds, acc = 0.0, 0.0
    for epoch in range(args.epochs):
        model.train()
        loss, seconds = mlp_torch.train_epoch(model, opt, train_x, train_y,
                                              args.batch_size, generator,
                                              augment, before_step)
        train_seconds += seconds
        model.eval()
        acc = mlp_torch.evaluate(model, test_x, test_y)
        print(f"epoch {epoch + 1}/{args.epochs}: train_loss={loss:.4f} "
              f"test_acc={acc:.4f} time={seconds:.1f}s "
              f"samples/s={len(train_x) / seconds:.0f}", flush=True)
    print(f"result: backend=torch model={name} epochs={args.epochs} "
          f"train_samples={len(train_x)} test_acc={acc:.4f} "
          f"samples_per_s={len(train_x) * args.epochs / train_seconds:.0f}")


if __name__ == "__main__":
    main()
