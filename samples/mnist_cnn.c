/* mnist_cnn: trains the convolutional network of PyTorch's MNIST example on
 * Fashion-MNIST (or any MNIST-format folder) with xgrad, on the device
 * XGRAD_BACKEND selects.
 *
 *   mnist_cnn [--bn] [common flags]
 *
 * Its own flag: --bn, batch normalisation after each convolution. The
 * common flags are mnist_mlp's (listed there, described in
 * sample_common.h), --log FILE.csv, --log-every N and --precision included.
 *
 * The model (sample_cnn.h, shared with finetune) is
 * nn.Sequential(Conv2d(1, 32, 3), ReLU(), Conv2d(32, 64, 3), ReLU(),
 * MaxPool2d(2), Dropout(0.25), Flatten(), Linear(9216, 128), ReLU(),
 * Dropout(0.5), Linear(128, 10)); --bn puts a BatchNorm2d after each
 * convolution, before its ReLU. Children are named by index as in
 * PyTorch's nn.Sequential, so the parameters ("0.weight", "0.bias", ...)
 * are those of bench/cnn_torch.py.
 *
 * Fashion-MNIST test accuracy (README): 0.9207 after 6 epochs as it is;
 * with `--bn --epochs 25 --lr-schedule cosine`, 0.9351 (seed 0).
 *
 * Output and exit status as mnist_mlp (sample_common.h); the last
 * line is
 *   result: backend=cpu model=cnn epochs=3 train_samples=60000 test_acc=0.9123 samples_per_s=1500 train_cpu_s=239.50
 * with model=cnn_bn under --bn.
 */
#include <stdio.h>

#include "sample_cnn.h"
#include "sample_common.h"

typedef struct cnn_options {
    bool batch_norm;
} cnn_options;

static int parse_bn(void *ctx, const char *value)
{
    (void)value;
    ((cnn_options *)ctx)->batch_norm = true;
    return 0;
}

static int build_model(void *ctx, int64_t c, int64_t h, int64_t w,
                       int32_t classes, sample_model *out)
{
    const cnn_options *o = ctx;
    int64_t flat = sample_cnn_flat(h, w);
    xg_module *seq = xg_sequential();
    if (!seq || !sample_cnn_append_features(seq, c, o->batch_norm) ||
        !sample_cnn_append_head(seq, flat, classes)) {
        xg_module_free(seq);
        return -1;
    }
    out->module = seq;
    out->name = o->batch_norm ? "cnn_bn" : "cnn";
    snprintf(out->description, sizeof out->description,
             "%lldx%lldx%lld-conv32-conv64%s-maxpool-%lld-128-%d CNN",
             (long long)c, (long long)h, (long long)w,
             o->batch_norm ? " (batch norm)" : "", (long long)flat, classes);
    return 0;
}

int main(int argc, char **argv)
{
    cnn_options cnn = {.batch_norm = false};
    static const sample_flag flags[] = {
        {"--bn", NULL, "BatchNorm2d after each convolution", parse_bn},
    };
    const sample_spec spec = {
        .prog = "mnist_cnn",
        .summary = "Trains the CNN of PyTorch's MNIST example on "
                   "Fashion-MNIST on the device XGRAD_BACKEND selects.",
        .flags = flags,
        .n_flags = 1,
        .ctx = &cnn,
        .flatten = false,
        .build = build_model,
    };
    return sample_main(&spec, argc, argv);
}
