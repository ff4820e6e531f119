/* Bad calls, table-driven: each must return its specific status (checked
 * with xg_last_status()), leave a message that names the operation, abort
 * nothing and leak nothing (the inputs are freed explicitly; the lead runs
 * this suite under valgrind). */
#include "test_util.h"

#include "core_impl.h" /* xg__launch: the op contract below the front-ends */

#include <criterion/parameterized.h>

/* What a bad call left behind. */
typedef struct outcome {
    bool called;
    xg_status status;  /* xg_last_status() right after the call */
    char msg[512];     /* a copy of xg_last_error() right after the call */
} outcome;

static void record(outcome *o)
{
    o->called = true;
    o->status = xg_last_status();
    snprintf(o->msg, sizeof o->msg, "%s", xg_last_error());
}

/* For ops: the result must be NULL. */
static void got_tensor(outcome *o, xg_tensor *r)
{
    record(o);
    if (r) {
        xg_tensor_free(r);
        cr_expect_fail("the bad call returned a tensor (status %s)",
                xg_status_str(o->status));
    }
}

/* For functions returning a status: it must match xg_last_status(). */
static void got_status(outcome *o, xg_status st)
{
    record(o);
    cr_expect_neq(st, XG_OK, "the bad call returned XG_OK");
    cr_expect_eq(st, o->status, "returned %s but xg_last_status() is %s",
                 xg_status_str(st), xg_status_str(o->status));
}

static xg_tensor *mk(const int64_t *shape, int ndim)
{
    xg_tensor *t = xg_zeros(shape, ndim);
    cr_assert_not_null(t, "%s", xg_last_error());
    return t;
}

static xg_tensor *mk_i32(const int64_t *shape, int ndim)
{
    int32_t v[64] = {0};
    cr_assert_leq(tu_numel(shape, ndim), 64);
    return tu_i32(v, shape, ndim);
}

/* ---- the cases --------------------------------------------------------- */

#define BINARY_CASE(fn, op, as, bs)                                          \
    static void fn(outcome *o)                                               \
    {                                                                        \
        xg_tensor *a = mk as, *b = mk bs;                                    \
        xg_clear_error();                                                    \
        got_tensor(o, op(a, b));                                             \
        xg_tensor_free(a);                                                   \
        xg_tensor_free(b);                                                   \
    }

BINARY_CASE(c_add_shape, xg_add, (XG_SHAPE(2, 3)), (XG_SHAPE(4)))
BINARY_CASE(c_sub_shape, xg_sub, (XG_SHAPE(2, 3)), (XG_SHAPE(3, 2)))
BINARY_CASE(c_mul_shape_4d, xg_mul, (XG_SHAPE(2, 3, 1, 1)),
            (XG_SHAPE(4, 1, 1)))
BINARY_CASE(c_matmul_inner, xg_matmul, (XG_SHAPE(2, 3)), (XG_SHAPE(4, 5)))
BINARY_CASE(c_matmul_batch, xg_matmul, (XG_SHAPE(2, 2, 3)),
            (XG_SHAPE(3, 3, 4)))
BINARY_CASE(c_matmul_1d, xg_matmul, (XG_SHAPE(3)), (XG_SHAPE(4)))
BINARY_CASE(c_mse_shape, xg_mse_loss, (XG_SHAPE(2, 3)), (XG_SHAPE(4)))

static void c_matmul_scalar(outcome *o)
{
    int64_t none[1] = {0};
    xg_tensor *a = mk(none, 0), *b = mk(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_matmul(a, b));
    xg_tensor_free(a);
    xg_tensor_free(b);
}

static void c_matmul_t_flags(outcome *o)
{
    /* op(a) = a^T is [3,2]; b is [3,4] */
    xg_tensor *a = mk(XG_SHAPE(2, 3)), *b = mk(XG_SHAPE(3, 4));
    xg_clear_error();
    got_tensor(o, xg_matmul_t(a, b, true, false));
    xg_tensor_free(a);
    xg_tensor_free(b);
}

static void c_div_dtype(outcome *o)
{
    xg_tensor *a = mk(XG_SHAPE(3)), *b = mk_i32(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_div(a, b));
    xg_tensor_free(a);
    xg_tensor_free(b);
}

static void c_null_input(outcome *o)
{
    xg_tensor *b = mk(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_add(NULL, b));
    xg_tensor_free(b);
}

static void c_null_unary(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_relu(NULL));
}

/* The first error in a chain survives the NULLs that follow it. */
static void c_chain_keeps_first_error(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *w = mk(XG_SHAPE(4, 5));
    xg_tensor *b = mk(XG_SHAPE(5));
    xg_clear_error();
    got_tensor(o, xg_softmax(xg_relu(xg_add(xg_matmul(x, w), b))));
    xg_tensor_free(x);
    xg_tensor_free(w);
    xg_tensor_free(b);
}

#define AXIS_CASE(fn, call)                                                  \
    static void fn(outcome *o)                                               \
    {                                                                        \
        xg_tensor *x = mk(XG_SHAPE(2, 3));                                   \
        xg_clear_error();                                                    \
        got_tensor(o, call);                                                 \
        xg_tensor_free(x);                                                   \
    }

AXIS_CASE(c_sum_axis, xg_sum(x, 2, false))
AXIS_CASE(c_sum_neg_axis, xg_sum(x, -3, true))
AXIS_CASE(c_mean_axis, xg_mean(x, 7, false))
AXIS_CASE(c_max_axis, xg_max(x, -5, false))
AXIS_CASE(c_argmax_axis, xg_argmax(x, 2, true))
AXIS_CASE(c_transpose_axis, xg_transpose(x, 0, 2))
AXIS_CASE(c_permute_dup, xg_permute(x, (const int[]){0, 0}, 2))
AXIS_CASE(c_permute_range, xg_permute(x, (const int[]){0, 2}, 2))
AXIS_CASE(c_permute_count, xg_permute(x, (const int[]){0, 1, 2}, 3))
AXIS_CASE(c_permute_null, xg_permute(x, NULL, 2))
AXIS_CASE(c_narrow_axis, xg_narrow(x, 2, 0, 1))
AXIS_CASE(c_narrow_past_end, xg_narrow(x, 1, 2, 2))
AXIS_CASE(c_narrow_negative_start, xg_narrow(x, 1, -1, 1))
AXIS_CASE(c_narrow_zero_length, xg_narrow(x, 0, 0, 0))
AXIS_CASE(c_narrow_huge, xg_narrow(x, 1, INT64_MAX, INT64_MAX))
AXIS_CASE(c_select_index, xg_select(x, 0, 2))
AXIS_CASE(c_select_neg_index, xg_select(x, -1, -4))
AXIS_CASE(c_expand_bad, xg_expand(x, XG_SHAPE(2, 4)))
AXIS_CASE(c_expand_fewer_axes, xg_expand(x, XG_SHAPE(6)))
AXIS_CASE(c_expand_null, xg_expand(x, NULL, 2))
AXIS_CASE(c_squeeze_not_one, xg_squeeze(x, 0))
AXIS_CASE(c_unsqueeze_axis, xg_unsqueeze(x, 4))
AXIS_CASE(c_reshape_numel, xg_reshape(x, XG_SHAPE(4)))
AXIS_CASE(c_reshape_numel2, xg_reshape(x, XG_SHAPE(2, 2, 2)))
AXIS_CASE(c_reshape_indivisible, xg_reshape(x, XG_SHAPE(-1, 4)))
AXIS_CASE(c_reshape_two_infer, xg_reshape(x, XG_SHAPE(-1, -1)))
AXIS_CASE(c_reshape_zero, xg_reshape(x, XG_SHAPE(0, 6)))
AXIS_CASE(c_reshape_negative, xg_reshape(x, XG_SHAPE(-2, -3)))
AXIS_CASE(c_reshape_too_many, xg_reshape(x, XG_SHAPE(1, 1, 1, 1, 1, 2, 3)))
AXIS_CASE(c_mse_null, xg_mse_loss(x, NULL))

