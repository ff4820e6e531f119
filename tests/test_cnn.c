/* Convolutional ops on the CPU reference, through the public API: conv2d,
 * max / average pooling, dropout, flatten, batch_norm2d and their layers.
 *
 * Every expectation is computed here, independently of the library: small
 * cases worked by hand, a direct (loop-nest, double precision) convolution
 * from the definition in api/core/backend.h, central finite differences for the
 * gradients, PyTorch's formulas for batch norm, and the Philox stream of
 * rand_uniform for dropout masks. Bad calls must return their error.
 *
 * Standalone: its own small helpers (cn_*), so it builds without
 * tests/test_util.h. */
#include <criterion/criterion.h>

#include <inttypes.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

/* ===== helpers =========================================================== */

static xg_scope *cn_scope;

static void cn_init(void)
{
    xg_clear_error();
    xg_set_grad_enabled(true);
    cn_scope = xg_scope_begin();
    cr_assert_not_null(cn_scope);
}

static void cn_fini(void)
{
    xg_scope_end(cn_scope);
    xg_set_grad_enabled(true);
    xg_shutdown();
}

TestSuite(cnn, .init = cn_init, .fini = cn_fini);

static int64_t cn_numel(const int64_t *shape, int ndim)
{
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    return n;
}

/* splitmix64: a host generator independent of xgrad's. */
static double cn_uniform(uint64_t *s, double lo, double hi)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return lo + (hi - lo) * ((double)(z >> 11) * 0x1.0p-53);
}

static float *cn_random(int64_t n, uint64_t seed, double lo, double hi)
{
    float *v = malloc((size_t)n * sizeof *v);
    cr_assert_not_null(v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)cn_uniform(&seed, lo, hi);
    return v;
}

static xg_tensor *cn_tensor(const float *v, const int64_t *shape, int ndim)
{
    xg_tensor *t = xg_tensor_from_data(v, XG_F32, shape, ndim);
    cr_assert_not_null(t, "tensor_from_data: %s", xg_last_error());
    return t;
}

/* A leaf of uniform values in [lo, hi) that requires grad. */
static xg_tensor *cn_leaf(const int64_t *shape, int ndim, uint64_t seed,
                          double lo, double hi)
{
    float *v = cn_random(cn_numel(shape, ndim), seed, lo, hi);
    xg_tensor *t = cn_tensor(v, shape, ndim);
    free(v);
    cr_assert_eq(xg_tensor_set_requires_grad(t, true), XG_OK);
    return t;
}

static float *cn_read(const xg_tensor *t)
{
    cr_assert_not_null(t, "NULL tensor: %s", xg_last_error());
    int64_t n = xg_tensor_numel(t);
    float *v = malloc((size_t)n * sizeof *v);
    cr_assert_not_null(v);
    cr_assert_eq(xg_tensor_read(t, v, (size_t)n * sizeof *v), XG_OK,
                 "read: %s", xg_last_error());
    return v;
}

/* The values of n tensors one after another, in one malloc'd array of
 * *count floats. */
static float *cn_concat(const xg_tensor *const *parts, int n, int64_t *count)
{
    int64_t total = 0;
    for (int i = 0; i < n; i++)
        total += xg_tensor_numel(parts[i]);
    float *out = malloc((size_t)total * sizeof *out);
    cr_assert_not_null(out);
    *count = 0;
    for (int i = 0; i < n; i++) {
        float *v = cn_read(parts[i]);
        memcpy(out + *count, v,
               (size_t)xg_tensor_numel(parts[i]) * sizeof *v);
        *count += xg_tensor_numel(parts[i]);
        free(v);
    }
    return out;
}

static bool cn_close(double got, double want, double atol, double rtol)
{
    if (isnan(want))
        return isnan(got);
    return fabs(got - want) <= atol + rtol * fabs(want);
}

static void cn_assert_shape(const xg_tensor *t, const int64_t *shape,
                            int ndim, const char *what)
{
    cr_assert_not_null(t, "%s: NULL (%s)", what, xg_last_error());
    cr_assert_eq(xg_tensor_ndim(t), ndim, "%s: ndim %d, expected %d", what,
                 xg_tensor_ndim(t), ndim);
    for (int i = 0; i < ndim; i++)
        cr_assert_eq(xg_tensor_shape(t)[i], shape[i],
                     "%s: axis %d is %" PRId64 ", expected %" PRId64, what, i,
                     xg_tensor_shape(t)[i], shape[i]);
}

/* Every value of t against want[] (NaN where NaN is expected). */
static void cn_assert_values(const xg_tensor *t, const double *want,
                             double atol, double rtol, const char *what)
{
    cr_assert_not_null(t, "%s: NULL (%s)", what, xg_last_error());
    int64_t n = xg_tensor_numel(t);
    float *got = cn_read(t);
    for (int64_t i = 0; i < n; i++) {
        if (!cn_close(got[i], want[i], atol, rtol)) {
            double g = got[i];
            free(got);
            cr_assert_fail("%s: element %" PRId64 " of %" PRId64 ": got %.9g,"
                           " expected %.9g", what, i, n, g, want[i]);
        }
    }
    free(got);
}

static void cn_assert_error(xg_status want, const char *needle,
                            const char *what)
{
    xg_status got = xg_last_status();
    const char *msg = xg_last_error();
    cr_assert_eq(got, want, "%s: status %s, expected %s (\"%s\")", what,
                 xg_status_str(got), xg_status_str(want), msg);
    cr_assert(strstr(msg, needle), "%s: message \"%s\" lacks \"%s\"", what,
              msg, needle);
    xg_clear_error();
}

/* ===== finite differences ================================================
 * L = sum(f(in) * w) with fixed random w; the gradient from xg_backward is
 * compared, element by element, with central differences of L computed in
 * double from forward passes in no-grad mode. */

typedef xg_tensor *(*cn_fn)(xg_tensor *const *in, const void *ctx);

static double fd_loss(cn_fn f, const void *ctx, xg_tensor *const *in,
                      const float *w)
{
    xg_scope *s = xg_scope_begin();
    xg_tensor *out = f(in, ctx);
    cr_assert_not_null(out, "forward: %s", xg_last_error());
    float *y = cn_read(out);
    double l = 0;
    for (int64_t i = 0; i < xg_tensor_numel(out); i++)
        l += (double)y[i] * w[i];
    free(y);
    xg_scope_end(s);
    return l;
}

/* The analytic gradients of L; returns w (the caller frees it). */
static float *fd_backward(cn_fn f, const void *ctx, xg_tensor *const *in,
                          int n_in, const char *what)
{
    for (int i = 0; i < n_in; i++)
        xg_tensor_zero_grad(in[i]);
    xg_scope *s = xg_scope_begin();
    xg_tensor *out = f(in, ctx);
    cr_assert_not_null(out, "%s: forward: %s", what, xg_last_error());
    int64_t n = xg_tensor_numel(out);
    float *w = cn_random(n, 0xC0FFEE + (uint64_t)n, -1, 1);
    xg_tensor *wt = cn_tensor(w, xg_tensor_shape(out), xg_tensor_ndim(out));
    xg_status st = xg_backward(xg_sum_all(xg_mul(out, wt)));
    cr_assert_eq(st, XG_OK, "%s: backward: %s", what, xg_last_error());
    xg_scope_end(s);
    return w;
}

static void fd_check_input(cn_fn f, const void *ctx, xg_tensor *const *in,
                           int i, const float *w, double eps, double tol,
                           const char *what)
{
    xg_tensor *g = xg_tensor_grad(in[i]);
    cr_assert_not_null(g, "%s: input %d has no gradient", what, i);
    float *ga = cn_read(g), *x = cn_read(in[i]);
    int64_t n = xg_tensor_numel(in[i]);
    size_t bytes = (size_t)n * sizeof *x;
    for (int64_t j = 0; j < n; j++) {
        float orig = x[j], xp = (float)(orig + eps), xm = (float)(orig - eps);
        x[j] = xp;
        xg_tensor_write(in[i], x, bytes);
        double lp = fd_loss(f, ctx, in, w);
        x[j] = xm;
        xg_tensor_write(in[i], x, bytes);
        double lm = fd_loss(f, ctx, in, w);
        x[j] = orig;
        xg_tensor_write(in[i], x, bytes);
        double num = (lp - lm) / ((double)xp - (double)xm);
        if (!cn_close(ga[j], num, tol, tol)) {
            double a = ga[j];
            free(ga);
            free(x);
            cr_assert_fail("%s: d/d input %d [%" PRId64 "]: analytic %.7g, "
                           "numeric %.7g", what, i, j, a, num);
        }
    }
    free(ga);
    free(x);
}

