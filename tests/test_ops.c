/* Forward values of every op in xgrad.h, on the CPU backend, against
 * hand-worked values or double-precision reference loops written here from
 * the mathematical definitions (PyTorch's documented semantics). */
#include "test_util.h"

TestSuite(ops, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(tensor, .init = tu_init_scope, .fini = tu_fini_scope);
TestSuite(rng, .init = tu_init_scope, .fini = tu_fini_scope);

#define EXACT 0.0, 0.0
#define F32TOL 1e-6, 1e-6
#define TRANSC 1e-6, 2e-6 /* transcendental functions in f32 */

/* ---- reference helpers ------------------------------------------------- */

typedef double (*binop_fn)(double, double);
static double op_add(double a, double b) { return a + b; }
static double op_sub(double a, double b) { return a - b; }
static double op_mul(double a, double b) { return a * b; }
static double op_div(double a, double b) { return a / b; }

/* out = a (op) b with NumPy broadcasting; writes the output shape. */
static int64_t ref_broadcast(binop_fn f, const float *a, const int64_t *as,
                             int an, const float *b, const int64_t *bs,
                             int bn, double *out, int64_t *os, int *on)
{
    int nd = an > bn ? an : bn;
    int64_t ashape[XG_MAX_DIMS], bshape[XG_MAX_DIMS];
    for (int d = 0; d < nd; d++) {
        int ad = d - (nd - an), bd = d - (nd - bn);
        ashape[d] = ad >= 0 ? as[ad] : 1;
        bshape[d] = bd >= 0 ? bs[bd] : 1;
        cr_assert(ashape[d] == bshape[d] || ashape[d] == 1 || bshape[d] == 1);
        os[d] = ashape[d] > bshape[d] ? ashape[d] : bshape[d];
    }
    *on = nd;
    int64_t n = tu_numel(os, nd);
    for (int64_t i = 0; i < n; i++) {
        int64_t rem = i, idx[XG_MAX_DIMS];
        for (int d = nd - 1; d >= 0; d--) {
            idx[d] = rem % os[d];
            rem /= os[d];
        }
        int64_t ia = 0, ib = 0;
        for (int d = 0; d < nd; d++) {
            ia = ia * ashape[d] + (ashape[d] == 1 ? 0 : idx[d]);
            ib = ib * bshape[d] + (bshape[d] == 1 ? 0 : idx[d]);
        }
        out[i] = f(a[ia], b[ib]);
    }
    return n;
}

/* Batched matrix product of a [batch_a..., r, c] and b [batch_b..., r, c]
 * (each at least 2-D), op() transposing the last two axes when the flag is
 * set; batch axes broadcast. */
static void ref_matmul(const float *a, const int64_t *as, int an, bool ta,
                       const float *b, const int64_t *bs, int bn, bool tb,
                       double *out, int64_t *os, int *on)
{
    int64_t M = ta ? as[an - 1] : as[an - 2];
    int64_t K = ta ? as[an - 2] : as[an - 1];
    int64_t K2 = tb ? bs[bn - 1] : bs[bn - 2];
    int64_t N = tb ? bs[bn - 2] : bs[bn - 1];
    cr_assert_eq(K, K2);
    int ba = an - 2, bb = bn - 2, nb = ba > bb ? ba : bb;
    int64_t abatch[XG_MAX_DIMS], bbatch[XG_MAX_DIMS];
    for (int d = 0; d < nb; d++) {
        int ad = d - (nb - ba), bd = d - (nb - bb);
        abatch[d] = ad >= 0 ? as[ad] : 1;
        bbatch[d] = bd >= 0 ? bs[bd] : 1;
        os[d] = abatch[d] > bbatch[d] ? abatch[d] : bbatch[d];
    }
    os[nb] = M;
    os[nb + 1] = N;
    *on = nb + 2;
    int64_t nbatch = tu_numel(os, nb);
    for (int64_t bi = 0; bi < nbatch; bi++) {
        int64_t rem = bi, idx[XG_MAX_DIMS];
        for (int d = nb - 1; d >= 0; d--) {
            idx[d] = rem % os[d];
            rem /= os[d];
        }
        int64_t ia = 0, ib = 0;
        for (int d = 0; d < nb; d++) {
            ia = ia * abatch[d] + (abatch[d] == 1 ? 0 : idx[d]);
            ib = ib * bbatch[d] + (bbatch[d] == 1 ? 0 : idx[d]);
        }
        const float *A = a + ia * M * K, *B = b + ib * K * N;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++) {
                    double x = ta ? A[k * M + m] : A[m * K + k];
                    double y = tb ? B[n * K + k] : B[k * N + n];
                    s += x * y;
                }
                out[(bi * M + m) * N + n] = s;
            }
    }
}

/* Checks xg_<op>(a, b) against the broadcasting reference. */
static void check_binary(const char *name,
                         xg_tensor *(*op)(xg_tensor *, xg_tensor *),
                         binop_fn f, const int64_t *as, int an,
                         const int64_t *bs, int bn, uint64_t seed,
                         bool positive_b)
{
    int64_t na = tu_numel(as, an), nb = tu_numel(bs, bn);
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
    tu_fill(a, na, seed, -2, 2);
    if (positive_b)
        tu_fill(b, nb, seed + 1, 0.5, 2);
    else
        tu_fill(b, nb, seed + 1, -2, 2);
    int64_t os[XG_MAX_DIMS];
    int on;
    double want[4096];
    ref_broadcast(f, a, as, an, b, bs, bn, want, os, &on);
    xg_tensor *ta = tu_f32(a, as, an), *tb = tu_f32(b, bs, bn);
    char what[160];
    snprintf(what, sizeof what, "%s(%s, %s)", name, tu_shape_str(as, an),
             tu_shape_str(bs, bn));
    tu_assert_values(op(ta, tb), os, on, want, 1e-6, 1e-6, what);
    free(a);
    free(b);
}

/* ---- binary ops -------------------------------------------------------- */

Test(ops, add_same_shape)
{
    xg_tensor *a = tu_f32((const float[]){1, 2, 3, 4, 5, 6}, XG_SHAPE(2, 3));
    xg_tensor *b = tu_f32((const float[]){10, 20, 30, 40, 50, 60},
                          XG_SHAPE(2, 3));
    tu_assert_values(xg_add(a, b), XG_SHAPE(2, 3),
                     (const double[]){11, 22, 33, 44, 55, 66}, EXACT, "add");
}

Test(ops, add_row_broadcast)
{
    /* [2,3] + [3]: b is added to every row. */
    xg_tensor *a = tu_f32((const float[]){1, 2, 3, 4, 5, 6}, XG_SHAPE(2, 3));
    xg_tensor *b = tu_f32((const float[]){10, 20, 30}, XG_SHAPE(3));
    tu_assert_values(xg_add(a, b), XG_SHAPE(2, 3),
                     (const double[]){11, 22, 33, 14, 25, 36}, EXACT,
                     "[2,3]+[3]");
    tu_assert_values(xg_add(b, a), XG_SHAPE(2, 3),
                     (const double[]){11, 22, 33, 14, 25, 36}, EXACT,
                     "[3]+[2,3]");
}

Test(ops, sub_broadcast_both_orders)
{
    xg_tensor *a = tu_f32((const float[]){1, 2, 3, 4, 5, 6}, XG_SHAPE(2, 3));
    xg_tensor *b = tu_f32((const float[]){10, 20, 30}, XG_SHAPE(3));
    tu_assert_values(xg_sub(a, b), XG_SHAPE(2, 3),
                     (const double[]){-9, -18, -27, -6, -15, -24}, EXACT,
                     "[2,3]-[3]");
    tu_assert_values(xg_sub(b, a), XG_SHAPE(2, 3),
                     (const double[]){9, 18, 27, 6, 15, 24}, EXACT,
                     "[3]-[2,3]");
}

Test(ops, mul_outer_broadcast)
{
    /* [2,1] * [1,3] -> [2,3], an outer product. */
    xg_tensor *a = tu_f32((const float[]){2, 3}, XG_SHAPE(2, 1));
    xg_tensor *b = tu_f32((const float[]){1, -1, 0.5f}, XG_SHAPE(1, 3));
    tu_assert_values(xg_mul(a, b), XG_SHAPE(2, 3),
                     (const double[]){2, -2, 1, 3, -3, 1.5}, EXACT,
                     "[2,1]*[1,3]");
    tu_assert_values(xg_mul(b, a), XG_SHAPE(2, 3),
                     (const double[]){2, -2, 1, 3, -3, 1.5}, EXACT,
                     "[1,3]*[2,1]");
}

Test(ops, div_broadcast)
{
    xg_tensor *a = tu_f32((const float[]){1, 2, 3, 4, 5, 6}, XG_SHAPE(2, 3));
    xg_tensor *b = tu_f32((const float[]){2, 4, 8}, XG_SHAPE(3));
    tu_assert_values(xg_div(a, b), XG_SHAPE(2, 3),
                     (const double[]){0.5, 0.5, 0.375, 2, 1.25, 0.75}, EXACT,
                     "[2,3]/[3]");
    xg_tensor *c = tu_f32((const float[]){1, 0, -1}, XG_SHAPE(3));
    xg_tensor *z = tu_f32((const float[]){0, 0, 0}, XG_SHAPE(3));
    tu_assert_values(xg_div(c, z), XG_SHAPE(3),
                     (const double[]){INFINITY, NAN, -INFINITY}, EXACT,
                     "x/0 gives IEEE inf and nan");
}

Test(ops, scalar_shaped_operands)
{
    int64_t none[1] = {0};
    xg_tensor *s = tu_f32((const float[]){3}, none, 0);
    xg_tensor *a = tu_f32((const float[]){1, 2, 3, 4}, XG_SHAPE(2, 2));
    tu_assert_values(xg_mul(a, s), XG_SHAPE(2, 2),
                     (const double[]){3, 6, 9, 12}, EXACT, "[2,2]*[]");
    tu_assert_values(xg_sub(s, a), XG_SHAPE(2, 2),
                     (const double[]){2, 1, 0, -1}, EXACT, "[]-[2,2]");
    xg_tensor *t = tu_f32((const float[]){0.5f}, none, 0);
    xg_tensor *st = xg_add(s, t);
    tu_assert_values(st, none, 0, (const double[]){3.5}, EXACT, "[]+[]");
    cr_expect_float_eq(tu_item(st), 3.5f, 0, "item of a scalar sum");
}

Test(ops, size_one_dims)
{
    xg_tensor *a = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(1, 3));
    xg_tensor *b = tu_f32((const float[]){10}, XG_SHAPE(1, 1));
    tu_assert_values(xg_add(a, b), XG_SHAPE(1, 3),
                     (const double[]){11, 12, 13}, EXACT, "[1,3]+[1,1]");
    xg_tensor *c = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3, 1));
    xg_tensor *d = tu_f32((const float[]){-1}, XG_SHAPE(1));
    tu_assert_values(xg_mul(c, d), XG_SHAPE(3, 1),
                     (const double[]){-1, -2, -3}, EXACT, "[3,1]*[1]");
    /* [1] + [2,1,3] gives [2,1,3]: the size-1 operand is expanded. */
    xg_tensor *e = tu_f32((const float[]){1, 2, 3, 4, 5, 6},
                          XG_SHAPE(2, 1, 3));
    tu_assert_values(xg_add(d, e), XG_SHAPE(2, 1, 3),
                     (const double[]){0, 1, 2, 3, 4, 5}, EXACT, "[1]+[2,1,3]");
}

Test(ops, broadcast_4d)
{
    /* Hand-checked corner first: a[2,1,3,1] * b[1,2,1,2] */
    float a[6] = {1, 2, 3, 4, 5, 6}, b[4] = {1, 10, 100, 1000};
    xg_tensor *ta = tu_f32(a, XG_SHAPE(2, 1, 3, 1));
    xg_tensor *tb = tu_f32(b, XG_SHAPE(1, 2, 1, 2));
    xg_tensor *c = xg_mul(ta, tb);
    tu_assert_shape(c, XG_SHAPE(2, 2, 3, 2), "4-D broadcast mul");
    float *v = tu_read(c);
    /* c[i,j,k,l] = a[i,0,k,0] * b[0,j,0,l]; flat = ((i*2+j)*3+k)*2+l */
    cr_expect_float_eq(v[0], 1.0f, 0, "c[0,0,0,0]");
    cr_expect_float_eq(v[1], 10.0f, 0, "c[0,0,0,1]");
    cr_expect_float_eq(v[((0 * 2 + 1) * 3 + 2) * 2 + 1], 3000.0f, 0,
                       "c[0,1,2,1] = a[0,0,2,0] * b[0,1,0,1]");
    cr_expect_float_eq(v[((1 * 2 + 1) * 3 + 0) * 2 + 0], 400.0f, 0,
                       "c[1,1,0,0] = a[1,0,0,0] * b[0,1,0,0]");
    free(v);
    /* Then all ops against the reference loop on several 4-D patterns. */
    check_binary("add", xg_add, op_add, XG_SHAPE(2, 1, 3, 1),
                 XG_SHAPE(1, 2, 1, 4), 1, false);
    check_binary("sub", xg_sub, op_sub, XG_SHAPE(2, 3, 1, 5),
                 XG_SHAPE(3, 4, 1), 2, false);
    check_binary("mul", xg_mul, op_mul, XG_SHAPE(1, 3, 4, 5),
                 XG_SHAPE(2, 1, 4, 1), 3, false);
    check_binary("div", xg_div, op_div, XG_SHAPE(2, 3, 4, 5),
                 XG_SHAPE(5), 4, true);
    check_binary("add", xg_add, op_add, XG_SHAPE(4), XG_SHAPE(2, 3, 4), 5,
                 false);
    check_binary("mul", xg_mul, op_mul, XG_SHAPE(2, 1, 1, 1, 3),
                 XG_SHAPE(1, 2, 3, 2, 1), 6, false);
    check_binary("sub", xg_sub, op_sub, XG_SHAPE(7, 13), XG_SHAPE(7, 13), 7,
                 false);
}

