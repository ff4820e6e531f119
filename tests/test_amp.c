/* Mixed precision: the loss scaler (xg_grad_scaler_*) against the rules of
 * PyTorch's GradScaler documentation (tests/amp_torch.py runs the
 * same kind of script through torch's own GradScaler), its misuse refused,
 * its state in checkpoints; the autocast mode.
 *
 * Gradients are made known as in test_optim.c: backward from
 * scale * sum(p * c) gives grad p = scale * c, with inf or NaN in c where
 * a step should be skipped. */
#include <math.h>

#include "test_util.h"

TestSuite(amp, .init = tu_init_scope, .fini = tu_fini_scope);

/* A call that must fail with `status` and a message that names `needle`. */
#define EXPECT_ERROR(call, status, needle)                                  \
    do {                                                                    \
        xg_status got_ = (call);                                            \
        cr_expect_eq(got_, status, "%s: %d", #call, (int)got_);             \
        tu_assert_error(status, needle, #call);                             \
    } while (0)

/* Backward from the scaled sum(p * c). */
static void scaled_backward(xg_grad_scaler *s, xg_tensor *p, const float *c)
{
    xg_scope *scope = xg_scope_begin();
    xg_tensor *ct = tu_f32(c, xg_tensor_shape(p), xg_tensor_ndim(p));
    xg_tensor *loss = xg_grad_scaler_scale(s, xg_sum_all(xg_mul(p, ct)));
    cr_assert_eq(xg_backward(loss), XG_OK, "backward: %s", xg_last_error());
    xg_scope_end(scope);
}

Test(amp, defaults_are_pytorchs)
{
    xg_grad_scaler_options o = xg_grad_scaler_defaults();
    cr_expect_eq(o.init_scale, 65536.0f);
    cr_expect_eq(o.growth_factor, 2.0f);
    cr_expect_eq(o.backoff_factor, 0.5f);
    cr_expect_eq(o.growth_interval, 2000);
    xg_grad_scaler *s = xg_grad_scaler_new(NULL);
    cr_assert_not_null(s, "%s", xg_last_error());
    cr_expect_eq(xg_grad_scaler_get_scale(s), 65536.0f);
    cr_expect_eq(xg_grad_scaler_growth_tracker(s), 0);
    xg_grad_scaler_free(s);
}

/* The scripted run: per step, whether the gradient holds an inf (1), a NaN
 * (2) or neither (0), with growth_interval 3. want_scale is the scale after
 * each update, worked out from the documented rules: backoff 0.5 and the
 * tracker reset on inf/NaN, x2 after 3 clean steps in a row. */
static const int script[] = {0, 0, 0, 0, 1, 0, 0, 2, 1, 0, 0, 0, 0, 0, 0};
static const float want_scale[] = {8, 8, 16, 16, 8, 8, 8, 4, 2, 2, 2, 4,
                                   4, 4, 8};
enum { N_SCRIPT = sizeof script / sizeof *script };

Test(amp, scale_follows_the_documented_rules_and_skips_bad_steps)
{
    xg_grad_scaler_options o = xg_grad_scaler_defaults();
    o.init_scale = 8.0f;
    o.growth_interval = 3;
    xg_grad_scaler *s = xg_grad_scaler_new(&o);
    cr_assert_not_null(s);
    xg_tensor *p = tu_param(xg_zeros(XG_SHAPE(4)));
    xg_sgd_options so = xg_sgd_defaults();
    so.lr = 0.5f;
    xg_optim *opt = xg_optim_sgd(&p, 1, &so);
    double want_p[4] = {0};
    int64_t steps = 0;
    for (int k = 0; k < N_SCRIPT; k++) {
        float c[4] = {1, -2, 0.25f, 3};
        c[0] += (float)k; /* a different gradient every step */
        if (script[k])
            c[2] = script[k] == 1 ? INFINITY : NAN;
        scaled_backward(s, p, c);
        bool stepped = true;
        cr_assert_eq(xg_grad_scaler_step(s, opt, &stepped), XG_OK, "%s",
                     xg_last_error());
        cr_expect_eq(stepped, script[k] == 0, "step %d stepped: %d", k,
                     stepped);
        if (!script[k]) {
            steps++;
            /* the unscaled gradient is c exactly (scales are powers of 2) */
            tu_assert_values(xg_tensor_grad(p), XG_SHAPE(4),
                             (const double[]){c[0], c[1], c[2], c[3]}, 0, 0,
                             "unscaled gradient");
            for (int i = 0; i < 4; i++)
                want_p[i] -= 0.5 * c[i];
        }
        cr_assert_eq(xg_grad_scaler_update(s), XG_OK, "%s", xg_last_error());
        cr_expect_eq(xg_grad_scaler_get_scale(s), want_scale[k],
                     "scale after step %d: %g, want %g", k,
                     (double)xg_grad_scaler_get_scale(s),
                     (double)want_scale[k]);
        xg_optim_zero_grad(opt);
        tu_assert_values(p, XG_SHAPE(4), want_p, 1e-6, 1e-6,
                         "parameters (skipped steps leave them alone)");
    }
    cr_expect_eq(xg_optim_steps(opt), steps, "skipped steps are not counted");
    xg_optim_free(opt);
    xg_grad_scaler_free(s);
}

Test(amp, unscale_then_clip_then_step)
{
    xg_grad_scaler *s = xg_grad_scaler_new(NULL);
    xg_tensor *p = tu_param(xg_zeros(XG_SHAPE(2)));
    xg_optim *opt = xg_optim_sgd(&p, 1, &(xg_sgd_options){.lr = 1.0f});
    scaled_backward(s, p, (const float[]){3, 4});
    tu_assert_values(xg_tensor_grad(p), XG_SHAPE(2),
                     (const double[]){3 * 65536.0, 4 * 65536.0}, 0, 0,
                     "scaled gradient");
    cr_assert_eq(xg_grad_scaler_unscale(s, opt), XG_OK, "%s",
                 xg_last_error());
    tu_assert_values(xg_tensor_grad(p), XG_SHAPE(2), (const double[]){3, 4},
                     0, 0, "unscaled in place");
    /* a second unscale before update is refused, the gradients unchanged */
    EXPECT_ERROR(xg_grad_scaler_unscale(s, opt), XG_ERR_STATE, "already");
    float norm = 0;
    cr_assert_eq(xg_clip_grad_norm(&p, 1, 1.0f, &norm), XG_OK);
    cr_expect_float_eq(norm, 5.0f, 1e-6);
    bool stepped = false;
    cr_assert_eq(xg_grad_scaler_step(s, opt, &stepped), XG_OK, "%s",
                 xg_last_error());
    cr_expect(stepped);
    tu_assert_values(p, XG_SHAPE(2),
                     (const double[]){-3 / (5 + 1e-6), -4 / (5 + 1e-6)}, 1e-6,
                     1e-6, "stepped with the clipped gradient");
    EXPECT_ERROR(xg_grad_scaler_step(s, opt, NULL), XG_ERR_STATE, "already");
    EXPECT_ERROR(xg_grad_scaler_unscale(s, opt), XG_ERR_STATE, "after");
    cr_assert_eq(xg_grad_scaler_update(s), XG_OK);
    cr_expect_eq(xg_grad_scaler_growth_tracker(s), 1);
    /* update with nothing checked since */
    EXPECT_ERROR(xg_grad_scaler_update(s), XG_ERR_STATE, "no gradients");
    xg_optim_free(opt);
    xg_grad_scaler_free(s);
}

/* Two optimizers: an inf in either skips neither's clean step but backs
 * the scale off once. */
Test(amp, two_optimizers_one_update)
{
    xg_grad_scaler *s = xg_grad_scaler_new(NULL);
    xg_tensor *a = tu_param(xg_zeros(XG_SHAPE(1)));
    xg_tensor *b = tu_param(xg_zeros(XG_SHAPE(1)));
    xg_optim *oa = xg_optim_sgd(&a, 1, &(xg_sgd_options){.lr = 1.0f});
    xg_optim *ob = xg_optim_sgd(&b, 1, &(xg_sgd_options){.lr = 1.0f});
    scaled_backward(s, a, (const float[]){2});
    scaled_backward(s, b, (const float[]){INFINITY});
    bool sa = false, sb = true;
    cr_assert_eq(xg_grad_scaler_step(s, oa, &sa), XG_OK);
    cr_assert_eq(xg_grad_scaler_step(s, ob, &sb), XG_OK);
    cr_expect(sa && !sb, "a steps, b is skipped");
    cr_assert_eq(xg_grad_scaler_update(s), XG_OK);
    cr_expect_eq(xg_grad_scaler_get_scale(s), 32768.0f);
    tu_assert_values(a, XG_SHAPE(1), (const double[]){-2}, 0, 0, "a");
    tu_assert_values(b, XG_SHAPE(1), (const double[]){0}, 0, 0, "b");
    xg_optim_free(oa);
    xg_optim_free(ob);
    xg_grad_scaler_free(s);
}

/* Growth stops short of inf; backoff keeps going down. */
Test(amp, scale_never_grows_to_inf)
{
    xg_grad_scaler_options o = xg_grad_scaler_defaults();
    o.init_scale = 3e38f;
    o.growth_interval = 1;
    xg_grad_scaler *s = xg_grad_scaler_new(&o);
    xg_tensor *p = tu_param(xg_zeros(XG_SHAPE(1)));
    xg_optim *opt = xg_optim_sgd(&p, 1, &(xg_sgd_options){.lr = 0.0f});
    scaled_backward(s, p, (const float[]){0});
    cr_assert_eq(xg_grad_scaler_step(s, opt, NULL), XG_OK);
    cr_assert_eq(xg_grad_scaler_update(s), XG_OK);
    cr_expect_eq(xg_grad_scaler_get_scale(s), 3e38f);
    cr_expect_eq(xg_grad_scaler_growth_tracker(s), 0);
    xg_optim_free(opt);
    xg_grad_scaler_free(s);
}

Test(amp, bad_options_and_state_refused)
{
    xg_grad_scaler_options bad[] = {
        {0, 2, 0.5f, 10},        {INFINITY, 2, 0.5f, 10},
        {1, 1, 0.5f, 10},        {1, 2, 1, 10},
        {1, 2, 0, 10},           {1, 2, 0.5f, 0},
        {NAN, 2, 0.5f, 10},      {1, NAN, 0.5f, 10},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_expect_null(xg_grad_scaler_new(&bad[i]), "options %zu", i);
        cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    }
    xg_grad_scaler *s = xg_grad_scaler_new(NULL);
    EXPECT_ERROR(xg_grad_scaler_set_state(s, 0, 0),
                 XG_ERR_INVALID_ARG, "scale");
    EXPECT_ERROR(xg_grad_scaler_set_state(s, NAN, 0),
                 XG_ERR_INVALID_ARG, "scale");
    EXPECT_ERROR(xg_grad_scaler_set_state(s, 1, 2000),
                 XG_ERR_INVALID_ARG, "growth");
    EXPECT_ERROR(xg_grad_scaler_set_state(s, 1, -1),
                 XG_ERR_INVALID_ARG, "growth");
    cr_assert_eq(xg_grad_scaler_set_state(s, 1024, 7), XG_OK);
    cr_expect_eq(xg_grad_scaler_get_scale(s), 1024.0f);
    cr_expect_eq(xg_grad_scaler_growth_tracker(s), 7);
    EXPECT_ERROR(xg_grad_scaler_step(s, NULL, NULL),
                 XG_ERR_INVALID_ARG, "NULL");
    EXPECT_ERROR(xg_grad_scaler_update(NULL), XG_ERR_INVALID_ARG, "NULL");
    cr_expect_null(xg_grad_scaler_scale(NULL, NULL));
    xg_grad_scaler_free(s);
    xg_grad_scaler_free(NULL);
}

/* The checkpoint keeps the scaler's state exactly, and a file without it
 * reads as loss_scale 0. */
Test(amp, checkpoint_keeps_the_loss_scale)
{
    char dir[256];
    tu_tmpdir_new(dir, sizeof dir, "amp");
    xg_module *m = xg_linear(3, 2, true);
    xg_optim *opt = xg_optim_for_module(m, "adam", 1e-3f);
    const char *with = tu_path_in(dir, "with.safetensors");
    xg_train_state st = {.epoch = 1, .step = 5, .loss_scale = 0.1f * 3,
                         .loss_scale_growth = 1999};
    cr_assert_eq(xg_checkpoint_save(with, m, opt, &st, NULL), XG_OK, "%s",
                 xg_last_error());
    xg_train_state back = {0};
    cr_assert_eq(xg_checkpoint_load(with, m, opt, &back), XG_OK, "%s",
                 xg_last_error());
    cr_expect_eq(back.loss_scale, 0.1f * 3, "the float exactly");
    cr_expect_eq(back.loss_scale_growth, 1999);
    const char *without = tu_path_in(dir, "without.safetensors");
    st.loss_scale = 0;
    cr_assert_eq(xg_checkpoint_save(without, m, opt, &st, NULL), XG_OK);
    back.loss_scale = 5;
    cr_assert_eq(xg_checkpoint_load(without, m, opt, &back), XG_OK);
    cr_expect_eq(back.loss_scale, 0.0f);
    cr_expect_eq(back.loss_scale_growth, 0);
    st.loss_scale = -1;
    EXPECT_ERROR(xg_checkpoint_save(without, m, opt, &st, NULL),
                 XG_ERR_INVALID_ARG, "loss scale");
    const char *hp[] = {"loss_scale", "1", NULL};
    st.loss_scale = 0;
    EXPECT_ERROR(xg_checkpoint_save(without, m, opt, &st, hp),
                 XG_ERR_INVALID_ARG, "loss_scale");
    xg_optim_free(opt);
    xg_module_free(m);
    tu_rm_tree(dir);
}

/* ---- autocast -------------------------------------------------------------- */

Test(amp, set_autocast_returns_the_previous_and_refuses_i32)
{
    cr_expect_eq(xg_autocast_dtype(), XG_F32, "off by default");
    cr_expect_eq(xg_set_autocast(XG_BF16), XG_F32);
    cr_expect_eq(xg_set_autocast(XG_F16), XG_BF16);
    cr_expect_eq(xg_set_autocast(XG_I32), XG_F16, "refused: unchanged");
    tu_assert_error(XG_ERR_DTYPE, "i32", "set_autocast(i32)");
    cr_expect_eq(xg_autocast_dtype(), XG_F16);
    cr_expect_eq(xg_set_autocast(XG_F32), XG_F16);
    cr_expect_eq(xg_autocast_dtype(), XG_F32);
}

/* v rounded to dtype (bf16 or f16) and back. */
static float round_to(xg_dtype dtype, float v)
{
    uint16_t h;
    float r;
    if (dtype == XG_BF16) {
        xg_f32_to_bf16(&v, &h, 1);
        xg_bf16_to_f32(&h, &r, 1);
    } else {
        xg_f32_to_f16(&v, &h, 1);
        xg_f16_to_f32(&h, &r, 1);
    }
    return r;
}

/* Autocast's matmul: an output of the autocast dtype whose values are the
 * product of the rounded inputs, rounded (accumulation in f32 or better);
 * the f32 leaves' gradients arrive in f32. */
static void check_matmul(xg_dtype dtype)
{
    enum { M = 5, K = 33, N = 7 };
    float a[M * K], b[K * N];
    tu_fill_signed(a, M * K, 11, 0.1, 2.0);
    tu_fill_signed(b, K * N, 12, 0.1, 2.0);
    xg_tensor *ta = tu_param(tu_f32(a, XG_SHAPE(M, K)));
    xg_tensor *tb = tu_param(tu_f32(b, XG_SHAPE(K, N)));
    xg_dtype was = xg_set_autocast(dtype);
    xg_tensor *c = xg_matmul(ta, tb);
    xg_set_autocast(was);
    cr_assert_not_null(c, "%s", xg_last_error());
    cr_expect_eq(xg_tensor_dtype(c), dtype, "output dtype %s",
                 xg_dtype_name(xg_tensor_dtype(c)));
    float got[M * N];
    cr_assert_eq(xg_tensor_read_f32(c, got, M * N), XG_OK, "%s",
                 xg_last_error());
    double eps = dtype == XG_BF16 ? 1.0 / 256 : 1.0 / 2048;
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0, mag = 0;
            for (int k = 0; k < K; k++) {
                double p = (double)round_to(dtype, a[i * K + k]) *
                           (double)round_to(dtype, b[k * N + j]);
                s += p;
                mag += fabs(p);
            }
            /* one rounding of the result, and f32 accumulation */
            cr_expect(fabs(got[i * N + j] - s) <= eps * fabs(s) + 1e-5 * mag,
                      "%s c[%d,%d] = %g, want %g", xg_dtype_name(dtype), i, j,
                      (double)got[i * N + j], s);
        }
    cr_assert_eq(xg_backward(xg_sum_all(c)), XG_OK, "%s", xg_last_error());
    cr_expect_eq(xg_tensor_dtype(xg_tensor_grad(ta)), XG_F32);
    cr_expect_eq(xg_tensor_dtype(xg_tensor_grad(tb)), XG_F32);
    /* d sum(A B) / dA[i,k] = sum_j B[k,j], of the rounded B, in 16 bits */
    float ga[M * K];
    cr_assert_eq(xg_tensor_read_f32(xg_tensor_grad(ta), ga, M * K), XG_OK);
    for (int k = 0; k < K; k++) {
        double s = 0;
        for (int j = 0; j < N; j++)
            s += round_to(dtype, b[k * N + j]);
        cr_expect(fabs(ga[k] - s) <= 2 * eps * (fabs(s) + N),
                  "grad a[0,%d] = %g, want %g", k, (double)ga[k], s);
    }
}

Test(amp, matmul_under_bf16) { check_matmul(XG_BF16); }
Test(amp, matmul_under_f16) { check_matmul(XG_F16); }

/* Linear (with its bias), conv2d and attention give 16-bit outputs under
 * autocast, f32 without; the loss stays f32. */
Test(amp, layers_compute_in_the_autocast_dtype)
{
    xg_manual_seed(3);
    xg_module *lin = xg_linear(6, 4, true);
    xg_module *conv = xg_conv2d_layer(2, 3, 3, NULL, true);
    xg_tensor *x = tu_rand(XG_SHAPE(5, 6), 21, -1, 1);
    xg_tensor *img = tu_rand(XG_SHAPE(2, 2, 6, 6), 22, -1, 1);
    xg_tensor *q = tu_rand(XG_SHAPE(1, 2, 4, 8), 23, -1, 1);
    int32_t lab[5] = {0, 1, 2, 3, 0};
    xg_tensor *labels = tu_i32(lab, XG_SHAPE(5));
    xg_dtype dts[3] = {XG_F32, XG_BF16, XG_F16};
    for (int i = 0; i < 3; i++) {
        xg_dtype was = xg_set_autocast(dts[i]);
        xg_tensor *y = xg_module_forward(lin, x);
        xg_tensor *z = xg_module_forward(conv, img);
        xg_tensor *a = xg_attention(q, q, q, NULL);
        xg_tensor *loss = xg_cross_entropy(y, labels);
        xg_set_autocast(was);
        cr_assert(y && z && a && loss, "%s: %s", xg_dtype_name(dts[i]),
                  xg_last_error());
        cr_expect_eq(xg_tensor_dtype(y), dts[i], "linear");
        cr_expect_eq(xg_tensor_dtype(z), dts[i], "conv2d");
        cr_expect_eq(xg_tensor_dtype(a), dts[i], "attention");
        cr_expect_eq(xg_tensor_dtype(loss), XG_F32, "the loss stays f32");
        cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
        xg_tensor *w = xg_module_param(lin, 0, NULL);
        cr_expect_eq(xg_tensor_dtype(xg_tensor_grad(w)), XG_F32,
                     "the master weight's gradient is f32");
        xg_tensor_zero_grad(w);
        xg_tensor_zero_grad(xg_module_param(lin, 1, NULL));
    }
    xg_module_free(lin);
    xg_module_free(conv);
}

static int op_named(const char *name)
{
    for (int op = 0; op < xg_op_count(); op++)
        if (!strcmp(xg_op_name(op), name))
            return op;
    cr_assert_fail("no op %s", name);
    return -1;
}

/* A 16-bit op the CPU backend widens (softmax: no 16-bit kernel) runs on
 * f32 twins of its buffers; they count in the device's memory account
 * while they live: the peak of the call holds them (bf16 in and out: 2 +
 * 2 bytes an element, the twins 4 + 4), in_use is back after it, and
 * XGRAD_MEMORY_LIMIT refuses a call whose twins do not fit though its
 * output alone would. */
Test(amp, widened_temporaries_count_in_the_memory_account)
{
    setenv("XGRAD_MEMORY_LIMIT", "1M", 1);
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    unsetenv("XGRAD_MEMORY_LIMIT");
    xg_device_set_current(dev);
    if (xg_device_supports_natively(dev, op_named("softmax"), XG_BF16)) {
        xg_device_set_current(NULL);
        xg_device_close(dev);
        cr_skip_test("the CPU backend has a bf16 softmax: nothing is "
                     "widened");
    }
    xg_scope *s = xg_scope_begin();
    enum { N = 32 * 1024 };
    xg_tensor *f = xg_full(XG_SHAPE(N / 64, 64), 0.5f);
    xg_tensor *x = xg_to_dtype(f, XG_BF16);
    cr_assert_not_null(x, "%s", xg_last_error());
    xg_tensor_free(f);
    xg_device_memory_info before, after;
    xg_device_memory(dev, &before);
    xg_device_reset_peak_memory(dev);
    xg_tensor *y = xg_softmax(x); /* 64 KiB out, 256 KiB of twins */
    cr_assert_not_null(y, "%s", xg_last_error());
    xg_device_memory(dev, &after);
    cr_expect_eq(after.in_use, before.in_use + 2 * N, "only y stays");
    cr_expect_geq(after.peak, before.in_use + 2 * N + 8 * N,
                  "the peak %llu holds y and both twins (in use before "
                  "%llu)", (unsigned long long)after.peak,
                  (unsigned long long)before.in_use);
    float *v = tu_read(xg_to_dtype(y, XG_F32));
    cr_expect_eq(v[0], 1.0f / 64, "softmax of a constant row: %g", v[0]);
    cr_expect_eq(v[N - 1], 1.0f / 64);
    free(v);
    xg_scope_end(s);

    /* 256 KiB of bf16 held: a softmax over them needs 256 KiB for y and
     * 1 MiB of twins, past the 1 MiB limit; y alone fits */
    s = xg_scope_begin();
    enum { BIG = 128 * 1024 };
    f = xg_full(XG_SHAPE(BIG / 64, 64), 0.5f);
    xg_tensor *held = xg_to_dtype(f, XG_BF16);
    cr_assert_not_null(held, "%s", xg_last_error());
    xg_tensor_free(f);
    xg_device_memory(dev, &before);
    cr_expect_null(xg_softmax(held), "its twins are past the limit");
    cr_expect_eq(xg_last_status(), XG_ERR_DEVICE_OOM, "%s", xg_last_error());
    cr_expect(strstr(xg_last_error(), "XGRAD_MEMORY_LIMIT") != NULL, "%s",
              xg_last_error());
    xg_device_memory(dev, &after);
    cr_expect_eq(after.in_use, before.in_use, "nothing left behind");
    cr_expect_not_null(xg_softmax(xg_to_dtype(xg_full(XG_SHAPE(16, 64), 1.0f),
                                              XG_BF16)),
                       "a small widened call still runs: %s",
                       xg_last_error());
    xg_scope_end(s);
    xg_device_set_current(NULL);
    xg_device_close(dev);
}

/* A CPU device that widens every 16-bit op it can (XGRAD_WIDEN=all), as
 * a device without 16-bit arithmetic does, made current. */
static xg_device *widening_cpu(void)
{
    setenv("XGRAD_WIDEN", "all", 1);
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    unsetenv("XGRAD_WIDEN");
    xg_device_set_current(dev);
    cr_assert(!xg_device_supports_natively(dev, op_named("gelu"), XG_BF16),
              "XGRAD_WIDEN=all widens gelu");
    cr_assert(xg_device_supports(dev, op_named("gelu"), XG_BF16));
    return dev;
}

static void widening_cpu_close(xg_device *dev)
{
    xg_device_set_current(NULL);
    xg_device_close(dev);
}

Test(amp, widen_all_is_checked)
{
    xg_device *dev = NULL;
    setenv("XGRAD_WIDEN", "everything", 1);
    cr_expect_eq(xg_device_open("cpu", &dev), XG_ERR_INVALID_ARG);
    tu_assert_error(XG_ERR_INVALID_ARG, "XGRAD_WIDEN", "device_open");
    setenv("XGRAD_WIDEN", "native", 1);
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device_close(dev);
    unsetenv("XGRAD_WIDEN");
}

/* Layer norm under autocast: statistics and affine map in f32, the output
 * rounded once to the autocast dtype (what the matmul after it reads), so
 * its values are those of the f32 layer norm cast to that dtype, bit for
 * bit; the gradients of x, weight and bias come back in f32. */
Test(amp, layer_norm_gives_the_autocast_dtype_from_f32_statistics)
{
    float xv[24], wv[6], bv[6];
    tu_fill_signed(xv, 24, 31, 0.1, 3.0);
    tu_fill(wv, 6, 32, 0.5, 1.5);
    tu_fill(bv, 6, 33, -0.5, 0.5);
    xg_dtype dts[2] = {XG_BF16, XG_F16};
    for (int i = 0; i < 2; i++) {
        xg_tensor *x = tu_param(tu_f32(xv, XG_SHAPE(4, 6)));
        xg_tensor *w = tu_param(tu_f32(wv, XG_SHAPE(6)));
        xg_tensor *b = tu_param(tu_f32(bv, XG_SHAPE(6)));
        xg_tensor *want = xg_to_dtype(xg_layer_norm(x, w, b, 1e-5f), dts[i]);
        xg_dtype was = xg_set_autocast(dts[i]);
        xg_tensor *y = xg_layer_norm(x, w, b, 1e-5f);
        /* a 16-bit input: its dtype out too */
        xg_tensor *y16 = xg_layer_norm(xg_to_dtype(x, dts[i]), w, b, 1e-5f);
        xg_set_autocast(was);
        cr_assert(y && y16 && want, "%s", xg_last_error());
        cr_expect_eq(xg_tensor_dtype(y), dts[i], "%s", xg_dtype_name(dts[i]));
        cr_expect_eq(xg_tensor_dtype(y16), dts[i]);
        float *got = tu_read(xg_to_dtype(y, XG_F32)),
              *exp = tu_read(xg_to_dtype(want, XG_F32));
        for (int k = 0; k < 24; k++)
            cr_expect_eq(got[k], exp[k], "%s [%d]: %g, want %g",
                         xg_dtype_name(dts[i]), k, got[k], exp[k]);
        free(got);
        free(exp);
        float c[24];
        tu_fill_signed(c, 24, 34, 0.5, 2.0);
        cr_assert_eq(xg_backward(xg_sum_all(xg_mul(
                         xg_to_dtype(y, XG_F32), tu_f32(c, XG_SHAPE(4, 6))))),
                     XG_OK, "%s", xg_last_error());
        xg_tensor *ps[3] = {x, w, b};
        for (int k = 0; k < 3; k++) {
            xg_tensor *g = xg_tensor_grad(ps[k]);
            cr_assert_not_null(g, "gradient %d", k);
            cr_expect_eq(xg_tensor_dtype(g), XG_F32, "gradient %d is f32", k);
        }
    }
}

/* A large elementwise call is widened a chunk at a time: its f32
 * temporaries stay a few MiB however long it is, and its values are those
 * of the f32 kernel rounded once, bit for bit (a partial last chunk
 * included). */
Test(amp, long_widened_elementwise_calls_run_in_chunks)
{
    xg_device *dev = widening_cpu();
    xg_scope *scope = xg_scope_begin();
    enum { N = 1000 * 1000 + 7 };
    float *v = malloc(sizeof *v * N);
    cr_assert_not_null(v);
    tu_fill_signed(v, N, 41, 0.01, 4.0);
    xg_tensor *x = xg_to_dtype(tu_f32(v, XG_SHAPE(N)), XG_BF16);
    free(v);
    cr_assert_not_null(x, "%s", xg_last_error());
    xg_tensor *want = xg_to_dtype(xg_gelu(xg_to_dtype(x, XG_F32)), XG_BF16);
    cr_assert_not_null(want, "%s", xg_last_error());
    xg_device_memory_info before, after;
    xg_device_memory(dev, &before);
    xg_device_reset_peak_memory(dev);
    xg_tensor *y = xg_gelu(x);
    cr_assert_not_null(y, "%s", xg_last_error());
    xg_device_memory(dev, &after);
    /* y, and at most 4 MiB of staging and twins (8 N bytes unchunked) */
    cr_expect_leq(after.peak - before.in_use, 2 * (uint64_t)N + (4u << 20),
                  "peak %llu over %llu", (unsigned long long)after.peak,
                  (unsigned long long)before.in_use);
    cr_expect_eq(after.in_use, before.in_use + 2 * (uint64_t)N);
    float *got = tu_read(xg_to_dtype(y, XG_F32));
    float *exp = tu_read(xg_to_dtype(want, XG_F32));
    int64_t bad = 0;
    for (int64_t i = 0; i < N; i++)
        bad += memcmp(&got[i], &exp[i], sizeof *got) != 0;
    cr_expect_eq(bad, 0, "%lld of %d values differ from the f32 kernel's "
                 "rounded once", (long long)bad, N);
    free(got);
    free(exp);
    /* the backward too (UNARY_BACKWARD, two inputs) */
    xg_tensor *xp = tu_param(xg_to_dtype(x, XG_F32));
    xg_tensor *x16 = xg_to_dtype(xp, XG_BF16);
    cr_assert_eq(xg_backward(xg_sum_all(xg_to_dtype(xg_gelu(x16), XG_F32))),
                 XG_OK, "%s", xg_last_error());
    xg_tensor *g32 = tu_param(xg_to_dtype(x, XG_F32));
    cr_assert_eq(xg_backward(xg_sum_all(xg_gelu(g32))), XG_OK, "%s",
                 xg_last_error());
    got = tu_read(xg_tensor_grad(xp));
    exp = tu_read(xg_to_dtype(xg_to_dtype(xg_tensor_grad(g32), XG_BF16),
                              XG_F32));
    bad = 0;
    for (int64_t i = 0; i < N; i++)
        bad += memcmp(&got[i], &exp[i], sizeof *got) != 0;
    cr_expect_eq(bad, 0, "gelu_backward: %lld values differ", (long long)bad);
    free(got);
    free(exp);
    xg_scope_end(scope);
    widening_cpu_close(dev);
}

/* The same for a long BINARY call, a band of rows at a time, with either
 * input broadcast along rows or columns: bit for bit the f32 kernel's
 * values rounded once, and a few MiB of temporaries. */
Test(amp, long_widened_binary_calls_run_in_bands_of_rows)
{
    xg_device *dev = widening_cpu();
    xg_scope *scope = xg_scope_begin();
    enum { R = 777, C = 1999 };
    float *v = malloc(sizeof *v * R * C);
    cr_assert_not_null(v);
    tu_fill_signed(v, R * C, 51, 0.01, 4.0);
    xg_tensor *m = xg_to_dtype(tu_f32(v, XG_SHAPE(R, C)), XG_BF16);
    xg_tensor *m2 = xg_to_dtype(xg_mul_scalar(tu_f32(v, XG_SHAPE(R, C)), 0.3f),
                                XG_BF16);
    tu_fill_signed(v, C, 52, 0.01, 2.0);
    xg_tensor *row = xg_to_dtype(tu_f32(v, XG_SHAPE(1, C)), XG_BF16);
    tu_fill_signed(v, R, 53, 0.01, 2.0);
    xg_tensor *col = xg_to_dtype(tu_f32(v, XG_SHAPE(R, 1)), XG_BF16);
    free(v);
    cr_assert(m && m2 && row && col, "%s", xg_last_error());
    struct { const char *what; xg_tensor *(*f)(xg_tensor *, xg_tensor *);
             xg_tensor *a, *b; } cases[] = {
        {"matrix + row", xg_add, m, row}, {"row - matrix", xg_sub, row, m},
        {"matrix * column", xg_mul, m, col}, {"matrix / matrix", xg_div, m, m2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        xg_tensor *a = cases[i].a, *b = cases[i].b;
        xg_tensor *want = xg_to_dtype(
            cases[i].f(xg_to_dtype(a, XG_F32), xg_to_dtype(b, XG_F32)),
            XG_BF16);
        cr_assert_not_null(want, "%s", xg_last_error());
        xg_device_memory_info before, after;
        xg_device_memory(dev, &before);
        xg_device_reset_peak_memory(dev);
        xg_tensor *y = cases[i].f(a, b);
        cr_assert_not_null(y, "%s: %s", cases[i].what, xg_last_error());
        xg_device_memory(dev, &after);
        cr_expect_leq(after.peak - before.in_use,
                      2 * (uint64_t)(R * C) + (6u << 20), "%s: peak %llu "
                      "over %llu", cases[i].what,
                      (unsigned long long)after.peak,
                      (unsigned long long)before.in_use);
        float *got = tu_read(xg_to_dtype(y, XG_F32));
        float *exp = tu_read(xg_to_dtype(want, XG_F32));
        int64_t bad = 0;
        for (int64_t k = 0; k < R * C; k++)
            bad += memcmp(&got[k], &exp[k], sizeof *got) != 0;
        cr_expect_eq(bad, 0, "%s: %lld values differ", cases[i].what,
                     (long long)bad);
        free(got);
        free(exp);
    }
    xg_scope_end(scope);
    widening_cpu_close(dev);
}