static void c_ce_f32_labels(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *y = mk(XG_SHAPE(2));
    xg_clear_error();
    got_tensor(o, xg_cross_entropy(x, y));
    xg_tensor_free(x);
    xg_tensor_free(y);
}

static void c_ce_label_count(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *y = mk_i32(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_cross_entropy(x, y));
    xg_tensor_free(x);
    xg_tensor_free(y);
}

static void c_ce_label_2d(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *y = mk_i32(XG_SHAPE(2, 1));
    xg_clear_error();
    got_tensor(o, xg_cross_entropy(x, y));
    xg_tensor_free(x);
    xg_tensor_free(y);
}

static void c_ce_logits_1d(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(3)), *y = mk_i32(XG_SHAPE(1));
    xg_clear_error();
    got_tensor(o, xg_cross_entropy(x, y));
    xg_tensor_free(x);
    xg_tensor_free(y);
}

static void c_ce_i32_logits(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(2, 3)), *y = mk_i32(XG_SHAPE(2));
    xg_clear_error();
    got_tensor(o, xg_cross_entropy(x, y));
    xg_tensor_free(x);
    xg_tensor_free(y);
}

static void c_softmax_i32(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(2, 3));
    xg_clear_error();
    got_tensor(o, xg_softmax(x));
    xg_tensor_free(x);
}

static void c_exp_i32(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(4));
    xg_clear_error();
    got_tensor(o, xg_exp(x));
    xg_tensor_free(x);
}

static void c_matmul_i32(outcome *o)
{
    xg_tensor *a = mk_i32(XG_SHAPE(2, 2)), *b = mk(XG_SHAPE(2, 2));
    xg_clear_error();
    got_tensor(o, xg_matmul(a, b));
    xg_tensor_free(a);
    xg_tensor_free(b);
}

/* ---- indexing and selection -------------------------------------------- */

/* x [2,3] (zeros) and an i32 index of the given values and shape. */
#define INDEX_CASE(fn, call, ...)                                            \
    static void fn(outcome *o)                                               \
    {                                                                        \
        xg_tensor *x = mk(XG_SHAPE(2, 3));                                   \
        xg_tensor *i = tu_i32(__VA_ARGS__);                                  \
        xg_clear_error();                                                    \
        got_tensor(o, call);                                                 \
        xg_tensor_free(x);                                                   \
        xg_tensor_free(i);                                                   \
    }

INDEX_CASE(c_index_select_range, xg_index_select(x, 1, i),
           (const int32_t[]){0, 2, 7, 1}, XG_SHAPE(4))
INDEX_CASE(c_index_select_negative, xg_index_select(x, 0, i),
           (const int32_t[]){1, -1}, XG_SHAPE(2))
INDEX_CASE(c_index_select_axis, xg_index_select(x, 2, i),
           (const int32_t[]){0}, XG_SHAPE(1))
INDEX_CASE(c_index_select_2d_index, xg_index_select(x, 0, i),
           (const int32_t[]){0, 1}, XG_SHAPE(1, 2))
INDEX_CASE(c_gather_range, xg_gather(x, 0, i),
           (const int32_t[]){0, 1, 0, 1, 2, 0}, XG_SHAPE(2, 3))
INDEX_CASE(c_gather_ndim, xg_gather(x, 1, i),
           (const int32_t[]){0, 1, 2}, XG_SHAPE(3))
INDEX_CASE(c_gather_bigger, xg_gather(x, 1, i),
           (const int32_t[]){0, 1, 2, 0, 1, 2}, XG_SHAPE(3, 2))
INDEX_CASE(c_gather_null_x, xg_gather(NULL, 1, i),
           (const int32_t[]){0}, XG_SHAPE(1, 1))

static void c_index_select_f32_index(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *i = mk(XG_SHAPE(2));
    xg_clear_error();
    got_tensor(o, xg_index_select(x, 0, i));
    xg_tensor_free(x);
    xg_tensor_free(i);
}

static void c_index_select_i32_x(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(2, 3));
    xg_tensor *i = tu_i32((const int32_t[]){0}, XG_SHAPE(1));
    xg_clear_error();
    got_tensor(o, xg_index_select(x, 0, i));
    xg_tensor_free(x);
    xg_tensor_free(i);
}

static void c_index_select_null_index(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3));
    xg_clear_error();
    got_tensor(o, xg_index_select(x, 0, NULL));
    xg_tensor_free(x);
}

static void c_index_select_scalar_x(outcome *o)
{
    int64_t none[1] = {0};
    xg_tensor *x = mk(none, 0);
    xg_tensor *i = tu_i32((const int32_t[]){0}, XG_SHAPE(1));
    xg_clear_error();
    got_tensor(o, xg_index_select(x, 0, i));
    xg_tensor_free(x);
    xg_tensor_free(i);
}

/* ---- embedding ---- */

/* weight (shape ws, f32 unless i32_weight) and an index (i32 values iv of
 * shape is, or zeros of dtype f32 when iv is NULL). */
static void embedding_call(outcome *o, const int64_t *ws, int wn,
                           bool i32_weight, const int32_t *iv,
                           const int64_t *is, int in)
{
    xg_tensor *w = i32_weight ? mk_i32(ws, wn) : mk(ws, wn);
    xg_tensor *i = iv ? tu_i32(iv, is, in) : mk(is, in);
    xg_clear_error();
    got_tensor(o, xg_embedding(w, i));
    xg_tensor_free(w);
    xg_tensor_free(i);
}

static void c_embedding_range(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3), false,
                   (const int32_t[]){0, 3, 1, 2, 9, 1}, XG_SHAPE(2, 3));
}
static void c_embedding_negative(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3), false, (const int32_t[]){-1},
                   XG_SHAPE(1));
}
static void c_embedding_1d_weight(outcome *o)
{
    embedding_call(o, XG_SHAPE(4), false, (const int32_t[]){0}, XG_SHAPE(1));
}
static void c_embedding_3d_weight(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3, 2), false, (const int32_t[]){0},
                   XG_SHAPE(1));
}
static void c_embedding_f32_index(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3), false, NULL, XG_SHAPE(2));
}
static void c_embedding_i32_weight(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3), true, (const int32_t[]){0},
                   XG_SHAPE(1));
}
static void c_embedding_max_dims_index(outcome *o)
{
    embedding_call(o, XG_SHAPE(4, 3), false, (const int32_t[]){0},
                   XG_SHAPE(1, 1, 1, 1, 1, 1));
}
static void c_embedding_null_index(outcome *o)
{
    xg_tensor *w = mk(XG_SHAPE(4, 3));
    xg_clear_error();
    got_tensor(o, xg_embedding(w, NULL));
    xg_tensor_free(w);
}
static void c_embedding_layer_zero(outcome *o)
{
    xg_clear_error();
    xg_module *m = xg_embedding_layer(5, 0);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_embedding_layer(5, 0) made a module");
    }
}
static void c_embedding_layer_huge(outcome *o)
{
    xg_clear_error();
    xg_module *m = xg_embedding_layer((int64_t)1 << 20, (int64_t)1 << 20);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_embedding_layer(2^20, 2^20) made a module");
    }
}
static void c_embedding_layer_f32_input(outcome *o)
{
    xg_module *m = xg_embedding_layer(5, 2);
    xg_tensor *x = mk(XG_SHAPE(3));
    cr_assert_not_null(m, "%s", xg_last_error());
    xg_clear_error();
    got_tensor(o, xg_module_forward(m, x));
    xg_tensor_free(x);
    xg_module_free(m);
}

