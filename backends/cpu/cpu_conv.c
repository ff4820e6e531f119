/* Convolution, pooling and dropout on NCHW images, with the semantics of
 * api/core/backend.h (struct xg_conv_args, xg_pool_args, xg_dropout_args).
 *
 * Convolution is GEMM over the unfolded image (im2col), without the
 * unfolded matrix ever being stored.
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
 * The GEMMs run on the built-in micro-kernel, whose packed panels of cols
 * are gathered from the image directly (see "convolution" below). Work is
 * split over the device's pool; results do not depend on the thread
 * count. */
#include "cpu_impl.h"

#include <assert.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

/* ---- scratch ---------------------------------------------------------- */

float *cpu_conv_scratch(cpu_device *dev, size_t floats)
{
    if (dev->conv_scratch_floats < floats) {
        free(dev->conv_scratch);
        size_t bytes = (floats * sizeof(float) + 63) / 64 * 64;
        dev->conv_scratch = aligned_alloc(64, bytes);
        dev->conv_scratch_floats = dev->conv_scratch ? floats : 0;
    }
    return dev->conv_scratch;
}

/* ---- col2im ----------------------------------------------------------- */

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

/* Row (p, q) of one input channel's columns added back into its plane:
 * plane[i * stride_h - pad_h + p * dil_h, j * stride_w - pad_w + q * dil_w]
 * += row[i * ow + j], skipping positions outside the plane. */
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

/* dx (`channels` planes) = col2im(cols), the transpose of the unfolding:
 * row (c, p, q) of cols (rows ld apart) adds into plane c. Each plane is
 * cleared just before its taps add into it, while it is about to be in
 * cache anyway. */
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

/* ---- convolution ------------------------------------------------------
 * Each pass is a GEMM run on the built-in micro-kernel (cpu_micro), whose
 * operands are packed here, B straight from the image:
 *   forward          y_g [c_out_g, P] = W_g [c_out_g, K] cols: A is W,
 *                    packed once per call; B a panel of nr output pixels,
 *                    its K rows gathered from x (gather_taps); one item is
 *                    (sample, group, panel), all of K in one sum
 *   backward input   dcols [K, P] = W_g^T dy_g, then col2im into dx: A is
 *                    W^T, packed once per call for each block of input
 *                    channels; B a panel of dy; one item is (sample,
 *                    group, block of channels), whose dcols rows stay in
 *                    the thread's buffer until its col2im
 *   backward weight  dW_g [c_out_g, K] += dy_g cols^T over the output
 *                    pixels: A is dy read in place (kernel_rows), B a
 *                    panel of nr taps with a row per pixel gathered from x
 *                    (gather_pixels), CONV_DEPTH pixels at a time
 * So there are no columns matrices, no copies by a BLAS and no zeroing of
 * outputs. The weight gradient has CONV_WEIGHT_CHUNKS chunks of samples
 * whatever the thread count (one item each), summed in chunk order; every
 * other sum is one micro-kernel sum. Results do not depend on the thread
 * count. */

enum {
    CONV_WEIGHT_CHUNKS = 8,
    CONV_DEPTH = 256, /* most pixels in one packed block (weight gradient) */
};

typedef struct conv_job {
    cpu_device *dev;
    const xg_conv_args *a;
    const cpu_micro *mk;
    int64_t cin_g, cout_g; /* channels per group */
    int64_t npq;           /* taps per channel: kh * kw */
    int64_t k, p, plane;   /* taps per group (K), output pixels, input plane */
    int64_t panels;        /* panels of nr output pixels */
    const float *in0, *in1;
    const float *bias;     /* conv2d_bias(_relu): in[2], else NULL */
    bool relu;             /* conv2d_bias_relu */
    float *out;
    float *packed;         /* forward, dx: A of every group (and block) */
    int32_t *panel_idx;    /* forward: gather tables (panel_tables) */
    uint32_t *panel_mask;
    int64_t packed_size;   /* floats of one group's (block's) packed A */
    int64_t cb, blocks;    /* dx: input channels per block, blocks a group */
    int64_t chunks;        /* dweight: chunks of samples */
    int64_t parts;         /* dweight: parts of a chunk's tap blocks */
    int32_t *pix_off;      /* dweight: gather tables (pixel_offsets) */
    uint8_t *pix_inside;
    int64_t depth;         /* dweight: pixels per packed block */
    int32_t *tap_off, *tap_h, *tap_w; /* dweight: per tap, nr-padded */
    float *partial;        /* dweight: a weight-sized sum per chunk > 0 */
    float *scratch;        /* per-thread buffers, per_thread floats each */
    int64_t per_thread;
} conv_job;

