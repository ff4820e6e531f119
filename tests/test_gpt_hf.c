/* GPT-2 folders in Hugging Face's layout (xg_gpt_load_hf, xg_gpt_save_hf):
 * round trips, the key variants the loader accepts, and the folders it
 * must refuse, each with the file and the key named. The bad folders are
 * made here from a good one: model.safetensors rewritten with a tensor
 * missing, reshaped or added (through the safetensors writer, tested on
 * its own in test_safetensors.c), config.json written as text, files cut
 * short. Values against PyTorch: tests/gpt_hf_torch.py. */
#include "test_util.h"

#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- a temporary folder per test --------------------------------------- */

static char dir[64];

static void dir_init(void)
{
    tu_init();
    tu_tmpdir_new(dir, sizeof dir, "xg-gpt-hf");
}

static void dir_fini(void)
{
    tu_rm_tree(dir);
    tu_fini();
}

TestSuite(gpt_hf, .init = dir_init, .fini = dir_fini);

/* A path in the test's folder (tu_path_in). */
static const char *in_dir(const char *name)
{
    return tu_path_in(dir, name);
}

static xg_gpt_config small(void)
{
    return (xg_gpt_config){.vocab_size = 13, .context = 8, .n_layer = 2,
                           .n_head = 2, .n_embd = 8, .dropout = 0.1f,
                           .bias = true, .layer_norm_eps = 1e-5f};
}

/* A GPT from seed 1 saved into the test folder's "good". */
static xg_module *save_good(void)
{
    xg_gpt_config c = small();
    xg_manual_seed(1);
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_gpt_save_hf(m, in_dir("good")), XG_OK, "%s",
                 xg_last_error());
    return m;
}