/* cond, a and b made from (shape) triples; `f32_cond` makes cond f32. */
static void where_call(outcome *o, const int64_t *cs, int cn,
                       const int64_t *as, int an, const int64_t *bs, int bn,
                       bool f32_cond)
{
    xg_tensor *c = f32_cond ? mk(cs, cn) : mk_i32(cs, cn);
    xg_tensor *a = mk(as, an), *b = mk(bs, bn);
    xg_clear_error();
    got_tensor(o, xg_where(c, a, b));
    xg_tensor_free(c);
    xg_tensor_free(a);
    xg_tensor_free(b);
}

static void c_where_shape(outcome *o)
{
    where_call(o, XG_SHAPE(2, 3), XG_SHAPE(2, 3), XG_SHAPE(2), false);
}

static void c_where_cond_shape(outcome *o)
{
    where_call(o, XG_SHAPE(4), XG_SHAPE(2, 3), XG_SHAPE(3), false);
}

static void c_where_f32_cond(outcome *o)
{
    where_call(o, XG_SHAPE(3), XG_SHAPE(3), XG_SHAPE(3), true);
}

static void c_where_null_b(outcome *o)
{
    xg_tensor *c = mk_i32(XG_SHAPE(3)), *a = mk(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_where(c, a, NULL));
    xg_tensor_free(c);
    xg_tensor_free(a);
}

static void c_masked_fill_shape(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *m = mk_i32(XG_SHAPE(2));
    xg_clear_error();
    got_tensor(o, xg_masked_fill(x, m, 1.0f));
    xg_tensor_free(x);
    xg_tensor_free(m);
}

static void c_masked_fill_f32_mask(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *m = mk(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_masked_fill(x, m, 1.0f));
    xg_tensor_free(x);
    xg_tensor_free(m);
}

static void c_masked_fill_null(outcome *o)
{
    xg_tensor *m = mk_i32(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_masked_fill(NULL, m, 1.0f));
    xg_tensor_free(m);
}

/* ---- layer norm ---------------------------------------------------------- */

/* layer_norm of x [2,3] (or the shapes given; ndim -1: NULL) with eps. */
static void layer_norm_call(outcome *o, const int64_t *xs, int xn,
                            const int64_t *ws, int wn, const int64_t *bs,
                            int bn, float eps)
{
    xg_tensor *x = xn >= 0 ? mk(xs, xn) : NULL;
    xg_tensor *w = wn >= 0 ? mk(ws, wn) : NULL;
    xg_tensor *b = bn >= 0 ? mk(bs, bn) : NULL;
    xg_clear_error();
    got_tensor(o, xg_layer_norm(x, w, b, eps));
    xg_tensor_free(x);
    xg_tensor_free(w);
    xg_tensor_free(b);
}

static void c_layer_norm_null_x(outcome *o)
{
    layer_norm_call(o, NULL, -1, XG_SHAPE(3), XG_SHAPE(3), 1e-5f);
}

static void c_layer_norm_scalar_x(outcome *o)
{
    layer_norm_call(o, NULL, 0, NULL, -1, NULL, -1, 1e-5f);
}

static void c_layer_norm_weight_shape(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), XG_SHAPE(2), NULL, -1, 1e-5f);
}

static void c_layer_norm_weight_2d(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), XG_SHAPE(1, 3), NULL, -1, 1e-5f);
}

static void c_layer_norm_bias_shape(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), XG_SHAPE(3), XG_SHAPE(2, 3), 1e-5f);
}

static void c_layer_norm_negative_eps(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), NULL, -1, NULL, -1, -1e-5f);
}

static void c_layer_norm_nan_eps(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), NULL, -1, NULL, -1, NAN);
}

static void c_layer_norm_inf_eps(outcome *o)
{
    layer_norm_call(o, XG_SHAPE(2, 3), NULL, -1, NULL, -1, INFINITY);
}

static void c_layer_norm_i32_x(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(2, 3));
    xg_clear_error();
    got_tensor(o, xg_layer_norm(x, NULL, NULL, 1e-5f));
    xg_tensor_free(x);
}

static void c_layer_norm_i32_bias(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(2, 3)), *b = mk_i32(XG_SHAPE(3));
    xg_clear_error();
    got_tensor(o, xg_layer_norm(x, NULL, b, 1e-5f));
    xg_tensor_free(x);
    xg_tensor_free(b);
}

static void c_layer_norm_layer_dim(outcome *o)
{
    xg_clear_error();
    xg_module *m = xg_layer_norm_layer(0, 1e-5f, true, true);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_layer_norm_layer made a module");
    }
}

static void c_layer_norm_layer_eps(outcome *o)
{
    xg_clear_error();
    xg_module *m = xg_layer_norm_layer(4, -1.0f, false, false);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_layer_norm_layer made a module");
    }
}

static void c_layer_norm_layer_input(outcome *o)
{
    xg_module *m = xg_layer_norm_layer(4, 1e-5f, false, false);
    cr_assert_not_null(m, "%s", xg_last_error());
    xg_tensor *x = mk(XG_SHAPE(2, 3));
    xg_clear_error();
    got_tensor(o, xg_module_forward(m, x));
    xg_tensor_free(x);
    xg_module_free(m);
}

/* ---- devices ----------------------------------------------------------- */

static void open_dev(outcome *o, const char *spec)
{
    xg_device *dev = NULL;
    xg_clear_error();
    xg_status st = xg_device_open(spec, &dev);
    got_status(o, st);
    if (st == XG_OK)
        xg_device_close(dev);
    else
        cr_expect_null(dev, "*out set on error");
}

static void c_dev_unknown(outcome *o) { open_dev(o, "nosuch"); }
static void c_dev_index(outcome *o) { open_dev(o, "cpu:7"); }
static void c_dev_bad_index(outcome *o) { open_dev(o, "cpu:x"); }
static void c_dev_neg_index(outcome *o) { open_dev(o, "cpu:-1"); }

static void c_dev_null_out(outcome *o)
{
    xg_clear_error();
    got_status(o, xg_device_open("cpu", NULL));
}

static void c_backend_devices_unknown(outcome *o)
{
    xg_device_info info[2];
    int count = -1;
    xg_clear_error();
    got_status(o, xg_backend_devices("nosuch", info, 2, &count));
}

/* Documented: tensors on a closed device can no longer be read
 * (XG_ERR_STATE) but can still be freed. */
static void c_closed_device(outcome *o)
{
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK);
    xg_device_set_current(dev);
    xg_tensor *t = xg_ones(XG_SHAPE(2));
    xg_device_set_current(NULL);
    cr_assert_not_null(t);
    xg_device_close(dev);
    float v[2];
    xg_clear_error();
    got_status(o, xg_tensor_read(t, v, sizeof v));
    xg_tensor_free(t);
}

/* ---- tensor access ----------------------------------------------------- */

static void c_read_bytes(outcome *o)
{
    xg_tensor *t = mk(XG_SHAPE(2, 3));
    float v[8];
    xg_clear_error();
    got_status(o, xg_tensor_read(t, v, 5 * sizeof(float)));
    xg_tensor_free(t);
}

static void c_read_bytes_big(outcome *o)
{
    xg_tensor *t = mk(XG_SHAPE(2, 3));
    float v[8];
    xg_clear_error();
    got_status(o, xg_tensor_read(t, v, sizeof v));
    xg_tensor_free(t);
}

static void c_read_null_dst(outcome *o)
{
    xg_tensor *t = mk(XG_SHAPE(2));
    xg_clear_error();
    got_status(o, xg_tensor_read(t, NULL, 2 * sizeof(float)));
    xg_tensor_free(t);
}

