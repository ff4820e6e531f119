/* Convolution, pooling and dropout on NCHW images, with the semantics of
 * api/core/backend.h (struct xg_conv_args, xg_pool_args, xg_dropout_args).
 *
 * Convolution is lowered to GEMM through im2col.
 * reference: Chellapilla, Puri & Simard, "High Performance Convolutional
 * Neural Networks for Document Processing", IWFHR 2006; Caffe's
 * im2col_cpu / col2im_cpu.
 * For one sample and one group, the columns matrix cols [K, P], with
 * K = (c_in / groups) * kh * kw and P = oh * ow, holds in row (c, p, q) and
 * column (i, j) the input pixel that weight tap (c, p, q) meets at output
 * (i, j), or 0 where that pixel is padding. Then
 *   forward          y_g [c_out_g, P] = W_g [c_out_g, K] cols
 *   backward input   dcols [K, P] = W_g^T dy_g, added back into dx (col2im)
 *   backward weight  dW_g [c_out_g, K] = sum over samples of dy_g cols^T
 * A 1x1 kernel with stride 1 and no padding needs no unfolding: cols is x
 * (and in the forward and input gradient, dx is the GEMM's output).
 * Rather than one small GEMM per sample, each GEMM runs over a chunk of
 * samples at once (see "convolution jobs" below).
 *
 * Threads: with at least as many chunks as threads, the chunks are split
 * over the pool and every GEMM runs serially in its thread (one OpenBLAS
 * thread), each thread unfolding into its own buffers (conv_scratch of the
 * device). With fewer chunks, they run one after another and each GEMM
 * uses every thread. Results do not depend on the thread count. */
#include "cpu_impl.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- scratch ---------------------------------------------------------- */

/* At least `floats` floats of device scratch, grown as needed and kept until
 * the device closes (its contents are not kept across calls). */
static float *conv_scratch(cpu_device *dev, size_t floats)
{
    if (dev->conv_scratch_floats < floats) {
        free(dev->conv_scratch);
        size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
        dev->conv_scratch = aligned_alloc(64, bytes);
        dev->conv_scratch_floats = dev->conv_scratch ? floats : 0;
    }
    return dev->conv_scratch;
}

/* ---- im2col and col2im ------------------------------------------------ */

/* Outputs [*j0, *j1) of `out` whose input coordinate j * stride + off lies
 * inside [0, size). */
static void valid_span(int64_t out, int64_t size, int stride, int64_t off,
                       int64_t *j0, int64_t *j1)
{
    int64_t lo = off >= 0 ? 0 : (-off + stride - 1) / stride;
    int64_t hi = size - off <= 0 ? 0 : (size - off - 1) / stride + 1;
    *j0 = lo < out ? lo : out;
    *j1 = hi < out ? hi : out;
    if (*j1 < *j0)
        *j1 = *j0;
}

/* dst[0 .. n) = src[0 .. n) and dst[0 .. n) = 0 for the short runs of
 * im2col (an output row: tens of floats), where a libc call per run would
 * cost more than the copy. Eight floats go as one unaligned vector (GCC's
 * vector extension; a fixed 32-byte memcpy is cut into two 16-byte moves
 * even in the AVX2 clone, and these copies are store-bound). CPU_OPAQUE,
 * an empty asm on the index, keeps GCC from turning the loops back into
 * memmove / memset calls. */
#if defined(__GNUC__)
typedef float cpu_f32x8 __attribute__((vector_size(32), aligned(4),
                                        may_alias));
#define CPU_OPAQUE(i) __asm__("" : "+r"(i))
#else
#define CPU_OPAQUE(i) ((void)0)
#endif

CPU_INLINE void copy_floats(float *restrict dst, const float *restrict src,
                            int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
#if defined(__GNUC__)
        *(cpu_f32x8 *)(void *)(dst + i) =
            *(const cpu_f32x8 *)(const void *)(src + i);
#else
        memcpy(dst + i, src + i, 8 * sizeof *dst);
#endif
        CPU_OPAQUE(i);
    }
    for (; i < n; i++) {
        dst[i] = src[i];
        CPU_OPAQUE(i);
    }
}

CPU_INLINE void zero_floats(float *dst, int64_t n)
{
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
#if defined(__GNUC__)
        *(cpu_f32x8 *)(void *)(dst + i) = (cpu_f32x8){0};
#else
        memset(dst + i, 0, 8 * sizeof *dst);
#endif
        CPU_OPAQUE(i);
    }
    for (; i < n; i++) {
        dst[i] = 0.0f;
        CPU_OPAQUE(i);
    }
}

/* Row (p, q) of one input channel's columns: row[i * ow + j] =
 * plane[i * stride_h - pad_h + p * dil_h, j * stride_w - pad_w + q * dil_w],
 * 0 outside the plane. The rows of outputs that meet only padding are
 * cleared in one run before and after the others; at unit stride with the
 * whole output row inside the plane (the bulk of a convolution without
 * padding), each output row is one copy. */
