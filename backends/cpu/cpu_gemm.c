/* Batched GEMM: C_b = alpha * op(A_b) op(B_b), C overwritten.
 *
 * With OpenBLAS (XGRAD_HAVE_BLAS): single-threaded cblas_sgemm calls on
 * batch entries or blocks of C, the transposes passed as flags (no
 * transposed copies), run in parallel by the backend's pool.
 * Without: a cache-blocked kernel in the GotoBLAS/BLIS layout, parallelised
 * over tiles of C. Convolution (cpu_conv.c) does not come here: it drives
 * the built-in kernel's micro-kernel itself (cpu_micro).
 * reference: Goto & van de Geijn, "Anatomy of high-performance matrix
 * multiplication", ACM TOMS 34(3), 2008. */
#include "cpu_impl.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

#ifdef XGRAD_HAVE_BLAS
#include <cblas.h>

/* Rows [m0, m1) x columns [n0, n1) of C_t by one single-threaded BLAS
 * call: the block's rows of op(A) and columns of op(B) are sub-matrices of
 * the stored A and B with the full leading dimensions. */
static void blas_block(const xg_gemm_args *g, const float *a, const float *b,
                       float *c, float beta, int64_t t, const int64_t r[4])
{
    int64_t m0 = r[0], m1 = r[1], n0 = r[2], n1 = r[3];
    const float *at = a + t * g->stride_a, *bt = b + t * g->stride_b;
    cblas_sgemm(CblasRowMajor, g->trans_a ? CblasTrans : CblasNoTrans,
                g->trans_b ? CblasTrans : CblasNoTrans, (int)(m1 - m0),
                (int)(n1 - n0), (int)g->k, g->alpha,
                g->trans_a ? at + m0 : at + m0 * g->k,
                (int)(g->trans_a ? g->m : g->k),
                g->trans_b ? bt + n0 * g->k : bt + n0,
                (int)(g->trans_b ? g->k : g->n), beta,
                c + t * g->stride_c + m0 * g->n + n0, (int)g->n);
}

/* The batch, each entry cut into `parts` blocks of `step` rows (split_m)
 * or columns, one item per block. */
typedef struct blas_job {
    const xg_gemm_args *g;
    const float *a, *b;
    float *c;
    float beta;
    int64_t parts, step;
    int split_m;
} blas_job;

static void blas_range(const void *ctx, int64_t begin, int64_t end, int th)
{
    (void)th;
    const blas_job *j = ctx;
    for (int64_t item = begin; item < end; item++) {
        int64_t t = item / j->parts, lo = item % j->parts * j->step;
        int64_t size = j->split_m ? j->g->m : j->g->n;
        int64_t hi = lo + j->step < size ? lo + j->step : size;
        int64_t r[4] = {0, j->g->m, 0, j->g->n};
        r[j->split_m ? 0 : 2] = lo;
        r[j->split_m ? 1 : 3] = hi;
        if (lo < hi)
            blas_block(j->g, j->a, j->b, j->c, j->beta, t, r);
    }
}

/* OpenBLAS, one thread per call; the pool runs the batch entries, or
 * blocks of rows or columns of one product, in parallel. OpenBLAS's own
 * threads stay asleep (set to one for the job, then back): woken, they
 * spin (sched_yield) for a long while after each call and steal the
 * pool's cores. */
static xg_status gemm_blas(cpu_device *dev, const xg_gemm_args *g,
                           const float *a, const float *b, float *c)
{
    if (g->m > INT_MAX || g->n > INT_MAX || g->k > INT_MAX)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "matmul: [%lld x %lld x %lld] exceeds the BLAS "
                            "index range",
                            (long long)g->m, (long long)g->n,
                            (long long)g->k);
    int threads = cpu_pool_threads(dev->pool);
    blas_job j = {g, a, b, c, 0.0f, 1, g->n, 0};
    if (g->batch < threads) {
        j.split_m = g->m > g->n;
        int64_t size = j.split_m ? g->m : g->n;
        j.parts = threads;
        j.step = ((size + threads - 1) / threads + 15) / 16 * 16;
    }
    int blas_threads = openblas_get_num_threads();
    if (blas_threads > 1)
        openblas_set_num_threads(1);
    cpu_parallel_for(dev->pool, g->batch * j.parts,
                     g->m * g->n * g->k / j.parts, 1, blas_range, &j);
    if (blas_threads > 1)
        openblas_set_num_threads(blas_threads);
    return XG_OK;
}
#endif

