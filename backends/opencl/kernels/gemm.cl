/* xg_gemm: C_b = alpha opA(A_b) opB(B_b) + beta C_b for every batch entry b,
 * row-major (ocl_gemm.c: the default GEMM on CPU devices such as PoCL, and
 * anywhere with XGRAD_OPENCL_GEMM=xgrad). opA(A) is m x k (A stored k x m
 * when trans_a), opB(B) k x n (stored n x k when trans_b). Matrices start
 * at their buffer's offset plus b times their stride (elements) and have
 * leading dimensions lda, ldb, ldc.
 *
 * Written for CPU devices: no local memory and no barriers (a CPU
 * implementation runs a work-group's work-items one after another), the
 * work in explicit 16-wide vectors (which such a compiler maps onto SIMD
 * registers) and each work-item a block of C that reuses every value it
 * loads several times from registers. Two forms, by the layout of B:
 *
 *   B not transposed: rows of B are contiguous along n. A work-item
 *   computes XG_GEMM_RM rows x 16 columns; for each k it loads 16 values
 *   of B's row k as one vector and multiplies it by one scalar of A per
 *   row. Every element sums its k products in order.
 *
 *   B transposed: rows of B (columns of opB) are contiguous along k, as
 *   are the rows of A when not transposed. A work-item computes
 *   XG_GEMM_DM x XG_GEMM_DN elements as dot products of 16-wide vectors
 *   along k: lane l sums the products at k = l, l + 16, ... in order, the
 *   16 lanes are then added in a fixed tree, and the k % 16 products left
 *   after the last full slice are added in order.
 *
 * Both orders are fixed by m, n, k and the layout, never by the launch, and
 * nothing is contracted into fused multiply-adds (common.cl), so results
 * are the same bits on every run. Rows and columns past the edge of C are
 * computed from clamped (valid) indices and not stored.
 * global = (ceil(n / 16), ceil(m / XG_GEMM_RM), batch) for the first form,
 * (ceil(n / XG_GEMM_DN), ceil(m / XG_GEMM_DM), batch) for the second;
 * any local size.
 */
#define XG_GEMM_RM 8 /* rows per work-item, B not transposed */
#define XG_GEMM_DM 4 /* rows per work-item, B transposed */
#define XG_GEMM_DN 4 /* columns per work-item, B transposed */

/* 16 elements p[0], p[s], ..., p[15 s]. */
static float16 xg_gemm_gather16(__global const float *p, long s)
{
    return (float16)(p[0], p[s], p[2 * s], p[3 * s], p[4 * s], p[5 * s],
                     p[6 * s], p[7 * s], p[8 * s], p[9 * s], p[10 * s],
                     p[11 * s], p[12 * s], p[13 * s], p[14 * s], p[15 * s]);
}

/* The sum of v's 16 lanes, in a fixed tree. */
static float xg_gemm_sum16(float16 v)
{
    float8 h8 = v.lo + v.hi;
    float4 h4 = h8.lo + h8.hi;
    float2 h2 = h4.lo + h4.hi;
    return h2.lo + h2.hi;
}

/* Stores alpha * v (+ beta * the old value) at p. */
static void xg_gemm_store(__global float *p, float v, float alpha, float beta)
{
    v *= alpha;
    *p = beta != 0.0f ? v + beta * *p : v;
}

