/* Gradient checks on the CPU reference: for every differentiable op, the
 * gradient from xg_backward is compared with central finite differences.
 *
 * The scalar loss is L = sum(out * w) with fixed random weights w, so the
 * whole Jacobian is exercised (not just its column sums). The finite
 * differences perturb one input element at a time with xg_tensor_write
 * (not recorded), run the op in no-grad mode, and accumulate sum(out * w)
 * in double on the host from the f32 outputs. */
#include "test_util.h"

TestSuite(grad, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(autograd, .init = tu_init_scope, .fini = tu_fini_scope);

/* Parameters of the function under test. */
typedef struct gc_ctx {
    int axis;
    bool keepdim, ta, tb;
    int perm[XG_MAX_DIMS];
    int nperm;
    float s;
    int64_t shape[XG_MAX_DIMS];
    int ndim;
} gc_ctx;

typedef xg_tensor *(*gc_fn)(xg_tensor *const *in, const gc_ctx *c);

#define GC_EPS 1e-2
#define GC_ATOL 1e-3
#define GC_RTOL 1e-2

/* sum(out * w) in double, computed on the host from one forward pass. */
static double gc_eval(gc_fn f, const gc_ctx *c, xg_tensor *const *in,
                      const float *w, int64_t nout, const char *what)
{
    xg_scope *s = xg_scope_begin();
    cr_assert_not_null(s);
    xg_tensor *out = f(in, c);
    cr_assert_not_null(out, "%s: forward failed in no-grad mode: %s", what,
                       xg_last_error());
    cr_assert_eq(xg_tensor_numel(out), nout);
    float *y = tu_read(out);
    double l = 0;
    for (int64_t i = 0; i < nout; i++)
        l += (double)y[i] * w[i];
    free(y);
    xg_scope_end(s);
    return l;
}

/* Checks d(sum(f(in) * w))/d(in[i]) for every input that requires grad. */
static void gradcheck_eps(const char *what, gc_fn f, const gc_ctx *c,
                          xg_tensor *const *in, int n_in, double eps,
                          double atol, double rtol)
{
    for (int i = 0; i < n_in; i++)
        xg_tensor_zero_grad(in[i]);

    /* analytic gradients */
    xg_scope *s = xg_scope_begin();
    cr_assert_not_null(s);
    xg_tensor *out = f(in, c);
    cr_assert_not_null(out, "%s: forward failed: %s", what, xg_last_error());
    cr_assert(xg_tensor_requires_grad(out),
              "%s: the output of an op on inputs that require grad must "
              "require grad", what);
    int64_t nout = xg_tensor_numel(out);
    float *w = malloc((size_t)nout * sizeof *w);
    tu_fill(w, nout, 0xC0FFEEu + (uint64_t)nout, -1, 1);
    xg_tensor *wt = tu_f32(w, xg_tensor_shape(out), xg_tensor_ndim(out));
    xg_tensor *loss = xg_sum_all(xg_mul(out, wt));
    cr_assert_not_null(loss, "%s: loss: %s", what, xg_last_error());
    xg_status st = xg_backward(loss);
    cr_assert_eq(st, XG_OK, "%s: backward: %s (%s)", what, xg_status_str(st),
                 xg_last_error());
    xg_scope_end(s);

    bool prev = xg_set_grad_enabled(false);
    for (int i = 0; i < n_in; i++) {
        if (!xg_tensor_requires_grad(in[i]))
            continue;
        xg_tensor *g = xg_tensor_grad(in[i]);
        char gwhat[200];
        snprintf(gwhat, sizeof gwhat, "%s: grad of input %d", what, i);
        cr_assert_not_null(g, "%s is NULL after backward", gwhat);
        tu_assert_shape(g, xg_tensor_shape(in[i]), xg_tensor_ndim(in[i]),
                        gwhat);
        float *ga = tu_read(g);
        float *x = tu_read(in[i]);
        int64_t n = xg_tensor_numel(in[i]);
        size_t bytes = (size_t)n * sizeof *x;
        for (int64_t j = 0; j < n; j++) {
            float orig = x[j];
            float xp = (float)(orig + eps), xm = (float)(orig - eps);
            x[j] = xp;
            cr_assert_eq(xg_tensor_write(in[i], x, bytes), XG_OK);
            double lp = gc_eval(f, c, in, w, nout, what);
            x[j] = xm;
            cr_assert_eq(xg_tensor_write(in[i], x, bytes), XG_OK);
            double lm = gc_eval(f, c, in, w, nout, what);
            x[j] = orig;
            cr_assert_eq(xg_tensor_write(in[i], x, bytes), XG_OK);
            double num = (lp - lm) / ((double)xp - (double)xm);
            if (!tu_close(ga[j], num, atol, rtol)) {
                double a = ga[j];
                free(ga);
                free(x);
                free(w);
                xg_set_grad_enabled(prev);
                cr_assert_fail("%s, element %" PRId64 " of %" PRId64
                               ": analytic %.7g, numeric %.7g (x = %g)",
                               gwhat, j, n, a, num, (double)orig);
            }
        }
        free(ga);
        free(x);
    }
    xg_set_grad_enabled(prev);
    free(w);
}

static void gradcheck(const char *what, gc_fn f, const gc_ctx *c,
                      xg_tensor *const *in, int n_in)
{
    gradcheck_eps(what, f, c, in, n_in, GC_EPS, GC_ATOL, GC_RTOL);
}

/* Leaf tensors with values in [lo, hi), magnitudes in [lo, hi) with random
 * sign, or distinct values spaced `gap` apart. */
static xg_tensor *leaf(const int64_t *shape, int ndim, uint64_t seed,
                       double lo, double hi)
{
    return tu_param(tu_rand(shape, ndim, seed, lo, hi));
}

static xg_tensor *leaf_signed(const int64_t *shape, int ndim, uint64_t seed,
                              double lo, double hi)
{
    int64_t n = tu_numel(shape, ndim);
    float *v = malloc((size_t)n * sizeof *v);
    tu_fill_signed(v, n, seed, lo, hi);
    xg_tensor *t = tu_param(tu_f32(v, shape, ndim));
    free(v);
    return t;
}

static xg_tensor *leaf_distinct(const int64_t *shape, int ndim,
                                uint64_t seed, double gap)
{
    int64_t n = tu_numel(shape, ndim);
    float *v = malloc((size_t)n * sizeof *v);
    tu_fill_distinct(v, n, seed, gap);
    xg_tensor *t = tu_param(tu_f32(v, shape, ndim));
    free(v);
    return t;
}

static const int64_t scalar_shape[1] = {0};

/* ---- the functions under test ------------------------------------------ */

static xg_tensor *f_add(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_add(in[0], in[1]); }
static xg_tensor *f_sub(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_sub(in[0], in[1]); }
static xg_tensor *f_mul(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_mul(in[0], in[1]); }
static xg_tensor *f_div(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_div(in[0], in[1]); }
static xg_tensor *f_add_s(xg_tensor *const *in, const gc_ctx *c)
{ return xg_add_scalar(in[0], c->s); }
static xg_tensor *f_sub_s(xg_tensor *const *in, const gc_ctx *c)
{ return xg_sub_scalar(in[0], c->s); }
static xg_tensor *f_mul_s(xg_tensor *const *in, const gc_ctx *c)
{ return xg_mul_scalar(in[0], c->s); }
static xg_tensor *f_div_s(xg_tensor *const *in, const gc_ctx *c)
{ return xg_div_scalar(in[0], c->s); }
static xg_tensor *f_neg(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_neg(in[0]); }
static xg_tensor *f_exp(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_exp(in[0]); }
static xg_tensor *f_log(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_log(in[0]); }
static xg_tensor *f_sqrt(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_sqrt(in[0]); }
static xg_tensor *f_relu(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_relu(in[0]); }
static xg_tensor *f_sigmoid(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_sigmoid(in[0]); }
static xg_tensor *f_tanh(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_tanh(in[0]); }
static xg_tensor *f_gelu(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_gelu(in[0]); }
static xg_tensor *f_silu(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_silu(in[0]); }
static xg_tensor *f_gelu_tanh(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_gelu_tanh(in[0]); }
static xg_tensor *f_matmul(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_matmul(in[0], in[1]); }
static xg_tensor *f_matmul_t(xg_tensor *const *in, const gc_ctx *c)
{ return xg_matmul_t(in[0], in[1], c->ta, c->tb); }
static xg_tensor *f_sum(xg_tensor *const *in, const gc_ctx *c)
{ return xg_sum(in[0], c->axis, c->keepdim); }
static xg_tensor *f_mean(xg_tensor *const *in, const gc_ctx *c)
{ return xg_mean(in[0], c->axis, c->keepdim); }
static xg_tensor *f_max(xg_tensor *const *in, const gc_ctx *c)
{ return xg_max(in[0], c->axis, c->keepdim); }
static xg_tensor *f_sum_all(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_sum_all(in[0]); }
static xg_tensor *f_mean_all(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_mean_all(in[0]); }
static xg_tensor *f_max_all(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_max_all(in[0]); }
static xg_tensor *f_softmax(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_softmax(in[0]); }
static xg_tensor *f_log_softmax(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_log_softmax(in[0]); }
static xg_tensor *f_ce(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_cross_entropy(in[0], in[1]); }
static xg_tensor *f_mse(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_mse_loss(in[0], in[1]); }
static xg_tensor *f_reshape(xg_tensor *const *in, const gc_ctx *c)
{ return xg_reshape(in[0], c->shape, c->ndim); }
static xg_tensor *f_permute(xg_tensor *const *in, const gc_ctx *c)
{ return xg_permute(in[0], c->perm, c->nperm); }
static xg_tensor *f_transpose(xg_tensor *const *in, const gc_ctx *c)
{ return xg_transpose(in[0], c->perm[0], c->perm[1]); }
static xg_tensor *f_index_select(xg_tensor *const *in, const gc_ctx *c)
{ return xg_index_select(in[0], c->axis, in[1]); }
static xg_tensor *f_gather(xg_tensor *const *in, const gc_ctx *c)
{ return xg_gather(in[0], c->axis, in[1]); }
static xg_tensor *f_where(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_where(in[0], in[1], in[2]); }
static xg_tensor *f_masked_fill(xg_tensor *const *in, const gc_ctx *c)
{ return xg_masked_fill(in[0], in[1], c->s); }
/* x * x + x: one leaf reached along several paths */
static xg_tensor *f_square_plus(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_add(xg_mul(in[0], in[0]), in[0]); }
/* relu(x W^T + b) then cross entropy with labels in[3] */
static xg_tensor *f_chain(xg_tensor *const *in, const gc_ctx *c)
{
    (void)c;
    xg_tensor *h = xg_add(xg_matmul_t(in[0], in[1], false, true), in[2]);
    return xg_cross_entropy(xg_relu(h), in[3]);
}

/* ---- elementwise ------------------------------------------------------- */

typedef struct bin_case {
    const char *name;
    gc_fn f;
} bin_case;

static void check_binary_shapes(const int64_t *as, int an, const int64_t *bs,
                                int bn, uint64_t seed)
{
    static const bin_case ops[] = {
        {"add", f_add}, {"sub", f_sub}, {"mul", f_mul}, {"div", f_div}};
    for (size_t k = 0; k < sizeof ops / sizeof ops[0]; k++) {
        xg_tensor *in[2];
        in[0] = leaf(as, an, seed + k, -1.5, 1.5);
        /* keep divisors away from zero */
        in[1] = ops[k].f == f_div ? leaf_signed(bs, bn, seed + 50 + k, 0.5, 2)
                                  : leaf(bs, bn, seed + 50 + k, -1.5, 1.5);
        char what[160];
        snprintf(what, sizeof what, "%s(%s, %s)", ops[k].name,
                 tu_shape_str(as, an), tu_shape_str(bs, bn));
        gradcheck(what, ops[k].f, NULL, in, 2);
    }
}

Test(grad, binary_same_shape)
{
    check_binary_shapes(XG_SHAPE(2, 3), XG_SHAPE(2, 3), 1);
}

Test(grad, binary_row_broadcast)
{
    check_binary_shapes(XG_SHAPE(2, 3), XG_SHAPE(3), 10);
    check_binary_shapes(XG_SHAPE(3), XG_SHAPE(2, 3), 20);
}

Test(grad, binary_outer_broadcast)
{
    check_binary_shapes(XG_SHAPE(2, 1), XG_SHAPE(1, 3), 30);
    check_binary_shapes(XG_SHAPE(1, 3), XG_SHAPE(1, 1), 40);
}

Test(grad, binary_scalar_shaped)
{
    check_binary_shapes(XG_SHAPE(2, 2), scalar_shape, 0, 50);
    check_binary_shapes(scalar_shape, 0, XG_SHAPE(3), 60);
    check_binary_shapes(scalar_shape, 0, scalar_shape, 0, 70);
}

Test(grad, binary_4d_broadcast)
{
    check_binary_shapes(XG_SHAPE(2, 1, 3, 1), XG_SHAPE(1, 2, 1, 2), 80);
    check_binary_shapes(XG_SHAPE(2, 3, 1), XG_SHAPE(2, 1, 1, 4), 90);
}

Test(grad, same_leaf_on_several_paths)
{
    xg_tensor *in[1] = {leaf(XG_SHAPE(2, 3), 100, -1, 1)};
    gradcheck("x*x + x", f_square_plus, NULL, in, 1);
    xg_tensor *in2[2] = {in[0], in[0]};
    gradcheck("mul(x, x)", f_mul, NULL, in2, 2);
    gradcheck("div(x, x)", f_div, NULL, in2, 2);
}

Test(grad, scalar_variants)
{
    xg_tensor *in[1] = {leaf(XG_SHAPE(3, 2), 110, -2, 2)};
    gc_ctx c = {.s = -1.5f};
    gradcheck("add_scalar", f_add_s, &c, in, 1);
    gradcheck("sub_scalar", f_sub_s, &c, in, 1);
    gradcheck("mul_scalar", f_mul_s, &c, in, 1);
    c.s = 2.5f;
    gradcheck("div_scalar", f_div_s, &c, in, 1);
}

Test(grad, unary)
{
    xg_tensor *x = leaf(XG_SHAPE(2, 5), 120, -2, 2);
    xg_tensor *pos = leaf(XG_SHAPE(2, 5), 121, 0.5, 2.5);
    xg_tensor *off0 = leaf_signed(XG_SHAPE(2, 5), 122, 0.1, 1.5);
    gradcheck("neg", f_neg, NULL, &x, 1);
    gradcheck("exp", f_exp, NULL, &x, 1);
    gradcheck("log", f_log, NULL, &pos, 1);
    gradcheck("sqrt", f_sqrt, NULL, &pos, 1);
    gradcheck("relu (|x| >= 0.1)", f_relu, NULL, &off0, 1);
    gradcheck("sigmoid", f_sigmoid, NULL, &x, 1);
    gradcheck("tanh", f_tanh, NULL, &x, 1);
    gradcheck("gelu", f_gelu, NULL, &x, 1);
    gradcheck("gelu near 0", f_gelu, NULL, &off0, 1);
    gradcheck("silu", f_silu, NULL, &x, 1);
    gradcheck("silu near 0", f_silu, NULL, &off0, 1);
    gradcheck("gelu_tanh", f_gelu_tanh, NULL, &x, 1);
    gradcheck("gelu_tanh near 0", f_gelu_tanh, NULL, &off0, 1);
}

/* ---- matmul ------------------------------------------------------------ */

static void check_mm(const int64_t *as, int an, bool ta, const int64_t *bs,
                     int bn, bool tb, uint64_t seed)
{
    xg_tensor *in[2] = {leaf(as, an, seed, -1, 1),
                        leaf(bs, bn, seed + 1, -1, 1)};
    gc_ctx c = {.ta = ta, .tb = tb};
    char what[160];
    snprintf(what, sizeof what, "matmul %s%s x %s%s", tu_shape_str(as, an),
             ta ? "^T" : "", tu_shape_str(bs, bn), tb ? "^T" : "");
    gradcheck(what, (ta || tb) ? f_matmul_t : f_matmul, &c, in, 2);
}

Test(grad, matmul_2d_and_flags)
{
    check_mm(XG_SHAPE(3, 4), false, XG_SHAPE(4, 2), false, 200);
    check_mm(XG_SHAPE(4, 3), true, XG_SHAPE(4, 2), false, 202);
    check_mm(XG_SHAPE(3, 4), false, XG_SHAPE(2, 4), true, 204);
    check_mm(XG_SHAPE(4, 3), true, XG_SHAPE(2, 4), true, 206);
}

Test(grad, matmul_1d)
{
    check_mm(XG_SHAPE(4), false, XG_SHAPE(4), false, 210);
    check_mm(XG_SHAPE(3, 4), false, XG_SHAPE(4), false, 212);
    check_mm(XG_SHAPE(4), false, XG_SHAPE(4, 2), false, 214);
    check_mm(XG_SHAPE(2, 3, 4), false, XG_SHAPE(4), false, 216);
    check_mm(XG_SHAPE(4), false, XG_SHAPE(2, 4, 3), false, 218);
}

Test(grad, matmul_batched_broadcast)
{
    /* the gradient of a matrix broadcast over the batch sums over it */
    check_mm(XG_SHAPE(2, 3, 4), false, XG_SHAPE(4, 5), false, 220);
    check_mm(XG_SHAPE(3, 4), false, XG_SHAPE(2, 4, 5), false, 222);
    check_mm(XG_SHAPE(2, 1, 3, 4), false, XG_SHAPE(3, 4, 2), false, 224);
    check_mm(XG_SHAPE(2, 4, 3), true, XG_SHAPE(2, 5, 4), true, 226);
    check_mm(XG_SHAPE(2, 1, 4, 3), true, XG_SHAPE(3, 4, 2), false, 228);
    check_mm(XG_SHAPE(3, 4), false, XG_SHAPE(2, 2, 5, 4), true, 230);
}

/* ---- reductions -------------------------------------------------------- */

Test(grad, sum_mean_each_axis_keepdim)
{
    xg_tensor *x = leaf(XG_SHAPE(2, 3, 4), 300, -1, 1);
    const int axes[] = {0, 1, 2, -1, -3};
    for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++)
        for (int kd = 0; kd < 2; kd++) {
            gc_ctx c = {.axis = axes[i], .keepdim = kd};
            char what[80];
            snprintf(what, sizeof what, "sum axis %d keepdim %d", axes[i], kd);
            gradcheck(what, f_sum, &c, &x, 1);
            snprintf(what, sizeof what, "mean axis %d keepdim %d", axes[i],
                     kd);
            gradcheck(what, f_mean, &c, &x, 1);
        }
    gradcheck("sum_all", f_sum_all, NULL, &x, 1);
    gradcheck("mean_all", f_mean_all, NULL, &x, 1);
}

