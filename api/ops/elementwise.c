/* Elementwise ops: unary, scalar and broadcasting binary, with their
 * backward rules. */
#include "ops/ops_impl.h"

/* ---- launching -------------------------------------------------------- */

/* A new tensor like `x` (same device, dtype and shape). */
static xg_tensor *new_like(const xg_tensor *x, const char *who)
{
    return xg__tensor_new(x->storage->dev, x->dtype, x->shape, x->ndim, who);
}

/* Launches `call` on out's device, freeing `out` on failure. */
static xg_tensor *finish(xg_tensor *out, xg_kernel_call *call)
{
    if (out && xg__launch(out->storage->dev, call) != XG_OK) {
        xg_tensor_free(out);
        return NULL;
    }
    return out;
}

/* ---- unary ops ----------------------------------------------------------- */

/* Runs a UNARY or SCALAR kernel (`s`: SCALAR's operand) into a new tensor. */
static xg_tensor *unary_kernel(xg_op op, xg_tensor *x, float s)
{
    const char *name = xg_op_table[op].name;
    if (!xg__check_float(name, 0, x))
        return NULL;
    xg_tensor *y = new_like(x, name);
    xg_kernel_call call = {.op = op, .in = {xg__arg(x)}};
    if (y)
        call.out[0] = xg__arg(y);
    call.p.ew = (xg_ew_args){.n = x->numel, .scalar = s};
    return finish(y, &call);
}

xg_tensor *xg__unary_backward(xg_op op, xg_tensor *x, xg_tensor *g)
{
    const char *name = xg_op_table[op].name;
    if (!xg__check_float(name, 0, x) || !xg__check_arg(name, 1, g, x->dtype))
        return NULL;
    xg_tensor *dx = new_like(x, name);
    xg_kernel_call call = {.op = op, .in = {xg__arg(x), xg__arg(g)}};
    if (dx)
        call.out[0] = xg__arg(dx);
    call.p.ew.n = x->numel;
    return finish(dx, &call);
}

