/* Optimizers against straightforward double-precision implementations of
 * the algorithms in the torch.optim documentation (SGD, Adam, AdamW),
 * learning-rate schedules against their formulas, gradient clipping against
 * a hand-computed norm, and rejection of bad hyperparameters.
 *
 * Gradients are made known: the loss is sum(p * c) for a constant tensor c,
 * so grad p = c exactly. c changes from step to step. */
#include "test_util.h"

TestSuite(optim, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(sched, .init = tu_init, .fini = tu_fini);

enum { P = 6, STEPS = 6 };

static const float p_init[P] = {0.5f, -1.25f, 2.0f, 0.0f, -0.3f, 1.1f};

/* The gradient used at step k (1-based): magnitudes in [0.1, 1], random
 * signs, different every step. */
static void grad_at(int k, float *c)
{
    tu_fill_signed(c, P, 1000 + (uint64_t)k, 0.1, 1.0);
}

/* Runs backward on sum(p * c) so that grad p = c. */
static void set_grad(xg_tensor *p, const float *c)
{
    xg_scope *s = xg_scope_begin();
    xg_tensor *ct = tu_f32(c, xg_tensor_shape(p), xg_tensor_ndim(p));
    xg_status st = xg_backward(xg_sum_all(xg_mul(p, ct)));
    cr_assert_eq(st, XG_OK, "backward: %s", xg_last_error());
    xg_scope_end(s);
}

static void assert_param(xg_tensor *p, const double *want, double atol,
                         double rtol, const char *what, int step)
{
    char buf[160];
    snprintf(buf, sizeof buf, "%s after step %d", what, step);
    tu_assert_values(p, XG_SHAPE(2, 3), want, atol, rtol, buf);
}

/* ---- reference algorithms (torch.optim documentation) ------------------ */

typedef struct ref_sgd {
    double lr, momentum, dampening, weight_decay;
    bool nesterov;
    double *buf; /* n elements */
    int n, t;
} ref_sgd;

static void ref_sgd_step(ref_sgd *o, double *p, const float *grad)
{
    o->t++;
    for (int i = 0; i < o->n; i++) {
        double g = grad[i];
        if (o->weight_decay != 0)
            g += o->weight_decay * p[i];
        if (o->momentum != 0) {
            if (o->t > 1)
                o->buf[i] = o->momentum * o->buf[i] +
                            (1 - o->dampening) * g;
            else
                o->buf[i] = g;
            if (o->nesterov)
                g = g + o->momentum * o->buf[i];
            else
                g = o->buf[i];
        }
        p[i] -= o->lr * g;
    }
}

typedef struct ref_adam {
    double lr, beta1, beta2, eps, weight_decay;
    bool decoupled; /* AdamW */
    double *m, *v; /* n elements each */
    int n, t;
} ref_adam;

static void ref_adam_step(ref_adam *o, double *p, const float *grad)
{
    o->t++;
    for (int i = 0; i < o->n; i++) {
        double g = grad[i];
        if (o->decoupled)
            p[i] *= 1 - o->lr * o->weight_decay;
        else if (o->weight_decay != 0)
            g += o->weight_decay * p[i];
        o->m[i] = o->beta1 * o->m[i] + (1 - o->beta1) * g;
        o->v[i] = o->beta2 * o->v[i] + (1 - o->beta2) * g * g;
        double mhat = o->m[i] / (1 - pow(o->beta1, o->t));
        double vhat = o->v[i] / (1 - pow(o->beta2, o->t));
        p[i] -= o->lr * mhat / (sqrt(vhat) + o->eps);
    }
}

/* ---- SGD --------------------------------------------------------------- */

static void run_sgd(xg_sgd_options o, const char *what)
{
    xg_tensor *p = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_optim *opt = xg_optim_sgd(&p, 1, &o);
    cr_assert_not_null(opt, "%s: xg_optim_sgd: %s", what, xg_last_error());
    double buf[P] = {0};
    ref_sgd ref = {.lr = o.lr, .momentum = o.momentum,
                   .dampening = o.dampening, .weight_decay = o.weight_decay,
                   .nesterov = o.nesterov, .buf = buf, .n = P};
    double want[P];
    for (int i = 0; i < P; i++)
        want[i] = p_init[i];
    for (int k = 1; k <= STEPS; k++) {
        float c[P];
        grad_at(k, c);
        xg_optim_zero_grad(opt);
        cr_assert_null(xg_tensor_grad(p), "optim_zero_grad drops grads");
        set_grad(p, c);
        cr_assert_eq(xg_optim_step(opt), XG_OK, "%s: step: %s", what,
                     xg_last_error());
        ref_sgd_step(&ref, want, c);
        assert_param(p, want, 1e-6, 1e-5, what, k);
        cr_expect_eq(xg_optim_steps(opt), k);
    }
    xg_optim_free(opt);
}

Test(optim, sgd_defaults_are_pytorch)
{
    xg_sgd_options o = xg_sgd_defaults();
    cr_expect_float_eq(o.lr, 1e-3f, 1e-9);
    cr_expect_eq(o.momentum, 0);
    cr_expect_eq(o.dampening, 0);
    cr_expect_eq(o.weight_decay, 0);
    cr_expect(!o.nesterov);
    xg_adam_options a = xg_adam_defaults();
    cr_expect_float_eq(a.lr, 1e-3f, 1e-9);
    cr_expect_float_eq(a.beta1, 0.9f, 1e-7);
    cr_expect_float_eq(a.beta2, 0.999f, 1e-7);
    cr_expect_float_eq(a.eps, 1e-8f, 1e-12);
    cr_expect_eq(a.weight_decay, 0);
    xg_adam_options w = xg_adamw_defaults();
    cr_expect_float_eq(w.lr, 1e-3f, 1e-9);
    cr_expect_float_eq(w.beta1, 0.9f, 1e-7);
    cr_expect_float_eq(w.beta2, 0.999f, 1e-7);
    cr_expect_float_eq(w.eps, 1e-8f, 1e-12);
    cr_expect_float_eq(w.weight_decay, 1e-2f, 1e-9);
}

Test(optim, sgd_plain)
{
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.1f;
    run_sgd(o, "sgd plain");
}

Test(optim, sgd_plain_first_step_by_hand)
{
    /* p = [1, 2], grad = [0.5, -1], lr 0.2 -> [0.9, 2.2] */
    xg_tensor *p = tu_param(tu_f32((const float[]){1, 2}, XG_SHAPE(2)));
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.2f;
    xg_optim *opt = xg_optim_sgd(&p, 1, &o);
    cr_assert_not_null(opt);
    set_grad(p, (const float[]){0.5f, -1});
    cr_assert_eq(xg_optim_step(opt), XG_OK);
    tu_assert_values(p, XG_SHAPE(2), (const double[]){0.9, 2.2}, 1e-7, 1e-6,
                     "p - lr * grad");
    xg_optim_free(opt);
}

Test(optim, sgd_momentum)
{
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.1f;
    o.momentum = 0.9f;
    run_sgd(o, "sgd momentum");
}

Test(optim, sgd_momentum_dampening)
{
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.05f;
    o.momentum = 0.8f;
    o.dampening = 0.3f;
    run_sgd(o, "sgd momentum + dampening");
}

Test(optim, sgd_nesterov)
{
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.1f;
    o.momentum = 0.9f;
    o.nesterov = true;
    run_sgd(o, "sgd nesterov");
}

Test(optim, sgd_weight_decay)
{
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.1f;
    o.weight_decay = 0.05f;
    run_sgd(o, "sgd weight decay");
    o.momentum = 0.5f;
    o.nesterov = true;
    run_sgd(o, "sgd weight decay + nesterov momentum");
}

/* ---- Adam and AdamW ---------------------------------------------------- */

static void run_adam(xg_adam_options o, bool adamw, const char *what)
{
    xg_tensor *p = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_optim *opt = adamw ? xg_optim_adamw(&p, 1, &o)
                          : xg_optim_adam(&p, 1, &o);
    cr_assert_not_null(opt, "%s: new optimizer: %s", what, xg_last_error());
    double m[P] = {0}, v[P] = {0};
    ref_adam ref = {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2,
                    .eps = o.eps, .weight_decay = o.weight_decay,
                    .decoupled = adamw, .m = m, .v = v, .n = P};
    double want[P];
    for (int i = 0; i < P; i++)
        want[i] = p_init[i];
    for (int k = 1; k <= STEPS; k++) {
        float c[P];
        grad_at(k, c);
        xg_optim_zero_grad(opt);
        set_grad(p, c);
        cr_assert_eq(xg_optim_step(opt), XG_OK, "%s: step: %s", what,
                     xg_last_error());
        ref_adam_step(&ref, want, c);
        assert_param(p, want, 2e-6, 1e-5, what, k);
    }
    cr_expect_eq(xg_optim_steps(opt), STEPS);
    xg_optim_free(opt);
}

Test(optim, adam_defaults)
{
    xg_adam_options o = xg_adam_defaults();
    o.lr = 0.01f;
    run_adam(o, false, "adam");
}

Test(optim, adam_custom_betas_eps)
{
    xg_adam_options o = xg_adam_defaults();
    o.lr = 0.05f;
    o.beta1 = 0.5f;
    o.beta2 = 0.9f;
    o.eps = 1e-3f;
    run_adam(o, false, "adam betas (0.5, 0.9), eps 1e-3");
}

Test(optim, adam_l2_weight_decay)
{
    xg_adam_options o = xg_adam_defaults();
    o.lr = 0.01f;
    o.weight_decay = 0.1f;
    run_adam(o, false, "adam weight_decay (L2, added to the gradient)");
}

Test(optim, adamw_decoupled_weight_decay)
{
    xg_adam_options o = xg_adamw_defaults();
    o.lr = 0.01f;
    run_adam(o, true, "adamw (default weight decay 1e-2)");
    o.weight_decay = 0.5f;
    run_adam(o, true, "adamw weight decay 0.5");
}

Test(optim, adam_first_step_moves_by_lr)
{
    /* m_hat / sqrt(v_hat) = g / |g| at t = 1 */
    xg_tensor *p = tu_param(tu_f32((const float[]){1, 1}, XG_SHAPE(2)));
    xg_adam_options o = xg_adam_defaults();
    o.lr = 0.1f;
    xg_optim *opt = xg_optim_adam(&p, 1, &o);
    cr_assert_not_null(opt);
    set_grad(p, (const float[]){3, -0.5f});
    cr_assert_eq(xg_optim_step(opt), XG_OK);
    tu_assert_values(p, XG_SHAPE(2), (const double[]){0.9, 1.1}, 1e-6, 1e-6,
                     "first Adam step is lr * sign(g)");
    xg_optim_free(opt);
}

Test(optim, adam_state_starts_at_a_params_first_gradient)
{
    /* PyTorch keeps one step count per parameter: a parameter that first
     * gets a gradient at the third step uses t = 1 then. */
    xg_tensor *a = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_tensor *b = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_tensor *ps[2] = {a, b};
    xg_adam_options o = xg_adam_defaults();
    o.lr = 0.02f;
    xg_optim *opt = xg_optim_adam(ps, 2, &o);
    cr_assert_not_null(opt);
    double ma[P] = {0}, va[P] = {0}, mb[P] = {0}, vb[P] = {0};
    ref_adam ra = {.lr = o.lr, .beta1 = o.beta1, .beta2 = o.beta2,
                   .eps = o.eps, .m = ma, .v = va, .n = P};
    ref_adam rb = ra;
    rb.m = mb;
    rb.v = vb;
    double wa[P], wb[P];
    for (int i = 0; i < P; i++)
        wa[i] = wb[i] = p_init[i];
    for (int k = 1; k <= 4; k++) {
        float c[P];
        grad_at(k, c);
        xg_optim_zero_grad(opt);
        set_grad(a, c);
        if (k >= 3)
            set_grad(b, c);
        cr_assert_eq(xg_optim_step(opt), XG_OK);
        ref_adam_step(&ra, wa, c);
        if (k >= 3)
            ref_adam_step(&rb, wb, c);
        assert_param(a, wa, 2e-6, 1e-5, "param with grads every step", k);
        assert_param(b, wb, 2e-6, 1e-5, "param with grads from step 3", k);
    }
    xg_optim_free(opt);
}

/* ---- large parameters ---------------------------------------------------
 * The kernels' vector loops, their tails and their split over threads: a
 * parameter of BIG elements (prime: every vector width leaves a tail; large
 * enough to be shared among threads), every variant of both updates, on
 * devices of 1 and 3 threads. Each must follow the reference, and the two
 * must agree to the bit. */

enum { BIG = 20011, BIG_STEPS = 3 };

typedef struct big_case {
    const char *what;
    int kind; /* 0 SGD, 1 Adam, 2 AdamW */
    xg_sgd_options sgd;
    xg_adam_options adam;
} big_case;

/* Runs `bc` on a fresh CPU device with `threads` threads; returns the final
 * parameter (malloc'd) after checking every step against the reference. */
static float *run_big(const big_case *bc, const char *threads)
{
    setenv("XGRAD_NUM_THREADS", threads, 1);
    xg_device *dev;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device_set_current(dev);
    xg_scope *scope = xg_scope_begin();
    float *init = malloc(BIG * sizeof *init), *c = malloc(BIG * sizeof *c);
    double *want = malloc(BIG * sizeof *want),
           *s0 = calloc(BIG, sizeof *s0), *s1 = calloc(BIG, sizeof *s1);
    cr_assert(init && c && want && s0 && s1);
    tu_fill_signed(init, BIG, 77, 0.05, 2.0);
    for (int i = 0; i < BIG; i++)
        want[i] = init[i];
    xg_tensor *p = tu_param(tu_f32(init, XG_SHAPE(BIG)));
    const xg_sgd_options *so = &bc->sgd;
    const xg_adam_options *ao = &bc->adam;
    ref_sgd rs = {.lr = so->lr, .momentum = so->momentum,
                  .dampening = so->dampening,
                  .weight_decay = so->weight_decay,
                  .nesterov = so->nesterov, .buf = s0, .n = BIG};
    ref_adam ra = {.lr = ao->lr, .beta1 = ao->beta1, .beta2 = ao->beta2,
                   .eps = ao->eps, .weight_decay = ao->weight_decay,
                   .decoupled = bc->kind == 2, .m = s0, .v = s1, .n = BIG};
    xg_optim *opt = bc->kind == 0   ? xg_optim_sgd(&p, 1, so)
                    : bc->kind == 1 ? xg_optim_adam(&p, 1, ao)
                                    : xg_optim_adamw(&p, 1, ao);
    cr_assert_not_null(opt, "%s: %s", bc->what, xg_last_error());
    char what[160];
    for (int k = 1; k <= BIG_STEPS; k++) {
        /* |grad| >= 0.3 > |weight_decay * p|: no cancellation in the L2
         * term, whose float rounding the division would then magnify. */
        tu_fill_signed(c, BIG, 2000 + (uint64_t)k, 0.3, 1.0);
        xg_optim_zero_grad(opt);
        set_grad(p, c);
        cr_assert_eq(xg_optim_step(opt), XG_OK, "%s: %s", bc->what,
                     xg_last_error());
        if (bc->kind == 0)
            ref_sgd_step(&rs, want, c);
        else
            ref_adam_step(&ra, want, c);
        snprintf(what, sizeof what, "%s, %s thread(s), after step %d",
                 bc->what, threads, k);
        tu_assert_values(p, XG_SHAPE(BIG), want, 2e-6, 1e-5, what);
    }
    float *out = tu_read(p);
    xg_optim_free(opt);
    free(init);
    free(c);
    free(want);
    free(s0);
    free(s1);
    xg_scope_end(scope);
    xg_device_set_current(NULL);
    xg_device_close(dev);
    return out;
}

Test(optim, large_params_every_variant_on_any_thread_count)
{
    xg_sgd_options s = xg_sgd_defaults();
    s.lr = 0.05f;
    xg_adam_options a = xg_adam_defaults();
    a.lr = 0.01f;
    big_case cases[] = {
        {"sgd", 0, s, a},
        {"sgd weight decay", 0, s, a},
        {"sgd momentum", 0, s, a},
        {"sgd momentum dampening weight decay", 0, s, a},
        {"sgd nesterov weight decay", 0, s, a},
        {"adam", 1, s, a},
        {"adam L2 weight decay", 1, s, a},
        {"adamw", 2, s, a},
    };
    cases[1].sgd.weight_decay = 0.1f;
    cases[2].sgd.momentum = 0.9f;
    cases[3].sgd.momentum = 0.9f;
    cases[3].sgd.dampening = 0.3f;
    cases[3].sgd.weight_decay = 0.1f;
    cases[4].sgd.momentum = 0.9f;
    cases[4].sgd.nesterov = true;
    cases[4].sgd.weight_decay = 0.1f;
    cases[5].adam.beta1 = 0.5f;
    cases[5].adam.eps = 1e-3f;
    cases[6].adam.weight_decay = 0.1f;
    cases[7].adam = xg_adamw_defaults();
    cases[7].adam.lr = 0.01f;
    cases[7].adam.weight_decay = 0.5f;
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        float *one = run_big(&cases[i], "1"), *three = run_big(&cases[i], "3");
        for (int k = 0; k < BIG; k++)
            cr_assert(memcmp(&one[k], &three[k], sizeof *one) == 0,
                      "%s: element %d is %.9g with 1 thread, %.9g with 3",
                      cases[i].what, k, one[k], three[k]);
        free(one);
        free(three);
    }
}

