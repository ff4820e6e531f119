/* Dropout (struct xg_dropout_args): y[i] = u_i < p ? 0 : x[i] * scale, with
 * u_i bit-identical to element i of rand_uniform(0, 1) for this seed and
 * offset (rng.comp) and scale = 1 / (1 - p) computed by the host in float,
 * as the other backends do. One invocation handles one Philox block. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"
#include "philox.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
    uint seed_lo, seed_hi;
    uint offset_lo, offset_hi;
    float p, scale;
} pc;

XG_IN(0, float, x);
XG_OUT(0, float, y);

const float XG_2_POW_M24 = 5.9604644775390625e-8f;

void main()
{
    uint blocks = (pc.n + XG_RNG_BLOCK - 1) / XG_RNG_BLOCK;
    uvec2 key = uvec2(pc.seed_lo, pc.seed_hi);
    XG_FOR_EACH(blk, blocks) {
        uvec2 ctr = xg_add64(uvec2(pc.offset_lo, pc.offset_hi), blk);
        vec4 u = vec4(xg_philox4x32_10(uvec4(ctr, 0u, 0u), key) >> 8u) *
                 XG_2_POW_M24;
        uint i = blk * XG_RNG_BLOCK;
        for (uint j = 0; j < XG_RNG_BLOCK && i + j < pc.n; j++)
            y[i + j] = u[j] < pc.p ? 0.0f : x[i + j] * pc.scale;
    }
}
