/* Convolution, pooling and dropout (api/core/backend.h: struct xg_conv_args,
 * xg_pool_args, xg_dropout_args), with the semantics of
 * backends/cpu/cpu_conv.c.
 *
 * conv2d is lowered to GEMM through im2col, as on the CPU: shaders/conv.comp
 * unfolds a chunk of samples into a column buffer [samples, c_in, kh, kw,
 * oh * ow], and the GEMM kernels (variants conv_gemm_* with push-constant
 * offsets, so that they read and write views of the NCHW tensors without
 * copies) run per group, batched over the chunk's samples:
 *   forward          y_g [c_out_g, P] = W_g [c_out_g, K] cols_g [K, P]
 *                    (conv2d_bias: then + bias per plane, a dispatch of
 *                    its own; conv2d_bias_relu: + bias, then max(y, 0))
 *   backward input   dcols_g = W_g^T dy_g, then col2im as a gather
 *   backward weight  partial[s]_g = dy_g cols_g^T per sample, then summed
 *                    over the samples into dweight (sample order)
 * with K = c_in / groups * kh * kw, P = oh * ow. A 1x1 kernel at stride 1
 * without padding needs no columns: they are x (or dx) itself.
 *
 * Column buffers are scratch from the backend's allocator, freed after
 * recording (the allocator keeps them until the queued work is done). The
 * batch is cut into chunks so that each stays under XG_VK_CONV_SCRATCH
 * bytes (one sample may take more, up to the device's buffer limit).
 *
 * Pooling and dropout are one dispatch each (shaders/pool.comp,
 * shaders/dropout.comp). */
#include "shader_config.h"
#include "vulkan_impl.h"

#include <assert.h>
#include <string.h>

/* Bytes a conv call's column (or partial-sum) buffer takes at most, unless
 * a single sample needs more. */
#define XG_VK_CONV_SCRATCH ((int64_t)64 << 20)

static uint32_t u32(int64_t v)
{
    assert(v >= 0 && v <= (int64_t)UINT32_MAX);
    return (uint32_t)v;
}

/* Workgroups along one axis, capped as in vulkan_ops.c; kernels loop. */
static uint32_t groups(int64_t items, int64_t per_group)
{
    int64_t g = (items + per_group - 1) / per_group;
    return g < XG_MAX_GROUPS ? (uint32_t)g : XG_MAX_GROUPS;
}

/* Records one dispatch of a grid of gx x gy workgroups. */
static xg_status run(xg_vk_device *d, xg_vk_pipe pipe, const void *push,
                     size_t size, uint32_t gx, uint32_t gy, xg_buffer *in0,
                     xg_buffer *in1, xg_buffer *out0, xg_buffer *out1)
{
    xg_vk_job job = {.pipe = pipe, .groups = {gx, gy, 1}};
    assert(size <= sizeof job.push && size % 4 == 0);
    memcpy(job.push, push, size);
    job.push_size = (uint32_t)size;
    xg_buffer *const in[XG_KERNEL_MAX_IN] = {in0, in1, NULL};
    xg_buffer *const out[XG_KERNEL_MAX_OUT] = {out0, out1, NULL};
    return xg_vk_dispatch(d, &job, in, out);
}

/* ---- convolution ---------------------------------------------------------- */

/* A matrix operand of a batched GEMM: matrix s starts at element
 * offset + s * stride of buf. */
typedef struct gemm_view {
    xg_buffer *buf;
    int64_t offset, stride;
} gemm_view;

/* One dispatch of C_z = op(A) op(B) over z < batch * splits, each product
 * over K chunk k_chunk of its matrix pair (gemm_common.glsl with
 * XG_GEMM_OFFSETS). trans: "nn", "nt" or "tn". */