/* ---- frozen and gradient-less parameters ------------------------------- */

static void check_untouched(xg_optim *(*make)(xg_tensor *const *, int,
                                              const void *),
                            const void *opts, const char *what)
{
    xg_tensor *live = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_tensor *frozen = tu_f32(p_init, XG_SHAPE(2, 3));
    xg_tensor *unused = tu_param(tu_f32(p_init, XG_SHAPE(2, 3)));
    xg_tensor *ps[3] = {live, frozen, unused};
    xg_optim *opt = make(ps, 3, opts);
    cr_assert_not_null(opt, "%s: %s", what, xg_last_error());
    double init[P];
    for (int i = 0; i < P; i++)
        init[i] = p_init[i];
    for (int k = 1; k <= 3; k++) {
        float c[P];
        grad_at(k, c);
        xg_optim_zero_grad(opt);
        /* frozen takes part in the loss but requires no grad */
        xg_scope *s = xg_scope_begin();
        xg_tensor *ct = tu_f32(c, XG_SHAPE(2, 3));
        xg_tensor *l = xg_sum_all(xg_mul(xg_mul(live, frozen), ct));
        cr_assert_eq(xg_backward(l), XG_OK, "%s", xg_last_error());
        xg_scope_end(s);
        cr_assert_null(xg_tensor_grad(frozen));
        cr_assert_null(xg_tensor_grad(unused));
        cr_assert_eq(xg_optim_step(opt), XG_OK);
    }
    char buf[160];
    snprintf(buf, sizeof buf, "%s: frozen parameter", what);
    tu_assert_values(frozen, XG_SHAPE(2, 3), init, 0, 0, buf);
    snprintf(buf, sizeof buf, "%s: parameter without a gradient", what);
    tu_assert_values(unused, XG_SHAPE(2, 3), init, 0, 0, buf);
    float *v = tu_read(live);
    bool moved = false;
    for (int i = 0; i < P; i++)
        moved |= v[i] != p_init[i];
    free(v);
    cr_expect(moved, "%s: the trainable parameter did not move", what);
    xg_optim_free(opt);
}

