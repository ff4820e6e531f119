/* libFuzzer harness for the safetensors reader and the loaders built on it.
 *
 * Each input is parsed from memory by xg__safetensors_parse, which makes
 * the same checks as xg_safetensors_open. A file that parses is then used
 * as a caller would use it: every tensor is looked up and loaded onto the
 * CPU device, and the file is offered to the module and checkpoint
 * loaders with a small model ("fc": Linear(2, 2)) whose optimizer already
 * has state, and to the GPT-2 loader (xg_gpt_load_hf's, after config.json)
 * for a tiny GPT-2 (vocab 4, context 4, 1 layer, 1 head, 2 wide). Loading
 * every tensor reaches the F16 / BF16 conversion. Nothing may crash, leak
 * or trip a sanitizer; every listed name must be found again.
 *
 * Build and run (fuzz/meson.build):
 *   CC=clang meson setup build-fuzz -Dfuzz=enabled -Dopencl=disabled \
 *       -Dvulkan=disabled -Dtests=disabled
 *   ninja -C build-fuzz fuzz/fuzz_safetensors
 *   build-fuzz/fuzz/fuzz_safetensors -max_total_time=300 \
 *       -dict=fuzz/safetensors.dict fuzz/corpus
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "io/safetensors_impl.h"

static void query(const xg_safetensors *st)
{
    for (int i = 0; i < xg_safetensors_count(st); i++) {
        const char *name = xg_safetensors_name(st, i);
        const char *dtype = NULL;
        int64_t shape[XG_MAX_DIMS];
        int ndim = -1;
        if (xg_safetensors_info(st, name, &dtype, shape, &ndim) != XG_OK ||
            !dtype || ndim < 0 || ndim > XG_MAX_DIMS)
            __builtin_trap(); /* a listed tensor must be found */
        xg_tensor_free(xg_safetensors_tensor(st, name));
    }
    (void)xg_safetensors_metadata(st, "format");
    (void)xg_safetensors_info(st, "no such tensor", NULL, NULL, NULL);
}

/* An optimizer of the kind the file names, over m, after one step. */
static xg_optim *trained_optim(xg_module *m, const char *kind)
{
    xg_tensor *p[2] = {xg_module_param(m, 0, NULL), xg_module_param(m, 1, NULL)};
    xg_optim *opt;
    if (kind && strcmp(kind, "sgd") == 0) {
        xg_sgd_options o = xg_sgd_defaults();
        o.momentum = 0.9f;
        opt = xg_optim_sgd(p, 2, &o);
    } else if (kind && strcmp(kind, "adamw") == 0) {
        xg_adam_options o = xg_adamw_defaults();
        opt = xg_optim_adamw(p, 2, &o);
    } else {
        xg_adam_options o = xg_adam_defaults();
        opt = xg_optim_adam(p, 2, &o);
    }
    xg_tensor *x = xg_ones(XG_SHAPE(1, 2));
    if (opt && xg_backward(xg_sum_all(xg_module_forward(m, x))) == XG_OK)
        xg_optim_step(opt);
    return opt;
}

static void load_into_model(const xg_safetensors *st)
{
    xg_module *m = xg_sequential();
    if (!m || xg_sequential_add(m, "fc", xg_linear(2, 2, true)) != XG_OK) {
        xg_module_free(m);
        return;
    }
    xg_optim *opt = trained_optim(m, xg_safetensors_metadata(st,
                                                             "optimizer"));
    xg_train_state state;
    (void)xg__module_load_from(m, st);
    if (opt)
        (void)xg__checkpoint_load_from(st, m, opt, &state);
    xg_optim_free(opt);
    xg_module_free(m);
}

static void load_gpt2(const xg_safetensors *st)
{
    xg_gpt_config cfg = {.vocab_size = 4, .context = 4, .n_layer = 1,
                         .n_head = 1, .n_embd = 2, .dropout = 0.1f,
                         .bias = true, .layer_norm_eps = 1e-5f};
    xg_module_free(xg__gpt_hf_from(st, &cfg));
}

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    xg_device *cpu = NULL;
    if (xg_device_open("cpu", &cpu) != XG_OK) {
        fprintf(stderr, "fuzz_safetensors: %s\n", xg_last_error());
        return 1;
    }
    xg_device_set_current(cpu); /* open for the whole run */
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    xg_safetensors *st = NULL;
    if (xg__safetensors_parse(data, size, "fuzz.safetensors", &st) != XG_OK)
        return 0;
    xg_scope *scope = xg_scope_begin();
    xg_manual_seed(1);
    query(st);
    load_into_model(st);
    load_gpt2(st);
    xg_scope_end(scope);
    xg_safetensors_close(st);
    return 0;
}
