/* One launcher per op family: it passes the family's arguments to the op's
 * kernel and enqueues it. Kernel arguments follow one convention (see
 * kernels/common.cl): the call's input buffers, its output buffers, then
 * the family's scalars.
 */
#include "half_impl.h"
#include "ocl_impl.h"

#include <limits.h>

/* A reduction puts this many neighbouring columns in one work-group once
 * `inner` has that many, so that reads along `inner` are coalesced. */
#define OCL_REDUCE_COLUMNS 32

xg_status ocl_enqueue(ocl_device *d, cl_kernel k, const char *what,
                      const xg_buffer *const *bufs, int n_bufs,
                      const ocl_arg *args, int n_args, cl_uint dims,
                      const size_t *global, const size_t *local)
{
    cl_uint at = 0;
    cl_int err = CL_SUCCESS;
    for (int i = 0; err == CL_SUCCESS && i < n_bufs; i++)
        err = clSetKernelArg(k, at++, sizeof(cl_mem),
                             bufs[i] ? &bufs[i]->mem : NULL);
    for (int i = 0; err == CL_SUCCESS && i < n_args; i++)
        err = clSetKernelArg(k, at++, args[i].size, args[i].value);
    if (err == CL_SUCCESS)
        err = clEnqueueNDRangeKernel(d->queue, k, dims, NULL, global, local,
                                     0, NULL, NULL);
    return err == CL_SUCCESS ? XG_OK : ocl_fail(err, what);
}

/* The op's kernel for the call's element type: the 16-bit form where the
 * output is bf16 or f16 and the op has one (its inputs are then of the
 * same type: ocl_supports), else xg_<op>; *wg_size gets its largest
 * work-group size. */
static cl_kernel op_kernel(ocl_device *d, const xg_kernel_call *c,
                           size_t *wg_size)
{
    xg_dtype t = xg_op_table[c->op].n_out ? c->out[0].dtype : XG_F32;
    int half = t == XG_BF16 ? 0 : t == XG_F16 ? 1 : -1;
    if (half >= 0 && d->kernels16[half][c->op]) {
        *wg_size = d->wg_size16[half][c->op];
        return d->kernels16[half][c->op];
    }
    *wg_size = d->wg_size[c->op];
    return d->kernels[c->op];
}

/* Enqueues the op's kernel (op_kernel): the call's input buffers, its
 * output buffers and then `args`, over `global` work-items in groups of
 * `local`. */
static xg_status launch(ocl_device *d, const xg_kernel_call *c,
                        const ocl_arg *args, int n_args, cl_uint dims,
                        const size_t *global, const size_t *local)
{
    const xg_op_info *info = &xg_op_table[c->op];
    const xg_buffer *bufs[XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT];
    int n_bufs = 0;
    for (int i = 0; i < info->n_in; i++)
        bufs[n_bufs++] = c->in[i].buf;
    for (int i = 0; i < info->n_out; i++)
        bufs[n_bufs++] = c->out[i].buf;
    size_t wg;
    return ocl_enqueue(d, op_kernel(d, c, &wg), info->name, bufs, n_bufs,
                       args, n_args, dims, global, local);
}

/* Work-groups in one grid-stride launch, at most. A CPU device (PoCL) runs
 * a work-group's work-items one after another, each through its whole
 * grid-stride loop: with few groups every work-item strides across the
 * whole buffer and the lines it loads are evicted before its neighbour
 * uses them, so there a launch covers the items in one pass (up to a
 * bound that keeps the global size in range). */
static uint64_t grid_groups(const ocl_device *d)
{
    return d->cpu ? (uint64_t)1 << 20 : d->max_groups;
}

/* Enqueues a grid-stride kernel (XG_FOR_EACH) for `items` (>= 1) items. */
static xg_status launch_grid_stride(ocl_device *d, const xg_kernel_call *c,
                                    const ocl_arg *args, int n_args,
                                    int64_t items)
{
    size_t local;
    op_kernel(d, c, &local);
    uint64_t groups = ((uint64_t)items + local - 1) / local;
    if (groups > grid_groups(d))
        groups = grid_groups(d);
    size_t global = (size_t)groups * local;
    return launch(d, c, args, n_args, 1, &global, &local);
}

