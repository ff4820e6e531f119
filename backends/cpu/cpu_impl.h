/* The CPU backend's internals: device, buffers, thread pool and kernels.
 *
 * The CPU backend is the reference: its kernels define the semantics that
 * api/core/backend.h states, and the conformance suite holds every other
 * backend to them. Work runs synchronously in the calling thread, split over a small
 * persistent thread pool when it is large enough to pay for the hand-off.
 */
#ifndef XGRAD_CPU_IMPL_H
#define XGRAD_CPU_IMPL_H

#include <stddef.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#include "backend.h"

/* Marks a helper whose `op` argument is a constant at every call site, so the
 * compiler emits one specialised (vectorisable) loop per op from one body. */
#if defined(__GNUC__)
#define CPU_INLINE static inline __attribute__((always_inline))
#else
#define CPU_INLINE static inline
#endif

/* ---- thread pool (cpu_pool.c) ------------------------------------------- */

typedef struct cpu_pool cpu_pool;

/* Work on items [begin, end) of a job. `thread` is in [0, threads): 0 for
 * the calling thread, and never the same for two ranges that run at once
 * (it indexes per-thread scratch). */
typedef void (*cpu_range_fn)(const void *ctx, int64_t begin, int64_t end,
                             int thread);

/* Starts `threads` - 1 workers; the calling thread makes up the count.
 * Returns NULL on host OOM; fewer workers start if the system refuses
 * threads. */
cpu_pool *cpu_pool_new(int threads);
/* Stops and joins the workers and frees the pool. NULL is ignored. */
void cpu_pool_free(cpu_pool *pool);
/* Threads that take part in a job, the caller included. */
int cpu_pool_threads(const cpu_pool *pool);

/* Runs fn over [0, n) and returns when every range is done. Each item costs
 * about `item_cost` simple operations (an add or a compare is 1, a libm call
 * such as expf about 16); below CPU_PARALLEL_MIN_WORK in total, fn runs
 * once, serially, in the calling thread, so small ops pay nothing for the
 * pool. Otherwise [0, n) is cut into contiguous ranges that start at
 * multiples of `align` items, and the pool's threads claim them in turn. */
void cpu_parallel_for(cpu_pool *pool, int64_t n, int64_t item_cost,
                      int64_t align, cpu_range_fn fn, const void *ctx);

#define CPU_PARALLEL_MIN_WORK ((int64_t)32768)

/* Costs of one element for cpu_parallel_for: a few arithmetic operations,
 * or one libm call (expf, erff, ...). */
/* exp(x) as plain arithmetic so that loops over it
 * vectorise (libm's expf does not): x = n ln 2 + r, |r| <= ln 2 / 2 (ln 2
 * in two parts, Cody & Waite), exp(r) by its Taylor polynomial of degree
 * 7 (relative error below 2^-24 on that interval), times 2^n built in the
 * exponent bits. Within about 1 ulp of expf; 0 below -87.3 (no
 * subnormals), +inf above 88.7, NaN stays NaN. */
CPU_INLINE float cpu_exp(float x)
{
    const float log2e = 1.44269504f, ln2_hi = 0.693359375f,
                ln2_lo = -2.12194440e-4f, round = 12582912.0f; /* 1.5 * 2^23 */
    float c = x < -87.3f ? -87.3f : x > 88.7f ? 88.7f : x;
    float n = (c * log2e + round) - round; /* round to nearest */
    float r = (c - n * ln2_hi) - n * ln2_lo;
    float p = 1.0f / 5040.0f;
    p = p * r + 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float two_n;
    memcpy(&two_n, &bits, sizeof two_n);
    float y = p * two_n;
    y = x < -87.3f ? 0.0f : y;
    y = x > 88.7f ? INFINITY : y;
    return x != x ? x : y;
}

/* tanh(u) = sign(u) (1 - 2 / (exp(2 |u|) + 1)) through cpu_exp, so loops
 * over it vectorise. Its absolute error is a few ulp of 1 (not of tanh:
 * near 0 the subtraction cancels), which is what GELU's 1 + tanh needs;
 * the tanh op itself keeps libm's tanhf. NaN stays NaN. */
CPU_INLINE float cpu_tanh_abs_accurate(float u)
{
    float a = fabsf(u);
    float t = 1.0f - 2.0f / (cpu_exp(2.0f * a) + 1.0f);
    return u < 0.0f ? -t : t;
}

/* Range functions with vectorisable loops are compiled for AVX2 and for
 * the baseline, and the loader picks one for the machine. Kernels built so
 * must give the same bits either way: no reassociated sums, and no FMA
 * contraction (-std=c11 turns it off). Not under the sanitizers, whose
 * runtimes are not up yet when the loader runs the clones' resolvers. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_THREAD__) && \
    !defined(__SANITIZE_ADDRESS__)
#define CPU_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CPU_CLONES
#endif

enum { CPU_COST_SIMPLE = 1, CPU_COST_LIBM = 16 };

/* Elementwise work: ranges start at multiples of 16 elements, so threads
 * never write to one cache line and RNG blocks (4 elements) are never cut. */
