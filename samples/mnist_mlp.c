/* mnist_mlp: trains a multilayer perceptron on Fashion-MNIST (or any
 * MNIST-format folder) with xgrad, on the device XGRAD_BACKEND selects.
 *
 *   mnist_mlp [--data DIR] [--epochs N] [--batch-size N] [--lr X]
 *             [--optimizer sgd|adam|adamw] [--hidden N[,N...]] [--limit N]
 *             [--seed N]
 *
 * The model is nn.Sequential(Linear(784, h1), ReLU(), ..., Linear(hk, 10)).
 * Its children are named by index as in PyTorch's nn.Sequential, so the
 * parameters are "0.weight", "0.bias", "2.weight", ... exactly as in the
 * state_dict of bench/mlp_torch.py.
 *
 * Output: one line per epoch, then a last line
 *   result: backend=cpu model=mlp epochs=3 train_samples=60000 test_acc=0.8812 samples_per_s=41234
 * where samples_per_s counts training samples over training wall time
 * (evaluation excluded). Progress goes to stderr.
 *
 * Exit status: 0 on success, 1 on a library or data error, 2 on bad flags.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "xgrad.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define FMNIST_MEAN 0.2860f /* of the training pixels scaled to [0, 1] */
#define FMNIST_STD 0.3530f
#define MAX_HIDDEN 8
#define MAX_WIDTH 65536
#define EVAL_BATCH 1000

typedef struct options {
    const char *data_dir;
    bool data_given;
    int64_t epochs, batch_size, limit;
    double lr;
    const char *optimizer;
    int64_t hidden[MAX_HIDDEN];
    int n_hidden;
    uint64_t seed;
} options;

typedef struct run {
    options opt;
    xg_device *dev;
    xg_dataset *train, *test;
    xg_loader *train_loader, *test_loader;
    xg_module *model;
    xg_optim *optim;
    int32_t *predictions; /* EVAL_BATCH argmax results read back */
    int64_t features;     /* c * h * w */
    int64_t train_samples;
    int32_t classes;
    bool tty;
} run;

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The status of the error just reported by the library, as a negative int. */
static int lib_error(void)
{
    xg_status st = xg_last_status();
    return st != XG_OK ? (int)st : (int)XG_ERR_BACKEND;
}

/* ===== Flags ============================================================= */

static void usage(FILE *f)
{
    fprintf(f,
            "usage: mnist_mlp [options]\n"
            "Trains an MLP on Fashion-MNIST on the device XGRAD_BACKEND selects.\n"
            "  --data DIR          MNIST-format folder (default %s)\n"
            "  --epochs N          passes over the training set (3)\n"
            "  --batch-size N      samples per step (64)\n"
            "  --lr X              learning rate (1e-3)\n"
            "  --optimizer NAME    sgd, adam or adamw (adam)\n"
            "  --hidden N[,N...]   hidden layer widths (256)\n"
            "  --limit N           use only the first N training samples (0: all)\n"
            "  --seed N            initialisation and shuffling seed (0)\n"
            "  --help              this text\n",
            DEFAULT_DATA);
}

static int bad_value(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "mnist_mlp: %s '%s': expected %s\n", flag, value, want);
    return 2;
}

static int parse_i64(const char *flag, const char *s, int64_t min,
                     int64_t max, int64_t *out)
{
    char *end = NULL;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (end == s || *end != '\0' || errno == ERANGE || v < min || v > max) {
        char want[96];
        snprintf(want, sizeof want, "an integer from %lld to %lld",
                 (long long)min, (long long)max);
        return bad_value(flag, s, want);
    }
    *out = v;
    return 0;
}

static int parse_seed(const char *s, uint64_t *out)
{
    char *end = NULL;
    errno = 0;
    unsigned long long v = strtoull(s, &end, 10);
    if (s[0] < '0' || s[0] > '9' || *end != '\0' || errno == ERANGE)
        return bad_value("--seed", s, "an integer from 0 to 2^64-1");
    *out = v;
    return 0;
}

static int parse_lr(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !(v > 0.0 && v <= 10.0))
        return bad_value("--lr", s, "a number in (0, 10]");
    *out = v;
    return 0;
}

/* "256,128": up to MAX_HIDDEN widths separated by commas. */
static int parse_hidden(const char *s, options *o)
{
    const char *p = s;
    o->n_hidden = 0;
    for (;;) {
        char *end = NULL;
        errno = 0;
        long long v = strtoll(p, &end, 10);
        if (end == p || (*end != ',' && *end != '\0') || errno == ERANGE ||
            v < 1 || v > MAX_WIDTH || o->n_hidden == MAX_HIDDEN)
            return bad_value("--hidden", s,
                             "1 to 8 widths from 1 to 65536, e.g. 256,128");
        o->hidden[o->n_hidden++] = v;
        if (*end == '\0')
            return 0;
        p = end + 1;
    }
}

