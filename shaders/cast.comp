/* The CAST family (struct xg_cast_args): out[i] = in[i] converted between
 * f32, i32, bf16 and f16, on the bits (half.glsl), as the CPU converts:
 * i32 and the 16-bit types go through f32; float -> i32 truncates, NaN and
 * out of range give INT32_MIN; the same dtype is a bit copy. The pair is
 * chosen at build time: -DFROM_<T> -DTO_<T> (T one of F32, I32, BF16,
 * F16; the op's own variant `cast`, with neither, is f32 -> bf16).
 *
 * 16-bit buffers are read and written as 32-bit words unless
 * -DXG_16BIT_STORAGE (the device's storageBuffer16BitAccess): then each
 * invocation handles one element, else one word, i.e. the elements 2p and
 * 2p + 1. A word of a 16-bit output is written whole but for the odd last
 * element, whose half the invocation sets with atomicAnd and atomicOr: the
 * other half is not the tensor's, and no kernel writes bytes it does not
 * own. The unused half of the last input word is never used. */
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
} pc;

#if !defined(FROM_F32) && !defined(FROM_I32) && !defined(FROM_BF16) &&       \
    !defined(FROM_F16)
#define FROM_F32
#define TO_BF16
#endif

#if defined(FROM_BF16) || defined(FROM_F16)
#define XG_IN16
#endif
#if defined(TO_BF16) || defined(TO_F16)
#define XG_OUT16
#endif

#if (defined(FROM_F32) && defined(TO_F32)) ||                                \
    (defined(FROM_I32) && defined(TO_I32)) ||                                \
    (defined(FROM_BF16) && defined(TO_BF16)) ||                              \
    (defined(FROM_F16) && defined(TO_F16))
#define XG_SAME
#endif

#if defined(XG_IN16) && defined(XG_16BIT_STORAGE)
XG_IN(0, uint16_t, x);
#else
XG_IN(0, uint, x);
#endif
#if defined(XG_OUT16) && defined(XG_16BIT_STORAGE)
XG_OUT(0, uint16_t, y);
#elif defined(XG_OUT16)
XG_INOUT(0, uint, y); /* read by the atomics of an odd last element */
#else
XG_OUT(0, uint, y);
#endif

/* One element from its bits (16-bit types: in the low half) to f32 bits. */
uint to_f32(uint v)
{
#if defined(XG_SAME)
    return v;
#elif defined(FROM_BF16)
    return xg_bf16_to_f32_bits(v);
#elif defined(FROM_F16)
    return xg_f16_to_f32_bits(v);
#elif defined(FROM_I32)
    return floatBitsToUint(float(int(v))); /* round to nearest even */
#else
    return v;
#endif
}

/* f32 bits to the output's bits. */
uint from_f32(uint v)
{
#if defined(XG_SAME)
    return v;
#elif defined(TO_BF16)
    return xg_f32_to_bf16_bits(v);
#elif defined(TO_F16)
    return xg_f32_to_f16_bits(v);
#elif defined(TO_I32)
    /* toward zero; NaN and out of range give INT32_MIN */
    float f = uintBitsToFloat(v);
    return f >= -2147483648.0f && f < 2147483648.0f ? uint(int(f))
                                                    : 0x80000000u;
#else
    return v;
#endif
}

uint convert(uint v)
{
    return from_f32(to_f32(v));
}

void main()
{
#if defined(XG_16BIT_STORAGE) || (!defined(XG_IN16) && !defined(XG_OUT16))
    /* one element per invocation */
    XG_FOR_EACH(i, pc.n) {
#if defined(XG_OUT16)
        y[i] = uint16_t(convert(uint(x[i])));
#else
        y[i] = convert(uint(x[i]));
#endif
    }
#else
    /* one pair of elements (2p, 2p + 1) per invocation */
    uint pairs = pc.n / 2u + pc.n % 2u;
    XG_FOR_EACH(p, pairs) {
        bool has_hi = 2u * p + 1u < pc.n;
#if defined(XG_IN16)
        uint word = x[p];
        uint lo = convert(word & 0xffffu);
        uint hi = has_hi ? convert(word >> 16) : 0u;
#else
        uint lo = convert(x[2u * p]);
        uint hi = has_hi ? convert(x[2u * p + 1u]) : 0u;
#endif
#if defined(XG_OUT16)
        if (has_hi) {
            y[p] = lo | (hi << 16);
        } else {
            atomicAnd(y[p], 0xffff0000u);
            atomicOr(y[p], lo);
        }
#else
        y[2u * p] = lo;
        if (has_hi)
            y[2u * p + 1u] = hi;
#endif
    }
#endif
}
