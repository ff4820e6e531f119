/* The host conversions between f32 and bf16 / f16 (api/core/half.c): the
 * paths this CPU takes (F16C, AVX-512 BF16 where present) give the bits of
 * the portable scalar rules (api/core/half_impl.h) over every 16-bit
 * pattern and 2^24 f32 patterns (16 per step of 2^12 through the whole
 * range), at every alignment and tail length. PyTorch checks the rules'
 * bits themselves (tests/half_torch.py). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#include "half_impl.h"
#include "xgrad.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd32(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

Test(half, features_reported)
{
    bool f16c, bf16;
    xg__half_features(&f16c, &bf16);
    cr_log_info("F16C %s, AVX-512 BF16 %s", f16c ? "yes" : "no",
                bf16 ? "yes" : "no");
}

Test(half, widening_every_pattern)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    cr_assert(h && a && b);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    xg_f16_to_f32(h, a, N);
    xg_bf16_to_f32(h, b, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(xg__f32_bits(a[i]), xg__f32_bits(xg__f16_to_f32_1(h[i])),
                     "f16 0x%04x", i);
        cr_assert_eq(xg__f32_bits(b[i]),
                     xg__f32_bits(xg__bf16_to_f32_1(h[i])), "bf16 0x%04x", i);
    }
    free(h);
    free(a);
    free(b);
}

Test(half, narrowing_matches_the_scalar_rules)
{
    enum { STEPS = 1 << 20, PER = 16, N = STEPS * PER };
    uint32_t *u = malloc((size_t)N * sizeof *u);
    uint16_t *h = malloc((size_t)N * sizeof *h);
    uint16_t *g = malloc((size_t)N * sizeof *g);
    cr_assert(u && h && g);
    for (uint32_t s = 0; s < STEPS; s++)
        for (int k = 0; k < PER; k++)
            /* the step's first pattern, its last, and random ones */
            u[s * PER + k] = (s << 12) | (k == 0 ? 0u : k == 1 ? 0xfffu
                                                   : rnd32() & 0xfffu);
    const float *f = (const float *)(const void *)u;
    xg_f32_to_f16(f, h, N);
    xg_f32_to_bf16(f, g, N);
    for (int i = 0; i < N; i++) {
        if (h[i] != xg__f32_to_f16_1(f[i]))
            cr_assert_fail("f16 of 0x%08x: 0x%04x, rule 0x%04x", u[i], h[i],
                           xg__f32_to_f16_1(f[i]));
        if (g[i] != xg__f32_to_bf16_1(f[i]))
            cr_assert_fail("bf16 of 0x%08x: 0x%04x, rule 0x%04x", u[i], g[i],
                           xg__f32_to_bf16_1(f[i]));
    }
    free(u);
    free(h);
    free(g);
}

/* Every offset and length up to 40 (the vector loops' heads and tails),
 * with a subnormal in some blocks (AVX-512 BF16's scalar fallback). */
Test(half, offsets_and_tails)
{
    float src[48];
    uint16_t out[48], want[48];
    for (int off = 0; off < 4; off++)
        for (int n = 0; n <= 40; n++) {
            for (int i = 0; i < 48; i++) {
                uint32_t b = rnd32();
                if (i % 11 == 3)
                    b &= 0x807fffffu; /* subnormal */
                memcpy(&src[i], &b, sizeof b);
            }
            memset(out, 0xee, sizeof out);
            xg_f32_to_bf16(src + off, out + off, (size_t)n);
            for (int i = 0; i < 48; i++)
                want[i] = i >= off && i < off + n
                              ? xg__f32_to_bf16_1(src[i]) : 0xeeee;
            cr_assert_arr_eq(out, want, sizeof out, "bf16 off %d n %d", off,
                             n);
            memset(out, 0xee, sizeof out);
            xg_f32_to_f16(src + off, out + off, (size_t)n);
            for (int i = 0; i < 48; i++)
                want[i] = i >= off && i < off + n
                              ? xg__f32_to_f16_1(src[i]) : 0xeeee;
            cr_assert_arr_eq(out, want, sizeof out, "f16 off %d n %d", off,
                             n);
        }
}

/* ---- 16-bit tensors through the API (CPU backend) ------------------------ */

#include "test_util.h"

TestSuite(half_tensors, .init = tu_init_scope, .fini = tu_fini_scope);