static void gradcheck(const char *what, cn_fn f, const void *ctx,
                      xg_tensor *const *in, int n_in, double eps, double tol)
{
    float *w = fd_backward(f, ctx, in, n_in, what);
    bool was = xg_set_grad_enabled(false);
    for (int i = 0; i < n_in; i++)
        if (xg_tensor_requires_grad(in[i]))
            fd_check_input(f, ctx, in, i, w, eps, tol, what);
    xg_set_grad_enabled(was);
    free(w);
}

/* ===== a direct convolution, from the definition =========================
 * y[b, o, i, j] = sum over c of o's group, p, q of
 *   x[b, c, i*sh - ph + p*dh, j*sw - pw + q*dw] * w[o, c - start, p, q]. */

typedef struct conv_case {
    int64_t n, c_in, h, w, c_out;
    int kh, kw;
    xg_conv2d_params p;
    int64_t oh, ow;
} conv_case;

static void conv_case_sizes(conv_case *c)
{
    c->oh = (c->h + 2 * c->p.pad_h - c->p.dil_h * (c->kh - 1) - 1) /
                c->p.stride_h + 1;
    c->ow = (c->w + 2 * c->p.pad_w - c->p.dil_w * (c->kw - 1) - 1) /
                c->p.stride_w + 1;
}

/* Calls visit(x index, w index, y index) for every product of the sum. */
typedef void (*tap_fn)(void *ctx, int64_t xi, int64_t wi, int64_t yi);

static void conv_taps(const conv_case *c, tap_fn visit, void *ctx)
{
    int64_t cg = c->c_in / c->p.groups, og = c->c_out / c->p.groups;
    for (int64_t b = 0; b < c->n; b++)
    for (int64_t o = 0; o < c->c_out; o++)
    for (int64_t i = 0; i < c->oh; i++)
    for (int64_t j = 0; j < c->ow; j++)
    for (int64_t k = 0; k < cg; k++)
    for (int p = 0; p < c->kh; p++)
    for (int q = 0; q < c->kw; q++) {
        int64_t r = i * c->p.stride_h - c->p.pad_h + p * c->p.dil_h;
        int64_t s = j * c->p.stride_w - c->p.pad_w + q * c->p.dil_w;
        if (r < 0 || r >= c->h || s < 0 || s >= c->w)
            continue;
        int64_t ch = o / og * cg + k;
        visit(ctx, ((b * c->c_in + ch) * c->h + r) * c->w + s,
              ((o * cg + k) * c->kh + p) * c->kw + q,
              ((b * c->c_out + o) * c->oh + i) * c->ow + j);
    }
}

typedef struct conv_ref {
    const float *x, *w, *dy;
    double *y, *dx, *dw;
} conv_ref;

static void tap_forward(void *ctx, int64_t xi, int64_t wi, int64_t yi)
{
    conv_ref *r = ctx;
    r->y[yi] += (double)r->x[xi] * r->w[wi];
    r->dx[xi] += (double)r->dy[yi] * r->w[wi];
    r->dw[wi] += (double)r->dy[yi] * r->x[xi];
}

/* ===== conv2d: hand-worked cases ========================================= */

Test(cnn, conv2d_hand_worked)
{
    /* x = 1..9 in a 3x3 plane, w = [[1, 2], [3, 4]]:
     * y[0,0] = 1 + 2*2 + 3*4 + 4*5 = 37, then 47, 67, 77. */
    float xv[9] = {1, 2, 3, 4, 5, 6, 7, 8, 9}, wv[4] = {1, 2, 3, 4};
    xg_tensor *x = cn_tensor(xv, XG_SHAPE(1, 1, 3, 3));
    xg_tensor *w = cn_tensor(wv, XG_SHAPE(1, 1, 2, 2));
    xg_tensor *y = xg_conv2d(x, w, NULL, NULL);
    cn_assert_shape(y, XG_SHAPE(1, 1, 2, 2), "conv2d");
    cn_assert_values(y, (double[]){37, 47, 67, 77}, 0, 0, "conv2d");

    /* Padding 1, stride 2: windows at rows/cols -1 and 1.
     * (-1,-1): only x[0,0] meets w[1,1]: 1*4 = 4; (-1,1): x[0,1] w[1,0] +
     * x[0,2] w[1,1] = 2*3 + 3*4 = 18; (1,-1): x[1,0] w[0,1] + x[2,0] w[1,1]
     * = 4*2 + 7*4 = 36; (1,1): 5 + 2*6 + 3*8 + 4*9 = 77. Bias 0.5. */
    xg_conv2d_params p = {2, 2, 1, 1, 1, 1, 1};
    float bv[1] = {0.5f};
    y = xg_conv2d(x, w, cn_tensor(bv, XG_SHAPE(1)), &p);
    cn_assert_shape(y, XG_SHAPE(1, 1, 2, 2), "conv2d pad 1 stride 2");
    cn_assert_values(y, (double[]){4.5, 18.5, 36.5, 77.5}, 0, 0,
                     "conv2d pad 1 stride 2");

    /* Dilation 2: the 2x2 kernel spans 3x3, one output:
     * 1*1 + 2*3 + 3*7 + 4*9 = 64. */
    p = (xg_conv2d_params){1, 1, 0, 0, 2, 2, 1};
    cn_assert_values(xg_conv2d(x, w, NULL, &p), (double[]){64}, 0, 0,
                     "conv2d dilation 2");
}

Test(cnn, conv2d_groups_hand_worked)
{
    /* Two channels, groups 2, one 1x1 weight per channel: each output
     * channel scales its own input channel. */
    float xv[8] = {1, 2, 3, 4, 10, 20, 30, 40}, wv[2] = {2, -1};
    xg_tensor *x = cn_tensor(xv, XG_SHAPE(1, 2, 2, 2));
    xg_tensor *w = cn_tensor(wv, XG_SHAPE(2, 1, 1, 1));
    xg_conv2d_params p = xg_conv2d_defaults();
    p.groups = 2;
    xg_tensor *y = xg_conv2d(x, w, NULL, &p);
    cn_assert_shape(y, XG_SHAPE(1, 2, 2, 2), "grouped conv2d");
    cn_assert_values(y, (double[]){2, 4, 6, 8, -10, -20, -30, -40}, 0, 0,
                     "grouped conv2d");
}

/* ===== conv2d against the direct convolution ============================= */

static void check_against_reference(conv_case c, uint64_t seed, bool bias)
{
    conv_case_sizes(&c);
    int64_t xs[4] = {c.n, c.c_in, c.h, c.w};
    int64_t ws[4] = {c.c_out, c.c_in / c.p.groups, c.kh, c.kw};
    int64_t ys[4] = {c.n, c.c_out, c.oh, c.ow};
    int64_t nx = cn_numel(xs, 4), nw = cn_numel(ws, 4), ny = cn_numel(ys, 4);
    xg_tensor *x = cn_leaf(xs, 4, seed, -1, 1), *w = cn_leaf(ws, 4, seed + 1,
                                                            -1, 1);
    xg_tensor *b = bias ? cn_leaf(&c.c_out, 1, seed + 2, -1, 1) : NULL;
    float *dyv = cn_random(ny, seed + 3, -1, 1);
    conv_ref r = {cn_read(x), cn_read(w), dyv, calloc((size_t)ny, 8),
                  calloc((size_t)nx, 8), calloc((size_t)nw, 8)};
    conv_taps(&c, tap_forward, &r);
    float *bv = b ? cn_read(b) : NULL;
    double *db = calloc((size_t)c.c_out, 8);
    for (int64_t k = 0; k < ny; k++) {
        int64_t o = k / (c.oh * c.ow) % c.c_out;
        r.y[k] += bv ? bv[o] : 0.0;
        db[o] += dyv[k];
    }
    xg_tensor *y = xg_conv2d(x, w, b, &c.p);
    cn_assert_shape(y, ys, 4, "conv2d");
    cn_assert_values(y, r.y, 1e-5, 1e-5, "conv2d forward");
    xg_tensor *loss = xg_sum_all(xg_mul(y, cn_tensor(dyv, ys, 4)));
    cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
    cn_assert_values(xg_tensor_grad(x), r.dx, 1e-5, 1e-5, "conv2d dx");
    cn_assert_values(xg_tensor_grad(w), r.dw, 1e-4, 1e-5, "conv2d dweight");
    if (b)
        cn_assert_values(xg_tensor_grad(b), db, 1e-4, 1e-5, "conv2d dbias");
    void *owned[] = {dyv, (void *)r.x, (void *)r.w, r.y, r.dx, r.dw, bv, db};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
}

