/* Writes what tests/lora_torch.py compares with LoRA written in PyTorch,
 * on the backend XGRAD_BACKEND selects.
 *
 *   lora_export DIR
 *     builds the small GPT of tests/gpt_export.c from seed 1 and writes
 *     into DIR:
 *       base.safetensors     its state_dict before LoRA;
 *       init.safetensors     the state_dict after xg_lora_apply (r 4,
 *                            alpha 8, dropout 0, targets c_attn and
 *                            c_proj), lora_A and lora_B included;
 *       batches.safetensors  x0..x9, y0..y9: 10 batches [4, 24] of token
 *                            ids (y is x shifted by one token);
 *       out.safetensors      "logits": the adapted model's logits on x0 in
 *                            evaluation mode after 10 AdamW steps (lr
 *                            LR, torch's other defaults) over the model's
 *                            parameters (the frozen ones skipped);
 *                            "logits_reloaded": a fresh model (seed 1)
 *                            with the adapter saved in PEFT's format and
 *                            loaded back; "logits_merged": the trained
 *                            model after xg_lora_merge; metadata "losses"
 *                            (%.9g, space-separated) and "config";
 *       final.safetensors    the state_dict after the 10 steps;
 *       adapter/             xg_lora_save_peft's files;
 *       merged.safetensors   the state_dict after xg_lora_merge.
 *     Fails (exit 1) unless every base parameter is bit for bit what it
 *     was before training, the reloaded and merged logits are within 1e-5
 *     of the adapted model's, and the merged model has the base names.
 *
 *   lora_export load BASE ADAPTER_DIR OUT
 *     the GPT with the state_dict BASE and the adapter in ADAPTER_DIR
 *     (xg_lora_load_peft) writes its logits on batch x0 (the one of DIR
 *     mode) in evaluation mode into OUT as "logits". On an error exits 1
 *     with the message on stderr.
 *
 * Exits 0 on success, 1 with the error on stderr, 77 (skipped) when the
 * backend has no device, unless XGRAD_REQUIRE_BACKENDS=1. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

#define STEPS 10
#define BATCH 4
#define T 24
#define LR 1e-2f

static const char text[] =
    "It was the best of times, it was the worst of times, it was the age "
    "of wisdom, it was the age of foolishness, it was the epoch of belief, "
    "it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us.";

static const xg_gpt_config gpt_cfg = {
    .vocab_size = 256, .context = 32, .n_layer = 2, .n_head = 2,
    .n_embd = 32, .dropout = 0.0f, .bias = true, .layer_norm_eps = 1e-5f};

static int fail(const char *what)
{
    fprintf(stderr, "lora_export: %s: %s\n", what, xg_last_error());
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

/* The model's logits on ids in evaluation mode (owned by the caller). */
static xg_tensor *eval_logits(xg_module *m, const int32_t *ids)
{
    int64_t shape[2] = {BATCH, T};
    bool was = xg_module_training(m);
    bool grad = xg_set_grad_enabled(false);
    xg_module_set_training(m, false);
    xg_tensor *x = xg_tensor_from_data(ids, XG_I32, shape, 2);
    xg_tensor *y = x ? xg_module_forward(m, x) : NULL;
    xg_tensor_free(x);
    xg_module_set_training(m, was);
    xg_set_grad_enabled(grad);
    return y;
}

/* max |a - b| over two tensors of the same size, or INFINITY. */
static double max_diff(xg_tensor *a, xg_tensor *b)
{
    int64_t n = xg_tensor_numel(a);
    if (n != xg_tensor_numel(b))
        return INFINITY;
    float *ha = malloc(sizeof(float) * (size_t)n);
    float *hb = malloc(sizeof(float) * (size_t)n);
    double worst = INFINITY;
    if (ha && hb && xg_tensor_read(a, ha, sizeof(float) * (size_t)n) == XG_OK &&
        xg_tensor_read(b, hb, sizeof(float) * (size_t)n) == XG_OK) {
        worst = 0;
        for (int64_t i = 0; i < n; i++) {
            double d = fabs((double)ha[i] - hb[i]);
            worst = d > worst || d != d ? d : worst;
        }
    }
    free(ha);
    free(hb);
    return worst;
}

