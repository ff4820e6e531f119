/* Conformance through the public API: for each differentiable op, the same
 * inputs on the CPU device and on the device under test, forward and
 * xg_backward of sum(out * weights); outputs compared by nMSE, input
 * gradients with atol = rtol = 1e-3. Then the MLP training agreement. */
#include "conformance.h"

#include <criterion/criterion.h>
#include <criterion/logging.h>

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the case table ---------------------------------------------------------- */

typedef struct fe_input {
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    conf_domain domain;
    xg_dtype dtype;
    int32_t classes; /* DOM_CLASS */
    bool grad;       /* requires grad: its gradient is compared */
} fe_input;

typedef struct fe_case fe_case;
typedef xg_tensor *(*fe_fn)(xg_tensor *const *x, const fe_case *c);

struct fe_case {
    const char *group; /* the Criterion test that runs it */
    const char *desc;
    fe_fn fn;
    int n_in;
    fe_input in[3];
    float scalar;
    int axis;
    bool keepdim, trans_a, trans_b;
    int perm[XG_MAX_DIMS];
    int64_t shape[XG_MAX_DIMS]; /* reshape target */
    int ndim;                   /* perm / reshape length */
    bool forward_only;          /* i32 output: no backward */
    bool exact; /* output and gradients equal the CPU's bit for bit */
};

#define T(...) {XG_SHAPE_N(__VA_ARGS__), {__VA_ARGS__}, DOM_SIGNED, XG_F32, 0, true}
#define XG_SHAPE_N(...) ((int)(sizeof((int64_t[]){__VA_ARGS__}) / sizeof(int64_t)))
/* A 0-D (scalar) input. */
#define T0 {0, {0}, DOM_SIGNED, XG_F32, 0, true}
/* The same with another domain. */
#define TD(dom, ...) {XG_SHAPE_N(__VA_ARGS__), {__VA_ARGS__}, dom, XG_F32, 0, true}
/* i32 labels in [0, classes). */
#define LABELS(classes, ...) {XG_SHAPE_N(__VA_ARGS__), {__VA_ARGS__}, DOM_CLASS, XG_I32, classes, false}

/* Views, with a kernel after each so the backend reads the view's copy:
 * narrow (axis, shape[0] = start, shape[1] = length), select (axis,
 * shape[0]), expand (shape, ndim), and a chain of views into matmul. */
static xg_tensor *f_narrow(xg_tensor *const *x, const fe_case *c) { return xg_tanh(xg_narrow(x[0], c->axis, c->shape[0], c->shape[1])); }
static xg_tensor *f_select(xg_tensor *const *x, const fe_case *c) { return xg_tanh(xg_select(x[0], c->axis, c->shape[0])); }
static xg_tensor *f_expand(xg_tensor *const *x, const fe_case *c) { return xg_mul(xg_expand(x[0], c->shape, c->ndim), xg_expand(x[0], c->shape, c->ndim)); }
static xg_tensor *f_view_mm(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_matmul(xg_narrow(xg_transpose(x[0], 0, 1), 0, 1, 3), xg_select(x[1], 0, 1)); }
static xg_tensor *f_concat(xg_tensor *const *x, const fe_case *c)
{
    xg_tensor *parts[3] = {xg_transpose(x[0], 0, 1), x[1], xg_narrow(x[1], 1, 1, 2)};
    xg_tensor *sp[2];
    if (xg_split(xg_concat(parts, 3, c->axis), 1, XG_SHAPE(3, 6), sp) != XG_OK)
        return NULL;
    xg_tensor *st[2] = {xg_exp(xg_narrow(sp[1], 1, 0, 3)), sp[0]};
    return xg_stack(st, 2, 0);
}
static xg_tensor *f_add(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_add(x[0], x[1]); }
static xg_tensor *f_sub(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_sub(x[0], x[1]); }
static xg_tensor *f_mul(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_mul(x[0], x[1]); }
static xg_tensor *f_div(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_div(x[0], x[1]); }
static xg_tensor *f_add_s(xg_tensor *const *x, const fe_case *c) { return xg_add_scalar(x[0], c->scalar); }
static xg_tensor *f_sub_s(xg_tensor *const *x, const fe_case *c) { return xg_sub_scalar(x[0], c->scalar); }
static xg_tensor *f_mul_s(xg_tensor *const *x, const fe_case *c) { return xg_mul_scalar(x[0], c->scalar); }
static xg_tensor *f_div_s(xg_tensor *const *x, const fe_case *c) { return xg_div_scalar(x[0], c->scalar); }
static xg_tensor *f_neg(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_neg(x[0]); }
static xg_tensor *f_exp(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_exp(x[0]); }
static xg_tensor *f_log(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_log(x[0]); }
static xg_tensor *f_sqrt(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_sqrt(x[0]); }
static xg_tensor *f_relu(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_relu(x[0]); }
static xg_tensor *f_sigmoid(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_sigmoid(x[0]); }
static xg_tensor *f_tanh(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_tanh(x[0]); }
static xg_tensor *f_gelu(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_gelu(x[0]); }
static xg_tensor *f_silu(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_silu(x[0]); }
static xg_tensor *f_gelu_tanh(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_gelu_tanh(x[0]); }
static xg_tensor *f_matmul(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_matmul(x[0], x[1]); }
static xg_tensor *f_matmul_t(xg_tensor *const *x, const fe_case *c) { return xg_matmul_t(x[0], x[1], c->trans_a, c->trans_b); }
static xg_tensor *f_sum(xg_tensor *const *x, const fe_case *c) { return xg_sum(x[0], c->axis, c->keepdim); }
static xg_tensor *f_mean(xg_tensor *const *x, const fe_case *c) { return xg_mean(x[0], c->axis, c->keepdim); }
static xg_tensor *f_max(xg_tensor *const *x, const fe_case *c) { return xg_max(x[0], c->axis, c->keepdim); }
static xg_tensor *f_argmax(xg_tensor *const *x, const fe_case *c) { return xg_argmax(x[0], c->axis, c->keepdim); }
static xg_tensor *f_sum_all(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_sum_all(x[0]); }
static xg_tensor *f_mean_all(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_mean_all(x[0]); }
static xg_tensor *f_max_all(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_max_all(x[0]); }
static xg_tensor *f_softmax(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_softmax(x[0]); }
static xg_tensor *f_log_softmax(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_log_softmax(x[0]); }
static xg_tensor *f_permute(xg_tensor *const *x, const fe_case *c) { return xg_permute(x[0], c->perm, c->ndim); }
static xg_tensor *f_transpose(xg_tensor *const *x, const fe_case *c) { return xg_transpose(x[0], c->perm[0], c->perm[1]); }
static xg_tensor *f_reshape(xg_tensor *const *x, const fe_case *c) { return xg_reshape(x[0], c->shape, c->ndim); }
/* A reshape between two ops, so the gradient flows through the view. */
static xg_tensor *f_reshape_tanh(xg_tensor *const *x, const fe_case *c) { return xg_tanh(xg_reshape(xg_mul(x[0], x[0]), c->shape, c->ndim)); }
static xg_tensor *f_ce(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_cross_entropy(x[0], x[1]); }
static xg_tensor *f_mse(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_mse_loss(x[0], x[1]); }
/* CNN ops: conv2d's geometry from `perm` (stride, pad, dilation, groups);
 * pools use `axis` as the kernel and `ndim` as the stride. Dropout seeds
 * the generator so both devices draw the same mask. */
