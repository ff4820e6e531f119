/* Cross-backend conformance suite: main(), shared helpers and the
 * kernel-level tests (one Criterion test per op of api/core/ops.def).
 *
 * Run: XGRAD_TEST_BACKEND=opencl ./conformance   (or vulkan, or "name:N").
 * Exit 77 (meson's SKIP) when the backend is not built or has no device,
 * unless XGRAD_REQUIRE_BACKENDS=1, which makes that a failure.
 * Two knobs trim a run (the CPU's 16-bit test uses them): with
 * XGRAD_CONF_16BIT_ONLY=1 the kernel-level tests run only their 16-bit
 * cases (against the CPU's f32 kernels, so they mean something with
 * XGRAD_TEST_BACKEND=cpu too, where the f32 cases would compare the CPU
 * with itself); XGRAD_CONF_MAX_ELEMENTS=N skips the cases whose buffers
 * hold more than N elements in all (the "huge" ones, made for the GPUs'
 * dispatch limits). */
#include "conformance.h"
#include "core_impl.h" /* xg__launch, xg_device's backend device */

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef XGRAD_HAVE_VULKAN
#include "../backends/vulkan/vulkan_backend.h"
#endif

/* ---- target selection ------------------------------------------------------ */

static const struct {
    const char *name;
    const xg_backend *backend;
} built_backends[] = {
    {"cpu", &xg_backend_cpu},
#ifdef XGRAD_HAVE_OPENCL
    {"opencl", &xg_backend_opencl},
#endif
#ifdef XGRAD_HAVE_VULKAN
    {"vulkan", &xg_backend_vulkan},
#endif
};
#define N_BUILT ((int)(sizeof built_backends / sizeof built_backends[0]))

const xg_backend *conf_backend_by_name(const char *name)
{
    for (int i = 0; i < N_BUILT; i++)
        if (strcmp(built_backends[i].name, name) == 0)
            return built_backends[i].backend;
    return NULL;
}

bool conf_target_parse(conf_target *t, char *why, size_t why_len)
{
    static const char *const known[] = {"cpu", "opencl", "vulkan"};
    memset(t, 0, sizeof *t);
    const char *env = getenv("XGRAD_TEST_BACKEND");
    if (!env || !*env) {
        snprintf(why, why_len, "XGRAD_TEST_BACKEND is not set (want opencl "
                 "or vulkan, optionally with :INDEX)");
        return false;
    }
    char name[32];
    size_t len = strcspn(env, ":");
    if (len == 0 || len >= sizeof name) {
        snprintf(why, why_len, "XGRAD_TEST_BACKEND=%s is malformed", env);
        return false;
    }
    memcpy(name, env, len);
    name[len] = '\0';
    if (env[len] == ':') {
        char *end;
        long idx = strtol(env + len + 1, &end, 10);
        if (*end || end == env + len + 1 || idx < 0 || idx > 1000) {
            snprintf(why, why_len, "XGRAD_TEST_BACKEND=%s: bad device index",
                     env);
            return false;
        }
        t->index = (int)idx;
    }
    for (size_t i = 0; i < sizeof known / sizeof known[0]; i++)
        if (strcmp(known[i], name) == 0)
            t->name = known[i];
    if (!t->name) {
        snprintf(why, why_len, "XGRAD_TEST_BACKEND=%s: unknown backend "
                 "(cpu, opencl, vulkan)", env);
        return false;
    }
    snprintf(t->spec, sizeof t->spec, "%s:%d", t->name, t->index);
    t->backend = conf_backend_by_name(t->name);
    return true;
}

const conf_target *conf_target_get(void)
{
    static conf_target target;
    static bool parsed;
    if (!parsed) {
        char why[256];
        if (!conf_target_parse(&target, why, sizeof why))
            cr_assert_fail("%s", why);
        if (!target.backend)
            cr_assert_fail("backend %s is not built into this library",
                           target.name);
        parsed = true;
    }
    return &target;
}

void conf_check_validation(void)
{
#ifdef XGRAD_HAVE_VULKAN
    const conf_target *t = conf_target_get();
    if (strcmp(t->name, "vulkan") != 0)
        return;
    uint64_t n = xg_vulkan_validation_messages();
    cr_assert(n == 0, "the Vulkan validation layer reported %" PRIu64
              " message(s) during this test (see the log above)", n);
#endif
}

/* Checks that the target backend has a device; on failure writes the
 * reason. Runs in main(), before Criterion starts any test. */
static bool probe_target(const conf_target *t, char *why, size_t why_len)
{
    if (!t->backend) {
        char list[128] = "";
        for (int i = 0, len = 0; i < N_BUILT; i++)
            len += snprintf(list + len, sizeof list - (size_t)len, "%s%s",
                            i ? ", " : "", built_backends[i].name);
        snprintf(why, why_len, "not built into this library (built: %s)",
                 list);
        return false;
    }
    xg_device_desc descs[16];
    int count = 0;
    xg_status st = t->backend->enumerate(descs, 16, &count);
    if (st != XG_OK) {
        snprintf(why, why_len, "%s: %s", xg_status_str(st), xg_last_error());
        return false;
    }
    if (t->index >= count) {
        snprintf(why, why_len, "device index %d requested, %d device(s) found",
                 t->index, count);
        return false;
    }
    xg_backend_device *dev = NULL;
    st = t->backend->open(t->index, &dev);
    if (st != XG_OK) {
        snprintf(why, why_len, "opening device %d failed: %s: %s", t->index,
                 xg_status_str(st), xg_last_error());
        return false;
    }
    fprintf(stderr, "conformance: testing %s (%s%s) against cpu; %d "
            "kernel-level cases over %d ops\n", t->spec,
            dev->desc.name, dev->desc.is_software ? ", software" : "",
            conf_case_count_all(), (int)XG_OP_COUNT);
    t->backend->close(dev);
    return true;
}

