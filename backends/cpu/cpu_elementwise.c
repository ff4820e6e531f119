/* Elementwise kernels: unary ops and their backward, scalar and broadcasting
 * binary arithmetic, strided copies, copy and fill.
 *
 * Each family has one value function (a switch on the op) and one loop; the
 * loop is instantiated per op by a dispatch switch whose cases pass the op as
 * a constant, so every op gets its own tight, vectorisable loop. */
#include "cpu_impl.h"
#include "half_impl.h"

#include <assert.h>
#include <math.h>
#include <string.h>

/* ---- 16-bit elements (bf16, f16) ---------------------------------------- */

/* bf16 and f16 operands of the unary, unary-backward, scalar and binary
 * ops run the same f32 loops on blocks of HALF_BLOCK elements: each input
 * block is widened exactly into f32 on the stack, the loop runs, and each
 * result is rounded once (to nearest even) to the output's dtype. These are
 * the values of widening whole tensors, as the core does for ops without
 * 16-bit kernels, without the f32 temporaries and their passes over
 * memory. An output that is also an input is read block by block before it
 * is written, so the UNARY_BACKWARD contract (out may be in[1]) holds. */
enum { HALF_BLOCK = 256 };

/* Widens n elements of `dtype` at src[i * stride] into dst. */
static void half_load(xg_dtype dtype, const void *src, int64_t stride,
                      float *dst, int64_t n)
{
    const uint16_t *h = src;
    if (stride == 1 && dtype == XG_BF16)
        xg_bf16_to_f32(h, dst, (size_t)n);
    else if (stride == 1)
        xg_f16_to_f32(h, dst, (size_t)n);
    else if (dtype == XG_BF16)
        for (int64_t i = 0; i < n; i++)
            dst[i] = xg__bf16_to_f32_1(h[i * stride]);
    else
        for (int64_t i = 0; i < n; i++)
            dst[i] = xg__f16_to_f32_1(h[i * stride]);
}

/* Rounds n f32 values into `dtype` at dst. */
static void half_store(xg_dtype dtype, const float *src, void *dst, int64_t n)
{
    if (dtype == XG_BF16)
        xg_f32_to_bf16(src, dst, (size_t)n);
    else
        xg_f32_to_f16(src, dst, (size_t)n);
}

/* Element offset `i` of a 16-bit buffer. */
static inline const uint16_t *half_at(const void *buf, int64_t i)
{
    return (const uint16_t *)buf + i;
}

/* ---- unary -------------------------------------------------------------- */

/* Standard normal CDF and density, for GELU.
 * reference: Hendrycks & Gimpel, "Gaussian Error Linear Units", 2016; the
 * exact (erf) form is PyTorch's default (approximate='none'). */
static inline float normal_cdf(float x)
{
    return 0.5f * (1.0f + erff(x * (float)M_SQRT1_2));
}

/* GELU's tanh form: u = sqrt(2/pi) (x + 0.044715 x^3).
 * reference: Hendrycks & Gimpel 2016, eq. for the tanh approximation. */
#define GELU_TANH_C 0.7978845608028654f /* sqrt(2 / pi) */
#define GELU_TANH_A 0.044715f
static inline float gelu_tanh_arg(float x)
{
    return GELU_TANH_C * (x + GELU_TANH_A * x * x * x);
}

static inline float normal_pdf(float x)
{
    const float inv_sqrt_2pi = 0.3989422804014327f;
    return inv_sqrt_2pi * expf(-0.5f * x * x);
}

CPU_INLINE float unary_value(xg_op op, float x)
{
    switch (op) {
    case XG_OP_neg: return -x;
    case XG_OP_exp: return expf(x);
    case XG_OP_log: return logf(x);
    case XG_OP_sqrt: return sqrtf(x);
    case XG_OP_relu: return x < 0.0f ? 0.0f : x; /* NaN stays NaN */
    case XG_OP_sigmoid: return 1.0f / (1.0f + expf(-x));
    case XG_OP_tanh: return tanhf(x);
    case XG_OP_gelu: return x * normal_cdf(x);
    case XG_OP_silu: return x / (1.0f + expf(-x));
    case XG_OP_gelu_tanh:
        return 0.5f * x * (1.0f + cpu_tanh_abs_accurate(gelu_tanh_arg(x)));
    default: assert(!"not a unary op"); return x;
    }
}

CPU_INLINE void unary_loop(xg_op op, const float *x, float *y, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        y[i] = unary_value(op, x[i]);
}

