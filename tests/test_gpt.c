/* The GPT model (xg_gpt): GPT-2's names and layouts, shapes, the KV cache
 * against full forward passes, weight tying, AdamW's groups and the
 * errors. Its values against PyTorch are checked by bench/gpt_torch.py
 * (test gpt-torch). */
#include "test_util.h"

TestSuite(gpt, .init = tu_init_scope, .fini = tu_fini_scope);

static xg_gpt_config small(void)
{
    return (xg_gpt_config){.vocab_size = 11, .context = 9, .n_layer = 2,
                           .n_head = 2, .n_embd = 8, .dropout = 0.0f,
                           .bias = true, .layer_norm_eps = 1e-5f};
}

static xg_tensor *ids(const int32_t *v, int64_t b, int64_t t)
{
    int64_t shape[2] = {b, t};
    xg_tensor *x = xg_tensor_from_data(v, XG_I32, shape, 2);
    cr_assert_not_null(x, "%s", xg_last_error());
    return x;
}

Test(gpt, names_shapes_and_order_are_gpt2s)
{
    xg_gpt_config c = small();
    c.n_layer = 1;
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    static const struct {
        const char *name;
        int64_t d0, d1; /* d1 0: 1-D */
    } want[] = {
        {"wte.weight", 11, 8}, {"wpe.weight", 9, 8},
        {"h.0.ln_1.weight", 8, 0}, {"h.0.ln_1.bias", 8, 0},
        {"h.0.attn.c_attn.weight", 8, 24}, {"h.0.attn.c_attn.bias", 24, 0},
        {"h.0.attn.c_proj.weight", 8, 8}, {"h.0.attn.c_proj.bias", 8, 0},
        {"h.0.ln_2.weight", 8, 0}, {"h.0.ln_2.bias", 8, 0},
        {"h.0.mlp.c_fc.weight", 8, 32}, {"h.0.mlp.c_fc.bias", 32, 0},
        {"h.0.mlp.c_proj.weight", 32, 8}, {"h.0.mlp.c_proj.bias", 8, 0},
        {"ln_f.weight", 8, 0}, {"ln_f.bias", 8, 0},
    };
    int n = (int)(sizeof want / sizeof *want);
    cr_assert_eq(xg_module_param_count(m), n);
    cr_assert_eq(xg_module_buffer_count(m), 0);
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        cr_assert_str_eq(name, want[i].name);
        cr_assert_eq(xg_tensor_ndim(p), want[i].d1 ? 2 : 1, "%s", name);
        cr_assert_eq(xg_tensor_dim(p, 0), want[i].d0, "%s", name);
        if (want[i].d1)
            cr_assert_eq(xg_tensor_dim(p, 1), want[i].d1, "%s", name);
    }
    xg_gpt_config back;
    cr_assert(xg_gpt_config_of(m, &back));
    cr_assert_eq(back.n_embd, 8);
    cr_assert_not(xg_gpt_config_of(xg_module_child(m, "h.0"), NULL));
    xg_module_free(m);

    c.bias = false; /* no .bias entries at all */
    m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_module_param_count(m), 9);
    for (int i = 0; i < 9; i++) {
        const char *name;
        xg_module_param(m, i, &name);
        cr_assert_null(strstr(name, "bias"), "%s", name);
    }
    xg_module_free(m);
}

/* GPT-2's initialisation: N(0, 0.02), the residual projections
 * N(0, 0.02 / sqrt(2 n_layer)), biases 0, LayerNorm weights 1. */