int main(int argc, char *argv[])
{
    conf_target t;
    char why[512];
    bool required = getenv("XGRAD_REQUIRE_BACKENDS") &&
                    strcmp(getenv("XGRAD_REQUIRE_BACKENDS"), "1") == 0;
    if (!conf_target_parse(&t, why, sizeof why)) {
        /* Unset: nothing to test. Set but malformed: a configuration error. */
        bool unset = !getenv("XGRAD_TEST_BACKEND") ||
                     !*getenv("XGRAD_TEST_BACKEND");
        fprintf(stderr, "%s: %s\n", unset && !required ? "SKIPPED" : "FAILED",
                why);
        return unset && !required ? 77 : 1;
    }
    if (!probe_target(&t, why, sizeof why)) {
        /* Loud on purpose: a skipped backend must not pass unnoticed. */
        fprintf(stderr, "\n*****************************************************"
                "*******\n%s: %s backend has no device: %s\n%s\n"
                "************************************************************"
                "\n\n", required ? "FAILED" : "SKIPPED", t.name, why,
                required ? "(XGRAD_REQUIRE_BACKENDS=1: a missing backend is a "
                           "failure)"
                         : "(set XGRAD_REQUIRE_BACKENDS=1 to make this a "
                           "failure)");
        return required ? 1 : 77;
    }

    struct criterion_test_set *tests = criterion_initialize();
    int result = 0;
    if (criterion_handle_args(argc, argv, true)) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        result = !criterion_run_all_tests(tests);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        fprintf(stderr, "conformance: %s: %.1f s\n", t.spec,
                (double)(t1.tv_sec - t0.tv_sec) +
                    (double)(t1.tv_nsec - t0.tv_nsec) * 1e-9);
    }
    criterion_finalize(tests);
    return result;
}

/* ---- host data ------------------------------------------------------------- */

conf_rng conf_rng_make(uint64_t seed_a, uint64_t seed_b)
{
    conf_rng r = {seed_a * 0x9e3779b97f4a7c15ULL ^ (seed_b + 0x632be59bd9b4e019ULL)};
    conf_rng_u64(&r);
    return r;
}

uint64_t conf_rng_u64(conf_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ULL);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
    return z ^ (z >> 31);
}

float conf_rng_uniform(conf_rng *r, float lo, float hi)
{
    float u = (float)(conf_rng_u64(r) >> 40) * (1.0f / 16777216.0f);
    return lo + (hi - lo) * u;
}

/* Indices a max_pool2d could have produced: for every output, a random
 * in-image pixel of its window, as (row * w + col) in its plane. */
static void conf_fill_pool_index(int32_t *idx, const xg_pool_args *p,
                                 conf_rng *r)
{
    for (int64_t o = 0; o < p->n * p->c * p->oh * p->ow; o++) {
        int64_t oi = o / p->ow % p->oh, oj = o % p->ow, row, col;
        do {
            row = oi * p->stride_h - p->pad_h +
                  (int64_t)(conf_rng_u64(r) % (uint64_t)p->kh);
            col = oj * p->stride_w - p->pad_w +
                  (int64_t)(conf_rng_u64(r) % (uint64_t)p->kw);
        } while (row < 0 || row >= p->h || col < 0 || col >= p->w);
        idx[o] = (int32_t)(row * p->w + col);
    }
}

void conf_fill(void *dst, const conf_buf *b, conf_rng *r)
{
    static const float special[] = {
        0.0f, -0.0f, 1.0f, -1.0f, 0.5f, -0.5f, 3.0f, -3.0f, 20.0f, -20.0f,
        100.0f, -100.0f, 1e30f, -1e30f, 1e-30f, -1e-30f, INFINITY, -INFINITY,
        NAN, 1e-3f, -1e-3f,
    };
    const int n_special = sizeof special / sizeof special[0];
    float *f = dst;
    int32_t *i32 = dst;
    int64_t n = b->count;
    switch (b->domain) {
    case DOM_CLASS:
        for (int64_t i = 0; i < n; i++)
            i32[i] = (int32_t)(conf_rng_u64(r) % (uint64_t)b->classes);
        return;
    case DOM_DISTINCT:
        /* Equally spaced values, then a Fisher-Yates shuffle. */
        for (int64_t i = 0; i < n; i++)
            f[i] = -3.0f + 6.0f * ((float)i + 0.5f) / (float)n;
        for (int64_t i = n - 1; i > 0; i--) {
            int64_t j = (int64_t)(conf_rng_u64(r) % (uint64_t)(i + 1));
            float t = f[i];
            f[i] = f[j];
            f[j] = t;
        }
        return;
    case DOM_POOL_INDEX:
        conf_fill_pool_index(i32, &b->pool, r);
        return;
    case DOM_SPECIAL:
        for (int64_t i = 0; i < n; i++)
            f[i] = i < n_special ? special[i]
                                 : special[conf_rng_u64(r) % n_special];
        return;
    default:
        break;
    }
    for (int64_t i = 0; i < n; i++) {
        switch (b->domain) {
        case DOM_POSITIVE: f[i] = conf_rng_uniform(r, 0.05f, 4.0f); break;
        case DOM_NONZERO: {
            float m = conf_rng_uniform(r, 0.5f, 2.0f);
            f[i] = (conf_rng_u64(r) & 1) ? m : -m;
            break;
        }
        case DOM_WIDE: f[i] = conf_rng_uniform(r, -80.0f, 80.0f); break;
        case DOM_ZERO: f[i] = 0.0f; break;
        case DOM_SMALL: f[i] = conf_rng_uniform(r, -0.1f, 0.1f); break;
        case DOM_TIES: f[i] = (float)(conf_rng_u64(r) % 4); break;
        default: f[i] = conf_rng_uniform(r, -3.0f, 3.0f); break;
        }
    }
}

