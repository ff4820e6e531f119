/* Indexing and selection: index_select and gather (the INDEX family) and
 * where and masked_fill (the WHERE family), with their backward rules.
 *
 * Index checking. Indices live on the device, and a kernel given an index
 * out of range would read or write outside its buffers. The front-ends
 * therefore read every index back to the host and check it before the
 * launch (xg_tensor_read: this waits for the device's queued work). An
 * index out of range is XG_ERR_INVALID_ARG naming the op, the index, its
 * position and the range; nothing is launched. The graph node keeps its
 * own device copy of the checked indices, uploaded from that host copy,
 * so that a later xg_tensor_write to the caller's index tensor cannot put
 * unchecked values in front of the backward kernel.
 *
 * Determinism. The backward kernels scatter-add the gradient into a zeroed
 * dx one line at a time (the elements of dx that share every coordinate
 * but the axis), each line owned by one thread, adding the contributions
 * in increasing position along the axis (struct xg_index_args). No float
 * atomics: repeated indices sum in the same order, with the same bits, on
 * every backend. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops/ops_impl.h"

/* ---- shared helpers ------------------------------------------------------- */

/* Launches `call` on out's device, freeing `out` on failure. */
static xg_tensor *finish(xg_tensor *out, xg_kernel_call *call)
{
    if (out && xg__launch(out->storage->dev, call) != XG_OK) {
        xg_tensor_free(out);
        return NULL;
    }
    return out;
}

/* ---- index_select and gather ---------------------------------------------- */

/* Resolves a possibly negative axis of x, which must have one. */
static bool index_axis(const char *op, const xg_tensor *x, int *axis)
{
    if (x->ndim == 0) {
        xg_set_error(XG_ERR_SHAPE, "%s: x must have at least one axis, got "
                     "a 0-D tensor", op);
        return false;
    }
    int a = *axis < 0 ? *axis + x->ndim : *axis;
    if (a < 0 || a >= x->ndim) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: axis %d is out of range for "
                     "%d dimension(s)", op, *axis, x->ndim);
        return false;
    }
    *axis = a;
    return true;
}

/* The index's shape against x's: 1-D for index_select; for gather, x's
 * number of axes and no size above x's except along the axis. */
static bool check_index_shape(const char *op, const xg_tensor *x, int axis,
                              const xg_tensor *index, bool gather)
{
    bool ok = gather ? index->ndim == x->ndim : index->ndim == 1;
    for (int k = 0; ok && gather && k < x->ndim; k++)
        ok = k == axis || index->shape[k] <= x->shape[k];
    if (ok)
        return true;
    char xs[160], is[160];
    xg__shape_str(x->shape, x->ndim, xs, sizeof xs);
    xg__shape_str(index->shape, index->ndim, is, sizeof is);
    xg_set_error(XG_ERR_SHAPE, gather
                     ? "%s: index %s must have the axes of x %s and no size "
                       "above x's except along axis %d"
                     : "%s: index %s must be 1-D (x %s, axis %d)",
                 op, is, xs, axis);
    return false;
}

static bool check_index_args(const char *op, const xg_tensor *x, int *axis,
                             const xg_tensor *index, bool gather)
{
    return xg__check_float(op, 0, x) &&
           xg__check_arg(op, 2, index, XG_I32) &&
           xg__check_same_device(op, x, index) &&
           index_axis(op, x, axis) &&
           check_index_shape(op, x, *axis, index, gather);
}

/* Reads the indices back to the host (waiting for the device's queued
 * work) and checks that each lies in [0, x's size along the axis); errors
 * call x `x_name`. Returns the host copy, which the caller frees, or NULL
 * with the error set. */
