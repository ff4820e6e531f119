/* What tests/gpt_export.c and tests/lora_export.c share: the small GPT
 * they both train, its batches of token ids cut from a fixed English text,
 * and the steps that write them and train on them. The files they write
 * are read by bench/gpt_torch.py and tests/lora_torch.py, which cut the
 * same batches from the ids in batches.safetensors: a change here changes
 * both checks.
 *
 * Include once per program, after defining GB_PROG (the program's name, a
 * string literal, for messages). */
#ifndef XGRAD_GPT_BATCHES_H
#define XGRAD_GPT_BATCHES_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

#ifndef GB_PROG
#error "define GB_PROG before including gpt_batches.h"
#endif

/* A batch: GB_BATCH rows of GB_T token ids (bytes of gb_text). */
#define GB_BATCH 4
#define GB_T 24
#define GB_IDS (GB_BATCH * GB_T)

static const char gb_text[] =
    "It was the best of times, it was the worst of times, it was the age "
    "of wisdom, it was the age of foolishness, it was the epoch of belief, "
    "it was the epoch of incredulity, it was the season of Light, it was "
    "the season of Darkness, it was the spring of hope, it was the winter "
    "of despair, we had everything before us, we had nothing before us.";

/* The GPT both programs build (from seed 1): byte vocabulary, 2 layers of
 * 2 heads, 32 wide, no dropout. */
static const xg_gpt_config gb_config = {
    .vocab_size = 256, .context = 32, .n_layer = 2, .n_head = 2,
    .n_embd = 32, .dropout = 0.0f, .bias = true, .layer_norm_eps = 1e-5f};

/* Prints "GB_PROG: what: <last error>" on stderr; returns 1 (the exit
 * status). */
static int gb_fail(const char *what)
{
    fprintf(stderr, GB_PROG ": %s: %s\n", what, xg_last_error());
    return 1;
}

/* Saves m's state_dict (xg_module_save) as dir/<name>.safetensors.
 * Returns the exit status: 0, or 1 with "save <name>: error" on stderr. */
static int gb_save(xg_module *m, const char *dir, const char *name)
{
    char path[4096], what[64];
    snprintf(path, sizeof path, "%s/%s.safetensors", dir, name);
    snprintf(what, sizeof what, "save %s", name);
    return xg_module_save(m, path) == XG_OK ? 0 : gb_fail(what);
}

/* 0 when the backend XGRAD_BACKEND selects has a device; else the exit
 * status: 77 (skipped, with a line on stdout) when it has none, unless
 * XGRAD_REQUIRE_BACKENDS=1, or 1 with the error on stderr. */
static int gb_device(void)
{
    if (xg_device_current())
        return 0;
    const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
    if (xg_last_status() == XG_ERR_NO_DEVICE && !(req && !strcmp(req, "1"))) {
        printf(GB_PROG ": no device: %s: skipped\n", xg_last_error());
        return 77;
    }
    return gb_fail("device");
}

/* Batch `k` into x and y (GB_IDS ids each): rows starting at fixed
 * pseudo-random offsets of the text, y being x shifted by one byte. */
static void gb_batch(int k, int32_t *x, int32_t *y)
{
    int64_t n = (int64_t)sizeof gb_text - 1;
    for (int b = 0; b < GB_BATCH; b++) {
        uint64_t h = (uint64_t)(k * GB_BATCH + b + 1) * 0x9E3779B97F4A7C15ull;
        int64_t start = (int64_t)((h >> 33) % (uint64_t)(n - GB_T - 1));
        for (int t = 0; t < GB_T; t++) {
            x[b * GB_T + t] = (unsigned char)gb_text[start + t];
            y[b * GB_T + t] = (unsigned char)gb_text[start + t + 1];
        }
    }
}

/* Adds ids as an i32 tensor [GB_BATCH, GB_T] named `name` to w. */
static xg_status gb_add_ids(xg_safetensors_writer *w, const char *name,
                            const int32_t *ids)
{
    int64_t shape[2] = {GB_BATCH, GB_T};
    xg_tensor *t = xg_tensor_from_data(ids, XG_I32, shape, 2);
    xg_status st = t ? xg_safetensors_writer_add(w, name, t) : xg_last_status();
    xg_tensor_free(t);
    return st;
}