/* The op's loop, chosen with the op as a constant. */
CPU_INLINE void unary_dispatch(xg_op op, const float *x, float *y, int64_t n)
{
    switch (op) {
    case XG_OP_neg: unary_loop(XG_OP_neg, x, y, n); break;
    case XG_OP_exp: unary_loop(XG_OP_exp, x, y, n); break;
    case XG_OP_log: unary_loop(XG_OP_log, x, y, n); break;
    case XG_OP_sqrt: unary_loop(XG_OP_sqrt, x, y, n); break;
    case XG_OP_relu: unary_loop(XG_OP_relu, x, y, n); break;
    case XG_OP_sigmoid: unary_loop(XG_OP_sigmoid, x, y, n); break;
    case XG_OP_tanh: unary_loop(XG_OP_tanh, x, y, n); break;
    case XG_OP_gelu: unary_loop(XG_OP_gelu, x, y, n); break;
    case XG_OP_silu: unary_loop(XG_OP_silu, x, y, n); break;
    case XG_OP_gelu_tanh: unary_loop(XG_OP_gelu_tanh, x, y, n); break;
    default: assert(!"not a unary op");
    }
}

CPU_CLONES static void unary_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    unary_dispatch(c->op, cpu_f32(c->in[0].buf) + begin,
                   cpu_f32(c->out[0].buf) + begin, end - begin);
}

/* ---- unary backward: dx = g * f'(x) ------------------------------------- */

CPU_INLINE float unary_backward_value(xg_op op, float x, float g)
{
    switch (op) {
    /* reference: PyTorch threshold_backward; f'(0) = 0. */
    case XG_OP_relu_backward: return x > 0.0f ? g : 0.0f;
    /* d/dx x Phi(x) = Phi(x) + x phi(x); reference: PyTorch GeluBackward. */
    case XG_OP_gelu_backward: return g * (normal_cdf(x) + x * normal_pdf(x));
    /* silu' = s (1 + x (1 - s)), s = sigmoid(x); reference: PyTorch
     * silu_backward. */
    case XG_OP_silu_backward: {
        float sg = 1.0f / (1.0f + expf(-x));
        return g * sg * (1.0f + x * (1.0f - sg));
    }
    /* d/dx x/2 (1 + t), t = tanh(u), u = c (x + a x^3):
     * (1 + t) / 2 + x/2 (1 - t^2) c (1 + 3 a x^2); PyTorch GeluBackward
     * with approximate='tanh'. */
    case XG_OP_gelu_tanh_backward: {
        float t = cpu_tanh_abs_accurate(gelu_tanh_arg(x));
        return g * (0.5f * (1.0f + t) +
                    0.5f * x * (1.0f - t * t) * GELU_TANH_C *
                        (1.0f + 3.0f * GELU_TANH_A * x * x));
    }
    default: assert(!"not a unary backward op"); return g;
    }
}

CPU_INLINE void unary_backward_loop(xg_op op, const float *x, const float *g,
                                    float *dx, int64_t n)
{
    for (int64_t i = 0; i < n; i++)
        dx[i] = unary_backward_value(op, x[i], g[i]);
}

CPU_INLINE void unary_backward_dispatch(xg_op op, const float *x,
                                        const float *g, float *dx, int64_t n)
{
    switch (op) {
    case XG_OP_relu_backward:
        unary_backward_loop(XG_OP_relu_backward, x, g, dx, n);
        break;
    case XG_OP_gelu_backward:
        unary_backward_loop(XG_OP_gelu_backward, x, g, dx, n);
        break;
    case XG_OP_silu_backward:
        unary_backward_loop(XG_OP_silu_backward, x, g, dx, n);
        break;
    case XG_OP_gelu_tanh_backward:
        unary_backward_loop(XG_OP_gelu_tanh_backward, x, g, dx, n);
        break;
    default: assert(!"not a unary backward op");
    }
}

CPU_CLONES static void unary_backward_range(const void *ctx, int64_t begin, int64_t end,
                                 int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    unary_backward_dispatch(c->op, cpu_f32(c->in[0].buf) + begin,
                            cpu_f32(c->in[1].buf) + begin,
                            cpu_f32(c->out[0].buf) + begin, end - begin);
}

/* ---- binary rows: c[i] = a[i * sa] (op) b[i * sb] ----------------------- */