Test(cnn, conv2d_matches_direct_convolution)
{
    xg_conv2d_params d = xg_conv2d_defaults();
    /* plain 3x3; the MNIST layers' shapes */
    check_against_reference((conv_case){4, 3, 9, 8, 5, 3, 3, d}, 1, true);
    check_against_reference((conv_case){8, 1, 28, 28, 32, 3, 3, d}, 2, true);
    check_against_reference((conv_case){3, 32, 26, 26, 64, 3, 3, d}, 3, true);
    /* stride, padding, dilation per axis; groups */
    check_against_reference(
        (conv_case){3, 4, 10, 11, 6, 3, 2, {2, 1, 1, 2, 2, 1, 2}}, 4, true);
    check_against_reference(
        (conv_case){5, 6, 8, 8, 9, 3, 3, {2, 2, 1, 1, 1, 1, 3}}, 5, false);
    /* depthwise; 1x1 (no unfolding); one sample (the GEMM is parallel
     * inside); the kernel as large as the padded input */
    check_against_reference(
        (conv_case){2, 6, 7, 5, 6, 3, 3, {1, 1, 1, 1, 1, 1, 6}}, 6, true);
    check_against_reference((conv_case){3, 5, 6, 7, 4, 1, 1, d}, 7, true);
    check_against_reference(
        (conv_case){1, 3, 12, 12, 5, 5, 5, {3, 3, 2, 2, 1, 1, 1}}, 8, true);
    check_against_reference(
        (conv_case){2, 2, 3, 3, 3, 5, 5, {1, 1, 1, 1, 1, 1, 1}}, 9, true);
}

/* Winograd's minimal filtering, which the CPU takes with AVX-512 for
 * stride-1, undilated, ungrouped 3x3 convolutions with 16 or more
 * channels each side (F(2x2, 3x3) forward and for the input gradient,
 * F(3x3, 2x2) for the weight gradient; XGRAD_CPU_WINOGRAD=0 turns it off):
 * odd and even output sizes (partial tiles), one output pixel, padding 0
 * to 3 (3: the input gradient falls back to the direct path), one sample,
 * 17 channels, rows of more than 16 tiles, more than 8 samples (the
 * weight gradient's chunks), and the ReLU of conv2d_relu (against the
 * reference, clamped). On CPUs without AVX-512 (and in the AVX2 and
 * baseline runs of this suite) the same shapes run directly. */
Test(cnn, conv2d_winograd_shapes_match_direct_convolution)
{
    xg_conv2d_params d = xg_conv2d_defaults(), pad[4];
    for (int k = 0; k < 4; k++)
        pad[k] = (xg_conv2d_params){1, 1, k, k, 1, 1, 1};
    check_against_reference((conv_case){2, 16, 9, 7, 16, 3, 3, pad[1]}, 20,
                            true);
    check_against_reference((conv_case){1, 17, 6, 11, 19, 3, 3, d}, 21, true);
    check_against_reference((conv_case){3, 20, 5, 5, 18, 3, 3, pad[2]}, 22,
                            false);
    check_against_reference((conv_case){2, 16, 4, 4, 16, 3, 3, pad[3]}, 23,
                            true);
    check_against_reference((conv_case){1, 16, 13, 37, 24, 3, 3, pad[1]}, 24,
                            true);
    check_against_reference(
        (conv_case){2, 16, 8, 6, 16, 3, 3, {1, 1, 2, 0, 1, 1, 1}}, 25, true);
    /* one output pixel: from a 3x3 image, and from a 1x1 one padded by 1 */
    check_against_reference((conv_case){2, 16, 3, 3, 16, 3, 3, d}, 29, true);
    check_against_reference((conv_case){3, 16, 1, 1, 17, 3, 3, pad[1]}, 30,
                            true);
    /* more tiles a sample than one panel holds, and a batch over the
     * weight gradient's 8 chunks */
    check_against_reference((conv_case){9, 16, 20, 18, 16, 3, 3, pad[1]}, 31,
                            true);
    /* conv2d_relu: the reference's values, clamped at 0 */
    conv_case c = {2, 16, 9, 8, 20, 3, 3, pad[1]};
    conv_case_sizes(&c);
    int64_t xs[4] = {c.n, c.c_in, c.h, c.w}, ws[4] = {c.c_out, c.c_in, 3, 3};
    int64_t nx = cn_numel(xs, 4), nw = cn_numel(ws, 4);
    int64_t ny = c.n * c.c_out * c.oh * c.ow;
    xg_tensor *x = cn_leaf(xs, 4, 26, -1, 1), *w = cn_leaf(ws, 4, 27, -1, 1);
    xg_tensor *b = cn_leaf(&c.c_out, 1, 28, -1, 1);
    conv_ref r = {cn_read(x), cn_read(w), NULL, calloc((size_t)ny, 8),
                  calloc((size_t)nx, 8), calloc((size_t)nw, 8)};
    float *dy = calloc((size_t)ny, sizeof *dy);
    r.dy = dy;
    conv_taps(&c, tap_forward, &r);
    float *bv = cn_read(b);
    for (int64_t k = 0; k < ny; k++) {
        double v = r.y[k] + bv[k / (c.oh * c.ow) % c.c_out];
        r.y[k] = v < 0 ? 0 : v;
    }
    cn_assert_values(xg_conv2d_relu(x, w, b, &c.p), r.y, 1e-5, 1e-5,
                     "conv2d_relu");
    void *owned[] = {dy, (void *)r.x, (void *)r.w, r.y, r.dx, r.dw, bv};
    for (size_t i = 0; i < sizeof owned / sizeof *owned; i++)
        free(owned[i]);
}

/* ===== conv2d: the same bits for any thread count ======================== */

/* y, dx and dweight of case c (dy random) on a CPU device with `threads`
 * threads, in one malloc'd array. */
/* y [n, c, h, w] (shape ys) and the gradients of sum(y * dy) for x, w
 * and b (when not NULL), in one malloc'd array of *count floats. */
static float *cn_step_bits(xg_tensor *y, const float *dy, const int64_t *ys,
                           xg_tensor *x, xg_tensor *w, xg_tensor *b,
                           int64_t *count)
{
    cr_assert_not_null(y, "%s", xg_last_error());
    xg_tensor *loss = xg_sum_all(xg_mul(y, cn_tensor(dy, ys, 4)));
    cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
    const xg_tensor *parts[4] = {y, xg_tensor_grad(x), xg_tensor_grad(w),
                                 b ? xg_tensor_grad(b) : NULL};
    return cn_concat(parts, b ? 4 : 3, count);
}

static float *conv_bits_on_threads(conv_case c, const char *threads,
                                   int64_t *count)
{
    cr_assert_eq(setenv("XGRAD_NUM_THREADS", threads, 1), 0);
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device_set_current(dev);
    xg_scope *scope = xg_scope_begin();
    int64_t xs[4] = {c.n, c.c_in, c.h, c.w};
    int64_t ws[4] = {c.c_out, c.c_in / c.p.groups, c.kh, c.kw};
    int64_t ys[4] = {c.n, c.c_out, c.oh, c.ow};
    int64_t ny = cn_numel(ys, 4);
    xg_tensor *x = cn_leaf(xs, 4, 11, -1, 1), *w = cn_leaf(ws, 4, 12, -1, 1);
    float *dyv = cn_random(ny, 13, -1, 1);
    float *out = cn_step_bits(xg_conv2d(x, w, NULL, &c.p), dyv, ys, x, w,
                              NULL, count);
    free(dyv);
    xg_scope_end(scope);
    xg_device_set_current(NULL);
    xg_device_close(dev);
    return out;
}

Test(cnn, conv2d_same_bits_for_any_thread_count)
{
    /* Few channels, many channels, groups with stride and padding;
     * batches that do not divide evenly; and batches smaller than the
     * thread count, whose weight gradient and input gradient split one
     * sample's work between threads. */
    conv_case cases[] = {
        {13, 3, 10, 10, 8, 3, 3, {1, 1, 1, 1, 1, 1, 1}},
        {11, 64, 12, 12, 32, 3, 3, xg_conv2d_defaults()},
        {9, 8, 9, 11, 12, 3, 2, {2, 1, 1, 0, 1, 2, 4}},
        {1, 16, 9, 9, 24, 3, 3, {1, 1, 1, 1, 1, 1, 1}},
        {2, 12, 7, 8, 40, 3, 3, {2, 1, 0, 1, 1, 1, 2}},
    };
    const char *threads[] = {"1", "2", "3", "5"};
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++) {
        conv_case_sizes(&cases[k]);
        int64_t n0, n;
        float *want = conv_bits_on_threads(cases[k], threads[0], &n0);
        for (size_t t = 1; t < sizeof threads / sizeof *threads; t++) {
            float *got = conv_bits_on_threads(cases[k], threads[t], &n);
            cr_assert_eq(n, n0);
            cr_expect_eq(memcmp(got, want, (size_t)n * sizeof *got), 0,
                         "case %zu: %s threads differ from 1", k, threads[t]);
            free(got);
        }
        free(want);
    }
}

