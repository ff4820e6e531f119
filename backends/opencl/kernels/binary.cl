/* BINARY family: c = a (op) b with broadcasting strides. One work-item per
 * output element (grid-stride). The host right-aligns shape and strides in
 * the eight lanes (see xg_strided_offsets). */

#define XG_BINARY(name, expr)                                                \
    __kernel void xg_##name(__global const float *a, __global const float *b, \
                            __global float *out, long n, long8 shape,        \
                            long8 stride_a, long8 stride_b)                  \
    {                                                                        \
        XG_FOR_EACH(i, n) {                                                  \
            long2 off = xg_strided_offsets(i, shape, stride_a, stride_b);    \
            float u = a[off.x], v = b[off.y];                                \
            out[i] = expr;                                                   \
        }                                                                    \
    }

XG_BINARY(add, u + v)
XG_BINARY(sub, u - v)
XG_BINARY(mul, u * v)
XG_BINARY(div, u / v)
XG_BINARY(same_value, u == v || (isnan(u) && isnan(v)) ? 1.0f : 0.0f)
