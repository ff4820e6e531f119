/* Convolution, pooling, dropout, flatten and batch normalisation. */
#include <math.h>

#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"

/* ---- conv2d --------------------------------------------------------------- */

xg_conv2d_params xg_conv2d_defaults(void)
{
    return (xg_conv2d_params){.stride_h = 1, .stride_w = 1, .dil_h = 1,
                              .dil_w = 1, .groups = 1};
}

static bool is_4d(const char *op, int index, const xg_tensor *t)
{
    if (t->ndim == 4)
        return true;
    char s[160];
    xg__shape_str(t->shape, t->ndim, s, sizeof s);
    xg_set_error(XG_ERR_SHAPE, "%s: argument %d must be 4-D (NCHW), got %s",
                 op, index, s);
    return false;
}

/* Output size along one axis, or 0 when the window does not fit. In int64,
 * which holds every sum and product of int parameters and a tensor size. */
static int64_t out_size(int64_t in, int k, int stride, int pad, int dil)
{
    int64_t span = (int64_t)dil * (k - 1) + 1, padded = in + 2 * (int64_t)pad;
    return padded < span ? 0 : (padded - span) / stride + 1;
}

/* The kernels index an axis of the padded input with 32-bit integers: the
 * padded extent (in + 2 pad) and the dilated kernel span must stay below
 * 2^31. `in` 1 checks the parameters alone. */
bool xg__conv_axis_fits(const char *op, const char *axis, int64_t in, int k,
                        int pad, int dil)
{
    int64_t padded = in + 2 * (int64_t)pad, span = (int64_t)dil * (k - 1) + 1;
    if (padded <= INT32_MAX && span <= INT32_MAX)
        return true;
    xg_set_error(XG_ERR_INVALID_ARG, "%s: %s: input %lld + 2 x padding %d = "
                 "%lld, kernel %d at dilation %d spans %lld; both must stay "
                 "below 2^31", op, axis, (long long)in, pad,
                 (long long)padded, k, dil, (long long)span);
    return false;
}

/* Strides, dilations and groups >= 1, padding >= 0, and the axes' limits
 * for a kh x kw kernel over an h x w input (1 x 1: the parameters alone). */
bool xg__conv_params_ok(const char *op, const xg_conv2d_params *p,
                        int64_t h, int64_t w, int kh, int kw)
{
    if (p->stride_h < 1 || p->stride_w < 1 || p->dil_h < 1 || p->dil_w < 1 ||
        p->pad_h < 0 || p->pad_w < 0 || p->groups < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: stride, dilation and groups "
                     "must be >= 1 and padding >= 0", op);
        return false;
    }
    return xg__conv_axis_fits(op, "height", h, kh, p->pad_h, p->dil_h) &&
           xg__conv_axis_fits(op, "width", w, kw, p->pad_w, p->dil_w);
}

static bool conv_geometry(const xg_tensor *x, const xg_tensor *w,
                          const xg_conv2d_params *p, xg_conv_args *a)
{
    const char *op = "conv2d";
    if (w->shape[2] > INT32_MAX || w->shape[3] > INT32_MAX) {
        xg_set_error(XG_ERR_TOO_LARGE, "conv2d: a kernel of %lld x %lld is "
                     "too large (at most 2^31 - 1 per axis)",
                     (long long)w->shape[2], (long long)w->shape[3]);
        return false;
    }
    if (!xg__conv_params_ok(op, p, x->shape[2], x->shape[3],
                            (int)w->shape[2], (int)w->shape[3]))
        return false;
    *a = (xg_conv_args){.n = x->shape[0], .c_in = x->shape[1],
                        .h = x->shape[2], .w = x->shape[3],
                        .c_out = w->shape[0], .kh = (int)w->shape[2],
                        .kw = (int)w->shape[3], .stride_h = p->stride_h,
                        .stride_w = p->stride_w, .pad_h = p->pad_h,
                        .pad_w = p->pad_w, .dil_h = p->dil_h,
                        .dil_w = p->dil_w, .groups = p->groups};
    a->oh = out_size(a->h, a->kh, a->stride_h, a->pad_h, a->dil_h);
    a->ow = out_size(a->w, a->kw, a->stride_w, a->pad_w, a->dil_w);
    char s1[160], s2[160];
    xg__shape_str(x->shape, 4, s1, sizeof s1);
    xg__shape_str(w->shape, 4, s2, sizeof s2);
    const char *bad =
        a->c_in % p->groups || a->c_out % p->groups
            ? "channels are not multiples of groups"
        : w->shape[1] != a->c_in / p->groups
            ? "weight's input channels x groups differ from the input's"
        : a->oh < 1 || a->ow < 1 ? "the kernel is larger than the padded input"
                                 : NULL;
    if (bad)
        xg_set_error(XG_ERR_SHAPE, "%s: %s: input %s, weight %s, groups %d",
                     op, bad, s1, s2, p->groups);
    return !bad;
}

