/* Reductions over the middle axis of an [outer, dim, inner] view: sum, max,
 * argmax, and the backward of max.
 *
 * Summation order (the reference's, and independent of the thread count):
 * - inner == 1 (contiguous rows): pairwise summation with 8-lane blocks of
 *   at most PAIRWISE_BLOCK elements at the leaves, as NumPy does.
 *   reference: Higham, "The accuracy of floating point summation", SIAM J.
 *   Sci. Comput. 14(4), 1993.
 * - inner > 1: for each output, blocks of SUM_BLOCK consecutive d are summed
 *   in order, and the block sums are added in order.
 * max/argmax return the first index of the maximum; if a NaN occurs, the
 * result is NaN and the index that of the first NaN (as PyTorch). */
#include "cpu_impl.h"

#include <string.h>

enum {
    PAIRWISE_BLOCK = 128, /* leaf size of the pairwise tree (multiple of 8) */
    SUM_BLOCK = 128,      /* d per partial sum when inner > 1 */
    SUM_TILE = 64,        /* inner elements per task when inner > 1 */
    TREE_MAX_DEPTH = 6,   /* 64 parallel leaves at most */
};

/* ---- sum ---------------------------------------------------------------- */

/* Sum of n <= PAIRWISE_BLOCK floats in 8 interleaved lanes, then the lanes
 * pairwise. */
static float sum_block(const float *x, int64_t n)
{
    float lane[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += x[i + j];
    for (int j = 0; i < n; i++, j++)
        lane[j] += x[i];
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* Size of the left half of a pairwise node of n elements. */
static int64_t pairwise_split(int64_t n) { return (n / 2 + 7) / 8 * 8; }

static float sum_pairwise(const float *x, int64_t n)
{
    if (n <= PAIRWISE_BLOCK)
        return sum_block(x, n);
    int64_t h = pairwise_split(n);
    return sum_pairwise(x, h) + sum_pairwise(x + h, n - h);
}

/* One long row in parallel: the 2^depth nodes at `depth` of the pairwise
 * tree are summed as parallel tasks, then combined level by level exactly as
 * sum_pairwise would, so the result does not depend on the thread count. */
typedef struct sum_tree {
    const float *x;
    int depth;
    int64_t start[1 << TREE_MAX_DEPTH], len[1 << TREE_MAX_DEPTH];
    float *node; /* one sum per node of the current level */
} sum_tree;

static void tree_leaves(sum_tree *t, int64_t start, int64_t n, int depth,
                        int *leaf)
{
    if (depth == t->depth) {
        t->start[*leaf] = start;
        t->len[*leaf] = n;
        (*leaf)++;
        return;
    }
    int64_t h = pairwise_split(n);
    tree_leaves(t, start, h, depth + 1, leaf);
    tree_leaves(t, start + h, n - h, depth + 1, leaf);
}

static void tree_range(const void *ctx, int64_t begin, int64_t end, int th)
{
    (void)th;
    const sum_tree *t = ctx;
    for (int64_t i = begin; i < end; i++)
        t->node[i] = sum_pairwise(t->x + t->start[i], t->len[i]);
}

static float sum_row_parallel(cpu_pool *pool, const float *x, int64_t n)
{
    float node[1 << TREE_MAX_DEPTH];
    sum_tree t = {.x = x, .node = node};
    /* Only as deep as keeps every node above the leaf size, so that each of
     * them splits in sum_pairwise too. */
    while (t.depth < TREE_MAX_DEPTH &&
           (1 << t.depth) < cpu_pool_threads(pool) &&
           n >> (t.depth + 1) > 2 * PAIRWISE_BLOCK)
        t.depth++;
    int leaves = 0;
    tree_leaves(&t, 0, n, 0, &leaves);
    cpu_parallel_for(pool, leaves, n / leaves, 1, tree_range, &t);
    for (int width = leaves / 2; width >= 1; width /= 2)
        for (int i = 0; i < width; i++)
            node[i] = node[2 * i] + node[2 * i + 1];
    return node[0];
}

/* Outputs [begin, end) of a sum with inner == 1: one pairwise sum per row. */
static void sum_rows_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    int64_t dim = c->p.reduce.dim;
    const float *x = cpu_f32(c->in[0].buf);
    float *out = cpu_f32(c->out[0].buf);
    for (int64_t o = begin; o < end; o++)
        out[o] = sum_pairwise(x + o * dim, dim);
}

/* Tiles [begin, end) of a sum with inner > 1; tile q covers outer index
 * q / tiles and up to SUM_TILE inner indices from (q % tiles) * SUM_TILE. */
static void sum_tiles_range(const void *ctx, int64_t begin, int64_t end,
                            int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_reduce_args *r = &c->p.reduce;
    int64_t tiles = (r->inner + SUM_TILE - 1) / SUM_TILE;
    for (int64_t q = begin; q < end; q++) {
        int64_t o = q / tiles, i0 = q % tiles * SUM_TILE;
        int64_t w = r->inner - i0 < SUM_TILE ? r->inner - i0 : SUM_TILE;
        const float *x = cpu_f32(c->in[0].buf) + o * r->dim * r->inner + i0;
        float acc[SUM_TILE] = {0}, part[SUM_TILE];
        for (int64_t d0 = 0; d0 < r->dim; d0 += SUM_BLOCK) {
            int64_t d1 = d0 + SUM_BLOCK < r->dim ? d0 + SUM_BLOCK : r->dim;
            memset(part, 0, sizeof part);
            for (int64_t d = d0; d < d1; d++)
                for (int64_t i = 0; i < w; i++)
                    part[i] += x[d * r->inner + i];
            for (int64_t i = 0; i < w; i++)
                acc[i] += part[i];
        }
        memcpy(cpu_f32(c->out[0].buf) + o * r->inner + i0, acc,
               (size_t)w * sizeof(float));
    }
}

xg_status cpu_sum(xg_backend_device *dev, const xg_kernel_call *call)
{
    const xg_reduce_args *r = &call->p.reduce;
    cpu_pool *pool = cpu_dev(dev)->pool;
    if (r->inner == 1 && r->outer == 1)
        cpu_f32(call->out[0].buf)[0] =
            sum_row_parallel(pool, cpu_f32(call->in[0].buf), r->dim);
    else if (r->inner == 1)
        cpu_parallel_rows(pool, r->outer, r->dim, sum_rows_range, call);
    else
        cpu_parallel_rows(pool,
                          r->outer * ((r->inner + SUM_TILE - 1) / SUM_TILE),
                          r->dim * SUM_TILE, sum_tiles_range, call);
    return XG_OK;
}

/* ---- max, argmax -------------------------------------------------------- */

/* First index of the maximum of x[0], x[s], ... x[(n-1) s]; the first NaN
 * wins over any number. */
static int64_t index_of_max(const float *x, int64_t n, int64_t s)
{
    int64_t best = 0;
    float m = x[0];
    for (int64_t d = 1; d < n; d++) {
        float v = x[d * s];
        if (v > m || (v != v && m == m)) {
            m = v;
            best = d;
        }
    }
    return best;
}

static void max_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_reduce_args *r = &c->p.reduce;
    const float *x = cpu_f32(c->in[0].buf);
    int want_values = c->op == XG_OP_max;
    int32_t *idx = cpu_i32(c->out[want_values ? 1 : 0].buf);
    for (int64_t q = begin; q < end; q++) {
        const float *row = x + q / r->inner * r->dim * r->inner + q % r->inner;
        int64_t d = index_of_max(row, r->dim, r->inner);
        idx[q] = (int32_t)d;
        if (want_values)
            cpu_f32(c->out[0].buf)[q] = row[d * r->inner];
    }
}