CPU_INLINE void im2col_row(const xg_conv_args *a, const float *plane, int p,
                           int q, float *row)
{
    int64_t off = (int64_t)q * a->dil_w - a->pad_w, j0, j1;
    int64_t top = (int64_t)p * a->dil_h - a->pad_h, i0, i1;
    valid_span(a->ow, a->w, a->stride_w, off, &j0, &j1);
    valid_span(a->oh, a->h, a->stride_h, top, &i0, &i1);
    zero_floats(row, i0 * a->ow);
    const float *line = i1 > i0 ? plane + (i0 * a->stride_h + top) * a->w
                                : plane;
    int64_t step = a->stride_h * a->w;
    if (a->stride_w == 1 && j0 == 0 && j1 == a->ow) {
        for (int64_t i = i0; i < i1; i++, line += step)
            copy_floats(row + i * a->ow, line + off, a->ow);
    } else {
        for (int64_t i = i0; i < i1; i++, line += step) {
            float *r = row + i * a->ow;
            zero_floats(r, j0);
            if (a->stride_w == 1)
                copy_floats(r + j0, line + j0 + off, j1 - j0);
            else
                for (int64_t j = j0; j < j1; j++)
                    r[j] = line[j * a->stride_w + off];
            zero_floats(r + j1, a->ow - j1);
        }
    }
    zero_floats(row + i1 * a->ow, (a->oh - i1) * a->ow);
}

/* The transpose of im2col_row: plane[...] += row[i * ow + j]. */
CPU_INLINE void col2im_row(const xg_conv_args *a, const float *restrict row,
                           int p, int q, float *restrict plane)
{
    int64_t off = (int64_t)q * a->dil_w - a->pad_w, j0, j1;
    valid_span(a->ow, a->w, a->stride_w, off, &j0, &j1);
    for (int64_t i = 0; i < a->oh; i++, row += a->ow) {
        int64_t ih = i * a->stride_h - a->pad_h + (int64_t)p * a->dil_h;
        if (ih < 0 || ih >= a->h)
            continue;
        float *restrict line = plane + ih * a->w;
        if (a->stride_w == 1) /* unit stride: a loop that vectorises */
            for (int64_t j = j0; j < j1; j++)
                line[j + off] += row[j];
        else
            for (int64_t j = j0; j < j1; j++)
                line[j * a->stride_w + off] += row[j];
    }
}

/* Rows [channels * kh * kw] of columns from `channels` planes at x: row r
 * of the unfolding starts at cols + r * ld (ld >= oh * ow), so the rows
 * of several samples can sit side by side in one matrix. */
CPU_INLINE void im2col(const xg_conv_args *a, const float *x,
                       int64_t channels, float *cols, int64_t ld)
{
    int64_t plane = a->h * a->w;
    for (int64_t c = 0; c < channels; c++)
        for (int p = 0; p < a->kh; p++)
            for (int q = 0; q < a->kw; q++, cols += ld)
                im2col_row(a, x + c * plane, p, q, cols);
}

/* dx (`channels` planes) = col2im(cols), rows ld apart as in im2col:
 * each plane is cleared just before its taps add into it, while it is
 * about to be in cache anyway. */
CPU_INLINE void col2im(const xg_conv_args *a, const float *cols,
                       int64_t channels, int64_t ld, float *dx)
{
    int64_t plane = a->h * a->w;
    for (int64_t c = 0; c < channels; c++) {
        memset(dx + c * plane, 0, (size_t)plane * sizeof *dx);
        for (int p = 0; p < a->kh; p++)
            for (int q = 0; q < a->kw; q++, cols += ld)
                col2im_row(a, cols, p, q, dx + c * plane);
    }
}

/* ---- convolution jobs -------------------------------------------------
 * The samples are cut into `chunks` chunks, chunk c holding samples
 * [n c / chunks, n (c + 1) / chunks), and a chunk into runs of at most
 * `span` samples. One run, one group is one GEMM call:
 *   forward          y_s [c_out_g, P] = W_g cols_s, batched over the run's
 *                    s samples (each sample's columns [K, P] one after
 *                    another, W shared, each y_s written in place in y)
 *   backward input   dcols_s [K, P] = W_g^T dy_s, batched likewise with
 *                    dy_s read in place, then col2im per sample
 *   backward weight  dW_c [c_out_g, K] += dy cols^T  (depth s P), the
 *                    columns of s samples side by side as [K, s P] and dy
 *                    of the run gathered into [c_out_g, s P]
 * span keeps a thread's buffers (columns and the gathered dy) within
 * CONV_RUN_FLOATS, about half of a core's L2: small convolutions (few
 * channels) get long runs and large GEMMs, while for a large one a run is
 * one sample, whose GEMM is large already and whose buffers then stay in
 * cache (measured: runs of several such samples, their columns past L2,
 * were slower). The weight gradient has CONV_WEIGHT_CHUNKS chunks whatever
 * the thread count and sums their dW_c in chunk order, so its bits do not
 * depend on the threads; for the forward and dx the runs are the chunks,
 * balanced over the threads (an output element's GEMM sum runs over the
 * same depth in the same order whatever the run). */

