/* One variant of the built-in GEMM's tile routine, for one vector width.
 * cpu_gemm.c includes this file once per variant, with
 *
 *   GEMM_NAME(x)  the variant's name for x (e.g. x##_avx2)
 *   GEMM_TARGET   its function attributes (a target(...) or nothing)
 *   GEMM_VL       floats per vector (4, 8 or 16)
 *   GEMM_MR       rows of the micro-tile
 *   GEMM_NV       vectors per micro-tile row (NR = GEMM_NV * GEMM_VL)
 *   GEMM_MADD(acc, b, s)  acc + b * s for a vector acc, b and a float s
 *   GEMM_GATHER(dst, base, idx, off, mask)
 *                 one packed row of NR floats: dst[l] = base[off + idx[l]]
 *                 where bit l of the uint32_t mask is set, else 0
 *                 (a hardware gather where the variant has one)
 *
 * and gemm_job, gemm_operand, KC from cpu_gemm.c in scope; it undefines
 * those seven at the end.
 *
 * Every variant computes each element of C in the same order: per block of
 * KC depths, acc = sum over k of a * b from k = 0 up, then
 * C = (C or 0) + alpha * acc. GEMM_MADD fuses the multiply-add (one
 * rounding) in the AVX2 and AVX-512 variants, which so give the same bits
 * as each other; the baseline rounds the product and the sum apart
 * (-std=c11 forbids contraction) and may differ in the last bits. The tile
 * sizes and the thread count never change a result's bits. */

#define GEMM_NR (GEMM_NV * GEMM_VL)

typedef float GEMM_NAME(vec) __attribute__((vector_size(GEMM_VL * 4)));
/* The same, for loads and stores at any float-aligned address. */
typedef float GEMM_NAME(vecu)
    __attribute__((vector_size(GEMM_VL * 4), aligned(4)));

/* Rows [r0, r0 + rows) x depths [k0, k0 + kc) of `op` as panels of w rows,
 * each k-major (w values per depth), the last panel zero-padded. */
GEMM_TARGET CPU_INLINE void GEMM_NAME(pack)(float *restrict dst,
                                            gemm_operand op, int64_t r0,
                                            int64_t rows, int64_t k0,
                                            int64_t kc, const int w)
{
    for (int64_t p = 0; p < rows; p += w, dst += w * kc) {
        int64_t h = rows - p < w ? rows - p : w;
        const float *x = op.x + (r0 + p) * op.rs + k0 * op.ks;
        if (op.rs == 1) { /* h consecutive values per depth */
            for (int64_t k = 0; k < kc; k++) {
                memcpy(dst + k * w, x + k * op.ks, (size_t)h * sizeof *x);
                if (h < w)
                    memset(dst + k * w + h, 0, (size_t)(w - h) * sizeof *x);
            }
        } else if (h == w) { /* w rows read side by side */
            for (int64_t k = 0; k < kc; k++)
#pragma GCC unroll 32
                for (int i = 0; i < w; i++)
                    dst[k * w + i] = x[i * op.rs + k * op.ks];
        } else {
            for (int64_t k = 0; k < kc; k++) {
                for (int64_t i = 0; i < h; i++)
                    dst[k * w + i] = x[i * op.rs + k * op.ks];
                for (int64_t i = h; i < w; i++)
                    dst[k * w + i] = 0.0f;
            }
        }
    }
}

/* The MR x NR tile at c (row stride ldc) over kc depths of A and of the
 * packed panel b (NR per depth, vector-aligned): c = (add ? c : 0) +
 * alpha * sum_k a b, clipped to rows x cols. Element (i, k) of A is at
 * a[i * ars + k * aks]; with `clamp`, rows past `rows` read row 0 instead
 * (A is then a matrix of exactly `rows` rows, not a zero-padded panel). */
GEMM_TARGET __attribute__((always_inline)) static inline void
GEMM_NAME(micro_body)(int64_t kc, const float *restrict a, int64_t ars,
                      int64_t aks, int clamp, const float *restrict b,
                      float *restrict c, int64_t ldc, float alpha, int add,
                      int64_t rows, int64_t cols)
{
    typedef GEMM_NAME(vec) vec;
    typedef GEMM_NAME(vecu) vecu;
    const vec zero = {0};
    vec acc[GEMM_MR][GEMM_NV];
    const float *ar[GEMM_MR];
#pragma GCC unroll 16
    for (int i = 0; i < GEMM_MR; i++) {
        ar[i] = a + (clamp && i >= rows ? 0 : i) * ars;
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++)
            acc[i][v] = zero;
    }
    for (int64_t k = 0; k < kc; k++, b += GEMM_NR) {
        vec bv[GEMM_NV];
#pragma GCC unroll 4
        for (int v = 0; v < GEMM_NV; v++)
            bv[v] = *(const vec *)(const void *)(b + v * GEMM_VL);
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++) {
            float s = ar[i][k * aks];
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++)
                acc[i][v] = GEMM_MADD(acc[i][v], bv[v], s);
        }
    }
    if (rows == GEMM_MR && cols == GEMM_NR) {
#pragma GCC unroll 16
        for (int i = 0; i < GEMM_MR; i++)
#pragma GCC unroll 4
            for (int v = 0; v < GEMM_NV; v++) {
                vecu *p = (vecu *)(void *)(c + i * ldc + v * GEMM_VL);
                *p = (add ? (vec)*p : zero) + acc[i][v] * alpha;
            }
        return;
    }
    float t[GEMM_MR][GEMM_NR];
    memcpy(t, acc, sizeof t);
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            c[i * ldc + j] =
                (add ? c[i * ldc + j] : 0.0f) + t[i][j] * alpha;
}