/* ---- scalar variants --------------------------------------------------- */

Test(ops, scalar_variants)
{
    xg_tensor *a = tu_f32((const float[]){-2, 0, 1, 6}, XG_SHAPE(2, 2));
    tu_assert_values(xg_add_scalar(a, 1.5f), XG_SHAPE(2, 2),
                     (const double[]){-0.5, 1.5, 2.5, 7.5}, EXACT,
                     "add_scalar");
    tu_assert_values(xg_sub_scalar(a, 1.5f), XG_SHAPE(2, 2),
                     (const double[]){-3.5, -1.5, -0.5, 4.5}, EXACT,
                     "sub_scalar is a - s");
    tu_assert_values(xg_mul_scalar(a, -2), XG_SHAPE(2, 2),
                     (const double[]){4, -0, -2, -12}, EXACT, "mul_scalar");
    tu_assert_values(xg_div_scalar(a, 4), XG_SHAPE(2, 2),
                     (const double[]){-0.5, 0, 0.25, 1.5}, EXACT,
                     "div_scalar is a / s");
}

/* ---- unary ops --------------------------------------------------------- */

static const float unary_x[] = {-3, -1.5f, -0.25f, 0, 0.25f, 1, 2.5f, 4};
#define UNARY_SHAPE XG_SHAPE(2, 4)

static void check_unary(const char *name, xg_tensor *(*op)(xg_tensor *),
                        double (*ref)(double), const float *x, int n)
{
    double want[64];
    for (int i = 0; i < n; i++)
        want[i] = ref(x[i]);
    xg_tensor *t = tu_f32(x, XG_SHAPE(n));
    tu_assert_values(op(t), XG_SHAPE(n), want, TRANSC, name);
}

static double r_neg(double x) { return -x; }
static double r_relu(double x) { return x > 0 ? x : 0; }
static double r_sigmoid(double x) { return 1 / (1 + exp(-x)); }
static double r_gelu(double x) { return x * 0.5 * (1 + erf(x / sqrt(2.0))); }

/* SiLU (swish): x sigmoid(x) = x / (1 + e^-x). reference: Elfwing et al.,
 * "Sigmoid-Weighted Linear Units", 2017; PyTorch's torch.nn.SiLU. */
static double r_silu(double x) { return x / (1.0 + exp(-x)); }

/* GELU's tanh approximation (Hendrycks & Gimpel 2016; PyTorch
 * gelu(approximate='tanh'), GPT-2's gelu_new). */
static double r_gelu_tanh(double x)
{
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

Test(ops, neg_relu_hand_values)
{
    xg_tensor *x = tu_f32(unary_x, UNARY_SHAPE);
    tu_assert_values(xg_neg(x), UNARY_SHAPE,
                     (const double[]){3, 1.5, 0.25, 0, -0.25, -1, -2.5, -4},
                     EXACT, "neg");
    tu_assert_values(xg_relu(x), UNARY_SHAPE,
                     (const double[]){0, 0, 0, 0, 0.25, 1, 2.5, 4}, EXACT,
                     "relu");
}

Test(ops, exp_log_sqrt)
{
    xg_tensor *x = tu_f32((const float[]){0, 1, -1, 2}, XG_SHAPE(4));
    tu_assert_values(xg_exp(x), XG_SHAPE(4),
                     (const double[]){1, 2.718281828459045,
                                      0.36787944117144233, 7.38905609893065},
                     TRANSC, "exp");
    xg_tensor *p = tu_f32((const float[]){1, 0.25f, 4, 2.718281828f, 0},
                          XG_SHAPE(5));
    tu_assert_values(xg_log(p), XG_SHAPE(5),
                     (const double[]){0, -1.3862943611198906,
                                      1.3862943611198906, 1.0, -INFINITY},
                     TRANSC, "log (log 0 = -inf)");
    xg_tensor *q = tu_f32((const float[]){0, 0.25f, 4, 9, 2, -1},
                          XG_SHAPE(6));
    tu_assert_values(xg_sqrt(q), XG_SHAPE(6),
                     (const double[]){0, 0.5, 2, 3, 1.4142135623730951, NAN},
                     TRANSC, "sqrt (sqrt -1 = nan)");
}

Test(ops, activations_vs_reference)
{
    int n = (int)(sizeof unary_x / sizeof unary_x[0]);
    check_unary("neg", xg_neg, r_neg, unary_x, n);
    check_unary("exp", xg_exp, exp, unary_x, n);
    check_unary("relu", xg_relu, r_relu, unary_x, n);
    check_unary("sigmoid", xg_sigmoid, r_sigmoid, unary_x, n);
    check_unary("tanh", xg_tanh, tanh, unary_x, n);
    check_unary("gelu", xg_gelu, r_gelu, unary_x, n);
    check_unary("silu", xg_silu, r_silu, unary_x, n);
    check_unary("gelu_tanh", xg_gelu_tanh, r_gelu_tanh, unary_x, n);
}

Test(ops, activation_hand_values)
{
    xg_tensor *x = tu_f32((const float[]){0, 1, -1}, XG_SHAPE(3));
    /* sigmoid(0) = 1/2; sigmoid(1) = 1/(1+e^-1) = 0.7310585786 */
    tu_assert_values(xg_sigmoid(x), XG_SHAPE(3),
                     (const double[]){0.5, 0.7310585786300049,
                                      0.2689414213699951},
                     TRANSC, "sigmoid");
    tu_assert_values(xg_tanh(x), XG_SHAPE(3),
                     (const double[]){0, 0.7615941559557649,
                                      -0.7615941559557649},
                     TRANSC, "tanh");
    /* gelu(1) = 0.5 * (1 + erf(1/sqrt 2)) = 0.8413447460685429 (exact
     * form, not the tanh approximation 0.8411919906) */
    tu_assert_values(xg_gelu(x), XG_SHAPE(3),
                     (const double[]){0, 0.8413447460685429,
                                      -0.15865525393145707},
                     1e-7, 1e-6, "gelu exact erf form");
    /* gelu_tanh(1) = 0.5 (1 + tanh(sqrt(2/pi) 1.044715)) = 0.8411919906,
     * against the exact form's 0.8413447461 */
    tu_assert_values(xg_gelu_tanh(x), XG_SHAPE(3),
                     (const double[]){0, 0.8411919906082768,
                                      -0.15880800939172324},
                     1e-7, 1e-6, "gelu tanh approximation");
    /* silu(1) = 1 / (1 + e^-1) = 0.7310585786; silu(-1) = -0.2689414214 */
    tu_assert_values(xg_silu(x), XG_SHAPE(3),
                     (const double[]){0, 0.7310585786300049,
                                      -0.2689414213699951},
                     TRANSC, "silu");
}

Test(ops, activations_saturate_without_nan)
{
    xg_tensor *x = tu_f32((const float[]){-100, 100, -1000, 1000},
                          XG_SHAPE(4));
    tu_assert_values(xg_sigmoid(x), XG_SHAPE(4),
                     (const double[]){3.720075976020836e-44, 1, 0, 1},
                     1e-30, 1e-6, "sigmoid at +-100, +-1000");
    tu_assert_values(xg_tanh(x), XG_SHAPE(4),
                     (const double[]){-1, 1, -1, 1}, EXACT, "tanh saturates");
    tu_assert_values(xg_gelu(x), XG_SHAPE(4),
                     (const double[]){0, 100, 0, 1000}, 1e-30, 1e-6,
                     "gelu saturates");
    tu_assert_values(xg_silu(x), XG_SHAPE(4),
                     (const double[]){-3.720075976020836e-42, 100, 0, 1000},
                     1e-30, 1e-6, "silu saturates");
    tu_assert_values(xg_gelu_tanh(x), XG_SHAPE(4),
                     (const double[]){0, 100, 0, 1000}, 1e-30, 1e-6,
                     "gelu_tanh saturates");
    tu_assert_values(xg_exp(x), XG_SHAPE(4),
                     (const double[]){3.720075976020836e-44, INFINITY, 0,
                                      INFINITY},
                     1e-30, 1e-5, "exp overflows to inf in f32");
}

/* ---- matmul ------------------------------------------------------------ */

static const float mA[6] = {1, 2, 3, 4, 5, 6};      /* [2,3] */
static const float mB[6] = {7, 8, 9, 10, 11, 12};   /* [3,2] */
static const float mAt[6] = {1, 4, 2, 5, 3, 6};     /* A^T stored [3,2] */
static const float mBt[6] = {7, 9, 11, 8, 10, 12};  /* B^T stored [2,3] */
static const double mAB[4] = {58, 64, 139, 154};

Test(ops, matmul_2d)
{
    xg_tensor *a = tu_f32(mA, XG_SHAPE(2, 3)), *b = tu_f32(mB, XG_SHAPE(3, 2));
    tu_assert_values(xg_matmul(a, b), XG_SHAPE(2, 2), mAB, EXACT,
                     "[2,3]@[3,2]");
    /* b @ a: [3,2]@[2,3] -> [3,3]: row0 = 7*[1,2,3] + 8*[4,5,6] */
    tu_assert_values(xg_matmul(b, a), XG_SHAPE(3, 3),
                     (const double[]){39, 54, 69, 49, 68, 87, 59, 82, 105},
                     EXACT, "[3,2]@[2,3]");
}

Test(ops, matmul_transpose_flags)
{
    xg_tensor *a = tu_f32(mA, XG_SHAPE(2, 3)), *b = tu_f32(mB, XG_SHAPE(3, 2));
    xg_tensor *at = tu_f32(mAt, XG_SHAPE(3, 2));
    xg_tensor *bt = tu_f32(mBt, XG_SHAPE(2, 3));
    tu_assert_values(xg_matmul_t(a, b, false, false), XG_SHAPE(2, 2), mAB,
                     EXACT, "matmul_t NN");
    tu_assert_values(xg_matmul_t(at, b, true, false), XG_SHAPE(2, 2), mAB,
                     EXACT, "matmul_t TN");
    tu_assert_values(xg_matmul_t(a, bt, false, true), XG_SHAPE(2, 2), mAB,
                     EXACT, "matmul_t NT");
    tu_assert_values(xg_matmul_t(at, bt, true, true), XG_SHAPE(2, 2), mAB,
                     EXACT, "matmul_t TT");
    /* A^T A = [[17,22,27],[22,29,36],[27,36,45]] */
    tu_assert_values(xg_matmul_t(a, a, true, false), XG_SHAPE(3, 3),
                     (const double[]){17, 22, 27, 22, 29, 36, 27, 36, 45},
                     EXACT, "A^T A");
    /* A A^T = [[14,32],[32,77]] */
    tu_assert_values(xg_matmul_t(a, a, false, true), XG_SHAPE(2, 2),
                     (const double[]){14, 32, 32, 77}, EXACT, "A A^T");
}

Test(ops, matmul_1d_cases)
{
    int64_t none[1] = {0};
    xg_tensor *u = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3));
    xg_tensor *v = tu_f32((const float[]){4, 5, 6}, XG_SHAPE(3));
    tu_assert_values(xg_matmul(u, v), none, 0, (const double[]){32}, EXACT,
                     "[3]@[3] is a dot product, 0-D");
    xg_tensor *a = tu_f32(mA, XG_SHAPE(2, 3));
    xg_tensor *w = tu_f32((const float[]){1, 0, -1}, XG_SHAPE(3));
    tu_assert_values(xg_matmul(a, w), XG_SHAPE(2), (const double[]){-2, -2},
                     EXACT, "[2,3]@[3] -> [2]");
    xg_tensor *ones2 = tu_f32((const float[]){1, 1}, XG_SHAPE(2));
    tu_assert_values(xg_matmul(ones2, a), XG_SHAPE(3),
                     (const double[]){5, 7, 9}, EXACT, "[2]@[2,3] -> [3]");
}

Test(ops, matmul_1d_with_batched)
{
    /* torch.matmul: [2,2,3] @ [3] -> [2,2]; [3] @ [2,3,2] -> [2,2] */
    float a[12] = {1, 2, 3, 4, 5, 6, -1, 0, 1, 2, 2, 2};
    xg_tensor *ta = tu_f32(a, XG_SHAPE(2, 2, 3));
    xg_tensor *w = tu_f32((const float[]){1, 0, -1}, XG_SHAPE(3));
    tu_assert_values(xg_matmul(ta, w), XG_SHAPE(2, 2),
                     (const double[]){-2, -2, -2, 0}, EXACT,
                     "[2,2,3]@[3] -> [2,2]");
    float b[12] = {1, 2, 3, 4, 5, 6, 0, 1, 1, 0, 2, 2};
    xg_tensor *tb = tu_f32(b, XG_SHAPE(2, 3, 2));
    /* [1,0,-1] @ [[1,2],[3,4],[5,6]] = [-4,-4]; @ [[0,1],[1,0],[2,2]] =
     * [-2,-1] */
    tu_assert_values(xg_matmul(w, tb), XG_SHAPE(2, 2),
                     (const double[]){-4, -4, -2, -1}, EXACT,
                     "[3]@[2,3,2] -> [2,2]");
}