static xg_status gemm_dispatch(xg_vk_device *d, const char *trans,
                               int64_t batch, int64_t m, int64_t n,
                               int64_t k, int64_t splits, int64_t k_chunk,
                               gemm_view a, gemm_view b, gemm_view c)
{
    struct {
        uint32_t batch, m, n, k, stride_a, stride_b, stride_c;
        float alpha;
        uint32_t splits, k_chunk;
        uint32_t offset_a, offset_b, offset_c;
    } p = {u32(batch),    u32(m),        u32(n),        u32(k),
           u32(a.stride), u32(b.stride), u32(c.stride), 1.0f,
           u32(splits),   u32(k_chunk),  u32(a.offset), u32(b.offset),
           u32(c.offset)};
    /* The subgroup kernel (CPU drivers) loops over a K chunk in one go. */
    bool sg = d->subgroup_gemm;
    xg_vk_job job = {.push_size = sizeof p};
    memcpy(job.push, &p, sizeof p);
    if (strcmp(trans, "nt") == 0)
        job.pipe = sg ? XG_VK_PIPE_conv_gemm_sg_nt : XG_VK_PIPE_conv_gemm_nt;
    else if (strcmp(trans, "tn") == 0)
        job.pipe = sg ? XG_VK_PIPE_conv_gemm_sg_tn : XG_VK_PIPE_conv_gemm_tn;
    else
        job.pipe = sg ? XG_VK_PIPE_conv_gemm_sg_nn : XG_VK_PIPE_conv_gemm_nn;
    job.groups[0] = groups(n, sg ? XG_GEMM_SG_LANES * XG_GEMM_SG_COL_BLOCKS
                                 : XG_GEMM_TILE_N);
    job.groups[1] = groups(m, sg ? XG_GEMM_SG_LANES * XG_GEMM_SG_ROW_BLOCKS
                                 : XG_GEMM_TILE_M);
    job.groups[2] = groups(batch * splits, 1);
    xg_buffer *const in[XG_KERNEL_MAX_IN] = {a.buf, b.buf, NULL};
    xg_buffer *const out[XG_KERNEL_MAX_OUT] = {c.buf, NULL, NULL};
    return xg_vk_dispatch(d, &job, in, out);
}

/* C_s = op(A_s) op(B_s) for s < batch, C [m, n], depth k. lavapipe ends a
 * shader's loops after 65535 trips in all, so K past XG_GEMM_K_CHUNK is cut
 * into chunks (as matmul does): the partial products go to a temporary
 * [batch, splits, m, n], the REDUCE kernel sums them over the splits, and
 * copy_strided puts the sums at C's offset and stride. */
static xg_status gemm(xg_vk_device *d, const char *trans, int64_t batch,
                      int64_t m, int64_t n, int64_t k, gemm_view a,
                      gemm_view b, gemm_view c)
{
    if (k <= XG_GEMM_K_CHUNK)
        return gemm_dispatch(d, trans, batch, m, n, k, 1, k, a, b, c);
    int64_t splits = (k + XG_GEMM_K_CHUNK - 1) / XG_GEMM_K_CHUNK;
    int64_t mn = m * n;
    xg_buffer *partial = NULL, *sums = NULL;
    xg_status st = xg_vk_alloc(&d->base, (size_t)(batch * splits * mn) * 4,
                               &partial);
    if (st == XG_OK)
        st = xg_vk_alloc(&d->base, (size_t)(batch * mn) * 4, &sums);
    if (st == XG_OK)
        st = gemm_dispatch(d, trans, batch, m, n, k, splits, XG_GEMM_K_CHUNK,
                           a, b, (gemm_view){partial, 0, mn});
    xg_kernel_call sum = {.op = XG_OP_sum,
                          .in = {{partial, XG_F32}},
                          .out = {{sums, XG_F32}},
                          .p.reduce = {batch, splits, mn}};
    if (st == XG_OK)
        st = xg_backend_vulkan.kernels[XG_FAMILY_REDUCE](&d->base, &sum);
    xg_kernel_call put = {.op = XG_OP_copy_strided,
                          .in = {{sums, XG_F32}},
                          .out = {{c.buf, XG_F32}}};
    put.p.strided = (xg_strided_args){.ndim = 2, .n = batch * mn,
                                      .shape = {batch, mn},
                                      .in_stride = {mn, 1},
                                      .out_stride = {c.stride, 1},
                                      .out_offset = c.offset};
    if (st == XG_OK)
        st = xg_backend_vulkan.kernels[XG_FAMILY_STRIDED](&d->base, &put);
    xg_vk_free(&d->base, sums); /* kept until the queued work has run */
    xg_vk_free(&d->base, partial);
    return st;
}

/* One conv call: its sizes, scratch and chunking. */
typedef struct conv_plan {
    const xg_conv_args *a;
    int64_t cin_g, cout_g; /* channels per group */
    int64_t k, p;          /* GEMM depth K per group, pixels P per plane */
    int64_t plane_in;      /* h * w */
    int64_t cols_stride;   /* floats of columns per sample */
    int64_t chunk;         /* samples per chunk */
    bool unit;             /* the columns are x itself */
    xg_buffer *cols;       /* NULL when unit */
    xg_buffer *partial;    /* backward weight: [chunk, weight] */
} conv_plan;

