/* Fused optimizer updates, in place: Adam/AdamW and SGD (with momentum,
 * dampening, Nesterov), with the formulas of api/core/backend.h. */
#include "cpu_impl.h"

#include <math.h>

/* ---- Adam / AdamW ----------------------------------------------------------
 * reference: PyTorch torch.optim.Adam and AdamW (single-tensor path):
 *   step_size = lr / bias1, denom = sqrt(v) / sqrt(bias2) + eps,
 *   p -= step_size * m / denom. */

static void adam_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_adam_args a = c->p.adam;
    const float *grad = cpu_f32(c->in[0].buf);
    float *p = cpu_f32(c->out[0].buf), *m = cpu_f32(c->out[1].buf),
          *v = cpu_f32(c->out[2].buf);
    const float step_size = a.lr / a.bias1, bias2_sqrt = sqrtf(a.bias2);
    const int l2 = !a.decoupled && a.weight_decay != 0.0f;
    const float decay = a.decoupled ? 1.0f - a.lr * a.weight_decay : 1.0f;
    for (int64_t i = begin; i < end; i++) {
        float g = l2 ? grad[i] + a.weight_decay * p[i] : grad[i];
        p[i] *= decay;
        m[i] = a.beta1 * m[i] + (1.0f - a.beta1) * g;
        v[i] = a.beta2 * v[i] + (1.0f - a.beta2) * g * g;
        p[i] -= step_size * m[i] / (sqrtf(v[i]) / bias2_sqrt + a.eps);
    }
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

static void sgd_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_sgd_args s = c->p.sgd;
    const float *grad = cpu_f32(c->in[0].buf);
    float *p = cpu_f32(c->out[0].buf);
    float *buf = s.momentum != 0.0f ? cpu_f32(c->out[1].buf) : NULL;
    for (int64_t i = begin; i < end; i++) {
        /* As PyTorch, weight decay 0 adds nothing (not 0 * p, NaN for an
         * infinite p). */
        float g = s.weight_decay != 0.0f ? grad[i] + s.weight_decay * p[i]
                                         : grad[i];
        if (buf) {
            buf[i] = s.first ? g
                             : s.momentum * buf[i] + (1.0f - s.dampening) * g;
            g = s.nesterov ? g + s.momentum * buf[i] : buf[i];
        }
        p[i] -= s.lr * g;
    }
}

/* out: param, momentum buffer (NULL when momentum is 0); in[0] = grad. */
xg_status cpu_sgd_update(xg_backend_device *dev, const xg_kernel_call *call)
{
    cpu_parallel_elements(cpu_dev(dev)->pool, call->p.sgd.n,
                          2 * CPU_COST_SIMPLE, sgd_range, call);
    return XG_OK;
}