Test(ops, matmul_batched_hand)
{
    /* [2,2,2] @ [2,2]: the right matrix broadcasts over the batch. */
    float a[8] = {1, 2, 3, 4, 0, 1, 1, 0};
    float b[4] = {1, 1, 0, 2};
    xg_tensor *ta = tu_f32(a, XG_SHAPE(2, 2, 2));
    xg_tensor *tb = tu_f32(b, XG_SHAPE(2, 2));
    tu_assert_values(xg_matmul(ta, tb), XG_SHAPE(2, 2, 2),
                     (const double[]){1, 5, 3, 11, 0, 2, 1, 1}, EXACT,
                     "[2,2,2]@[2,2]");
    /* [2,2] @ [2,2,2]: the left matrix broadcasts. b@a0 = [[4,6],[6,8]],
     * b@a1 = [[1,1],[2,0]] */
    tu_assert_values(xg_matmul(tb, ta), XG_SHAPE(2, 2, 2),
                     (const double[]){4, 6, 6, 8, 1, 1, 2, 0}, EXACT,
                     "[2,2]@[2,2,2]");
}

static void check_matmul(const int64_t *as, int an, bool ta,
                         const int64_t *bs, int bn, bool tb, uint64_t seed)
{
    int64_t na = tu_numel(as, an), nb = tu_numel(bs, bn);
    float *a = malloc(na * sizeof *a), *b = malloc(nb * sizeof *b);
    tu_fill(a, na, seed, -1, 1);
    tu_fill(b, nb, seed + 100, -1, 1);
    int64_t os[XG_MAX_DIMS];
    int on;
    double *want = malloc(8192 * sizeof *want);
    ref_matmul(a, as, an, ta, b, bs, bn, tb, want, os, &on);
    cr_assert(tu_numel(os, on) <= 8192);
    xg_tensor *A = tu_f32(a, as, an), *B = tu_f32(b, bs, bn);
    xg_tensor *C = (ta || tb) ? xg_matmul_t(A, B, ta, tb) : xg_matmul(A, B);
    char what[200];
    snprintf(what, sizeof what, "matmul%s %s%s x %s%s", ta || tb ? "_t" : "",
             tu_shape_str(as, an), ta ? "^T" : "", tu_shape_str(bs, bn),
             tb ? "^T" : "");
    tu_assert_values(C, os, on, want, 1e-5, 1e-5, what);
    free(a);
    free(b);
    free(want);
}

Test(ops, matmul_batched_broadcast_vs_reference)
{
    check_matmul(XG_SHAPE(2, 1, 2, 3), false, XG_SHAPE(3, 3, 4), false, 1);
    check_matmul(XG_SHAPE(3, 5, 4), false, XG_SHAPE(1, 4, 2), false, 2);
    check_matmul(XG_SHAPE(2, 3, 4, 5), false, XG_SHAPE(2, 3, 5, 2), false,
                 3);
    check_matmul(XG_SHAPE(4, 5), false, XG_SHAPE(2, 3, 5, 3), false, 4);
    /* odd, larger sizes (blocked / BLAS paths) */
    check_matmul(XG_SHAPE(17, 33), false, XG_SHAPE(33, 9), false, 5);
    check_matmul(XG_SHAPE(65, 31), false, XG_SHAPE(31, 70), false, 6);
}

Test(ops, matmul_t_batched_vs_reference)
{
    check_matmul(XG_SHAPE(2, 4, 3), true, XG_SHAPE(4, 5), false, 7);
    check_matmul(XG_SHAPE(2, 3, 4), false, XG_SHAPE(2, 5, 4), true, 8);
    check_matmul(XG_SHAPE(3, 1, 4, 3), true, XG_SHAPE(2, 5, 4), true, 9);
    check_matmul(XG_SHAPE(4, 3), true, XG_SHAPE(3, 5, 4), true, 10);
    check_matmul(XG_SHAPE(19, 37), true, XG_SHAPE(23, 19), true, 11);
}

/* op(A) [m, k] times op(B) [k, n] against a product in double, for every
 * transpose combination. Each element must lie within the bound of a
 * float sum of k products, 2 (k + 2) 2^-24 sum |a b|, of the exact value:
 * a wrong, missing or doubled term is far outside it. */
static void check_matmul_bound(int64_t m, int64_t n, int64_t k, uint64_t seed)
{
    float *a = malloc((size_t)(m * k) * sizeof *a);
    float *b = malloc((size_t)(k * n) * sizeof *b);
    cr_assert(a && b);
    tu_fill(a, m * k, seed, -1, 1);
    tu_fill(b, k * n, seed + 1, -1, 1);
    for (int tr = 0; tr < 4; tr++) {
        bool ta = tr & 1, tb = tr & 2;
        /* The same op(A), op(B) stored as the flags say. */
        float *sa = malloc((size_t)(m * k) * sizeof *sa);
        float *sb = malloc((size_t)(k * n) * sizeof *sb);
        cr_assert(sa && sb);
        for (int64_t i = 0; i < m; i++)
            for (int64_t p = 0; p < k; p++)
                sa[ta ? p * m + i : i * k + p] = a[i * k + p];
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < n; j++)
                sb[tb ? j * k + p : p * n + j] = b[p * n + j];
        int64_t as[2] = {ta ? k : m, ta ? m : k};
        int64_t bs[2] = {tb ? n : k, tb ? k : n};
        xg_tensor *A = tu_f32(sa, as, 2), *B = tu_f32(sb, bs, 2);
        xg_tensor *C = xg_matmul_t(A, B, ta, tb);
        cr_assert_not_null(C, "%s", xg_last_error());
        float *c = tu_read(C);
        int64_t bad = 0;
        for (int64_t i = 0; i < m; i++)
            for (int64_t j = 0; j < n; j++) {
                double want = 0, mag = 0;
                for (int64_t p = 0; p < k; p++) {
                    double t = (double)a[i * k + p] * b[p * n + j];
                    want += t;
                    mag += fabs(t);
                }
                double tol = 2.0 * (double)(k + 2) * 0x1p-24 * mag + 1e-30;
                if (!(fabs(c[i * n + j] - want) <= tol) && bad++ < 3)
                    cr_expect(false,
                              "[%lld x %lld x %lld] ta %d tb %d: c[%lld, "
                              "%lld] = %.9g, want %.9g (tol %.3g)",
                              (long long)m, (long long)n, (long long)k, ta,
                              tb, (long long)i, (long long)j, c[i * n + j],
                              want, tol);
            }
        cr_assert_eq(bad, 0, "[%lld x %lld x %lld] ta %d tb %d: %lld bad",
                     (long long)m, (long long)n, (long long)k, ta, tb,
                     (long long)bad);
        free(c);
        free(sa);
        free(sb);
    }
    free(a);
    free(b);
}

Test(ops, matmul_odd_sizes_all_transposes_vs_double)
{
    /* m, n, k: ones, primes, sizes around the micro-tiles (6, 8, 12, 16,
     * 32), depth across packing blocks (256), several tiles of C. */
    static const int64_t sizes[][3] = {
        {1, 1, 1},     {1, 1, 300},  {1, 37, 5},    {37, 1, 5},
        {13, 17, 1},   {2, 3, 2},    {5, 7, 11},    {7, 97, 263},
        {11, 33, 16},  {12, 32, 64}, {6, 16, 7},    {25, 65, 9},
        {131, 61, 517}, {150, 530, 19}, {293, 41, 257}, {64, 256, 784},
    };
    for (size_t i = 0; i < sizeof sizes / sizeof sizes[0]; i++) {
        xg_scope *s = xg_scope_begin();
        check_matmul_bound(sizes[i][0], sizes[i][1], sizes[i][2], 40 + i);
        xg_scope_end(s);
    }
}

/* The bits of op(A) op(B) for every transpose combination and a batched
 * product, on a CPU device opened with `threads` threads. */
static float *matmul_on_threads(const char *threads, int64_t *count)
{
    setenv("XGRAD_NUM_THREADS", threads, 1);
    xg_device *dev;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device *prev = xg_device_current();
    xg_device_set_current(dev);
    xg_scope *s = xg_scope_begin();
    xg_manual_seed(5);
    xg_tensor *out[5];
    for (int tr = 0; tr < 4; tr++) {
        bool ta = tr & 1, tb = tr & 2;
        int64_t m = 301, n = 523, k = 600;
        int64_t as[2] = {ta ? k : m, ta ? m : k};
        int64_t bs[2] = {tb ? n : k, tb ? k : n};
        xg_tensor *a = xg_rand_normal(as, 2, 0, 1);
        xg_tensor *b = xg_rand_normal(bs, 2, 0, 1);
        out[tr] = xg_matmul_t(a, b, ta, tb);
    }
    out[4] = xg_matmul(xg_rand_normal(XG_SHAPE(3, 70, 290), 0, 1),
                       xg_rand_normal(XG_SHAPE(3, 290, 45), 0, 1));
    float *all = tu_read_all((const xg_tensor *const *)out, 5, count);
    xg_scope_end(s);
    xg_device_set_current(prev);
    xg_device_close(dev);
    return all;
}

Test(ops, matmul_same_bits_on_any_thread_count)
{
    int64_t n1, n2, n3;
    float *one = matmul_on_threads("1", &n1);
    float *two = matmul_on_threads("2", &n2);
    float *three = matmul_on_threads("3", &n3);
    cr_assert(n1 == n2 && n1 == n3);
    cr_expect(memcmp(one, two, (size_t)n1 * sizeof *one) == 0,
              "1 and 2 threads differ");
    cr_expect(memcmp(one, three, (size_t)n1 * sizeof *one) == 0,
              "1 and 3 threads differ");
    free(one);
    free(two);
    free(three);
}

/* ---- reductions -------------------------------------------------------- */

/* x[i,j,k] = 12i + 4j + k, shape [2,3,4] */
static xg_tensor *iota234(void)
{
    float v[24];
    for (int i = 0; i < 24; i++)
        v[i] = (float)i;
    return tu_f32(v, XG_SHAPE(2, 3, 4));
}

Test(ops, sum_each_axis)
{
    xg_tensor *x = iota234();
    double w0[12], w1[8], w2[6];
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 4; k++)
            w0[j * 4 + k] = 2 * (4 * j + k) + 12;
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++)
            w1[i * 4 + k] = 36 * i + 12 + 3 * k;
    for (int i = 0; i < 2; i++)
        for (int j = 0; j < 3; j++)
            w2[i * 3 + j] = 4 * (12 * i + 4 * j) + 6;
    tu_assert_values(xg_sum(x, 0, false), XG_SHAPE(3, 4), w0, EXACT,
                     "sum axis 0");
    tu_assert_values(xg_sum(x, 1, false), XG_SHAPE(2, 4), w1, EXACT,
                     "sum axis 1");
    tu_assert_values(xg_sum(x, 2, false), XG_SHAPE(2, 3), w2, EXACT,
                     "sum axis 2");
    tu_assert_values(xg_sum(x, 0, true), XG_SHAPE(1, 3, 4), w0, EXACT,
                     "sum axis 0 keepdim");
    tu_assert_values(xg_sum(x, 1, true), XG_SHAPE(2, 1, 4), w1, EXACT,
                     "sum axis 1 keepdim");
    tu_assert_values(xg_sum(x, -1, true), XG_SHAPE(2, 3, 1), w2, EXACT,
                     "sum axis -1 keepdim");
    tu_assert_values(xg_sum(x, -1, false), XG_SHAPE(2, 3), w2, EXACT,
                     "sum axis -1");
    tu_assert_values(xg_sum(x, -3, false), XG_SHAPE(3, 4), w0, EXACT,
                     "sum axis -3");
}

Test(ops, mean_each_axis)
{
    xg_tensor *x = iota234();
    double w1[8], w0[12];
    for (int i = 0; i < 2; i++)
        for (int k = 0; k < 4; k++)
            w1[i * 4 + k] = 12 * i + 4 + k;
    for (int j = 0; j < 3; j++)
        for (int k = 0; k < 4; k++)
            w0[j * 4 + k] = 4 * j + k + 6;
    tu_assert_values(xg_mean(x, 1, false), XG_SHAPE(2, 4), w1, F32TOL,
                     "mean axis 1");
    tu_assert_values(xg_mean(x, -2, true), XG_SHAPE(2, 1, 4), w1, F32TOL,
                     "mean axis -2 keepdim");
    tu_assert_values(xg_mean(x, 0, false), XG_SHAPE(3, 4), w0, F32TOL,
                     "mean axis 0");
    tu_assert_values(xg_mean(x, 2, false), XG_SHAPE(2, 3),
                     (const double[]){1.5, 5.5, 9.5, 13.5, 17.5, 21.5},
                     F32TOL, "mean axis 2");
}

