/* Batched GEMM: C_b = alpha * op(A_b) op(B_b), C overwritten.
 *
 * With OpenBLAS (XGRAD_HAVE_BLAS): single-threaded cblas_sgemm calls on
 * batch entries or blocks of C, the transposes passed as flags (no
 * transposed copies), run in parallel by the backend's pool.
 * Without: a cache-blocked kernel in the GotoBLAS/BLIS layout, parallelised
 * over tiles of C. cpu_sgemm is the same on raw pointers, with C += as an
 * option and a serial mode for GEMMs inside a parallel job (convolution).
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
 * threads stay asleep: woken, they spin (sched_yield) for a long while
 * after each call and steal the pool's cores. */
static xg_status gemm_blas(cpu_device *dev, const xg_gemm_args *g,
                           const float *a, const float *b, float *c,
                           float beta, int thread)
{
    if (g->m > INT_MAX || g->n > INT_MAX || g->k > INT_MAX)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "matmul: [%lld x %lld x %lld] exceeds the BLAS "
                            "index range",
                            (long long)g->m, (long long)g->n,
                            (long long)g->k);
    int threads = cpu_pool_threads(dev->pool);
    blas_job j = {g, a, b, c, beta, 1, g->n, 0};
    if (thread < 0 && g->batch < threads) {
        j.split_m = g->m > g->n;
        int64_t size = j.split_m ? g->m : g->n;
        j.parts = threads;
        j.step = ((size + threads - 1) / threads + 15) / 16 * 16;
    }
    if (thread >= 0) {
        blas_range(&j, 0, g->batch, thread);
        return XG_OK;
    }
    cpu_sgemm_serial_begin(dev);
    cpu_parallel_for(dev->pool, g->batch * j.parts,
                     g->m * g->n * g->k / j.parts, 1, blas_range, &j);
    cpu_sgemm_serial_end(dev);
    return XG_OK;
}
#endif

/* ---- built-in kernel -------------------------------------------------------
 * Always compiled, so that it is tested in every configuration. */

enum {
    MR = 4,    /* micro-tile rows */
    NR = 8,    /* micro-tile columns */
    MC = 64,   /* rows of C per task (multiple of MR) */
    NC = 128,  /* columns of C per task (multiple of NR) */
    KC = 256,  /* depth of one packed block */
    SCRATCH_PER_THREAD = (MC + NC) * KC,
};

/* One operand as the kernel reads it: element (r, k) of op(X), where r is a
 * row of C (for A) or a column of C (for B), is at x[r * rs + k * ks]. */
typedef struct gemm_operand {
    const float *x;
    int64_t rs, ks;
} gemm_operand;

/* Copies rows [r0, r0 + rows) x depth [k0, k0 + kc) of `op` into panels of
 * `w` rows, each stored k-major (w values per k), zero-padding the last. */
static void gemm_pack(float *dst, gemm_operand op, int64_t r0, int64_t rows,
                      int64_t k0, int64_t kc, int w)
{
    for (int64_t p = 0; p < rows; p += w)
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < w; i++)
                *dst++ = p + i < rows
                             ? op.x[(r0 + p + i) * op.rs + (k0 + k) * op.ks]
                             : 0.0f;
}

/* acc = sum_k a[k][0..MR) (outer) b[k][0..NR) over packed panels. */
static void gemm_micro(int64_t kc, const float *a, const float *b,
                       float acc[MR][NR])
{
    float t[MR][NR] = {{0}};
    for (int64_t k = 0; k < kc; k++, a += MR, b += NR)
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++)
                t[i][j] += a[i] * b[j];
    memcpy(acc, t, sizeof t);
}

typedef struct gemm_job {
    const xg_gemm_args *g;
    const float *a, *b;
    float *c;
    float *scratch;
    int64_t tiles_m, tiles_n;
    int accumulate; /* C += instead of C = */
} gemm_job;

/* C[i0.., j0..] (=|+=) alpha * acc, clipped to rows x cols. */
static void gemm_store(float *c, int64_t ldc, float alpha, int accumulate,
                       float acc[MR][NR], int64_t rows, int64_t cols)
{
    for (int64_t i = 0; i < rows; i++)
        for (int64_t j = 0; j < cols; j++)
            c[i * ldc + j] =
                (accumulate ? c[i * ldc + j] : 0.0f) + alpha * acc[i][j];
}