#define N16 37

static void fill_values(float *v, int n, float scale)
{
    for (int i = 0; i < n; i++)
        v[i] = scale * (float)((int)(rnd32() % 2001) - 1000) / 333.0f;
}

/* t's values widened to f32. */
static void read_f32(const xg_tensor *t, float *v, size_t n)
{
    cr_assert_eq(xg_tensor_read_f32(t, v, n), XG_OK, "%s", xg_last_error());
}

Test(half_tensors, host_io_and_casts)
{
    float v[N16], back[N16];
    uint16_t bits[N16], want[N16];
    fill_values(v, N16, 100.0f);
    v[0] = 70000.0f; /* f16 overflow: Inf */
    xg_tensor *x = xg_tensor_from_data(v, XG_F32, XG_SHAPE(N16));
    for (int d = XG_BF16; d <= XG_F16; d++) {
        xg_tensor *h = xg_to_dtype(x, (xg_dtype)d);
        cr_assert_not_null(h, "%s", xg_last_error());
        cr_expect_eq(xg_tensor_dtype(h), d);
        cr_expect_eq(xg_tensor_read(h, bits, sizeof bits), XG_OK);
        cr_expect_eq(xg_tensor_read(h, bits, N16 * 4), XG_ERR_INVALID_ARG,
                     "bytes count in the tensor's dtype");
        (d == XG_BF16 ? xg_f32_to_bf16 : xg_f32_to_f16)(v, want, N16);
        cr_expect_arr_eq(bits, want, sizeof bits, "%s bits",
                         xg_dtype_name((xg_dtype)d));
        read_f32(h, back, N16);
        for (int i = 0; i < N16; i++) {
            float w = d == XG_BF16 ? xg__bf16_to_f32_1(want[i])
                                   : xg__f16_to_f32_1(want[i]);
            cr_expect_eq(xg__f32_bits(back[i]), xg__f32_bits(w));
        }
        cr_expect(isinf(back[0]) == (d == XG_F16));
        /* back to f32, and from bytes */
        xg_tensor *f = xg_to_dtype(h, XG_F32);
        float f_back[N16];
        cr_assert_eq(xg_tensor_read(f, f_back, sizeof f_back), XG_OK);
        cr_expect_arr_eq(f_back, back, sizeof back);
        xg_tensor *g = xg_tensor_from_data(want, (xg_dtype)d, XG_SHAPE(N16));
        cr_assert_not_null(g, "%s", xg_last_error());
        cr_expect_eq(xg_tensor_write_f32(g, v, N16), XG_OK);
        cr_expect_eq(xg_tensor_read(g, bits, sizeof bits), XG_OK);
        cr_expect_arr_eq(bits, want, sizeof bits);
        float item;
        cr_expect_eq(xg_tensor_item(xg_sum_all(g), &item), XG_OK, "%s",
                     xg_last_error());
    }
    /* i32 <-> float: truncation toward zero, no gradient */
    float iv[4] = {1.7f, -2.5f, 3.0f, -0.2f};
    xg_tensor *fi = xg_tensor_from_data(iv, XG_F32, XG_SHAPE(4));
    xg_tensor *i = xg_to_dtype(fi, XG_I32);
    int32_t ints[4];
    cr_assert_eq(xg_tensor_read(i, ints, sizeof ints), XG_OK);
    cr_expect(ints[0] == 1 && ints[1] == -2 && ints[2] == 3 && ints[3] == 0);
    cr_expect_eq(xg_tensor_read_f32(i, iv, 4), XG_ERR_DTYPE);
    xg_tensor *hi = xg_to_dtype(i, XG_F16);
    read_f32(hi, iv, 4);
    cr_expect(iv[0] == 1.0f && iv[1] == -2.0f && iv[3] == 0.0f);
}

static int op_index(const char *name)
{
    for (int op = 0; op < xg_op_count(); op++)
        if (strcmp(xg_op_name(op), name) == 0)
            return op;
    cr_assert_fail("no op %s", name);
    return -1;
}

