/* bench_start: the cold-start cost, what a program pays before its first
 * training step is done.
 *
 *   bench_start [HIDDEN]   HIDDEN hidden units (256, mnist_mlp's default)
 *
 * Opens the device XGRAD_BACKEND selects, then runs one training step of
 * mnist_mlp's model (Linear(784, HIDDEN), ReLU, Linear(HIDDEN, 10), batch
 * 64, cross-entropy, Adam) and waits for it. Prints two lines
 *   device: pthread-... (Portable Computing Language, xgrad GEMM) (opencl)
 *   start: open=0.412s first_step=0.118s total=0.530s
 * where open is xg_device_open (context, kernel program) and first_step the
 * step and its wait (a GPU backend compiles what the step needs on first
 * use). Run it in a fresh process per measurement: the point is the
 * driver's and xgrad's caches on disk (see xg_device_open in api/xgrad.h).
 * xgrad's are in $XDG_CACHE_HOME/xgrad; PoCL's follow POCL_CACHE_DIR and
 * Mesa's (lavapipe) MESA_SHADER_CACHE_DIR, so pointing those at empty
 * folders clears one cache and keeps the others.
 */
#include <stdio.h>

#include "bench_util.h"
#include "xgrad.h"

#define BATCH 64

static xg_module *mlp(long hidden)
{
    xg_module *m = xg_sequential();
    if (m && (xg_sequential_add(m, NULL, xg_linear(784, hidden, true)) !=
                  XG_OK ||
              xg_sequential_add(m, NULL, xg_relu_layer()) != XG_OK ||
              xg_sequential_add(m, NULL, xg_linear(hidden, 10, true)) !=
                  XG_OK)) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

int main(int argc, char **argv)
{
    long hidden = bench_arg(argc, argv, 1, 256, 65536);
    if (hidden < 0)
        return 2;
    double t0 = bench_now();
    xg_device *dev = NULL;
    if (xg_device_open(NULL, &dev) != XG_OK) {
        fprintf(stderr, "bench_start: %s\n", xg_last_error());
        return 1;
    }
    double t_open = bench_now();
    printf("device: %s (%s)\n", xg_device_name(dev), xg_device_backend(dev));
    xg_device_set_current(dev);
    int labels[BATCH];
    for (int i = 0; i < BATCH; i++)
        labels[i] = i % 10;
    xg_module *model = mlp(hidden);
    xg_optim *opt = model ? xg_optim_for_module(model, "adam", 1e-3f) : NULL;
    xg_scope *scope = opt ? xg_scope_begin() : NULL;
    xg_tensor *x = scope ? xg_rand_uniform(XG_SHAPE(BATCH, 784), 0.0f, 1.0f)
                         : NULL;
    xg_tensor *y = x ? xg_tensor_from_data(labels, XG_I32, XG_SHAPE(BATCH))
                     : NULL;
    xg_tensor *loss = y ? xg_cross_entropy(xg_module_forward(model, x), y)
                        : NULL;
    int ok = loss && xg_backward(loss) == XG_OK &&
             xg_optim_step(opt) == XG_OK && xg_device_sync(dev) == XG_OK;
    double t_step = bench_now();
    if (scope)
        xg_scope_end(scope);
    if (!ok)
        fprintf(stderr, "bench_start: %s\n", xg_last_error());
    else
        printf("start: open=%.3fs first_step=%.3fs total=%.3fs\n",
               t_open - t0, t_step - t_open, t_step - t0);
    xg_optim_free(opt);
    xg_module_free(model);
    xg_device_set_current(NULL);
    xg_device_close(dev);
    xg_shutdown();
    return ok ? 0 : 1;
}
