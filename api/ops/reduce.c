/* Reductions, softmax and losses. */
#include <stdlib.h>
#include <string.h>

#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"

/* Resolves a possibly negative axis of x (a scalar counts as shape [1]). */
static bool resolve_axis(const char *op, const xg_tensor *x, int *axis)
{
    int nd = x->ndim ? x->ndim : 1;
    int a = *axis < 0 ? *axis + nd : *axis;
    if (a < 0 || a >= nd) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: axis %d is out of range for "
                     "%d dimension(s)", op, *axis, x->ndim);
        return false;
    }
    *axis = a;
    return true;
}

bool xg__i32_index_ok(const char *op, const char *what, int64_t n)
{
    if (n <= INT32_MAX)
        return true;
    xg_set_error(XG_ERR_TOO_LARGE, "%s: its i32 indices cannot address a %s "
                 "of %lld elements (at most 2^31 - 1 = %d)", op, what,
                 (long long)n, INT32_MAX);
    return false;
}

/* Resolves the axis of an op with i32 index output and checks its length. */
static bool index_axis(const char *op, const xg_tensor *x, int *axis)
{
    return xg__check_float(op, 0, x) && resolve_axis(op, x, axis) &&
           xg__i32_index_ok(op, "axis", x->ndim ? x->shape[*axis] : 1);
}

/* [outer, dim, inner] view of x around `axis`. */
static xg_reduce_args reduce_view(const xg_tensor *x, int axis)
{
    xg_reduce_args r = {1, 1, 1};
    for (int i = 0; i < x->ndim; i++) {
        if (i < axis)
            r.outer *= x->shape[i];
        else if (i == axis)
            r.dim = x->shape[i];
        else
            r.inner *= x->shape[i];
    }
    return r;
}

/* x's shape with `axis` removed (or kept as 1). */
static int reduced_shape(const xg_tensor *x, int axis, bool keepdim,
                         int64_t *shape)
{
    int nd = 0;
    for (int i = 0; i < x->ndim; i++) {
        if (i != axis)
            shape[nd++] = x->shape[i];
        else if (keepdim)
            shape[nd++] = 1;
    }
    return nd;
}

/* Runs a REDUCE-family kernel: out[0] of dtype0, optional out[1] (i32). */
static xg_tensor *reduce_kernel(xg_op op, xg_tensor *x, int axis,
                                bool keepdim, xg_dtype dtype0,
                                xg_tensor **index_out)
{
    const char *name = xg_op_table[op].name;
    int64_t shape[XG_MAX_DIMS];
    int nd = reduced_shape(x, axis, keepdim, shape);
    xg_device *dev = x->storage->dev;
    xg_tensor *out = xg__tensor_new(dev, dtype0, shape, nd, name);
    xg_tensor *idx = index_out && out
                         ? xg__tensor_new(dev, XG_I32, shape, nd, name)
                         : NULL;
    if (!out || (index_out && !idx))
        goto fail;
    xg_kernel_call call = {.op = op, .in = {xg__arg(x)},
                           .out = {xg__arg(out), xg__arg(idx)}};
    call.p.reduce = reduce_view(x, axis);
    if (xg__launch(dev, &call) != XG_OK)
        goto fail;
    if (index_out)
        *index_out = idx;
    return out;
fail:
    xg_tensor_free(out);
    xg_tensor_free(idx);
    return NULL;
}

/* The argument sum and max record: the reduced axis. */
typedef struct axis_args {
    int axis;
} axis_args;

