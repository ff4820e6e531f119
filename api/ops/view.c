/* Views: reshape, permute and transpose, narrow, select, expand, squeeze
 * and unsqueeze share their input's storage with other strides and an
 * offset (no copy); contiguous makes the copy a kernel needs. Gradients
 * follow PyTorch: each view's backward maps the gradient back onto its
 * input's shape. */
#include <string.h>

#include "ops/ops_impl.h"

/* Resolves a possibly negative axis of an ndim-axis tensor. */
static bool view_axis(const char *op, int ndim, int *axis)
{
    int a = *axis < 0 ? *axis + ndim : *axis;
    if (a < 0 || a >= ndim) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: axis %d is out of range for %d "
                     "dimension(s)", op, *axis, ndim);
        return false;
    }
    *axis = a;
    return true;
}

/* A view of x recorded with `bw` and its arguments. */
static xg_tensor *view_of(xg_tensor *x, const char *name, const int64_t *shape,
                          const int64_t *strides, int ndim, int64_t offset,
                          xg_backward_fn bw, const void *args, size_t size)
{
    return xg__record(xg__tensor_view(x, shape, strides, ndim, offset),
                      &(xg_record){.op = XG_OP_none, .name = name,
                                   .backward = bw, .inputs = &x,
                                   .n_inputs = 1, .args = args,
                                   .args_size = size});
}

/* Writes g into the region of a zero tensor of x's shape that a view of x
 * with (strides relative to a row-major x, offset) covers: the backward of
 * narrow and select. */
static xg_tensor *scatter_into_zeros(xg_tensor *g, const xg_tensor *x,
                                     const int64_t *strides, int64_t offset)
{
    xg_tensor *dx = xg__fill_dtype(g->storage->dev, x->dtype, x->shape,
                                   x->ndim, 0.0f, "view backward");
    if (dx && xg__copy_strided(g, dx, strides, offset) != XG_OK) {
        xg_tensor_free(dx);
        return NULL;
    }
    return dx;
}

/* x's shape and strides without `axis`; returns the new ndim. */
static int drop_axis(const xg_tensor *x, int axis, int64_t *shape,
                     int64_t *strides)
{
    int nd = 0;
    for (int k = 0; k < x->ndim; k++)
        if (k != axis) {
            shape[nd] = x->shape[k];
            strides[nd++] = x->strides[k];
        }
    return nd;
}

/* ---- contiguous ---------------------------------------------------------- */

static xg_status bw_identity(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    (void)n;
    gi[0] = g;
    return XG_OK;
}