/* Runs a CONV kernel into a new tensor of `shape`; in2 (conv2d_bias's
 * bias) is NULL for the others. */
static xg_tensor *conv_kernel(xg_op op, xg_tensor *in0, xg_tensor *in1,
                              xg_tensor *in2, const int64_t *shape,
                              const xg_conv_args *a)
{
    xg_device *dev = in0->storage->dev;
    xg_tensor *out = xg__tensor_new(dev, in0->dtype, shape, 4,
                                    xg_op_table[op].name);
    if (!out)
        return NULL;
    xg_kernel_call call = {.op = op, .in = {xg__arg(in0), xg__arg(in1)},
                           .out = {xg__arg(out)}};
    if (in2)
        call.in[2] = xg__arg(in2);
    call.p.conv = *a;
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(out);
        return NULL;
    }
    return out;
}

/* The node's args are the kernel's xg_conv_args: the geometry, kept. With
 * a bias (conv2d_bias, a third input), its gradient is g summed over the
 * samples and pixels. */
static xg_status bw_conv2d(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0], *w = n->inputs[1];
    xg_tensor *b = n->n_inputs > 2 ? n->inputs[2] : NULL;
    const xg_conv_args *a = n->args;
    if (x->requires_grad &&
        !(gi[0] = conv_kernel(XG_OP_conv2d_backward_input, g, w, NULL,
                              x->shape, a)))
        return xg_last_status();
    if (w->requires_grad &&
        !(gi[1] = conv_kernel(XG_OP_conv2d_backward_weight, x, g, NULL,
                              w->shape, a)))
        return xg_last_status();
    /* over [n, c_out, oh * ow]: the pixels (long contiguous rows), then
     * the samples */
    if (b && b->requires_grad &&
        !(gi[2] = xg_reshape(
              xg_sum(xg_sum(xg_reshape(g, XG_SHAPE(a->n, a->c_out,
                                                   a->oh * a->ow)),
                            2, false),
                     0, false),
              b->shape, 1)))
        return xg_last_status();
    return XG_OK;
}

static bool check_bias(const xg_tensor *bias, int64_t c_out, xg_dtype t)
{
    if (!xg__check_arg("conv2d", 2, bias, t))
        return false;
    if (bias->ndim == 1 && bias->shape[0] == c_out)
        return true;
    xg_set_error(XG_ERR_SHAPE, "conv2d: bias must be [%lld]",
                 (long long)c_out);
    return false;
}

/* relu(conv2d_bias) as one node: relu's gradient first, taken from the
 * output as xg_relu's rule does (y > 0 exactly where the pre-activation
 * is), then conv2d_bias's. The output is not needed after the first step,
 * so it is let go before the convolution's passes, as it would be between
 * two nodes. */
static xg_status bw_conv2d_relu(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *dz = xg__unary_backward_rule(XG_OP_relu_backward,
                                            n->saved[n->n_saved - 1], g);
    if (!dz)
        return xg_last_status();
    xg__node_drop_saved(n, n->n_saved - 1);
    return bw_conv2d(n, dz, gi);
}

