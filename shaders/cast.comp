/* OP_CAST: a placeholder until the Vulkan backend has its casts (its
 * supports() answers false for cast): a 32-bit copy of n elements. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
} pc;

XG_IN(0, float, x);
XG_OUT(0, float, y);

void main()
{
    XG_FOR_EACH(i, pc.n) {
        y[i] = x[i];
    }
}