/* ---- comparison ------------------------------------------------------------- */

conf_cmp conf_compare_f32(const float *got, const float *ref, int64_t n)
{
    conf_cmp c = {0, 0, -1, -1};
    double num = 0, den = 0, worst = -1;
    for (int64_t i = 0; i < n; i++) {
        float a = ref[i], b = got[i];
        if (!isfinite(a) || !isfinite(b)) {
            bool same = (isnan(a) && isnan(b)) ||
                        (isinf(a) && isinf(b) && signbit(a) == signbit(b));
            if (!same) {
                if (c.first_bad < 0)
                    c.first_bad = i;
                c.nonfinite_mismatch++;
            }
            continue;
        }
        double d = (double)a - (double)b;
        num += d * d;
        den += (double)a * (double)a;
        if (fabs(d) > worst) {
            worst = fabs(d);
            c.worst = i;
        }
    }
    c.nmse = num / (den > CONF_NMSE_TINY ? den : CONF_NMSE_TINY);
    return c;
}

const char *conf_fmt_f32(char *buf, size_t len, float v)
{
    snprintf(buf, len, "%.9g", (double)v);
    return buf;
}

/* ---- kernel-level runner ------------------------------------------------------ */

/* Elements after the logical end of every output buffer, filled with
 * SENTINEL (a NaN bit pattern) that no kernel may touch. The logical part
 * starts as SENTINEL too (except update ops' state), so an element a
 * kernel forgets to write shows up as a NaN mismatch. */
#define GUARD 67
#define SENTINEL 0x7fc0dea1u
/* At most this many failure messages per test; the rest are counted. */
#define MAX_MESSAGES 12

typedef struct dev_pair {
    const xg_backend *be[2]; /* [0] cpu reference, [1] target */
    xg_backend_device *dev[2];
    /* The target as the core opens it (xg_device_open): dev[1] is its
     * backend device. The 16-bit cases launch through the core
     * (xg__launch), so that ops the backend has no 16-bit kernel for run
     * widened as they do under the API. */
    xg_device *core;
} dev_pair;

/* Host copies of one case's buffers. */
typedef struct case_data {
    uint32_t *in[XG_KERNEL_MAX_IN];  /* inputs, shared by both devices */
    uint32_t *out0[XG_KERNEL_MAX_OUT]; /* initial outputs incl. guard */
    uint32_t *res[2][XG_KERNEL_MAX_OUT]; /* results: [cpu, target] */
} case_data;

typedef struct run_state {
    const char *target;
    int failures;  /* failing cases */
    int messages;  /* messages printed */
} run_state;