static xg_tensor *f_conv(xg_tensor *const *x, const fe_case *c)
{
    xg_conv2d_params p = {c->perm[0], c->perm[0], c->perm[1], c->perm[1],
                          c->perm[2], c->perm[2], c->perm[3]};
    return xg_conv2d(x[0], x[1], c->n_in > 2 ? x[2] : NULL, &p);
}
static xg_tensor *f_max_pool(xg_tensor *const *x, const fe_case *c) { return xg_max_pool2d(x[0], c->axis, c->ndim, c->perm[0]); }
static xg_tensor *f_avg_pool(xg_tensor *const *x, const fe_case *c) { return xg_avg_pool2d(x[0], c->axis, c->ndim, c->perm[0]); }
static xg_tensor *f_dropout(xg_tensor *const *x, const fe_case *c) { xg_manual_seed(7); return xg_dropout(x[0], c->scalar, true); }
static xg_tensor *f_bn_train(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_batch_norm2d(x[0], x[1], x[2], NULL, NULL, true, 0.1f, 1e-5f); }
static xg_tensor *f_index_select(xg_tensor *const *x, const fe_case *c) { return xg_index_select(x[0], c->axis, x[1]); }
static xg_tensor *f_gather(xg_tensor *const *x, const fe_case *c) { return xg_gather(x[0], c->axis, x[1]); }
static xg_tensor *f_where(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_where(x[0], x[1], x[2]); }
static xg_tensor *f_masked_fill(xg_tensor *const *x, const fe_case *c) { return xg_masked_fill(x[0], x[1], c->scalar); }
/* cross_entropy with ignore_index = axis; embedding. */
static xg_tensor *f_ce_ignore(xg_tensor *const *x, const fe_case *c) { return xg_cross_entropy_ignore(x[0], x[1], c->axis); }
static xg_tensor *f_embedding(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_embedding(x[0], x[1]); }
static xg_tensor *f_bn_eval(xg_tensor *const *x, const fe_case *c) { (void)c; return xg_batch_norm2d(x[0], NULL, NULL, x[1], x[2], false, 0.1f, 1e-5f); }
/* Attention: keepdim = causal, axis = causal_offset, scalar = dropout p
 * (training, mask from seed 7); f_attention_qkv takes q, k and v as views
 * of one fused [B, T, 3, H, D] projection (permuted and selected). */
static xg_tensor *f_attention(xg_tensor *const *x, const fe_case *c)
{
    xg_attention_params p = {.causal = c->keepdim, .causal_offset = c->axis,
                             .dropout_p = c->scalar, .training = true};
    xg_manual_seed(7);
    return xg_attention(x[0], x[1], x[2], &p);
}
static xg_tensor *f_attention_qkv(xg_tensor *const *x, const fe_case *c)
{
    (void)c;
    xg_tensor *t = xg_permute(x[0], (const int[]){2, 0, 3, 1, 4}, 5);
    return xg_attention(xg_select(t, 0, 0), xg_select(t, 0, 1),
                        xg_select(t, 0, 2), NULL);
}
/* layer_norm with eps = scalar: x alone, x and weight, x and bias, all three */
static xg_tensor *f_ln(xg_tensor *const *x, const fe_case *c) { return xg_layer_norm(x[0], NULL, NULL, c->scalar); }
static xg_tensor *f_ln_w(xg_tensor *const *x, const fe_case *c) { return xg_layer_norm(x[0], x[1], NULL, c->scalar); }
static xg_tensor *f_ln_b(xg_tensor *const *x, const fe_case *c) { return xg_layer_norm(x[0], NULL, x[1], c->scalar); }
static xg_tensor *f_ln_wb(xg_tensor *const *x, const fe_case *c) { return xg_layer_norm(x[0], x[1], x[2], c->scalar); }

