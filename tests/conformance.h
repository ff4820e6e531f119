/* Cross-backend conformance suite: shared declarations.
 *
 * The suite runs once per non-CPU backend (XGRAD_TEST_BACKEND=opencl or
 * vulkan, optionally with ":INDEX") and compares every result against the
 * CPU backend, the reference:
 *   conformance.c           main() (device probe, skip/fail), shared
 *                           compare helpers, the kernel-level tests (one
 *                           Criterion test per op, generated from ops.def)
 *   conformance_cases.c     the kernel-level case tables, per op family
 *   conformance_frontend.c  public-API tests: forward + backward per op,
 *                           and the MLP training agreement test
 *
 * Criterion re-executes the test binary for every test, so nothing set up
 * in main() survives into a test: each test finds its target with
 * conf_target() (from the environment) and opens its own devices.
 */
#ifndef XGRAD_TESTS_CONFORMANCE_H
#define XGRAD_TESTS_CONFORMANCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend.h"

/* Forward tolerance: normalised MSE, sum((a-b)^2) / max(sum(a^2), tiny). */
#define CONF_NMSE_TOL 1e-7
#define CONF_NMSE_TINY 1e-30
/* Gradient tolerance of the front-end tests: |a-b| <= atol + rtol*|ref|. */
#define CONF_GRAD_ATOL 1e-3
#define CONF_GRAD_RTOL 1e-3

/* The nMSE bound of a bf16 or f16 result of `op` against the CPU's f32 on
 * the same rounded inputs (the one table of 16-bit tolerances, in
 * conformance.c); 0 for other dtypes. */
double conf_half_tol(xg_dtype t, xg_op op);

/* ---- the backend under test ---------------------------------------------- */

typedef struct conf_target {
    const char *name;         /* "opencl", "vulkan" (or "cpu": self-check) */
    int index;                /* device index */
    char spec[64];            /* "opencl:0", for xg_device_open */
    const xg_backend *backend; /* NULL when not built into this library */
} conf_target;

/* Parses XGRAD_TEST_BACKEND ("name" or "name:index"). Returns false with a
 * reason in `why` when the variable is unset or malformed. */
bool conf_target_parse(conf_target *t, char *why, size_t why_len);

/* The target of this run; fails the current test when there is none. */
const conf_target *conf_target_get(void);

/* A built-in backend by name, or NULL. */
const xg_backend *conf_backend_by_name(const char *name);

/* Fails the current test if the Vulkan validation layer reported anything
 * in this process (a no-op for other backends). Call at the end of every
 * test, after the devices are closed. */
void conf_check_validation(void);

/* ---- comparison ------------------------------------------------------------ */

/* Result of comparing n floats `got` against the reference `ref`. */
typedef struct conf_cmp {
    double nmse;          /* over the places where both are finite */
    int64_t nonfinite_mismatch; /* places where NaN/Inf differ */
    int64_t first_bad;    /* first mismatching non-finite place, or -1 */
    int64_t worst;        /* place of the largest |got - ref| (finite) */
} conf_cmp;

conf_cmp conf_compare_f32(const float *got, const float *ref, int64_t n);

/* Formats "x=1.5" style values for messages (handles NaN/Inf). */
const char *conf_fmt_f32(char *buf, size_t len, float v);

/* ---- host data ------------------------------------------------------------- */

/* A small deterministic generator (splitmix64) for test inputs. */
typedef struct conf_rng {
    uint64_t state;
} conf_rng;

conf_rng conf_rng_make(uint64_t seed_a, uint64_t seed_b);
uint64_t conf_rng_u64(conf_rng *r);
float conf_rng_uniform(conf_rng *r, float lo, float hi);

/* ---- kernel-level cases ---------------------------------------------------- */

/* How a buffer's host values are made. */
typedef enum conf_domain {
    DOM_SIGNED = 0, /* uniform in [-3, 3): the default */
    DOM_POSITIVE,   /* uniform in [0.05, 4): log, sqrt, Adam's exp_avg_sq */
    DOM_NONZERO,    /* +-[0.5, 2): divisors */
    DOM_DISTINCT,   /* a shuffle of distinct values in (-3, 3): no ties */
    DOM_WIDE,       /* uniform in [-80, 80): tests max-subtraction */
    DOM_SPECIAL,    /* cycles 0, -0, +-1, +-100, +-1e30, +-Inf, NaN, ... */
    DOM_ZERO,       /* all zero: optimizer state before the first step */
    DOM_CLASS,      /* i32 in [0, classes): labels and indices */
    DOM_SMALL,      /* uniform in [-0.1, 0.1): Adam's exp_avg */
    DOM_TIES,       /* integers 0..3 as floats: many ties (first index wins) */
    DOM_POOL_INDEX, /* i32: for each output of `pool`, a pixel of its window */
} conf_domain;

typedef struct conf_buf {
    int64_t count;  /* elements; 0 leaves the slot NULL */
    xg_dtype dtype;
    conf_domain domain;
    int32_t classes; /* DOM_CLASS: values in [0, classes) */
    xg_pool_args pool; /* DOM_POOL_INDEX: the pooling the indices come from */
} conf_buf;

/* One value written over a generated input after generation. */
typedef struct conf_poison {
    int buf;        /* input index */
    int64_t at;     /* element */
    float f;        /* value for an f32 buffer */
    int32_t i;      /* value for an i32 buffer */
} conf_poison;

#define CONF_MAX_POISON 2

/* Fills b->count elements at `dst` (f32 or i32) from b->domain. */
void conf_fill(void *dst, const conf_buf *b, conf_rng *r);

typedef struct conf_case {
    char desc[200];        /* "matmul trans_a=1 trans_b=0 m=17 n=3 k=65" */
    xg_kernel_call call;   /* op and arguments; the runner fills buffers */
    conf_buf in[XG_KERNEL_MAX_IN];
    conf_buf out[XG_KERNEL_MAX_OUT];
    bool out_has_state;    /* update ops: out[] starts from `domain` values */
    conf_poison poison[CONF_MAX_POISON];
    int n_poison;
    /* Rows of out[0] (nan_row_len elements each) that must be NaN on both
     * backends, e.g. the row of an invalid label; -1 for none. */
    int64_t nan_rows[CONF_MAX_POISON];
    int n_nan_rows;
    int64_t nan_row_len;
    double tol;            /* nMSE bound for f32 outputs */
    /* f32 outputs must equal the CPU's bit for bit (NaN matching any NaN):
     * ops that only move values, and the index backward, whose sums every
     * backend forms in the same order. */
    bool exact;
} conf_case;

typedef struct conf_case_list {
    conf_case *v;
    int n, cap;
} conf_case_list;

/* Builds every case of one op from its family's tables (and the per-op
 * properties in conformance_cases.c). The caller frees list->v. */
void conf_cases_for_op(xg_op op, conf_case_list *list);

/* Number of kernel-level cases over all ops (for the log). */
int conf_case_count_all(void);

#endif