static void same_params(const xg_module *a, const xg_module *b)
{
    cr_assert_eq(xg_module_param_count(a), xg_module_param_count(b));
    for (int i = 0; i < xg_module_param_count(a); i++) {
        const char *na, *nb;
        xg_tensor *p = xg_module_param(a, i, &na);
        xg_tensor *q = xg_module_param(b, i, &nb);
        cr_assert_str_eq(na, nb);
        size_t n = (size_t)xg_tensor_numel(p);
        cr_assert_eq((size_t)xg_tensor_numel(q), n, "%s", na);
        float *hp = tu_read(p), *hq = tu_read(q);
        cr_assert_eq(memcmp(hp, hq, n * sizeof(float)), 0, "%s differs",
                     na);
        free(hp);
        free(hq);
    }
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* Rewrites good/model.safetensors: without `skip`, with `replace` holding
 * `with` (NULL: as it was), and with `extra` (a new tensor) added; each
 * name with the "transformer." prefix removed when `strip`. */
typedef struct edit {
    const char *skip, *replace;
    xg_tensor *with;
    const char *extra;
    xg_tensor *extra_t;
    bool strip;
} edit;

static void rewrite(edit e)
{
    const char *path = in_dir("good/model.safetensors");
    xg_safetensors *st = NULL;
    cr_assert_eq(xg_safetensors_open(path, &st), XG_OK, "%s",
                 xg_last_error());
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    for (int i = 0; i < xg_safetensors_count(st); i++) {
        const char *name = xg_safetensors_name(st, i);
        if (e.skip && !strcmp(name, e.skip))
            continue;
        xg_tensor *t = e.replace && !strcmp(name, e.replace)
                           ? e.with : xg_safetensors_tensor(st, name);
        const char *key = e.strip && !strncmp(name, "transformer.", 12)
                              ? name + 12 : name;
        cr_assert_eq(xg_safetensors_writer_add(w, key, t), XG_OK, "%s",
                     xg_last_error());
    }
    if (e.extra)
        cr_assert_eq(xg_safetensors_writer_add(w, e.extra, e.extra_t), XG_OK,
                     "%s", xg_last_error());
    cr_assert_eq(xg_safetensors_writer_save(w, path), XG_OK, "%s",
                 xg_last_error());
    xg_safetensors_writer_free(w);
    xg_safetensors_close(st);
}

/* good/config.json with `from` replaced by `to` (once). */
static void edit_config(const char *from, const char *to)
{
    const char *path = in_dir("good/config.json");
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char text[4096];
    size_t n = fread(text, 1, sizeof text - 1, f);
    fclose(f);
    text[n] = '\0';
    char *at = strstr(text, from);
    cr_assert_not_null(at, "config.json has no %s", from);
    char out[4096];
    snprintf(out, sizeof out, "%.*s%s%s", (int)(at - text), text, to,
             at + strlen(from));
    write_text(path, out);
}

/* Loading good/ fails with `want`, naming `file` and `what`. */
static void expect_refused(xg_status want, const char *file,
                           const char *what)
{
    xg_clear_error();
    xg_module *m = xg_gpt_load_hf(in_dir("good"), NULL);
    const char *msg = xg_last_error();
    cr_assert_null(m, "loaded; expected: %s", what);
    cr_assert_eq(xg_last_status(), want, "status %d, expected %d: %s",
                 xg_last_status(), want, msg);
    cr_assert_not_null(strstr(msg, file), "'%s' does not name %s", msg,
                       file);
    cr_assert_not_null(strstr(msg, what), "'%s' does not name %s", msg,
                       what);
}

static xg_tensor *filled(float v, int64_t d0, int64_t d1)
{
    int64_t shape[2] = {d0, d1};
    xg_tensor *t = xg_full(shape, d1 ? 2 : d0 ? 1 : 0, v);
    cr_assert_not_null(t, "%s", xg_last_error());
    return t;
}

/* ---- round trips ---------------------------------------------------------- */

Test(gpt_hf, saves_and_loads_back_bit_for_bit)
{
    xg_module *m = save_good();
    uint64_t seed, offset, seed2, offset2;
    xg_rng_state(&seed, &offset);
    xg_module *back = xg_gpt_load_hf(in_dir("good"), NULL);
    cr_assert_not_null(back, "%s", xg_last_error());
    xg_rng_state(&seed2, &offset2);
    cr_expect(seed == seed2 && offset == offset2,
              "loading moved the generator");
    same_params(m, back);
    xg_gpt_config a, b;
    cr_assert(xg_gpt_config_of(m, &a) && xg_gpt_config_of(back, &b));
    cr_assert(a.vocab_size == b.vocab_size && a.context == b.context &&
              a.n_layer == b.n_layer && a.n_head == b.n_head &&
              a.n_embd == b.n_embd && a.dropout == b.dropout &&
              a.bias == b.bias && a.layer_norm_eps == b.layer_norm_eps,
              "the configuration changed");
    cr_assert(xg_module_training(back));

    /* the dropout can be replaced; the saved folder goes anywhere */
    float zero = 0.0f, one = 1.0f;
    xg_module *quiet = xg_gpt_load_hf(in_dir("good/"), &zero);
    cr_assert_not_null(quiet, "%s", xg_last_error());
    cr_assert(xg_gpt_config_of(quiet, &b) && b.dropout == 0.0f);
    cr_assert_null(xg_gpt_load_hf(in_dir("good"), &one));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_gpt_save_hf(quiet, in_dir("a/b/c")), XG_OK, "%s",
                 xg_last_error());
    xg_module *deep = xg_gpt_load_hf(in_dir("a/b/c"), NULL);
    cr_assert_not_null(deep, "%s", xg_last_error());
    same_params(m, deep);
    /* saving again over the folder replaces it */
    cr_assert_eq(xg_gpt_save_hf(m, in_dir("a/b/c")), XG_OK, "%s",
                 xg_last_error());
    xg_module_free(deep);
    xg_module_free(quiet);
    xg_module_free(back);
    xg_module_free(m);
}

Test(gpt_hf, keys_without_prefix_mask_buffers_and_tied_lm_head_load)
{
    xg_module *m = save_good();
    xg_tensor *wte = xg_module_find_param(m, "wte.weight");
    int64_t mask_shape[4] = {1, 1, 8, 8};
    rewrite((edit){.strip = true, .extra = "h.1.attn.bias",
                   .extra_t = xg_ones(mask_shape, 4)});
    rewrite((edit){.extra = "h.0.attn.masked_bias",
                   .extra_t = filled(-1e4f, 0, 0)});
    rewrite((edit){.extra = "lm_head.weight", .extra_t = wte});
    xg_module *back = xg_gpt_load_hf(in_dir("good"), NULL);
    cr_assert_not_null(back, "%s", xg_last_error());
    same_params(m, back);
    xg_module_free(back);
    xg_module_free(m);
}