static void report(run_state *rs, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;

static void report(run_state *rs, const char *fmt, ...)
{
    if (rs->messages++ >= MAX_MESSAGES)
        return;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cr_expect_fail("%s", msg);
}

static void *xmalloc(size_t bytes)
{
    void *p = malloc(bytes ? bytes : 1);
    cr_assert(p, "out of host memory (%zu bytes)", bytes);
    return p;
}

static void case_data_free(case_data *d)
{
    for (int k = 0; k < XG_KERNEL_MAX_IN; k++)
        free(d->in[k]);
    for (int k = 0; k < XG_KERNEL_MAX_OUT; k++) {
        free(d->out0[k]);
        free(d->res[0][k]);
        free(d->res[1][k]);
    }
}

static void case_data_make(const conf_case *c, int case_index, case_data *d)
{
    memset(d, 0, sizeof *d);
    for (int k = 0; k < XG_KERNEL_MAX_IN; k++) {
        if (c->in[k].count == 0)
            continue;
        conf_rng r = conf_rng_make((uint64_t)c->call.op * 1000 + case_index,
                                   (uint64_t)k);
        d->in[k] = xmalloc((size_t)c->in[k].count * 4);
        conf_fill(d->in[k], &c->in[k], &r);
    }
    for (int p = 0; p < c->n_poison; p++) {
        const conf_poison *q = &c->poison[p];
        if (c->in[q->buf].dtype == XG_I32)
            ((int32_t *)d->in[q->buf])[q->at] = q->i;
        else
            ((float *)d->in[q->buf])[q->at] = q->f;
    }
    for (int k = 0; k < XG_KERNEL_MAX_OUT; k++) {
        int64_t n = c->out[k].count;
        if (n == 0)
            continue;
        d->out0[k] = xmalloc((size_t)(n + GUARD) * 4);
        for (int64_t i = 0; i < n + GUARD; i++)
            d->out0[k][i] = SENTINEL;
        if (c->out_has_state) {
            conf_rng r = conf_rng_make((uint64_t)c->call.op * 1000 + case_index,
                                       100 + (uint64_t)k);
            conf_fill(d->out0[k], &c->out[k], &r);
        }
    }
}

/* Allocates a buffer of `bytes` and uploads `src` into it. */
static xg_status put(const xg_backend *be, xg_backend_device *dev,
                     const void *src, size_t bytes, xg_buffer **out)
{
    xg_status st = be->alloc(dev, bytes, out);
    return st != XG_OK ? st : be->upload(dev, *out, 0, src, bytes);
}

/* Downloads input buffer `buf` and finds the first element that differs
 * from the host copy (-1: none). */
static xg_status first_changed(const xg_backend *be, xg_backend_device *dev,
                               xg_buffer *buf, const uint32_t *host,
                               int64_t n, int64_t *at)
{
    uint32_t *back = xmalloc((size_t)n * 4);
    xg_status st = be->download(dev, buf, 0, back, (size_t)n * 4);
    *at = -1;
    for (int64_t i = 0; st == XG_OK && i < n && *at < 0; i++)
        if (back[i] != host[i])
            *at = i;
    free(back);
    return st;
}

/* Runs case `c` on device `side` (0 cpu, 1 target) and downloads the
 * outputs (with their guards) into d->res[side]. Inputs are read-only: a
 * kernel that writes one (a wrong binding, scratch space in place) fails
 * even if its output is right. Returns false after reporting an error. */
static bool run_on(const dev_pair *dp, int side, const conf_case *c,
                   case_data *d, run_state *rs)
{
    const xg_backend *be = dp->be[side];
    xg_backend_device *dev = dp->dev[side];
    xg_kernel_call call = c->call;
    xg_buffer *bufs[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    xg_buffer **outs = bufs + XG_KERNEL_MAX_IN;
    xg_status st = XG_OK;
    const char *stage = "upload input";
    int64_t changed = -1;
    int k;

    for (k = 0; k < XG_KERNEL_MAX_IN; k++)
        if (c->in[k].count && (st = put(be, dev, d->in[k],
                                        (size_t)c->in[k].count * 4,
                                        &bufs[k])) != XG_OK)
            goto done;
    stage = "upload output";
    for (k = 0; k < XG_KERNEL_MAX_OUT; k++)
        if (c->out[k].count && (st = put(be, dev, d->out0[k],
                                         (size_t)(c->out[k].count + GUARD) * 4,
                                         &outs[k])) != XG_OK)
            goto done;
    for (k = 0; k < XG_KERNEL_MAX_IN; k++)
        call.in[k] = (xg_operand){bufs[k], c->in[k].dtype};
    for (k = 0; k < XG_KERNEL_MAX_OUT; k++)
        call.out[k] = (xg_operand){outs[k], c->out[k].dtype};
    stage = "kernel call";
    if ((st = be->kernels[xg_op_table[c->call.op].family](dev, &call)) !=
        XG_OK)
        goto done;
    stage = "download output";
    for (k = 0; k < XG_KERNEL_MAX_OUT; k++) {
        size_t bytes = (size_t)(c->out[k].count + GUARD) * 4;
        if (c->out[k].count == 0)
            continue;
        d->res[side][k] = xmalloc(bytes);
        if ((st = be->download(dev, outs[k], 0, d->res[side][k], bytes)) !=
            XG_OK)
            goto done;
    }
    stage = "download input";
    for (k = 0; k < XG_KERNEL_MAX_IN && changed < 0; k++)
        if (c->in[k].count &&
            (st = first_changed(be, dev, bufs[k], d->in[k], c->in[k].count,
                                &changed)) != XG_OK)
            goto done;
done:
    if (st != XG_OK)
        report(rs, "%s: %s failed on %s: %s: %s", c->desc, stage, be->name,
               xg_status_str(st), xg_last_error());
    else if (changed >= 0)
        report(rs, "%s: in[%d] was modified by the kernel on %s (first at "
               "element %" PRId64 ")", c->desc, k - 1, be->name, changed);
    for (k = 0; k < XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT; k++)
        if (bufs[k])
            be->free(dev, bufs[k]);
    return st == XG_OK && changed < 0;
}

/* For exact cases: out[k] must hold the reference's bits (any NaN matches
 * any NaN). Reports the first difference. */
static bool same_bits(const conf_case *c, int k, const uint32_t *got,
                      const uint32_t *ref, int64_t n, run_state *rs)
{
    for (int64_t i = 0; i < n; i++) {
        float g, r;
        memcpy(&g, &got[i], sizeof g);
        memcpy(&r, &ref[i], sizeof r);
        if (got[i] == ref[i] || (isnan(g) && isnan(r)))
            continue;
        char gs[32], es[32];
        report(rs, "%s: out[%d] differs in its bits on %s at %" PRId64
               ": %s (0x%08x), cpu %s (0x%08x); this op must match exactly",
               c->desc, k, rs->target, i, conf_fmt_f32(gs, sizeof gs, g),
               got[i], conf_fmt_f32(es, sizeof es, r), ref[i]);
        return false;
    }
    return true;
}

/* Compares the results of one case; reports each problem. Returns false
 * if anything differs. */
static bool check_case(const conf_case *c, const case_data *d, run_state *rs)
{
    bool ok = true;
    const char *side_name[2] = {"cpu", rs->target};
    for (int k = 0; k < XG_KERNEL_MAX_OUT; k++) {
        int64_t n = c->out[k].count;
        if (n == 0)
            continue;
        for (int s = 0; s < 2; s++)
            for (int64_t i = n; i < n + GUARD; i++)
                if (d->res[s][k][i] != SENTINEL) {
                    report(rs, "%s: out[%d]: write past the end on %s: guard "
                           "element %" PRId64 " (index %" PRId64 ") changed "
                           "to 0x%08x", c->desc, k, side_name[s], i - n, i,
                           d->res[s][k][i]);
                    ok = false;
                    break;
                }
        const uint32_t *ref = d->res[0][k], *got = d->res[1][k];
        if (!c->out_has_state)
            for (int64_t i = 0; i < n; i++)
                if (got[i] == SENTINEL && ref[i] != SENTINEL) {
                    report(rs, "%s: out[%d]: element %" PRId64 " never "
                           "written on %s", c->desc, k, i, rs->target);
                    ok = false;
                    break;
                }
        if (c->out[k].dtype == XG_I32) {
            for (int64_t i = 0; i < n; i++)
                if (ref[i] != got[i]) {
                    report(rs, "%s: out[%d] (i32) differs on %s at %" PRId64
                           ": %" PRId32 ", cpu %" PRId32, c->desc, k,
                           rs->target, i, (int32_t)got[i], (int32_t)ref[i]);
                    ok = false;
                    break;
                }
            continue;
        }
        if (c->exact && !same_bits(c, k, got, ref, n, rs))
            ok = false;
        conf_cmp r = conf_compare_f32((const float *)got, (const float *)ref,
                                      n);
        char g[32], e[32];
        if (r.nonfinite_mismatch) {
            int64_t i = r.first_bad;
            report(rs, "%s: out[%d]: NaN/Inf in different places on %s "
                   "(%" PRId64 " of %" PRId64 "), first at %" PRId64
                   ": %s, cpu %s%s", c->desc, k, rs->target,
                   r.nonfinite_mismatch, n, i,
                   conf_fmt_f32(g, sizeof g, ((const float *)got)[i]),
                   conf_fmt_f32(e, sizeof e, ((const float *)ref)[i]),
                   got[i] == SENTINEL ? " (never written)" : "");
            ok = false;
        }
        if (!(r.nmse <= c->tol)) {
            int64_t i = r.worst;
            report(rs, "%s: out[%d]: nMSE %.3g > %.3g on %s (worst at %" PRId64
                   ": %s, cpu %s)", c->desc, k, r.nmse, c->tol, rs->target, i,
                   conf_fmt_f32(g, sizeof g, i >= 0 ? ((const float *)got)[i] : 0),
                   conf_fmt_f32(e, sizeof e, i >= 0 ? ((const float *)ref)[i] : 0));
            ok = false;
        }
    }
    /* Rows that must be NaN (invalid labels), on both backends. */
    for (int r = 0; r < c->n_nan_rows; r++)
        for (int s = 0; s < 2; s++) {
            const float *o = (const float *)d->res[s][0];
            for (int64_t j = 0; j < c->nan_row_len; j++) {
                float v = o[c->nan_rows[r] * c->nan_row_len + j];
                if (!isnan(v)) {
                    char g[32];
                    report(rs, "%s: row %" PRId64 " must be NaN on %s, "
                           "element %" PRId64 " is %s", c->desc,
                           c->nan_rows[r], side_name[s], j,
                           conf_fmt_f32(g, sizeof g, v));
                    ok = false;
                    break;
                }
            }
        }
    return ok;
}

static void open_pair(dev_pair *dp)
{
    const conf_target *t = conf_target_get();
    dp->be[0] = &xg_backend_cpu;
    dp->be[1] = t->backend;
    dp->dev[0] = dp->dev[1] = NULL;
    dp->core = NULL;
    xg_status st = xg_backend_cpu.open(0, &dp->dev[0]);
    cr_assert(st == XG_OK, "opening the cpu reference failed: %s: %s",
              xg_status_str(st), xg_last_error());
    st = xg_device_open(t->spec, &dp->core);
    cr_assert(st == XG_OK, "opening %s failed: %s: %s", t->spec,
              xg_status_str(st), xg_last_error());
    cr_assert(dp->core->backend == t->backend, "%s opened backend %s",
              t->spec, dp->core->backend->name);
    dp->dev[1] = dp->core->bdev;
}

static void close_pair(dev_pair *dp)
{
    if (dp->core)
        xg_device_close(dp->core);
    if (dp->dev[0])
        dp->be[0]->close(dp->dev[0]);
}

/* ---- 16-bit element types ------------------------------------------------- */

/* The one table of 16-bit tolerances. A bf16 or f16 result is compared
 * with the CPU's f32 kernel run on the same inputs (rounded to the dtype
 * first), its output rounded to the dtype: nMSE bounds of about
 * (2^-8)^2 for bf16 and (2^-11)^2 for f16 where each output comes from a
 * few operations, 2^6 times looser where it sums many (reductions,
 * matrix products, convolutions, norms, attention, index backward). Ops
 * that only move values (props' exact) must give the rounded reference's
 * bits. Casts are compared bit for bit with the CPU's. */
static const struct {
    xg_dtype dtype;
    double elementwise, summing;
} half_tol[] = {
    {XG_BF16, 0x1p-16, 0x1p-10},
    {XG_F16, 0x1p-22, 0x1p-16},
};

double conf_half_tol(xg_dtype t, xg_op op)
{
    static const xg_op_family summing[] = {
        XG_FAMILY_REDUCE, XG_FAMILY_REDUCE_BACKWARD, XG_FAMILY_ROWS,
        XG_FAMILY_GEMM, XG_FAMILY_CONV, XG_FAMILY_POOL, XG_FAMILY_INDEX,
        XG_FAMILY_ATTENTION, XG_FAMILY_NORM,
    };
    bool sums = false;
    for (size_t i = 0; i < sizeof summing / sizeof summing[0]; i++)
        sums = sums || xg_op_table[op].family == summing[i];
    for (size_t i = 0; i < sizeof half_tol / sizeof half_tol[0]; i++)
        if (half_tol[i].dtype == t)
            return sums ? half_tol[i].summing : half_tol[i].elementwise;
    return 0;
}

/* Unwritten 16-bit outputs hold this (a NaN in both formats). */
#define SENTINEL16 0x7fa1u

static uint16_t to_half(float v, xg_dtype t)
{
    uint16_t h;
    (t == XG_BF16 ? xg_f32_to_bf16 : xg_f32_to_f16)(&v, &h, 1);
    return h;
}

static float from_half(uint16_t h, xg_dtype t)
{
    float v;
    (t == XG_BF16 ? xg_bf16_to_f32 : xg_f16_to_f32)(&h, &v, 1);
    return v;
}

static bool is_t(const xg_op_info *info, int k)
{
    return (k < info->n_in ? info->in_rule[k]
                           : info->out_rule[k - info->n_in]) == 'T';
}

/* Runs case c on the target with every T buffer in dtype t, and on the
 * CPU in f32 on the same rounded inputs; the results go to d->res (the
 * target's widened to f32, the reference rounded to t and widened, so
 * that check_case compares them; guards keep SENTINEL). */
static bool run_on_half(const dev_pair *dp, const conf_case *c, xg_dtype t,
                        case_data *d, run_state *rs)
{
    const xg_op_info *info = &xg_op_table[c->call.op];
    for (int k = 0; k < info->n_in; k++)
        if (is_t(info, k) && d->in[k])
            for (int64_t i = 0; i < c->in[k].count; i++) {
                float *f = (float *)d->in[k] + i;
                *f = from_half(to_half(*f, t), t);
            }
    /* outputs that start from a state start from the rounded state */
    for (int k = 0; c->out_has_state && k < info->n_out; k++)
        if (is_t(info, info->n_in + k) && d->out0[k])
            for (int64_t i = 0; i < c->out[k].count; i++) {
                float *f = (float *)d->out0[k] + i;
                *f = from_half(to_half(*f, t), t);
            }
    if (!run_on(dp, 0, c, d, rs))
        return false;
    const xg_backend *be = dp->be[1];
    xg_backend_device *dev = dp->dev[1];
    xg_kernel_call call = c->call;
    xg_buffer *bufs[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT] = {0};
    xg_buffer **outs = bufs + XG_KERNEL_MAX_IN;
    xg_status st = XG_OK;
    const char *stage = "upload";
    int k;
    for (k = 0; st == XG_OK && k < XG_KERNEL_MAX_IN; k++) {
        int64_t n = c->in[k].count;
        if (!n)
            continue;
        if (is_t(info, k)) {
            uint16_t *h = xmalloc((size_t)n * 2);
            for (int64_t i = 0; i < n; i++)
                h[i] = to_half(((float *)d->in[k])[i], t);
            st = put(be, dev, h, (size_t)n * 2, &bufs[k]);
            free(h);
        } else {
            st = put(be, dev, d->in[k], (size_t)n * 4, &bufs[k]);
        }
        xg_dtype dt = is_t(info, k) ? t : c->in[k].dtype;
        call.in[k] = (xg_operand){bufs[k], dt, (size_t)n * xg_dtype_size(dt)};
    }
    for (k = 0; st == XG_OK && k < XG_KERNEL_MAX_OUT; k++) {
        int64_t n = c->out[k].count;
        if (!n)
            continue;
        bool half = is_t(info, info->n_in + k);
        if (half) {
            uint16_t *h = xmalloc((size_t)(n + GUARD) * 2);
            for (int64_t i = 0; i < n + GUARD; i++)
                h[i] = c->out_has_state && i < n
                           ? to_half(((float *)d->out0[k])[i], t)
                           : (uint16_t)SENTINEL16;
            st = put(be, dev, h, (size_t)(n + GUARD) * 2, &outs[k]);
            free(h);
        } else {
            st = put(be, dev, d->out0[k], (size_t)(n + GUARD) * 4, &outs[k]);
        }
        /* the size stated is the output's, without the guard: the
         * widening casts back exactly that many elements */
        xg_dtype dt = half ? t : c->out[k].dtype;
        call.out[k] = (xg_operand){outs[k], dt, (size_t)n * xg_dtype_size(dt)};
    }
    if (st == XG_OK) {
        stage = "launch (xg__launch)";
        st = xg__launch(dp->core, &call);
    }
    for (k = 0; st == XG_OK && k < XG_KERNEL_MAX_OUT; k++) {
        int64_t n = c->out[k].count;
        if (!n)
            continue;
        stage = "download";
        bool half = is_t(info, info->n_in + k);
        d->res[1][k] = xmalloc((size_t)(n + GUARD) * 4);
        if (!half) {
            st = be->download(dev, outs[k], 0, d->res[1][k],
                              (size_t)(n + GUARD) * 4);
            continue;
        }
        uint16_t *h = xmalloc((size_t)(n + GUARD) * 2);
        st = be->download(dev, outs[k], 0, h, (size_t)(n + GUARD) * 2);
        for (int64_t i = 0; i < n + GUARD; i++) {
            float v = from_half(h[i], t);
            uint32_t *ref = &d->res[0][k][i];
            if (*ref != SENTINEL) {
                float r;
                memcpy(&r, ref, sizeof r);
                r = from_half(to_half(r, t), t);
                memcpy(ref, &r, sizeof r);
            }
            if (h[i] == SENTINEL16)
                d->res[1][k][i] = SENTINEL;
            else
                memcpy(&d->res[1][k][i], &v, sizeof v);
        }
        free(h);
    }
    if (st != XG_OK)
        report(rs, "%s (%s): %s failed on %s: %s: %s", c->desc,
               xg_dtype_name(t), stage, be->name, xg_status_str(st),
               xg_last_error());
    for (k = 0; k < XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT; k++)
        if (bufs[k])
            be->free(dev, bufs[k]);
    return st == XG_OK;
}

/* cast between dtypes a and b: the target's output bytes must be the
 * CPU's (NaN: a NaN of the same sign). Float inputs are case c's values
 * in a (special values included); float -> i32 gets only values in range
 * (the contract leaves the others unspecified). */
static bool run_cast_pair(const dev_pair *dp, const conf_case *c, xg_dtype a,
                          xg_dtype b, const case_data *d, run_state *rs)
{
    int64_t n = c->in[0].count;
    size_t sa = xg_dtype_size(a), sb = xg_dtype_size(b);
    char *host = xmalloc((size_t)n * sa);
    for (int64_t i = 0; i < n; i++) {
        float v = ((const float *)d->in[0])[i];
        if (b == XG_I32 && !(fabsf(v) < 1e9f))
            v = (float)i;
        if (a == XG_I32) {
            int32_t iv = fabsf(v) < 1e9f ? (int32_t)(v * 1000.0f)
                                          : (int32_t)(i * 7919);
            memcpy(host + i * 4, &iv, 4);
        } else if (a == XG_F32) {
            memcpy(host + i * 4, &v, 4);
        } else {
            uint16_t h = to_half(v, a);
            memcpy(host + i * 2, &h, 2);
        }
    }
    char *res[2] = {xmalloc((size_t)n * sb), xmalloc((size_t)n * sb)};
    bool ok = true;
    for (int s = 0; s < 2 && ok; s++) {
        const xg_backend *be = dp->be[s];
        xg_backend_device *dev = dp->dev[s];
        xg_buffer *in = NULL, *out = NULL;
        xg_status st = put(be, dev, host, (size_t)n * sa, &in);
        if (st == XG_OK)
            st = be->alloc(dev, (size_t)n * sb, &out);
        xg_kernel_call call = {.op = XG_OP_cast, .in = {{in, a, 0}},
                               .out = {{out, b, 0}}};
        call.p.cast.n = n;
        if (st == XG_OK)
            st = be->kernels[XG_FAMILY_CAST](dev, &call);
        if (st == XG_OK)
            st = be->download(dev, out, 0, res[s], (size_t)n * sb);
        if (st != XG_OK) {
            report(rs, "%s %s -> %s: failed on %s: %s: %s", c->desc,
                   xg_dtype_name(a), xg_dtype_name(b), be->name,
                   xg_status_str(st), xg_last_error());
            ok = false;
        }
        be->free(dev, in);
        be->free(dev, out);
    }
    for (int64_t i = 0; ok && i < n; i++) {
        if (memcmp(res[0] + i * sb, res[1] + i * sb, sb) == 0)
            continue;
        float g = 0, r = 0;
        if (b != XG_I32) {
            uint16_t hg = 0, hr = 0;
            if (b == XG_F32) {
                memcpy(&g, res[1] + i * 4, 4);
                memcpy(&r, res[0] + i * 4, 4);
            } else {
                memcpy(&hg, res[1] + i * 2, 2);
                memcpy(&hr, res[0] + i * 2, 2);
                g = from_half(hg, b);
                r = from_half(hr, b);
            }
            if (isnan(g) && isnan(r) && signbit(g) == signbit(r))
                continue;
        }
        uint32_t gb = 0, rb = 0;
        memcpy(&gb, res[1] + i * sb, sb);
        memcpy(&rb, res[0] + i * sb, sb);
        report(rs, "%s %s -> %s: element %" PRId64 " is 0x%x on %s, cpu "
               "0x%x (casts must match bit for bit)", c->desc,
               xg_dtype_name(a), xg_dtype_name(b), i, gb, rs->target, rb);
        ok = false;
    }
    free(host);
    free(res[0]);
    free(res[1]);
    return ok;
}

/* XGRAD_CONF_16BIT_ONLY=1: the kernel-level tests skip their f32 cases. */
static bool only_16bit(void)
{
    const char *e = getenv("XGRAD_CONF_16BIT_ONLY");
    return e && strcmp(e, "1") == 0;
}

/* XGRAD_CONF_MAX_ELEMENTS: the most elements a case's buffers may hold in
 * all (a positive integer), else no bound (INT64_MAX). */
static int64_t max_elements(void)
{
    const char *e = getenv("XGRAD_CONF_MAX_ELEMENTS");
    char *end = NULL;
    long long v = e ? strtoll(e, &end, 10) : 0;
    return e && end != e && *end == '\0' && v > 0 ? (int64_t)v : INT64_MAX;
}

/* Whether case c fits within max_elements(). */
static bool case_fits(const conf_case *c)
{
    int64_t n = 0;
    for (int k = 0; k < XG_KERNEL_MAX_IN; k++)
        n += c->in[k].count;
    for (int k = 0; k < XG_KERNEL_MAX_OUT; k++)
        n += c->out[k].count;
    return n <= max_elements();
}

/* The 16-bit cases of op: those of its family with T in bf16 and in f16
 * wherever the target's device answers xg_device_supports (natively or
 * widened by the core; casts: every pair of dtypes the target's backend
 * supports), within max_elements(). Returns the number of cases run. */
static int run_half_cases(const dev_pair *dp, xg_op op,
                          const conf_case_list *cases, run_state *rs)
{
    int run = 0;
    if (op == XG_OP_cast) {
        for (int a = 0; a < XG_DTYPE_COUNT; a++)
            for (int b = 0; b < XG_DTYPE_COUNT; b++) {
                xg_dtype pair[2] = {(xg_dtype)a, (xg_dtype)b};
                if ((a == XG_F32 && b == XG_F32) ||
                    !dp->be[1]->supports(dp->dev[1], op, pair))
                    continue;
                for (int i = 0; i < cases->n; i++) {
                    if (!case_fits(&cases->v[i]))
                        continue;
                    case_data d;
                    case_data_make(&cases->v[i], i, &d);
                    rs->failures += !run_cast_pair(dp, &cases->v[i], pair[0],
                                                   pair[1], &d, rs);
                    case_data_free(&d);
                    run++;
                }
            }
        return run;
    }
    for (size_t h = 0; h < sizeof half_tol / sizeof half_tol[0]; h++) {
        xg_dtype t = half_tol[h].dtype;
        if (!xg_device_supports(dp->core, op, t))
            continue;
        for (int i = 0; i < cases->n; i++) {
            if (!case_fits(&cases->v[i]))
                continue;
            conf_case c = cases->v[i];
            c.tol = conf_half_tol(t, op);
            int cut = (int)sizeof c.desc - 8; /* room for " [bf16]" */
            snprintf(c.desc, sizeof c.desc, "%.*s [%s]", cut,
                     cases->v[i].desc, xg_dtype_name(t));
            case_data d;
            case_data_make(&cases->v[i], i, &d);
            bool ok = run_on_half(dp, &c, t, &d, rs) && check_case(&c, &d, rs);
            rs->failures += !ok;
            case_data_free(&d);
            run++;
        }
    }
    return run;
}

/* The kernel-level test of one op: every case of its family. */
static void run_op_test(xg_op op)
{
    const conf_target *t = conf_target_get();
    const char *name = xg_op_table[op].name;
    dev_pair dp;
    open_pair(&dp);
    /* Every op runs on f32 everywhere: an unsupported answer is a failure,
     * never a skip. */
    xg_dtype f32_sig[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
    const xg_op_info *info = &xg_op_table[op];
    for (int k = 0; k < info->n_in + info->n_out; k++)
        f32_sig[k] = xg_op_rule_dtype(k < info->n_in
                                          ? info->in_rule[k]
                                          : info->out_rule[k - info->n_in],
                                      XG_F32);
    /* cast's pairs follow what the target supports (its 16-bit casts come
     * with its 16-bit support). */
    if (op == XG_OP_cast &&
        !(dp.be[1]->kernels[info->family] &&
          dp.be[1]->supports(dp.dev[1], op, f32_sig))) {
        cr_log_info("cast f32 -> f32 is not supported on %s: not tested",
                    t->name);
        close_pair(&dp);
        return;
    }
    for (int s = 0; s < 2; s++)
        cr_assert(dp.be[s]->kernels[info->family] != NULL &&
                      dp.be[s]->supports(dp.dev[s], op, f32_sig),
                  "op %s with dtype f32 is not implemented on backend %s",
                  name, dp.be[s]->name);
    conf_case_list cases;
    conf_cases_for_op(op, &cases);
    cr_assert(cases.n > 0, "op %s (family %d) has no conformance cases", name,
              (int)xg_op_table[op].family);
    run_state rs = {t->name, 0, 0};
    int n_f32 = 0;
    for (int i = 0; i < cases.n && !only_16bit(); i++) {
        if (!case_fits(&cases.v[i]))
            continue;
        n_f32++;
        case_data d;
        case_data_make(&cases.v[i], i, &d);
        bool ok = run_on(&dp, 0, &cases.v[i], &d, &rs) &&
                  run_on(&dp, 1, &cases.v[i], &d, &rs) &&
                  check_case(&cases.v[i], &d, &rs);
        rs.failures += !ok;
        case_data_free(&d);
    }
    int n_half = run_half_cases(&dp, op, &cases, &rs);
    if (n_half)
        cr_log_info("%s: %d 16-bit case(s) on %s", name, n_half, t->name);
    close_pair(&dp);
    if (rs.messages > MAX_MESSAGES)
        cr_log_error("%s: %d more message(s) not shown", name,
                     rs.messages - MAX_MESSAGES);
    cr_expect(rs.failures == 0, "op %s: %d of %d case(s) fail on %s", name,
              rs.failures, n_f32 + n_half, t->name);
    free(cases.v);
    conf_check_validation();
}

/* The op table the suite was generated from must match the library's. */
static const xg_op_info suite_ops[] = {
#define XG_OP(name, family, in, out, backward)                               \
    {#name, XG_FAMILY_##family, sizeof(in) - 1, sizeof(out) - 1, in, out,     \
     XG_OP_##backward},
#include "ops.def"
#undef XG_OP
};

_Static_assert(sizeof suite_ops / sizeof suite_ops[0] == XG_OP_COUNT,
               "the conformance case table must cover every op of ops.def");

TestSuite(kernel, .timeout = 900);

Test(kernel, op_table)
{
    for (int op = 0; op < XG_OP_COUNT; op++) {
        cr_expect_str_eq(xg_op_table[op].name, suite_ops[op].name,
                         "op %d name", op);
        cr_expect(xg_op_table[op].family == suite_ops[op].family &&
                      xg_op_table[op].n_in == suite_ops[op].n_in &&
                      xg_op_table[op].n_out == suite_ops[op].n_out &&
                      strcmp(xg_op_table[op].in_rule,
                             suite_ops[op].in_rule) == 0 &&
                      strcmp(xg_op_table[op].out_rule,
                             suite_ops[op].out_rule) == 0 &&
                      xg_op_table[op].backward == suite_ops[op].backward,
                  "op %s: xg_op_table disagrees with ops.def",
                  suite_ops[op].name);
    }
}

/* One test per op, named after it: kernel::matmul, kernel::exp, ... */
#define XG_OP(name, family, in, out, backward)                               \
    Test(kernel, name) { run_op_test(XG_OP_##name); }
#include "ops.def"
#undef XG_OP
