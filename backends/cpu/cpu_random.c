/* Counter-based random numbers: Philox4x32-10, uniform and normal.
 *
 * reference: Salmon, Moraes, Dror & Shaw, "Parallel random numbers: as easy
 * as 1, 2, 3", SC 2011, and its Random123 library (philox4x32_R with R = 10).
 * Element i of a call uses block (offset + i / 4), word i % 4; the exact
 * mapping from words to floats is in api/core/backend.h (struct
 * xg_rng_args). */
#include "cpu_impl.h"

#include <assert.h>
#include <math.h>

#define PHILOX_M0 UINT32_C(0xD2511F53) /* round multipliers */
#define PHILOX_M1 UINT32_C(0xCD9E8D57)
#define PHILOX_W0 UINT32_C(0x9E3779B9) /* Weyl key increments: golden */
#define PHILOX_W1 UINT32_C(0xBB67AE85) /* ratio and sqrt(3) - 1 */
#define PHILOX_ROUNDS 10

void cpu_philox4x32_10(const uint32_t key[2], const uint32_t ctr[4],
                       uint32_t out[4])
{
    uint32_t k0 = key[0], k1 = key[1];
    uint32_t x0 = ctr[0], x1 = ctr[1], x2 = ctr[2], x3 = ctr[3];
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        uint64_t p0 = (uint64_t)PHILOX_M0 * x0;
        uint64_t p1 = (uint64_t)PHILOX_M1 * x2;
        x0 = (uint32_t)(p1 >> 32) ^ x1 ^ k0;
        x1 = (uint32_t)p1;
        x2 = (uint32_t)(p0 >> 32) ^ x3 ^ k1;
        x3 = (uint32_t)p0;
        k0 += PHILOX_W0; /* the key bump after the last round is unused */
        k1 += PHILOX_W1;
    }
    out[0] = x0;
    out[1] = x1;
    out[2] = x2;
    out[3] = x3;
}

/* The top 24 bits of a word as a float in [0, 1). */
static inline float unit_float(uint32_t w)
{
    return (float)(w >> 8) * 0x1p-24f;
}

/* Philox4x32-10 on `n` <= CPU_RNG_LANES consecutive counters at once, lane
 * by lane in arrays, so that the compiler turns each round into vector
 * multiplies (this is most of the cost of dropout); the same values as
 * cpu_philox4x32_10 block by block. Inlined into cpu_uniform_blocks, whose
 * AVX2 clone then runs eight lanes per instruction. */
