/* Shared by the GEMM kernels (struct xg_gemm_args):
 *   C_b = alpha * op(A_b) op(B_b),  b in [0, batch)
 * -DTRANS_A / -DTRANS_B select the stored layouts, so each kernel serves the
 * forward product and both gradients. A stride of 0 broadcasts one matrix
 * over the batch.
 *
 * Split K: with splits > 1 the backend cuts K into chunks of k_chunk and
 * makes C_{b,s} = alpha * (the part of the product over chunk s) at
 * (b * splits + s) * stride_c of a temporary, which it then sums over s.
 *
 * 16-bit operands: -DXG_GEMM_BF16 or -DXG_GEMM_F16 make A, B and C of that
 * type. Elements are widened to f32 exactly as they are loaded (on the
 * bits, half.glsl), the kernels accumulate in f32 as they do for f32, and
 * store_c rounds each result once, to nearest even (the cast kernel's
 * rounding): the same bits as the f32 kernel on the inputs cast to f32,
 * its output cast back. With -DXG_GEMM_PARTIAL C stays f32 (split K's
 * partial products; the backend sums and then rounds them). Buffers of
 * 16-bit elements are 32-bit words of two elements unless
 * -DXG_16BIT_STORAGE (storageBuffer16BitAccess; the kernel enables
 * GL_EXT_shader_16bit_storage before including this file); in words an
 * element of C is stored with atomicAnd and atomicOr on its half, since
 * the other half belongs to another invocation (or to no part of C). */
#ifndef XG_GEMM_COMMON_GLSL
#define XG_GEMM_COMMON_GLSL

#include "common.glsl"
#include "half.glsl"

#if defined(XG_GEMM_BF16) || defined(XG_GEMM_F16)
#define XG_GEMM_16
#endif

layout(push_constant) uniform Push {
    uint batch, m, n, k;
    uint stride_a, stride_b, stride_c;
    float alpha;
    uint splits, k_chunk;
#ifdef XG_GEMM_OFFSETS
    /* Elements before matrix 0 of A, B and C (conv2d's views into NCHW
     * tensors and column buffers; vulkan_conv.c). */
    uint offset_a, offset_b, offset_c;
#endif
} pc;

#ifdef XG_GEMM_OFFSETS
#define XG_GEMM_OFFSET(x) pc.offset_##x
#else
#define XG_GEMM_OFFSET(x) 0u
#endif

#if defined(XG_GEMM_16) && defined(XG_16BIT_STORAGE)
XG_IN(0, uint16_t, A);
XG_IN(1, uint16_t, B);
#elif defined(XG_GEMM_16)
XG_IN(0, uint, A);
XG_IN(1, uint, B);
#else
XG_IN(0, float, A);
XG_IN(1, float, B);
#endif
#if !defined(XG_GEMM_16) || defined(XG_GEMM_PARTIAL)
XG_OUT(0, float, C);
#elif defined(XG_16BIT_STORAGE)
XG_OUT(0, uint16_t, C);
#else
XG_INOUT(0, uint, C); /* read by the atomics */
#endif

#ifdef XG_GEMM_16
/* The f32 value of a 16-bit element's bits (low half), exactly. f16 in
 * integer operations and selects, no branch (faster in the inner loops on
 * lavapipe than half.glsl's conversion): normal numbers rebiased, Inf and
 * NaN (made quiet) moved to the f32 exponent, and a subnormal's m * 2^-24
 * as 2^-14 (1 + m / 1024) - 2^-14, a subtraction of two normal f32 values
 * that is exact and whose result is normal (a driver that flushes
 * subnormals cannot touch it). The same values as xg_f16_to_f32_bits. */
float xg_gemm_widen(uint h)
{
#ifdef XG_GEMM_BF16
    return uintBitsToFloat(xg_bf16_to_f32_bits(h));
#else
    uint a = (h & 0x7fffu) << 13, e = h & 0x7c00u;
    uint normal = a + 0x38000000u;
    uint special = a | 0x7f800000u | ((a & 0x7fe000u) != 0u ? 0x400000u : 0u);
    uint sub = floatBitsToUint(uintBitsToFloat(a | 0x38800000u) -
                               uintBitsToFloat(0x38800000u));
    uint bits = e == 0x7c00u ? special : e != 0u ? normal : sub;
    return uintBitsToFloat(bits | ((h & 0x8000u) << 16));
#endif
}
#ifdef XG_16BIT_STORAGE
#define XG_GEMM_ELEM(buf, i) uint(buf[i])
#else
#define XG_GEMM_ELEM(buf, i) ((buf[(i) / 2u] >> (16u * ((i) % 2u))) & 0xffffu)
#endif
float elem_a(uint i)
{
    return xg_gemm_widen(XG_GEMM_ELEM(A, i));
}
float elem_b(uint i)
{
    return xg_gemm_widen(XG_GEMM_ELEM(B, i));
}
#else
#define elem_a(i) A[i]
#define elem_b(i) B[i]
#endif