/* Whether 16-bit tensors `got` and `ref` hold the same bits. */
static void expect_same_bits(xg_tensor *got, xg_tensor *ref, const char *what)
{
    cr_assert_not_null(got, "%s: %s", what, xg_last_error());
    cr_assert_not_null(ref, "%s: %s", what, xg_last_error());
    cr_assert_eq(xg_tensor_dtype(got), xg_tensor_dtype(ref), "%s", what);
    int64_t n = xg_tensor_numel(got);
    cr_assert_eq(n, xg_tensor_numel(ref), "%s", what);
    uint16_t *g = malloc((size_t)n * 2), *r = malloc((size_t)n * 2);
    cr_assert(g && r);
    cr_assert_eq(xg_tensor_read(got, g, (size_t)n * 2), XG_OK);
    cr_assert_eq(xg_tensor_read(ref, r, (size_t)n * 2), XG_OK);
    int64_t bad = -1;
    for (int64_t i = 0; i < n && bad < 0; i++)
        if (g[i] != r[i])
            bad = i;
    cr_expect(bad < 0, "%s: element %lld is 0x%04x, want 0x%04x", what,
              (long long)bad, bad < 0 ? 0 : g[bad], bad < 0 ? 0 : r[bad]);
    free(g);
    free(r);
}

/* The CPU runs the elementwise families on 16-bit values natively, in f32
 * blocks: every op gives the bits of the f32 op on the widened values,
 * rounded once, across block boundaries (rows longer than a block, odd
 * tails), broadcast operands, strided views, and through the backward ops
 * (the unary ops' derivatives, reached by autograd). */
Test(half_tensors, native_elementwise_rounds_once)
{
    xg_device *dev = xg_device_current();
    const char *native[] = {"neg", "gelu", "relu_backward", "add_scalar",
                            "mul", "same_value"};
    for (size_t k = 0; k < sizeof native / sizeof *native; k++)
        for (int d = XG_BF16; d <= XG_F16; d++)
            cr_expect(xg_device_supports_natively(dev, op_index(native[k]),
                                                  (xg_dtype)d),
                      "%s on %s", native[k], xg_dtype_name((xg_dtype)d));
    enum { R = 7, C = 613 }; /* rows over two 256-element blocks */
    float *a = malloc(R * C * sizeof *a), *b = malloc(R * C * sizeof *b);
    cr_assert(a && b);
    fill_values(a, R * C, 1.5f);
    fill_values(b, R * C, 1.5f);
    for (int i = 0; i < R * C; i += 97)
        b[i] = a[i]; /* same_value's ones */
    xg_tensor *fa = xg_tensor_from_data(a, XG_F32, XG_SHAPE(R, C));
    xg_tensor *fb = xg_tensor_from_data(b, XG_F32, XG_SHAPE(R, C));
    for (int d = XG_BF16; d <= XG_F16; d++) {
        xg_dtype t = (xg_dtype)d;
        xg_tensor *ha = xg_to_dtype(fa, t), *hb = xg_to_dtype(fb, t);
        xg_tensor *wa = xg_to_dtype(ha, XG_F32), *wb = xg_to_dtype(hb, XG_F32);
        xg_tensor *pos = xg_add_scalar(xg_mul(ha, ha), 0.25f); /* log, sqrt */
        xg_tensor *wpos = xg_to_dtype(pos, XG_F32);
        typedef xg_tensor *(*unary_fn)(xg_tensor *);
        static const struct { const char *name; unary_fn f; } unary[] = {
            {"neg", xg_neg},     {"exp", xg_exp},       {"relu", xg_relu},
            {"sigmoid", xg_sigmoid}, {"tanh", xg_tanh}, {"gelu", xg_gelu},
            {"silu", xg_silu},   {"gelu_tanh", xg_gelu_tanh}};
        for (size_t k = 0; k < sizeof unary / sizeof *unary; k++)
            expect_same_bits(unary[k].f(ha), xg_to_dtype(unary[k].f(wa), t),
                             unary[k].name);
        expect_same_bits(xg_log(pos), xg_to_dtype(xg_log(wpos), t), "log");
        expect_same_bits(xg_sqrt(pos), xg_to_dtype(xg_sqrt(wpos), t), "sqrt");
        expect_same_bits(xg_add_scalar(ha, 0.3f),
                         xg_to_dtype(xg_add_scalar(wa, 0.3f), t), "add_scalar");
        expect_same_bits(xg_div_scalar(ha, 3.0f),
                         xg_to_dtype(xg_div_scalar(wa, 3.0f), t), "div_scalar");
        /* binary: same shape, a row, a column, a scalar, a transposed view */
        xg_tensor *row = xg_to_dtype(xg_narrow(fb, 0, 0, 1), t);
        xg_tensor *col = xg_to_dtype(xg_narrow(fb, 1, 0, 1), t);
        xg_tensor *one = xg_to_dtype(xg_narrow(xg_narrow(fb, 0, 2, 1), 1, 5, 1),
                                     t);
        xg_tensor *operands[4] = {hb, row, col, one};
        xg_tensor *(*binary[4])(xg_tensor *, xg_tensor *) = {xg_add, xg_sub,
                                                             xg_mul, xg_div};
        for (int o = 0; o < 4; o++)
            for (int k = 0; k < 4; k++) {
                char what[64];
                snprintf(what, sizeof what, "binary %d, operand %d", k, o);
                xg_tensor *wo = xg_to_dtype(operands[o], XG_F32);
                expect_same_bits(binary[k](ha, operands[o]),
                                 xg_to_dtype(binary[k](wa, wo), t), what);
                expect_same_bits(binary[k](operands[o], ha),
                                 xg_to_dtype(binary[k](wo, wa), t), what);
            }
        xg_tensor *square = xg_to_dtype(xg_narrow(fa, 1, 0, R), t);
        xg_tensor *wsq = xg_to_dtype(square, XG_F32);
        expect_same_bits(xg_sub(xg_transpose(square, 0, 1), square),
                         xg_to_dtype(xg_sub(xg_transpose(wsq, 0, 1), wsq), t),
                         "transposed view");
        /* the unary ops' backward: d/dx sum(f(x) * g) = f'(x) g */
        static const struct { const char *name; unary_fn f; } grads[] = {
            {"relu_backward", xg_relu}, {"gelu_backward", xg_gelu},
            {"silu_backward", xg_silu}, {"gelu_tanh_backward", xg_gelu_tanh}};
        for (size_t k = 0; k < sizeof grads / sizeof *grads; k++) {
            xg_tensor *x16 = xg_to_dtype(fa, t), *x32 = xg_to_dtype(x16, XG_F32);
            cr_assert_eq(xg_tensor_set_requires_grad(x16, true), XG_OK);
            cr_assert_eq(xg_tensor_set_requires_grad(x32, true), XG_OK);
            cr_assert_eq(xg_backward(xg_sum_all(xg_mul(grads[k].f(x16), hb))),
                         XG_OK, "%s", xg_last_error());
            cr_assert_eq(xg_backward(xg_sum_all(xg_mul(grads[k].f(x32), wb))),
                         XG_OK, "%s", xg_last_error());
            expect_same_bits(xg_tensor_grad(x16),
                             xg_to_dtype(xg_tensor_grad(x32), t), grads[k].name);
        }
    }
    free(a);
    free(b);
}