Test(grad, max_each_axis_keepdim)
{
    /* distinct values 0.1 apart: perturbations of 0.01 never change which
     * element is the maximum */
    xg_tensor *x = leaf_distinct(XG_SHAPE(2, 3, 4), 310, 0.1);
    const int axes[] = {0, 1, 2, -2};
    for (size_t i = 0; i < sizeof axes / sizeof axes[0]; i++)
        for (int kd = 0; kd < 2; kd++) {
            gc_ctx c = {.axis = axes[i], .keepdim = kd};
            char what[80];
            snprintf(what, sizeof what, "max axis %d keepdim %d", axes[i], kd);
            gradcheck(what, f_max, &c, &x, 1);
        }
    gradcheck("max_all", f_max_all, NULL, &x, 1);
}

Test(grad, reduce_size_one_axis)
{
    xg_tensor *x = leaf_distinct(XG_SHAPE(3, 1, 2), 320, 0.1);
    gc_ctx c = {.axis = 1, .keepdim = false};
    gradcheck("sum over size-1 axis", f_sum, &c, &x, 1);
    gradcheck("max over size-1 axis", f_max, &c, &x, 1);
    c.keepdim = true;
    gradcheck("mean over size-1 axis keepdim", f_mean, &c, &x, 1);
}

/* ---- softmax and losses ------------------------------------------------ */