static xg_optim *make_sgd(xg_tensor *const *ps, int n, const void *o)
{
    return xg_optim_sgd(ps, n, o);
}
static xg_optim *make_adam(xg_tensor *const *ps, int n, const void *o)
{
    return xg_optim_adam(ps, n, o);
}
static xg_optim *make_adamw(xg_tensor *const *ps, int n, const void *o)
{
    return xg_optim_adamw(ps, n, o);
}

Test(optim, frozen_and_gradless_params_untouched)
{
    /* weight decay would move them if they were (wrongly) updated */
    xg_sgd_options s = xg_sgd_defaults();
    s.lr = 0.1f;
    s.momentum = 0.9f;
    s.weight_decay = 0.1f;
    check_untouched(make_sgd, &s, "sgd");
    xg_adam_options a = xg_adam_defaults();
    a.lr = 0.1f;
    a.weight_decay = 0.1f;
    check_untouched(make_adam, &a, "adam");
    xg_adam_options w = xg_adamw_defaults();
    w.lr = 0.1f;
    w.weight_decay = 0.5f;
    check_untouched(make_adamw, &w, "adamw");
}

/* ---- lr access --------------------------------------------------------- */

Test(optim, set_lr_refuses_bad_rates)
{
    xg_tensor *p = tu_param(tu_f32((const float[]){1}, XG_SHAPE(1)));
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.5f;
    xg_optim *opt = xg_optim_sgd(&p, 1, &o);
    cr_assert_not_null(opt);
    const float bad[] = {NAN, -1.0f, INFINITY, -0.0f - 1e-30f};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        xg_clear_error();
        xg_optim_set_lr(opt, bad[i]);
        cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG, "lr %g: %s",
                     (double)bad[i], xg_status_str(xg_last_status()));
        cr_expect(strstr(xg_last_error(), "learning rate") != NULL, "\"%s\"",
                  xg_last_error());
        cr_expect_float_eq(xg_optim_lr(opt), 0.5f, 0, "lr %g changed it",
                           (double)bad[i]);
    }
    xg_clear_error();
    xg_optim_set_lr(opt, 0.0f);
    cr_expect_eq(xg_last_status(), XG_OK);
    cr_expect_float_eq(xg_optim_lr(opt), 0.0f, 0);
    xg_optim_free(opt);
}

