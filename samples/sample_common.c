/* The parts of the Fashion-MNIST samples that do not depend on the model:
 * flags, data, training loop, progress, evaluation, result line. See
 * sample_common.h. */
#include "sample_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define FMNIST_MEAN 0.2860f /* of the training pixels scaled to [0, 1] */
#define FMNIST_STD 0.3530f
/* Test images per evaluation batch: the CNN's largest activation for 200
 * images is 29 MB, inside the 128 MiB buffer limit of small devices. */
#define EVAL_BATCH 200

typedef struct run {
    const sample_spec *spec;
    sample_options opt;
    xg_device *dev;
    xg_dataset *train, *test;
    xg_loader *train_loader, *test_loader;
    sample_model model;
    xg_optim *optim;
    int32_t *predictions; /* EVAL_BATCH argmax results read back */
    int64_t features;     /* c * h * w */
    int64_t train_samples;
    int64_t first_epoch; /* > 0 after --resume */
    int32_t classes;
    bool tty;
} run;

static const char *prog = "sample"; /* for messages: the spec's prog */

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

static void usage(const sample_spec *spec, FILE *f)
{
    fprintf(f,
            "usage: %s [options]\n"
            "%s\n"
            "  --data DIR          MNIST-format folder (default %s)\n"
            "  --epochs N          passes over the training set (3)\n"
            "  --batch-size N      samples per step (64)\n"
            "  --lr X              learning rate (1e-3)\n"
            "  --optimizer NAME    sgd, adam or adamw (adam)\n"
            "  --lr-schedule NAME  constant, or cosine: decays to 0 over "
            "all the steps\n"
            "  --warmup N          cosine: steps of linear warmup first (0)\n"
            "  --schedule-epochs N cosine: epochs it spans (--epochs)\n"
            "  --augment LIST      training images: flip (mirror at random), "
            "shift=N\n"
            "                      (move up to N pixels), or none (none)\n",
            spec->prog, spec->summary, DEFAULT_DATA);
    for (int i = 0; i < spec->n_flags; i++) {
        const sample_flag *fl = &spec->flags[i];
        char left[32];
        snprintf(left, sizeof left, "%s%s%s", fl->name, fl->arg ? " " : "",
                 fl->arg ? fl->arg : "");
        fprintf(f, "  %-19s %s\n", left, fl->help);
    }
    fprintf(f,
            "  --limit N           use only the first N training samples (0: all)\n"
            "  --seed N            initialisation and shuffling seed (0)\n"
            "  --save PATH         write the trained model (safetensors)\n"
            "  --load PATH         start from a saved model (--epochs 0: "
            "evaluate only)\n"
            "  --checkpoint PATH   write model + optimizer after every epoch\n"
            "  --resume PATH       continue from a checkpoint up to --epochs\n"
            "  --help              this text\n");
}

int sample_bad_value(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "%s: %s '%s': expected %s\n", prog, flag, value, want);
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
        return sample_bad_value(flag, s, want);
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
        return sample_bad_value("--seed", s, "an integer from 0 to 2^64-1");
    *out = v;
    return 0;
}

static int parse_lr(const char *s, double *out)
{
    char *end = NULL;
    errno = 0;
    double v = strtod(s, &end);
    if (end == s || *end != '\0' || errno == ERANGE || !(v > 0.0 && v <= 10.0))
        return sample_bad_value("--lr", s, "a number in (0, 10]");
    *out = v;
    return 0;
}

static int parse_optimizer(const char *s, sample_options *o)
{
    if (strcmp(s, "sgd") && strcmp(s, "adam") && strcmp(s, "adamw"))
        return sample_bad_value("--optimizer", s, "sgd, adam or adamw");
    o->optimizer = s;
    return 0;
}

static int parse_schedule(const char *s, sample_options *o)
{
    if (strcmp(s, "constant") && strcmp(s, "cosine"))
        return sample_bad_value("--lr-schedule", s, "constant or cosine");
    o->cosine = strcmp(s, "cosine") == 0;
    return 0;
}

/* "none", or a comma-separated list of "flip" and "shift=N". */
static int parse_augment(const char *s, sample_options *o)
{
    const char *want = "none, or a list of flip and shift=N (N from 0 to 64)";
    o->hflip = false;
    o->shift = 0;
    if (strcmp(s, "none") == 0)
        return 0;
    for (const char *p = s;;) {
        size_t len = strcspn(p, ",");
        if (len == 4 && strncmp(p, "flip", 4) == 0) {
            o->hflip = true;
        } else if (len > 6 && strncmp(p, "shift=", 6) == 0) {
            char *end = NULL;
            long v = strtol(p + 6, &end, 10);
            if (end != p + len || p[6] < '0' || p[6] > '9' || v > 64)
                return sample_bad_value("--augment", s, want);
            o->shift = (int32_t)v;
        } else {
            return sample_bad_value("--augment", s, want);
        }
        if (p[len] == '\0')
            return 0;
        p += len + 1;
    }
}

