/* The CSV training log of --log; see sample_log.h and sample_common.h. */
#include "sample_log.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct sample_log {
    FILE *f;
    const char *prog, *path; /* borrowed from the caller */
    const char *header;      /* the first line, without its newline */
};

static void report(const char *prog, const char *path, const char *why)
{
    fprintf(stderr, "%s: --log %s: %s\n", prog, path, why);
}

/* The offset in `f` (read from its start) just past the last row to keep:
 * complete rows whose step is at most resume_step, up to the first that is
 * not. -1 with *why set if the file is not a log, or cannot be read. An
 * empty file (a log whose header never got written) keeps nothing: 0. */
static long rows_to_keep(FILE *f, const char *header, int64_t resume_step,
                         const char **why)
{
    char line[256];
    if (!fgets(line, sizeof line, f)) {
        if (!ferror(f))
            return 0;
        *why = strerror(errno);
        return -1;
    }
    size_t n = strlen(header);
    if (strncmp(line, header, n) != 0 || strcmp(line + n, "\n") != 0) {
        *why = "not a training log of this program: its first line is not "
               "the header";
        return -1;
    }
    long keep = ftell(f);
    while (keep >= 0 && fgets(line, sizeof line, f)) {
        long long step;
        if (!strchr(line, '\n') || sscanf(line, "%*[a-z],%lld", &step) != 1 ||
            step > resume_step)
            break; /* cut from here: a row past the checkpoint, or torn */
        keep = ftell(f);
    }
    if (keep < 0 || ferror(f)) {
        *why = strerror(errno);
        return -1;
    }
    return keep;
}

/* The resumed run's log, open as `f`: cut after the rows to keep and
 * positioned there; the header is written if the file was empty. */
static int continue_log(sample_log *log, FILE *f, int64_t resume_step)
{
    const char *why = NULL;
    long keep = rows_to_keep(f, log->header, resume_step, &why);
    if (keep >= 0 && (fflush(f) != 0 || ftruncate(fileno(f), keep) != 0 ||
                      fseek(f, keep, SEEK_SET) != 0))
        why = strerror(errno);
    if (keep < 0 || why) {
        report(log->prog, log->path, why);
        fclose(f);
        return 1;
    }
    log->f = f;
    if (keep == 0 && (fprintf(f, "%s\n", log->header) < 0 || fflush(f))) {
        report(log->prog, log->path, strerror(errno));
        return 1;
    }
    return 0;
}

/* A new log holding the header. */
static int new_log(sample_log *log)
{
    log->f = fopen(log->path, "w");
    if (!log->f || fprintf(log->f, "%s\n", log->header) < 0 ||
        fflush(log->f) != 0) {
        report(log->prog, log->path, strerror(errno));
        return 1;
    }
    return 0;
}

sample_log *sample_log_open(const char *prog, const char *path,
                            int64_t resume_step)
{
    return sample_log_open_with(prog, path, resume_step, SAMPLE_LOG_HEADER);
}

sample_log *sample_log_open_with(const char *prog, const char *path,
                                 int64_t resume_step, const char *header)
{
    sample_log *log = calloc(1, sizeof *log);
    if (!log) {
        report(prog, path, "out of memory");
        return NULL;
    }
    log->prog = prog;
    log->path = path;
    log->header = header;
    FILE *old = resume_step >= 0 ? fopen(path, "r+") : NULL;
    int rc;
    if (old)
        rc = continue_log(log, old, resume_step);
    else if (resume_step >= 0 && errno != ENOENT) {
        report(prog, path, strerror(errno));
        rc = 1;
    } else
        rc = new_log(log);
    if (rc) {
        if (log->f)
            fclose(log->f);
        free(log);
        return NULL;
    }
    return log;
}

/* Flushes the row just printed (rc: what fprintf returned). */
static int row_written(sample_log *log, int rc)
{
    if (rc < 0 || fflush(log->f) != 0) {
        report(log->prog, log->path, strerror(errno));
        return 1;
    }
    return 0;
}

int sample_log_train(sample_log *log, int64_t step, double epoch,
                     double loss, double lr, double samples_per_s,
                     double elapsed_s)
{
    int rc = fprintf(log->f, "train,%lld,%.4f,%.6f,%.6g,%.1f,%.3f,\n",
                     (long long)step, epoch, loss, lr, samples_per_s,
                     elapsed_s);
    return row_written(log, rc);
}

int sample_log_eval(sample_log *log, int64_t step, double epoch,
                    double elapsed_s, double accuracy)
{
    int rc = fprintf(log->f, "eval,%lld,%.4f,,,,%.3f,%.6f\n", (long long)step,
                     epoch, elapsed_s, accuracy);
    return row_written(log, rc);
}

int sample_log_row(sample_log *log, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int rc = vfprintf(log->f, fmt, ap);
    va_end(ap);
    return row_written(log, rc);
}

int sample_log_close(sample_log *log)
{
    if (!log)
        return 0;
    int rc = fclose(log->f);
    if (rc != 0)
        report(log->prog, log->path, strerror(errno));
    free(log);
    return rc != 0;
}