static int parse_optimizer(const char *s, options *o)
{
    if (strcmp(s, "sgd") && strcmp(s, "adam") && strcmp(s, "adamw"))
        return bad_value("--optimizer", s, "sgd, adam or adamw");
    o->optimizer = s;
    return 0;
}

static int parse_flag(options *o, const char *flag, const char *value)
{
    if (strcmp(flag, "--data") == 0) {
        o->data_dir = value;
        o->data_given = true;
        return 0;
    }
    if (strcmp(flag, "--epochs") == 0)
        return parse_i64(flag, value, 1, 100000, &o->epochs);
    if (strcmp(flag, "--batch-size") == 0)
        return parse_i64(flag, value, 1, 1 << 20, &o->batch_size);
    if (strcmp(flag, "--limit") == 0)
        return parse_i64(flag, value, 0, INT64_MAX, &o->limit);
    if (strcmp(flag, "--lr") == 0)
        return parse_lr(value, &o->lr);
    if (strcmp(flag, "--optimizer") == 0)
        return parse_optimizer(value, o);
    if (strcmp(flag, "--hidden") == 0)
        return parse_hidden(value, o);
    if (strcmp(flag, "--seed") == 0)
        return parse_seed(value, &o->seed);
    fprintf(stderr, "mnist_mlp: unknown flag '%s' (see --help)\n", flag);
    return 2;
}

/* Returns 0 to go on, 1 after --help, 2 on a bad flag. Accepts "--flag
 * VALUE" and "--flag=VALUE". */
static int parse_args(int argc, char **argv, options *o)
{
    *o = (options){.data_dir = DEFAULT_DATA, .epochs = 3, .batch_size = 64,
                   .lr = 1e-3, .optimizer = "adam", .hidden = {256},
                   .n_hidden = 1};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 1;
        }
        char flag[32];
        const char *eq = strchr(argv[i], '='), *value;
        size_t len = eq ? (size_t)(eq - argv[i]) : strlen(argv[i]);
        snprintf(flag, sizeof flag, "%.*s", (int)len, argv[i]);
        if (eq)
            value = eq + 1;
        else if (i + 1 < argc)
            value = argv[++i];
        else {
            fprintf(stderr, "mnist_mlp: %s needs a value (see --help)\n",
                    argv[i]);
            return 2;
        }
        int rc = parse_flag(o, flag, value);
        if (rc)
            return rc;
    }
    return 0;
}

/* ===== Setup ============================================================= */

static int load_data(run *r)
{
    const char *dir = r->opt.data_dir;
    xg_status st = xg_mnist_load(dir, "train", FMNIST_MEAN, FMNIST_STD,
                                 &r->train);
    if (st == XG_OK)
        st = xg_mnist_load(dir, "test", FMNIST_MEAN, FMNIST_STD, &r->test);
    if (st == XG_ERR_NOT_FOUND && !r->opt.data_given) {
        fprintf(stderr,
                "mnist_mlp: Fashion-MNIST is not in %s\n  (%s)\n"
                "  Install the Debian package dataset-fashion-mnist, or pass "
                "--data DIR with a folder that holds\n"
                "  train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz] and the t10k-* pair.\n",
                dir, xg_last_error());
        return 1;
    }
    if (st != XG_OK) {
        fprintf(stderr, "mnist_mlp: loading %s: %s\n", dir, xg_last_error());
        return 1;
    }
    r->features = r->train->channels * r->train->height * r->train->width;
    if (r->test->channels * r->test->height * r->test->width != r->features) {
        fprintf(stderr, "mnist_mlp: train and test images differ in size\n");
        return 1;
    }
    return 0;
}

/* Appends `child` (NULL: an earlier error) under its index name. */
static bool append(xg_module *seq, xg_module *child)
{
    return child && xg_sequential_add(seq, NULL, child) == XG_OK;
}

/* Linear(in, h1), ReLU, ..., Linear(hk, classes). */
static xg_module *build_model(const options *o, int64_t in, int64_t classes)
{
    xg_module *seq = xg_sequential();
    bool ok = seq != NULL;
    int64_t width = in;
    for (int i = 0; ok && i < o->n_hidden; i++) {
        ok = append(seq, xg_linear(width, o->hidden[i], true)) &&
             append(seq, xg_relu_layer());
        width = o->hidden[i];
    }
    if (ok)
        ok = append(seq, xg_linear(width, classes, true));
    if (!ok) {
        xg_module_free(seq);
        return NULL;
    }
    return seq;
}