static int64_t round_up(int64_t x, int64_t unit)
{
    return (x + unit - 1) / unit * unit;
}

static int64_t min64(int64_t x, int64_t y)
{
    return x < y ? x : y;
}

/* The mask of the first `lanes` lanes (lanes <= 32). */
static uint32_t lane_mask(int64_t lanes)
{
    return lanes >= 32 ? 0xffffffffu : (1u << lanes) - 1u;
}

static float *thread_buffer(const conv_job *j, int thread)
{
    return j->scratch + (size_t)thread * (size_t)j->per_thread;
}

/* Rows [r0, r0 + m) of the matrix whose element (r, k) is x[r * ld + k]
 * (x[k * ld + r] when `trans`), over depths k in [0, depth), packed as
 * panels of mr rows, each k-major, the last zero-padded to mr rows. */
static void pack_a(float *dst, const float *x, int64_t ld, int trans,
                   int64_t r0, int64_t m, int64_t depth, int64_t mr)
{
    for (int64_t pr = 0; pr < m; pr += mr, dst += mr * depth) {
        int64_t h = min64(mr, m - pr);
        if (trans) /* h consecutive values per depth */
            for (int64_t kk = 0; kk < depth; kk++)
                memcpy(dst + kk * mr, x + kk * ld + r0 + pr,
                       (size_t)h * sizeof *dst);
        else /* a row at a time, read in order */
            for (int64_t i = 0; i < h; i++) {
                const float *row = x + (r0 + pr + i) * ld;
                for (int64_t kk = 0; kk < depth; kk++)
                    dst[kk * mr + i] = row[kk];
            }
        for (int64_t kk = 0; kk < depth; kk++)
            for (int64_t i = h; i < mr; i++)
                dst[kk * mr + i] = 0.0f;
    }
}

/* Gather tables of every panel of output pixels: for panel pn and tap
 * (p, q), idx[(pn * npq + pq) * nr + l] is the plane index that pixel
 * pn * nr + l reads, and bit l of mask[pn * npq + pq] says whether it lies
 * inside the plane (and the pixel inside the output). */
static void panel_tables(const conv_job *j, int32_t *idx, uint32_t *mask)
{
    const xg_conv_args *a = j->a;
    int64_t nr = j->mk->nr;
    for (int64_t pn = 0; pn < j->panels; pn++)
        for (int64_t p = 0, pq = pn * j->npq; p < a->kh; p++)
            for (int64_t q = 0; q < a->kw; q++, pq++) {
                uint32_t m = 0;
                for (int64_t l = 0; l < nr; l++) {
                    int64_t pix = pn * nr + l;
                    int64_t ih = pix / a->ow * a->stride_h - a->pad_h +
                                 p * a->dil_h;
                    int64_t iw = pix % a->ow * a->stride_w - a->pad_w +
                                 q * a->dil_w;
                    int ok = pix < j->p && ih >= 0 && ih < a->h &&
                             iw >= 0 && iw < a->w;
                    idx[pq * nr + l] = ok ? (int32_t)(ih * a->w + iw) : 0;
                    m |= (uint32_t)ok << l;
                }
                mask[pq] = m;
            }
}

/* reference: y[b, o] = sum over the group's c, p, q of x * w (backend.h),
 * plus bias[o] for conv2d_bias, then max(y, 0) for conv2d_bias_relu while
 * the tile is still in cache. */
