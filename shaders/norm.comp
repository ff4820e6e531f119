/* Layer norm over the last axis of a [rows, cols] view (struct
 * xg_norm_args): OP_LAYER_NORM, OP_LAYER_NORM_BACKWARD (dx) and
 * OP_LAYER_NORM_BACKWARD_AFFINE (dweight, dbias).
 *
 * The forward and dx work as rows.comp: a workgroup takes
 * XG_WG_SIZE / lanes rows at a time, `lanes` adjacent invocations per row
 * (a power of two the backend picks so that each has a few columns),
 * reducing the row's partial sums in shared memory. The column sums give
 * each invocation one column, which walks rows [row_begin, row_end) in
 * increasing order, continuing from the sums the previous dispatch stored
 * (row_begin > 0): long columns take several dispatches of at most
 * XG_NORM_ROW_CHUNK rows, within lavapipe's loop budget. Their arithmetic
 * is `precise` (no fused multiply-add), so every backend forms the same
 * sums with the same bits. An absent weight or bias (has_weight, has_bias
 * 0) is bound to x and never read. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint rows, cols;
    uint lanes; /* invocations per row: a power of two <= XG_WG_SIZE */
    float eps;
    uint has_weight, has_bias;
    uint row_begin, row_end; /* the column sums' rows in this dispatch */
} pc;

#if defined(OP_LAYER_NORM)
XG_IN(0, float, x);
XG_IN(1, float, w);
XG_IN(2, float, b);
XG_OUT(0, float, y);
XG_OUT(1, float, mean_out);
XG_OUT(2, float, rstd_out);
#elif defined(OP_LAYER_NORM_BACKWARD)
XG_IN(0, float, x);
XG_IN(1, float, w);
XG_IN(2, float, g);
XG_IN(3, float, mean);
XG_IN(4, float, rstd);
XG_OUT(0, float, dx);
#elif defined(OP_LAYER_NORM_BACKWARD_AFFINE)
XG_IN(0, float, x);
XG_IN(1, float, g);
XG_IN(2, float, mean);
XG_IN(3, float, rstd);
XG_INOUT(0, float, dw);
XG_INOUT(1, float, db);
#else
#error "norm.comp: no OP_ defined"
#endif

#if defined(OP_LAYER_NORM_BACKWARD_AFFINE)

void main()
{
    XG_FOR_EACH(j, pc.cols) {
        precise float sw = pc.row_begin == 0 ? 0.0f : dw[j];
        precise float sb = pc.row_begin == 0 ? 0.0f : db[j];
        XG_FOR_STRIDED(r, pc.row_begin, pc.row_end, 1) {
            uint at = r * pc.cols + j;
            precise float xh = (x[at] - mean[r]) * rstd[r];
            float gv = g[at];
            sw += gv * xh;
            sb += gv;
        }
        dw[j] = sw;
        db[j] = sb;
    }
}

#else

shared float s_partial[XG_WG_SIZE];

/* The sum of `v` over the `lanes` invocations of each row; every
 * invocation gets its row's result. */
float row_sum(float v)
{
    uint t = gl_LocalInvocationID.x, lane = t & (pc.lanes - 1);
    s_partial[t] = v;
    barrier();
    for (uint half_ = pc.lanes / 2; half_ > 0; half_ /= 2) {
        if (lane < half_) {
            v += s_partial[t + half_];
            s_partial[t] = v;
        }
        barrier();
    }
    float result = s_partial[t - lane];
    barrier(); /* s_partial is rewritten by the next reduction */
    return result;
}

void main()
{
    uint t = gl_LocalInvocationID.x, lane = t & (pc.lanes - 1);
    uint per_group = XG_WG_SIZE / pc.lanes;
    for (uint first = gl_WorkGroupID.x * per_group; first < pc.rows;
         first += gl_NumWorkGroups.x * per_group) {
        uint row = first + t / pc.lanes;
        bool live = row < pc.rows; /* barriers below need every invocation */
        uint base = row * pc.cols, end = live ? pc.cols : 0;
        float n = float(pc.cols);
#if defined(OP_LAYER_NORM)
        /* two passes: the mean, then the squares of (x - mean) */
        float s = 0.0f;
        XG_FOR_STRIDED(j, lane, end, pc.lanes)
            s += x[base + j];
        float m = row_sum(s) / n;
        float v = 0.0f;
        XG_FOR_STRIDED(j, lane, end, pc.lanes) {
            float d = x[base + j] - m;
            v += d * d;
        }
        float rs = 1.0f / sqrt(row_sum(v) / n + pc.eps);
        if (live && lane == 0) {
            mean_out[row] = m;
            rstd_out[row] = rs;
        }
        XG_FOR_STRIDED(j, lane, end, pc.lanes) {
            float o = (x[base + j] - m) * rs;
            if (pc.has_weight != 0)
                o *= w[j];
            if (pc.has_bias != 0)
                o += b[j];
            y[base + j] = o;
        }
#else /* OP_LAYER_NORM_BACKWARD */
        float m = live ? mean[row] : 0.0f, rs = live ? rstd[row] : 0.0f;
        float s1 = 0.0f, s2 = 0.0f;
        XG_FOR_STRIDED(j, lane, end, pc.lanes) {
            float xh = (x[base + j] - m) * rs;
            float gw = pc.has_weight != 0 ? g[base + j] * w[j] : g[base + j];
            s1 += gw;
            s2 += gw * xh;
        }
        float a = row_sum(s1) / n, bb = row_sum(s2) / n;
        XG_FOR_STRIDED(j, lane, end, pc.lanes) {
            float xh = (x[base + j] - m) * rs;
            float gw = pc.has_weight != 0 ? g[base + j] * w[j] : g[base + j];
            dx[base + j] = rs * (gw - a - xh * bb);
        }
#endif
    }
}

#endif