/* A packed as a panel: MR values per depth. */
GEMM_TARGET __attribute__((noinline)) static void
GEMM_NAME(micro)(int64_t kc, const float *restrict a, const float *restrict b,
                 float *restrict c, int64_t ldc, float alpha, int add,
                 int64_t rows, int64_t cols)
{
    GEMM_NAME(micro_body)(kc, a, 1, GEMM_MR, 0, b, c, ldc, alpha, add, rows,
                          cols);
}

/* A read in place: `rows` rows of kc depths, lda floats apart. */
GEMM_TARGET __attribute__((noinline)) static void
GEMM_NAME(micro_rows)(int64_t kc, const float *restrict a, int64_t lda,
                      const float *restrict b, float *restrict c, int64_t ldc,
                      float alpha, int add, int64_t rows, int64_t cols)
{
    GEMM_NAME(micro_body)(kc, a, lda, 1, 1, b, c, ldc, alpha, add, rows,
                          cols);
}

/* Panels gathered from an image, for the convolution kernels (cpu_conv.c),
 * which pack B straight from the image instead of unfolding it first.
 * gather_taps: rows (c, j) for c < channels, j < period, one after another:
 *   row = base[c * stride + idx[j * NR + l]] where bit l of mask[j] is set
 * (a panel of NR output pixels; the rows are the taps (channel, p, q)).
 * gather_pixels: rows r < rows:
 *   row = base[off[r] + idx[l]] where bit l of mask[r] is set
 * (a panel of NR taps; the rows are output pixels). Indices are int32: the
 * caller checks that every one it forms fits. */
GEMM_TARGET static void GEMM_NAME(gather_taps)(float *restrict dst,
                                               const float *base,
                                               int64_t channels,
                                               int64_t stride, int period,
                                               const int32_t *idx,
                                               const uint32_t *mask)
{
    for (int64_t c = 0; c < channels; c++, base += stride)
        for (int j = 0; j < period; j++, dst += GEMM_NR)
            GEMM_GATHER(dst, base, idx + j * GEMM_NR, 0, mask[j]);
}

GEMM_TARGET static void GEMM_NAME(gather_pixels)(float *restrict dst,
                                                 const float *base,
                                                 int64_t rows,
                                                 const int32_t *off,
                                                 const uint32_t *mask,
                                                 const int32_t *idx)
{
    for (int64_t r = 0; r < rows; r++, dst += GEMM_NR)
        GEMM_GATHER(dst, base, idx, off[r], mask[r]);
}

/* One mc x nc tile of one batch entry's C, over all of K: per KC block,
 * pack the tile's rows of op(A) and columns of op(B), then run the
 * micro-kernel over the tile, B's micro-panel outermost (it stays in L1
 * while A's panels stream from L2). */
GEMM_TARGET static void GEMM_NAME(tile)(const gemm_job *job, int64_t tile,
                                        float *pa, float *pb)
{
    const xg_gemm_args *g = job->g;
    int64_t t = tile / (job->tiles_m * job->tiles_n);
    int64_t i0 = tile / job->tiles_n % job->tiles_m * job->mc;
    int64_t j0 = tile % job->tiles_n * job->nc;
    if (i0 >= g->m || j0 >= g->n)
        return;
    int64_t mc = g->m - i0 < job->mc ? g->m - i0 : job->mc;
    int64_t nc = g->n - j0 < job->nc ? g->n - j0 : job->nc;
    gemm_operand a = {job->a + t * g->stride_a, g->trans_a ? 1 : g->k,
                      g->trans_a ? g->m : 1};
    gemm_operand b = {job->b + t * g->stride_b, g->trans_b ? g->k : 1,
                      g->trans_b ? 1 : g->n};
    float *c = job->c + t * g->stride_c + i0 * g->n + j0;
    if (g->k == 0)
        for (int64_t i = 0; i < mc; i++)
            memset(c + i * g->n, 0, (size_t)nc * sizeof *c);
    for (int64_t k0 = 0; k0 < g->k; k0 += KC) {
        int64_t kc = g->k - k0 < KC ? g->k - k0 : KC;
        GEMM_NAME(pack)(pa, a, i0, mc, k0, kc, GEMM_MR);
        GEMM_NAME(pack)(pb, b, j0, nc, k0, kc, GEMM_NR);
        int add = k0 > 0;
        for (int64_t jr = 0; jr < nc; jr += GEMM_NR)
            for (int64_t ir = 0; ir < mc; ir += GEMM_MR)
                GEMM_NAME(micro)(kc, pa + ir * kc, pb + jr * kc,
                                 c + ir * g->n + jr, g->n, g->alpha, add,
                                 mc - ir < GEMM_MR ? mc - ir : GEMM_MR,
                                 nc - jr < GEMM_NR ? nc - jr : GEMM_NR);
    }
}

#undef GEMM_NR
#undef GEMM_NAME
#undef GEMM_TARGET
#undef GEMM_VL
#undef GEMM_MR
#undef GEMM_NV
#undef GEMM_MADD
#undef GEMM_GATHER
