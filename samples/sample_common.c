/* The parts of the Fashion-MNIST samples around the training loop
 * (sample_train.c): flags, data, model files, the header and the result
 * line. See sample_common.h. */
#include "sample_common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_DATA "/usr/share/datasets/fashion-mnist"
#define FMNIST_MEAN 0.2860f /* of the training pixels scaled to [0, 1] */
#define FMNIST_STD 0.3530f
#define DEFAULT_EPOCHS 3
#define DEFAULT_LOG_EVERY 20

/* A single-model sample's run (spec.build). */
typedef struct run {
    const sample_spec *spec;
    const sample_session *s;
    const sample_options *opt; /* s->opt */
    sample_model model;
    sample_trainer *trainer;
    int64_t first_epoch; /* > 0 after --resume */
} run;

static const char *prog = "sample"; /* for messages: the spec's prog */

/* ===== Flags ============================================================= */

/* A common flag as the usage lists it. */
typedef struct common_flag {
    const char *name, *arg, *help;
    unsigned omit; /* the SAMPLE_OMIT_* bit that leaves it out, or 0 */
} common_flag;

/* In the usage's order; a sample's own flags come after --augment. */
static const common_flag common_flags[] = {
    {"--data", "DIR", "MNIST-format folder (default " DEFAULT_DATA ")", 0},
    {"--epochs", "N", "passes over the training set", 0},
    {"--batch-size", "N", "samples per step (64)", 0},
    {"--lr", "X", "learning rate (1e-3)", 0},
    {"--optimizer", "NAME", "sgd, adam or adamw (adam)", 0},
    {"--lr-schedule", "NAME", "constant, or cosine: decays to 0 over all "
     "the steps", 0},
    {"--warmup", "N", "cosine: steps of linear warmup first (0)", 0},
    {"--schedule-epochs", "N", "cosine: epochs it spans (--epochs)", 0},
    {"--augment", "LIST", "training images: flip (mirror at random), "
     "shift=N\n                      (move up to N pixels), or none (none)",
     0},
    {"--limit", "N", "use only the first N training samples (0: all)",
     SAMPLE_OMIT_LIMIT},
    {"--eval-limit", "N", "evaluate on the first N test samples (0: all)",
     0},
    {"--seed", "N", "initialisation and shuffling seed (0)", 0},
    {"--save", "PATH", "write the trained model (safetensors)",
     SAMPLE_OMIT_FILES},
    {"--load", "PATH", "start from a saved model (--epochs 0: evaluate "
     "only)", SAMPLE_OMIT_FILES},
    {"--checkpoint", "PATH", "write model + optimizer after every epoch",
     SAMPLE_OMIT_FILES},
    {"--resume", "PATH", "continue from a checkpoint up to --epochs",
     SAMPLE_OMIT_FILES},
    {"--log", "FILE.csv", "write a CSV log: loss, rate, speed, accuracy",
     0},
    {"--log-every", "N", "steps per training row of the log (20)", 0},
    {"--precision", "NAME", "f32, or mixed: bf16 (autocast) or f16 "
     "(autocast,\n                      loss scaling) (f32)", 0},
};
enum { N_COMMON = sizeof common_flags / sizeof common_flags[0] };

static int64_t default_epochs(const sample_spec *spec)
{
    return spec->default_epochs ? spec->default_epochs : DEFAULT_EPOCHS;
}

/* "  --name ARG          help" */
static void usage_line(FILE *f, const char *name, const char *arg,
                       const char *help)
{
    char left[32];
    snprintf(left, sizeof left, "%s%s%s", name, arg ? " " : "",
             arg ? arg : "");
    fprintf(f, "  %-19s %s\n", left, help);
}

static void usage(const sample_spec *spec, FILE *f)
{
    fprintf(f, "usage: %s [options]\n%s\n", spec->prog, spec->summary);
    for (int i = 0; i < N_COMMON; i++) {
        const common_flag *c = &common_flags[i];
        char help[64];
        if (strcmp(c->name, "--limit") == 0) /* the sample's own first */
            for (int k = 0; k < spec->n_flags; k++)
                usage_line(f, spec->flags[k].name, spec->flags[k].arg,
                           spec->flags[k].help);
        if (c->omit & spec->omit)
            continue;
        if (strcmp(c->name, "--epochs") == 0) {
            snprintf(help, sizeof help, "%s (%lld)", c->help,
                     (long long)default_epochs(spec));
            usage_line(f, c->name, c->arg, help);
        } else {
            usage_line(f, c->name, c->arg, c->help);
        }
    }
    usage_line(f, "--help", NULL, "this text");
}

