/* ADAM and SGD families: fused, in-place optimizer updates; one work-item
 * per parameter element (grid-stride). Formulas: api/backend.h. */

__kernel void xg_adam_update(__global const float *grad, __global float *param,
                             __global float *exp_avg,
                             __global float *exp_avg_sq, long n, float lr,
                             float beta1, float beta2, float eps,
                             float weight_decay, float bias1, float bias2,
                             int decoupled)
{
    XG_FOR_EACH(i, n) {
        float g = grad[i], p = param[i];
        if (!decoupled && weight_decay != 0.0f)
            g += weight_decay * p;
        if (decoupled)
            p *= 1.0f - lr * weight_decay;
        float m = beta1 * exp_avg[i] + (1.0f - beta1) * g;
        float v = beta2 * exp_avg_sq[i] + (1.0f - beta2) * g * g;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
        param[i] = p - lr / bias1 * m / (sqrt(v) / sqrt(bias2) + eps);
    }
}

/* momentum_buffer is unused (and may be NULL) when momentum is 0. */
__kernel void xg_sgd_update(__global const float *grad, __global float *param,
                            __global float *momentum_buffer, long n, float lr,
                            float momentum, float dampening,
                            float weight_decay, int nesterov, int first)
{
    XG_FOR_EACH(i, n) {
        float p = param[i];
        float g = grad[i] + weight_decay * p;
        if (momentum != 0.0f) {
            float buf = first ? g
                              : momentum * momentum_buffer[i] +
                                    (1.0f - dampening) * g;
            momentum_buffer[i] = buf;
            g = nesterov ? g + momentum * buf : buf;
        }
        param[i] = p - lr * g;
    }
}
