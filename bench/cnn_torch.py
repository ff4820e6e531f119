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
"""
import argparse
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


def parse_args():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=mlp_torch.DEFAULT_DATA)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--optimizer", choices=("sgd", "adam", "adamw"), default="adam")
    p.add_argument("--bn", action="store_true", help="BatchNorm2d after each conv")
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
    name = "cnn_bn" if args.bn else "cnn"
    print(f"device: torch {torch.__version__} cpu, {torch.get_num_threads()} threads")
    train_seconds, acc = 0.0, 0.0
    for epoch in range(args.epochs):
        model.train()
        loss, seconds = mlp_torch.train_epoch(model, opt, train_x, train_y,
                                              args.batch_size, generator)
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
