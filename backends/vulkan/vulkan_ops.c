/* Ops: every slot of the dispatch table runs through vk_run, which picks the
 * op's pipeline (the shader variant named after it), lets the op family's
 * planner fill in push constants and grid, and records one dispatch. The
 * one exception is a GEMM with a long K, which runs as two (split K; three
 * on 16-bit elements).
 *
 * The push-constant structs below mirror the `Push` blocks of the shaders
 * in shaders/ field by field (std430: 4-byte scalars, arrays of stride 4).
 * Sizes fit in 32 bits: alloc() refuses buffers past maxStorageBufferRange,
 * which is below 2^32 bytes. */
#include "shader_config.h"
#include "half_impl.h"
#include "vulkan_impl.h"

#include <assert.h>
#include <string.h>

static uint32_t u32(int64_t v)
{
    assert(v >= 0 && v <= (int64_t)UINT32_MAX);
    return (uint32_t)v;
}

static uint32_t ceil_div(int64_t a, int64_t b)
{
    return u32((a + b - 1) / b);
}

/* Workgroups along one axis for `items` of `per_group` each; kernels loop
 * over work beyond XG_MAX_GROUPS groups. */
static uint32_t groups(int64_t items, int64_t per_group)
{
    uint32_t g = ceil_div(items, per_group);
    return g < XG_MAX_GROUPS ? g : XG_MAX_GROUPS;
}

static void set_push(xg_vk_job *job, const void *push, size_t size)
{
    assert(size <= sizeof job->push && size % 4 == 0);
    memcpy(job->push, push, size);
    job->push_size = (uint32_t)size;
}

/* A 1-D grid over n elements of a XG_WG_SIZE-wide kernel. */
static void grid_1d(xg_vk_job *job, int64_t n)
{
    job->groups[0] = groups(n, XG_WG_SIZE);
    job->groups[1] = job->groups[2] = 1;
}

/* ---- planners, one per op family ----------------------------------------- */

/* What a planner reads: the call, and the device it will run on. */
typedef struct plan_in {
    const xg_vk_device *dev;
    const xg_kernel_call *call;
} plan_in;

/* UNARY, UNARY_BACKWARD, SCALAR: unary.comp. */
static void plan_elementwise(const plan_in *in, xg_vk_job *job)
{
    const xg_kernel_call *c = in->call;
    struct { uint32_t n; float scalar; } p = {u32(c->p.ew.n), c->p.ew.scalar};
    set_push(job, &p, sizeof p);
    grid_1d(job, c->p.ew.n);
}

/* BINARY: binary.comp. */
static void plan_binary(const plan_in *in, xg_vk_job *job)
{
    const xg_binary_args *a = &in->call->p.binary;
    struct {
        uint32_t n, ndim;
        uint32_t shape[XG_MAX_DIMS], stride_a[XG_MAX_DIMS],
            stride_b[XG_MAX_DIMS];
    } p = {u32(a->n), u32(a->ndim)};
    for (int k = 0; k < a->ndim; k++) {
        p.shape[k] = u32(a->shape[k]);
        p.stride_a[k] = u32(a->stride_a[k]);
        p.stride_b[k] = u32(a->stride_b[k]);
    }
    set_push(job, &p, sizeof p);
    grid_1d(job, a->n);
}

/* Invocations that share one reduction over `len` elements: a power of
 * two that leaves each a few elements, at most `max`. */
static uint32_t lanes_for(int64_t len, uint32_t max)
{
    uint32_t lanes = 1;
    while (lanes < max && 4 * (int64_t)lanes < len)
        lanes *= 2;
    return lanes;
}

typedef struct reduce_push {
    uint32_t outer, dim, inner, lanes;
} reduce_push;

/* REDUCE: reduce.comp, XG_WG_SIZE / lanes outputs per workgroup. With
 * inner > 1 a workgroup keeps up to 32 adjacent outputs, so that its reads
 * along the inner axis stay contiguous. */
