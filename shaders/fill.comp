/* OP_FILL: out[i] = value; OP_COPY: out[i] = in[i] (struct xg_fill_args). */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
    float value;
} pc;

#if defined(OP_COPY)
XG_IN(0, float, x);
#elif !defined(OP_FILL)
#error "fill.comp: no OP_ defined"
#endif
XG_OUT(0, float, y);

void main()
{
    XG_FOR_EACH(i, pc.n) {
#if defined(OP_COPY)
        y[i] = x[i];
#else
        y[i] = pc.value;
#endif
    }
}
