/* Selection along one axis by i32 indices (struct xg_index_args).
 *
 * OP_INDEX_SELECT, OP_GATHER: one invocation per output element.
 * OP_INDEX_SELECT_BACKWARD, OP_GATHER_BACKWARD: one invocation per line of
 * dx (the elements that share every coordinate but the axis), which adds
 * g's positions [j_begin, j_end) along the axis to its line in increasing
 * order. The backend zeroes dx first and splits the positions into
 * dispatches of at most XG_INDEX_CHUNK (lavapipe's loop budget,
 * shader_config.h); each dispatch continues the sums the last one stored,
 * so every element is ((0 + g_first) + ...) + g_last in index order, as
 * on the CPU. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint ndim, axis, n;
    uint x_shape[6];
    uint shape[6];
    uint index_stride[6];
    uint j_begin, j_end; /* backward: positions along the axis */
} pc;

XG_IN(1, int, index);

#if defined(OP_INDEX_SELECT) || defined(OP_GATHER)

XG_IN(0, float, x);
XG_OUT(0, float, y);

void main()
{
    XG_FOR_EACH(e, pc.n) {
        uint rest = e, xo = 0, io = 0, xstride = 1, step = 0;
        for (int k = int(pc.ndim) - 1; k >= 0; k--) {
            uint ck = rest % pc.shape[k];
            rest /= pc.shape[k];
            io += ck * pc.index_stride[k];
            if (k == int(pc.axis))
                step = xstride;
            else
                xo += ck * xstride;
            xstride *= pc.x_shape[k];
        }
        y[e] = x[xo + uint(index[io]) * step];
    }
}

#elif defined(OP_INDEX_SELECT_BACKWARD) || defined(OP_GATHER_BACKWARD)

XG_IN(0, float, g);
XG_INOUT(0, float, dx);

void main()
{
    uint lines = pc.n / pc.x_shape[pc.axis];
    XG_FOR_EACH(line, lines) {
        uint rest = line, xo = 0, go = 0, io = 0;
        uint xstride = 1, gstride = 1, xstep = 0, gstep = 0;
        bool inside = true;
        for (int k = int(pc.ndim) - 1; k >= 0; k--) {
            if (k == int(pc.axis)) {
                xstep = xstride;
                gstep = gstride;
            } else {
                uint ck = rest % pc.x_shape[k];
                rest /= pc.x_shape[k];
                xo += ck * xstride;
                go += ck * gstride;
                io += ck * pc.index_stride[k];
                inside = inside && ck < pc.shape[k];
            }
            xstride *= pc.x_shape[k];
            gstride *= pc.shape[k];
        }
        if (!inside)
            continue;
        uint istep = pc.index_stride[pc.axis];
        XG_FOR_STRIDED(j, pc.j_begin, pc.j_end, 1u)
            dx[xo + uint(index[io + j * istep]) * xstep] += g[go + j * gstep];
    }
}

#else
#error "index.comp: no OP_ defined"
#endif
