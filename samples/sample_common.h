/* What the Fashion-MNIST samples (mnist_mlp, mnist_cnn, finetune) share:
 * the common flags, data loading, the training loop with its progress
 * display, evaluation, the CSV log and the `result:` line. A sample
 * describes itself in a sample_spec (its name, its own flags, how to build
 * its model) and hands over to sample_main. A sample that trains more than
 * one model (finetune) gives its own run instead and trains each model with
 * a sample_trainer: the same loop.
 *
 * Common flags (a sample may leave some out, sample_spec.omit; its --help
 * lists those it takes); each takes "--flag VALUE" or "--flag=VALUE":
 *   --data DIR            MNIST-format folder (Fashion-MNIST's by default)
 *   --epochs N            passes over the training set (3, or the
 *                         sample's default_epochs)
 *   --batch-size N        samples per step (64)
 *   --lr X                learning rate (1e-3)
 *   --optimizer NAME      sgd, adam or adamw (adam)
 *   --lr-schedule NAME    constant or cosine (constant)
 *   --warmup N            cosine: steps of linear warmup (0)
 *   --schedule-epochs N   cosine: the epochs it spans (--epochs)
 *   --augment LIST        flip, shift=N, or none (none)
 *   --limit N             the first N training samples only (0: all)
 *   --eval-limit N        evaluate on the first N test samples (0: all)
 *   --seed N              initialisation and shuffling seed (0)
 *   --save PATH, --load PATH, --checkpoint PATH, --resume PATH
 *   --log FILE.csv        the training log (below)
 *   --log-every N         steps per training row of the log (20; only
 *                         with --log)
 *   --precision NAME      f32, bf16 or f16 (f32): see below
 *   --help
 * Model files are safetensors: --save writes the trained model's
 * state_dict, --load starts from one (with --epochs 0 it only evaluates),
 * --checkpoint writes model, optimizer and progress after every epoch,
 * --resume continues from such a file and trains up to --epochs in all,
 * exactly as an uninterrupted run would.
 * --lr-schedule cosine sets the learning rate before every step to
 * xg_lr_cosine(lr, step, warmup, E * batches per epoch, 0): linear warmup
 * over --warmup steps, then a half cosine down to 0 at the end of epoch E,
 * where E is --schedule-epochs, or --epochs without it. A run meant to stop
 * early and be resumed later gives the full length there.
 * --augment makes the training loader mirror images left-right at random
 * (flip) and shift them by up to N pixels (shift=N), black coming in.
 * --precision bf16 or f16 trains and evaluates with mixed precision: the
 * forward pass runs under xg_set_autocast (matrix products, convolutions
 * and attention in 16 bits, the parameters, the loss and the optimizer in
 * f32); f16 adds a loss scaler (xg_grad_scaler_*), whose skipped steps
 * (inf/NaN gradients) the optimizer's step count leaves out; a line
 * "loss scale: S, N steps skipped (inf/NaN gradients)" ends the training.
 * Checkpoints record the precision (and the scaler's state), and --resume
 * refuses a checkpoint of another precision.
 *
 * The log (--log) is a CSV file with the header
 *   kind,step,epoch,loss,lr,samples_per_s,elapsed_s,accuracy
 * and two kinds of rows, cells a kind does not use left empty:
 *   train  after every --log-every optimizer steps and after the last step
 *          of the run: step (optimizer steps so far), epoch (epochs done,
 *          fractional: step / batches per epoch), loss (mean training loss
 *          over the steps since the previous train row), lr (the rate of
 *          the last step), samples_per_s (training samples over training
 *          time since the previous train row, evaluation excluded),
 *          elapsed_s (wall seconds since the loop started in this
 *          process, evaluation included; a resumed run counts from 0
 *          again).
 *   eval   after every evaluation: step, epoch (whole epochs done),
 *          elapsed_s, accuracy (test accuracy, the fraction of the test
 *          set classified right: the test_acc of the epoch line).
 * The loss is read from the device only when a train row is written, so
 * the log costs a sync every --log-every steps and nothing in between. A
 * path that cannot be written is an error (exit 1) before training.
 * Under --resume the log continues the interrupted run's: the rows up to
 * the checkpoint's step are kept, later ones (from past the checkpoint)
 * dropped, and the new rows appended; with no such file, a new one is
 * started. Otherwise --log starts a new file, replacing any old one.
 *
 * Output: a header (device, data, model), one line per epoch, then
 *   result: backend=cpu model=mlp epochs=3 train_samples=60000 test_acc=0.8812 samples_per_s=41234
 * where samples_per_s counts training samples over training wall time
 * (evaluation excluded). Progress goes to stderr: a bar on a terminal, a
 * plain line every tenth of an epoch otherwise.
 *
 * Exit status of sample_main: 0 on success, 1 on a library, data or file
 * error, 2 on bad flags.
 */
