/* bench_optim: the rate of the fused optimizer updates (Adam, AdamW, SGD
 * with momentum, plain SGD) of the current xgrad device, in GB/s of the
 * bytes each step must read and write, next to memcpy over as many bytes
 * in the same process: the memory system's streaming rate, which a fused
 * update cannot beat once its arrays leave the caches.
 *
 *   bench_optim [RUNS [MAX_MILLIONS]]   RUNS timed runs (7); sizes 1M and
 *                                       16M parameters, those above
 *                                       MAX_MILLIONS (16) million left out
 *
 * Bytes per parameter and step: Adam/AdamW read param, grad, exp_avg and
 * exp_avg_sq and write three of them back (28); SGD with momentum reads
 * param, grad and buffer and writes two (20); plain SGD 12. A timed run
 * is STEPS xg_optim_step calls (enough for about 256M parameters, at
 * least 1) and one xg_device_sync; one untimed step first makes the
 * optimizer state. memcpy copies two arrays of the parameter's size into
 * two others (16 bytes per parameter), on one thread and, split in equal
 * parts, on as many threads as the CPU backend uses (XGRAD_NUM_THREADS,
 * else the online CPUs); the faster of the two is the reference of the
 * "of memcpy" ratios and of memcpy_gbs. Reports medians and the min-max
 * of each.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench_util.h"
#include "xgrad.h"

#define MAX_RUNS 101
#define MAX_THREADS 64

typedef struct timing {
    double median, min, max; /* seconds per step */
} timing;

static timing summarize(double *t, int runs)
{
    double med = bench_median(t, runs); /* sorts t */
    return (timing){med, t[0], t[runs - 1]};
}

/* ---- the optimizers ---------------------------------------------------- */

enum { OPT_ADAM, OPT_ADAMW, OPT_SGD_MOMENTUM, OPT_SGD, OPT_COUNT };
static const char *const opt_name[OPT_COUNT] = {"adam", "adamw",
                                                "sgd_momentum", "sgd"};
static const int opt_bytes[OPT_COUNT] = {28, 28, 20, 12};

static xg_optim *make_optim(int kind, xg_tensor *p)
{
    if (kind == OPT_ADAM || kind == OPT_ADAMW) {
        xg_adam_options a = kind == OPT_ADAM ? xg_adam_defaults()
                                             : xg_adamw_defaults();
        return kind == OPT_ADAM ? xg_optim_adam(&p, 1, &a)
                                : xg_optim_adamw(&p, 1, &a);
    }
    xg_sgd_options s = xg_sgd_defaults();
    s.momentum = kind == OPT_SGD_MOMENTUM ? 0.9f : 0.0f;
    return xg_optim_sgd(&p, 1, &s);
}

/* Times the update of one parameter of n elements whose gradient is set;
 * false on error. */
static bool time_optim(xg_device *dev, int kind, xg_tensor *p, int64_t steps,
                       int runs, timing *out)
{
    double t[MAX_RUNS];
    xg_optim *opt = make_optim(kind, p);
    bool ok = opt && xg_optim_step(opt) == XG_OK &&
              xg_device_sync(dev) == XG_OK;
    for (int r = 0; ok && r < runs; r++) {
        double t0 = bench_now();
        for (int64_t s = 0; ok && s < steps; s++)
            ok = xg_optim_step(opt) == XG_OK;
        ok = ok && xg_device_sync(dev) == XG_OK;
        t[r] = (bench_now() - t0) / (double)steps;
    }
    xg_optim_free(opt);
    if (ok)
        *out = summarize(t, runs);
    return ok;
}

/* ---- memcpy ------------------------------------------------------------ */

typedef struct copy_job {
    float *dst[2];
    const float *src[2];
    size_t count; /* floats of each array */
} copy_job;

static void *copy_part(void *arg)
{
    const copy_job *j = arg;
    for (int a = 0; a < 2; a++)
        memcpy(j->dst[a], j->src[a], j->count * sizeof(float));
    return NULL;
}

/* Copies src[0..1] into dst[0..1] (n floats each) on `threads` threads, the
 * calling thread included; false if a thread does not start. */
static bool copy_all(float *const *dst, float *const *src, size_t n,
                     int threads)
{
    copy_job jobs[MAX_THREADS];
    pthread_t tid[MAX_THREADS];
    size_t part = (n / (size_t)threads + 15) / 16 * 16;
    for (int k = 0; k < threads; k++) {
        size_t b = (size_t)k * part < n ? (size_t)k * part : n;
        size_t e = b + part < n ? b + part : n;
        jobs[k] = (copy_job){{dst[0] + b, dst[1] + b}, {src[0] + b, src[1] + b},
                             e - b};
    }
    int started = 1;
    bool ok = true;
    for (; started < threads; started++)
        if (pthread_create(&tid[started], NULL, copy_part, &jobs[started])) {
            ok = false;
            break;
        }
    copy_part(&jobs[0]);
    for (int k = 1; k < started; k++)
        pthread_join(tid[k], NULL);
    return ok;
}