/* xg_conv2d, and xg_conv2d_relu when `relu`. */
static xg_tensor *conv2d(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                         const xg_conv2d_params *params, bool relu)
{
    const char *name = relu ? "conv2d_relu" : "conv2d";
    xg_tensor *ac[3] = {x, weight, bias}; /* under autocast: in its dtype */
    xg_scope *cast;
    if (xg__autocast(ac, 3, &cast))
        return xg__composite_end(cast, conv2d(ac[0], ac[1], ac[2], params,
                                              relu));
    if (relu && !bias) /* no fused op without a bias */
        return xg_relu(conv2d(x, weight, NULL, params, false));
    xg_conv2d_params p = params ? *params : xg_conv2d_defaults();
    xg_conv_args a;
    if (!xg__check_float(name, 0, x) ||
        !xg__check_arg(name, 1, weight, x->dtype) ||
        !xg__check_same_device(name, x, weight) || !is_4d(name, 0, x) ||
        !is_4d(name, 1, weight) || !conv_geometry(x, weight, &p, &a) ||
        (bias && !check_bias(bias, a.c_out, x->dtype)))
        return NULL;
    int64_t shape[4] = {a.n, a.c_out, a.oh, a.ow};
    xg_tensor *in[3] = {x, weight, bias};
    xg_op op = relu ? XG_OP_conv2d_bias_relu
               : bias ? XG_OP_conv2d_bias
                      : XG_OP_conv2d;
    return xg__record(conv_kernel(op, x, weight, bias, shape, &a),
                      &(xg_record){.op = op,
                                   .backward = relu ? bw_conv2d_relu
                                                    : bw_conv2d,
                                   .inputs = in, .n_inputs = bias ? 3 : 2,
                                   .values_unused = 1u << 2, /* the bias */
                                   .save_output = relu,
                                   .args = &a, .args_size = sizeof a});
}

xg_tensor *xg_conv2d(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                     const xg_conv2d_params *params)
{
    return conv2d(x, weight, bias, params, false);
}

xg_tensor *xg_conv2d_relu(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                          const xg_conv2d_params *params)
{
    return conv2d(x, weight, bias, params, true);
}

/* ---- pooling ------------------------------------------------------------- */

static bool pool_geometry(const char *op, const xg_tensor *x, int k,
                          int stride, int pad, bool is_max, xg_pool_args *a)
{
    if (!is_4d(op, 0, x))
        return false;
    if (stride == 0)
        stride = k;
    if (k < 1 || stride < 1 || pad < 0 || pad > k / 2) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: kernel %d, stride %d, padding "
                     "%d: need kernel >= 1, stride >= 1 (0: the kernel) and "
                     "0 <= padding <= kernel / 2", op, k, stride, pad);
        return false;
    }
    if (!xg__conv_axis_fits(op, "height", x->shape[2], k, pad, 1) ||
        !xg__conv_axis_fits(op, "width", x->shape[3], k, pad, 1) ||
        (is_max && !xg__i32_index_ok(op, "plane", x->shape[2] * x->shape[3])))
        return false;
    *a = (xg_pool_args){.n = x->shape[0], .c = x->shape[1], .h = x->shape[2],
                        .w = x->shape[3], .kh = k, .kw = k,
                        .stride_h = stride, .stride_w = stride, .pad_h = pad,
                        .pad_w = pad};
    a->oh = out_size(a->h, k, stride, pad, 1);
    a->ow = out_size(a->w, k, stride, pad, 1);
    if (a->oh >= 1 && a->ow >= 1)
        return true;
    char s[160];
    xg__shape_str(x->shape, 4, s, sizeof s);
    xg_set_error(XG_ERR_SHAPE, "%s: a %dx%d window does not fit input %s",
                 op, k, k, s);
    return false;
}

/* Runs a POOL kernel: out0 of `shape` (f32) and optionally an i32 index
 * tensor of the same shape. */
static xg_tensor *pool_kernel(xg_op op, xg_tensor *in0, xg_tensor *in1,
                              const int64_t *shape, const xg_pool_args *a,
                              xg_tensor **index)
{
    const char *name = xg_op_table[op].name;
    xg_device *dev = in0->storage->dev;
    xg_tensor *out = xg__tensor_new(dev, in0->dtype, shape, 4, name);
    xg_tensor *idx = index && out ? xg__tensor_new(dev, XG_I32, shape, 4, name)
                                  : NULL;
    if (!out || (index && !idx))
        goto fail;
    xg_kernel_call call = {.op = op,
                           .in = {xg__arg(in0), xg__arg(in1)},
                           .out = {xg__arg(out), xg__arg(idx)}};
    call.p.pool = *a;
    if (xg__launch(dev, &call) != XG_OK)
        goto fail;
    if (index)
        *index = idx;
    return out;
fail:
    xg_tensor_free(out);
    xg_tensor_free(idx);
    return NULL;
}