Test(grad, softmax_log_softmax)
{
    xg_tensor *x = leaf(XG_SHAPE(3, 5), 400, -2, 2);
    gradcheck("softmax [3,5]", f_softmax, NULL, &x, 1);
    gradcheck("log_softmax [3,5]", f_log_softmax, NULL, &x, 1);
    xg_tensor *y = leaf(XG_SHAPE(2, 2, 4), 401, -2, 2);
    gradcheck("softmax [2,2,4]", f_softmax, NULL, &y, 1);
    gradcheck("log_softmax [2,2,4]", f_log_softmax, NULL, &y, 1);
}

Test(grad, cross_entropy)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(4, 5), 410, -2, 2),
                        tu_i32((const int32_t[]){3, 0, 4, 3}, XG_SHAPE(4))};
    gradcheck("cross_entropy [4,5]", f_ce, NULL, in, 2);
    cr_expect_null(xg_tensor_grad(in[1]), "integer labels get no gradient");
}

/* ---- cross_entropy with ignored rows, embedding ------------------------- */

static xg_tensor *f_ce_ignore(xg_tensor *const *in, const gc_ctx *c)
{ return xg_cross_entropy_ignore(in[0], in[1], c->axis); }
static xg_tensor *f_embedding(xg_tensor *const *in, const gc_ctx *c)
{ (void)c; return xg_embedding(in[0], in[1]); }
/* An embedding weight tied to the output projection (GPT-2's head):
 * cross_entropy(tanh(embedding(W, tokens)) W^T, targets). */
