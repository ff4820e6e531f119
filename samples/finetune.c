/* finetune: transfer learning with a saved model.
 *
 * 1. Pretrains the CNN of mnist_cnn on Fashion-MNIST classes 0-4 and saves
 *    its convolutional layers (the features).
 * 2. Loads the features into a new network, freezes them, puts a new head
 *    (the two fully connected layers) for classes 5-9 on top and trains
 *    only the head on a small labelled set (--few, 1000 images).
 * 3. Trains the same network from scratch on the same small set.
 * Both are scored on the test images of classes 5-9, and the frozen
 * parameters are checked to be bit-identical after fine-tuning. Last line:
 *   result: backend=cpu model=finetune finetune_acc=0.91 scratch_acc=0.83
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"
#include "xgrad_data.h"

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define MEAN 0.2860f
#define STD 0.3530f
#define BATCH 64

typedef struct options {
    const char *data, *model_path;
    int64_t pretrain_epochs, pretrain_limit, few, epochs;
    float lr;
} options;

/* ---- data -------------------------------------------------------------- */

/* The samples of `src` with labels in [lo, lo + 5), relabelled from 0; at
 * most `limit` of them (0: all). */
static xg_dataset *subset(const xg_dataset *src, int lo, int64_t limit)
{
    int64_t px = src->channels * src->height * src->width, n = 0;
    xg_dataset *d = calloc(1, sizeof *d);
    if (d) {
        *d = *src;
        d->images = malloc((size_t)(src->n * px) * sizeof *d->images);
        d->labels = malloc((size_t)src->n * sizeof *d->labels);
    }
    if (!d || !d->images || !d->labels) {
        xg_dataset_free(d);
        return NULL;
    }
    for (int64_t i = 0; i < src->n && (!limit || n < limit); i++) {
        if (src->labels[i] < lo || src->labels[i] >= lo + 5)
            continue;
        memcpy(d->images + n * px, src->images + i * px,
               (size_t)px * sizeof *d->images);
        d->labels[n++] = src->labels[i] - lo;
    }
    d->n = n;
    d->num_classes = 5;
    return d;
}

/* ---- models ------------------------------------------------------------ */

static bool append(xg_module *seq, const char *name, xg_module *child)
{
    return child && xg_sequential_add(seq, name, child) == XG_OK;
}

/* mnist_cnn's convolutional layers: [N,1,28,28] -> [N,9216]. */
static xg_module *features_new(void)
{
    xg_module *f = xg_sequential();
    bool ok = f && append(f, NULL, xg_conv2d_layer(1, 32, 3, NULL, true)) &&
              append(f, NULL, xg_relu_layer()) &&
              append(f, NULL, xg_conv2d_layer(32, 64, 3, NULL, true)) &&
              append(f, NULL, xg_relu_layer()) &&
              append(f, NULL, xg_max_pool2d_layer(2, 0, 0)) &&
              append(f, NULL, xg_dropout_layer(0.25f)) &&
              append(f, NULL, xg_flatten_layer());
    if (!ok)
        xg_module_free(f);
    return ok ? f : NULL;
}

/* mnist_cnn's classifier for 5 classes: 9216 -> 128 -> 5. */
static xg_module *head_new(void)
{
    xg_module *h = xg_sequential();
    bool ok = h && append(h, NULL, xg_linear(9216, 128, true)) &&
              append(h, NULL, xg_relu_layer()) &&
              append(h, NULL, xg_dropout_layer(0.5f)) &&
              append(h, NULL, xg_linear(128, 5, true));
    if (!ok)
        xg_module_free(h);
    return ok ? h : NULL;
}

