/* bench_small_op: the fixed cost of one small op, which bounds the speed
 * of models made of many small tensors.
 *
 *   bench_small_op [OPS [RUNS]]   OPS chained adds (1000), RUNS runs (7)
 *
 * Each run queues y = y + x OPS times on 1000-float tensors, then waits
 * once with xg_device_sync; the time per op is the median run over OPS.
 * On a GPU this measures recording/dispatch overhead, not arithmetic.
 */
#include <stdio.h>

#include "bench_util.h"
#include "xgrad.h"

#define N_FLOATS 1000
#define MAX_RUNS 101

/* Seconds for one run; < 0 on error. Every tensor dies with the scope. */
static double one_run(xg_device *dev, xg_tensor *x, long ops)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return -1.0;
    double t0 = bench_now();
    xg_tensor *y = x;
    for (long i = 0; i < ops && y; i++)
        y = xg_add(y, x);
    int ok = y && xg_device_sync(dev) == XG_OK;
    double t = bench_now() - t0;
    xg_scope_end(scope);
    return ok ? t : -1.0;
}

int main(int argc, char **argv)
{
    long ops = bench_arg(argc, argv, 1, 1000, 1000000);
    long runs = bench_arg(argc, argv, 2, 7, MAX_RUNS);
    if (ops < 0 || runs < 0)
        return 2;
    double t[MAX_RUNS];
    xg_device *dev = xg_device_current();
    xg_tensor *x = dev ? xg_rand_uniform(XG_SHAPE(N_FLOATS), 0.0f, 1.0f)
                       : NULL;
    int ok = x && one_run(dev, x, ops) >= 0; /* warm-up */
    for (long r = 0; ok && r < runs; r++)
        ok = (t[r] = one_run(dev, x, ops)) >= 0;
    if (!ok) {
        fprintf(stderr, "bench_small_op: %s\n", xg_last_error());
        xg_tensor_free(x);
        xg_shutdown();
        return 1;
    }
    double us = bench_median(t, (int)runs) / (double)ops * 1e6;
    printf("add of %d floats, %ld queued + 1 sync, median of %ld runs\n",
           N_FLOATS, ops, runs);
    printf("  xgrad %-8s %8.2f us/op  (%s)\n", xg_device_backend(dev), us,
           xg_device_name(dev));
    printf("result: bench=small_op backend=%s us_per_op=%.2f\n",
           xg_device_backend(dev), us);
    xg_tensor_free(x);
    xg_shutdown();
    return 0;
}