Test(optim, set_lr_applies_to_next_step)
{
    xg_tensor *p = tu_param(tu_f32((const float[]){1}, XG_SHAPE(1)));
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 0.5f;
    xg_optim *opt = xg_optim_sgd(&p, 1, &o);
    cr_assert_not_null(opt);
    cr_expect_float_eq(xg_optim_lr(opt), 0.5f, 0);
    set_grad(p, (const float[]){1});
    cr_assert_eq(xg_optim_step(opt), XG_OK);
    xg_optim_set_lr(opt, 0.25f);
    cr_expect_float_eq(xg_optim_lr(opt), 0.25f, 0);
    xg_optim_zero_grad(opt);
    set_grad(p, (const float[]){1});
    cr_assert_eq(xg_optim_step(opt), XG_OK);
    /* 1 - 0.5 - 0.25 */
    tu_assert_values(p, XG_SHAPE(1), (const double[]){0.25}, 1e-7, 0,
                     "two steps with lr 0.5 then 0.25");
    xg_optim_free(opt);
}

Test(optim, for_module_sgd_adam_adamw)
{
    const char *kinds[3] = {"sgd", "adam", "adamw"};
    for (int k = 0; k < 3; k++) {
        xg_manual_seed(5);
        xg_module *m = xg_linear(3, 2, true);
        cr_assert_not_null(m, "%s", xg_last_error());
        cr_assert_eq(xg_module_param_count(m), 2);
        const char *n0 = NULL, *n1 = NULL;
        xg_tensor *w = xg_module_param(m, 0, &n0);
        xg_tensor *b = xg_module_param(m, 1, &n1);
        cr_assert(w && b);
        cr_expect_str_eq(n0, "weight");
        cr_expect_str_eq(n1, "bias");
        float *w0 = tu_read(w), *b0 = tu_read(b);
        xg_optim *opt = xg_optim_for_module(m, kinds[k], 0.5f);
        cr_assert_not_null(opt, "%s: %s", kinds[k], xg_last_error());
        /* L = sum(x W^T + b) with x = [[1,-2,1]]: dL/dW[o] = x,
         * dL/db = 1 */
        xg_scope *s = xg_scope_begin();
        xg_tensor *x = tu_f32((const float[]){1, -2, 1}, XG_SHAPE(1, 3));
        cr_assert_eq(xg_backward(xg_sum_all(xg_module_forward(m, x))),
                     XG_OK, "%s", xg_last_error());
        xg_scope_end(s);
        cr_assert_eq(xg_optim_step(opt), XG_OK);
        double ww[6], wb[2];
        const double gx[3] = {1, -2, 1};
        for (int i = 0; i < 6; i++) {
            double g = gx[i % 3];
            if (k == 0)
                ww[i] = w0[i] - 0.5 * g;
            else if (k == 1)
                ww[i] = w0[i] - 0.5 * (g > 0 ? 1 : -1);
            else
                ww[i] = w0[i] * (1 - 0.5 * 0.01) - 0.5 * (g > 0 ? 1 : -1);
        }
        for (int i = 0; i < 2; i++)
            wb[i] = k == 0 ? b0[i] - 0.5
                           : (k == 1 ? b0[i] - 0.5
                                     : b0[i] * (1 - 0.5 * 0.01) - 0.5);
        char what[64];
        snprintf(what, sizeof what, "%s first step on weight", kinds[k]);
        tu_assert_values(w, XG_SHAPE(2, 3), ww, 1e-6, 1e-5, what);
        snprintf(what, sizeof what, "%s first step on bias", kinds[k]);
        tu_assert_values(b, XG_SHAPE(2), wb, 1e-6, 1e-5, what);
        free(w0);
        free(b0);
        xg_optim_free(opt);
        xg_module_free(m);
    }
}

