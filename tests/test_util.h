/* Helpers shared by the core Criterion suites (tests/test_*.c).
 *
 * Everything here is independent of the code under test except for the
 * plain tensor plumbing (make a tensor from a host array, read it back):
 * expected values are always computed by the tests themselves, in double
 * precision, from the mathematical definition.
 */
#ifndef XGRAD_TEST_UTIL_H
#define XGRAD_TEST_UTIL_H

#include <criterion/criterion.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "xgrad.h"

/* ---- suite setup ------------------------------------------------------- */

/* Every test starts from a clean thread state and ends by closing the
 * default device so that valgrind (run with --no-fork style options) sees
 * nothing left behind. */
static inline void tu_init(void)
{
    xg_clear_error();
    xg_set_grad_enabled(true);
}

static inline void tu_fini(void)
{
    xg_set_grad_enabled(true);
    xg_shutdown();
}

/* The same with a scope around the test body: every tensor the test makes
 * (and does not free or keep) is freed by xg_scope_end in the fini. */
static xg_scope *tu_test_scope;

static inline void tu_init_scope(void)
{
    tu_init();
    tu_test_scope = xg_scope_begin();
    cr_assert_not_null(tu_test_scope, "xg_scope_begin failed");
}

static inline void tu_fini_scope(void)
{
    xg_scope_end(tu_test_scope);
    tu_test_scope = NULL;
    tu_fini();
}

/* ---- temporary folders ------------------------------------------------- */

/* Makes a fresh, empty folder "/tmp/<prefix>-XXXXXX" (mkdtemp) and writes
 * its path into buf[0 .. size), which must hold it (a failed assertion
 * otherwise). Returns buf. Remove it with tu_rm_tree. */
static inline char *tu_tmpdir_new(char *buf, size_t size, const char *prefix)
{
    int n = snprintf(buf, size, "/tmp/%s-XXXXXX", prefix);
    cr_assert(n > 0 && (size_t)n < size, "tu_tmpdir_new: %s: buffer too small",
              prefix);
    cr_assert_not_null(mkdtemp(buf), "mkdtemp %s: %s", buf, strerror(errno));
    return buf;
}

/* Removes path and everything below it, as far as it can (errors are
 * ignored: this is cleanup). A folder is made writable and readable (0700)
 * first, so a test may leave a read-only one behind; links are removed,
 * never followed. */
static inline void tu_rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return;
    if (!S_ISDIR(st.st_mode)) {
        unlink(path);
        return;
    }
    chmod(path, 0700);
    DIR *d = opendir(path);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
                continue;
            size_t n = strlen(path) + strlen(e->d_name) + 2;
            char *sub = malloc(n);
            if (!sub)
                break;
            snprintf(sub, n, "%s/%s", path, e->d_name);
            tu_rm_tree(sub);
            free(sub);
        }
        closedir(d);
    }
    rmdir(path);
}

/* The path dir/name, in a static buffer (one of eight in rotation, so that
 * several can be used at once); fails the test if it does not fit. */
static inline const char *tu_path_in(const char *dir, const char *name)
{
    static char bufs[8][600];
    static int next;
    char *b = bufs[next++ & 7];
    int n = snprintf(b, sizeof bufs[0], "%s/%s", dir, name);
    cr_assert(n > 0 && (size_t)n < sizeof bufs[0], "path too long: %s/%s",
              dir, name);
    return b;
}

/* ---- small utilities --------------------------------------------------- */

static inline int64_t tu_numel(const int64_t *shape, int ndim)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* A shape as text, "[2,3]", for messages. Returns a static buffer (one of
 * four in rotation, so two can appear in one message). */
static inline const char *tu_shape_str(const int64_t *shape, int ndim)
{
    static char bufs[4][96];
    static int next;
    char *b = bufs[next++ & 3];
    size_t at = 0;
    at += (size_t)snprintf(b + at, sizeof bufs[0] - at, "[");
    for (int i = 0; i < ndim && at < sizeof bufs[0]; i++)
        at += (size_t)snprintf(b + at, sizeof bufs[0] - at, "%s%" PRId64,
                               i ? "," : "", shape[i]);
    if (at < sizeof bufs[0])
        snprintf(b + at, sizeof bufs[0] - at, "]");
    return b;
}

/* Deterministic host-side generator (splitmix64), independent of xgrad's. */
typedef struct tu_rng {
    uint64_t s;
} tu_rng;