static xg_tensor *f_tied(xg_tensor *const *in, const gc_ctx *c)
{
    (void)c;
    xg_tensor *h = xg_tanh(xg_embedding(in[0], in[1]));
    return xg_cross_entropy(xg_matmul_t(h, in[0], false, true), in[2]);
}

Test(grad, cross_entropy_ignored_rows)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(5, 4), 411, -2, 2),
                        tu_i32((const int32_t[]){3, -100, 0, -100, 2},
                               XG_SHAPE(5))};
    gradcheck("cross_entropy [5,4], rows 1 and 3 labelled -100", f_ce_ignore,
              &(gc_ctx){.axis = XG_IGNORE_INDEX}, in, 2);
    xg_tensor *in2[2] = {in[0], tu_i32((const int32_t[]){1, 3, 1, 0, 1},
                                       XG_SHAPE(5))};
    gradcheck("cross_entropy [5,4], ignore_index 1 (three rows)",
              f_ce_ignore, &(gc_ctx){.axis = 1}, in2, 2);
}

Test(grad, embedding)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(6, 3), 412, -2, 2),
                        tu_i32((const int32_t[]){4, 1, 4, 0, 4, 5, 1, 4},
                               XG_SHAPE(2, 4))};
    gradcheck("embedding [6,3], index [2,4] with repeats", f_embedding, NULL,
              in, 2);
    xg_tensor *in0[2] = {in[0], tu_i32((const int32_t[]){2}, NULL, 0)};
    gradcheck("embedding [6,3], 0-D index", f_embedding, NULL, in0, 2);
}

Test(grad, embedding_weight_tied_to_the_projection)
{
    xg_tensor *in[3] = {leaf(XG_SHAPE(5, 3), 413, -1, 1),
                        tu_i32((const int32_t[]){2, 0, 2, 4}, XG_SHAPE(4)),
                        tu_i32((const int32_t[]){0, -100, 3, 2}, XG_SHAPE(4))};
    gradcheck("cross_entropy(tanh(emb(W)) W^T): W used twice", f_tied, NULL,
              in, 3);
}

Test(grad, mse_loss)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(3, 4), 420, -1, 1),
                        leaf(XG_SHAPE(3, 4), 421, -1, 1)};
    gradcheck("mse_loss same shape", f_mse, NULL, in, 2);
    xg_tensor *in2[2] = {in[0], leaf(XG_SHAPE(4), 422, -1, 1)};
    gradcheck("mse_loss broadcast target", f_mse, NULL, in2, 2);
}

/* ---- shape ops --------------------------------------------------------- */

/* Views: narrow, select, expand, squeeze, unsqueeze, and chains of views
 * that kernels read through their contiguous copies. ctx: axis, shape[0]
 * (start or index), shape[1] (length). */
static xg_tensor *f_narrow(xg_tensor *const *in, const gc_ctx *c)
{ return xg_narrow(in[0], c->axis, c->shape[0], c->shape[1]); }
static xg_tensor *f_select(xg_tensor *const *in, const gc_ctx *c)
{ return xg_select(in[0], c->axis, c->shape[0]); }
static xg_tensor *f_expand(xg_tensor *const *in, const gc_ctx *c)
{ return xg_expand(in[0], c->shape, c->ndim); }
static xg_tensor *f_squeeze_unsqueeze(xg_tensor *const *in, const gc_ctx *c)
{ return xg_unsqueeze(xg_squeeze(in[0], c->axis), 0); }
/* matmul(narrow(transpose(a)), b) then a permute, then contiguous. */
static xg_tensor *f_view_chain(xg_tensor *const *in, const gc_ctx *c)
{
    (void)c;
    xg_tensor *at = xg_narrow(xg_transpose(in[0], 0, 1), 0, 1, 3);
    return xg_contiguous(xg_transpose(xg_matmul(at, in[1]), 0, 1));
}

/* concat of a transposed view and a tensor, then split and chunk pieces
 * recombined: every gradient flows back through views and copies. */
static xg_tensor *f_concat(xg_tensor *const *in, const gc_ctx *c)
{
    (void)c;
    xg_tensor *parts[2] = {xg_transpose(in[0], 0, 1), in[1]};
    xg_tensor *cat = xg_concat(parts, 2, 1);      /* [3, 2 + 4] */
    xg_tensor *sp[2], *ch[3];
    int n = 0;
    if (xg_split(cat, 1, XG_SHAPE(1, 5), sp) != XG_OK ||
        xg_chunk(sp[1], 3, 1, ch, &n) != XG_OK || n != 3)
        return NULL;
    xg_tensor *st[2] = {xg_mul(ch[0], ch[2]), ch[1]};
    return xg_add(xg_stack(st, 2, 0), sp[0]);
}

Test(grad, concat_stack_split_chunk)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(2, 3), 520, -1, 1),
                        leaf(XG_SHAPE(3, 4), 521, -1, 1)};
    gradcheck("concat, split, chunk, stack", f_concat, NULL, in, 2);
}

Test(grad, views)
{
    xg_tensor *x = leaf(XG_SHAPE(2, 3, 4), 510, -1, 1);
    gc_ctx n1 = {.axis = 1, .shape = {1, 2}};
    gradcheck("narrow axis 1 [1:3]", f_narrow, &n1, &x, 1);
    gc_ctx n2 = {.axis = -1, .shape = {3, 1}};
    gradcheck("narrow last axis [3:4]", f_narrow, &n2, &x, 1);
    gc_ctx s1 = {.axis = -1, .shape = {2}};
    gradcheck("select axis -1 index 2", f_select, &s1, &x, 1);
    gc_ctx s2 = {.axis = 0, .shape = {-1}};
    gradcheck("select axis 0 index -1", f_select, &s2, &x, 1);
    xg_tensor *col = leaf(XG_SHAPE(3, 1), 511, -1, 1);
    gc_ctx e = {.shape = {2, 3, 4}, .ndim = 3};
    gradcheck("expand [3,1] to [2,3,4]", f_expand, &e, &col, 1);
    xg_tensor *y = leaf(XG_SHAPE(2, 1, 4), 512, -1, 1);
    gc_ctx q = {.axis = 1};
    gradcheck("squeeze(1) then unsqueeze(0)", f_squeeze_unsqueeze, &q, &y, 1);
    xg_tensor *ab[2] = {leaf(XG_SHAPE(5, 4), 513, -1, 1),
                        leaf(XG_SHAPE(5, 2), 514, -1, 1)};
    gradcheck("matmul of a narrowed transpose, permuted", f_view_chain, NULL,
              ab, 2);
}