static void c_read_null_tensor(outcome *o)
{
    float v[2];
    xg_clear_error();
    got_status(o, xg_tensor_read(NULL, v, sizeof v));
}

static void c_write_bytes(outcome *o)
{
    xg_tensor *t = mk(XG_SHAPE(2, 3));
    float v[8] = {0};
    xg_clear_error();
    got_status(o, xg_tensor_write(t, v, 7 * sizeof(float)));
    xg_tensor_free(t);
}

static void c_item_many(outcome *o)
{
    xg_tensor *t = mk(XG_SHAPE(2));
    float v;
    xg_clear_error();
    got_status(o, xg_tensor_item(t, &v));
    xg_tensor_free(t);
}

static void c_item_i32(outcome *o)
{
    xg_tensor *t = mk_i32(XG_SHAPE(1));
    float v;
    xg_clear_error();
    got_status(o, xg_tensor_item(t, &v));
    xg_tensor_free(t);
}

/* ---- creation ---------------------------------------------------------- */

static void c_zeros_zero_dim(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_zeros(XG_SHAPE(2, 0, 3)));
}

static void c_ones_negative_dim(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_ones(XG_SHAPE(-4)));
}

static void c_full_too_many_dims(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_full(XG_SHAPE(1, 1, 1, 1, 1, 1, 1), 2));
}

static void c_zeros_negative_ndim(outcome *o)
{
    int64_t s[1] = {1};
    xg_clear_error();
    got_tensor(o, xg_zeros(s, -1));
}

static void c_from_data_zero_dim(outcome *o)
{
    float v[4] = {0};
    xg_clear_error();
    got_tensor(o, xg_tensor_from_data(v, XG_F32, XG_SHAPE(0)));
}

static void c_from_data_null(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_tensor_from_data(NULL, XG_F32, XG_SHAPE(2)));
}

static void c_from_data_dtype(outcome *o)
{
    float v[2] = {0};
    xg_clear_error();
    got_tensor(o, xg_tensor_from_data(v, (xg_dtype)7, XG_SHAPE(2)));
}

static void c_rand_huge_ndim(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_rand_uniform(XG_SHAPE(1, 1, 1, 1, 1, 1, 1, 1), 0, 1));
}

static void c_rand_normal_std(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_rand_normal(XG_SHAPE(4), 0, -1));
}

static void c_rand_zero_dim(outcome *o)
{
    xg_clear_error();
    got_tensor(o, xg_rand_uniform(XG_SHAPE(3, 0), 0, 1));
}

/* ---- autograd ---------------------------------------------------------- */

static void c_backward_nonscalar(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(3));
    cr_assert_eq(xg_tensor_set_requires_grad(x, true), XG_OK);
    xg_tensor *y = xg_mul_scalar(x, 2);
    cr_assert_not_null(y);
    xg_clear_error();
    got_status(o, xg_backward(y));
    xg_tensor_free(y);
    xg_tensor_free(x);
}

static void c_backward_no_graph(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(3));
    xg_tensor *y = xg_sum_all(x); /* nothing requires grad */
    cr_assert_not_null(y);
    xg_clear_error();
    got_status(o, xg_backward(y));
    xg_tensor_free(y);
    xg_tensor_free(x);
}

static void c_backward_null(outcome *o)
{
    xg_clear_error();
    got_status(o, xg_backward(NULL));
}

static void c_requires_grad_i32(outcome *o)
{
    xg_tensor *x = mk_i32(XG_SHAPE(3));
    xg_clear_error();
    got_status(o, xg_tensor_set_requires_grad(x, true));
    xg_tensor_free(x);
}

/* ---- modules ----------------------------------------------------------- */

static void c_seq_add_non_container(outcome *o)
{
    xg_module *lin = xg_linear(2, 2, true);
    xg_module *child = xg_relu_layer();
    cr_assert(lin && child);
    xg_clear_error();
    got_status(o, xg_sequential_add(lin, NULL, child)); /* takes child */
    xg_module_free(lin);
}

static void c_seq_add_duplicate(outcome *o)
{
    xg_module *seq = xg_sequential();
    cr_assert_not_null(seq);
    cr_assert_eq(xg_sequential_add(seq, "fc", xg_linear(2, 2, true)), XG_OK);
    xg_clear_error();
    got_status(o, xg_sequential_add(seq, "fc", xg_linear(2, 2, true)));
    xg_module_free(seq);
}

static void c_seq_add_malformed(outcome *o)
{
    xg_module *seq = xg_sequential();
    cr_assert_not_null(seq);
    xg_clear_error();
    got_status(o, xg_sequential_add(seq, "a.b", xg_tanh_layer()));
    xg_module_free(seq);
}

static void c_linear_zero(outcome *o)
{
    xg_clear_error();
    xg_module *m = xg_linear(0, 3, true);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_linear(0, 3) made a module");
    }
}

static void c_forward_features(outcome *o)
{
    xg_module *m = xg_linear(3, 2, true);
    cr_assert_not_null(m);
    xg_tensor *x = mk(XG_SHAPE(4, 5));
    xg_clear_error();
    got_tensor(o, xg_module_forward(m, x));
    xg_tensor_free(x);
    xg_module_free(m);
}

/* Convolution geometry that only 64-bit arithmetic gets right. */
static void conv_pad_case(outcome *o, int pad_h)
{
    xg_tensor *x = mk(XG_SHAPE(1, 1, 3, 3)), *w = mk(XG_SHAPE(1, 1, 1, 1));
    xg_conv2d_params p = xg_conv2d_defaults();
    p.pad_h = pad_h;
    xg_clear_error();
    got_tensor(o, xg_conv2d(x, w, NULL, &p));
    xg_tensor_free(x);
    xg_tensor_free(w);
}

static void c_conv_pad_int_max(outcome *o) { conv_pad_case(o, INT32_MAX); }
static void c_conv_pad_2_30(outcome *o) { conv_pad_case(o, 1 << 30); }

static void c_conv_dilation_huge(outcome *o)
{
    xg_tensor *x = mk(XG_SHAPE(1, 1, 3, 3)), *w = mk(XG_SHAPE(1, 1, 3, 3));
    xg_conv2d_params p = xg_conv2d_defaults();
    p.dil_w = INT32_MAX;
    xg_clear_error();
    got_tensor(o, xg_conv2d(x, w, NULL, &p));
    xg_tensor_free(x);
    xg_tensor_free(w);
}

static void conv_layer_case(outcome *o, int64_t in, int pad)
{
    xg_conv2d_params p = xg_conv2d_defaults();
    p.pad_w = pad;
    xg_clear_error();
    xg_module *m = xg_conv2d_layer(in, 4, 3, &p, true);
    record(o);
    if (m) {
        xg_module_free(m);
        cr_expect_fail("xg_conv2d_layer made a module");
    }
}

static void c_conv_layer_pad(outcome *o) { conv_layer_case(o, 3, INT32_MAX); }
static void c_conv_layer_huge(outcome *o)
{
    conv_layer_case(o, (int64_t)1 << 62, 0);
}

/* Index outputs are i32: an axis or plane past INT32_MAX is refused before
 * anything is allocated (the input is a broadcast view of one element). */
static void c_argmax_long_axis(outcome *o)
{
    xg_tensor *one = mk(XG_SHAPE(1));
    xg_tensor *x = xg_expand(one, XG_SHAPE((int64_t)INT32_MAX + 1));
    cr_assert_not_null(x, "%s", xg_last_error());
    xg_clear_error();
    got_tensor(o, xg_argmax(x, 0, false));
    xg_tensor_free(x);
    xg_tensor_free(one);
}

