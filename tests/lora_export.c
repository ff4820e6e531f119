/* Writes what tests/lora_torch.py compares with LoRA written in PyTorch,
 * on the backend XGRAD_BACKEND selects.
 *
 *   lora_export DIR
 *     builds the small GPT of tests/gpt_batches.h from seed 1 and writes
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

#define GB_PROG "lora_export"
#include "gpt_batches.h"

#define STEPS 10
#define LR 1e-2f

/* The model's logits on ids in evaluation mode (owned by the caller). */
static xg_tensor *eval_logits(xg_module *m, const int32_t *ids)
{
    int64_t shape[2] = {GB_BATCH, GB_T};
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
    xg_module *m = xg_gpt(&gb_config);
    if (!m || xg_module_load(m, base) != XG_OK)
        return gb_fail("base model");
    if (xg_lora_load_peft(m, adapter) != XG_OK)
        return gb_fail("lora_load_peft");
    int32_t x[GB_IDS], y[GB_IDS];
    gb_batch(0, x, y);
    xg_tensor *logits = eval_logits(m, x);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    if (!logits || xg_safetensors_writer_add(w, "logits", logits) != XG_OK ||
        xg_safetensors_writer_save(w, out) != XG_OK)
        return gb_fail("logits");
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
    int rc = gb_device();
    if (rc)
        return rc;
    if (argc == 5)
        return load_mode(argv);
    char path[4096];
    const char *dir = argv[1];
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&gb_config);
    if (!m)
        return gb_fail("gpt");
    int n_base = xg_module_param_count(m);
    if ((rc = gb_save(m, dir, "base")) != 0)
        return rc;
    static const char *const targets[] = {"c_attn", "c_proj"};
    xg_lora_config lc = {.r = 4, .alpha = 8.0f, .dropout = 0.0f,
                         .targets = targets, .n_targets = 2};
    if (xg_lora_apply(m, &lc) != XG_OK)
        return gb_fail("lora_apply");
    if ((rc = gb_save(m, dir, "init")) != 0)
        return rc;

    int32_t x[STEPS][GB_IDS], y[STEPS][GB_IDS];
    if ((rc = gb_write_batches(dir, STEPS, x, y)) != 0)
        return rc;

    snapshot before;
    if (!snapshot_take(m, &before))
        return gb_fail("snapshot");
    xg_optim *opt = xg_optim_for_module(m, "adamw", LR);
    if (!opt)
        return gb_fail("optimizer");
    char losses[STEPS * 24];
    if ((rc = gb_train(m, opt, STEPS, x, y, 0.0f, losses, sizeof losses)) != 0)
        return rc;
    xg_optim_free(opt);
    int changed = snapshot_changed(m, &before);
    if (changed) {
        fprintf(stderr, "lora_export: %d base parameters changed in "
                "training\n", changed);
        return 1;
    }
    if ((rc = gb_save(m, dir, "final")) != 0)
        return rc;
    xg_tensor *logits = eval_logits(m, x[0]);
    if (!logits)
        return gb_fail("forward");

    /* the adapter through PEFT's files into a fresh model */
    char adapter[4096];
    snprintf(adapter, sizeof adapter, "%s/adapter", dir);
    if (xg_lora_save_peft(m, adapter, "xgrad/tiny-gpt") != XG_OK)
        return gb_fail("lora_save_peft");
    xg_manual_seed(1);
    xg_module *fresh = xg_gpt(&gb_config);
    if (!fresh || xg_lora_load_peft(fresh, adapter) != XG_OK)
        return gb_fail("lora_load_peft");
    xg_tensor *reloaded = eval_logits(fresh, x[0]);
    if (!reloaded)
        return gb_fail("forward (reloaded)");
    xg_module_free(fresh);

    /* merged into the base weights */
    if (xg_lora_merge(m) != XG_OK)
        return gb_fail("lora_merge");
    xg_tensor *merged = eval_logits(m, x[0]);
    if (!merged)
        return gb_fail("forward (merged)");
    if ((rc = gb_save(m, dir, "merged")) != 0)
        return rc;
    double d_reload = max_diff(logits, reloaded);
    double d_merge = max_diff(logits, merged);
    int n_merged = xg_module_param_count(m);
    int frozen = 0;
    for (int i = 0; i < n_merged; i++)
        frozen += !xg_tensor_requires_grad(xg_module_param(m, i, NULL));

    char cfg_text[160];
    gb_config_text(cfg_text, sizeof cfg_text);
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
        return gb_fail("save out");
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
