/* Row ops over the last axis of a [rows, cols] view (struct xg_rows_args):
 * OP_SOFTMAX, OP_LOG_SOFTMAX, OP_CROSS_ENTROPY, OP_CROSS_ENTROPY_BACKWARD.
 *
 * A workgroup takes XG_WG_SIZE / lanes rows at a time, `lanes` adjacent
 * invocations per row (a power of two the backend picks so that each has a
 * few columns). Every op starts from the row's maximum m and
 * s = sum_j exp(x_j - m), so exp never overflows; a NaN anywhere in a row
 * makes the whole row NaN, as in PyTorch. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint rows, cols;
    uint lanes; /* invocations per row: a power of two <= XG_WG_SIZE */
    int ignore_index; /* cross_entropy*: a row with this label is ignored */
} pc;

XG_IN(0, float, x);
#if defined(OP_CROSS_ENTROPY) || defined(OP_CROSS_ENTROPY_BACKWARD)
XG_IN(1, int, label);
#endif
#if defined(OP_CROSS_ENTROPY_BACKWARD)
XG_IN(2, float, g);
#endif
XG_OUT(0, float, y);
#if defined(OP_CROSS_ENTROPY)
XG_OUT(1, float, counted);
#endif

shared float s_partial[XG_WG_SIZE];

/* The max (NaN-propagating) or sum of `v` over the `lanes` invocations of
 * each row; every invocation gets its row's result. */
float row_reduce(float v, bool take_max)
{
    uint t = gl_LocalInvocationID.x, lane = t & (pc.lanes - 1);
    s_partial[t] = v;
    barrier();
    for (uint half_ = pc.lanes / 2; half_ > 0; half_ /= 2) {
        if (lane < half_) {
            float u = s_partial[t + half_];
            v = take_max ? xg_max_nan(v, u) : v + u;
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
        float m = -XG_INF;
        XG_FOR_STRIDED(j, lane, end, pc.lanes)
            m = xg_max_nan(m, x[base + j]);
        m = row_reduce(m, true);
        float s = 0.0f;
        XG_FOR_STRIDED(j, lane, end, pc.lanes)
            s += xg_exp(x[base + j] - m);
        s = row_reduce(s, false);

#if defined(OP_SOFTMAX)
        XG_FOR_STRIDED(j, lane, end, pc.lanes)
            y[base + j] = xg_exp(x[base + j] - m) / s;
#elif defined(OP_LOG_SOFTMAX)
        float log_s = xg_log(s);
        XG_FOR_STRIDED(j, lane, end, pc.lanes)
            y[base + j] = (x[base + j] - m) - log_s;
#elif defined(OP_CROSS_ENTROPY)
        /* loss = logsumexp(x) - x[label], counted = 1; loss 0 and counted
         * 0 for a row labelled ignore_index; a label outside [0, cols) is
         * never used as an index. */
        if (live && lane == 0) {
            int l = label[row];
            bool ignored = l == pc.ignore_index;
            y[row] = ignored ? 0.0f
                   : (l >= 0 && l < int(pc.cols))
                         ? xg_log(s) - (x[base + uint(l)] - m)
                         : XG_NAN;
            counted[row] = ignored ? 0.0f : 1.0f;
        }
#elif defined(OP_CROSS_ENTROPY_BACKWARD)
        /* 0 over a row labelled ignore_index, NaN over another bad label. */
        int l = live ? label[row] : -1;
        bool ignored = live && l == pc.ignore_index;
        bool ok = l >= 0 && l < int(pc.cols);
        float gr = live ? g[row] : 0.0f;
        XG_FOR_STRIDED(j, lane, end, pc.lanes) {
            float p = xg_exp(x[base + j] - m) / s;
            y[base + j] = ignored ? 0.0f
                        : ok ? (p - (int(j) == l ? 1.0f : 0.0f)) * gr
                             : XG_NAN;
        }
#else
#error "rows.comp: no OP_ defined"
#endif
    }
}
