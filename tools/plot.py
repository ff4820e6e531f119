#!/usr/bin/python3
"""Plots the training logs of the samples' --log into one PNG.

    tools/plot.py -o out.png run1.csv run2.csv ...
    tools/plot.py -o out.png --label cpu cpu.csv --label opencl opencl.csv

Two panels: the training loss against the optimizer step (the train rows)
and the test accuracy against the epoch (the eval rows), one line per log,
labelled with its --label (the i-th --label names the i-th log, wherever
they stand on the command line) or else its file name without .csv. The log format (header
kind,step,epoch,loss,lr,samples_per_s,elapsed_s,accuracy) is described in
samples/sample_common.h.

Needs matplotlib (Debian: python3-matplotlib); run with /usr/bin/python3.
Exit status: 0, 1 for a missing or malformed log or an unwritable output,
2 for bad arguments.
"""
import argparse
import csv
import os
import sys

HEADER = ["kind", "step", "epoch", "loss", "lr", "samples_per_s",
          "elapsed_s", "accuracy"]
STYLES = ["-", "--", ":", "-."]
MARKERS = ["o", "s", "^", "D", "v", "x"]


class LogError(Exception):
    """A log that cannot be read or is not in the --log format."""


def number(cell, path, line, column):
    """The float in `cell`, or a LogError naming where it is."""
    try:
        return float(cell)
    except ValueError:
        raise LogError(f"{path}:{line}: {column} {cell!r} is not a number")


def read_log(path):
    """The log's train points [(step, loss)] and eval points
    [(epoch, accuracy)]."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LogError(f"{path}: {e}")
    if not rows or rows[0] != HEADER:
        raise LogError(f"{path}: not a training log: the first line is not "
                       + ",".join(HEADER))
    train, evals = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(HEADER):
            raise LogError(f"{path}:{line}: {len(row)} cells, expected "
                           f"{len(HEADER)}")
        cell = dict(zip(HEADER, row))
        if cell["kind"] == "train":
            train.append((number(cell["step"], path, line, "step"),
                          number(cell["loss"], path, line, "loss")))
        elif cell["kind"] == "eval":
            evals.append((number(cell["epoch"], path, line, "epoch"),
                          number(cell["accuracy"], path, line, "accuracy")))
        else:
            raise LogError(f"{path}:{line}: kind {cell['kind']!r} is "
                           "neither train nor eval")
    if not train and not evals:
        raise LogError(f"{path}: no rows")
    return train, evals


def label_of(path):
    base = os.path.basename(path)
    return base[:-4] if base.endswith(".csv") else base


def plot(logs, out, title):
    """Draws [(label, train, evals)] into the PNG `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (label, train, evals) in enumerate(logs):
        style = {"linestyle": STYLES[i % len(STYLES)], "label": label}
        if train:
            loss_ax.plot(*zip(*train), **style)
        if evals:
            acc_ax.plot(*zip(*evals), marker=MARKERS[i % len(MARKERS)],
                        **style)
    loss_ax.set(xlabel="step", ylabel="training loss",
                title="training loss (mean over each logged interval)")
    acc_ax.set(xlabel="epoch", ylabel="test accuracy", title="test accuracy")
    acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def main(argv):
    p = argparse.ArgumentParser(
        prog="plot.py",
        description="Plots the samples' --log CSV files: training loss "
                    "against step and test accuracy against epoch.")
    p.add_argument("-o", "--output", required=True, metavar="OUT.png",
                   help="the PNG to write")
    p.add_argument("--label", action="append", default=[],
                   help="a log's name in the legend, once per log in "
                        "order (default: the file name)")
    p.add_argument("--title", help="a title above both panels")
    p.add_argument("logs", nargs="+", metavar="LOG.csv")
    args = p.parse_intermixed_args(argv)
    if len(args.label) > len(args.logs):
        p.error(f"{len(args.label)} labels for {len(args.logs)} logs")
    labels = args.label + [label_of(x) for x in args.logs[len(args.label):]]
    try:
        logs = [(label, *read_log(path))
                for label, path in zip(labels, args.logs)]
    except LogError as e:
        print(f"plot.py: {e}", file=sys.stderr)
        return 1
    try:
        plot(logs, args.output, args.title)
    except (OSError, ValueError) as e:
        print(f"plot.py: writing {args.output}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