/* A common flag with its value; -1 when `flag` is not one of them. */
static int parse_common(sample_options *o, const char *flag, const char *value)
{
    if (strcmp(flag, "--data") == 0) {
        o->data_dir = value;
        o->data_given = true;
        return 0;
    }
    if (strcmp(flag, "--epochs") == 0)
        return parse_i64(flag, value, 0, 100000, &o->epochs);
    const char **path = strcmp(flag, "--save") == 0         ? &o->save
                        : strcmp(flag, "--load") == 0       ? &o->load
                        : strcmp(flag, "--checkpoint") == 0 ? &o->checkpoint
                        : strcmp(flag, "--resume") == 0     ? &o->resume
                                                            : NULL;
    if (path) {
        *path = value;
        return *value ? 0 : sample_bad_value(flag, value, "a file path");
    }
    if (strcmp(flag, "--batch-size") == 0)
        return parse_i64(flag, value, 1, 1 << 20, &o->batch_size);
    if (strcmp(flag, "--limit") == 0)
        return parse_i64(flag, value, 0, INT64_MAX, &o->limit);
    if (strcmp(flag, "--lr") == 0)
        return parse_lr(value, &o->lr);
    if (strcmp(flag, "--optimizer") == 0)
        return parse_optimizer(value, o);
    if (strcmp(flag, "--lr-schedule") == 0)
        return parse_schedule(value, o);
    if (strcmp(flag, "--warmup") == 0)
        return parse_i64(flag, value, 0, INT64_MAX, &o->warmup);
    if (strcmp(flag, "--augment") == 0)
        return parse_augment(value, o);
    if (strcmp(flag, "--schedule-epochs") == 0)
        return parse_i64(flag, value, 1, 100000, &o->schedule_epochs);
    if (strcmp(flag, "--seed") == 0)
        return parse_seed(value, &o->seed);
    return -1;
}

/* The sample's own flag called `flag`, or NULL. */
static const sample_flag *find_flag(const sample_spec *spec, const char *flag)
{
    for (int i = 0; i < spec->n_flags; i++)
        if (strcmp(spec->flags[i].name, flag) == 0)
            return &spec->flags[i];
    return NULL;
}

/* One argument at argv[*i] (which may consume the next one as its value).
 * Returns 0 to go on, 2 on a bad flag. */
static int parse_arg(const sample_spec *spec, sample_options *o, int argc,
                     char **argv, int *i)
{
    char flag[32];
    const char *arg = argv[*i], *eq = strchr(arg, '='), *value = NULL;
    size_t len = eq ? (size_t)(eq - arg) : strlen(arg);
    snprintf(flag, sizeof flag, "%.*s", (int)len, arg);
    const sample_flag *own = find_flag(spec, flag);
    if (own && !own->arg && !eq)
        return own->parse(spec->ctx, NULL);
    if (own && !own->arg) {
        fprintf(stderr, "%s: %s takes no value (see --help)\n", prog, flag);
        return 2;
    }
    if (eq)
        value = eq + 1;
    else if (*i + 1 < argc)
        value = argv[++*i];
    else {
        fprintf(stderr, "%s: %s needs a value (see --help)\n", prog, arg);
        return 2;
    }
    if (own)
        return own->parse(spec->ctx, value);
    int rc = parse_common(o, flag, value);
    if (rc >= 0)
        return rc;
    fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", prog, flag);
    return 2;
}

