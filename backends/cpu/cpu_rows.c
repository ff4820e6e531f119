/* Row ops over the last axis of a [rows, cols] view: softmax, log_softmax,
 * cross-entropy and its backward.
 *
 * The range functions are CPU_CLONES although their loops hardly
 * vectorise: in VEX code, the calls into glibc's expf (itself VEX) no
 * longer switch between legacy-SSE and AVX state, which had made each
 * call several times slower (measured: the MLP sample's cross-entropy,
 * 6% of its training, to 3%).
 *
 * All are computed from the row's maximum m and s = sum_j exp(x_j - m), so
 * exp never overflows (the usual log-sum-exp shift). A NaN in a row makes the
 * whole row's result NaN. */
#include "cpu_impl.h"

#include <assert.h>
#include <math.h>

/* m = max_j x[j]; s = sum_j e[j] with e[j] = exp(x[j] - m), summed in 8 double
 * lanes that are then added pairwise. Stores e[] to `e` unless
 * it is NULL (e may be the output row: x is read before e is written). */
CPU_INLINE void row_stats(const float *x, int64_t n, float *e, float *m,
                          float *s)
{
    float mx = x[0];
    for (int64_t j = 1; j < n; j++)
        mx = x[j] > mx ? x[j] : mx;
    /* Double lanes: a row of millions of columns keeps f32 precision. */
    double lane[8] = {0};
    for (int64_t j = 0; j < n; j++) {
        float ej = expf(x[j] - mx);
        if (e)
            e[j] = ej;
        lane[j % 8] += ej;
    }
    *m = mx;
    *s = (float)(((lane[0] + lane[1]) + (lane[2] + lane[3])) +
                 ((lane[4] + lane[5]) + (lane[6] + lane[7])));
}

/* ---- softmax, log_softmax --------------------------------------------------
 * reference: softmax_j = exp(x_j - m) / s; log_softmax_j = (x_j - m) - log s
 * (PyTorch's vectorised CPU kernels use the same shift). */

CPU_CLONES static void softmax_range(const void *ctx, int64_t begin, int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    int64_t cols = c->p.rows.cols;
    for (int64_t r = begin; r < end; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        float *y = cpu_f32(c->out[0].buf) + r * cols;
        float m, s;
        if (c->op == XG_OP_softmax) {
            row_stats(x, cols, y, &m, &s);
            for (int64_t j = 0; j < cols; j++)
                y[j] /= s;
        } else {
            row_stats(x, cols, NULL, &m, &s);
            const float log_s = logf(s);
            for (int64_t j = 0; j < cols; j++)
                y[j] = (x[j] - m) - log_s;
        }
    }
}

/* softmax and log_softmax. */
xg_status cpu_softmax(xg_backend_device *dev, const xg_kernel_call *call)
{
    assert(call->op == XG_OP_softmax || call->op == XG_OP_log_softmax);
    const xg_rows_args *p = &call->p.rows;
    cpu_parallel_rows(cpu_dev(dev)->pool, p->rows, p->cols * CPU_COST_LIBM,
                      softmax_range, call);
    return XG_OK;
}

/* ---- cross-entropy ---------------------------------------------------------
 * reference: PyTorch CrossEntropyLoss (reduction='none', ignore_index):
 *   loss = logsumexp(x) - x[label] = log s - (x[label] - m),
 * which is exactly -log_softmax(x)[label]; 0 for a row labelled
 * ignore_index, which also gets counted = 0 (out[1]) and dx = 0. */

static int label_ok(int32_t label, int64_t cols)
{
    return label >= 0 && label < cols;
}

CPU_CLONES static void cross_entropy_range(const void *ctx, int64_t begin, int64_t end,
                                int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    int64_t cols = c->p.rows.cols;
    int32_t ignore = c->p.rows.ignore_index;
    const int32_t *labels = cpu_i32(c->in[1].buf);
    float *loss = cpu_f32(c->out[0].buf);
    float *counted = cpu_f32(c->out[1].buf);
    for (int64_t r = begin; r < end; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        counted[r] = labels[r] == ignore ? 0.0f : 1.0f;
        if (labels[r] == ignore) {
            loss[r] = 0.0f;
            continue;
        }
        if (!label_ok(labels[r], cols)) {
            loss[r] = NAN;
            continue;
        }
        float m, s;
        row_stats(x, cols, NULL, &m, &s);
        loss[r] = logf(s) - (x[labels[r]] - m);
    }
}

xg_status cpu_cross_entropy(xg_backend_device *dev,
                            const xg_kernel_call *call)
{
    const xg_rows_args *p = &call->p.rows;
    cpu_parallel_rows(cpu_dev(dev)->pool, p->rows, p->cols * CPU_COST_LIBM,
                      cross_entropy_range, call);
    return XG_OK;
}

/* dx_j = (softmax(x)_j - [j == label]) * g; 0 over an ignored row, NaN
 * over a row with a bad label. */
CPU_CLONES static void cross_entropy_backward_range(const void *ctx, int64_t begin,
                                         int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    int64_t cols = c->p.rows.cols;
    int32_t ignore = c->p.rows.ignore_index;
    const int32_t *labels = cpu_i32(c->in[1].buf);
    const float *g = cpu_f32(c->in[2].buf);
    for (int64_t r = begin; r < end; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        float *dx = cpu_f32(c->out[0].buf) + r * cols;
        if (labels[r] == ignore || !label_ok(labels[r], cols)) {
            float v = labels[r] == ignore ? 0.0f : NAN;
            for (int64_t j = 0; j < cols; j++)
                dx[j] = v;
            continue;
        }
        float m, s;
        row_stats(x, cols, dx, &m, &s);
        for (int64_t j = 0; j < cols; j++)
            dx[j] = (dx[j] / s - (j == labels[r] ? 1.0f : 0.0f)) * g[r];
    }
}

xg_status cpu_cross_entropy_backward(xg_backend_device *dev,
                                     const xg_kernel_call *call)
{
    const xg_rows_args *p = &call->p.rows;
    cpu_parallel_rows(cpu_dev(dev)->pool, p->rows, p->cols * CPU_COST_LIBM,
                      cross_entropy_backward_range, call);
    return XG_OK;
}