void sample_set_prog(const char *name)
{
    prog = name;
}

/* ===== Data-parallel runs ================================================ */

int sample_dist_begin(int *argc, char ***argv)
{
    if (xg_dist_init(argc, argv) != XG_OK) {
        fprintf(stderr, "%s: joining the MPI job: %s\n", prog,
                xg_last_error());
        return 1;
    }
    /* Rank 0 alone speaks: the others' output would repeat it. Their
     * errors still go to stderr. */
    if (xg_dist_rank() != 0 && !freopen("/dev/null", "w", stdout)) {
        fprintf(stderr, "%s: rank %d: silencing stdout failed\n", prog,
                xg_dist_rank());
        return 1;
    }
    return 0;
}

int sample_dist_end(int rc)
{
    if (rc != 0 && xg_dist_world_size() > 1) {
        fprintf(stderr, "%s: rank %d of %d failed (exit %d); ending the "
                "job\n", prog, xg_dist_rank(), xg_dist_world_size(), rc);
        fflush(NULL);
        xg_dist_abort(rc);
    }
    if (xg_dist_finalize() != XG_OK && rc == 0) {
        fprintf(stderr, "%s: leaving the MPI job: %s\n", prog,
                xg_last_error());
        rc = 1;
    }
    return rc;
}

void sample_dist_rank_rng(void)
{
    int rank = xg_dist_rank();
    if (rank == 0)
        return;
    uint64_t seed = 0, offset = 0;
    xg_rng_state(&seed, &offset);
    /* splitmix64's finaliser over (seed, rank): not an involution, so a
     * second call gives yet another stream, never rank 0's. */
    uint64_t z = seed + 0x9E3779B97F4A7C15u * (uint64_t)rank;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9u;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBu;
    xg_rng_set_state(z ^ (z >> 31), offset);
}

void sample_print_dist(int64_t batch)
{
    int world = xg_dist_world_size();
    if (world > 1)
        printf("data-parallel: %d ranks x batch %lld = %lld per step; "
               "gradients averaged over the ranks; BatchNorm statistics "
               "per rank\n", world, (long long)batch,
               (long long)batch * world);
}

void sample_print_sync_stats(const xg_grad_sync *sync, const char *phase)
{
    xg_grad_sync_stats st;
    xg_grad_sync_get_stats(sync, &st);
    if (!sync || xg_dist_world_size() < 2 || st.reductions == 0)
        return;
    double n = (double)st.reductions;
    printf("%s%sgradient sync: %lld steps, %lld buckets, %.0f bytes per "
           "step; per step: backward %.2f ms, staging %.2f ms, waiting for "
           "the sums %.2f ms\n", phase ? phase : "", phase ? " " : "",
           (long long)st.reductions, (long long)st.buckets,
           (double)st.bytes / n, 1e3 * st.backward_s / n,
           1e3 * st.stage_s / n, 1e3 * st.wait_s / n);
}

int sample_bad_value(const char *flag, const char *value, const char *want)
{
    fprintf(stderr, "%s: %s '%s': expected %s\n", prog, flag, value, want);
    return 2;
}

int sample_parse_int(const char *flag, const char *s, int64_t min,
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

int sample_parse_precision(const char *s, const char **out)
{
    static const char *const names[] = {"f32", "bf16", "f16"};
    for (int i = 0; i < 3; i++)
        if (strcmp(s, names[i]) == 0) {
            *out = names[i];
            return 0;
        }
    return sample_bad_value("--precision", s, "f32, bf16 or f16");
}

xg_dtype sample_precision_dtype(const char *precision)
{
    return strcmp(precision, "bf16") == 0  ? XG_BF16
           : strcmp(precision, "f16") == 0 ? XG_F16
                                           : XG_F32;
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
        return *value ? 0 : sample_bad_value(flag, value, "a folder");
    }
    if (strcmp(flag, "--epochs") == 0)
        return sample_parse_int(flag, value, 0, 100000, &o->epochs);
    const char **path = strcmp(flag, "--save") == 0         ? &o->save
                        : strcmp(flag, "--load") == 0       ? &o->load
                        : strcmp(flag, "--checkpoint") == 0 ? &o->checkpoint
                        : strcmp(flag, "--resume") == 0     ? &o->resume
                        : strcmp(flag, "--log") == 0        ? &o->log
                                                            : NULL;
    if (path) {
        *path = value;
        return *value ? 0 : sample_bad_value(flag, value, "a file path");
    }
    if (strcmp(flag, "--batch-size") == 0)
        return sample_parse_int(flag, value, 1, 1 << 20, &o->batch_size);
    if (strcmp(flag, "--limit") == 0)
        return sample_parse_int(flag, value, 0, INT64_MAX, &o->limit);
    if (strcmp(flag, "--eval-limit") == 0)
        return sample_parse_int(flag, value, 0, INT64_MAX, &o->eval_limit);
    if (strcmp(flag, "--lr") == 0)
        return parse_lr(value, &o->lr);
    if (strcmp(flag, "--optimizer") == 0)
        return parse_optimizer(value, o);
    if (strcmp(flag, "--lr-schedule") == 0)
        return parse_schedule(value, o);
    if (strcmp(flag, "--warmup") == 0)
        return sample_parse_int(flag, value, 0, INT64_MAX, &o->warmup);
    if (strcmp(flag, "--augment") == 0)
        return parse_augment(value, o);
    if (strcmp(flag, "--schedule-epochs") == 0)
        return sample_parse_int(flag, value, 1, 100000, &o->schedule_epochs);
    if (strcmp(flag, "--seed") == 0)
        return parse_seed(value, &o->seed);
    if (strcmp(flag, "--log-every") == 0)
        return sample_parse_int(flag, value, 1, 1 << 30, &o->log_every);
    if (strcmp(flag, "--precision") == 0)
        return sample_parse_precision(value, &o->precision);
    return -1;
}