/* An op with no 16-bit kernel (softmax, the reductions on the CPU) runs on
 * the widened values and rounds once: the bits of the f32 op on the same
 * values, rounded. */
Test(half_tensors, widened_ops_round_once)
{
    xg_device *dev = xg_device_current();
    int softmax_op = op_index("softmax"), copy_op = op_index("copy"),
        cast_op = op_index("cast");
    cr_expect(xg_device_supports(dev, softmax_op, XG_BF16));
    cr_expect(!xg_device_supports_natively(dev, softmax_op, XG_BF16));
    cr_expect(xg_device_supports_natively(dev, copy_op, XG_F16));
    cr_expect(xg_device_supports_natively(dev, cast_op, XG_F16));
    cr_expect(xg_device_supports_natively(dev, softmax_op, XG_F32));
    float a[6 * 5], b[5 * 4];
    fill_values(a, 30, 1.0f);
    fill_values(b, 20, 1.0f);
    xg_tensor *fa = xg_tensor_from_data(a, XG_F32, XG_SHAPE(6, 5));
    xg_tensor *fb = xg_tensor_from_data(b, XG_F32, XG_SHAPE(5, 4));
    for (int d = XG_BF16; d <= XG_F16; d++) {
        xg_dtype t = (xg_dtype)d;
        xg_tensor *ha = xg_to_dtype(fa, t), *hb = xg_to_dtype(fb, t);
        /* the reference: f32 ops on the rounded values, rounded */
        xg_tensor *wa = xg_to_dtype(ha, XG_F32), *wb = xg_to_dtype(hb, XG_F32);
        xg_tensor *got[3] = {xg_exp(ha), xg_matmul(ha, hb), xg_softmax(ha)};
        xg_tensor *ref[3] = {xg_to_dtype(xg_exp(wa), t),
                             xg_to_dtype(xg_matmul(wa, wb), t),
                             xg_to_dtype(xg_softmax(wa), t)};
        for (int k = 0; k < 3; k++) {
            cr_assert_not_null(got[k], "%s", xg_last_error());
            cr_expect_eq(xg_tensor_dtype(got[k]), t);
            int64_t n = xg_tensor_numel(got[k]);
            uint16_t g[64], r[64];
            cr_assert_eq(xg_tensor_read(got[k], g, (size_t)n * 2), XG_OK);
            cr_assert_eq(xg_tensor_read(ref[k], r, (size_t)n * 2), XG_OK);
            cr_expect_arr_eq(g, r, (size_t)n * 2, "%s op %d",
                             xg_dtype_name(t), k);
        }
        /* a mixed pair promotes to f32 */
        xg_tensor *mixed = xg_add(fa, ha);
        cr_assert_not_null(mixed, "%s", xg_last_error());
        cr_expect_eq(xg_tensor_dtype(mixed), XG_F32);
        float m[30], w[30];
        read_f32(mixed, m, 30);
        read_f32(ha, w, 30);
        for (int i = 0; i < 30; i++)
            cr_expect_eq(m[i], a[i] + w[i]);
        /* views of 16-bit tensors: the native copy_strided */
        xg_tensor *tr = xg_contiguous(xg_transpose(ha, 0, 1));
        float tv[30];
        read_f32(tr, tv, 30);
        for (int i = 0; i < 6; i++)
            for (int j = 0; j < 5; j++)
                cr_expect_eq(tv[j * 6 + i], w[i * 5 + j]);
    }
}

