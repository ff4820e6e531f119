/* Fused scaled dot-product attention (struct xg_attention_args): OP_ATTENTION,
 * OP_ATTENTION_BACKWARD_Q, OP_ATTENTION_BACKWARD_KV, with the semantics of
 * backends/cpu/cpu_attention.c and no [tq, tk] buffer.
 *
 * One workgroup of XG_ATT_WG invocations per row (grid-stride over rows): a
 * query row (forward, dq pass) or a key row (dk/dv pass). The rows of the
 * other side go in tiles of XG_ATT_WG, one invocation each: it computes its
 * score (a dot product over d), the workgroup reduces max and sum in
 * shared memory (the online softmax), and the tile's weights stay in
 * shared memory while the invocations, now over d, accumulate into their
 * own elements of the output row, kept in the output buffer (only that
 * invocation touches them). Shared memory: 2 x XG_ATT_WG floats. The
 * dropout mask is element (bh_index * tq + i) * tk + j of rand_uniform's
 * Philox stream (rng.comp), indexed in 64 bits. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "philox.glsl"

layout(local_size_x = XG_ATT_WG) in;

layout(push_constant) uniform Push {
    uint bh, tq, tk, d;
    float scale;
    uint causal;
    int off; /* causal_offset, within [-tq, tk] */
    float p;
    uint seed_lo, seed_hi, offset_lo, offset_hi;
    float keep; /* 1 / (1 - p), rounded by the host */
} pc;

#if defined(OP_ATTENTION)
XG_IN(0, float, q);
XG_IN(1, float, k);
XG_IN(2, float, v);
XG_INOUT(0, float, out_);
XG_OUT(1, float, lse);
#elif defined(OP_ATTENTION_BACKWARD_Q)
XG_IN(0, float, q);
XG_IN(1, float, k);
XG_IN(2, float, v);
XG_IN(3, float, o);
XG_IN(4, float, dout);
XG_IN(5, float, lse);
XG_INOUT(0, float, dq);
XG_OUT(1, float, delta);
#elif defined(OP_ATTENTION_BACKWARD_KV)
XG_IN(0, float, q);
XG_IN(1, float, k);
XG_IN(2, float, v);
XG_IN(3, float, dout);
XG_IN(4, float, lse);
XG_IN(5, float, delta);
XG_INOUT(0, float, dk);
XG_INOUT(1, float, dv);
#else
#error "attention.comp: no OP_ defined"
#endif

shared float s_a[XG_ATT_WG], s_b[XG_ATT_WG];

const float XG_2_POW_M24 = 5.9604644775390625e-8f;

/* Keys [0, visible) that query i sees. */
uint visible(uint i)
{
    if (pc.causal == 0u)
        return pc.tk;
    int n = int(i) + pc.off + 1;
    return n < 0 ? 0u : min(uint(n), pc.tk);
}

/* The first query that sees key j (tq: none). */
uint first_query(uint j)
{
    if (pc.causal == 0u)
        return 0u;
    int i = int(j) - pc.off;
    return i < 0 ? 0u : min(uint(i), pc.tq);
}

/* The dropout factor of mask element row * tk + j (row = bh_index * tq +
 * i): 0 when its u < p, else keep; 1 without dropout. */
float keep_factor(uint row, uint j)
{
    if (pc.p <= 0.0f)
        return 1.0f;
    uint hi, lo, carry;
    umulExtended(row, pc.tk, hi, lo);
    lo = uaddCarry(lo, j, carry);
    hi += carry;
    uint word = lo & 3u;
    uvec2 blk = uvec2((lo >> 2) | (hi << 30), hi >> 2);
    uint c_lo = uaddCarry(pc.offset_lo, blk.x, carry);
    uvec4 w = xg_philox4x32_10(
        uvec4(c_lo, pc.offset_hi + blk.y + carry, 0u, 0u),
        uvec2(pc.seed_lo, pc.seed_hi));
    float u = float(w[word] >> 8u) * XG_2_POW_M24;
    return u < pc.p ? 0.0f : pc.keep;
}

/* The max (NaN-propagating) or sum of v over the workgroup, in s_b. */
float group_reduce(float v, bool take_max)
{
    uint t = gl_LocalInvocationID.x;
    s_b[t] = v;
    barrier();
    for (uint half_ = XG_ATT_WG / 2; half_ > 0; half_ /= 2) {
        if (t < half_) {
            float u = s_b[t + half_];
            v = take_max ? xg_max_nan(v, u) : v + u;
            s_b[t] = v;
        }
        barrier();
    }
    float result = s_b[0];
    barrier();
    return result;
}

#if defined(OP_ATTENTION)
float dot_qk(uint qi, uint kj)
{
    float s = 0.0f;
    XG_FOR_STRIDED(c, 0u, pc.d, 1u)
        s += q[qi + c] * k[kj + c];
    return s;
}