static int32_t *read_checked_indices(const char *op, const char *x_name,
                                     const xg_tensor *x, int axis,
                                     const xg_tensor *index)
{
    size_t bytes = (size_t)index->numel * sizeof(int32_t);
    int32_t *v = malloc(bytes);
    if (!v) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory reading "
                     "the index", op);
        return NULL;
    }
    if (xg_tensor_read(index, v, bytes) != XG_OK) {
        free(v);
        return NULL;
    }
    int64_t limit = x->shape[axis];
    for (int64_t i = 0; i < index->numel; i++) {
        if (v[i] >= 0 && v[i] < limit)
            continue;
        char xs[160];
        xg__shape_str(x->shape, x->ndim, xs, sizeof xs);
        xg_set_error(XG_ERR_INVALID_ARG, "%s: index %d (element %lld of the "
                     "index) is out of range [0, %lld) for axis %d of %s %s",
                     op, (int)v[i], (long long)i, (long long)limit, axis,
                     x_name, xs);
        free(v);
        return NULL;
    }
    return v;
}

/* Drops size-1 axes other than the axis and merges neighbours that are
 * contiguous in x, in the selection and in the index, so that kernels see
 * the fewest axes ([outer, axis, inner] when only the axis differs). */
static void merge_index_axes(xg_index_args *p)
{
    int nd = 0, axis = 0;
    bool prev_plain = false; /* the last kept axis is not the axis and has
                                the same size in x and in the selection */
    for (int k = 0; k < p->ndim; k++) {
        bool is_axis = k == p->axis;
        if (!is_axis && p->x_shape[k] == 1)
            continue;
        bool plain = !is_axis && p->x_shape[k] == p->shape[k];
        if (plain && prev_plain &&
            p->index_stride[nd - 1] == p->index_stride[k] * p->shape[k]) {
            p->x_shape[nd - 1] *= p->x_shape[k];
            p->shape[nd - 1] *= p->shape[k];
            p->index_stride[nd - 1] = p->index_stride[k];
            continue;
        }
        if (is_axis)
            axis = nd;
        p->x_shape[nd] = p->x_shape[k];
        p->shape[nd] = p->shape[k];
        p->index_stride[nd] = p->index_stride[k];
        prev_plain = plain;
        nd++;
    }
    p->ndim = nd;
    p->axis = axis;
}

/* The kernel arguments for x and a selection of shape `sel` (x's number of
 * axes) along `axis`; n = the elements of the kernel's output. */
static xg_index_args index_args(const xg_tensor *x, const int64_t *sel,
                                int axis, bool gather, int64_t n)
{
    xg_index_args p = {.ndim = x->ndim, .axis = axis, .n = n};
    int64_t stride = 1;
    for (int k = x->ndim - 1; k >= 0; k--) {
        p.x_shape[k] = x->shape[k];
        p.shape[k] = sel[k];
        p.index_stride[k] = gather ? stride : k == axis;
        stride *= sel[k];
    }
    merge_index_axes(&p);
    return p;
}

/* What an index op's node keeps beside the checked indices (saved[0]). */
typedef struct index_node_args {
    int axis;
} index_node_args;

/* dx: g scattered back along the axis by the node's checked indices. */
static xg_status bw_index(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0];
    xg_op fwd = n->op;
    const index_node_args *a = n->args;
    xg_op op = xg_op_table[fwd].backward;
    xg_device *dev = x->storage->dev;
    xg_tensor *dx = xg__tensor_new(dev, x->dtype, x->shape, x->ndim,
                                   xg_op_table[op].name);
    if (!dx)
        return xg_last_status();
    xg_kernel_call call = {.op = op, .in = {xg__arg(g), xg__arg(n->saved[0])},
                           .out = {xg__arg(dx)}};
    call.p.index = index_args(x, g->shape, a->axis,
                              fwd == XG_OP_gather, dx->numel);
    gi[0] = dx;
    return xg__launch(dev, &call);
}

/* Records the node of an index op on `out`, with a device copy of the
 * checked indices `host` (index's shape). Returns out, or NULL (freeing
 * it) on failure. */
