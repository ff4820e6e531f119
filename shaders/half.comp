/* The FILL and STRIDED families on 16-bit elements (bf16, f16): bit copies.
 *   -DOP_FILL_16         out = the element bits pc.bits, n elements
 *   -DOP_COPY_16         out = in, n elements
 *   -DOP_COPY_STRIDED_16 struct xg_strided_args, as strided.comp
 * Fill and copy handle one 32-bit word, two elements, per invocation. A
 * kernel never writes the bytes of an element it does not own: the last
 * element when n is odd shares its word with what follows the tensor, so
 * it is stored as copy_strided stores: with -DXG_16BIT_STORAGE
 * (storageBuffer16BitAccess) copy_strided stores 16-bit elements, else it
 * clears and sets its half of the word with atomicAnd and atomicOr, which
 * commute with those of whoever owns the other half. */
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
XG_INOUT(0, uint, y); /* read by the atomics of an odd last element */
#endif

/* Stores the 16-bit element v (low bits) as element i of a buffer of 32-bit
 * words, leaving the other half of the word alone. */
#define XG_STORE_HALF(buf, i, v)                                             \
    {                                                                        \
        uint shift_ = 16u * ((i) % 2u);                                      \
        atomicAnd(buf[(i) / 2u], ~(0xffffu << shift_));                      \
        atomicOr(buf[(i) / 2u], (v) << shift_);                              \
    }

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
        XG_STORE_HALF(y, dst, v);
#endif
    }
#else
    uint words = pc.n / 2u + pc.n % 2u;
    XG_FOR_EACH(w, words) {
#if defined(OP_COPY_16)
        uint word = x[w];
#else
        uint word = pc.bits | (pc.bits << 16);
#endif
        if (2u * w + 1u < pc.n)
            y[w] = word;
        else /* the odd last element: its half only */
            XG_STORE_HALF(y, 2u * w, word & 0xffffu);
    }
#endif
}