static const fe_case fe_cases[] = {
    /* binary, with broadcasting */
    {"add", "add a[4,5] + b[4,5]", f_add, 2, {T(4, 5), T(4, 5)}},
    {"add", "add a[4,5] + b[5]", f_add, 2, {T(4, 5), T(5)}},
    {"add", "add a[4,1] + b[1,5]", f_add, 2, {T(4, 1), T(1, 5)}},
    {"add", "add a[2,3,4] + b[3,1]", f_add, 2, {T(2, 3, 4), T(3, 1)}},
    {"add", "add a[3,4] + b[] (0-D)", f_add, 2, {T(3, 4), T0}},
    {"sub", "sub a[4,5] - b[4,5]", f_sub, 2, {T(4, 5), T(4, 5)}},
    {"sub", "sub a[5] - b[4,5]", f_sub, 2, {T(5), T(4, 5)}},
    {"sub", "sub a[2,1,4] - b[3,1]", f_sub, 2, {T(2, 1, 4), T(3, 1)}},
    {"mul", "mul a[4,5] * b[4,5]", f_mul, 2, {T(4, 5), T(4, 5)}},
    {"mul", "mul a[4,5] * b[4,1]", f_mul, 2, {T(4, 5), T(4, 1)}},
    {"mul", "mul a[1] * b[6,7]", f_mul, 2, {T(1), T(6, 7)}},
    {"mul", "mul a[2,3,4,5] * b[3,1,5]", f_mul, 2, {T(2, 3, 4, 5), T(3, 1, 5)}},
    {"div", "div a[4,5] / b[4,5]", f_div, 2, {T(4, 5), TD(DOM_NONZERO, 4, 5)}},
    {"div", "div a[4,5] / b[5]", f_div, 2, {T(4, 5), TD(DOM_NONZERO, 5)}},
    {"div", "div a[4,1] / b[1,5]", f_div, 2, {T(4, 1), TD(DOM_NONZERO, 1, 5)}},
    /* scalar variants */
    {"scalar", "add_scalar x[6,7] + 1.5", f_add_s, 1, {T(6, 7)}, .scalar = 1.5f},
    {"scalar", "sub_scalar x[6,7] - 0.25", f_sub_s, 1, {T(6, 7)}, .scalar = 0.25f},
    {"scalar", "mul_scalar x[6,7] * -0.75", f_mul_s, 1, {T(6, 7)}, .scalar = -0.75f},
    {"scalar", "div_scalar x[6,7] / 2.5", f_div_s, 1, {T(6, 7)}, .scalar = 2.5f},
    /* unary activations */
    {"unary", "neg x[7,33]", f_neg, 1, {T(7, 33)}},
    {"unary", "exp x[7,33]", f_exp, 1, {T(7, 33)}},
    {"unary", "log x[7,33] positive", f_log, 1, {TD(DOM_POSITIVE, 7, 33)}},
    {"unary", "sqrt x[7,33] positive", f_sqrt, 1, {TD(DOM_POSITIVE, 7, 33)}},
    {"unary", "relu x[7,33]", f_relu, 1, {T(7, 33)}},
    {"unary", "sigmoid x[7,33]", f_sigmoid, 1, {T(7, 33)}},
    {"unary", "tanh x[7,33]", f_tanh, 1, {T(7, 33)}},
    {"unary", "gelu x[7,33]", f_gelu, 1, {T(7, 33)}},
    {"unary", "silu x[7,33]", f_silu, 1, {T(7, 33)}},
    {"unary", "gelu_tanh x[7,33]", f_gelu_tanh, 1, {T(7, 33)}},
    /* matmul */
    {"matmul", "matmul [5,7] x [7,3]", f_matmul, 2, {T(5, 7), T(7, 3)}},
    {"matmul", "matmul_t ta=0 tb=0 [17,9] x [9,5]", f_matmul_t, 2, {T(17, 9), T(9, 5)}},
    {"matmul", "matmul_t ta=1 tb=0 [9,17]^T x [9,5]", f_matmul_t, 2, {T(9, 17), T(9, 5)}, .trans_a = true},
    {"matmul", "matmul_t ta=0 tb=1 [17,9] x [5,9]^T", f_matmul_t, 2, {T(17, 9), T(5, 9)}, .trans_b = true},
    {"matmul", "matmul_t ta=1 tb=1 [9,17]^T x [5,9]^T", f_matmul_t, 2, {T(9, 17), T(5, 9)}, .trans_a = true, .trans_b = true},
    {"matmul", "matmul batched [2,5,7] x [7,3] (b broadcast)", f_matmul, 2, {T(2, 5, 7), T(7, 3)}},
    {"matmul", "matmul batched [5,7] x [3,7,2] (a broadcast)", f_matmul, 2, {T(5, 7), T(3, 7, 2)}},
    {"matmul", "matmul batched [2,5,7] x [2,7,3]", f_matmul, 2, {T(2, 5, 7), T(2, 7, 3)}},
    {"matmul", "matmul batched [3,1,5,7] x [2,7,6]", f_matmul, 2, {T(3, 1, 5, 7), T(2, 7, 6)}},
    {"matmul", "matmul_t batched ta=1 tb=1 [2,7,5]^T x [2,3,7]^T", f_matmul_t, 2, {T(2, 7, 5), T(2, 3, 7)}, .trans_a = true, .trans_b = true},
    {"matmul", "matmul vector [7] x [7,3]", f_matmul, 2, {T(7), T(7, 3)}},
    {"matmul", "matmul vector [5,7] x [7]", f_matmul, 2, {T(5, 7), T(7)}},
    {"matmul", "matmul dot [7] x [7]", f_matmul, 2, {T(7), T(7)}},
    /* reductions */
    {"reduce", "sum x[4,5,6] axis=0", f_sum, 1, {T(4, 5, 6)}, .axis = 0},
    {"reduce", "sum x[4,5,6] axis=1 keepdim", f_sum, 1, {T(4, 5, 6)}, .axis = 1, .keepdim = true},
    {"reduce", "sum x[4,5,6] axis=-1", f_sum, 1, {T(4, 5, 6)}, .axis = -1},
    {"reduce", "mean x[4,5,6] axis=1", f_mean, 1, {T(4, 5, 6)}, .axis = 1},
    {"reduce", "mean x[33,17] axis=0 keepdim", f_mean, 1, {T(33, 17)}, .axis = 0, .keepdim = true},
    {"reduce", "max x[4,5,6] axis=1 (no ties)", f_max, 1, {TD(DOM_DISTINCT, 4, 5, 6)}, .axis = 1},
    {"reduce", "max x[17,33] axis=-1 keepdim (no ties)", f_max, 1, {TD(DOM_DISTINCT, 17, 33)}, .axis = -1, .keepdim = true},
    {"reduce", "sum_all x[17,33]", f_sum_all, 1, {T(17, 33)}},
    {"reduce", "mean_all x[17,33]", f_mean_all, 1, {T(17, 33)}},
    {"reduce", "max_all x[17,33] (no ties)", f_max_all, 1, {TD(DOM_DISTINCT, 17, 33)}},
    {"reduce", "argmax x[17,33] axis=1 (forward, i32)", f_argmax, 1, {TD(DOM_DISTINCT, 17, 33)}, .axis = 1, .forward_only = true},
    /* softmax and log_softmax over the last axis */
    {"softmax", "softmax x[6,10]", f_softmax, 1, {T(6, 10)}},
    {"softmax", "softmax x[3,4,5]", f_softmax, 1, {T(3, 4, 5)}},
    {"softmax", "softmax x[4,1000]", f_softmax, 1, {T(4, 1000)}},
    {"softmax", "log_softmax x[6,10]", f_log_softmax, 1, {T(6, 10)}},
    {"softmax", "log_softmax x[3,4,5]", f_log_softmax, 1, {T(3, 4, 5)}},
    {"softmax", "log_softmax x[2,1000]", f_log_softmax, 1, {T(2, 1000)}},
    /* axis reordering and views */
    {"permute", "permute x[2,3,4] (2,0,1)", f_permute, 1, {T(2, 3, 4)}, .perm = {2, 0, 1}, .ndim = 3},
    {"permute", "permute x[2,3,4,5] (0,3,1,2)", f_permute, 1, {T(2, 3, 4, 5)}, .perm = {0, 3, 1, 2}, .ndim = 4},
    {"permute", "transpose x[5,7] (0,1)", f_transpose, 1, {T(5, 7)}, .perm = {0, 1}},
    {"permute", "transpose x[2,5,7] (-1,0)", f_transpose, 1, {T(2, 5, 7)}, .perm = {-1, 0}},
    {"views", "concat, split, stack x[4,33] y[33,3]", f_concat, 2, {T(4, 33), T(33, 3)}, .axis = 1},
    {"views", "narrow x[5,9,7] axis 1 [2:8]", f_narrow, 1, {T(5, 9, 7)}, .axis = 1, .shape = {2, 6}},
    {"views", "narrow x[300,40] axis 0 [17:290]", f_narrow, 1, {T(300, 40)}, .axis = 0, .shape = {17, 273}},
    {"views", "select x[4,6,3] axis -1 index 1", f_select, 1, {T(4, 6, 3)}, .axis = -1, .shape = {1}},
    {"views", "expand x[3,1] -> [2,3,33]", f_expand, 1, {T(3, 1)}, .shape = {2, 3, 33}, .ndim = 3},
    {"views", "matmul(narrow(a^T), select(b)) a[9,4] b[3,9,6]", f_view_mm, 2, {T(9, 4), T(3, 9, 6)}},
    {"reshape", "reshape x[4,6] -> [2,-1,3]", f_reshape, 1, {T(4, 6)}, .shape = {2, -1, 3}, .ndim = 3},
    {"reshape", "tanh(reshape(x*x)) x[4,6] -> [24]", f_reshape_tanh, 1, {T(4, 6)}, .shape = {24}, .ndim = 1},
    /* losses */
    {"loss", "cross_entropy logits[8,10]", f_ce, 2, {T(8, 10), LABELS(10, 8)}},
    {"loss", "cross_entropy logits[1,3]", f_ce, 2, {T(1, 3), LABELS(3, 1)}},
    {"loss", "cross_entropy logits[64,10] wide", f_ce, 2, {TD(DOM_WIDE, 64, 10), LABELS(10, 64)}},
    {"loss", "cross_entropy_ignore logits[16,5] ignore_index 2", f_ce_ignore, 2, {T(16, 5), LABELS(5, 16)}, .axis = 2},
    {"loss", "cross_entropy_ignore logits[4,1] every row ignored (NaN)", f_ce_ignore, 2, {T(4, 1), LABELS(1, 4)}, .axis = 0},
    {"loss", "mse_loss pred[8,5] target[8,5]", f_mse, 2, {T(8, 5), T(8, 5)}},
    {"loss", "mse_loss pred[8,5] target[5] (broadcast)", f_mse, 2, {T(8, 5), T(5)}},
    /* convolution: perm = {stride, padding, dilation, groups} */
    {"conv", "conv2d x[2,3,7,7] w[4,3,3,3] b[4]", f_conv, 3, {T(2, 3, 7, 7), T(4, 3, 3, 3), T(4)}, .perm = {1, 0, 1, 1}},
    {"conv", "conv2d x[2,4,9,8] w[6,2,3,3] stride 2 pad 1 groups 2", f_conv, 2, {T(2, 4, 9, 8), T(6, 2, 3, 3)}, .perm = {2, 1, 1, 2}},
    {"conv", "conv2d x[1,2,9,9] w[3,2,3,3] dilation 2 pad 2", f_conv, 2, {T(1, 2, 9, 9), T(3, 2, 3, 3)}, .perm = {1, 2, 2, 1}},
    {"conv", "conv2d x[4,1,28,28] w[8,1,3,3] b[8]", f_conv, 3, {T(4, 1, 28, 28), T(8, 1, 3, 3), T(8)}, .perm = {1, 0, 1, 1}},
    /* pooling: axis = kernel, ndim = stride, perm[0] = padding */
    {"pool", "max_pool2d x[2,3,8,8] k2", f_max_pool, 1, {TD(DOM_DISTINCT, 2, 3, 8, 8)}, .axis = 2, .ndim = 2},
    {"pool", "max_pool2d x[2,2,7,7] k3 s2 pad 1", f_max_pool, 1, {TD(DOM_DISTINCT, 2, 2, 7, 7)}, .axis = 3, .ndim = 2, .perm = {1}},
    {"pool", "avg_pool2d x[2,3,8,8] k2", f_avg_pool, 1, {T(2, 3, 8, 8)}, .axis = 2, .ndim = 2},
    {"pool", "avg_pool2d x[1,2,7,6] k3 s1 pad 1", f_avg_pool, 1, {T(1, 2, 7, 6)}, .axis = 3, .ndim = 1, .perm = {1}},
    /* dropout and batch norm */
    {"dropout", "dropout x[8,33] p=0.25", f_dropout, 1, {T(8, 33)}, .scalar = 0.25f},
    {"dropout", "dropout x[3,1,5,5] p=0.5", f_dropout, 1, {T(3, 1, 5, 5)}, .scalar = 0.5f},
    /* fused attention: causal, KV cache, rows that see no key, dropout */
    {"attention", "attention q[2,2,7,5] k,v[2,2,7,5] causal", f_attention, 3, {T(2, 2, 7, 5), T(2, 2, 7, 5), T(2, 2, 7, 5)}, .keepdim = true},
    {"attention", "attention q[1,3,65,64] k,v[1,3,65,64]", f_attention, 3, {T(1, 3, 65, 64), T(1, 3, 65, 64), T(1, 3, 65, 64)}},
    {"attention", "attention q[2,1,7,8] k,v[2,1,20,8] causal offset 13", f_attention, 3, {T(2, 1, 7, 8), T(2, 1, 20, 8), T(2, 1, 20, 8)}, .keepdim = true, .axis = 13},
    {"attention", "attention q[1,2,9,4] k,v[1,2,9,4] causal offset -3", f_attention, 3, {T(1, 2, 9, 4), T(1, 2, 9, 4), T(1, 2, 9, 4)}, .keepdim = true, .axis = -3},
    {"attention", "attention q[2,2,33,16] k,v[2,2,40,16] causal offset 7 p=0.3", f_attention, 3, {T(2, 2, 33, 16), T(2, 2, 40, 16), T(2, 2, 40, 16)}, .keepdim = true, .axis = 7, .scalar = 0.3f},
    {"attention", "attention q[1,1,130,1] k,v[1,1,130,1] causal p=0.5", f_attention, 3, {T(1, 1, 130, 1), T(1, 1, 130, 1), T(1, 1, 130, 1)}, .keepdim = true, .scalar = 0.5f},
    {"attention", "attention of views of qkv[2,9,3,2,4]", f_attention_qkv, 1, {T(2, 9, 3, 2, 4)}},
    {"batchnorm", "batch_norm2d training x[4,3,5,5] w[3] b[3]", f_bn_train, 3, {T(4, 3, 5, 5), T(3), T(3)}},
    {"batchnorm", "batch_norm2d eval x[2,3,4,4] mean[3] var[3]", f_bn_eval, 3, {T(2, 3, 4, 4), T(3), TD(DOM_POSITIVE, 3)}},
    /* index ops: repeated indices; the gradient (g = the loss weights,
     * exact on every backend) is scatter-added in a fixed order, so the
     * results must match bit for bit */
    {"index", "index_select x[7,5] axis 0 index[20]", f_index_select, 2, {T(7, 5), LABELS(7, 20)}, .axis = 0, .exact = true},
    {"index", "index_select x[4,9,6] axis 1 index[13]", f_index_select, 2, {T(4, 9, 6), LABELS(9, 13)}, .axis = 1, .exact = true},
    {"index", "index_select x[3,4,70] axis -1 index[300]", f_index_select, 2, {T(3, 4, 70), LABELS(70, 300)}, .axis = -1, .exact = true},
    {"index", "gather x[6,8] axis 1 index[6,11]", f_gather, 2, {T(6, 8), LABELS(8, 6, 11)}, .axis = 1, .exact = true},
    {"index", "gather x[5,6,7] axis 0 index[3,6,4] (smaller)", f_gather, 2, {T(5, 6, 7), LABELS(5, 3, 6, 4)}, .axis = 0, .exact = true},
    {"index", "gather x[40,300] axis 1 index[40,500]", f_gather, 2, {T(40, 300), LABELS(300, 40, 500)}, .axis = 1, .exact = true},
    /* embedding: many repeated indices, whose gradient rows sum in index
     * order with the same bits on every backend */
    {"embedding", "embedding w[50,16] index[4,100]", f_embedding, 2, {T(50, 16), LABELS(50, 4, 100)}, .exact = true},
    {"embedding", "embedding w[3,33] index[2000] (each row ~667 times)", f_embedding, 2, {T(3, 33), LABELS(3, 2000)}, .exact = true},
    {"embedding", "embedding w[7,5] index[2,3,5]", f_embedding, 2, {T(7, 5), LABELS(7, 2, 3, 5)}, .exact = true},
    /* selection by a 0/1 mask, with broadcasting */
    {"where", "where cond[4,5] a[4,5] b[4,5]", f_where, 3, {LABELS(2, 4, 5), T(4, 5), T(4, 5)}},
    {"where", "where cond[4,5] a[4,5] b[5]", f_where, 3, {LABELS(2, 4, 5), T(4, 5), T(5)}},
    {"where", "where cond[5] a[4,1] b[4,5]", f_where, 3, {LABELS(2, 5), T(4, 1), T(4, 5)}},
    {"where", "where cond[3,1,6] a[2,1] b[] (0-D)", f_where, 3, {LABELS(2, 3, 1, 6), T(2, 1), T0}},
    {"where", "masked_fill x[4,5] mask[5] value -2.5", f_masked_fill, 2, {T(4, 5), LABELS(2, 5)}, .scalar = -2.5f},
    {"where", "masked_fill x[5] mask[3,5] value 7", f_masked_fill, 2, {T(5), LABELS(2, 3, 5)}, .scalar = 7.0f},
    /* layer norm over the last axis, eps in scalar */
    {"layernorm", "layer_norm x[5,768] w[768] b[768]", f_ln_wb, 3, {T(5, 768), T(768), T(768)}, .scalar = 1e-5f},
    {"layernorm", "layer_norm x[3,4,127] w[127] b[127] eps 0.1", f_ln_wb, 3, {T(3, 4, 127), T(127), T(127)}, .scalar = 0.1f},
    {"layernorm", "layer_norm x[333,3] (no affine)", f_ln, 1, {T(333, 3)}, .scalar = 1e-5f},
    {"layernorm", "layer_norm x[1,4099] w[4099]", f_ln_w, 2, {T(1, 4099), T(4099)}, .scalar = 1e-5f},
    {"layernorm", "layer_norm x[7,1] b[1] (a constant row)", f_ln_b, 2, {T(7, 1), T(1)}, .scalar = 1e-5f},
    {"layernorm", "layer_norm x[2,50000] w b", f_ln_wb, 3, {T(2, 50000), T(50000), T(50000)}, .scalar = 1e-5f},
};
#define N_FE_CASES ((int)(sizeof fe_cases / sizeof fe_cases[0]))