/* Samples per chunk so that `per_sample` bytes each stay under the scratch
 * budget and the device's buffer limit: chunks of equal size, at least one
 * sample. */
static int64_t chunk_samples(const xg_vk_device *d, int64_t n,
                             int64_t per_sample)
{
    int64_t limit = (VkDeviceSize)XG_VK_CONV_SCRATCH < d->mem.max_buffer
                        ? XG_VK_CONV_SCRATCH
                        : (int64_t)d->mem.max_buffer;
    int64_t fit = per_sample > 0 ? limit / per_sample : n;
    if (fit < 1)
        fit = 1;
    int64_t chunks = (n + fit - 1) / fit;
    return (n + chunks - 1) / chunks;
}

static xg_status scratch(xg_vk_device *d, const char *op, int64_t floats,
                         xg_buffer **out)
{
    size_t bytes = (size_t)floats * sizeof(float);
    if ((VkDeviceSize)bytes > d->mem.max_buffer)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "%s: %zu bytes of columns for one sample exceed "
                            "the device's buffer limit of %llu", op, bytes,
                            (unsigned long long)d->mem.max_buffer);
    return xg_vk_alloc(&d->base, bytes, out);
}

static xg_status conv_prepare(xg_vk_device *d, const xg_kernel_call *call,
                              conv_plan *c)
{
    const xg_conv_args *a = &call->p.conv;
    const char *op = xg_op_table[call->op].name;
    *c = (conv_plan){
        .a = a,
        .cin_g = a->c_in / a->groups,
        .cout_g = a->c_out / a->groups,
        .k = a->c_in / a->groups * a->kh * a->kw,
        .p = a->oh * a->ow,
        .plane_in = a->h * a->w,
        .unit = a->kh == 1 && a->kw == 1 && a->stride_h == 1 &&
                a->stride_w == 1 && a->pad_h == 0 && a->pad_w == 0,
    };
    c->cols_stride = a->c_in * a->kh * a->kw * c->p;
    bool weight = call->op == XG_OP_conv2d_backward_weight;
    int64_t cols = c->unit ? 0 : c->cols_stride;
    int64_t partial = weight ? a->c_out * c->k : 0;
    int64_t per_sample = cols > partial ? cols : partial;
    c->chunk = c->unit && !weight ? a->n
                                  : chunk_samples(d, a->n, per_sample * 4);
    xg_status st = XG_OK;
    if (cols)
        st = scratch(d, op, c->chunk * cols, &c->cols);
    if (st == XG_OK && partial)
        st = scratch(d, op, c->chunk * partial, &c->partial);
    return st;
}

static void conv_release(xg_vk_device *d, conv_plan *c)
{
    xg_vk_free(&d->base, c->cols); /* queued work still completes */
    xg_vk_free(&d->base, c->partial);
}

/* OP_IM2COL (to_cols) or OP_COL2IM for samples [s0, s0 + count) of x or
 * dx and the column buffer: over the column rows of the chunk for im2col,
 * over its image planes for col2im (shaders/planes.glsl). */
static xg_status unfold(xg_vk_device *d, const conv_plan *c, bool to_cols,
                        xg_buffer *image, int64_t s0, int64_t count)
{
    const xg_conv_args *a = c->a;
    int64_t planes = count * a->c_in * (to_cols ? a->kh * a->kw : 1);
    uint32_t gx = groups(to_cols ? c->p : c->plane_in, XG_PLANE_WG);
    uint32_t gy = groups(planes, 1);
    struct {
        uint32_t planes, x_offset, c_in, h, w, oh, ow;
        int32_t kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
    } p = {u32(planes), u32(s0 * a->c_in * c->plane_in),
           u32(a->c_in), u32(a->h), u32(a->w), u32(a->oh), u32(a->ow),
           a->kh, a->kw, a->stride_h, a->stride_w, a->pad_h, a->pad_w,
           a->dil_h, a->dil_w};
    if (to_cols)
        return run(d, XG_VK_PIPE_conv2d, &p, sizeof p, gx, gy, image, NULL,
                   c->cols, NULL);
    return run(d, XG_VK_PIPE_conv2d_backward_input, &p, sizeof p, gx, gy,
               c->cols, NULL, image, NULL);
}