Test(gpt, initialisation_is_gpt2s)
{
    xg_gpt_config c = {.vocab_size = 512, .context = 64, .n_layer = 8,
                       .n_head = 4, .n_embd = 64, .bias = true,
                       .layer_norm_eps = 1e-5f};
    xg_manual_seed(3);
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    static const struct {
        const char *name;
        double std;
    } want[] = {{"wte.weight", 0.02}, {"wpe.weight", 0.02},
                {"h.3.attn.c_attn.weight", 0.02},
                {"h.3.attn.c_proj.weight", 0.005},
                {"h.3.mlp.c_fc.weight", 0.02},
                {"h.3.mlp.c_proj.weight", 0.005}};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++) {
        xg_tensor *p = xg_module_find_param(m, want[i].name);
        int64_t n = xg_tensor_numel(p);
        float *v = malloc(sizeof(float) * (size_t)n);
        cr_assert_eq(xg_tensor_read(p, v, sizeof(float) * (size_t)n), XG_OK);
        double s = 0, s2 = 0;
        for (int64_t k = 0; k < n; k++) {
            s += v[k];
            s2 += (double)v[k] * v[k];
        }
        double mean = s / (double)n, std = sqrt(s2 / (double)n - mean * mean);
        /* n >= 4096 draws: the sample std is within 5% of the true one */
        cr_assert(fabs(std / want[i].std - 1) < 0.05, "%s: std %g, want %g",
                  want[i].name, std, want[i].std);
        cr_assert(fabs(mean) < 4 * want[i].std / sqrt((double)n), "%s mean %g",
                  want[i].name, mean);
        free(v);
    }
    float ones[64], zeros[256];
    cr_assert_eq(xg_tensor_read(xg_module_find_param(m, "h.7.ln_2.weight"),
                                ones, sizeof ones), XG_OK);
    cr_assert_eq(xg_tensor_read(xg_module_find_param(m, "h.7.mlp.c_fc.bias"),
                                zeros, sizeof zeros), XG_OK);
    for (int i = 0; i < 64; i++)
        cr_assert(ones[i] == 1.0f, "ln_2.weight[%d] = %g", i, ones[i]);
    for (int i = 0; i < 256; i++)
        cr_assert(zeros[i] == 0.0f, "c_fc.bias[%d] = %g", i, zeros[i]);
    xg_module_free(m);
}

Test(gpt, forward_gives_logits_per_position)
{
    xg_gpt_config c = small();
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    int32_t v[2 * 5] = {1, 2, 3, 4, 5, 10, 0, 0, 7, 7};
    xg_tensor *y = xg_module_forward(m, ids(v, 2, 5));
    cr_assert_not_null(y, "%s", xg_last_error());
    cr_assert_eq(xg_tensor_ndim(y), 3);
    cr_assert(xg_tensor_dim(y, 0) == 2 && xg_tensor_dim(y, 1) == 5 &&
              xg_tensor_dim(y, 2) == 11);

    /* causal: the logits at position t do not depend on later tokens */
    int32_t w[2 * 5] = {1, 2, 3, 9, 9, 10, 0, 0, 1, 2};
    xg_tensor *z = xg_module_forward(m, ids(w, 2, 5));
    float a[110], b[110];
    cr_assert_eq(xg_tensor_read(y, a, sizeof a), XG_OK);
    cr_assert_eq(xg_tensor_read(z, b, sizeof b), XG_OK);
    for (int row = 0; row < 2; row++)
        for (int t = 0; t < 3; t++)
            for (int k = 0; k < 11; k++) {
                int i = (row * 5 + t) * 11 + k;
                cr_assert(fabsf(a[i] - b[i]) <= 1e-6f, "row %d t %d", row, t);
            }
    xg_module_free(m);
}