/* ---- built-in kernel -------------------------------------------------------
 * Always compiled, so that it is tested in every configuration.
 *
 * C is cut into tiles of mc x nc (for two or more threads, small enough to
 * give each thread at least two); a tile is one parallel item and runs
 * over all of K in blocks of KC depths: the block's rows of op(A) and
 * columns of op(B) are packed into panels (MR rows, NR columns, k-major)
 * in the thread's scratch, and a register-tiled micro-kernel on explicit
 * vectors (GCC vector extensions) computes MR x NR at a time. Variants
 * for AVX-512 (12 x 32 or 8 x 32, FMA), AVX2 (6 x 16, FMA) and the
 * baseline (6 x 8, no FMA) are compiled from cpu_gemm_kernel.h and chosen
 * at run time from the CPU (capped by XGRAD_CPU_KERNELS), whatever -march
 * says. Convolution (cpu_conv.c) drives the same micro-kernel directly
 * (cpu_micro_pick), with panels it gathers itself. K is never split
 * between threads and each sum runs in one fixed order, so results do not
 * depend on the thread count or the tiling (cpu_gemm_kernel.h). Unlike the
 * elementwise kernels (CPU_CLONES), the variants use FMA where the CPU has
 * it, which the speed needs: the AVX2 and AVX-512 variants give the same
 * bits, the baseline differs from them in the last bits. So, as with
 * OpenBLAS, a product is reproducible on one kind of CPU, not across
 * kinds. */

enum {
    KC = 256,     /* depth of one packed block; fixes each sum's order */
    MC_MAX = 480, /* bounds of a tile, for the scratch */
    NC_MAX = 512,
    SCRATCH_PER_THREAD = (MC_MAX + NC_MAX) * KC,
};

/* One operand as the kernel reads it: element (r, k) of op(X), where r is a
 * row of C (for A) or a column of C (for B), is at x[r * rs + k * ks]. */
typedef struct gemm_operand {
    const float *x;
    int64_t rs, ks;
} gemm_operand;

typedef struct gemm_job {
    const xg_gemm_args *g;
    const float *a, *b;
    float *c;
    float *scratch;
    int64_t mc, nc;           /* tile size */
    int64_t tiles_m, tiles_n; /* tiles per batch entry */
    void (*tile)(const struct gemm_job *job, int64_t tile, float *pa,
                 float *pb);
} gemm_job;

/* The scalar row gather, for the baseline variant. */
#define GEMM_GATHER_SCALAR(dst, base, idx, off, mask)                          \
    do {                                                                       \
        for (int l_ = 0; l_ < GEMM_NR; l_++)                                   \
            (dst)[l_] = (mask) >> l_ & 1u ? (base)[(off) + (idx)[l_]] : 0.0f;  \
    } while (0)

#define GEMM_NAME(x) x##_base
#define GEMM_MADD(acc, b, s) ((acc) + (b) * (s))
#define GEMM_GATHER GEMM_GATHER_SCALAR
#define GEMM_TARGET
#define GEMM_VL 4
#define GEMM_MR 6
#define GEMM_NV 2
#include "cpu_gemm_kernel.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define GEMM_X86 1
/* Two masked gathers of 8; the lanes' mask bits become all-ones lanes. */
#define GEMM_GATHER_AVX2(dst, base, idx, off, mask)                            \
    do {                                                                       \
        const __m256i bit_ = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);   \
        const __m256i o_ = _mm256_set1_epi32(off);                             \
        for (int h_ = 0; h_ < 2; h_++) {                                       \
            __m256i m_ = _mm256_and_si256(                                     \
                _mm256_set1_epi32((int)((mask) >> (8 * h_))), bit_);           \
            __m256i i_ = _mm256_add_epi32(                                     \
                _mm256_loadu_si256((const __m256i *)((idx) + 8 * h_)), o_);    \
            _mm256_store_ps((dst) + 8 * h_,                                    \
                            _mm256_mask_i32gather_ps(                          \
                                _mm256_setzero_ps(), (base), i_,               \
                                _mm256_castsi256_ps(                           \
                                    _mm256_cmpeq_epi32(m_, bit_)),             \
                                4));                                           \
        }                                                                      \
    } while (0)