CPU_CLONES static void forward_range(const void *ctx, int64_t begin,
                                     int64_t end, int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    const cpu_micro *mk = j->mk;
    float *panel = thread_buffer(j, thread);
    for (int64_t item = begin; item < end; item++) {
        int64_t pn = item % j->panels, bg = item / j->panels;
        int64_t b = bg / a->groups, grp = bg % a->groups;
        int64_t p0 = pn * mk->nr, cols = min64(mk->nr, j->p - p0);
        mk->gather_taps(panel,
                        j->in0 + (b * a->c_in + grp * j->cin_g) * j->plane,
                        j->cin_g, j->plane, (int)j->npq,
                        j->panel_idx + pn * j->npq * mk->nr,
                        j->panel_mask + pn * j->npq);
        const float *w = j->packed + grp * j->packed_size;
        float *y = j->out + (b * a->c_out + grp * j->cout_g) * j->p + p0;
        const float *bias = j->bias ? j->bias + grp * j->cout_g : NULL;
        for (int64_t r = 0; r < j->cout_g; r += mk->mr) {
            int64_t rows = min64(mk->mr, j->cout_g - r);
            if (bias) /* y = bias + sum: the rounding of conv2d, then add */
                for (int64_t i = 0; i < rows; i++)
                    for (int64_t l = 0; l < cols; l++)
                        y[(r + i) * j->p + l] = bias[r + i];
            mk->kernel(j->k, w + r * j->k, panel, y + r * j->p, j->p, 1.0f,
                       bias != NULL, rows, cols);
            if (j->relu) /* as relu: x < 0 ? 0 : x, NaN stays NaN */
                for (int64_t i = 0; i < rows; i++) {
                    float *row = y + (r + i) * j->p;
                    for (int64_t l = 0; l < cols; l++)
                        row[l] = row[l] < 0.0f ? 0.0f : row[l];
                }
        }
    }
}

/* reference: dx = sum over taps of w^T dy placed where the forward read x:
 * the item's rows of dcols, panel by panel of dy, then col2im. */
CPU_CLONES static void backward_input_range(const void *ctx,
                                            int64_t begin, int64_t end,
                                            int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    const cpu_micro *mk = j->mk;
    float *dcols = thread_buffer(j, thread);
    float *panel = dcols + round_up(j->cb * j->npq * j->p, 16);
    for (int64_t item = begin; item < end; item++) {
        int64_t blk = item % j->blocks, bg = item / j->blocks;
        int64_t b = bg / a->groups, grp = bg % a->groups;
        int64_t c0 = blk * j->cb, nc = min64(j->cb, j->cin_g - c0);
        int64_t taps = nc * j->npq;
        const float *dy = j->in0 + (b * a->c_out + grp * j->cout_g) * j->p;
        const float *wt = j->packed + (grp * j->blocks + blk) * j->packed_size;
        for (int64_t p0 = 0; p0 < j->p; p0 += mk->nr) {
            int64_t cols = min64(mk->nr, j->p - p0);
            for (int64_t o = 0; o < j->cout_g; o++) {
                memcpy(panel + o * mk->nr, dy + o * j->p + p0,
                       (size_t)cols * sizeof *panel);
                memset(panel + o * mk->nr + cols, 0,
                       (size_t)(mk->nr - cols) * sizeof *panel);
            }
            for (int64_t r = 0; r < taps; r += mk->mr)
                mk->kernel(j->cout_g, wt + r * j->cout_g, panel,
                           dcols + r * j->p + p0, j->p, 1.0f, 0,
                           min64(mk->mr, taps - r), cols);
        }
        col2im(a, dcols, nc, j->p,
               j->out + (b * a->c_in + grp * j->cin_g + c0) * j->plane);
    }
}

/* The weight gradient's gather table of every output pixel r: off[r] is
 * the plane index of its first tap (it may be negative under padding),
 * inside[r] whether every tap lies inside the plane. */
static void pixel_offsets(const conv_job *j, int32_t *off, uint8_t *inside)
{
    const xg_conv_args *a = j->a;
    for (int64_t r = 0; r < j->p; r++) {
        int64_t i = r / a->ow, jj = r % a->ow;
        int64_t ih = i * a->stride_h - a->pad_h;
        int64_t iw = jj * a->stride_w - a->pad_w;
        off[r] = (int32_t)(ih * a->w + iw);
        inside[r] = ih >= 0 && ih + (int64_t)(a->kh - 1) * a->dil_h < a->h &&
                    iw >= 0 && iw + (int64_t)(a->kw - 1) * a->dil_w < a->w;
    }
}