#ifndef XGRAD_SAMPLE_COMMON_H
#define XGRAD_SAMPLE_COMMON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xgrad.h"
#include "xgrad_data.h"

/* The flags every sample takes. */
typedef struct sample_options {
    const char *data_dir;
    bool data_given;
    int64_t epochs, batch_size, limit;
    int64_t eval_limit; /* --eval-limit: the first N test samples (0: all) */
    double lr;
    const char *optimizer;
    bool cosine;    /* --lr-schedule cosine (else constant) */
    int64_t warmup; /* steps of linear warmup under cosine */
    int64_t schedule_epochs; /* cosine's length (--epochs unless given) */
    bool hflip;     /* --augment flip */
    int32_t shift;  /* --augment shift=N */
    uint64_t seed;
    const char *save, *load, *checkpoint, *resume; /* paths or NULL */
    const char *log;   /* --log: the CSV log's path, or NULL */
    int64_t log_every; /* --log-every: steps per train row */
    const char *precision; /* --precision: "f32", "bf16" or "f16" */
} sample_options;

/* Common flags a sample may leave out (sample_spec.omit). */
enum {
    SAMPLE_OMIT_FILES = 1 << 0, /* --save, --load, --checkpoint, --resume */
    SAMPLE_OMIT_LIMIT = 1 << 1, /* --limit */
};

/* One flag of a sample's own. `arg` names its value in the usage text
 * ("N[,N...]"), or is NULL for a switch that takes no value. parse gets the
 * value (NULL for a switch) and returns 0, or 2 after reporting a bad value
 * (sample_bad_value). */
typedef struct sample_flag {
    const char *name; /* "--hidden" */
    const char *arg;
    const char *help; /* "hidden layer widths (256)" */
    int (*parse)(void *ctx, const char *value);
} sample_flag;

/* What sample_main needs to know of the model. */
typedef struct sample_model {
    xg_module *module;     /* the network; sample_main frees it */
    const char *name;      /* for the result line: "mlp" (static) */
    char description[160]; /* for the header: "784-256-10 MLP" */
} sample_model;

/* What sample_main has set up when a sample's own run starts: the flags,
 * the device and the data of --data, normalised. All borrowed: sample_main
 * frees them after the run. */
typedef struct sample_session {
    const char *prog; /* the spec's prog, for messages */
    const sample_options *opt;
    xg_device *dev;
    const xg_dataset *train, *test;
    float background; /* a black pixel's value in the normalised images */
} sample_session;

typedef struct sample_spec {
    const char *prog;    /* "mnist_mlp": messages and usage */
    const char *summary; /* the usage text's second line */
    const sample_flag *flags; /* listed in the usage after --augment */
    int n_flags;
    void *ctx; /* passed to the flag parsers, check, build and run */
    unsigned omit;          /* SAMPLE_OMIT_*: common flags not taken */
    int64_t default_epochs; /* --epochs without the flag; 0: 3 */
    /* Optional: checks the flags together once all are parsed; returns 0,
     * or 2 after reporting the problem. */
    int (*check)(void *ctx, const sample_options *o);
    /* Feed the model [batch, c * h * w] rather than [batch, c, h, w]. */
    bool flatten;
    /* Builds the model for images [c, h, w] and `classes` classes, once the
     * thread's generator is seeded. Returns 0, or -1 with the library's
     * error set. */
    int (*build)(void *ctx, int64_t c, int64_t h, int64_t w, int32_t classes,
                 sample_model *out);
    /* Optional, instead of build: the sample's whole run, called with the
     * data loaded and the generator seeded with --seed. Returns the exit
     * status (0, or 1 after reporting an error). */
    int (*run)(void *ctx, const sample_session *s);
} sample_spec;

/* Names the program in the messages below (sample_main sets the spec's
 * prog; a sample with its own main, gpt, calls this). */
void sample_set_prog(const char *name);

/* Reports "PROG: FLAG 'VALUE': expected WANT" on stderr; returns 2. */
int sample_bad_value(const char *flag, const char *value, const char *want);

/* --precision's value: *out gets "f32", "bf16" or "f16" (static); returns
 * 0, or 2 after reporting a bad value. */
int sample_parse_precision(const char *value, const char **out);

/* The autocast dtype of a precision sample_parse_precision gave: XG_F32
 * (autocast off), XG_BF16 or XG_F16. */
xg_dtype sample_precision_dtype(const char *precision);

/* Parses `value` of `flag` as an integer in [min, max] into *out; returns
 * 0, or 2 after reporting a bad value. */
int sample_parse_int(const char *flag, const char *value, int64_t min,
                     int64_t max, int64_t *out);