Test(ops, reduce_all)
{
    int64_t none[1] = {0};
    xg_tensor *x = iota234();
    tu_assert_values(xg_sum_all(x), none, 0, (const double[]){276}, EXACT,
                     "sum_all (0+...+23)");
    tu_assert_values(xg_mean_all(x), none, 0, (const double[]){11.5},
                     F32TOL, "mean_all");
    tu_assert_values(xg_max_all(x), none, 0, (const double[]){23}, EXACT,
                     "max_all");
    xg_tensor *neg = tu_f32((const float[]){-5, -3, -4, -7}, XG_SHAPE(2, 2));
    tu_assert_values(xg_max_all(neg), none, 0, (const double[]){-3}, EXACT,
                     "max_all of negatives");
    /* a large sum, to see the accumulation is not naive in f32 beyond
     * reason: 1..4096 = 8390656 is exact in f32 */
    float big[4096];
    for (int i = 0; i < 4096; i++)
        big[i] = (float)(i + 1);
    tu_assert_values(xg_sum_all(tu_f32(big, XG_SHAPE(64, 64))), none, 0,
                     (const double[]){8390656}, EXACT, "sum_all 1..4096");
}

Test(ops, max_and_argmax)
{
    /* [[1,5,3],[7,-2,7]] */
    xg_tensor *x = tu_f32((const float[]){1, 5, 3, 7, -2, 7}, XG_SHAPE(2, 3));
    tu_assert_values(xg_max(x, 1, false), XG_SHAPE(2),
                     (const double[]){5, 7}, EXACT, "max axis 1");
    tu_assert_values(xg_max(x, -1, true), XG_SHAPE(2, 1),
                     (const double[]){5, 7}, EXACT, "max axis -1 keepdim");
    tu_assert_values(xg_max(x, 0, false), XG_SHAPE(3),
                     (const double[]){7, 5, 7}, EXACT, "max axis 0");
    tu_assert_i32(xg_argmax(x, 1, false), XG_SHAPE(2),
                  (const int32_t[]){1, 0}, "argmax axis 1 (first max)");
    tu_assert_i32(xg_argmax(x, 0, false), XG_SHAPE(3),
                  (const int32_t[]){1, 0, 1}, "argmax axis 0");
    tu_assert_i32(xg_argmax(x, -1, true), XG_SHAPE(2, 1),
                  (const int32_t[]){1, 0}, "argmax keepdim");
    tu_assert_i32(xg_argmax(x, -2, true), XG_SHAPE(1, 3),
                  (const int32_t[]){1, 0, 1}, "argmax axis -2 keepdim");
}

Test(ops, argmax_ties_and_negatives)
{
    xg_tensor *x = tu_f32((const float[]){2, 2, 1, 1, 3, 3, -3, -1, -1,
                                          -9, -8, -7},
                          XG_SHAPE(4, 3));
    tu_assert_i32(xg_argmax(x, 1, false), XG_SHAPE(4),
                  (const int32_t[]){0, 1, 1, 2}, "argmax first of ties");
    tu_assert_values(xg_max(x, 1, false), XG_SHAPE(4),
                     (const double[]){2, 3, -1, -7}, EXACT,
                     "max of negative rows");
    /* middle axis of a 3-D tensor: x[i,j,k] = 12i+4j+k, max over j = 8 */
    xg_tensor *y = iota234();
    int32_t two[8] = {2, 2, 2, 2, 2, 2, 2, 2};
    tu_assert_i32(xg_argmax(y, 1, false), XG_SHAPE(2, 4), two,
                  "argmax middle axis");
    tu_assert_values(xg_max(y, 1, false), XG_SHAPE(2, 4),
                     (const double[]){8, 9, 10, 11, 20, 21, 22, 23}, EXACT,
                     "max middle axis");
}

Test(ops, reduce_over_size_one_axis)
{
    xg_tensor *x = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3, 1));
    tu_assert_values(xg_sum(x, 1, false), XG_SHAPE(3),
                     (const double[]){1, 2, 3}, EXACT, "sum over size-1");
    tu_assert_values(xg_max(x, 1, true), XG_SHAPE(3, 1),
                     (const double[]){1, 2, 3}, EXACT, "max over size-1");
    tu_assert_i32(xg_argmax(x, 1, false), XG_SHAPE(3),
                  (const int32_t[]){0, 0, 0}, "argmax over size-1");
    /* a 1-D reduction without keepdim gives a 0-D result */
    int64_t none[1] = {0};
    xg_tensor *v = tu_f32((const float[]){1, 4, 2}, XG_SHAPE(3));
    tu_assert_values(xg_sum(v, 0, false), none, 0, (const double[]){7},
                     EXACT, "sum of 1-D over axis 0");
    tu_assert_values(xg_max(v, 0, true), XG_SHAPE(1), (const double[]){4},
                     EXACT, "max of 1-D keepdim");
}

/* ---- softmax ----------------------------------------------------------- */

static void ref_softmax_rows(const float *x, int64_t rows, int64_t cols,
                             double *sm, double *lsm)
{
    for (int64_t r = 0; r < rows; r++) {
        double m = -INFINITY, s = 0;
        for (int64_t c = 0; c < cols; c++)
            m = fmax(m, x[r * cols + c]);
        for (int64_t c = 0; c < cols; c++)
            s += exp(x[r * cols + c] - m);
        for (int64_t c = 0; c < cols; c++) {
            double z = x[r * cols + c] - m;
            if (sm)
                sm[r * cols + c] = exp(z) / s;
            if (lsm)
                lsm[r * cols + c] = z - log(s);
        }
    }
}

Test(ops, softmax_hand_values)
{
    /* softmax(0, ln2, ln3) = (1,2,3)/6; equal large logits = 1/3 each;
     * (-1000, 0, 1000) = (0, 0, 1) without overflow. */
    xg_tensor *x = tu_f32((const float[]){0, (float)M_LN2, (float)log(3.0),
                                          1000, 1000, 1000, -1000, 0, 1000},
                          XG_SHAPE(3, 3));
    tu_assert_values(xg_softmax(x), XG_SHAPE(3, 3),
                     (const double[]){1.0 / 6, 2.0 / 6, 3.0 / 6, 1.0 / 3,
                                      1.0 / 3, 1.0 / 3, 0, 0, 1},
                     1e-7, 1e-6, "softmax");
    tu_assert_values(xg_log_softmax(x), XG_SHAPE(3, 3),
                     (const double[]){-log(6.0), log(2.0 / 6), log(3.0 / 6),
                                      -log(3.0), -log(3.0), -log(3.0), -2000,
                                      -1000, 0},
                     1e-6, 1e-6, "log_softmax (large inputs stay finite)");
}

Test(ops, softmax_masked_with_minus_infinity)
{
    /* a -inf logit (a masked position) gets probability 0, as in PyTorch */
    xg_tensor *x = tu_f32((const float[]){-INFINITY, 0, 0, 1, -INFINITY, 1},
                          XG_SHAPE(2, 3));
    tu_assert_values(xg_softmax(x), XG_SHAPE(2, 3),
                     (const double[]){0, 0.5, 0.5, 0.5, 0, 0.5}, 1e-7, 1e-6,
                     "softmax with -inf");
    tu_assert_values(xg_log_softmax(x), XG_SHAPE(2, 3),
                     (const double[]){-INFINITY, -M_LN2, -M_LN2, -M_LN2,
                                      -INFINITY, -M_LN2},
                     1e-6, 1e-6, "log_softmax with -inf");
}

Test(ops, softmax_rows_sum_to_one)
{
    float x[5 * 7];
    tu_fill(x, 35, 11, -30, 30);
    double sm[35], lsm[35];
    ref_softmax_rows(x, 5, 7, sm, lsm);
    xg_tensor *t = tu_f32(x, XG_SHAPE(5, 7));
    xg_tensor *s = xg_softmax(t);
    tu_assert_values(s, XG_SHAPE(5, 7), sm, 1e-7, 1e-5, "softmax [5,7]");
    tu_assert_values(xg_log_softmax(t), XG_SHAPE(5, 7), lsm, 1e-5, 1e-6,
                     "log_softmax [5,7]");
    float *v = tu_read(s);
    for (int r = 0; r < 5; r++) {
        double sum = 0;
        for (int c = 0; c < 7; c++)
            sum += v[r * 7 + c];
        cr_expect(fabs(sum - 1) < 1e-5, "row %d sums to %.9g", r, sum);
    }
    free(v);
}

Test(ops, softmax_last_axis_of_3d_and_1d)
{
    float x[2 * 3 * 4];
    tu_fill(x, 24, 12, -3, 3);
    double sm[24], lsm[24];
    ref_softmax_rows(x, 6, 4, sm, lsm);
    xg_tensor *t = tu_f32(x, XG_SHAPE(2, 3, 4));
    tu_assert_values(xg_softmax(t), XG_SHAPE(2, 3, 4), sm, 1e-7, 1e-5,
                     "softmax over last axis of [2,3,4]");
    tu_assert_values(xg_log_softmax(t), XG_SHAPE(2, 3, 4), lsm, 1e-6, 1e-6,
                     "log_softmax over last axis of [2,3,4]");
    xg_tensor *v = tu_f32(x, XG_SHAPE(4));
    tu_assert_values(xg_softmax(v), XG_SHAPE(4), sm, 1e-7, 1e-5,
                     "softmax of 1-D");
}

/* ---- axis reordering and reshape -------------------------------------- */

Test(ops, layer_norm_hand_values)
{
    /* row (1, 2, 3, 4): mean 2.5, biased variance 1.25; row (5, 5, 5, 5):
     * variance 0, so y = 0 * 1/sqrt(eps) = 0 (then the bias) */
    const double eps = 1e-5, s = 1.0 / sqrt(1.25 + eps);
    xg_tensor *x = tu_f32((const float[]){1, 2, 3, 4, 5, 5, 5, 5},
                          XG_SHAPE(2, 4));
    xg_tensor *w = tu_f32((const float[]){1, 2, -1, 0.5f}, XG_SHAPE(4));
    xg_tensor *b = tu_f32((const float[]){0, 1, 0, -2}, XG_SHAPE(4));
    tu_assert_values(xg_layer_norm(x, NULL, NULL, (float)eps),
                     XG_SHAPE(2, 4),
                     (const double[]){-1.5 * s, -0.5 * s, 0.5 * s, 1.5 * s,
                                      0, 0, 0, 0},
                     1e-6, 1e-6, "layer_norm without weight and bias");
    tu_assert_values(xg_layer_norm(x, w, b, (float)eps), XG_SHAPE(2, 4),
                     (const double[]){-1.5 * s, -0.5 * s * 2 + 1, -0.5 * s,
                                      1.5 * s * 0.5 - 2, 0, 1, 0, -2},
                     1e-6, 1e-6, "layer_norm with weight and bias");
    tu_assert_values(xg_layer_norm(x, NULL, b, 0.0f), XG_SHAPE(2, 4),
                     (const double[]){-1.5 / sqrt(1.25), -0.5 / sqrt(1.25) + 1,
                                      0.5 / sqrt(1.25), 1.5 / sqrt(1.25) - 2,
                                      NAN, NAN, NAN, NAN},
                     1e-6, 1e-6, "layer_norm with eps 0 (a constant row: "
                     "0 * inf, NaN as in PyTorch)");
}

Test(ops, layer_norm_over_the_last_axis_of_3d_and_1d)
{
    /* [2, 1, 2]: each pair (a, b) becomes (-1, 1) * |a-b|/2 / sqrt((a-b)^2/4
     * + eps); a 1-D x is one row */
    xg_tensor *x = tu_f32((const float[]){0, 2, 7, 3}, XG_SHAPE(2, 1, 2));
    double s = 1.0 / sqrt(1.0 + 1e-5), t = 2.0 / sqrt(4.0 + 1e-5);
    tu_assert_values(xg_layer_norm(x, NULL, NULL, 1e-5f), XG_SHAPE(2, 1, 2),
                     (const double[]){-s, s, t, -t}, 1e-6, 1e-6,
                     "layer_norm of [2,1,2]");
    xg_tensor *v = tu_f32((const float[]){3, 3, 9}, XG_SHAPE(3));
    double m = 5, sd = sqrt((4 + 4 + 16) / 3.0 + 1e-5);
    tu_assert_values(xg_layer_norm(v, NULL, NULL, 1e-5f), XG_SHAPE(3),
                     (const double[]){(3 - m) / sd, (3 - m) / sd,
                                      (9 - m) / sd},
                     1e-6, 1e-6, "layer_norm of a 1-D x");
}

Test(ops, transpose_2d_and_3d)
{
    xg_tensor *a = tu_f32(mA, XG_SHAPE(2, 3));
    tu_assert_values(xg_transpose(a, 0, 1), XG_SHAPE(3, 2),
                     (const double[]){1, 4, 2, 5, 3, 6}, EXACT, "transpose");
    tu_assert_values(xg_transpose(a, -1, -2), XG_SHAPE(3, 2),
                     (const double[]){1, 4, 2, 5, 3, 6}, EXACT,
                     "transpose negative axes");
    tu_assert_values(xg_transpose(a, 1, 1), XG_SHAPE(2, 3),
                     (const double[]){1, 2, 3, 4, 5, 6}, EXACT,
                     "transpose of an axis with itself is a copy");
    xg_tensor *x = iota234();
    double w[24];
    /* out[k,j,i] = x[i,j,k], shape [4,3,2] */
    for (int k = 0; k < 4; k++)
        for (int j = 0; j < 3; j++)
            for (int i = 0; i < 2; i++)
                w[(k * 3 + j) * 2 + i] = 12 * i + 4 * j + k;
    tu_assert_values(xg_transpose(x, 0, 2), XG_SHAPE(4, 3, 2), w, EXACT,
                     "transpose(0,2) of [2,3,4]");
}