/* Host copies of every parameter that is not LoRA's, to compare later. */
typedef struct snapshot {
    int n;
    float **data;
    int64_t *numel;
} snapshot;

static bool is_lora(const char *name)
{
    return strstr(name, "lora_A") || strstr(name, "lora_B");
}

static bool snapshot_take(xg_module *m, snapshot *s)
{
    int n = xg_module_param_count(m);
    s->data = calloc((size_t)n, sizeof *s->data);
    s->numel = calloc((size_t)n, sizeof *s->numel);
    s->n = 0;
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        if (is_lora(name))
            continue;
        int64_t k = xg_tensor_numel(p);
        float *h = malloc(sizeof(float) * (size_t)k);
        if (!h || xg_tensor_read(p, h, sizeof(float) * (size_t)k) != XG_OK)
            return false;
        s->data[s->n] = h;
        s->numel[s->n++] = k;
    }
    return true;
}

/* The number of base parameters that differ (in any bit) from s. */
static int snapshot_changed(xg_module *m, const snapshot *s)
{
    int n = xg_module_param_count(m), at = 0, changed = 0;
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        if (is_lora(name))
            continue;
        if (at >= s->n || xg_tensor_numel(p) != s->numel[at])
            return s->n + 1;
        size_t bytes = sizeof(float) * (size_t)s->numel[at];
        float *h = malloc(bytes);
        if (!h || xg_tensor_read(p, h, bytes) != XG_OK ||
            memcmp(h, s->data[at], bytes) != 0) {
            fprintf(stderr, "lora_export: base parameter %s changed\n", name);
            changed++;
        }
        free(h);
        free(s->data[at++]);
    }
    free(s->data);
    free(s->numel);
    return changed + (at != s->n);
}

static int load_mode(char **argv)
{
    const char *base = argv[2], *adapter = argv[3], *out = argv[4];
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&gpt_cfg);
    if (!m || xg_module_load(m, base) != XG_OK)
        return fail("base model");
    if (xg_lora_load_peft(m, adapter) != XG_OK)
        return fail("lora_load_peft");
    int32_t x[BATCH * T], y[BATCH * T];
    batch(0, x, y);
    xg_tensor *logits = eval_logits(m, x);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    if (!logits || xg_safetensors_writer_add(w, "logits", logits) != XG_OK ||
        xg_safetensors_writer_save(w, out) != XG_OK)
        return fail("logits");
    xg_safetensors_writer_free(w);
    xg_tensor_free(logits);
    xg_module_free(m);
    xg_shutdown();
    return 0;
}