enum {
    CONV_RUN_FLOATS = 1 << 18, /* 1 MB per thread */
    CONV_WEIGHT_CHUNKS = 8,
};

typedef struct conv_job {
    cpu_device *dev;
    const xg_conv_args *a;
    int64_t cin_g, cout_g; /* channels per group */
    int64_t k, p;          /* GEMM depth K and columns P per group */
    int unit;              /* 1x1, stride 1, no padding: x is the columns */
    const float *in0, *in1;
    float *out;
    int64_t chunks;        /* chunks of samples */
    int64_t span;          /* most samples in one run (one GEMM) */
    float *scratch;        /* per thread: columns [K, span P], then
                              [c_out_g, span P] (dy of a weight run) */
    float *partial;        /* backward weight: one weight-sized sum per
                              chunk > 0 */
    int serial_gemm;       /* chunks split over threads: each GEMM runs
                              serially in its thread */
} conv_job;

static float *thread_cols(const conv_job *j, int thread)
{
    return j->scratch +
           (size_t)thread * (size_t)((j->k + j->cout_g) * j->span * j->p);
}

static float *thread_mat(const conv_job *j, int thread)
{
    return thread_cols(j, thread) + (size_t)(j->k * j->span * j->p);
}

/* The first sample of chunk c and its sample count. */
static int64_t chunk_samples(const conv_job *j, int64_t c, int64_t *count)
{
    int64_t b0 = j->a->n * c / j->chunks;
    *count = j->a->n * (c + 1) / j->chunks - b0;
    return b0;
}

/* Columns [K, ns P] of group `grp` of samples b0 .. b0 + ns - 1, in
 * `thread`'s buffer (or x itself: one sample, 1x1). */
CPU_CLONES static const float *chunk_cols(const conv_job *j, int64_t b0,
                                          int64_t ns, int64_t grp,
                                          int thread)
{
    const xg_conv_args *a = j->a;
    int64_t plane = a->h * a->w;
    const float *x = j->in0 + (b0 * a->c_in + grp * j->cin_g) * plane;
    if (j->unit && ns == 1)
        return x;
    float *cols = thread_cols(j, thread);
    for (int64_t s = 0; s < ns; s++)
        im2col(a, x + s * a->c_in * plane, j->cin_g, cols + s * j->p,
               ns * j->p);
    return cols;
}

/* dy of group `grp` of samples b0 .. b0 + ns - 1 as one [c_out_g, ns P]
 * matrix: dy itself for one sample, else gathered into `thread`'s
 * buffer. */
static const float *chunk_dy(const conv_job *j, const float *dy, int64_t b0,
                             int64_t ns, int64_t grp, int thread)
{
    const xg_conv_args *a = j->a;
    const float *src = dy + (b0 * a->c_out + grp * j->cout_g) * j->p;
    if (ns == 1)
        return src;
    float *m = thread_mat(j, thread);
    for (int64_t o = 0; o < j->cout_g; o++)
        for (int64_t s = 0; s < ns; s++)
            memcpy(m + (o * ns + s) * j->p, src + (s * a->c_out + o) * j->p,
                   (size_t)j->p * sizeof *m);
    return m;
}

/* The GEMM of one group: C (+)= op(A) op(B), C [m, n], depth k. */
static void group_gemm(const conv_job *j, int thread, int64_t m, int64_t n,
                       int64_t k, int ta, int tb, const float *A,
                       const float *B, float *C, int accumulate)
{
    xg_gemm_args g = {.batch = 1, .m = m, .n = n, .k = k, .trans_a = ta,
                      .trans_b = tb, .alpha = 1.0f};
    xg_status st = cpu_sgemm(j->dev, &g, A, B, C, accumulate,
                             j->serial_gemm ? thread : -1);
    assert(st == XG_OK); /* sizes were checked in conv_prepare */
    (void)st;
}

/* The same GEMM for each of `ns` samples at once: C_s = op(W) B_s, W
 * shared, B_s and C_s `sb` and `sc` floats apart. A sample's product runs
 * over the same depth in the same order as alone. */
static void sample_gemm(const conv_job *j, int thread, int64_t ns, int64_t m,
                        int64_t k, int ta, const float *W, const float *B,
                        int64_t sb, float *C, int64_t sc)
{
    xg_gemm_args g = {.batch = ns, .m = m, .n = j->p, .k = k,
                      .stride_a = 0, .stride_b = sb, .stride_c = sc,
                      .trans_a = ta, .alpha = 1.0f};
    xg_status st = cpu_sgemm(j->dev, &g, W, B, C, 0,
                             j->serial_gemm ? thread : -1);
    assert(st == XG_OK); /* sizes were checked in conv_prepare */
    (void)st;
}

