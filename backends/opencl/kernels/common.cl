/* Definitions shared by every kernel file. The backend builds all kernel
 * files, this one first, as one OpenCL C 1.2 program with -DXG_WG_MAX=<n>:
 * the largest work-group size it launches, which sizes local memory.
 *
 * Kernel signatures follow one convention: the op's input buffers, then its
 * output buffers (api/ops.def order), then the scalars of its family's
 * argument struct in api/backend.h, in struct order (xg_dropout adds one
 * derived scalar after them). The helper kernels of conv.cl, which serve
 * several ops, say what they take.
 */
#ifndef XG_WG_MAX
#error "build with -DXG_WG_MAX=<largest work-group size>"
#endif

/* No fused multiply-add where the source has none: results then stay
 * closer to the CPU reference, which is compiled without contraction. */
#pragma OPENCL FP_CONTRACT OFF

/* Grid-stride loop: the launch may have fewer work-items than elements. */
#define XG_FOR_EACH(i, n)                                                    \
    for (long i = get_global_id(0); i < (n); i += get_global_size(0))

/* Offsets into two strided tensors, a and b, of element i of a contiguous
 * tensor of `shape`. Axes are right-aligned in the eight lanes; unused
 * leading lanes hold shape 1 and stride 0. Once the remaining index fits
 * in an axis no division is needed, so a one-axis shape (the common case
 * after the core merges axes) costs none. */
long2 xg_strided_offsets(long i, long8 shape, long8 stride_a, long8 stride_b)
{
    long2 off = 0;
#define XG_AXIS(k)                                                           \
    {                                                                        \
        long2 stride = (long2)(stride_a.s##k, stride_b.s##k);                \
        if (i < shape.s##k)                                                  \
            return off + i * stride;                                         \
        long q = i / shape.s##k;                                             \
        off += (i - q * shape.s##k) * stride;                                \
        i = q;                                                               \
    }
    XG_AXIS(7) XG_AXIS(6) XG_AXIS(5) XG_AXIS(4) XG_AXIS(3) XG_AXIS(2)
    XG_AXIS(1)
#undef XG_AXIS
    return off + i * (long2)(stride_a.s0, stride_b.s0);
}

/* max() that propagates NaN, as PyTorch's max does. */
float xg_nan_max(float a, float b)
{
    return isnan(a) || a > b ? a : b;
}

/* Tree reductions over one 1-D work-group of power-of-two size. Every
 * work-item passes its value and gets the group's result; `scratch` holds
 * get_local_size(0) floats and may be reused once these return. */
#define XG_GROUP_REDUCE(name, combine)                                       \
    float name(float v, __local float *scratch)                              \
    {                                                                        \
        int l = get_local_id(0);                                             \
        scratch[l] = v;                                                      \
        for (int s = get_local_size(0) / 2; s > 0; s /= 2) {                 \
            barrier(CLK_LOCAL_MEM_FENCE);                                    \
            if (l < s)                                                       \
                scratch[l] = combine(scratch[l], scratch[l + s]);            \
        }                                                                    \
        barrier(CLK_LOCAL_MEM_FENCE);                                        \
        float result = scratch[0];                                           \
        barrier(CLK_LOCAL_MEM_FENCE);                                        \
        return result;                                                       \
    }
#define XG_ADD(a, b) ((a) + (b))
XG_GROUP_REDUCE(xg_group_sum, XG_ADD)
XG_GROUP_REDUCE(xg_group_max, xg_nan_max)
