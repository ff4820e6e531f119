/* Joining and splitting along an axis: concat and stack make a new tensor
 * with copy_strided (each piece written into its slot, read through its
 * own strides, so a view costs no extra copy); split and chunk return
 * narrow views. */
#include <stdlib.h>
#include <string.h>

#include "ops/ops_impl.h"

typedef struct concat_args {
    int axis;
} concat_args;

/* The gradient of each piece is its slot of g, a view. */
static xg_status bw_concat(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const concat_args *a = n->args;
    int64_t start = 0;
    for (int i = 0; i < n->n_inputs; i++) {
        int64_t len = n->inputs[i]->shape[a->axis];
        if (n->inputs[i]->requires_grad &&
            !(gi[i] = xg_narrow(g, a->axis, start, len)))
            return xg_last_status();
        start += len;
    }
    return XG_OK;
}

/* Checks the pieces: same device, dtype and ndim, sizes equal off the
 * axis; resolves the axis and writes the result's shape. */
static bool concat_shape(xg_tensor *const *xs, int n, int *axis,
                         int64_t *shape)
{
    if (n < 1 || !xs) {
        xg_set_error(XG_ERR_INVALID_ARG, "concat: needs at least one tensor");
        return false;
    }
    for (int i = 0; i < n; i++)
        if (!(i == 0 ? xg__check_float("concat", 0, xs[0])
                     : xg__check_arg("concat", i, xs[i], xs[0]->dtype)) ||
            !xg__check_same_device("concat", xs[0], xs[i]))
            return false;
    int nd = xs[0]->ndim, a = *axis < 0 ? *axis + nd : *axis;
    if (nd == 0 || a < 0 || a >= nd) {
        xg_set_error(XG_ERR_INVALID_ARG, "concat: axis %d is out of range for "
                     "%d dimension(s)", *axis, nd);
        return false;
    }
    memcpy(shape, xs[0]->shape, (size_t)nd * sizeof *shape);
    shape[a] = 0;
    for (int i = 0; i < n; i++) {
        bool fits = xs[i]->ndim == nd;
        for (int k = 0; fits && k < nd; k++)
            fits = k == a || xs[i]->shape[k] == shape[k];
        if (!fits) {
            char s1[160], s2[160];
            xg__shape_str(xs[0]->shape, nd, s1, sizeof s1);
            xg__shape_str(xs[i]->shape, xs[i]->ndim, s2, sizeof s2);
            xg_set_error(XG_ERR_SHAPE, "concat: tensor %d is %s, tensor 0 is "
                         "%s: sizes must match except on axis %d", i, s2, s1,
                         a);
            return false;
        }
        shape[a] += xs[i]->shape[a];
    }
    *axis = a;
    return true;
}

xg_tensor *xg_concat(xg_tensor *const *xs, int n, int axis)
{
    int64_t shape[XG_MAX_DIMS];
    if (!concat_shape(xs, n, &axis, shape))
        return NULL;
    xg_tensor *out = xg__tensor_new(xs[0]->storage->dev, xs[0]->dtype, shape,
                                    xs[0]->ndim, "concat");
    int64_t start = 0;
    for (int i = 0; out && i < n; i++) {
        if (xg__copy_strided(xs[i], out, out->strides,
                             start * out->strides[axis]) != XG_OK) {
            xg_tensor_free(out);
            return NULL;
        }
        start += xs[i]->shape[axis];
    }
    return xg__record(out, &(xg_record){.op = XG_OP_none, .name = "concat",
                                        .backward = bw_concat, .inputs = xs,
                                        .n_inputs = n,
                                        .args = &(concat_args){axis},
                                        .args_size = sizeof(concat_args)});
}

xg_tensor *xg_stack(xg_tensor *const *xs, int n, int axis)
{
    if (n < 1 || !xs || n > 4096) {
        xg_set_error(XG_ERR_INVALID_ARG, "stack: needs 1 to 4096 tensors");
        return NULL;
    }
    xg_tensor **views = malloc((size_t)n * sizeof *views);
    if (!views) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "stack: out of host memory");
        return NULL;
    }
    xg_scope *scope = xg__composite_begin();
    bool ok = true;
    for (int i = 0; i < n && ok; i++)
        ok = (views[i] = xg_unsqueeze(xs[i], axis)) != NULL;
    xg_tensor *out = ok ? xg_concat(views, n, axis) : NULL;
    free(views);
    return xg__composite_end(scope, out);
}

xg_status xg_split(xg_tensor *x, int axis, const int64_t *sizes, int n,
                   xg_tensor **out)
{
    if (!xg__check_arg("split", 0, x, x ? x->dtype : XG_F32))
        return xg_last_status();
    int a = axis < 0 ? axis + x->ndim : axis;
    if (a < 0 || a >= x->ndim || n < 1 || !sizes || !out)
        return xg_set_error(XG_ERR_INVALID_ARG, "split: needs an axis in "
                            "range, n >= 1 sizes and room for n outputs");
    int64_t total = 0;
    for (int i = 0; i < n; i++) {
        if (sizes[i] < 1 || sizes[i] > x->shape[a] - total)
            return xg_set_error(XG_ERR_SHAPE, "split: sizes must be >= 1 and "
                                "add up to axis %d's size %lld", a,
                                (long long)x->shape[a]);
        total += sizes[i];
    }
    if (total != x->shape[a])
        return xg_set_error(XG_ERR_SHAPE, "split: the sizes add up to %lld, "
                            "axis %d has %lld", (long long)total, a,
                            (long long)x->shape[a]);
    int64_t start = 0;
    for (int i = 0; i < n; i++) {
        out[i] = xg_narrow(x, a, start, sizes[i]);
        if (!out[i]) {
            for (int j = 0; j < i; j++)
                xg_tensor_free(out[j]);
            return xg_last_status();
        }
        start += sizes[i];
    }
    return XG_OK;
}

xg_status xg_chunk(xg_tensor *x, int chunks, int axis, xg_tensor **out,
                   int *n_out)
{
    if (!xg__check_arg("chunk", 0, x, x ? x->dtype : XG_F32))
        return xg_last_status();
    int a = axis < 0 ? axis + x->ndim : axis;
    if (a < 0 || a >= x->ndim || chunks < 1 || !out || !n_out)
        return xg_set_error(XG_ERR_INVALID_ARG, "chunk: needs an axis in "
                            "range, chunks >= 1 and room for the outputs");
    /* torch.chunk: pieces of ceil(size / chunks), the last one smaller. */
    int64_t size = x->shape[a], step = (size + chunks - 1) / chunks;
    int n = (int)((size + step - 1) / step);
    int64_t sizes[XG_CHUNK_MAX];
    if (n > XG_CHUNK_MAX)
        return xg_set_error(XG_ERR_INVALID_ARG, "chunk: at most %d pieces",
                            XG_CHUNK_MAX);
    for (int i = 0; i < n; i++)
        sizes[i] = i < n - 1 ? step : size - step * (n - 1);
    xg_status st = xg_split(x, a, sizes, n, out);
    *n_out = st == XG_OK ? n : 0;
    return st;
}