/* out[0] = values (max only), out[idx] = first index of the max, i32. */
xg_status cpu_max(xg_backend_device *dev, const xg_kernel_call *call)
{
    const xg_reduce_args *r = &call->p.reduce;
    cpu_parallel_rows(cpu_dev(dev)->pool, r->outer * r->inner, r->dim,
                      max_range, call);
    return XG_OK;
}

/* dx[o, idx[o, i], i] = g[o, i], zero elsewhere; one slab of dim * inner per
 * outer index. */
static void max_backward_range(const void *ctx, int64_t begin, int64_t end,
                               int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_reduce_args *r = &c->p.reduce;
    const float *g = cpu_f32(c->in[0].buf);
    const int32_t *idx = cpu_i32(c->in[1].buf);
    for (int64_t o = begin; o < end; o++) {
        float *dx = cpu_f32(c->out[0].buf) + o * r->dim * r->inner;
        memset(dx, 0, (size_t)(r->dim * r->inner) * sizeof(float));
        for (int64_t i = 0; i < r->inner; i++)
            dx[idx[o * r->inner + i] * r->inner + i] = g[o * r->inner + i];
    }
}

xg_status cpu_max_backward(xg_backend_device *dev,
                           const xg_kernel_call *call)
{
    const xg_reduce_args *r = &call->p.reduce;
    cpu_parallel_rows(cpu_dev(dev)->pool, r->outer, r->dim * r->inner,
                      max_backward_range, call);
    return XG_OK;
}
