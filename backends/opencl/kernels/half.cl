/* 16-bit elements: the CAST family (xg_cast), the 16-bit kernels of the
 * FILL and STRIDED families (helpers xg_copy_16, xg_fill_16,
 * xg_copy_strided_16, which the launchers pick by dtype) and the loads and
 * stores of the elementwise and binary kernels' 16-bit forms (XG_LD_*,
 * XG_ST_* below; this file precedes theirs in the program).
 *
 * Conversions work on the bits with integer operations only, never with the
 * device's float conversions or float arithmetic: OpenCL lets a device
 * flush subnormals there (single precision without CL_FP_DENORM; PoCL
 * keeps them, others may not), and every backend must give the CPU's bits
 * (api/core/half.c): round to nearest even, a NaN stays a quiet NaN with
 * its sign, f16 overflow gives +-Inf, subnormals are produced and read
 * exactly. bf16 and f16 are the upper half of an f32 and IEEE binary16.
 *
 * Buffers of 16-bit elements are ushort arrays: OpenCL 1.1+ stores them
 * without touching the neighbouring element. */

/* enum xg_dtype (api/xgrad.h) */
#define XG_DT_F32 0
#define XG_DT_I32 1
#define XG_DT_BF16 2
#define XG_DT_F16 3

/* f32 bits -> bf16 bits. */
uint xg_f32_to_bf16_bits(uint u)
{
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: quiet, sign kept */
        return (u >> 16) | 0x40u;
    return (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
}

/* f32 bits -> f16 bits. */
uint xg_f32_to_f16_bits(uint u)
{
    uint sign = (u >> 16) & 0x8000u, a = u & 0x7fffffffu;
    if (a > 0x7f800000u) /* NaN: quiet, sign and the top payload bits kept */
        return sign | 0x7e00u | ((a >> 13) & 0x3ffu);
    if (a >= 0x477ff000u) /* 65520 and up (and Inf) round to Inf */
        return sign | 0x7c00u;
    if (a >= 0x38800000u) { /* normal in f16: rebias, round to nearest even */
        a -= 0x38000000u;
        return sign | ((a + 0xfffu + ((a >> 13) & 1u)) >> 13);
    }
    if (a <= 0x33000000u) /* up to 2^-25 (the tie goes to even, 0) */
        return sign;
    /* subnormal in f16: the significand m (24 bits) times 2^(e - 150),
     * counted in units of 2^-24 */
    uint e = a >> 23, m = (a & 0x7fffffu) | 0x800000u;
    uint shift = 126u - e; /* 14 .. 24 */
    uint r = m >> shift, rest = m & ((1u << shift) - 1u);
    uint half_ulp = 1u << (shift - 1u);
    if (rest > half_ulp || (rest == half_ulp && (r & 1u)))
        r++; /* may carry into the smallest normal, correctly */
    return sign | r;
}

/* f16 bits -> f32 bits (exact). */
uint xg_f16_to_f32_bits(uint h)
{
    uint sign = (h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1fu) /* Inf, or NaN made quiet */
        return sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u);
    if (e != 0u)
        return sign | ((e + 112u) << 23) | (m << 13);
    if (m == 0u)
        return sign;
    e = 113u; /* subnormal: normalize */
    while (!(m & 0x400u)) {
        m <<= 1;
        e--;
    }
    return sign | (e << 23) | ((m & 0x3ffu) << 13);
}

uint xg_bf16_to_f32_bits(uint h)
{
    return h << 16;
}

/* Element access for kernels instanced per element type (elementwise.cl,
 * binary.cl): XG_LD_<T>(p, i) is p[i] widened exactly to a float,
 * XG_ST_<T>(p, i, v) stores the float v at p[i], rounded once to nearest
 * even on the bits as xg_cast rounds. T is F32 (float elements), BF16 or
 * F16 (ushort elements). */
#define XG_LD_F32(p, i) ((p)[i])
#define XG_ST_F32(p, i, v) ((p)[i] = (v))
#define XG_LD_BF16(p, i) as_float(xg_bf16_to_f32_bits((p)[i]))
#define XG_ST_BF16(p, i, v) ((p)[i] = (ushort)xg_f32_to_bf16_bits(as_uint(v)))
#define XG_LD_F16(p, i) as_float(xg_f16_to_f32_bits((p)[i]))
#define XG_ST_F16(p, i, v) ((p)[i] = (ushort)xg_f32_to_f16_bits(as_uint(v)))

/* f32 -> i32: toward zero; NaN and out of range give INT_MIN, as on the
 * CPU. */
int xg_f32_to_i32(float f)
{
    return f >= -2147483648.0f && f < 2147483648.0f ? convert_int_rtz(f)
                                                    : INT_MIN;
}

/* out = in converted from dtype `from` to dtype `to`, n elements, as the
 * CPU converts: i32 and the 16-bit types go through f32; the same dtype is
 * a bit copy. */
__kernel void xg_cast(__global const uchar *in, __global uchar *out, long n,
                      int from, int to)
{
    __global const uint *in32 = (__global const uint *)in;
    __global const ushort *in16 = (__global const ushort *)in;
    __global uint *out32 = (__global uint *)out;
    __global ushort *out16 = (__global ushort *)out;
    bool out_is_16 = to == XG_DT_BF16 || to == XG_DT_F16;
    if (from == to) {
        if (out_is_16)
            XG_FOR_EACH(i, n) out16[i] = in16[i];
        else
            XG_FOR_EACH(i, n) out32[i] = in32[i];
        return;
    }
    XG_FOR_EACH(i, n) {
        uint bits; /* the value as f32 bits */
        switch (from) {
        case XG_DT_BF16: bits = xg_bf16_to_f32_bits(in16[i]); break;
        case XG_DT_F16: bits = xg_f16_to_f32_bits(in16[i]); break;
        case XG_DT_I32:
            bits = as_uint(convert_float_rte((int)in32[i]));
            break;
        default: bits = in32[i]; break;
        }
        switch (to) {
        case XG_DT_BF16: out16[i] = (ushort)xg_f32_to_bf16_bits(bits); break;
        case XG_DT_F16: out16[i] = (ushort)xg_f32_to_f16_bits(bits); break;
        case XG_DT_I32: out32[i] = (uint)xg_f32_to_i32(as_float(bits)); break;
        default: out32[i] = bits; break;
        }
    }
}

/* copy and fill of 16-bit elements: bit copies (value is the element's
 * bits, converted on the host). */
__kernel void xg_copy_16(__global const ushort *in, __global ushort *out,
                         long n)
{
    XG_FOR_EACH(i, n)
        out[i] = in[i];
}

__kernel void xg_fill_16(__global ushort *out, long n, ushort value)
{
    XG_FOR_EACH(i, n)
        out[i] = value;
}

/* xg_copy_strided (strided.cl) on 16-bit elements. */
__kernel void xg_copy_strided_16(__global const ushort *in,
                                 __global ushort *out, long n, long8 shape,
                                 long8 in_stride, long8 out_stride,
                                 long in_offset, long out_offset)
{
    XG_FOR_EACH(i, n) {
        long2 off = xg_strided_offsets(i, shape, in_stride, out_stride);
        out[out_offset + off.y] = in[in_offset + off.x];
    }
}
