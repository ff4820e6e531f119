/* The host conversions between f32 and bf16 / f16 (api/core/half.c): the
 * paths this CPU takes (F16C, AVX-512 BF16 where present) give the bits of
 * the portable scalar rules (api/core/half_impl.h) over every 16-bit
 * pattern and 2^24 f32 patterns (16 per step of 2^12 through the whole
 * range), at every alignment and tail length. PyTorch checks the rules'
 * bits themselves (tests/half_torch.py). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>

#include "half_impl.h"
#include "xgrad.h"

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint32_t rnd32(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return (uint32_t)(z ^ (z >> 31));
}

Test(half, features_reported)
{
    bool f16c, bf16;
    xg__half_features(&f16c, &bf16);
    cr_log_info("F16C %s, AVX-512 BF16 %s", f16c ? "yes" : "no",
                bf16 ? "yes" : "no");
}

Test(half, widening_every_pattern)
{
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof *h);
    float *a = malloc(N * sizeof *a), *b = malloc(N * sizeof *b);
    cr_assert(h && a && b);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    xg_f16_to_f32(h, a, N);
    xg_bf16_to_f32(h, b, N);
    for (int i = 0; i < N; i++) {
        cr_assert_eq(xg__f32_bits(a[i]), xg__f32_bits(xg__f16_to_f32_1(h[i])),
                     "f16 0x%04x", i);
        cr_assert_eq(xg__f32_bits(b[i]),
                     xg__f32_bits(xg__bf16_to_f32_1(h[i])), "bf16 0x%04x", i);
    }
    free(h);
    free(a);
    free(b);
}

Test(half, narrowing_matches_the_scalar_rules)
{
    enum { STEPS = 1 << 20, PER = 16, N = STEPS * PER };
    uint32_t *u = malloc((size_t)N * sizeof *u);
    uint16_t *h = malloc((size_t)N * sizeof *h);
    uint16_t *g = malloc((size_t)N * sizeof *g);
    cr_assert(u && h && g);
    for (uint32_t s = 0; s < STEPS; s++)
        for (int k = 0; k < PER; k++)
            /* the step's first pattern, its last, and random ones */
            u[s * PER + k] = (s << 12) | (k == 0 ? 0u : k == 1 ? 0xfffu
                                                   : rnd32() & 0xfffu);
    const float *f = (const float *)(const void *)u;
    xg_f32_to_f16(f, h, N);
    xg_f32_to_bf16(f, g, N);
    for (int i = 0; i < N; i++) {
        if (h[i] != xg__f32_to_f16_1(f[i]))
            cr_assert_fail("f16 of 0x%08x: 0x%04x, rule 0x%04x", u[i], h[i],
                           xg__f32_to_f16_1(f[i]));
        if (g[i] != xg__f32_to_bf16_1(f[i]))
            cr_assert_fail("bf16 of 0x%08x: 0x%04x, rule 0x%04x", u[i], g[i],
                           xg__f32_to_bf16_1(f[i]));
    }
    free(u);
    free(h);
    free(g);
}

/* Every offset and length up to 40 (the vector loops' heads and tails),
 * with a subnormal in some blocks (AVX-512 BF16's scalar fallback). */
Test(half, offsets_and_tails)
{
    float src[48];
    uint16_t out[48], want[48];
    for (int off = 0; off < 4; off++)
        for (int n = 0; n <= 40; n++) {
            for (int i = 0; i < 48; i++) {
                uint32_t b = rnd32();
                if (i % 11 == 3)
                    b &= 0x807fffffu; /* subnormal */
                memcpy(&src[i], &b, sizeof b);
            }
            memset(out, 0xee, sizeof out);
            xg_f32_to_bf16(src + off, out + off, (size_t)n);
            for (int i = 0; i < 48; i++)
                want[i] = i >= off && i < off + n
                              ? xg__f32_to_bf16_1(src[i]) : 0xeeee;
            cr_assert_arr_eq(out, want, sizeof out, "bf16 off %d n %d", off,
                             n);
            memset(out, 0xee, sizeof out);
            xg_f32_to_f16(src + off, out + off, (size_t)n);
            for (int i = 0; i < 48; i++)
                want[i] = i >= off && i < off + n
                              ? xg__f32_to_f16_1(src[i]) : 0xeeee;
            cr_assert_arr_eq(out, want, sizeof out, "f16 off %d n %d", off,
                             n);
        }
}