static xg_tensor *record_index(xg_tensor *out, xg_op op, xg_tensor *x,
                               int axis, const xg_tensor *index,
                               const int32_t *host)
{
    if (!out || !xg__needs_grad(&x, 1))
        return out;
    const char *name = xg_op_table[op].name;
    xg_tensor *copy = xg__tensor_new(x->storage->dev, XG_I32, index->shape,
                                     index->ndim, name);
    if (!copy || xg_tensor_write(copy, host, (size_t)index->numel * 4) !=
                     XG_OK) {
        xg_tensor_free(copy);
        xg_tensor_free(out);
        return NULL;
    }
    out = xg__record(out, &(xg_record){.op = op, .backward = bw_index,
                                       .inputs = &x, .n_inputs = 1,
                                       .saved = &copy, .n_saved = 1,
                                       .args = &(index_node_args){axis},
                                       .args_size = sizeof(index_node_args)});
    xg_tensor_free(copy); /* the node holds its own reference, or nobody */
    return out;
}

/* Runs index op `op` on arguments already checked, `axis` resolved; errors
 * name the op `who` and x `x_name`. */
static xg_tensor *index_run(xg_op op, const char *who, const char *x_name,
                            xg_tensor *x, int axis, xg_tensor *index)
{
    const char *name = xg_op_table[op].name;
    bool gather = op == XG_OP_gather;
    int64_t sel[XG_MAX_DIMS];
    memcpy(sel, gather ? index->shape : x->shape, sizeof sel);
    if (!gather)
        sel[axis] = index->numel;
    int32_t *host = read_checked_indices(who, x_name, x, axis, index);
    if (!host)
        return NULL;
    xg_tensor *out = xg__tensor_new(x->storage->dev, x->dtype, sel, x->ndim,
                                    name);
    xg_kernel_call call = {.op = op, .in = {xg__arg(x), xg__arg(index)},
                           .out = {xg__arg(out)}};
    if (out)
        call.p.index = index_args(x, sel, axis, gather, out->numel);
    out = record_index(finish(out, &call), op, x, axis, index, host);
    free(host);
    return out;
}

static xg_tensor *index_op(xg_op op, xg_tensor *x, int axis,
                           xg_tensor *index)
{
    const char *name = xg_op_table[op].name;
    if (!check_index_args(name, x, &axis, index, op == XG_OP_gather))
        return NULL;
    return index_run(op, name, "x", x, axis, index);
}

xg_tensor *xg_index_select(xg_tensor *x, int axis, xg_tensor *index)
{
    return index_op(XG_OP_index_select, x, axis, index);
}

xg_tensor *xg_gather(xg_tensor *x, int axis, xg_tensor *index)
{
    return index_op(XG_OP_gather, x, axis, index);
}

/* ---- embedding ------------------------------------------------------------ */

/* index_select(weight, 0, index flattened), reshaped to index's shape plus
 * [dim]: the gradient is index_select's, scatter-added in increasing
 * position of the flattened index with the same bits on every backend. */
xg_tensor *xg_embedding(xg_tensor *weight, xg_tensor *index)
{
    const char *op = "embedding";
    if (!xg__check_float(op, 0, weight) ||
        !xg__check_arg(op, 1, index, XG_I32) ||
        !xg__check_same_device(op, weight, index))
        return NULL;
    if (weight->ndim != 2 || index->ndim >= XG_MAX_DIMS) {
        char ws[160], is[160];
        xg__shape_str(weight->shape, weight->ndim, ws, sizeof ws);
        xg__shape_str(index->shape, index->ndim, is, sizeof is);
        if (weight->ndim != 2)
            xg_set_error(XG_ERR_SHAPE, "%s: weight %s must be 2-D [num, "
                         "dim] (index %s)", op, ws, is);
        else
            xg_set_error(XG_ERR_SHAPE, "%s: index %s has %d axes, so the "
                         "result would have more than %d (weight %s)", op,
                         is, index->ndim, XG_MAX_DIMS, ws);
        return NULL;
    }
    int64_t shape[XG_MAX_DIMS], flat = index->numel;
    memcpy(shape, index->shape, sizeof *shape * (size_t)index->ndim);
    shape[index->ndim] = weight->shape[1];
    xg_scope *scope = xg__composite_begin();
    xg_tensor *flat_index = xg_reshape(index, &flat, 1);
    xg_tensor *rows = flat_index ? index_run(XG_OP_index_select, op,
                                             "weight", weight, 0, flat_index)
                                 : NULL;
    return xg__composite_end(scope,
                             rows ? xg_reshape(rows, shape, index->ndim + 1)
                                  : NULL);
}