/* Whether `flag` is a common flag this sample takes. */
static bool takes_common(const sample_spec *spec, const char *flag)
{
    for (int i = 0; i < N_COMMON; i++)
        if (strcmp(common_flags[i].name, flag) == 0)
            return !(common_flags[i].omit & spec->omit);
    return false;
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
    int rc = takes_common(spec, flag) ? parse_common(o, flag, value) : -1;
    if (rc >= 0)
        return rc;
    fprintf(stderr, "%s: unknown flag '%s' (see --help)\n", prog, flag);
    return 2;
}

/* Returns 0 to go on, 1 after --help, 2 on a bad flag. */
static int parse_args(const sample_spec *spec, int argc, char **argv,
                      sample_options *o)
{
    *o = (sample_options){.data_dir = DEFAULT_DATA,
                          .epochs = default_epochs(spec), .batch_size = 64,
                          .lr = 1e-3, .optimizer = "adam",
                          .precision = "f32"};
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
    if (o->log_every && !o->log) {
        fprintf(stderr, "%s: --log-every sets the rows of the log; add "
                "--log FILE.csv\n", prog);
        return 2;
    }
    if (!o->schedule_epochs)
        o->schedule_epochs = o->epochs;
    if (!o->log_every)
        o->log_every = DEFAULT_LOG_EVERY;
    return spec->check ? spec->check(spec->ctx, o) : 0;
}

/* ===== Data ============================================================== */

/* Loads the --data folder's train and test sets into *train and *test
 * (the caller frees them, also on error). Returns 0, or 1 after reporting
 * an error. */
static int load_data(const sample_spec *spec, const sample_options *o,
                     xg_dataset **train, xg_dataset **test)
{
    const char *dir = o->data_dir;
    xg_status st = xg_mnist_load(dir, "train", FMNIST_MEAN, FMNIST_STD, train);
    if (st == XG_OK)
        st = xg_mnist_load(dir, "test", FMNIST_MEAN, FMNIST_STD, test);
    if (st == XG_ERR_NOT_FOUND && !o->data_given) {
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
    const xg_dataset *a = *train, *b = *test;
    int64_t features = a->channels * a->height * a->width;
    if (spec->flatten ? b->channels * b->height * b->width != features
                      : b->channels != a->channels ||
                            b->height != a->height || b->width != a->width) {
        fprintf(stderr, "%s: train and test images differ in size\n", prog);
        return 1;
    }
    return 0;
}

/* ===== A single model (spec.build) ======================================= */

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
    const sample_options *o = r->opt;
    const xg_dataset *train = r->s->train;
    int64_t params = 0;
    for (int i = 0; i < xg_module_param_count(r->model.module); i++)
        params += xg_tensor_numel(xg_module_param(r->model.module, i, NULL));
    printf("device: %s (%s)\n", xg_device_name(r->s->dev),
           xg_device_backend(r->s->dev));
    int64_t test_n = r->s->test->n;
    int64_t tested = o->eval_limit && o->eval_limit < test_n ? o->eval_limit
                                                             : test_n;
    printf("data: %s: train %lld (using %lld), test %lld (using %lld)\n",
           o->data_dir, (long long)train->n,
           (long long)(o->limit && o->limit < train->n ? o->limit : train->n),
           (long long)test_n,
           (long long)tested);
    char schedule[64] = "";
    if (o->cosine)
        snprintf(schedule, sizeof schedule,
                 " (cosine to 0 over %lld epochs, %lld warmup steps)",
                 (long long)o->schedule_epochs, (long long)o->warmup);
    char augment[32];
    augment_text(o, augment, sizeof augment);
    printf("model: %s, %lld parameters; %s lr=%g%s batch=%lld seed=%llu "
           "augment=%s precision=%s\n", r->model.description,
           (long long)params, o->optimizer, o->lr, schedule,
           (long long)o->batch_size, (unsigned long long)o->seed, augment,
           o->precision);
    sample_print_dist(o->batch_size);
    fflush(stdout);
}

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
    const sample_options *o = r->opt;
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
    /* --lr: the rate the schedule starts from (the checkpoint's optimizer
     * holds the rate of its last step). */
    snprintf(values[5], 32, "%.9g", o->lr);
    /* Each rank's batch and shard depend on the number of ranks. */
    snprintf(values[6], 32, "%d", xg_dist_world_size());
    /* Another precision would round every step differently. */
    const char *list[] = {"model", r->model.name, "batch_size", values[0],
                          "seed", values[1], "limit", values[2],
                          "lr_schedule", values[3], "augment", values[4],
                          "base_lr", values[5], "world_size", values[6],
                          "precision", o->precision, NULL};
    memcpy(kv, list, sizeof list);
}

