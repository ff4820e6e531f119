/* CONV and POOL families, NCHW (api/backend.h: struct xg_conv_args and
 * struct xg_pool_args).
 *
 * Convolution is lowered to GEMM (ocl_conv.c): xg_im2col unfolds a chunk of
 * nb samples into a column matrix col[r][s] with rows r = (c, p, q) over
 * c_in * kh * kw and columns s = (b, i, j) over nb * oh * ow, so that sample
 * b's columns start at b * oh * ow and every row is nb * oh * ow long.
 * xg_col2im is its adjoint as a gather: each input pixel sums the column
 * entries it was copied to, so no two work-items write one element.
 *
 * Both take (src, dst, long b0, int nb, int16 g): the chunk is samples
 * b0 .. b0 + nb - 1 of the image tensor, and g the geometry (geometry_of in
 * ocl_conv.c): s0 c_in, s1 h, s2 w, s3 oh, s4 ow, s5 kh, s6 kw,
 * s7 stride_h, s8 stride_w, s9 pad_h, sa pad_w, sb dil_h, sc dil_w.
 * They run on a 2-D range: global id 1 picks a row of col (or an input
 * plane), and the work-items along dimension 0 stride along it. Planes and
 * c_in * kh * kw stay below 2^31 (the launcher checks).
 */

/* col[r][b * L + l] = x[b0 + b, c, i * sh - ph + p * dh, j * sw - pw + q * dw]
 * (0 outside the image), for row get_global_id(1) = b * K + r where K =
 * c_in * kh * kw, L = oh * ow and l = i * ow + j. */
__kernel void xg_im2col(__global const float *x, __global float *col,
                        long b0, int nb, int16 g)
{
    int h = g.s1, w = g.s2, oh = g.s3, ow = g.s4, kh = g.s5, kw = g.s6;
    int rows = g.s0 * kh * kw, L = oh * ow;
    long row = get_global_id(1);
    if (row >= (long)nb * rows)
        return;
    int b = (int)(row / rows), r = (int)(row - (long)b * rows);
    int c = r / (kh * kw), p = r / kw - c * kh, q = r - r / kw * kw;
    int y0 = p * g.sb - g.s9, x0 = q * g.sc - g.sa;
    __global const float *plane = x + ((b0 + b) * g.s0 + c) * (long)h * w;
    __global float *out = col + (long)r * nb * L + (long)b * L;
    for (int l = get_local_id(0); l < L; l += get_local_size(0)) {
        int i = l / ow, j = l - i * ow;
        int y = y0 + i * g.s7, xx = x0 + j * g.s8;
        bool inside = y >= 0 && y < h && xx >= 0 && xx < w;
        out[l] = inside ? plane[y * w + xx] : 0.0f;
    }
}

/* t / d for t >= 0, d >= 1, with no division when d is 1 (the common
 * stride and dilation, the same for every work-item). */
int xg_idiv(int t, int d)
{
    return d == 1 ? t : t / d;
}

/* The first and last (.x > .y: none) of n windows, window i spanning
 * [i * stride - pad, i * stride - pad + span], that contain position v. */
int2 xg_windows_covering(int v, int span, int stride, int pad, int n)
{
    int t = v + pad - span;
    int first = t <= 0 ? 0 : xg_idiv(t + stride - 1, stride);
    return (int2)(first, min(xg_idiv(v + pad, stride), n - 1));
}

/* Whether t (>= 0) is a multiple of d; *q = t / d when it is. */
bool xg_divides(int t, int d, int *q)
{
    *q = xg_idiv(t, d);
    return *q * d == t;
}

/* dx[b0 + b, c, y, x] = the sum of col[(c, p, q)][b * L + i * ow + j] over
 * every (p, q, i, j) that im2col read x[b0 + b, c, y, x] from, for the
 * input plane get_global_id(1) = b * c_in + c. */
__kernel void xg_col2im(__global const float *col, __global float *dx,
                        long b0, int nb, int16 g)
{
    int h = g.s1, w = g.s2, oh = g.s3, ow = g.s4, kh = g.s5, kw = g.s6;
    int L = oh * ow;
    long index = get_global_id(1);
    if (index >= (long)nb * g.s0)
        return;
    int b = (int)(index / g.s0), c = (int)(index - (long)b * g.s0);
    __global const float *in = col + (long)c * kh * kw * nb * L + (long)b * L;
    __global float *plane = dx + ((b0 + b) * g.s0 + c) * (long)h * w;
    long row = (long)nb * L; /* from tap (p, q) to tap (p, q + 1) */
    for (int e = get_local_id(0); e < h * w; e += get_local_size(0)) {
        int y = e / w, xx = e - y * w;
        int2 is = xg_windows_covering(y, (kh - 1) * g.sb, g.s7, g.s9, oh);
        int2 js = xg_windows_covering(xx, (kw - 1) * g.sc, g.s8, g.sa, ow);
        float acc = 0.0f;
        for (int i = is.x; i <= is.y; i++) {
            int p, q;
            if (!xg_divides(y + g.s9 - i * g.s7, g.sb, &p))
                continue;
            for (int j = js.x; j <= js.y; j++)
                if (xg_divides(xx + g.sa - j * g.s8, g.sc, &q))
                    acc += in[(p * kw + q) * row + i * ow + j];
        }
        plane[e] = acc;
    }
}

