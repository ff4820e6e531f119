/* Kernels over image planes (conv.comp, pool.comp): workgroups of
 * XG_PLANE_WG invocations; grid x covers the pixels of one plane, grid y
 * the planes, each capped at XG_MAX_GROUPS with loops beyond. Plane
 * indices are then uniform over a workgroup, and only the pixel index
 * varies per invocation. */
#ifndef XG_PLANES_GLSL
#define XG_PLANES_GLSL

#include "common.glsl"

layout(local_size_x = XG_PLANE_WG) in;

#define XG_FOR_EACH_PLANE(plane, n)                                          \
    for (uint plane = gl_WorkGroupID.y; plane < (n);                         \
         plane += gl_NumWorkGroups.y)

#define XG_FOR_EACH_PIXEL(pix, n)                                            \
    for (uint pix = gl_GlobalInvocationID.x; pix < (n);                      \
         pix += gl_NumWorkGroups.x * XG_PLANE_WG)

/* a / b for a per-invocation a < 2^30 (buffers hold fewer floats) and
 * 0 < b < 2^30, without an integer division, which CPU drivers run one
 * lane at a time (even where a branch skips it): a float estimate q, off by
 * at most a / b * 2^-21 + 1, so the remainder a - q * b fits an int; a
 * second estimate from the remainder, off by at most one; one correction. */
uint xg_div(uint a, uint b, float inv_b)
{
    uint q = uint(float(a) * inv_b);
    q += uint(int(floor(float(int(a - q * b)) * inv_b)));
    int r = int(a - q * b);
    return r < 0 ? q - 1u : r >= int(b) ? q + 1u : q;
}

#endif