/* ---- refused folders ------------------------------------------------------ */

Test(gpt_hf, a_missing_tensor_is_named)
{
    xg_module_free(save_good());
    rewrite((edit){.skip = "transformer.h.1.mlp.c_fc.bias"});
    expect_refused(XG_ERR_NOT_FOUND, "model.safetensors",
                   "'transformer.h.1.mlp.c_fc.bias' is missing");
    xg_module_free(save_good());
    rewrite((edit){.skip = "transformer.wpe.weight", .strip = true});
    expect_refused(XG_ERR_NOT_FOUND, "model.safetensors",
                   "'wpe.weight' is missing");
}

Test(gpt_hf, a_wrong_shape_is_named)
{
    xg_module_free(save_good());
    rewrite((edit){.replace = "transformer.h.0.attn.c_attn.weight",
                   .with = filled(0.5f, 24, 8)}); /* transposed */
    expect_refused(XG_ERR_SHAPE, "model.safetensors",
                   "'transformer.h.0.attn.c_attn.weight' has shape [24,8]");
    xg_module_free(save_good());
    rewrite((edit){.replace = "transformer.ln_f.bias",
                   .with = filled(0.5f, 9, 0)});
    expect_refused(XG_ERR_SHAPE, "model.safetensors",
                   "'transformer.ln_f.bias'");
}

Test(gpt_hf, an_unexpected_tensor_is_named)
{
    static const char *const extras[] = {
        "transformer.h.0.attn.rotary", /* unknown */
        "transformer.h.2.attn.bias",   /* a mask of a layer it has not */
        "transformer.h.01.attn.bias",  /* not how layers are written */
        "wte.weight",                  /* the other key variant, mixed */
        "transformer.lm_head.weight",  /* lm_head has no prefix */
    };
    for (size_t i = 0; i < sizeof extras / sizeof *extras; i++) {
        xg_module_free(save_good());
        rewrite((edit){.extra = extras[i], .extra_t = filled(1, 2, 0)});
        char what[128];
        snprintf(what, sizeof what, "unexpected tensor '%s'", extras[i]);
        expect_refused(XG_ERR_FORMAT, "model.safetensors", what);
    }
}

Test(gpt_hf, lm_head_must_be_wte)
{
    xg_module *m = save_good();
    xg_tensor *wte = xg_module_find_param(m, "wte.weight");
    float *v = tu_read(wte);
    v[37] = nextafterf(v[37], 1.0f); /* one ulp */
    int64_t shape[2] = {13, 8};
    xg_tensor *other = xg_tensor_from_data(v, XG_F32, shape, 2);
    free(v);
    rewrite((edit){.extra = "lm_head.weight", .extra_t = other});
    expect_refused(XG_ERR_FORMAT, "model.safetensors",
                   "'lm_head.weight' differs from "
                   "'transformer.wte.weight' at index 37");
    xg_module_free(save_good());
    rewrite((edit){.extra = "lm_head.weight", .extra_t = filled(0, 8, 13)});
    expect_refused(XG_ERR_SHAPE, "model.safetensors", "'lm_head.weight'");
    xg_module_free(save_good());
    int32_t ints[13 * 8] = {0};
    int64_t ishape[2] = {13, 8};
    rewrite((edit){.extra = "lm_head.weight",
                   .extra_t = xg_tensor_from_data(ints, XG_I32, ishape, 2)});
    expect_refused(XG_ERR_DTYPE, "model.safetensors", "'lm_head.weight'");
    xg_module_free(m);
}

Test(gpt_hf, a_weight_of_another_dtype_is_named)
{
    xg_module_free(save_good());
    int64_t shape[1] = {8};
    int32_t ints[8] = {0};
    rewrite((edit){.replace = "transformer.h.1.ln_2.weight",
                   .with = xg_tensor_from_data(ints, XG_I32, shape, 1)});
    expect_refused(XG_ERR_DTYPE, "model.safetensors",
                   "'transformer.h.1.ln_2.weight' is I32");
}