Test(ops, permute_3d)
{
    xg_tensor *x = iota234();
    /* perm {2,0,1}: out[a,b,c] = x[b,c,a], out shape [4,2,3] */
    double w[24];
    for (int a = 0; a < 4; a++)
        for (int b = 0; b < 2; b++)
            for (int c = 0; c < 3; c++)
                w[(a * 2 + b) * 3 + c] = 12 * b + 4 * c + a;
    tu_assert_values(xg_permute(x, (const int[]){2, 0, 1}, 3),
                     XG_SHAPE(4, 2, 3), w, EXACT, "permute {2,0,1}");
    /* perm {1,2,0}: out[a,b,c] = x[c,a,b], shape [3,4,2] */
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 4; b++)
            for (int c = 0; c < 2; c++)
                w[(a * 4 + b) * 2 + c] = 12 * c + 4 * a + b;
    tu_assert_values(xg_permute(x, (const int[]){1, 2, 0}, 3),
                     XG_SHAPE(3, 4, 2), w, EXACT, "permute {1,2,0}");
    double id[24];
    for (int i = 0; i < 24; i++)
        id[i] = i;
    tu_assert_values(xg_permute(x, (const int[]){0, 1, 2}, 3),
                     XG_SHAPE(2, 3, 4), id, EXACT, "identity permute");
}

Test(ops, permute_4d_nchw_to_nhwc)
{
    float x[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++)
        x[i] = (float)i;
    xg_tensor *t = tu_f32(x, XG_SHAPE(2, 3, 2, 2)); /* N C H W */
    double w[24];
    for (int n = 0; n < 2; n++)
        for (int h = 0; h < 2; h++)
            for (int ww = 0; ww < 2; ww++)
                for (int c = 0; c < 3; c++)
                    w[((n * 2 + h) * 2 + ww) * 3 + c] =
                        ((n * 3 + c) * 2 + h) * 2 + ww;
    tu_assert_values(xg_permute(t, (const int[]){0, 2, 3, 1}, 4),
                     XG_SHAPE(2, 2, 2, 3), w, EXACT, "NCHW -> NHWC");
}

Test(ops, reshape_with_inference)
{
    xg_tensor *a = tu_f32(mA, XG_SHAPE(2, 3));
    const double flat[6] = {1, 2, 3, 4, 5, 6};
    tu_assert_values(xg_reshape(a, XG_SHAPE(3, 2)), XG_SHAPE(3, 2), flat,
                     EXACT, "reshape [3,2]");
    tu_assert_values(xg_reshape(a, XG_SHAPE(-1, 2)), XG_SHAPE(3, 2), flat,
                     EXACT, "reshape [-1,2]");
    tu_assert_values(xg_reshape(a, XG_SHAPE(-1)), XG_SHAPE(6), flat, EXACT,
                     "reshape [-1]");
    tu_assert_values(xg_reshape(a, XG_SHAPE(1, 2, -1, 1)),
                     XG_SHAPE(1, 2, 3, 1), flat, EXACT, "reshape [1,2,-1,1]");
    int64_t none[1] = {0};
    xg_tensor *one = tu_f32((const float[]){4}, XG_SHAPE(1, 1));
    tu_assert_values(xg_reshape(one, none, 0), none, 0, (const double[]){4},
                     EXACT, "reshape [1,1] -> 0-D");
    /* the input is untouched */
    tu_assert_values(a, XG_SHAPE(2, 3), flat, EXACT, "reshape input");
}

/* ---- losses ------------------------------------------------------------ */

Test(ops, cross_entropy_hand_value)
{
    /* logits [[1,2,3],[1,1,1]], labels [2,0]:
     * row 0: logsumexp = 3 + ln(1 + e^-1 + e^-2), loss = that - 3
     * row 1: logsumexp = 1 + ln 3, loss = ln 3 */
    xg_tensor *x = tu_f32((const float[]){1, 2, 3, 1, 1, 1}, XG_SHAPE(2, 3));
    xg_tensor *y = tu_i32((const int32_t[]){2, 0}, XG_SHAPE(2));
    double l0 = log(1 + exp(-1.0) + exp(-2.0));
    double l1 = log(3.0);
    int64_t none[1] = {0};
    tu_assert_values(xg_cross_entropy(x, y), none, 0,
                     (const double[]){(l0 + l1) / 2}, 1e-6, 1e-6,
                     "cross_entropy mean over the batch");
}

Test(ops, cross_entropy_vs_log_softmax_reference)
{
    enum { N = 6, C = 5 };
    float x[N * C];
    tu_fill(x, N * C, 21, -4, 4);
    int32_t lab[N] = {0, 4, 2, 2, 1, 3};
    double lsm[N * C];
    ref_softmax_rows(x, N, C, NULL, lsm);
    double want = 0;
    for (int i = 0; i < N; i++)
        want -= lsm[i * C + lab[i]];
    want /= N;
    int64_t none[1] = {0};
    tu_assert_values(xg_cross_entropy(tu_f32(x, XG_SHAPE(N, C)),
                                      tu_i32(lab, XG_SHAPE(N))),
                     none, 0, &want, 1e-6, 1e-6,
                     "cross_entropy = mean(-log_softmax[label])");
}

Test(ops, cross_entropy_large_logits)
{
    xg_tensor *x = tu_f32((const float[]){1000, 0, -1000, 0}, XG_SHAPE(2, 2));
    xg_tensor *y = tu_i32((const int32_t[]){0, 0}, XG_SHAPE(2));
    /* row 0: ~0; row 1: logsumexp(-1000, 0) - (-1000) = 1000 */
    int64_t none[1] = {0};
    tu_assert_values(xg_cross_entropy(x, y), none, 0,
                     (const double[]){500}, 1e-4, 1e-6,
                     "cross_entropy with |logits| = 1000 is finite");
}

Test(ops, cross_entropy_label_out_of_range_is_nan)
{
    xg_tensor *x = tu_f32((const float[]){1, 2, 3, 4}, XG_SHAPE(2, 2));
    xg_tensor *y = tu_i32((const int32_t[]){0, 2}, XG_SHAPE(2));
    xg_tensor *l = xg_cross_entropy(x, y);
    cr_assert_not_null(l, "documented: a bad label gives NaN, not an error");
    cr_expect(isnan(tu_item(l)), "loss with label 2 of 2 classes: %g",
              tu_item(l));
}

Test(ops, mse_loss_values)
{
    int64_t none[1] = {0};
    xg_tensor *p = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3));
    xg_tensor *t = tu_f32((const float[]){1, 0, 5}, XG_SHAPE(3));
    tu_assert_values(xg_mse_loss(p, t), none, 0,
                     (const double[]){8.0 / 3}, 1e-7, 1e-6,
                     "mse_loss (0+4+4)/3");
    /* broadcast: [[1,2],[3,4]] vs [1,1] -> (0+1+4+9)/4 */
    xg_tensor *q = tu_f32((const float[]){1, 2, 3, 4}, XG_SHAPE(2, 2));
    xg_tensor *u = tu_f32((const float[]){1, 1}, XG_SHAPE(2));
    tu_assert_values(xg_mse_loss(q, u), none, 0, (const double[]){3.5},
                     1e-7, 1e-6, "mse_loss broadcast target");
}

/* ---- indexing and selection -------------------------------------------- */
/* Expected values and gradients from torch.index_select, torch.gather,
 * torch.where and Tensor.masked_fill (PyTorch 1.13), for the inputs
 * written here. */

/* The gradient of sum(out * w) with respect to the leaf x. */
static xg_tensor *grad_of(xg_tensor *x, xg_tensor *out, const float *w)
{
    cr_assert_not_null(out, "%s", xg_last_error());
    xg_tensor *wt = tu_f32(w, xg_tensor_shape(out), xg_tensor_ndim(out));
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(out, wt))), XG_OK, "%s",
                 xg_last_error());
    return xg_tensor_grad(x);
}

static xg_tensor *arange_leaf(double first, const int64_t *shape, int ndim)
{
    float v[64];
    int64_t n = tu_numel(shape, ndim);
    cr_assert_leq(n, 64);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(first + (double)i);
    return tu_param(tu_f32(v, shape, ndim));
}

Test(ops, index_select_rows_with_repeats)
{
    /* x = [[1,2,3],[4,5,6],[7,8,9],[10,11,12]], rows 2, 0, 2, 3 */
    xg_tensor *x = arange_leaf(1, XG_SHAPE(4, 3));
    xg_tensor *i = tu_i32((const int32_t[]){2, 0, 2, 3}, XG_SHAPE(4));
    xg_tensor *y = xg_index_select(x, 0, i);
    tu_assert_values(y, XG_SHAPE(4, 3),
                     (const double[]){7, 8, 9, 1, 2, 3, 7, 8, 9, 10, 11, 12},
                     EXACT, "index_select axis 0");
    const float w[] = {1, -2, 0.5f, 3, 1, -1, 0.25f, 4, 2, -3, 1, 1};
    tu_assert_values(grad_of(x, y, w), XG_SHAPE(4, 3),
                     (const double[]){3, 1, -1, 0, 0, 0, 1.25, 2, 2.5, -3,
                                      1, 1},
                     EXACT, "index_select grad: repeated rows add, row 1 "
                     "is never picked");
}

Test(ops, index_select_last_axis)
{
    xg_tensor *x = arange_leaf(1, XG_SHAPE(4, 3));
    xg_tensor *i = tu_i32((const int32_t[]){2, 2, 0}, XG_SHAPE(3));
    xg_tensor *y = xg_index_select(x, -1, i);
    tu_assert_values(y, XG_SHAPE(4, 3),
                     (const double[]){3, 3, 1, 6, 6, 4, 9, 9, 7, 12, 12, 10},
                     EXACT, "index_select axis -1");
    const float w[] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    tu_assert_values(grad_of(x, y, w), XG_SHAPE(4, 3),
                     (const double[]){3, 0, 3, 6, 0, 9, 9, 0, 15, 12, 0, 21},
                     EXACT, "index_select axis -1 grad");
}

Test(ops, index_select_middle_axis_of_3d)
{
    /* x [2,3,2] = 0..11; axis 1, index [1, 1]: x[:, 1, :] twice */
    xg_tensor *x = arange_leaf(0, XG_SHAPE(2, 3, 2));
    xg_tensor *i = tu_i32((const int32_t[]){1, 1}, XG_SHAPE(2));
    tu_assert_values(xg_index_select(x, 1, i), XG_SHAPE(2, 2, 2),
                     (const double[]){2, 3, 2, 3, 8, 9, 8, 9}, EXACT,
                     "index_select axis 1 of [2,3,2]");
}

Test(ops, index_backward_sums_in_index_order)
{
    /* All four picks hit element 0, with g = 1e8, 1, -1e8, 1. In index
     * order in f32: ((0 + 1e8) + 1) = 1e8, + -1e8 = 0, + 1 = 1. (Summing
     * the two 1s first would give 2; the pairs first, 0.) */
    xg_tensor *x = tu_param(tu_f32((const float[]){5, 6}, XG_SHAPE(2)));
    xg_tensor *i = tu_i32((const int32_t[]){0, 0, 0, 0}, XG_SHAPE(4));
    const float w[] = {1e8f, 1, -1e8f, 1};
    tu_assert_values(grad_of(x, xg_index_select(x, 0, i), w), XG_SHAPE(2),
                     (const double[]){1, 0}, EXACT,
                     "index_select grad sums repeats in index order");
    xg_tensor_zero_grad(x);
    tu_assert_values(grad_of(x, xg_gather(x, 0, i), w), XG_SHAPE(2),
                     (const double[]){1, 0}, EXACT,
                     "gather grad sums repeats in index order");
}

Test(ops, gather_along_last_axis)
{
    /* x [3,4] = 0..11; index [[0,3,3],[1,1,1],[2,0,3]] */
    xg_tensor *x = arange_leaf(0, XG_SHAPE(3, 4));
    xg_tensor *i = tu_i32((const int32_t[]){0, 3, 3, 1, 1, 1, 2, 0, 3},
                          XG_SHAPE(3, 3));
    xg_tensor *y = xg_gather(x, 1, i);
    tu_assert_values(y, XG_SHAPE(3, 3),
                     (const double[]){0, 3, 3, 5, 5, 5, 10, 8, 11}, EXACT,
                     "gather axis 1");
    const float w[] = {1, 2, 3, -1, 0.5f, 4, 2, 2, -2};
    tu_assert_values(grad_of(x, y, w), XG_SHAPE(3, 4),
                     (const double[]){1, 0, 0, 5, 0, 3.5, 0, 0, 2, 0, 2, -2},
                     EXACT, "gather axis 1 grad");
}

