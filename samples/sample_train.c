/* The training loop of every sample: optimizer and loaders, the steps,
 * progress, evaluation, the epoch lines and the CSV log. See
 * sample_common.h. */
#include "sample_common.h"
#include "sample_log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* Test images per evaluation batch: the CNN's largest activation for 200
 * images is 29 MB, inside the 128 MiB buffer limit of small devices. */
#define EVAL_BATCH 200

/* A status for an error already reported on stderr; the library's errors
 * (negative xg_status values) are reported from xg_last_error() by the
 * caller. */
enum { REPORTED = -1000 };

/* The training steps since the last train row of the log. */
typedef struct log_window {
    double loss;     /* sum of the losses of its steps, as far as read */
    float read;      /* the epoch's running loss sum at the last read */
    int64_t steps, samples;
    double clock;    /* the trainer's training clock at its start */
} log_window;

struct sample_trainer {
    const sample_session *s;
    sample_job job;
    xg_optim *optim;
    xg_dtype autocast;      /* --precision: XG_F32 (off), XG_BF16, XG_F16 */
    xg_grad_scaler *scaler; /* under f16; else NULL */
    bool stepped;           /* the last batch's step was taken (not skipped
                             * by the scaler) */
    int64_t skipped;        /* steps the scaler skipped in this run */
    xg_grad_sync *sync;     /* averages gradients over the ranks */
    xg_loader *train_loader, *test_loader;
    int32_t *predictions;   /* EVAL_BATCH argmax results read back */
    int32_t *truth;         /* and the batch's labels */
    int64_t features;       /* c * h * w */
    int64_t train_samples;  /* per epoch, this rank's */
    bool speaks;            /* rank 0: progress and the log */
    int64_t batches;        /* steps per epoch */
    bool tty;               /* stderr is a terminal: progress as a bar */
    char label[48];         /* "epoch", or "pretrain epoch" in a phase */
    char *log_path;         /* owned; NULL without --log */
    sample_log *log;        /* open during sample_trainer_run */
    double start;           /* now() when the run began */
    double train_clock;     /* seconds spent training, finished epochs */
    double epoch_start;     /* now() when the current epoch began */
    log_window win;
};

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* CPU seconds the process has used, all its threads together. */
static double cpu_now(void)
{
    struct timespec ts;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts) != 0)
        return 0.0;
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The status of the error just reported by the library, as a negative int. */
static int lib_error(void)
{
    xg_status st = xg_last_status();
    return st != XG_OK ? (int)st : (int)XG_ERR_BACKEND;
}

/* ===== Setup ============================================================= */

/* --log's path, with "-PHASE" before the extension in a phase:
 * "runs/a.csv" -> "runs/a-pretrain.csv". Owned by the caller; NULL when
 * out of memory. */
static char *log_path(const char *path, const char *phase)
{
    if (!phase)
        return strdup(path);
    const char *slash = strrchr(path, '/'), *dot = strrchr(path, '.');
    const char *base = slash ? slash + 1 : path;
    size_t stem = dot && dot > base ? (size_t)(dot - path) : strlen(path);
    size_t size = strlen(path) + strlen(phase) + 2;
    char *p = malloc(size);
    if (p)
        snprintf(p, size, "%.*s-%s%s", (int)stem, path, phase, path + stem);
    return p;
}

/* The training loader's --augment; the background shifts bring in is
 * black. */
static int set_augment(sample_trainer *t)
{
    const sample_options *o = t->s->opt;
    xg_augment aug = {.hflip = o->hflip, .shift = o->shift,
                      .fill = t->s->background};
    if (xg_loader_set_augment(t->train_loader, &aug) == XG_OK)
        return 0;
    fprintf(stderr, "%s: --augment: %s\n", t->s->prog, xg_last_error());
    return 1;
}

