/* LoRA (xg_lora_*): names, initialisation, freezing, optimizer state,
 * errors, merging Linear layers of a plain Sequential, dropout, the
 * adapter files. Values against PyTorch and PEFT's format are checked by
 * tests/lora_torch.py (test lora-torch). */

#include "test_util.h"

TestSuite(lora, .init = tu_init_scope, .fini = tu_fini_scope);

static xg_gpt_config small(void)
{
    return (xg_gpt_config){.vocab_size = 11, .context = 9, .n_layer = 2,
                           .n_head = 2, .n_embd = 8, .dropout = 0.0f,
                           .bias = true, .layer_norm_eps = 1e-5f};
}

static xg_module *gpt(void)
{
    xg_gpt_config c = small();
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    return m;
}

static xg_tensor *ids(int64_t b, int64_t t, uint64_t seed)
{
    int32_t v[64];
    tu_rng r = {seed};
    for (int64_t i = 0; i < b * t; i++)
        v[i] = (int32_t)(tu_next(&r) % 11);
    int64_t shape[2] = {b, t};
    return tu_i32(v, shape, 2);
}

static xg_lora_config config(int r, float alpha, float dropout,
                             const char *const *targets, int n)
{
    return (xg_lora_config){.r = r, .alpha = alpha, .dropout = dropout,
                            .targets = targets, .n_targets = n};
}

/* Writes uniform values in [lo, hi) into an existing tensor. */
static void fill(xg_tensor *t, uint64_t seed, double lo, double hi)
{
    int64_t n = xg_tensor_numel(t);
    float *v = malloc(sizeof(float) * (size_t)n);
    tu_fill(v, n, seed, lo, hi);
    cr_assert_eq(xg_tensor_write(t, v, sizeof(float) * (size_t)n), XG_OK);
    free(v);
}

static xg_tensor *param(const xg_module *m, const char *name)
{
    xg_tensor *p = xg_module_find_param(m, name);
    cr_assert_not_null(p, "%s: %s", name, xg_last_error());
    return p;
}

static double max_diff(const xg_tensor *a, const xg_tensor *b)
{
    cr_assert_eq(xg_tensor_numel(a), xg_tensor_numel(b));
    float *x = tu_read(a), *y = tu_read(b);
    double d = 0;
    for (int64_t i = 0; i < xg_tensor_numel(a); i++)
        d = fmax(d, fabs((double)x[i] - y[i]));
    free(x);
    free(y);
    return d;
}

/* The names of every parameter, joined by spaces (for comparisons). */
static char *names(const xg_module *m)
{
    static char buf[4096];
    size_t at = 0;
    buf[0] = '\0';
    for (int i = 0; i < xg_module_param_count(m); i++) {
        const char *n;
        xg_module_param(m, i, &n);
        at += (size_t)snprintf(buf + at, sizeof buf - at, "%s%s", i ? " " : "",
                               n);
    }
    return buf;
}

Test(lora, defaults_are_pefts)
{
    xg_lora_config c = xg_lora_config_default();
    cr_assert_eq(c.r, 8);
    cr_assert_float_eq(c.alpha, 8.0f, 0);
    cr_assert_float_eq(c.dropout, 0.0f, 0);
    cr_assert_eq(c.n_targets, 1);
    cr_assert_str_eq(c.targets[0], "c_attn");
}

