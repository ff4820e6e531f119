/* The non-GEMM parts of conv2d (struct xg_conv_args), for a chunk of
 * samples; vulkan_conv.c runs the GEMMs between them. For one sample the
 * columns are [c_in, kh, kw, oh * ow]: row (c, p, q), column (i, j) holds
 * x[c, i * stride_h - pad_h + p * dil_h, j * stride_w - pad_w + q * dil_w],
 * 0 in the padding (the layout of backends/cpu/cpu_conv.c, groups one after
 * another, so group g's [K, P] matrix starts at row g * c_in / groups).
 *
 * One step of each conv op (the backend runs the rest as GEMMs):
 *   OP_CONV2D                  cols[chunk] = im2col(x[x_offset ..])
 *   OP_CONV2D_BACKWARD_INPUT   dx[x_offset ..] = col2im(cols[chunk]), a
 *                              gather: each pixel sums the column entries
 *                              that took it, in the order (p, q) of the CPU
 *                              reference; no atomics
 *   OP_CONV2D_BACKWARD_WEIGHT  dw[i] = (accumulate ? dw[i] : 0) + sum over
 *                              the chunk's samples of partial[s, i]
 *   OP_CONV2D_BIAS             y[y_offset ..] += bias[c], per output plane
 *                              (s, c) of the chunk, after its GEMM
 *   OP_CONV2D_BIAS_RELU        the same, then max(y, 0) (NaN stays NaN)
 * The first two run over planes (planes.glsl): a row (s, c, p, q) of the
 * columns for im2col, an image plane (s, c) for col2im. */
#version 450
#extension GL_GOOGLE_include_directive : require

#if defined(OP_CONV2D) || defined(OP_CONV2D_BACKWARD_INPUT)
#include "planes.glsl"

layout(push_constant) uniform Push {
    uint planes;   /* column rows (im2col) or image planes (col2im) */
    uint x_offset; /* elements of x / dx before the chunk's first sample */
    uint c_in, h, w, oh, ow;
    int kh, kw, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
} pc;
#elif defined(OP_CONV2D_BIAS) || defined(OP_CONV2D_BIAS_RELU)
#include "planes.glsl"

layout(push_constant) uniform Push {
    uint planes;   /* output planes of the chunk: samples x c_out */
    uint y_offset; /* elements of y before the chunk's first sample */
    uint c_out, plane;
} pc;
#elif defined(OP_CONV2D_BACKWARD_WEIGHT)
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint count;   /* elements of the weight */
    uint samples; /* partial sums, count elements apart */
    uint accumulate;
} pc;
#else
#error "conv.comp: no OP_ defined"
#endif

#if defined(OP_CONV2D)
XG_IN(0, float, x);
XG_OUT(0, float, cols);

void main()
{
    uint plane = pc.oh * pc.ow;
    float inv_ow = 1.0f / float(pc.ow);
    float inv_kw = 1.0f / float(pc.kw), inv_kh = 1.0f / float(pc.kh);
    /* row = ((s * c_in + c) * kh + p) * kw + q. Uniform over the
     * workgroup, but CPU drivers may still divide per lane. */
    XG_FOR_EACH_PLANE(row, pc.planes) {
        uint t = xg_div(row, uint(pc.kw), inv_kw);
        int q = int(row - t * uint(pc.kw));
        uint sc = xg_div(t, uint(pc.kh), inv_kh);
        int p = int(t - sc * uint(pc.kh));
        uint src = pc.x_offset + sc * pc.h * pc.w;
        int top = p * pc.dil_h - pc.pad_h, left = q * pc.dil_w - pc.pad_w;
        XG_FOR_EACH_PIXEL(pix, plane) {
            uint i = xg_div(pix, pc.ow, inv_ow);
            int ih = int(i) * pc.stride_h + top;
            int iw = int(pix - i * pc.ow) * pc.stride_w + left;
            float v = 0.0f;
            if (ih >= 0 && ih < int(pc.h) && iw >= 0 && iw < int(pc.w))
                v = x[src + uint(ih) * pc.w + uint(iw)];
            cols[row * plane + pix] = v;
        }
    }
}

#elif defined(OP_CONV2D_BACKWARD_INPUT)
XG_IN(0, float, cols);
XG_OUT(0, float, dx);

/* The output index that meets input coordinate `at` through tap t, or -1:
 * o * stride - pad + t * dil = at with 0 <= o < n_out. */
int source(int at, int t, int stride, float inv_stride, int pad, int dil,
           uint n_out)
{
    int v = at + pad - t * dil;
    if (v < 0)
        return -1;
    uint o = xg_div(uint(v), uint(stride), inv_stride);
    return o * uint(stride) == uint(v) && o < n_out ? int(o) : -1;
}

void main()
{
    uint plane = pc.oh * pc.ow, size = pc.h * pc.w;
    float inv_w = 1.0f / float(pc.w);
    float inv_sh = 1.0f / float(pc.stride_h);
    float inv_sw = 1.0f / float(pc.stride_w);
    XG_FOR_EACH_PLANE(sc, pc.planes) { /* sc = s * c_in + c */
        uint rows = sc * uint(pc.kh * pc.kw);
        XG_FOR_EACH_PIXEL(pix, size) {
            uint yh = xg_div(pix, pc.w, inv_w);
            int xw = int(pix - yh * pc.w);
            float sum = 0.0f;
            for (int p = 0; p < pc.kh; p++) {
                int i = source(int(yh), p, pc.stride_h, inv_sh, pc.pad_h,
                               pc.dil_h, pc.oh);
                if (i < 0)
                    continue;
                for (int q = 0; q < pc.kw; q++) {
                    int j = source(xw, q, pc.stride_w, inv_sw, pc.pad_w,
                                   pc.dil_w, pc.ow);
                    if (j >= 0)
                        sum += cols[(rows + uint(p * pc.kw + q)) * plane +
                                    uint(i) * pc.ow + uint(j)];
                }
            }
            dx[pc.x_offset + sc * size + pix] = sum;
        }
    }
}

#elif defined(OP_CONV2D_BIAS) || defined(OP_CONV2D_BIAS_RELU)
XG_IN(0, float, bias);
XG_INOUT(0, float, y);

void main()
{
    XG_FOR_EACH_PLANE(sc, pc.planes) { /* sc = s * c_out + c */
        float b = bias[sc % pc.c_out];
        XG_FOR_EACH_PIXEL(pix, pc.plane) {
            uint at = pc.y_offset + sc * pc.plane + pix;
#ifdef OP_CONV2D_BIAS_RELU
            float s = y[at] + b;
            y[at] = s < 0.0 ? 0.0 : s;
#else
            y[at] = y[at] + b;
#endif
        }
    }
}

#elif defined(OP_CONV2D_BACKWARD_WEIGHT)
XG_IN(0, float, partial);
XG_INOUT(0, float, dw);

void main()
{
    XG_FOR_EACH(i, pc.count) {
        float sum = pc.accumulate != 0u ? dw[i] : 0.0f;
        for (uint s = 0; s < pc.samples; s++)
            sum += partial[s * pc.count + i];
        dw[i] = sum;
    }
}
#endif
