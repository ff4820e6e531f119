/* Fused scaled dot-product attention (struct xg_attention_args in
 * api/core/backend.h), flash-attention style: no [tq, tk] buffer.
 * reference: Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
 * Attention with IO-Awareness", NeurIPS 2022 (online softmax over key
 * tiles, recomputation in the backward); Milakov & Gimelshein, "Online
 * normalizer calculation for softmax", 2018.
 *
 * Work is split over (head, block of rows) with the thread pool:
 *   forward  blocks of ATT_BQ query rows; for each tile of ATT_BK keys the
 *            key tile is transposed once ([d][key]) so that the scores of
 *            every row of the block are axpy loops over keys (vectorised,
 *            no horizontal sums), then an online softmax update and
 *            out_i += p_ij v_j (axpy over d).
 *   dq pass  the same blocks: scores and dout_i . v_j from transposed key
 *            and value tiles, then dq_i += ds_ij k_j.
 *   dk/dv    blocks of ATT_BKV key rows; for each tile of ATT_BK queries
 *            (those that see the block) the query and dout tiles are
 *            transposed, then dv_j += pdrop_ij dout_i, dk_j += ds_ij q_i.
 * Every output element is summed by one thread in a fixed order, whatever
 * the number of threads: the same bits on every run.
 *
 * The dropout mask of a row segment comes from cpu_uniform_blocks (the
 * Philox stream of rand_uniform), element (bh * tq + i) * tk + j. */
#include "cpu_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    ATT_BQ = 16,  /* query rows per forward / dq work item */
    ATT_BK = 64,  /* keys (forward, dq) or queries (dk/dv) per tile */
    ATT_BKV = 16, /* key rows per dk/dv work item */
};

/* Keys query i sees: [0, visible(i)). */
static int64_t visible(const xg_attention_args *a, int64_t i)
{
    if (!a->causal)
        return a->tk;
    int64_t n = i + a->causal_offset + 1;
    return n < 0 ? 0 : n > a->tk ? a->tk : n;
}

/* The first query that sees key j (tq: none). */
static int64_t first_query(const xg_attention_args *a, int64_t j)
{
    if (!a->causal)
        return 0;
    int64_t i = j - a->causal_offset;
    return i < 0 ? 0 : i > a->tq ? a->tq : i;
}

/* u[0 .. n) = the uniform numbers of elements e0 .. e0 + n - 1 of
 * rand_uniform(0, 1) with this seed and offset. */
static void uniform_span(const xg_attention_args *a, uint64_t e0, int64_t n,
                         float *u)
{
    float buf[4 * CPU_RNG_LANES];
    uint64_t block = e0 / 4;
    int64_t skip = (int64_t)(e0 % 4), done = 0;
    while (done < n) {
        int64_t want = (skip + n - done + 3) / 4;
        int nb = want < CPU_RNG_LANES ? (int)want : CPU_RNG_LANES;
        cpu_uniform_blocks(a->seed, a->offset + block, nb, buf);
        for (int64_t k = skip; k < 4 * nb && done < n; k++)
            u[done++] = buf[k];
        block += (uint64_t)nb;
        skip = 0;
    }
}

/* The dropout factors of keys j0 .. j0 + n - 1 for row i of head h:
 * 0 (dropped) or 1 / (1 - p). */
static void keep_factors(const xg_attention_args *a, int64_t h, int64_t i,
                         int64_t j0, int64_t n, float *m)
{
    uint64_t e0 = ((uint64_t)h * (uint64_t)a->tq + (uint64_t)i) *
                      (uint64_t)a->tk + (uint64_t)j0;
    uniform_span(a, e0, n, m);
    const float keep = 1.0f / (1.0f - a->p);
    for (int64_t k = 0; k < n; k++)
        m[k] = m[k] < a->p ? 0.0f : keep;
}

/* t[c * ATT_BK + r] = x[r * d + c] for r < rows: a tile of rows as columns. */
static void transpose_tile(const float *x, int64_t rows, int64_t d, float *t)
{
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < d; c++)
            t[c * ATT_BK + r] = x[r * d + c];
}