Test(grad, reshape_permute_transpose)
{
    xg_tensor *x = leaf(XG_SHAPE(2, 3, 4), 500, -1, 1);
    gc_ctx r = {.shape = {4, -1}, .ndim = 2};
    gradcheck("reshape [4,-1]", f_reshape, &r, &x, 1);
    gc_ctx p = {.perm = {2, 0, 1}, .nperm = 3};
    gradcheck("permute {2,0,1}", f_permute, &p, &x, 1);
    gc_ctx p2 = {.perm = {1, 2, 0}, .nperm = 3};
    gradcheck("permute {1,2,0}", f_permute, &p2, &x, 1);
    gc_ctx t = {.perm = {0, 2}};
    gradcheck("transpose(0,2)", f_transpose, &t, &x, 1);
    gc_ctx t2 = {.perm = {-1, -2}};
    gradcheck("transpose(-1,-2)", f_transpose, &t2, &x, 1);
}

/* ---- indexing and selection -------------------------------------------- */

Test(grad, index_select_repeats_and_axes)
{
    xg_tensor *x = leaf(XG_SHAPE(3, 4, 2), 700, -1, 1);
    /* repeated and skipped positions along each axis */
    xg_tensor *in0[2] = {x, tu_i32((const int32_t[]){2, 0, 2, 2},
                                   XG_SHAPE(4))};
    gradcheck("index_select axis 0", f_index_select, &(gc_ctx){.axis = 0},
              in0, 2);
    xg_tensor *in1[2] = {x, tu_i32((const int32_t[]){3, 1, 3}, XG_SHAPE(3))};
    gradcheck("index_select axis 1", f_index_select, &(gc_ctx){.axis = 1},
              in1, 2);
    xg_tensor *in2[2] = {x, tu_i32((const int32_t[]){1, 1, 0, 1, 1},
                                   XG_SHAPE(5))};
    gradcheck("index_select axis -1", f_index_select, &(gc_ctx){.axis = -1},
              in2, 2);
}

Test(grad, gather_repeats_and_smaller_index)
{
    xg_tensor *x = leaf(XG_SHAPE(3, 4), 710, -1, 1);
    xg_tensor *in1[2] = {x, tu_i32((const int32_t[]){0, 3, 3, 3, 1, 1, 2, 0,
                                                     0, 2, 2, 2, 1, 0, 3},
                                   XG_SHAPE(3, 5))};
    gradcheck("gather axis 1", f_gather, &(gc_ctx){.axis = 1}, in1, 2);
    xg_tensor *in0[2] = {x, tu_i32((const int32_t[]){2, 2, 0, 1, 1, 1},
                                   XG_SHAPE(2, 3))};
    gradcheck("gather axis 0, index [2,3] of x [3,4]", f_gather,
              &(gc_ctx){.axis = 0}, in0, 2);
    xg_tensor *y = leaf(XG_SHAPE(2, 3, 2), 711, -1, 1);
    xg_tensor *in2[2] = {y, tu_i32((const int32_t[]){1, 0, 2, 2, 0, 0, 1, 1},
                                   XG_SHAPE(2, 2, 2))};
    gradcheck("gather axis 1 of [2,3,2]", f_gather, &(gc_ctx){.axis = 1},
              in2, 2);
}

Test(grad, where_with_broadcasting)
{
    xg_tensor *cond = tu_i32((const int32_t[]){1, 0, 3, 0, -1, 1},
                             XG_SHAPE(2, 3));
    xg_tensor *in[3] = {cond, leaf(XG_SHAPE(2, 3), 720, -1, 1),
                        leaf(XG_SHAPE(2, 3), 721, -1, 1)};
    gradcheck("where same shapes", f_where, NULL, in, 3);
    xg_tensor *in2[3] = {cond, leaf(XG_SHAPE(2, 1), 722, -1, 1),
                         leaf(XG_SHAPE(3), 723, -1, 1)};
    gradcheck("where a [2,1], b [3]", f_where, NULL, in2, 3);
    xg_tensor *in3[3] = {tu_i32((const int32_t[]){0, 1, 1}, XG_SHAPE(3)),
                         leaf(XG_SHAPE(2, 1), 724, -1, 1),
                         leaf(scalar_shape, 0, 725, -1, 1)};
    gradcheck("where cond [3], a [2,1], b 0-D", f_where, NULL, in3, 3);
}

Test(grad, masked_fill_with_broadcasting)
{
    xg_tensor *in[2] = {leaf(XG_SHAPE(2, 3), 730, -1, 1),
                        tu_i32((const int32_t[]){0, 1, 7}, XG_SHAPE(3))};
    gradcheck("masked_fill mask [3] on x [2,3]", f_masked_fill,
              &(gc_ctx){.s = -4.0f}, in, 2);
    xg_tensor *in2[2] = {leaf(XG_SHAPE(3), 731, -1, 1),
                         tu_i32((const int32_t[]){1, 0, 0, 0, 0, 1},
                                XG_SHAPE(2, 3))};
    gradcheck("masked_fill x [3] broadcast by mask [2,3]", f_masked_fill,
              &(gc_ctx){.s = 2.5f}, in2, 2);
}

/* ---- fused attention --------------------------------------------------- */

/* ctx: keepdim = causal, axis = causal_offset, s = dropout p (training,
 * the mask drawn after seeding 11, so every evaluation uses the same one),
 * shape[0] = scale * 1000 (0: 1 / sqrt(D)). */
static xg_tensor *f_attention(xg_tensor *const *in, const gc_ctx *c)
{
    xg_attention_params p = {.scale = (float)c->shape[0] / 1000.0f,
                             .causal = c->keepdim, .causal_offset = c->axis,
                             .dropout_p = c->s, .training = c->s > 0};
    xg_manual_seed(11);
    return xg_attention(in[0], in[1], in[2], &p);
}

static void gradcheck_attention(const char *what, int64_t b, int64_t h,
                                int64_t tq, int64_t tk, int64_t d,
                                const gc_ctx *c)
{
    xg_tensor *in[3] = {leaf(XG_SHAPE(b, h, tq, d), 700 + (uint64_t)tq, -1, 1),
                        leaf(XG_SHAPE(b, h, tk, d), 701 + (uint64_t)tk, -1, 1),
                        leaf(XG_SHAPE(b, h, tk, d), 702 + (uint64_t)d, -1, 1)};
    gradcheck(what, f_attention, c, in, 3);
}

Test(grad, attention)
{
    gradcheck_attention("attention causal [2,2,5,5,3]", 2, 2, 5, 5, 3,
                        &(gc_ctx){.keepdim = true});
    gradcheck_attention("attention not causal [1,2,4,6,3] scale 0.7", 1, 2,
                        4, 6, 3, &(gc_ctx){.shape = {700}});
    gradcheck_attention("attention KV cache [1,1,3,7,4] offset 4", 1, 1, 3,
                        7, 4, &(gc_ctx){.keepdim = true, .axis = 4});
    gradcheck_attention("attention rows seeing no key [1,1,5,5,2] offset -2",
                        1, 1, 5, 5, 2, &(gc_ctx){.keepdim = true, .axis = -2});
    gradcheck_attention("attention D=1 [1,3,6,6,1]", 1, 3, 6, 6, 1,
                        &(gc_ctx){.keepdim = true});
    gradcheck_attention("attention dropout p=0.3 [1,2,6,6,3]", 1, 2, 6, 6, 3,
                        &(gc_ctx){.keepdim = true, .s = 0.3f});
    gradcheck_attention("attention dropout p=0.5 not causal [2,1,4,5,2]", 2,
                        1, 4, 5, 2, &(gc_ctx){.s = 0.5f});
}