xg_tensor *xg_contiguous(xg_tensor *x)
{
    if (!xg__check_arg("contiguous", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    xg_tensor *y;
    if (xg__is_dense(x)) {
        y = xg__tensor_alias(x, x->shape, x->ndim);
    } else {
        xg_operand d = xg__arg(x); /* makes x's contiguous copy */
        y = d.buf ? xg__tensor_alias(x->dense, x->shape, x->ndim) : NULL;
    }
    return xg__record(y, &(xg_record){.op = XG_OP_none, .name = "contiguous",
                                      .backward = bw_identity, .inputs = &x,
                                      .n_inputs = 1});
}

bool xg_tensor_is_contiguous(const xg_tensor *t)
{
    return t && xg__is_dense(t);
}

/* ---- reshape ---------------------------------------------------------- */

static xg_status bw_reshape(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0];
    gi[0] = xg_reshape(g, x->shape, x->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

/* Copies `shape` to `out`, replacing one -1 with the size that keeps numel. */
static bool infer_shape(const xg_tensor *x, const int64_t *shape, int ndim,
                        int64_t *out)
{
    int infer = -1;
    int64_t known = 1; /* product of the given sizes, kept <= numel */
    bool ok = ndim >= 0 && ndim <= XG_MAX_DIMS && (shape || ndim == 0);
    for (int i = 0; ok && i < ndim; i++) {
        out[i] = shape[i];
        if (shape[i] == -1 && infer < 0)
            infer = i;
        else if (shape[i] >= 1 && shape[i] <= x->numel / known)
            known *= shape[i];
        else
            ok = false;
    }
    if (ok && infer >= 0)
        out[infer] = x->numel / known;
    if (ok && known * (infer >= 0 ? out[infer] : 1) == x->numel)
        return true;
    char s1[160], s2[160];
    xg__shape_str(x->shape, x->ndim, s1, sizeof s1);
    xg__shape_str(shape, ndim >= 0 && ndim <= XG_MAX_DIMS && shape ? ndim : 0,
                  s2, sizeof s2);
    xg_set_error(XG_ERR_SHAPE, "reshape: cannot view %s (%lld elements) as %s",
                 s1, (long long)x->numel, s2);
    return false;
}

xg_tensor *xg_reshape(xg_tensor *x, const int64_t *shape, int ndim)
{
    if (!xg__check_arg("reshape", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    int64_t resolved[XG_MAX_DIMS];
    if (!infer_shape(x, shape, ndim, resolved))
        return NULL;
    if (!xg__is_dense(x)) { /* a view: reshape its contiguous copy */
        xg_scope *scope = xg__composite_begin();
        xg_tensor *y = xg_reshape(xg_contiguous(x), resolved, ndim);
        return xg__composite_end(scope, y);
    }
    return xg__record(xg__tensor_alias(x, resolved, ndim),
                      &(xg_record){.op = XG_OP_none, .name = "reshape",
                                   .backward = bw_reshape, .inputs = &x,
                                   .n_inputs = 1});
}

/* ---- permute / transpose ---------------------------------------------- */

typedef struct permute_args {
    int perm[XG_MAX_DIMS];
} permute_args;

static xg_status bw_permute(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const permute_args *a = n->args;
    int inverse[XG_MAX_DIMS];
    for (int i = 0; i < g->ndim; i++)
        inverse[a->perm[i]] = i;
    gi[0] = xg_permute(g, inverse, g->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

static bool check_perm(const xg_tensor *x, const int *perm, int ndim)
{
    bool seen[XG_MAX_DIMS] = {0};
    bool ok = perm && ndim == x->ndim;
    for (int i = 0; ok && i < ndim; i++) {
        ok = perm[i] >= 0 && perm[i] < ndim && !seen[perm[i]];
        if (ok)
            seen[perm[i]] = true;
    }
    if (!ok)
        xg_set_error(XG_ERR_INVALID_ARG, "permute: the permutation must list "
                     "each of the tensor's %d axes once", x->ndim);
    return ok;
}

xg_tensor *xg_permute(xg_tensor *x, const int *perm, int ndim)
{
    if (!xg__check_arg("permute", 0, x, x ? x->dtype : XG_F32) ||
        !check_perm(x, perm, ndim))
        return NULL;
    permute_args a = {{0}};
    int64_t shape[XG_MAX_DIMS], strides[XG_MAX_DIMS];
    for (int i = 0; i < ndim; i++) {
        a.perm[i] = perm[i];
        shape[i] = x->shape[perm[i]];
        strides[i] = x->strides[perm[i]];
    }
    return view_of(x, "permute", shape, strides, ndim, x->offset, bw_permute,
                   &a, sizeof a);
}

xg_tensor *xg_transpose(xg_tensor *x, int axis0, int axis1)
{
    if (!xg__check_arg("transpose", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    int nd = x->ndim;
    int a0 = axis0 < 0 ? axis0 + nd : axis0, a1 = axis1 < 0 ? axis1 + nd : axis1;
    if (a0 < 0 || a0 >= nd || a1 < 0 || a1 >= nd) {
        xg_set_error(XG_ERR_INVALID_ARG, "transpose: axes %d, %d out of range "
                     "for %d dimension(s)", axis0, axis1, nd);
        return NULL;
    }
    int perm[XG_MAX_DIMS];
    for (int i = 0; i < nd; i++)
        perm[i] = i == a0 ? a1 : i == a1 ? a0 : i;
    return xg_permute(x, perm, nd);
}

/* ---- narrow and select ------------------------------------------------------ */

/* Where a narrow or select view sits in a row-major tensor of x's shape. */
typedef struct slice_args {
    int axis;
    int64_t start;
    bool drop_axis; /* select: the axis is gone from the view */
} slice_args;

static xg_status bw_slice(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const slice_args *a = n->args;
    xg_tensor *x = n->inputs[0];
    int64_t rm[XG_MAX_DIMS], strides[XG_MAX_DIMS];
    xg__row_major(x->shape, x->ndim, rm);
    for (int k = 0, j = 0; k < x->ndim; k++)
        if (!(a->drop_axis && k == a->axis))
            strides[j++] = rm[k];
    gi[0] = scatter_into_zeros(g, x, strides, a->start * rm[a->axis]);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_narrow(xg_tensor *x, int axis, int64_t start, int64_t length)
{
    if (!xg__check_arg("narrow", 0, x, x ? x->dtype : XG_F32) ||
        !view_axis("narrow", x->ndim, &axis))
        return NULL;
    int64_t size = x->shape[axis];
    if (start < 0 || length < 1 || start > size || length > size - start) {
        xg_set_error(XG_ERR_INVALID_ARG, "narrow: start %lld, length %lld do "
                     "not fit in axis %d of size %lld", (long long)start,
                     (long long)length, axis, (long long)size);
        return NULL;
    }
    int64_t shape[XG_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[axis] = length;
    slice_args a = {axis, start, false};
    return view_of(x, "narrow", shape, x->strides, x->ndim,
                   x->offset + start * x->strides[axis], bw_slice, &a,
                   sizeof a);
}

xg_tensor *xg_select(xg_tensor *x, int axis, int64_t index)
{
    if (!xg__check_arg("select", 0, x, x ? x->dtype : XG_F32) ||
        !view_axis("select", x->ndim, &axis))
        return NULL;
    int64_t size = x->shape[axis];
    if (index < -size || index >= size) {
        xg_set_error(XG_ERR_INVALID_ARG, "select: index %lld is out of range "
                     "for axis %d of size %lld", (long long)index, axis,
                     (long long)size);
        return NULL;
    }
    if (index < 0)
        index += size;
    int64_t shape[XG_MAX_DIMS], strides[XG_MAX_DIMS];
    int nd = drop_axis(x, axis, shape, strides);
    slice_args a = {axis, index, true};
    return view_of(x, "select", shape, strides, nd,
                   x->offset + index * x->strides[axis], bw_slice, &a,
                   sizeof a);
}

/* ---- expand ------------------------------------------------------------ */

static xg_status bw_expand_view(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *x = n->inputs[0];
    gi[0] = xg__sum_to(g, x->shape, x->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_expand(xg_tensor *x, const int64_t *shape, int ndim)
{
    if (!xg__check_arg("expand", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    bool ok = shape && ndim >= x->ndim && ndim <= XG_MAX_DIMS;
    int64_t strides[XG_MAX_DIMS];
    for (int k = 0; ok && k < ndim; k++) {
        int j = k - (ndim - x->ndim); /* x's axis, right-aligned */
        if (j < 0)
            strides[k] = 0;
        else if (x->shape[j] == shape[k])
            strides[k] = x->strides[j];
        else if (x->shape[j] == 1 && shape[k] >= 1)
            strides[k] = 0;
        else
            ok = false;
        ok = ok && shape[k] >= 1;
    }
    if (!ok) {
        char s1[160], s2[160];
        xg__shape_str(x->shape, x->ndim, s1, sizeof s1);
        xg__shape_str(shape, shape && ndim >= 0 && ndim <= XG_MAX_DIMS ? ndim
                                                                        : 0,
                      s2, sizeof s2);
        xg_set_error(XG_ERR_SHAPE, "expand: cannot broadcast %s to %s", s1,
                     s2);
        return NULL;
    }
    return view_of(x, "expand", shape, strides, ndim, x->offset,
                   bw_expand_view, NULL, 0);
}

/* ---- squeeze and unsqueeze -------------------------------------------------- */

xg_tensor *xg_squeeze(xg_tensor *x, int axis)
{
    if (!xg__check_arg("squeeze", 0, x, x ? x->dtype : XG_F32) ||
        !view_axis("squeeze", x->ndim, &axis))
        return NULL;
    if (x->shape[axis] != 1) {
        xg_set_error(XG_ERR_SHAPE, "squeeze: axis %d has size %lld, not 1",
                     axis, (long long)x->shape[axis]);
        return NULL;
    }
    int64_t shape[XG_MAX_DIMS], strides[XG_MAX_DIMS];
    int nd = drop_axis(x, axis, shape, strides);
    return view_of(x, "squeeze", shape, strides, nd, x->offset, bw_reshape,
                   NULL, 0);
}

xg_tensor *xg_unsqueeze(xg_tensor *x, int axis)
{
    if (!xg__check_arg("unsqueeze", 0, x, x ? x->dtype : XG_F32))
        return NULL;
    if (x->ndim == XG_MAX_DIMS) {
        xg_set_error(XG_ERR_SHAPE, "unsqueeze: the tensor already has %d "
                     "dimensions", XG_MAX_DIMS);
        return NULL;
    }
    if (!view_axis("unsqueeze", x->ndim + 1, &axis))
        return NULL;
    int64_t shape[XG_MAX_DIMS], strides[XG_MAX_DIMS];
    for (int k = 0, j = 0; k <= x->ndim; k++) {
        if (k == axis) {
            shape[k] = 1;
            strides[k] = 0; /* any stride: the axis has one element */
        } else {
            shape[k] = x->shape[j];
            strides[k] = x->strides[j++];
        }
    }
    return view_of(x, "unsqueeze", shape, strides, x->ndim + 1, x->offset,
                   bw_reshape, NULL, 0);
}
