/* The CSV training log of --log (the format is in sample_common.h; the
 * gpt sample's in gpt.c). */
#ifndef XGRAD_SAMPLE_LOG_H
#define XGRAD_SAMPLE_LOG_H

#include <stdint.h>

#define SAMPLE_LOG_HEADER \
    "kind,step,epoch,loss,lr,samples_per_s,elapsed_s,accuracy"

typedef struct sample_log sample_log;

/* Opens the log at `path`. With resume_step < 0: a new file holding the
 * header (an old one is replaced). Otherwise the log of the run being
 * resumed: its rows with a step of at most resume_step are kept, the rest
 * cut off, and new rows go after them; a missing file is started anew.
 * Returns NULL after reporting "PROG: --log PATH: why" on stderr. */
sample_log *sample_log_open(const char *prog, const char *path,
                            int64_t resume_step);

/* The same for a log with another header (its first line, without the
 * newline; borrowed: it must outlive the log), whose rows still start with
 * "kind,step,": the gpt sample's. */
sample_log *sample_log_open_with(const char *prog, const char *path,
                                 int64_t resume_step, const char *header);

/* Appends a row made with printf's `fmt` (ending in a newline) and
 * flushes it. Returns 0, or 1 after reporting a write error. */
int sample_log_row(sample_log *log, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Appends a row and flushes it to the file. Returns 0, or 1 after
 * reporting a write error. */
int sample_log_train(sample_log *log, int64_t step, double epoch,
                     double loss, double lr, double samples_per_s,
                     double elapsed_s);
int sample_log_eval(sample_log *log, int64_t step, double epoch,
                    double elapsed_s, double accuracy);

/* Closes the file. Returns 0, or 1 after reporting an error. NULL: 0. */
int sample_log_close(sample_log *log);

#endif
