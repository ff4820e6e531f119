/* Batched GEMM for CPU drivers such as lavapipe (see gemm_common.glsl for
 * the arguments); the backend uses it only where compute runs in full
 * subgroups of exactly LANES invocations.
 *
 * CPU drivers run a subgroup as one SIMD register and turn every load with
 * per-invocation addresses, shared memory included, into a loop over the
 * lanes, while a subgroupBroadcast is a register shuffle. So this kernel
 * keeps loads per multiply-add low instead of staging in shared memory: a
 * workgroup is one subgroup and computes a TILE_M x TILE_N tile of C. For
 * each k, lane l loads op(A) rows m0 + l + LANES * i (i < ROW_BLOCKS) and
 * op(B) columns n0 + l + LANES * j (j < COL_BLOCKS); broadcasts hand every
 * lane all TILE_M values of A, and lane l accumulates C[m0 .. m0 + TILE_M,
 * its COL_BLOCKS columns]. Each loaded A value feeds LANES * COL_BLOCKS
 * multiply-adds, each B value TILE_M. */
#version 450
#extension GL_GOOGLE_include_directive : require
#extension GL_KHR_shader_subgroup_ballot : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "gemm_common.glsl"

#define LANES XG_GEMM_SG_LANES
#define ROW_BLOCKS XG_GEMM_SG_ROW_BLOCKS
#define COL_BLOCKS XG_GEMM_SG_COL_BLOCKS
#define TILE_M (LANES * ROW_BLOCKS)
#define TILE_N (LANES * COL_BLOCKS)

layout(local_size_x = LANES) in;

/* acc[r][j] += op(A)[m0 + i * LANES + r, k] * b[j], with a = lane r's
 * value of row block i. */
#define XG_ROW_STEP(r)                                                       \
    {                                                                        \
        float ar = subgroupBroadcast(a, r);                                  \
        for (uint j = 0; j < COL_BLOCKS; j++)                                \
            acc[i * LANES + r][j] = fma(ar, bv[j], acc[i * LANES + r][j]);   \
    }

void tile(Tile t)
{
    uint lane = gl_SubgroupInvocationID;
    float acc[TILE_M][COL_BLOCKS];
    for (uint r = 0; r < TILE_M; r++)
        for (uint j = 0; j < COL_BLOCKS; j++)
            acc[r][j] = 0.0f;

    for (uint kk = t.k_begin; kk < t.k_end; kk++) {
        /* All loads of a step come before its multiply-adds: with the loads
         * inside the row-block loop, lavapipe runs this kernel 5x slower. */
        float av[ROW_BLOCKS], bv[COL_BLOCKS];
        for (uint i = 0; i < ROW_BLOCKS; i++)
            av[i] = load_a(t.base_a, t.m0 + lane + i * LANES, kk);
        for (uint j = 0; j < COL_BLOCKS; j++)
            bv[j] = load_b(t.base_b, kk, t.n0 + lane + j * LANES);
        for (uint i = 0; i < ROW_BLOCKS; i++) {
            float a = av[i];
            XG_ROW_STEP(0) XG_ROW_STEP(1) XG_ROW_STEP(2) XG_ROW_STEP(3)
            XG_ROW_STEP(4) XG_ROW_STEP(5) XG_ROW_STEP(6) XG_ROW_STEP(7)
        }
    }
    for (uint r = 0; r < TILE_M; r++)
        for (uint j = 0; j < COL_BLOCKS; j++)
            store_c(t.base_c, t.m0 + r, t.n0 + lane + j * LANES, acc[r][j]);
}

#if LANES != 8
#error "gemm_subgroup.comp: XG_ROW_STEP is unrolled for 8 lanes"
#endif

void main()
{
    XG_GEMM_FOR_EACH_TILE(TILE_M, TILE_N);
}