/* ---- running one case -------------------------------------------------------- */

/* What one device computed for a case. */
typedef struct fe_result {
    int ndim;
    int64_t shape[XG_MAX_DIMS];
    int64_t numel;
    xg_dtype dtype;
    float *out;           /* numel values (i32 stored bitwise) */
    float *grad[3];       /* per input with grad; NULL otherwise */
    bool grad_missing[3]; /* input requires grad but got none */
} fe_result;

static void fe_result_free(fe_result *r)
{
    free(r->out);
    for (int i = 0; i < 3; i++)
        free(r->grad[i]);
}

static int64_t input_numel(const fe_input *in)
{
    int64_t n = 1;
    for (int k = 0; k < in->ndim; k++)
        n *= in->shape[k];
    return n;
}

/* Host values for input i of case ci, identical for both devices. */
static void *input_data(int ci, int i, const fe_input *in)
{
    conf_buf b = {input_numel(in), in->dtype, in->domain, in->classes};
    void *p = malloc((size_t)b.count * 4);
    cr_assert(p);
    conf_rng r = conf_rng_make(5000 + (uint64_t)ci, (uint64_t)i);
    conf_fill(p, &b, &r);
    return p;
}

static float *read_tensor(const xg_tensor *t, const char *what, const char *where,
                          const fe_case *c)
{
    int64_t n = xg_tensor_numel(t);
    float *p = malloc((size_t)n * 4 + 4);
    cr_assert(p);
    xg_status st = xg_tensor_read(t, p, (size_t)n * 4);
    cr_assert(st == XG_OK, "%s: reading %s on %s failed: %s: %s", c->desc,
              what, where, xg_status_str(st), xg_last_error());
    return p;
}

