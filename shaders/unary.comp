/* Elementwise ops on one tensor: y = f(x), dx = g * f'(x) (the UNARY_BACKWARD
 * family) and y = x (op) scalar. The op is chosen at build time with
 * -DOP_<NAME>. With -DXG_EW_BF16 or -DXG_EW_F16 and -DXG_16BIT_STORAGE, the
 * 16-bit form: elements widened exactly, op() in f32, the result rounded
 * once (half.glsl), so the bits of the f32 form on the widened values. */
#version 450
#extension GL_GOOGLE_include_directive : require
#ifdef XG_16BIT_STORAGE
#extension GL_EXT_shader_16bit_storage : require
#endif
#include "common.glsl"
#include "half.glsl"

layout(local_size_x = XG_WG_SIZE) in;

layout(push_constant) uniform Push {
    uint n;
    float scalar; /* add/sub/mul/div_scalar */
} pc;

XG_IN(0, XG_EW_T, x);
#if defined(OP_RELU_BACKWARD) || defined(OP_GELU_BACKWARD) ||                 \
    defined(OP_SILU_BACKWARD) || defined(OP_GELU_TANH_BACKWARD)
#define XG_HAS_GRAD
XG_IN(1, XG_EW_T, g);
#endif
XG_OUT(0, XG_EW_T, y);

/* erf in single precision, max error about 1 ulp.
 * reference: N. Juffa's erff (minimax polynomials around expf). */
float xg_erf(float a)
{
    float t = abs(a), s = a * a, r;
    if (t > 0.927734375f) {
        r = fma(-1.72853470e-5f, t, 3.83197126e-4f);
        float u = fma(-3.88396438e-3f, t, 2.42546219e-2f);
        r = fma(r, s, u);
        r = fma(r, t, -1.06777877e-1f);
        r = fma(r, t, -6.34846687e-1f);
        r = fma(r, t, -1.28717512e-1f);
        r = fma(r, t, -t);
        r = 1.0f - xg_exp(r);
        return a < 0.0f ? -r : r;
    }
    r = -5.96761703e-4f;
    r = fma(r, s, 4.99119423e-3f);
    r = fma(r, s, -2.67681349e-2f);
    r = fma(r, s, 1.12819925e-1f);
    r = fma(r, s, -3.76125336e-1f);
    r = fma(r, s, 1.28379166e-1f);
    return fma(r, a, a);
}

/* Standard normal CDF and density (GELU, exact form as PyTorch). */
float xg_normal_cdf(float v) { return 0.5f * (1.0f + xg_erf(v * 0.70710678f)); }
float xg_normal_pdf(float v) { return 0.39894228f * xg_exp(-0.5f * v * v); }

/* GELU's tanh form: u = sqrt(2/pi) (v + 0.044715 v^3). */
float xg_gelu_u(float v) { return 0.7978845608f * (v + 0.044715f * v * v * v); }

float xg_tanh(float v)
{
    /* Clamped: some drivers overflow exp inside tanh; tanh(±9) is ±1 in
     * float. */
    return isnan(v) ? v : tanh(clamp(v, -9.0f, 9.0f));
}

#ifdef XG_HAS_GRAD
float op(float v, float grad)
{
#if defined(OP_RELU_BACKWARD)
    return v > 0.0f ? grad : 0.0f;
#elif defined(OP_GELU_BACKWARD)
    return grad * (xg_normal_cdf(v) + v * xg_normal_pdf(v));
#elif defined(OP_GELU_TANH_BACKWARD)
    float t = xg_tanh(xg_gelu_u(v));
    return grad * (0.5f * (1.0f + t) + 0.5f * v * (1.0f - t * t) *
                   0.7978845608f * (1.0f + 0.134145f * v * v));
#elif defined(OP_SILU_BACKWARD)
    float s = 1.0f / (1.0f + xg_exp(-v)); /* silu' = s (1 + v (1 - s)) */
    return grad * s * (1.0f + v * (1.0f - s));
#endif
}
#else
float op(float v)
{
#if defined(OP_NEG)
    return -v;
#elif defined(OP_EXP)
    return xg_exp(v);
#elif defined(OP_LOG)
    return xg_log(v);
#elif defined(OP_SQRT)
    return xg_sqrt(v);
#elif defined(OP_RELU)
    return v < 0.0f ? 0.0f : v; /* NaN stays NaN */
#elif defined(OP_SIGMOID)
    return 1.0f / (1.0f + xg_exp(-v));
#elif defined(OP_TANH)
    return xg_tanh(v);
#elif defined(OP_GELU)
    return v * xg_normal_cdf(v);
#elif defined(OP_SILU)
    return v / (1.0f + xg_exp(-v));
#elif defined(OP_GELU_TANH)
    return 0.5f * v * (1.0f + xg_tanh(xg_gelu_u(v)));
#elif defined(OP_ADD_SCALAR)
    return v + pc.scalar;
#elif defined(OP_SUB_SCALAR)
    return v - pc.scalar;
#elif defined(OP_MUL_SCALAR)
    return v * pc.scalar;
#elif defined(OP_DIV_SCALAR)
    return v / pc.scalar;
#else
#error "unary.comp: no OP_ defined"
#endif
}
#endif

void main()
{
    XG_FOR_EACH(i, pc.n) {
#ifdef XG_HAS_GRAD
        y[i] = XG_EW_ST(op(XG_EW_LD(x[i]), XG_EW_LD(g[i])));
#else
        y[i] = XG_EW_ST(op(XG_EW_LD(x[i])));
#endif
    }
}