/* The gather masks of taps [t0, t0 + nr) for those pixels. */
static void pixel_masks(const conv_job *j, int64_t p0, int64_t rows,
                        int64_t t0, const uint8_t *inside, uint32_t *mask)
{
    const xg_conv_args *a = j->a;
    int64_t lanes = min64(j->mk->nr, j->k - t0);
    uint32_t all = lane_mask(lanes);
    for (int64_t r = 0; r < rows; r++) {
        if (inside[r]) {
            mask[r] = all;
            continue;
        }
        int64_t i = (p0 + r) / a->ow, jj = (p0 + r) % a->ow;
        int64_t ih = i * a->stride_h - a->pad_h;
        int64_t iw = jj * a->stride_w - a->pad_w;
        uint32_t m = 0;
        for (int64_t l = 0; l < lanes; l++) {
            int64_t th = ih + j->tap_h[t0 + l], tw = iw + j->tap_w[t0 + l];
            m |= (uint32_t)(th >= 0 && th < a->h && tw >= 0 && tw < a->w)
                 << l;
        }
        mask[r] = m;
    }
}

/* Item (chunk c, part) of the weight gradient: the columns of one part of
 * the tap blocks, summed over the chunk's samples block of pixels by block,
 * into dweight itself (chunk 0) or the chunk's partial buffer. Parts split
 * a chunk's work between threads when there are fewer chunks than threads
 * (small batches); each output's sum runs in the same order either way. */
static void backward_weight_range(const void *ctx, int64_t begin, int64_t end,
                                  int thread)
{
    const conv_job *j = ctx;
    const xg_conv_args *a = j->a;
    const cpu_micro *mk = j->mk;
    float *bpan = thread_buffer(j, thread);
    uint32_t *mask = (uint32_t *)(bpan + j->depth * mk->nr);
    int64_t wsize = a->c_out * j->k, blocks = (j->k + mk->nr - 1) / mk->nr;
    for (int64_t item = begin; item < end; item++) {
        int64_t c = item / j->parts, part = item % j->parts;
        int64_t t_begin = blocks * part / j->parts * mk->nr;
        int64_t t_end = min64(j->k, blocks * (part + 1) / j->parts * mk->nr);
        float *dw = c == 0 ? j->out : j->partial + (c - 1) * wsize;
        int64_t b0 = a->n * c / j->chunks, b1 = a->n * (c + 1) / j->chunks;
        int add = 0;
        for (int64_t b = b0; b < b1; b++)
            for (int64_t p0 = 0; p0 < j->p; p0 += j->depth) {
                int64_t kc = min64(j->depth, j->p - p0);
                for (int64_t grp = 0; grp < a->groups; grp++) {
                    const float *dy =
                        j->in1 + (b * a->c_out + grp * j->cout_g) * j->p + p0;
                    const float *x =
                        j->in0 + (b * a->c_in + grp * j->cin_g) * j->plane;
                    float *dwg = dw + grp * j->cout_g * j->k;
                    for (int64_t t0 = t_begin; t0 < t_end; t0 += mk->nr) {
                        pixel_masks(j, p0, kc, t0, j->pix_inside + p0, mask);
                        mk->gather_pixels(bpan, x, kc, j->pix_off + p0, mask,
                                          j->tap_off + t0);
                        for (int64_t r = 0; r < j->cout_g; r += mk->mr)
                            mk->kernel_rows(kc, dy + r * j->p, j->p, bpan,
                                            dwg + r * j->k + t0, j->k, 1.0f,
                                            add, min64(mk->mr, j->cout_g - r),
                                            min64(mk->nr, j->k - t0));
                    }
                }
                add = 1;
            }
        if (!add) /* no samples or pixels: a zero sum */
            for (int64_t r = 0; r < a->c_out; r++)
                memset(dw + r * j->k + t_begin, 0,
                       (size_t)(t_end - t_begin) * sizeof *dw);
    }
}

/* Fills in the job's sizes, packs A where it is shared, and lays out the
 * scratch; XG_ERR_TOO_LARGE where a gather index would pass int32,
 * XG_ERR_OUT_OF_MEMORY without scratch. */