/* Columns of group `grp` of samples b0 .. b0 + ns - 1 as ns matrices
 * [K, P], *stride floats apart: x itself for a 1x1 kernel, else unfolded
 * into `thread`'s buffer. */
CPU_CLONES static const float *sample_cols(const conv_job *j, int64_t b0,
                                           int64_t ns, int64_t grp,
                                           int thread, int64_t *stride)
{
    const xg_conv_args *a = j->a;
    int64_t plane = a->h * a->w;
    const float *x = j->in0 + (b0 * a->c_in + grp * j->cin_g) * plane;
    if (j->unit) {
        *stride = a->c_in * plane;
        return x;
    }
    float *cols = thread_cols(j, thread);
    for (int64_t s = 0; s < ns; s++)
        im2col(a, x + s * a->c_in * plane, j->cin_g, cols + s * j->k * j->p,
               j->p);
    *stride = j->k * j->p;
    return cols;
}

/* reference: y[b, o] = sum over the group's c, p, q of x * w (backend.h).
 * Each sample's product is written into y directly. */
static void forward_range(const void *ctx, int64_t begin, int64_t end,
                          int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    for (int64_t c = begin; c < end; c++) {
        int64_t ns, b0 = chunk_samples(j, c, &ns);
        for (int64_t grp = 0; grp < a->groups; grp++) {
            int64_t sb;
            const float *cols = sample_cols(j, b0, ns, grp, thread, &sb);
            const float *w = j->in1 + grp * j->cout_g * j->k;
            float *y = j->out + (b0 * a->c_out + grp * j->cout_g) * j->p;
            sample_gemm(j, thread, ns, j->cout_g, j->k, 0, w, cols, sb, y,
                        a->c_out * j->p);
        }
    }
}

/* reference: dx = sum over taps of w^T dy placed where im2col took x. The
 * columns of each sample come from dy in place; a 1x1 kernel's are dx
 * itself. */
CPU_CLONES static void backward_input_range(const void *ctx, int64_t begin,
                                            int64_t end, int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    int64_t plane = a->h * a->w;
    for (int64_t c = begin; c < end; c++) {
        int64_t ns, b0 = chunk_samples(j, c, &ns);
        float *dx = j->out + b0 * a->c_in * plane;
        for (int64_t grp = 0; grp < a->groups; grp++) {
            const float *dy =
                j->in0 + (b0 * a->c_out + grp * j->cout_g) * j->p;
            const float *w = j->in1 + grp * j->cout_g * j->k;
            float *dxg = dx + grp * j->cin_g * plane;
            if (j->unit) {
                sample_gemm(j, thread, ns, j->k, j->cout_g, 1, w, dy,
                            a->c_out * j->p, dxg, a->c_in * plane);
                continue;
            }
            float *cols = thread_cols(j, thread);
            sample_gemm(j, thread, ns, j->k, j->cout_g, 1, w, dy,
                        a->c_out * j->p, cols, j->k * j->p);
            for (int64_t s = 0; s < ns; s++)
                col2im(a, cols + s * j->k * j->p, j->cin_g, j->p,
                       dxg + s * a->c_in * plane);
        }
    }
}

/* Chunk c of the weight gradient: the sum over its samples, run by run,
 * into dweight itself (chunk 0) or its partial buffer. */
static void backward_weight_range(const void *ctx, int64_t begin, int64_t end,
                                  int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    int64_t wsize = a->c_out * j->k;
    for (int64_t c = begin; c < end; c++) {
        float *dw = c == 0 ? j->out : j->partial + (c - 1) * wsize;
        int64_t count, first = chunk_samples(j, c, &count);
        for (int64_t b0 = first; b0 < first + count; b0 += j->span) {
            int64_t left = first + count - b0;
            int64_t ns = left < j->span ? left : j->span;
            for (int64_t grp = 0; grp < a->groups; grp++) {
                const float *cols = chunk_cols(j, b0, ns, grp, thread);
                const float *dy = chunk_dy(j, j->in1, b0, ns, grp, thread);
                group_gemm(j, thread, j->cout_g, j->k, ns * j->p, 0, 1, dy,
                           cols, dw + grp * j->cout_g * j->k, b0 > first);
            }
        }
    }
}

/* Fills in the job's sizes, chunks and scratch; XG_ERR_TOO_LARGE past the
 * BLAS index range, XG_ERR_OUT_OF_MEMORY without scratch. */