Test(ops, gather_with_a_smaller_index)
{
    /* x [3,4] = 0..11; axis 0, index [2,3] covers x's first 3 columns */
    xg_tensor *x = arange_leaf(0, XG_SHAPE(3, 4));
    xg_tensor *i = tu_i32((const int32_t[]){2, 1, 0, 2, 2, 1},
                          XG_SHAPE(2, 3));
    xg_tensor *y = xg_gather(x, 0, i);
    tu_assert_values(y, XG_SHAPE(2, 3), (const double[]){8, 5, 2, 8, 9, 6},
                     EXACT, "gather axis 0, index [2,3] of x [3,4]");
    const float w[] = {1, 2, 3, 4, 5, 6};
    tu_assert_values(grad_of(x, y, w), XG_SHAPE(3, 4),
                     (const double[]){0, 0, 3, 0, 0, 2, 6, 0, 5, 5, 0, 0},
                     EXACT, "gather grad: column 3 is never read");
}

Test(ops, where_broadcasts_cond_a_and_b)
{
    /* nonzero is true: cond [[1,0,1],[0,2,-3]]; a [2,1], b [3] */
    xg_tensor *c = tu_i32((const int32_t[]){1, 0, 1, 0, 2, -3},
                          XG_SHAPE(2, 3));
    xg_tensor *a = tu_param(tu_f32((const float[]){1, 2}, XG_SHAPE(2, 1)));
    xg_tensor *b = tu_param(tu_f32((const float[]){10, 20, 30}, XG_SHAPE(3)));
    xg_tensor *y = xg_where(c, a, b);
    tu_assert_values(y, XG_SHAPE(2, 3), (const double[]){1, 20, 1, 10, 2, 2},
                     EXACT, "where");
    const float w[] = {1, 2, 3, 4, 5, 6};
    grad_of(a, y, w);
    tu_assert_values(xg_tensor_grad(a), XG_SHAPE(2, 1),
                     (const double[]){4, 11}, EXACT,
                     "where grad a: w where cond, summed over the row");
    tu_assert_values(xg_tensor_grad(b), XG_SHAPE(3),
                     (const double[]){4, 2, 0}, EXACT,
                     "where grad b: w where not cond, summed over rows");
}

Test(ops, where_does_not_leak_the_other_side)
{
    xg_tensor *c = tu_i32((const int32_t[]){1, 0}, XG_SHAPE(2));
    xg_tensor *a = tu_f32((const float[]){1, NAN}, XG_SHAPE(2));
    xg_tensor *b = tu_f32((const float[]){INFINITY, -2}, XG_SHAPE(2));
    tu_assert_values(xg_where(c, a, b), XG_SHAPE(2),
                     (const double[]){1, -2}, EXACT,
                     "NaN and Inf on the unselected side");
}

Test(ops, masked_fill_broadcasts_x_and_mask)
{
    /* x [3] with a mask [2,3]: the result is [2,3], as in PyTorch */
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3)));
    xg_tensor *m = tu_i32((const int32_t[]){1, 0, 0, 0, 0, 5},
                          XG_SHAPE(2, 3));
    xg_tensor *y = xg_masked_fill(x, m, -0.5f);
    tu_assert_values(y, XG_SHAPE(2, 3),
                     (const double[]){-0.5, 2, 3, 1, 2, -0.5}, EXACT,
                     "masked_fill");
    const float w[] = {1, 2, 3, 4, 5, 6};
    tu_assert_values(grad_of(x, y, w), XG_SHAPE(3),
                     (const double[]){4, 7, 3}, EXACT,
                     "masked_fill grad: w where the mask is 0, summed");
}

Test(ops, masked_fill_with_minus_infinity_then_softmax)
{
    /* the attention-mask idiom: masked positions get probability 0 */
    xg_tensor *x = tu_f32((const float[]){0, 0, 0, 0}, XG_SHAPE(1, 4));
    xg_tensor *m = tu_i32((const int32_t[]){0, 1, 0, 1}, XG_SHAPE(4));
    tu_assert_values(xg_softmax(xg_masked_fill(x, m, -INFINITY)),
                     XG_SHAPE(1, 4), (const double[]){0.5, 0, 0.5, 0},
                     F32TOL, "softmax over a masked row");
}

/* ---- cross_entropy's ignore_index, embedding, weight tying -------------
 * Inputs and expected values from PyTorch 1.13 (F.cross_entropy with
 * ignore_index, F.embedding, and their backward) in float64, generated by
 * tests/ce_embedding_torch.py into tests/ce_embedding_ref.h. */
#include "ce_embedding_ref.h"

static const int64_t scalar_shape[1] = {0};

/* loss(logits, labels) and d loss / d logits against torch's. */
static void check_ce(int32_t ignore_index, const int32_t *labels,
                     const double *loss, const double *grad, const char *what)
{
    xg_tensor *x = tu_param(tu_f32(ce_logits, XG_SHAPE(CE_N, CE_C)));
    xg_tensor *l = xg_cross_entropy_ignore(x, tu_i32(labels, XG_SHAPE(CE_N)),
                                           ignore_index);
    tu_assert_values(l, scalar_shape, 0, loss, 1e-6, 1e-6, what);
    cr_assert_eq(xg_backward(l), XG_OK, "%s", xg_last_error());
    tu_assert_values(xg_tensor_grad(x), XG_SHAPE(CE_N, CE_C), grad, 1e-7,
                     1e-5, what);
}

Test(ops, cross_entropy_ignores_label_minus_100)
{
    /* Rows 1 and 4 labelled -100: the mean is over the other four, and
     * those rows get a zero gradient. (Before ignore_index existed, -100
     * made the loss NaN: this change is intended, PyTorch's default.) */
    check_ce(XG_IGNORE_INDEX, ce_labels, ce_loss, ce_grad,
             "cross_entropy, label -100 in rows 1 and 4");
    xg_tensor *x = tu_f32(ce_logits, XG_SHAPE(CE_N, CE_C));
    tu_assert_values(xg_cross_entropy(x, tu_i32(ce_labels, XG_SHAPE(CE_N))),
                     scalar_shape, 0, ce_loss, 1e-6, 1e-6,
                     "xg_cross_entropy ignores -100 by default");
}

Test(ops, cross_entropy_ignore_index_is_a_class)
{
    check_ce(2, ce_labels_ignore2, ce_loss_ignore2, ce_grad_ignore2,
             "cross_entropy, ignore_index 2 in rows 0 and 2");
    /* -100 is then an invalid label like any other: NaN */
    xg_tensor *x = tu_f32(ce_logits, XG_SHAPE(CE_N, CE_C));
    xg_tensor *l = xg_cross_entropy_ignore(
        x, tu_i32(ce_labels, XG_SHAPE(CE_N)), 2);
    cr_expect(isnan(tu_item(l)), "label -100 with ignore_index 2: %g",
              tu_item(l));
}

Test(ops, cross_entropy_every_row_ignored_is_nan)
{
    /* torch: 0 / 0 = NaN, and a zero gradient (not NaN) */
    int32_t all[CE_N], all2[CE_N];
    for (int i = 0; i < CE_N; i++) {
        all[i] = XG_IGNORE_INDEX;
        all2[i] = 3;
    }
    double nan = NAN, zeros[CE_N * CE_C] = {0};
    check_ce(XG_IGNORE_INDEX, all, &nan, zeros, "every row labelled -100");
    check_ce(3, all2, &nan, zeros, "every row labelled ignore_index 3");
}

Test(ops, embedding_values_and_grad_with_repeats)
{
    xg_tensor *w = tu_param(tu_f32(emb_weight, XG_SHAPE(EMB_NUM, EMB_DIM)));
    xg_tensor *y = xg_embedding(w, tu_i32(emb_index, XG_SHAPE(2, 4)));
    tu_assert_values(y, XG_SHAPE(2, 4, EMB_DIM), emb_out, EXACT,
                     "embedding [5,3] by index [2,4]: the rows, [2,4,3]");
    tu_assert_values(grad_of(w, y, emb_w), XG_SHAPE(EMB_NUM, EMB_DIM),
                     emb_grad, 1e-6, 1e-6,
                     "embedding grad: row 1 four times, row 2 never");
    /* a 0-D index gives one row, [dim] */
    tu_assert_values(xg_embedding(w, tu_i32((const int32_t[]){4}, NULL, 0)),
                     XG_SHAPE(EMB_DIM), emb_out + 4 * EMB_DIM, EXACT,
                     "embedding by a 0-D index");
}

Test(ops, tied_weight_gets_both_gradients)
{
    /* GPT-2's head: h = tanh(1.5 embedding(W, tokens)), logits = h W^T; W
     * accumulates the gradient of both uses. */
    xg_tensor *w = tu_param(tu_f32(tie_weight, XG_SHAPE(TIE_V, TIE_D)));
    xg_tensor *h = xg_tanh(xg_mul_scalar(
        xg_embedding(w, tu_i32(tie_tokens, XG_SHAPE(TIE_T))), 1.5f));
    xg_tensor *l = xg_cross_entropy(xg_matmul_t(h, w, false, true),
                                    tu_i32(tie_targets, XG_SHAPE(TIE_T)));
    tu_assert_values(l, scalar_shape, 0, tie_loss, 1e-6, 1e-6,
                     "tied head loss");
    cr_assert_eq(xg_backward(l), XG_OK, "%s", xg_last_error());
    tu_assert_values(xg_tensor_grad(w), XG_SHAPE(TIE_V, TIE_D), tie_grad,
                     1e-6, 1e-5, "tied weight's gradient (torch's)");
}

/* ---- tensor creation and access --------------------------------------- */

Test(tensor, zeros_ones_full)
{
    tu_assert_values(xg_zeros(XG_SHAPE(2, 3)), XG_SHAPE(2, 3),
                     (const double[]){0, 0, 0, 0, 0, 0}, EXACT, "zeros");
    tu_assert_values(xg_ones(XG_SHAPE(3)), XG_SHAPE(3),
                     (const double[]){1, 1, 1}, EXACT, "ones");
    tu_assert_values(xg_full(XG_SHAPE(1, 2, 1, 2), -2.5f),
                     XG_SHAPE(1, 2, 1, 2), (const double[]){-2.5, -2.5, -2.5,
                                                            -2.5},
                     EXACT, "full");
    int64_t none[1] = {0};
    xg_tensor *s = xg_full(none, 0, 3.25f);
    tu_assert_values(s, none, 0, (const double[]){3.25}, EXACT, "0-D full");
    cr_expect_eq(xg_tensor_numel(s), 1);
    cr_expect_float_eq(tu_item(s), 3.25f, 0);
    xg_tensor *z = xg_zeros(XG_SHAPE(2, 1, 1, 1, 1, 3));
    tu_assert_shape(z, XG_SHAPE(2, 1, 1, 1, 1, 3), "6-D zeros");
}

Test(tensor, from_data_f32_and_i32)
{
    float f[4] = {1.5f, -2, 1e30f, -0.0f};
    xg_tensor *t = tu_f32(f, XG_SHAPE(4));
    cr_expect_eq(xg_tensor_dtype(t), XG_F32);
    float *back = tu_read(t);
    cr_expect_eq(memcmp(back, f, sizeof f), 0, "f32 round trip bit-exact");
    free(back);
    int32_t i[6] = {0, -1, 2147483647, -2147483647 - 1, 7, 42};
    xg_tensor *u = tu_i32(i, XG_SHAPE(3, 2));
    cr_expect_eq(xg_tensor_dtype(u), XG_I32);
    tu_assert_i32(u, XG_SHAPE(3, 2), i, "i32 round trip");
    /* the host array may be reused at once */
    f[0] = 99;
    float *again = tu_read(t);
    cr_expect_float_eq(again[0], 1.5f, 0, "from_data copies");
    free(again);
}

Test(tensor, shape_queries)
{
    xg_tensor *t = xg_zeros(XG_SHAPE(2, 3, 4));
    cr_assert_not_null(t);
    cr_expect_eq(xg_tensor_ndim(t), 3);
    cr_expect_eq(xg_tensor_numel(t), 24);
    cr_expect_eq(xg_tensor_dim(t, 0), 2);
    cr_expect_eq(xg_tensor_dim(t, 2), 4);
    cr_expect_eq(xg_tensor_dim(t, -1), 4, "negative axis counts from end");
    cr_expect_eq(xg_tensor_dim(t, -3), 2);
    cr_expect_eq(xg_tensor_dim(t, 3), 0, "out of range gives 0");
    cr_expect_eq(xg_tensor_dim(t, -4), 0, "out of range gives 0");
    const int64_t *s = xg_tensor_shape(t);
    cr_assert_not_null(s);
    cr_expect(s[0] == 2 && s[1] == 3 && s[2] == 4);
    cr_expect_eq(xg_tensor_device(t), xg_device_current(),
                 "new tensors live on the current device");
    cr_expect_str_eq(xg_device_backend(xg_tensor_device(t)), "cpu");
}