/* s[0 .. n) = x . t[., 0 .. n) over d: dot products of one row with the
 * columns of a transposed tile. */
static void row_times_tile(const float *x, const float *t, int64_t d,
                           int64_t n, float *s)
{
    for (int64_t k = 0; k < n; k++)
        s[k] = 0.0f;
    for (int64_t c = 0; c < d; c++) {
        const float xc = x[c], *tc = t + c * ATT_BK;
        for (int64_t k = 0; k < n; k++)
            s[k] += xc * tc[k];
    }
}

/* y[0 .. d) += a * x[0 .. d) */
CPU_INLINE void axpy(float a, const float *restrict x, float *restrict y,
                     int64_t d)
{
    for (int64_t c = 0; c < d; c++)
        y[c] += a * x[c];
}

static float dot(const float *x, const float *y, int64_t d)
{
    float s = 0.0f;
    for (int64_t c = 0; c < d; c++)
        s += x[c] * y[c];
    return s;
}

/* The range functions are compiled for AVX2 and the baseline (CPU_CLONES):
 * every loop above is elementwise (no reassociated sums, no contraction
 * into FMA), so both give the same bits. */
#define ATT_CLONES CPU_CLONES

/* Per-thread scratch, in floats. */
static size_t scratch_floats(int64_t d)
{
    return (size_t)(2 * d * ATT_BK + 4 * ATT_BK);
}

typedef struct att_job {
    const xg_kernel_call *call;
    float *scratch; /* scratch_floats(d) per thread */
    int64_t blocks; /* row blocks per head */
} att_job;

/* ---- forward -------------------------------------------------------------- */

ATT_CLONES static void forward_range(const void *ctx, int64_t begin, int64_t end,
                          int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *kt = job->scratch + (size_t)thread * scratch_floats(d);
    float *s = kt + d * ATT_BK, *m = s + ATT_BK;
    float row_max[ATT_BQ], row_sum[ATT_BQ];
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, q0 = item % job->blocks * ATT_BQ;
        int64_t nq = tq - q0 < ATT_BQ ? tq - q0 : ATT_BQ;
        const float *q = cpu_f32(c->in[0].buf) + (h * tq + q0) * d;
        const float *k = cpu_f32(c->in[1].buf) + h * tk * d;
        const float *v = cpu_f32(c->in[2].buf) + h * tk * d;
        float *out = cpu_f32(c->out[0].buf) + (h * tq + q0) * d;
        float *lse = cpu_f32(c->out[1].buf) + h * tq + q0;
        memset(out, 0, (size_t)(nq * d) * sizeof *out);
        for (int64_t r = 0; r < nq; r++) {
            row_max[r] = -INFINITY;
            row_sum[r] = 0.0f;
        }
        int64_t kend = visible(a, q0 + nq - 1);
        for (int64_t k0 = 0; k0 < kend; k0 += ATT_BK) {
            int64_t nk = kend - k0 < ATT_BK ? kend - k0 : ATT_BK;
            transpose_tile(k + k0 * d, nk, d, kt);
            for (int64_t r = 0; r < nq; r++) {
                int64_t n = visible(a, q0 + r) - k0;
                if (n <= 0)
                    continue;
                if (n > nk)
                    n = nk;
                row_times_tile(q + r * d, kt, d, n, s);
                float mx = row_max[r];
                for (int64_t j = 0; j < n; j++) {
                    s[j] *= a->scale;
                    mx = s[j] > mx || s[j] != s[j] ? s[j] : mx;
                }
                float alpha = cpu_exp(row_max[r] - mx), sum = 0.0f;
                if (row_max[r] == -INFINITY)
                    alpha = 0.0f; /* nothing summed yet (mx may be -inf) */
                for (int64_t j = 0; j < n; j++) {
                    s[j] = cpu_exp(s[j] - mx);
                    sum += s[j];
                }
                row_max[r] = mx;
                row_sum[r] = row_sum[r] * alpha + sum;
                if (a->p > 0.0f) {
                    keep_factors(a, h, q0 + r, k0, n, m);
                    for (int64_t j = 0; j < n; j++)
                        s[j] *= m[j];
                }
                float *o = out + r * d;
                for (int64_t col = 0; col < d; col++)
                    o[col] *= alpha;
                for (int64_t j = 0; j < n; j++)
                    axpy(s[j], v + (k0 + j) * d, o, d);
            }
        }
        for (int64_t r = 0; r < nq; r++) {
            if (visible(a, q0 + r) == 0) {
                lse[r] = -INFINITY; /* out stays 0 */
                continue;
            }
            float *o = out + r * d;
            for (int64_t col = 0; col < d; col++)
                o[col] /= row_sum[r];
            lse[r] = row_max[r] + logf(row_sum[r]);
        }
    }
}

