/* Dtype conversion: xg_to_dtype, the front-end of the cast kernel. */
#include "ops/ops_impl.h"

/* The values of x converted to `dtype` (no graph). */
static xg_tensor *cast_values(xg_tensor *x, xg_dtype dtype)
{
    xg_device *dev = x->storage->dev;
    xg_tensor *y = xg__tensor_new(dev, dtype, x->shape, x->ndim, "to_dtype");
    if (!y)
        return NULL;
    xg_kernel_call call = {.op = XG_OP_cast, .in = {xg__arg(x)},
                           .out = {xg__arg(y)}};
    call.p.cast.n = x->numel;
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(y);
        return NULL;
    }
    return y;
}

/* The gradient goes back to the input's dtype. */
static xg_status bw_cast(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg_to_dtype(g, n->inputs[0]->dtype);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg_to_dtype(xg_tensor *t, xg_dtype dtype)
{
    if (!xg__check_arg("to_dtype", 0, t, t ? t->dtype : XG_F32))
        return NULL;
    if ((unsigned)dtype >= XG_DTYPE_COUNT) {
        xg_set_error(XG_ERR_INVALID_ARG, "to_dtype: unknown dtype %d",
                     (int)dtype);
        return NULL;
    }
    if (dtype == t->dtype)
        return xg_contiguous(t);
    xg_tensor *y = cast_values(t, dtype);
    /* Only float -> float carries a gradient. */
    if (!xg_dtype_is_float(dtype) || !xg_dtype_is_float(t->dtype))
        return y;
    return xg__record(y, &(xg_record){.op = XG_OP_cast, .name = "to_dtype",
                                      .backward = bw_cast, .inputs = &t,
                                      .n_inputs = 1, .values_unused = 1});
}