static void c_max_long_axis(outcome *o)
{
    xg_tensor *one = mk(XG_SHAPE(1, 1));
    xg_tensor *x = xg_expand(one, XG_SHAPE(2, (int64_t)INT32_MAX + 1));
    cr_assert_not_null(x, "%s", xg_last_error());
    xg_clear_error();
    got_tensor(o, xg_max(x, 1, true));
    xg_tensor_free(x);
    xg_tensor_free(one);
}

static void c_max_pool_big_plane(outcome *o)
{
    xg_tensor *one = mk(XG_SHAPE(1, 1, 1, 1));
    xg_tensor *x = xg_expand(one, XG_SHAPE(1, 1, 46341, 46341));
    cr_assert_not_null(x, "%s", xg_last_error());
    xg_clear_error();
    got_tensor(o, xg_max_pool2d(x, 1, 1, 0));
    xg_tensor_free(x);
    xg_tensor_free(one);
}

/* ---- attention --------------------------------------------------------- */

/* xg_attention on q, k, v of the given shapes (k's also for v unless
 * vs is given), with params p (NULL: the defaults). */
static void attention_case(outcome *o, const int64_t *qs, int qn,
                           const int64_t *ks, int kn, const int64_t *vs,
                           int vn, const xg_attention_params *p)
{
    xg_tensor *q = mk(qs, qn), *k = mk(ks, kn);
    xg_tensor *v = vs ? mk(vs, vn) : mk(ks, kn);
    xg_clear_error();
    got_tensor(o, xg_attention(q, k, v, p));
    xg_tensor_free(q);
    xg_tensor_free(k);
    xg_tensor_free(v);
}

static void c_attention_3d(outcome *o)
{
    attention_case(o, XG_SHAPE(2, 3, 4), XG_SHAPE(2, 3, 4), NULL, 0, NULL);
}

static void c_attention_head_size(outcome *o)
{
    attention_case(o, XG_SHAPE(1, 2, 3, 4), XG_SHAPE(1, 2, 3, 5), NULL, 0,
                   NULL);
}

static void c_attention_heads(outcome *o)
{
    attention_case(o, XG_SHAPE(1, 2, 3, 4), XG_SHAPE(1, 3, 3, 4), NULL, 0,
                   NULL);
}

static void c_attention_kv_differ(outcome *o)
{
    attention_case(o, XG_SHAPE(1, 2, 3, 4), XG_SHAPE(1, 2, 5, 4),
                   XG_SHAPE(1, 2, 6, 4), NULL);
}

static void c_attention_p_one(outcome *o)
{
    xg_attention_params p = xg_attention_defaults();
    p.dropout_p = 1.0f;
    p.training = true;
    attention_case(o, XG_SHAPE(1, 1, 2, 2), XG_SHAPE(1, 1, 2, 2), NULL, 0,
                   &p);
}

static void c_attention_p_negative(outcome *o)
{
    xg_attention_params p = xg_attention_defaults();
    p.dropout_p = -0.1f;
    attention_case(o, XG_SHAPE(1, 1, 2, 2), XG_SHAPE(1, 1, 2, 2), NULL, 0,
                   &p);
}

static void c_attention_p_nan(outcome *o)
{
    xg_attention_params p = xg_attention_defaults();
    p.dropout_p = NAN;
    attention_case(o, XG_SHAPE(1, 1, 2, 2), XG_SHAPE(1, 1, 2, 2), NULL, 0,
                   &p);
}

static void c_attention_scale_inf(outcome *o)
{
    xg_attention_params p = xg_attention_defaults();
    p.scale = INFINITY;
    attention_case(o, XG_SHAPE(1, 1, 2, 2), XG_SHAPE(1, 1, 2, 2), NULL, 0,
                   &p);
}

static void c_attention_null_k(outcome *o)
{
    xg_tensor *q = mk(XG_SHAPE(1, 1, 2, 2));
    xg_clear_error();
    got_tensor(o, xg_attention(q, NULL, q, NULL));
    xg_tensor_free(q);
}

static void c_attention_i32(outcome *o)
{
    xg_tensor *q = mk(XG_SHAPE(1, 1, 2, 2)), *k = mk_i32(XG_SHAPE(1, 1, 2, 2));
    xg_clear_error();
    got_tensor(o, xg_attention(q, k, q, NULL));
    xg_tensor_free(q);
    xg_tensor_free(k);
}

/* ---- the table --------------------------------------------------------- */

typedef struct err_case {
    const char *name;
    void (*run)(outcome *o);
    xg_status want, alt; /* alt: also acceptable where the API leaves the
                            choice open (0: none) */
    const char *needle, *needle2; /* substrings the message must contain */
} err_case;

#define SH XG_ERR_SHAPE
#define IA XG_ERR_INVALID_ARG
#define DT XG_ERR_DTYPE
#define NF XG_ERR_NOT_FOUND
#define TL XG_ERR_TOO_LARGE

