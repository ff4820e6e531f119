/* Where the device memory of a GPT training step goes, per precision: the
 * bytes of the parameters, their gradients and the optimizer state (fixed:
 * f32 whatever the precision) and the activation peak (the most a training
 * step holds on top of those), from xgrad's device memory counters
 * (xg_device_memory). The step is the gpt sample's: autocast forward and
 * loss, backward (f16: scaled), gradient clipping to norm 1, AdamW.
 *
 *   bench_amp_memory [layers heads embd context batch steps]
 *                    (default 8 8 512 256 8 4)
 *
 * Prints one line per precision (f32, bf16, f16), in MiB:
 *   precision=bf16 params=... grads=... optim=... fixed=... act_peak=...
 *   peak=... step_s=...
 * The activation peak is the median over the steps after the first of
 * (peak during the step) - (in use at its start, after
 * xg_optim_zero_grad: the parameters and the optimizer state; the
 * gradients, which zero_grad drops, are made during the backward as the
 * activations go, and count in it); grads are the bytes of the gradients
 * that the first step left, optim what else it left beyond them. */
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "bench_util.h"
#include "xgrad.h"

enum { MAX_STEPS = 64 };

static double mib(uint64_t b)
{
    return (double)b / (1024.0 * 1024.0);
}

static uint64_t in_use(xg_device *dev)
{
    xg_device_memory_info m;
    xg_device_memory(dev, &m);
    return m.in_use;
}

static uint64_t peak(xg_device *dev)
{
    xg_device_memory_info m;
    xg_device_memory(dev, &m);
    return m.peak;
}

/* One training step as the gpt sample's; 0 on success. */
static int step(xg_module *gpt, xg_optim *opt, xg_grad_scaler *sc,
                xg_tensor **params, int n_params, xg_dtype autocast,
                const int32_t *tokens, int64_t b, int64_t t, int64_t vocab)
{
    xg_scope *s = xg_scope_begin();
    int64_t shape[2] = {b, t}, flat[1] = {b * t}, rows[2] = {b * t, vocab};
    xg_tensor *x = xg_tensor_from_data(tokens, XG_I32, shape, 2);
    xg_tensor *y = xg_tensor_from_data(tokens + 1, XG_I32, shape, 2);
    xg_dtype was = xg_set_autocast(autocast);
    xg_tensor *logits = x && y ? xg_module_forward(gpt, x) : NULL;
    xg_tensor *loss = logits ? xg_cross_entropy(xg_reshape(logits, rows, 2),
                                                xg_reshape(y, flat, 1))
                             : NULL;
    xg_set_autocast(was);
    if (loss && sc)
        loss = xg_grad_scaler_scale(sc, loss);
    xg_status st = loss ? xg_backward_ex(loss, false) : xg_last_status();
    float v;
    if (st == XG_OK)
        st = xg_tensor_item(loss, &v);
    xg_scope_end(s);
    if (st == XG_OK && sc)
        st = xg_grad_scaler_unscale(sc, opt);
    if (st == XG_OK)
        st = xg_clip_grad_norm(params, n_params, 1.0f, NULL);
    if (st == XG_OK)
        st = sc ? xg_grad_scaler_step(sc, opt, NULL) : xg_optim_step(opt);
    if (st == XG_OK && sc)
        st = xg_grad_scaler_update(sc);
    if (st != XG_OK)
        fprintf(stderr, "bench_amp_memory: %s\n", xg_last_error());
    return st != XG_OK;
}