Test(tensor, write_read_item)
{
    xg_tensor *t = xg_zeros(XG_SHAPE(2, 2));
    cr_assert_not_null(t);
    float v[4] = {1, 2, 3, 4};
    cr_assert_eq(xg_tensor_write(t, v, sizeof v), XG_OK, "%s",
                 xg_last_error());
    tu_assert_values(t, XG_SHAPE(2, 2), (const double[]){1, 2, 3, 4}, EXACT,
                     "after write");
    /* a write after queued ops is seen by later ops */
    xg_tensor *d = xg_mul_scalar(t, 2);
    float w[4] = {-1, -1, -1, -1};
    cr_assert_eq(xg_tensor_write(t, w, sizeof w), XG_OK);
    tu_assert_values(d, XG_SHAPE(2, 2), (const double[]){2, 4, 6, 8}, EXACT,
                     "op result made before the write keeps its values");
    tu_assert_values(xg_add_scalar(t, 1), XG_SHAPE(2, 2),
                     (const double[]){0, 0, 0, 0}, EXACT,
                     "op made after the write sees it");
    xg_tensor *one = tu_f32((const float[]){-7.5f}, XG_SHAPE(1, 1));
    cr_expect_float_eq(tu_item(one), -7.5f, 0, "item of a [1,1] tensor");
}

Test(tensor, detach_shares_values_reshape_shares_storage)
{
    xg_tensor *x = tu_param(tu_f32((const float[]){1, 2, 3, 4},
                                   XG_SHAPE(2, 2)));
    xg_tensor *d = xg_detach(x);
    cr_assert_not_null(d);
    cr_expect(!xg_tensor_requires_grad(d), "detach cuts off autograd");
    tu_assert_values(d, XG_SHAPE(2, 2), (const double[]){1, 2, 3, 4}, EXACT,
                     "detach values");
    xg_tensor *r = xg_reshape(x, XG_SHAPE(4));
    cr_assert_not_null(r);
    float w[4] = {5, 6, 7, 8};
    cr_assert_eq(xg_tensor_write(x, w, sizeof w), XG_OK);
    tu_assert_values(r, XG_SHAPE(4), (const double[]){5, 6, 7, 8}, EXACT,
                     "reshape shares storage (documented)");
    tu_assert_values(d, XG_SHAPE(2, 2), (const double[]){5, 6, 7, 8}, EXACT,
                     "detach shares storage (documented)");
}

Test(tensor, to_same_device_copies)
{
    xg_tensor *x = tu_f32((const float[]){1, 2, 3}, XG_SHAPE(3));
    xg_tensor *y = xg_tensor_to(x, xg_device_current());
    tu_assert_values(y, XG_SHAPE(3), (const double[]){1, 2, 3}, EXACT,
                     "tensor_to");
    float w[3] = {0, 0, 0};
    cr_assert_eq(xg_tensor_write(x, w, sizeof w), XG_OK);
    tu_assert_values(y, XG_SHAPE(3), (const double[]){1, 2, 3}, EXACT,
                     "tensor_to makes a copy");
}

Test(tensor, device_and_backends)
{
    const char *names[8] = {0};
    int n = xg_backends(names, 8);
    cr_assert_geq(n, 1);
    cr_expect_str_eq(names[0], "cpu", "cpu is listed first");
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    cr_assert_not_null(dev);
    cr_expect_str_eq(xg_device_backend(dev), "cpu");
    cr_expect_not_null(xg_device_name(dev));
    cr_expect_eq(xg_device_sync(dev), XG_OK);
    xg_device_close(dev);
    xg_device *dev0 = NULL;
    cr_assert_eq(xg_device_open("cpu:0", &dev0), XG_OK, "%s",
                 xg_last_error());
    xg_device_close(dev0);
    xg_device_info info[4];
    int count = -1;
    cr_assert_eq(xg_backend_devices("cpu", info, 4, &count), XG_OK);
    cr_expect_geq(count, 1);
    cr_expect(info[0].is_software, "the cpu device is a software device");
    cr_expect_str_eq(xg_device_backend(xg_device_current()), "cpu",
                     "XGRAD_BACKEND=cpu selects the cpu backend");
}

Test(tensor, scopes_free_and_keep)
{
    xg_scope *outer = xg_scope_begin();
    cr_assert_not_null(outer);
    xg_tensor *kept = xg_tensor_keep(xg_ones(XG_SHAPE(3)));
    xg_scope *inner = xg_scope_begin();
    cr_assert_not_null(inner);
    xg_tensor *tmp = xg_add_scalar(kept, 1);
    xg_tensor *freed_early = xg_mul_scalar(kept, 3);
    xg_tensor_free(freed_early); /* releases the scope's hold, once */
    tu_assert_values(tmp, XG_SHAPE(3), (const double[]){2, 2, 2}, EXACT,
                     "scoped temporary");
    xg_scope_end(outer); /* closes inner too */
    tu_assert_values(kept, XG_SHAPE(3), (const double[]){1, 1, 1}, EXACT,
                     "a kept tensor outlives its scope");
    cr_expect_null(xg_tensor_keep(NULL));
    xg_scope_end(NULL);
    xg_tensor_free(NULL);
    xg_tensor_free(kept);
}

/* ---- random numbers ---------------------------------------------------- */

/* Philox4x32-10 from Salmon et al. (2011), written out here. */
static void philox4x32_10(const uint32_t ctr_in[4], const uint32_t key_in[2],
                          uint32_t out[4])
{
    uint32_t c[4] = {ctr_in[0], ctr_in[1], ctr_in[2], ctr_in[3]};
    uint32_t k[2] = {key_in[0], key_in[1]};
    for (int r = 0; r < 10; r++) {
        if (r > 0) {
            k[0] += 0x9E3779B9u;
            k[1] += 0xBB67AE85u;
        }
        uint64_t p0 = (uint64_t)0xD2511F53u * c[0];
        uint64_t p1 = (uint64_t)0xCD9E8D57u * c[2];
        uint32_t hi0 = (uint32_t)(p0 >> 32), lo0 = (uint32_t)p0;
        uint32_t hi1 = (uint32_t)(p1 >> 32), lo1 = (uint32_t)p1;
        uint32_t n0 = hi1 ^ c[1] ^ k[0], n2 = hi0 ^ c[3] ^ k[1];
        c[0] = n0;
        c[1] = lo1;
        c[2] = n2;
        c[3] = lo0;
    }
    memcpy(out, c, sizeof c);
}

Test(rng, reference_philox_known_answers)
{
    /* Random123 kat_vectors, to validate the reference used below. */
    uint32_t out[4];
    philox4x32_10((const uint32_t[]){0, 0, 0, 0}, (const uint32_t[]){0, 0},
                  out);
    cr_assert(out[0] == 0x6627e8d5u && out[1] == 0xe169c58du &&
              out[2] == 0xbc57ac4cu && out[3] == 0x9b00dbd8u);
    philox4x32_10((const uint32_t[]){0x243f6a88u, 0x85a308d3u, 0x13198a2eu,
                                     0x03707344u},
                  (const uint32_t[]){0xa4093822u, 0x299f31d0u}, out);
    cr_assert(out[0] == 0xd16cfe09u && out[1] == 0x94fdccebu &&
              out[2] == 0x5001e420u && out[3] == 0x24126ea1u);
}

static void philox_block(uint64_t seed, uint64_t block, uint32_t w[4])
{
    uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
    uint32_t key[2] = {(uint32_t)seed, (uint32_t)(seed >> 32)};
    philox4x32_10(ctr, key, w);
}

Test(rng, uniform_matches_philox_spec)
{
    /* api/core/backend.h: element i uses block (offset + i/4), word i%4,
     * u = (word >> 8) * 2^-24, out = low + (high - low) * u; a fresh seed
     * starts at offset 0. */
    const uint64_t seed = 0x0123456789ABCDEFull;
    enum { N = 10 };
    xg_manual_seed(seed);
    xg_tensor *t = xg_rand_uniform(XG_SHAPE(N), -1, 3);
    double want[N];
    for (int i = 0; i < N; i++) {
        uint32_t w[4];
        philox_block(seed, (uint64_t)i / 4, w);
        double u = (double)(w[i % 4] >> 8) * 0x1.0p-24;
        want[i] = -1 + 4 * u;
    }
    tu_assert_values(t, XG_SHAPE(N), want, 1e-6, 1e-6,
                     "rand_uniform = Philox4x32-10 bits as documented");
}

Test(rng, normal_matches_philox_spec)
{
    const uint64_t seed = 42;
    enum { N = 9 };
    xg_manual_seed(seed);
    xg_tensor *t = xg_rand_normal(XG_SHAPE(3, 3), 0.5f, 2);
    double want[N];
    for (int i = 0; i < N; i++) {
        uint32_t w[4];
        philox_block(seed, (uint64_t)i / 4, w);
        int j = (i % 4) / 2;
        double u1 = ((double)(w[2 * j] >> 8) + 1) * 0x1.0p-24;
        double u2 = (double)(w[2 * j + 1] >> 8) * 0x1.0p-24;
        double r = sqrt(-2 * log(u1));
        double z = (i % 2 == 0) ? r * cos(2 * M_PI * u2)
                                : r * sin(2 * M_PI * u2);
        want[i] = 0.5 + 2 * z;
    }
    tu_assert_values(t, XG_SHAPE(3, 3), want, 1e-5, 1e-5,
                     "rand_normal = Box-Muller on Philox bits as documented");
}

static void moments(const float *v, int64_t n, double *mean, double *sd,
                    double *mn, double *mx)
{
    double s = 0, s2 = 0;
    *mn = INFINITY;
    *mx = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        s += v[i];
        *mn = fmin(*mn, v[i]);
        *mx = fmax(*mx, v[i]);
    }
    *mean = s / n;
    for (int64_t i = 0; i < n; i++)
        s2 += (v[i] - *mean) * (v[i] - *mean);
    *sd = sqrt(s2 / (n - 1));
}

Test(rng, uniform_range_and_moments)
{
    enum { N = 100000 };
    xg_manual_seed(1);
    xg_tensor *t = xg_rand_uniform(XG_SHAPE(N), -2, 3);
    tu_assert_shape(t, XG_SHAPE(N), "rand_uniform");
    float *v = tu_read(t);
    double mean, sd, mn, mx;
    moments(v, N, &mean, &sd, &mn, &mx);
    cr_expect_geq(mn, -2.0, "min %g below low", mn);
    cr_expect_lt(mx, 3.0, "max %g not below high", mx);
    /* mean 0.5 (s.e. 0.0046), sd 5/sqrt(12) = 1.4434 */
    cr_expect(fabs(mean - 0.5) < 0.03, "mean %g, expected 0.5", mean);
    cr_expect(fabs(sd - 5 / sqrt(12.0)) < 0.02, "sd %g, expected 1.443", sd);
    /* every tenth of the range gets about a tenth of the samples */
    int bins[10] = {0};
    for (int i = 0; i < N; i++)
        bins[(int)((v[i] + 2) / 0.5)]++;
    for (int b = 0; b < 10; b++)
        cr_expect(abs(bins[b] - N / 10) < 600, "bin %d has %d samples", b,
                  bins[b]);
    free(v);
}

Test(rng, normal_moments)
{
    enum { N = 100001 }; /* odd: the last Box-Muller pair is cut */
    xg_manual_seed(2);
    xg_tensor *t = xg_rand_normal(XG_SHAPE(N), 1, 2);
    float *v = tu_read(t);
    double mean, sd, mn, mx;
    moments(v, N, &mean, &sd, &mn, &mx);
    cr_expect(isfinite(mn) && isfinite(mx), "non-finite normal sample");
    cr_expect(fabs(mean - 1) < 0.04, "mean %g, expected 1", mean);
    cr_expect(fabs(sd - 2) < 0.03, "sd %g, expected 2", sd);
    int within = 0;
    for (int i = 0; i < N; i++)
        within += fabs(v[i] - 1) < 2;
    double frac = (double)within / N;
    cr_expect(fabs(frac - 0.6827) < 0.01, "P(|z|<1) = %g, expected 0.6827",
              frac);
    free(v);
    xg_tensor *z = xg_rand_normal(XG_SHAPE(5), 3, 0);
    tu_assert_values(z, XG_SHAPE(5), (const double[]){3, 3, 3, 3, 3}, EXACT,
                     "std 0 gives the mean");
}

static float *draw_uniform(uint64_t seed, int64_t n)
{
    xg_manual_seed(seed);
    return tu_read(xg_rand_uniform(XG_SHAPE(n), 0, 1));
}

Test(rng, same_seed_same_values_different_seed_differs)
{
    enum { N = 1000 };
    float *a = draw_uniform(7, N), *b = draw_uniform(7, N);
    float *c = draw_uniform(8, N);
    cr_expect_eq(memcmp(a, b, sizeof(float) * N), 0,
                 "same seed must give the same values");
    int same = 0;
    for (int i = 0; i < N; i++)
        same += a[i] == c[i];
    cr_expect_lt(same, 5, "seeds 7 and 8 gave %d equal values of %d", same,
                 N);
    free(a);
    free(b);
    free(c);
}

Test(rng, successive_draws_differ_and_state_restores)
{
    enum { N = 64 };
    xg_manual_seed(3);
    float *first = tu_read(xg_rand_uniform(XG_SHAPE(N), 0, 1));
    uint64_t seed = 0, offset = 0;
    xg_rng_state(&seed, &offset);
    cr_expect_eq(seed, 3);
    cr_expect_gt(offset, 0, "the counter advances after a draw");
    float *second = tu_read(xg_rand_uniform(XG_SHAPE(N), 0, 1));
    int same = 0;
    for (int i = 0; i < N; i++)
        same += first[i] == second[i];
    cr_expect_lt(same, 2, "two draws in a row gave the same values");
    xg_rng_set_state(seed, offset);
    float *again = tu_read(xg_rand_uniform(XG_SHAPE(N), 0, 1));
    cr_expect_eq(memcmp(second, again, sizeof(float) * N), 0,
                 "restoring the state replays the draw");
    xg_rng_set_state(0, 0);
    uint64_t s2 = 1, o2 = 1;
    xg_rng_state(&s2, &o2);
    cr_expect(s2 == 0 && o2 == 0);
    free(first);
    free(second);
    free(again);
}

