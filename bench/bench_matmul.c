/* bench_matmul: matrix-product throughput of the current xgrad device in
 * f32, bf16 or f16, next to OpenBLAS's cblas_sgemm (f32) in the same
 * process when the device is the CPU and OpenBLAS was found at build time.
 *
 *   bench_matmul [N [RUNS [DTYPE]]]   N x N times N x N (1024), RUNS timed
 *                                     runs (7), operands and output in
 *                                     DTYPE: f32 (default), bf16 or f16
 *
 * Each timed run is one xg_matmul followed by xg_device_sync; one untimed
 * run first builds pipelines and warms the caches. Reports the median.
 * The 16-bit operands are the f32 ones rounded (xg_to_dtype, untimed).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench_util.h"
#include "xgrad.h"

#ifdef XG_BENCH_HAVE_OPENBLAS
#include <cblas.h>
#endif

#define MAX_RUNS 101

/* Median seconds of one n^3 xg_matmul in `dtype` on `dev`; < 0 on error. */
static double time_xgrad(xg_device *dev, int64_t n, int runs, xg_dtype dtype)
{
    double t[MAX_RUNS];
    xg_scope *scope = xg_scope_begin();
    xg_tensor *a = xg_rand_uniform(XG_SHAPE(n, n), -1.0f, 1.0f);
    xg_tensor *b = xg_rand_uniform(XG_SHAPE(n, n), -1.0f, 1.0f);
    if (dtype != XG_F32) {
        a = a ? xg_to_dtype(a, dtype) : NULL;
        b = b ? xg_to_dtype(b, dtype) : NULL;
    }
    xg_tensor *c = a && b ? xg_matmul(a, b) : NULL; /* warm-up */
    int ok = c && xg_device_sync(dev) == XG_OK;
    for (int r = 0; ok && r < runs; r++) {
        xg_tensor_free(c);
        double t0 = bench_now();
        c = xg_matmul(a, b);
        ok = c && xg_device_sync(dev) == XG_OK;
        t[r] = bench_now() - t0;
    }
    xg_scope_end(scope);
    return ok ? bench_median(t, runs) : -1.0;
}

#ifdef XG_BENCH_HAVE_OPENBLAS
/* Median seconds of one n^3 cblas_sgemm; < 0 on host OOM. */
static double time_openblas(int64_t n, int runs)
{
    double t[MAX_RUNS];
    size_t count = (size_t)(n * n);
    float *a = malloc(count * sizeof *a), *b = malloc(count * sizeof *b),
          *c = malloc(count * sizeof *c);
    int ok = a && b && c;
    for (size_t i = 0; ok && i < count; i++) {
        a[i] = (float)(i % 17) / 17.0f - 0.5f;
        b[i] = (float)(i % 13) / 13.0f - 0.5f;
    }
    for (int r = -1; ok && r < runs; r++) { /* r = -1: warm-up */
        double t0 = bench_now();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)n, (int)n,
                    (int)n, 1.0f, a, (int)n, b, (int)n, 0.0f, c, (int)n);
        if (r >= 0)
            t[r] = bench_now() - t0;
    }
    free(a);
    free(b);
    free(c);
    return ok ? bench_median(t, runs) : -1.0;
}
#endif

static double gflops(int64_t n, double seconds)
{
    return 2.0 * (double)n * (double)n * (double)n / seconds * 1e-9;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, 1, 1024, 16384);
    long runs = bench_arg(argc, argv, 2, 7, MAX_RUNS);
    if (n < 0 || runs < 0)
        return 2;
    const char *dname = argc > 3 ? argv[3] : "f32";
    xg_dtype dtype = strcmp(dname, "bf16") == 0  ? XG_BF16
                     : strcmp(dname, "f16") == 0 ? XG_F16
                                                 : XG_F32;
    if (dtype == XG_F32 && strcmp(dname, "f32") != 0) {
        fprintf(stderr, "%s: argument 3 '%s': expected f32, bf16 or f16\n",
                argv[0], dname);
        return 2;
    }
    xg_device *dev = xg_device_current();
    double xs = dev ? time_xgrad(dev, n, (int)runs, dtype) : -1.0;
    if (xs < 0) {
        fprintf(stderr, "bench_matmul: %s\n", xg_last_error());
        xg_shutdown();
        return 1;
    }
    const char *backend = xg_device_backend(dev);
    printf("matmul %ldx%ld @ %ldx%ld %s, median of %ld runs\n", n, n, n, n,
           dname, runs);
    printf("  xgrad %-8s %8.2f ms %8.1f GFLOP/s  (%s)\n", backend, xs * 1e3,
           gflops(n, xs), xg_device_name(dev));
    double bs = -1.0;
#ifdef XG_BENCH_HAVE_OPENBLAS
    if (strcmp(backend, "cpu") == 0 && (bs = time_openblas(n, (int)runs)) > 0)
        printf("  openblas sgemm %8.2f ms %8.1f GFLOP/s\n", bs * 1e3,
               gflops(n, bs));
#endif
    printf("result: bench=matmul backend=%s n=%ld dtype=%s gflops=%.1f",
           backend, n, dname, gflops(n, xs));
    if (bs > 0)
        printf(" openblas_gflops=%.1f", gflops(n, bs));
    printf("\n");
    xg_shutdown();
    return 0;
}