/* ---- backward: dq and delta ----------------------------------------------- */

/* p_ij from the score and lse_i; 0 where the row saw no key. */
CPU_INLINE float prob(float s, float lse)
{
    return lse == -INFINITY ? 0.0f : cpu_exp(s - lse);
}

ATT_CLONES static void backward_q_range(const void *ctx, int64_t begin, int64_t end,
                             int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *kt = job->scratch + (size_t)thread * scratch_floats(d);
    float *vt = kt + d * ATT_BK, *s = vt + d * ATT_BK, *dp = s + ATT_BK;
    float *m = dp + ATT_BK;
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, q0 = item % job->blocks * ATT_BQ;
        int64_t nq = tq - q0 < ATT_BQ ? tq - q0 : ATT_BQ;
        int64_t row0 = h * tq + q0;
        const float *q = cpu_f32(c->in[0].buf) + row0 * d;
        const float *k = cpu_f32(c->in[1].buf) + h * tk * d;
        const float *v = cpu_f32(c->in[2].buf) + h * tk * d;
        const float *o = cpu_f32(c->in[3].buf) + row0 * d;
        const float *dout = cpu_f32(c->in[4].buf) + row0 * d;
        const float *lse = cpu_f32(c->in[5].buf) + row0;
        float *dq = cpu_f32(c->out[0].buf) + row0 * d;
        float *delta = cpu_f32(c->out[1].buf) + row0;
        memset(dq, 0, (size_t)(nq * d) * sizeof *dq);
        for (int64_t r = 0; r < nq; r++)
            delta[r] = dot(dout + r * d, o + r * d, d);
        int64_t kend = visible(a, q0 + nq - 1);
        for (int64_t k0 = 0; k0 < kend; k0 += ATT_BK) {
            int64_t nk = kend - k0 < ATT_BK ? kend - k0 : ATT_BK;
            transpose_tile(k + k0 * d, nk, d, kt);
            transpose_tile(v + k0 * d, nk, d, vt);
            for (int64_t r = 0; r < nq; r++) {
                int64_t n = visible(a, q0 + r) - k0;
                if (n <= 0 || lse[r] == -INFINITY)
                    continue;
                if (n > nk)
                    n = nk;
                row_times_tile(q + r * d, kt, d, n, s);
                row_times_tile(dout + r * d, vt, d, n, dp);
                if (a->p > 0.0f) {
                    keep_factors(a, h, q0 + r, k0, n, m);
                    for (int64_t j = 0; j < n; j++)
                        dp[j] *= m[j];
                }
                for (int64_t j = 0; j < n; j++)
                    s[j] = prob(s[j] * a->scale, lse[r]) * (dp[j] - delta[r]);
                for (int64_t j = 0; j < n; j++)
                    axpy(s[j], k + (k0 + j) * d, dq + r * d, d);
            }
        }
        for (int64_t col = 0; col < nq * d; col++)
            dq[col] *= a->scale;
    }
}

/* ---- backward: dk and dv -------------------------------------------------- */