static inline void cpu_parallel_elements(cpu_pool *pool, int64_t n,
                                         int64_t cost, cpu_range_fn fn,
                                         const void *ctx)
{
    cpu_parallel_for(pool, n, cost, 16, fn, ctx);
}

/* Row work: `rows` items of `row_cost` each. */
static inline void cpu_parallel_rows(cpu_pool *pool, int64_t rows,
                                     int64_t row_cost, cpu_range_fn fn,
                                     const void *ctx)
{
    cpu_parallel_for(pool, rows, row_cost, 1, fn, ctx);
}

/* ---- device and buffers (cpu_backend.c) --------------------------------- */

/* A CPU buffer is host memory itself (64-byte aligned), so a kernel reaches
 * its data with one cast and no indirection. */
static inline float *cpu_f32(xg_buffer *buf) { return (float *)(void *)buf; }
static inline int32_t *cpu_i32(xg_buffer *buf)
{
    return (int32_t *)(void *)buf;
}

/* Size classes of the buffer cache (cpu_cache.c). */
enum { CPU_CACHE_CLASSES = 64 + 8 * 36 };
struct block_header;

/* The widest instructions the built-in GEMM and convolution kernels may
 * use (XGRAD_CPU_KERNELS); the CPU's own features cap them further. */
typedef enum cpu_kernels {
    CPU_KERNELS_BASELINE,
    CPU_KERNELS_AVX2,
    CPU_KERNELS_AVX512,
} cpu_kernels;

typedef struct cpu_device {
    xg_backend_device base; /* first member: the core casts */
    cpu_kernels kernels;
    bool winograd;          /* XGRAD_CPU_WINOGRAD: 3x3 convolutions by
                               Winograd's F(2x2, 3x3) (cpu_conv.c) */
    cpu_pool *pool;
    struct block_header *cache[CPU_CACHE_CLASSES]; /* free blocks by class */
    struct block_header *cache_oldest, *cache_newest; /* by time freed */
    size_t cached_bytes, cache_limit;
    size_t live_bytes, live_peak; /* bytes of blocks handed out: now, most */
    size_t cache_slack;     /* XGRAD_CPU_CACHE when cache_slack_fixed */
    int cache_slack_fixed;
    float *gemm_scratch;    /* packing buffers of the built-in GEMM */
    size_t gemm_scratch_floats;
    float *conv_scratch;    /* packed operands, per-thread panels and
                               partial sums of the convolution kernels
                               (cpu_conv.c) */
    size_t conv_scratch_floats;
} cpu_device;

static inline cpu_device *cpu_dev(xg_backend_device *dev)
{
    return (cpu_device *)dev;
}

/* The caching allocator behind alloc() and free() (cpu_cache.c): buffers
 * are 64-byte aligned, freed ones are kept by size class for reuse while
 * the memory held stays within the live peak plus a slack (and at most
 * cache_limit bytes are cached), and released by cpu_cache_release (at
 * close). cpu_cache_init fails with XG_ERR_INVALID_ARG for a malformed
 * XGRAD_CPU_CACHE. */
xg_status cpu_cache_init(cpu_device *dev);
xg_status cpu_cache_alloc(cpu_device *dev, size_t bytes, xg_buffer **out);
void cpu_cache_free(cpu_device *dev, xg_buffer *buf);
void cpu_cache_release(cpu_device *dev);

/* The number of threads the backend uses: XGRAD_NUM_THREADS when it holds
 * a positive integer, else the CPUs this process may run on. */
int cpu_thread_count(void);

/* ---- random numbers (cpu_random.c) -------------------------------------- */

/* One block of Philox4x32-10: out = philox(key, ctr). */
void cpu_philox4x32_10(const uint32_t key[2], const uint32_t ctr[4],
                       uint32_t out[4]);
/* The uniform numbers in [0, 1) of blocks first .. first + n - 1 of stream
 * `seed` (1 <= n <= CPU_RNG_LANES), as rand_uniform(0, 1) maps them
 * (api/core/backend.h, xg_rng_args): u[4 * l + k] is word k of block first + l.
 * Dropout draws its mask from them. */
enum { CPU_RNG_LANES = 16 };
void cpu_uniform_blocks(uint64_t seed, uint64_t first, int n, float *u);

/* ---- kernels: one per family or op group -------------------------------- */