Test(lora, names_shapes_init_and_freezing)
{
    xg_module *m = gpt();
    int n_base = xg_module_param_count(m);
    xg_tensor *x = ids(2, 5, 1);
    xg_tensor *before = xg_module_forward(m, x);
    xg_lora_config c = xg_lora_config_default();
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    cr_assert_eq(xg_module_param_count(m), n_base + 4);
    /* PEFT's names less the adapter name, right after the layer's own */
    const char *name;
    xg_module_param(m, 4, &name);
    cr_assert_str_eq(name, "h.0.attn.c_attn.weight");
    xg_module_param(m, 6, &name);
    cr_assert_str_eq(name, "h.0.attn.c_attn.lora_A.weight");
    xg_module_param(m, 7, &name);
    cr_assert_str_eq(name, "h.0.attn.c_attn.lora_B.weight");
    xg_tensor *a = param(m, "h.1.attn.c_attn.lora_A.weight");
    xg_tensor *b = param(m, "h.1.attn.c_attn.lora_B.weight");
    cr_assert_eq(xg_tensor_dim(a, 0), 8); /* [r, in] */
    cr_assert_eq(xg_tensor_dim(a, 1), 8);
    cr_assert_eq(xg_tensor_dim(b, 0), 24); /* [out, r] */
    cr_assert_eq(xg_tensor_dim(b, 1), 8);
    cr_assert_null(xg_module_find_param(m, "h.0.mlp.c_fc.lora_A.weight"));
    /* A uniform in +-1/sqrt(in) (not constant), B zeros */
    float *va = tu_read(a), *vb = tu_read(b);
    double lo = 1, hi = -1, bound = 1 / sqrt(8.0);
    for (int i = 0; i < 64; i++) {
        lo = fmin(lo, va[i]);
        hi = fmax(hi, va[i]);
    }
    cr_assert(lo >= -bound && hi <= bound && hi - lo > bound, "A in [%g, %g]",
              lo, hi);
    for (int i = 0; i < 24 * 8; i++)
        cr_assert_eq(vb[i], 0.0f);
    free(va);
    free(vb);
    /* every base parameter frozen, A and B trainable */
    for (int i = 0; i < xg_module_param_count(m); i++) {
        xg_tensor *p = xg_module_param(m, i, &name);
        bool lora = strstr(name, ".lora_") != NULL;
        cr_assert_eq(xg_tensor_requires_grad(p), lora, "%s", name);
    }
    /* B = 0: the outputs are the base model's, bit for bit */
    xg_tensor *after = xg_module_forward(m, x);
    cr_assert_eq(max_diff(before, after), 0.0);
    xg_module_free(m);
}

Test(lora, suffix_targets_select_by_dotted_path)
{
    xg_module *m = gpt();
    static const char *const t[] = {"attn.c_proj"};
    xg_lora_config c = config(2, 4.0f, 0.0f, t, 1);
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    cr_assert_not_null(xg_module_find_param(m, "h.0.attn.c_proj.lora_A.weight"));
    cr_assert_not_null(xg_module_find_param(m, "h.1.attn.c_proj.lora_B.weight"));
    cr_assert_null(xg_module_find_param(m, "h.0.mlp.c_proj.lora_A.weight"));
    cr_assert_eq(xg_module_param_count(m), 28 + 4);
    xg_module_free(m);
}

Test(lora, only_the_adapter_is_trained_and_has_optimizer_state)
{
    xg_module *m = gpt();
    static const char *const t[] = {"c_attn", "c_proj"};
    xg_lora_config c = config(2, 4.0f, 0.0f, t, 2);
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    int n = xg_module_param_count(m);
    float **host = calloc((size_t)n, sizeof *host);
    for (int i = 0; i < n; i++)
        host[i] = tu_read(xg_module_param(m, i, NULL));
    xg_optim *opt = xg_optim_for_module(m, "adamw", 1e-2f);
    cr_assert_not_null(opt, "%s", xg_last_error());
    int64_t flat[1] = {10}, rows[2] = {10, 11};
    for (int step = 0; step < 3; step++) {
        xg_tensor *y = xg_module_forward(m, ids(2, 5, 1));
        xg_tensor *loss = xg_cross_entropy(xg_reshape(y, rows, 2),
                                           xg_reshape(ids(2, 5, 2), flat, 1));
        xg_optim_zero_grad(opt);
        cr_assert_eq(xg_backward(loss), XG_OK, "%s", xg_last_error());
        cr_assert_eq(xg_optim_step(opt), XG_OK, "%s", xg_last_error());
    }
    int moved = 0;
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        float *now = tu_read(p);
        bool same = !memcmp(now, host[i],
                            sizeof(float) * (size_t)xg_tensor_numel(p));
        if (strstr(name, ".lora_"))
            moved += !same;
        else
            cr_assert(same, "base parameter %s changed", name);
        free(now);
        free(host[i]);
    }
    free(host);
    cr_assert_eq(moved, 12, "%d LoRA tensors moved", moved); /* A and B */
    /* the checkpoint holds moments for A and B only */
    char dir[64], path[96];
    tu_tmpdir_new(dir, sizeof dir, "xg_lora");
    snprintf(path, sizeof path, "%s/ckpt.safetensors", dir);
    cr_assert_eq(xg_checkpoint_save(path, m, opt, NULL, NULL), XG_OK, "%s",
                 xg_last_error());
    xg_safetensors *f;
    cr_assert_eq(xg_safetensors_open(path, &f), XG_OK);
    int state = 0;
    for (int i = 0; i < xg_safetensors_count(f); i++) {
        const char *k = xg_safetensors_name(f, i);
        if (strncmp(k, "optim.", 6) != 0)
            continue;
        state++;
        cr_assert(strstr(k, ".lora_A.") || strstr(k, ".lora_B."),
                  "optimizer state for %s", k);
    }
    /* exp_avg, exp_avg_sq and step of each */
    cr_assert_eq(state, 12 * 3, "%d optimizer state tensors", state);
    xg_safetensors_close(f);
    tu_rm_tree(dir);
    xg_optim_free(opt);
    xg_module_free(m);
}