size_t ocl_pow2_at_least(int64_t want, size_t lo, size_t hi)
{
    size_t p = lo < hi ? lo : hi;
    while (p < hi && (int64_t)p < want)
        p *= 2;
    return p;
}

/* Right-aligns per-axis values in the eight lanes of a long8 (see
 * xg_strided_offsets in kernels/common.cl); leading lanes get `pad`. */
static cl_long8 lanes(const int64_t *v, int ndim, cl_long pad)
{
    cl_long8 out;
    for (int k = 0; k < 8; k++)
        out.s[k] = k < 8 - ndim ? pad : v[k - (8 - ndim)];
    return out;
}

/* UNARY, UNARY_BACKWARD, SCALAR and FILL kernels take (..., long n,
 * float s): s is the scalar operand or fill value, unused by the rest. */
static xg_status launch_elementwise(ocl_device *d, const xg_kernel_call *c,
                                    cl_long n, cl_float s)
{
    return launch_grid_stride(d, c, OCL_ARGS(OCL_ARG(n), OCL_ARG(s)), n);
}

xg_status ocl_run_elementwise(xg_backend_device *dev, const xg_kernel_call *c)
{
    return launch_elementwise(ocl_dev(dev), c, c->p.ew.n, c->p.ew.scalar);
}

/* Enqueues helper kernel h over `items` (>= 1) grid-stride items with the
 * buffers bufs[0 .. n_bufs-1], then `args`. */
static xg_status launch_helper(ocl_device *d, ocl_helper h, const char *what,
                               const xg_buffer *const *bufs, int n_bufs,
                               const ocl_arg *args, int n_args, int64_t items)
{
    size_t local = d->helper_wg_size[h];
    uint64_t groups = ((uint64_t)items + local - 1) / local;
    if (groups > d->max_groups)
        groups = d->max_groups;
    size_t global = (size_t)groups * local;
    return ocl_enqueue(d, d->helpers[h], what, bufs, n_bufs, args, n_args, 1,
                       &global, &local);
}

static bool is_16bit(xg_dtype t)
{
    return t == XG_BF16 || t == XG_F16;
}

/* 16-bit elements: xg_copy_16 and xg_fill_16 (kernels/half.cl), the fill
 * value rounded to the element type here as the CPU rounds it. */
xg_status ocl_run_fill(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    xg_dtype t = c->out[0].dtype;
    if (!is_16bit(t))
        return launch_elementwise(d, c, c->p.fill.n, c->p.fill.value);
    cl_long n = c->p.fill.n;
    if (c->op == XG_OP_copy) {
        const xg_buffer *bufs[2] = {c->in[0].buf, c->out[0].buf};
        return launch_helper(d, OCL_HELPER_copy_16, "copy", bufs, 2,
                             OCL_ARGS(OCL_ARG(n)), n);
    }
    cl_ushort bits = t == XG_BF16 ? xg__f32_to_bf16_1(c->p.fill.value)
                                  : xg__f32_to_f16_1(c->p.fill.value);
    const xg_buffer *bufs[1] = {c->out[0].buf};
    return launch_helper(d, OCL_HELPER_fill_16, "fill", bufs, 1,
                         OCL_ARGS(OCL_ARG(n), OCL_ARG(bits)), n);
}

/* xg_cast takes (in, out, long n, int from, int to): the dtypes as enum
 * xg_dtype's values. */
_Static_assert(XG_F32 == 0 && XG_I32 == 1 && XG_BF16 == 2 && XG_F16 == 3,
               "kernels/half.cl numbers the dtypes as enum xg_dtype does");
xg_status ocl_run_cast(xg_backend_device *dev, const xg_kernel_call *c)
{
    cl_long n = c->p.cast.n;
    cl_int from = (cl_int)c->in[0].dtype, to = (cl_int)c->out[0].dtype;
    return launch_grid_stride(ocl_dev(dev), c,
                              OCL_ARGS(OCL_ARG(n), OCL_ARG(from), OCL_ARG(to)),
                              n);
}

