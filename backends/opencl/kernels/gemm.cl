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
/* 16-bit operands (bf16, f16): the program holds this file three times,
 * as gemm.cl and as the copies gemm_bf16.cl and gemm_f16.cl that
 * meson.build makes, and each copy defines the kernel for the next element
 * type: xg_gemm (f32), xg_gemm_bf16, xg_gemm_f16. A and B and C are all of
 * that type; the 16-bit forms read the elements as ushort and widen them
 * exactly as they load them (bf16 by shifting into the upper half of an
 * f32, f16 on the bits: xg_gemm_f16_widen), accumulate in f32 in the order
 * above and round each result once, to nearest even on the bits (half.cl:
 * the cast kernel's rounding). So a 16-bit product is the same bits as the
 * f32 kernel run on the inputs cast to f32, its outputs cast back: what
 * the core's widening of the op would give.
 *
 * Per instance: XG_GEMM_T the stored element, XG_GEMM_LD(p, i) p[i] as a
 * float, XG_GEMM_LD16(p) p[0 .. 15] as a float16, XG_GEMM_ST(p, v) stores
 * the float v at p, XG_GEMM_FN(name) the instance's name for a function.
 * XG_GEMM_RM, the first form's rows per work-item, is 8 for f32 and 16
 * for the 16-bit forms, which so widen each 16 elements of B for twice as
 * many multiply-adds. The 16-bit forms also define XG_GEMM_WIDE_A: the
 * first form then widens A's elements 16 at a time in vectors (along k, or
 * the block's 16 rows when A is transposed) rather than each on its own in
 * the inner loop, where widening f16 one element at a time cost more than
 * the multiply-adds. Neither changes the order of any sum. */
#if !defined(XG_GEMM_DONE_F32)
#define XG_GEMM_DONE_F32
#define XG_GEMM_T float
#define XG_GEMM_LD(p, i) ((p)[i])
#define XG_GEMM_LD16(p) vload16(0, p)
#define XG_GEMM_ST(p, v) (*(p) = (v))
#define XG_GEMM_FN(name) name
#define XG_GEMM_RM 8 /* rows per work-item, B not transposed */

#define XG_GEMM_DM 4 /* rows per work-item, B transposed */
#define XG_GEMM_DN 4 /* columns per work-item, B transposed */

/* f16 bits (the low half of each lane) -> f32, exactly, in integer
 * operations and selects, which vectorize on any device (vload_half's
 * speed is the driver's): normal numbers rebiased, Inf and NaN moved to
 * the f32 exponent (a NaN keeps its payload; the products make it quiet),
 * and a subnormal's m * 2^-24 as 2^-14 (1 + m / 1024) - 2^-14, a
 * subtraction of two normal f32 values that is exact and whose result is
 * normal (so no device's flushing of subnormals can touch it). The values
 * of xg_f16_to_f32_bits. */
#define XG_GEMM_DEFINE_F16_WIDEN(name, F, U)                                 \
    static F name(U h)                                                       \
    {                                                                        \
        U a = (h & 0x7fffu) << 13, e = a & 0x0f800000u;                      \
        U bits = a + select((U)0x38000000u, (U)0x70000000u,                  \
                            e == 0x0f800000u);                               \
        U sub = as_##U(as_##F(a + 0x38800000u) - as_##F((U)0x38800000u));    \
        return as_##F(select(bits, sub, e == 0u) | ((h & 0x8000u) << 16));   \
    }
XG_GEMM_DEFINE_F16_WIDEN(xg_gemm_f16_widen, float, uint)
XG_GEMM_DEFINE_F16_WIDEN(xg_gemm_f16_widen16, float16, uint16)
#undef XG_GEMM_DEFINE_F16_WIDEN

/* The sum of v's 16 lanes, in a fixed tree. */
static float xg_gemm_sum16(float16 v)
{
    float8 h8 = v.lo + v.hi;
    float4 h4 = h8.lo + h8.hi;
    float2 h2 = h4.lo + h4.hi;
    return h2.lo + h2.hi;
}
#elif !defined(XG_GEMM_DONE_BF16)
#define XG_GEMM_DONE_BF16
#define XG_GEMM_T ushort
#define XG_GEMM_LD(p, i) as_float((uint)(p)[i] << 16)
#define XG_GEMM_LD16(p) as_float16(convert_uint16(vload16(0, p)) << 16)
#define XG_GEMM_RM 16
#define XG_GEMM_WIDE_A
#define XG_GEMM_ST(p, v) (*(p) = (ushort)xg_f32_to_bf16_bits(as_uint(v)))
#define XG_GEMM_FN(name) name##_bf16
#elif !defined(XG_GEMM_DONE_F16)
#define XG_GEMM_DONE_F16
#define XG_GEMM_T ushort
#define XG_GEMM_LD(p, i) xg_gemm_f16_widen((p)[i])
#define XG_GEMM_LD16(p) xg_gemm_f16_widen16(convert_uint16(vload16(0, p)))
#define XG_GEMM_RM 16
#define XG_GEMM_WIDE_A
#define XG_GEMM_ST(p, v) (*(p) = (ushort)xg_f32_to_f16_bits(as_uint(v)))
#define XG_GEMM_FN(name) name##_f16
#else
#error "gemm.cl: more instances than element types"
#endif