/* ---- where and masked_fill ------------------------------------------------ */

/* The shape that the n tensors t[] (named names[]) broadcast to, or false
 * with the error for `op`. */
static bool broadcast_all(const char *op, xg_tensor *const *t,
                          const char *const *names, int n, int64_t *shape,
                          int *ndim)
{
    int nd = 0;
    for (int i = 0; i < n; i++)
        nd = t[i]->ndim > nd ? t[i]->ndim : nd;
    for (int k = 0; k < nd; k++) {
        shape[k] = 1;
        for (int i = 0; i < n; i++) {
            int ik = t[i]->ndim - nd + k;
            int64_t s = ik >= 0 ? t[i]->shape[ik] : 1;
            if (s != 1 && shape[k] != 1 && s != shape[k])
                goto mismatch;
            shape[k] = s != 1 ? s : shape[k];
        }
    }
    *ndim = nd;
    return true;
mismatch:;
    char msg[512];
    size_t used = 0;
    for (int i = 0; i < n && used < sizeof msg; i++) {
        char s[160];
        xg__shape_str(t[i]->shape, t[i]->ndim, s, sizeof s);
        used += (size_t)snprintf(msg + used, sizeof msg - used, "%s%s %s",
                                 i ? ", " : "", names[i], s);
    }
    xg_set_error(XG_ERR_SHAPE, "%s: shapes do not broadcast: %s", op, msg);
    return false;
}


/* Drops size-1 axes and merges neighbours that are contiguous in all n_in
 * inputs (as the binary ops do). */
static void merge_where_axes(xg_where_args *p, int n_in)
{
    int nd = 0;
    for (int k = 0; k < p->ndim; k++) {
        if (p->shape[k] == 1)
            continue;
        bool merge = nd > 0;
        for (int i = 0; merge && i < n_in; i++)
            merge = p->stride[i][nd - 1] == p->stride[i][k] * p->shape[k];
        if (merge)
            p->shape[nd - 1] *= p->shape[k];
        else
            p->shape[nd] = p->shape[k];
        for (int i = 0; i < n_in; i++)
            p->stride[i][merge ? nd - 1 : nd] = p->stride[i][k];
        nd += !merge;
    }
    if (nd == 0) {
        p->shape[0] = 1;
        for (int i = 0; i < n_in; i++)
            p->stride[i][0] = 0;
        nd = 1;
    }
    p->ndim = nd;
}

/* A WHERE-family kernel on the inputs in[] (as ops.def orders them),
 * broadcast to `shape`. */
static xg_tensor *where_kernel(xg_op op, xg_tensor *const *in,
                               const int64_t *shape, int ndim, float value)
{
    const char *name = xg_op_table[op].name;
    int n_in = xg_op_table[op].n_in;
    xg_tensor *out = xg__tensor_new(in[0]->storage->dev, in[0]->dtype, shape,
                                    ndim, name);
    if (!out)
        return NULL;
    xg_kernel_call call = {.op = op, .out = {xg__arg(out)}};
    xg_where_args *p = &call.p.where;
    p->ndim = ndim;
    p->n = out->numel;
    p->value = value;
    for (int k = 0; k < ndim; k++)
        p->shape[k] = shape[k];
    for (int i = 0; i < n_in; i++) {
        call.in[i] = xg__arg(in[i]);
        xg__broadcast_strides(in[i], shape, ndim, p->stride[i]);
    }
    merge_where_axes(p, n_in);
    return finish(out, &call);
}