xg_status ocl_run_binary(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_binary_args *p = &c->p.binary;
    cl_long n = p->n;
    cl_long8 shape = lanes(p->shape, p->ndim, 1);
    cl_long8 stride_a = lanes(p->stride_a, p->ndim, 0);
    cl_long8 stride_b = lanes(p->stride_b, p->ndim, 0);
    return launch_grid_stride(ocl_dev(dev), c,
                              OCL_ARGS(OCL_ARG(n), OCL_ARG(shape),
                                       OCL_ARG(stride_a), OCL_ARG(stride_b)),
                              n);
}

/* Passes the index space and both sides' strides and offsets; 16-bit
 * elements go to xg_copy_strided_16 (kernels/half.cl), same arguments. */
xg_status ocl_run_strided(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_strided_args *p = &c->p.strided;
    cl_long n = p->n, in_offset = p->in_offset, out_offset = p->out_offset;
    cl_long8 shape = lanes(p->shape, p->ndim, 1);
    cl_long8 in_stride = lanes(p->in_stride, p->ndim, 0);
    cl_long8 out_stride = lanes(p->out_stride, p->ndim, 0);
    if (is_16bit(c->out[0].dtype)) {
        const xg_buffer *bufs[2] = {c->in[0].buf, c->out[0].buf};
        return launch_helper(ocl_dev(dev), OCL_HELPER_copy_strided_16,
                             "copy_strided", bufs, 2,
                             OCL_ARGS(OCL_ARG(n), OCL_ARG(shape),
                                      OCL_ARG(in_stride), OCL_ARG(out_stride),
                                      OCL_ARG(in_offset), OCL_ARG(out_offset)),
                             n);
    }
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(n), OCL_ARG(shape), OCL_ARG(in_stride),
                 OCL_ARG(out_stride), OCL_ARG(in_offset), OCL_ARG(out_offset)),
        n);
}

/* Work-groups of (nx, ny): nx columns, ny work-items splitting `dim`; see
 * kernels/reduce.cl. */
xg_status ocl_run_reduce(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    const xg_reduce_args *p = &c->p.reduce;
    size_t wg = d->wg_size[c->op];
    size_t nx = p->inner >= OCL_REDUCE_COLUMNS && wg >= 2 * OCL_REDUCE_COLUMNS
                    ? OCL_REDUCE_COLUMNS
                    : 1;
    size_t ny = ocl_pow2_at_least(p->dim, OCL_MIN_GROUP / nx, wg / nx);
    size_t local[2] = {nx, ny};
    size_t global[2] = {(size_t)(p->inner + nx - 1) / nx * nx,
                        (size_t)p->outer * ny};
    cl_long outer = p->outer, dim = p->dim, inner = p->inner;
    return launch(d, c,
                  OCL_ARGS(OCL_ARG(outer), OCL_ARG(dim), OCL_ARG(inner)), 2,
                  global, local);
}

xg_status ocl_run_reduce_backward(xg_backend_device *dev,
                                  const xg_kernel_call *c)
{
    const xg_reduce_args *p = &c->p.reduce;
    cl_long outer = p->outer, dim = p->dim, inner = p->inner;
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(outer), OCL_ARG(dim), OCL_ARG(inner)),
        outer * dim * inner);
}

/* One work-group per row, sized to the row; (rows, cols, ignore_index). */
xg_status ocl_run_rows(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    cl_long rows = c->p.rows.rows, cols = c->p.rows.cols;
    cl_int ignore_index = c->p.rows.ignore_index;
    size_t local = ocl_pow2_at_least(cols, OCL_MIN_GROUP, d->wg_size[c->op]);
    size_t global = (size_t)rows * local;
    return launch(d, c,
                  OCL_ARGS(OCL_ARG(rows), OCL_ARG(cols),
                           OCL_ARG(ignore_index)),
                  1, &global, &local);
}