/* XGRAD_CPU_KERNELS caps the built-in kernels' instruction set: AVX-512 and
 * AVX2 fuse each multiply-add and give the same bits; the baseline rounds
 * products and sums apart, so it agrees to rounding. A shape that runs as
 * Winograd with AVX-512 runs directly below it (the transforms are
 * AVX-512 only), so there the variants agree to Winograd's rounding. A
 * bad value is an error when the device opens. */
Test(cnn, conv2d_cpu_kernel_variants)
{
    conv_case cases[] = {{5, 6, 11, 9, 10, 3, 3, {1, 2, 1, 2, 1, 1, 2}},
                         {3, 16, 11, 9, 20, 3, 3, {1, 1, 1, 0, 1, 1, 1}}};
    const char *caps[] = {"avx512", "avx2", "baseline"};
    for (int cs = 0; cs < 2; cs++) {
        conv_case c = cases[cs];
        conv_case_sizes(&c);
        float *got[3];
        int64_t n[3];
        for (int i = 0; i < 3; i++) {
            cr_assert_eq(setenv("XGRAD_CPU_KERNELS", caps[i], 1), 0);
            got[i] = conv_bits_on_threads(c, "2", &n[i]);
            cr_assert_eq(n[i], n[0]);
        }
        unsetenv("XGRAD_CPU_KERNELS");
        if (cs == 0)
            cr_expect_eq(memcmp(got[0], got[1], (size_t)n[0] * sizeof(float)),
                         0, "AVX-512 and AVX2 give the same bits");
        float tol = cs == 0 ? 1e-5f : 1e-4f;
        for (int i = 1; i < 3; i++)
            for (int64_t k = 0; k < n[0]; k++)
                cr_assert(fabsf(got[i][k] - got[0][k]) <=
                              tol * (1.0f + fabsf(got[0][k])),
                          "case %d, element %" PRId64 ": %s %g, AVX-512 %g",
                          cs, k, caps[i], (double)got[i][k],
                          (double)got[0][k]);
        for (int i = 0; i < 3; i++)
            free(got[i]);
    }
    xg_device *dev = NULL;
    cr_assert_eq(setenv("XGRAD_CPU_KERNELS", "sse9", 1), 0);
    cr_expect_eq(xg_device_open("cpu", &dev), XG_ERR_INVALID_ARG);
    cr_expect(strstr(xg_last_error(), "XGRAD_CPU_KERNELS") != NULL, "%s",
              xg_last_error());
    unsetenv("XGRAD_CPU_KERNELS");
    cr_assert_eq(setenv("XGRAD_CPU_WINOGRAD", "yes", 1), 0);
    cr_expect_eq(xg_device_open("cpu", &dev), XG_ERR_INVALID_ARG);
    cr_expect(strstr(xg_last_error(), "XGRAD_CPU_WINOGRAD") != NULL, "%s",
              xg_last_error());
    unsetenv("XGRAD_CPU_WINOGRAD");
}

/* ===== finite-difference gradients ======================================= */

static xg_tensor *f_conv(xg_tensor *const *in, const void *ctx)
{
    return xg_conv2d(in[0], in[1], in[2], ctx);
}

Test(cnn, conv2d_gradcheck)
{
    const xg_conv2d_params cases[] = {
        {1, 1, 0, 0, 1, 1, 1}, {2, 1, 1, 2, 1, 2, 2}, {1, 2, 2, 1, 2, 1, 1},
    };
    for (int k = 0; k < 3; k++) {
        xg_tensor *in[3] = {cn_leaf(XG_SHAPE(2, 4, 6, 7), 10 + k, -1, 1),
                            cn_leaf(XG_SHAPE(6, 4 / cases[k].groups, 3, 2),
                                    20 + k, -1, 1),
                            cn_leaf(XG_SHAPE(6), 30 + k, -1, 1)};
        char what[64];
        snprintf(what, sizeof what, "conv2d case %d", k);
        gradcheck(what, f_conv, &cases[k], in, 3, 1e-2, 2e-3);
    }
}

/* ===== conv2d + ReLU in one op ============================================ */

/* y = f(x, w, b), then the gradients of sum(y * dy); returns y, dx, dw, db
 * in one malloc'd array of *count floats. */
typedef xg_tensor *(*conv_relu_fn)(xg_tensor *x, xg_tensor *w, xg_tensor *b,
                                   const xg_conv2d_params *p);

static xg_tensor *separate_conv_relu(xg_tensor *x, xg_tensor *w, xg_tensor *b,
                                     const xg_conv2d_params *p)
{
    return xg_relu(xg_conv2d(x, w, b, p));
}

static float *conv_relu_run(conv_relu_fn f, conv_case c, bool bias,
                            int64_t *count, int64_t *zeros)
{
    xg_scope *scope = xg_scope_begin();
    int64_t xs[4] = {c.n, c.c_in, c.h, c.w};
    int64_t ws[4] = {c.c_out, c.c_in / c.p.groups, c.kh, c.kw};
    int64_t ys[4] = {c.n, c.c_out, c.oh, c.ow};
    int64_t nx = cn_numel(xs, 4), ny = cn_numel(ys, 4);
    float *xv = cn_random(nx, 41, -1, 1);
    xv[nx / 2] = NAN; /* a NaN stays NaN through relu; its gradient is 0 */
    xg_tensor *x = cn_tensor(xv, xs, 4);
    xg_tensor_set_requires_grad(x, true);
    xg_tensor *w = cn_leaf(ws, 4, 42, -1, 1);
    xg_tensor *b = bias ? cn_leaf(XG_SHAPE(c.c_out), 43, -1, 1) : NULL;
    float *dyv = cn_random(ny, 44, -1, 1);
    float *out = cn_step_bits(f(x, w, b, &c.p), dyv, ys, x, w, b, count);
    *zeros = 0;
    for (int64_t i = 0; i < ny; i++)
        *zeros += out[i] == 0.0f;
    free(xv);
    free(dyv);
    xg_scope_end(scope);
    return out;
}

/* xg_conv2d_relu is relu(conv2d) bit for bit, forward and backward (NaN
 * included), with and without a bias, and still refuses what conv2d
 * refuses. */
Test(cnn, conv2d_relu_same_bits_as_separate_ops)
{
    conv_case cases[] = {
        {5, 32, 12, 12, 16, 3, 3, xg_conv2d_defaults()},
        {3, 6, 9, 8, 9, 3, 2, {2, 1, 1, 0, 1, 2, 3}},
        {2, 4, 5, 5, 4, 1, 1, xg_conv2d_defaults()},
    };
    for (size_t k = 0; k < sizeof cases / sizeof *cases; k++)
        for (int bias = 0; bias < 2; bias++) {
            conv_case_sizes(&cases[k]);
            int64_t n0, n1, z0, z1;
            float *want = conv_relu_run(separate_conv_relu, cases[k], bias,
                                        &n0, &z0);
            float *got = conv_relu_run(xg_conv2d_relu, cases[k], bias, &n1,
                                       &z1);
            cr_assert_eq(n0, n1);
            int64_t ny = cases[k].n * cases[k].c_out * cases[k].oh *
                         cases[k].ow;
            cr_expect(z0 > ny / 8 && z0 < ny - ny / 8,
                      "case %zu: relu zeroed %lld of %lld outputs", k,
                      (long long)z0, (long long)ny);
            cr_expect_eq(memcmp(got, want, (size_t)n0 * sizeof *got), 0,
                         "case %zu, bias %d: fused and separate differ", k,
                         bias);
            free(want);
            free(got);
        }
    xg_tensor *x = cn_leaf(XG_SHAPE(1, 2, 4, 4), 1, -1, 1);
    xg_tensor *w = cn_leaf(XG_SHAPE(3, 2, 5, 5), 2, -1, 1);
    cr_expect_null(xg_conv2d_relu(x, w, NULL, NULL));
    cr_expect_eq(xg_last_status(), XG_ERR_SHAPE);
    cr_expect_null(xg_conv2d_relu(x, cn_leaf(XG_SHAPE(3, 2, 3, 3), 3, -1, 1),
                                  cn_leaf(XG_SHAPE(4), 4, -1, 1), NULL));
    cr_expect_eq(xg_last_status(), XG_ERR_SHAPE);
}

/* A Sequential runs a ReLU followed by a MaxPool2d pooling first, and
 * other Conv2d-with-bias + ReLU pairs as one op: outputs and every
 * parameter's gradient are those of running its children one by one
 * (windows whose values are all <= 0 included: relu's zeros tie). Also a
 * Conv2d without bias, and a ReLU after a pooling, which stay as they
 * are. */
