/* End-to-end training on the CPU backend: small models learn, runs are
 * reproducible bit for bit, and a scoped training loop does not grow
 * memory. Also the nn layers' documented behaviour (names, init, forward). */
#include "test_util.h"

#include <malloc.h>

TestSuite(train, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(nn, .init = tu_init_scope, .fini = tu_fini_scope);

static const float xor_x[8] = {0, 0, 0, 1, 1, 0, 1, 1};
static const int32_t xor_y[4] = {0, 1, 1, 0};
static const float xor_t[4] = {0, 1, 1, 0};

/* 2 -> hidden -> out with tanh; names fc1, act, fc2. */
static xg_module *mlp(int64_t hidden, int64_t out)
{
    xg_module *m = xg_sequential();
    cr_assert_not_null(m);
    cr_assert_eq(xg_sequential_add(m, "fc1", xg_linear(2, hidden, true)),
                 XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_sequential_add(m, "act", xg_tanh_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(m, "fc2", xg_linear(hidden, out, true)),
                 XG_OK);
    return m;
}

static xg_optim *adam_for(xg_module *m, float lr)
{
    xg_tensor *ps[16];
    int n = xg_module_param_count(m);
    cr_assert_leq(n, 16);
    for (int i = 0; i < n; i++)
        ps[i] = xg_module_param(m, i, NULL);
    xg_adam_options o = xg_adam_defaults();
    o.lr = lr;
    xg_optim *opt = xg_optim_adam(ps, n, &o);
    cr_assert_not_null(opt, "%s", xg_last_error());
    return opt;
}

/* One optimisation step in its own scope; returns the loss before it. */
typedef xg_tensor *(*loss_fn)(xg_module *m, xg_tensor *x, xg_tensor *y);

static float train_step(xg_module *m, xg_optim *opt, loss_fn lf,
                        xg_tensor *x, xg_tensor *y)
{
    xg_scope *s = xg_scope_begin();
    cr_assert_not_null(s);
    xg_optim_zero_grad(opt);
    xg_tensor *loss = lf(m, x, y);
    cr_assert_not_null(loss, "forward: %s", xg_last_error());
    float v = tu_item(loss);
    cr_assert_eq(xg_backward(loss), XG_OK, "backward: %s", xg_last_error());
    cr_assert_eq(xg_optim_step(opt), XG_OK, "step: %s", xg_last_error());
    xg_scope_end(s);
    return v;
}

static xg_tensor *ce_loss(xg_module *m, xg_tensor *x, xg_tensor *y)
{
    return xg_cross_entropy(xg_module_forward(m, x), y);
}

static xg_tensor *mse_loss(xg_module *m, xg_tensor *x, xg_tensor *y)
{
    return xg_mse_loss(xg_module_forward(m, x), y);
}

Test(train, xor_cross_entropy_adam)
{
    xg_manual_seed(1);
    xg_module *m = mlp(16, 2);
    xg_optim *opt = adam_for(m, 0.05f);
    xg_tensor *x = tu_f32(xor_x, XG_SHAPE(4, 2));
    xg_tensor *y = tu_i32(xor_y, XG_SHAPE(4));
    float first = train_step(m, opt, ce_loss, x, y), loss = first;
    int steps = 1;
    while (loss >= 0.05f && steps < 1500) {
        loss = train_step(m, opt, ce_loss, x, y);
        steps++;
    }
    cr_expect(first > 0.3f, "initial loss %g is suspiciously low", first);
    cr_assert_lt(loss, 0.05f, "XOR cross entropy still %g after %d steps",
                 loss, steps);
    /* predictions in evaluation mode */
    xg_set_grad_enabled(false);
    xg_tensor *pred = xg_argmax(xg_module_forward(m, x), 1, false);
    xg_set_grad_enabled(true);
    tu_assert_i32(pred, XG_SHAPE(4), xor_y, "XOR predictions");
    cr_expect_eq(xg_optim_steps(opt), steps);
    xg_optim_free(opt);
    xg_module_free(m);
}

Test(train, xor_mse_adam)
{
    xg_manual_seed(2);
    xg_module *m = mlp(8, 1);
    xg_optim *opt = xg_optim_for_module(m, "adam", 0.05f);
    cr_assert_not_null(opt, "%s", xg_last_error());
    xg_tensor *x = tu_f32(xor_x, XG_SHAPE(4, 2));
    xg_tensor *t = tu_f32(xor_t, XG_SHAPE(4, 1));
    float loss = 1;
    int steps = 0;
    while (loss >= 0.01f && steps < 2000) {
        loss = train_step(m, opt, mse_loss, x, t);
        steps++;
    }
    cr_assert_lt(loss, 0.01f, "XOR MSE still %g after %d steps", loss,
                 steps);
    xg_optim_free(opt);
    xg_module_free(m);
}

Test(train, linear_regression_recovers_w_and_b)
{
    enum { N = 64 };
    float xs[N * 2], ys[N];
    tu_fill(xs, N * 2, 77, -1, 1);
    for (int i = 0; i < N; i++)
        ys[i] = (float)(2.0 * xs[2 * i] - 3.0 * xs[2 * i + 1] + 0.5);
    xg_manual_seed(3);
    xg_module *m = xg_linear(2, 1, true);
    cr_assert_not_null(m);
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.1f;
    xg_tensor *ps[2] = {xg_module_param(m, 0, NULL),
                        xg_module_param(m, 1, NULL)};
    xg_optim *opt = xg_optim_sgd(ps, 2, &o);
    cr_assert_not_null(opt);
    xg_tensor *x = tu_f32(xs, XG_SHAPE(N, 2));
    xg_tensor *y = tu_f32(ys, XG_SHAPE(N, 1));
    float loss = 0;
    for (int s = 0; s < 600; s++)
        loss = train_step(m, opt, mse_loss, x, y);
    cr_expect_lt(loss, 1e-8f, "final MSE %g", loss);
    tu_assert_values(ps[0], XG_SHAPE(1, 2), (const double[]){2, -3}, 1e-3, 0,
                     "learned weight");
    tu_assert_values(ps[1], XG_SHAPE(1), (const double[]){0.5}, 1e-3, 0,
                     "learned bias");
    xg_optim_free(opt);
    xg_module_free(m);
}

/* 30 steps of a 4-8-3 MLP on random data, all drawn from the library's
 * generator seeded with `seed`. */
static void loss_curve(uint64_t seed, float *curve, int n)
{
    xg_manual_seed(seed);
    xg_module *m = xg_sequential();
    cr_assert_eq(xg_sequential_add(m, NULL, xg_linear(4, 8, true)), XG_OK);
    cr_assert_eq(xg_sequential_add(m, NULL, xg_relu_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(m, NULL, xg_linear(8, 3, true)), XG_OK);
    xg_optim *opt = adam_for(m, 0.01f);
    xg_tensor *x = xg_tensor_keep(xg_rand_normal(XG_SHAPE(16, 4), 0, 1));
    float lab[16];
    xg_tensor *u = xg_rand_uniform(XG_SHAPE(16), 0, 3);
    cr_assert_not_null(u);
    cr_assert_eq(xg_tensor_read(u, lab, sizeof lab), XG_OK);
    int32_t li[16];
    for (int i = 0; i < 16; i++)
        li[i] = (int32_t)lab[i];
    xg_tensor *y = xg_tensor_keep(tu_i32(li, XG_SHAPE(16)));
    for (int i = 0; i < n; i++)
        curve[i] = train_step(m, opt, ce_loss, x, y);
    xg_tensor_free(x);
    xg_tensor_free(y);
    xg_optim_free(opt);
    xg_module_free(m);
}

Test(train, same_seed_same_loss_curve_bitwise)
{
    enum { N = 30 };
    float a[N], b[N], c[N];
    loss_curve(123, a, N);
    loss_curve(123, b, N);
    loss_curve(124, c, N);
    for (int i = 0; i < N; i++)
        cr_expect(memcmp(&a[i], &b[i], sizeof(float)) == 0,
                  "step %d: %.9g vs %.9g with the same seed", i, a[i], b[i]);
    cr_expect(memcmp(a, c, sizeof a) != 0,
              "seeds 123 and 124 gave the same curve");
    cr_expect_lt(a[N - 1], a[0], "the loss did not fall: %g -> %g", a[0],
                 a[N - 1]);
}

/* ---- gradient accumulation over micro-batches ----------------------------
 * backward(loss(half 1) / 2) then backward(loss(half 2) / 2) accumulates
 * the gradient of the full batch's mean loss; one optimizer step from
 * either gives the same parameters (up to f32 rounding of the sums). */

/* Embedding(10, 6) -> tanh -> Linear(6, 4), the same init for a seed. */
static xg_module *token_net(uint64_t seed)
{
    xg_manual_seed(seed);
    xg_module *m = xg_sequential();
    cr_assert_not_null(m);
    cr_assert_eq(xg_sequential_add(m, "emb", xg_embedding_layer(10, 6)),
                 XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_sequential_add(m, "act", xg_tanh_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(m, "fc", xg_linear(6, 4, true)), XG_OK,
                 "%s", xg_last_error());
    return m;
}

/* Every parameter (or its gradient) of a and b agree within rel * the
 * largest magnitude in the tensor. */
static void expect_params_close(xg_module *a, xg_module *b, bool grads,
                                double rel, const char *what)
{
    int n = xg_module_param_count(a);
    cr_assert_eq(n, xg_module_param_count(b));
    for (int i = 0; i < n; i++) {
        const char *name = NULL;
        xg_tensor *ta = xg_module_param(a, i, &name);
        xg_tensor *tb = xg_module_param(b, i, NULL);
        if (grads) {
            ta = xg_tensor_grad(ta);
            tb = xg_tensor_grad(tb);
            cr_assert(ta && tb, "%s: %s has no gradient", what, name);
        }
        int64_t k = xg_tensor_numel(ta);
        float *va = tu_read(ta), *vb = tu_read(tb);
        double scale = 0;
        for (int64_t j = 0; j < k; j++)
            scale = fmax(scale, fabs(va[j]));
        cr_assert_gt(scale, 0, "%s: %s is all zeros", what, name);
        for (int64_t j = 0; j < k; j++)
            cr_expect_leq(fabs((double)va[j] - vb[j]), rel * scale,
                          "%s: %s[%lld]: full batch %.9g, micro-batches "
                          "%.9g", what, name, (long long)j, va[j], vb[j]);
        free(va);
        free(vb);
    }
}

Test(train, gradient_accumulation_over_micro_batches)
{
    enum { B = 8 };
    const int32_t tokens[B] = {3, 7, 1, 3, 9, 0, 7, 7};
    const int32_t labels[B] = {0, 2, 3, 1, 1, 0, 3, 2};
    const char *kinds[] = {"sgd", "adam"};
    for (int k = 0; k < 2; k++) {
        xg_module *full = token_net(42), *micro = token_net(42);
        xg_optim *of = xg_optim_for_module(full, kinds[k], 0.1f);
        xg_optim *om = xg_optim_for_module(micro, kinds[k], 0.1f);
        cr_assert(of && om, "%s", xg_last_error());

        xg_tensor *loss = xg_cross_entropy(
            xg_module_forward(full, tu_i32(tokens, XG_SHAPE(B))),
            tu_i32(labels, XG_SHAPE(B)));
        cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
        for (int h = 0; h < 2; h++) {
            xg_tensor *half = xg_cross_entropy(
                xg_module_forward(micro,
                                  tu_i32(tokens + h * B / 2, XG_SHAPE(B / 2))),
                tu_i32(labels + h * B / 2, XG_SHAPE(B / 2)));
            cr_assert_eq(xg_backward(xg_mul_scalar(half, 0.5f)), XG_OK, "%s",
                         xg_last_error());
        }
        expect_params_close(full, micro, true, 1e-6,
                            "gradients: full batch vs 2 micro-batches / 2");
        cr_assert_eq(xg_optim_step(of), XG_OK, "%s", xg_last_error());
        cr_assert_eq(xg_optim_step(om), XG_OK, "%s", xg_last_error());
        expect_params_close(full, micro, false, 1e-6,
                            kinds[k][0] == 's' ? "parameters after one sgd "
                                                 "step"
                                               : "parameters after one adam "
                                                 "step");
        xg_optim_free(of);
        xg_optim_free(om);
        xg_module_free(full);
        xg_module_free(micro);
    }
}

static size_t heap_in_use(void)
{
    struct mallinfo2 mi = mallinfo2();
    return mi.uordblks + mi.hblkhd;
}

Test(train, scoped_loop_does_not_grow_memory)
{
    xg_manual_seed(4);
    xg_module *m = mlp(32, 2);
    xg_optim *opt = adam_for(m, 0.01f);
    xg_tensor *x = tu_f32(xor_x, XG_SHAPE(4, 2));
    xg_tensor *y = tu_i32(xor_y, XG_SHAPE(4));
    for (int s = 0; s < 50; s++)
        train_step(m, opt, ce_loss, x, y);
    size_t before = heap_in_use();
    for (int s = 0; s < 500; s++)
        train_step(m, opt, ce_loss, x, y);
    size_t after = heap_in_use();
    long growth = (long)after - (long)before;
    /* one leaked step is several kB (about 15 tensors and graph nodes);
     * 500 steps leaking would be megabytes */
    cr_expect_lt(growth, 64 * 1024,
                 "heap grew by %ld bytes over 500 scoped steps", growth);
    xg_optim_free(opt);
    xg_module_free(m);
}

/* ---- nn layers --------------------------------------------------------- */

Test(nn, parameter_names_and_order)
{
    xg_module *m = mlp(3, 2);
    cr_assert_eq(xg_module_param_count(m), 4);
    const char *want[4] = {"fc1.weight", "fc1.bias", "fc2.weight",
                           "fc2.bias"};
    const int64_t shapes[4][2] = {{3, 2}, {3, 0}, {2, 3}, {2, 0}};
    for (int i = 0; i < 4; i++) {
        const char *name = NULL;
        xg_tensor *p = xg_module_param(m, i, &name);
        cr_assert_not_null(p);
        cr_expect_str_eq(name, want[i]);
        int nd = shapes[i][1] ? 2 : 1;
        tu_assert_shape(p, shapes[i], nd, want[i]);
        cr_expect(xg_tensor_requires_grad(p), "%s requires grad", want[i]);
    }
    cr_expect_null(xg_module_param(m, 4, NULL));
    cr_expect_null(xg_module_param(m, -1, NULL));
    xg_module_free(m);

    xg_module *s = xg_sequential();
    cr_assert_eq(xg_sequential_add(s, NULL, xg_linear(2, 2, false)), XG_OK);
    cr_assert_eq(xg_sequential_add(s, NULL, xg_relu_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(s, NULL, xg_linear(2, 1, true)), XG_OK);
    cr_assert_eq(xg_module_param_count(s), 3);
    const char *n0 = NULL, *n1 = NULL, *n2 = NULL;
    xg_module_param(s, 0, &n0);
    xg_module_param(s, 1, &n1);
    xg_module_param(s, 2, &n2);
    cr_expect_str_eq(n0, "0.weight");
    cr_expect_str_eq(n1, "2.weight");
    cr_expect_str_eq(n2, "2.bias");
    xg_module_free(s);
}

Test(nn, linear_init_bounds_and_forward)
{
    xg_manual_seed(11);
    xg_module *m = xg_linear(4, 3, true);
    cr_assert_not_null(m);
    xg_tensor *w = xg_module_param(m, 0, NULL);
    xg_tensor *b = xg_module_param(m, 1, NULL);
    tu_assert_shape(w, XG_SHAPE(3, 4), "weight [out, in]");
    tu_assert_shape(b, XG_SHAPE(3), "bias [out]");
    float *wv = tu_read(w), *bv = tu_read(b);
    /* PyTorch: uniform in +-1/sqrt(in) = +-0.5 */
    bool distinct = false;
    for (int i = 0; i < 12; i++) {
        cr_expect(fabsf(wv[i]) <= 0.5f, "weight %d = %g out of bounds", i,
                  wv[i]);
        distinct |= wv[i] != wv[0];
    }
    for (int i = 0; i < 3; i++)
        cr_expect(fabsf(bv[i]) <= 0.5f, "bias %d = %g out of bounds", i,
                  bv[i]);
    cr_expect(distinct, "weights are not random");
    /* y = x W^T + b */
    float xv[8] = {1, -1, 0.5f, 2, 0, 3, -2, 1};
    double want[6];
    for (int n = 0; n < 2; n++)
        for (int o = 0; o < 3; o++) {
            double s = bv[o];
            for (int k = 0; k < 4; k++)
                s += (double)xv[n * 4 + k] * wv[o * 4 + k];
            want[n * 3 + o] = s;
        }
    tu_assert_values(xg_module_forward(m, tu_f32(xv, XG_SHAPE(2, 4))),
                     XG_SHAPE(2, 3), want, 1e-6, 1e-5, "linear forward");
    free(wv);
    free(bv);
    xg_module_free(m);
}

Test(nn, activation_layers)
{
    xg_tensor *x = tu_f32((const float[]){-1, 0.5f}, XG_SHAPE(2));
    xg_module *layers[4] = {xg_relu_layer(), xg_sigmoid_layer(),
                            xg_tanh_layer(), xg_gelu_layer()};
    const double want[4][2] = {
        {0, 0.5},
        {1 / (1 + exp(1.0)), 1 / (1 + exp(-0.5))},
        {tanh(-1.0), tanh(0.5)},
        {-0.5 * (1 + erf(-1 / sqrt(2.0))), 0.25 * (1 + erf(0.5 / sqrt(2.0)))},
    };
    for (int i = 0; i < 4; i++) {
        cr_assert_not_null(layers[i]);
        cr_expect_eq(xg_module_param_count(layers[i]), 0);
        tu_assert_values(xg_module_forward(layers[i], x), XG_SHAPE(2),
                         want[i], 1e-6, 1e-6, "activation layer");
        xg_module_free(layers[i]);
    }
}

Test(nn, frozen_module_gets_no_grads)
{
    xg_manual_seed(12);
    xg_module *m = mlp(4, 2);
    xg_module_set_frozen(m, true);
    for (int i = 0; i < xg_module_param_count(m); i++)
        cr_expect(!xg_tensor_requires_grad(xg_module_param(m, i, NULL)));
    xg_tensor *x = tu_param(tu_f32(xor_x, XG_SHAPE(4, 2)));
    xg_tensor *y = tu_i32(xor_y, XG_SHAPE(4));
    cr_assert_eq(xg_backward(ce_loss(m, x, y)), XG_OK, "%s",
                 xg_last_error());
    cr_expect_not_null(xg_tensor_grad(x), "the input still gets a grad");
    for (int i = 0; i < xg_module_param_count(m); i++)
        cr_expect_null(xg_tensor_grad(xg_module_param(m, i, NULL)),
                       "frozen parameter %d got a gradient", i);
    xg_module_set_frozen(m, false);
    cr_assert_eq(xg_backward(ce_loss(m, x, y)), XG_OK);
    for (int i = 0; i < xg_module_param_count(m); i++)
        cr_expect_not_null(xg_tensor_grad(xg_module_param(m, i, NULL)),
                           "unfrozen parameter %d got no gradient", i);
    xg_module_free(m);
}