CPU_INLINE float binary_value(xg_op op, float x, float y)
{
    switch (op) {
    case XG_OP_add: return x + y;
    case XG_OP_sub: return x - y;
    case XG_OP_mul: return x * y;
    case XG_OP_div: return x / y;
    case XG_OP_same_value: return (x == y) | ((x != x) & (y != y)) ? 1.0f : 0.0f;
    default: assert(!"not a binary op"); return x;
    }
}

/* One row of a binary op; the stride patterns that broadcasting produces
 * most (same shape, a row or scalar operand) get their own unit-stride
 * loops, which the compiler vectorises. */
CPU_INLINE void binary_row_op(xg_op op, float *c, const float *a, int64_t sa,
                              const float *b, int64_t sb, int64_t n)
{
    if (sa == 1 && sb == 1) {
        for (int64_t i = 0; i < n; i++)
            c[i] = binary_value(op, a[i], b[i]);
    } else if (sa == 1 && sb == 0) {
        const float y = b[0];
        for (int64_t i = 0; i < n; i++)
            c[i] = binary_value(op, a[i], y);
    } else if (sa == 0 && sb == 1) {
        const float x = a[0];
        for (int64_t i = 0; i < n; i++)
            c[i] = binary_value(op, x, b[i]);
    } else {
        for (int64_t i = 0; i < n; i++)
            c[i] = binary_value(op, a[i * sa], b[i * sb]);
    }
}

CPU_INLINE void binary_row(xg_op op, float *c, const float *a, int64_t sa,
                       const float *b, int64_t sb, int64_t n)
{
    switch (op) {
    case XG_OP_add: binary_row_op(XG_OP_add, c, a, sa, b, sb, n); break;
    case XG_OP_sub: binary_row_op(XG_OP_sub, c, a, sa, b, sb, n); break;
    case XG_OP_mul: binary_row_op(XG_OP_mul, c, a, sa, b, sb, n); break;
    case XG_OP_div: binary_row_op(XG_OP_div, c, a, sa, b, sb, n); break;
    case XG_OP_same_value:
        binary_row_op(XG_OP_same_value, c, a, sa, b, sb, n);
        break;
    default: assert(!"not a binary op");
    }
}

/* ---- scalar: y = x (op) s ----------------------------------------------- */

static xg_op scalar_to_binary(xg_op op)
{
    switch (op) {
    case XG_OP_add_scalar: return XG_OP_add;
    case XG_OP_sub_scalar: return XG_OP_sub;
    case XG_OP_mul_scalar: return XG_OP_mul;
    case XG_OP_div_scalar: return XG_OP_div;
    default: assert(!"not a scalar op"); return XG_OP_add;
    }
}

CPU_CLONES static void scalar_range(const void *ctx, int64_t begin,
                                    int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    binary_row(scalar_to_binary(c->op), cpu_f32(c->out[0].buf) + begin,
               cpu_f32(c->in[0].buf) + begin, 1, &c->p.ew.scalar, 0,
               end - begin);
}

/* The contiguous families (UNARY, UNARY_BACKWARD, SCALAR) on 16-bit
 * elements, block by block. */
CPU_CLONES static void half_ew_range(const void *ctx, int64_t begin,
                                     int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    xg_op_family family = xg_op_table[c->op].family;
    int inputs = family == XG_FAMILY_UNARY_BACKWARD ? 2 : 1;
    float in[2][HALF_BLOCK], out[HALF_BLOCK];
    for (int64_t i = begin; i < end; i += HALF_BLOCK) {
        int64_t n = end - i < HALF_BLOCK ? end - i : HALF_BLOCK;
        for (int k = 0; k < inputs; k++)
            half_load(c->in[k].dtype, half_at(c->in[k].buf, i), 1, in[k], n);
        if (family == XG_FAMILY_UNARY)
            unary_dispatch(c->op, in[0], out, n);
        else if (family == XG_FAMILY_UNARY_BACKWARD)
            unary_backward_dispatch(c->op, in[0], in[1], out, n);
        else
            binary_row(scalar_to_binary(c->op), out, in[0], 1,
                       &c->p.ew.scalar, 0, n);
        half_store(c->out[0].dtype, out, (uint16_t *)c->out[0].buf + i, n);
    }
}

xg_status cpu_unary(xg_backend_device *dev, const xg_kernel_call *call)
{
    int cheap = call->op == XG_OP_neg || call->op == XG_OP_relu ||
                call->op == XG_OP_sqrt;
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.ew.n,
                          cheap ? CPU_COST_SIMPLE : CPU_COST_LIBM,
                          call->out[0].dtype == XG_F32 ? unary_range
                                                       : half_ew_range,
                          call);
    return XG_OK;
}