static void check_sequential_against_children(xg_module **layers, int count,
                                              const int64_t *xs, int xnd,
                                              const int64_t *ys, int ynd)
{
    cr_assert(xnd == 4 && ynd == 4);
    xg_manual_seed(5);
    xg_module *seq = xg_sequential();
    for (int i = 0; i < count; i++)
        cr_assert_eq(xg_sequential_add(seq, NULL, layers[i]), XG_OK);
    xg_tensor *x = cn_leaf(xs, 4, 60, -1, 1);
    int n_params = xg_module_param_count(seq);
    cr_assert_leq(n_params, 8);
    int64_t ny = cn_numel(ys, 4);
    float *out[2], *grads[2][8], *gx[2];
    for (int run = 0; run < 2; run++) {
        xg_scope *scope = xg_scope_begin();
        xg_tensor *y = x;
        if (run == 0)
            y = xg_module_forward(seq, x);
        else
            for (int i = 0; i < count && y; i++)
                y = xg_module_forward(layers[i], y);
        cr_assert_not_null(y, "%s", xg_last_error());
        cn_assert_shape(y, ys, 4, "output");
        out[run] = cn_read(y);
        float *dy = cn_random(ny, 61, -1, 1);
        cr_assert_eq(xg_backward(xg_sum_all(xg_mul(y, cn_tensor(dy, ys, 4)))),
                     XG_OK, "%s", xg_last_error());
        free(dy);
        for (int i = 0; i < n_params; i++) {
            xg_tensor *p = xg_module_param(seq, i, NULL);
            grads[run][i] = cn_read(xg_tensor_grad(p));
            xg_tensor_zero_grad(p);
        }
        gx[run] = cn_read(xg_tensor_grad(x));
        xg_tensor_zero_grad(x);
        xg_scope_end(scope);
    }
    cr_expect_eq(memcmp(out[0], out[1], (size_t)ny * sizeof(float)), 0,
                 "outputs differ");
    cr_expect_eq(memcmp(gx[0], gx[1], (size_t)cn_numel(xs, 4) * sizeof(float)),
                 0, "the input's gradients differ");
    for (int i = 0; i < n_params; i++) {
        int64_t n = xg_tensor_numel(xg_module_param(seq, i, NULL));
        cr_expect_eq(memcmp(grads[0][i], grads[1][i], (size_t)n * sizeof(float)),
                     0, "parameter %d's gradient differs", i);
        free(grads[0][i]);
        free(grads[1][i]);
    }
    free(out[0]), free(out[1]), free(gx[0]), free(gx[1]);
    xg_module_free(seq);
}

Test(cnn, sequential_fused_patterns_match_children_one_by_one)
{
    xg_module *a[] = {
        xg_conv2d_layer(3, 8, 3, NULL, true), xg_relu_layer(),
        xg_conv2d_layer(8, 8, 3, NULL, false), xg_relu_layer(),
        xg_max_pool2d_layer(2, 0, 0), xg_relu_layer(),
        xg_conv2d_layer(8, 4, 1, NULL, true), xg_relu_layer(),
    };
    check_sequential_against_children(a, 8, XG_SHAPE(3, 3, 12, 12),
                                      XG_SHAPE(3, 4, 4, 4));
    /* the samples' pattern: Conv2d, ReLU, Conv2d, ReLU, MaxPool2d; and
     * overlapping, padded windows */
    xg_module *b[] = {
        xg_conv2d_layer(2, 8, 3, NULL, true), xg_relu_layer(),
        xg_conv2d_layer(8, 16, 3, NULL, true), xg_relu_layer(),
        xg_max_pool2d_layer(2, 0, 0), xg_relu_layer(),
        xg_max_pool2d_layer(3, 1, 1),
    };
    check_sequential_against_children(b, 7, XG_SHAPE(2, 2, 14, 14),
                                      XG_SHAPE(2, 16, 5, 5));
}

typedef struct pool_ctx {
    bool max;
    int k, stride, pad;
} pool_ctx;

static xg_tensor *f_pool(xg_tensor *const *in, const void *ctx)
{
    const pool_ctx *p = ctx;
    return p->max ? xg_max_pool2d(in[0], p->k, p->stride, p->pad)
                  : xg_avg_pool2d(in[0], p->k, p->stride, p->pad);
}

/* A leaf of distinct values 0.05 apart, so that a perturbation of 1e-2
 * never changes a window's winner. */
static xg_tensor *distinct_leaf(const int64_t *shape, int ndim, uint64_t seed)
{
    int64_t n = cn_numel(shape, ndim);
    float *v = malloc((size_t)n * sizeof *v);
    for (int64_t i = 0; i < n; i++)
        v[i] = (float)(0.05 * (double)i - 0.025 * (double)n);
    for (int64_t i = n - 1; i > 0; i--) {
        int64_t j = (int64_t)(cn_uniform(&seed, 0, 1) * (double)(i + 1));
        float t = v[i];
        v[i] = v[j];
        v[j] = t;
    }
    xg_tensor *t = cn_tensor(v, shape, ndim);
    free(v);
    xg_tensor_set_requires_grad(t, true);
    return t;
}

Test(cnn, pool_gradcheck)
{
    const pool_ctx cases[] = {{true, 2, 0, 0},  {true, 3, 2, 1},
                              {true, 3, 1, 1},  {false, 2, 0, 0},
                              {false, 3, 2, 1}, {false, 4, 3, 2}};
    for (int k = 0; k < 6; k++) {
        xg_tensor *x = distinct_leaf(XG_SHAPE(2, 3, 7, 6), 40 + k);
        char what[64];
        snprintf(what, sizeof what, "%s_pool2d case %d",
                 cases[k].max ? "max" : "avg", k);
        gradcheck(what, f_pool, &cases[k], &x, 1, 1e-2, 2e-3);
    }
}

/* ===== pooling: hand-worked cases ======================================== */

Test(cnn, max_pool_ties_nan_and_padding)
{
    /* One 2x4 plane, 2x2 windows: [1 1 | 5 NaN]
     *                             [0 1 | NaN 9]
     * Left: tie of 1s, the first (index 0) wins. Right: the first NaN
     * (index 3) wins over 5 and 9. */
    float v[8] = {1, 1, 5, NAN, 0, 1, NAN, 9};
    xg_tensor *x = cn_tensor(v, XG_SHAPE(1, 1, 2, 4));
    xg_tensor_set_requires_grad(x, true);
    xg_tensor *y = xg_max_pool2d(x, 2, 0, 0);
    cn_assert_shape(y, XG_SHAPE(1, 1, 1, 2), "max_pool2d");
    cn_assert_values(y, (double[]){1, NAN}, 0, 0, "max_pool2d");
    float gv[2] = {10, 20};
    xg_backward(xg_sum_all(xg_mul(y, cn_tensor(gv, XG_SHAPE(1, 1, 1, 2)))));
    cn_assert_values(xg_tensor_grad(x), (double[]){10, 0, 0, 20, 0, 0, 0, 0},
                     0, 0, "max_pool2d backward routes to the winner");

    /* Padding never wins: an all-negative 2x2 plane, 3x3 windows at stride
     * 1 with padding 1: each window sees the whole plane. */
    float n4[4] = {-4, -1, -3, -2};
    y = xg_max_pool2d(cn_tensor(n4, XG_SHAPE(1, 1, 2, 2)), 3, 1, 1);
    cn_assert_values(y, (double[]){-1, -1, -1, -1}, 0, 0,
                     "max_pool2d with padding");
}

Test(cnn, max_pool_backward_sums_overlapping_windows)
{
    /* 1x3 row... as a 3x3 plane with a single peak in the middle: every
     * 2x2 window at stride 1 picks it, so it collects all four gradients. */
    float v[9] = {0, 0, 0, 0, 9, 0, 0, 0, 0};
    xg_tensor *x = cn_tensor(v, XG_SHAPE(1, 1, 3, 3));
    xg_tensor_set_requires_grad(x, true);
    xg_tensor *y = xg_max_pool2d(x, 2, 1, 0);
    float gv[4] = {1, 2, 3, 4};
    xg_backward(xg_sum_all(xg_mul(y, cn_tensor(gv, XG_SHAPE(1, 1, 2, 2)))));
    cn_assert_values(xg_tensor_grad(x), (double[]){0, 0, 0, 0, 10, 0, 0, 0, 0},
                     0, 0, "overlapping windows");
}

/* MaxPool2d(2) has its own kernels (one pass each way); against a naive
 * loop here: odd planes (the last row and column belong to no window),
 * ties among a few levels, NaNs, and the gradient routed to the winner
 * with 0 everywhere else. */