/* The columns of group g for samples from s0 on: the scratch buffer, or x
 * (dx) itself for a unit kernel. */
static gemm_view cols_view(const conv_plan *c, xg_buffer *image, int64_t s0,
                           int64_t g)
{
    if (c->unit)
        return (gemm_view){image, (s0 * c->a->c_in + g * c->cin_g) * c->p,
                           c->a->c_in * c->p};
    return (gemm_view){c->cols, g * c->k * c->p, c->cols_stride};
}

/* Channels [g * per_group, ...) of samples from s0 on, in an NCHW tensor
 * with `channels` planes of `plane` floats per sample. */
static gemm_view nchw_view(xg_buffer *buf, int64_t s0, int64_t channels,
                           int64_t g, int64_t per_group, int64_t plane)
{
    return (gemm_view){buf, (s0 * channels + g * per_group) * plane,
                       channels * plane};
}

/* One chunk of conv2d: in x, weight -> out y; conv2d_bias then adds
 * in[2] to each output plane, conv2d_bias_relu also clamps at 0. */
static xg_status forward_chunk(xg_vk_device *d, const xg_kernel_call *call,
                               const conv_plan *c, int64_t s0, int64_t count)
{
    const xg_conv_args *a = c->a;
    xg_status st = c->unit ? XG_OK
                           : unfold(d, c, true, call->in[0].buf, s0, count);
    for (int64_t g = 0; g < a->groups && st == XG_OK; g++) {
        gemm_view w = {call->in[1].buf, g * c->cout_g * c->k, 0};
        st = gemm(d, "nn", count, c->cout_g, c->p, c->k, w,
                  cols_view(c, call->in[0].buf, s0, g),
                  nchw_view(call->out[0].buf, s0, a->c_out, g, c->cout_g, c->p));
    }
    if (st != XG_OK || call->op == XG_OP_conv2d)
        return st;
    struct {
        uint32_t planes, y_offset, c_out, plane;
    } p = {u32(count * a->c_out), u32(s0 * a->c_out * c->p), u32(a->c_out),
           u32(c->p)};
    return run(d, call->op == XG_OP_conv2d_bias ? XG_VK_PIPE_conv2d_bias
                                                : XG_VK_PIPE_conv2d_bias_relu,
               &p, sizeof p,
               groups(c->p, XG_PLANE_WG), groups(count * a->c_out, 1),
               call->in[2].buf, NULL, call->out[0].buf, NULL);
}

/* One chunk of conv2d_backward_input: in dy, weight -> out dx. */
static xg_status input_chunk(xg_vk_device *d, const xg_kernel_call *call,
                             const conv_plan *c, int64_t s0, int64_t count)
{
    const xg_conv_args *a = c->a;
    xg_status st = XG_OK;
    for (int64_t g = 0; g < a->groups && st == XG_OK; g++) {
        gemm_view w = {call->in[1].buf, g * c->cout_g * c->k, 0};
        st = gemm(d, "tn", count, c->k, c->p, c->cout_g, w,
                  nchw_view(call->in[0].buf, s0, a->c_out, g, c->cout_g, c->p),
                  cols_view(c, call->out[0].buf, s0, g));
    }
    return st != XG_OK || c->unit
               ? st
               : unfold(d, c, false, call->out[0].buf, s0, count);
}

/* One chunk of conv2d_backward_weight: in x, dy -> out dweight, which the
 * first chunk overwrites and the others add to. */
static xg_status weight_chunk(xg_vk_device *d, const xg_kernel_call *call,
                              const conv_plan *c, int64_t s0, int64_t count)
{
    const xg_conv_args *a = c->a;
    int64_t wsize = a->c_out * c->k;
    xg_status st = c->unit ? XG_OK
                           : unfold(d, c, true, call->in[0].buf, s0, count);
    for (int64_t g = 0; g < a->groups && st == XG_OK; g++) {
        gemm_view part = {c->partial, g * c->cout_g * c->k, wsize};
        st = gemm(d, "nt", count, c->cout_g, c->k, c->p,
                  nchw_view(call->in[1].buf, s0, a->c_out, g, c->cout_g, c->p),
                  cols_view(c, call->in[0].buf, s0, g), part);
    }
    struct { uint32_t count, samples, accumulate; } p = {
        u32(wsize), u32(count), s0 > 0};
    return st != XG_OK ? st
                       : run(d, XG_VK_PIPE_conv2d_backward_weight, &p,
                             sizeof p, groups(wsize, XG_WG_SIZE), 1,
                             c->partial, NULL, call->out[0].buf, NULL);
}

