/* The FILL and STRIDED families on 16-bit elements (bf16, f16): bit copies.
 *   -DOP_FILL_16         out = the element bits pc.bits, n elements
 *   -DOP_COPY_16         out = in, n elements
 *   -DOP_COPY_STRIDED_16 struct xg_strided_args, as strided.comp
 * Fill and copy handle one 32-bit word, two elements, per invocation; the
 * high half of the last word when n is odd is the allocation's padding
 * (sizes round up to 256 bytes) and never read as data. copy_strided
 * updates its output in place, so it must leave the other half of a word
 * alone: with -DXG_16BIT_STORAGE (storageBuffer16BitAccess) it stores
 * 16-bit elements, else it clears and sets its half with atomicAnd and
 * atomicOr, which commute with those of the invocation that owns the
 * other half. */
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

#if defined(OP_COPY_STRIDED_16)
layout(push_constant) uniform Push {
    uint n, ndim, in_offset, out_offset;
    uint shape[6];
    uint in_stride[6];
    uint out_stride[6];
} pc;
#ifdef XG_16BIT_STORAGE
XG_IN(0, uint16_t, x);
XG_INOUT(0, uint16_t, y);
#else
XG_IN(0, uint, x);
XG_INOUT(0, uint, y);
#endif
#else
layout(push_constant) uniform Push {
    uint n;
    uint bits; /* fill: the element, in the low 16 bits */
} pc;
#if defined(OP_COPY_16)
XG_IN(0, uint, x);
#elif !defined(OP_FILL_16)
#error "half.comp: no OP_ defined"
#endif
XG_OUT(0, uint, y);
#endif

void main()
{
#if defined(OP_COPY_STRIDED_16)
    XG_FOR_EACH(i, pc.n) {
        uint src = pc.in_offset, dst = pc.out_offset, rest = i;
        for (int k = int(pc.ndim) - 1; k > 0; k--) {
            uint at = rest % pc.shape[k];
            src += at * pc.in_stride[k];
            dst += at * pc.out_stride[k];
            rest /= pc.shape[k];
        }
        src += rest * pc.in_stride[0];
        dst += rest * pc.out_stride[0];
#ifdef XG_16BIT_STORAGE
        y[dst] = x[src];
#else
        uint v = (x[src / 2u] >> (16u * (src % 2u))) & 0xffffu;
        uint shift = 16u * (dst % 2u);
        atomicAnd(y[dst / 2u], ~(0xffffu << shift));
        atomicOr(y[dst / 2u], v << shift);
#endif
    }
#else
    uint words = pc.n / 2u + pc.n % 2u;
    XG_FOR_EACH(w, words) {
#if defined(OP_COPY_16)
        y[w] = x[w];
#else
        y[w] = pc.bits | (pc.bits << 16);
#endif
    }
#endif
}
