/* finetune: transfer learning with a saved model.
 *
 * 1. Pretrains the CNN of mnist_cnn (sample_cnn.h) on Fashion-MNIST classes
 *    0-4 and saves its convolutional layers (the features) to --model.
 * 2. Loads the features into a new network, freezes them, puts a new head
 *    (the two fully connected layers) for classes 5-9 on top and trains
 *    only the head on a small labelled set (--few, 1000 images).
 * 3. Trains the same network from scratch on the same small set.
 * Both are scored on the test images of classes 5-9, and the frozen
 * parameters are checked to be bit-identical after fine-tuning.
 *
 * Every phase trains with the samples' shared loop, so the common flags of
 * sample_common.h apply (all but --limit and the model files --save,
 * --load, --checkpoint, --resume); finetune's own:
 *   --model PATH          keep the features' file at PATH (without it they
 *                         go to a temporary folder, removed at the end)
 *   --pretrain-epochs N   epochs of pretraining (1)
 *   --pretrain-limit N    pretrain on the first N images of classes 0-4
 *                         (0: all)
 *   --few N               images of classes 5-9 to fine-tune on (1000)
 * --epochs (15, at least 1) counts the epochs of fine-tuning and of
 * training from scratch; --seed N seeds the initialisation with N and the
 * shuffling with N + 1; a cosine schedule spans --pretrain-epochs in
 * pretraining, --schedule-epochs (or --epochs) in the other two phases.
 * Each phase's lines start with its name (pretrain, finetune, scratch).
 * Without --log a phase is scored after its last epoch only; with --log
 * run.csv after every epoch, and the phases write run-pretrain.csv,
 * run-finetune.csv and run-scratch.csv.
 *
 * Output: the device, each phase's epoch lines, the pretrained accuracy
 * (classes 0-4), the frozen-parameter check, then the last line
 *   result: backend=cpu model=finetune few=1000 finetune_acc=0.91 scratch_acc=0.83
 * Exit status: 0 on success, 1 on a library, data or file error, 2 on bad
 * flags.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "sample_cnn.h"
#include "sample_common.h"

typedef struct ft_options {
    const char *model_path;
    bool temp_path; /* model_path is this process's own temporary file */
    int64_t pretrain_epochs, pretrain_limit, few;
} ft_options;

/* Prints "finetune: WHAT[ PATH]: <the library's error>"; returns 1. */
static int lib_fail(const char *what, const char *path)
{
    fprintf(stderr, "finetune: %s%s%s: %s\n", what, path ? " " : "",
            path ? path : "", xg_last_error());
    return 1;
}

static int out_of_memory(void)
{
    fprintf(stderr, "finetune: out of memory\n");
    return 1;
}

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

/* The CNN's features for images of `channels` channels, alone in a
 * sequential (named "0.weight", ... as they are saved). */
static xg_module *features_new(int64_t channels)
{
    xg_module *f = xg_sequential();
    if (f && !sample_cnn_append_features(f, channels, false)) {
        xg_module_free(f);
        return NULL;
    }
    return f;
}

/* Adds `child` (NULL: an earlier error) to `seq`, which owns it then, also
 * on error. */
static bool add(xg_module *seq, const char *name, xg_module *child)
{
    return child && xg_sequential_add(seq, name, child) == XG_OK;
}

/* The CNN's head for 5 classes of images h x w, alone in a sequential. */
static xg_module *head_new(int64_t h, int64_t w)
{
    xg_module *head = xg_sequential();
    if (head && !sample_cnn_append_head(head, sample_cnn_flat(h, w), 5)) {
        xg_module_free(head);
        return NULL;
    }
    return head;
}

/* `features` (owned by the result, also on error; NULL: an earlier error)
 * + a new head, for images h x w. */