static int run(xg_dtype autocast, const xg_gpt_config *cfg, int64_t batch,
               int steps, const int32_t *tokens)
{
    xg_device *dev = xg_device_current();
    if (!dev)
        return 1;
    xg_manual_seed(1);
    uint64_t base = in_use(dev);
    xg_module *gpt = xg_gpt(cfg);
    xg_optim *opt = gpt ? xg_gpt_adamw(gpt, NULL) : NULL;
    xg_grad_scaler *sc = autocast == XG_F16 ? xg_grad_scaler_new(NULL) : NULL;
    int n = gpt ? xg_module_param_count(gpt) : 0;
    xg_tensor *params[1024];
    if (!opt || n > 1024 || (autocast == XG_F16 && !sc)) {
        fprintf(stderr, "bench_amp_memory: %s\n", xg_last_error());
        return 1;
    }
    for (int i = 0; i < n; i++)
        params[i] = xg_module_param(gpt, i, NULL);
    uint64_t p_bytes = in_use(dev) - base;
    uint64_t g_bytes = 0;
    double act[MAX_STEPS], secs[MAX_STEPS];
    uint64_t fixed = 0, top = 0;
    int rc = 0;
    for (int k = 0; k < steps && !rc; k++) {
        if (k == 1) { /* the gradients exist; the optimizer state too */
            for (int i = 0; i < n; i++) {
                xg_tensor *g = xg_tensor_grad(params[i]);
                if (g)
                    g_bytes += (uint64_t)xg_tensor_numel(g) *
                               xg_dtype_size(xg_tensor_dtype(g));
            }
            fixed = in_use(dev) - base;
        }
        xg_optim_zero_grad(opt); /* drops the gradients */
        uint64_t before = in_use(dev);
        xg_device_reset_peak_memory(dev);
        double t0 = bench_now();
        rc = step(gpt, opt, sc, params, n, autocast, tokens, batch,
                  cfg->context, cfg->vocab_size);
        secs[k] = bench_now() - t0;
        act[k] = mib(peak(dev) - before);
        if (peak(dev) - base > top)
            top = peak(dev) - base;
    }
    if (!rc && steps > 1)
        printf("precision=%s params=%.1f grads=%.1f optim=%.1f fixed=%.1f "
               "act_peak=%.1f peak=%.1f step_s=%.3f\n",
               xg_dtype_name(autocast), mib(p_bytes), mib(g_bytes),
               mib(fixed - p_bytes - g_bytes), mib(fixed),
               bench_median(act + 1, steps - 1), mib(top),
               bench_median(secs + 1, steps - 1));
    xg_grad_scaler_free(sc);
    xg_optim_free(opt);
    xg_module_free(gpt);
    return rc;
}

int main(int argc, char **argv)
{
    long l = bench_arg(argc, argv, 1, 8, 1000),
         h = bench_arg(argc, argv, 2, 8, 4096),
         e = bench_arg(argc, argv, 3, 512, 1 << 16),
         c = bench_arg(argc, argv, 4, 256, 1 << 16),
         b = bench_arg(argc, argv, 5, 8, 1 << 16),
         steps = bench_arg(argc, argv, 6, 4, MAX_STEPS);
    if (l < 0 || h < 0 || e < 0 || c < 0 || b < 0 || steps < 0)
        return 2;
    if (steps < 2) {
        fprintf(stderr, "%s: at least 2 steps\n", argv[0]);
        return 2;
    }
    xg_gpt_config cfg = {.vocab_size = 256, .context = c, .n_layer = l,
                         .n_head = h, .n_embd = e, .dropout = 0,
                         .bias = true, .layer_norm_eps = 1e-5f};
    int64_t count = b * c + 1;
    int32_t *tokens = malloc(sizeof *tokens * (size_t)count);
    if (!tokens)
        return 1;
    uint32_t r = 12345;
    for (int64_t i = 0; i < count; i++) {
        r = r * 1664525u + 1013904223u;
        tokens[i] = (int32_t)(r >> 24);
    }
    const char *only = getenv("PRECISION"); /* f32, bf16 or f16: just one */
    xg_dtype all[3] = {XG_F32, XG_BF16, XG_F16};
    int rc = 0;
    for (int i = 0; i < 3 && !rc; i++)
        if (!only || !strcmp(only, xg_dtype_name(all[i])))
            rc = run(all[i], &cfg, b, (int)steps, tokens);
    free(tokens);
    xg_shutdown();
    return rc;
}