static inline uint64_t tu_next(tu_rng *r)
{
    uint64_t z = (r->s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Uniform double in [lo, hi). */
static inline double tu_uniform(tu_rng *r, double lo, double hi)
{
    return lo + (hi - lo) * ((double)(tu_next(r) >> 11) * 0x1.0p-53);
}

/* Fills dst with uniform values in [lo, hi). */
static inline void tu_fill(float *dst, int64_t n, uint64_t seed, double lo,
                           double hi)
{
    tu_rng r = {seed};
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)tu_uniform(&r, lo, hi);
}

/* Fills dst with values whose magnitude is in [lo, hi) and whose sign is
 * random: keeps inputs away from kinks (relu at 0) and poles. */
static inline void tu_fill_signed(float *dst, int64_t n, uint64_t seed,
                                  double lo, double hi)
{
    tu_rng r = {seed};
    for (int64_t i = 0; i < n; i++) {
        double m = tu_uniform(&r, lo, hi);
        dst[i] = (float)((tu_next(&r) & 1) ? m : -m);
    }
}

/* Fills dst with distinct values spaced `gap` apart in random order (for
 * max/argmax: no ties, and a perturbation < gap/2 never changes the
 * winner). Values are centred on zero. */
static inline void tu_fill_distinct(float *dst, int64_t n, uint64_t seed,
                                    double gap)
{
    tu_rng r = {seed};
    for (int64_t i = 0; i < n; i++)
        dst[i] = (float)((double)i * gap - (double)(n - 1) * gap / 2);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(tu_next(&r) % (uint64_t)(i + 1));
        float t = dst[i];
        dst[i] = dst[j];
        dst[j] = t;
    }
}

/* ---- tensors from and to host memory ----------------------------------- */

static inline xg_tensor *tu_f32(const float *data, const int64_t *shape,
                                int ndim)
{
    xg_tensor *t = xg_tensor_from_data(data, XG_F32, shape, ndim);
    cr_assert_not_null(t, "xg_tensor_from_data(f32, %s) failed: %s",
                       tu_shape_str(shape, ndim), xg_last_error());
    return t;
}

static inline xg_tensor *tu_i32(const int32_t *data, const int64_t *shape,
                                int ndim)
{
    xg_tensor *t = xg_tensor_from_data(data, XG_I32, shape, ndim);
    cr_assert_not_null(t, "xg_tensor_from_data(i32, %s) failed: %s",
                       tu_shape_str(shape, ndim), xg_last_error());
    return t;
}

/* A tensor of uniform values in [lo, hi) drawn from the host generator. */
static inline xg_tensor *tu_rand(const int64_t *shape, int ndim,
                                 uint64_t seed, double lo, double hi)
{
    int64_t n = tu_numel(shape, ndim);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    tu_fill(v, n, seed, lo, hi);
    xg_tensor *t = tu_f32(v, shape, ndim);
    free(v);
    return t;
}

/* Same with a leaf that requires grad. */
static inline xg_tensor *tu_param(xg_tensor *t)
{
    cr_assert_eq(xg_tensor_set_requires_grad(t, true), XG_OK,
                 "set_requires_grad: %s", xg_last_error());
    return t;
}

/* Reads all values of an f32 tensor into a new malloc'd array. */
static inline float *tu_read(const xg_tensor *t)
{
    cr_assert_not_null(t, "tu_read: NULL tensor (%s)", xg_last_error());
    int64_t n = xg_tensor_numel(t);
    float *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    xg_status st = xg_tensor_read(t, v, (size_t)n * sizeof *v);
    cr_assert_eq(st, XG_OK, "xg_tensor_read: %s (%s)", xg_status_str(st),
                 xg_last_error());
    return v;
}

/* Reads n f32 tensors back to back into one new malloc'd array; *count
 * gets its length. */
static inline float *tu_read_all(const xg_tensor *const *t, int n,
                                 int64_t *count)
{
    float *all = NULL;
    *count = 0;
    for (int i = 0; i < n; i++) {
        int64_t k = xg_tensor_numel(t[i]);
        float *v = tu_read(t[i]);
        all = realloc(all, (size_t)(*count + k) * sizeof *all);
        cr_assert_not_null(all);
        memcpy(all + *count, v, (size_t)k * sizeof *v);
        *count += k;
        free(v);
    }
    return all;
}

static inline int32_t *tu_read_i32(const xg_tensor *t)
{
    cr_assert_not_null(t, "tu_read_i32: NULL tensor (%s)", xg_last_error());
    cr_assert_eq(xg_tensor_dtype(t), XG_I32, "expected an i32 tensor");
    int64_t n = xg_tensor_numel(t);
    int32_t *v = malloc((size_t)(n ? n : 1) * sizeof *v);
    cr_assert_not_null(v);
    xg_status st = xg_tensor_read(t, v, (size_t)n * sizeof *v);
    cr_assert_eq(st, XG_OK, "xg_tensor_read: %s (%s)", xg_status_str(st),
                 xg_last_error());
    return v;
}