/* Forward and backward of case ci on `dev`; fails the test on an error. */
static void fe_run_on(xg_device *dev, int ci, fe_result *res)
{
    const fe_case *c = &fe_cases[ci];
    const char *where = xg_device_backend(dev);
    memset(res, 0, sizeof *res);
    xg_device_set_current(dev);
    xg_scope *scope = xg_scope_begin();
    cr_assert(scope, "xg_scope_begin failed");

    xg_tensor *x[3] = {0};
    for (int i = 0; i < c->n_in; i++) {
        void *data = input_data(ci, i, &c->in[i]);
        x[i] = xg_tensor_from_data(data, c->in[i].dtype, c->in[i].shape,
                                   c->in[i].ndim);
        free(data);
        cr_assert(x[i], "%s: making input %d on %s failed: %s", c->desc, i,
                  where, xg_last_error());
        if (c->in[i].grad)
            cr_assert(xg_tensor_set_requires_grad(x[i], true) == XG_OK,
                      "%s: set_requires_grad: %s", c->desc, xg_last_error());
    }
    xg_tensor *out = c->fn(x, c);
    cr_assert(out, "%s: forward failed on %s: %s: %s", c->desc, where,
              xg_status_str(xg_last_status()), xg_last_error());
    res->ndim = xg_tensor_ndim(out);
    memcpy(res->shape, xg_tensor_shape(out), (size_t)res->ndim * sizeof(int64_t));
    res->numel = xg_tensor_numel(out);
    res->dtype = xg_tensor_dtype(out);
    res->out = read_tensor(out, "the output", where, c);

    if (!c->forward_only) {
        /* loss = sum(out * w), w fixed per case: non-uniform upstream grads. */
        conf_buf wb = {res->numel, XG_F32, DOM_SIGNED, 0};
        float *w = malloc((size_t)wb.count * 4);
        cr_assert(w);
        conf_rng r = conf_rng_make(9000 + (uint64_t)ci, 0);
        for (int64_t k = 0; k < wb.count; k++)
            w[k] = conf_rng_uniform(&r, -1.0f, 1.0f);
        xg_tensor *wt = xg_tensor_from_data(w, XG_F32, res->shape, res->ndim);
        free(w);
        xg_tensor *loss = xg_sum_all(xg_mul(out, wt));
        cr_assert(loss, "%s: sum(out * w) failed on %s: %s", c->desc, where,
                  xg_last_error());
        xg_status st = xg_backward(loss);
        cr_assert(st == XG_OK, "%s: backward failed on %s: %s: %s", c->desc,
                  where, xg_status_str(st), xg_last_error());
        for (int i = 0; i < c->n_in; i++) {
            if (!c->in[i].grad)
                continue;
            xg_tensor *g = xg_tensor_grad(x[i]);
            if (!g) {
                res->grad_missing[i] = true;
                continue;
            }
            cr_assert(xg_tensor_numel(g) == input_numel(&c->in[i]),
                      "%s: grad of input %d on %s has %" PRId64 " elements, "
                      "want %" PRId64, c->desc, i, where, xg_tensor_numel(g),
                      input_numel(&c->in[i]));
            res->grad[i] = read_tensor(g, "a gradient", where, c);
        }
    }
    xg_scope_end(scope);
    xg_device_set_current(NULL);
}

/* Compares grads with |got - ref| <= atol + rtol * |ref|, NaN/Inf alike.
 * Returns the number of bad elements and the first one in *first. */