/* The module tree of a LoRA'd model, for "nothing changed" checks. */
static void assert_untouched(const xg_module *m, const char *was)
{
    cr_assert_str_eq(names(m), was);
    for (int i = 0; i < xg_module_param_count(m); i++)
        cr_assert(xg_tensor_requires_grad(xg_module_param(m, i, NULL)));
}

Test(lora, bad_calls_are_errors_that_change_nothing)
{
    xg_module *m = gpt();
    char was[4096];
    snprintf(was, sizeof was, "%s", names(m));
    static const char *const ok[] = {"c_attn"};
    static const char *const none[] = {"q_proj"};
    static const char *const partly[] = {"c_attn", "nope"};
    static const char *const block[] = {"attn"};
    static const char *const nul[] = {NULL};
    static const char *const empty[] = {""};
    struct {
        xg_lora_config c;
        xg_status want;
    } bad[] = {
        {config(0, 8, 0, ok, 1), XG_ERR_INVALID_ARG},
        {config(4, NAN, 0, ok, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, 1.0f, ok, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, -0.1f, ok, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, 0, ok, 0), XG_ERR_INVALID_ARG},
        {config(4, 8, 0, NULL, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, 0, nul, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, 0, empty, 1), XG_ERR_INVALID_ARG},
        {config(4, 8, 0, none, 1), XG_ERR_NOT_FOUND},
        {config(4, 8, 0, partly, 2), XG_ERR_NOT_FOUND},
        {config(4, 8, 0, block, 1), XG_ERR_INVALID_ARG},
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        cr_assert_eq(xg_lora_apply(m, &bad[i].c), bad[i].want, "case %zu: %s",
                     i, xg_last_error());
        assert_untouched(m, was);
    }
    cr_assert(strstr(xg_last_error(), "'h.0.attn'") &&
              strstr(xg_last_error(), "CausalSelfAttention"), "%s",
              xg_last_error());
    xg_lora_config c = config(4, 8, 0, ok, 1);
    cr_assert_eq(xg_lora_apply(NULL, &c), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_lora_apply(m, NULL), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_lora_merge(m), XG_ERR_STATE);
    cr_assert_eq(xg_lora_merge(NULL), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_lora_save_peft(m, "/tmp", NULL), XG_ERR_STATE);
    cr_assert_eq(xg_lora_load_peft(m, "/nonexistent/xg_lora"), XG_ERR_IO);
    assert_untouched(m, was);
    /* twice: refused, also on a subtree and with other targets */
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    snprintf(was, sizeof was, "%s", names(m));
    cr_assert_eq(xg_lora_apply(m, &c), XG_ERR_INVALID_ARG);
    cr_assert(strstr(xg_last_error(), "already"), "%s", xg_last_error());
    static const char *const fc[] = {"c_fc"};
    xg_lora_config other = config(4, 8, 0, fc, 1);
    cr_assert_eq(xg_lora_apply(xg_module_child(m, "h.1"), &other),
                 XG_ERR_INVALID_ARG);
    cr_assert_str_eq(names(m), was);
    xg_module_free(m);
}