xg_status cpu_unary_backward(xg_backend_device *dev,
                             const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.ew.n,
                          call->op == XG_OP_relu_backward ? CPU_COST_SIMPLE
                                                          : CPU_COST_LIBM,
                          call->out[0].dtype == XG_F32 ? unary_backward_range
                                                       : half_ew_range,
                          call);
    return XG_OK;
}

xg_status cpu_scalar(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.ew.n, CPU_COST_SIMPLE,
                          call->out[0].dtype == XG_F32 ? scalar_range
                                                       : half_ew_range,
                          call);
    return XG_OK;
}

/* ---- strided walks (binary broadcasting, strided copies) ---------------- */

/* A walk over the index space shape[0..ndim-1] in row-major order, tracking
 * the element offset in up to two strided buffers. The last axis is the inner loop. */
typedef struct strided_walk {
    int ndim, inputs;
    const int64_t *shape;
    const int64_t *stride[2];
    int64_t idx[XG_MAX_DIMS];
    int64_t off[2];
} strided_walk;

/* Positions the walk at linear output index `pos`. */
static void walk_start(strided_walk *w, int64_t pos)
{
    w->off[0] = w->off[1] = 0;
    for (int k = w->ndim - 1; k >= 0; k--) {
        w->idx[k] = pos % w->shape[k];
        pos /= w->shape[k];
        for (int s = 0; s < w->inputs; s++)
            w->off[s] += w->idx[k] * w->stride[s][k];
    }
}

/* Elements left in the current row (along the last axis). */
static int64_t walk_row_left(const strided_walk *w)
{
    return w->shape[w->ndim - 1] - w->idx[w->ndim - 1];
}

/* Advances `count` (<= walk_row_left) elements, carrying into outer axes. */
static void walk_advance(strided_walk *w, int64_t count)
{
    int k = w->ndim - 1;
    w->idx[k] += count;
    for (int s = 0; s < w->inputs; s++)
        w->off[s] += count * w->stride[s][k];
    while (k > 0 && w->idx[k] == w->shape[k]) {
        for (int s = 0; s < w->inputs; s++)
            w->off[s] += w->stride[s][k - 1] - w->idx[k] * w->stride[s][k];
        w->idx[k] = 0;
        w->idx[--k]++;
    }
}

/* ---- binary: c = a (op) b with broadcasting strides --------------------- */

CPU_CLONES static void binary_range(const void *ctx, int64_t begin,
                                    int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_binary_args *p = &c->p.binary;
    const float *a = cpu_f32(c->in[0].buf), *b = cpu_f32(c->in[1].buf);
    float *out = cpu_f32(c->out[0].buf);
    int last = p->ndim - 1;
    strided_walk w = {.ndim = p->ndim, .inputs = 2, .shape = p->shape,
                      .stride = {p->stride_a, p->stride_b}};
    walk_start(&w, begin);
    for (int64_t pos = begin; pos < end;) {
        int64_t len = walk_row_left(&w);
        if (len > end - pos)
            len = end - pos;
        binary_row(c->op, out + pos, a + w.off[0], p->stride_a[last],
                   b + w.off[1], p->stride_b[last], len);
        walk_advance(&w, len);
        pos += len;
    }
}

/* The same on 16-bit elements: each row is cut into blocks, an operand
 * broadcast along the row (stride 0) is widened once. */
CPU_CLONES static void half_binary_range(const void *ctx, int64_t begin,
                                         int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_binary_args *p = &c->p.binary;
    int last = p->ndim - 1;
    int64_t sa = p->stride_a[last], sb = p->stride_b[last];
    float a[HALF_BLOCK], b[HALF_BLOCK], out[HALF_BLOCK];
    strided_walk w = {.ndim = p->ndim, .inputs = 2, .shape = p->shape,
                      .stride = {p->stride_a, p->stride_b}};
    walk_start(&w, begin);
    for (int64_t pos = begin; pos < end;) {
        int64_t len = walk_row_left(&w);
        if (len > end - pos)
            len = end - pos;
        for (int64_t j = 0; j < len; j += HALF_BLOCK) {
            int64_t n = len - j < HALF_BLOCK ? len - j : HALF_BLOCK;
            half_load(c->in[0].dtype, half_at(c->in[0].buf, w.off[0] + j * sa),
                      sa, a, sa ? n : 1);
            half_load(c->in[1].dtype, half_at(c->in[1].buf, w.off[1] + j * sb),
                      sb, b, sb ? n : 1);
            binary_row(c->op, out, a, sa ? 1 : 0, b, sb ? 1 : 0, n);
            half_store(c->out[0].dtype, out,
                       (uint16_t *)c->out[0].buf + pos + j, n);
        }
        walk_advance(&w, len);
        pos += len;
    }
}