static int64_t grad_mismatch(const float *got, const float *ref, int64_t n,
                             int64_t *first)
{
    int64_t bad = 0;
    *first = -1;
    for (int64_t i = 0; i < n; i++) {
        float a = ref[i], b = got[i];
        bool ok;
        if (!isfinite(a) || !isfinite(b))
            ok = (isnan(a) && isnan(b)) || (a == b);
        else
            ok = fabs((double)a - b) <= CONF_GRAD_ATOL + CONF_GRAD_RTOL * fabs(a);
        if (!ok && bad++ == 0)
            *first = i;
    }
    return bad;
}

/* Exact cases: n floats with the reference's bits (NaN matching any NaN);
 * reports the first difference. */
static bool fe_same_bits(const fe_case *c, const char *what, const float *got,
                         const float *ref, int64_t n, const char *target)
{
    for (int64_t i = 0; i < n; i++) {
        uint32_t g, r;
        memcpy(&g, &got[i], 4);
        memcpy(&r, &ref[i], 4);
        if (g == r || (isnan(got[i]) && isnan(ref[i])))
            continue;
        char a[32], b[32];
        cr_expect_fail("%s: %s differs in its bits on %s at %" PRId64 ": %s "
                       "(0x%08x), cpu %s (0x%08x)", c->desc, what, target, i,
                       conf_fmt_f32(a, sizeof a, got[i]), g,
                       conf_fmt_f32(b, sizeof b, ref[i]), r);
        return false;
    }
    return true;
}

/* Returns true when the target agrees with the CPU on case ci. */
static bool fe_check(int ci, const fe_result *ref, const fe_result *got,
                     const char *target)
{
    const fe_case *c = &fe_cases[ci];
    bool ok = true;
    char a[32], b[32];
    bool same_shape = ref->ndim == got->ndim && ref->dtype == got->dtype &&
                      memcmp(ref->shape, got->shape,
                             (size_t)ref->ndim * sizeof(int64_t)) == 0;
    if (!same_shape) {
        cr_expect_fail("%s: output shape or dtype differs on %s (ndim %d vs "
                       "%d on cpu)", c->desc, target, got->ndim, ref->ndim);
        return false;
    }
    if (ref->dtype == XG_I32) {
        if (memcmp(ref->out, got->out, (size_t)ref->numel * 4) != 0) {
            cr_expect_fail("%s: i32 output differs on %s", c->desc, target);
            ok = false;
        }
    } else {
        conf_cmp r = conf_compare_f32(got->out, ref->out, ref->numel);
        if (r.nonfinite_mismatch || !(r.nmse <= CONF_NMSE_TOL)) {
            int64_t i = r.first_bad >= 0 ? r.first_bad : r.worst;
            cr_expect_fail("%s: output nMSE %.3g > %.3g on %s (%" PRId64
                           " NaN/Inf mismatches; at %" PRId64 ": %s, cpu %s)",
                           c->desc, r.nmse, CONF_NMSE_TOL, target,
                           r.nonfinite_mismatch, i,
                           conf_fmt_f32(a, sizeof a, i >= 0 ? got->out[i] : 0),
                           conf_fmt_f32(b, sizeof b, i >= 0 ? ref->out[i] : 0));
            ok = false;
        }
    }
    if (c->exact && ref->dtype == XG_F32)
        ok = fe_same_bits(c, "the output", got->out, ref->out, ref->numel,
                          target) && ok;
    for (int i = 0; i < c->n_in; i++) {
        if (!c->in[i].grad || c->forward_only)
            continue;
        if (ref->grad_missing[i] || got->grad_missing[i]) {
            cr_expect_fail("%s: input %d has no gradient on %s", c->desc, i,
                           ref->grad_missing[i] ? "cpu" : target);
            ok = false;
            continue;
        }
        int64_t first, n = input_numel(&c->in[i]);
        if (c->exact && !fe_same_bits(c, "a gradient", got->grad[i],
                                      ref->grad[i], n, target))
            ok = false;
        int64_t bad = grad_mismatch(got->grad[i], ref->grad[i], n, &first);
        if (bad) {
            cr_expect_fail("%s: grad of input %d differs on %s in %" PRId64
                           " of %" PRId64 " elements (atol=rtol=%g), first at "
                           "%" PRId64 ": %s, cpu %s", c->desc, i, target, bad,
                           n, CONF_GRAD_ATOL, first,
                           conf_fmt_f32(a, sizeof a, got->grad[i][first]),
                           conf_fmt_f32(b, sizeof b, ref->grad[i][first]));
            ok = false;
        }
    }
    return ok;
}

static void open_devices(xg_device **cpu, xg_device **dev)
{
    const conf_target *t = conf_target_get();
    xg_status st = xg_device_open("cpu", cpu);
    cr_assert(st == XG_OK, "xg_device_open(\"cpu\"): %s: %s", xg_status_str(st),
              xg_last_error());
    st = xg_device_open(t->spec, dev);
    cr_assert(st == XG_OK, "xg_device_open(\"%s\"): %s: %s", t->spec,
              xg_status_str(st), xg_last_error());
    cr_assert_str_eq(xg_device_backend(*dev), t->name,
                     "xg_device_open(\"%s\") opened backend %s", t->spec,
                     xg_device_backend(*dev));
}

static void run_group(const char *group)
{
    const conf_target *t = conf_target_get();
    xg_device *cpu, *dev;
    open_devices(&cpu, &dev);
    int cases = 0, failures = 0;
    for (int ci = 0; ci < N_FE_CASES; ci++) {
        if (strcmp(fe_cases[ci].group, group) != 0)
            continue;
        fe_result ref, got;
        fe_run_on(cpu, ci, &ref);
        fe_run_on(dev, ci, &got);
        failures += !fe_check(ci, &ref, &got, t->name);
        cases++;
        fe_result_free(&ref);
        fe_result_free(&got);
    }
    xg_device_close(dev);
    xg_device_close(cpu);
    cr_assert(cases > 0, "no front-end cases in group %s", group);
    cr_expect(failures == 0, "front-end %s: %d of %d case(s) fail on %s",
              group, failures, cases, t->name);
    conf_check_validation();
}

/* ---- 16-bit through the API -------------------------------------------------
 * Ops on bf16 and f16 tensors, run natively or widened by the core: the
 * target's result against the CPU's (itself f32 math on the same rounded
 * values, rounded once) within conf_half_tol. An op the target does not
 * run in that dtype (xg_device_supports) is left out. */

typedef struct half_case {
    const char *op; /* the kernel op whose support decides */
    int n_in;
    int64_t shape[2][2];
    xg_tensor *(*fn)(xg_tensor *const *x);
} half_case;

static xg_tensor *h_exp(xg_tensor *const *x) { return xg_exp(x[0]); }
static xg_tensor *h_gelu(xg_tensor *const *x) { return xg_gelu(x[0]); }
static xg_tensor *h_add(xg_tensor *const *x) { return xg_add(x[0], x[1]); }
static xg_tensor *h_mm(xg_tensor *const *x) { return xg_matmul(x[0], x[1]); }
static xg_tensor *h_softmax(xg_tensor *const *x) { return xg_softmax(x[0]); }
static xg_tensor *h_sum(xg_tensor *const *x) { return xg_sum(x[0], 1, false); }
static xg_tensor *h_ln(xg_tensor *const *x) { return xg_layer_norm(x[0], NULL, NULL, 1e-5f); }
static xg_tensor *h_t(xg_tensor *const *x) { return xg_contiguous(xg_transpose(x[0], 0, 1)); }