void run_row(uint row)
{
    uint t = gl_LocalInvocationID.x, h = row / pc.tq, i = row % pc.tq;
    uint qi = row * pc.d, kv = h * pc.tk * pc.d;
    uint kend = visible(i);
    for (uint c = t; c < pc.d; c += XG_ATT_WG)
        out_[qi + c] = 0.0f;
    float m = -XG_INF, sum = 0.0f;
    for (uint k0 = 0; k0 < kend; k0 += XG_ATT_WG) {
        uint j = k0 + t;
        float s = j < kend ? pc.scale * dot_qk(qi, kv + j * pc.d) : -XG_INF;
        float mt = xg_max_nan(m, group_reduce(s, true));
        float alpha = m == -XG_INF ? 0.0f : xg_exp(m - mt);
        float w = j < kend ? xg_exp(s - mt) : 0.0f;
        sum = sum * alpha + group_reduce(w, false);
        m = mt;
        if (j < kend)
            w *= keep_factor(row, j);
        s_a[t] = w;
        barrier();
        uint nt = min(kend - k0, uint(XG_ATT_WG));
        for (uint c = t; c < pc.d; c += XG_ATT_WG) {
            float acc = out_[qi + c] * alpha;
            XG_FOR_STRIDED(x, 0u, nt, 1u)
                acc += s_a[x] * v[kv + (k0 + x) * pc.d + c];
            out_[qi + c] = acc;
        }
        barrier();
    }
    if (kend > 0)
        for (uint c = t; c < pc.d; c += XG_ATT_WG)
            out_[qi + c] /= sum;
    if (t == 0)
        lse[row] = kend > 0 ? m + xg_log(sum) : -XG_INF;
}

#elif defined(OP_ATTENTION_BACKWARD_Q)
void run_row(uint row)
{
    uint t = gl_LocalInvocationID.x, h = row / pc.tq, i = row % pc.tq;
    uint qi = row * pc.d, kv = h * pc.tk * pc.d;
    float dl = 0.0f;
    for (uint c = t; c < pc.d; c += XG_ATT_WG) {
        dl += dout[qi + c] * o[qi + c];
        dq[qi + c] = 0.0f;
    }
    dl = group_reduce(dl, false);
    if (t == 0)
        delta[row] = dl;
    float L = lse[row];
    uint kend = L == -XG_INF ? 0u : visible(i);
    for (uint k0 = 0; k0 < kend; k0 += XG_ATT_WG) {
        uint j = k0 + t;
        float g = 0.0f;
        if (j < kend) {
            float s = 0.0f, dp = 0.0f;
            uint kj = kv + j * pc.d;
            XG_FOR_STRIDED(c, 0u, pc.d, 1u) {
                s += q[qi + c] * k[kj + c];
                dp += dout[qi + c] * v[kj + c];
            }
            dp *= keep_factor(row, j);
            g = xg_exp(pc.scale * s - L) * (dp - dl);
        }
        s_a[t] = g;
        barrier();
        uint nt = min(kend - k0, uint(XG_ATT_WG));
        for (uint c = t; c < pc.d; c += XG_ATT_WG) {
            float acc = dq[qi + c];
            XG_FOR_STRIDED(x, 0u, nt, 1u)
                acc += s_a[x] * k[kv + (k0 + x) * pc.d + c];
            dq[qi + c] = acc;
        }
        barrier();
    }
    for (uint c = t; c < pc.d; c += XG_ATT_WG)
        dq[qi + c] *= pc.scale;
}

#else /* OP_ATTENTION_BACKWARD_KV */
void run_row(uint row)
{
    uint t = gl_LocalInvocationID.x, h = row / pc.tk, j = row % pc.tk;
    uint kj = row * pc.d, qh = h * pc.tq;
    for (uint c = t; c < pc.d; c += XG_ATT_WG) {
        dk[kj + c] = 0.0f;
        dv[kj + c] = 0.0f;
    }
    for (uint i0 = first_query(j); i0 < pc.tq; i0 += XG_ATT_WG) {
        uint i = i0 + t;
        float a = 0.0f, g = 0.0f;
        if (i < pc.tq && lse[qh + i] != -XG_INF) {
            float s = 0.0f, dp = 0.0f;
            uint qi = (qh + i) * pc.d;
            XG_FOR_STRIDED(c, 0u, pc.d, 1u) {
                s += q[qi + c] * k[kj + c];
                dp += dout[qi + c] * v[kj + c];
            }
            float pr = xg_exp(pc.scale * s - lse[qh + i]);
            float mk = keep_factor(qh + i, j);
            a = pr * mk;
            g = pr * (dp * mk - delta[qh + i]);
        }
        s_a[t] = a;
        s_b[t] = g;
        barrier();
        uint nt = min(pc.tq - i0, uint(XG_ATT_WG));
        for (uint c = t; c < pc.d; c += XG_ATT_WG) {
            float accv = dv[kj + c], acck = dk[kj + c];
            XG_FOR_STRIDED(x, 0u, nt, 1u) {
                uint at = (qh + i0 + x) * pc.d + c;
                accv += s_a[x] * dout[at];
                acck += s_b[x] * q[at];
            }
            dv[kj + c] = accv;
            dk[kj + c] = acck;
        }
        barrier();
    }
    for (uint c = t; c < pc.d; c += XG_ATT_WG)
        dk[kj + c] *= pc.scale;
}
#endif

void main()
{
#if defined(OP_ATTENTION_BACKWARD_KV)
    uint rows = pc.bh * pc.tk;
#else
    uint rows = pc.bh * pc.tq;
#endif
    for (uint row = gl_WorkGroupID.x; row < rows; row += gl_NumWorkGroups.x)
        run_row(row);
}