/* ---- views ------------------------------------------------------------------ */

static const float grid12[12] = {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11};

Test(ops, views_hand_values)
{
    xg_tensor *x = tu_f32(grid12, XG_SHAPE(3, 4));
    xg_tensor *t = xg_transpose(x, 0, 1);
    cr_expect(!xg_tensor_is_contiguous(t), "a transpose is a view");
    cr_expect(xg_tensor_is_contiguous(x));
    tu_assert_values(t, XG_SHAPE(4, 3),
                     (const double[]){0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11},
                     EXACT, "transpose");
    tu_assert_values(xg_narrow(x, 1, 1, 2), XG_SHAPE(3, 2),
                     (const double[]){1, 2, 5, 6, 9, 10}, EXACT,
                     "narrow(1, 1, 2)");
    tu_assert_values(xg_narrow(t, 0, 2, 2), XG_SHAPE(2, 3),
                     (const double[]){2, 6, 10, 3, 7, 11}, EXACT,
                     "narrow of a transpose");
    tu_assert_values(xg_select(x, 0, -1), XG_SHAPE(4),
                     (const double[]){8, 9, 10, 11}, EXACT, "select(0, -1)");
    tu_assert_values(xg_select(t, 1, 1), XG_SHAPE(4),
                     (const double[]){4, 5, 6, 7}, EXACT,
                     "select of a transpose");
    tu_assert_values(xg_expand(xg_select(x, 1, 0), XG_SHAPE(2, 3)),
                     XG_SHAPE(2, 3), (const double[]){0, 4, 8, 0, 4, 8}, EXACT,
                     "expand a column to 2 rows");
    tu_assert_values(xg_squeeze(xg_unsqueeze(x, 1), 1), XG_SHAPE(3, 4),
                     (const double[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11},
                     EXACT, "unsqueeze then squeeze");
    tu_assert_values(xg_reshape(t, XG_SHAPE(12)), XG_SHAPE(12),
                     (const double[]){0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11},
                     EXACT, "reshape of a view reads it in its own order");
    xg_tensor *c = xg_contiguous(t);
    cr_expect(xg_tensor_is_contiguous(c));
    tu_assert_values(xg_add(t, xg_contiguous(t)), XG_SHAPE(4, 3),
                     (const double[]){0, 8, 16, 2, 10, 18, 4, 12, 20, 6, 14,
                                      22},
                     EXACT, "a kernel reads a view and its copy alike");
}

/* A view reads its base's current values: in-place writes to the storage
 * (host writes, optimizer steps) make its contiguous copy again. */
Test(ops, views_follow_writes_to_their_storage)
{
    xg_tensor *x = tu_f32(grid12, XG_SHAPE(3, 4));
    xg_tensor *n = xg_narrow(xg_transpose(x, 0, 1), 1, 1, 1);
    tu_assert_values(n, XG_SHAPE(4, 1), (const double[]){4, 5, 6, 7}, EXACT,
                     "before the write");
    float neg[12];
    for (int i = 0; i < 12; i++)
        neg[i] = -grid12[i];
    cr_assert_eq(xg_tensor_write(x, neg, sizeof neg), XG_OK);
    tu_assert_values(n, XG_SHAPE(4, 1), (const double[]){-4, -5, -6, -7},
                     EXACT, "after the write");
    cr_expect_eq(xg_tensor_write(n, neg, 4 * sizeof *neg), XG_ERR_INVALID_ARG,
                 "a strided view cannot be written from the host");

    xg_tensor *p = tu_f32((const float[]){1, 2, 3, 4}, XG_SHAPE(2, 2));
    cr_assert_eq(xg_tensor_set_requires_grad(p, true), XG_OK);
    xg_tensor *pt = xg_transpose(p, 0, 1);
    tu_assert_values(pt, XG_SHAPE(2, 2), (const double[]){1, 3, 2, 4}, EXACT,
                     "transpose of a parameter");
    xg_sgd_options o = xg_sgd_defaults();
    o.lr = 1.0f;
    xg_optim *opt = xg_optim_sgd(&p, 1, &o);
    cr_assert_not_null(opt, "%s", xg_last_error());
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul_scalar(p, 0.5f))), XG_OK);
    cr_assert_eq(xg_optim_step(opt), XG_OK); /* p -= 1 * 0.5 */
    xg_optim_free(opt);
    tu_assert_values(pt, XG_SHAPE(2, 2), (const double[]){0.5, 2.5, 1.5, 3.5},
                     EXACT, "after an optimizer step on the base");
}

Test(ops, concat_stack_split_chunk)
{
    xg_tensor *x = tu_f32(grid12, XG_SHAPE(3, 4));
    xg_tensor *y = tu_f32((const float[]){-1, -2, -3, -4}, XG_SHAPE(1, 4));
    xg_tensor *rows[2] = {x, y};
    tu_assert_values(xg_concat(rows, 2, 0), XG_SHAPE(4, 4),
                     (const double[]){0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11,
                                      -1, -2, -3, -4},
                     EXACT, "concat along axis 0");
    xg_tensor *cols[3] = {xg_narrow(x, 1, 3, 1), xg_transpose(xg_narrow(
                              xg_transpose(x, 0, 1), 0, 0, 2), 0, 1),
                          x};
    tu_assert_values(xg_concat(cols, 3, -1), XG_SHAPE(3, 7),
                     (const double[]){3, 0, 1, 0, 1, 2, 3,
                                      7, 4, 5, 4, 5, 6, 7,
                                      11, 8, 9, 8, 9, 10, 11},
                     EXACT, "concat of views along the last axis");
    xg_tensor *pair[2] = {xg_select(x, 0, 0), xg_select(x, 0, 2)};
    tu_assert_values(xg_stack(pair, 2, 1), XG_SHAPE(4, 2),
                     (const double[]){0, 8, 1, 9, 2, 10, 3, 11}, EXACT,
                     "stack on a new axis 1");
    xg_tensor *parts[3];
    cr_assert_eq(xg_split(x, 1, XG_SHAPE(1, 3), parts), XG_OK);
    tu_assert_values(parts[1], XG_SHAPE(3, 3),
                     (const double[]){1, 2, 3, 5, 6, 7, 9, 10, 11}, EXACT,
                     "split [1,3]: second piece");
    int n = 0;
    cr_assert_eq(xg_chunk(x, 3, 1, parts, &n), XG_OK);
    cr_expect_eq(n, 2, "chunk(4 into 3) gives pieces of 2, as torch.chunk");
    tu_assert_values(parts[1], XG_SHAPE(3, 2),
                     (const double[]){2, 3, 6, 7, 10, 11}, EXACT,
                     "chunk: second piece");
    cr_expect_eq(xg_split(x, 1, XG_SHAPE(2, 3), parts), XG_ERR_SHAPE,
                 "sizes that do not add up");
    xg_tensor *bad[2] = {x, xg_transpose(x, 0, 1)};
    cr_expect_null(xg_concat(bad, 2, 0));
    cr_expect_eq(xg_last_status(), XG_ERR_SHAPE);
}

/* ---- fused attention ------------------------------------------------------ */

Test(ops, attention_defaults_and_small_values)
{
    xg_attention_params d = xg_attention_defaults();
    cr_expect(d.causal && d.causal_offset == 0 && d.scale == 0.0f &&
              d.dropout_p == 0.0f && !d.training);
    /* One head, D = 1, q = k = 1 and v = (1, 3): causal row 0 sees key 0
     * (out 1), row 1 sees both with equal weights (out 2); without the
     * mask both rows give 2. */
    xg_tensor *q = tu_f32((const float[]){1, 1}, XG_SHAPE(1, 1, 2, 1));
    xg_tensor *v = tu_f32((const float[]){1, 3}, XG_SHAPE(1, 1, 2, 1));
    tu_assert_values(xg_attention(q, q, v, NULL), XG_SHAPE(1, 1, 2, 1),
                     (const double[]){1, 2}, 1e-6, 0, "causal");
    xg_attention_params full = {.causal = false};
    tu_assert_values(xg_attention(q, q, v, &full), XG_SHAPE(1, 1, 2, 1),
                     (const double[]){2, 2}, 1e-6, 0, "not causal");
    /* offset -1: row 0 sees no key (zeros), row 1 sees key 0 */
    xg_attention_params neg = {.causal = true, .causal_offset = -1};
    tu_assert_values(xg_attention(q, q, v, &neg), XG_SHAPE(1, 1, 2, 1),
                     (const double[]){0, 1}, 0, 0, "offset -1");
}

Test(ops, attention_dropout_only_when_training)
{
    int64_t shape[4] = {2, 2, 9, 4};
    xg_manual_seed(5);
    xg_tensor *q = xg_rand_normal(shape, 4, 0, 1);
    xg_tensor *k = xg_rand_normal(shape, 4, 0, 1);
    xg_tensor *v = xg_rand_normal(shape, 4, 0, 1);
    xg_attention_params eval = {.causal = true, .dropout_p = 0.5f};
    float *a = tu_read(xg_attention(q, k, v, &eval));
    float *b = tu_read(xg_attention(q, k, v, NULL));
    cr_expect(memcmp(a, b, 2 * 2 * 9 * 4 * sizeof *a) == 0,
              "evaluation mode applies no dropout");
    /* Training: the same seed gives the same bits; another, other ones. */
    xg_attention_params train = eval;
    train.training = true;
    xg_manual_seed(9);
    float *c = tu_read(xg_attention(q, k, v, &train));
    xg_manual_seed(9);
    float *d = tu_read(xg_attention(q, k, v, &train));
    float *e = tu_read(xg_attention(q, k, v, &train));
    cr_expect(memcmp(c, d, 2 * 2 * 9 * 4 * sizeof *c) == 0,
              "the mask is a function of the generator's state");
    cr_expect(memcmp(c, e, 2 * 2 * 9 * 4 * sizeof *c) != 0,
              "a second call draws a new mask");
    cr_expect(memcmp(a, c, 2 * 2 * 9 * 4 * sizeof *c) != 0,
              "training mode drops weights");
    free(a);
    free(b);
    free(c);
    free(d);
    free(e);
}

/* out, dq, dk and dv of attention with these options on a CPU device
 * opened with `threads` threads, one after the other in one array of
 * *count floats. q [2, 3, 150, 40], k and v [2, 3, 170, 40]: several
 * blocks of rows, the last ones partial, head size not a multiple of the
 * vector width. */
static float *attention_on_threads(const char *threads,
                                   const xg_attention_params *p,
                                   int64_t *count)
{
    setenv("XGRAD_NUM_THREADS", threads, 1);
    xg_device *dev;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device *prev = xg_device_current();
    xg_device_set_current(dev);
    xg_scope *s = xg_scope_begin();
    int64_t qs[4] = {2, 3, 150, 40}, ks[4] = {2, 3, 170, 40};
    xg_manual_seed(11);
    xg_tensor *in[3] = {xg_rand_normal(qs, 4, 0, 1),
                        xg_rand_normal(ks, 4, 0, 1),
                        xg_rand_normal(ks, 4, 0, 1)};
    for (int i = 0; i < 3; i++)
        cr_assert_eq(xg_tensor_set_requires_grad(in[i], true), XG_OK);
    xg_tensor *o = xg_attention(in[0], in[1], in[2], p);
    xg_tensor *w = xg_rand_normal(qs, 4, 0, 1);
    cr_assert_eq(xg_backward(xg_sum_all(xg_mul(o, w))), XG_OK, "%s",
                 xg_last_error());
    const xg_tensor *parts[4] = {o, xg_tensor_grad(in[0]),
                                 xg_tensor_grad(in[1]),
                                 xg_tensor_grad(in[2])};
    float *all = tu_read_all(parts, 4, count);
    xg_scope_end(s);
    xg_device_set_current(prev);
    xg_device_close(dev);
    return all;
}

Test(ops, attention_same_bits_on_any_thread_count)
{
    /* causal with a KV cache's offset, dropout; not causal */
    xg_attention_params ps[2] = {
        {.causal = true, .causal_offset = 20, .dropout_p = 0.2f,
         .training = true},
        {.causal = false},
    };
    for (int v = 0; v < 2; v++) {
        int64_t n1, n2, n3;
        float *one = attention_on_threads("1", &ps[v], &n1);
        float *two = attention_on_threads("2", &ps[v], &n2);
        float *three = attention_on_threads("3", &ps[v], &n3);
        cr_assert(n1 == n2 && n1 == n3);
        cr_expect(memcmp(one, two, (size_t)n1 * sizeof *one) == 0,
                  "case %d: 1 and 2 threads give other bits", v);
        cr_expect(memcmp(one, three, (size_t)n1 * sizeof *one) == 0,
                  "case %d: 1 and 3 threads give other bits", v);
        free(one);
        free(two);
        free(three);
    }
}