/* 16 elements p[0], p[s], ..., p[15 s]. */
static float16 XG_GEMM_FN(xg_gemm_gather16)(__global const XG_GEMM_T *p,
                                            long s)
{
    return (float16)(XG_GEMM_LD(p, 0), XG_GEMM_LD(p, s),
                     XG_GEMM_LD(p, 2 * s), XG_GEMM_LD(p, 3 * s),
                     XG_GEMM_LD(p, 4 * s), XG_GEMM_LD(p, 5 * s),
                     XG_GEMM_LD(p, 6 * s), XG_GEMM_LD(p, 7 * s),
                     XG_GEMM_LD(p, 8 * s), XG_GEMM_LD(p, 9 * s),
                     XG_GEMM_LD(p, 10 * s), XG_GEMM_LD(p, 11 * s),
                     XG_GEMM_LD(p, 12 * s), XG_GEMM_LD(p, 13 * s),
                     XG_GEMM_LD(p, 14 * s), XG_GEMM_LD(p, 15 * s));
}

/* Stores alpha * v (+ beta * the old value) at p. */
static void XG_GEMM_FN(xg_gemm_store)(__global XG_GEMM_T *p, float v,
                                      float alpha, float beta)
{
    v *= alpha;
    XG_GEMM_ST(p, beta != 0.0f ? v + beta * XG_GEMM_LD(p, 0) : v);
}

/* The first form (B not transposed): XG_GEMM_RM x 16 elements of C. */
static void XG_GEMM_FN(xg_gemm_rows)(__global const XG_GEMM_T *a,
                                     __global const XG_GEMM_T *b,
                                     __global XG_GEMM_T *c, int m, int n,
                                     int k, int trans_a, long lda, long ldb,
                                     long ldc, float alpha, float beta)
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
        __global const XG_GEMM_T *bp = b + col0;
        int kk = 0;
#ifdef XG_GEMM_WIDE_A
/* k = kk + (lane c of av[r]): the products of one k */
#define XG_GEMM_KSTEP(c)                                                     \
    {                                                                        \
        float16 bv = XG_GEMM_LD16(bp);                                       \
        bp += ldb;                                                           \
        for (int r = 0; r < XG_GEMM_RM; r++)                                 \
            acc[r] += av[r].c * bv;                                          \
    }
        if (!trans_a) {
            for (; kk + 16 <= k; kk += 16) {
                float16 av[XG_GEMM_RM];
                for (int r = 0; r < XG_GEMM_RM; r++)
                    av[r] = XG_GEMM_LD16(a + a_at[r] + kk);
                XG_GEMM_KSTEP(s0) XG_GEMM_KSTEP(s1) XG_GEMM_KSTEP(s2)
                XG_GEMM_KSTEP(s3) XG_GEMM_KSTEP(s4) XG_GEMM_KSTEP(s5)
                XG_GEMM_KSTEP(s6) XG_GEMM_KSTEP(s7) XG_GEMM_KSTEP(s8)
                XG_GEMM_KSTEP(s9) XG_GEMM_KSTEP(sa) XG_GEMM_KSTEP(sb)
                XG_GEMM_KSTEP(sc) XG_GEMM_KSTEP(sd) XG_GEMM_KSTEP(se)
                XG_GEMM_KSTEP(sf)
            }
        } else if (row0 + XG_GEMM_RM <= m) {
            for (; kk < k; kk++) {
                float16 a16 = XG_GEMM_LD16(a + row0 + kk * lda);
                float16 bv = XG_GEMM_LD16(bp);
                bp += ldb;
                acc[0] += a16.s0 * bv;
                acc[1] += a16.s1 * bv;
                acc[2] += a16.s2 * bv;
                acc[3] += a16.s3 * bv;
                acc[4] += a16.s4 * bv;
                acc[5] += a16.s5 * bv;
                acc[6] += a16.s6 * bv;
                acc[7] += a16.s7 * bv;
                acc[8] += a16.s8 * bv;
                acc[9] += a16.s9 * bv;
                acc[10] += a16.sa * bv;
                acc[11] += a16.sb * bv;
                acc[12] += a16.sc * bv;
                acc[13] += a16.sd * bv;
                acc[14] += a16.se * bv;
                acc[15] += a16.sf * bv;
            }
        }
