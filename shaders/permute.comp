/* out = in with its axes permuted (struct xg_permute_args). The backend
 * passes the output shape and, per output axis, the stride of the input
 * axis it comes from. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n, ndim;
    uint out_shape[6];
    uint in_stride[6]; /* in_stride[j]: input stride of output axis j */
} pc;

XG_IN(0, float, x);
XG_OUT(0, float, y);

void main()
{
    XG_FOR_EACH(i, pc.n) {
        uint src = 0, rest = i;
        for (int j = int(pc.ndim) - 1; j > 0; j--) {
            src += (rest % pc.out_shape[j]) * pc.in_stride[j];
            rest /= pc.out_shape[j];
        }
        y[i] = x[src + rest * pc.in_stride[0]];
    }
}