int main(int argc, char **argv)
{
    if (!(argc == 2 || (argc == 5 && !strcmp(argv[1], "load")))) {
        fprintf(stderr, "usage: lora_export DIR\n"
                        "       lora_export load BASE ADAPTER_DIR OUT\n");
        return 2;
    }
    if (!xg_device_current()) {
        const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
        if (xg_last_status() == XG_ERR_NO_DEVICE && !(req && !strcmp(req, "1"))) {
            printf("lora_export: no device: %s: skipped\n", xg_last_error());
            return 77;
        }
        return fail("device");
    }
    if (argc == 5)
        return load_mode(argv);
    char path[4096];
    const char *dir = argv[1];
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&gpt_cfg);
    if (!m)
        return fail("gpt");
    int n_base = xg_module_param_count(m);
    snprintf(path, sizeof path, "%s/base.safetensors", dir);
    if (xg_module_save(m, path) != XG_OK)
        return fail("save base");
    static const char *const targets[] = {"c_attn", "c_proj"};
    xg_lora_config lc = {.r = 4, .alpha = 8.0f, .dropout = 0.0f,
                         .targets = targets, .n_targets = 2};
    if (xg_lora_apply(m, &lc) != XG_OK)
        return fail("lora_apply");
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

    snapshot before;
    if (!snapshot_take(m, &before))
        return fail("snapshot");
    xg_optim *opt = xg_optim_for_module(m, "adamw", LR);
    if (!opt)
        return fail("optimizer");
    int64_t shape[2] = {BATCH, T}, flat[1] = {BATCH * T};
    int64_t rows[2] = {BATCH * T, gpt_cfg.vocab_size};
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
            xg_optim_step(opt) != XG_OK || xg_tensor_item(loss, &v) != XG_OK)
            return fail("step");
        at += (size_t)snprintf(losses + at, sizeof losses - at, "%s%.9g",
                               k ? " " : "", (double)v);
        xg_scope_end(scope);
    }
    xg_optim_free(opt);
    int changed = snapshot_changed(m, &before);
    if (changed) {
        fprintf(stderr, "lora_export: %d base parameters changed in "
                "training\n", changed);
        return 1;
    }
    snprintf(path, sizeof path, "%s/final.safetensors", dir);
    if (xg_module_save(m, path) != XG_OK)
        return fail("save final");
    xg_tensor *logits = eval_logits(m, x[0]);
    if (!logits)
        return fail("forward");

    /* the adapter through PEFT's files into a fresh model */
    char adapter[4096];
    snprintf(adapter, sizeof adapter, "%s/adapter", dir);
    if (xg_lora_save_peft(m, adapter, "xgrad/tiny-gpt") != XG_OK)
        return fail("lora_save_peft");
    xg_manual_seed(1);
    xg_module *fresh = xg_gpt(&gpt_cfg);
    if (!fresh || xg_lora_load_peft(fresh, adapter) != XG_OK)
        return fail("lora_load_peft");
    xg_tensor *reloaded = eval_logits(fresh, x[0]);
    if (!reloaded)
        return fail("forward (reloaded)");
    xg_module_free(fresh);

    /* merged into the base weights */
    if (xg_lora_merge(m) != XG_OK)
        return fail("lora_merge");
    xg_tensor *merged = eval_logits(m, x[0]);
    if (!merged)
        return fail("forward (merged)");
    snprintf(path, sizeof path, "%s/merged.safetensors", dir);
    if (xg_module_save(m, path) != XG_OK)
        return fail("save merged");
    double d_reload = max_diff(logits, reloaded);
    double d_merge = max_diff(logits, merged);
    int n_merged = xg_module_param_count(m);
    int frozen = 0;
    for (int i = 0; i < n_merged; i++)
        frozen += !xg_tensor_requires_grad(xg_module_param(m, i, NULL));

    char cfg_text[160];
    snprintf(cfg_text, sizeof cfg_text, "%lld %lld %lld %lld %lld",
             (long long)gpt_cfg.vocab_size, (long long)gpt_cfg.context,
             (long long)gpt_cfg.n_layer, (long long)gpt_cfg.n_head,
             (long long)gpt_cfg.n_embd);
    char lr_text[32];
    snprintf(lr_text, sizeof lr_text, "%.9g", (double)LR);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    if (xg_safetensors_writer_add(w, "logits", logits) != XG_OK ||
        xg_safetensors_writer_add(w, "logits_reloaded", reloaded) != XG_OK ||
        xg_safetensors_writer_add(w, "logits_merged", merged) != XG_OK ||
        xg_safetensors_writer_metadata(w, "losses", losses) != XG_OK ||
        xg_safetensors_writer_metadata(w, "config", cfg_text) != XG_OK ||
        xg_safetensors_writer_metadata(w, "lr", lr_text) != XG_OK ||
        xg_safetensors_writer_save(w, path) != XG_OK)
        return fail("save out");
    xg_safetensors_writer_free(w);
    printf("lora_export: %s: losses %s\n",
           xg_device_backend(xg_device_current()), losses);
    printf("lora_export: reloaded adapter: max |diff| %.3g; merged: max "
           "|diff| %.3g (limits 1e-5); %d parameters after the merge (%d "
           "before LoRA), %d frozen\n", d_reload, d_merge, n_merged, n_base,
           frozen);
    xg_tensor_free(logits);
    xg_tensor_free(reloaded);
    xg_tensor_free(merged);
    xg_module_free(m);
    xg_shutdown();
    if (!(d_reload <= 1e-5) || !(d_merge <= 1e-5) || n_merged != n_base ||
        frozen) {
        fprintf(stderr, "lora_export: FAILED (reloaded or merged logits "
                "differ, or the merged model is not the base model)\n");
        return 1;
    }
    return 0;
}
