/* Host conversions between f32 and the 16-bit float formats (bf16, f16).
 * The scalar rules are in half_impl.h; every path gives their bits. */
#include "half_impl.h"
#include "xgrad.h"

void xg_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f32_to_bf16_1(src[i]);
}

void xg_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__bf16_to_f32_1(src[i]);
}

void xg_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f32_to_f16_1(src[i]);
}

void xg_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f16_to_f32_1(src[i]);
}