/* ---- invalid hyperparameters ------------------------------------------- */

static void expect_rejected(xg_optim *opt, const char *what)
{
    if (opt)
        xg_optim_free(opt);
    cr_expect_null(opt, "%s was accepted", what);
    cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG,
                 "%s: status %s, expected invalid argument (%s)", what,
                 xg_status_str(xg_last_status()), xg_last_error());
}

Test(optim, invalid_sgd_options_rejected)
{
    xg_tensor *p = tu_param(xg_zeros(XG_SHAPE(2)));
    struct {
        const char *what;
        xg_sgd_options o;
    } cases[] = {
        {"negative lr", {.lr = -0.1f}},
        {"negative momentum", {.lr = 0.1f, .momentum = -0.5f}},
        {"negative weight decay", {.lr = 0.1f, .weight_decay = -1e-4f}},
        {"nesterov without momentum", {.lr = 0.1f, .nesterov = true}},
        {"nesterov with dampening",
         {.lr = 0.1f, .momentum = 0.9f, .dampening = 0.1f, .nesterov = true}},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xg_clear_error();
        expect_rejected(xg_optim_sgd(&p, 1, &cases[i].o), cases[i].what);
    }
    xg_sgd_options ok = xg_sgd_defaults();
    xg_clear_error();
    expect_rejected(xg_optim_sgd(NULL, 1, &ok), "NULL parameter array");
    xg_clear_error();
    expect_rejected(xg_optim_sgd(&p, -1, &ok), "negative parameter count");
    xg_tensor *with_null[2] = {p, NULL};
    xg_clear_error();
    expect_rejected(xg_optim_sgd(with_null, 2, &ok), "a NULL parameter");
}

