#!/usr/bin/python3
"""Plots the training logs of the samples' --log into one PNG.

    tools/plot.py -o out.png run1.csv run2.csv ...
    tools/plot.py -o out.png --label cpu cpu.csv --label opencl opencl.csv

Two panels: the training loss against the optimizer step (the train rows)
and, from the eval rows, the test accuracy against the epoch (the image
samples' logs, header kind,step,epoch,loss,lr,samples_per_s,elapsed_s,
accuracy, described in samples/sample_common.h) or the validation loss
against the step (the gpt sample's, header kind,step,loss,lr,tokens_per_s,
elapsed_s,val_loss, described in samples/gpt.c; bench/gpt_torch.py curve
writes the same). One line per log, labelled with its --label (the i-th
--label names the i-th log, wherever they stand on the command line) or
else its file name without .csv. All logs of one plot are of one kind.

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
GPT_HEADER = ["kind", "step", "loss", "lr", "tokens_per_s", "elapsed_s",
              "val_loss"]
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
    """The log's kind ("image" or "gpt"), its train points [(step, loss)]
    and eval points: [(epoch, accuracy)] or [(step, val_loss)]."""
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise LogError(f"{path}: {e}")
    if not rows or rows[0] not in (HEADER, GPT_HEADER):
        raise LogError(f"{path}: not a training log: the first line is "
                       "neither " + ",".join(HEADER) + " nor "
                       + ",".join(GPT_HEADER))
    header = rows[0]
    kind = "image" if header == HEADER else "gpt"
    x_col, y_col = ("epoch", "accuracy") if kind == "image" else \
        ("step", "val_loss")
    train, evals = [], []
    for line, row in enumerate(rows[1:], start=2):
        if len(row) != len(header):
            raise LogError(f"{path}:{line}: {len(row)} cells, expected "
                           f"{len(header)}")
        cell = dict(zip(header, row))
        if cell["kind"] == "train":
            train.append((number(cell["step"], path, line, "step"),
                          number(cell["loss"], path, line, "loss")))
        elif cell["kind"] == "eval":
            evals.append((number(cell[x_col], path, line, x_col),
                          number(cell[y_col], path, line, y_col)))
        else:
            raise LogError(f"{path}:{line}: kind {cell['kind']!r} is "
                           "neither train nor eval")
    if not train and not evals:
        raise LogError(f"{path}: no rows")
    return kind, train, evals


def label_of(path):
    base = os.path.basename(path)
    return base[:-4] if base.endswith(".csv") else base


def plot(logs, out, title):
    """Draws [(label, kind, train, evals)] into the PNG `out`."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (loss_ax, acc_ax) = plt.subplots(1, 2, figsize=(9, 3.4))
    for i, (label, _, train, evals) in enumerate(logs):
        style = {"linestyle": STYLES[i % len(STYLES)], "label": label}
        if train:
            loss_ax.plot(*zip(*train), **style)
        if evals:
            acc_ax.plot(*zip(*evals), marker=MARKERS[i % len(MARKERS)],
                        **style)
    loss_ax.set(xlabel="step", ylabel="training loss",
                title="training loss (mean over each logged interval)")
    if logs[0][1] == "image":
        acc_ax.set(xlabel="epoch", ylabel="test accuracy",
                   title="test accuracy")
        acc_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        acc_ax.set(xlabel="step", ylabel="validation loss",
                   title="validation loss")
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
    kinds = {log[1] for log in logs}
    if len(kinds) > 1:
        print("plot.py: the logs are of different kinds (image samples' "
              "and gpt's): plot them separately", file=sys.stderr)
        return 1
    try:
        plot(logs, args.output, args.title)
    except (OSError, ValueError) as e:
        print(f"plot.py: writing {args.output}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