/* A one-element f32 tensor's value. */
static inline float tu_item(const xg_tensor *t)
{
    cr_assert_not_null(t, "tu_item: NULL tensor (%s)", xg_last_error());
    float v = NAN;
    xg_status st = xg_tensor_item(t, &v);
    cr_assert_eq(st, XG_OK, "xg_tensor_item: %s (%s)", xg_status_str(st),
                 xg_last_error());
    return v;
}

/* ---- assertions -------------------------------------------------------- */

static inline bool tu_close(double got, double want, double atol,
                            double rtol)
{
    if (isnan(want))
        return isnan(got);
    if (isinf(want))
        return got == want;
    return fabs(got - want) <= atol + rtol * fabs(want);
}

/* Asserts that t is non-NULL, f32, has exactly this shape. */
static inline void tu_assert_shape(const xg_tensor *t, const int64_t *shape,
                                   int ndim, const char *what)
{
    cr_assert_not_null(t, "%s: op returned NULL: %s (%s)", what,
                       xg_status_str(xg_last_status()), xg_last_error());
    int got_nd = xg_tensor_ndim(t);
    const int64_t *got = xg_tensor_shape(t);
    bool same = got_nd == ndim;
    for (int i = 0; same && i < ndim; i++)
        same = got[i] == shape[i];
    cr_assert(same, "%s: shape %s, expected %s", what,
              tu_shape_str(got, got_nd), tu_shape_str(shape, ndim));
    cr_assert_eq(xg_tensor_numel(t), tu_numel(shape, ndim),
                 "%s: numel %" PRId64 ", expected %" PRId64, what,
                 xg_tensor_numel(t), tu_numel(shape, ndim));
}

/* Asserts the shape and every value of an f32 tensor:
 * |got - want| <= atol + rtol * |want|, NaN where NaN is expected. */
static inline void tu_assert_values(const xg_tensor *t, const int64_t *shape,
                                    int ndim, const double *want,
                                    double atol, double rtol,
                                    const char *what)
{
    tu_assert_shape(t, shape, ndim, what);
    cr_assert_eq(xg_tensor_dtype(t), XG_F32, "%s: expected f32", what);
    int64_t n = tu_numel(shape, ndim);
    float *got = tu_read(t);
    int64_t bad = -1, nbad = 0;
    for (int64_t i = 0; i < n; i++)
        if (!tu_close(got[i], want[i], atol, rtol)) {
            if (bad < 0)
                bad = i;
            nbad++;
        }
    if (bad >= 0) {
        double g = got[bad];
        free(got);
        cr_assert_fail("%s: %" PRId64 " of %" PRId64 " values differ; first at "
                       "flat index %" PRId64 ": got %.9g, expected %.9g "
                       "(atol %g, rtol %g)",
                       what, nbad, n, bad, g, want[bad], atol, rtol);
    }
    free(got);
}

static inline void tu_assert_i32(const xg_tensor *t, const int64_t *shape,
                                 int ndim, const int32_t *want,
                                 const char *what)
{
    tu_assert_shape(t, shape, ndim, what);
    cr_assert_eq(xg_tensor_dtype(t), XG_I32, "%s: expected i32", what);
    int64_t n = tu_numel(shape, ndim);
    int32_t *got = tu_read_i32(t);
    for (int64_t i = 0; i < n; i++) {
        if (got[i] != want[i]) {
            int32_t g = got[i];
            free(got);
            cr_assert_fail("%s: index %" PRId64 ": got %d, expected %d", what,
                           i, (int)g, (int)want[i]);
        }
    }
    free(got);
}

/* Asserts that the last error has this status and that its message
 * contains `needle` (NULL: any non-empty message). */
static inline void tu_assert_error(xg_status want, const char *needle,
                                   const char *what)
{
    xg_status got = xg_last_status();
    const char *msg = xg_last_error();
    cr_assert_eq(got, want, "%s: status %d (%s), expected %d (%s); message: "
                 "\"%s\"", what, (int)got, xg_status_str(got), (int)want,
                 xg_status_str(want), msg ? msg : "(null)");
    cr_assert(msg && msg[0], "%s: empty error message", what);
    if (needle)
        cr_assert(strstr(msg, needle) != NULL,
                  "%s: message \"%s\" does not mention \"%s\"", what, msg,
                  needle);
}

#endif