/* d sum / dx: g (with the axis restored) broadcast over the axis. */
static xg_status bw_sum(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0];
    const axis_args *a = n->args;
    int64_t shape[XG_MAX_DIMS];
    int nd = reduced_shape(x, a->axis, true, shape);
    gi[0] = xg__expand(xg_reshape(g, shape, nd), x->shape, x->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_sum(xg_tensor *x, int axis, bool keepdim)
{
    if (!xg__check_float("sum", 0, x) || !resolve_axis("sum", x, &axis))
        return NULL;
    xg_tensor *out = reduce_kernel(XG_OP_sum, x, axis, keepdim, x->dtype,
                                   NULL);
    /* the rule reads x's shape only */
    return xg__record(out, &(xg_record){.op = XG_OP_sum, .backward = bw_sum,
                                        .inputs = &x, .n_inputs = 1,
                                        .values_unused = 1u,
                                        .args = &(axis_args){axis},
                                        .args_size = sizeof(axis_args)});
}

xg_tensor *xg_mean(xg_tensor *x, int axis, bool keepdim)
{
    if (!xg__check_float("mean", 0, x) ||
        !resolve_axis("mean", x, &axis))
        return NULL;
    int64_t n = x->ndim ? x->shape[axis] : 1;
    xg_scope *scope = xg__composite_begin();
    return xg__composite_end(
        scope, xg_mul_scalar(xg_sum(x, axis, keepdim), 1.0f / (float)n));
}

/* Flattens x to [numel] (differentiable) for the *_all reductions. */
static xg_tensor *flat(xg_tensor *x, const char *op)
{
    if (!xg__check_arg(op, 0, x, x ? x->dtype : XG_F32))
        return NULL;
    return xg_reshape(x, &x->numel, 1);
}

/* Reduces all of x with `reduce` over its flattened view. */
static xg_tensor *reduce_all(xg_tensor *x, const char *op,
                             xg_tensor *(*reduce)(xg_tensor *, int, bool))
{
    xg_scope *scope = xg__composite_begin();
    return xg__composite_end(scope, reduce(flat(x, op), 0, false));
}

xg_tensor *xg_sum_all(xg_tensor *x) { return reduce_all(x, "sum_all", xg_sum); }
xg_tensor *xg_mean_all(xg_tensor *x) { return reduce_all(x, "mean_all", xg_mean); }

/* d max_all / dx: g split evenly among the elements tied with the maximum
 * (NaNs, when the maximum is NaN), as torch.max(x) and torch.amax do:
 * dx = mask * (g / sum(mask)). saved[0] is the maximum. */
static xg_status bw_max_all(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *mask = xg__same_value(n->inputs[0], n->saved[0]);
    gi[0] = xg_mul(mask, xg_div(g, xg_sum_all(mask)));
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_max_all(xg_tensor *x)
{
    if (!xg__check_float("max_all", 0, x) ||
        !xg__i32_index_ok("max_all", "tensor", x->numel))
        return NULL;
    bool was = xg_set_grad_enabled(false);
    xg_tensor *y = reduce_all(x, "max_all", xg_max);
    xg_set_grad_enabled(was);
    return xg__record(y, &(xg_record){.op = XG_OP_none, .name = "max_all",
                                      .backward = bw_max_all, .inputs = &x,
                                      .n_inputs = 1, .save_output = true});
}

/* d max / dx: g routed to the index of the maximum. */
static xg_status bw_max(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0]; /* its shape only: it may be hollow */
    xg_device *dev = g->storage->dev;
    xg_tensor *dx = xg__tensor_new(dev, x->dtype, x->shape, x->ndim,
                                   "max_backward");
    if (!dx)
        return xg_last_status();
    xg_kernel_call call = {.op = XG_OP_max_backward,
                           .in = {xg__arg(g), xg__arg(n->saved[0])},
                           .out = {xg__arg(dx)}};
    call.p.reduce = reduce_view(x, ((const axis_args *)n->args)->axis);
    xg_status st = xg__launch(dev, &call);
    gi[0] = dx;
    return st;
}

xg_tensor *xg_max(xg_tensor *x, int axis, bool keepdim)
{
    if (!index_axis("max", x, &axis))
        return NULL;
    xg_tensor *idx = NULL;
    xg_tensor *out = reduce_kernel(XG_OP_max, x, axis, keepdim, x->dtype,
                                   &idx);
    if (!out)
        return NULL;
    out = xg__record(out, &(xg_record){.op = XG_OP_max, .backward = bw_max,
                                       .inputs = &x, .n_inputs = 1,
                                       .values_unused = 1u,
                                       .saved = &idx, .n_saved = 1,
                                       .args = &(axis_args){axis},
                                       .args_size = sizeof(axis_args)});
    xg_tensor_free(idx); /* the node, if any, holds its own reference */
    return out;
}

xg_tensor *xg_argmax(xg_tensor *x, int axis, bool keepdim)
{
    if (!index_axis("argmax", x, &axis))
        return NULL;
    return reduce_kernel(XG_OP_argmax, x, axis, keepdim, XG_I32, NULL);
}

/* Sums g down to `shape`, one broadcast axis at a time. */
xg_tensor *xg__sum_to(xg_tensor *g, const int64_t *shape, int ndim)
{
    if (!g)
        return NULL;
    if (g->ndim == ndim && memcmp(g->shape, shape, sizeof *shape * ndim) == 0)
        return g;
    xg_tensor *r = g;
    int lead = g->ndim - ndim; /* axes that broadcasting added in front */
    for (int i = g->ndim - 1; i >= 0 && r; i--) {
        bool added = i < lead;
        if (added || (shape[i - lead] == 1 && g->shape[i] != 1))
            r = xg_sum(r, i, true);
    }
    return xg_reshape(r, shape, ndim);
}

/* ---- softmax family, over the last axis ------------------------------- */

static xg_tensor *rows_kernel(xg_op op, xg_tensor *x)
{
    const char *name = xg_op_table[op].name;
    if (!xg__check_float(name, 0, x))
        return NULL;
    xg_tensor *y = xg__tensor_new(x->storage->dev, x->dtype, x->shape,
                                  x->ndim, name);
    if (!y)
        return NULL;
    int64_t cols = x->ndim ? x->shape[x->ndim - 1] : 1;
    xg_kernel_call call = {.op = op, .in = {xg__arg(x)}, .out = {xg__arg(y)}};
    call.p.rows = (xg_rows_args){.rows = x->numel / cols, .cols = cols};
    if (xg__launch(x->storage->dev, &call) != XG_OK) {
        xg_tensor_free(y);
        return NULL;
    }
    return y;
}

/* softmax: dx = y * (g - sum(g * y)) */
static xg_status bw_softmax(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *y = n->saved[0];
    gi[0] = xg_mul(y, xg_sub(g, xg_sum(xg_mul(g, y), -1, true)));
    return gi[0] ? XG_OK : xg_last_status();
}

/* log_softmax: dx = g - exp(y) * sum(g) */
static xg_status bw_log_softmax(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg_sub(g, xg_mul(xg_exp(n->saved[0]), xg_sum(g, -1, true)));
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_tensor *softmax_op(xg_op op, xg_tensor *x, xg_backward_fn bw)
{
    /* the rules read the output only */
    return xg__record(rows_kernel(op, x),
                      &(xg_record){.op = op, .backward = bw, .inputs = &x,
                                   .n_inputs = 1, .values_unused = 1u,
                                   .save_output = true});
}

xg_tensor *xg_softmax(xg_tensor *x)
{
    xg_scope *cast; /* under autocast: in f32 */
    if (xg__autocast_f32(&x, 1, &cast))
        return xg__composite_end(cast, xg_softmax(x));
    return softmax_op(XG_OP_softmax, x, bw_softmax);
}

xg_tensor *xg_log_softmax(xg_tensor *x)
{
    xg_scope *cast; /* under autocast: in f32 */
    if (xg__autocast_f32(&x, 1, &cast))
        return xg__composite_end(cast, xg_log_softmax(x));
    return softmax_op(XG_OP_log_softmax, x, bw_log_softmax);
}

/* ---- losses -------------------------------------------------------------- */

/* What a cross_entropy node keeps beside the labels (saved[0]). */
typedef struct ce_node_args {
    int32_t ignore_index;
} ce_node_args;

static xg_status bw_cross_entropy(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *logits = n->inputs[0];
    xg_device *dev = logits->storage->dev;
    xg_tensor *dx = xg__tensor_new(dev, logits->dtype, logits->shape,
                                   logits->ndim, "cross_entropy_backward");
    if (!dx)
        return xg_last_status();
    xg_kernel_call call = {.op = XG_OP_cross_entropy_backward,
                           .in = {xg__arg(logits), xg__arg(n->saved[0]),
                                  xg__arg(g)},
                           .out = {xg__arg(dx)}};
    call.p.rows = (xg_rows_args){logits->shape[0], logits->shape[1],
                                 ((const ce_node_args *)n->args)->ignore_index};
    gi[0] = dx;
    return xg__launch(dev, &call);
}

static bool check_ce_args(xg_tensor *logits, xg_tensor *labels)
{
    const char *op = "cross_entropy";
    if (!xg__check_float(op, 0, logits) ||
        !xg__check_arg(op, 1, labels, XG_I32) ||
        !xg__check_same_device(op, logits, labels))
        return false;
    if (logits->ndim != 2 || labels->ndim != 1 ||
        labels->shape[0] != logits->shape[0]) {
        char s1[160], s2[160];
        xg__shape_str(logits->shape, logits->ndim, s1, sizeof s1);
        xg__shape_str(labels->shape, labels->ndim, s2, sizeof s2);
        xg_set_error(XG_ERR_SHAPE, "cross_entropy: needs logits [N, C] and "
                     "labels [N], got %s and %s", s1, s2);
        return false;
    }
    return true;
}

/* Per-sample losses [N] (0 in ignored rows), with a node that keeps the
 * labels; *counted gets the kernel's [N] flags (1 for a row that counts
 * towards the mean, 0 for an ignored one), not part of any graph. */
static xg_tensor *cross_entropy_rows(xg_tensor *logits, xg_tensor *labels,
                                     int32_t ignore_index,
                                     xg_tensor **counted)
{
    xg_device *dev = logits->storage->dev;
    xg_tensor *loss = xg__tensor_new(dev, logits->dtype, labels->shape, 1,
                                     "cross_entropy");
    xg_tensor *count = loss ? xg__tensor_new(dev, XG_F32, labels->shape, 1,
                                             "cross_entropy")
                            : NULL;
    if (!count)
        goto fail;
    xg_kernel_call call = {.op = XG_OP_cross_entropy,
                           .in = {xg__arg(logits), xg__arg(labels)},
                           .out = {xg__arg(loss), xg__arg(count)}};
    call.p.rows = (xg_rows_args){logits->shape[0], logits->shape[1],
                                 ignore_index};
    if (xg__launch(dev, &call) != XG_OK)
        goto fail;
    *counted = count;
    return xg__record(loss, &(xg_record){.op = XG_OP_cross_entropy,
                                         .backward = bw_cross_entropy,
                                         .inputs = &logits, .n_inputs = 1,
                                         .saved = &labels, .n_saved = 1,
                                         .args = &(ce_node_args){ignore_index},
                                         .args_size = sizeof(ce_node_args)});
fail:
    xg_tensor_free(loss);
    xg_tensor_free(count);
    return NULL;
}

/* sum(loss) / sum(counted): the mean over the rows not ignored, computed
 * on the device (no read back); 0 / 0 = NaN when every row is ignored, as
 * in PyTorch. The count carries no gradient, so the backward is g / count
 * for every row, which the backward kernel zeroes in ignored rows. */
xg_tensor *xg_cross_entropy_ignore(xg_tensor *logits, xg_tensor *labels,
                                   int32_t ignore_index)
{
    xg_scope *cast; /* under autocast: in f32 */
    if (xg__autocast_f32(&logits, 1, &cast))
        return xg__composite_end(cast, xg_cross_entropy_ignore(
            logits, labels, ignore_index));

    if (!check_ce_args(logits, labels))
        return NULL;
    xg_scope *scope = xg__composite_begin();
    xg_tensor *counted = NULL;
    xg_tensor *rows = cross_entropy_rows(logits, labels, ignore_index,
                                         &counted);
    xg_tensor *mean = rows ? xg_div(xg_sum_all(rows), xg_sum_all(counted))
                           : NULL;
    return xg__composite_end(scope, mean);
}

xg_tensor *xg_cross_entropy(xg_tensor *logits, xg_tensor *labels)
{
    return xg_cross_entropy_ignore(logits, labels, XG_IGNORE_INDEX);
}

xg_tensor *xg_mse_loss(xg_tensor *pred, xg_tensor *target)
{
    const char *op = "mse_loss";
    int64_t shape[XG_MAX_DIMS];
    int nd;
    if (!xg__check_float(op, 0, pred) || !xg__check_float(op, 1, target) ||
        !xg__check_same_device(op, pred, target) ||
        !xg__broadcast_shape(op, pred, target, shape, &nd))
        return NULL;
    xg_scope *scope = xg__composite_begin();
    xg_tensor *d = xg_sub(pred, target);
    return xg__composite_end(scope, xg_mean_all(xg_mul(d, d)));
}
