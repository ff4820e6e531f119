/* One-value conversions between f32 and the 16-bit float formats (bf16,
 * f16), for loops in the core and the CPU backend. Not installed.
 *
 * These are the portable reference: round to nearest, ties to even; a NaN
 * becomes a quiet NaN with its sign and the top bits of its payload (what
 * the x86 conversion instructions give, so that the vector paths of
 * api/core/half.c produce the same bits); f16 overflow gives +-Inf, f16
 * subnormals are produced and read exactly; bf16 keeps f32's subnormals.
 * Widening is exact: bf16 -> f32 is a shift, f16 -> f32 quiets a
 * signalling NaN (as the hardware does). */
#ifndef XGRAD_HALF_IMPL_H
#define XGRAD_HALF_IMPL_H

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

/* Whether the host conversions (api/core/half.c) use the CPU's F16C and
 * AVX-512 BF16 instructions (false where the CPU lacks them or the build
 * is not for x86-64). */
void xg__half_features(bool *f16c, bool *avx512_bf16);

static inline uint32_t xg__f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, sizeof u);
    return u;
}

static inline float xg__f32_from_bits(uint32_t u)
{
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t xg__f32_to_bf16_1(float f)
{
    uint32_t u = xg__f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep sign, make quiet */
        return (uint16_t)((u >> 16) | 0x0040u);
    u += 0x7fffu + ((u >> 16) & 1u); /* ties to even; carries into the
                                        exponent (to Inf at the top) */
    return (uint16_t)(u >> 16);
}

static inline float xg__bf16_to_f32_1(uint16_t h)
{
    return xg__f32_from_bits((uint32_t)h << 16);
}

static inline uint16_t xg__f32_to_f16_1(float f)
{
    uint32_t u = xg__f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000u);
    uint32_t a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, top 9 payload bits kept */
        return (uint16_t)(sign | 0x7e00u | ((a >> 13) & 0x3ffu));
    if (a >= 0x477ff000u) /* >= 65520 (half-way above 65504, odd): Inf */
        return (uint16_t)(sign | 0x7c00u);
    if (a >= 0x38800000u) { /* normal f16: rebias, round 13 bits away */
        uint32_t r = a - 0x38000000u;
        r = (r + 0xfffu + ((r >> 13) & 1u)) >> 13;
        return (uint16_t)(sign | r);
    }
    if (a <= 0x33000000u) /* <= 2^-25: rounds to zero (2^-25 is a tie) */
        return sign;
    /* Subnormal f16: the value in units of 2^-24, rounded. */
    uint32_t e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint32_t shift = 126u - e; /* 14 .. 24 */
    uint32_t r = m >> shift, rem = m & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (r & 1u)))
        r++;
    return (uint16_t)(sign | r);
}

static inline float xg__f16_to_f32_1(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) /* Inf, or NaN made quiet */
        return xg__f32_from_bits(sign | 0x7f800000u | (m << 13) |
                                 (m ? 0x400000u : 0u));
    if (e == 0) { /* zero or subnormal: m * 2^-24, exact */
        float v = (float)m * 0x1p-24f;
        return xg__f32_from_bits(sign | xg__f32_bits(v));
    }
    return xg__f32_from_bits(sign | ((e + 112u) << 23) | (m << 13));
}

#endif
