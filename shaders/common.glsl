/* Declarations shared by every xgrad compute shader.
 *
 * Buffer bindings follow struct xg_kernel_call: binding i is in[i],
 * binding XG_VK_OUT_BINDING + j is out[j]. Every buffer is a whole allocation, element 0 at
 * offset 0. Sizes fit in 32 bits: the backend refuses larger buffers. */
#ifndef XG_COMMON_GLSL
#define XG_COMMON_GLSL

#include "shader_config.h"

#define XG_IN(i, type, name)                                                 \
    layout(std430, set = 0, binding = i) readonly buffer In##i {             \
        type name[];                                                         \
    }
#define XG_OUT(j, type, name)                                                \
    layout(std430, set = 0, binding = XG_VK_OUT_BINDING + j) writeonly buffer Out##j {       \
        type name[];                                                         \
    }
/* An output that the kernel also reads (optimizer state, in place). */
#define XG_INOUT(j, type, name)                                              \
    layout(std430, set = 0, binding = XG_VK_OUT_BINDING + j) buffer InOut##j {               \
        type name[];                                                         \
    }

/* Grid-stride loop over [0, n) for 1-D kernels launched with at most
 * XG_MAX_GROUPS workgroups. */
#define XG_FOR_EACH(i, n)                                                    \
    for (uint i = gl_GlobalInvocationID.x; i < (n);                          \
         i += gl_NumWorkGroups.x * gl_WorkGroupSize.x)

/* A loop over i = first, first + step, ... < end, in increasing order,
 * that takes XG_UNROLL values of i per loop trip: the inner loop has a
 * constant count, so compilers unroll it, and long loops stay within
 * lavapipe's loop budget (shader_config.h). Adjacent invocations with
 * adjacent `first` still read adjacent elements. The loop body follows:
 *     XG_FOR_STRIDED(j, lane, cols, lanes)
 *         sum += x[j];                                                      */
#define XG_FOR_STRIDED(i, first, end, step)                                  \
    for (uint i##_trip = (first); i##_trip < (end);                          \
         i##_trip += XG_UNROLL * (step))                                     \
        for (uint i##_k = 0, i = i##_trip; i##_k < XG_UNROLL;                \
             i##_k++, i += (step))                                           \
            if (i < (end))

#define XG_NAN uintBitsToFloat(0x7fc00000u)
#define XG_INF uintBitsToFloat(0x7f800000u)

/* max that propagates NaN, as PyTorch's max does. */
float xg_max_nan(float a, float b)
{
    return (isnan(a) || a > b) ? a : b;
}

/* IEEE results at the edges where GLSL leaves exp/log/sqrt undefined. */
float xg_exp(float x)
{
    return isnan(x) ? x : x >= 88.8f ? XG_INF : x <= -104.0f ? 0.0f : exp(x);
}

float xg_log(float x)
{
    return (isnan(x) || x < 0.0f) ? XG_NAN
         : x == 0.0f              ? -XG_INF
         : isinf(x)               ? x
                                  : log(x);
}

float xg_sqrt(float x)
{
    return (isnan(x) || x < 0.0f) ? XG_NAN : isinf(x) ? x : sqrt(x);
}

#endif
