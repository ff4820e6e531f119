/* Batched GEMM for GPUs: shared-memory tiles with register blocking (see
 * gemm_common.glsl for the arguments).
 *
 * A workgroup computes a TILE_M x TILE_N tile of C. Per step over K it
 * stages a TILE_M x TILE_K slice of op(A) and a TILE_K x TILE_N slice of
 * op(B) in shared memory (zero-padded at the edges), then every invocation
 * accumulates its REG_M x REG_N block of C in registers. Rows and columns of
 * an invocation's block are spaced WG_Y / WG_X apart so that neighbouring
 * invocations read neighbouring shared-memory words. */
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "gemm_common.glsl"

#define TILE_M XG_GEMM_TILE_M
#define TILE_N XG_GEMM_TILE_N
#define TILE_K XG_GEMM_TILE_K
#define WG_X XG_GEMM_WG_X
#define WG_Y XG_GEMM_WG_Y
#define WG_SIZE (WG_X * WG_Y)
#define REG_M (TILE_M / WG_Y)
#define REG_N (TILE_N / WG_X)

layout(local_size_x = WG_X, local_size_y = WG_Y) in;

shared float s_a[TILE_K][TILE_M];
shared float s_b[TILE_K][TILE_N];

/* Stages the K-slice starting at k0 of the tile at (m0, n0). Consecutive
 * invocations read consecutive addresses of the stored layout. */
void stage(uint base_a, uint base_b, uint m0, uint n0, uint k0, uint id)
{
    for (uint e = id; e < TILE_M * TILE_K; e += WG_SIZE) {
#ifdef TRANS_A
        uint mm = e % TILE_M, kk = e / TILE_M;
#else
        uint kk = e % TILE_K, mm = e / TILE_K;
#endif
        s_a[kk][mm] = load_a(base_a, m0 + mm, k0 + kk);
    }
    for (uint e = id; e < TILE_K * TILE_N; e += WG_SIZE) {
#ifdef TRANS_B
        uint kk = e % TILE_K, nn = e / TILE_K;
#else
        uint nn = e % TILE_N, kk = e / TILE_N;
#endif
        s_b[kk][nn] = load_b(base_b, k0 + kk, n0 + nn);
    }
}

void tile(Tile t)
{
    uint tx = gl_LocalInvocationID.x, ty = gl_LocalInvocationID.y;
    float acc[REG_M][REG_N];
    for (uint i = 0; i < REG_M; i++)
        for (uint j = 0; j < REG_N; j++)
            acc[i][j] = 0.0f;

    for (uint k0 = t.k_begin; k0 < t.k_end; k0 += TILE_K) {
        stage(t.base_a, t.base_b, t.m0, t.n0, k0, ty * WG_X + tx);
        barrier();
        for (uint kk = 0; kk < TILE_K; kk++) {
            float a[REG_M], bv[REG_N];
            for (uint i = 0; i < REG_M; i++)
                a[i] = s_a[kk][ty + i * WG_Y];
            for (uint j = 0; j < REG_N; j++)
                bv[j] = s_b[kk][tx + j * WG_X];
            for (uint i = 0; i < REG_M; i++)
                for (uint j = 0; j < REG_N; j++)
                    acc[i][j] = fma(a[i], bv[j], acc[i][j]);
        }
        barrier(); /* the next stage overwrites s_a, s_b */
    }
    for (uint i = 0; i < REG_M; i++)
        for (uint j = 0; j < REG_N; j++)
            store_c(t.base_c, t.m0 + ty + i * WG_Y, t.n0 + tx + j * WG_X,
                    acc[i][j]);
}

void main()
{
    XG_GEMM_FOR_EACH_TILE(TILE_M, TILE_N);
}
