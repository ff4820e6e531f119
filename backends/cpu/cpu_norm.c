/* Layer norm over the last axis of a [rows, cols] view (the NORM family):
 * the forward, dx, and the column sums that give dweight and dbias.
 *
 * reference: torch.nn.functional.layer_norm (biased variance, eps inside
 * the square root). The row statistics are summed in 8 double lanes
 * (added pairwise at the end), each fed a float sum of 4 neighbouring
 * terms, which the compiler vectorises; the mean comes
 * first and the variance is a second pass over (x - mean), so a large
 * offset common to a row costs no precision. Everything elementwise is
 * float arithmetic in the order api/core/backend.h (xg_norm_args) writes
 * it, as the GPU kernels compute it. */
#include "cpu_impl.h"

#include <assert.h>
#include <math.h>

enum { LANES = 8 };

/* The lanes of a row sum, added pairwise. */
static double lanes_total(const double *lane)
{
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* sum_j x[j] in double: blocks of 4 x LANES elements are summed in float
 * lanes (vectorised, 4 terms each), then added to the double lanes. */
static double row_sum(const float *x, int64_t n)
{
    double lane[LANES] = {0};
    int64_t j = 0;
    for (; j + 4 * LANES <= n; j += 4 * LANES) {
        float f[LANES];
        for (int k = 0; k < LANES; k++)
            f[k] = (x[j + k] + x[j + LANES + k]) +
                   (x[j + 2 * LANES + k] + x[j + 3 * LANES + k]);
        for (int k = 0; k < LANES; k++)
            lane[k] += (double)f[k];
    }
    for (int k = 0; j < n; j++, k = (k + 1) % LANES)
        lane[k] += (double)x[j];
    return lanes_total(lane);
}

/* sum_j (x[j] - mean)^2 in double, blocked as row_sum. */
static double row_sq_dev(const float *x, int64_t n, double mean)
{
    double lane[LANES] = {0};
    const float m = (float)mean;
    int64_t j = 0;
    for (; j + 4 * LANES <= n; j += 4 * LANES) {
        float f[LANES];
        for (int k = 0; k < LANES; k++) {
            float d0 = x[j + k] - m, d1 = x[j + LANES + k] - m;
            float d2 = x[j + 2 * LANES + k] - m, d3 = x[j + 3 * LANES + k] - m;
            f[k] = (d0 * d0 + d1 * d1) + (d2 * d2 + d3 * d3);
        }
        for (int k = 0; k < LANES; k++)
            lane[k] += (double)f[k];
    }
    for (int k = 0; j < n; j++, k = (k + 1) % LANES) {
        double d = (double)x[j] - (double)m;
        lane[k] += d * d;
    }
    return lanes_total(lane);
}

/* ---- forward ------------------------------------------------------------- */

static void layer_norm_range(const void *ctx, int64_t begin, int64_t end,
                             int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_norm_args *p = &c->p.norm;
    int64_t cols = p->cols;
    const float *w = p->has_weight ? cpu_f32(c->in[1].buf) : NULL;
    const float *b = p->has_bias ? cpu_f32(c->in[2].buf) : NULL;
    float *mean_out = cpu_f32(c->out[1].buf);
    float *rstd_out = cpu_f32(c->out[2].buf);
    for (int64_t r = begin; r < end; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        float *y = cpu_f32(c->out[0].buf) + r * cols;
        double mean = row_sum(x, cols) / (double)cols;
        double var = row_sq_dev(x, cols, mean) / (double)cols;
        const float m = (float)mean;
        const float s = (float)(1.0 / sqrt(var + (double)p->eps));
        mean_out[r] = m;
        rstd_out[r] = s;
        /* One loop per case, so that each vectorises without branches. */
        if (w && b)
            for (int64_t j = 0; j < cols; j++)
                y[j] = (x[j] - m) * s * w[j] + b[j];
        else if (w)
            for (int64_t j = 0; j < cols; j++)
                y[j] = (x[j] - m) * s * w[j];
        else if (b)
            for (int64_t j = 0; j < cols; j++)
                y[j] = (x[j] - m) * s + b[j];
        else
            for (int64_t j = 0; j < cols; j++)
                y[j] = (x[j] - m) * s;
    }
}

/* ---- dx ------------------------------------------------------------------
 * dx_j = rstd * (gw_j - mean(gw) - xhat_j * mean(gw * xhat)), gw = g * w. */

static void layer_norm_backward_range(const void *ctx, int64_t begin,
                                      int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_norm_args *p = &c->p.norm;
    int64_t cols = p->cols;
    const float *w = p->has_weight ? cpu_f32(c->in[1].buf) : NULL;
    const float *mean = cpu_f32(c->in[3].buf);
    const float *rstd = cpu_f32(c->in[4].buf);
    for (int64_t r = begin; r < end; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        const float *g = cpu_f32(c->in[2].buf) + r * cols;
        float *dx = cpu_f32(c->out[0].buf) + r * cols;
        const float m = mean[r], s = rstd[r];
        double l1[LANES] = {0}, l2[LANES] = {0};
        for (int64_t j0 = 0; j0 < cols; j0 += LANES) {
            int64_t n = cols - j0 < LANES ? cols - j0 : LANES;
            for (int64_t k = 0; k < n; k++) {
                int64_t j = j0 + k;
                float xh = (x[j] - m) * s;
                float gw = w ? g[j] * w[j] : g[j];
                l1[k] += (double)gw;
                l2[k] += (double)(gw * xh);
            }
        }
        const float a = (float)(lanes_total(l1) / (double)cols);
        const float bb = (float)(lanes_total(l2) / (double)cols);
        if (w)
            for (int64_t j = 0; j < cols; j++) {
                float xh = (x[j] - m) * s;
                dx[j] = s * (g[j] * w[j] - a - xh * bb);
            }
        else
            for (int64_t j = 0; j < cols; j++) {
                float xh = (x[j] - m) * s;
                dx[j] = s * (g[j] - a - xh * bb);
            }
    }
}

/* ---- dweight, dbias -------------------------------------------------------
 * Each thread owns a range of columns and walks the rows in increasing
 * order, so every column's sums are formed in the order backend.h fixes;
 * the inner loop runs along a row (contiguous, vectorised). */

static void layer_norm_affine_range(const void *ctx, int64_t begin,
                                    int64_t end, int t)
{
    (void)t;
    const xg_kernel_call *c = ctx;
    const xg_norm_args *p = &c->p.norm;
    int64_t cols = p->cols;
    const float *mean = cpu_f32(c->in[2].buf);
    const float *rstd = cpu_f32(c->in[3].buf);
    float *dw = cpu_f32(c->out[0].buf);
    float *db = cpu_f32(c->out[1].buf);
    for (int64_t j = begin; j < end; j++)
        dw[j] = db[j] = 0.0f;
    for (int64_t r = 0; r < p->rows; r++) {
        const float *x = cpu_f32(c->in[0].buf) + r * cols;
        const float *g = cpu_f32(c->in[1].buf) + r * cols;
        const float m = mean[r], s = rstd[r];
        for (int64_t j = begin; j < end; j++) {
            float xh = (x[j] - m) * s;
            dw[j] += g[j] * xh;
            db[j] += g[j];
        }
    }
}

xg_status cpu_layer_norm(xg_backend_device *dev, const xg_kernel_call *call)
{
    const xg_norm_args *p = &call->p.norm;
    cpu_pool *pool = cpu_dev(dev)->pool;
    switch (call->op) {
    case XG_OP_layer_norm:
        cpu_parallel_rows(pool, p->rows, p->cols * 6, layer_norm_range,
                          call);
        break;
    case XG_OP_layer_norm_backward:
        cpu_parallel_rows(pool, p->rows, p->cols * 8,
                          layer_norm_backward_range, call);
        break;
    default:
        assert(call->op == XG_OP_layer_norm_backward_affine);
        /* Ranges of 16 columns: threads never write to one cache line. */
        cpu_parallel_for(pool, p->cols, p->rows * 4, 16,
                         layer_norm_affine_range, call);
        break;
    }
    return XG_OK;
}
