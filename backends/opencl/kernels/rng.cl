/* RNG family: Philox4x32-10 (Salmon et al., "Parallel random numbers: as
 * easy as 1, 2, 3", SC 2011), bit-exact with the CPU reference. Block j
 * (counter offset + j) gives elements 4j .. 4j+3; one work-item per block
 * (grid-stride). */

uint4 xg_philox4x32_10(uint4 ctr, uint2 key)
{
    for (int round = 0; round < 10; round++) {
        if (round > 0)
            key += (uint2)(0x9E3779B9u, 0xBB67AE85u);
        uint hi0 = mul_hi(0xD2511F53u, ctr.x), lo0 = 0xD2511F53u * ctr.x;
        uint hi1 = mul_hi(0xCD9E8D57u, ctr.z), lo1 = 0xCD9E8D57u * ctr.z;
        ctr = (uint4)(hi1 ^ ctr.y ^ key.x, lo1, hi0 ^ ctr.w ^ key.y, lo0);
    }
    return ctr;
}

/* The four words of block j. */
uint4 xg_philox_block(ulong seed, ulong offset, long j)
{
    ulong c = offset + (ulong)j;
    uint4 ctr = (uint4)((uint)c, (uint)(c >> 32), 0u, 0u);
    return xg_philox4x32_10(ctr, (uint2)((uint)seed, (uint)(seed >> 32)));
}

/* The top 24 bits of w as a float in [0, 1). */
float4 xg_unit(uint4 w)
{
    return convert_float4(w >> 8) * 0x1.0p-24f;
}

/* Writes the block's values v to out[4j ..], stopping at n. */
void xg_store_block(__global float *out, long n, long j, float4 v)
{
    float vals[4] = {v.x, v.y, v.z, v.w};
    for (int q = 0; q < 4 && 4 * j + q < n; q++)
        out[4 * j + q] = vals[q];
}

/* a = low, b = high */
__kernel void xg_rand_uniform(__global float *out, long n, ulong seed,
                              ulong offset, float a, float b)
{
    XG_FOR_EACH(j, (n + 3) / 4) {
        float4 u = xg_unit(xg_philox_block(seed, offset, j));
        xg_store_block(out, n, j, a + (b - a) * u);
    }
}

/* a = mean, b = std; Box-Muller on the word pairs (0, 1) and (2, 3):
 * u1 = ((w >> 8) + 1) * 2^-24 in (0, 1] from words 0 and 2, u2 from 1 and
 * 3, out = a + b * r * (cos or sin)(2 pi u2) with r = sqrt(-2 ln u1). */
__kernel void xg_rand_normal(__global float *out, long n, ulong seed,
                             ulong offset, float a, float b)
{
    XG_FOR_EACH(j, (n + 3) / 4) {
        uint4 w = xg_philox_block(seed, offset, j);
        float2 u1 = (convert_float2(w.xz >> 8) + 1.0f) * 0x1.0p-24f;
        float2 u2 = xg_unit(w).yw;
        float2 br = b * sqrt(-2.0f * log(u1));
        float2 theta = 2.0f * M_PI_F * u2;
        float4 z = (float4)(br.x * cos(theta.x), br.x * sin(theta.x),
                            br.y * cos(theta.y), br.y * sin(theta.y));
        xg_store_block(out, n, j, a + z);
    }
}

/* DROPOUT: out = u < p ? 0 : x * scale with u = rand_uniform(0, 1)'s
 * element i for this seed and offset (0 + (1 - 0) * unit(word) is unit(word)
 * exactly). scale = 1 / (1 - p) comes from the host, which rounds the
 * division correctly (OpenCL's float division need not). */
__kernel void xg_dropout(__global const float *x, __global float *out,
                         long n, ulong seed, ulong offset, float p,
                         float scale)
{
    XG_FOR_EACH(j, (n + 3) / 4) {
        float4 u = xg_unit(xg_philox_block(seed, offset, j));
        float vals[4] = {u.x, u.y, u.z, u.w};
        for (int q = 0; q < 4 && 4 * j + q < n; q++)
            out[4 * j + q] = vals[q] < p ? 0.0f : x[4 * j + q] * scale;
    }
}