/* cpu_elementwise.c */
xg_status cpu_unary(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_unary_backward(xg_backend_device *dev,
                             const xg_kernel_call *call);
xg_status cpu_scalar(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_binary(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_copy_strided(xg_backend_device *dev,
                           const xg_kernel_call *call);
xg_status cpu_copy(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_fill(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_reduce.c */
xg_status cpu_sum(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_max(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_max_backward(xg_backend_device *dev,
                           const xg_kernel_call *call);

/* cpu_rows.c */
xg_status cpu_softmax(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_cross_entropy(xg_backend_device *dev,
                            const xg_kernel_call *call);
xg_status cpu_cross_entropy_backward(xg_backend_device *dev,
                                     const xg_kernel_call *call);

/* cpu_gemm.c */
xg_status cpu_matmul(xg_backend_device *dev, const xg_kernel_call *call);
/* The built-in GEMM that cpu_matmul uses without OpenBLAS; exposed so that
 * tests can check it against BLAS in every build. */
xg_status cpu_gemm_builtin(cpu_device *dev, const xg_gemm_args *g,
                           const float *a, const float *b, float *c);
/* The built-in GEMM's register-tiled micro-kernel and its panel gathers,
 * for kernels that pack their own operands (convolution packs B straight
 * from the image). Packed A holds mr values per depth (rows of C), packed
 * B nr per depth (columns of C), both 64-byte aligned, nr <= 32.
 *   kernel  C[rows x cols] (row stride ldc) = (add ? C : 0) + alpha *
 *           sum over kc depths of a b, rows <= mr, cols <= nr; each sum
 *           runs from depth 0 up, with FMA where the CPU has it
 *   kernel_rows  the same with A read in place: `rows` rows of kc floats,
 *           lda apart (no packing; the same bits)
 *   gather_taps, gather_pixels  see cpu_gemm_kernel.h
 * Owned by the library (static). */
typedef struct cpu_micro {
    int64_t mr, nr;
    void (*kernel)(int64_t kc, const float *a, const float *b, float *c,
                   int64_t ldc, float alpha, int add, int64_t rows,
                   int64_t cols);
    void (*kernel_rows)(int64_t kc, const float *a, int64_t lda,
                        const float *b, float *c, int64_t ldc, float alpha,
                        int add, int64_t rows, int64_t cols);
    void (*gather_taps)(float *dst, const float *base, int64_t channels,
                        int64_t stride, int period, const int32_t *idx,
                        const uint32_t *mask);
    void (*gather_pixels)(float *dst, const float *base, int64_t rows,
                          const int32_t *off, const uint32_t *mask,
                          const int32_t *idx);
} cpu_micro;

/* The micro-kernel for this CPU (within the device's cap) and a product
 * with m rows. */
const cpu_micro *cpu_micro_pick(const cpu_device *dev, int64_t m);

/* The cap from XGRAD_CPU_KERNELS: avx512 (or unset, empty: no cap), avx2
 * or baseline; XG_ERR_INVALID_ARG for anything else. */
xg_status cpu_kernels_from_env(cpu_kernels *out);


/* cpu_random.c */
xg_status cpu_rand(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_conv.c: convolution (GEMM on gathered panels), pooling, dropout */
xg_status cpu_conv2d(xg_backend_device *dev, const xg_kernel_call *call);
/* At least `floats` floats of 64-byte aligned device scratch for the
 * convolution kernels, grown as needed and kept until the device closes
 * (its contents are not kept across calls); NULL on host OOM. */
float *cpu_conv_scratch(cpu_device *dev, size_t floats);

/* cpu_winograd.c: 3x3 convolution by Winograd's minimal filtering:
 * F(2x2, 3x3) for the forward pass (conv2d, conv2d_bias, conv2d_bias_relu)
 * and the input gradient (conv2d_backward_input), F(3x3, 2x2) for the
 * weight gradient (conv2d_backward_weight). cpu_winograd_fits says whether
 * a CONV call takes it on `dev`; cpu_winograd runs such a call
 * (XG_ERR_OUT_OF_MEMORY, XG_ERR_TOO_LARGE for its buffers).
 * cpu_winograd_from_env reads XGRAD_CPU_WINOGRAD: unset, empty or 1
 * (true), 0 (false); anything else is XG_ERR_INVALID_ARG naming it. */
bool cpu_winograd_fits(const cpu_device *dev, const xg_kernel_call *call);
xg_status cpu_winograd(cpu_device *dev, const xg_kernel_call *call);
xg_status cpu_winograd_from_env(bool *out);
xg_status cpu_conv2d_backward_input(xg_backend_device *dev,
                                    const xg_kernel_call *call);
xg_status cpu_conv2d_backward_weight(xg_backend_device *dev,
                                     const xg_kernel_call *call);
xg_status cpu_max_pool2d(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_max_pool2d_backward(xg_backend_device *dev,
                                  const xg_kernel_call *call);
xg_status cpu_avg_pool2d(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_avg_pool2d_backward(xg_backend_device *dev,
                                  const xg_kernel_call *call);
xg_status cpu_dropout(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_index.c: index_select, gather and their backward; where, masked_fill */
xg_status cpu_index(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_where(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_attention.c: attention and its two backward passes */
xg_status cpu_attention(xg_backend_device *dev, const xg_kernel_call *call);
/* cpu_norm.c: layer_norm, its dx and its dweight / dbias column sums */
xg_status cpu_layer_norm(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_cast.c: conversions between f32, bf16, f16 and i32 */
xg_status cpu_cast(xg_backend_device *dev, const xg_kernel_call *call);

/* cpu_optim.c */
xg_status cpu_adam_update(xg_backend_device *dev, const xg_kernel_call *call);
xg_status cpu_sgd_update(xg_backend_device *dev, const xg_kernel_call *call);

#endif
