/* linear_regression: the smallest xgrad training program.
 *
 * Fits y = w x + b to points made on the device (true w = 2.5, b = -1.0,
 * plus Gaussian noise of std 0.05) with a Linear(1, 1) module, mean squared
 * error and plain SGD, then prints the recovered parameters and a `result:`
 * line. Runs on the device XGRAD_BACKEND selects.
 *
 * Started by mpirun it trains data-parallel, in the fewest lines that
 * show how: every rank makes the same points, keeps its own slice of them,
 * starts from rank 0's parameters (xg_dist_broadcast_module) and averages
 * the gradients over the ranks at every step (xg_grad_sync_backward);
 * rank 0 prints.
 *
 * Exit status: 0 when the fit recovers w and b to within 0.05, 1 otherwise
 * or on any library error.
 */
#include <math.h>
#include <stdio.h>

#include "xgrad.h"

#define TRUE_W 2.5f
#define TRUE_B -1.0f
#define NOISE_STD 0.05f
#define N_POINTS 256
#define STEPS 300
#define LR 0.1f

static int fail(const char *what)
{
    fprintf(stderr, "linear_regression: %s: %s\n", what, xg_last_error());
    return 1;
}

/* x uniform in [-1, 1), y = TRUE_W x + TRUE_B + noise: this rank's rows
 * of the N points, [N / ranks, 1] each (all of them in a world of one),
 * owned by the caller. Temporaries die with the scope. */
static int make_data(xg_tensor **x, xg_tensor **y)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return fail("scope");
    xg_tensor *all = xg_rand_uniform(XG_SHAPE(N_POINTS, 1), -1.0f, 1.0f);
    xg_tensor *noise = xg_rand_normal(XG_SHAPE(N_POINTS, 1), 0.0f, NOISE_STD);
    xg_tensor *line = xg_add_scalar(xg_mul_scalar(all, TRUE_W), TRUE_B);
    int64_t share = N_POINTS / xg_dist_world_size();
    int64_t first = share * xg_dist_rank();
    *x = xg_tensor_keep(xg_narrow(all, 0, first, share));
    *y = xg_tensor_keep(xg_narrow(xg_add(line, noise), 0, first, share));
    xg_scope_end(scope);
    return *y ? 0 : fail("making the data");
}

/* One SGD step on the whole set; *loss gets the loss when `read` is set. */
static int train_step(xg_grad_sync *sync, xg_optim *opt, xg_module *model,
                      xg_tensor *x, xg_tensor *y, bool read, float *loss)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return fail("scope");
    xg_tensor *l = xg_mse_loss(xg_module_forward(model, x), y);
    int rc = !l || xg_grad_sync_backward(sync, l) != XG_OK ||
             xg_optim_step(opt) != XG_OK;
    if (!rc && read)
        rc = xg_tensor_item(l, loss) != XG_OK;
    xg_optim_zero_grad(opt);
    xg_scope_end(scope);
    return rc ? fail("training step") : 0;
}

static int fit(xg_module *model, xg_tensor *x, xg_tensor *y, float *loss)
{
    if (xg_dist_broadcast_module(model) != XG_OK)
        return fail("starting from rank 0's parameters");
    xg_optim *opt = xg_optim_for_module(model, "sgd", LR);
    xg_grad_sync *sync = opt ? xg_grad_sync_new(model, 0) : NULL;
    int rc = sync ? 0 : fail("optimizer");
    for (int step = 0; step < STEPS && rc == 0; step++)
        rc = train_step(sync, opt, model, x, y, step == STEPS - 1, loss);
    xg_grad_sync_free(sync);
    xg_optim_free(opt);
    return rc;
}

/* Reads parameters 0 (weight [1, 1]) and 1 (bias [1]) of the module. */
static int read_params(const xg_module *model, float *w, float *b)
{
    if (xg_tensor_item(xg_module_param(model, 0, NULL), w) != XG_OK ||
        xg_tensor_item(xg_module_param(model, 1, NULL), b) != XG_OK)
        return fail("reading the parameters");
    return 0;
}

int main(int argc, char **argv)
{
    xg_tensor *x = NULL, *y = NULL;
    xg_module *model = NULL;
    float w = 0.0f, b = 0.0f, loss = 0.0f;
    if (xg_dist_init(&argc, &argv) != XG_OK)
        return fail("joining the MPI job");
    bool speaks = xg_dist_rank() == 0;
    xg_device *dev = xg_device_current();
    int rc = dev ? 0 : fail("opening the device");
    if (rc == 0) {
        if (speaks)
            printf("device: %s (%s), %d rank(s)\n", xg_device_name(dev),
                   xg_device_backend(dev), xg_dist_world_size());
        xg_manual_seed(0);
        rc = make_data(&x, &y);
    }
    if (rc == 0 && !(model = xg_linear(1, 1, true)))
        rc = fail("making the model");
    if (rc == 0)
        rc = fit(model, x, y, &loss);
    if (rc == 0)
        rc = read_params(model, &w, &b);
    if (rc == 0 && speaks) {
        printf("true:      w=%.4f b=%.4f (noise std %.2f)\n", TRUE_W, TRUE_B,
               NOISE_STD);
        printf("recovered: w=%.4f b=%.4f after %d SGD steps, mse=%.6f\n", w, b,
               STEPS, loss);
        printf("result: backend=%s model=linreg w=%.4f b=%.4f loss=%.6f\n",
               xg_device_backend(dev), w, b, loss);
        rc = fabsf(w - TRUE_W) > 0.05f || fabsf(b - TRUE_B) > 0.05f;
        if (rc)
            fprintf(stderr, "linear_regression: the fit did not converge\n");
    }
    xg_module_free(model);
    xg_tensor_free(x);
    xg_tensor_free(y);
    xg_shutdown();
    if (rc != 0)
        xg_dist_abort(rc); /* the other ranks must not wait for this one */
    return xg_dist_finalize() == XG_OK ? rc : fail("leaving the MPI job");
}