/* features (owned by the result) + a new head. */
static xg_module *classifier_new(xg_module *features)
{
    xg_module *m = xg_sequential();
    if (!m || !append(m, "features", features)) {
        xg_module_free(m ? m : features);
        return NULL;
    }
    if (!append(m, "head", head_new())) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- training and scoring ------------------------------------------------ */

static int train(xg_module *m, const xg_dataset *d, int64_t epochs, float lr,
                 const char *what)
{
    xg_optim *opt = xg_optim_for_module(m, "adam", lr);
    xg_loader *ld = opt ? xg_loader_new(d, BATCH, true, false, 1, 0) : NULL;
    int rc = ld ? 0 : -1;
    for (int64_t e = 0; e < epochs && rc == 0; e++) {
        xg_loader_start(ld, e);
        xg_tensor *x, *y;
        while (rc == 0) {
            xg_scope *s = xg_scope_begin();
            int got = xg_loader_next(ld, &x, &y);
            xg_tensor *loss = got == 1 ? xg_cross_entropy(
                                             xg_module_forward(m, x), y)
                                       : NULL;
            rc = got < 0 || (got == 1 && (!loss || xg_backward(loss) ||
                                          xg_optim_step(opt)))
                     ? -1
                     : 0;
            xg_optim_zero_grad(opt);
            xg_scope_end(s);
            if (got == 0)
                break;
        }
        fprintf(stderr, "%s: epoch %lld/%lld done\n", what, (long long)e + 1,
                (long long)epochs);
    }
    xg_loader_free(ld);
    xg_optim_free(opt);
    return rc;
}

static int accuracy(xg_module *m, const xg_dataset *d, double *acc)
{
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(m, false);
    xg_loader *ld = xg_loader_new(d, 200, false, false, 0, 0);
    int64_t seen = 0, correct = 0;
    int got = ld ? 1 : -1;
    while (got == 1) {
        xg_scope *s = xg_scope_begin();
        xg_tensor *x, *y;
        got = xg_loader_next(ld, &x, &y);
        xg_tensor *pred = got == 1 ? xg_argmax(xg_module_forward(m, x), 1,
                                               false)
                                   : NULL;
        int32_t p[200], t[200];
        int64_t b = got == 1 ? xg_tensor_numel(y) : 0;
        if (got == 1 && (!pred || xg_tensor_read(pred, p, (size_t)b * 4) ||
                         xg_tensor_read(y, t, (size_t)b * 4)))
            got = -1;
        for (int64_t i = 0; got == 1 && i < b; i++)
            correct += p[i] == t[i];
        seen += b;
        xg_scope_end(s);
    }
    xg_loader_free(ld);
    xg_module_set_training(m, true);
    xg_set_grad_enabled(grad);
    *acc = seen ? (double)correct / (double)seen : 0.0;
    return got;
}

/* ---- frozen parameters --------------------------------------------------- */

/* Host copies of every parameter of `m`, concatenated; *n gets the count. */
static float *snapshot(const xg_module *m, int64_t *n)
{
    int64_t total = 0;
    for (int i = 0; i < xg_module_param_count(m); i++)
        total += xg_tensor_numel(xg_module_param(m, i, NULL));
    float *v = malloc((size_t)total * sizeof *v), *at = v;
    for (int i = 0; v && i < xg_module_param_count(m); i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        size_t bytes = (size_t)xg_tensor_numel(p) * sizeof *v;
        if (xg_tensor_read(p, at, bytes) != XG_OK) {
            free(v);
            return NULL;
        }
        at += xg_tensor_numel(p);
    }
    *n = total;
    return v;
}

/* ---- the three phases ---------------------------------------------------- */

/* Trains features + head on classes 0-4 and saves the features. */
static int pretrain(const options *o, const xg_dataset *train_set,
                    const xg_dataset *test_set)
{
    xg_dataset *d = subset(train_set, 0, o->pretrain_limit);
    xg_dataset *t = subset(test_set, 0, 0);
    xg_module *features = d && t ? features_new() : NULL;
    xg_module *m = features ? classifier_new(features) : NULL;
    double acc = 0.0;
    int rc = m ? train(m, d, o->pretrain_epochs, o->lr, "pretrain") : -1;
    if (rc == 0)
        rc = accuracy(m, t, &acc);
    if (rc == 0) {
        printf("pretrained on classes 0-4 (%lld images): test_acc=%.4f\n",
               (long long)d->n, acc);
        rc = xg_module_save(features, o->model_path) == XG_OK ? 0 : -1;
    }
    xg_module_free(m);
    xg_dataset_free(d);
    xg_dataset_free(t);
    return rc;
}

/* Loads and freezes the features, trains a new head on `few`; checks the
 * frozen parameters did not move. */
static int finetune(const options *o, const xg_dataset *few,
                    const xg_dataset *test, double *acc)
{
    xg_module *features = features_new();
    xg_module *m = NULL;
    int64_t n_before = 0, n_after = 0;
    float *before = NULL, *after = NULL;
    int rc = -1;
    if (!features || xg_module_load(features, o->model_path) != XG_OK)
        goto done;
    xg_module_set_frozen(features, true);
    before = snapshot(features, &n_before);
    m = classifier_new(features);
    if (!before || !m || train(m, few, o->epochs, o->lr, "fine-tune") != 0 ||
        !(after = snapshot(features, &n_after)))
        goto done;
    if (n_before != n_after ||
        memcmp(before, after, (size_t)n_before * sizeof *before) != 0) {
        fprintf(stderr, "finetune: frozen parameters changed\n");
        goto done;
    }
    printf("frozen: %lld feature parameters bit-identical after "
           "fine-tuning\n", (long long)n_before);
    rc = accuracy(m, test, acc);
done:
    if (!m)
        xg_module_free(features);
    xg_module_free(m);
    free(before);
    free(after);
    return rc;
}

static int scratch(const options *o, const xg_dataset *few,
                   const xg_dataset *test, double *acc)
{
    xg_module *m = classifier_new(features_new());
    int rc = m ? train(m, few, o->epochs, o->lr, "scratch") : -1;
    if (rc == 0)
        rc = accuracy(m, test, acc);
    xg_module_free(m);
    return rc;
}

/* ---- flags ------------------------------------------------------------------ */

static int parse_count(const char *flag, const char *v, int64_t min,
                       int64_t *out)
{
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n < min) {
        fprintf(stderr, "finetune: %s '%s': expected an integer >= %lld\n",
                flag, v, (long long)min);
        return 2;
    }
    *out = n;
    return 0;
}