static xg_status conv_prepare(xg_backend_device *dev,
                              const xg_kernel_call *call, conv_job *j)
{
    const xg_conv_args *a = &call->p.conv;
    int threads = cpu_pool_threads(cpu_dev(dev)->pool);
    int weight = call->op == XG_OP_conv2d_backward_weight;
    *j = (conv_job){.dev = cpu_dev(dev), .a = a,
                    .cin_g = a->c_in / a->groups,
                    .cout_g = a->c_out / a->groups,
                    .k = a->c_in / a->groups * a->kh * a->kw,
                    .p = a->oh * a->ow,
                    .unit = a->kh == 1 && a->kw == 1 && a->stride_h == 1 &&
                            a->stride_w == 1 && a->pad_h == 0 && a->pad_w == 0,
                    .in0 = cpu_f32(call->in[0].buf), .in1 = cpu_f32(call->in[1].buf),
                    .out = cpu_f32(call->out[0].buf)};
    if (j->k > INT_MAX || j->p > INT_MAX || j->cout_g > INT_MAX)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: a [%lld x %lld] column "
                            "matrix exceeds the GEMM index range",
                            xg_op_table[call->op].name, (long long)j->k,
                            (long long)j->p);
    if (j->k + j->cout_g > INT64_MAX / j->p)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: %lld x %lld columns are "
                            "too large", xg_op_table[call->op].name,
                            (long long)j->k, (long long)j->p);
    /* Samples per run within the budget; then the chunks: the runs,
     * rounded up to a multiple of the threads (forward, dx: balanced), or
     * CONV_WEIGHT_CHUNKS whatever the threads (dweight: its sums must not
     * depend on them). */
    int64_t per_sample = (j->k + j->cout_g) * j->p;
    int64_t fit = CONV_RUN_FLOATS / per_sample;
    fit = fit < 1 ? 1 : fit < a->n ? fit : a->n;
    int64_t chunks = (a->n + fit - 1) / fit;
    chunks = weight ? CONV_WEIGHT_CHUNKS
                    : (chunks + threads - 1) / threads * threads;
    j->chunks = chunks < a->n ? chunks : a->n;
    j->span = weight ? fit : (a->n + j->chunks - 1) / j->chunks;
    j->serial_gemm = threads > 1 && j->chunks >= threads;
    /* Columns and a dy / y matrix for each thread that runs chunks,
     * partial sums for chunks > 0. */
    int64_t users = j->serial_gemm ? threads : 1;
    if (j->span * j->p > INT_MAX ||
        per_sample >
            (int64_t)(SIZE_MAX / 4 / sizeof(float)) / j->span / users)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: %lld x %lld columns are "
                            "too large", xg_op_table[call->op].name,
                            (long long)j->k, (long long)j->p);
    size_t cols = (size_t)(users * per_sample * j->span);
    size_t partial = weight ? (size_t)((j->chunks - 1) * a->c_out * j->k) : 0;
    float *s = conv_scratch(j->dev, cols + partial);
    if (!s)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory for"
                            " %zu floats of columns", xg_op_table[call->op].name,
                            cols + partial);
    j->scratch = s;
    j->partial = s + cols;
    return XG_OK;
}

/* Runs fn over the chunks, split over the threads (each GEMM serial) or
 * one after another (each GEMM over the pool). */
static xg_status conv_run(conv_job *j, cpu_range_fn fn)
{
    if (!j->serial_gemm) {
        fn(j, 0, j->chunks, 0);
        return XG_OK;
    }
    xg_status st = cpu_sgemm_serial_begin(j->dev);
    if (st != XG_OK)
        return st;
    /* multiply-adds of a chunk's GEMMs plus its unfolding */
    int64_t cost = j->a->groups * (j->cout_g + 1) * j->k * j->p *
                   ((j->a->n + j->chunks - 1) / j->chunks);
    cpu_parallel_for(j->dev->pool, j->chunks, cost, 1, fn, j);
    cpu_sgemm_serial_end(j->dev);
    return XG_OK;
}

xg_status cpu_conv2d(xg_backend_device *dev, const xg_kernel_call *call)
{
    conv_job j;
    xg_status st = conv_prepare(dev, call, &j);
    return st != XG_OK ? st : conv_run(&j, forward_range);
}

xg_status cpu_conv2d_backward_input(xg_backend_device *dev,
                                    const xg_kernel_call *call)
{
    conv_job j;
    xg_status st = conv_prepare(dev, call, &j);
    return st != XG_OK ? st : conv_run(&j, backward_input_range);
}

/* dst[i] += src[i] for the partial sums, chunk by chunk. */
typedef struct sum_job {
    float *dst;
    const float *src;
    int64_t count, stride;
} sum_job;

static void sum_partials_range(const void *ctx, int64_t begin, int64_t end,
                               int thread)
{
    (void)thread;
    const sum_job *s = ctx;
    for (int64_t c = 0; c < s->count; c++)
        for (int64_t i = begin; i < end; i++)
            s->dst[i] += s->src[c * s->stride + i];
}