/* Backward rules. y is node->saved[0] (the output) where the rule needs it. */
static xg_status bw_neg(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    (void)n;
    gi[0] = xg_neg(g);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_status bw_exp(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg_mul(g, n->saved[0]);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_status bw_log(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg_div(g, n->inputs[0]);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_status bw_sqrt(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg_div(g, xg_mul_scalar(n->saved[0], 2.0f));
    return gi[0] ? XG_OK : xg_last_status();
}

/* Ops whose gradient is a kernel of its own, the BACKWARD column of ops.def
 * (relu -> relu_backward): dx = backward(x, g). */
static xg_status bw_by_kernel(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_op op = xg_op_table[n->op].backward;
    gi[0] = xg__unary_backward(op, n->inputs[0], g);
    return gi[0] ? XG_OK : xg_last_status();
}

/* sigmoid' = y (1 - y) */
static xg_status bw_sigmoid(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *y = n->saved[0];
    gi[0] = xg_mul(g, xg_mul(y, xg_add_scalar(xg_neg(y), 1.0f)));
    return gi[0] ? XG_OK : xg_last_status();
}

/* tanh' = 1 - y^2 */
static xg_status bw_tanh(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *y = n->saved[0];
    gi[0] = xg_mul(g, xg_add_scalar(xg_neg(xg_mul(y, y)), 1.0f));
    return gi[0] ? XG_OK : xg_last_status();
}

/* relu' from the output: y = relu(x) > 0 exactly where x > 0, so the
 * relu_backward kernel (g where its first operand > 0, else 0) gives the
 * same bits from y as from x, and x need not be kept. */
static xg_status bw_relu(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg__unary_backward(XG_OP_relu_backward, n->saved[0], g);
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_tensor *unary(xg_op op, xg_tensor *x, xg_backward_fn bw,
                        bool saves_output)
{
    return xg__record(unary_kernel(op, x, 0.0f),
                      &(xg_record){.op = op, .backward = bw, .inputs = &x,
                                   .n_inputs = 1, .save_output = saves_output});
}

xg_tensor *xg_neg(xg_tensor *x) { return unary(XG_OP_neg, x, bw_neg, false); }
xg_tensor *xg_exp(xg_tensor *x) { return unary(XG_OP_exp, x, bw_exp, true); }
xg_tensor *xg_log(xg_tensor *x) { return unary(XG_OP_log, x, bw_log, false); }
xg_tensor *xg_sqrt(xg_tensor *x) { return unary(XG_OP_sqrt, x, bw_sqrt, true); }
xg_tensor *xg_relu(xg_tensor *x)
{
    return xg__record(unary_kernel(XG_OP_relu, x, 0.0f),
                      &(xg_record){.op = XG_OP_relu, .backward = bw_relu,
                                   .inputs = &x, .n_inputs = 1,
                                   .values_unused = 1u, .save_output = true});
}
xg_tensor *xg_gelu(xg_tensor *x) { return unary(XG_OP_gelu, x, bw_by_kernel, false); }
xg_tensor *xg_silu(xg_tensor *x) { return unary(XG_OP_silu, x, bw_by_kernel, false); }
xg_tensor *xg_gelu_tanh(xg_tensor *x) { return unary(XG_OP_gelu_tanh, x, bw_by_kernel, false); }
xg_tensor *xg_tanh(xg_tensor *x) { return unary(XG_OP_tanh, x, bw_tanh, true); }
xg_tensor *xg_sigmoid(xg_tensor *x)
{
    return unary(XG_OP_sigmoid, x, bw_sigmoid, true);
}

/* ---- scalar ops ------------------------------------------------------------ */

/* d(x + s) = d(x - s) = g; d(x * s) = g * s; d(x / s) = g / s. The node's
 * args are the kernel's xg_ew_args. */
static xg_status bw_scalar(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const xg_ew_args *a = n->args;
    switch (n->op) {
    case XG_OP_mul_scalar: gi[0] = xg_mul_scalar(g, a->scalar); break;
    case XG_OP_div_scalar: gi[0] = xg_div_scalar(g, a->scalar); break;
    default: gi[0] = g; break;
    }
    return gi[0] ? XG_OK : xg_last_status();
}

static xg_tensor *scalar_op(xg_op op, xg_tensor *x, float s)
{
    xg_ew_args a = {.n = x ? x->numel : 0, .scalar = s};
    return xg__record(unary_kernel(op, x, s),
                      &(xg_record){.op = op, .backward = bw_scalar,
                                   .inputs = &x, .n_inputs = 1,
                                   .args = &a, .args_size = sizeof a});
}

xg_tensor *xg_add_scalar(xg_tensor *a, float s) { return scalar_op(XG_OP_add_scalar, a, s); }
xg_tensor *xg_sub_scalar(xg_tensor *a, float s) { return scalar_op(XG_OP_sub_scalar, a, s); }
xg_tensor *xg_mul_scalar(xg_tensor *a, float s) { return scalar_op(XG_OP_mul_scalar, a, s); }
xg_tensor *xg_div_scalar(xg_tensor *a, float s) { return scalar_op(XG_OP_div_scalar, a, s); }

/* ---- broadcasting binary ops --------------------------------------------- */

void xg__broadcast_strides(const xg_tensor *t, const int64_t *shape,
                           int ndim, int64_t *strides)
{
    int64_t stride = 1;
    for (int i = ndim - 1; i >= 0; i--) {
        int it = t->ndim - ndim + i;
        bool real = it >= 0 && t->shape[it] == shape[i] && shape[i] != 1;
        strides[i] = real ? stride : 0;
        if (it >= 0)
            stride *= t->shape[it];
    }
}

/* Drops size-1 axes and merges neighbours that are contiguous in both
 * inputs, so kernels see the fewest axes. */
static void merge_axes(xg_binary_args *p)
{
    int nd = 0;
    for (int i = 0; i < p->ndim; i++) {
        if (p->shape[i] == 1)
            continue;
        if (nd > 0 && p->stride_a[nd - 1] == p->stride_a[i] * p->shape[i] &&
            p->stride_b[nd - 1] == p->stride_b[i] * p->shape[i]) {
            p->shape[nd - 1] *= p->shape[i];
            p->stride_a[nd - 1] = p->stride_a[i];
            p->stride_b[nd - 1] = p->stride_b[i];
            continue;
        }
        p->shape[nd] = p->shape[i];
        p->stride_a[nd] = p->stride_a[i];
        p->stride_b[nd] = p->stride_b[i];
        nd++;
    }
    if (nd == 0) {
        p->shape[0] = 1;
        p->stride_a[0] = p->stride_b[0] = 0;
        nd = 1;
    }
    p->ndim = nd;
}

/* c = a (op) b, both broadcast to `shape`. */
static xg_tensor *binary_kernel(xg_op op, xg_tensor *a, xg_tensor *b,
                                const int64_t *shape, int ndim)
{
    const char *name = xg_op_table[op].name;
    xg_tensor *c = xg__tensor_new(a->storage->dev, a->dtype, shape, ndim,
                                  name);
    if (!c)
        return NULL;
    xg_kernel_call call = {.op = op, .in = {xg__arg(a), xg__arg(b)},
                           .out = {xg__arg(c)}};
    xg_binary_args *p = &call.p.binary;
    p->ndim = ndim;
    p->n = c->numel;
    for (int i = 0; i < ndim; i++)
        p->shape[i] = shape[i];
    xg__broadcast_strides(a, shape, ndim, p->stride_a);
    xg__broadcast_strides(b, shape, ndim, p->stride_b);
    merge_axes(p);
    return finish(c, &call);
}

static xg_status bw_binary(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *a = n->inputs[0], *b = n->inputs[1];
    xg_tensor *ga = g, *gb = g;
    switch (n->op) {
    case XG_OP_sub: gb = xg_neg(g); break;
    case XG_OP_mul: ga = xg_mul(g, b); gb = xg_mul(g, a); break;
    case XG_OP_div: /* d/da = g / b; d/db = -g a / b^2 */
        ga = xg_div(g, b);
        gb = xg_neg(xg_div(xg_mul(ga, a), b));
        break;
    default: break;
    }
    if (a->requires_grad)
        gi[0] = xg__sum_to(ga, a->shape, a->ndim);
    if (b->requires_grad)
        gi[1] = xg__sum_to(gb, b->shape, b->ndim);
    if ((a->requires_grad && !gi[0]) || (b->requires_grad && !gi[1]))
        return xg_last_status();
    return XG_OK;
}

static xg_tensor *binary(xg_op op, xg_tensor *a, xg_tensor *b)
{
    const char *name = xg_op_table[op].name;
    if (!xg__check_float(name, 0, a) || !xg__check_float(name, 1, b) ||
        !xg__check_same_device(name, a, b))
        return NULL;
    if (a->dtype != b->dtype) { /* promoted to f32, as PyTorch does */
        xg_scope *scope = xg__composite_begin();
        xg_tensor *wa = xg_to_dtype(a, XG_F32), *wb = xg_to_dtype(b, XG_F32);
        return xg__composite_end(scope, wa && wb ? binary(op, wa, wb) : NULL);
    }
    int64_t shape[XG_MAX_DIMS];
    int ndim;
    if (!xg__broadcast_shape(name, a, b, shape, &ndim))
        return NULL;
    xg_tensor *in[2] = {a, b};
    /* add's and sub's rules read only the inputs' shapes */
    bool shapes_only = op == XG_OP_add || op == XG_OP_sub;
    return xg__record(binary_kernel(op, a, b, shape, ndim),
                      &(xg_record){.op = op, .backward = bw_binary,
                                   .inputs = in, .n_inputs = 2,
                                   .values_unused = shapes_only ? 3u : 0u});
}

xg_tensor *xg_add(xg_tensor *a, xg_tensor *b) { return binary(XG_OP_add, a, b); }
xg_tensor *xg_sub(xg_tensor *a, xg_tensor *b) { return binary(XG_OP_sub, a, b); }
xg_tensor *xg_mul(xg_tensor *a, xg_tensor *b) { return binary(XG_OP_mul, a, b); }
xg_tensor *xg_div(xg_tensor *a, xg_tensor *b) { return binary(XG_OP_div, a, b); }

xg_tensor *xg__same_value(xg_tensor *a, xg_tensor *b)
{
    const char *name = "same_value";
    int64_t shape[XG_MAX_DIMS];
    int ndim;
    if (!xg__check_float(name, 0, a) || !xg__check_arg(name, 1, b, a->dtype) ||
        !xg__check_same_device(name, a, b) ||
        !xg__broadcast_shape(name, a, b, shape, &ndim))
        return NULL;
    return binary_kernel(XG_OP_same_value, a, b, shape, ndim);
}

static xg_status bw_expand(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    gi[0] = xg__sum_to(g, n->inputs[0]->shape, n->inputs[0]->ndim);
    return gi[0] ? XG_OK : xg_last_status();
}

xg_tensor *xg__expand(xg_tensor *src, const int64_t *shape, int ndim)
{
    if (!xg__check_float("expand", 0, src))
        return NULL;
    xg_tensor *zero = xg__fill_dtype(src->storage->dev, src->dtype, NULL, 0,
                                     0.0f, "expand");
    if (!zero)
        return NULL;
    xg_tensor *out = binary_kernel(XG_OP_add, src, zero, shape, ndim);
    xg_tensor_free(zero);
    return xg__record(out, &(xg_record){.op = XG_OP_none, .name = "expand",
                                        .backward = bw_expand, .inputs = &src,
                                        .n_inputs = 1});
}
