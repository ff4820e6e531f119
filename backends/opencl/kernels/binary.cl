/* BINARY family: c = a (op) b with broadcasting strides. One work-item per
 * output element (grid-stride). The host right-aligns shape and strides in
 * the eight lanes (see xg_strided_offsets). */

/* Each op also has 16-bit forms, xg_<op>_bf16 and xg_<op>_f16, made as
 * elementwise.cl's: inputs widened exactly, the f32 expression, the result
 * rounded once (the bits of the core's widening of the op). */
#define XG_BINARY_T(fn, sfx, T, LD, ST, expr)                                \
    __kernel void fn##sfx(__global const T *a, __global const T *b,          \
                            __global T *out, long n, long8 shape,            \
                            long8 stride_a, long8 stride_b)                  \
    {                                                                        \
        XG_FOR_EACH(i, n) {                                                  \
            long2 off = xg_strided_offsets(i, shape, stride_a, stride_b);    \
            float u = LD(a, off.x), v = LD(b, off.y);                        \
            ST(out, i, (expr));                                              \
        }                                                                    \
    }
#define XG_BINARY(name, expr)                                                \
    XG_BINARY_T(xg_##name, , float, XG_LD_F32, XG_ST_F32, expr)              \
    XG_BINARY_T(xg_##name, _bf16, ushort, XG_LD_BF16, XG_ST_BF16, expr)      \
    XG_BINARY_T(xg_##name, _f16, ushort, XG_LD_F16, XG_ST_F16, expr)

XG_BINARY(add, u + v)
XG_BINARY(sub, u - v)
XG_BINARY(mul, u * v)
XG_BINARY(div, u / v)
XG_BINARY(same_value, u == v || (isnan(u) && isnan(v)) ? 1.0f : 0.0f)