enum { N_HPARAMS = 9 };

static int check_resume_settings(const run *r)
{
    char values[N_HPARAMS][32];
    const char *kv[2 * N_HPARAMS + 1];
    run_hparams(r, values, kv);
    xg_safetensors *st = NULL;
    if (xg_safetensors_open(r->opt->resume, &st) != XG_OK)
        return file_error("reading", r->opt->resume);
    int rc = 0;
    for (int i = 0; kv[i] && rc == 0; i += 2) {
        const char *saved = xg_safetensors_metadata(st, kv[i]);
        /* checkpoints from before these flags */
        if (!saved && strcmp(kv[i], "lr_schedule") == 0)
            saved = "constant";
        if (!saved && strcmp(kv[i], "augment") == 0)
            saved = "none";
        if (!saved && strcmp(kv[i], "base_lr") == 0)
            continue; /* not recorded before: the checkpoint's rate rules */
        if (!saved && strcmp(kv[i], "world_size") == 0)
            saved = "1";
        if (!saved && strcmp(kv[i], "precision") == 0)
            saved = "f32";
        if (!saved || strcmp(saved, kv[i + 1]) != 0) {
            fprintf(stderr, "%s: %s: the checkpoint has %s=%s, this run %s; "
                    "resume with the same settings\n", prog, r->opt->resume,
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
    const sample_options *o = r->opt;
    if (o->load && xg_module_load(r->model.module, o->load) != XG_OK)
        return file_error("loading", o->load);
    if (!o->resume)
        return 0;
    xg_train_state state;
    if (check_resume_settings(r))
        return 1;
    if (xg_checkpoint_load(o->resume, r->model.module,
                           sample_trainer_optim(r->trainer), &state) != XG_OK)
        return file_error("resuming from", o->resume);
    xg_rng_set_state(state.rng_seed, state.rng_offset);
    xg_grad_scaler *scaler = sample_trainer_scaler(r->trainer);
    if (scaler && (state.loss_scale <= 0 ||
                   xg_grad_scaler_set_state(scaler, state.loss_scale,
                                            state.loss_scale_growth) !=
                       XG_OK)) {
        fprintf(stderr, "%s: resuming from %s: %s\n", prog, o->resume,
                state.loss_scale <= 0 ? "the checkpoint has no loss scale"
                                      : xg_last_error());
        return 1;
    }
    r->first_epoch = state.epoch;
    printf("resumed: %s after epoch %lld\n", o->resume,
           (long long)state.epoch);
    return 0;
}

/* --checkpoint after `epochs_done` epochs: the trainer's after_epoch, with
 * the run as ctx. */
static int write_checkpoint(void *ctx, int64_t epochs_done)
{
    const run *r = ctx;
    if (xg_dist_rank() != 0) /* rank 0's file stands for all */
        return 0;
    xg_optim *optim = sample_trainer_optim(r->trainer);
    char values[N_HPARAMS][32];
    const char *kv[2 * N_HPARAMS + 1];
    run_hparams(r, values, kv);
    xg_grad_scaler *scaler = sample_trainer_scaler(r->trainer);
    xg_train_state state = {
        .epoch = epochs_done, .step = xg_optim_steps(optim),
        .loss_scale = xg_grad_scaler_get_scale(scaler), /* 0: none */
        .loss_scale_growth = xg_grad_scaler_growth_tracker(scaler)};
    xg_rng_state(&state.rng_seed, &state.rng_offset);
    if (xg_checkpoint_save(r->opt->checkpoint, r->model.module, optim, &state,
                           kv) != XG_OK)
        return file_error("writing", r->opt->checkpoint);
    return 0;
}

/* ---- the run -------------------------------------------------------------- */

/* The model and its trainer; then --load, --resume and the header. */
static int set_up(run *r)
{
    const sample_options *o = r->opt;
    const xg_dataset *d = r->s->train;
    int32_t classes = d->num_classes > r->s->test->num_classes
                          ? d->num_classes
                          : r->s->test->num_classes;
    if (r->spec->build(r->spec->ctx, d->channels, d->height, d->width,
                       classes, &r->model) != 0) {
        fprintf(stderr, "%s: setting up: %s\n", prog, xg_last_error());
        return 1;
    }
    sample_job job = {
        .module = r->model.module,
        .flatten = r->spec->flatten,
        .train = d,
        .test = r->s->test,
        .limit = o->limit,
        .shuffle_seed = o->seed,
        .epochs = o->epochs,
        .schedule_epochs = o->schedule_epochs,
        .eval_each_epoch = true,
        .after_epoch = o->checkpoint ? write_checkpoint : NULL,
        .ctx = r,
    };
    if (!(r->trainer = sample_trainer_new(r->s, &job)) ||
        start_from_files(r))
        return 1;
    print_header(r);
    return 0;
}

/* Trains, saves (--save) and prints the result line. */
static int train(run *r)
{
    const sample_options *o = r->opt;
    sample_outcome out;
    if (sample_trainer_run(r->trainer, r->first_epoch, &out))
        return 1;
    /* What a user of the file must do to the pixels. */
    char input[128];
    snprintf(input, sizeof input, "pixels / 255, then (x - %.4f) / %.4f "
             "(Fashion-MNIST's mean and std)", (double)FMNIST_MEAN,
             (double)FMNIST_STD);
    const char *meta[] = {"model", r->model.name, "input", input, NULL};
    if (o->save && xg_dist_rank() == 0 &&
        xg_module_save_with(r->model.module, o->save, meta) != XG_OK)
        return file_error("writing", o->save);
    int64_t samples = sample_trainer_samples(r->trainer) *
                      xg_dist_world_size(); /* over all ranks */
    printf("result: backend=%s model=%s epochs=%lld train_samples=%lld "
           "test_acc=%.4f samples_per_s=%.0f train_cpu_s=%.2f\n",
           xg_device_backend(r->s->dev), r->model.name, (long long)o->epochs,
           (long long)samples, out.accuracy,
           out.epochs_trained ? (double)(samples * out.epochs_trained) /
                                    out.train_seconds
                              : 0.0,
           out.train_cpu_seconds);
    return 0;
}

static int run_model(const sample_spec *spec, const sample_session *s)
{
    run r = {.spec = spec, .s = s, .opt = s->opt};
    int rc = set_up(&r);
    if (rc == 0)
        rc = train(&r);
    sample_trainer_free(r.trainer);
    xg_module_free(r.model.module);
    return rc;
}

/* ===== Main ============================================================== */

int sample_main(const sample_spec *spec, int argc, char **argv)
{
    sample_options opt;
    prog = spec->prog;
    if (sample_dist_begin(&argc, &argv))
        return sample_dist_end(1);
    int rc = parse_args(spec, argc, argv, &opt);
    if (rc)
        return sample_dist_end(rc == 1 ? 0 : 2);
    sample_session s = {.prog = prog, .opt = &opt,
                        .background = -FMNIST_MEAN / FMNIST_STD};
    xg_dataset *train = NULL, *test = NULL;
    if (!(s.dev = xg_device_current())) {
        fprintf(stderr, "%s: opening the device: %s\n", prog, xg_last_error());
        rc = 1;
    } else {
        rc = load_data(spec, &opt, &train, &test);
    }
    if (rc == 0) {
        s.train = train;
        s.test = test;
        xg_manual_seed(opt.seed);
        rc = spec->run ? spec->run(spec->ctx, &s) : run_model(spec, &s);
    }
    xg_dataset_free(train);
    xg_dataset_free(test);
    xg_shutdown();
    return sample_dist_end(rc);
}