static err_case cases[] = {
    {"add [2,3]+[4]", c_add_shape, SH, 0, "add", NULL},
    {"sub [2,3]-[3,2]", c_sub_shape, SH, 0, "sub", NULL},
    {"mul 4-D mismatch", c_mul_shape_4d, SH, 0, "mul", NULL},
    {"div f32 / i32", c_div_dtype, DT, 0, "div", NULL},
    {"matmul inner dims", c_matmul_inner, SH, 0, "matmul", "[2,3]"},
    {"matmul batch dims", c_matmul_batch, SH, 0, "matmul", NULL},
    {"matmul [3]@[4]", c_matmul_1d, SH, 0, "matmul", NULL},
    {"matmul 0-D operand", c_matmul_scalar, SH, IA, "matmul", NULL},
    {"matmul_t flags make dims differ", c_matmul_t_flags, SH, 0, "matmul",
     NULL},
    {"matmul i32", c_matmul_i32, DT, 0, "matmul", NULL},
    {"add(NULL, b)", c_null_input, IA, 0, "add", NULL},
    {"relu(NULL)", c_null_unary, IA, 0, "relu", NULL},
    {"chain keeps the first error", c_chain_keeps_first_error, SH, 0,
     "matmul", NULL},
    {"sum axis 2 of 2-D", c_sum_axis, IA, 0, "sum", NULL},
    {"sum axis -3 of 2-D", c_sum_neg_axis, IA, 0, "sum", NULL},
    {"mean axis 7", c_mean_axis, IA, 0, "mean", NULL},
    {"max axis -5", c_max_axis, IA, 0, "max", NULL},
    {"argmax axis 2", c_argmax_axis, IA, 0, "argmax", NULL},
    {"transpose axis 2 of 2-D", c_transpose_axis, IA, 0, "transpose", NULL},
    {"permute {0,0}", c_permute_dup, IA, 0, "permute", NULL},
    {"permute {0,2}", c_permute_range, IA, 0, "permute", NULL},
    {"permute 3 axes of 2-D", c_permute_count, IA, SH, "permute", NULL},
    {"permute NULL", c_permute_null, IA, 0, "permute", NULL},
    {"narrow axis 2 of 2-D", c_narrow_axis, IA, 0, "narrow", NULL},
    {"narrow [2:4] of 3", c_narrow_past_end, IA, 0, "narrow", NULL},
    {"narrow start -1", c_narrow_negative_start, IA, 0, "narrow", NULL},
    {"narrow length 0", c_narrow_zero_length, IA, 0, "narrow", NULL},
    {"narrow INT64_MAX", c_narrow_huge, IA, 0, "narrow", NULL},
    {"select index 2 of 2", c_select_index, IA, 0, "select", NULL},
    {"select index -4 of 3", c_select_neg_index, IA, 0, "select", NULL},
    {"expand [2,3] -> [2,4]", c_expand_bad, SH, 0, "expand", NULL},
    {"expand [2,3] -> [6]", c_expand_fewer_axes, SH, 0, "expand", NULL},
    {"expand NULL shape", c_expand_null, SH, 0, "expand", NULL},
    {"squeeze a size-2 axis", c_squeeze_not_one, SH, 0, "squeeze", NULL},
    {"unsqueeze at 4 of 2-D", c_unsqueeze_axis, IA, 0, "unsqueeze", NULL},
    {"reshape [2,3] -> [4]", c_reshape_numel, SH, 0, "reshape", NULL},
    {"reshape [2,3] -> [2,2,2]", c_reshape_numel2, SH, 0, "reshape", NULL},
    {"reshape [2,3] -> [-1,4]", c_reshape_indivisible, SH, 0, "reshape",
     NULL},
    {"reshape two -1", c_reshape_two_infer, IA, SH, "reshape", NULL},
    {"reshape [0,6]", c_reshape_zero, SH, IA, "reshape", NULL},
    {"reshape [-2,-3]", c_reshape_negative, SH, IA, "reshape", NULL},
    {"reshape to 7 dims", c_reshape_too_many, SH, IA, "reshape", NULL},
    {"mse_loss shapes", c_mse_shape, SH, 0, "mse", NULL},
    {"mse_loss NULL target", c_mse_null, IA, 0, "mse", NULL},
    {"cross_entropy f32 labels", c_ce_f32_labels, DT, 0, "cross_entropy",
     NULL},
    {"cross_entropy 3 labels for 2 rows", c_ce_label_count, SH, 0,
     "cross_entropy", NULL},
    {"cross_entropy labels [2,1]", c_ce_label_2d, SH, 0, "cross_entropy",
     NULL},
    {"cross_entropy 1-D logits", c_ce_logits_1d, SH, 0, "cross_entropy",
     NULL},
    {"cross_entropy i32 logits", c_ce_i32_logits, DT, 0, "cross_entropy",
     NULL},
    {"softmax i32", c_softmax_i32, DT, 0, "softmax", NULL},
    {"exp i32", c_exp_i32, DT, 0, "exp", NULL},
    {"index_select index 7 of 3", c_index_select_range, IA, 0,
     "index_select: index 7", "[0, 3)"},
    {"index_select index -1", c_index_select_negative, IA, 0,
     "index_select: index -1", "[0, 2)"},
    {"index_select axis 2 of 2-D", c_index_select_axis, IA, 0,
     "index_select", NULL},
    {"index_select 2-D index", c_index_select_2d_index, SH, 0,
     "index_select", NULL},
    {"index_select f32 index", c_index_select_f32_index, DT, 0,
     "index_select", NULL},
    {"index_select i32 x", c_index_select_i32_x, DT, 0, "index_select",
     NULL},
    {"index_select NULL index", c_index_select_null_index, IA, 0,
     "index_select", NULL},
    {"index_select of a 0-D x", c_index_select_scalar_x, SH, 0,
     "index_select", NULL},
    {"embedding index 9 of 4 at element 4", c_embedding_range, IA, 0,
     "embedding: index 9 (element 4", "[0, 4)"},
    {"embedding index -1", c_embedding_negative, IA, 0,
     "embedding: index -1", "weight [4,3]"},
    {"embedding 1-D weight", c_embedding_1d_weight, SH, 0, "embedding",
     "2-D"},
    {"embedding 3-D weight", c_embedding_3d_weight, SH, 0, "embedding",
     "2-D"},
    {"embedding f32 index", c_embedding_f32_index, DT, 0, "embedding", NULL},
    {"embedding i32 weight", c_embedding_i32_weight, DT, 0, "embedding",
     NULL},
    {"embedding index of XG_MAX_DIMS axes", c_embedding_max_dims_index, SH,
     0, "embedding", NULL},
    {"embedding NULL index", c_embedding_null_index, IA, 0, "embedding",
     NULL},
    {"embedding_layer dim 0", c_embedding_layer_zero, IA, 0,
     "embedding_layer", NULL},
    {"embedding_layer 2^20 x 2^20", c_embedding_layer_huge, TL, 0,
     "embedding_layer", "2^40"},
    {"Embedding forward on an f32 input", c_embedding_layer_f32_input, DT, 0,
     "embedding", NULL},
    {"gather index 2 of 2", c_gather_range, IA, 0, "gather: index 2",
     "[0, 2)"},
    {"gather 1-D index for 2-D x", c_gather_ndim, SH, 0, "gather", NULL},
    {"gather index [3,2] for x [2,3] axis 1", c_gather_bigger, SH, 0,
     "gather", NULL},
    {"gather NULL x", c_gather_null_x, IA, 0, "gather", NULL},
    {"where a [2,3], b [2]", c_where_shape, SH, 0, "where", NULL},
    {"where cond [4]", c_where_cond_shape, SH, 0, "where", "cond [4]"},
    {"where f32 cond", c_where_f32_cond, DT, 0, "where", NULL},
    {"where NULL b", c_where_null_b, IA, 0, "where", NULL},
    {"masked_fill mask [2] on x [2,3]", c_masked_fill_shape, SH, 0,
     "masked_fill", NULL},
    {"masked_fill f32 mask", c_masked_fill_f32_mask, DT, 0, "masked_fill",
     NULL},
    {"masked_fill NULL x", c_masked_fill_null, IA, 0, "masked_fill", NULL},
    {"layer_norm NULL x", c_layer_norm_null_x, IA, 0, "layer_norm", NULL},
    {"layer_norm of a 0-D x", c_layer_norm_scalar_x, SH, 0, "layer_norm",
     NULL},
    {"layer_norm weight [2] for x [2,3]", c_layer_norm_weight_shape, SH, 0,
     "layer_norm", "weight [2]"},
    {"layer_norm weight [1,3]", c_layer_norm_weight_2d, SH, 0, "layer_norm",
     "[3]"},
    {"layer_norm bias [2,3]", c_layer_norm_bias_shape, SH, 0, "layer_norm",
     "bias [2,3]"},
    {"layer_norm eps -1e-5", c_layer_norm_negative_eps, IA, 0, "layer_norm",
     "eps"},
    {"layer_norm eps NaN", c_layer_norm_nan_eps, IA, 0, "layer_norm", "eps"},
    {"layer_norm eps inf", c_layer_norm_inf_eps, IA, 0, "layer_norm", "eps"},
    {"layer_norm i32 x", c_layer_norm_i32_x, DT, 0, "layer_norm", NULL},
    {"layer_norm i32 bias", c_layer_norm_i32_bias, DT, 0, "layer_norm",
     NULL},
    {"layer_norm_layer dim 0", c_layer_norm_layer_dim, IA, 0,
     "layer_norm_layer", NULL},
    {"layer_norm_layer eps -1", c_layer_norm_layer_eps, IA, 0,
     "layer_norm_layer", "eps"},
    {"LayerNorm(4) on x [2,3]", c_layer_norm_layer_input, SH, 0,
     "layer_norm_layer", "dim = 4"},
    {"device \"nosuch\"", c_dev_unknown, NF, 0, "nosuch", "cpu"},
    {"device \"cpu:7\"", c_dev_index, NF, 0, "cpu", "7"},
    {"device \"cpu:x\"", c_dev_bad_index, NF, IA, "cpu", NULL},
    {"device \"cpu:-1\"", c_dev_neg_index, NF, IA, "cpu", NULL},
    {"device_open out NULL", c_dev_null_out, IA, 0, NULL, NULL},
    {"backend_devices \"nosuch\"", c_backend_devices_unknown, NF, 0,
     "nosuch", NULL},
    {"read from a closed device", c_closed_device, XG_ERR_STATE, 0, NULL,
     NULL},
    {"read 5 of 6 floats", c_read_bytes, IA, 0, "read", NULL},
    {"read 8 of 6 floats", c_read_bytes_big, IA, 0, "read", NULL},
    {"read into NULL", c_read_null_dst, IA, 0, "read", NULL},
    {"read a NULL tensor", c_read_null_tensor, IA, 0, "read", NULL},
    {"write 7 of 6 floats", c_write_bytes, IA, 0, "write", NULL},
    {"item of 2 elements", c_item_many, IA, SH, "item", NULL},
    {"item of i32", c_item_i32, DT, IA, "item", NULL},
    {"zeros [2,0,3]", c_zeros_zero_dim, SH, IA, "zeros", NULL},
    {"ones [-4]", c_ones_negative_dim, SH, IA, "ones", NULL},
    {"full with 7 dims", c_full_too_many_dims, SH, IA, "full", NULL},
    {"zeros ndim -1", c_zeros_negative_ndim, SH, IA, "zeros", NULL},
    {"from_data [0]", c_from_data_zero_dim, SH, IA, "from_data", NULL},
    {"from_data NULL", c_from_data_null, IA, 0, "from_data", NULL},
    {"from_data dtype 7", c_from_data_dtype, IA, DT, "from_data", NULL},
    {"rand_uniform with 8 dims", c_rand_huge_ndim, SH, IA, "rand", NULL},
    {"rand_uniform [3,0]", c_rand_zero_dim, SH, IA, "rand", NULL},
    {"rand_normal std -1", c_rand_normal_std, IA, 0, "rand_normal", NULL},
    {"backward on [3]", c_backward_nonscalar, IA, 0, "backward", NULL},
    {"backward without a graph", c_backward_no_graph, IA, 0, "backward",
     NULL},
    {"backward NULL", c_backward_null, IA, 0, "backward", NULL},
    {"requires_grad on i32", c_requires_grad_i32, DT, 0, NULL, NULL},
    {"sequential_add to a linear", c_seq_add_non_container, IA, 0, NULL,
     NULL},
    {"sequential_add duplicate name", c_seq_add_duplicate, IA, 0, "fc",
     NULL},
    {"sequential_add name \"a.b\"", c_seq_add_malformed, IA, 0, NULL, NULL},
    {"conv2d padding INT_MAX", c_conv_pad_int_max, IA, 0, "conv2d",
     "padding"},
    {"conv2d padding 2^30", c_conv_pad_2_30, IA, 0, "conv2d", "padding"},
    {"conv2d dilation INT_MAX", c_conv_dilation_huge, IA, 0, "conv2d",
     "dilat"},
    {"conv2d_layer padding INT_MAX", c_conv_layer_pad, IA, 0,
     "conv2d_layer", "padding"},
    {"conv2d_layer 2^62 input channels", c_conv_layer_huge, IA, TL,
     "conv2d_layer", NULL},
    {"argmax over 2^31 elements", c_argmax_long_axis, TL, 0, "argmax",
     "2147483648"},
    {"max over 2^31 elements", c_max_long_axis, TL, 0, "max", "2147483648"},
    {"max_pool2d over a 46341x46341 plane", c_max_pool_big_plane, TL, 0,
     "max_pool2d", "2147488281"},
    {"linear with 0 inputs", c_linear_zero, IA, SH, "linear", NULL},
    {"linear forward [4,5] into 3 features", c_forward_features, SH, 0,
     NULL, NULL},
    {"attention 3-D q, k, v", c_attention_3d, SH, 0, "attention", "[2,3,4]"},
    {"attention D 4 vs 5", c_attention_head_size, SH, 0, "attention", NULL},
    {"attention H 2 vs 3", c_attention_heads, SH, 0, "attention", NULL},
    {"attention k [..,5,4] v [..,6,4]", c_attention_kv_differ, SH, 0,
     "attention", "[1,2,6,4]"},
    {"attention dropout_p 1", c_attention_p_one, IA, 0, "attention",
     "dropout_p"},
    {"attention dropout_p -0.1", c_attention_p_negative, IA, 0, "attention",
     "dropout_p"},
    {"attention dropout_p NaN", c_attention_p_nan, IA, 0, "attention",
     "dropout_p"},
    {"attention scale inf", c_attention_scale_inf, IA, 0, "attention",
     "scale"},
    {"attention NULL k", c_attention_null_k, IA, 0, "attention", NULL},
    {"attention i32 k", c_attention_i32, DT, 0, "attention", NULL},
};

