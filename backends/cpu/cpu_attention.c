/* Fused scaled dot-product attention (struct xg_attention_args in
 * api/core/backend.h), flash-attention style: no [tq, tk] buffer.
 * reference: Dao et al., "FlashAttention: Fast and Memory-Efficient Exact
 * Attention with IO-Awareness", NeurIPS 2022 (online softmax over key
 * tiles, recomputation in the backward); Dao, "FlashAttention-2: Faster
 * Attention with Better Parallelism and Work Partitioning", 2023 (the
 * dq pass over query blocks, the dk/dv pass over key blocks); Milakov &
 * Gimelshein, "Online normalizer calculation for softmax", 2018.
 *
 * Work is split over (head, block of ATT_BLK rows) with the thread pool,
 * and each item walks the blocks of the other side, one ATT_BLK x ATT_BLK
 * tile of scores at a time, kept in per-thread scratch:
 *   forward  query blocks; per key block S = Q K^T (the key tile
 *            transposed once, [d][key]), an online softmax update of each
 *            row, then O = alpha O + P V.
 *   dq pass  query blocks; S = Q K^T and dP = dO V^T, dS = P (dP m -
 *            delta), dQ += dS K.
 *   dk/dv    key blocks; per query block the transposed tiles S^T = K Q^T
 *            and dP^T = V dO^T, then dV += Pdrop^T dO and dK += dS^T Q.
 * The products are register-blocked micro-kernels (tile_nt: ATT_MR rows x
 * ATT_NR columns of X Y^T from a transposed tile; tile_nn: ATT_MR rows x
 * ATT_NR columns of C += A Y) whose accumulators stay in vector
 * registers (GNU vector extensions; plain loops, same bits, without
 * them). Each output element is summed by one
 * thread in a fixed order (over d for scores; over keys or queries in
 * increasing order for outputs), whatever the number of threads: the same
 * bits on every run. Causal tiles that no query of the block sees are
 * skipped; on the diagonal a group of rows computes the scores its last
 * row needs, but a product takes only the pairs that the mask keeps (the
 * micro-kernel over the keys or queries a whole group takes, the rest row
 * by row, in the same order), so a masked key never enters an output,
 * even as 0 * inf. The results are the same bits as summing pair by pair.
 *
 * The dropout mask of a row segment comes from cpu_uniform_blocks (the
 * Philox stream of rand_uniform), element (bh * tq + i) * tk + j. */
#include "cpu_impl.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum {
    ATT_BLK = 64, /* rows per work item and per tile of the other side */
    ATT_MR = 4,   /* micro-kernel rows */
    ATT_NR = 16,  /* micro-kernel columns (two AVX vectors) */
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