static xg_status conv_prepare(xg_backend_device *dev,
                              const xg_kernel_call *call, conv_job *j,
                              int64_t *items, int64_t *item_cost)
{
    const xg_conv_args *a = &call->p.conv;
    const char *name = xg_op_table[call->op].name;
    int threads = cpu_pool_threads(cpu_dev(dev)->pool);
    *j = (conv_job){.dev = cpu_dev(dev), .a = a,
                    .cin_g = a->c_in / a->groups,
                    .cout_g = a->c_out / a->groups,
                    .npq = (int64_t)a->kh * a->kw,
                    .p = a->oh * a->ow, .plane = a->h * a->w,
                    .in0 = cpu_f32(call->in[0].buf),
                    .in1 = cpu_f32(call->in[1].buf),
                    .out = cpu_f32(call->out[0].buf)};
    j->k = j->cin_g * j->npq;
    if (j->cin_g > INT32_MAX / (j->plane > 0 ? j->plane : 1) ||
        j->npq > INT32_MAX / 32 || j->k > INT32_MAX / 32)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: %lld channels of %lld "
                            "pixels a group exceed the kernel's int32 "
                            "indices", name, (long long)j->cin_g,
                            (long long)j->plane);
    /* shared: packed A or the tap tables and partial sums; per thread:
     * the panels and gather tables */
    int64_t shared, nr;
    bool forward = call->op == XG_OP_conv2d || call->op == XG_OP_conv2d_bias ||
                   call->op == XG_OP_conv2d_bias_relu;
    if (forward) {
        j->relu = call->op == XG_OP_conv2d_bias_relu;
        j->bias = call->op != XG_OP_conv2d ? cpu_f32(call->in[2].buf) : NULL;
        j->mk = cpu_micro_pick(j->dev, j->cout_g);
        nr = j->mk->nr;
        j->packed_size = round_up(j->cout_g, j->mk->mr) * j->k;
        j->panels = (j->p + nr - 1) / nr;
        shared = a->groups * j->packed_size + j->panels * j->npq * (nr + 1);
        j->per_thread = j->k * nr;
        *items = a->n * a->groups * j->panels;
        *item_cost = j->cout_g * j->k * nr;
    } else if (call->op == XG_OP_conv2d_backward_input) {
        /* whole groups per item, unless that leaves threads idle */
        int64_t per = a->n * a->groups, want = 2 * (int64_t)threads;
        j->blocks = per >= want ? 1 : min64(j->cin_g, (want + per - 1) / per);
        j->cb = (j->cin_g + j->blocks - 1) / j->blocks;
        j->blocks = (j->cin_g + j->cb - 1) / j->cb;
        j->mk = cpu_micro_pick(j->dev, j->cb * j->npq);
        nr = j->mk->nr;
        j->packed_size = round_up(j->cb * j->npq, j->mk->mr) * j->cout_g;
        shared = a->groups * j->blocks * j->packed_size;
        j->per_thread = round_up(j->cb * j->npq * j->p, 16) + j->cout_g * nr;
        *items = per * j->blocks;
        *item_cost = j->cb * j->npq * j->cout_g * (j->p > 0 ? j->p : 1);
    } else {
        j->mk = cpu_micro_pick(j->dev, j->cout_g);
        nr = j->mk->nr;
        j->chunks = min64(CONV_WEIGHT_CHUNKS, a->n > 0 ? a->n : 1);
        int64_t tap_blocks = (j->k + nr - 1) / nr;
        j->parts = min64(tap_blocks, (2 * (int64_t)threads + j->chunks - 1) /
                                         j->chunks);
        int64_t blocks = (j->p + CONV_DEPTH - 1) / CONV_DEPTH;
        j->depth = blocks > 0 ? (j->p + blocks - 1) / blocks : 1;
        shared = 3 * round_up(j->k, nr) + j->p + (j->p + 3) / 4 +
                 (j->chunks - 1) * a->c_out * j->k;
        j->per_thread = j->depth * nr + j->depth;
        *items = j->chunks * j->parts;
        *item_cost = j->cout_g * (j->k / j->parts + 1) *
                     (j->p > 0 ? j->p : 1) *
                     ((a->n + j->chunks - 1) / j->chunks);
    }
    shared = round_up(shared, 16);
    j->per_thread = round_up(j->per_thread, 16);
    if (j->per_thread > (INT64_MAX / 4 - shared) / threads / 4)
        return xg_set_error(XG_ERR_TOO_LARGE, "%s: the kernel's buffers are "
                            "too large", name);
    size_t floats = (size_t)(shared + threads * j->per_thread);
    float *s = cpu_conv_scratch(j->dev, floats);
    if (!s)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory for"
                            " %zu floats of packed operands", name, floats);
    j->scratch = s + shared;
    if (forward) {
        j->packed = s;
        j->panel_idx = (int32_t *)(s + a->groups * j->packed_size);
        j->panel_mask = (uint32_t *)(j->panel_idx + j->panels * j->npq * nr);
        panel_tables(j, j->panel_idx, j->panel_mask);
        for (int64_t g = 0; g < a->groups; g++)
            pack_a(s + g * j->packed_size, j->in1 + g * j->cout_g * j->k,
                   j->k, 0, 0, j->cout_g, j->k, j->mk->mr);
    } else if (call->op == XG_OP_conv2d_backward_input) {
        j->packed = s;
        for (int64_t g = 0; g < a->groups; g++)
            for (int64_t blk = 0; blk < j->blocks; blk++)
                pack_a(s + (g * j->blocks + blk) * j->packed_size,
                       j->in1 + g * j->cout_g * j->k, j->k, 1,
                       blk * j->cb * j->npq,
                       min64(j->cb, j->cin_g - blk * j->cb) * j->npq,
                       j->cout_g, j->mk->mr);
    } else {
        int64_t padded = round_up(j->k, nr);
        j->tap_off = (int32_t *)s;
        j->tap_h = j->tap_off + padded;
        j->tap_w = j->tap_h + padded;
        for (int64_t t = 0; t < padded; t++) {
            int64_t c = t / j->npq, pq = t % j->npq;
            int64_t dh = pq / a->kw * a->dil_h, dw = pq % a->kw * a->dil_w;
            int in = t < j->k;
            j->tap_off[t] = in ? (int32_t)(c * j->plane + dh * a->w + dw) : 0;
            j->tap_h[t] = in ? (int32_t)dh : 0;
            j->tap_w[t] = in ? (int32_t)dw : 0;
        }
        j->pix_off = j->tap_w + padded;
        j->pix_inside = (uint8_t *)(j->pix_off + j->p);
        pixel_offsets(j, j->pix_off, j->pix_inside);
        j->partial = s + 3 * padded + j->p + (j->p + 3) / 4;
    }
    return XG_OK;
}