static void errors_fini(void)
{
    tu_fini();
}

#define N_CASES ((int)(sizeof cases / sizeof cases[0]))

/* Criterion runs each parameter in a fresh process of this executable, so
 * the parameter is an index into `cases` rather than a pointer into it. */
ParameterizedTestParameters(errors, table)
{
    static int idx[N_CASES];
    for (int i = 0; i < N_CASES; i++)
        idx[i] = i;
    return cr_make_param_array(int, idx, N_CASES);
}

ParameterizedTest(int *i, errors, table, .init = tu_init,
                  .fini = errors_fini)
{
    cr_assert(*i >= 0 && *i < N_CASES);
    const err_case *c = &cases[*i];
    outcome o = {0};
    c->run(&o);
    cr_assert(o.called, "%s: case did not record its outcome", c->name);
    bool ok = o.status == c->want || (c->alt && o.status == c->alt);
    cr_expect(ok, "%s: status %d (%s), expected %s%s%s; message \"%s\"",
              c->name, (int)o.status, xg_status_str(o.status),
              xg_status_str(c->want), c->alt ? " or " : "",
              c->alt ? xg_status_str(c->alt) : "", o.msg);
    cr_expect(o.msg[0] != 0, "%s: empty error message", c->name);
    if (c->needle)
        cr_expect(strstr(o.msg, c->needle) != NULL,
                  "%s: message \"%s\" does not mention \"%s\"", c->name,
                  o.msg, c->needle);
    if (c->needle2)
        cr_expect(strstr(o.msg, c->needle2) != NULL,
                  "%s: message \"%s\" does not mention \"%s\"", c->name,
                  o.msg, c->needle2);
}

/* ---- the error state itself -------------------------------------------- */

TestSuite(error_state, .init = tu_init, .fini = tu_fini);

Test(error_state, clear_and_status_names)
{
    xg_clear_error();
    cr_expect_eq(xg_last_status(), XG_OK);
    cr_expect_str_eq(xg_last_error(), "");
    xg_tensor *a = mk(XG_SHAPE(2)), *b = mk(XG_SHAPE(3));
    cr_expect_null(xg_add(a, b));
    cr_expect_eq(xg_last_status(), XG_ERR_SHAPE);
    xg_clear_error();
    cr_expect_eq(xg_last_status(), XG_OK, "clear_error resets the status");
    cr_expect_str_eq(xg_last_error(), "", "clear_error empties the message");
    xg_tensor_free(a);
    xg_tensor_free(b);

    cr_expect_str_eq(xg_status_str((xg_status)-999), "unknown status");
    cr_expect_str_eq(xg_status_str((xg_status)5), "unknown status");
    const char *names[15];
    for (int s = 0; s >= -14; s--) {
        names[-s] = xg_status_str((xg_status)s);
        cr_assert_not_null(names[-s]);
        cr_expect(names[-s][0], "status %d has an empty name", s);
        cr_expect_str_neq(names[-s], "unknown status",
                          "status %d is unnamed", s);
        for (int t = 0; t < -s; t++)
            cr_expect_str_neq(names[t], names[-s],
                              "statuses %d and %d share a name", -t, s);
    }
    cr_expect_str_eq(xg_status_str(XG_ERR_DEVICE_OOM),
                     "device out of memory", "the example in xgrad.h");
}

