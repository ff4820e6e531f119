/* Memory and time of causal attention, forward and backward, fused
 * (xg_attention) against the same attention composed of ops (q k^T,
 * masked_fill, softmax, p v), which keeps the [B, H, T, T] weights for
 * the backward.
 *
 *   bench_attention [B H D REPS]      (default 4 4 64 3)
 *
 * For T = 128, 256, 512, 1024: the device memory that tensors held at
 * the peak of one forward + backward beyond q, k and v themselves
 * (xg_device_memory), and the median time of REPS runs, on the device
 * XGRAD_BACKEND selects. Prints a markdown table. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "bench_util.h"
#include "xgrad.h"

static int fail(const char *what)
{
    fprintf(stderr, "bench_attention: %s: %s\n", what, xg_last_error());
    return 1;
}

/* softmax(q k^T / sqrt(d), causal) v from ops. */
static xg_tensor *composed(xg_tensor *q, xg_tensor *k, xg_tensor *v,
                           xg_tensor *mask, int64_t d)
{
    xg_tensor *s = xg_mul_scalar(xg_matmul_t(q, k, false, true),
                                 1.0f / sqrtf((float)d));
    return xg_matmul(xg_softmax(xg_masked_fill(s, mask, -INFINITY)), v);
}

/* One forward + backward; *peak gets the peak bytes beyond `base`. */
static int run(bool fused, xg_tensor *q, xg_tensor *k, xg_tensor *v,
               xg_tensor *mask, int64_t d, uint64_t base, uint64_t *peak,
               double *seconds)
{
    xg_device *dev = xg_device_current();
    xg_device_reset_peak_memory(dev);
    double t0 = bench_now();
    xg_scope *s = xg_scope_begin();
    xg_tensor *o = fused ? xg_attention(q, k, v, NULL)
                         : composed(q, k, v, mask, d);
    xg_tensor *loss = o ? xg_sum_all(o) : NULL;
    xg_status st = loss ? xg_backward(loss) : xg_last_status();
    if (st == XG_OK)
        st = xg_device_sync(dev);
    xg_scope_end(s);
    *seconds = bench_now() - t0;
    xg_device_memory_info m;
    xg_device_memory(dev, &m);
    *peak = m.peak - base;
    xg_tensor_zero_grad(q);
    xg_tensor_zero_grad(k);
    xg_tensor_zero_grad(v);
    return st == XG_OK ? 0 : 1;
}

int main(int argc, char **argv)
{
    long b = bench_arg(argc, argv, 1, 4, 1024);
    long h = bench_arg(argc, argv, 2, 4, 1024);
    long d = bench_arg(argc, argv, 3, 64, 4096);
    long reps = bench_arg(argc, argv, 4, 3, 1000);
    if (b < 0 || h < 0 || d < 0 || reps < 0)
        return 2;
    xg_device *dev = xg_device_current();
    if (!dev)
        return fail("device");
    printf("attention forward + backward, B=%ld H=%ld D=%ld, on %s (%s); "
           "memory: peak tensor bytes beyond q, k, v\n\n", b, h, d,
           xg_device_name(dev), xg_device_backend(dev));
    printf("| T | fused: MiB | fused: ms | composed: MiB | composed: ms |\n");
    printf("|---:|---:|---:|---:|---:|\n");
    static const int64_t ts[] = {128, 256, 512, 1024};
    for (size_t i = 0; i < sizeof ts / sizeof *ts; i++) {
        int64_t t = ts[i];
        int64_t shape[4] = {b, h, t, d};
        xg_manual_seed(1);
        xg_tensor *q = xg_rand_normal(shape, 4, 0, 1);
        xg_tensor *k = xg_rand_normal(shape, 4, 0, 1);
        xg_tensor *v = xg_rand_normal(shape, 4, 0, 1);
        int32_t *mh = malloc(sizeof *mh * (size_t)(t * t));
        for (int64_t r = 0; r < t; r++)
            for (int64_t c = 0; c < t; c++)
                mh[r * t + c] = c > r;
        int64_t mshape[2] = {t, t};
        xg_tensor *mask = xg_tensor_from_data(mh, XG_I32, mshape, 2);
        free(mh);
        if (!q || !k || !v || !mask ||
            xg_tensor_set_requires_grad(q, true) != XG_OK ||
            xg_tensor_set_requires_grad(k, true) != XG_OK ||
            xg_tensor_set_requires_grad(v, true) != XG_OK)
            return fail("inputs");
        xg_device_memory_info m;
        xg_device_memory(dev, &m);
        uint64_t base = m.in_use, peak[2] = {0, 0};
        double ms[2];
        for (int fused = 1; fused >= 0; fused--) {
            double times[1000];
            for (long r = 0; r < reps; r++) {
                uint64_t p;
                if (run(fused, q, k, v, mask, d, base, &p, &times[r]))
                    return fail(fused ? "fused" : "composed");
                peak[fused] = p > peak[fused] ? p : peak[fused];
            }
            ms[fused] = 1e3 * bench_median(times, (int)reps);
        }
        printf("| %lld | %.1f | %.1f | %.1f | %.1f |\n", (long long)t,
               (double)peak[1] / 1048576.0, ms[1],
               (double)peak[0] / 1048576.0, ms[0]);
        fflush(stdout);
        xg_tensor_free(q);
        xg_tensor_free(k);
        xg_tensor_free(v);
        xg_tensor_free(mask);
    }
    xg_shutdown();
    return 0;
}
