/* linear_regression: the smallest xgrad training program.
 *
 * Fits y = w x + b to points made on the device (true w = 2.5, b = -1.0,
 * plus Gaussian noise of std 0.05) with a Linear(1, 1) module, mean squared
 * error and plain SGD, then prints the recovered parameters and a `result:`
 * line. Runs on the device XGRAD_BACKEND selects.
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

/* x uniform in [-1, 1), y = TRUE_W x + TRUE_B + noise; both [N, 1], owned
 * by the caller. Temporaries die with the scope. */
static int make_data(xg_tensor **x, xg_tensor **y)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return fail("scope");
    *x = xg_tensor_keep(xg_rand_uniform(XG_SHAPE(N_POINTS, 1), -1.0f, 1.0f));
    xg_tensor *noise = xg_rand_normal(XG_SHAPE(N_POINTS, 1), 0.0f, NOISE_STD);
    xg_tensor *line = xg_add_scalar(xg_mul_scalar(*x, TRUE_W), TRUE_B);
    *y = xg_tensor_keep(xg_add(line, noise));
    xg_scope_end(scope);
    return *y ? 0 : fail("making the data");
}

/* One SGD step on the whole set; *loss gets the loss when `read` is set. */
static int train_step(xg_module *model, xg_optim *opt, xg_tensor *x,
                      xg_tensor *y, bool read, float *loss)
{
    xg_scope *scope = xg_scope_begin();
    if (!scope)
        return fail("scope");
    xg_tensor *l = xg_mse_loss(xg_module_forward(model, x), y);
    int rc = !l || xg_backward(l) != XG_OK || xg_optim_step(opt) != XG_OK;
    if (!rc && read)
        rc = xg_tensor_item(l, loss) != XG_OK;
    xg_optim_zero_grad(opt);
    xg_scope_end(scope);
    return rc ? fail("training step") : 0;
}

static int fit(xg_module *model, xg_tensor *x, xg_tensor *y, float *loss)
{
    xg_optim *opt = xg_optim_for_module(model, "sgd", LR);
    if (!opt)
        return fail("optimizer");
    int rc = 0;
    for (int step = 0; step < STEPS && rc == 0; step++)
        rc = train_step(model, opt, x, y, step == STEPS - 1, loss);
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

int main(void)
{
    xg_tensor *x = NULL, *y = NULL;
    xg_module *model = NULL;
    float w = 0.0f, b = 0.0f, loss = 0.0f;
    xg_device *dev = xg_device_current();
    int rc = dev ? 0 : fail("opening the device");
    if (rc == 0) {
        printf("device: %s (%s)\n", xg_device_name(dev), xg_device_backend(dev));
        xg_manual_seed(0);
        rc = make_data(&x, &y);
    }
    if (rc == 0 && !(model = xg_linear(1, 1, true)))
        rc = fail("making the model");
    if (rc == 0)
        rc = fit(model, x, y, &loss);
    if (rc == 0)
        rc = read_params(model, &w, &b);
    if (rc == 0) {
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
    return rc;
}