/* Two masked gathers of 16. */
#define GEMM_GATHER_AVX512(dst, base, idx, off, mask)                          \
    do {                                                                       \
        const __m512i o_ = _mm512_set1_epi32(off);                             \
        for (int h_ = 0; h_ < 2; h_++)                                         \
            _mm512_store_ps((dst) + 16 * h_,                                   \
                            _mm512_mask_i32gather_ps(                          \
                                _mm512_setzero_ps(),                           \
                                (__mmask16)((mask) >> (16 * h_)),              \
                                _mm512_add_epi32(                              \
                                    _mm512_loadu_si512((idx) + 16 * h_), o_),  \
                                (base), 4));                                   \
    } while (0)

#define GEMM_NAME(x) x##_avx2
#define GEMM_TARGET __attribute__((target("avx2,fma")))
#define GEMM_MADD(acc, b, s) _mm256_fmadd_ps(b, _mm256_set1_ps(s), acc)
#define GEMM_GATHER GEMM_GATHER_AVX2
#define GEMM_VL 8
#define GEMM_MR 6
#define GEMM_NV 2
#include "cpu_gemm_kernel.h"

#define GEMM_NAME(x) x##_avx512
#define GEMM_TARGET __attribute__((target("avx512f,fma")))
#define GEMM_MADD(acc, b, s) _mm512_fmadd_ps(b, _mm512_set1_ps(s), acc)
#define GEMM_GATHER GEMM_GATHER_AVX512
#define GEMM_VL 16
#define GEMM_MR 12
#define GEMM_NV 2
#include "cpu_gemm_kernel.h"

#define GEMM_NAME(x) x##_avx512_8
#define GEMM_TARGET __attribute__((target("avx512f,fma")))
#define GEMM_MADD(acc, b, s) _mm512_fmadd_ps(b, _mm512_set1_ps(s), acc)
#define GEMM_GATHER GEMM_GATHER_AVX512
#define GEMM_VL 16
#define GEMM_MR 8
#define GEMM_NV 2
#include "cpu_gemm_kernel.h"
#endif

/* One variant: its tile routine, micro-tile and largest tile (mc a
 * multiple of mr, nc of nr, within MC_MAX x NC_MAX), and the micro-kernel
 * and panel gathers that convolution drives directly. */
typedef struct gemm_variant {
    void (*tile)(const gemm_job *job, int64_t tile, float *pa, float *pb);
    int64_t mr, nr, mc, nc;
    cpu_micro micro;
} gemm_variant;