/* Optimizer, loaders and the evaluation buffer. */
static int make_parts(sample_trainer *t)
{
    const sample_options *o = t->s->opt;
    const sample_job *job = &t->job;
    int rank = xg_dist_rank(), world = xg_dist_world_size();
    /* Every rank starts from rank 0's parameters. */
    if (xg_dist_broadcast_module(job->module) == XG_OK)
        t->optim = xg_optim_for_module(job->module, o->optimizer,
                                       (float)o->lr);
    t->autocast = sample_precision_dtype(o->precision);
    if (t->optim && t->autocast == XG_F16 &&
        !(t->scaler = xg_grad_scaler_new(NULL))) {
        fprintf(stderr, "%s: setting up: %s\n", t->s->prog, xg_last_error());
        return 1;
    }
    if (t->optim)
        t->sync = xg_grad_sync_new(job->module, 0);
    if (t->sync)
        t->train_loader = xg_loader_new(job->train, o->batch_size, true,
                                        false, job->shuffle_seed, job->limit);
    if (t->train_loader && (o->hflip || o->shift) && set_augment(t))
        return 1;
    if (t->train_loader)
        t->test_loader = xg_loader_new(job->test, EVAL_BATCH, false, false,
                                       0, o->eval_limit);
    /* Training shares padded to equal size (every rank makes the same
     * steps); test shares exact, their counts summed over the ranks. */
    if (t->test_loader &&
        (xg_loader_set_shard(t->train_loader, rank, world, true) != XG_OK ||
         xg_loader_set_shard(t->test_loader, rank, world, false) != XG_OK))
        return 1;
    t->predictions = malloc(EVAL_BATCH * sizeof *t->predictions);
    t->truth = malloc(EVAL_BATCH * sizeof *t->truth);
    if (o->log && t->predictions && t->speaks)
        t->log_path = log_path(o->log, job->phase);
    if (!t->test_loader || !t->predictions || !t->truth ||
        (o->log && t->speaks && !t->log_path)) {
        fprintf(stderr, "%s: setting up: %s\n", t->s->prog,
                t->predictions ? xg_last_error() : "out of memory");
        return 1;
    }
    return 0;
}

sample_trainer *sample_trainer_new(const sample_session *s,
                                   const sample_job *job)
{
    sample_trainer *t = calloc(1, sizeof *t);
    if (!t) {
        fprintf(stderr, "%s: setting up: out of memory\n", s->prog);
        return NULL;
    }
    t->s = s;
    t->job = *job;
    t->speaks = xg_dist_rank() == 0;
    t->tty = isatty(STDERR_FILENO);
    const xg_dataset *d = job->train;
    t->features = d->channels * d->height * d->width;
    snprintf(t->label, sizeof t->label, "%s%sepoch",
             job->phase ? job->phase : "", job->phase ? " " : "");
    if (make_parts(t)) {
        sample_trainer_free(t);
        return NULL;
    }
    t->batches = xg_loader_batches(t->train_loader);
    t->train_samples = xg_loader_samples(t->train_loader);
    return t;
}

xg_optim *sample_trainer_optim(const sample_trainer *t)
{
    return t->optim;
}

xg_grad_scaler *sample_trainer_scaler(const sample_trainer *t)
{
    return t->scaler;
}

int64_t sample_trainer_samples(const sample_trainer *t)
{
    return t->train_samples;
}

void sample_trainer_free(sample_trainer *t)
{
    if (!t)
        return;
    sample_log_close(t->log);
    xg_loader_free(t->train_loader);
    xg_loader_free(t->test_loader);
    xg_grad_sync_free(t->sync);
    xg_grad_scaler_free(t->scaler);
    xg_optim_free(t->optim);
    free(t->predictions);
    free(t->truth);
    free(t->log_path);
    free(t);
}

/* ===== Training ========================================================== */

/* The cosine schedule's rate for the optimizer's next step. The step
 * count comes from the optimizer, which a checkpoint restores, so a resumed
 * run continues the schedule where it stopped. */
static float cosine_lr(const sample_trainer *t)
{
    const sample_options *o = t->s->opt;
    int64_t total = t->job.schedule_epochs * t->batches;
    return xg_lr_cosine((float)o->lr, xg_optim_steps(t->optim), o->warmup,
                        total, 0.0f);
}

/* The model's output for a batch of images [b, c, h, w], under the
 * autocast of --precision. */
static xg_tensor *forward(sample_trainer *t, xg_tensor *images)
{
    xg_tensor *x = t->job.flatten
                       ? xg_reshape(images, XG_SHAPE(-1, t->features))
                       : images;
    xg_dtype was = xg_set_autocast(t->autocast);
    xg_tensor *y = xg_module_forward(t->job.module, x);
    xg_set_autocast(was);
    return y;
}

/* Backward from the loss (scaled under f16) and the optimizer's step
 * (skipped by the scaler on inf/NaN gradients: t->stepped says). */
