/* Writes what bench/gpt_torch.py (mode "check") compares with the same
 * GPT in PyTorch, on the backend XGRAD_BACKEND selects.
 *
 *   gpt_export DIR
 *     builds the small GPT (xg_gpt) of tests/gpt_batches.h from seed 1
 *     and writes into DIR:
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
#define GB_PROG "gpt_export"
#include "gpt_batches.h"

#define STEPS 20

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: gpt_export DIR\n");
        return 2;
    }
    char path[4096];
    const char *dir = argv[1];
    int rc = gb_device();
    if (rc)
        return rc;
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&gb_config);
    if (!m)
        return gb_fail("gpt");
    if ((rc = gb_save(m, dir, "init")) != 0)
        return rc;

    int32_t x[STEPS][GB_IDS], y[STEPS][GB_IDS];
    if ((rc = gb_write_batches(dir, STEPS, x, y)) != 0)
        return rc;

    int64_t shape[2] = {GB_BATCH, GB_T};
    xg_module_set_training(m, false);
    xg_tensor *ids = xg_tensor_from_data(x[0], XG_I32, shape, 2);
    xg_tensor *logits = xg_module_forward(m, ids);
    if (!logits)
        return gb_fail("forward");
    xg_module_set_training(m, true);

    xg_adam_options o = xg_adamw_defaults();
    o.lr = 1e-3f;
    o.weight_decay = 0.1f;
    xg_optim *opt = xg_gpt_adamw(m, &o);
    if (!opt)
        return gb_fail("optimizer");
    char losses[STEPS * 24];
    if ((rc = gb_train(m, opt, STEPS, x, y, 1.0f, losses, sizeof losses)) != 0)
        return rc;

    char cfg_text[160];
    gb_config_text(cfg_text, sizeof cfg_text);
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    snprintf(path, sizeof path, "%s/out.safetensors", dir);
    if (xg_safetensors_writer_add(w, "logits", logits) != XG_OK ||
        xg_safetensors_writer_metadata(w, "losses", losses) != XG_OK ||
        xg_safetensors_writer_metadata(w, "config", cfg_text) != XG_OK ||
        xg_safetensors_writer_save(w, path) != XG_OK)
        return gb_fail("save out");
    xg_safetensors_writer_free(w);
    if ((rc = gb_save(m, dir, "final")) != 0)
        return rc;
    printf("gpt_export: %s: losses %s\n", xg_device_backend(
               xg_device_current()), losses);
    xg_tensor_free(logits);
    xg_tensor_free(ids);
    xg_optim_free(opt);
    xg_module_free(m);
    xg_shutdown();
    return 0;
}