/* Fills x[0 .. steps) and y[0 .. steps) with batches 0 .. steps-1 and
 * writes them as "x<k>" and "y<k>" into dir/batches.safetensors. Returns
 * the exit status: 0, or 1 with the error on stderr. */
static int gb_write_batches(const char *dir, int steps, int32_t (*x)[GB_IDS],
                            int32_t (*y)[GB_IDS])
{
    char path[4096];
    xg_safetensors_writer *bw = xg_safetensors_writer_new();
    for (int k = 0; k < steps; k++) {
        char nx[8], ny[8];
        gb_batch(k, x[k], y[k]);
        snprintf(nx, sizeof nx, "x%d", k);
        snprintf(ny, sizeof ny, "y%d", k);
        if (gb_add_ids(bw, nx, x[k]) != XG_OK ||
            gb_add_ids(bw, ny, y[k]) != XG_OK)
            return gb_fail("batches");
    }
    snprintf(path, sizeof path, "%s/batches.safetensors", dir);
    if (xg_safetensors_writer_save(bw, path) != XG_OK)
        return gb_fail("save batches");
    xg_safetensors_writer_free(bw);
    return 0;
}

/* Trains m with opt for `steps` steps, step k on batch (x[k], y[k]): the
 * mean cross-entropy of the logits, backward, the gradients of all of m's
 * parameters clipped to norm `clip` when clip > 0, an optimizer step.
 * Writes each step's loss (%.9g, space-separated) into losses[0 .. size).
 * Returns the exit status: 0, or 1 with the error on stderr. */
static int gb_train(xg_module *m, xg_optim *opt, int steps,
                    int32_t (*x)[GB_IDS], int32_t (*y)[GB_IDS], float clip,
                    char *losses, size_t size)
{
    int64_t shape[2] = {GB_BATCH, GB_T}, flat[1] = {GB_IDS};
    int64_t rows[2] = {GB_IDS, gb_config.vocab_size};
    int n_params = xg_module_param_count(m);
    xg_tensor **params = malloc(sizeof *params * (size_t)(n_params + 1));
    if (!params) {
        fprintf(stderr, GB_PROG ": out of memory\n");
        return 1;
    }
    for (int i = 0; i < n_params; i++)
        params[i] = xg_module_param(m, i, NULL);
    size_t at = 0;
    losses[0] = '\0';
    for (int k = 0; k < steps; k++) {
        xg_scope *scope = xg_scope_begin();
        xg_tensor *xi = xg_tensor_from_data(x[k], XG_I32, shape, 2);
        xg_tensor *yi = xg_tensor_from_data(y[k], XG_I32, flat, 1);
        xg_tensor *out = xg_module_forward(m, xi);
        xg_tensor *loss = xg_cross_entropy(xg_reshape(out, rows, 2), yi);
        float v;
        xg_optim_zero_grad(opt);
        if (!loss || xg_backward(loss) != XG_OK ||
            (clip > 0.0f &&
             xg_clip_grad_norm(params, n_params, clip, NULL) != XG_OK) ||
            xg_optim_step(opt) != XG_OK || xg_tensor_item(loss, &v) != XG_OK) {
            free(params);
            return gb_fail("step");
        }
        at += (size_t)snprintf(losses + at, size - at, "%s%.9g",
                               k ? " " : "", (double)v);
        xg_scope_end(scope);
    }
    free(params);
    return 0;
}

/* The config as metadata text: "vocab context layers heads width". */
static void gb_config_text(char *buf, size_t size)
{
    snprintf(buf, size, "%lld %lld %lld %lld %lld",
             (long long)gb_config.vocab_size, (long long)gb_config.context,
             (long long)gb_config.n_layer, (long long)gb_config.n_head,
             (long long)gb_config.n_embd);
}

#endif