static xg_status backward_step(sample_trainer *t, xg_tensor *loss)
{
    xg_grad_scaler *sc = t->scaler;
    xg_tensor *scaled = sc ? xg_grad_scaler_scale(sc, loss) : loss;
    /* averaged over the ranks; the graph goes as the backward walks */
    xg_status st = xg_grad_sync_backward(t->sync, scaled);
    t->stepped = !sc;
    if (st == XG_OK)
        st = sc ? xg_grad_scaler_step(sc, t->optim, &t->stepped)
                : xg_optim_step(t->optim);
    t->skipped += st == XG_OK && !t->stepped;
    return st == XG_OK && sc ? xg_grad_scaler_update(sc) : st;
}

/* Forward, loss, backward, update on one batch. The loss is added to
 * *loss_sum on the device: no host read, so no sync. */
static int train_batch(sample_trainer *t, xg_tensor *images,
                       xg_tensor *labels, xg_tensor **loss_sum)
{
    if (t->s->opt->cosine)
        xg_optim_set_lr(t->optim, cosine_lr(t));
    /* the loss under autocast too: computed in f32 from 16-bit logits, as
     * the GPT sample and PyTorch's recipe do (a 16-bit loss would overflow
     * under the f16 loss scale) */
    xg_dtype was = xg_set_autocast(t->autocast);
    xg_tensor *loss = xg_cross_entropy(forward(t, images), labels);
    xg_set_autocast(was);
    if (!loss || backward_step(t, loss) != XG_OK)
        return lib_error();
    xg_optim_zero_grad(t->optim);
    xg_tensor *sum = xg_tensor_keep(xg_add(*loss_sum, xg_detach(loss)));
    if (!sum)
        return lib_error();
    xg_tensor_free(*loss_sum);
    *loss_sum = sum;
    t->win.steps++;
    t->win.samples += xg_tensor_dim(labels, 0);
    return 1;
}

/* One step in its own scope. 1: trained a batch; 0: end of epoch; < 0:
 * error. */
static int train_step(sample_trainer *t, xg_tensor **loss_sum)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return lib_error();
    xg_tensor *images = NULL, *labels = NULL;
    int got = xg_loader_next(t->train_loader, &images, &labels);
    if (got == 1)
        got = train_batch(t, images, labels, loss_sum);
    xg_scope_end(scope);
    return got;
}

/* Reads the running loss (a device sync) and redraws the progress: a bar
 * on a terminal, a plain line otherwise. */
static int show_progress(const sample_trainer *t, int64_t epoch, int64_t i,
                         xg_tensor *loss_sum)
{
    float sum = 0.0f;
    if (xg_tensor_item(loss_sum, &sum) != XG_OK)
        return lib_error();
    int64_t n = t->batches, done = i * t->s->opt->batch_size;
    done = done < t->train_samples ? done : t->train_samples;
    double rate = (double)done * xg_dist_world_size() /
                  (now() - t->epoch_start); /* all ranks' samples */
    long long e = (long long)epoch + 1, epochs = (long long)t->job.epochs;
    if (t->tty) {
        char bar[31];
        int fill = (int)(30 * i / n);
        memset(bar, '#', (size_t)fill);
        memset(bar + fill, '.', (size_t)(30 - fill));
        bar[30] = '\0';
        fprintf(stderr, "\r\033[K%s %lld/%lld [%s] %lld/%lld loss=%.4f %.0f "
                "samples/s", t->label, e, epochs, bar, (long long)i,
                (long long)n, sum / (float)i, rate);
    } else {
        fprintf(stderr, "%s %lld/%lld: batch %lld/%lld loss=%.4f "
                "samples/s=%.0f\n", t->label, e, epochs, (long long)i,
                (long long)n, sum / (float)i, rate);
    }
    return 1;
}

/* ===== The log =========================================================== */

/* Writes the window's train row at training clock `clock` and starts the
 * next window. 0, or REPORTED. */
static int write_train_row(sample_trainer *t, double clock)
{
    log_window *w = &t->win;
    int64_t step = xg_optim_steps(t->optim);
    double seconds = clock - w->clock;
    double epoch = t->batches ? (double)step / (double)t->batches : 0.0;
    int rc = sample_log_train(t->log, step, epoch,
                              w->steps ? w->loss / (double)w->steps : 0.0,
                              (double)xg_optim_lr(t->optim),
                              seconds > 0.0 ? (double)w->samples *
                                                  xg_dist_world_size() /
                                                  seconds
                                            : 0.0,
                              now() - t->start);
    *w = (log_window){.read = w->read, .clock = clock};
    return rc ? REPORTED : 0;
}