Test(cnn, max_pool_2x2_matches_naive_windows)
{
    enum { N = 2, C = 3, H = 7, W = 9, OH = H / 2, OW = W / 2 };
    uint64_t seed = 11;
    float v[N * C * H * W], g[N * C * OH * OW];
    for (int i = 0; i < N * C * H * W; i++)
        v[i] = (float)floor(cn_uniform(&seed, -3, 3)); /* many ties */
    v[5] = v[40] = v[41] = v[100] = NAN;
    for (int i = 0; i < N * C * OH * OW; i++)
        g[i] = (float)cn_uniform(&seed, -1, 1);
    double want_y[N * C * OH * OW], want_dx[N * C * H * W] = {0};
    for (int pl = 0; pl < N * C; pl++)
        for (int i = 0; i < OH; i++)
            for (int j = 0; j < OW; j++) {
                const float *x = v + pl * H * W;
                int best = 2 * i * W + 2 * j;
                for (int r = 2 * i; r < 2 * i + 2; r++)
                    for (int q = 2 * j; q < 2 * j + 2; q++) {
                        float c = x[r * W + q], m = x[best];
                        if (!isnan(m) && (isnan(c) || c > m))
                            best = r * W + q;
                    }
                int o = (pl * OH + i) * OW + j;
                want_y[o] = x[best];
                want_dx[pl * H * W + best] += g[o];
            }
    xg_tensor *x = cn_tensor(v, XG_SHAPE(N, C, H, W));
    xg_tensor_set_requires_grad(x, true);
    xg_tensor *y = xg_max_pool2d(x, 2, 0, 0);
    cn_assert_shape(y, XG_SHAPE(N, C, OH, OW), "max_pool2d");
    cn_assert_values(y, want_y, 0, 0, "max_pool2d 2x2");
    xg_backward(xg_sum_all(xg_mul(y, cn_tensor(g, XG_SHAPE(N, C, OH, OW)))));
    cn_assert_values(xg_tensor_grad(x), want_dx, 0, 0,
                     "max_pool2d 2x2 backward");
}

Test(cnn, avg_pool_counts_padding)
{
    /* 2x2 plane [1 2; 3 4], 3x3 windows, stride 1, padding 1: each window
     * covers the whole plane plus five padding zeros: 10 / 9. */
    float v[4] = {1, 2, 3, 4};
    xg_tensor *x = cn_tensor(v, XG_SHAPE(1, 1, 2, 2));
    xg_tensor_set_requires_grad(x, true);
    xg_tensor *y = xg_avg_pool2d(x, 3, 1, 1);
    double t = 10.0 / 9.0;
    cn_assert_values(y, (double[]){t, t, t, t}, 1e-6, 1e-6, "avg_pool2d");
    /* backward: every pixel is in all four windows: 4 * g / 9 for g = 1 */
    xg_backward(xg_sum_all(y));
    double g = 4.0 / 9.0;
    cn_assert_values(xg_tensor_grad(x), (double[]){g, g, g, g}, 1e-6, 1e-6,
                     "avg_pool2d backward");
    /* stride 0 means the kernel; a 2x2 plane, 2x2 window: the mean */
    cn_assert_values(xg_avg_pool2d(x, 2, 0, 0), (double[]){2.5}, 0, 0,
                     "avg_pool2d 2x2");
}

/* The divisor kh * kw overflows int for k >= 46341: compute it without.
 * Padding k / 2 around one pixel gives one window holding that pixel. */
Test(cnn, avg_pool_huge_kernel)
{
    const int ks[] = {46341, 65536};
    for (int i = 0; i < 2; i++) {
        int k = ks[i];
        double area = (double)k * k;
        xg_tensor *x = cn_tensor((float[]){1}, XG_SHAPE(1, 1, 1, 1));
        xg_tensor_set_requires_grad(x, true);
        xg_tensor *y = xg_avg_pool2d(x, k, 0, k / 2);
        cr_assert_not_null(y, "k %d: %s", k, xg_last_error());
        cn_assert_values(y, (double[]){1.0 / area}, 0, 1e-6, "avg_pool2d");
        cr_assert_eq(xg_backward(xg_sum_all(y)), XG_OK, "%s", xg_last_error());
        cn_assert_values(xg_tensor_grad(x), (double[]){1.0 / area}, 0, 1e-6,
                         "avg_pool2d backward");
    }
}

/* ===== dropout ============================================================ */

Test(cnn, dropout_mask_is_rand_uniform_stream)
{
    const float p = 0.3f;
    const int64_t n = 1001; /* not a multiple of 4 */
    float *xv = cn_random(n, 50, 0.5, 2);
    xg_tensor *x = cn_tensor(xv, XG_SHAPE(7, 11, 13));
    xg_tensor_set_requires_grad(x, true);
    xg_manual_seed(1234);
    xg_tensor *y = xg_dropout(x, p, true);
    xg_manual_seed(1234);
    float *u = cn_read(xg_rand_uniform(XG_SHAPE(n), 0, 1));
    float *yv = cn_read(y), scale = 1.0f / (1.0f - p);
    int64_t dropped = 0;
    for (int64_t i = 0; i < n; i++) {
        float want = u[i] < p ? 0.0f : xv[i] * scale;
        cr_assert_eq(yv[i], want, "element %" PRId64 ": got %g, expected %g"
                     " (u = %g)", i, yv[i], want, u[i]);
        dropped += u[i] < p;
    }
    cr_assert(dropped > 0.2 * n && dropped < 0.4 * n, "dropped %" PRId64,
              dropped);
    /* backward: the same mask and scale applied to the gradient */
    xg_backward(xg_sum_all(y));
    float *g = cn_read(xg_tensor_grad(x));
    for (int64_t i = 0; i < n; i++)
        cr_assert_eq(g[i], u[i] < p ? 0.0f : scale, "grad %" PRId64, i);
    free(xv);
    free(u);
    free(yv);
    free(g);
}

Test(cnn, dropout_seeds_and_modes)
{
    xg_tensor *x = cn_leaf(XG_SHAPE(4, 64), 60, 1, 2);
    xg_manual_seed(7);
    float *a = cn_read(xg_dropout(x, 0.5f, true));
    xg_manual_seed(7);
    float *b = cn_read(xg_dropout(x, 0.5f, true));
    float *c = cn_read(xg_dropout(x, 0.5f, true)); /* the stream moved on */
    cr_assert(memcmp(a, b, 256 * sizeof *a) == 0, "same seed, same mask");
    cr_assert(memcmp(a, c, 256 * sizeof *a) != 0, "next call, new mask");
    float *xv = cn_read(x);
    float *e = cn_read(xg_dropout(x, 0.5f, false)); /* evaluation */
    float *z = cn_read(xg_dropout(x, 0.0f, true));  /* p = 0 */
    cr_assert(memcmp(xv, e, 256 * sizeof *e) == 0, "eval is the identity");
    cr_assert(memcmp(xv, z, 256 * sizeof *z) == 0, "p = 0 is the identity");
    free(a);
    free(b);
    free(c);
    free(xv);
    free(e);
    free(z);
}

static xg_tensor *f_dropout(xg_tensor *const *in, const void *ctx)
{
    (void)ctx;
    xg_manual_seed(99); /* the same mask at every evaluation */
    return xg_dropout(in[0], 0.4f, true);
}

Test(cnn, dropout_gradcheck)
{
    xg_tensor *x = cn_leaf(XG_SHAPE(3, 5, 4), 61, -1, 1);
    gradcheck("dropout", f_dropout, NULL, &x, 1, 1e-2, 2e-3);
}

/* ===== batch_norm2d ======================================================= */

typedef struct bn_ctx {
    xg_tensor *rmean, *rvar;
    bool training;
} bn_ctx;

static xg_tensor *f_bn(xg_tensor *const *in, const void *ctx)
{
    const bn_ctx *c = ctx;
    return xg_batch_norm2d(in[0], in[1], in[2], c->training ? NULL : c->rmean,
                           c->training ? NULL : c->rvar, c->training, 0.1f,
                           1e-5f);
}

Test(cnn, batch_norm2d_gradcheck)
{
    float rm[3] = {0.2f, -0.1f, 0.0f}, rv[3] = {1.5f, 0.5f, 2.0f};
    bn_ctx c = {cn_tensor(rm, XG_SHAPE(3)), cn_tensor(rv, XG_SHAPE(3)), true};
    xg_tensor *in[3] = {cn_leaf(XG_SHAPE(2, 3, 3, 4), 70, -2, 2),
                        cn_leaf(XG_SHAPE(3), 71, 0.5, 1.5),
                        cn_leaf(XG_SHAPE(3), 72, -1, 1)};
    gradcheck("batch_norm2d training", f_bn, &c, in, 3, 1e-2, 5e-3);
    c.training = false;
    gradcheck("batch_norm2d eval", f_bn, &c, in, 3, 1e-2, 2e-3);
}

/* PyTorch's BatchNorm2d formulas, in double: one channel's statistics. */
static void channel_stats(const float *x, int64_t n, int64_t c, int64_t hw,
                          int64_t ch, double *mean, double *var)
{
    double s = 0, ss = 0;
    for (int64_t b = 0; b < n; b++)
        for (int64_t k = 0; k < hw; k++)
            s += x[(b * c + ch) * hw + k];
    *mean = s / (double)(n * hw);
    for (int64_t b = 0; b < n; b++)
        for (int64_t k = 0; k < hw; k++) {
            double d = x[(b * c + ch) * hw + k] - *mean;
            ss += d * d;
        }
    *var = ss / (double)(n * hw); /* biased: used to normalise */
}

