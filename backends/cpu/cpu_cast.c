/* The cast kernel: dtype conversion between f32, bf16, f16 and i32. */
#include "cpu_impl.h"
#include "half_impl.h"

typedef struct cast_ctx {
    const void *src;
    void *dst;
    xg_dtype from, to;
} cast_ctx;

/* One element of any float dtype, widened to f32. */
static inline float load_float(const void *p, xg_dtype t, int64_t i)
{
    switch (t) {
    case XG_BF16: return xg__bf16_to_f32_1(((const uint16_t *)p)[i]);
    case XG_F16: return xg__f16_to_f32_1(((const uint16_t *)p)[i]);
    default: return ((const float *)p)[i];
    }
}

/* float -> i32 truncates toward zero; NaN and out of range give INT32_MIN
 * (the x86 instruction's answer; the contract leaves it unspecified). */
static inline int32_t to_i32(float v)
{
    return v >= -2147483648.0f && v < 2147483648.0f ? (int32_t)v : INT32_MIN;
}

static void cast_range(const void *vctx, int64_t begin, int64_t end,
                       int thread)
{
    (void)thread;
    const cast_ctx *c = vctx;
    size_t n = (size_t)(end - begin);
    const char *s = (const char *)c->src;
    char *d = (char *)c->dst;
    size_t is = xg_dtype_size(c->from), os = xg_dtype_size(c->to);
    const void *src = s + (size_t)begin * is;
    void *dst = d + (size_t)begin * os;
    if (c->from == c->to) {
        memcpy(dst, src, n * is);
        return;
    }
    if (c->from == XG_F32 && c->to == XG_BF16)
        return xg_f32_to_bf16(src, dst, n);
    if (c->from == XG_F32 && c->to == XG_F16)
        return xg_f32_to_f16(src, dst, n);
    if (c->from == XG_BF16 && c->to == XG_F32)
        return xg_bf16_to_f32(src, dst, n);
    if (c->from == XG_F16 && c->to == XG_F32)
        return xg_f16_to_f32(src, dst, n);
    if (c->from == XG_I32) {
        const int32_t *x = src;
        for (size_t i = 0; i < n; i++) {
            float v = (float)x[i];
            switch (c->to) {
            case XG_BF16: ((uint16_t *)dst)[i] = xg__f32_to_bf16_1(v); break;
            case XG_F16: ((uint16_t *)dst)[i] = xg__f32_to_f16_1(v); break;
            default: ((float *)dst)[i] = v; break;
            }
        }
        return;
    }
    for (size_t i = 0; i < n; i++) {
        float v = load_float(src, c->from, (int64_t)i);
        switch (c->to) {
        case XG_I32: ((int32_t *)dst)[i] = to_i32(v); break;
        case XG_BF16: ((uint16_t *)dst)[i] = xg__f32_to_bf16_1(v); break;
        case XG_F16: ((uint16_t *)dst)[i] = xg__f32_to_f16_1(v); break;
        default: ((float *)dst)[i] = v; break;
        }
    }
}

xg_status cpu_cast(xg_backend_device *dev, const xg_kernel_call *call)
{
    cast_ctx c = {call->in[0].buf, call->out[0].buf, call->in[0].dtype,
                  call->out[0].dtype};
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.cast.n,
                          CPU_COST_SIMPLE * 2, cast_range, &c);
    return XG_OK;
}
