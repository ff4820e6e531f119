/* Fused optimizer updates, in place: Adam/AdamW and SGD (with momentum,
 * dampening, Nesterov), with the formulas of api/core/backend.h.
 *
 * Each update is one pass over its arrays, compiled once per variant (the
 * flags are constants at the call sites of the inline loops) with restrict
 * pointers, so that GCC vectorises it without run-time alias checks, and
 * for the ISAs of CPU_CLONES. Every element is independent and no variant
 * reassociates or contracts, so the bits do not depend on the thread count
 * or the clone the loader picks. */
#include "cpu_impl.h"

#include <math.h>
#include <stdbool.h>

/* ---- Adam / AdamW ----------------------------------------------------------
 * reference: PyTorch torch.optim.Adam and AdamW (single-tensor path):
 *   step_size = lr / bias1, denom = sqrt(v) / sqrt(bias2) + eps,
 *   p -= step_size * m / denom.
 * The division by sqrt(bias2), a per-step scalar, is a multiplication by
 * its reciprocal here: the denominator may differ from PyTorch's by one
 * rounding (well inside the optimizer tests' tolerance), and the one
 * division left per element is the one by denom. */

typedef struct adam_consts {
    float beta1, one_m_beta1, beta2, one_m_beta2, eps, weight_decay;
    float step_size, inv_bias2_sqrt, decay;
} adam_consts;

enum { ADAM_PLAIN, ADAM_L2, ADAM_DECOUPLED };

CPU_INLINE void adam_loop(float *restrict p, float *restrict m,
                          float *restrict v, const float *restrict grad,
                          int64_t n, adam_consts k, int mode)
{
    for (int64_t i = 0; i < n; i++) {
        float pi = p[i];
        float g = mode == ADAM_L2 ? grad[i] + k.weight_decay * pi : grad[i];
        if (mode == ADAM_DECOUPLED)
            pi *= k.decay;
        float mi = k.beta1 * m[i] + k.one_m_beta1 * g;
        float vi = k.beta2 * v[i] + k.one_m_beta2 * g * g;
        m[i] = mi;
        v[i] = vi;
        p[i] = pi - k.step_size * mi / (sqrtf(vi) * k.inv_bias2_sqrt + k.eps);
    }
}

CPU_CLONES static void adam_range(const void *ctx, int64_t begin, int64_t end,
                                  int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_adam_args a = c->p.adam;
    const float *grad = cpu_f32(c->in[0].buf) + begin;
    float *p = cpu_f32(c->out[0].buf) + begin,
          *m = cpu_f32(c->out[1].buf) + begin,
          *v = cpu_f32(c->out[2].buf) + begin;
    int64_t n = end - begin;
    adam_consts k = {
        .beta1 = a.beta1, .one_m_beta1 = 1.0f - a.beta1,
        .beta2 = a.beta2, .one_m_beta2 = 1.0f - a.beta2,
        .eps = a.eps, .weight_decay = a.weight_decay,
        .step_size = a.lr / a.bias1, .inv_bias2_sqrt = 1.0f / sqrtf(a.bias2),
        .decay = 1.0f - a.lr * a.weight_decay};
    if (a.decoupled)
        adam_loop(p, m, v, grad, n, k, ADAM_DECOUPLED);
    else if (a.weight_decay != 0.0f)
        adam_loop(p, m, v, grad, n, k, ADAM_L2);
    else
        adam_loop(p, m, v, grad, n, k, ADAM_PLAIN);
}

/* out: param, exp_avg, exp_avg_sq; in[0] = grad. */
xg_status cpu_adam_update(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.adam.n,
                          4 * CPU_COST_SIMPLE, adam_range, call);
    return XG_OK;
}

/* ---- SGD -------------------------------------------------------------------
 * reference: PyTorch torch.optim.SGD:
 *   g = grad + weight_decay * p
 *   buf = first ? g : momentum * buf + (1 - dampening) * g
 *   g = nesterov ? g + momentum * buf : buf;  p -= lr * g */

/* Without momentum. As PyTorch, weight decay 0 adds nothing (not 0 * p,
 * NaN for an infinite p). */
CPU_INLINE void sgd_plain_loop(float *restrict p, const float *restrict grad,
                               int64_t n, float lr, float wd, bool decay)
{
    for (int64_t i = 0; i < n; i++) {
        float g = decay ? grad[i] + wd * p[i] : grad[i];
        p[i] -= lr * g;
    }
}

/* With momentum buffer `buf`. */
CPU_INLINE void sgd_momentum_loop(float *restrict p, float *restrict buf,
                                  const float *restrict grad, int64_t n,
                                  xg_sgd_args s, bool decay, bool first,
                                  bool nesterov)
{
    const float keep = 1.0f - s.dampening;
    for (int64_t i = 0; i < n; i++) {
        float g = decay ? grad[i] + s.weight_decay * p[i] : grad[i];
        float b = first ? g : s.momentum * buf[i] + keep * g;
        buf[i] = b;
        g = nesterov ? g + s.momentum * b : b;
        p[i] -= s.lr * g;
    }
}

/* The momentum loop for one combination of the flags, each a constant. */
#define SGD_MOMENTUM(d, f, nv) \
    sgd_momentum_loop(p, buf, grad, n, s, d, f, nv)

CPU_CLONES static void sgd_range(const void *ctx, int64_t begin, int64_t end,
                                 int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_sgd_args s = c->p.sgd;
    const float *grad = cpu_f32(c->in[0].buf) + begin;
    float *p = cpu_f32(c->out[0].buf) + begin;
    int64_t n = end - begin;
    bool decay = s.weight_decay != 0.0f;
    if (s.momentum == 0.0f) {
        if (decay)
            sgd_plain_loop(p, grad, n, s.lr, s.weight_decay, true);
        else
            sgd_plain_loop(p, grad, n, s.lr, 0.0f, false);
        return;
    }
    float *buf = cpu_f32(c->out[1].buf) + begin;
    switch ((decay ? 4 : 0) | (s.first ? 2 : 0) | (s.nesterov ? 1 : 0)) {
    case 0: SGD_MOMENTUM(false, false, false); break;
    case 1: SGD_MOMENTUM(false, false, true); break;
    case 2: SGD_MOMENTUM(false, true, false); break;
    case 3: SGD_MOMENTUM(false, true, true); break;
    case 4: SGD_MOMENTUM(true, false, false); break;
    case 5: SGD_MOMENTUM(true, false, true); break;
    case 6: SGD_MOMENTUM(true, true, false); break;
    default: SGD_MOMENTUM(true, true, true); break;
    }
}

#undef SGD_MOMENTUM

/* out: param, momentum buffer (NULL when momentum is 0); in[0] = grad. */
xg_status cpu_sgd_update(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.sgd.n,
                          2 * CPU_COST_SIMPLE, sgd_range, call);
    return XG_OK;
}