xg_status cpu_conv2d_backward_weight(xg_backend_device *dev,
                                     const xg_kernel_call *call)
{
    conv_job j;
    xg_status st = conv_prepare(dev, call, &j);
    if (st == XG_OK)
        st = conv_run(&j, backward_weight_range);
    if (st != XG_OK || j.chunks == 1)
        return st;
    int64_t wsize = j.a->c_out * j.k;
    sum_job s = {j.out, j.partial, j.chunks - 1, wsize};
    cpu_parallel_elements(j.dev->pool, wsize, j.chunks, sum_partials_range,
                          &s);
    return XG_OK;
}

/* ---- pooling ---------------------------------------------------------- */

/* The window of output (i, j) clipped to the plane: rows [*r0, *r1), columns
 * [*c0, *c1); never empty, since padding <= kernel / 2. */
static void pool_window(const xg_pool_args *a, int64_t i, int64_t j,
                        int64_t *r0, int64_t *r1, int64_t *c0, int64_t *c1)
{
    int64_t top = i * a->stride_h - a->pad_h, left = j * a->stride_w - a->pad_w;
    *r0 = top > 0 ? top : 0;
    *c0 = left > 0 ? left : 0;
    *r1 = top + a->kh < a->h ? top + a->kh : a->h;
    *c1 = left + a->kw < a->w ? left + a->kw : a->w;
    assert(*r0 < *r1 && *c0 < *c1);
}

/* Planes [begin, end) of a POOL call; in[0]/out[0] are [planes, ...]. */
typedef void (*pool_plane_fn)(const xg_pool_args *a, const xg_kernel_call *c,
                              int64_t plane);

typedef struct pool_job {
    const xg_kernel_call *call;
    pool_plane_fn fn;
} pool_job;

static void pool_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const pool_job *j = ctx;
    for (int64_t plane = begin; plane < end; plane++)
        j->fn(&j->call->p.pool, j->call, plane);
}

static xg_status pool_run(xg_backend_device *dev, const xg_kernel_call *call,
                          pool_plane_fn fn)
{
    const xg_pool_args *a = &call->p.pool;
    pool_job j = {call, fn};
    cpu_parallel_rows(cpu_dev(dev)->pool, a->n * a->c,
                      a->oh * a->ow * a->kh * a->kw + a->h * a->w, pool_range,
                      &j);
    return XG_OK;
}

/* One step of a running maximum: v (at index k) replaces m (at *best) when
 * it is larger, or the first NaN. Written with bit masks, not selects, so
 * that the compiler emits no branch: on real data these comparisons are
 * random and every mispredicted branch would cost more than the work. */
static inline void max_step(float v, int32_t k, float *m, int32_t *best)
{
    uint32_t take = (uint32_t)0 - (uint32_t)((v > *m) |
                                             ((v != v) & (*m == *m)));
    uint32_t vb, mb;
    memcpy(&vb, &v, sizeof vb);
    memcpy(&mb, m, sizeof mb);
    mb = (vb & take) | (mb & ~take);
    memcpy(m, &mb, sizeof mb);
    *best = (int32_t)(((uint32_t)k & take) | ((uint32_t)*best & ~take));
}

/* reference: PyTorch max_pool2d: the first maximum of the window in
 * row-major order; a NaN beats any number (the first NaN wins). */
static void max_pool_plane(const xg_pool_args *a, const xg_kernel_call *c,
                           int64_t plane)
{
    const float *x = cpu_f32(c->in[0].buf) + plane * a->h * a->w;
    float *y = cpu_f32(c->out[0].buf) + plane * a->oh * a->ow;
    int32_t *idx = cpu_i32(c->out[1].buf) + plane * a->oh * a->ow;
    for (int64_t i = 0; i < a->oh; i++)
        for (int64_t j = 0; j < a->ow; j++) {
            int64_t r0, r1, c0, c1;
            pool_window(a, i, j, &r0, &r1, &c0, &c1);
            int32_t best = (int32_t)(r0 * a->w + c0);
            float m = x[best];
            for (int64_t r = r0; r < r1; r++)
                for (int64_t q = c0; q < c1; q++)
                    max_step(x[r * a->w + q], (int32_t)(r * a->w + q), &m,
                             &best);
            y[i * a->ow + j] = m;
            idx[i * a->ow + j] = best;
        }
}

/* max_step as selects, so that a loop over a row of windows vectorises:
 * v at index k replaces m at *best when it is larger, or the first NaN. */
CPU_INLINE void max_select(float v, int32_t k, float *m, int32_t *best)
{
    /* (v NaN) - (m NaN) > 0: v NaN and m not; spelt so because GCC 12
     * does not vectorise the same test written with & */
    int take = (v > *m) | ((v != v) - (*m != *m) > 0);
    *m = take ? v : *m;
    *best = take ? k : *best;
}