Test(cnn, batch_norm2d_matches_pytorch_formulas)
{
    const int64_t n = 4, c = 3, hw = 10, m = n * hw;
    float *xv = cn_random(n * c * hw, 80, -3, 5), w[3] = {1.5f, 0.5f, -1};
    float b[3] = {0.1f, 0.2f, 0.3f}, rm[3] = {0, 1, 2}, rv[3] = {1, 2, 3};
    xg_tensor *x = cn_tensor(xv, XG_SHAPE(4, 3, 2, 5));
    xg_tensor *rmean = cn_tensor(rm, XG_SHAPE(3)), *rvar = cn_tensor(rv,
                                                                     XG_SHAPE(3));
    xg_tensor *y = xg_batch_norm2d(x, cn_tensor(w, XG_SHAPE(3)),
                                   cn_tensor(b, XG_SHAPE(3)), rmean, rvar,
                                   true, 0.1f, 1e-5f);
    double want_y[120], want_rm[3], want_rv[3], mean, var;
    for (int64_t ch = 0; ch < c; ch++) {
        channel_stats(xv, n, c, hw, ch, &mean, &var);
        for (int64_t k = 0; k < n * hw; k++) {
            int64_t i = (k / hw * c + ch) * hw + k % hw;
            want_y[i] = (xv[i] - mean) / sqrt(var + 1e-5) * w[ch] + b[ch];
        }
        want_rm[ch] = 0.9 * rm[ch] + 0.1 * mean;
        want_rv[ch] = 0.9 * rv[ch] + 0.1 * var * m / (m - 1); /* unbiased */
    }
    cn_assert_values(y, want_y, 1e-5, 1e-5, "batch_norm2d training");
    cn_assert_values(rmean, want_rm, 1e-6, 1e-6, "running_mean");
    cn_assert_values(rvar, want_rv, 1e-6, 1e-6, "running_var");
    /* evaluation: the running statistics just updated */
    y = xg_batch_norm2d(x, NULL, NULL, rmean, rvar, false, 0.1f, 1e-5f);
    for (int64_t i = 0; i < n * c * hw; i++) {
        int64_t ch = i / hw % c;
        want_y[i] = (xv[i] - want_rm[ch]) / sqrt(want_rv[ch] + 1e-5);
    }
    cn_assert_values(y, want_y, 1e-5, 1e-5, "batch_norm2d eval");
    free(xv);
}

/* ===== layers ============================================================= */

Test(cnn, layers_names_shapes_and_modes)
{
    xg_manual_seed(3);
    xg_module *seq = xg_sequential();
    cr_assert_eq(xg_sequential_add(seq, "conv",
                                   xg_conv2d_layer(2, 4, 3, NULL, true)), XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "bn", xg_batch_norm2d_layer(4)), XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "pool", xg_max_pool2d_layer(2, 0, 0)),
                 XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "drop", xg_dropout_layer(0.5f)), XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "flat", xg_flatten_layer()), XG_OK);
    const char *names[] = {"conv.weight", "conv.bias", "bn.weight", "bn.bias"};
    cr_assert_eq(xg_module_param_count(seq), 4);
    for (int i = 0; i < 4; i++) {
        const char *name;
        xg_module_param(seq, i, &name);
        cr_assert_str_eq(name, names[i]);
    }
    /* PyTorch's init: uniform in +-1 / sqrt(2 * 3 * 3) */
    float *w = cn_read(xg_module_param(seq, 0, NULL));
    for (int i = 0; i < 4 * 2 * 9; i++)
        cr_assert(fabsf(w[i]) <= 1.0f / sqrtf(18.0f), "weight %d: %g", i, w[i]);
    free(w);
    cr_assert_eq(xg_module_buffer_count(seq), 3);
    xg_tensor *x = cn_leaf(XG_SHAPE(2, 2, 6, 6), 90, -1, 1);
    cn_assert_shape(xg_module_forward(seq, x), XG_SHAPE(2, 4 * 2 * 2),
                    "forward");
    /* evaluation is deterministic: dropout off, running statistics */
    xg_module_set_training(seq, false);
    float *a = cn_read(xg_module_forward(seq, x));
    float *b = cn_read(xg_module_forward(seq, x));
    cr_assert(memcmp(a, b, 32 * sizeof *a) == 0);
    free(a);
    free(b);
    xg_module_free(seq);
}

/* ===== threads ============================================================ */

/* conv2d forward and backward on a device opened with `threads` threads. */
static float *conv_on_threads(const char *threads, int64_t *count)
{
    setenv("XGRAD_NUM_THREADS", threads, 1);
    xg_device *dev;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device_set_current(dev);
    xg_scope *s = xg_scope_begin();
    xg_tensor *x = cn_leaf(XG_SHAPE(7, 6, 9, 9), 100, -1, 1);
    xg_tensor *w = cn_leaf(XG_SHAPE(8, 3, 3, 3), 101, -1, 1);
    xg_conv2d_params p = {1, 1, 1, 1, 1, 1, 2};
    xg_backward(xg_sum_all(xg_conv2d(x, w, NULL, &p)));
    float *gw = cn_read(xg_tensor_grad(w)), *gx = cn_read(xg_tensor_grad(x));
    *count = 8 * 3 * 9;
    float *out = realloc(gw, (size_t)(*count + 7 * 6 * 81) * sizeof *out);
    memcpy(out + *count, gx, 7 * 6 * 81 * sizeof *gx);
    *count += 7 * 6 * 81;
    free(gx);
    xg_scope_end(s);
    xg_device_set_current(NULL);
    xg_device_close(dev);
    return out;
}

Test(cnn, conv2d_same_result_on_any_thread_count)
{
    int64_t n;
    float *one = conv_on_threads("1", &n), *three = conv_on_threads("3", &n);
    float *again = conv_on_threads("3", &n);
    cr_assert(memcmp(three, again, (size_t)n * sizeof *three) == 0,
              "the same thread count must give the same bits");
    for (int64_t i = 0; i < n; i++)
        cr_assert(cn_close(three[i], one[i], 1e-5, 1e-5),
                  "value %" PRId64 ": %g with 3 threads, %g with 1", i,
                  three[i], one[i]);
    free(one);
    free(three);
    free(again);
}

/* ===== bad calls ========================================================== */

Test(cnn, conv2d_bad_calls)
{
    xg_tensor *x = cn_leaf(XG_SHAPE(2, 4, 5, 5), 1, -1, 1);
    xg_tensor *w = cn_leaf(XG_SHAPE(6, 4, 3, 3), 2, -1, 1);
    xg_conv2d_params p = xg_conv2d_defaults();
    cr_assert_null(xg_conv2d(x, cn_leaf(XG_SHAPE(6, 3, 3, 3), 3, -1, 1), NULL,
                             NULL));
    cn_assert_error(XG_ERR_SHAPE, "input channels", "wrong channels");
    p.groups = 3;
    cr_assert_null(xg_conv2d(x, w, NULL, &p));
    cn_assert_error(XG_ERR_SHAPE, "multiples of groups", "groups mismatch");
    p.groups = 2;
    cr_assert_null(xg_conv2d(x, w, NULL, &p)); /* weight wants 2 per group */
    cn_assert_error(XG_ERR_SHAPE, "groups", "weight for other groups");
    cr_assert_null(xg_conv2d(x, cn_leaf(XG_SHAPE(6, 4, 6, 3), 4, -1, 1),
                             NULL, NULL));
    cn_assert_error(XG_ERR_SHAPE, "larger than the padded input",
                    "kernel larger than the input");
    p = (xg_conv2d_params){0, 1, 0, 0, 1, 1, 1};
    cr_assert_null(xg_conv2d(x, w, NULL, &p));
    cn_assert_error(XG_ERR_INVALID_ARG, "stride", "stride 0");
    p = (xg_conv2d_params){1, 1, -1, 0, 1, 1, 1};
    cr_assert_null(xg_conv2d(x, w, NULL, &p));
    cn_assert_error(XG_ERR_INVALID_ARG, "padding", "negative padding");
    cr_assert_null(xg_conv2d(x, w, cn_leaf(XG_SHAPE(5), 5, -1, 1), NULL));
    cn_assert_error(XG_ERR_SHAPE, "bias", "bias of the wrong size");
    cr_assert_null(xg_conv2d(xg_reshape(x, XG_SHAPE(8, 5, 5)), w, NULL, NULL));
    cn_assert_error(XG_ERR_SHAPE, "4-D", "3-D input");
    cr_assert_null(xg_conv2d(NULL, w, NULL, NULL));
    cn_assert_error(XG_ERR_INVALID_ARG, "NULL", "NULL input");
    p = (xg_conv2d_params){1, 1, 0, 0, 1, 1, 2};
    cr_assert_null(xg_conv2d_layer(3, 4, 3, &p, true));
    cn_assert_error(XG_ERR_INVALID_ARG, "divisible by groups", "layer groups");
}

