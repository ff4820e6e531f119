/* Host conversions between f32 and the 16-bit float formats (bf16, f16).
 *
 * The scalar rules are in half_impl.h. On x86-64 the loops use the
 * conversion instructions when the CPU has them, chosen at run time: F16C
 * (vcvtps2ph with round to nearest even, vcvtph2ps) for f16, AVX-512 BF16
 * (vcvtneps2bf16) for f32 -> bf16. Every path gives the scalar rules' bits:
 * the instructions round to nearest even and make NaNs quiet keeping sign
 * and top payload bits, as the rules do; vcvtneps2bf16 flushes subnormal
 * inputs to zero, so a block of 16 holding one is converted by the scalar
 * rule instead. tests/half_torch.py checks the bits against PyTorch and
 * tests/test_half.c each path against the scalar rules. */
#include "half_impl.h"
#include "xgrad.h"

#if defined(__GNUC__) && defined(__x86_64__)
#define XG_HALF_X86 1
#include <cpuid.h>
#include <immintrin.h>
#endif

static void f32_to_bf16_scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f32_to_bf16_1(src[i]);
}

static void f32_to_f16_scalar(const float *src, uint16_t *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f32_to_f16_1(src[i]);
}

static void f16_to_f32_scalar(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++)
        dst[i] = xg__f16_to_f32_1(src[i]);
}

#ifdef XG_HALF_X86
__attribute__((target("avx,f16c"))) static void
f32_to_f16_f16c(const float *src, uint16_t *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 x = _mm256_loadu_ps(src + i);
        __m128i h = _mm256_cvtps_ph(x, _MM_FROUND_TO_NEAREST_INT |
                                           _MM_FROUND_NO_EXC);
        _mm_storeu_si128((__m128i *)(void *)(dst + i), h);
    }
    f32_to_f16_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx,f16c"))) static void
f16_to_f32_f16c(const uint16_t *src, float *dst, size_t n)
{
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(const void *)(src + i));
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(h));
    }
    f16_to_f32_scalar(src + i, dst + i, n - i);
}

__attribute__((target("avx512f,avx512bf16,avx512vl"))) static void
f32_to_bf16_avx512(const float *src, uint16_t *dst, size_t n)
{
    const __m512i exp_mask = _mm512_set1_epi32(0x7f800000);
    const __m512i abs_mask = _mm512_set1_epi32(0x7fffffff);
    size_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 x = _mm512_loadu_ps(src + i);
        __m512i u = _mm512_castps_si512(x);
        /* subnormal: exponent 0, not zero */
        __mmask16 sub = _mm512_mask_cmpeq_epi32_mask(
            _mm512_test_epi32_mask(u, abs_mask),
            _mm512_and_si512(u, exp_mask), _mm512_setzero_si512());
        if (sub) {
            f32_to_bf16_scalar(src + i, dst + i, 16);
            continue;
        }
        __m256bh h = _mm512_cvtneps_pbh(x);
        _mm256_storeu_si256((__m256i *)(void *)(dst + i), (__m256i)h);
    }
    f32_to_bf16_scalar(src + i, dst + i, n - i);
}
#endif

/* What this CPU has: resolved once (a race only repeats the same answer). */
enum { HAVE_F16C = 1, HAVE_BF16 = 2, PROBED = 4 };
static int cpu_features(void)
{
    static int features;
    int f = __atomic_load_n(&features, __ATOMIC_RELAXED);
    if (f)
        return f;
    f = PROBED;
#ifdef XG_HALF_X86
    __builtin_cpu_init();
    /* F16C from CPUID leaf 1: not every compiler's __builtin_cpu_supports
     * knows its name (clang 14 does not) */
    unsigned a, b, c, d;
    if (__builtin_cpu_supports("avx") && __get_cpuid(1, &a, &b, &c, &d) &&
        (c & bit_F16C))
        f |= HAVE_F16C;
    if (__builtin_cpu_supports("avx512bf16") &&
        __builtin_cpu_supports("avx512vl") &&
        __builtin_cpu_supports("avx512f"))
        f |= HAVE_BF16;
#endif
    __atomic_store_n(&features, f, __ATOMIC_RELAXED);
    return f;
}

void xg__half_features(bool *f16c, bool *avx512_bf16)
{
    int f = cpu_features();
    *f16c = (f & HAVE_F16C) != 0;
    *avx512_bf16 = (f & HAVE_BF16) != 0;
}

void xg_f32_to_bf16(const float *src, uint16_t *dst, size_t n)
{
#ifdef XG_HALF_X86
    if (cpu_features() & HAVE_BF16)
        return f32_to_bf16_avx512(src, dst, n);
#endif
    f32_to_bf16_scalar(src, dst, n);
}

void xg_bf16_to_f32(const uint16_t *src, float *dst, size_t n)
{
    for (size_t i = 0; i < n; i++) /* a shift: vectorises as it is */
        dst[i] = xg__bf16_to_f32_1(src[i]);
}

void xg_f32_to_f16(const float *src, uint16_t *dst, size_t n)
{
#ifdef XG_HALF_X86
    if (cpu_features() & HAVE_F16C)
        return f32_to_f16_f16c(src, dst, n);
#endif
    f32_to_f16_scalar(src, dst, n);
}

void xg_f16_to_f32(const uint16_t *src, float *dst, size_t n)
{
#ifdef XG_HALF_X86
    if (cpu_features() & HAVE_F16C)
        return f16_to_f32_f16c(src, dst, n);
#endif
    f16_to_f32_scalar(src, dst, n);
}