/* One work-item per Philox block of four values. */
xg_status ocl_run_rng(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_rng_args *p = &c->p.rng;
    cl_long n = p->n;
    cl_ulong seed = p->seed, offset = p->offset;
    cl_float a = p->a, b = p->b;
    return launch_grid_stride(ocl_dev(dev), c,
                              OCL_ARGS(OCL_ARG(n), OCL_ARG(seed),
                                       OCL_ARG(offset), OCL_ARG(a), OCL_ARG(b)),
                              (n + 3) / 4);
}

xg_status ocl_run_adam(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_adam_args *p = &c->p.adam;
    cl_long n = p->n;
    cl_float lr = p->lr, beta1 = p->beta1, beta2 = p->beta2, eps = p->eps;
    cl_float weight_decay = p->weight_decay, bias1 = p->bias1;
    cl_float bias2 = p->bias2;
    cl_int decoupled = p->decoupled;
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(n), OCL_ARG(lr), OCL_ARG(beta1), OCL_ARG(beta2),
                 OCL_ARG(eps), OCL_ARG(weight_decay), OCL_ARG(bias1),
                 OCL_ARG(bias2), OCL_ARG(decoupled)),
        n);
}

xg_status ocl_run_sgd(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_sgd_args *p = &c->p.sgd;
    cl_long n = p->n;
    cl_float lr = p->lr, momentum = p->momentum, dampening = p->dampening;
    cl_float weight_decay = p->weight_decay;
    cl_int nesterov = p->nesterov, first = p->first;
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(n), OCL_ARG(lr), OCL_ARG(momentum),
                 OCL_ARG(dampening), OCL_ARG(weight_decay), OCL_ARG(nesterov),
                 OCL_ARG(first)),
        n);
}

/* One work-item per output element (forward) or per input element
 * (backward: each gathers from the windows that cover it). */
xg_status ocl_run_pool(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_pool_args *p = &c->p.pool;
    cl_long n = p->n, ch = p->c, h = p->h, w = p->w, oh = p->oh, ow = p->ow;
    cl_int kh = p->kh, kw = p->kw, stride_h = p->stride_h;
    cl_int stride_w = p->stride_w, pad_h = p->pad_h, pad_w = p->pad_w;
    int backward = c->op == XG_OP_max_pool2d_backward ||
                   c->op == XG_OP_avg_pool2d_backward;
    if (h * w > INT_MAX) /* the kernels index within a plane with int */
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "opencl: %s: planes must be below 2^31 pixels",
                            xg_op_table[c->op].name);
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(n), OCL_ARG(ch), OCL_ARG(h), OCL_ARG(w), OCL_ARG(oh),
                 OCL_ARG(ow), OCL_ARG(kh), OCL_ARG(kw), OCL_ARG(stride_h),
                 OCL_ARG(stride_w), OCL_ARG(pad_h), OCL_ARG(pad_w)),
        n * ch * (backward ? h * w : oh * ow));
}

/* One work-item per Philox block, as in the RNG family. The kernel gets
 * the scale 1 / (1 - p) rounded here, in C's float arithmetic. */
xg_status ocl_run_dropout(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_dropout_args *p = &c->p.dropout;
    cl_long n = p->n;
    cl_ulong seed = p->seed, offset = p->offset;
    cl_float prob = p->p, scale = 1.0f / (1.0f - p->p);
    return launch_grid_stride(ocl_dev(dev), c,
                              OCL_ARGS(OCL_ARG(n), OCL_ARG(seed),
                                       OCL_ARG(offset), OCL_ARG(prob),
                                       OCL_ARG(scale)),
                              (n + 3) / 4);
}

/* Forward: one work-item per output element; backward: one per line of dx
 * (see kernels/index.cl). */