#undef XG_GEMM_KSTEP
#endif
        for (; kk < k; kk++) {
            float16 bv = XG_GEMM_LD16(bp);
            bp += ldb;
            for (int r = 0; r < XG_GEMM_RM; r++)
                acc[r] += XG_GEMM_LD(a, a_at[r] + kk * a_step) * bv;
        }
    } else { /* the last columns: clamped, one at a time */
        int cols[16];
        for (int j = 0; j < 16; j++)
            cols[j] = min(col0 + j, n - 1);
        for (int kk = 0; kk < k; kk++) {
            __global const XG_GEMM_T *bp = b + kk * ldb;
            float16 bv = (float16)(
                XG_GEMM_LD(bp, cols[0]), XG_GEMM_LD(bp, cols[1]),
                XG_GEMM_LD(bp, cols[2]), XG_GEMM_LD(bp, cols[3]),
                XG_GEMM_LD(bp, cols[4]), XG_GEMM_LD(bp, cols[5]),
                XG_GEMM_LD(bp, cols[6]), XG_GEMM_LD(bp, cols[7]),
                XG_GEMM_LD(bp, cols[8]), XG_GEMM_LD(bp, cols[9]),
                XG_GEMM_LD(bp, cols[10]), XG_GEMM_LD(bp, cols[11]),
                XG_GEMM_LD(bp, cols[12]), XG_GEMM_LD(bp, cols[13]),
                XG_GEMM_LD(bp, cols[14]), XG_GEMM_LD(bp, cols[15]));
            for (int r = 0; r < XG_GEMM_RM; r++)
                acc[r] += XG_GEMM_LD(a, a_at[r] + kk * a_step) * bv;
        }
    }
    for (int r = 0; r < XG_GEMM_RM && row0 + r < m; r++) {
        float v[16];
        vstore16(acc[r], 0, v);
        __global XG_GEMM_T *cp = c + (row0 + r) * ldc + col0;
        for (int j = 0; j < 16 && col0 + j < n; j++)
            XG_GEMM_FN(xg_gemm_store)(cp + j, v[j], alpha, beta);
    }
}

/* The second form (B transposed): XG_GEMM_DM x XG_GEMM_DN dot products. */
static void XG_GEMM_FN(xg_gemm_dots)(__global const XG_GEMM_T *a,
                                     __global const XG_GEMM_T *b,
                                     __global XG_GEMM_T *c, int m, int n,
                                     int k, int trans_a, long lda, long ldb,
                                     long ldc, float alpha, float beta)
{
    int col0 = get_global_id(0) * XG_GEMM_DN;
    int row0 = get_global_id(1) * XG_GEMM_DM;
    if (col0 >= n || row0 >= m)
        return;
    __global const XG_GEMM_T *ar[XG_GEMM_DM], *br[XG_GEMM_DN];
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
            av[r] = trans_a ? XG_GEMM_FN(xg_gemm_gather16)(ar[r] + k0 * lda,
                                                           lda)
                            : XG_GEMM_LD16(ar[r] + k0);
        for (int j = 0; j < XG_GEMM_DN; j++)
            bv[j] = XG_GEMM_LD16(br[j] + k0);
        for (int r = 0; r < XG_GEMM_DM; r++)
            for (int j = 0; j < XG_GEMM_DN; j++)
                acc[r][j] += av[r] * bv[j];
    }
    for (int r = 0; r < XG_GEMM_DM && row0 + r < m; r++)
        for (int j = 0; j < XG_GEMM_DN && col0 + j < n; j++) {
            float s = xg_gemm_sum16(acc[r][j]);
            for (int kk = k16; kk < k; kk++)
                s += XG_GEMM_LD(ar[r], kk * a_step) * XG_GEMM_LD(br[j], kk);
            XG_GEMM_FN(xg_gemm_store)(c + (row0 + r) * ldc + col0 + j, s,
                                      alpha, beta);
        }
}

__kernel void XG_GEMM_FN(xg_gemm)(__global const XG_GEMM_T *a,
                                  __global const XG_GEMM_T *b,
                                  __global XG_GEMM_T *c, int m, int n, int k,
                                  int trans_a, int trans_b, long a_off,
                                  long lda, long stride_a, long b_off,
                                  long ldb, long stride_b, long c_off,
                                  long ldc, long stride_c, float alpha,
                                  float beta)
{
    long batch = get_global_id(2);
    a += a_off + batch * stride_a;
    b += b_off + batch * stride_b;
    c += c_off + batch * stride_c;
    if (trans_b)
        XG_GEMM_FN(xg_gemm_dots)(a, b, c, m, n, k, trans_a, lda, ldb, ldc,
                                 alpha, beta);
    else
        XG_GEMM_FN(xg_gemm_rows)(a, b, c, m, n, k, trans_a, lda, ldb, ldc,
                                 alpha, beta);
}

#undef XG_GEMM_T
#undef XG_GEMM_LD
#undef XG_GEMM_LD16
#undef XG_GEMM_RM
#undef XG_GEMM_WIDE_A
#undef XG_GEMM_ST
#undef XG_GEMM_FN