/* Host matrix helpers for the Sequential reference, in double. */
static void matvec(const float *w, int rows, int cols, const double *x,
                   double *y)
{
    for (int i = 0; i < rows; i++) {
        y[i] = 0;
        for (int j = 0; j < cols; j++)
            y[i] += (double)w[i * cols + j] * x[j];
    }
}

/* y = W x + b + s B A x for a Linear [out, in] with LoRA rank r. */
static void lora_linear(const float *w, const float *b, const float *a,
                        const float *bb, int in, int out, int r, double s,
                        const double *x, double *y)
{
    double h[8], d[16];
    matvec(w, out, in, x, y);
    matvec(a, r, in, x, h);
    matvec(bb, out, r, h, d);
    for (int i = 0; i < out; i++)
        y[i] += b[i] + s * d[i];
}

Test(lora, linear_layers_of_a_sequential_forward_and_merge)
{
    enum { N = 3, IN = 5, HID = 7, OUT = 4, RANK = 2 };
    xg_module *seq = xg_sequential();
    cr_assert_eq(xg_sequential_add(seq, "fc1", xg_linear(IN, HID, true)),
                 XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "act", xg_relu_layer()), XG_OK);
    cr_assert_eq(xg_sequential_add(seq, "fc2", xg_linear(HID, OUT, true)),
                 XG_OK);
    xg_tensor_set_requires_grad(param(seq, "fc2.bias"), false);
    static const char *const t[] = {"fc1", "fc2"};
    xg_lora_config c = config(RANK, 3.0f, 0.0f, t, 2);
    cr_assert_eq(xg_lora_apply(seq, &c), XG_OK, "%s", xg_last_error());
    cr_assert_str_eq(names(seq), "fc1.weight fc1.bias fc1.lora_A.weight "
                                 "fc1.lora_B.weight fc2.weight fc2.bias "
                                 "fc2.lora_A.weight fc2.lora_B.weight");
    fill(param(seq, "fc1.lora_B.weight"), 5, -0.5, 0.5);
    fill(param(seq, "fc2.lora_B.weight"), 6, -0.5, 0.5);
    int64_t xs[2] = {N, IN};
    xg_tensor *x = tu_rand(xs, 2, 7, -1, 1);
    xg_module_set_training(seq, false);
    xg_tensor *y = xg_module_forward(seq, x);
    cr_assert_not_null(y, "%s", xg_last_error());
    /* the reference in double from the host weights */
    float *w1 = tu_read(param(seq, "fc1.weight"));
    float *b1 = tu_read(param(seq, "fc1.bias"));
    float *a1 = tu_read(param(seq, "fc1.lora_A.weight"));
    float *bb1 = tu_read(param(seq, "fc1.lora_B.weight"));
    float *w2 = tu_read(param(seq, "fc2.weight"));
    float *b2 = tu_read(param(seq, "fc2.bias"));
    float *a2 = tu_read(param(seq, "fc2.lora_A.weight"));
    float *bb2 = tu_read(param(seq, "fc2.lora_B.weight"));
    float *hx = tu_read(x), *hy = tu_read(y);
    double s = 3.0 / RANK;
    for (int n = 0; n < N; n++) {
        double in[IN], h[HID], out[OUT];
        for (int j = 0; j < IN; j++)
            in[j] = hx[n * IN + j];
        lora_linear(w1, b1, a1, bb1, IN, HID, RANK, s, in, h);
        for (int j = 0; j < HID; j++)
            h[j] = h[j] > 0 ? h[j] : 0;
        lora_linear(w2, b2, a2, bb2, HID, OUT, RANK, s, h, out);
        for (int j = 0; j < OUT; j++)
            cr_assert(fabs(hy[n * OUT + j] - out[j]) < 1e-5, "y[%d][%d] %g, "
                      "expected %g", n, j, hy[n * OUT + j], out[j]);
    }
    /* merged: W + s B A, the plain Sequential's names, flags restored */
    cr_assert_eq(xg_lora_merge(seq), XG_OK, "%s", xg_last_error());
    cr_assert_str_eq(names(seq), "fc1.weight fc1.bias fc2.weight fc2.bias");
    cr_assert_eq(xg_module_child_count(xg_module_child(seq, "fc1")), 0);
    float *m1 = tu_read(param(seq, "fc1.weight"));
    for (int i = 0; i < HID; i++)
        for (int j = 0; j < IN; j++) {
            double want = w1[i * IN + j];
            for (int k = 0; k < RANK; k++)
                want += s * bb1[i * RANK + k] * a1[k * IN + j];
            cr_assert(fabs(m1[i * IN + j] - want) < 1e-6, "W[%d][%d]", i, j);
        }
    xg_tensor *ym = xg_module_forward(seq, x);
    cr_assert(max_diff(y, ym) < 1e-5, "merged output differs by %g",
              max_diff(y, ym));
    cr_assert(xg_tensor_requires_grad(param(seq, "fc1.weight")));
    cr_assert(xg_tensor_requires_grad(param(seq, "fc2.weight")));
    cr_assert_not(xg_tensor_requires_grad(param(seq, "fc2.bias")));
    cr_assert_eq(xg_lora_merge(seq), XG_ERR_STATE);
    /* and LoRA applies again after a merge */
    cr_assert_eq(xg_lora_apply(seq, &c), XG_OK, "%s", xg_last_error());
    free(w1), free(b1), free(a1), free(bb1), free(w2), free(b2), free(a2);
    free(bb2), free(hx), free(hy), free(m1);
    xg_module_free(seq);
}