CPU_INLINE void philox_lanes(uint64_t seed, uint64_t first, int n,
                             uint32_t out[4][CPU_RNG_LANES])
{
    uint32_t x0[CPU_RNG_LANES], x1[CPU_RNG_LANES], x2[CPU_RNG_LANES] = {0},
             x3[CPU_RNG_LANES] = {0};
    uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
    for (int l = 0; l < CPU_RNG_LANES; l++) {
        x0[l] = (uint32_t)(first + (uint64_t)l);
        x1[l] = (uint32_t)((first + (uint64_t)l) >> 32);
    }
    for (int r = 0; r < PHILOX_ROUNDS; r++) {
        /* Kept as a loop for the vectoriser (fully unrolled, it is not
         * vectorised); high and low halves computed apart for the same
         * reason. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC unroll 1
#endif
        for (int l = 0; l < CPU_RNG_LANES; l++) {
            uint32_t a = x0[l], c = x2[l], y1 = x1[l], y3 = x3[l];
            uint32_t hi0 = (uint32_t)(((uint64_t)a * PHILOX_M0) >> 32);
            uint32_t hi1 = (uint32_t)(((uint64_t)c * PHILOX_M1) >> 32);
            x0[l] = hi1 ^ y1 ^ k0;
            x1[l] = c * PHILOX_M1;
            x2[l] = hi0 ^ y3 ^ k1;
            x3[l] = a * PHILOX_M0;
        }
        k0 += PHILOX_W0;
        k1 += PHILOX_W1;
    }
    for (int l = 0; l < n; l++) {
        out[0][l] = x0[l];
        out[1][l] = x1[l];
        out[2][l] = x2[l];
        out[3][l] = x3[l];
    }
}

/* Philox is integer arithmetic only, so any vector width gives the same
 * bits: where the machine has AVX-512, one 16-lane vector runs a round of
 * all CPU_RNG_LANES counters (the draws are most of dropout's cost). */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && \
    defined(__linux__) && !defined(__SANITIZE_THREAD__) && \
    !defined(__SANITIZE_ADDRESS__)
#define RNG_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define RNG_CLONES CPU_CLONES
#endif

RNG_CLONES void cpu_uniform_blocks(uint64_t seed, uint64_t first, int n,
                                   float *u)
{
    uint32_t w[4][CPU_RNG_LANES];
    assert(n >= 1 && n <= CPU_RNG_LANES);
    if (n == CPU_RNG_LANES) { /* the usual case: constant trip counts */
        philox_lanes(seed, first, CPU_RNG_LANES, w);
        for (int l = 0; l < CPU_RNG_LANES; l++)
            for (int k = 0; k < 4; k++)
                u[4 * l + k] = unit_float(w[k][l]);
        return;
    }
    philox_lanes(seed, first, n, w);
    for (int l = 0; l < n; l++)
        for (int k = 0; k < 4; k++)
            u[4 * l + k] = unit_float(w[k][l]);
}

/* The four normal outputs of one block. */
static void normal_block(const xg_rng_args *p, uint64_t block, float v[4])
{
    const uint32_t key[2] = {(uint32_t)p->seed, (uint32_t)(p->seed >> 32)};
    const uint32_t ctr[4] = {(uint32_t)block, (uint32_t)(block >> 32), 0, 0};
    uint32_t w[4];
    cpu_philox4x32_10(key, ctr, w);
    /* Box-Muller on the pairs (w0, w1) and (w2, w3); u1 in (0, 1].
     * reference: Box & Muller, Ann. Math. Statist. 29(2), 1958. */
    const float two_pi = 6.283185307179586f;
    for (int k = 0; k < 4; k += 2) {
        float u1 = (float)((w[k] >> 8) + 1) * 0x1p-24f;
        float u2 = unit_float(w[k + 1]);
        float r = sqrtf(-2.0f * logf(u1));
        v[k] = p->a + p->b * r * cosf(two_pi * u2);
        v[k + 1] = p->a + p->b * r * sinf(two_pi * u2);
    }
}

/* Uniform elements [begin, end), CPU_RNG_LANES blocks at a time. */
static void uniform_range(const xg_rng_args *p, float *out, int64_t begin,
                          int64_t end)
{
    for (int64_t i = begin; i < end; i += 4 * CPU_RNG_LANES) {
        int64_t n = end - i < 4 * CPU_RNG_LANES ? end - i : 4 * CPU_RNG_LANES;
        float u[4 * CPU_RNG_LANES];
        cpu_uniform_blocks(p->seed, p->offset + (uint64_t)i / 4,
                           (int)((n + 3) / 4), u);
        for (int64_t k = 0; k < n; k++)
            out[i + k] = p->a + (p->b - p->a) * u[k];
    }
}

/* Elements [begin, end); begin is a multiple of 4 (cpu_parallel_elements). */
static void rng_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_rng_args *p = &c->p.rng;
    float *out = cpu_f32(c->out[0].buf);
    assert(begin % 4 == 0);
    if (c->op == XG_OP_rand_uniform) {
        uniform_range(p, out, begin, end);
        return;
    }
    for (int64_t i = begin; i < end; i += 4) {
        float v[4];
        normal_block(p, p->offset + (uint64_t)i / 4, v);
        for (int64_t k = 0; k < 4 && i + k < end; k++)
            out[i + k] = v[k];
    }
}

/* rand_uniform and rand_normal. */
xg_status cpu_rand(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.rng.n,
                          call->op == XG_OP_rand_normal ? CPU_COST_LIBM
                                                        : 4 * CPU_COST_SIMPLE,
                          rng_range, call);
    return XG_OK;
}