/* Returns 0 to go on, 1 after --help, 2 on a bad flag. */
static int parse_args(const sample_spec *spec, int argc, char **argv,
                      sample_options *o)
{
    *o = (sample_options){.data_dir = DEFAULT_DATA, .epochs = 3,
                          .batch_size = 64, .lr = 1e-3, .optimizer = "adam"};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(spec, stdout);
            return 1;
        }
        int rc = parse_arg(spec, o, argc, argv, &i);
        if (rc)
            return rc;
    }
    if (!o->cosine && (o->warmup || o->schedule_epochs)) {
        fprintf(stderr, "%s: --warmup and --schedule-epochs shape the cosine "
                "schedule; add --lr-schedule cosine\n", prog);
        return 2;
    }
    if (o->schedule_epochs && o->schedule_epochs < o->epochs) {
        fprintf(stderr, "%s: --schedule-epochs %lld is less than --epochs "
                "%lld: the epochs past it would train at rate 0\n", prog,
                (long long)o->schedule_epochs, (long long)o->epochs);
        return 2;
    }
    if (!o->schedule_epochs)
        o->schedule_epochs = o->epochs;
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
                "%s: Fashion-MNIST is not in %s\n  (%s)\n"
                "  Install the Debian package dataset-fashion-mnist, or pass "
                "--data DIR with a folder that holds\n"
                "  train-images-idx3-ubyte[.gz], "
                "train-labels-idx1-ubyte[.gz] and the t10k-* pair.\n",
                prog, dir, xg_last_error());
        return 1;
    }
    if (st != XG_OK) {
        fprintf(stderr, "%s: loading %s: %s\n", prog, dir, xg_last_error());
        return 1;
    }
    const xg_dataset *a = r->train, *b = r->test;
    r->features = a->channels * a->height * a->width;
    if (r->spec->flatten ? b->channels * b->height * b->width != r->features
                         : b->channels != a->channels ||
                               b->height != a->height || b->width != a->width) {
        fprintf(stderr, "%s: train and test images differ in size\n", prog);
        return 1;
    }
    return 0;
}

/* The --augment setting as the flag spells it: "flip,shift=2", "none". */
static void augment_text(const sample_options *o, char *buf, size_t size)
{
    if (o->hflip && o->shift)
        snprintf(buf, size, "flip,shift=%d", (int)o->shift);
    else if (o->shift)
        snprintf(buf, size, "shift=%d", (int)o->shift);
    else
        snprintf(buf, size, o->hflip ? "flip" : "none");
}

static void print_header(const run *r)
{
    const sample_options *o = &r->opt;
    int64_t params = 0;
    for (int i = 0; i < xg_module_param_count(r->model.module); i++)
        params += xg_tensor_numel(xg_module_param(r->model.module, i, NULL));
    printf("device: %s (%s)\n", xg_device_name(r->dev),
           xg_device_backend(r->dev));
    printf("data: %s: train %lld (using %lld), test %lld\n", o->data_dir,
           (long long)r->train->n, (long long)r->train_samples,
           (long long)r->test->n);
    char schedule[64] = "";
    if (o->cosine)
        snprintf(schedule, sizeof schedule,
                 " (cosine to 0 over %lld epochs, %lld warmup steps)",
                 (long long)o->schedule_epochs, (long long)o->warmup);
    char augment[32];
    augment_text(o, augment, sizeof augment);
    printf("model: %s, %lld parameters; %s lr=%g%s batch=%lld seed=%llu "
           "augment=%s\n", r->model.description, (long long)params,
           o->optimizer, o->lr, schedule, (long long)o->batch_size,
           (unsigned long long)o->seed, augment);
    fflush(stdout);
}

/* Device, data, model, optimizer and loaders; prints what it set up. */
/* ---- model files ---------------------------------------------------------- */

/* Prints "PROG: WHAT PATH: <the library's error>" and returns 1. */
static int file_error(const char *what, const char *path)
{
    fprintf(stderr, "%s: %s %s: %s\n", prog, what, path, xg_last_error());
    return 1;
}

/* The settings a checkpoint records; a resume must match them, or the
 * continued run would not be the run that was interrupted. */
static void run_hparams(const run *r, char (*values)[32], const char **kv)
{
    const sample_options *o = &r->opt;
    snprintf(values[0], 32, "%lld", (long long)o->batch_size);
    snprintf(values[1], 32, "%llu", (unsigned long long)o->seed);
    snprintf(values[2], 32, "%lld", (long long)o->limit);
    /* Under cosine the rate at every step depends on the length of the
     * whole run. */
    if (o->cosine)
        snprintf(values[3], 32, "cosine:%lld:%lld", (long long)o->warmup,
                 (long long)o->schedule_epochs);
    else
        snprintf(values[3], 32, "constant");
    augment_text(o, values[4], 32);
    const char *list[] = {"model", r->model.name, "batch_size", values[0],
                          "seed", values[1], "limit", values[2],
                          "lr_schedule", values[3], "augment", values[4],
                          NULL};
    memcpy(kv, list, sizeof list);
}

enum { N_HPARAMS = 6 };