Test(optim, invalid_adam_options_rejected)
{
    xg_tensor *p = tu_param(xg_zeros(XG_SHAPE(2)));
    xg_adam_options d = xg_adam_defaults();
    struct {
        const char *what;
        float lr, beta1, beta2, eps, wd;
    } cases[] = {
        {"negative lr", -1e-3f, 0.9f, 0.999f, 1e-8f, 0},
        {"beta1 = 1", 1e-3f, 1.0f, 0.999f, 1e-8f, 0},
        {"beta1 < 0", 1e-3f, -0.1f, 0.999f, 1e-8f, 0},
        {"beta2 = 1", 1e-3f, 0.9f, 1.0f, 1e-8f, 0},
        {"beta2 > 1", 1e-3f, 0.9f, 1.5f, 1e-8f, 0},
        {"negative eps", 1e-3f, 0.9f, 0.999f, -1e-8f, 0},
        {"negative weight decay", 1e-3f, 0.9f, 0.999f, 1e-8f, -0.01f},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        xg_adam_options o = d;
        o.lr = cases[i].lr;
        o.beta1 = cases[i].beta1;
        o.beta2 = cases[i].beta2;
        o.eps = cases[i].eps;
        o.weight_decay = cases[i].wd;
        xg_clear_error();
        expect_rejected(xg_optim_adam(&p, 1, &o), cases[i].what);
        char w[80];
        snprintf(w, sizeof w, "adamw: %s", cases[i].what);
        xg_clear_error();
        expect_rejected(xg_optim_adamw(&p, 1, &o), w);
    }
}