/* Gradients flow in the leaf's dtype: through a 16-bit graph, and through
 * xg_to_dtype back to an f32 master copy. */
Test(half_tensors, gradients_keep_the_leaf_dtype)
{
    float v[N16];
    fill_values(v, N16, 1.0f);
    xg_tensor *master = xg_tensor_from_data(v, XG_F32, XG_SHAPE(N16));
    cr_assert_eq(xg_tensor_set_requires_grad(master, true), XG_OK);
    xg_tensor *h = xg_to_dtype(master, XG_BF16);
    xg_tensor *loss = xg_sum_all(xg_mul(h, h));
    cr_assert_not_null(loss, "%s", xg_last_error());
    cr_expect_eq(xg_tensor_dtype(loss), XG_BF16);
    cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
    xg_tensor *g = xg_tensor_grad(master);
    cr_assert_not_null(g);
    cr_expect_eq(xg_tensor_dtype(g), XG_F32);
    float gv[N16], hv[N16];
    read_f32(g, gv, N16);
    read_f32(h, hv, N16);
    for (int i = 0; i < N16; i++) /* 2h, rounded to bf16 once */
        cr_expect_eq(gv[i], xg__bf16_to_f32_1(xg__f32_to_bf16_1(2 * hv[i])));
    /* a 16-bit leaf gets a 16-bit gradient, also through mixed ops */
    xg_tensor *leaf = xg_to_dtype(xg_tensor_from_data(v, XG_F32,
                                                      XG_SHAPE(N16)),
                                  XG_F16);
    cr_assert_eq(xg_tensor_set_requires_grad(leaf, true), XG_OK);
    xg_tensor *l2 = xg_sum_all(xg_mul(leaf, master)); /* promoted */
    cr_assert_eq(xg_backward(l2), XG_OK, "%s", xg_last_error());
    cr_expect_eq(xg_tensor_dtype(xg_tensor_grad(leaf)), XG_F16);
    /* optimizers take f32 master weights only */
    xg_sgd_options so = xg_sgd_defaults();
    xg_optim *o = xg_optim_sgd(&leaf, 1, &so);
    cr_expect_null(o);
    cr_expect_eq(xg_last_status(), XG_ERR_DTYPE);
    cr_expect(strstr(xg_last_error(), "f16") != NULL, "%s", xg_last_error());
}
