/* Index and selection kernels: index_select and gather with their
 * scatter-add backward (struct xg_index_args), where and masked_fill
 * (struct xg_where_args).
 *
 * The backward gives each line of dx (its elements that share every
 * coordinate but the axis) to one thread, which zeroes the line and then
 * adds the line of g that feeds it in increasing position along the axis.
 * Every element's sum is therefore ((0 + g_first) + ...) + g_last in index
 * order whatever the thread count, the order the GPU backends use too. */
#include "cpu_impl.h"

#include <assert.h>

/* Contiguous element strides of shape[0..ndim-1]. */
static void contiguous_strides(const int64_t *shape, int ndim,
                               int64_t *strides)
{
    int64_t s = 1;
    for (int k = ndim - 1; k >= 0; k--) {
        strides[k] = s;
        s *= shape[k];
    }
}

/* ---- INDEX: forward ------------------------------------------------------- */

static void index_forward_range(const void *ctx, int64_t begin, int64_t end,
                                int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_index_args *p = &c->p.index;
    const float *x = cpu_f32(c->in[0].buf);
    const int32_t *index = cpu_i32(c->in[1].buf);
    float *out = cpu_f32(c->out[0].buf);
    int64_t xs[XG_MAX_DIMS];
    contiguous_strides(p->x_shape, p->ndim, xs);
    for (int64_t e = begin; e < end; e++) {
        int64_t rest = e, xo = 0, io = 0;
        for (int k = p->ndim - 1; k >= 0; k--) {
            int64_t ck = rest % p->shape[k];
            rest /= p->shape[k];
            io += ck * p->index_stride[k];
            if (k != p->axis)
                xo += ck * xs[k];
        }
        out[e] = x[xo + (int64_t)index[io] * xs[p->axis]];
    }
}

/* ---- INDEX: backward, one line of dx per item ----------------------------- */

/* Where line `line` of dx (numbered over x_shape without the axis,
 * row-major) starts in dx, g and the index; false when the selection has
 * no such line (gather with a smaller index). */
typedef struct index_line {
    int64_t dx, g, index;
    bool inside;
} index_line;

static index_line line_start(const xg_index_args *p, const int64_t *xs,
                             const int64_t *gs, int64_t line)
{
    index_line l = {0, 0, 0, true};
    for (int k = p->ndim - 1; k >= 0; k--) {
        if (k == p->axis)
            continue;
        int64_t ck = line % p->x_shape[k];
        line /= p->x_shape[k];
        l.dx += ck * xs[k];
        l.g += ck * gs[k];
        l.index += ck * p->index_stride[k];
        l.inside = l.inside && ck < p->shape[k];
    }
    return l;
}

/* Lines [begin, end). For index_select with the axis before the last, the
 * lines that differ only in their last coordinate are neighbours in dx and
 * in g and read the same index entries: such a run is zeroed and summed
 * one contiguous segment per row of dx (the memory order, instead of one
 * strided line at a time), each element still getting its contributions
 * in increasing position along the axis. */
static void index_backward_range(const void *ctx, int64_t begin, int64_t end,
                                 int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_index_args *p = &c->p.index;
    const float *g = cpu_f32(c->in[0].buf);
    const int32_t *index = cpu_i32(c->in[1].buf);
    float *dx = cpu_f32(c->out[0].buf);
    int64_t xs[XG_MAX_DIMS], gs[XG_MAX_DIMS];
    contiguous_strides(p->x_shape, p->ndim, xs);
    contiguous_strides(p->shape, p->ndim, gs);
    int a = p->axis, last = p->ndim - 1;
    bool runs = c->op == XG_OP_index_select_backward && a != last;
    for (int64_t line = begin; line < end;) {
        index_line l = line_start(p, xs, gs, line);
        float *d = dx + l.dx;
        int64_t len = 1;
        if (runs) {
            len = p->x_shape[last] - line % p->x_shape[last];
            len = len < end - line ? len : end - line;
        }
        line += len;
        for (int64_t i = 0; i < p->x_shape[a]; i++)
            for (int64_t k = 0; k < len; k++)
                d[i * xs[a] + k] = 0.0f;
        if (!l.inside)
            continue;
        for (int64_t j = 0; j < p->shape[a]; j++) {
            float *dj = d + (int64_t)index[l.index + j * p->index_stride[a]] *
                                xs[a];
            const float *gj = g + l.g + j * gs[a];
            for (int64_t k = 0; k < len; k++)
                dj[k] += gj[k];
        }
    }
}

xg_status cpu_index(xg_backend_device *dev, const xg_kernel_call *call)
{
    const xg_index_args *p = &call->p.index;
    cpu_pool *pool = cpu_dev(dev)->pool;
    switch (call->op) {
    case XG_OP_index_select:
    case XG_OP_gather:
        cpu_parallel_elements(pool, p->n, CPU_COST_SIMPLE * 4,
                              index_forward_range, call);
        break;
    case XG_OP_index_select_backward:
    case XG_OP_gather_backward: {
        int64_t dim = p->x_shape[p->axis];
        /* ranges of 16 lines: neighbouring lines may share cache lines */
        cpu_parallel_for(pool, p->n / dim, dim + p->shape[p->axis], 16,
                         index_backward_range, call);
        break;
    }
    default: assert(!"not an index op");
    }
    return XG_OK;
}

/* ---- WHERE ---------------------------------------------------------------- */

/* Output elements [begin, end), one row (along the last axis) at a time. */
static void where_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_where_args *p = &c->p.where;
    bool where = c->op == XG_OP_where;
    const float *a = cpu_f32(c->in[0].buf);
    const float *b = where ? cpu_f32(c->in[1].buf) : NULL;
    const int32_t *mask = cpu_i32(c->in[where ? 2 : 1].buf);
    const int64_t *sm = p->stride[where ? 2 : 1];
    float *out = cpu_f32(c->out[0].buf);
    int last = p->ndim - 1;
    for (int64_t pos = begin; pos < end;) {
        int64_t rest = pos, oa = 0, ob = 0, om = 0, col = 0;
        for (int k = last; k >= 0; k--) {
            int64_t ck = rest % p->shape[k];
            rest /= p->shape[k];
            col = k == last ? ck : col;
            oa += ck * p->stride[0][k];
            ob += ck * p->stride[1][k];
            om += ck * sm[k];
        }
        int64_t len = p->shape[last] - col;
        len = len < end - pos ? len : end - pos;
        for (int64_t i = 0; i < len; i++) {
            bool m = mask[om + i * sm[last]] != 0;
            float x = a[oa + i * p->stride[0][last]];
            if (where)
                out[pos + i] = m ? x : b[ob + i * p->stride[1][last]];
            else
                out[pos + i] = m ? p->value : x;
        }
        pos += len;
    }
}

xg_status cpu_where(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.where.n,
                          CPU_COST_SIMPLE, where_range, call);
    return XG_OK;
}
