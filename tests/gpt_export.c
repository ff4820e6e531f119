/* Writes what bench/gpt_torch.py (mode "check") compares with the same
 * GPT in PyTorch, on the backend XGRAD_BACKEND selects.
 *
 *   gpt_export DIR
 *     builds a small GPT (xg_gpt) from seed 1 and writes into DIR:
 *       init.safetensors     its initial state_dict (xg_module_save);
 *       batches.safetensors  x0..x19, y0..y19: 20 batches [4, 24] of
 *                            token ids (y is x shifted by one token) cut
 *                            from a fixed English text;
 *       out.safetensors      "logits": the initial model's logits on x0 in
 *                            evaluation mode, and as metadata the config
 *                            and "losses": the training loss of each of 20
 *                            steps (AdamW with GPT-2's parameter groups, lr
 *                            1e-3, weight decay 0.1, gradient clipping at
 *                            1.0), printed with %.9g, space-separated;
 *       final.safetensors    the state_dict after the 20 steps.
 *
 * Exits 0 on success, 1 with the error on stderr, 77 (skipped) when the
 * backend has no device, unless XGRAD_REQUIRE_BACKENDS=1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

#define STEPS 20
#define BATCH 4
#define T 24

static const char text[] =
    "It was the best of times, it was the worst of times, it was the age "
    "of wisdom, it was the age of foolishness, it was the epoch of belief, "
    "it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us.";

static int fail(const char *what)
{
    fprintf(stderr, "gpt_export: %s: %s\n", what, xg_last_error());
    return 1;
}

/* Batch `k`: rows starting at fixed pseudo-random offsets of the text. */
static void batch(int k, int32_t *x, int32_t *y)
{
    int64_t n = (int64_t)sizeof text - 1;
    for (int b = 0; b < BATCH; b++) {
        uint64_t h = (uint64_t)(k * BATCH + b + 1) * 0x9E3779B97F4A7C15ull;
        int64_t start = (int64_t)((h >> 33) % (uint64_t)(n - T - 1));
        for (int t = 0; t < T; t++) {
            x[b * T + t] = (unsigned char)text[start + t];
            y[b * T + t] = (unsigned char)text[start + t + 1];
        }
    }
}

static xg_status add_ids(xg_safetensors_writer *w, const char *name,
                         const int32_t *ids)
{
    int64_t shape[2] = {BATCH, T};
    xg_tensor *t = xg_tensor_from_data(ids, XG_I32, shape, 2);
    xg_status st = t ? xg_safetensors_writer_add(w, name, t) : xg_last_status();
    xg_tensor_free(t);
    return st;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gpt_export DIR\n");
        return 2;
    }
    char path[4096];
    const char *dir = argv[1];
    if (!xg_device_current()) {
        const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
        if (xg_last_status() == XG_ERR_NO_DEVICE && !(req && !strcmp(req, "1"))) {
            printf("gpt_export: no device: %s: skipped\n", xg_last_error());
            return 77;
        }
        return fail("device");
    }
    xg_gpt_config cfg = {.vocab_size = 256, .context = 32, .n_layer = 2,
                         .n_head = 2, .n_embd = 32, .dropout = 0.0f,
                         .bias = true, .layer_norm_eps = 1e-5f};
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&cfg);
    if (!m)
        return fail("gpt");
    snprintf(path, sizeof path, "%s/init.safetensors", dir);
    if (xg_module_save(m, path) != XG_OK)
        return fail("save init");

    int32_t x[STEPS][BATCH * T], y[STEPS][BATCH * T];
    xg_safetensors_writer *bw = xg_safetensors_writer_new();
    for (int k = 0; k < STEPS; k++) {
        char nx[8], ny[8];
        batch(k, x[k], y[k]);
        snprintf(nx, sizeof nx, "x%d", k);
        snprintf(ny, sizeof ny, "y%d", k);
        if (add_ids(bw, nx, x[k]) != XG_OK || add_ids(bw, ny, y[k]) != XG_OK)
            return fail("batches");
    }
    snprintf(path, sizeof path, "%s/batches.safetensors", dir);
    if (xg_safetensors_writer_save(bw, path) != XG_OK)
        return fail("save batches");
    xg_safetensors_writer_free(bw);

    int64_t shape[2] = {BATCH, T}, flat[1] = {BATCH * T};
    int64_t rows[2] = {BATCH * T, cfg.vocab_size};
    xg_module_set_training(m, false);
    xg_tensor *ids = xg_tensor_from_data(x[0], XG_I32, shape, 2);
    xg_tensor *logits = xg_module_forward(m, ids);
    if (!logits)
        return fail("forward");
    xg_module_set_training(m, true);

    xg_adam_options o = xg_adamw_defaults();
    o.lr = 1e-3f;
    o.weight_decay = 0.1f;
    xg_optim *opt = xg_gpt_adamw(m, &o);
    if (!opt)
        return fail("optimizer");
    int n_params = xg_module_param_count(m);
    xg_tensor **params = malloc(sizeof *params * (size_t)n_params);
    for (int i = 0; i < n_params; i++)
        params[i] = xg_module_param(m, i, NULL);
    char losses[STEPS * 24] = "";
    size_t at = 0;
    for (int k = 0; k < STEPS; k++) {
        xg_scope *scope = xg_scope_begin();
        xg_tensor *xi = xg_tensor_from_data(x[k], XG_I32, shape, 2);
        xg_tensor *yi = xg_tensor_from_data(y[k], XG_I32, flat, 1);
        xg_tensor *out = xg_module_forward(m, xi);
        xg_tensor *loss = xg_cross_entropy(xg_reshape(out, rows, 2), yi);
        float v;
        xg_optim_zero_grad(opt);
        if (!loss || xg_backward(loss) != XG_OK ||
            xg_clip_grad_norm(params, n_params, 1.0f, NULL) != XG_OK ||
            xg_optim_step(opt) != XG_OK || xg_tensor_item(loss, &v) != XG_OK)
            return fail("step");
        at += (size_t)snprintf(losses + at, sizeof losses - at, "%s%.9g",
                               k ? " " : "", (double)v);
        xg_scope_end(scope);
    }
    free(params);

    char cfg_text[160];
    snprintf(cfg_text, sizeof cfg_text, "%lld %lld %lld %lld %lld",
             (long long)cfg.vocab_size, (long long)cfg.context,
             (long long)cfg.n_layer, (long long)cfg.n_head,
             (long long)cfg.n_embd);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    if (xg_safetensors_writer_add(w, "logits", logits) != XG_OK ||
        xg_safetensors_writer_metadata(w, "losses", losses) != XG_OK ||
        xg_safetensors_writer_metadata(w, "config", cfg_text) != XG_OK ||
        xg_safetensors_writer_save(w, path) != XG_OK)
        return fail("save out");
    xg_safetensors_writer_free(w);
    snprintf(path, sizeof path, "%s/final.safetensors", dir);
    if (xg_module_save(m, path) != XG_OK)
        return fail("save final");
    printf("gpt_export: %s: losses %s\n", xg_device_backend(
               xg_device_current()), losses);
    xg_tensor_free(logits);
    xg_tensor_free(ids);
    xg_optim_free(opt);
    xg_module_free(m);
    xg_shutdown();
    return 0;
}