static void plan_reduce(const plan_in *in, xg_vk_job *job)
{
    const xg_reduce_args *a = &in->call->p.reduce;
    uint32_t adjacent = 1;
    while (adjacent < a->inner && adjacent < 32)
        adjacent *= 2;
    uint32_t lanes = lanes_for(a->dim, XG_WG_SIZE / adjacent);
    reduce_push p = {u32(a->outer), u32(a->dim), u32(a->inner), lanes};
    set_push(job, &p, sizeof p);
    job->groups[0] = groups(a->outer * a->inner, XG_WG_SIZE / lanes);
    job->groups[1] = job->groups[2] = 1;
}

/* REDUCE_BACKWARD: reduce.comp, elementwise over the input shape. */
static void plan_reduce_backward(const plan_in *in, xg_vk_job *job)
{
    const xg_reduce_args *a = &in->call->p.reduce;
    reduce_push p = {u32(a->outer), u32(a->dim), u32(a->inner), 0};
    set_push(job, &p, sizeof p);
    grid_1d(job, a->outer * a->dim * a->inner);
}

/* ROWS: rows.comp, XG_WG_SIZE / lanes rows per workgroup. */
static void plan_rows(const plan_in *in, xg_vk_job *job)
{
    const xg_rows_args *a = &in->call->p.rows;
    uint32_t lanes = lanes_for(a->cols, XG_WG_SIZE);
    struct {
        uint32_t rows, cols, lanes;
        int32_t ignore_index;
    } p = {u32(a->rows), u32(a->cols), lanes, a->ignore_index};
    set_push(job, &p, sizeof p);
    job->groups[0] = groups(a->rows, XG_WG_SIZE / lanes);
    job->groups[1] = job->groups[2] = 1;
}

/* GEMM: gemm.comp (matmul*) on GPUs, gemm_subgroup.comp (matmul_sg*) where
 * the device runs it; indexed [subgroup][2 * trans_a + trans_b]. */
static const xg_vk_pipe gemm_pipes[2][4] = {
    {XG_VK_PIPE_matmul, XG_VK_PIPE_matmul_nt, XG_VK_PIPE_matmul_tn,
     XG_VK_PIPE_matmul_tt},
    {XG_VK_PIPE_matmul_sg, XG_VK_PIPE_matmul_sg_nt, XG_VK_PIPE_matmul_sg_tn,
     XG_VK_PIPE_matmul_sg_tt},
};

/* matmul on bf16 and f16: the same kernels with 16-bit A, B and C
 * (gemm_common.glsl), in words or with 16-bit storage, storing C or f32
 * partial products (split K). Indexed [subgroup][2 * trans_a + trans_b]
 * [f16][storage16][partial]. */