/* ---- layer norm ---------------------------------------------------------- */

/* layer_norm(x, weight, bias, eps = s) with in[1] and in[2] as given by
 * ctx.axis: bit 0 weight present, bit 1 bias present (taken from in[1],
 * in[2] in that order). */
static xg_tensor *f_layer_norm(xg_tensor *const *in, const gc_ctx *c)
{
    xg_tensor *w = c->axis & 1 ? in[1] : NULL;
    xg_tensor *b = c->axis & 2 ? in[1 + (c->axis & 1)] : NULL;
    return xg_layer_norm(in[0], w, b, c->s);
}

static void check_layer_norm(const int64_t *shape, int ndim, int affine,
                             float eps, uint64_t seed)
{
    int64_t cols = shape[ndim - 1];
    xg_tensor *in[3] = {leaf(shape, ndim, seed, -1.5, 1.5)};
    int n = 1;
    if (affine & 1)
        in[n++] = leaf(&cols, 1, seed + 1, 0.5, 1.5);
    if (affine & 2)
        in[n++] = leaf(&cols, 1, seed + 2, -1, 1);
    char what[160];
    snprintf(what, sizeof what, "layer_norm(x %s%s%s, eps %g)",
             tu_shape_str(shape, ndim), affine & 1 ? ", weight" : "",
             affine & 2 ? ", bias" : "", (double)eps);
    gradcheck(what, f_layer_norm, &(gc_ctx){.axis = affine, .s = eps}, in,
              n);
}

Test(grad, layer_norm_x_weight_bias)
{
    check_layer_norm(XG_SHAPE(3, 5), 3, 1e-5f, 700);
    check_layer_norm(XG_SHAPE(2, 3, 4), 3, 0.1f, 710);
    check_layer_norm(XG_SHAPE(1, 7), 3, 1e-5f, 720);
    check_layer_norm(XG_SHAPE(4, 1), 3, 1e-5f, 730); /* constant rows */
    check_layer_norm(XG_SHAPE(6), 3, 1e-5f, 735);    /* 1-D: one row */
}

Test(grad, layer_norm_without_weight_or_bias)
{
    check_layer_norm(XG_SHAPE(3, 5), 0, 1e-5f, 740);
    check_layer_norm(XG_SHAPE(3, 5), 1, 1e-5f, 750);
    check_layer_norm(XG_SHAPE(3, 5), 2, 1e-5f, 760);
}

Test(grad, layer_norm_weight_only_frozen_x)
{
    /* x does not require grad: only weight and bias get gradients */
    xg_tensor *in[3] = {tu_rand(XG_SHAPE(4, 6), 770, -2, 2),
                        leaf(XG_SHAPE(6), 771, 0.5, 1.5),
                        leaf(XG_SHAPE(6), 772, -1, 1)};
    gradcheck("layer_norm(frozen x [4,6], weight, bias)", f_layer_norm,
              &(gc_ctx){.axis = 3, .s = 1e-5f}, in, 3);
    cr_expect_null(xg_tensor_grad(in[0]),
                   "an input that does not require grad gets none");
}

/* ---- a small network --------------------------------------------------- */

Test(grad, linear_relu_cross_entropy_chain)
{
    enum { N = 4, IN = 3, OUT = 5 };
    float x[N * IN], w[OUT * IN], b[OUT];
    tu_rng r = {600};
    /* Draw until every pre-activation is at least 0.05 from the relu kink
     * (perturbations of 0.01 in W or b move it by at most 0.01). */
    for (int tries = 0;; tries++) {
        cr_assert_lt(tries, 1000);
        for (int i = 0; i < N * IN; i++)
            x[i] = (float)tu_uniform(&r, -1, 1);
        for (int i = 0; i < OUT * IN; i++)
            w[i] = (float)tu_uniform(&r, -1, 1);
        for (int i = 0; i < OUT; i++)
            b[i] = (float)tu_uniform(&r, -0.5, 0.5);
        bool ok = true;
        for (int n = 0; n < N; n++)
            for (int o = 0; o < OUT; o++) {
                double z = b[o];
                for (int k = 0; k < IN; k++)
                    z += (double)x[n * IN + k] * w[o * IN + k];
                ok = ok && fabs(z) > 0.05;
            }
        if (ok)
            break;
    }
    xg_tensor *in[4] = {tu_f32(x, XG_SHAPE(N, IN)),
                        tu_param(tu_f32(w, XG_SHAPE(OUT, IN))),
                        tu_param(tu_f32(b, XG_SHAPE(OUT))),
                        tu_i32((const int32_t[]){1, 4, 0, 2}, XG_SHAPE(N))};
    gradcheck("relu(x W^T + b) -> cross_entropy", f_chain, NULL, in, 4);
    cr_expect_null(xg_tensor_grad(in[0]),
                   "an input that does not require grad gets none");
}

/* ---- autograd bookkeeping ---------------------------------------------- */

Test(autograd, broadcast_input_gradient_sums)
{
    /* L = sum(a + b), a [2,3], b [3]: dL/da = 1, dL/db = 2 (two rows) */
    xg_tensor *a = tu_param(xg_zeros(XG_SHAPE(2, 3)));
    xg_tensor *b = tu_param(xg_zeros(XG_SHAPE(3)));
    cr_assert_eq(xg_backward(xg_sum_all(xg_add(a, b))), XG_OK, "%s",
                 xg_last_error());
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2, 3),
                     (const double[]){1, 1, 1, 1, 1, 1}, 0, 0, "grad a");
    tu_assert_values(xg_tensor_grad(b), XG_SHAPE(3), (const double[]){2, 2, 2},
                     0, 0, "grad b sums over the broadcast rows");
    /* L = sum(u * v), u [2,1], v [1,3]: dL/du_i = sum_j v_j,
     * dL/dv_j = sum_i u_i */
    xg_tensor *u = tu_param(tu_f32((const float[]){1, 2}, XG_SHAPE(2, 1)));
    xg_tensor *v = tu_param(tu_f32((const float[]){3, 4, 5}, XG_SHAPE(1, 3)));
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(u, v))), XG_OK);
    tu_assert_values(xg_tensor_grad(u), XG_SHAPE(2, 1),
                     (const double[]){12, 12}, 0, 0, "grad u");
    tu_assert_values(xg_tensor_grad(v), XG_SHAPE(1, 3),
                     (const double[]){3, 3, 3}, 0, 0, "grad v");
}

/* max_all splits its gradient evenly among tied maxima (torch.max(x) with
 * no dim); max along an axis routes it to the first maximum (torch.max(x,
 * dim)). Finite differences cannot see ties: hand values. */
