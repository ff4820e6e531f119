/* bench_conv: the two convolutions of samples/mnist_cnn (1->32 and 32->64,
 * 3x3, on 28x28 images) forward and backward on the current xgrad device,
 * in GFLOP per second of wall time and per CPU-second of the process.
 *
 *   bench_conv [BATCH [RUNS]]     batch (64), timed steps (15)
 *
 * One step: y = conv(conv(x, w1), w2), loss = sum(y), xg_backward (dx of
 * the second convolution, dweight of both), then xg_device_sync. The FLOP
 * count is that of the convolutions alone (2 multiply-add per tap); the
 * sum and the gradient's fill are in the time. One untimed step first.
 * Reports the medians.
 */
#include <stdio.h>
#include <time.h>

#include "bench_util.h"
#include "xgrad.h"

#define MAX_RUNS 101

static double cpu_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
    long n = bench_arg(argc, argv, 1, 64, 4096);
    long runs = bench_arg(argc, argv, 2, 15, MAX_RUNS);
    if (n < 0 || runs < 0)
        return 2;
    xg_device *dev = xg_device_current();
    if (!dev) {
        fprintf(stderr, "bench_conv: %s\n", xg_last_error());
        return 1;
    }
    double wall[MAX_RUNS], cpu[MAX_RUNS];
    xg_scope *scope = xg_scope_begin();
    xg_tensor *x = xg_rand_uniform(XG_SHAPE(n, 1, 28, 28), -1.0f, 1.0f);
    xg_tensor *w1 = xg_rand_uniform(XG_SHAPE(32, 1, 3, 3), -0.3f, 0.3f);
    xg_tensor *w2 = xg_rand_uniform(XG_SHAPE(64, 32, 3, 3), -0.06f, 0.06f);
    int ok = x && w1 && w2 && xg_tensor_set_requires_grad(w1, true) == XG_OK &&
             xg_tensor_set_requires_grad(w2, true) == XG_OK;
    for (long r = -1; ok && r < runs; r++) {
        xg_scope *step = xg_scope_begin();
        double t0 = bench_now(), c0 = cpu_now();
        xg_tensor *y = xg_conv2d(xg_conv2d(x, w1, NULL, NULL), w2, NULL, NULL);
        xg_tensor *loss = y ? xg_sum_all(y) : NULL;
        ok = loss && xg_backward(loss) == XG_OK &&
             xg_device_sync(dev) == XG_OK;
        if (r >= 0) {
            wall[r] = bench_now() - t0;
            cpu[r] = cpu_now() - c0;
        }
        xg_scope_end(step);
        xg_tensor_zero_grad(w1);
        xg_tensor_zero_grad(w2);
    }
    xg_scope_end(scope);
    if (!ok) {
        fprintf(stderr, "bench_conv: %s\n", xg_last_error());
        xg_shutdown();
        return 1;
    }
    /* conv1: forward, dweight; conv2: forward, dx, dweight */
    double flop = 2.0 * (double)n *
                  (2.0 * 32 * 9 * 26 * 26 + 3.0 * 64 * 32 * 9 * 24 * 24);
    double ws = bench_median(wall, (int)runs);
    double cs = bench_median(cpu, (int)runs);
    printf("conv 1->32->64 3x3 on %ldx1x28x28, forward + backward, median of "
           "%ld steps\n", n, runs);
    printf("  %8.2f ms %8.1f GFLOP/s  %8.2f CPU-ms %8.1f GFLOP/CPU-s\n",
           ws * 1e3, flop / ws * 1e-9, cs * 1e3, flop / cs * 1e-9);
    printf("result: bench=conv backend=%s batch=%ld gflops=%.1f "
           "gflops_per_cpu_s=%.1f\n", xg_device_backend(dev), n,
           flop / ws * 1e-9, flop / cs * 1e-9);
    xg_shutdown();
    return 0;
}
