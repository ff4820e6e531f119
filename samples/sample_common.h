/* What the Fashion-MNIST samples (mnist_mlp, mnist_cnn) share: the common
 * flags, data loading, the training loop with its progress display,
 * evaluation and the `result:` line. A sample describes itself in a
 * sample_spec (its name, its own flags, how to build its model) and hands
 * over to sample_main.
 *
 * Common flags: --data DIR, --epochs N, --batch-size N, --lr X,
 * --optimizer sgd|adam|adamw, --lr-schedule constant|cosine, --warmup N,
 * --schedule-epochs N, --augment flip,shift=N,
 * --limit N, --seed N, --save PATH,
 * --load PATH, --checkpoint PATH, --resume PATH, --help; each takes
 * "--flag VALUE" or "--flag=VALUE". Model files are safetensors:
 * --save writes the trained model's state_dict, --load starts from one
 * (with --epochs 0 it only evaluates), --checkpoint writes model, optimizer
 * and progress after every epoch, --resume continues from such a file and
 * trains up to --epochs in all, exactly as an uninterrupted run would.
 * --lr-schedule cosine sets the learning rate before every step to
 * xg_lr_cosine(lr, step, warmup, E * batches per epoch, 0): linear warmup
 * over --warmup steps, then a half cosine down to 0 at the end of epoch E,
 * where E is --schedule-epochs, or --epochs without it. A run meant to stop
 * early and be resumed later gives the full length there.
 * --augment makes the training loader mirror images left-right at random
 * (flip) and shift them by up to N pixels (shift=N), black coming in.
 *
 * Output: a header (device, data, model), one line per epoch, then
 *   result: backend=cpu model=mlp epochs=3 train_samples=60000 test_acc=0.8812 samples_per_s=41234
 * where samples_per_s counts training samples over training wall time
 * (evaluation excluded). Progress goes to stderr: a bar on a terminal, a
 * plain line every tenth of an epoch otherwise.
 *
 * Exit status of sample_main: 0 on success, 1 on a library or data error,
 * 2 on bad flags.
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
    double lr;
    const char *optimizer;
    bool cosine;    /* --lr-schedule cosine (else constant) */
    int64_t warmup; /* steps of linear warmup under cosine */
    int64_t schedule_epochs; /* cosine's length (--epochs unless given) */
    bool hflip;     /* --augment flip */
    int32_t shift;  /* --augment shift=N */
    uint64_t seed;
    const char *save, *load, *checkpoint, *resume; /* paths or NULL */
} sample_options;

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

typedef struct sample_spec {
    const char *prog;    /* "mnist_mlp": messages and usage */
    const char *summary; /* the usage text's second line */
    const sample_flag *flags; /* listed in the usage after --optimizer */
    int n_flags;
    void *ctx; /* passed to the flag parsers and to build */
    /* Feed the model [batch, c * h * w] rather than [batch, c, h, w]. */
    bool flatten;
    /* Builds the model for images [c, h, w] and `classes` classes, once the
     * thread's generator is seeded. Returns 0, or -1 with the library's
     * error set. */
    int (*build)(void *ctx, int64_t c, int64_t h, int64_t w, int32_t classes,
                 sample_model *out);
} sample_spec;

/* Reports "PROG: FLAG 'VALUE': expected WANT" on stderr; returns 2. */
int sample_bad_value(const char *flag, const char *value, const char *want);

/* Parses the flags, loads the data, builds the model and the optimizer,
 * trains, evaluates after each epoch and prints the result line. Returns
 * the exit status. */
int sample_main(const sample_spec *spec, int argc, char **argv);

#endif
