/* The xgrad side of tests/gpt_hf_torch.py, on the backend XGRAD_BACKEND
 * selects.
 *
 *   gpt_hf_eval loss DIR B T ID...
 *       loads the GPT-2 folder DIR (xg_gpt_load_hf, dropout 0) and prints
 *       "loss L": the mean cross-entropy of predicting ids[:, 1:] from
 *       ids[:, :-1], ids being the B x T ids given (row-major), in
 *       evaluation mode.
 *   gpt_hf_eval resave DIR OUT
 *       loads DIR, saves it into OUT (xg_gpt_save_hf), loads OUT and checks
 *       that every parameter and the configuration came back bit for bit;
 *       prints "resave ok".
 *
 * Exits 0 on success, 1 with the error on stderr, 77 (skipped) when the
 * backend has no device, unless XGRAD_REQUIRE_BACKENDS=1. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

static int fail(const char *what)
{
    fprintf(stderr, "gpt_hf_eval: %s: %s\n", what, xg_last_error());
    return 1;
}

static int loss(const char *dir, int argc, char **argv)
{
    if (argc < 2)
        return fprintf(stderr, "gpt_hf_eval loss: B T ID...\n"), 2;
    long b = strtol(argv[0], NULL, 10), t = strtol(argv[1], NULL, 10);
    if (b < 1 || t < 2 || argc != 2 + b * t)
        return fprintf(stderr, "gpt_hf_eval loss: need B x T ids\n"), 2;
    float zero = 0.0f;
    xg_module *m = xg_gpt_load_hf(dir, &zero);
    if (!m)
        return fail("load");
    xg_module_set_training(m, false);
    xg_scope *scope = xg_scope_begin();
    int32_t *x = malloc(sizeof *x * (size_t)(b * (t - 1)));
    int32_t *y = malloc(sizeof *y * (size_t)(b * (t - 1)));
    for (long r = 0; r < b; r++)
        for (long i = 0; i + 1 < t; i++) {
            x[r * (t - 1) + i] = (int32_t)atoi(argv[2 + r * t + i]);
            y[r * (t - 1) + i] = (int32_t)atoi(argv[2 + r * t + i + 1]);
        }
    xg_gpt_config cfg;
    xg_gpt_config_of(m, &cfg);
    int64_t shape[2] = {b, t - 1}, flat[1] = {b * (t - 1)};
    int64_t rows[2] = {b * (t - 1), cfg.vocab_size};
    xg_tensor *xi = xg_tensor_from_data(x, XG_I32, shape, 2);
    xg_tensor *yi = xg_tensor_from_data(y, XG_I32, flat, 1);
    xg_tensor *out = xg_module_forward(m, xi);
    xg_tensor *l = xg_cross_entropy(xg_reshape(out, rows, 2), yi);
    float v;
    if (!l || xg_tensor_item(l, &v) != XG_OK)
        return fail("loss");
    printf("loss %.9g on %s\n", (double)v,
           xg_device_backend(xg_device_current()));
    xg_scope_end(scope);
    free(x);
    free(y);
    xg_module_free(m);
    return 0;
}

static int resave(const char *dir, const char *out)
{
    xg_module *a = xg_gpt_load_hf(dir, NULL);
    if (!a)
        return fail("load");
    if (xg_gpt_save_hf(a, out) != XG_OK)
        return fail("save");
    xg_module *b = xg_gpt_load_hf(out, NULL);
    if (!b)
        return fail("load the saved folder");
    xg_gpt_config ca, cb;
    xg_gpt_config_of(a, &ca);
    xg_gpt_config_of(b, &cb);
    if (ca.vocab_size != cb.vocab_size || ca.context != cb.context ||
        ca.n_layer != cb.n_layer || ca.n_head != cb.n_head ||
        ca.n_embd != cb.n_embd || ca.dropout != cb.dropout ||
        ca.bias != cb.bias || ca.layer_norm_eps != cb.layer_norm_eps ||
        xg_module_param_count(a) != xg_module_param_count(b)) {
        fprintf(stderr, "gpt_hf_eval: the configuration changed\n");
        return 1;
    }
    for (int i = 0; i < xg_module_param_count(a); i++) {
        const char *name;
        xg_tensor *p = xg_module_param(a, i, &name);
        xg_tensor *q = xg_module_param(b, i, NULL);
        size_t bytes = (size_t)xg_tensor_numel(p) * sizeof(float);
        float *hp = malloc(bytes), *hq = malloc(bytes);
        if (xg_tensor_numel(q) != xg_tensor_numel(p) ||
            xg_tensor_read(p, hp, bytes) != XG_OK ||
            xg_tensor_read(q, hq, bytes) != XG_OK ||
            memcmp(hp, hq, bytes) != 0) {
            fprintf(stderr, "gpt_hf_eval: %s differs after the round "
                    "trip\n", name);
            return 1;
        }
        free(hp);
        free(hq);
    }
    printf("resave ok\n");
    xg_module_free(a);
    xg_module_free(b);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: gpt_hf_eval loss DIR B T ID... | "
                "gpt_hf_eval resave DIR OUT\n");
        return 2;
    }
    if (!xg_device_current()) {
        const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
        if (xg_last_status() == XG_ERR_NO_DEVICE &&
            !(req && !strcmp(req, "1"))) {
            printf("gpt_hf_eval: no device: %s: skipped\n", xg_last_error());
            return 77;
        }
        return fail("device");
    }
    int rc = !strcmp(argv[1], "loss")
                 ? loss(argv[2], argc - 3, argv + 3)
             : !strcmp(argv[1], "resave") && argc == 4
                 ? resave(argv[2], argv[3])
                 : (fprintf(stderr, "gpt_hf_eval: unknown command\n"), 2);
    xg_shutdown();
    return rc;
}
