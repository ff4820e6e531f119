/* c = a (op) b with broadcasting strides (struct xg_binary_args); the op is
 * chosen at build time with -DOP_<NAME>; 16-bit forms as in unary.comp. */
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(local_size_x = XG_WG_SIZE) in;

/* Axes 0..ndim-1 of the output, last axis fastest. */
layout(push_constant) uniform Push {
    uint n, ndim;
    uint shape[6];
    uint stride_a[6];
    uint stride_b[6];
} pc;

XG_IN(0, XG_EW_T, a);
XG_IN(1, XG_EW_T, b);
XG_OUT(0, XG_EW_T, c);

float op(float u, float v)
{
#if defined(OP_ADD)
    return u + v;
#elif defined(OP_SUB)
    return u - v;
#elif defined(OP_MUL)
    return u * v;
#elif defined(OP_DIV)
    return u / v;
#elif defined(OP_SAME_VALUE)
    return u == v || (isnan(u) && isnan(v)) ? 1.0f : 0.0f;
#else
#error "binary.comp: no OP_ defined"
#endif
}

void main()
{
    XG_FOR_EACH(i, pc.n) {
        uint ia = 0, ib = 0, rest = i;
        for (int k = int(pc.ndim) - 1; k > 0; k--) {
            uint coord = rest % pc.shape[k];
            rest /= pc.shape[k];
            ia += coord * pc.stride_a[k];
            ib += coord * pc.stride_b[k];
        }
        ia += rest * pc.stride_a[0]; /* rest < shape[0] */
        ib += rest * pc.stride_b[0];
        c[i] = XG_EW_ST(op(XG_EW_LD(a[ia]), XG_EW_LD(b[ib])));
    }
}
