/* Conversions between f32 and the 16-bit float types on the bits, with
 * integer operations only: drivers may flush subnormals in float arithmetic
 * and in their own conversions (lavapipe may), and every backend must give
 * the CPU's bits (api/core/half.c): round to nearest even, a NaN stays a
 * quiet NaN with its sign, f16 overflow gives +-Inf, subnormals exact.
 * The same functions as backends/opencl/kernels/half.cl. */
#ifndef XG_HALF_GLSL
#define XG_HALF_GLSL

/* f32 bits -> bf16 bits (in the low 16 bits). */
uint xg_f32_to_bf16_bits(uint u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, sign kept */
        return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* f32 bits -> f16 bits. */
uint xg_f32_to_f16_bits(uint u)
{
    uint sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, sign and the top payload bits kept */
        return sign | 0x7e00u | ((a >> 13) & 0x3ffu);
    if (a >= 0x477ff000u) /* 65520 and up (and Inf) round to Inf */
        return sign | 0x7c00u;
    if (a >= 0x38800000u) { /* normal in f16: rebias, round to nearest even */
        a -= 0x38000000u;
        return sign | ((a + 0xfffu + ((a >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) /* up to 2^-25 (the tie goes to even, 0) */
        return sign;
    /* subnormal in f16: the 24-bit significand times 2^(e - 150), counted
     * in units of 2^-24 */
    uint e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint shift = 126u - e; /* 14 .. 24 */
    uint r = m >> shift, rest = m & ((1u << shift) - 1u);
    uint half_ulp = 1u << (shift - 1u);
    if (rest > half_ulp || (rest == half_ulp && (r & 1u) != 0u))
        r++; /* may carry into the smallest normal, correctly */
    return sign | r;
}

/* f16 bits -> f32 bits (exact). */
uint xg_f16_to_f32_bits(uint h)
{
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) /* Inf, or NaN made quiet */
        return sign | 0x7f800000u | (m << 13) | (m != 0u ? 0x400000u : 0u);
    if (e != 0u)
        return sign | ((e + 112u) << 23) | (m << 13);
    if (m == 0u)
        return sign;
    /* subnormal: normalize (findMSB: no loop) */
    int top = findMSB(m); /* 0 .. 9 */
    uint k = uint(10 - top);
    return sign | ((113u - k) << 23) | (((m << k) & 0x3ffu) << 13);
}

uint xg_bf16_to_f32_bits(uint h)
{
    return h << 16;
}

/* Element access of the elementwise shaders' 16-bit forms (unary.comp,
 * binary.comp: -DXG_EW_BF16 or -DXG_EW_F16 with -DXG_16BIT_STORAGE):
 * XG_EW_T the stored element, XG_EW_LD(v) the element v widened exactly
 * to a float, XG_EW_ST(f) the float f rounded once to nearest even, as the
 * cast rounds. Without either, f32 elements as they are. */
#if defined(XG_EW_BF16)
#define XG_EW_T uint16_t
#define XG_EW_LD(v) uintBitsToFloat(xg_bf16_to_f32_bits(uint(v)))
#define XG_EW_ST(f) uint16_t(xg_f32_to_bf16_bits(floatBitsToUint(f)))
#elif defined(XG_EW_F16)
#define XG_EW_T uint16_t
#define XG_EW_LD(v) uintBitsToFloat(xg_f16_to_f32_bits(uint(v)))
#define XG_EW_ST(f) uint16_t(xg_f32_to_f16_bits(floatBitsToUint(f)))
#else
#define XG_EW_T float
#define XG_EW_LD(v) (v)
#define XG_EW_ST(f) (f)
#endif

#endif