Test(gpt_hf, a_truncated_model_file_is_refused)
{
    xg_module_free(save_good());
    const char *path = in_dir("good/model.safetensors");
    struct stat sb;
    cr_assert_eq(stat(path, &sb), 0);
    cr_assert_eq(truncate(path, sb.st_size - 100), 0);
    expect_refused(XG_ERR_FORMAT, "good/model.safetensors", "truncated");
    cr_assert_eq(truncate(path, 40), 0); /* inside the header */
    expect_refused(XG_ERR_FORMAT, "good/model.safetensors",
                   "runs past the end of the file");
}

Test(gpt_hf, missing_files_are_named)
{
    xg_module_free(save_good());
    cr_assert_eq(unlink(in_dir("good/model.safetensors")), 0);
    expect_refused(XG_ERR_NOT_FOUND, "good/model.safetensors",
                   "cannot open");
    cr_assert_eq(unlink(in_dir("good/config.json")), 0);
    expect_refused(XG_ERR_NOT_FOUND, "good/config.json", "cannot open");
    cr_assert_null(xg_gpt_load_hf(NULL, NULL));
    cr_assert_eq(xg_last_status(), XG_ERR_INVALID_ARG);
}

Test(gpt_hf, another_model_type_is_named)
{
    xg_module_free(save_good());
    edit_config("\"gpt2\"", "\"llama\"");
    expect_refused(XG_ERR_FORMAT, "good/config.json",
                   "model_type is 'llama'");
}

Test(gpt_hf, a_malformed_config_is_refused)
{
    xg_module_free(save_good());
    write_text(in_dir("good/config.json"), "{\"n_layer\": 2, \"n_head\": ");
    expect_refused(XG_ERR_FORMAT, "good/config.json", "not valid JSON");
    write_text(in_dir("good/config.json"), "[2, 2, 8]");
    expect_refused(XG_ERR_FORMAT, "good/config.json", "not a JSON object");
    write_text(in_dir("good/config.json"),
               "{\"n_layer\": 2, \"n_layer\": 3}");
    expect_refused(XG_ERR_FORMAT, "good/config.json", "duplicate");
}