/* C[i] = v, rounded once to C's type. */
void store_elem(uint i, float v)
{
#if !defined(XG_GEMM_16) || defined(XG_GEMM_PARTIAL)
    C[i] = v;
#else
#ifdef XG_GEMM_BF16
    uint h = xg_f32_to_bf16_bits(floatBitsToUint(v));
#else
    uint h = xg_f32_to_f16_bits(floatBitsToUint(v));
#endif
#ifdef XG_16BIT_STORAGE
    C[i] = uint16_t(h);
#else
    uint shift = 16u * (i % 2u);
    atomicAnd(C[i / 2u], ~(0xffffu << shift));
    atomicOr(C[i / 2u], h << shift);
#endif
#endif
}

/* op(A)[row, kk] of the matrix at `base`, 0 outside. */
float load_a(uint base, uint row, uint kk)
{
    if (row >= pc.m || kk >= pc.k)
        return 0.0f;
    base += XG_GEMM_OFFSET(a);
#ifdef TRANS_A
    return elem_a(base + kk * pc.m + row); /* stored [K, M] */
#else
    return elem_a(base + row * pc.k + kk); /* stored [M, K] */
#endif
}

/* op(B)[kk, col] of the matrix at `base`, 0 outside. */
float load_b(uint base, uint kk, uint col)
{
    if (kk >= pc.k || col >= pc.n)
        return 0.0f;
    base += XG_GEMM_OFFSET(b);
#ifdef TRANS_B
    return elem_b(base + col * pc.k + kk); /* stored [N, K] */
#else
    return elem_b(base + kk * pc.n + col); /* stored [K, N] */
#endif
}

void store_c(uint base, uint row, uint col, float v)
{
    if (row < pc.m && col < pc.n)
        store_elem(XG_GEMM_OFFSET(c) + base + row * pc.n + col, pc.alpha * v);
}

/* One unit of work: the tile of C_z (z = b * splits + s) at (m0, n0), over
 * k in [k_begin, k_end). */
struct Tile {
    uint base_a, base_b, base_c;
    uint k_begin, k_end;
    uint m0, n0;
};

#if XG_GEMM_K_CHUNK % XG_GEMM_TILE_K != 0
#error "a K chunk must be whole K tiles of gemm.comp"
#endif

/* Calls tile() for every tile_m x tile_n tile that falls to this
 * workgroup: the grid is (n tiles, m tiles, batch * splits), each axis
 * capped at XG_MAX_GROUPS. */
#define XG_GEMM_FOR_EACH_TILE(tile_m, tile_n)                                \
    uint tiles_m = (pc.m + (tile_m) - 1) / (tile_m);                          \
    uint tiles_n = (pc.n + (tile_n) - 1) / (tile_n);                          \
    for (uint z = gl_WorkGroupID.z; z < pc.batch * pc.splits;                 \
         z += gl_NumWorkGroups.z) {                                           \
        uint b = z / pc.splits, k0 = (z % pc.splits) * pc.k_chunk;            \
        Tile t = Tile(b * pc.stride_a, b * pc.stride_b, z * pc.stride_c, k0,  \
                      min(pc.k, k0 + pc.k_chunk), 0, 0);                      \
        for (uint tm = gl_WorkGroupID.y; tm < tiles_m;                        \
             tm += gl_NumWorkGroups.y)                                        \
            for (uint tn = gl_WorkGroupID.x; tn < tiles_n;                    \
                 tn += gl_NumWorkGroups.x) {                                  \
                t.m0 = tm * (tile_m);                                         \
                t.n0 = tn * (tile_n);                                         \
                tile(t);                                                      \
            }                                                                 \
    }

#endif
