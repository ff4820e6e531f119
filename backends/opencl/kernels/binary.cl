/* BINARY family: c = a (op) b with broadcasting strides. One work-item per
 * output element (grid-stride). The host right-aligns shape and strides in
 * the eight lanes (see xg_strided_offsets). */

#define XG_BINARY(name, op)                                                  \
    __kernel void xg_##name(__global const float *a, __global const float *b, \
                            __global float *out, long n, long8 shape,        \
                            long8 stride_a, long8 stride_b)                  \
    {                                                                        \
        XG_FOR_EACH(i, n) {                                                  \
            long2 off = xg_strided_offsets(i, shape, stride_a, stride_b);    \
            out[i] = a[off.x] op b[off.y];                                   \
        }                                                                    \
    }

XG_BINARY(add, +)
XG_BINARY(sub, -)
XG_BINARY(mul, *)
XG_BINARY(div, /)
