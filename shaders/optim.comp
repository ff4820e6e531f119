/* Fused optimizer updates, in place (PyTorch's formulas):
 * OP_ADAM_UPDATE (struct xg_adam_args), OP_SGD_UPDATE (struct xg_sgd_args), with
 * -DMOMENTUM for SGD with a momentum buffer. in[0] is the gradient. */
#version 450
#extension GL_GOOGLE_include_directive : require
#include "common.glsl"

layout(local_size_x = XG_WG_SIZE) in;

XG_IN(0, float, grad);
XG_INOUT(0, float, param);

#if defined(OP_ADAM_UPDATE)

layout(push_constant) uniform Push {
    uint n;
    float lr, beta1, beta2, eps, weight_decay;
    float bias1, bias2;
    uint decoupled;
} pc;

XG_INOUT(1, float, exp_avg);
XG_INOUT(2, float, exp_avg_sq);

void main()
{
    XG_FOR_EACH(i, pc.n) {
        float g = grad[i], p = param[i];
        if (pc.decoupled != 0u)
            p *= 1.0f - pc.lr * pc.weight_decay;
        else if (pc.weight_decay != 0.0f)
            g += pc.weight_decay * p;
        float m = pc.beta1 * exp_avg[i] + (1.0f - pc.beta1) * g;
        float v = pc.beta2 * exp_avg_sq[i] + (1.0f - pc.beta2) * g * g;
        float denom = sqrt(v) / sqrt(pc.bias2) + pc.eps;
        param[i] = p - pc.lr / pc.bias1 * m / denom;
        exp_avg[i] = m;
        exp_avg_sq[i] = v;
    }
}

#elif defined(OP_SGD_UPDATE)

layout(push_constant) uniform Push {
    uint n;
    float lr, momentum, dampening, weight_decay;
    uint nesterov, first;
} pc;

#ifdef MOMENTUM
XG_INOUT(1, float, momentum_buffer);
#endif

void main()
{
    XG_FOR_EACH(i, pc.n) {
        float p = param[i];
        float g = grad[i] + pc.weight_decay * p;
#ifdef MOMENTUM
        float buf = pc.first != 0u
                        ? g
                        : pc.momentum * momentum_buffer[i] +
                              (1.0f - pc.dampening) * g;
        momentum_buffer[i] = buf;
        g = pc.nesterov != 0u ? g + pc.momentum * buf : buf;
#endif
        param[i] = p - pc.lr * g;
    }
}

#else
#error "optim.comp: no OP_ defined"
#endif
