/* 2-D pooling on NCHW planes (struct xg_pool_args), with the semantics of
 * backends/cpu/cpu_conv.c: windows clipped to the plane, sums in row-major
 * order. The backward kernels gather: one invocation per input pixel visits
 * the windows that cover it in row-major order (the order in which the CPU
 * reference adds them), so they need no atomics.
 *   OP_MAX_POOL2D           y, index of the winner in its plane (first on
 *                         ties; the first NaN wins)
 *   OP_MAX_POOL2D_BACKWARD  dx[k] = sum of dy over the windows whose index is k
 *   OP_AVG_POOL2D           y = window sum / (kh * kw) (padding counts as 0)
 *   OP_AVG_POOL2D_BACKWARD  dx = sum of dy / (kh * kw) over covering windows
 * Grid (planes.glsl): x over the pixels of an output plane (forward) or an
 * input plane (backward), y over the n * c planes. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "planes.glsl"

layout(push_constant) uniform Push {
    uint planes; /* n * c */
    uint h, w, oh, ow;
    int kh, kw, stride_h, stride_w, pad_h, pad_w;
} pc;

#if defined(OP_MAX_POOL2D) || defined(OP_AVG_POOL2D)
XG_IN(0, float, x);
XG_OUT(0, float, y);
#if defined(OP_MAX_POOL2D)
XG_OUT(1, int, index);
#endif

void main()
{
    uint size = pc.oh * pc.ow;
    float inv_ow = 1.0f / float(pc.ow);
    XG_FOR_EACH_PLANE(plane, pc.planes) {
        uint base = plane * pc.h * pc.w;
        XG_FOR_EACH_PIXEL(e, size) {
            uint i = xg_div(e, pc.ow, inv_ow);
            int top = int(i) * pc.stride_h - pc.pad_h;
            int left = int(e - i * pc.ow) * pc.stride_w - pc.pad_w;
            int r0 = max(top, 0), r1 = min(top + pc.kh, int(pc.h));
            int c0 = max(left, 0), c1 = min(left + pc.kw, int(pc.w));
            uint o = plane * size + e;
#if defined(OP_MAX_POOL2D)
            int best = r0 * int(pc.w) + c0;
            float m = x[base + uint(best)];
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++) {
                    int k = r * int(pc.w) + c;
                    float v = x[base + uint(k)];
                    if (v > m || (isnan(v) && !isnan(m))) {
                        m = v;
                        best = k;
                    }
                }
            y[o] = m;
            index[o] = best;
#else
            float sum = 0.0f;
            for (int r = r0; r < r1; r++)
                for (int c = c0; c < c1; c++)
                    sum += x[base + uint(r * int(pc.w) + c)];
            y[o] = sum / (float(pc.kh) * float(pc.kw));
#endif
        }
    }
}

#elif defined(OP_MAX_POOL2D_BACKWARD) || defined(OP_AVG_POOL2D_BACKWARD)
XG_IN(0, float, dy);
#if defined(OP_MAX_POOL2D_BACKWARD)
XG_IN(1, int, index);
#endif
XG_OUT(0, float, dx);

/* Outputs [*o0, *o1] whose windows cover input coordinate `at`:
 * o * stride - pad <= at < o * stride - pad + k, 0 <= o < n_out. */
void covering(int at, int k, int stride, float inv_stride, int pad,
              uint n_out, out int o0, out int o1)
{
    int first = at + pad - k + 1; /* o * stride >= first */
    o0 = first <= 0 ? 0
                    : int(xg_div(uint(first + stride - 1), uint(stride),
                                 inv_stride));
    o1 = min(int(xg_div(uint(at + pad), uint(stride), inv_stride)),
             int(n_out) - 1);
}

void main()
{
    uint size = pc.h * pc.w, out_size = pc.oh * pc.ow;
    float inv_w = 1.0f / float(pc.w);
    float inv_sh = 1.0f / float(pc.stride_h);
    float inv_sw = 1.0f / float(pc.stride_w);
#if defined(OP_AVG_POOL2D_BACKWARD)
    float area = float(pc.kh) * float(pc.kw);
#endif
    XG_FOR_EACH_PLANE(plane, pc.planes) {
        uint base = plane * out_size;
        XG_FOR_EACH_PIXEL(k, size) {
            uint r = xg_div(k, pc.w, inv_w);
            int i0, i1, j0, j1;
            covering(int(r), pc.kh, pc.stride_h, inv_sh, pc.pad_h, pc.oh, i0,
                     i1);
            covering(int(k - r * pc.w), pc.kw, pc.stride_w, inv_sw, pc.pad_w,
                     pc.ow, j0, j1);
            float sum = 0.0f;
            for (int i = i0; i <= i1; i++)
                for (int j = j0; j <= j1; j++) {
                    uint o = base + uint(i) * pc.ow + uint(j);
#if defined(OP_MAX_POOL2D_BACKWARD)
                    if (index[o] == int(k))
                        sum += dy[o];
#else
                    sum += dy[o] / area;
#endif
                }
            dx[plane * size + k] = sum;
        }
    }
}
#else
#error "pool.comp: no OP_ defined"
#endif
