/* ATTENTION family (struct xg_attention_args): fused scaled dot-product
 * attention without any [tq, tk] buffer, as backends/cpu/cpu_attention.c.
 *
 * One work-group per row: a query row (forward, dq pass) or a key row (dk,
 * dv pass). The rows of the other side go in tiles of get_local_size(0),
 * one work-item each: it computes its score (a dot product over d) and the
 * group reduces them in local memory (max and sum for the online softmax);
 * the tile's weights stay in local memory while the work-items, now over
 * d, accumulate into their own elements of the output row (kept in the
 * output buffer, which only that work-item touches). Local memory: two
 * arrays of XG_WG_MAX floats. Needs xg_philox_block and xg_unit (rng.cl)
 * for the dropout mask. Launched with rows * local work-items. */

/* Keys [0, visible) that query i sees. */
long xg_att_visible(long i, long tk, int causal, long off)
{
    if (!causal)
        return tk;
    long n = i + off + 1;
    return n < 0 ? 0 : n > tk ? tk : n;
}

/* The first query that sees key j (tq: none). */
long xg_att_first_query(long j, long tq, int causal, long off)
{
    if (!causal)
        return 0;
    long i = j - off;
    return i < 0 ? 0 : i > tq ? tq : i;
}

/* The dropout factor of element e of the head-major [bh, tq, tk] mask: 0
 * when u_e < p, else keep = 1 / (1 - p); 1 without dropout. */
float xg_att_keep(ulong e, ulong seed, ulong offset, float p, float keep)
{
    if (p <= 0.0f)
        return 1.0f;
    float4 u = xg_unit(xg_philox_block(seed, offset, (long)(e / 4)));
    float vals[4] = {u.x, u.y, u.z, u.w};
    return vals[e % 4] < p ? 0.0f : keep;
}

float xg_att_dot(__global const float *a, __global const float *b, long d)
{
    float s = 0.0f;
    for (long c = 0; c < d; c++)
        s += a[c] * b[c];
    return s;
}

