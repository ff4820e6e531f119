/* UNARY, SCALAR, UNARY_BACKWARD and FILL families: one work-item per
 * element (grid-stride). Every kernel takes (buffers..., long n, float s);
 * `s` is ew.scalar or fill.value, unused by the ops that have none. */

#define XG_SQRT1_2 0.70710678118654752f   /* 1 / sqrt(2) */
#define XG_INV_SQRT_2PI 0.39894228040143268f /* 1 / sqrt(2 pi) */

/* UNARY, UNARY_BACKWARD and SCALAR ops also have 16-bit forms,
 * xg_<op>_bf16 and xg_<op>_f16 (ushort elements), which the launcher picks
 * by dtype: each widens its inputs exactly (half.cl's XG_LD_*), computes
 * the f32 form's expression in f32 and rounds the result once to nearest
 * even (XG_ST_*), so it gives the bits of the f32 kernel run on the inputs
 * cast to f32 and its output cast back: the core's widening of the op.
 * XG_MAP_T and XG_MAP_BACKWARD_T make one form: T the stored element, LD
 * and ST its access (half.cl). */

/* y = expr(x, s) */
#define XG_MAP_T(fn, sfx, T, LD, ST, expr)                                   \
    __kernel void fn##sfx(__global const T *in, __global T *out, long n,     \
                            float s)                                         \
    {                                                                        \
        XG_FOR_EACH(i, n) {                                                  \
            float x = LD(in, i);                                             \
            ST(out, i, (expr));                                              \
        }                                                                    \
    }
#define XG_MAP(name, expr)                                                   \
    XG_MAP_T(xg_##name, , float, XG_LD_F32, XG_ST_F32, expr)                 \
    XG_MAP_T(xg_##name, _bf16, ushort, XG_LD_BF16, XG_ST_BF16, expr)         \
    XG_MAP_T(xg_##name, _f16, ushort, XG_LD_F16, XG_ST_F16, expr)

/* dx = expr(x, g). out may be grad (backend.h): each work-item reads its
 * element of both inputs before it writes that element. */
#define XG_MAP_BACKWARD_T(fn, sfx, T, LD, ST, expr)                          \
    __kernel void fn##sfx(__global const T *in, __global const T *grad,      \
                            __global T *out, long n, float s)                \
    {                                                                        \
        XG_FOR_EACH(i, n) {                                                  \
            float x = LD(in, i), g = LD(grad, i);                            \
            ST(out, i, (expr));                                              \
        }                                                                    \
    }
#define XG_MAP_BACKWARD(name, expr)                                          \
    XG_MAP_BACKWARD_T(xg_##name, , float, XG_LD_F32, XG_ST_F32, expr)        \
    XG_MAP_BACKWARD_T(xg_##name, _bf16, ushort, XG_LD_BF16, XG_ST_BF16, expr) \
    XG_MAP_BACKWARD_T(xg_##name, _f16, ushort, XG_LD_F16, XG_ST_F16, expr)

XG_MAP(neg, -x)
XG_MAP(exp, exp(x))
XG_MAP(log, log(x))
XG_MAP(sqrt, sqrt(x))
XG_MAP(relu, x < 0.0f ? 0.0f : x) /* NaN stays NaN, as in PyTorch */
XG_MAP(sigmoid, 1.0f / (1.0f + exp(-x)))
/* Past |x| = 9, tanh rounds to +-1 in f32; some libms (PoCL's) return
 * 1 - ulp there, so saturate explicitly. NaN falls through to tanh. */
XG_MAP(tanh, fabs(x) >= 9.0f ? copysign(1.0f, x) : tanh(x))
XG_MAP(gelu, 0.5f * x * (1.0f + erf(x * XG_SQRT1_2)))
XG_MAP(silu, x / (1.0f + exp(-x)))
/* tanh form, u = sqrt(2/pi) (x + 0.044715 x^3); tanh saturated as above */
#define XG_GELU_U(x) (0.7978845608028654f * ((x) + 0.044715f * (x) * (x) * (x)))
#define XG_TANH_SAT(u) (fabs(u) >= 9.0f ? copysign(1.0f, u) : tanh(u))
XG_MAP(gelu_tanh, 0.5f * x * (1.0f + XG_TANH_SAT(XG_GELU_U(x))))

XG_MAP(add_scalar, x + s)
XG_MAP(sub_scalar, x - s)
XG_MAP(mul_scalar, x * s)
XG_MAP(div_scalar, x / s)

/* copy (FILL family): 16-bit elements go to half.cl's xg_copy_16 */
XG_MAP_T(xg_copy, , float, XG_LD_F32, XG_ST_F32, x)

XG_MAP_BACKWARD(relu_backward, x > 0.0f ? g : 0.0f)
/* d/dx [x Phi(x)] = Phi(x) + x phi(x) */
XG_MAP_BACKWARD(gelu_backward,
                g * (0.5f * (1.0f + erf(x * XG_SQRT1_2)) +
                     x * XG_INV_SQRT_2PI * exp(-0.5f * x * x)))
/* silu' = s (1 + x (1 - s)), s = sigmoid(x) */
XG_MAP_BACKWARD(gelu_tanh_backward,
                g * (0.5f * (1.0f + XG_TANH_SAT(XG_GELU_U(x))) +
                     0.5f * x *
                         (1.0f - XG_TANH_SAT(XG_GELU_U(x)) *
                                     XG_TANH_SAT(XG_GELU_U(x))) *
                         0.7978845608028654f * (1.0f + 0.134145f * x * x)))
XG_MAP_BACKWARD(silu_backward,
                g * (1.0f / (1.0f + exp(-x))) *
                    (1.0f + x * (1.0f - 1.0f / (1.0f + exp(-x)))))

__kernel void xg_fill(__global float *out, long n, float value)
{
    XG_FOR_EACH(i, n)
        out[i] = value;
}