/* d where / da = g where cond, 0 elsewhere; d / db the other way round;
 * each summed down to its input's shape. cond is node->saved. */
static xg_status bw_where(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *a = n->inputs[0], *b = n->inputs[1], *cond = n->saved[0];
    xg_tensor *zero = xg__fill(g->storage->dev, NULL, 0, 0.0f, "where");
    if (!zero)
        return xg_last_status();
    if (a->requires_grad)
        gi[0] = xg__sum_to(where_kernel(XG_OP_where,
                                        (xg_tensor *[]){g, zero, cond},
                                        g->shape, g->ndim, 0.0f),
                           a->shape, a->ndim);
    if (b->requires_grad)
        gi[1] = xg__sum_to(where_kernel(XG_OP_where,
                                        (xg_tensor *[]){zero, g, cond},
                                        g->shape, g->ndim, 0.0f),
                           b->shape, b->ndim);
    if ((a->requires_grad && !gi[0]) || (b->requires_grad && !gi[1]))
        return xg_last_status();
    return XG_OK;
}

xg_tensor *xg_where(xg_tensor *cond, xg_tensor *a, xg_tensor *b)
{
    const char *op = "where";
    if (!xg__check_arg(op, 0, cond, XG_I32) || !xg__check_float(op, 1, a) ||
        !xg__check_float(op, 2, b) || !xg__check_same_device(op, cond, a) ||
        !xg__check_same_device(op, a, b))
        return NULL;
    if (a->dtype != b->dtype) { /* promoted to f32 */
        xg_scope *scope = xg__composite_begin();
        xg_tensor *wa = xg_to_dtype(a, XG_F32), *wb = xg_to_dtype(b, XG_F32);
        return xg__composite_end(scope,
                                 wa && wb ? xg_where(cond, wa, wb) : NULL);
    }
    xg_tensor *in[3] = {a, b, cond}; /* the kernel's order (ops.def) */
    int64_t shape[XG_MAX_DIMS];
    int nd;
    if (!broadcast_all(op, in, (const char *const[]){"a", "b", "cond"}, 3,
                       shape, &nd))
        return NULL;
    return xg__record(where_kernel(XG_OP_where, in, shape, nd, 0.0f),
                      &(xg_record){.op = XG_OP_where, .backward = bw_where,
                                   .inputs = in, .n_inputs = 2,
                                   .saved = &cond, .n_saved = 1});
}

/* d masked_fill / dx = g where the mask is 0, summed down to x's shape;
 * the mask is node->saved. */
static xg_status bw_masked_fill(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0];
    gi[0] = xg__sum_to(where_kernel(XG_OP_masked_fill,
                                    (xg_tensor *[]){g, n->saved[0]}, g->shape,
                                    g->ndim, 0.0f),
                       x->shape, x->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_masked_fill(xg_tensor *x, xg_tensor *mask, float value)
{
    const char *op = "masked_fill";
    if (!xg__check_float(op, 0, x) ||
        !xg__check_arg(op, 1, mask, XG_I32) ||
        !xg__check_same_device(op, x, mask))
        return NULL;
    xg_tensor *in[2] = {x, mask};
    int64_t shape[XG_MAX_DIMS];
    int nd;
    if (!broadcast_all(op, in, (const char *const[]){"x", "mask"}, 2, shape,
                       &nd))
        return NULL;
    return xg__record(where_kernel(XG_OP_masked_fill, in, shape, nd, value),
                      &(xg_record){.op = XG_OP_masked_fill,
                                   .backward = bw_masked_fill, .inputs = &x,
                                   .n_inputs = 1, .saved = &mask,
                                   .n_saved = 1});
}