xg_status ocl_run_index(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_index_args *p = &c->p.index;
    cl_int ndim = p->ndim, axis = p->axis;
    cl_long n = p->n;
    cl_long8 x_shape = lanes(p->x_shape, p->ndim, 1);
    cl_long8 shape = lanes(p->shape, p->ndim, 1);
    cl_long8 index_stride = lanes(p->index_stride, p->ndim, 0);
    bool backward = c->op == XG_OP_index_select_backward ||
                    c->op == XG_OP_gather_backward;
    return launch_grid_stride(
        ocl_dev(dev), c,
        OCL_ARGS(OCL_ARG(ndim), OCL_ARG(axis), OCL_ARG(n), OCL_ARG(x_shape),
                 OCL_ARG(shape), OCL_ARG(index_stride)),
        backward ? n / p->x_shape[p->axis] : n);
}

xg_status ocl_run_where(xg_backend_device *dev, const xg_kernel_call *c)
{
    const xg_where_args *p = &c->p.where;
    cl_long n = p->n;
    cl_long8 shape = lanes(p->shape, p->ndim, 1);
    cl_long8 stride0 = lanes(p->stride[0], p->ndim, 0);
    cl_long8 stride1 = lanes(p->stride[1], p->ndim, 0);
    cl_long8 stride2 = lanes(p->stride[2], p->ndim, 0);
    cl_float value = p->value;
    return launch_grid_stride(ocl_dev(dev), c,
                              OCL_ARGS(OCL_ARG(n), OCL_ARG(shape),
                                       OCL_ARG(stride0), OCL_ARG(stride1),
                                       OCL_ARG(stride2), OCL_ARG(value)),
                              n);
}

/* Work-items per work-group of the attention kernels: one tile of keys (or
 * queries) at a time, and the head size in steps of this many. */
#define OCL_ATTENTION_WG 64

/* One work-group per row: query rows for attention and its dq pass, key
 * rows for the dk/dv pass (see kernels/attention.cl). */
xg_status ocl_run_attention(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    const xg_attention_args *a = &c->p.attention;
    cl_long bh = a->bh, tq = a->tq, tk = a->tk, hd = a->d;
    cl_long off = a->causal_offset;
    cl_int causal = a->causal;
    cl_float scale = a->scale, p = a->p;
    cl_float keep = a->p > 0.0f ? 1.0f / (1.0f - a->p) : 1.0f;
    cl_ulong seed = a->seed, offset = a->offset;
    size_t local = d->wg_size[c->op] < OCL_ATTENTION_WG ? d->wg_size[c->op]
                                                        : OCL_ATTENTION_WG;
    int64_t rows = a->bh * (c->op == XG_OP_attention_backward_kv ? a->tk
                                                                 : a->tq);
    size_t global = (size_t)rows * local;
    return launch(d, c,
                  OCL_ARGS(OCL_ARG(bh), OCL_ARG(tq), OCL_ARG(tk), OCL_ARG(hd),
                           OCL_ARG(scale), OCL_ARG(causal), OCL_ARG(off),
                           OCL_ARG(p), OCL_ARG(seed), OCL_ARG(offset),
                           OCL_ARG(keep)),
                  1, &global, &local);
}

/* layer_norm and its dx: one work-group per row, sized to the row, as the
 * ROWS family; the column sums: one work-item per column. */
xg_status ocl_run_norm(xg_backend_device *dev, const xg_kernel_call *c)
{
    ocl_device *d = ocl_dev(dev);
    const xg_norm_args *p = &c->p.norm;
    cl_long rows = p->rows, cols = p->cols;
    cl_float eps = p->eps;
    cl_int has_weight = p->has_weight != 0, has_bias = p->has_bias != 0;
    if (c->op == XG_OP_layer_norm_backward_affine)
        return launch_grid_stride(
            d, c,
            OCL_ARGS(OCL_ARG(rows), OCL_ARG(cols), OCL_ARG(eps),
                     OCL_ARG(has_weight), OCL_ARG(has_bias)),
            cols);
    size_t local = ocl_pow2_at_least(cols, OCL_MIN_GROUP, d->wg_size[c->op]);
    size_t global = (size_t)rows * local;
    return launch(d, c,
                  OCL_ARGS(OCL_ARG(rows), OCL_ARG(cols), OCL_ARG(eps),
                           OCL_ARG(has_weight), OCL_ARG(has_bias)),
                  1, &global, &local);
}