/* The node's args are the kernel's xg_pool_args. */
static xg_status bw_max_pool(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = pool_kernel(XG_OP_max_pool2d_backward, g, n->saved[0],
                        n->inputs[0]->shape, n->args, NULL);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_status bw_avg_pool(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = pool_kernel(XG_OP_avg_pool2d_backward, g, NULL,
                        n->inputs[0]->shape, n->args, NULL);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_tensor *pool(xg_op op, xg_tensor *x, int k, int stride, int pad,
                       xg_backward_fn bw)
{
    const char *name = xg_op_table[op].name;
    bool is_max = op == XG_OP_max_pool2d;
    xg_pool_args a;
    if (!xg__check_float(name, 0, x) ||
        !pool_geometry(name, x, k, stride, pad, is_max, &a))
        return NULL;
    int64_t shape[4] = {a.n, a.c, a.oh, a.ow};
    xg_tensor *idx = NULL;
    xg_tensor *y = pool_kernel(op, x, NULL, shape, &a, is_max ? &idx : NULL);
    /* the rules read x's shape only (max: the saved indices) */
    y = xg__record(y, &(xg_record){.op = op, .backward = bw, .inputs = &x,
                                   .n_inputs = 1, .values_unused = 1u,
                                   .saved = &idx,
                                   .n_saved = is_max, .args = &a,
                                   .args_size = sizeof a});
    xg_tensor_free(idx); /* the node, if any, holds its own reference */
    return y;
}

xg_tensor *xg_max_pool2d(xg_tensor *x, int kernel, int stride, int padding)
{
    return pool(XG_OP_max_pool2d, x, kernel, stride, padding, bw_max_pool);
}

xg_tensor *xg_avg_pool2d(xg_tensor *x, int kernel, int stride, int padding)
{
    return pool(XG_OP_avg_pool2d, x, kernel, stride, padding, bw_avg_pool);
}

/* ---- dropout and flatten -------------------------------------------------- */

static xg_tensor *dropout_kernel(xg_tensor *x, float p, uint64_t seed,
                                 uint64_t offset)
{
    xg_device *dev = x->storage->dev;
    xg_tensor *y = xg__tensor_new(dev, x->dtype, x->shape, x->ndim,
                                  "dropout");
    if (!y)
        return NULL;
    xg_kernel_call call = {.op = XG_OP_dropout, .in = {xg__arg(x)},
                           .out = {xg__arg(y)}};
    call.p.dropout = (xg_dropout_args){.n = x->numel, .seed = seed,
                                       .offset = offset, .p = p};
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(y);
        return NULL;
    }
    return y;
}

/* The mask is a function of (seed, offset): applying it to g is the
 * backward. The node's args are the kernel's xg_dropout_args. */
static xg_status bw_dropout(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const xg_dropout_args *a = n->args;
    gi[0] = dropout_kernel(g, a->p, a->seed, a->offset);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_dropout(xg_tensor *x, float p, bool training)
{
    if (!xg__check_float("dropout", 0, x))
        return NULL;
    if (!(p >= 0.0f && p < 1.0f)) {
        xg_set_error(XG_ERR_INVALID_ARG, "dropout: p = %g, must be in [0, 1)",
                     (double)p);
        return NULL;
    }
    if (!training || p == 0.0f)
        return xg_reshape(x, x->shape, x->ndim); /* same values, new handle */
    uint64_t seed, offset = xg__rng_take(((uint64_t)x->numel + 3) / 4, &seed);
    xg_dropout_args a = {.n = x->numel, .seed = seed, .offset = offset, .p = p};
    /* the rule reads x's shape only: the mask comes from (seed, offset) */
    return xg__record(dropout_kernel(x, p, seed, offset),
                      &(xg_record){.op = XG_OP_dropout,
                                   .backward = bw_dropout, .inputs = &x,
                                   .n_inputs = 1, .values_unused = 1u,
                                   .args = &a,
                                   .args_size = sizeof a});
}

xg_tensor *xg_flatten(xg_tensor *x, int start_axis)
{
    if (!xg__check_arg("flatten", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    int a = start_axis < 0 ? start_axis + x->ndim : start_axis;
    if (x->ndim == 0 || a < 0 || a >= x->ndim) {
        xg_set_error(XG_ERR_INVALID_ARG, "flatten: axis %d out of range for "
                     "%d dimension(s)", start_axis, x->ndim);
        return NULL;
    }
    int64_t shape[XG_MAX_DIMS];
    for (int i = 0; i < a; i++)
        shape[i] = x->shape[i];
    shape[a] = -1;
    return xg_reshape(x, shape, a + 1);
}

/* ---- batch normalisation ------------------------------------------------ */

/* Mean over axes 0, 2, 3 of an NCHW tensor, kept as [1, C, 1, 1]. */
static xg_tensor *channel_mean(xg_tensor *x)
{
    return xg_mean(xg_mean(xg_mean(x, 3, true), 2, true), 0, true);
}

/* running = (1 - m) * running + m * batch, written into running's storage. */
static xg_status update_running(xg_tensor *running, xg_tensor *batch,
                                float m)
{
    xg_tensor *next = xg_add(xg_mul_scalar(running, 1.0f - m),
                             xg_mul_scalar(xg_reshape(batch, running->shape,
                                                      running->ndim), m));
    return next ? xg__assign(running, next) : xg_last_status();
}

static bool check_bn_args(xg_tensor *x, xg_tensor *const *per_channel,
                          bool training)
{
    if (!xg__check_float("batch_norm2d", 0, x) ||
        !is_4d("batch_norm2d", 0, x))
        return false;
    for (int i = 0; i < 4; i++) {
        xg_tensor *t = per_channel[i];
        if (!t && (i < 2 || training))
            continue;
        if (!xg__check_arg("batch_norm2d", i + 1, t, x->dtype) ||
            !xg__check_same_device("batch_norm2d", x, t))
            return false;
        if (t->numel != x->shape[1]) {
            xg_set_error(XG_ERR_SHAPE, "batch_norm2d: argument %d must hold "
                         "one value per channel (%lld)", i + 1,
                         (long long)x->shape[1]);
            return false;
        }
    }
    return true;
}

/* Batch statistics, updating the running ones when given. */
static xg_status batch_stats(xg_tensor *x, xg_tensor *rmean, xg_tensor *rvar,
                             float momentum, xg_tensor **mean, xg_tensor **var)
{
    *mean = channel_mean(x);
    xg_tensor *d = xg_sub(x, *mean);
    *var = channel_mean(xg_mul(d, d));
    if (!*var)
        return xg_last_status();
    if (!rmean || !rvar)
        return XG_OK;
    int64_t n = x->numel / x->shape[1];
    bool was = xg_set_grad_enabled(false);
    float unbias = n > 1 ? (float)n / (float)(n - 1) : 1.0f;
    xg_status st = update_running(rmean, *mean, momentum);
    if (st == XG_OK)
        st = update_running(rvar, xg_mul_scalar(*var, unbias), momentum);
    xg_set_grad_enabled(was);
    return st;
}

xg_tensor *xg_batch_norm2d(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                           xg_tensor *running_mean, xg_tensor *running_var,
                           bool training, float momentum, float eps)
{
    xg_scope *cast; /* under autocast: statistics and result in f32 */
    if (xg__autocast_f32(&x, 1, &cast))
        return xg__composite_end(cast, xg_batch_norm2d(
            x, weight, bias, running_mean, running_var, training, momentum,
            eps));

    xg_tensor *pc[4] = {weight, bias, running_mean, running_var};
    if (!check_bn_args(x, pc, training))
        return NULL;
    int64_t c = x->shape[1];
    xg_tensor *mean = running_mean, *var = running_var;
    xg_scope *scope = xg__composite_begin();
    if (training &&
        batch_stats(x, running_mean, running_var, momentum, &mean, &var) != XG_OK)
        return xg__composite_end(scope, NULL);
    int64_t shape[4] = {1, c, 1, 1};
    xg_tensor *y = xg_div(xg_sub(x, xg_reshape(mean, shape, 4)),
                          xg_sqrt(xg_add_scalar(xg_reshape(var, shape, 4), eps)));
    if (weight)
        y = xg_mul(y, xg_reshape(weight, shape, 4));
    if (bias)
        y = xg_add(y, xg_reshape(bias, shape, 4));
    return xg__composite_end(scope, y);
}