/* One MC x NC tile of one batch entry's C, over all of K. */
static void gemm_tile(const gemm_job *job, int64_t tile, float *pa, float *pb)
{
    const xg_gemm_args *g = job->g;
    int64_t t = tile / (job->tiles_m * job->tiles_n);
    int64_t i0 = tile / job->tiles_n % job->tiles_m * MC;
    int64_t j0 = tile % job->tiles_n * NC;
    int64_t mc = g->m - i0 < MC ? g->m - i0 : MC;
    int64_t nc = g->n - j0 < NC ? g->n - j0 : NC;
    gemm_operand a = {job->a + t * g->stride_a, g->trans_a ? 1 : g->k,
                      g->trans_a ? g->m : 1};
    gemm_operand b = {job->b + t * g->stride_b, g->trans_b ? g->k : 1,
                      g->trans_b ? 1 : g->n};
    float *c = job->c + t * g->stride_c + i0 * g->n + j0;
    for (int64_t k0 = 0; k0 < g->k; k0 += KC) {
        int64_t kc = g->k - k0 < KC ? g->k - k0 : KC;
        gemm_pack(pa, a, i0, mc, k0, kc, MR);
        gemm_pack(pb, b, j0, nc, k0, kc, NR);
        for (int64_t jr = 0; jr < nc; jr += NR)
            for (int64_t ir = 0; ir < mc; ir += MR) {
                float acc[MR][NR];
                gemm_micro(kc, pa + ir * kc, pb + jr * kc, acc);
                gemm_store(c + ir * g->n + jr, g->n, g->alpha,
                           k0 > 0 || job->accumulate, acc,
                           mc - ir < MR ? mc - ir : MR,
                           nc - jr < NR ? nc - jr : NR);
            }
    }
}

static void gemm_range(const void *ctx, int64_t begin, int64_t end, int th)
{
    const gemm_job *job = ctx;
    float *pa = job->scratch + (size_t)th * SCRATCH_PER_THREAD;
    float *pb = pa + MC * KC;
    for (int64_t tile = begin; tile < end; tile++)
        gemm_tile(job, tile, pa, pb);
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

/* The built-in GEMM; thread < 0: over the pool, else serially as `thread`
 * (whose packing buffers must already exist: cpu_sgemm_serial_begin). */
static xg_status gemm_builtin(cpu_device *dev, const xg_gemm_args *g,
                              const float *a, const float *b, float *c,
                              int accumulate, int thread)
{
    gemm_job job = {g, a, b, c, thread < 0 ? gemm_scratch(dev)
                                           : dev->gemm_scratch,
                    (g->m + MC - 1) / MC, (g->n + NC - 1) / NC, accumulate};
    if (!job.scratch)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "matmul: out of host memory for packing buffers");
    int64_t tiles = g->batch * job.tiles_m * job.tiles_n;
    if (thread >= 0)
        gemm_range(&job, 0, tiles, thread);
    else
        cpu_parallel_for(dev->pool, tiles, (int64_t)MC * NC * g->k, 1,
                         gemm_range, &job);
    return XG_OK;
}

xg_status cpu_gemm_builtin(cpu_device *dev, const xg_gemm_args *g,
                           const float *a, const float *b, float *c)
{
    return gemm_builtin(dev, g, a, b, c, 0, -1);
}

xg_status cpu_sgemm(cpu_device *dev, const xg_gemm_args *g, const float *a,
                    const float *b, float *c, int accumulate, int thread)
{
#ifdef XGRAD_HAVE_BLAS
    return gemm_blas(dev, g, a, b, c, accumulate ? 1.0f : 0.0f, thread);
#else
    return gemm_builtin(dev, g, a, b, c, accumulate, thread);
#endif
}

xg_status cpu_sgemm_serial_begin(cpu_device *dev)
{
#ifdef XGRAD_HAVE_BLAS
    if (dev->serial_depth++ == 0) {
        dev->blas_threads = openblas_get_num_threads();
        if (dev->blas_threads > 1)
            openblas_set_num_threads(1);
    }
    return XG_OK;
#else
    return gemm_scratch(dev)
               ? XG_OK
               : xg_set_error(XG_ERR_OUT_OF_MEMORY,
                              "gemm: out of host memory for packing buffers");
#endif
}

void cpu_sgemm_serial_end(cpu_device *dev)
{
#ifdef XGRAD_HAVE_BLAS
    if (--dev->serial_depth == 0 && dev->blas_threads > 1)
        openblas_set_num_threads(dev->blas_threads);
#else
    (void)dev;
#endif
}

xg_status cpu_matmul(xg_backend_device *dev, const xg_kernel_call *call)
{
    return cpu_sgemm(cpu_dev(dev), &call->p.gemm, cpu_f32(call->in[0].buf),
                     cpu_f32(call->in[1].buf), cpu_f32(call->out[0].buf), 0, -1);
}
