/* Selection by an i32 mask with broadcasting strides (struct
 * xg_where_args): OP_WHERE (a, b, cond -> cond ? a : b) and
 * OP_MASKED_FILL (x, mask -> mask ? value : x); nonzero is true. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

/* Axes 0..ndim-1 of the output, last axis fastest; stride[6 * i + k] is
 * input i's stride along axis k. */
layout(push_constant) uniform Push {
    uint n, ndim;
    uint shape[6];
    uint stride[18];
    float value;
} pc;

#if defined(OP_WHERE)
XG_IN(0, float, a);
XG_IN(1, float, b);
XG_IN(2, int, mask);
#define XG_MASK_INPUT 2
#elif defined(OP_MASKED_FILL)
XG_IN(0, float, a);
XG_IN(1, int, mask);
#define XG_MASK_INPUT 1
#else
#error "where.comp: no OP_ defined"
#endif
XG_OUT(0, float, y);

void main()
{
    XG_FOR_EACH(i, pc.n) {
        uint oa = 0, ob = 0, om = 0, rest = i;
        for (int k = int(pc.ndim) - 1; k >= 0; k--) {
            uint coord = k > 0 ? rest % pc.shape[k] : rest;
            rest /= pc.shape[k];
            oa += coord * pc.stride[k];
            ob += coord * pc.stride[6 + k];
            om += coord * pc.stride[6 * XG_MASK_INPUT + k];
        }
#if defined(OP_WHERE)
        y[i] = mask[om] != 0 ? a[oa] : b[ob];
#else
        y[i] = mask[om] != 0 ? pc.value : a[oa];
#endif
    }
}