Test(autograd, max_all_splits_ties_evenly)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 3, 3}, XG_SHAPE(3)));
    xg_tensor *y = xg_max_all(x);
    tu_assert_values(y, (const int64_t[]){1}, 0, (const double[]){3}, 0, 0,
                     "max_all");
    cr_assert_eq(xg_backward(xg_mul_scalar(y, 2)), XG_OK, "%s",
                 xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){0, 1, 1}, 0, 0, "max_all of [1,3,3]");
    /* relu-like ties of zeros, across rows of a 2-D x */
    xg_tensor *z = tu_param(tu_f32((const float[]){0, -1, 0, 0, -2, -3},
                                   XG_SHAPE(2, 3)));
    cr_assert_eq(xg_backward(xg_max_all(z)), XG_OK, "%s", xg_last_error());
    double t = 1.0 / 3.0;
    tu_assert_values(xg_tensor_grad(z), XG_SHAPE(2, 3),
                     (const double[]){t, 0, t, t, 0, 0}, 0, 1e-7,
                     "max_all of three zeros");
    /* a NaN maximum: the NaNs share the gradient, as in PyTorch */
    xg_tensor *n = tu_param(tu_f32((const float[]){NAN, 5, NAN, 1},
                                   XG_SHAPE(4)));
    cr_assert_eq(xg_backward(xg_max_all(n)), XG_OK, "%s", xg_last_error());
    tu_assert_values(xg_tensor_grad(n), XG_SHAPE(4),
                     (const double[]){0.5, 0, 0.5, 0}, 0, 0, "max_all NaN");
    /* max along an axis keeps routing to the first maximum */
    xg_tensor *w = tu_param(tu_f32((const float[]){1, 3, 3}, XG_SHAPE(3)));
    cr_assert_eq(xg_backward(xg_sum_all(xg_max(w, 0, false))), XG_OK);
    tu_assert_values(xg_tensor_grad(w), XG_SHAPE(3),
                     (const double[]){0, 1, 0}, 0, 0, "max axis 0 of [1,3,3]");
}

Test(autograd, accumulates_across_backward_calls_until_zeroed)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, -2, 3}, XG_SHAPE(3)));
    cr_expect_null(xg_tensor_grad(x), "no gradient before backward");
    /* L = sum(x * x): dL/dx = 2x */
    for (int k = 0; k < 2; k++)
        cr_assert_eq(xg_backward(xg_sum_all(xg_mul(x, x))), XG_OK, "%s",
                     xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){4, -8, 12}, 0, 0,
                     "two backward calls accumulate 2 * 2x");
    xg_tensor_zero_grad(x);
    cr_expect_null(xg_tensor_grad(x), "zero_grad drops the gradient");
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul_scalar(x, 3))), XG_OK);
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){3, 3, 3}, 0, 0,
                     "after zero_grad the next backward starts from zero");
}

Test(autograd, no_grad_mode_records_nothing)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 2}, XG_SHAPE(2)));
    cr_expect(xg_grad_enabled(), "grad mode is on by default");
    cr_expect(xg_set_grad_enabled(false), "returns the previous setting");
    cr_expect(!xg_grad_enabled());
    xg_tensor *l = xg_sum_all(xg_mul(x, x));
    cr_assert_not_null(l);
    cr_expect(!xg_tensor_requires_grad(l),
              "a result made in no-grad mode does not require grad");
    xg_clear_error();
    xg_status st = xg_backward(l);
    cr_expect_neq(st, XG_OK, "backward without a graph must fail");
    cr_expect_eq(st, XG_ERR_INVALID_ARG, "documented: XG_ERR_INVALID_ARG "
                 "(no graph), got %s", xg_status_str(st));
    cr_expect_null(xg_tensor_grad(x), "nothing reached the leaf");
    cr_expect(!xg_set_grad_enabled(true));
    cr_expect(xg_grad_enabled());
    /* the same expression with recording on works */
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(x, x))), XG_OK);
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(2), (const double[]){2, 4},
                     0, 0, "grad after turning recording back on");
}

Test(autograd, frozen_and_detached_get_no_gradient)
{
    xg_tensor *a = tu_param(tu_f32((const float[]){1, 2}, XG_SHAPE(2)));
    xg_tensor *frozen = tu_f32((const float[]){3, 4}, XG_SHAPE(2));
    cr_assert_eq(xg_tensor_set_requires_grad(frozen, true), XG_OK);
    cr_assert_eq(xg_tensor_set_requires_grad(frozen, false), XG_OK);
    cr_expect(!xg_tensor_requires_grad(frozen));
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(a, frozen))), XG_OK);
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2), (const double[]){3, 4},
                     0, 0, "grad of the trainable factor");
    cr_expect_null(xg_tensor_grad(frozen), "a frozen tensor gets no grad");

    /* x * detach(x): the detached factor is a constant, d/dx = x */
    xg_tensor *x = tu_param(tu_f32((const float[]){5, -1}, XG_SHAPE(2)));
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(x, xg_detach(x)))), XG_OK);
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(2), (const double[]){5, -1},
                     0, 0, "no gradient flows through detach");
}

Test(autograd, backward_from_a_leaf_scalar_or_through_reshape)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 2, 3, 4, 5, 6},
                                   XG_SHAPE(2, 3)));
    /* reshape shares storage but is differentiable */
    xg_tensor *r = xg_reshape(x, XG_SHAPE(3, 2));
    cr_assert(xg_tensor_requires_grad(r));
    xg_tensor *w = tu_f32((const float[]){1, 2, 3, 4, 5, 6}, XG_SHAPE(3, 2));
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(r, w))), XG_OK);
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(2, 3),
                     (const double[]){1, 2, 3, 4, 5, 6}, 0, 0,
                     "grad through reshape keeps the input's shape");
}

Test(autograd, index_backward_uses_the_indices_it_checked)
{
    /* Overwriting the index after the forward (out of range, even) changes
     * nothing: the graph keeps its own copy of the checked indices. */
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3)));
    xg_tensor *i = tu_i32((const int32_t[]){2, 0, 2}, XG_SHAPE(3));
    xg_tensor *y = xg_index_select(x, 0, i);
    xg_tensor *z = xg_gather(x, 0, i);
    cr_assert(y && z, "%s", xg_last_error());
    const int32_t bad[3] = {100, -5, 7};
    cr_assert_eq(xg_tensor_write(i, bad, sizeof bad), XG_OK);
    cr_assert_eq(xg_backward(xg_sum_all(xg_add(y, xg_mul_scalar(z, 10)))),
                 XG_OK, "%s", xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){11, 0, 22}, 0, 0,
                     "grad from the indices {2, 0, 2} of the forward");
}

Test(autograd, long_chain_does_not_overflow)
{
    /* 5000 ops in a row: backward must not recurse per node */
    xg_tensor *x = tu_param(tu_f32((const float[]){1}, XG_SHAPE(1)));
    xg_tensor *y = x;
    for (int i = 0; i < 5000; i++)
        y = xg_mul_scalar(y, 1.0f);
    cr_assert_not_null(y);
    cr_assert_eq(xg_backward(xg_sum_all(y)), XG_OK, "%s", xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(1), (const double[]){1}, 0,
                     0, "grad through 5000 identity ops");
}