static const half_case half_cases[] = {
    {"exp", 1, {{33, 17}}, h_exp},
    {"gelu", 1, {{33, 17}}, h_gelu},
    {"add", 2, {{33, 17}, {1, 17}}, h_add},
    {"matmul", 2, {{33, 65}, {65, 17}}, h_mm},
    {"softmax", 1, {{33, 70}}, h_softmax},
    {"sum", 1, {{33, 300}}, h_sum},
    {"layer_norm", 1, {{33, 70}}, h_ln},
    {"copy_strided", 1, {{33, 17}}, h_t},
};

static int op_index(const char *name)
{
    for (int op = 0; op < xg_op_count(); op++)
        if (strcmp(xg_op_name(op), name) == 0)
            return op;
    return -1;
}

/* fn on `dev` with inputs x (host f32, rounded to t there); the output
 * widened into *out (malloc'd), its element count returned (-1: failed). */
static int64_t half_run(xg_device *dev, const half_case *c, xg_dtype t,
                        float *const *x, float **out)
{
    xg_device_set_current(dev);
    xg_scope *scope = xg_scope_begin();
    xg_tensor *in[2] = {NULL, NULL};
    for (int i = 0; i < c->n_in; i++) {
        const int64_t *sh = c->shape[i];
        xg_tensor *f = xg_tensor_from_data(x[i], XG_F32, sh, 2);
        in[i] = f ? xg_to_dtype(f, t) : NULL;
    }
    xg_tensor *y = in[0] && (c->n_in < 2 || in[1]) ? c->fn(in) : NULL;
    int64_t n = -1;
    if (y && xg_tensor_dtype(y) == t) {
        n = xg_tensor_numel(y);
        *out = malloc((size_t)n * sizeof **out);
        if (!*out || xg_tensor_read_f32(y, *out, (size_t)n) != XG_OK)
            n = -1;
    }
    if (n < 0)
        cr_log_error("%s [%s] on %s: %s", c->op, xg_dtype_name(t),
                     xg_device_backend(dev), xg_last_error());
    xg_scope_end(scope);
    xg_device_set_current(NULL);
    return n;
}

Test(frontend, half_dtypes)
{
    const conf_target *tg = conf_target_get();
    xg_device *cpu, *dev;
    open_devices(&cpu, &dev);
    static const xg_dtype types[2] = {XG_BF16, XG_F16};
    int run = 0, failures = 0;
    for (size_t ci = 0; ci < sizeof half_cases / sizeof half_cases[0]; ci++)
        for (int k = 0; k < 2; k++) {
            const half_case *c = &half_cases[ci];
            int op = op_index(c->op);
            cr_assert(op >= 0, "no op %s", c->op);
            if (!xg_device_supports(dev, op, types[k]))
                continue;
            float *x[2] = {NULL, NULL}, *ref = NULL, *got = NULL;
            conf_rng r = conf_rng_make(ci, (uint64_t)k);
            for (int i = 0; i < c->n_in; i++) {
                int64_t n = c->shape[i][0] * c->shape[i][1];
                x[i] = malloc((size_t)n * sizeof *x[i]);
                cr_assert_not_null(x[i]);
                for (int64_t j = 0; j < n; j++)
                    x[i][j] = conf_rng_uniform(&r, -3.0f, 3.0f);
            }
            int64_t n_ref = half_run(cpu, c, types[k], x, &ref);
            int64_t n_got = half_run(dev, c, types[k], x, &got);
            double tol = conf_half_tol(types[k], (xg_op)op);
            bool ok = n_ref > 0 && n_ref == n_got;
            if (ok) {
                conf_cmp cmp = conf_compare_f32(got, ref, n_ref);
                ok = !cmp.nonfinite_mismatch && cmp.nmse <= tol;
                if (!ok)
                    cr_expect_fail("%s [%s]: nMSE %.3g > %.3g on %s (%" PRId64
                                   " NaN/Inf mismatches)", c->op,
                                   xg_dtype_name(types[k]), cmp.nmse, tol,
                                   tg->name, cmp.nonfinite_mismatch);
            } else {
                cr_expect_fail("%s [%s]: failed on %s or cpu", c->op,
                               xg_dtype_name(types[k]), tg->name);
            }
            failures += !ok;
            run++;
            free(x[0]);
            free(x[1]);
            free(ref);
            free(got);
        }
    xg_device_close(dev);
    xg_device_close(cpu);
    cr_log_info("16-bit front-end: %d case(s) on %s", run, tg->name);
    cr_expect(failures == 0, "16-bit front-end: %d of %d case(s) fail on %s",
              failures, run, tg->name);
    conf_check_validation();
}

TestSuite(frontend, .timeout = 900);

Test(frontend, add) { run_group("add"); }
Test(frontend, sub) { run_group("sub"); }
Test(frontend, mul) { run_group("mul"); }
Test(frontend, div) { run_group("div"); }
Test(frontend, scalar) { run_group("scalar"); }
Test(frontend, unary) { run_group("unary"); }
Test(frontend, matmul) { run_group("matmul"); }
Test(frontend, reduce) { run_group("reduce"); }
Test(frontend, softmax) { run_group("softmax"); }
Test(frontend, permute) { run_group("permute"); }
Test(frontend, reshape) { run_group("reshape"); }
Test(frontend, views) { run_group("views"); }
Test(frontend, loss) { run_group("loss"); }
Test(frontend, conv) { run_group("conv"); }
Test(frontend, pool) { run_group("pool"); }
Test(frontend, dropout) { run_group("dropout"); }
Test(frontend, batchnorm) { run_group("batchnorm"); }
Test(frontend, index) { run_group("index"); }
Test(frontend, embedding) { run_group("embedding"); }
Test(frontend, where) { run_group("where"); }
Test(frontend, attention) { run_group("attention"); }
Test(frontend, layernorm) { run_group("layernorm"); }

/* ---- hand values on the device under test --------------------------------- */

/* Runs f on a leaf made from x[n] on the device under test, backpropagates
 * sum(f(x)) and checks the output (one value) and the gradient against
 * want_y and want_g[n] within a relative 1e-6. */
static void check_values(const char *what, xg_tensor *(*f)(xg_tensor *),
                         const float *x, const int64_t *shape, int ndim,
                         int n, double want_y, const double *want_g)
{
    xg_device *cpu, *dev;
    open_devices(&cpu, &dev);
    xg_device_set_current(dev);
    xg_scope *scope = xg_scope_begin();
    xg_tensor *t = xg_tensor_from_data(x, XG_F32, shape, ndim);
    cr_assert(t && xg_tensor_set_requires_grad(t, true) == XG_OK, "%s: %s",
              what, xg_last_error());
    xg_tensor *y = f(t);
    float got_y = NAN, got_g[8];
    cr_assert(y && xg_tensor_read(y, &got_y, sizeof got_y) == XG_OK &&
                  xg_backward(xg_sum_all(y)) == XG_OK &&
                  xg_tensor_read(xg_tensor_grad(t), got_g,
                                 (size_t)n * sizeof *got_g) == XG_OK,
              "%s: %s", what, xg_last_error());
    cr_expect(fabs(got_y - want_y) <= 1e-6 * fabs(want_y), "%s: got %.9g, "
              "expected %.9g", what, (double)got_y, want_y);
    for (int i = 0; i < n; i++)
        cr_expect(fabs(got_g[i] - want_g[i]) <= 1e-6 * fabs(want_g[i]),
                  "%s: gradient %d: got %.9g, expected %.9g", what, i,
                  (double)got_g[i], want_g[i]);
    xg_scope_end(scope);
    xg_device_close(dev);
    xg_device_close(cpu);
    conf_check_validation();
}