Test(optim, unknown_module_optimizer_kind_rejected)
{
    xg_module *m = xg_linear(2, 2, false);
    cr_assert_not_null(m);
    xg_clear_error();
    expect_rejected(xg_optim_for_module(m, "rmsprop", 0.1f),
                    "kind \"rmsprop\"");
    xg_clear_error();
    expect_rejected(xg_optim_for_module(m, "sgd", -0.1f), "negative lr");
    xg_module_free(m);
}

/* ---- gradient clipping ------------------------------------------------- */

Test(optim, clip_grad_norm_scales_to_max)
{
    /* grads [3,4] and [12]: global norm sqrt(9 + 16 + 144) = 13 */
    xg_tensor *a = tu_param(xg_zeros(XG_SHAPE(2)));
    xg_tensor *b = tu_param(xg_zeros(XG_SHAPE(1)));
    xg_tensor *none = tu_param(xg_zeros(XG_SHAPE(3))); /* no grad */
    set_grad(a, (const float[]){3, 4});
    set_grad(b, (const float[]){12});
    xg_tensor *ps[3] = {a, none, b};
    float norm = 0;
    cr_assert_eq(xg_clip_grad_norm(ps, 3, 6.5f, &norm), XG_OK, "%s",
                 xg_last_error());
    cr_expect_float_eq(norm, 13.0f, 1e-5, "norm before clipping: %g", norm);
    double coef = 6.5 / (13 + 1e-6);
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2),
                     (const double[]){3 * coef, 4 * coef}, 1e-6, 1e-6,
                     "clipped grad a");
    tu_assert_values(xg_tensor_grad(b), XG_SHAPE(1),
                     (const double[]){12 * coef}, 1e-6, 1e-6,
                     "clipped grad b");
    cr_expect_null(xg_tensor_grad(none), "clipping makes no gradient");
}

Test(optim, clip_grad_norm_below_max_is_untouched)
{
    xg_tensor *a = tu_param(xg_zeros(XG_SHAPE(2)));
    set_grad(a, (const float[]){3, 4});
    float norm = 0;
    cr_assert_eq(xg_clip_grad_norm(&a, 1, 100, &norm), XG_OK);
    cr_expect_float_eq(norm, 5.0f, 1e-6);
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2), (const double[]){3, 4},
                     0, 0, "a norm below max_norm leaves grads alone");
    /* total_norm is optional */
    cr_assert_eq(xg_clip_grad_norm(&a, 1, 1, NULL), XG_OK);
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2),
                     (const double[]){3 / (5 + 1e-6), 4 / (5 + 1e-6)}, 1e-6,
                     1e-6, "clipped to norm 1");
}

/* ---- schedules --------------------------------------------------------- */