Test(lora, dropout_acts_on_the_branch_in_training_only)
{
    xg_module *lin = xg_sequential();
    cr_assert_eq(xg_sequential_add(lin, "proj", xg_linear(16, 16, true)),
                 XG_OK);
    static const char *const t[] = {"proj"};
    xg_lora_config c = config(4, 4.0f, 0.5f, t, 1);
    cr_assert_eq(xg_lora_apply(lin, &c), XG_OK, "%s", xg_last_error());
    int64_t xs[2] = {8, 16};
    xg_tensor *x = tu_rand(xs, 2, 3, 0.5, 1.5);
    /* B = 0: the branch adds nothing, and the base is never dropped */
    xg_tensor *w = param(lin, "proj.weight"), *b = param(lin, "proj.bias");
    xg_tensor *base = xg_add(xg_matmul_t(x, w, false, true), b);
    cr_assert(xg_module_training(lin));
    cr_assert_eq(max_diff(xg_module_forward(lin, x), base), 0.0);
    /* with B: evaluation is deterministic; training drops branch inputs */
    fill(param(lin, "proj.lora_B.weight"), 9, 0.5, 1.0);
    xg_module_set_training(lin, false);
    xg_tensor *e1 = xg_module_forward(lin, x), *e2 = xg_module_forward(lin, x);
    cr_assert_eq(max_diff(e1, e2), 0.0);
    xg_module_set_training(lin, true);
    xg_tensor *t1 = xg_module_forward(lin, x), *t2 = xg_module_forward(lin, x);
    cr_assert_gt(max_diff(e1, t1), 1e-3);
    cr_assert_gt(max_diff(t1, t2), 1e-3);
    /* dropout 0 in training is evaluation's output */
    xg_module *plain = xg_sequential();
    cr_assert_eq(xg_sequential_add(plain, "proj", xg_linear(16, 16, true)),
                 XG_OK);
    xg_lora_config c0 = config(4, 4.0f, 0.0f, t, 1);
    cr_assert_eq(xg_lora_apply(plain, &c0), XG_OK);
    fill(param(plain, "proj.lora_B.weight"), 9, 0.5, 1.0);
    xg_tensor *p1 = xg_module_forward(plain, x);
    xg_module_set_training(plain, false);
    cr_assert_eq(max_diff(p1, xg_module_forward(plain, x)), 0.0);
    xg_module_free(plain);
    xg_module_free(lin);
}