/* The same for 2x2 windows at stride 2 without padding (the usual
 * MaxPool2d(2)): four candidates in row-major order per output, one pass
 * over each pair of input rows, vectorised over the row of windows. */
CPU_CLONES static void max_pool_plane_2x2(const xg_pool_args *a,
                                          const xg_kernel_call *c,
                                          int64_t plane)
{
    const float *x = cpu_f32(c->in[0].buf) + plane * a->h * a->w;
    float *y = cpu_f32(c->out[0].buf) + plane * a->oh * a->ow;
    int32_t *idx = cpu_i32(c->out[1].buf) + plane * a->oh * a->ow;
    const int32_t w = (int32_t)a->w, ow = (int32_t)a->ow;
    for (int64_t i = 0; i < a->oh; i++) {
        const float *restrict r0 = x + 2 * i * a->w, *restrict r1 = r0 + a->w;
        const int32_t k0 = (int32_t)(2 * i * a->w);
        float *restrict yr = y + i * a->ow;
        int32_t *restrict ir = idx + i * a->ow;
        for (int32_t j = 0; j < ow; j++) {
            int32_t k = k0 + 2 * j, best = k;
            float m = r0[2 * j];
            max_select(r0[2 * j + 1], k + 1, &m, &best);
            max_select(r1[2 * j], k + w, &m, &best);
            max_select(r1[2 * j + 1], k + w + 1, &m, &best);
            yr[j] = m;
            ir[j] = best;
        }
    }
}

/* dx[k] = sum of dy over the windows whose winner is k. */
static void max_pool_backward_plane(const xg_pool_args *a,
                                    const xg_kernel_call *c, int64_t plane)
{
    const float *dy = cpu_f32(c->in[0].buf) + plane * a->oh * a->ow;
    const int32_t *idx = cpu_i32(c->in[1].buf) + plane * a->oh * a->ow;
    float *dx = cpu_f32(c->out[0].buf) + plane * a->h * a->w;
    memset(dx, 0, (size_t)(a->h * a->w) * sizeof *dx);
    for (int64_t k = 0; k < a->oh * a->ow; k++)
        dx[idx[k]] += dy[k];
}

/* The same for 2x2 windows at stride 2 without padding, which tile the
 * plane: each pixel lies in at most one window, so one pass writes every
 * dx, 0 + dy where the window's index names the pixel (the bits of the
 * sum above) and 0 elsewhere, with no clearing pass. An index outside its
 * own window (the contract allows any index in the plane) sends the plane
 * to the general loop. */
CPU_CLONES static void max_pool_backward_plane_2x2(const xg_pool_args *a,
                                                   const xg_kernel_call *c,
                                                   int64_t plane)
{
    const float *dy = cpu_f32(c->in[0].buf) + plane * a->oh * a->ow;
    const int32_t *idx = cpu_i32(c->in[1].buf) + plane * a->oh * a->ow;
    float *dx = cpu_f32(c->out[0].buf) + plane * a->h * a->w;
    const int32_t w = (int32_t)a->w, ow = (int32_t)a->ow;
    int32_t outside = 0;
    for (int64_t i = 0; i < a->oh; i++) {
        const float *restrict g = dy + i * a->ow;
        const int32_t *restrict ir = idx + i * a->ow;
        float *restrict d0 = dx + 2 * i * a->w, *restrict d1 = d0 + a->w;
        const int32_t k0 = (int32_t)(2 * i * a->w);
        for (int32_t j = 0; j < ow; j++) {
            int32_t k = ir[j], at = k0 + 2 * j;
            float v = 0.0f + g[j];
            d0[2 * j] = k == at ? v : 0.0f;
            d0[2 * j + 1] = k == at + 1 ? v : 0.0f;
            d1[2 * j] = k == at + w ? v : 0.0f;
            d1[2 * j + 1] = k == at + w + 1 ? v : 0.0f;
            outside |= (k != at) & (k != at + 1) & (k != at + w) &
                       (k != at + w + 1);
        }
        for (int64_t q = 2 * a->ow; q < a->w; q++) /* odd width */
            d0[q] = d1[q] = 0.0f;
    }
    for (int64_t r = 2 * a->oh; r < a->h; r++) /* odd height */
        memset(dx + r * a->w, 0, (size_t)a->w * sizeof *dx);
    if (outside)
        max_pool_backward_plane(a, c, plane);
}

/* reference: PyTorch avg_pool2d with count_include_pad=True: the window's
 * sum (row-major) / (kh * kw). */
static void avg_pool_plane(const xg_pool_args *a, const xg_kernel_call *c,
                           int64_t plane)
{
    const float *x = cpu_f32(c->in[0].buf) + plane * a->h * a->w;
    float *y = cpu_f32(c->out[0].buf) + plane * a->oh * a->ow;
    const float area = (float)a->kh * (float)a->kw;
    for (int64_t i = 0; i < a->oh; i++)
        for (int64_t j = 0; j < a->ow; j++) {
            int64_t r0, r1, c0, c1;
            pool_window(a, i, j, &r0, &r1, &c0, &c1);
            float sum = 0.0f;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t q = c0; q < c1; q++)
                    sum += x[r * a->w + q];
            y[i * a->ow + j] = sum / area;
        }
}

