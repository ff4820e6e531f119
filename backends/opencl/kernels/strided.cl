/* STRIDED family (struct xg_strided_args): out[out_offset + out strides] =
 * in[in_offset + in strides] over the index space `shape`. One work-item
 * per element (grid-stride); shape and strides are right-aligned in the
 * eight lanes (see xg_strided_offsets). */
__kernel void xg_copy_strided(__global const float *in, __global float *out,
                              long n, long8 shape, long8 in_stride,
                              long8 out_stride, long in_offset,
                              long out_offset)
{
    XG_FOR_EACH(i, n) {
        long2 off = xg_strided_offsets(i, shape, in_stride, out_stride);
        out[out_offset + off.y] = in[in_offset + off.x];
    }
}