static int parse_flags(int argc, char **argv, options *o)
{
    for (int i = 1; i < argc; i++) {
        const char *f = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        int rc = 0;
        if (strcmp(f, "--help") == 0) {
            printf("usage: finetune [--data DIR] [--model PATH] "
                   "[--pretrain-epochs N (1)] [--pretrain-limit N (0: all)] "
                   "[--few N (1000)] [--epochs N (15)] [--lr X (1e-3)]\n");
            return 1;
        }
        if (!v) {
            fprintf(stderr, "finetune: %s needs a value (see --help)\n", f);
            return 2;
        }
        i++;
        if (strcmp(f, "--data") == 0)
            o->data = v;
        else if (strcmp(f, "--model") == 0)
            o->model_path = v;
        else if (strcmp(f, "--pretrain-epochs") == 0)
            rc = parse_count(f, v, 1, &o->pretrain_epochs);
        else if (strcmp(f, "--pretrain-limit") == 0)
            rc = parse_count(f, v, 0, &o->pretrain_limit);
        else if (strcmp(f, "--few") == 0)
            rc = parse_count(f, v, 1, &o->few);
        else if (strcmp(f, "--epochs") == 0)
            rc = parse_count(f, v, 1, &o->epochs);
        else if (strcmp(f, "--lr") == 0) {
            char *end;
            o->lr = strtof(v, &end);
            if (end == v || *end || !(o->lr > 0)) {
                fprintf(stderr, "finetune: --lr '%s': expected a number > 0\n",
                        v);
                rc = 2;
            }
        } else {
            fprintf(stderr, "finetune: unknown flag '%s' (see --help)\n", f);
            rc = 2;
        }
        if (rc)
            return rc;
    }
    return 0;
}

/* ---- main ------------------------------------------------------------------- */

static int run(const options *o, const xg_dataset *train_set,
               const xg_dataset *test_set)
{
    xg_dataset *few = subset(train_set, 5, o->few);
    xg_dataset *test = subset(test_set, 5, 0);
    double fine = 0.0, from_scratch = 0.0;
    int rc = few && test ? pretrain(o, train_set, test_set) : -1;
    if (rc == 0)
        rc = finetune(o, few, test, &fine);
    if (rc == 0)
        rc = scratch(o, few, test, &from_scratch);
    if (rc == 0)
        printf("result: backend=%s model=finetune few=%lld finetune_acc=%.4f "
               "scratch_acc=%.4f\n", xg_device_backend(xg_device_current()),
               (long long)few->n, fine, from_scratch);
    xg_dataset_free(few);
    xg_dataset_free(test);
    return rc;
}

int main(int argc, char **argv)
{
    options o = {.data = DEFAULT_DATA, .model_path = "finetune_features.safetensors",
                 .pretrain_epochs = 1, .few = 1000, .epochs = 15, .lr = 1e-3f};
    int rc = parse_flags(argc, argv, &o);
    if (rc)
        return rc == 1 ? 0 : rc;
    xg_device *dev = xg_device_current();
    xg_dataset *train_set = NULL, *test_set = NULL;
    if (!dev || xg_mnist_load(o.data, "train", MEAN, STD, &train_set) ||
        xg_mnist_load(o.data, "test", MEAN, STD, &test_set)) {
        fprintf(stderr, "finetune: %s%s\n", xg_last_error(),
                dev && !train_set ? " (Debian package dataset-fashion-mnist, "
                                    "or --data DIR)" : "");
        rc = 1;
    } else {
        printf("device: %s (%s)\n", xg_device_name(dev),
               xg_device_backend(dev));
        xg_manual_seed(0);
        rc = run(&o, train_set, test_set) ? 1 : 0;
        if (rc)
            fprintf(stderr, "finetune: %s\n", xg_last_error());
    }
    xg_dataset_free(train_set);
    xg_dataset_free(test_set);
    xg_shutdown();
    return rc;
}