/* dx = sum over the windows that hold a pixel of dy / (kh * kw). */
static void avg_pool_backward_plane(const xg_pool_args *a,
                                    const xg_kernel_call *c, int64_t plane)
{
    const float *dy = cpu_f32(c->in[0].buf) + plane * a->oh * a->ow;
    float *dx = cpu_f32(c->out[0].buf) + plane * a->h * a->w;
    const float area = (float)a->kh * (float)a->kw;
    memset(dx, 0, (size_t)(a->h * a->w) * sizeof *dx);
    for (int64_t i = 0; i < a->oh; i++)
        for (int64_t j = 0; j < a->ow; j++) {
            int64_t r0, r1, c0, c1;
            pool_window(a, i, j, &r0, &r1, &c0, &c1);
            float g = dy[i * a->ow + j] / area;
            for (int64_t r = r0; r < r1; r++)
                for (int64_t q = c0; q < c1; q++)
                    dx[r * a->w + q] += g;
        }
}

/* 2x2 windows at stride 2 without padding: the usual MaxPool2d(2). */
static int pool_pairs(const xg_pool_args *a)
{
    return a->kh == 2 && a->kw == 2 && a->stride_h == 2 && a->stride_w == 2 &&
           a->pad_h == 0 && a->pad_w == 0;
}

xg_status cpu_max_pool2d(xg_backend_device *dev, const xg_kernel_call *call)
{
    const xg_pool_args *a = &call->p.pool;
    assert(a->h * a->w <= INT32_MAX);
    return pool_run(dev, call,
                    pool_pairs(a) ? max_pool_plane_2x2 : max_pool_plane);
}

xg_status cpu_max_pool2d_backward(xg_backend_device *dev,
                                  const xg_kernel_call *call)
{
    const xg_pool_args *a = &call->p.pool;
    assert(a->h * a->w <= INT32_MAX);
    return pool_run(dev, call, pool_pairs(a) ? max_pool_backward_plane_2x2
                                             : max_pool_backward_plane);
}

xg_status cpu_avg_pool2d(xg_backend_device *dev, const xg_kernel_call *call)
{
    return pool_run(dev, call, avg_pool_plane);
}

xg_status cpu_avg_pool2d_backward(xg_backend_device *dev,
                                  const xg_kernel_call *call)
{
    return pool_run(dev, call, avg_pool_backward_plane);
}

/* ---- dropout ---------------------------------------------------------- */

/* y[k] = u[k] < p ? 0 : x[k] * scale for k < n. A bit mask rather than a
 * branch (vectorises, and a dropped NaN or infinity still gives 0). */
CPU_INLINE void dropout_apply(const float *x, const float *u, float *y,
                              int64_t n, float p, float scale)
{
    for (int64_t k = 0; k < n; k++) {
        float kept = x[k] * scale;
        uint32_t bits, keep = u[k] < p ? 0u : ~0u;
        memcpy(&bits, &kept, sizeof bits);
        bits &= keep;
        memcpy(&y[k], &bits, sizeof bits);
    }
}

/* reference: backend.h: out[i] = u_i < p ? 0 : in[i] * (1 / (1 - p)), u_i
 * element i of rand_uniform(0, 1) with this seed and offset. Ranges start at
 * multiples of 4 (cpu_parallel_elements), so each covers whole blocks. */
CPU_CLONES static void dropout_range(const void *ctx, int64_t begin,
                                     int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_dropout_args d = c->p.dropout;
    const float *x = cpu_f32(c->in[0].buf);
    float *y = cpu_f32(c->out[0].buf);
    const float scale = 1.0f / (1.0f - d.p);
    assert(begin % 4 == 0);
    for (int64_t i = begin; i < end; i += 4 * CPU_RNG_LANES) {
        int64_t n = end - i < 4 * CPU_RNG_LANES ? end - i : 4 * CPU_RNG_LANES;
        float u[4 * CPU_RNG_LANES];
        cpu_uniform_blocks(d.seed, d.offset + (uint64_t)i / 4,
                           (int)((n + 3) / 4), u);
        if (n == 4 * CPU_RNG_LANES) /* the usual case: a constant count */
            dropout_apply(x + i, u, y + i, 4 * CPU_RNG_LANES, d.p, scale);
        else
            dropout_apply(x + i, u, y + i, n, d.p, scale);
    }
}

xg_status cpu_dropout(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.dropout.n,
                          4 * CPU_COST_SIMPLE, dropout_range, call);
    return XG_OK;
}