Test(cnn, pool_dropout_bn_bad_calls)
{
    xg_tensor *x = cn_leaf(XG_SHAPE(1, 2, 4, 4), 1, -1, 1);
    cr_assert_null(xg_max_pool2d(x, 5, 0, 0));
    cn_assert_error(XG_ERR_SHAPE, "does not fit", "window larger than input");
    cr_assert_null(xg_avg_pool2d(x, 2, 1, 2));
    cn_assert_error(XG_ERR_INVALID_ARG, "padding", "padding > kernel / 2");
    cr_assert_null(xg_max_pool2d(x, 0, 1, 0));
    cn_assert_error(XG_ERR_INVALID_ARG, "kernel", "kernel 0");
    cr_assert_null(xg_avg_pool2d(xg_reshape(x, XG_SHAPE(2, 16)), 2, 0, 0));
    cn_assert_error(XG_ERR_SHAPE, "4-D", "2-D pool input");
    const float bad_p[] = {1.0f, -0.1f, NAN, 2.0f};
    for (int i = 0; i < 4; i++) {
        cr_assert_null(xg_dropout(x, bad_p[i], true));
        cn_assert_error(XG_ERR_INVALID_ARG, "dropout: p", "bad p");
        cr_assert_null(xg_dropout_layer(bad_p[i]));
        cn_assert_error(XG_ERR_INVALID_ARG, "dropout_layer: p", "layer p");
    }
    cr_assert_null(xg_batch_norm2d(x, cn_leaf(XG_SHAPE(3), 2, 0, 1), NULL,
                                   NULL, NULL, true, 0.1f, 1e-5f));
    cn_assert_error(XG_ERR_SHAPE, "one value per channel", "bn weight size");
    cr_assert_null(xg_batch_norm2d(x, NULL, NULL, NULL, NULL, false, 0.1f,
                                   1e-5f));
    cn_assert_error(XG_ERR_INVALID_ARG, "NULL", "bn eval without stats");
    cr_assert_null(xg_flatten(x, 4));
    cn_assert_error(XG_ERR_INVALID_ARG, "axis", "flatten axis");
    cr_assert_null(xg_max_pool2d_layer(2, -1, 0));
    cn_assert_error(XG_ERR_INVALID_ARG, "stride", "pool layer stride");
}

/* ===== memory: what a training step holds per sample ===================== */

/* The MNIST example's CNN at a small size: 1x12x12 images, conv 1->8 3x3,
 * ReLU, conv 8->16 3x3, ReLU, max-pool 2, dropout, flatten, linear
 * 256->32, ReLU, dropout, linear 32->10. Per sample: conv1 / relu1 8x10x10
 * (800 values), conv2 / relu2 16x8x8 (1024), pool and dropout 16x4x4
 * (256). */
static xg_module *mem_cnn(void)
{
    xg_module *seq = xg_sequential();
    xg_module *layers[] = {
        xg_conv2d_layer(1, 8, 3, NULL, true), xg_relu_layer(),
        xg_conv2d_layer(8, 16, 3, NULL, true), xg_relu_layer(),
        xg_max_pool2d_layer(2, 0, 0), xg_dropout_layer(0.25f),
        xg_flatten_layer(), xg_linear(256, 32, true), xg_relu_layer(),
        xg_dropout_layer(0.5f), xg_linear(32, 10, true)};
    for (size_t i = 0; i < sizeof layers / sizeof *layers; i++)
        cr_assert_eq(xg_sequential_add(seq, NULL, layers[i]), XG_OK, "%s",
                     xg_last_error());
    return seq;
}

/* One training step (forward, cross-entropy, a backward that frees the
 * graph as it walks) on `batch` images made beforehand: the device bytes
 * the step's tensors hold after the forward (*live) and at its peak
 * (*peak), both above what was in use before it. The second of two steps,
 * so that the parameters' gradients exist at both. */
static void mem_step(xg_module *m, int64_t batch, uint64_t *live,
                     uint64_t *peak)
{
    xg_device *dev = xg_device_current();
    float *v = cn_random(batch * 144, 7, -1, 1);
    int32_t *labels = malloc((size_t)batch * sizeof *labels);
    cr_assert_not_null(labels);
    for (int64_t i = 0; i < batch; i++)
        labels[i] = (int32_t)(i % 10);
    xg_tensor *x = cn_tensor(v, XG_SHAPE(batch, 1, 12, 12));
    xg_tensor *y = xg_tensor_from_data(labels, XG_I32, XG_SHAPE(batch));
    cr_assert_not_null(y);
    for (int step = 0; step < 2; step++) {
        xg_scope *s = xg_scope_begin();
        xg_device_memory_info m0, m1, m2;
        cr_assert_eq(xg_device_memory(dev, &m0), XG_OK);
        xg_device_reset_peak_memory(dev);
        xg_tensor *loss = xg_cross_entropy(xg_module_forward(m, x), y);
        cr_assert_not_null(loss, "%s", xg_last_error());
        cr_assert_eq(xg_device_memory(dev, &m1), XG_OK);
        cr_assert_eq(xg_backward_ex(loss, false), XG_OK, "%s",
                     xg_last_error());
        cr_assert_eq(xg_device_memory(dev, &m2), XG_OK);
        *live = m1.in_use - m0.in_use;
        *peak = m2.peak - m0.in_use;
        xg_scope_end(s);
    }
    free(v);
    free(labels);
}

/* The bytes a step holds grow with the batch by no more than what must be
 * kept per sample. After the forward: relu1's output (conv2's input and
 * relu1's saved output, 800), relu2's output (its saved output, 1024),
 * the pool's i32 indices (256), the first dropout's output (the linear
 * layer's input, 256), relu3's and the second dropout's outputs (32 + 32)
 * and the logits the caller holds (10): 2410 values, and one for the
 * loss's per-sample terms; in particular neither the convolutions' outputs
 * before ReLU nor the pool's output, which no backward reads (the pool's
 * output held by dropout was 2667). At the peak, the max-pool backward:
 * relu1's and relu2's outputs, the indices, the incoming gradient (256),
 * the new one (1024) and the logits: 3370 values; the relu2 backward after
 * it writes over the gradient it gets instead of holding a second one
 * (which made the peak 3882). */
Test(cnn, training_step_memory_per_sample)
{
    xg_manual_seed(5);
    xg_module *m = mem_cnn();
    xg_module_set_training(m, true);
    const int64_t b1 = 64, b2 = 256;
    uint64_t live1, peak1, live2, peak2;
    mem_step(m, b1, &live1, &peak1);
    mem_step(m, b2, &live2, &peak2);
    double live = (double)(live2 - live1) / (double)(b2 - b1) / 4.0;
    double peak = (double)(peak2 - peak1) / (double)(b2 - b1) / 4.0;
    cr_expect_leq(live, 2411.0, "after the forward: %.1f values per sample "
                  "(must keep 2411)", live);
    cr_expect_leq(peak, 3370.0, "at the peak: %.1f values per sample "
                  "(must keep 3370)", peak);
    xg_module_free(m);
}

/* The ReLU backward writes over its incoming gradient only when nothing
 * else holds it: here add passes one gradient to both ReLUs, and a
 * gradient that the first overwrote would zero the second's where a < 0.
 * Expected from the definition: d/da sum(w (relu(a) + relu(b))) = w where
 * a > 0, else 0; likewise b. */
Test(cnn, relu_backward_shared_gradient)
{
    const int64_t n = 257;
    xg_tensor *a = cn_leaf(XG_SHAPE(n), 11, -1, 1);
    xg_tensor *b = cn_leaf(XG_SHAPE(n), 12, -1, 1);
    float *wv = cn_random(n, 13, 0.5, 2), *av = cn_read(a), *bv = cn_read(b);
    xg_tensor *w = cn_tensor(wv, XG_SHAPE(n));
    xg_tensor *s = xg_add(xg_relu(a), xg_relu(b));
    cr_assert_eq(xg_backward_ex(xg_sum_all(xg_mul(s, w)), false), XG_OK,
                 "%s", xg_last_error());
    float *ga = cn_read(xg_tensor_grad(a)), *gb = cn_read(xg_tensor_grad(b));
    for (int64_t i = 0; i < n; i++) {
        cr_assert_eq(ga[i], av[i] > 0 ? wv[i] : 0.0f, "da[%lld]", (long long)i);
        cr_assert_eq(gb[i], bv[i] > 0 ? wv[i] : 0.0f, "db[%lld]", (long long)i);
    }
    free(wv), free(av), free(bv), free(ga), free(gb);
}