#define GEMM_VARIANT(x, mr, nr)                                                \
    {tile_##x, mr, nr, 480, 512,                                               \
     {mr, nr, micro_##x, micro_rows_##x, gather_taps_##x,               \
      gather_pixels_##x}}

static const gemm_variant gemm_base = GEMM_VARIANT(base, 6, 8);
#ifdef GEMM_X86
static const gemm_variant gemm_avx2 = GEMM_VARIANT(avx2, 6, 16);
static const gemm_variant gemm_avx512 = GEMM_VARIANT(avx512, 12, 32);
static const gemm_variant gemm_avx512_8 = GEMM_VARIANT(avx512_8, 8, 32);
#endif

/* The variant for this machine, the device's cap (XGRAD_CPU_KERNELS) and
 * m rows of C. */
static const gemm_variant *gemm_pick(const cpu_device *dev, int64_t m)
{
#ifdef GEMM_X86
    /* AVX-512: 12 x 32, or 8 x 32 where that pads m clearly less (the
     * samples' batches of 64 rows); the same bits either way. */
    if (dev->kernels >= CPU_KERNELS_AVX512 &&
        __builtin_cpu_supports("avx512f"))
        return (m + 7) / 8 * 8 * 15 < (m + 11) / 12 * 12 * 14
                   ? &gemm_avx512_8
                   : &gemm_avx512;
    if (dev->kernels >= CPU_KERNELS_AVX2 && __builtin_cpu_supports("avx2") &&
        __builtin_cpu_supports("fma"))
        return &gemm_avx2;
#else
    (void)dev;
#endif
    return &gemm_base;
}

const cpu_micro *cpu_micro_pick(const cpu_device *dev, int64_t m)
{
    return &gemm_pick(dev, m)->micro;
}

xg_status cpu_kernels_from_env(cpu_kernels *out)
{
    /* in the enum's order */
    static const char *const names[] = {"baseline", "avx2", "avx512"};
    int k;
    xg_status st = xg__env_choice("XGRAD_CPU_KERNELS", names, 3,
                                  CPU_KERNELS_AVX512, &k);
    *out = (cpu_kernels)k;
    return st;
}

/* Blocks of `unit` multiples covering `size` in `parts` near-equal pieces. */
static int64_t gemm_block(int64_t size, int64_t parts, int64_t unit)
{
    int64_t b = (size + parts - 1) / parts;
    return (b + unit - 1) / unit * unit;
}

static void gemm_range(const void *ctx, int64_t begin, int64_t end, int th)
{
    const gemm_job *job = ctx;
    float *pa = job->scratch + (size_t)th * SCRATCH_PER_THREAD;
    float *pb = pa + MC_MAX * KC;
    for (int64_t tile = begin; tile < end; tile++)
        job->tile(job, tile, pa, pb);
}

/* The device's packing buffers, grown on first use and kept until close. */
static float *gemm_scratch(cpu_device *dev)
{
    size_t want = (size_t)cpu_pool_threads(dev->pool) * SCRATCH_PER_THREAD;
    if (dev->gemm_scratch_floats < want) {
        free(dev->gemm_scratch);
        dev->gemm_scratch = aligned_alloc(64, want * sizeof(float));
        dev->gemm_scratch_floats = dev->gemm_scratch ? want : 0;
    }
    return dev->gemm_scratch;
}

/* The built-in GEMM, over the pool. */
static xg_status gemm_builtin(cpu_device *dev, const xg_gemm_args *g,
                              const float *a, const float *b, float *c)
{
    if (g->batch <= 0 || g->m <= 0 || g->n <= 0)
        return XG_OK;
    gemm_variant v = *gemm_pick(dev, g->m);
    /* As few tiles as the largest size allows; over the pool, more until
     * each thread has two, or one for a small product (a tile of at least
     * 2^17 multiply-adds), halving the longer side (never below 2 x 2
     * micro-tiles). The tiling does not change any result's bits. */
    int64_t parts_m = (g->m + v.mc - 1) / v.mc;
    int64_t parts_n = (g->n + v.nc - 1) / v.nc;
    double small = (double)g->batch * (double)g->m * (double)g->n *
                   (double)g->k / 131072.0;
    int64_t want = 2 * (int64_t)cpu_pool_threads(dev->pool);
    if (want > small)
        want = (int64_t)small;
    int64_t mc = gemm_block(g->m, parts_m, v.mr);
    int64_t nc = gemm_block(g->n, parts_n, v.nr);
    while (g->batch * parts_m * parts_n < want) {
        if (nc >= mc && nc > 2 * v.nr)
            nc = gemm_block(g->n, ++parts_n, v.nr);
        else if (mc > 2 * v.mr)
            mc = gemm_block(g->m, ++parts_m, v.mr);
        else if (nc > 2 * v.nr)
            nc = gemm_block(g->n, ++parts_n, v.nr);
        else
            break;
    }
    gemm_job job = {g, a, b, c, gemm_scratch(dev), mc, nc,
                    (g->m + mc - 1) / mc, (g->n + nc - 1) / nc, v.tile};
    if (!job.scratch)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "matmul: out of host memory for packing buffers");
    cpu_parallel_for(dev->pool, g->batch * job.tiles_m * job.tiles_n,
                     mc * nc * (g->k > 0 ? g->k : 1), 1, gemm_range, &job);
    return XG_OK;
}

xg_status cpu_gemm_builtin(cpu_device *dev, const xg_gemm_args *g,
                           const float *a, const float *b, float *c)
{
    return gemm_builtin(dev, g, a, b, c);
}

/* The backend's GEMM on host pointers: OpenBLAS, else the built-in one. */
static xg_status sgemm(cpu_device *dev, const xg_gemm_args *g,
                       const float *a, const float *b, float *c)
{
#ifdef XGRAD_HAVE_BLAS
    return gemm_blas(dev, g, a, b, c);
#else
    return gemm_builtin(dev, g, a, b, c);
#endif
}

/* Conversions between 16-bit buffers and f32 copies, in parallel. */
typedef struct half_copy {
    const void *src;
    void *dst;
    xg_dtype t;
    int widen; /* 1: t -> f32, 0: f32 -> t */
} half_copy;

static void half_copy_range(const void *ctx, int64_t begin, int64_t end,
                            int thread)
{
    (void)thread;
    const half_copy *c = ctx;
    size_t n = (size_t)(end - begin);
    if (c->widen)
        (c->t == XG_BF16 ? xg_bf16_to_f32 : xg_f16_to_f32)(
            (const uint16_t *)c->src + begin, (float *)c->dst + begin, n);
    else
        (c->t == XG_BF16 ? xg_f32_to_bf16 : xg_f32_to_f16)(
            (const float *)c->src + begin, (uint16_t *)c->dst + begin, n);
}

static void half_convert(cpu_device *dev, const void *src, void *dst,
                         xg_dtype t, int widen, int64_t n)
{
    half_copy c = {src, dst, t, widen};
    cpu_parallel_elements(dev->pool, n, CPU_COST_SIMPLE * 2, half_copy_range,
                          &c);
}

/* bf16 / f16: the operands widened to f32 (exactly), the f32 GEMM (f32
 * accumulation), the output rounded once: the bits of the f32 GEMM on the
 * same values, rounded. (Debian's OpenBLAS 0.3.21 is built without
 * cblas_sbgemm, so the f32 GEMM is the product on every build.) The f32
 * copies come from the device's caching allocator: a training loop's
 * products of the same sizes reuse their pages instead of faulting in
 * fresh ones at every call (at n = 256 that was most of the cost). */
static xg_status matmul_half(cpu_device *dev, const xg_kernel_call *call)
{
    const xg_gemm_args *g = &call->p.gemm;
    xg_dtype t = call->out[0].dtype;
    int64_t na = (g->batch - 1) * g->stride_a + g->m * g->k;
    int64_t nb = (g->batch - 1) * g->stride_b + g->k * g->n;
    int64_t nc = g->batch * g->m * g->n;
    if (nc <= 0) /* nothing to write */
        return XG_OK;
    xg_buffer *buf[3] = {NULL, NULL, NULL};
    int64_t count[3] = {na, nb, nc};
    xg_status st = XG_OK;
    for (int i = 0; i < 3 && st == XG_OK; i++)
        st = cpu_cache_alloc(dev, (size_t)(count[i] > 0 ? count[i] : 1) *
                                      sizeof(float),
                             &buf[i]);
    if (st == XG_OK) {
        float *a = cpu_f32(buf[0]), *b = cpu_f32(buf[1]),
              *c = cpu_f32(buf[2]);
        half_convert(dev, call->in[0].buf, a, t, 1, na);
        half_convert(dev, call->in[1].buf, b, t, 1, nb);
        st = sgemm(dev, g, a, b, c);
        if (st == XG_OK)
            half_convert(dev, c, call->out[0].buf, t, 0, nc);
    }
    for (int i = 0; i < 3; i++)
        if (buf[i])
            cpu_cache_free(dev, buf[i]);
    return st;
}

xg_status cpu_matmul(xg_backend_device *dev, const xg_kernel_call *call)
{
    if (call->out[0].dtype != XG_F32)
        return matmul_half(cpu_dev(dev), call);
    return sgemm(cpu_dev(dev), &call->p.gemm, cpu_f32(call->in[0].buf),
                 cpu_f32(call->in[1].buf), cpu_f32(call->out[0].buf));
}