Test(error_state, many_bad_calls_in_a_row_do_not_abort)
{
    xg_tensor *a = mk(XG_SHAPE(2, 3)), *b = mk(XG_SHAPE(4, 5));
    for (int i = 0; i < 1000; i++) {
        cr_assert_null(xg_matmul(a, b));
        cr_assert_null(xg_add(a, NULL));
        cr_assert_null(xg_sum(a, 9, false));
    }
    cr_expect_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    /* a good call still works afterwards */
    xg_tensor *at = xg_transpose(a, 0, 1);
    xg_tensor *c = xg_matmul(a, at);
    tu_assert_values(c, XG_SHAPE(2, 2), (const double[]){0, 0, 0, 0}, 0, 0,
                     "good call after errors");
    xg_tensor_free(c);
    xg_tensor_free(at);
    xg_tensor_free(a);
    xg_tensor_free(b);
}

Test(error_state, device_error_lists_backends)
{
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("nosuch", &dev), XG_ERR_NOT_FOUND);
    char copy[512];
    snprintf(copy, sizeof copy, "%s", xg_last_error());
    const char *names[8];
    int n = xg_backends(names, 8);
    for (int i = 0; i < n && i < 8; i++)
        cr_expect(strstr(copy, names[i]) != NULL,
                  "message \"%s\" does not list backend \"%s\"", copy,
                  names[i]);
}

/* ---- the op contract: supports() and the unsupported error ---------------- */

/* The index of kernel op `name` through the public op list, or -1. */
static int op_index(const char *name)
{
    for (int op = 0; op < xg_op_count(); op++)
        if (strcmp(xg_op_name(op), name) == 0)
            return op;
    return -1;
}

Test(error_state, op_list_and_support_matrix)
{
    cr_expect_null(xg_op_name(-1));
    cr_expect_null(xg_op_name(xg_op_count()));
    int silu = op_index("silu"), adam = op_index("adam_update");
    cr_assert(silu >= 0 && adam >= 0 && op_index("matmul") >= 0);
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK);
    cr_expect(xg_device_supports(dev, silu, XG_F32));
    cr_expect(!xg_device_supports(dev, silu, XG_I32),
              "silu on i32 elements has no kernel");
    cr_expect(xg_device_supports(dev, adam, XG_F32));
    cr_expect(!xg_device_supports(dev, adam, XG_I32),
              "an op of f32 buffers only answers for f32");
    cr_expect(!xg_device_supports(dev, -1, XG_F32));
    cr_expect(!xg_device_supports(dev, xg_op_count(), XG_F32));
    cr_expect(!xg_device_supports(dev, silu, (xg_dtype)XG_DTYPE_COUNT));
    cr_expect(!xg_device_supports(NULL, silu, XG_F32));
    cr_expect_str_eq(xg_dtype_name(XG_I32), "i32");
    cr_expect_str_eq(xg_dtype_name((xg_dtype)99), "unknown");
    cr_expect_eq(xg_dtype_size(XG_F32), 4);
    xg_device_close(dev);
}

/* A call whose dtypes a backend does not support is refused before any
 * kernel runs, with the op, the dtypes and the backend in the message. */
Test(error_state, unsupported_dtype_is_refused_by_name)
{
    xg_tensor *x = mk(XG_SHAPE(4)), *y = mk(XG_SHAPE(4));
    xg_device *dev = xg_tensor_device(x);
    xg_kernel_call call = {.op = XG_OP_neg,
                           .in = {{x->storage->buf, XG_I32}},
                           .out = {{y->storage->buf, XG_I32}}};
    call.p.ew.n = 4;
    cr_expect_eq(xg__launch(dev, &call), XG_ERR_UNSUPPORTED);
    cr_expect_str_eq(xg_last_error(),
                     "op neg with dtype i32 is not implemented on backend cpu");

    xg_kernel_call ce = {.op = XG_OP_cross_entropy,
                         .in = {{x->storage->buf, XG_F32},
                                {y->storage->buf, XG_F32}},
                         .out = {{y->storage->buf, XG_F32},
                                 {x->storage->buf, XG_F32}}};
    ce.p.rows = (xg_rows_args){1, 4, XG_IGNORE_INDEX};
    cr_expect_eq(xg__launch(dev, &ce), XG_ERR_UNSUPPORTED);
    cr_expect_str_eq(xg_last_error(),
                     "op cross_entropy with dtype f32, f32 -> f32, f32 is not "
                     "implemented on backend cpu",
                     "a signature no element type gives is listed whole");
    xg_tensor_free(x);
    xg_tensor_free(y);
}

/* A default device that cannot be opened is not looked for again on every
 * call (drivers are slow to enumerate): the failure stands until
 * xg_shutdown. */
Test(error_state, default_device_failure_is_remembered)
{
    xg_shutdown();
    setenv("XGRAD_BACKEND", "nosuch", 1);
    cr_assert_null(xg_device_current());
    cr_assert_eq(xg_last_status(), XG_ERR_NOT_FOUND);
    char first[512];
    snprintf(first, sizeof first, "%s", xg_last_error());
    setenv("XGRAD_BACKEND", "cpu", 1);
    xg_clear_error();
    cr_expect_null(xg_device_current(), "the failure is remembered");
    cr_expect_eq(xg_last_status(), XG_ERR_NOT_FOUND);
    cr_expect_str_eq(xg_last_error(), first, "with the same message");
    cr_expect_null(xg_zeros(XG_SHAPE(2)), "ops fail the same way");
    xg_shutdown();
    cr_expect_not_null(xg_device_current(), "xg_shutdown forgets it: %s",
                       xg_last_error());
}

/* The device's own account of memory: past the limit (here
 * XGRAD_MEMORY_LIMIT) an allocation is refused with XG_ERR_DEVICE_OOM,
 * freeing makes room again, and small allocations still succeed after a
 * refused large one. */
Test(error_state, memory_limit)
{
    setenv("XGRAD_MEMORY_LIMIT", "1M", 1);
    xg_device *dev = NULL;
    cr_assert_eq(xg_device_open("cpu", &dev), XG_OK, "%s", xg_last_error());
    xg_device_set_current(dev);
    xg_tensor *a = xg_zeros(XG_SHAPE(128 * 1024)); /* 512 KiB */
    cr_assert_not_null(a, "%s", xg_last_error());
    cr_expect_null(xg_zeros(XG_SHAPE(192 * 1024)), "768 KiB more");
    cr_expect_eq(xg_last_status(), XG_ERR_DEVICE_OOM);
    cr_expect(strstr(xg_last_error(), "XGRAD_MEMORY_LIMIT") != NULL, "%s",
              xg_last_error());
    xg_tensor *small = xg_zeros(XG_SHAPE(64));
    cr_expect_not_null(small, "a small one after: %s", xg_last_error());
    xg_tensor_free(a);
    xg_tensor *b = xg_zeros(XG_SHAPE(192 * 1024));
    cr_expect_not_null(b, "after freeing: %s", xg_last_error());
    xg_tensor_free(b);
    xg_tensor_free(small);
    xg_device_set_current(NULL);
    xg_device_close(dev);

    const char *bad[] = {"0", "-1", "12Q", "M", "99999999999999999999G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("XGRAD_MEMORY_LIMIT", bad[i], 1);
        cr_expect_eq(xg_device_open("cpu", &dev), XG_ERR_INVALID_ARG,
                     "XGRAD_MEMORY_LIMIT=%s", bad[i]);
    }
    unsetenv("XGRAD_MEMORY_LIMIT");
}