xg_status cpu_binary(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.binary.n,
                          CPU_COST_SIMPLE,
                          call->out[0].dtype == XG_F32 ? binary_range
                                                       : half_binary_range,
                          call);
    return XG_OK;
}

/* ---- copy_strided: out[out strides] = in[in strides] --------------------- */

/* Copies elements [begin, end) of `c` whose size is `size` bytes; the bits
 * move unchanged. Inlined into one copy per size, so each fixed-size
 * memcpy is a single load and store. */
static inline void strided_rows(const xg_kernel_call *c, int64_t begin,
                                int64_t end, size_t size)
{
    const xg_strided_args *p = &c->p.strided;
    const char *in = (const char *)c->in[0].buf + p->in_offset * size;
    char *out = (char *)c->out[0].buf + p->out_offset * size;
    int last = p->ndim - 1;
    int64_t si = p->in_stride[last], so = p->out_stride[last];
    strided_walk w = {.ndim = p->ndim, .inputs = 2, .shape = p->shape,
                      .stride = {p->in_stride, p->out_stride}};
    walk_start(&w, begin);
    for (int64_t pos = begin; pos < end;) {
        int64_t len = walk_row_left(&w);
        if (len > end - pos)
            len = end - pos;
        const char *src = in + w.off[0] * size;
        char *dst = out + w.off[1] * size;
        if (si == 1 && so == 1)
            memcpy(dst, src, (size_t)len * size);
        else
            for (int64_t i = 0; i < len; i++)
                memcpy(dst + i * so * (int64_t)size,
                       src + i * si * (int64_t)size, size);
        walk_advance(&w, len);
        pos += len;
    }
}

static void strided_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    strided_rows(ctx, begin, end, 4);
}

/* bf16 and f16. */
static void strided16_range(const void *ctx, int64_t begin, int64_t end,
                            int t)
{
    (void)t;
    strided_rows(ctx, begin, end, 2);
}

xg_status cpu_copy_strided(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.strided.n,
                          CPU_COST_SIMPLE,
                          xg_dtype_size(call->out[0].dtype) == 2
                              ? strided16_range : strided_range,
                          call);
    return XG_OK;
}

/* ---- copy and fill ------------------------------------------------------ */

static void copy_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    memcpy(cpu_f32(c->out[0].buf) + begin, cpu_f32(c->in[0].buf) + begin,
           (size_t)(end - begin) * sizeof(float));
}

static void copy16_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    memcpy((uint16_t *)(void *)c->out[0].buf + begin,
           (const uint16_t *)(void *)c->in[0].buf + begin,
           (size_t)(end - begin) * sizeof(uint16_t));
}

xg_status cpu_copy(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.fill.n, CPU_COST_SIMPLE,
                          xg_dtype_size(call->out[0].dtype) == 2
                              ? copy16_range : copy_range,
                          call);
    return XG_OK;
}

static void fill_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const float value = c->p.fill.value;
    float *out = cpu_f32(c->out[0].buf);
    for (int64_t i = begin; i < end; i++)
        out[i] = value;
}

typedef struct fill16_ctx {
    uint16_t *out;
    uint16_t value;
} fill16_ctx;

static void fill16_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const fill16_ctx *c = ctx;
    for (int64_t i = begin; i < end; i++)
        c->out[i] = c->value;
}

xg_status cpu_fill(xg_backend_device *dev, const xg_kernel_call *call)
{
    xg_dtype t = call->out[0].dtype;
    if (t == XG_BF16 || t == XG_F16) { /* the value rounded once */
        float v = call->p.fill.value;
        fill16_ctx c = {(uint16_t *)(void *)call->out[0].buf,
                        t == XG_BF16 ? xg__f32_to_bf16_1(v)
                                     : xg__f32_to_f16_1(v)};
        cpu_parallel_elements(cpu_dev(dev)->pool, call->p.fill.n,
                              CPU_COST_SIMPLE, fill16_range, &c);
        return XG_OK;
    }
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.fill.n, CPU_COST_SIMPLE,
                          fill_range, call);
    return XG_OK;
}