/* Each edit of a good config.json, and the key the error must name. */
Test(gpt_hf, bad_config_values_are_named)
{
    static const struct {
        const char *from, *to, *named;
    } cases[] = {
        {"\"n_head\": 2", "\"n_head\": \"2\"", "'n_head'"},
        {"\"n_head\": 2", "\"n_heads\": 2", "no 'n_head'"},
        {"\"n_layer\": 2", "\"n_layer\": 0", "'n_layer'"},
        {"\"n_embd\": 8", "\"n_embd\": 8.5", "'n_embd'"},
        {"\"n_positions\": 8", "\"n_positions\": -8", "'n_positions'"},
        {"\"vocab_size\": 13", "\"vocab_size\": null", "'vocab_size'"},
        {"\"n_head\": 2", "\"n_head\": 3", "n_embd 8 is not a multiple"},
        {"\"layer_norm_epsilon\": 1e-05", "\"layer_norm_epsilon\": -1",
         "'layer_norm_epsilon'"},
        {"\"resid_pdrop\": 0.1", "\"resid_pdrop\": 1.5", "'resid_pdrop'"},
        {"\"attn_pdrop\": 0.1", "\"attn_pdrop\": \"x\"", "'attn_pdrop'"},
        {"\"gelu_new\"", "\"relu\"", "activation_function is 'relu'"},
        {"\"n_inner\": null", "\"n_inner\": 16", "n_inner"},
        {"\"scale_attn_weights\": true", "\"scale_attn_weights\": false",
         "'scale_attn_weights'"},
        {"\"scale_attn_by_inverse_layer_idx\": false",
         "\"scale_attn_by_inverse_layer_idx\": true",
         "'scale_attn_by_inverse_layer_idx'"},
        {"\"tie_word_embeddings\": true", "\"tie_word_embeddings\": false",
         "'tie_word_embeddings'"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        xg_module_free(save_good());
        edit_config(cases[i].from, cases[i].to);
        expect_refused(XG_ERR_FORMAT, "good/config.json", cases[i].named);
    }
}

/* Sizes the file cannot back are refused before a model is built. */
Test(gpt_hf, sizes_beyond_the_file_are_refused_first)
{
    xg_module_free(save_good());
    edit_config("\"n_layer\": 2", "\"n_layer\": 90000");
    expect_refused(XG_ERR_FORMAT, "good/model.safetensors", "cannot hold");
    xg_module_free(save_good());
    edit_config("\"n_embd\": 8", "\"n_embd\": 67108864");
    expect_refused(XG_ERR_TOO_LARGE, "good/config.json", "this large");
    xg_module_free(save_good());
    edit_config("\"n_layer\": 2", "\"n_layer\": 3");
    expect_refused(XG_ERR_NOT_FOUND, "good/model.safetensors",
                   "'transformer.h.2.ln_1.weight' is missing");
}

/* What config.json may leave out: GPT2Config's defaults; model_type. */
Test(gpt_hf, a_minimal_config_loads_with_gpt2_defaults)
{
    xg_module *m = save_good();
    write_text(in_dir("good/config.json"),
               "{\"n_layer\": 2, \"n_head\": 2, \"n_embd\": 8, "
               "\"n_positions\": 8, \"vocab_size\": 13}");
    xg_module *back = xg_gpt_load_hf(in_dir("good"), NULL);
    cr_assert_not_null(back, "%s", xg_last_error());
    xg_gpt_config c;
    cr_assert(xg_gpt_config_of(back, &c));
    cr_assert(c.dropout == 0.1f && c.layer_norm_eps == 1e-5f && c.bias);
    same_params(m, back);
    xg_module_free(back);
    xg_module_free(m);
}

/* ---- saving --------------------------------------------------------------- */

Test(gpt_hf, saving_refuses_what_gpt2_cannot_hold)
{
    xg_gpt_config c = small();
    c.bias = false;
    xg_module *m = xg_gpt(&c);
    cr_assert_not_null(m, "%s", xg_last_error());
    cr_assert_eq(xg_gpt_save_hf(m, in_dir("nobias")), XG_ERR_INVALID_ARG);
    cr_assert_not_null(strstr(xg_last_error(), "bias"), "%s",
                       xg_last_error());
    cr_assert_neq(access(in_dir("nobias"), F_OK), 0, "a folder was made");
    xg_module_free(m);
    xg_module *lin = xg_linear(2, 2, true);
    cr_assert_eq(xg_gpt_save_hf(lin, in_dir("lin")), XG_ERR_INVALID_ARG);
    cr_assert_eq(xg_gpt_save_hf(NULL, in_dir("x")), XG_ERR_INVALID_ARG);
    xg_module_free(lin);
    /* a file where the folder should be */
    write_text(in_dir("file"), "x");
    m = save_good();
    cr_assert_eq(xg_gpt_save_hf(m, in_dir("file")), XG_ERR_IO);
    cr_assert_not_null(strstr(xg_last_error(), "file"));
    xg_module_free(m);
}

/* config.json: GPT2Config's keys, the shortest decimals of the floats,
 * and GPT-2's end-of-text token for GPT-2's vocabulary only. */
Test(gpt_hf, the_config_is_gpt2s)
{
    xg_module *m = save_good();
    FILE *f = fopen(in_dir("good/config.json"), "r");
    cr_assert_not_null(f);
    char text[4096];
    text[fread(text, 1, sizeof text - 1, f)] = '\0';
    fclose(f);
    static const char *const want[] = {
        "\"model_type\": \"gpt2\"", "\"GPT2LMHeadModel\"",
        "\"activation_function\": \"gelu_new\"", "\"n_layer\": 2",
        "\"n_head\": 2", "\"n_embd\": 8", "\"n_positions\": 8",
        "\"n_ctx\": 8", "\"vocab_size\": 13",
        "\"layer_norm_epsilon\": 1e-05", "\"resid_pdrop\": 0.1,",
        "\"embd_pdrop\": 0.1,", "\"attn_pdrop\": 0.1,",
        "\"tie_word_embeddings\": true"};
    for (size_t i = 0; i < sizeof want / sizeof *want; i++)
        cr_expect_not_null(strstr(text, want[i]), "no %s in\n%s", want[i],
                           text);
    cr_expect_null(strstr(text, "eos_token_id"));
    xg_module_free(m);
}