static void print_header(const run *r)
{
    const options *o = &r->opt;
    int64_t params = 0;
    for (int i = 0; i < xg_module_param_count(r->model); i++)
        params += xg_tensor_numel(xg_module_param(r->model, i, NULL));
    printf("device: %s (%s)\n", xg_device_name(r->dev),
           xg_device_backend(r->dev));
    printf("data: %s: train %lld (using %lld), test %lld\n", o->data_dir,
           (long long)r->train->n, (long long)r->train_samples,
           (long long)r->test->n);
    printf("model: %lld", (long long)r->features);
    for (int i = 0; i < o->n_hidden; i++)
        printf("-%lld", (long long)o->hidden[i]);
    printf("-%d MLP, %lld parameters; %s lr=%g batch=%lld seed=%llu\n",
           r->classes, (long long)params, o->optimizer, o->lr,
           (long long)o->batch_size, (unsigned long long)o->seed);
    fflush(stdout);
}

/* Device, data, model, optimizer and loaders; prints what it set up. */
static int setup(run *r)
{
    const options *o = &r->opt;
    r->tty = isatty(STDERR_FILENO);
    if (!(r->dev = xg_device_current())) {
        fprintf(stderr, "mnist_mlp: opening the device: %s\n", xg_last_error());
        return 1;
    }
    if (load_data(r))
        return 1;
    r->classes = r->train->num_classes > r->test->num_classes
                     ? r->train->num_classes : r->test->num_classes;
    xg_manual_seed(o->seed);
    r->model = build_model(o, r->features, r->classes);
    if (r->model)
        r->optim = xg_optim_for_module(r->model, o->optimizer, (float)o->lr);
    if (r->optim)
        r->train_loader = xg_loader_new(r->train, o->batch_size, true, false,
                                        o->seed, o->limit);
    if (r->train_loader)
        r->test_loader = xg_loader_new(r->test, EVAL_BATCH, false, false, 0, 0);
    r->predictions = malloc(EVAL_BATCH * sizeof *r->predictions);
    if (!r->test_loader || !r->predictions) {
        fprintf(stderr, "mnist_mlp: setting up: %s\n",
                r->predictions ? xg_last_error() : "out of memory");
        return 1;
    }
    r->train_samples = o->limit && o->limit < r->train->n ? o->limit
                                                          : r->train->n;
    print_header(r);
    return 0;
}

static void teardown(run *r)
{
    xg_loader_free(r->train_loader);
    xg_loader_free(r->test_loader);
    xg_optim_free(r->optim);
    xg_module_free(r->model);
    xg_dataset_free(r->train);
    xg_dataset_free(r->test);
    free(r->predictions);
    xg_shutdown();
}

/* ===== Training ========================================================== */

/* Forward, loss, backward, update on one batch. The loss is added to
 * *loss_sum on the device: no host read, so no sync. */
static int train_batch(run *r, xg_tensor *images, xg_tensor *labels,
                       xg_tensor **loss_sum)
{
    xg_tensor *x = xg_reshape(images, XG_SHAPE(-1, r->features));
    xg_tensor *loss = xg_cross_entropy(xg_module_forward(r->model, x), labels);
    if (!loss || xg_backward(loss) != XG_OK || xg_optim_step(r->optim) != XG_OK)
        return lib_error();
    xg_optim_zero_grad(r->optim);
    xg_tensor *sum = xg_tensor_keep(xg_add(*loss_sum, xg_detach(loss)));
    if (!sum)
        return lib_error();
    xg_tensor_free(*loss_sum);
    *loss_sum = sum;
    return 1;
}

/* One step in its own scope. 1: trained a batch; 0: end of epoch; < 0:
 * error. */
static int train_step(run *r, xg_tensor **loss_sum)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return lib_error();
    xg_tensor *images = NULL, *labels = NULL;
    int got = xg_loader_next(r->train_loader, &images, &labels);
    if (got == 1)
        got = train_batch(r, images, labels, loss_sum);
    xg_scope_end(scope);
    return got;
}

/* Reads the running loss (a device sync) and redraws the progress: a bar
 * on a terminal, a plain line otherwise. */
static int show_progress(const run *r, int64_t epoch, int64_t i, int64_t n,
                         xg_tensor *loss_sum, double t0)
{
    float sum = 0.0f;
    if (xg_tensor_item(loss_sum, &sum) != XG_OK)
        return lib_error();
    int64_t done = i * r->opt.batch_size;
    done = done < r->train_samples ? done : r->train_samples;
    double rate = (double)done / (now() - t0);
    long long e = (long long)epoch + 1, epochs = (long long)r->opt.epochs;
    if (r->tty) {
        char bar[31];
        int fill = (int)(30 * i / n);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(30 - fill));
        bar[30] = '\0';
        fprintf(stderr, "\r\033[Kepoch %lld/%lld [%s] %lld/%lld loss=%.4f %.0f "
                "samples/s", e, epochs, bar, (long long)i, (long long)n,
                sum / (float)i, rate);
    } else {
        fprintf(stderr, "epoch %lld/%lld: batch %lld/%lld loss=%.4f "
                "samples/s=%.0f\n", e, epochs, (long long)i, (long long)n,
                sum / (float)i, rate);
    }
    return 1;
}

