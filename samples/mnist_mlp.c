/* mnist_mlp: trains a multilayer perceptron on Fashion-MNIST (or any
 * MNIST-format folder) with xgrad, on the device XGRAD_BACKEND selects.
 *
 *   mnist_mlp [--hidden N[,N...]] [common flags]
 *
 * Its own flag: --hidden N[,N...], the hidden layers' widths (256; 1 to 8
 * layers of 1 to 65536 units). The common flags, shared with mnist_cnn and
 * described in sample_common.h: --data DIR, --epochs N, --batch-size N,
 * --lr X, --optimizer sgd|adam|adamw, --lr-schedule constant|cosine,
 * --warmup N, --schedule-epochs N, --augment flip,shift=N|none, --limit N,
 * --seed N, --save PATH, --load PATH, --checkpoint PATH, --resume PATH,
 * --log FILE.csv, --log-every N, --precision f32|bf16|f16, --help.
 *
 * The model is nn.Sequential(Linear(784, h1), ReLU(), ..., Linear(hk, 10)).
 * Its children are named by index as in PyTorch's nn.Sequential, so the
 * parameters are "0.weight", "0.bias", "2.weight", ... exactly as in the
 * state_dict of bench/mlp_torch.py.
 *
 * Output: a header, one line per epoch, then a last line
 *   result: backend=cpu model=mlp epochs=3 train_samples=60000 test_acc=0.8812 samples_per_s=41234 train_cpu_s=8.71
 * where samples_per_s counts training samples over training wall time
 * (evaluation excluded) and train_cpu_s is the process's CPU time over the
 * same span, every thread counted. Progress goes to stderr. Flags, data, the training
 * loop, the log and the output are those of every sample (sample_common.h).
 *
 * Exit status: 0 on success, 1 on a library, data or file error, 2 on bad
 * flags.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>

#include "sample_common.h"

#define MAX_HIDDEN 8
#define MAX_WIDTH 65536

typedef struct mlp_options {
    int64_t hidden[MAX_HIDDEN];
    int n_hidden;
} mlp_options;

/* "256,128": up to MAX_HIDDEN widths separated by commas. */
static int parse_hidden(void *ctx, const char *s)
{
    mlp_options *o = ctx;
    const char *p = s;
    o->n_hidden = 0;
    for (;;) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || errno == ERANGE ||
            v < 1 || v > MAX_WIDTH || o->n_hidden == MAX_HIDDEN)
            return sample_bad_value("--hidden", s,
                                    "1 to 8 widths from 1 to 65536, e.g. "
                                    "256,128");
        o->hidden[o->n_hidden++] = v;
        if (*end == '\0')
            return 0;
        p = end + 1;
    }
}

/* Appends `child` (NULL: an earlier error) under its index name. */
static bool append(xg_module *seq, xg_module *child)
{
    return child && xg_sequential_add(seq, NULL, child) == XG_OK;
}

/* "784-256-10 MLP" */
static void describe(const mlp_options *o, int64_t in, int32_t classes,
                     char *s, size_t size)
{
    size_t at = (size_t)snprintf(s, size, "%lld", (long long)in);
    for (int i = 0; i < o->n_hidden && at < size; i++)
        at += (size_t)snprintf(s + at, size - at, "-%lld",
                               (long long)o->hidden[i]);
    if (at < size)
        snprintf(s + at, size - at, "-%d MLP", classes);
}

/* Linear(in, h1), ReLU, ..., Linear(hk, classes). */
static int build_model(void *ctx, int64_t c, int64_t h, int64_t w,
                       int32_t classes, sample_model *out)
{
    const mlp_options *o = ctx;
    xg_module *seq = xg_sequential();
    bool ok = seq != NULL;
    int64_t width = c * h * w;
    for (int i = 0; ok && i < o->n_hidden; i++) {
        ok = append(seq, xg_linear(width, o->hidden[i], true)) &&
             append(seq, xg_relu_layer());
        width = o->hidden[i];
    }
    if (ok)
        ok = append(seq, xg_linear(width, classes, true));
    if (!ok) {
        xg_module_free(seq);
        return -1;
    }
    out->module = seq;
    out->name = "mlp";
    describe(o, c * h * w, classes, out->description,
             sizeof out->description);
    return 0;
}

int main(int argc, char **argv)
{
    mlp_options mlp = {.hidden = {256}, .n_hidden = 1};
    static const sample_flag flags[] = {
        {"--hidden", "N[,N...]", "hidden layer widths (256)", parse_hidden},
    };
    const sample_spec spec = {
        .prog = "mnist_mlp",
        .summary = "Trains an MLP on Fashion-MNIST on the device "
                   "XGRAD_BACKEND selects.",
        .flags = flags,
        .n_flags = 1,
        .ctx = &mlp,
        .flatten = true,
        .build = build_model,
    };
    return sample_main(&spec, argc, argv);
}