/* ===== Data-parallel runs ===============================================
 * Under mpirun every sample trains data-parallel: each rank (process)
 * takes its device from XGRAD_BACKEND (see xg_dist_init for the index),
 * trains on its share of every epoch (xg_loader_set_shard) with --batch-size
 * samples per step, so the global batch is --batch-size x ranks, and the
 * gradients are averaged over the ranks before every step
 * (xg_grad_sync_backward). Rank 0 alone prints, writes the log, --save
 * and --checkpoint files; samples/s count the samples of all ranks.
 * BatchNorm keeps per-rank batch statistics (and rank 0's running
 * statistics are saved), dropout masks differ per rank. --resume needs the
 * world size the checkpoint was written with. A failing rank ends the job
 * (MPI_Abort). */

/* Joins the MPI job when started by mpirun and silences stdout on ranks
 * other than 0. Returns 0, or 1 after reporting an error. */
int sample_dist_begin(int *argc, char ***argv);

/* Ends the run with exit status rc: a failing rank in a job of several
 * ends the whole job; otherwise leaves the job (xg_dist_finalize). Returns
 * the status to exit with. */
int sample_dist_end(int rc);

/* Gives each rank other than 0 its own random stream (for dropout): a seed
 * derived from the generator's seed and the rank, the offset kept. Rank 0
 * and a world of one keep the generator as it is, so their masks are
 * those of a single process. */
void sample_dist_rank_rng(void);

/* Prints the data-parallel line of the header ("data-parallel: 2 ranks x
 * batch 32 = 64 per step, ...") when the world has more than one rank. */
void sample_print_dist(int64_t batch);

/* With more than one rank, prints where the steps of `sync` spent their
 * time ("[PHASE ]gradient sync: N steps, ... per step: backward, staging,
 * waiting for the sums"); nothing in a world of one or for a NULL sync. */
void sample_print_sync_stats(const xg_grad_sync *sync, const char *phase);

/* Parses the flags, loads the data, then either builds the model and the
 * optimizer, trains, evaluates after each epoch and prints the result line,
 * or calls the spec's run. Returns the exit status. */
int sample_main(const sample_spec *spec, int argc, char **argv);

/* ===== The training loop ================================================ */

/* One model to train: what the flags do not say. */
typedef struct sample_job {
    /* NULL, or a name ("pretrain") that starts the epoch and progress
     * lines and is added to the log's file name: --log run.csv writes
     * run-pretrain.csv. */
    const char *phase;
    xg_module *module; /* borrowed */
    bool flatten;      /* feed [batch, c * h * w] */
    const xg_dataset *train, *test; /* borrowed; must outlive the trainer */
    int64_t limit;         /* the first N training samples (0: all) */
    uint64_t shuffle_seed; /* the training loader's */
    int64_t epochs;        /* trains up to this many epochs in all */
    int64_t schedule_epochs; /* cosine: the epochs the schedule spans */
    bool eval_each_epoch;  /* else only after the last epoch */
    /* Optional: called after every epoch with the epochs done (to write a
     * checkpoint); returns 0, or 1 after reporting an error, which stops
     * the training. */
    int (*after_epoch)(void *ctx, int64_t epochs_done);
    void *ctx;
} sample_job;

/* What a trainer's run did. */
typedef struct sample_outcome {
    double accuracy;        /* of the last evaluation */
    double train_seconds;   /* training wall time, evaluation excluded */
    /* The CPU time of the process (every thread: xgrad's pool, the
     * loaders, the driver's) over the same span. */
    double train_cpu_seconds;
    int64_t epochs_trained; /* by this run (not by a resumed checkpoint) */
} sample_outcome;

typedef struct sample_trainer sample_trainer;

/* The optimizer (--optimizer, --lr), the loaders (--batch-size,
 * --augment; the test set in order) and the settings of the loop for
 * `job`. Returns NULL after reporting an error. */
sample_trainer *sample_trainer_new(const sample_session *s,
                                   const sample_job *job);

/* The trainer's optimizer (borrowed), e.g. to restore from a checkpoint
 * before sample_trainer_run. */
xg_optim *sample_trainer_optim(const sample_trainer *t);

/* The trainer's loss scaler (borrowed) under --precision f16; else NULL. */
xg_grad_scaler *sample_trainer_scaler(const sample_trainer *t);

/* Training samples an epoch visits. */
int64_t sample_trainer_samples(const sample_trainer *t);

/* Trains the epochs from first_epoch (0, or the epochs a restored
 * checkpoint had done) up to job.epochs, evaluating as the job says, and
 * evaluates once when there is nothing to train. Prints a line per epoch
 * and writes the log of --log. Returns 0, or 1 after reporting an error. */
int sample_trainer_run(sample_trainer *t, int64_t first_epoch,
                       sample_outcome *out);

/* NULL is ignored. The module and the data stay the caller's. */
void sample_trainer_free(sample_trainer *t);

#endif