/* ---- memory: what a backward frees as it walks ---------------------------
 * A chain of MEM_LAYERS (h = relu(h W_k)) on x [MEM_B, MEM_D], every
 * intermediate freed by the caller as it goes (as Sequential does), so only
 * the graph holds the activations. The bounds come from tensor sizes:
 * an activation is MEM_B * MEM_D floats, a weight MEM_D^2. A backward that
 * kept every gradient until it ends holds at least two activation-sized
 * gradients per layer (of relu's and of matmul's output) at its end, on
 * top of the graph; one that frees them as it goes needs the leaves'
 * gradients (one per weight) plus a working set of a few activations. */
#define MEM_LAYERS 50
#define MEM_B 256
#define MEM_D 32

static const uint64_t mem_act = (uint64_t)MEM_B * MEM_D * 4;
static const uint64_t mem_weight = (uint64_t)MEM_D * MEM_D * 4;

/* Builds the chain's loss from x and w[], freeing each intermediate. */
static xg_tensor *mem_chain(xg_tensor *x, xg_tensor **w)
{
    xg_tensor *h = x;
    for (int k = 0; k < MEM_LAYERS; k++) {
        xg_tensor *m = xg_matmul(h, w[k]);
        xg_tensor *r = xg_relu(m);
        cr_assert_not_null(r, "%s", xg_last_error());
        xg_tensor_free(m);
        if (h != x)
            xg_tensor_free(h);
        h = r;
    }
    xg_tensor *loss = xg_sum_all(h);
    xg_tensor_free(h);
    cr_assert_not_null(loss, "%s", xg_last_error());
    return loss;
}

static void mem_setup(xg_tensor **x, xg_tensor **w)
{
    *x = tu_param(tu_rand(XG_SHAPE(MEM_B, MEM_D), 7, -1, 1));
    for (int k = 0; k < MEM_LAYERS; k++) /* ~ He init: activations stay O(1) */
        w[k] = tu_param(tu_rand(XG_SHAPE(MEM_D, MEM_D), 100 + k, -0.4, 0.45));
}

static uint64_t mem_in_use(void)
{
    xg_device_memory_info mi;
    cr_assert_eq(xg_device_memory(xg_device_current(), &mi), XG_OK);
    return mi.in_use;
}

/* Runs backward (keeping the graph or not) from a fresh chain; returns the
 * peak bytes above what was in use when it started, and the in-use bytes
 * after it, above the leaves and their gradients; grads get x's and the
 * first weight's gradients (malloc'd). */
static void mem_run(bool retain, uint64_t *extra_peak, uint64_t *left,
                    float **gx, float **gw)
{
    xg_tensor *x, *w[MEM_LAYERS];
    mem_setup(&x, w);
    uint64_t leaves = mem_in_use();
    xg_tensor *loss = mem_chain(x, w);
    uint64_t before = mem_in_use();
    /* each layer's relu output (relu's rule and the next matmul read it);
     * nothing reads matmul's outputs (relu's rule reads its output) */
    cr_assert_geq(before - leaves, MEM_LAYERS * mem_act, "graph: %llu bytes",
                  (unsigned long long)(before - leaves));
    cr_assert_lt(before - leaves, MEM_LAYERS * mem_act + 4 * mem_act,
                 "the graph keeps values no rule reads: %llu bytes",
                 (unsigned long long)(before - leaves));
    xg_device *dev = xg_device_current();
    xg_device_reset_peak_memory(dev);
    cr_assert_eq(xg_backward_ex(loss, retain), XG_OK, "%s",
                 xg_last_error());
    xg_device_memory_info mi;
    cr_assert_eq(xg_device_memory(dev, &mi), XG_OK);
    *extra_peak = mi.peak - before;
    uint64_t grads = MEM_LAYERS * mem_weight + mem_act;
    *left = mi.in_use - leaves - grads;
    *gx = tu_read(xg_tensor_grad(x));
    *gw = tu_read(xg_tensor_grad(w[0]));
    xg_tensor_free(loss);
    for (int k = 0; k < MEM_LAYERS; k++)
        xg_tensor_free(w[k]);
    xg_tensor_free(x);
}

Test(autograd, backward_frees_gradients_and_graph_as_it_walks)
{
    uint64_t no_freeing = MEM_LAYERS * 2 * mem_act;
    uint64_t bound = MEM_LAYERS * mem_weight + mem_act + 8 * mem_act;
    cr_assert_lt(bound * 3, no_freeing, "the bound must separate the two");
    uint64_t peak_keep, left_keep, peak_free, left_free;
    float *gx_keep, *gw_keep, *gx_free, *gw_free;
    mem_run(true, &peak_keep, &left_keep, &gx_keep, &gw_keep);
    mem_run(false, &peak_free, &left_free, &gx_free, &gw_free);
    cr_expect_leq(peak_keep, bound, "backward keeping the graph: %llu bytes "
                  "above the graph at its peak, bound %llu (keeping every "
                  "gradient: >= %llu)", (unsigned long long)peak_keep,
                  (unsigned long long)bound, (unsigned long long)no_freeing);
    cr_expect_leq(peak_free, bound, "backward freeing the graph: %llu bytes "
                  "above the graph at its peak, bound %llu",
                  (unsigned long long)peak_free, (unsigned long long)bound);
    /* kept: the graph's activations are still there; freed: only the
     * loss and its gradient's leftovers (a few bytes) */
    cr_expect_geq(left_keep, MEM_LAYERS * mem_act, "kept graph");
    cr_expect_leq(left_free, 4096, "freed graph: %llu bytes left above the "
                  "leaves and their gradients", (unsigned long long)left_free);
    /* the same gradients, bit for bit, either way */
    cr_expect_arr_eq(gx_keep, gx_free, mem_act, "x's gradient");
    cr_expect_arr_eq(gw_keep, gw_free, mem_weight, "W_0's gradient");
    double norm = 0;
    for (int i = 0; i < MEM_B * MEM_D; i++)
        norm += fabs(gx_keep[i]);
    cr_expect_gt(norm, 0, "the gradient reaches x (the chain did not die)");
    free(gx_keep), free(gw_keep), free(gx_free), free(gw_free);
}

Test(autograd, second_backward_through_a_freed_graph_fails)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, -2, 3}, XG_SHAPE(3)));
    xg_tensor *loss = xg_sum_all(xg_mul(x, x));
    cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_backward_ex(loss, false), XG_OK, "kept: a second "
                 "backward goes through: %s", xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){4, -8, 12}, 0, 0, "two passes");
    cr_assert_eq(xg_backward(loss), XG_ERR_STATE, "a third pass");
    tu_assert_error(XG_ERR_STATE, "freed", "backward through a freed graph");
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(3),
                     (const double[]){4, -8, 12}, 0, 0, "unchanged");
    cr_expect(xg_tensor_requires_grad(loss), "still a graph result");
    float v;
    cr_assert_eq(xg_tensor_item(loss, &v), XG_OK, "the loss stays readable");
    cr_expect_eq(v, 14.0f);
}
