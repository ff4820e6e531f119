/* Philox4x32-10 random numbers (struct xg_rng_args): OP_RAND_UNIFORM in [a, b),
 * OP_RAND_NORMAL with mean a and standard deviation b (Box-Muller on the word
 * pairs of a block). One invocation produces one block of four elements. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "philox.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
    uint seed_lo, seed_hi;
    uint offset_lo, offset_hi;
    float a, b;
} pc;

XG_OUT(0, float, y);

const float XG_2_POW_M24 = 5.9604644775390625e-8f;
const float XG_TWO_PI = 6.28318530717958647692f;

vec4 values(uvec4 w)
{
#if defined(OP_RAND_UNIFORM)
    vec4 u = vec4(w >> 8u) * XG_2_POW_M24;
    return pc.a + (pc.b - pc.a) * u;
#elif defined(OP_RAND_NORMAL)
    vec2 u1 = (vec2(w.xz >> 8u) + 1.0f) * XG_2_POW_M24;
    vec2 u2 = vec2(w.yw >> 8u) * XG_2_POW_M24;
    vec2 r = sqrt(-2.0f * log(u1));
    vec2 theta = XG_TWO_PI * u2;
    vec2 c = r * cos(theta), s = r * sin(theta);
    return pc.a + pc.b * vec4(c.x, s.x, c.y, s.y);
#else
#error "rng.comp: no OP_ defined"
#endif
}

void main()
{
    uint blocks = (pc.n + XG_RNG_BLOCK - 1) / XG_RNG_BLOCK;
    uvec2 key = uvec2(pc.seed_lo, pc.seed_hi);
    XG_FOR_EACH(blk, blocks) {
        uvec2 ctr = xg_add64(uvec2(pc.offset_lo, pc.offset_hi), blk);
        vec4 v = values(xg_philox4x32_10(uvec4(ctr, 0u, 0u), key));
        uint i = blk * XG_RNG_BLOCK;
        for (uint j = 0; j < XG_RNG_BLOCK && i + j < pc.n; j++)
            y[i + j] = v[j];
    }
}