Test(gpt, kv_cache_gives_the_full_passes_logits)
{
    xg_gpt_config c = small();
    xg_manual_seed(7);
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    int32_t seq[2][9] = {{3, 1, 4, 1, 5, 9, 2, 6, 5}, {2, 7, 1, 8, 2, 8, 1, 8, 2}};
    int32_t flat[18];
    memcpy(flat, seq, sizeof flat);
    xg_module_set_training(m, false);
    xg_tensor *full = xg_module_forward(m, ids(flat, 2, 9));
    cr_assert_not_null(full, "%s", xg_last_error());
    float want[2 * 9 * 11];
    cr_assert_eq(xg_tensor_read(full, want, sizeof want), XG_OK);

    xg_gpt_cache *cache = xg_gpt_cache_new(m, 2);
    cr_assert_not_null(cache, "%s", xg_last_error());
    /* 4 tokens at once, then one at a time */
    int at = 0;
    while (at < 9) {
        int n = at == 0 ? 4 : 1;
        int32_t part[2 * 4];
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < n; i++)
                part[r * n + i] = seq[r][at + i];
        xg_tensor *lg = xg_gpt_forward_cached(cache, ids(part, 2, n));
        cr_assert_not_null(lg, "%s", xg_last_error());
        float got[2 * 4 * 11];
        cr_assert_eq(xg_tensor_read(lg, got, sizeof(float) * 2 * (size_t)n *
                                                 11), XG_OK);
        for (int r = 0; r < 2; r++)
            for (int i = 0; i < n; i++)
                for (int k = 0; k < 11; k++) {
                    float g = got[(r * n + i) * 11 + k];
                    float w = want[(r * 9 + at + i) * 11 + k];
                    cr_assert(fabsf(g - w) <= 1e-5f * (1 + fabsf(w)),
                              "row %d position %d: %g vs %g", r, at + i, g, w);
                }
        at += n;
        cr_assert_eq(xg_gpt_cache_length(cache), at);
    }
    /* past the context: refused, and the cache is unchanged */
    int32_t one[2] = {1, 1};
    cr_assert_null(xg_gpt_forward_cached(cache, ids(one, 2, 1)));
    cr_assert_eq(xg_last_status(), XG_ERR_TOO_LARGE);
    cr_assert_eq(xg_gpt_cache_length(cache), 9);
    /* a batch of the wrong size */
    cr_assert_null(xg_gpt_forward_cached(cache, ids(one, 1, 2)));
    cr_assert_eq(xg_last_status(), XG_ERR_SHAPE);
    xg_gpt_cache_reset(cache);
    cr_assert_eq(xg_gpt_cache_length(cache), 0);
    /* a token out of range leaves the cache empty, and it works after */
    int32_t bad[2] = {1, 11};
    cr_assert_null(xg_gpt_forward_cached(cache, ids(bad, 2, 1)));
    cr_assert_eq(xg_gpt_cache_length(cache), 0);
    cr_assert_not_null(xg_gpt_forward_cached(cache, ids(one, 2, 1)),
                       "%s", xg_last_error());
    xg_gpt_cache_free(cache);
    cr_assert(xg_module_training(m) == false);
    xg_module_free(m);
}

/* The output projection is wte transposed: a token that never occurs in
 * the input still gets a gradient in its wte row (from the logits), and
 * wpe rows past the sequence get none. */
Test(gpt, tied_embedding_gets_both_gradients)
{
    xg_gpt_config c = small();
    xg_module *m = xg_gpt(&c);
    int32_t v[4] = {1, 2, 1, 3};
    int32_t t[4] = {2, 1, 3, 4};
    int64_t four = 4, rows[2] = {4, 11};
    xg_tensor *lg = xg_module_forward(m, ids(v, 1, 4));
    xg_tensor *loss = xg_cross_entropy(
        xg_reshape(lg, rows, 2), xg_tensor_from_data(t, XG_I32, &four, 1));
    cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
    float g[11 * 8], gp[9 * 8];
    cr_assert_eq(xg_tensor_read(xg_tensor_grad(xg_module_find_param(
                     m, "wte.weight")), g, sizeof g), XG_OK);
    cr_assert_eq(xg_tensor_read(xg_tensor_grad(xg_module_find_param(
                     m, "wpe.weight")), gp, sizeof gp), XG_OK);
    for (int tok = 0; tok < 11; tok++) {
        double norm = 0;
        for (int k = 0; k < 8; k++)
            norm += fabs(g[tok * 8 + k]);
        cr_assert(norm > 0, "wte row %d has no gradient", tok);
    }
    for (int pos = 0; pos < 9; pos++) {
        double norm = 0;
        for (int k = 0; k < 8; k++)
            norm += fabs(gp[pos * 8 + k]);
        cr_assert(pos < 4 ? norm > 0 : norm == 0, "wpe row %d: %g", pos, norm);
    }
    xg_module_free(m);
}