Test(sched, step_lr)
{
    /* base * gamma^floor(step / step_size) */
    const struct {
        int64_t step;
        double want;
    } c[] = {{0, 0.1}, {9, 0.1}, {10, 0.05}, {19, 0.05}, {25, 0.025},
             {100, 0.1 * pow(0.5, 10)}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        float got = xg_lr_step(0.1f, c[i].step, 10, 0.5f);
        cr_expect(tu_close(got, c[i].want, 1e-9, 1e-6),
                  "xg_lr_step(0.1, %" PRId64 ", 10, 0.5) = %.9g, expected "
                  "%.9g", c[i].step, got, c[i].want);
    }
}

static double ref_cosine(double base, int64_t step, int64_t warmup,
                         int64_t total, double min_lr)
{
    if (step < warmup)
        return base * (double)(step + 1) / (double)warmup;
    double p = (double)(step - warmup) / (double)(total - warmup);
    p = p < 0 ? 0 : (p > 1 ? 1 : p);
    return min_lr + (base - min_lr) * (1 + cos(M_PI * p)) / 2;
}

Test(sched, negative_steps_count_as_step_zero)
{
    for (int64_t s = -3; s < 0; s++) {
        cr_expect_eq(xg_lr_cosine(1.0f, s, 10, 110, 0.1f),
                     xg_lr_cosine(1.0f, 0, 10, 110, 0.1f), "warmup, step %"
                     PRId64, s);
        cr_expect_eq(xg_lr_cosine(1.0f, s, 0, 110, 0.1f), 1.0f,
                     "no warmup, step %" PRId64, s);
        cr_expect_eq(xg_lr_step(1.0f, s, 2, 0.5f), 1.0f);
    }
    cr_expect_eq(xg_lr_cosine(1.0f, INT64_MIN, 10, 110, 0.1f), 0.1f);
}

Test(sched, cosine_with_warmup)
{
    /* hand values: base 1, warmup 10, total 110, min 0.1 */
    const struct {
        int64_t step;
        double want;
    } c[] = {{0, 0.1}, {4, 0.5}, {9, 1.0}, {10, 1.0}, {60, 0.55},
             {110, 0.1}, {500, 0.1}};
    for (size_t i = 0; i < sizeof c / sizeof c[0]; i++) {
        float got = xg_lr_cosine(1.0f, c[i].step, 10, 110, 0.1f);
        cr_expect(tu_close(got, c[i].want, 1e-7, 1e-6),
                  "xg_lr_cosine(1, %" PRId64 ", 10, 110, 0.1) = %.9g, "
                  "expected %.9g", c[i].step, got, c[i].want);
    }
    /* a sweep against the formula, with and without warmup */
    for (int64_t s = 0; s < 140; s += 7) {
        float got = xg_lr_cosine(3e-4f, s, 5, 128, 1e-5f);
        double want = ref_cosine(3e-4, s, 5, 128, 1e-5);
        cr_expect(tu_close(got, want, 1e-10, 1e-5),
                  "cosine step %" PRId64 ": %.9g vs %.9g", s, got, want);
        got = xg_lr_cosine(0.1f, s, 0, 100, 0);
        want = ref_cosine(0.1, s, 0, 100, 0);
        cr_expect(tu_close(got, want, 1e-9, 1e-5),
                  "cosine (no warmup) step %" PRId64 ": %.9g vs %.9g", s, got,
                  want);
    }
}

/* A parameter given twice would be updated twice per step. */
Test(optim, a_parameter_given_twice_is_refused)
{
    xg_tensor *p = tu_f32((const float[]){1, 2}, XG_SHAPE(2));
    cr_assert_eq(xg_tensor_set_requires_grad(p, true), XG_OK);
    xg_tensor *twice[3] = {p, tu_f32((const float[]){3}, XG_SHAPE(1)), p};
    cr_assert_eq(xg_tensor_set_requires_grad(twice[1], true), XG_OK);
    xg_sgd_options o = xg_sgd_defaults();
    cr_expect_null(xg_optim_sgd(twice, 3, &o));
    cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    cr_expect(strstr(xg_last_error(), "parameter 2 is parameter 0") != NULL,
              "%s", xg_last_error());
    xg_adam_options a = xg_adam_defaults();
    cr_expect_null(xg_optim_adam(twice, 3, &a));
    a = xg_adamw_defaults();
    cr_expect_null(xg_optim_adamw(twice, 3, &a));
    xg_optim *fine = xg_optim_sgd(twice, 2, &o);
    cr_expect_not_null(fine, "distinct ones are fine: %s", xg_last_error());
    xg_optim_free(fine);
}
