/* PERMUTE family: out[i] = in[offset of i under the permuted strides]. One
 * work-item per output element (grid-stride). `shape` is the output shape
 * and `stride` the input stride of each output axis, right-aligned in the
 * eight lanes (see xg_strided_offsets). */
__kernel void xg_permute(__global const float *in, __global float *out,
                         long n, long8 shape, long8 stride)
{
    XG_FOR_EACH(i, n)
        out[i] = in[xg_strided_offsets(i, shape, stride, stride).x];
}
