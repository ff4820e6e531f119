/* Philox4x32-10, the counter-based generator of api/core/backend.h.
 * reference: Salmon et al., "Parallel random numbers: as easy as 1, 2, 3",
 * SC 2011; constants and round function as in Random123. */
#ifndef XG_PHILOX_GLSL
#define XG_PHILOX_GLSL

const uint XG_PHILOX_M0 = 0xD2511F53u;
const uint XG_PHILOX_M1 = 0xCD9E8D57u;
const uint XG_PHILOX_W0 = 0x9E3779B9u;
const uint XG_PHILOX_W1 = 0xBB67AE85u;

uvec4 xg_philox_round(uvec4 c, uvec2 k)
{
    uint hi0, lo0, hi1, lo1;
    umulExtended(XG_PHILOX_M0, c.x, hi0, lo0);
    umulExtended(XG_PHILOX_M1, c.z, hi1, lo1);
    return uvec4(hi1 ^ c.y ^ k.x, lo1, hi0 ^ c.w ^ k.y, lo0);
}

uvec4 xg_philox4x32_10(uvec4 ctr, uvec2 key)
{
    for (int r = 0; r < 9; r++) {
        ctr = xg_philox_round(ctr, key);
        key += uvec2(XG_PHILOX_W0, XG_PHILOX_W1);
    }
    return xg_philox_round(ctr, key);
}

/* The 64-bit sum (lo, hi) + x. */
uvec2 xg_add64(uvec2 a, uint x)
{
    uint carry;
    uint lo = uaddCarry(a.x, x, carry);
    return uvec2(lo, a.y + carry);
}

#endif