Test(gpt, adamw_groups_decay_only_the_matrices)
{
    xg_gpt_config c = small();
    xg_module *m = xg_gpt(&c);
    xg_adam_options o = xg_adamw_defaults();
    o.lr = 0.5f; /* with zero gradients only the decay acts: p *= 1 - lr wd */
    o.weight_decay = 1.0f;
    xg_optim *opt = xg_gpt_adamw(m, &o);
    cr_assert_not_null(opt, "%s", xg_last_error());
    /* zero gradients everywhere: Adam's own update is 0 */
    int n = xg_module_param_count(m);
    /* h.1.mlp.c_fc.weight [8, 32] and wte.weight [11, 8] */
    float before[2][256], after[2][256];
    size_t bytes[2] = {256 * sizeof(float), 88 * sizeof(float)};
    const char *probe[2] = {"h.1.mlp.c_fc.weight", "wte.weight"};
    for (int i = 0; i < n; i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        xg_tensor *s = xg_sum_all(xg_mul_scalar(p, 0.0f));
        cr_assert_eq(xg_backward(s), XG_OK, "%s", xg_last_error());
    }
    for (int k = 0; k < 2; k++)
        cr_assert_eq(xg_tensor_read(xg_module_find_param(m, probe[k]),
                                    before[k], bytes[k]), XG_OK);
    cr_assert_eq(xg_optim_step(opt), XG_OK, "%s", xg_last_error());
    for (int k = 0; k < 2; k++)
        cr_assert_eq(xg_tensor_read(xg_module_find_param(m, probe[k]),
                                    after[k], bytes[k]), XG_OK);
    for (int i = 0; i < 64; i++) {
        cr_assert(fabsf(after[0][i] - 0.5f * before[0][i]) <= 1e-7f,
                  "c_fc.weight is decayed");
        cr_assert(after[1][i] == before[1][i], "wte is not decayed");
    }
    xg_optim_free(opt);
    cr_assert_null(xg_gpt_adamw(xg_module_child(m, "h"), NULL));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    xg_module_free(m);
}

Test(gpt, bad_configs_and_inputs_are_errors)
{
    cr_assert_null(xg_gpt(NULL));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    xg_gpt_config c = small();
    c.n_embd = 9; /* not a multiple of 2 heads */
    cr_assert_null(xg_gpt(&c));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    c = small();
    c.dropout = 1.0f;
    cr_assert_null(xg_gpt(&c));
    c = small();
    c.n_layer = 0;
    cr_assert_null(xg_gpt(&c));
    c = small();
    c.n_embd = (int64_t)1 << 40;
    cr_assert_null(xg_gpt(&c));
    cr_assert_eq(xg_last_status(), XG_ERR_TOO_LARGE);

    c = small();
    xg_module *m = xg_gpt(&c);
    int32_t v[10] = {0};
    cr_assert_null(xg_module_forward(m, ids(v, 1, 10))); /* > context 9 */
    cr_assert_eq(xg_last_status(), XG_ERR_TOO_LARGE);
    v[3] = 11; /* out of the vocabulary */
    cr_assert_null(xg_module_forward(m, ids(v, 2, 4)));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    int64_t shape[2] = {2, 4};
    cr_assert_null(xg_module_forward(m, xg_zeros(shape, 2))); /* f32 ids */
    cr_assert_eq(xg_last_status(), XG_ERR_DTYPE);
    cr_assert_null(xg_module_forward(m, ids(v, 1, 1) ? xg_reshape(
                                            ids(v, 8, 1), (int64_t[]){8}, 1)
                                                     : NULL));
    cr_assert_eq(xg_last_status(), XG_ERR_SHAPE);
    cr_assert_null(xg_gpt_cache_new(m, 0));
    cr_assert_null(xg_gpt_cache_new(xg_module_child(m, "h"), 1));
    cr_assert_null(xg_gpt_forward_cached(NULL, NULL));
    xg_module_free(m);
}