/* Adds the losses summed since the last read to the window; `sum` is the
 * epoch's running loss sum as just read. */
static void window_add(sample_trainer *t, float sum)
{
    t->win.loss += (double)sum - (double)t->win.read;
    t->win.read = sum;
}

/* At a step that --log-every picks: reads the running loss (a device sync)
 * and writes a train row. 1 to go on, or an error. */
static int log_step(sample_trainer *t, xg_tensor *loss_sum)
{
    float sum = 0.0f;
    if (xg_tensor_item(loss_sum, &sum) != XG_OK)
        return lib_error();
    window_add(t, sum);
    int rc = write_train_row(t, t->train_clock + now() - t->epoch_start);
    return rc ? rc : 1;
}

/* ===== Epochs ============================================================ */

typedef struct epoch_stats {
    double loss, seconds, cpu_seconds;
} epoch_stats;

static int train_epoch(sample_trainer *t, int64_t epoch, epoch_stats *out)
{
    int64_t n = t->batches, i = 0, log_every = t->s->opt->log_every;
    int64_t every = t->tty ? n / 50 : (n + 9) / 10; /* display reads sync */
    every = every > 0 ? every : 1;
    xg_loader_start(t->train_loader, epoch);
    t->epoch_start = now();
    double cpu_start = cpu_now();
    t->win.read = 0.0f;
    xg_tensor *loss_sum = xg_zeros(XG_SHAPE(1));
    int got = loss_sum ? 1 : lib_error();
    while (got == 1 && (got = train_step(t, &loss_sum)) == 1) {
        i++;
        if (t->speaks && (i % every == 0 || i == n))
            got = show_progress(t, epoch, i, loss_sum);
        if (got == 1 && t->log && t->stepped &&
            xg_optim_steps(t->optim) % log_every == 0)
            got = log_step(t, loss_sum);
    }
    float sum = 0.0f;
    if (got == 0 && xg_tensor_item(loss_sum, &sum) != XG_OK)
        got = lib_error();
    out->seconds = now() - t->epoch_start; /* after the read: all done */
    out->cpu_seconds = cpu_now() - cpu_start;
    double mean = i ? sum / (double)i : 0.0; /* over all ranks' steps */
    if (got == 0 && xg_dist_sum(&mean, 1) != XG_OK)
        got = lib_error();
    out->loss = mean / xg_dist_world_size();
    t->train_clock += out->seconds;
    window_add(t, sum);
    xg_tensor_free(loss_sum);
    if (t->tty && t->speaks)
        fprintf(stderr, "\r\033[K");
    return got;
}

/* ===== Evaluation ======================================================== */

/* Classifies one test batch; the argmax runs on the device and only the
 * predicted classes (and the labels) come back. */
static int eval_batch(sample_trainer *t, int64_t *seen, int64_t *correct)
{
    xg_tensor *images = NULL, *labels = NULL;
    int got = xg_loader_next(t->test_loader, &images, &labels);
    if (got != 1)
        return got;
    int64_t b = xg_tensor_dim(labels, 0);
    xg_tensor *pred = xg_argmax(forward(t, images), -1, false);
    size_t bytes = (size_t)b * sizeof *t->predictions;
    if (!pred || xg_tensor_read(pred, t->predictions, bytes) != XG_OK ||
        xg_tensor_read(labels, t->truth, bytes) != XG_OK)
        return lib_error();
    for (int64_t k = 0; k < b; k++)
        *correct += t->predictions[k] == t->truth[k];
    *seen += b;
    return 1;
}

/* Test accuracy in evaluation mode (dropout off, batch norm on its running
 * statistics) without recording a graph. */
static int evaluate(sample_trainer *t, double *accuracy)
{
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(t->job.module, false);
    xg_loader_start(t->test_loader, 0);
    int64_t seen = 0, correct = 0;
    int got = 1;
    while (got == 1) {
        xg_scope *scope = xg_scope_begin();
        got = scope ? eval_batch(t, &seen, &correct) : lib_error();
        xg_scope_end(scope);
    }
    xg_module_set_training(t->job.module, true);
    xg_set_grad_enabled(grad);
    double counts[2] = {(double)seen, (double)correct}; /* each rank's share */
    if (got == 0 && xg_dist_sum(counts, 2) != XG_OK)
        got = lib_error();
    *accuracy = counts[0] > 0 ? counts[1] / counts[0] : 0.0;
    return got;
}