/* One pixel padded by k / 2: one window, whose divisor k * k overflows an
 * int for k >= 46341. */
static xg_tensor *avg_46341(xg_tensor *x) { return xg_avg_pool2d(x, 46341, 0, 23170); }
static xg_tensor *avg_65536(xg_tensor *x) { return xg_avg_pool2d(x, 65536, 0, 32768); }

Test(values, avg_pool_huge_kernel)
{
    double a = 1.0 / (46341.0 * 46341.0), b = 1.0 / 4294967296.0;
    check_values("avg_pool2d k 46341", avg_46341, (float[]){1},
                 XG_SHAPE(1, 1, 1, 1), 1, a, &a);
    check_values("avg_pool2d k 65536", avg_65536, (float[]){1},
                 XG_SHAPE(1, 1, 1, 1), 1, b, &b);
}

/* max_all splits its gradient among tied maxima, NaNs included. */
Test(values, max_all_ties)
{
    double g[4] = {0, 0.5, 0.5, 0};
    check_values("max_all [1,3,3,-1]", xg_max_all, (float[]){1, 3, 3, -1},
                 XG_SHAPE(4), 4, 3, g);
    double t = 1.0 / 3.0, gz[4] = {t, t, 0, t};
    check_values("max_all [0,0,-1,0]", xg_max_all, (float[]){0, 0, -1, 0},
                 XG_SHAPE(2, 2), 4, 0, gz);
}

/* ---- training agreement ------------------------------------------------------- */

#define MLP_IN 784
#define MLP_HIDDEN 256
#define MLP_OUT 10
#define MLP_BATCH 64
#define MLP_STEPS 10
#define MLP_SEED 1234

/* Trains the MLP for MLP_STEPS steps on `dev` and records each loss. */
static void train_mlp(xg_device *dev, const float *images,
                      const int32_t *labels, float *losses)
{
    const char *where = xg_device_backend(dev);
    xg_device_set_current(dev);
    xg_manual_seed(MLP_SEED);
    xg_module *net = xg_sequential();
    cr_assert(net, "xg_sequential: %s", xg_last_error());
    cr_assert(xg_sequential_add(net, "fc1", xg_linear(MLP_IN, MLP_HIDDEN, true)) == XG_OK &&
                  xg_sequential_add(net, "relu", xg_relu_layer()) == XG_OK &&
                  xg_sequential_add(net, "fc2", xg_linear(MLP_HIDDEN, MLP_OUT, true)) == XG_OK,
              "building the MLP on %s: %s", where, xg_last_error());
    xg_optim *opt = xg_optim_for_module(net, "adam", 1e-3f);
    cr_assert(opt, "xg_optim_for_module(adam) on %s: %s", where, xg_last_error());

    for (int step = 0; step < MLP_STEPS; step++) {
        xg_scope *scope = xg_scope_begin();
        const float *xb = images + (size_t)step * MLP_BATCH * MLP_IN;
        const int32_t *yb = labels + (size_t)step * MLP_BATCH;
        xg_tensor *x = xg_tensor_from_data(xb, XG_F32, XG_SHAPE(MLP_BATCH, MLP_IN));
        xg_tensor *y = xg_tensor_from_data(yb, XG_I32, XG_SHAPE(MLP_BATCH));
        xg_optim_zero_grad(opt);
        xg_tensor *loss = xg_cross_entropy(xg_module_forward(net, x), y);
        cr_assert(loss, "step %d forward on %s: %s", step, where, xg_last_error());
        xg_status st = xg_backward(loss);
        cr_assert(st == XG_OK, "step %d backward on %s: %s", step, where,
                  xg_last_error());
        st = xg_optim_step(opt);
        cr_assert(st == XG_OK, "step %d optimizer on %s: %s", step, where,
                  xg_last_error());
        st = xg_tensor_item(loss, &losses[step]);
        cr_assert(st == XG_OK, "step %d reading the loss on %s: %s", step,
                  where, xg_last_error());
        xg_scope_end(scope);
    }
    xg_optim_free(opt);
    xg_module_free(net);
    xg_device_set_current(NULL);
}

Test(training, mlp_adam_agrees_with_cpu, .timeout = 900)
{
    const conf_target *t = conf_target_get();
    size_t n_img = (size_t)MLP_STEPS * MLP_BATCH * MLP_IN;
    float *images = malloc(n_img * sizeof *images);
    int32_t *labels = malloc((size_t)MLP_STEPS * MLP_BATCH * sizeof *labels);
    cr_assert(images && labels);
    /* Synthetic "images": pixels in [0, 1) with a class-dependent bias on a
     * few pixels, so the model has something to learn. */
    conf_rng r = conf_rng_make(777, 0);
    for (size_t i = 0; i < (size_t)MLP_STEPS * MLP_BATCH; i++) {
        labels[i] = (int32_t)(conf_rng_u64(&r) % MLP_OUT);
        for (int p = 0; p < MLP_IN; p++)
            images[i * MLP_IN + p] = conf_rng_uniform(&r, 0.0f, 1.0f) +
                                     (p % MLP_OUT == labels[i] ? 0.5f : 0.0f);
    }
    xg_device *cpu, *dev;
    open_devices(&cpu, &dev);
    float ref[MLP_STEPS], got[MLP_STEPS];
    train_mlp(cpu, images, labels, ref);
    train_mlp(dev, images, labels, got);
    xg_device_close(dev);
    xg_device_close(cpu);
    free(images);
    free(labels);

    int bad = 0;
    for (int s = 0; s < MLP_STEPS; s++) {
        double rel = fabs((double)got[s] - ref[s]) / fabs((double)ref[s]);
        cr_log_info("step %d: loss %.7f on cpu, %.7f on %s (rel %.2g)", s,
                    (double)ref[s], (double)got[s], t->name, rel);
        if (!(rel <= 1e-3) || !isfinite(ref[s])) {
            cr_expect_fail("MLP 784-256-10 Adam step %d: loss %.7g on %s, "
                           "%.7g on cpu: relative difference %.3g > 1e-3",
                           s, (double)got[s], t->name, (double)ref[s], rel);
            bad++;
        }
    }
    cr_expect(ref[MLP_STEPS - 1] < ref[0], "the cpu loss did not fall in %d "
              "steps (%g -> %g)", MLP_STEPS, (double)ref[0],
              (double)ref[MLP_STEPS - 1]);
    cr_expect(bad == 0, "training losses differ at %d of %d steps", bad,
              MLP_STEPS);
    conf_check_validation();
}