static xg_module *classifier_new(xg_module *features, int64_t h, int64_t w)
{
    xg_module *m = xg_sequential();
    if (!m || !add(m, "features", features)) {
        xg_module_free(m ? m : features);
        return NULL;
    }
    if (!add(m, "head", head_new(h, w))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- training and scoring ------------------------------------------------ */

/* Trains `m` on `train` for `epochs` epochs (a cosine schedule spanning
 * `schedule`) with the shared loop as `phase`; *acc gets its accuracy on
 * `test`. Returns 0, or 1 after reporting an error. */
static int fit(const sample_session *s, const char *phase, xg_module *m,
               const xg_dataset *train, const xg_dataset *test,
               int64_t epochs, int64_t schedule, double *acc)
{
    sample_job job = {.phase = phase, .module = m, .train = train,
                      .test = test, .shuffle_seed = s->opt->seed + 1,
                      .epochs = epochs, .schedule_epochs = schedule,
                      .eval_each_epoch = s->opt->log != NULL};
    sample_trainer *t = sample_trainer_new(s, &job);
    sample_outcome out = {0};
    int rc = t ? sample_trainer_run(t, 0, &out) : 1;
    sample_trainer_free(t);
    *acc = out.accuracy;
    return rc;
}

/* ---- frozen parameters --------------------------------------------------- */

/* Host copies of every parameter of `m`, concatenated; *n gets the count.
 * NULL after reporting an error. */
static float *snapshot(const xg_module *m, int64_t *n)
{
    int64_t total = 0;
    for (int i = 0; i < xg_module_param_count(m); i++)
        total += xg_tensor_numel(xg_module_param(m, i, NULL));
    float *v = malloc((size_t)total * sizeof *v), *at = v;
    if (!v)
        out_of_memory();
    for (int i = 0; v && i < xg_module_param_count(m); i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        size_t bytes = (size_t)xg_tensor_numel(p) * sizeof *v;
        if (xg_tensor_read(p, at, bytes) != XG_OK) {
            lib_fail("reading the features", NULL);
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
static int pretrain(const ft_options *o, const sample_session *s)
{
    const xg_dataset *src = s->train;
    xg_dataset *d = subset(src, 0, o->pretrain_limit);
    xg_dataset *t = subset(s->test, 0, 0);
    xg_module *features = d && t ? features_new(src->channels) : NULL;
    xg_module *m = features ? classifier_new(features, src->height,
                                             src->width)
                            : NULL;
    double acc = 0.0;
    int rc = !d || !t ? out_of_memory()
             : !m     ? lib_fail("building the model", NULL)
                      : fit(s, "pretrain", m, d, t, o->pretrain_epochs,
                            o->pretrain_epochs, &acc);
    if (rc == 0) {
        printf("pretrained on classes 0-4 (%lld images): test_acc=%.4f\n",
               (long long)d->n, acc);
        /* Data-parallel: every rank has the same features; rank 0 writes
         * a shared --model file, and the others wait until it is there. */
        if ((o->temp_path || xg_dist_rank() == 0) &&
            xg_module_save(features, o->model_path) != XG_OK)
            rc = lib_fail("writing", o->model_path);
        double written = 0.0;
        if (rc == 0 && xg_dist_sum(&written, 1) != XG_OK)
            rc = lib_fail("waiting for rank 0's file", NULL);
    }
    xg_module_free(m);
    xg_dataset_free(d);
    xg_dataset_free(t);
    return rc;
}

/* Whether the frozen features kept the values `before` (n of them). */
static int check_frozen(const xg_module *features, const float *before,
                        int64_t n)
{
    int64_t n_after = 0;
    float *after = snapshot(features, &n_after);
    if (!after)
        return 1;
    int rc = n_after != n || memcmp(before, after, (size_t)n * sizeof *after);
    free(after);
    if (rc) {
        fprintf(stderr, "finetune: frozen parameters changed\n");
        return 1;
    }
    printf("frozen: %lld feature parameters bit-identical after "
           "fine-tuning\n", (long long)n);
    return 0;
}

/* Loads and freezes the features, trains a new head on `few`; checks the
 * frozen parameters did not move. */
static int finetune(const ft_options *o, const sample_session *s,
                    const xg_dataset *few, const xg_dataset *test,
                    double *acc)
{
    const xg_dataset *src = s->train;
    xg_module *features = features_new(src->channels), *m = NULL;
    int64_t n = 0;
    float *before = NULL;
    int rc = 1;
    if (!features || xg_module_load(features, o->model_path) != XG_OK) {
        xg_module_free(features);
        return lib_fail("loading", o->model_path);
    }
    xg_module_set_frozen(features, true);
    before = snapshot(features, &n);
    m = classifier_new(features, src->height, src->width); /* owns features */
    if (before && !m)
        lib_fail("building the model", NULL);
    if (before && m)
        rc = fit(s, "finetune", m, few, test, s->opt->epochs,
                 s->opt->schedule_epochs, acc);
    if (rc == 0)
        rc = check_frozen(features, before, n);
    xg_module_free(m);
    free(before);
    return rc;
}

static int scratch(const sample_session *s, const xg_dataset *few,
                   const xg_dataset *test, double *acc)
{
    const xg_dataset *src = s->train;
    xg_module *m = classifier_new(features_new(src->channels), src->height,
                                  src->width);
    int rc = m ? fit(s, "scratch", m, few, test, s->opt->epochs,
                     s->opt->schedule_epochs, acc)
               : lib_fail("building the model", NULL);
    xg_module_free(m);
    return rc;
}

/* ---- flags ------------------------------------------------------------------ */

static int parse_model(void *ctx, const char *value)
{
    ((ft_options *)ctx)->model_path = value;
    return *value ? 0 : sample_bad_value("--model", value, "a file path");
}

static int parse_pretrain_epochs(void *ctx, const char *value)
{
    return sample_parse_int("--pretrain-epochs", value, 1, 100000,
                            &((ft_options *)ctx)->pretrain_epochs);
}

static int parse_pretrain_limit(void *ctx, const char *value)
{
    return sample_parse_int("--pretrain-limit", value, 0, INT64_MAX,
                            &((ft_options *)ctx)->pretrain_limit);
}

static int parse_few(void *ctx, const char *value)
{
    return sample_parse_int("--few", value, 1, INT64_MAX,
                            &((ft_options *)ctx)->few);
}

/* Fine-tuning needs at least an epoch. */
static int check_epochs(void *ctx, const sample_options *o)
{
    (void)ctx;
    if (o->epochs >= 1)
        return 0;
    fprintf(stderr, "finetune: --epochs %lld: expected at least 1\n",
            (long long)o->epochs);
    return 2;
}

/* ---- main ------------------------------------------------------------------- */

/* Without --model the features go to features.safetensors in a new
 * temporary folder ($TMPDIR or /tmp), which run removes at the end. */
static int temp_model_path(ft_options *o, char *dir, size_t dir_cap,
                           char *path, size_t path_cap)
{
    const char *tmp = getenv("TMPDIR");
    snprintf(dir, dir_cap, "%s/xgrad-finetune-XXXXXX",
             tmp && *tmp ? tmp : "/tmp");
    if (!mkdtemp(dir)) {
        fprintf(stderr, "finetune: making a temporary folder %s: %s\n", dir,
                strerror(errno));
        return 1;
    }
    snprintf(path, path_cap, "%s/features.safetensors", dir);
    o->model_path = path;
    o->temp_path = true;
    return 0;
}

static int run(void *ctx, const sample_session *s)
{
    ft_options *o = ctx;
    char dir[4096] = "", path[4200];
    if (!o->model_path && temp_model_path(o, dir, sizeof dir, path,
                                          sizeof path) != 0)
        return 1;
    printf("device: %s (%s)\nprecision: %s\n", xg_device_name(s->dev),
           xg_device_backend(s->dev), s->opt->precision);
    sample_print_dist(s->opt->batch_size);
    xg_dataset *few = subset(s->train, 5, o->few);
    xg_dataset *test = subset(s->test, 5, 0);
    double fine = 0.0, from_scratch = 0.0;
    int rc = few && test ? pretrain(o, s) : out_of_memory();
    if (rc == 0)
        rc = finetune(o, s, few, test, &fine);
    if (rc == 0)
        rc = scratch(s, few, test, &from_scratch);
    if (rc == 0)
        printf("result: backend=%s model=finetune few=%lld finetune_acc=%.4f "
               "scratch_acc=%.4f\n", xg_device_backend(s->dev),
               (long long)few->n, fine, from_scratch);
    xg_dataset_free(few);
    xg_dataset_free(test);
    if (*dir) {
        remove(path);
        rmdir(dir);
        o->model_path = NULL;
        o->temp_path = false;
    }
    return rc;
}

int main(int argc, char **argv)
{
    ft_options ft = {.model_path = NULL, .pretrain_epochs = 1,
                     .pretrain_limit = 0, .few = 1000};
    static const sample_flag flags[] = {
        {"--model", "PATH", "keep the features' file at PATH (default: a "
         "temporary folder)", parse_model},
        {"--pretrain-epochs", "N", "epochs of pretraining (1)",
         parse_pretrain_epochs},
        {"--pretrain-limit", "N", "pretrain on the first N images of "
         "classes 0-4 (0: all)", parse_pretrain_limit},
        {"--few", "N", "images of classes 5-9 to fine-tune on (1000)",
         parse_few},
    };
    const sample_spec spec = {
        .prog = "finetune",
        .summary = "Pretrains the CNN on Fashion-MNIST classes 0-4, "
                   "fine-tunes a new head for classes 5-9\n"
                   "on the frozen features and compares with training "
                   "from scratch. --epochs counts\n"
                   "the fine-tuning and from-scratch epochs; --seed N "
                   "shuffles with N + 1.",
        .flags = flags,
        .n_flags = 4,
        .ctx = &ft,
        .omit = SAMPLE_OMIT_FILES | SAMPLE_OMIT_LIMIT,
        .default_epochs = 15,
        .check = check_epochs,
        .run = run,
    };
    return sample_main(&spec, argc, argv);
}
