/* Reductions over the middle axis of an [outer, dim, inner] view
 * (struct xg_reduce_args): OP_SUM, OP_MAX (values and first index),
 * OP_ARGMAX, and OP_MAX_BACKWARD (scatter of g to the max positions).
 *
 * A workgroup computes XG_WG_SIZE / lanes consecutive outputs (in [outer,
 * inner] order) at a time, with `lanes` invocations per output that walk
 * the dim axis with a stride and then combine through shared memory. The
 * backend picks lanes (a power of two) so that each has a few elements.
 * When inner == 1 an output's lanes are adjacent invocations, which read
 * adjacent elements of a row; otherwise they are XG_WG_SIZE / lanes
 * invocations apart, so that neighbouring invocations serve neighbouring
 * outputs and read neighbouring inner positions. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint outer, dim, inner;
    uint lanes; /* per output: a power of two <= XG_WG_SIZE */
} pc;

#if defined(OP_MAX_BACKWARD)

XG_IN(0, float, g);
XG_IN(1, int, idx);
XG_OUT(0, float, dx);

void main()
{
    uint n = pc.outer * pc.dim * pc.inner;
    XG_FOR_EACH(e, n) {
        uint i = e % pc.inner, od = e / pc.inner;
        uint o = od / pc.dim, d = od % pc.dim;
        uint r = o * pc.inner + i;
        dx[e] = idx[r] == int(d) ? g[r] : 0.0f;
    }
}

#else

#if defined(OP_SUM)
#define XG_HAS_VALUE
#elif defined(OP_MAX)
#define XG_HAS_VALUE
#define XG_HAS_INDEX
#elif defined(OP_ARGMAX)
#define XG_HAS_INDEX
#else
#error "reduce.comp: no OP_ defined"
#endif

XG_IN(0, float, x);
#if defined(OP_SUM) || defined(OP_MAX)
XG_OUT(0, float, out_value);
#endif
#if defined(OP_MAX)
XG_OUT(1, int, out_index);
#elif defined(OP_ARGMAX)
XG_OUT(0, int, out_index);
#endif

shared float s_value[XG_WG_SIZE];
shared int s_index[XG_WG_SIZE];

/* Partial result of one invocation: a sum, or the max with its first index
 * (index -1: no element seen yet). */
struct Acc {
    float value;
    int index;
};

#if defined(OP_SUM)
Acc acc_init() { return Acc(0.0f, 0); }
Acc acc_combine(Acc a, Acc b) { return Acc(a.value + b.value, 0); }
#else
Acc acc_init() { return Acc(0.0f, -1); }
/* The larger value wins, NaN above everything (it propagates, as in
 * PyTorch); among equal values (or NaNs) the first index wins. */
Acc acc_combine(Acc a, Acc b)
{
    if (b.index < 0)
        return a;
    if (a.index < 0)
        return b;
    bool a_nan = isnan(a.value), b_nan = isnan(b.value);
    bool take_b = a_nan != b_nan               ? b_nan
                : (a_nan || a.value == b.value) ? b.index < a.index
                                                : b.value > a.value;
    return take_b ? b : a;
}
#endif

/* This invocation's share of output (o, i): every lanes-th element. */
Acc reduce_lane(uint o, uint i, uint lane)
{
    Acc acc = acc_init();
    uint base = o * pc.dim * pc.inner + i;
    XG_FOR_STRIDED(d, lane, pc.dim, pc.lanes)
        acc = acc_combine(acc, Acc(x[base + d * pc.inner], int(d)));
    return acc;
}

void store(uint r, Acc acc)
{
#ifdef XG_HAS_VALUE
    out_value[r] = acc.value;
#endif
#ifdef XG_HAS_INDEX
    out_index[r] = acc.index;
#endif
}

void main()
{
    uint t = gl_LocalInvocationID.x;
    uint per_group = XG_WG_SIZE / pc.lanes, outputs = pc.outer * pc.inner;
    /* Invocation t serves output `slot` of the group as lane `lane`; its
     * partner lanes are `step` invocations apart. */
    bool rows = pc.inner == 1;
    uint slot = rows ? t / pc.lanes : t % per_group;
    uint lane = rows ? t % pc.lanes : t / per_group;
    uint step = rows ? 1 : per_group;
    for (uint first = gl_WorkGroupID.x * per_group; first < outputs;
         first += gl_NumWorkGroups.x * per_group) {
        uint r = first + slot;
        Acc acc = r < outputs ? reduce_lane(r / pc.inner, r % pc.inner, lane)
                              : acc_init();
        s_value[t] = acc.value;
        s_index[t] = acc.index;
        barrier();
        for (uint half_ = pc.lanes / 2; half_ > 0; half_ /= 2) {
            if (lane < half_) {
                uint u = t + half_ * step;
                acc = acc_combine(acc, Acc(s_value[u], s_index[u]));
                s_value[t] = acc.value;
                s_index[t] = acc.index;
            }
            barrier();
        }
        if (lane == 0 && r < outputs)
            store(r, acc);
        barrier(); /* s_* are rewritten by the next outputs */
    }
}

#endif