static int check_resume_settings(const run *r)
{
    char values[N_HPARAMS][32];
    const char *kv[2 * N_HPARAMS + 1];
    run_hparams(r, values, kv);
    xg_safetensors *st = NULL;
    if (xg_safetensors_open(r->opt.resume, &st) != XG_OK)
        return file_error("reading", r->opt.resume);
    int rc = 0;
    for (int i = 0; kv[i] && rc == 0; i += 2) {
        const char *saved = xg_safetensors_metadata(st, kv[i]);
        /* checkpoints from before these flags */
        if (!saved && strcmp(kv[i], "lr_schedule") == 0)
            saved = "constant";
        if (!saved && strcmp(kv[i], "augment") == 0)
            saved = "none";
        if (!saved || strcmp(saved, kv[i + 1]) != 0) {
            fprintf(stderr, "%s: %s: the checkpoint has %s=%s, this run %s; "
                    "resume with the same settings\n", prog, r->opt.resume,
                    kv[i], saved ? saved : "(none)", kv[i + 1]);
            rc = 1;
        }
    }
    xg_safetensors_close(st);
    return rc;
}

/* --load and --resume. */
static int start_from_files(run *r)
{
    const sample_options *o = &r->opt;
    if (o->load && xg_module_load(r->model.module, o->load) != XG_OK)
        return file_error("loading", o->load);
    if (!o->resume)
        return 0;
    xg_train_state state;
    if (check_resume_settings(r))
        return 1;
    if (xg_checkpoint_load(o->resume, r->model.module, r->optim, &state) !=
        XG_OK)
        return file_error("resuming from", o->resume);
    xg_rng_set_state(state.rng_seed, state.rng_offset);
    r->first_epoch = state.epoch;
    printf("resumed: %s after epoch %lld\n", o->resume,
           (long long)state.epoch);
    return 0;
}

/* --checkpoint, after `epochs_done` epochs. */
static int write_checkpoint(const run *r, int64_t epochs_done)
{
    char values[N_HPARAMS][32];
    const char *kv[2 * N_HPARAMS + 1];
    run_hparams(r, values, kv);
    xg_train_state state = {.epoch = epochs_done,
                            .step = xg_optim_steps(r->optim)};
    xg_rng_state(&state.rng_seed, &state.rng_offset);
    if (xg_checkpoint_save(r->opt.checkpoint, r->model.module, r->optim,
                           &state, kv) != XG_OK)
        return file_error("writing", r->opt.checkpoint);
    return 0;
}

static int setup(run *r)
{
    const sample_options *o = &r->opt;
    const xg_dataset *d;
    r->tty = isatty(STDERR_FILENO);
    if (!(r->dev = xg_device_current())) {
        fprintf(stderr, "%s: opening the device: %s\n", prog, xg_last_error());
        return 1;
    }
    if (load_data(r))
        return 1;
    d = r->train;
    r->classes = d->num_classes > r->test->num_classes ? d->num_classes
                                                       : r->test->num_classes;
    xg_manual_seed(o->seed);
    if (r->spec->build(r->spec->ctx, d->channels, d->height, d->width,
                       r->classes, &r->model) == 0)
        r->optim = xg_optim_for_module(r->model.module, o->optimizer,
                                       (float)o->lr);
    if (r->optim)
        r->train_loader = xg_loader_new(r->train, o->batch_size, true, false,
                                        o->seed, o->limit);
    if (r->train_loader && (o->hflip || o->shift)) {
        xg_augment aug = {.hflip = o->hflip, .shift = o->shift,
                          .fill = -FMNIST_MEAN / FMNIST_STD};
        if (xg_loader_set_augment(r->train_loader, &aug) != XG_OK) {
            fprintf(stderr, "%s: --augment: %s\n", prog, xg_last_error());
            return 1;
        }
    }
    if (r->train_loader)
        r->test_loader = xg_loader_new(r->test, EVAL_BATCH, false, false, 0, 0);
    r->predictions = malloc(EVAL_BATCH * sizeof *r->predictions);
    if (!r->test_loader || !r->predictions) {
        fprintf(stderr, "%s: setting up: %s\n", prog,
                r->predictions ? xg_last_error() : "out of memory");
        return 1;
    }
    r->train_samples = o->limit && o->limit < d->n ? o->limit : d->n;
    if (start_from_files(r))
        return 1;
    print_header(r);
    return 0;
}

static void teardown(run *r)
{
    xg_loader_free(r->train_loader);
    xg_loader_free(r->test_loader);
    xg_optim_free(r->optim);
    xg_module_free(r->model.module);
    xg_dataset_free(r->train);
    xg_dataset_free(r->test);
    free(r->predictions);
    xg_shutdown();
}

/* ===== Training ========================================================== */