ATT_CLONES static void backward_kv_range(const void *ctx, int64_t begin, int64_t end,
                              int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *qt = job->scratch + (size_t)thread * scratch_floats(d);
    float *gt = qt + d * ATT_BK, *s = gt + d * ATT_BK, *dp = s + ATT_BK;
    float *pd = dp + ATT_BK;
    /* The keep factors of ATT_BK query rows x ATT_BKV keys. */
    float mask[ATT_BK * ATT_BKV];
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, j0 = item % job->blocks * ATT_BKV;
        int64_t nk = tk - j0 < ATT_BKV ? tk - j0 : ATT_BKV;
        const float *q = cpu_f32(c->in[0].buf) + h * tq * d;
        const float *k = cpu_f32(c->in[1].buf) + (h * tk + j0) * d;
        const float *v = cpu_f32(c->in[2].buf) + (h * tk + j0) * d;
        const float *dout = cpu_f32(c->in[3].buf) + h * tq * d;
        const float *lse = cpu_f32(c->in[4].buf) + h * tq;
        const float *delta = cpu_f32(c->in[5].buf) + h * tq;
        float *dk = cpu_f32(c->out[0].buf) + (h * tk + j0) * d;
        float *dv = cpu_f32(c->out[1].buf) + (h * tk + j0) * d;
        memset(dk, 0, (size_t)(nk * d) * sizeof *dk);
        memset(dv, 0, (size_t)(nk * d) * sizeof *dv);
        for (int64_t i0 = first_query(a, j0); i0 < tq; i0 += ATT_BK) {
            int64_t nq = tq - i0 < ATT_BK ? tq - i0 : ATT_BK;
            transpose_tile(q + i0 * d, nq, d, qt);
            transpose_tile(dout + i0 * d, nq, d, gt);
            if (a->p > 0.0f)
                for (int64_t r = 0; r < nq; r++)
                    keep_factors(a, h, i0 + r, j0, nk, mask + r * ATT_BKV);
            for (int64_t jj = 0; jj < nk; jj++) {
                /* queries i0 + r0 .. i0 + nq - 1 see key j0 + jj */
                int64_t r0 = first_query(a, j0 + jj) - i0;
                if (r0 < 0)
                    r0 = 0;
                if (r0 >= nq)
                    continue;
                int64_t n = nq - r0;
                row_times_tile(k + jj * d, qt + r0, d, n, s);
                row_times_tile(v + jj * d, gt + r0, d, n, dp);
                for (int64_t r = 0; r < n; r++) {
                    float mk = a->p > 0.0f ? mask[(r0 + r) * ATT_BKV + jj]
                                           : 1.0f;
                    float p = prob(s[r] * a->scale, lse[i0 + r0 + r]);
                    pd[r] = p * mk;
                    s[r] = p * (dp[r] * mk - delta[i0 + r0 + r]);
                }
                for (int64_t r = 0; r < n; r++) {
                    axpy(pd[r], dout + (i0 + r0 + r) * d, dv + jj * d, d);
                    axpy(s[r], q + (i0 + r0 + r) * d, dk + jj * d, d);
                }
            }
        }
        for (int64_t col = 0; col < nk * d; col++)
            dk[col] *= a->scale;
    }
}

/* ---- the family kernel ---------------------------------------------------- */

xg_status cpu_attention(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_device *cd = cpu_dev(dev);
    const xg_attention_args *a = &call->p.attention;
    int threads = cpu_pool_threads(cd->pool);
    att_job job = {.call = call};
    job.scratch = malloc((size_t)threads * scratch_floats(a->d) * sizeof(float));
    if (!job.scratch)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory "
                            "for %d threads' scratch (head size %lld)",
                            xg_op_table[call->op].name, threads,
                            (long long)a->d);
    /* Cost of an item: its pairs of rows, a few operations per element of
     * d each (half of them under a causal mask, roughly). */
    int64_t pair_cost = 4 * a->d + 2 * CPU_COST_LIBM;
    if (call->op == XG_OP_attention_backward_kv) {
        job.blocks = (a->tk + ATT_BKV - 1) / ATT_BKV;
        cpu_parallel_rows(cd->pool, a->bh * job.blocks,
                          ATT_BKV * a->tq * pair_cost, backward_kv_range, &job);
    } else {
        job.blocks = (a->tq + ATT_BQ - 1) / ATT_BQ;
        cpu_parallel_rows(cd->pool, a->bh * job.blocks,
                          ATT_BQ * a->tk * pair_cost,
                          call->op == XG_OP_attention ? forward_range
                                                      : backward_q_range,
                          &job);
    }
    free(job.scratch);
    return XG_OK;
}