typedef xg_status (*conv_chunk_fn)(xg_vk_device *d,
                                   const xg_kernel_call *call,
                                   const conv_plan *c, int64_t s0,
                                   int64_t count);

static xg_status conv(xg_vk_device *d, const xg_kernel_call *call,
                      conv_chunk_fn chunk)
{
    conv_plan c;
    xg_status st = conv_prepare(d, call, &c);
    for (int64_t s0 = 0; s0 < c.a->n && st == XG_OK; s0 += c.chunk) {
        int64_t count = c.a->n - s0 < c.chunk ? c.a->n - s0 : c.chunk;
        st = chunk(d, call, &c, s0, count);
    }
    conv_release(d, &c);
    return st;
}

/* ---- pooling and dropout ------------------------------------------------- */

/* Over the n * c planes, and the pixels of an output plane (forward) or
 * an input plane (backward). */
static xg_status pool(xg_vk_device *d, const xg_kernel_call *call,
                      xg_vk_pipe pipe, bool backward)
{
    const xg_pool_args *a = &call->p.pool;
    struct {
        uint32_t planes, h, w, oh, ow;
        int32_t kh, kw, stride_h, stride_w, pad_h, pad_w;
    } p = {u32(a->n * a->c), u32(a->h), u32(a->w), u32(a->oh), u32(a->ow),
           a->kh, a->kw, a->stride_h, a->stride_w, a->pad_h, a->pad_w};
    assert(a->h * a->w <= INT32_MAX);
    uint32_t gx = groups(backward ? a->h * a->w : a->oh * a->ow, XG_PLANE_WG);
    return run(d, pipe, &p, sizeof p, gx, groups(a->n * a->c, 1), call->in[0].buf,
               call->in[1].buf, call->out[0].buf, call->out[1].buf);
}

/* scale = 1 / (1 - p) in float on the host, as the CPU reference computes
 * it, so that kept values match bit for bit. */
static xg_status dropout(xg_vk_device *d, const xg_kernel_call *call)
{
    const xg_dropout_args *a = &call->p.dropout;
    struct {
        uint32_t n, seed_lo, seed_hi, offset_lo, offset_hi;
        float p, scale;
    } p = {u32(a->n),
           (uint32_t)a->seed,
           (uint32_t)(a->seed >> 32),
           (uint32_t)a->offset,
           (uint32_t)(a->offset >> 32),
           a->p,
           1.0f / (1.0f - a->p)};
    return run(d, XG_VK_PIPE_dropout, &p, sizeof p,
               groups((a->n + XG_RNG_BLOCK - 1) / XG_RNG_BLOCK, XG_WG_SIZE), 1,
               call->in[0].buf, NULL, call->out[0].buf, NULL);
}

xg_status xg_vk_cnn(xg_vk_device *d, const xg_kernel_call *call)
{
    switch (call->op) {
    case XG_OP_conv2d:
    case XG_OP_conv2d_bias:
    case XG_OP_conv2d_bias_relu:
        return conv(d, call, forward_chunk);
    case XG_OP_conv2d_backward_input:
        return conv(d, call, input_chunk);
    case XG_OP_conv2d_backward_weight:
        return conv(d, call, weight_chunk);
    case XG_OP_max_pool2d:
        return pool(d, call, XG_VK_PIPE_max_pool2d, false);
    case XG_OP_max_pool2d_backward:
        return pool(d, call, XG_VK_PIPE_max_pool2d_backward, true);
    case XG_OP_avg_pool2d:
        return pool(d, call, XG_VK_PIPE_avg_pool2d, false);
    case XG_OP_avg_pool2d_backward:
        return pool(d, call, XG_VK_PIPE_avg_pool2d_backward, true);
    case XG_OP_dropout:
        return dropout(d, call);
    default:
        assert(!"xg_vk_cnn: not a conv, pool or dropout op");
        return xg_set_error(XG_ERR_UNSUPPORTED, "vulkan: op %s",
                            xg_op_table[call->op].name);
    }
}