static bool time_memcpy(size_t n, int64_t steps, int runs, int threads,
                        timing *out)
{
    double t[MAX_RUNS];
    float *a[4];
    bool ok = true;
    for (int k = 0; k < 4; k++)
        ok &= (a[k] = malloc(n * sizeof(float))) != NULL;
    for (int k = 0; ok && k < 2; k++)
        for (size_t i = 0; i < n; i++)
            a[k][i] = (float)(i % 1000) * 1e-3f;
    float *dst[2] = {a[2], a[3]}, *src[2] = {a[0], a[1]};
    ok = ok && copy_all(dst, src, n, threads); /* faults the pages in */
    for (int r = 0; ok && r < runs; r++) {
        double t0 = bench_now();
        for (int64_t s = 0; ok && s < steps; s++)
            ok = copy_all(dst, src, n, threads);
        t[r] = (bench_now() - t0) / (double)steps;
    }
    for (int k = 0; k < 4; k++)
        free(a[k]);
    if (ok)
        *out = summarize(t, runs);
    return ok;
}

/* ---- main -------------------------------------------------------------- */

static int backend_threads(void)
{
    const char *s = getenv("XGRAD_NUM_THREADS");
    long v = s && *s ? strtol(s, NULL, 10) : 0;
    if (v < 1)
        v = sysconf(_SC_NPROCESSORS_ONLN);
    return v < 1 ? 1 : v > MAX_THREADS ? MAX_THREADS : (int)v;
}

static double gbs(double bytes_per_elem, int64_t n, double seconds)
{
    return bytes_per_elem * (double)n / seconds * 1e-9;
}

static void print_row(const char *what, double bytes, int64_t n, timing t,
                      double ref_gbs)
{
    printf("  %-18s %8.3f ms  %7.2f GB/s  (%.2f-%.2f)", what, t.median * 1e3,
           gbs(bytes, n, t.median), gbs(bytes, n, t.max),
           gbs(bytes, n, t.min));
    if (ref_gbs > 0)
        printf("  %.2f of memcpy", gbs(bytes, n, t.median) / ref_gbs);
    printf("\n");
}

/* One size: every optimizer and memcpy; false on error. */
static bool bench_size(xg_device *dev, int64_t n, int runs, int threads)
{
    int64_t steps = ((int64_t)1 << 26) / n;
    steps = steps < 1 ? 1 : steps > 64 ? 64 : steps;
    timing mc1, mcn, opt[OPT_COUNT];
    if (!time_memcpy((size_t)n, steps, runs, 1, &mc1) ||
        !time_memcpy((size_t)n, steps, runs, threads, &mcn)) {
        fprintf(stderr, "bench_optim: memcpy of %lld floats failed\n",
                (long long)n);
        return false;
    }
    xg_scope *scope = xg_scope_begin();
    xg_tensor *p = xg_rand_uniform(XG_SHAPE(n), -1.0f, 1.0f);
    xg_tensor *c = xg_rand_uniform(XG_SHAPE(n), -1.0f, 1.0f);
    /* grad p = c, kept for every step. */
    bool ok = p && c && xg_tensor_set_requires_grad(p, true) == XG_OK &&
              xg_backward(xg_sum_all(xg_mul(p, c))) == XG_OK;
    for (int k = 0; ok && k < OPT_COUNT; k++)
        ok = time_optim(dev, k, p, steps, runs, &opt[k]);
    xg_scope_end(scope);
    if (!ok)
        return false;
    /* The faster memcpy is the reference (one thread may be). */
    double ref = gbs(16, n, mcn.median < mc1.median ? mcn.median
                                                     : mc1.median);
    printf("n=%lld parameters (%.0f MiB each array), %lld steps per run\n",
           (long long)n, (double)n * 4 / 1048576, (long long)steps);
    print_row("memcpy 1 thread", 16, n, mc1, 0);
    char name[32];
    snprintf(name, sizeof name, "memcpy %d thread%s", threads,
             threads == 1 ? "" : "s");
    print_row(name, 16, n, mcn, 0);
    for (int k = 0; k < OPT_COUNT; k++)
        print_row(opt_name[k], opt_bytes[k], n, opt[k], ref);
    printf("result: bench=optim backend=%s n=%lld threads=%d memcpy_gbs=%.2f",
           xg_device_backend(dev), (long long)n, threads, ref);
    for (int k = 0; k < OPT_COUNT; k++)
        printf(" %s_gbs=%.2f", opt_name[k], gbs(opt_bytes[k], n,
                                                opt[k].median));
    printf("\n");
    return true;
}

int main(int argc, char **argv)
{
    long runs = bench_arg(argc, argv, 1, 7, MAX_RUNS);
    long max_m = bench_arg(argc, argv, 2, 16, 1024);
    if (runs < 0 || max_m < 0)
        return 2;
    xg_device *dev = xg_device_current();
    if (!dev) {
        fprintf(stderr, "bench_optim: %s\n", xg_last_error());
        return 1;
    }
    int threads = backend_threads();
    printf("optimizer updates, f32, one parameter, median of %ld runs "
           "(min-max) on %s (%s); memcpy: 16 bytes per parameter\n", runs,
           xg_device_backend(dev), xg_device_name(dev));
    static const int64_t sizes[] = {(int64_t)1 << 20, (int64_t)1 << 24};
    for (size_t s = 0; s < sizeof sizes / sizeof sizes[0]; s++) {
        if (sizes[s] > (int64_t)max_m << 20)
            continue;
        if (!bench_size(dev, sizes[s], (int)runs, threads)) {
            fprintf(stderr, "bench_optim: %s\n", xg_last_error());
            xg_shutdown();
            return 1;
        }
    }
    xg_shutdown();
    return 0;
}
