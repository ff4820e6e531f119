/* INDEX family (struct xg_index_args): index_select and gather, one
 * work-item per output element; their backward, one work-item per line of
 * dx (the elements that share every coordinate but the axis): it zeroes
 * the line, then adds g's line in increasing position along the axis, as
 * the CPU reference does, so repeated indices sum with the same bits.
 * Kernels take (int ndim, int axis, long n, long8 x_shape, long8 shape,
 * long8 index_stride); the host right-aligns the per-axis values in the
 * eight lanes, so axis k is lane 8 - ndim + k.
 *
 * WHERE family (struct xg_where_args): one work-item per output element,
 * (long n, long8 shape, long8 stride_0, long8 stride_1, long8 stride_2,
 * float value), right-aligned as in binary.cl. */

#define XG_INDEX_LANES(x_shape8, shape8, index_stride8)                      \
    long xs[8], sh[8], is[8];                                                \
    vstore8(x_shape8, 0, xs);                                                \
    vstore8(shape8, 0, sh);                                                  \
    vstore8(index_stride8, 0, is);                                           \
    int first = 8 - ndim, lane = first + axis

#define XG_INDEX_FORWARD(name)                                               \
    __kernel void xg_##name(__global const float *x,                         \
                            __global const int *index, __global float *out,  \
                            int ndim, int axis, long n, long8 x_shape,       \
                            long8 shape, long8 index_stride)                 \
    {                                                                        \
        XG_INDEX_LANES(x_shape, shape, index_stride);                        \
        XG_FOR_EACH(e, n) {                                                  \
            long rest = e, xo = 0, io = 0, xstride = 1, step = 0;            \
            for (int k = 7; k >= first; k--) {                               \
                long ck = rest % sh[k];                                      \
                rest /= sh[k];                                               \
                io += ck * is[k];                                            \
                if (k == lane)                                               \
                    step = xstride;                                          \
                else                                                         \
                    xo += ck * xstride;                                      \
                xstride *= xs[k];                                            \
            }                                                                \
            out[e] = x[xo + (long)index[io] * step];                         \
        }                                                                    \
    }

XG_INDEX_FORWARD(index_select)
XG_INDEX_FORWARD(gather)

#define XG_INDEX_BACKWARD(name)                                              \
    __kernel void xg_##name(__global const float *g,                         \
                            __global const int *index, __global float *dx,   \
                            int ndim, int axis, long n, long8 x_shape,       \
                            long8 shape, long8 index_stride)                 \
    {                                                                        \
        XG_INDEX_LANES(x_shape, shape, index_stride);                        \
        XG_FOR_EACH(line, n / xs[lane]) {                                    \
            long rest = line, xo = 0, go = 0, io = 0;                        \
            long xstride = 1, gstride = 1, xstep = 0, gstep = 0;             \
            bool inside = true;                                              \
            for (int k = 7; k >= first; k--) {                               \
                if (k == lane) {                                             \
                    xstep = xstride;                                         \
                    gstep = gstride;                                         \
                } else {                                                     \
                    long ck = rest % xs[k];                                  \
                    rest /= xs[k];                                           \
                    xo += ck * xstride;                                      \
                    go += ck * gstride;                                      \
                    io += ck * is[k];                                        \
                    inside = inside && ck < sh[k];                           \
                }                                                            \
                xstride *= xs[k];                                            \
                gstride *= sh[k];                                            \
            }                                                                \
            __global float *d = dx + xo;                                     \
            for (long i = 0; i < xs[lane]; i++)                              \
                d[i * xstep] = 0.0f;                                         \
            if (!inside)                                                     \
                continue;                                                    \
            for (long j = 0; j < sh[lane]; j++)                              \
                d[(long)index[io + j * is[lane]] * xstep] += g[go + j * gstep]; \
        }                                                                    \
    }

XG_INDEX_BACKWARD(index_select_backward)
XG_INDEX_BACKWARD(gather_backward)

__kernel void xg_where(__global const float *a, __global const float *b,
                       __global const int *cond, __global float *out, long n,
                       long8 shape, long8 stride_a, long8 stride_b,
                       long8 stride_c, float value)
{
    XG_FOR_EACH(i, n) {
        long2 off = xg_strided_offsets(i, shape, stride_a, stride_b);
        long oc = xg_strided_offsets(i, shape, stride_c, stride_c).x;
        out[i] = cond[oc] != 0 ? a[off.x] : b[off.y];
    }
}

__kernel void xg_masked_fill(__global const float *x,
                             __global const int *mask, __global float *out,
                             long n, long8 shape, long8 stride_x,
                             long8 stride_mask, long8 stride_unused,
                             float value)
{
    XG_FOR_EACH(i, n) {
        long2 off = xg_strided_offsets(i, shape, stride_x, stride_mask);
        out[i] = mask[off.y] != 0 ? value : x[off.x];
    }
}