/* evaluate, and its eval row in the log after `epochs_done` epochs. */
static int evaluate_logged(sample_trainer *t, int64_t epochs_done,
                           double *accuracy)
{
    int rc = evaluate(t, accuracy);
    if (rc == 0 && t->log &&
        sample_log_eval(t->log, xg_optim_steps(t->optim),
                        (double)epochs_done, now() - t->start, *accuracy))
        rc = REPORTED;
    return rc;
}

/* ===== The loop ========================================================== */

static void print_epoch_line(const sample_trainer *t, int64_t epoch,
                             const epoch_stats *st, bool evaluated,
                             double accuracy)
{
    char acc[32] = "", lr[32] = ""; /* lr: under a schedule, the last step's */
    if (evaluated)
        snprintf(acc, sizeof acc, " test_acc=%.4f", accuracy);
    if (t->s->opt->cosine)
        snprintf(lr, sizeof lr, " lr=%.3g", (double)xg_optim_lr(t->optim));
    printf("%s %lld/%lld: train_loss=%.4f%s time=%.1fs samples/s=%.0f%s\n",
           t->label, (long long)epoch + 1, (long long)t->job.epochs, st->loss,
           acc, st->seconds,
           (double)t->train_samples * xg_dist_world_size() / st->seconds, lr);
    fflush(stdout);
}

/* Epoch `epoch` (0-based): trains, evaluates if the job says so, calls
 * after_epoch and prints the epoch line. */
static int run_epoch(sample_trainer *t, int64_t epoch, sample_outcome *out)
{
    const sample_job *job = &t->job;
    bool last = epoch + 1 == job->epochs;
    bool eval = job->eval_each_epoch || last;
    epoch_stats st = {0};
    int rc = train_epoch(t, epoch, &st);
    if (rc == 0 && last && t->log && t->win.steps) /* the run's last steps */
        rc = write_train_row(t, t->train_clock);
    if (rc == 0 && eval)
        rc = evaluate_logged(t, epoch + 1, &out->accuracy);
    if (rc == 0 && job->after_epoch && job->after_epoch(job->ctx, epoch + 1))
        rc = REPORTED;
    if (rc != 0)
        return rc;
    out->train_seconds += st.seconds;
    out->train_cpu_seconds += st.cpu_seconds;
    out->epochs_trained++;
    print_epoch_line(t, epoch, &st, eval, out->accuracy);
    return 0;
}

int sample_trainer_run(sample_trainer *t, int64_t first_epoch,
                       sample_outcome *out)
{
    *out = (sample_outcome){0};
    sample_dist_rank_rng(); /* after a resume restored the generator */
    xg_grad_sync_reset_stats(t->sync);
    if (t->log_path) {
        int64_t resume_step = first_epoch > 0 ? xg_optim_steps(t->optim) : -1;
        t->log = sample_log_open(t->s->prog, t->log_path, resume_step);
        if (!t->log)
            return 1;
    }
    t->start = now();
    t->train_clock = 0.0;
    t->win = (log_window){0};
    int rc = 0;
    for (int64_t e = first_epoch; rc == 0 && e < t->job.epochs; e++)
        rc = run_epoch(t, e, out);
    if (rc == 0 && out->epochs_trained == 0) /* nothing to train */
        rc = evaluate_logged(t, first_epoch, &out->accuracy);
    if (rc != 0 && rc != REPORTED)
        fprintf(stderr, "%s: %s\n", t->s->prog, xg_last_error());
    if (rc == 0)
        sample_print_sync_stats(t->sync, t->job.phase);
    if (rc == 0 && t->scaler && t->speaks)
        printf("%s%sloss scale: %g, %lld steps skipped (inf/NaN "
               "gradients)\n", t->job.phase ? t->job.phase : "",
               t->job.phase ? " " : "",
               (double)xg_grad_scaler_get_scale(t->scaler),
               (long long)t->skipped);
    int closed = sample_log_close(t->log);
    t->log = NULL;
    return rc != 0 || closed;
}