static int64_t min64(int64_t x, int64_t y) { return x < y ? x : y; }
static int64_t max64(int64_t x, int64_t y) { return x > y ? x : y; }
/* n rounded up to a multiple of ATT_NR. */
static int64_t round_nr(int64_t n)
{
    return (n + ATT_NR - 1) / ATT_NR * ATT_NR;
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

/* t[c * ATT_BLK + r] = x[r * d + c] for r < rows, and 0 for rows <= r <
 * round_nr(rows): a tile of rows as columns, padded for the micro-kernels. */
static void transpose_tile(const float *x, int64_t rows, int64_t d, float *t)
{
    int64_t padded = round_nr(rows);
    for (int64_t c = 0; c < d; c++) {
        float *tc = t + c * ATT_BLK;
        for (int64_t r = 0; r < rows; r++)
            tc[r] = x[r * d + c];
        for (int64_t r = rows; r < padded; r++)
            tc[r] = 0.0f;
    }
}

/* ---- micro-kernels ---------------------------------------------------------
 * Compiled into the clones of their callers (always inline): ATT_MR x
 * ATT_NR accumulators, elementwise multiplies and adds (no reassociated
 * sums, no contraction into FMA), so the AVX2 and baseline clones give the
 * same bits. With GCC or clang the accumulators are vectors of 8 floats
 * (generic vector extensions: one AVX register, or two SSE ones), which
 * the compiler keeps in registers; elsewhere plain loops, same results. */

#if defined(__GNUC__)
typedef float att_vec __attribute__((vector_size(32)));
enum { ATT_VW = 8, ATT_NV = ATT_NR / ATT_VW };

/* Unaligned loads and stores, and 8 copies of a float (macros: vector
 * values crossing a function boundary outside the AVX clone would change
 * the ABI). */
#define VLOAD(v, p) memcpy(&(v), (p), sizeof(att_vec))
#define VSTORE(p, v) memcpy((p), &(v), sizeof(att_vec))
#define VSPLAT(x) ((att_vec){(x), (x), (x), (x), (x), (x), (x), (x)})
#endif

/* c[r * ATT_BLK + j] = sum_k x[r * ldx + k] * t[k * ATT_BLK + j] (k in
 * increasing order from 0.0f) for r < rows (ATT_MR or 1, a constant) and
 * j in [j0, j1) (multiples of ATT_NR): rows of X times the columns of a
 * transposed tile. */
CPU_INLINE void tile_nt(const float *restrict x, int64_t ldx, int rows,
                        const float *restrict t, int64_t d, int64_t j0,
                        int64_t j1, float *restrict c)
{
    for (int64_t j = j0; j < j1; j += ATT_NR) {
#if defined(__GNUC__)
        att_vec acc[ATT_MR][ATT_NV];
        for (int r = 0; r < rows; r++)
            for (int l = 0; l < ATT_NV; l++)
                acc[r][l] = VSPLAT(0.0f);
        for (int64_t k = 0; k < d; k++) {
            att_vec y[ATT_NV];
            for (int l = 0; l < ATT_NV; l++)
                VLOAD(y[l], t + k * ATT_BLK + j + l * ATT_VW);
            for (int r = 0; r < rows; r++) {
                const float xs = x[r * ldx + k];
                const att_vec xr = VSPLAT(xs);
                for (int l = 0; l < ATT_NV; l++)
                    acc[r][l] += xr * y[l];
            }
        }
        for (int r = 0; r < rows; r++)
            for (int l = 0; l < ATT_NV; l++)
                VSTORE(c + r * ATT_BLK + j + l * ATT_VW, acc[r][l]);
#else
        for (int r = 0; r < rows; r++) {
            float acc[ATT_NR] = {0};
            for (int64_t k = 0; k < d; k++) {
                const float xr = x[r * ldx + k], *tk = t + k * ATT_BLK + j;
                for (int l = 0; l < ATT_NR; l++)
                    acc[l] += xr * tk[l];
            }
            for (int l = 0; l < ATT_NR; l++)
                c[r * ATT_BLK + j + l] = acc[l];
        }
#endif
    }
}

/* Rows r < rows (ATT_MR or 1, a constant) of C [., d] (leading dimension
 * d) += sum_{k < n} w[r * ATT_BLK + k] * y[k * d + .], k in increasing
 * order: weights of a tile times rows of Y. */
CPU_INLINE void tile_nn(const float *restrict w, int rows, int64_t n,
                        const float *restrict y, int64_t d,
                        float *restrict c)
{
    int64_t col = 0;
#if defined(__GNUC__)
    for (; col + ATT_NR <= d; col += ATT_NR) {
        att_vec acc[ATT_MR][ATT_NV];
        for (int r = 0; r < rows; r++)
            for (int l = 0; l < ATT_NV; l++)
                VLOAD(acc[r][l], c + r * d + col + l * ATT_VW);
        for (int64_t k = 0; k < n; k++) {
            att_vec yk[ATT_NV];
            for (int l = 0; l < ATT_NV; l++)
                VLOAD(yk[l], y + k * d + col + l * ATT_VW);
            for (int r = 0; r < rows; r++) {
                const float ws = w[r * ATT_BLK + k];
                const att_vec wr = VSPLAT(ws);
                for (int l = 0; l < ATT_NV; l++)
                    acc[r][l] += wr * yk[l];
            }
        }
        for (int r = 0; r < rows; r++)
            for (int l = 0; l < ATT_NV; l++)
                VSTORE(c + r * d + col + l * ATT_VW, acc[r][l]);
    }
#endif
    if (col < d) { /* the columns left (all of them without vectors) */
        for (int r = 0; r < rows; r++) {
            float *cr = c + r * d;
            for (int64_t k = 0; k < n; k++) {
                const float wr = w[r * ATT_BLK + k], *yk = y + k * d;
                for (int64_t l = col; l < d; l++)
                    cr[l] += wr * yk[l];
            }
        }
    }
}

/* c[0 .. d) += sum_{k0 <= k < k1} w[k] * y[k * d + .], k in increasing
 * order: the weights of one row that its group's tile_nn left out. */
CPU_INLINE void row_tail(const float *restrict w, int64_t k0, int64_t k1,
                         const float *restrict y, int64_t d,
                         float *restrict c)
{
    for (int64_t k = k0; k < k1; k++) {
        const float wk = w[k], *yk = y + k * d;
        for (int64_t l = 0; l < d; l++)
            c[l] += wk * yk[l];
    }
}

/* Weights [rows][ATT_BLK] times rows of Y into rows of C (leading
 * dimension d) for the group of rows g0 .. g0 + g - 1 (g a constant), row
 * r taking keys [0, n[r]): tile_nn over the keys all of them take, then
 * the rest row by row, each row in increasing key order. So a row never
 * multiplies a key it does not take (no 0 * inf). */
CPU_INLINE void group_nn(const float *w, int g, const int64_t *n,
                         const float *y, int64_t d, float *c)
{
    int64_t lo = n[0];
    for (int r = 1; r < g; r++)
        lo = n[r] < lo ? n[r] : lo;
    if (lo > 0)
        tile_nn(w, g, lo, y, d, c);
    for (int r = 0; r < g; r++)
        row_tail(w + r * ATT_BLK, lo, n[r], y, d, c + r * d);
}

/* The products of a block of rows, ATT_MR at a time, then one at a time:
 * per group of rows g0 .. g0 + g - 1, FN(g0, g) with g a constant. */
#define ATT_ROW_GROUPS(rows, FN)                                              \
    do {                                                                      \
        int64_t g0_ = 0;                                                      \
        for (; g0_ + ATT_MR <= (rows); g0_ += ATT_MR)                         \
            FN(g0_, ATT_MR);                                                  \
        for (; g0_ < (rows); g0_++)                                           \
            FN(g0_, 1);                                                       \
    } while (0)

/* The range functions are compiled for AVX2 and the baseline (CPU_CLONES). */
#define ATT_CLONES CPU_CLONES

/* Per-thread scratch, in floats: two transposed tiles [d][ATT_BLK], four
 * tiles [ATT_BLK][ATT_BLK] and one row. */
static size_t scratch_floats(int64_t d)
{
    return (size_t)(2 * d * ATT_BLK + 4 * ATT_BLK * ATT_BLK + ATT_BLK);
}

typedef struct att_job {
    const xg_kernel_call *call;
    float *scratch; /* scratch_floats(d) per thread */
    int64_t blocks; /* row blocks per head */
} att_job;

/* max(init, x[0 .. n)), NaN when any of them is NaN (exact whatever the
 * order of comparison: computed in ATT_VW lanes, then combined). */
CPU_INLINE float row_max_nan(const float *x, int64_t n, float init)
{
    float mx = init;
    int64_t j = 0;
#if defined(__GNUC__)
    typedef int32_t att_ivec __attribute__((vector_size(32)));
    if (n >= ATT_VW) {
        att_vec m = VSPLAT(init);
        for (; j + ATT_VW <= n; j += ATT_VW) {
            att_vec v;
            VLOAD(v, x + j);
            att_ivec take = (v > m) | (v != v);
            m = (att_vec)((take & (att_ivec)v) | (~take & (att_ivec)m));
        }
        for (int l = 0; l < ATT_VW; l++)
            mx = m[l] > mx || m[l] != m[l] ? m[l] : mx;
    }
#endif
    for (; j < n; j++)
        mx = x[j] > mx || x[j] != x[j] ? x[j] : mx;
    return mx;
}

/* ---- forward -------------------------------------------------------------- */

ATT_CLONES static void forward_range(const void *ctx, int64_t begin,
                                     int64_t end, int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *kt = job->scratch + (size_t)thread * scratch_floats(d);
    float *s = kt + 2 * d * ATT_BLK, *m = s + 4 * ATT_BLK * ATT_BLK;
    float row_max[ATT_BLK], row_sum[ATT_BLK], alpha[ATT_BLK];
    int64_t row_n[ATT_BLK];
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, q0 = item % job->blocks * ATT_BLK;
        int64_t nq = min64(tq - q0, ATT_BLK);
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
        for (int64_t k0 = 0; k0 < kend; k0 += ATT_BLK) {
            int64_t nk = min64(kend - k0, ATT_BLK);
            transpose_tile(k + k0 * d, nk, d, kt);
            for (int64_t r = 0; r < nq; r++)
                row_n[r] = min64(visible(a, q0 + r) - k0, nk);
#define ATT_SCORES(g0, g)                                                     \
    if (row_n[(g0) + (g) - 1] > 0)                                            \
        tile_nt(q + (g0) * d, d, (g), kt, d, 0,                               \
                round_nr(row_n[(g0) + (g) - 1]), s + (g0) * ATT_BLK)
            ATT_ROW_GROUPS(nq, ATT_SCORES);
#undef ATT_SCORES
            for (int64_t r = 0; r < nq; r++) {
                int64_t n = row_n[r];
                float *sr = s + r * ATT_BLK;
                alpha[r] = 1.0f;
                if (n <= 0)
                    continue;
                for (int64_t j = 0; j < n; j++)
                    sr[j] *= a->scale;
                float mx = row_max_nan(sr, n, row_max[r]);
                float al = cpu_exp(row_max[r] - mx), sum = 0.0f;
                if (row_max[r] == -INFINITY)
                    al = 0.0f; /* nothing summed yet (mx may be -inf) */
                for (int64_t j = 0; j < n; j++)
                    sr[j] = cpu_exp(sr[j] - mx);
                for (int64_t j = 0; j < n; j++)
                    sum += sr[j];
                row_max[r] = mx;
                row_sum[r] = row_sum[r] * al + sum;
                alpha[r] = al;
                if (a->p > 0.0f) {
                    keep_factors(a, h, q0 + r, k0, n, m);
                    for (int64_t j = 0; j < n; j++)
                        sr[j] *= m[j];
                }
            }
            for (int64_t r = 0; r < nq; r++) {
                float *o = out + r * d;
                row_n[r] = max64(row_n[r], 0);
                if (alpha[r] != 1.0f)
                    for (int64_t col = 0; col < d; col++)
                        o[col] *= alpha[r];
            }
#define ATT_PV(g0, g)                                                         \
    group_nn(s + (g0) * ATT_BLK, (g), row_n + (g0), v + k0 * d, d,            \
             out + (g0) * d)
            ATT_ROW_GROUPS(nq, ATT_PV);
#undef ATT_PV
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

/* p_ij from the scaled score and lse_i; 0 where the row saw no key. */
CPU_INLINE float prob(float s, float lse)
{
    return lse == -INFINITY ? 0.0f : cpu_exp(s - lse);
}

ATT_CLONES static void backward_q_range(const void *ctx, int64_t begin,
                                        int64_t end, int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *kt = job->scratch + (size_t)thread * scratch_floats(d);
    float *vt = kt + d * ATT_BLK, *s = vt + d * ATT_BLK;
    float *dp = s + ATT_BLK * ATT_BLK, *m = dp + 3 * ATT_BLK * ATT_BLK;
    int64_t row_n[ATT_BLK];
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, q0 = item % job->blocks * ATT_BLK;
        int64_t nq = min64(tq - q0, ATT_BLK);
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
        for (int64_t r = 0; r < nq; r++) {
            float sum = 0.0f;
            for (int64_t col = 0; col < d; col++)
                sum += dout[r * d + col] * o[r * d + col];
            delta[r] = sum;
        }
        int64_t kend = visible(a, q0 + nq - 1);
        for (int64_t k0 = 0; k0 < kend; k0 += ATT_BLK) {
            int64_t nk = min64(kend - k0, ATT_BLK);
            transpose_tile(k + k0 * d, nk, d, kt);
            transpose_tile(v + k0 * d, nk, d, vt);
            for (int64_t r = 0; r < nq; r++)
                row_n[r] = min64(visible(a, q0 + r) - k0, nk);
#define ATT_SCORES(g0, g)                                                     \
    if (row_n[(g0) + (g) - 1] > 0) {                                          \
        int64_t j1_ = round_nr(row_n[(g0) + (g) - 1]);                        \
        tile_nt(q + (g0) * d, d, (g), kt, d, 0, j1_, s + (g0) * ATT_BLK);     \
        tile_nt(dout + (g0) * d, d, (g), vt, d, 0, j1_, dp + (g0) * ATT_BLK); \
    }
            ATT_ROW_GROUPS(nq, ATT_SCORES);
#undef ATT_SCORES
            for (int64_t r = 0; r < nq; r++) {
                /* the keys row r takes: none where lse is -inf */
                int64_t n = lse[r] == -INFINITY ? 0 : max64(row_n[r], 0);
                float *sr = s + r * ATT_BLK, *dpr = dp + r * ATT_BLK;
                row_n[r] = n;
                if (n > 0 && a->p > 0.0f) {
                    keep_factors(a, h, q0 + r, k0, n, m);
                    for (int64_t j = 0; j < n; j++)
                        dpr[j] *= m[j];
                }
                /* n is 0 where lse is -inf: no prob() test per element */
                const float l = lse[r], dl = delta[r], sc = a->scale;
                float *restrict dsr = sr;
                const float *restrict dpc = dpr;
                for (int64_t j = 0; j < n; j++)
                    dsr[j] = cpu_exp(dsr[j] * sc - l) * (dpc[j] - dl);
            }
#define ATT_DQ(g0, g)                                                         \
    group_nn(s + (g0) * ATT_BLK, (g), row_n + (g0), k + k0 * d, d,            \
             dq + (g0) * d)
            ATT_ROW_GROUPS(nq, ATT_DQ);
#undef ATT_DQ
        }
        for (int64_t col = 0; col < nq * d; col++)
            dq[col] *= a->scale;
    }
}

/* ---- backward: dk and dv -------------------------------------------------- */

ATT_CLONES static void backward_kv_range(const void *ctx, int64_t begin,
                                         int64_t end, int thread)
{
    const att_job *job = ctx;
    const xg_kernel_call *c = job->call;
    const xg_attention_args *a = &c->p.attention;
    const int64_t d = a->d, tq = a->tq, tk = a->tk;
    float *qt = job->scratch + (size_t)thread * scratch_floats(d);
    float *gt = qt + d * ATT_BLK, *s = gt + d * ATT_BLK;
    float *dp = s + ATT_BLK * ATT_BLK, *pd = dp + ATT_BLK * ATT_BLK;
    float *mask = pd + ATT_BLK * ATT_BLK;
    /* Row jj of the tiles s (scores, then ds), dp and pd (pdrop) is key
     * j0 + jj and column r query i0 + r (transposed); the mask tile is
     * [query][key]. Key jj is seen by the tile's queries [r0[jj], nq). */
    int64_t r0[ATT_BLK];
    for (int64_t item = begin; item < end; item++) {
        int64_t h = item / job->blocks, j0 = item % job->blocks * ATT_BLK;
        int64_t nk = min64(tk - j0, ATT_BLK);
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
        for (int64_t i0 = first_query(a, j0); i0 < tq; i0 += ATT_BLK) {
            int64_t nq = min64(tq - i0, ATT_BLK);
            transpose_tile(q + i0 * d, nq, d, qt);
            transpose_tile(dout + i0 * d, nq, d, gt);
            if (a->p > 0.0f)
                for (int64_t r = 0; r < nq; r++)
                    keep_factors(a, h, i0 + r, j0, nk, mask + r * ATT_BLK);
            for (int64_t jj = 0; jj < nk; jj++)
                r0[jj] = min64(max64(first_query(a, j0 + jj) - i0, 0), nq);
            /* A group of keys computes the scores of the queries from its
             * first key's first one, rounded down to a multiple of ATT_NR;
             * each key takes only the queries that see it. */
#define ATT_DKV(g0, g)                                                        \
    if (r0[(g0)] < nq) {                                                      \
        int64_t lo_ = r0[(g0)] / ATT_NR * ATT_NR, hi_ = round_nr(nq);         \
        tile_nt(k + (g0) * d, d, (g), qt, d, lo_, hi_, s + (g0) * ATT_BLK);   \
        tile_nt(v + (g0) * d, d, (g), gt, d, lo_, hi_, dp + (g0) * ATT_BLK);  \
        for (int64_t jj = (g0); jj < (g0) + (g); jj++) {                      \
            float *sj = s + jj * ATT_BLK, *dpj = dp + jj * ATT_BLK;           \
            float *pdj = pd + jj * ATT_BLK;                                   \
            if (a->p > 0.0f)                                                  \
                for (int64_t r = r0[jj]; r < nq; r++)                         \
                    dpj[r] *= mask[r * ATT_BLK + jj];                         \
            for (int64_t r = r0[jj]; r < nq; r++) {                           \
                float p_ = prob(sj[r] * a->scale, lse[i0 + r]);               \
                pdj[r] = p_;                                                  \
                sj[r] = p_ * (dpj[r] - delta[i0 + r]);                        \
            }                                                                 \
            if (a->p > 0.0f)                                                  \
                for (int64_t r = r0[jj]; r < nq; r++)                         \
                    pdj[r] *= mask[r * ATT_BLK + jj];                         \
        }                                                                     \
        /* queries before the last key's first one key by key, then the \
         * rest as a tile, in increasing query order */                     \
        int64_t mid_ = r0[(g0) + (g) - 1];                                    \
        for (int64_t jj = (g0); jj < (g0) + (g); jj++) {                      \
            row_tail(pd + jj * ATT_BLK, r0[jj], mid_, dout + i0 * d, d,       \
                     dv + jj * d);                                            \
            row_tail(s + jj * ATT_BLK, r0[jj], mid_, q + i0 * d, d,           \
                     dk + jj * d);                                            \
        }                                                                     \
        if (mid_ < nq) {                                                      \
            tile_nn(pd + (g0) * ATT_BLK + mid_, (g), nq - mid_,               \
                    dout + (i0 + mid_) * d, d, dv + (g0) * d);                \
            tile_nn(s + (g0) * ATT_BLK + mid_, (g), nq - mid_,                \
                    q + (i0 + mid_) * d, d, dk + (g0) * d);                   \
        }                                                                     \
    }
            ATT_ROW_GROUPS(nk, ATT_DKV);
#undef ATT_DKV
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
    int64_t pair_cost = 2 * a->d + CPU_COST_LIBM;
    int64_t rows = call->op == XG_OP_attention_backward_kv ? a->tk : a->tq;
    int64_t other = call->op == XG_OP_attention_backward_kv ? a->tq : a->tk;
    job.blocks = (rows + ATT_BLK - 1) / ATT_BLK;
    cpu_parallel_rows(cd->pool, a->bh * job.blocks,
                      ATT_BLK * other * pair_cost,
                      call->op == XG_OP_attention ? forward_range
                      : call->op == XG_OP_attention_backward_q
                          ? backward_q_range
                          : backward_kv_range,
                      &job);
    free(job.scratch);
    return XG_OK;
}
