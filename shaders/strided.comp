/* out[out_offset + out strides] = in[in_offset + in strides] over the index
 * space `shape` (struct xg_strided_args): a view made contiguous, or a piece
 * written into its slot of a larger tensor. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n, ndim, in_offset, out_offset;
    uint shape[6];
    uint in_stride[6];
    uint out_stride[6];
} pc;

XG_IN(0, float, x);
/* Read-write: the elements this copy does not address keep their values. */
XG_INOUT(0, float, y);

void main()
{
    XG_FOR_EACH(i, pc.n) {
        uint src = pc.in_offset, dst = pc.out_offset, rest = i;
        for (int k = int(pc.ndim) - 1; k > 0; k--) {
            uint at = rest % pc.shape[k];
            src += at * pc.in_stride[k];
            dst += at * pc.out_stride[k];
            rest /= pc.shape[k];
        }
        y[dst + rest * pc.out_stride[0]] = x[src + rest * pc.in_stride[0]];
    }
}
