/* Layer norm over the last axis (the NORM family) and its backward rule.
 *
 * The forward is one fused kernel that also keeps each row's mean and
 * rstd = 1 / sqrt(var + eps) (f32, [rows]); the node saves them, so the
 * backward reads x once more but never recomputes the statistics. An
 * absent weight or bias is passed to the kernels as x again, with a flag
 * that says it is not there (struct xg_norm_args): every binding of a
 * Vulkan dispatch then holds a valid buffer. */
#include <math.h>

#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"

/* What the node keeps beside mean and rstd (saved[0], saved[1]). Its
 * inputs are x, then weight and bias when given, in that order. */
typedef struct norm_node_args {
    xg_norm_args p;
} norm_node_args;

/* The kernel arguments of x normalised over its last axis. */
static xg_norm_args norm_args(const xg_tensor *x, float eps, bool weight,
                              bool bias)
{
    int64_t cols = x->shape[x->ndim - 1];
    return (xg_norm_args){.rows = x->numel / cols, .cols = cols, .eps = eps,
                          .has_weight = weight, .has_bias = bias};
}

/* dx from the layer_norm_backward kernel; dweight and dbias from the
 * column sums (one launch gives both; the one not asked for is dropped). */
static xg_status bw_layer_norm(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const xg_norm_args *p = &((const norm_node_args *)n->args)->p;
    xg_tensor *x = n->inputs[0];
    xg_tensor *w = p->has_weight ? n->inputs[1] : NULL;
    xg_tensor *b = p->has_bias ? n->inputs[1 + p->has_weight] : NULL;
    xg_tensor *mean = n->saved[0], *rstd = n->saved[1];
    xg_device *dev = x->storage->dev;
    if (x->requires_grad) {
        xg_tensor *dx = xg__tensor_new(dev, x->dtype, x->shape, x->ndim,
                                       "layer_norm_backward");
        if (!dx)
            return xg_last_status();
        xg_kernel_call call = {
            .op = XG_OP_layer_norm_backward,
            .in = {xg__arg(x), xg__arg(w ? w : x), xg__arg(g), xg__arg(mean),
                   xg__arg(rstd)},
            .out = {xg__arg(dx)}};
        call.p.norm = *p;
        gi[0] = dx;
        xg_status st = xg__launch(dev, &call);
        if (st != XG_OK)
            return st;
    }
    bool want_w = w && w->requires_grad, want_b = b && b->requires_grad;
    if (!want_w && !want_b)
        return XG_OK;
    int64_t cols = p->cols;
    const char *name = "layer_norm_backward_affine";
    xg_tensor *dw = xg__tensor_new(dev, x->dtype, &cols, 1, name);
    xg_tensor *db = dw ? xg__tensor_new(dev, x->dtype, &cols, 1, name) : NULL;
    if (!db)
        return xg_last_status(); /* dw, if made, goes with the scope */
    xg_kernel_call call = {
        .op = XG_OP_layer_norm_backward_affine,
        .in = {xg__arg(x), xg__arg(g), xg__arg(mean), xg__arg(rstd)},
        .out = {xg__arg(dw), xg__arg(db)}};
    call.p.norm = *p;
    if (want_w)
        gi[1] = dw;
    if (want_b)
        gi[1 + (w != NULL)] = db;
    return xg__launch(dev, &call);
}

/* weight or bias (`what`, argument `index`): NULL, or an f32 [cols] on
 * x's device. */
static bool check_affine(const char *op, int index, const char *what,
                         const xg_tensor *t, const xg_tensor *x)
{
    if (!t)
        return true;
    if (!xg__check_arg(op, index, t, x->dtype) ||
        !xg__check_same_device(op, x, t))
        return false;
    int64_t cols = x->shape[x->ndim - 1];
    if (t->ndim == 1 && t->shape[0] == cols)
        return true;
    char xs[160], ts[160];
    xg__shape_str(x->shape, x->ndim, xs, sizeof xs);
    xg__shape_str(t->shape, t->ndim, ts, sizeof ts);
    xg_set_error(XG_ERR_SHAPE, "%s: %s %s must be [%lld], the last axis of "
                 "x %s", op, what, ts, (long long)cols, xs);
    return false;
}

xg_tensor *xg_layer_norm(xg_tensor *x, xg_tensor *weight, xg_tensor *bias,
                         float eps)
{
    /* Under a 16-bit autocast: the statistics and the affine map in f32
     * (a 16-bit x cast to f32 first), the output rounded once to the
     * autocast dtype, which is what the matmul after it reads; the f32
     * output is a temporary (the cast's rule does not read it), so the
     * graph keeps only the 16-bit one. */
    xg_dtype ac = xg_autocast_dtype();
    if (ac != XG_F32 && x && xg_dtype_is_float(x->dtype)) {
        xg_scope *cast = xg__composite_begin();
        xg_dtype was = xg_set_autocast(XG_F32);
        xg_tensor *x32 = xg_to_dtype(x, XG_F32);
        xg_tensor *y = x32 ? xg_layer_norm(x32, weight, bias, eps) : NULL;
        xg_set_autocast(was);
        return xg__composite_end(cast, y ? xg_to_dtype(y, ac) : NULL);
    }

    const char *op = "layer_norm";
    if (!xg__check_float(op, 0, x))
        return NULL;
    if (x->ndim == 0) {
        xg_set_error(XG_ERR_SHAPE, "%s: x must have at least one axis, got "
                     "a 0-D tensor", op);
        return NULL;
    }
    if (!check_affine(op, 1, "weight", weight, x) ||
        !check_affine(op, 2, "bias", bias, x))
        return NULL;
    if (!(eps >= 0.0f) || isinf(eps)) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: eps = %g, must be finite and "
                     ">= 0", op, (double)eps);
        return NULL;
    }
    xg_device *dev = x->storage->dev;
    norm_node_args a = {norm_args(x, eps, weight != NULL, bias != NULL)};
    xg_tensor *y = xg__tensor_new(dev, x->dtype, x->shape, x->ndim, op);
    xg_tensor *mean = y ? xg__tensor_new(dev, XG_F32, &a.p.rows, 1, op)
                        : NULL;
    xg_tensor *rstd = mean ? xg__tensor_new(dev, XG_F32, &a.p.rows, 1, op)
                           : NULL;
    if (!rstd)
        goto fail;
    xg_kernel_call call = {
        .op = XG_OP_layer_norm,
        .in = {xg__arg(x), xg__arg(weight ? weight : x),
               xg__arg(bias ? bias : x)},
        .out = {xg__arg(y), xg__arg(mean), xg__arg(rstd)}};
    call.p.norm = a.p;
    if (xg__launch(dev, &call) != XG_OK)
        goto fail;
    xg_tensor *inputs[3] = {x};
    int n_inputs = 1;
    if (weight)
        inputs[n_inputs++] = weight;
    if (bias)
        inputs[n_inputs++] = bias;
    y = xg__record(y, &(xg_record){.op = XG_OP_layer_norm,
                                   .backward = bw_layer_norm,
                                   .inputs = inputs, .n_inputs = n_inputs,
                                   .saved = (xg_tensor *[]){mean, rstd},
                                   .n_saved = 2, .args = &a,
                                   .args_size = sizeof a});
    /* the node holds its own references, or nobody needs them */
    xg_tensor_free(mean);
    xg_tensor_free(rstd);
    return y;
fail:
    xg_tensor_free(y);
    xg_tensor_free(mean);
    xg_tensor_free(rstd);
    return NULL;
}