/* y[b0 + b, c, :] += bias[c] for the plane get_global_id(1) = b * c_out + c
 * of the chunk (conv2d_bias, after its GEMM), then y = max(y, 0) when g.s2
 * is 1 (conv2d_bias_relu; NaN stays NaN, as relu); g.s0 = c_out, g.s1 =
 * the pixels of a plane. */
__kernel void xg_conv_bias(__global const float *bias, __global float *y,
                           long b0, int nb, int16 g)
{
    int c_out = g.s0, plane = g.s1, relu = g.s2;
    long index = get_global_id(1);
    if (index >= (long)nb * c_out)
        return;
    float v = bias[index % c_out];
    __global float *row = y + (b0 * c_out + index) * (long)plane;
    for (int e = get_local_id(0); e < plane; e += get_local_size(0)) {
        float s = row[e] + v;
        row[e] = relu && s < 0.0f ? 0.0f : s;
    }
}

/* ---- pooling ------------------------------------------------------------ */

/* Every pooling kernel takes the buffers, then the scalars of struct
 * xg_pool_args in order, and runs one work-item per element of its output
 * (grid-stride). */
#define XG_POOL_PARAMS                                                       \
    long n, long c, long h, long w, long oh, long ow, int kh, int kw,        \
        int stride_h, int stride_w, int pad_h, int pad_w

/* Splits output element e of [planes, oh, ow] into its plane and the
 * window's first row y0 and column x0 (possibly in the padding). */
#define XG_POOL_WINDOW(e)                                                    \
    long plane = (e) / (oh * ow);                                            \
    int l = (int)((e) - plane * oh * ow);                                    \
    int y0 = l / (int)ow * stride_h - pad_h;                                 \
    int x0 = l % (int)ow * stride_w - pad_w

/* Positions outside x never win; NaN beats numbers; the first wins ties
 * (and between NaNs). */
__kernel void xg_max_pool2d(__global const float *x, __global float *y,
                            __global int *index, XG_POOL_PARAMS)
{
    XG_FOR_EACH(e, n * c * oh * ow) {
        XG_POOL_WINDOW(e);
        __global const float *in = x + plane * h * w;
        float best = 0.0f;
        int best_at = -1;
        for (int yy = max(y0, 0); yy < min(y0 + kh, (int)h); yy++)
            for (int xx = max(x0, 0); xx < min(x0 + kw, (int)w); xx++) {
                float v = in[yy * w + xx];
                if (best_at < 0 || v > best || (isnan(v) && !isnan(best))) {
                    best = v;
                    best_at = yy * (int)w + xx;
                }
            }
        y[e] = best;
        index[e] = best_at;
    }
}

/* dx[k] = sum of dy over the windows covering pixel k whose index is k, in
 * window order. */
__kernel void xg_max_pool2d_backward(__global const float *dy,
                                     __global const int *index,
                                     __global float *dx, XG_POOL_PARAMS)
{
    XG_FOR_EACH(e, n * c * h * w) {
        long plane = e / (h * w);
        int k = (int)(e - plane * h * w), yy = k / (int)w, xx = k % (int)w;
        int2 is = xg_windows_covering(yy, kh - 1, stride_h, pad_h, (int)oh);
        int2 js = xg_windows_covering(xx, kw - 1, stride_w, pad_w, (int)ow);
        long base = plane * oh * ow;
        float acc = 0.0f;
        for (int i = is.x; i <= is.y; i++)
            for (int j = js.x; j <= js.y; j++)
                if (index[base + i * ow + j] == k)
                    acc += dy[base + i * ow + j];
        dx[e] = acc;
    }
}

/* Padding counts as zeros: the divisor is always kh * kw, a float product
 * (kh * kw overflows an int from 46341 on). */
__kernel void xg_avg_pool2d(__global const float *x, __global float *y,
                            XG_POOL_PARAMS)
{
    XG_FOR_EACH(e, n * c * oh * ow) {
        XG_POOL_WINDOW(e);
        __global const float *in = x + plane * h * w;
        float acc = 0.0f;
        for (int yy = max(y0, 0); yy < min(y0 + kh, (int)h); yy++)
            for (int xx = max(x0, 0); xx < min(x0 + kw, (int)w); xx++)
                acc += in[yy * w + xx];
        y[e] = acc / ((float)kh * (float)kw);
    }
}

/* dx[k] = sum over the windows covering pixel k of dy / (kh * kw). */
__kernel void xg_avg_pool2d_backward(__global const float *dy,
                                     __global float *dx, XG_POOL_PARAMS)
{
    XG_FOR_EACH(e, n * c * h * w) {
        long plane = e / (h * w);
        int k = (int)(e - plane * h * w), yy = k / (int)w, xx = k % (int)w;
        int2 is = xg_windows_covering(yy, kh - 1, stride_h, pad_h, (int)oh);
        int2 js = xg_windows_covering(xx, kw - 1, stride_w, pad_w, (int)ow);
        __global const float *g = dy + plane * oh * ow;
        float size = (float)kh * (float)kw, acc = 0.0f;
        for (int i = is.x; i <= is.y; i++)
            for (int j = js.x; j <= js.y; j++)
                acc += g[i * ow + j] / size;
        dx[e] = acc;
    }
}