__kernel void xg_attention(__global const float *q, __global const float *k,
                           __global const float *v, __global float *out,
                           __global float *lse, long bh, long tq, long tk,
                           long d, float scale, int causal, long off, float p,
                           ulong seed, ulong offset, float keep)
{
    /* stats: the running max and sum of the online softmax, kept in local
     * memory by work-item 0. (Kept as identical private copies in every
     * work-item instead, PoCL 3's pthread device gave some rows wrong
     * values when work-groups ran in parallel.) */
    __local float weight[XG_WG_MAX], scratch[XG_WG_MAX], stats[2];
    long row = get_group_id(0), h = row / tq, i = row % tq;
    int l = get_local_id(0), n = get_local_size(0);
    q += row * d;
    k += h * tk * d;
    v += h * tk * d;
    out += row * d;
    long kend = xg_att_visible(i, tk, causal, off);
    for (long c = l; c < d; c += n)
        out[c] = 0.0f;
    if (l == 0) {
        stats[0] = -INFINITY;
        stats[1] = 0.0f;
    }
    barrier(CLK_LOCAL_MEM_FENCE);
    for (long k0 = 0; k0 < kend; k0 += n) {
        long j = k0 + l;
        float m = stats[0];
        float s = j < kend ? scale * xg_att_dot(q, k + j * d, d) : -INFINITY;
        float mt = xg_nan_max(m, xg_group_max(s, scratch));
        float alpha = m == -INFINITY ? 0.0f : exp(m - mt);
        float w = j < kend ? exp(s - mt) : 0.0f;
        float tsum = xg_group_sum(w, scratch);
        if (l == 0) {
            stats[0] = mt;
            stats[1] = stats[1] * alpha + tsum;
        }
        if (j < kend)
            w *= xg_att_keep((ulong)row * (ulong)tk + (ulong)j, seed, offset,
                             p, keep);
        weight[l] = w;
        barrier(CLK_LOCAL_MEM_FENCE);
        long nt = kend - k0 < n ? kend - k0 : n;
        for (long c = l; c < d; c += n) {
            float acc = out[c] * alpha;
            for (long t = 0; t < nt; t++)
                acc += weight[t] * v[(k0 + t) * d + c];
            out[c] = acc;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    float sum = stats[1];
    if (kend > 0)
        for (long c = l; c < d; c += n)
            out[c] /= sum;
    if (l == 0)
        lse[row] = kend > 0 ? stats[0] + log(sum) : -INFINITY;
}

/* delta_i = dout_i . out_i; dq_i = scale sum_j p_ij (dp_ij - delta_i) k_j. */
__kernel void xg_attention_backward_q(
    __global const float *q, __global const float *k, __global const float *v,
    __global const float *o, __global const float *dout,
    __global const float *lse, __global float *dq, __global float *delta,
    long bh, long tq, long tk, long d, float scale, int causal, long off,
    float p, ulong seed, ulong offset, float keep)
{
    __local float ds[XG_WG_MAX], scratch[XG_WG_MAX];
    long row = get_group_id(0), h = row / tq, i = row % tq;
    int l = get_local_id(0), n = get_local_size(0);
    q += row * d;
    o += row * d;
    dout += row * d;
    dq += row * d;
    k += h * tk * d;
    v += h * tk * d;
    float dl = 0.0f;
    for (long c = l; c < d; c += n) {
        dl += dout[c] * o[c];
        dq[c] = 0.0f;
    }
    dl = xg_group_sum(dl, scratch);
    if (l == 0)
        delta[row] = dl;
    float L = lse[row];
    long kend = L == -INFINITY ? 0 : xg_att_visible(i, tk, causal, off);
    for (long k0 = 0; k0 < kend; k0 += n) {
        long j = k0 + l;
        float g = 0.0f;
        if (j < kend) {
            float s = scale * xg_att_dot(q, k + j * d, d);
            float dp = xg_att_dot(dout, v + j * d, d) *
                       xg_att_keep((ulong)row * (ulong)tk + (ulong)j, seed,
                                   offset, p, keep);
            g = exp(s - L) * (dp - dl);
        }
        ds[l] = g;
        barrier(CLK_LOCAL_MEM_FENCE);
        long nt = kend - k0 < n ? kend - k0 : n;
        for (long c = l; c < d; c += n) {
            float acc = dq[c];
            for (long t = 0; t < nt; t++)
                acc += ds[t] * k[(k0 + t) * d + c];
            dq[c] = acc;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (long c = l; c < d; c += n)
        dq[c] *= scale;
}

/* dv_j = sum_i pdrop_ij dout_i, dk_j = scale sum_i ds_ij q_i over the
 * queries that see key j. */
__kernel void xg_attention_backward_kv(
    __global const float *q, __global const float *k, __global const float *v,
    __global const float *dout, __global const float *lse,
    __global const float *delta, __global float *dk, __global float *dv,
    long bh, long tq, long tk, long d, float scale, int causal, long off,
    float p, ulong seed, ulong offset, float keep)
{
    __local float pd[XG_WG_MAX], ds[XG_WG_MAX];
    long row = get_group_id(0), h = row / tk, j = row % tk;
    int l = get_local_id(0), n = get_local_size(0);
    k += row * d;
    v += row * d;
    dk += row * d;
    dv += row * d;
    q += h * tq * d;
    dout += h * tq * d;
    lse += h * tq;
    delta += h * tq;
    for (long c = l; c < d; c += n)
        dk[c] = dv[c] = 0.0f;
    for (long i0 = xg_att_first_query(j, tq, causal, off); i0 < tq;
         i0 += n) {
        long i = i0 + l;
        float a = 0.0f, g = 0.0f;
        if (i < tq && lse[i] != -INFINITY) {
            float pr = exp(scale * xg_att_dot(q + i * d, k, d) - lse[i]);
            float mk = xg_att_keep(((ulong)h * (ulong)tq + (ulong)i) *
                                       (ulong)tk + (ulong)j,
                                   seed, offset, p, keep);
            a = pr * mk;
            g = pr * (xg_att_dot(dout + i * d, v, d) * mk - delta[i]);
        }
        pd[l] = a;
        ds[l] = g;
        barrier(CLK_LOCAL_MEM_FENCE);
        long nt = tq - i0 < n ? tq - i0 : n;
        for (long c = l; c < d; c += n) {
            float accv = dv[c], acck = dk[c];
            for (long t = 0; t < nt; t++) {
                accv += pd[t] * dout[(i0 + t) * d + c];
                acck += ds[t] * q[(i0 + t) * d + c];
            }
            dv[c] = accv;
            dk[c] = acck;
        }
        barrier(CLK_LOCAL_MEM_FENCE);
    }
    for (long c = l; c < d; c += n)
        dk[c] *= scale;
}