typedef struct epoch_stats {
    double loss, seconds;
} epoch_stats;

static int train_epoch(run *r, int64_t epoch, epoch_stats *out)
{
    int64_t n = xg_loader_batches(r->train_loader), i = 0;
    int64_t every = r->tty ? n / 50 : (n + 9) / 10; /* display reads sync */
    every = every > 0 ? every : 1;
    xg_loader_start(r->train_loader, epoch);
    double t0 = now();
    xg_tensor *loss_sum = xg_zeros(XG_SHAPE(1));
    int got = loss_sum ? 1 : lib_error();
    while (got == 1 && (got = train_step(r, &loss_sum)) == 1) {
        if (++i % every == 0 || i == n)
            got = show_progress(r, epoch, i, n, loss_sum, t0);
    }
    float sum = 0.0f;
    if (got == 0 && xg_tensor_item(loss_sum, &sum) != XG_OK)
        got = lib_error();
    out->seconds = now() - t0; /* after the read, so all work is done */
    out->loss = i ? sum / (double)i : 0.0;
    xg_tensor_free(loss_sum);
    if (r->tty)
        fprintf(stderr, "\r\033[K");
    return got;
}

/* ===== Evaluation ======================================================== */

/* Classifies one test batch; the argmax runs on the device and only the
 * predicted classes come back. */
static int eval_batch(run *r, int64_t *seen, int64_t *correct)
{
    xg_tensor *images = NULL, *labels = NULL;
    int got = xg_loader_next(r->test_loader, &images, &labels);
    if (got != 1)
        return got;
    int64_t b = xg_tensor_dim(labels, 0);
    xg_tensor *x = xg_reshape(images, XG_SHAPE(-1, r->features));
    xg_tensor *pred = xg_argmax(xg_module_forward(r->model, x), -1, false);
    if (!pred || xg_tensor_read(pred, r->predictions,
                                (size_t)b * sizeof *r->predictions) != XG_OK)
        return lib_error();
    const int32_t *truth = r->test->labels + *seen; /* loader keeps order */
    for (int64_t k = 0; k < b; k++)
        *correct += r->predictions[k] == truth[k];
    *seen += b;
    return 1;
}

static int evaluate(run *r, double *accuracy)
{
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(r->model, false);
    xg_loader_start(r->test_loader, 0);
    int64_t seen = 0, correct = 0;
    int got = 1;
    while (got == 1) {
        xg_scope *scope = xg_scope_begin();
        got = scope ? eval_batch(r, &seen, &correct) : lib_error();
        xg_scope_end(scope);
    }
    xg_module_set_training(r->model, true);
    xg_set_grad_enabled(grad);
    *accuracy = seen ? (double)correct / (double)seen : 0.0;
    return got;
}

/* ===== Main ============================================================== */

static int train(run *r)
{
    const options *o = &r->opt;
    double train_seconds = 0.0, accuracy = 0.0;
    for (int64_t e = 0; e < o->epochs; e++) {
        epoch_stats st;
        if (train_epoch(r, e, &st) < 0 || evaluate(r, &accuracy) < 0) {
            fprintf(stderr, "mnist_mlp: %s\n", xg_last_error());
            return 1;
        }
        train_seconds += st.seconds;
        printf("epoch %lld/%lld: train_loss=%.4f test_acc=%.4f time=%.1fs "
               "samples/s=%.0f\n", (long long)e + 1, (long long)o->epochs,
               st.loss, accuracy, st.seconds,
               (double)r->train_samples / st.seconds);
        fflush(stdout);
    }
    printf("result: backend=%s model=mlp epochs=%lld train_samples=%lld "
           "test_acc=%.4f samples_per_s=%.0f\n", xg_device_backend(r->dev),
           (long long)o->epochs, (long long)r->train_samples, accuracy,
           (double)(r->train_samples * o->epochs) / train_seconds);
    return 0;
}

int main(int argc, char **argv)
{
    run r = {0};
    int rc = parse_args(argc, argv, &r.opt);
    if (rc)
        return rc == 1 ? 0 : 2;
    rc = setup(&r);
    if (rc == 0)
        rc = train(&r);
    teardown(&r);
    return rc;
}