static xg_status conv_run(xg_backend_device *dev, const xg_kernel_call *call,
                          cpu_range_fn fn)
{
    conv_job j;
    int64_t items, cost;
    xg_status st = conv_prepare(dev, call, &j, &items, &cost);
    if (st == XG_OK)
        cpu_parallel_for(j.dev->pool, items, cost, 1, fn, &j);
    return st;
}

/* conv2d, conv2d_bias and conv2d_bias_relu. */
xg_status cpu_conv2d(xg_backend_device *dev, const xg_kernel_call *call)
{
    if (cpu_winograd_fits(cpu_dev(dev), call))
        return cpu_winograd(cpu_dev(dev), call);
    return conv_run(dev, call, forward_range);
}

xg_status cpu_conv2d_backward_input(xg_backend_device *dev,
                                    const xg_kernel_call *call)
{
    if (cpu_winograd_fits(cpu_dev(dev), call))
        return cpu_winograd(cpu_dev(dev), call);
    return conv_run(dev, call, backward_input_range);
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
    if (cpu_winograd_fits(cpu_dev(dev), call))
        return cpu_winograd(cpu_dev(dev), call);
    conv_job j;
    int64_t items, cost;
    xg_status st = conv_prepare(dev, call, &j, &items, &cost);
    if (st != XG_OK)
        return st;
    cpu_parallel_for(j.dev->pool, items, cost, 1, backward_weight_range, &j);
    if (j.chunks == 1)
        return XG_OK;
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