/* The cosine schedule's rate for the optimizer's next step. The step
 * count comes from the optimizer, which a checkpoint restores, so a resumed
 * run continues the schedule where it stopped. */
static float cosine_lr(const run *r)
{
    const sample_options *o = &r->opt;
    int64_t total = o->schedule_epochs * xg_loader_batches(r->train_loader);
    return xg_lr_cosine((float)o->lr, xg_optim_steps(r->optim), o->warmup,
                        total, 0.0f);
}

/* The model's output for a batch of images [b, c, h, w]. */
static xg_tensor *forward(run *r, xg_tensor *images)
{
    xg_tensor *x = r->spec->flatten
                       ? xg_reshape(images, XG_SHAPE(-1, r->features))
                       : images;
    return xg_module_forward(r->model.module, x);
}

/* Forward, loss, backward, update on one batch. The loss is added to
 * *loss_sum on the device: no host read, so no sync. */
static int train_batch(run *r, xg_tensor *images, xg_tensor *labels,
                       xg_tensor **loss_sum)
{
    if (r->opt.cosine)
        xg_optim_set_lr(r->optim, cosine_lr(r));
    xg_tensor *loss = xg_cross_entropy(forward(r, images), labels);
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
    xg_tensor *pred = xg_argmax(forward(r, images), -1, false);
    if (!pred || xg_tensor_read(pred, r->predictions,
                                (size_t)b * sizeof *r->predictions) != XG_OK)
        return lib_error();
    const int32_t *truth = r->test->labels + *seen; /* loader keeps order */
    for (int64_t k = 0; k < b; k++)
        *correct += r->predictions[k] == truth[k];
    *seen += b;
    return 1;
}

/* Test accuracy in evaluation mode (dropout off, batch norm on its running
 * statistics) without recording a graph. */
static int evaluate(run *r, double *accuracy)
{
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(r->model.module, false);
    xg_loader_start(r->test_loader, 0);
    int64_t seen = 0, correct = 0;
    int got = 1;
    while (got == 1) {
        xg_scope *scope = xg_scope_begin();
        got = scope ? eval_batch(r, &seen, &correct) : lib_error();
        xg_scope_end(scope);
    }
    xg_module_set_training(r->model.module, true);
    xg_set_grad_enabled(grad);
    *accuracy = seen ? (double)correct / (double)seen : 0.0;
    return got;
}

/* ===== Main ============================================================== */

static int train(run *r)
{
    const sample_options *o = &r->opt;
    double train_seconds = 0.0, accuracy = 0.0;
    int64_t trained = 0;
    for (int64_t e = r->first_epoch; e < o->epochs; e++, trained++) {
        epoch_stats st;
        if (train_epoch(r, e, &st) < 0 || evaluate(r, &accuracy) < 0) {
            fprintf(stderr, "%s: %s\n", prog, xg_last_error());
            return 1;
        }
        if (o->checkpoint && write_checkpoint(r, e + 1))
            return 1;
        train_seconds += st.seconds;
        char lr[32] = ""; /* under a schedule, the rate of the last step */
        if (o->cosine)
            snprintf(lr, sizeof lr, " lr=%.3g", (double)xg_optim_lr(r->optim));
        printf("epoch %lld/%lld: train_loss=%.4f test_acc=%.4f time=%.1fs "
               "samples/s=%.0f%s\n", (long long)e + 1, (long long)o->epochs,
               st.loss, accuracy, st.seconds,
               (double)r->train_samples / st.seconds, lr);
        fflush(stdout);
    }
    if (trained == 0 && evaluate(r, &accuracy) < 0) { /* nothing to train */
        fprintf(stderr, "%s: %s\n", prog, xg_last_error());
        return 1;
    }
    if (o->save && xg_module_save(r->model.module, o->save) != XG_OK)
        return file_error("writing", o->save);
    printf("result: backend=%s model=%s epochs=%lld train_samples=%lld "
           "test_acc=%.4f samples_per_s=%.0f\n", xg_device_backend(r->dev),
           r->model.name, (long long)o->epochs, (long long)r->train_samples,
           accuracy, trained ? (double)(r->train_samples * trained) /
                                   train_seconds
                             : 0.0);
    return 0;
}

int sample_main(const sample_spec *spec, int argc, char **argv)
{
    run r = {.spec = spec};
    prog = spec->prog;
    int rc = parse_args(spec, argc, argv, &r.opt);
    if (rc)
        return rc == 1 ? 0 : 2;
    rc = setup(&r);
    if (rc == 0)
        rc = train(&r);
    teardown(&r);
    return rc;
}