#define GEMM16_OUT(k, l, t, s)                                               \
    {XG_VK_PIPE_matmul##k##_##l##_##t##s,                                    \
     XG_VK_PIPE_matmul##k##_##l##_##t##s##_partial}
#define GEMM16_STORAGE(k, l, t)                                              \
    {GEMM16_OUT(k, l, t, ), GEMM16_OUT(k, l, t, _s16)}
#define GEMM16_DTYPE(k, l)                                                   \
    {GEMM16_STORAGE(k, l, bf16), GEMM16_STORAGE(k, l, f16)}
#define GEMM16_LAYOUT(k)                                                     \
    {GEMM16_DTYPE(k, nn), GEMM16_DTYPE(k, nt), GEMM16_DTYPE(k, tn),          \
     GEMM16_DTYPE(k, tt)}
static const xg_vk_pipe gemm16_pipes[2][4][2][2][2] = {GEMM16_LAYOUT(),
                                                       GEMM16_LAYOUT(_sg)};
#undef GEMM16_OUT
#undef GEMM16_STORAGE
#undef GEMM16_DTYPE
#undef GEMM16_LAYOUT

static bool is_16bit(xg_dtype t)
{
    return t == XG_BF16 || t == XG_F16;
}

/* K chunks of a GEMM: K loops longer than XG_GEMM_K_CHUNK are split
 * (shaders/shader_config.h). */
static int64_t gemm_splits(const xg_gemm_args *a)
{
    return (a->k + XG_GEMM_K_CHUNK - 1) / XG_GEMM_K_CHUNK;
}

static void plan_gemm(const plan_in *in, xg_vk_job *job)
{
    const xg_gemm_args *a = &in->call->p.gemm;
    int64_t splits = gemm_splits(a);
    struct {
        uint32_t batch, m, n, k, stride_a, stride_b, stride_c;
        float alpha;
        uint32_t splits, k_chunk;
    } p = {
        .batch = u32(a->batch),
        .m = u32(a->m),
        .n = u32(a->n),
        .k = u32(a->k),
        .stride_a = u32(a->stride_a),
        .stride_b = u32(a->stride_b),
        .stride_c = u32(a->stride_c),
        .alpha = a->alpha,
        .splits = u32(splits),
        .k_chunk = XG_GEMM_K_CHUNK,
    };
    set_push(job, &p, sizeof p);
    bool sg = in->dev->subgroup_gemm;
    int layout = 2 * !!a->trans_a + !!a->trans_b;
    xg_dtype t = in->call->in[0].dtype; /* B's too; C's, or f32 partials */
    if (is_16bit(t))
        job->pipe = gemm16_pipes[sg][layout][t == XG_F16][in->dev->storage16]
                                [in->call->out[0].dtype == XG_F32];
    else
        job->pipe = gemm_pipes[sg][layout];
    job->groups[0] = groups(a->n, sg ? XG_GEMM_SG_LANES * XG_GEMM_SG_COL_BLOCKS
                                     : XG_GEMM_TILE_N);
    job->groups[1] = groups(a->m, sg ? XG_GEMM_SG_LANES * XG_GEMM_SG_ROW_BLOCKS
                                     : XG_GEMM_TILE_M);
    job->groups[2] = groups(a->batch * splits, 1);
}

/* STRIDED: strided.comp gets the index space, both sides' strides and
 * offsets; half.comp (copy_strided_16, with 16-bit storage _s16) the same
 * for 16-bit elements. */
static void plan_strided(const plan_in *in, xg_vk_job *job)
{
    const xg_strided_args *a = &in->call->p.strided;
    struct {
        uint32_t n, ndim, in_offset, out_offset;
        uint32_t shape[XG_MAX_DIMS], in_stride[XG_MAX_DIMS],
            out_stride[XG_MAX_DIMS];
    } p = {u32(a->n), u32(a->ndim), u32(a->in_offset), u32(a->out_offset)};
    for (int k = 0; k < a->ndim; k++) {
        p.shape[k] = u32(a->shape[k]);
        p.in_stride[k] = u32(a->in_stride[k]);
        p.out_stride[k] = u32(a->out_stride[k]);
    }
    set_push(job, &p, sizeof p);
    if (is_16bit(in->call->out[0].dtype))
        job->pipe = in->dev->storage16 ? XG_VK_PIPE_copy_strided_16_s16
                                       : XG_VK_PIPE_copy_strided_16;
    grid_1d(job, a->n);
}

/* FILL (fill, copy): fill.comp; for 16-bit elements half.comp (fill_16,
 * copy_16), a 32-bit word of two elements per invocation, the fill value
 * rounded to the element type here as the CPU rounds it. */
static void plan_fill(const plan_in *in, xg_vk_job *job)
{
    const xg_kernel_call *c = in->call;
    xg_dtype t = c->out[0].dtype;
    if (is_16bit(t)) {
        struct { uint32_t n, bits; } p = {u32(c->p.fill.n), 0};
        if (c->op == XG_OP_fill)
            p.bits = t == XG_BF16 ? xg__f32_to_bf16_1(c->p.fill.value)
                                  : xg__f32_to_f16_1(c->p.fill.value);
        set_push(job, &p, sizeof p);
        job->pipe = c->op == XG_OP_fill ? XG_VK_PIPE_fill_16
                                        : XG_VK_PIPE_copy_16;
        grid_1d(job, c->p.fill.n / 2 + c->p.fill.n % 2);
        return;
    }
    struct { uint32_t n; float value; } p = {u32(c->p.fill.n),
                                             c->p.fill.value};
    set_push(job, &p, sizeof p);
    grid_1d(job, c->p.fill.n);
}

/* CAST: cast.comp, one variant per pair of dtypes (cast_<from>_<to>), and
 * for pairs with a 16-bit side one with 16-bit storage (_s16). Indexed
 * [from][to][storage16] by xg_dtype. */
#define CAST_32(a, b) {XG_VK_PIPE_cast_##a##_##b, XG_VK_PIPE_cast_##a##_##b}
#define CAST_16(a, b)                                                        \
    {XG_VK_PIPE_cast_##a##_##b, XG_VK_PIPE_cast_##a##_##b##_s16}
static const xg_vk_pipe cast_pipes[XG_DTYPE_COUNT][XG_DTYPE_COUNT][2] = {
    [XG_F32] = {[XG_F32] = CAST_32(f32, f32), [XG_I32] = CAST_32(f32, i32),
                [XG_BF16] = CAST_16(f32, bf16), [XG_F16] = CAST_16(f32, f16)},
    [XG_I32] = {[XG_F32] = CAST_32(i32, f32), [XG_I32] = CAST_32(i32, i32),
                [XG_BF16] = CAST_16(i32, bf16), [XG_F16] = CAST_16(i32, f16)},
    [XG_BF16] = {[XG_F32] = CAST_16(bf16, f32), [XG_I32] = CAST_16(bf16, i32),
                 [XG_BF16] = CAST_16(bf16, bf16),
                 [XG_F16] = CAST_16(bf16, f16)},
    [XG_F16] = {[XG_F32] = CAST_16(f16, f32), [XG_I32] = CAST_16(f16, i32),
                [XG_BF16] = CAST_16(f16, bf16), [XG_F16] = CAST_16(f16, f16)},
};
#undef CAST_32
#undef CAST_16

static void plan_cast(const plan_in *in, xg_vk_job *job)
{
    const xg_kernel_call *c = in->call;
    xg_dtype from = c->in[0].dtype, to = c->out[0].dtype;
    int64_t n = c->p.cast.n;
    struct { uint32_t n; } p = {u32(n)};
    set_push(job, &p, sizeof p);
    job->pipe = cast_pipes[from][to][in->dev->storage16];
    /* without 16-bit storage a 16-bit side goes by words: one invocation
     * per pair of elements */
    bool pairs = !in->dev->storage16 && (is_16bit(from) || is_16bit(to));
    grid_1d(job, pairs ? n / 2 + n % 2 : n);
}

/* RNG: rng.comp, one Philox block (XG_RNG_BLOCK elements) per invocation;
 * 64-bit seed and offset travel as (low, high) words. */
static void plan_rng(const plan_in *in, xg_vk_job *job)
{
    const xg_rng_args *a = &in->call->p.rng;
    struct {
        uint32_t n, seed_lo, seed_hi, offset_lo, offset_hi;
        float a, b;
    } p = {
        .n = u32(a->n),
        .seed_lo = (uint32_t)a->seed,
        .seed_hi = (uint32_t)(a->seed >> 32),
        .offset_lo = (uint32_t)a->offset,
        .offset_hi = (uint32_t)(a->offset >> 32),
        .a = a->a,
        .b = a->b,
    };
    set_push(job, &p, sizeof p);
    grid_1d(job, (a->n + XG_RNG_BLOCK - 1) / XG_RNG_BLOCK);
}

/* ADAM: optim.comp. */
static void plan_adam(const plan_in *in, xg_vk_job *job)
{
    const xg_adam_args *a = &in->call->p.adam;
    struct {
        uint32_t n;
        float lr, beta1, beta2, eps, weight_decay, bias1, bias2;
        uint32_t decoupled;
    } p = {
        .n = u32(a->n),
        .lr = a->lr,
        .beta1 = a->beta1,
        .beta2 = a->beta2,
        .eps = a->eps,
        .weight_decay = a->weight_decay,
        .bias1 = a->bias1,
        .bias2 = a->bias2,
        .decoupled = a->decoupled != 0,
    };
    set_push(job, &p, sizeof p);
    grid_1d(job, a->n);
}

/* SGD: optim.comp; sgd_update_momentum when there is a momentum buffer. */

static void plan_sgd(const plan_in *in, xg_vk_job *job)
{
    const xg_sgd_args *a = &in->call->p.sgd;
    struct {
        uint32_t n;
        float lr, momentum, dampening, weight_decay;
        uint32_t nesterov, first;
    } p = {
        .n = u32(a->n),
        .lr = a->lr,
        .momentum = a->momentum,
        .dampening = a->dampening,
        .weight_decay = a->weight_decay,
        .nesterov = a->nesterov != 0,
        .first = a->first != 0,
    };
    set_push(job, &p, sizeof p);
    assert((a->momentum != 0.0f) == (in->call->out[1].buf != NULL));
    if (a->momentum != 0.0f)
        job->pipe = XG_VK_PIPE_sgd_update_momentum;
    grid_1d(job, a->n);
}

/* INDEX: index.comp. Forward: one invocation per output element; backward
 * (run_index_backward): one per line of dx, positions [j_begin, j_end). */
typedef struct index_push {
    uint32_t ndim, axis, n;
    uint32_t x_shape[XG_MAX_DIMS], shape[XG_MAX_DIMS],
        index_stride[XG_MAX_DIMS];
    uint32_t j_begin, j_end;
} index_push;

static index_push index_push_of(const xg_index_args *a)
{
    index_push p = {u32(a->ndim), u32(a->axis), u32(a->n)};
    for (int k = 0; k < a->ndim; k++) {
        p.x_shape[k] = u32(a->x_shape[k]);
        p.shape[k] = u32(a->shape[k]);
        p.index_stride[k] = u32(a->index_stride[k]);
    }
    return p;
}

static void plan_index(const plan_in *in, xg_vk_job *job)
{
    const xg_index_args *a = &in->call->p.index;
    index_push p = index_push_of(a);
    set_push(job, &p, sizeof p);
    grid_1d(job, a->n);
}

/* WHERE: where.comp. */
static void plan_where(const plan_in *in, xg_vk_job *job)
{
    const xg_where_args *a = &in->call->p.where;
    struct {
        uint32_t n, ndim;
        uint32_t shape[XG_MAX_DIMS], stride[3][XG_MAX_DIMS];
        float value;
    } p = {u32(a->n), u32(a->ndim)};
    for (int k = 0; k < a->ndim; k++) {
        p.shape[k] = u32(a->shape[k]);
        for (int i = 0; i < 3; i++)
            p.stride[i][k] = u32(a->stride[i][k]);
    }
    p.value = a->value;
    set_push(job, &p, sizeof p);
    grid_1d(job, a->n);
}

/* ATTENTION: attention.comp, one workgroup per row (query rows, or key rows
 * for the dk/dv pass), grid-stride beyond XG_MAX_GROUPS. */
static void plan_attention(const plan_in *in, xg_vk_job *job)
{
    const xg_attention_args *a = &in->call->p.attention;
    struct {
        uint32_t bh, tq, tk, d;
        float scale;
        uint32_t causal;
        int32_t off;
        float p;
        uint32_t seed_lo, seed_hi, offset_lo, offset_hi;
        float keep;
    } p = {
        .bh = u32(a->bh), .tq = u32(a->tq), .tk = u32(a->tk), .d = u32(a->d),
        .scale = a->scale, .causal = (uint32_t)a->causal,
        .off = (int32_t)a->causal_offset, /* within [-tq, tk] */
        .p = a->p,
        .seed_lo = (uint32_t)a->seed, .seed_hi = (uint32_t)(a->seed >> 32),
        .offset_lo = (uint32_t)a->offset,
        .offset_hi = (uint32_t)(a->offset >> 32),
        .keep = a->p > 0.0f ? 1.0f / (1.0f - a->p) : 1.0f,
    };
    set_push(job, &p, sizeof p);
    int64_t rows = a->bh * (in->call->op == XG_OP_attention_backward_kv
                                ? a->tk
                                : a->tq);
    job->groups[0] = groups(rows, 1);
    job->groups[1] = job->groups[2] = 1;
}

/* NORM: norm.comp. layer_norm and its dx as ROWS, XG_WG_SIZE / lanes rows
 * per workgroup; the column sums (run_norm_affine) one invocation per
 * column. */
typedef struct norm_push {
    uint32_t rows, cols, lanes;
    float eps;
    uint32_t has_weight, has_bias, row_begin, row_end;
} norm_push;

static norm_push norm_push_of(const xg_norm_args *a)
{
    return (norm_push){u32(a->rows), u32(a->cols),
                       lanes_for(a->cols, XG_WG_SIZE), a->eps,
                       a->has_weight != 0, a->has_bias != 0, 0,
                       u32(a->rows)};
}

static void plan_norm(const plan_in *in, xg_vk_job *job)
{
    const xg_norm_args *a = &in->call->p.norm;
    norm_push p = norm_push_of(a);
    set_push(job, &p, sizeof p);
    job->groups[0] = groups(a->rows, XG_WG_SIZE / p.lanes);
    job->groups[1] = job->groups[2] = 1;
}

/* ---- the dispatch table -------------------------------------------------- */

typedef void (*plan_fn)(const plan_in *in, xg_vk_job *job);

static const plan_fn planners[] = {
    [XG_FAMILY_UNARY] = plan_elementwise,
    [XG_FAMILY_UNARY_BACKWARD] = plan_elementwise,
    [XG_FAMILY_SCALAR] = plan_elementwise,
    [XG_FAMILY_BINARY] = plan_binary,
    [XG_FAMILY_REDUCE] = plan_reduce,
    [XG_FAMILY_REDUCE_BACKWARD] = plan_reduce_backward,
    [XG_FAMILY_ROWS] = plan_rows,
    [XG_FAMILY_GEMM] = plan_gemm,
    [XG_FAMILY_STRIDED] = plan_strided,
    [XG_FAMILY_FILL] = plan_fill,
    [XG_FAMILY_RNG] = plan_rng,
    [XG_FAMILY_ADAM] = plan_adam,
    [XG_FAMILY_SGD] = plan_sgd,
    [XG_FAMILY_INDEX] = plan_index,
    [XG_FAMILY_WHERE] = plan_where,
    [XG_FAMILY_ATTENTION] = plan_attention,
    [XG_FAMILY_NORM] = plan_norm,
    [XG_FAMILY_CAST] = plan_cast,
};

/* Per op, its pipeline: the shader variant of the same name, which
 * shaders/meson.build makes for every op of api/core/ops.def. */
static const xg_vk_pipe op_pipes[XG_OP_COUNT] = {
#define XG_OP(name, family, in, out, backward) [XG_OP_##name] = XG_VK_PIPE_##name,
#include "ops.def"
#undef XG_OP
};

/* The elementwise families' 16-bit forms with 16-bit storage
 * (shaders/meson.build: <op>_<bf16|f16>_s16; none in words, where the core
 * widens these ops). Indexed [op][f16]; `has` is false for the ops
 * without. */
static const struct {
    bool has;
    xg_vk_pipe pipe[2];
} ew16_pipes[XG_OP_COUNT] = {
#define EW16(op)                                                             \
    [XG_OP_##op] = {true, {XG_VK_PIPE_##op##_bf16_s16, XG_VK_PIPE_##op##_f16_s16}},
    EW16(neg) EW16(exp) EW16(log) EW16(sqrt) EW16(relu) EW16(sigmoid)
    EW16(tanh) EW16(gelu) EW16(silu) EW16(gelu_tanh)
    EW16(relu_backward) EW16(gelu_backward) EW16(silu_backward)
    EW16(gelu_tanh_backward)
    EW16(add_scalar) EW16(sub_scalar) EW16(mul_scalar) EW16(div_scalar)
    EW16(add) EW16(sub) EW16(mul) EW16(div) EW16(same_value)
#undef EW16
};

/* Whether the device runs op (of an elementwise family) on 16-bit elements
 * in a kernel of its own. */
static bool ew16_native(const xg_vk_device *d, xg_op op)
{
    xg_op_family f = xg_op_table[op].family;
    return d->storage16 && ew16_pipes[op].has &&
           (f == XG_FAMILY_UNARY || f == XG_FAMILY_UNARY_BACKWARD ||
            f == XG_FAMILY_SCALAR || f == XG_FAMILY_BINARY);
}

/* Runs a call as one dispatch. */
static xg_status run_planned(xg_vk_device *d, const xg_kernel_call *call)
{
    plan_in in = {d, call};
    xg_vk_job job = {.pipe = op_pipes[call->op]};
    xg_dtype t = xg_op_table[call->op].n_out ? call->out[0].dtype : XG_F32;
    if (is_16bit(t) && ew16_native(d, call->op))
        job.pipe = ew16_pipes[call->op].pipe[t == XG_F16];
    planners[xg_op_table[call->op].family](&in, &job);
    xg_buffer *in_bufs[XG_KERNEL_MAX_IN] = {NULL}, *out_bufs[XG_KERNEL_MAX_OUT] = {NULL};
    for (int i = 0; i < XG_KERNEL_MAX_IN; i++)
        in_bufs[i] = call->in[i].buf;
    for (int j = 0; j < XG_KERNEL_MAX_OUT; j++)
        out_bufs[j] = call->out[j].buf;
    return xg_vk_dispatch(d, &job, in_bufs, out_bufs);
}

/* A GEMM with K split into chunks: the partial products go to a temporary
 * [batch, splits, M, N] (f32 whatever C's type), then `sum` reduces it
 * over the splits into C; a 16-bit C gets the f32 sums in a second
 * temporary, then a cast rounds them into C (as the core's widening of
 * the op would: the same bits). */
static xg_status run_split_gemm(xg_vk_device *d, const xg_kernel_call *call)
{
    const xg_gemm_args *a = &call->p.gemm;
    int64_t splits = gemm_splits(a);
    bool half = is_16bit(call->out[0].dtype);
    xg_buffer *partial = NULL, *sums = NULL;
    xg_status st = xg_vk_alloc(&d->base,
                               (size_t)(a->batch * splits * a->m * a->n) * 4,
                               &partial);
    if (st == XG_OK && half)
        st = xg_vk_alloc(&d->base, (size_t)(a->batch * a->m * a->n) * 4,
                         &sums);
    xg_kernel_call parts = *call;
    parts.out[0] = (xg_operand){partial, XG_F32, 0};
    if (st == XG_OK)
        st = run_planned(d, &parts);
    xg_kernel_call sum = {
        .op = XG_OP_sum,
        .in = {{partial, XG_F32}},
        .out = {half ? (xg_operand){sums, XG_F32, 0} : call->out[0]},
        .p.reduce = {a->batch, splits, a->m * a->n},
    };
    if (st == XG_OK)
        st = run_planned(d, &sum);
    xg_kernel_call round = {
        .op = XG_OP_cast,
        .in = {{sums, XG_F32}},
        .out = {call->out[0]},
        .p.cast = {a->batch * a->m * a->n},
    };
    if (st == XG_OK && half)
        st = run_planned(d, &round);
    /* kept until the dispatches that use them have run */
    xg_vk_free(&d->base, sums);
    xg_vk_free(&d->base, partial);
    return st;
}

/* The backward of an index op: a fill zeroes dx, then the positions along
 * the axis go in chunks of XG_INDEX_CHUNK, one dispatch each, every chunk
 * adding to the sums the last one stored (shaders/index.comp). */
static xg_status run_index_backward(xg_vk_device *d,
                                    const xg_kernel_call *call)
{
    const xg_index_args *a = &call->p.index;
    xg_kernel_call zero = {.op = XG_OP_fill, .out = {call->out[0]},
                           .p.fill = {a->n, 0.0f}};
    xg_status st = run_planned(d, &zero);
    index_push p = index_push_of(a);
    xg_vk_job job = {.pipe = op_pipes[call->op]};
    grid_1d(&job, a->n / a->x_shape[a->axis]);
    xg_buffer *in_bufs[XG_KERNEL_MAX_IN] = {call->in[0].buf, call->in[1].buf};
    xg_buffer *out_bufs[XG_KERNEL_MAX_OUT] = {call->out[0].buf};
    for (int64_t j = 0; st == XG_OK && j < a->shape[a->axis];
         j += XG_INDEX_CHUNK) {
        int64_t end = j + XG_INDEX_CHUNK;
        p.j_begin = u32(j);
        p.j_end = u32(end < a->shape[a->axis] ? end : a->shape[a->axis]);
        set_push(&job, &p, sizeof p);
        st = xg_vk_dispatch(d, &job, in_bufs, out_bufs);
    }
    return st;
}

/* layer_norm's dweight and dbias: the rows go in chunks of
 * XG_NORM_ROW_CHUNK, one dispatch each, every chunk continuing the sums
 * the last one stored (shaders/norm.comp). */
static xg_status run_norm_affine(xg_vk_device *d, const xg_kernel_call *call)
{
    const xg_norm_args *a = &call->p.norm;
    norm_push p = norm_push_of(a);
    xg_vk_job job = {.pipe = op_pipes[call->op]};
    grid_1d(&job, a->cols);
    xg_buffer *in_bufs[XG_KERNEL_MAX_IN] = {NULL};
    xg_buffer *out_bufs[XG_KERNEL_MAX_OUT] = {call->out[0].buf,
                                              call->out[1].buf};
    for (int i = 0; i < 4; i++)
        in_bufs[i] = call->in[i].buf;
    xg_status st = XG_OK;
    for (int64_t r = 0; st == XG_OK && r < a->rows; r += XG_NORM_ROW_CHUNK) {
        int64_t end = r + XG_NORM_ROW_CHUNK;
        p.row_begin = u32(r);
        p.row_end = u32(end < a->rows ? end : a->rows);
        set_push(&job, &p, sizeof p);
        st = xg_vk_dispatch(d, &job, in_bufs, out_bufs);
    }
    return st;
}

static xg_status vk_run(xg_backend_device *dev, const xg_kernel_call *call)
{
    xg_vk_device *d = xg_vk_dev(dev);
    switch (xg_op_table[call->op].family) {
    case XG_FAMILY_CONV: /* several dispatches: vulkan_conv.c */
    case XG_FAMILY_POOL:
    case XG_FAMILY_DROPOUT:
        return xg_vk_cnn(d, call);
    default:
        break;
    }
    if (call->op == XG_OP_matmul && gemm_splits(&call->p.gemm) > 1)
        return run_split_gemm(d, call);
    if (call->op == XG_OP_index_select_backward ||
        call->op == XG_OP_gather_backward)
        return run_index_backward(d, call);
    if (call->op == XG_OP_layer_norm_backward_affine)
        return run_norm_affine(d, call);
    return run_planned(d, call);
}

/* Every op runs on f32 element types; casts between every pair of dtypes
 * (cast.comp); fill, copy and copy_strided also on bf16 and f16 (bit
 * copies); matmul also on bf16 and f16 (f32 accumulation, gemm_common.glsl);
 * with 16-bit storage, the UNARY, UNARY_BACKWARD, SCALAR and BINARY
 * families also on bf16 and f16 (f32 arithmetic, the widened path's bits:
 * unary.comp, binary.comp). The core widens every other op on 16-bit
 * elements through casts to f32. */
static bool vk_supports(const xg_backend_device *dev, xg_op op,
                        const xg_dtype *dtypes)
{
    bool half = xg_op_signature_is(op, dtypes, XG_BF16) ||
                xg_op_signature_is(op, dtypes, XG_F16);
    if (half && (op == XG_OP_matmul ||
                 ew16_native((const xg_vk_device *)dev, op)))
        return true;
    return xg_op_f32_or_16bit_move(op, dtypes);
}

const xg_backend xg_backend_vulkan = {
    .name = "vulkan",
    .enumerate = xg_vk_enumerate,
    .open = xg_vk_open,
    .close = xg_vk_close,
    .alloc = xg_vk_alloc,
    .free = xg_vk_free,
    .upload = xg_vk_upload,
    .download = xg_vk_download,
    .sync = xg_vk_sync,
    .supports = vk_supports,
    .kernels = {
#define XG_FAMILY(name, args) [XG_FAMILY_##name] = vk_run,
#include "ops.def"
#undef XG_FAMILY
    },
};