/* The first form (B not transposed): XG_GEMM_RM x 16 elements of C. */
static void xg_gemm_rows(__global const float *a, __global const float *b,
                         __global float *c, int m, int n, int k, int trans_a,
                         long lda, long ldb, long ldc, float alpha,
                         float beta)
{
    int col0 = get_global_id(0) * 16, row0 = get_global_id(1) * XG_GEMM_RM;
    if (col0 >= n || row0 >= m)
        return;
    /* A's element (row r of the block, k = 0) and its step along k. */
    long a_at[XG_GEMM_RM];
    for (int r = 0; r < XG_GEMM_RM; r++) {
        long row = min(row0 + r, m - 1);
        a_at[r] = trans_a ? row : row * lda;
    }
    long a_step = trans_a ? lda : 1;
    float16 acc[XG_GEMM_RM];
    for (int r = 0; r < XG_GEMM_RM; r++)
        acc[r] = 0.0f;
    if (col0 + 16 <= n) {
        __global const float *bp = b + col0;
        for (int kk = 0; kk < k; kk++) {
            float16 bv = vload16(0, bp);
            bp += ldb;
            for (int r = 0; r < XG_GEMM_RM; r++)
                acc[r] += a[a_at[r] + kk * a_step] * bv;
        }
    } else { /* the last columns: clamped, one at a time */
        int cols[16];
        for (int j = 0; j < 16; j++)
            cols[j] = min(col0 + j, n - 1);
        for (int kk = 0; kk < k; kk++) {
            __global const float *bp = b + kk * ldb;
            float16 bv = (float16)(
                bp[cols[0]], bp[cols[1]], bp[cols[2]], bp[cols[3]],
                bp[cols[4]], bp[cols[5]], bp[cols[6]], bp[cols[7]],
                bp[cols[8]], bp[cols[9]], bp[cols[10]], bp[cols[11]],
                bp[cols[12]], bp[cols[13]], bp[cols[14]], bp[cols[15]]);
            for (int r = 0; r < XG_GEMM_RM; r++)
                acc[r] += a[a_at[r] + kk * a_step] * bv;
        }
    }
    for (int r = 0; r < XG_GEMM_RM && row0 + r < m; r++) {
        float v[16];
        vstore16(acc[r], 0, v);
        __global float *cp = c + (row0 + r) * ldc + col0;
        for (int j = 0; j < 16 && col0 + j < n; j++)
            xg_gemm_store(cp + j, v[j], alpha, beta);
    }
}

/* The second form (B transposed): XG_GEMM_DM x XG_GEMM_DN dot products. */
static void xg_gemm_dots(__global const float *a, __global const float *b,
                         __global float *c, int m, int n, int k, int trans_a,
                         long lda, long ldb, long ldc, float alpha,
                         float beta)
{
    int col0 = get_global_id(0) * XG_GEMM_DN;
    int row0 = get_global_id(1) * XG_GEMM_DM;
    if (col0 >= n || row0 >= m)
        return;
    __global const float *ar[XG_GEMM_DM], *br[XG_GEMM_DN];
    for (int r = 0; r < XG_GEMM_DM; r++)
        ar[r] = a + (trans_a ? min(row0 + r, m - 1)
                             : min(row0 + r, m - 1) * lda);
    for (int j = 0; j < XG_GEMM_DN; j++)
        br[j] = b + min(col0 + j, n - 1) * ldb;
    long a_step = trans_a ? lda : 1;
    float16 acc[XG_GEMM_DM][XG_GEMM_DN];
    for (int r = 0; r < XG_GEMM_DM; r++)
        for (int j = 0; j < XG_GEMM_DN; j++)
            acc[r][j] = 0.0f;
    int k16 = k / 16 * 16;
    for (int k0 = 0; k0 < k16; k0 += 16) {
        float16 av[XG_GEMM_DM], bv[XG_GEMM_DN];
        for (int r = 0; r < XG_GEMM_DM; r++)
            av[r] = trans_a ? xg_gemm_gather16(ar[r] + k0 * lda, lda)
                            : vload16(0, ar[r] + k0);
        for (int j = 0; j < XG_GEMM_DN; j++)
            bv[j] = vload16(0, br[j] + k0);
        for (int r = 0; r < XG_GEMM_DM; r++)
            for (int j = 0; j < XG_GEMM_DN; j++)
                acc[r][j] += av[r] * bv[j];
    }
    for (int r = 0; r < XG_GEMM_DM && row0 + r < m; r++)
        for (int j = 0; j < XG_GEMM_DN && col0 + j < n; j++) {
            float s = xg_gemm_sum16(acc[r][j]);
            for (int kk = k16; kk < k; kk++)
                s += ar[r][kk * a_step] * br[j][kk];
            xg_gemm_store(c + (row0 + r) * ldc + col0 + j, s, alpha, beta);
        }
}

__kernel void xg_gemm(__global const float *a, __global const float *b,
                      __global float *c, int m, int n, int k, int trans_a,
                      int trans_b, long a_off, long lda, long stride_a,
                      long b_off, long ldb, long stride_b, long c_off,
                      long ldc, long stride_c, float alpha, float beta)
{
    long batch = get_global_id(2);
    a += a_off + batch * stride_a;
    b += b_off + batch * stride_b;
    c += c_off + batch * stride_c;
    if (trans_b)
        xg_gemm_dots(a, b, c, m, n, k, trans_a, lda, ldb, ldc, alpha, beta);
    else
        xg_gemm_rows(a, b, c, m, n, k, trans_a, lda, ldb, ldc, alpha, beta);
}