Test(lora, kv_cache_uses_the_adapter)
{
    xg_module *m = gpt();
    xg_lora_config c = xg_lora_config_default();
    c.r = 2;
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    fill(param(m, "h.0.attn.c_attn.lora_B.weight"), 1, -0.5, 0.5);
    fill(param(m, "h.1.attn.c_attn.lora_B.weight"), 2, -0.5, 0.5);
    xg_module_set_training(m, false);
    xg_tensor *x = ids(1, 6, 4);
    xg_tensor *full = xg_module_forward(m, x);
    xg_gpt_cache *cache = xg_gpt_cache_new(m, 1);
    xg_tensor *step = xg_gpt_forward_cached(cache, x);
    cr_assert(max_diff(full, step) < 1e-5, "%g", max_diff(full, step));
    xg_gpt_cache_free(cache);
    xg_module_free(m);
}

Test(lora, adapter_files_round_trip_and_refuse_mismatches)
{
    char dir[64], sub[96];
    tu_tmpdir_new(dir, sizeof dir, "xg_lora");
    snprintf(sub, sizeof sub, "%s/adapter", dir);
    xg_manual_seed(5);
    xg_module *m = gpt();
    static const char *const t[] = {"c_fc"};
    xg_lora_config c = config(3, 6.0f, 0.1f, t, 1);
    cr_assert_eq(xg_lora_apply(m, &c), XG_OK, "%s", xg_last_error());
    fill(param(m, "h.1.mlp.c_fc.lora_B.weight"), 3, -1, 1);
    cr_assert_eq(xg_lora_save_peft(m, sub, NULL), XG_OK, "%s",
                 xg_last_error());
    xg_module_set_training(m, false);
    xg_tensor *x = ids(2, 4, 8);
    xg_tensor *want = xg_module_forward(m, x);
    /* into a model that has the LoRA already: A and B overwritten */
    xg_tensor *a = param(m, "h.1.mlp.c_fc.lora_A.weight");
    fill(a, 11, 2, 3);
    cr_assert_eq(xg_lora_load_peft(m, sub), XG_OK, "%s", xg_last_error());
    cr_assert_eq(max_diff(xg_module_forward(m, x), want), 0.0);
    /* into a fresh model: applied with the file's configuration */
    xg_manual_seed(5);
    xg_module *fresh = gpt();
    uint64_t seed, offset;
    xg_rng_state(&seed, &offset);
    cr_assert_eq(xg_lora_load_peft(fresh, sub), XG_OK, "%s", xg_last_error());
    uint64_t seed2, offset2;
    xg_rng_state(&seed2, &offset2);
    cr_assert(seed == seed2 && offset == offset2, "the generator was used");
    cr_assert_str_eq(names(fresh), names(m));
    xg_module_set_training(fresh, false);
    cr_assert_eq(max_diff(xg_module_forward(fresh, x), want), 0.0);
    /* a model whose LoRA differs (r 2): refused, unchanged */
    xg_module *other = gpt();
    xg_lora_config c2 = config(2, 6.0f, 0.0f, t, 1);
    cr_assert_eq(xg_lora_apply(other, &c2), XG_OK);
    char was[4096];
    snprintf(was, sizeof was, "%s", names(other));
    cr_assert_eq(xg_lora_load_peft(other, sub), XG_ERR_INVALID_ARG);
    cr_assert_str_eq(names(other), was);
    /* a Sequential has no c_fc: the target selects nothing */
    xg_module *seq = xg_sequential();
    cr_assert_eq(xg_sequential_add(seq, "fc", xg_linear(2, 2, true)), XG_OK);
    cr_assert_eq(xg_lora_load_peft(seq, sub), XG_ERR_NOT_FOUND);
    cr_assert(strstr(xg_last_error(), "adapter_config.json"), "%s",
              xg_last_error());
    cr_assert_eq(xg_module_param_count(seq), 2);
    xg_module_free(seq);
    xg_module_free(other);
    xg_module_free(fresh);
    xg_module_free(m);
    tu_rm_tree(dir);
}
