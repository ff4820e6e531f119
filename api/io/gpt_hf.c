/* GPT-2 checkpoints in Hugging Face's folder layout: config.json (a
 * GPT2Config) beside model.safetensors (GPT2LMHeadModel's state_dict).
 *
 * The file's keys are xgrad's GPT names (api/nn/gpt.c), with or without
 * the "transformer." prefix that GPT2LMHeadModel puts before them. The
 * attention mask buffers older versions saved (h.N.attn.bias, the causal
 * mask, and h.N.attn.masked_bias, a constant) are skipped: the model has
 * its causal mask built in. lm_head.weight, when a file has it, is the tied
 * token embedding again and must equal it.
 *
 * Loading checks everything (config, every key, dtype and shape, the tie)
 * before the model it builds is returned; on any error the model is freed
 * and nothing else has changed.
 */
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "nn/gpt_impl.h"
#include "safetensors_impl.h"

#define PREFIX "transformer."
#define CONFIG_MAX_BYTES (16u << 20) /* far more than any GPT2Config */

/* dir "/" name, malloc'd; NULL with XG_ERR_OUT_OF_MEMORY set. */
static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir);
    char *p = malloc(n + strlen(name) + 2);
    if (!p) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", dir);
        return NULL;
    }
    sprintf(p, "%s%s%s", dir, n && dir[n - 1] == '/' ? "" : "/", name);
    return p;
}

/* ==== config.json ========================================================== */

/* Reads a small regular file as JSON; *out gets the value (to decref). */
static xg_status read_json(const char *path, json_t **out)
{
    *out = NULL;
    /* O_NONBLOCK: opening a FIFO must not wait for a writer. */
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0)
        return xg_set_error(errno == ENOENT ? XG_ERR_NOT_FOUND : XG_ERR_IO,
                            "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    xg_status s = XG_OK;
    if (fstat(fd, &sb) != 0)
        s = xg_set_error(XG_ERR_IO, "%s: %s", path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        s = xg_set_error(XG_ERR_IO, "%s: not a regular file", path);
    else if ((uint64_t)sb.st_size > CONFIG_MAX_BYTES)
        s = xg_set_error(XG_ERR_TOO_LARGE, "%s: %lld bytes; a GPT-2 "
                         "config.json is a few hundred", path,
                         (long long)sb.st_size);
    size_t len = s == XG_OK ? (size_t)sb.st_size : 0, got = 0;
    char *text = s == XG_OK ? malloc(len ? len : 1) : NULL;
    if (s == XG_OK && !text)
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                         path);
    while (s == XG_OK && got < len) {
        ssize_t r = read(fd, text + got, len - got);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            s = xg_set_error(XG_ERR_IO, "%s: %s", path, r < 0
                             ? strerror(errno) : "the file ended early");
        else
            got += (size_t)r;
    }
    close(fd);
    if (s == XG_OK) {
        json_error_t err;
        *out = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
        if (!*out)
            s = xg_set_error(XG_ERR_FORMAT, "%s: not valid JSON: %s (line "
                             "%d, column %d)", path, err.text, err.line,
                             err.column);
        else if (!json_is_object(*out))
            s = xg_set_error(XG_ERR_FORMAT, "%s: not a JSON object", path);
    }
    free(text);
    if (s != XG_OK) {
        json_decref(*out);
        *out = NULL;
    }
    return s;
}

/* A required size: an integer >= 1. */
static xg_status cfg_size(const char *file, const json_t *root,
                          const char *key, int64_t *out)
{
    const json_t *v = json_object_get(root, key);
    if (!v)
        return xg_set_error(XG_ERR_FORMAT, "%s: no '%s'", file, key);
    if (!json_is_integer(v) || json_integer_value(v) < 1)
        return xg_set_error(XG_ERR_FORMAT, "%s: '%s' is not an integer >= 1",
                            file, key);
    *out = (int64_t)json_integer_value(v);
    return XG_OK;
}

/* An optional number in [0, below) (below 0: no upper bound); absent or
 * null gives `def`. */
static xg_status cfg_number(const char *file, const json_t *root,
                            const char *key, double def, double below,
                            float *out)
{
    const json_t *v = json_object_get(root, key);
    double x = !v || json_is_null(v) ? def : json_number_value(v);
    float f = (float)x;
    if ((v && !json_is_null(v) && !json_is_number(v)) || !(x >= 0) ||
        !isfinite(f) || (below > 0 && !(f < below)))
        return xg_set_error(XG_ERR_FORMAT, "%s: '%s' is not a number in "
                            "[0, %s)", file, key, below > 0 ? "1" : "inf");
    *out = f;
    return XG_OK;
}

/* An optional flag that xgrad's GPT has only one way: absent, null or
 * `want`. */
static xg_status cfg_flag(const char *file, const json_t *root,
                          const char *key, bool want)
{
    const json_t *v = json_object_get(root, key);
    if (!v || json_is_null(v) || (json_is_boolean(v) &&
                                  json_boolean_value(v) == want))
        return XG_OK;
    return xg_set_error(XG_ERR_FORMAT, "%s: '%s' must be %s for xgrad's GPT",
                        file, key, want ? "true" : "false");
}

/* The GPT configuration config.json describes. */
static xg_status parse_config(const char *file, const json_t *root,
                              xg_gpt_config *cfg)
{
    const json_t *type = json_object_get(root, "model_type");
    if (type && (!json_is_string(type) ||
                 strcmp(json_string_value(type), "gpt2") != 0))
        return xg_set_error(XG_ERR_FORMAT, "%s: model_type is '%s'; xgrad "
                            "loads GPT-2 ('gpt2') checkpoints only", file,
                            json_is_string(type) ? json_string_value(type)
                                                 : "(not a string)");
    *cfg = (xg_gpt_config){.bias = true};
    xg_status s = cfg_size(file, root, "n_layer", &cfg->n_layer);
    if (s == XG_OK)
        s = cfg_size(file, root, "n_head", &cfg->n_head);
    if (s == XG_OK)
        s = cfg_size(file, root, "n_embd", &cfg->n_embd);
    if (s == XG_OK)
        s = cfg_size(file, root, "n_positions", &cfg->context);
    if (s == XG_OK)
        s = cfg_size(file, root, "vocab_size", &cfg->vocab_size);
    if (s != XG_OK)
        return s;
    if (cfg->n_embd % cfg->n_head)
        return xg_set_error(XG_ERR_FORMAT, "%s: n_embd %lld is not a multiple "
                            "of n_head %lld", file, (long long)cfg->n_embd,
                            (long long)cfg->n_head);
    float unused;
    s = cfg_number(file, root, "layer_norm_epsilon", 1e-5, -1,
                   &cfg->layer_norm_eps);
    if (s == XG_OK)
        s = cfg_number(file, root, "resid_pdrop", 0.1, 1, &cfg->dropout);
    if (s == XG_OK)
        s = cfg_number(file, root, "embd_pdrop", 0.1, 1, &unused);
    if (s == XG_OK)
        s = cfg_number(file, root, "attn_pdrop", 0.1, 1, &unused);
    if (s != XG_OK)
        return s;
    /* what would make a different network than xgrad's GPT */
    const json_t *act = json_object_get(root, "activation_function");
    const char *a = json_is_string(act) ? json_string_value(act) : NULL;
    if (act && !json_is_null(act) &&
        !(a && (!strcmp(a, "gelu_new") || !strcmp(a, "gelu_pytorch_tanh"))))
        return xg_set_error(XG_ERR_FORMAT, "%s: activation_function is '%s'; "
                            "xgrad's GPT has GELU's tanh approximation "
                            "('gelu_new')", file, a ? a : "(not a string)");
    const json_t *inner = json_object_get(root, "n_inner");
    if (inner && !json_is_null(inner) &&
        !(json_is_integer(inner) &&
          json_integer_value(inner) == 4 * cfg->n_embd))
        return xg_set_error(XG_ERR_FORMAT, "%s: n_inner must be null or 4 x "
                            "n_embd (%lld) for xgrad's GPT", file,
                            (long long)(4 * cfg->n_embd));
    s = cfg_flag(file, root, "scale_attn_weights", true);
    if (s == XG_OK)
        s = cfg_flag(file, root, "scale_attn_by_inverse_layer_idx", false);
    if (s == XG_OK)
        s = cfg_flag(file, root, "add_cross_attention", false);
    if (s == XG_OK)
        s = cfg_flag(file, root, "tie_word_embeddings", true);
    return s;
}

/* ==== model.safetensors ==================================================== */

/* Whether `name` (without the prefix) is h.N.attn.bias or
 * h.N.attn.masked_bias with 0 <= N < n_layer, N written plainly. */
static bool is_mask_buffer(const char *name, int64_t n_layer)
{
    if (strncmp(name, "h.", 2) != 0)
        return false;
    const char *p = name + 2, *digits = p;
    int64_t n = 0;
    while (*p >= '0' && *p <= '9' && n < n_layer)
        n = n * 10 + (*p++ - '0');
    if (p == digits || n >= n_layer || (*digits == '0' && p - digits > 1))
        return false;
    return !strcmp(p, ".attn.bias") || !strcmp(p, ".attn.masked_bias");
}

static bool is_float_dtype(const char *dtype)
{
    return !strcmp(dtype, "F32") || !strcmp(dtype, "F16") ||
           !strcmp(dtype, "BF16");
}

/* Claims the file's tensor for each parameter of m into src[], and checks
 * that the file holds nothing else but mask buffers and a tied lm_head
 * (*lm_head, or NULL). */
static xg_status plan(const xg_safetensors *st, const xg_module *m,
                      const xg_gpt_config *cfg, const xg__st_entry **src,
                      bool *used, const xg__st_entry **lm_head)
{
    const char *label = xg__safetensors_label(st);
    const char *prefix = xg__safetensors_index(st, PREFIX "wte.weight") >= 0
                             ? PREFIX : "";
    size_t plen = strlen(prefix);
    int n = xg_module_param_count(m);
    for (int i = 0; i < n; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        char key[320];
        snprintf(key, sizeof key, "%s%s", prefix, name);
        int at = xg__safetensors_index(st, key);
        const xg__st_entry *e = xg__safetensors_entry(st, at);
        if (!e)
            return xg_set_error(XG_ERR_NOT_FOUND, "%s: tensor '%s' is missing "
                                "(config.json's GPT-2 has it)", label, key);
        used[at] = true;
        if (!is_float_dtype(e->dtype))
            return xg_set_error(XG_ERR_DTYPE, "%s: tensor '%s' is %s; GPT-2's "
                                "weights load from F32, F16 or BF16", label,
                                key, e->dtype);
        bool same = e->ndim == xg_tensor_ndim(p);
        for (int d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == xg_tensor_dim(p, d);
        if (!same) {
            char got[160], want[160];
            xg__shape_str(e->shape, e->ndim, got, sizeof got);
            xg__shape_str(xg_tensor_shape(p), xg_tensor_ndim(p), want,
                          sizeof want);
            return xg_set_error(XG_ERR_SHAPE, "%s: tensor '%s' has shape %s; "
                                "config.json's sizes make it %s", label, key,
                                got, want);
        }
        src[i] = e;
    }
    *lm_head = NULL;
    for (int i = 0; i < xg_safetensors_count(st); i++) {
        const xg__st_entry *e = xg__safetensors_entry(st, i);
        if (used[i])
            continue;
        if (!strncmp(e->name, prefix, plen) &&
            is_mask_buffer(e->name + plen, cfg->n_layer))
            continue;
        if (!strcmp(e->name, "lm_head.weight")) {
            *lm_head = e;
            continue;
        }
        return xg_set_error(XG_ERR_FORMAT, "%s: unexpected tensor '%s' (not "
                            "a weight of config.json's GPT-2)", label,
                            e->name);
    }
    return XG_OK;
}

/* lm_head.weight must be wte.weight again, bit for bit once both are
 * floats: xgrad's GPT has no separate output projection. */
static xg_status check_tied(const xg_safetensors *st, const xg__st_entry *lm,
                            const xg__st_entry *wte, float *a, float *b)
{
    const char *label = xg__safetensors_label(st);
    bool same = lm->ndim == wte->ndim;
    for (int d = 0; same && d < lm->ndim; d++)
        same = lm->shape[d] == wte->shape[d];
    if (!same || !is_float_dtype(lm->dtype)) {
        char got[160];
        xg__shape_str(lm->shape, lm->ndim, got, sizeof got);
        return xg_set_error(same ? XG_ERR_DTYPE : XG_ERR_SHAPE, "%s: tensor "
                            "'lm_head.weight' is %s "
                            "%s, not a float tensor of wte's shape (xgrad's "
                            "GPT ties the output projection to wte)", label,
                            lm->dtype, got);
    }
    xg__safetensors_to_f32(lm, a);
    xg__safetensors_to_f32(wte, b);
    size_t n = wte->bytes / (strcmp(wte->dtype, "F32") ? 2 : 4);
    for (size_t i = 0; i < n; i++)
        if (memcmp(&a[i], &b[i], sizeof *a) != 0)
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor 'lm_head.weight' "
                                "differs from '%s' at index %zu (%g vs %g): "
                                "xgrad's GPT ties the output projection to "
                                "the token embedding and cannot hold a "
                                "separate one", label, wte->name, i,
                                (double)a[i], (double)b[i]);
    return XG_OK;
}

/* Copies the planned tensors into m's parameters: F32 as it is, the others
 * through `buf`, which holds the largest one as floats. */
static xg_status fill(const xg_module *m, const xg__st_entry **src,
                      float *buf)
{
    for (int i = 0; i < xg_module_param_count(m); i++) {
        xg_tensor *p = xg_module_param(m, i, NULL);
        const void *from = src[i]->data;
        if (strcmp(src[i]->dtype, "F32") != 0) {
            xg__safetensors_to_f32(src[i], buf);
            from = buf;
        }
        xg_status s = xg_tensor_write(p, from, (size_t)xg_tensor_numel(p) *
                                                   sizeof(float));
        if (s != XG_OK)
            return s;
    }
    return XG_OK;
}

/* A file too small for the GPT that config.json describes is refused
 * before the model is built: so a config with huge sizes costs nothing
 * unless the file really holds that many weights. */
static xg_status check_size(const xg_safetensors *st, const xg_gpt_config *c)
{
    double cc = (double)c->n_embd, data = 0;
    double params = (double)(c->vocab_size + c->context) * cc +
                    (double)c->n_layer * (12 * cc * cc + 13 * cc) + 2 * cc;
    for (int i = 0; i < xg_safetensors_count(st); i++)
        data += (double)xg__safetensors_entry(st, i)->bytes;
    if (2 * params <= data) /* at least 2 bytes a weight (F16, BF16) */
        return XG_OK;
    return xg_set_error(XG_ERR_FORMAT, "%s: %.0f bytes of tensors cannot "
                        "hold the %.0f weights of config.json's GPT-2 (%lld "
                        "layers, %lld wide, vocab %lld, %lld positions)",
                        xg__safetensors_label(st), data, params,
                        (long long)c->n_layer, (long long)c->n_embd,
                        (long long)c->vocab_size, (long long)c->context);
}

xg_module *xg__gpt_hf_from(const xg_safetensors *st, const xg_gpt_config *cfg)
{
    if (!st || !cfg) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_load_hf: NULL argument");
        return NULL;
    }
    if (!xg__gpt_config_ok(cfg) || check_size(st, cfg) != XG_OK)
        return NULL;
    xg_module *m = xg__gpt_blank(cfg);
    if (!m) {
        char why[512];
        snprintf(why, sizeof why, "%s", xg_last_error());
        xg_set_error(xg_last_status(), "%s: %s", xg__safetensors_label(st),
                     why);
        return NULL;
    }
    int n = xg_module_param_count(m), count = xg_safetensors_count(st);
    const xg__st_entry **src = calloc((size_t)n, sizeof *src);
    bool *used = calloc(count ? (size_t)count : 1, sizeof *used);
    const xg__st_entry *lm_head = NULL;
    float *a = NULL, *b = NULL;
    xg_status s = src && used ? plan(st, m, cfg, src, used, &lm_head)
                              : xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out "
                                             "of host memory",
                                             xg__safetensors_label(st));
    size_t most = 0; /* the largest parameter, in floats */
    for (int i = 0; s == XG_OK && i < n; i++) {
        size_t k = (size_t)xg_tensor_numel(xg_module_param(m, i, NULL));
        most = k > most ? k : most;
    }
    if (s == XG_OK && (!(a = malloc(most * sizeof *a)) ||
                       (lm_head && !(b = malloc(most * sizeof *b)))))
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory for "
                         "%zu floats", xg__safetensors_label(st), most);
    for (int i = 0; s == XG_OK && lm_head && i < n; i++) {
        const char *name;
        xg_module_param(m, i, &name);
        if (!strcmp(name, "wte.weight"))
            s = check_tied(st, lm_head, src[i], a, b);
    }
    if (s == XG_OK)
        s = fill(m, src, a);
    free(a);
    free(b);
    free(used);
    free(src);
    if (s != XG_OK) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

xg_module *xg_gpt_load_hf(const char *dir, const float *dropout)
{
    if (!dir) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_load_hf: NULL folder");
        return NULL;
    }
    if (dropout && !(*dropout >= 0.0f && *dropout < 1.0f)) {
        xg_set_error(XG_ERR_INVALID_ARG, "gpt_load_hf: dropout %g is not in "
                     "[0, 1)", (double)*dropout);
        return NULL;
    }
    char *config_path = join(dir, "config.json");
    char *model_path = config_path ? join(dir, "model.safetensors") : NULL;
    json_t *root = NULL;
    xg_safetensors *st = NULL;
    xg_gpt_config cfg;
    xg_status s = model_path ? read_json(config_path, &root)
                             : xg_last_status();
    if (s == XG_OK)
        s = parse_config(config_path, root, &cfg);
    if (s == XG_OK && dropout)
        cfg.dropout = *dropout;
    if (s == XG_OK && !xg__gpt_config_ok(&cfg)) { /* e.g. sizes too large */
        char why[512];
        snprintf(why, sizeof why, "%s", xg_last_error());
        s = xg_set_error(xg_last_status(), "%s: %s", config_path, why);
    }
    if (s == XG_OK)
        s = xg_safetensors_open(model_path, &st);
    xg_module *m = s == XG_OK ? xg__gpt_hf_from(st, &cfg) : NULL;
    xg_safetensors_close(st);
    json_decref(root);
    free(model_path);
    free(config_path);
    return m;
}

/* ==== Saving ================================================================ */

/* The shortest decimal that reads back as v (as a JSON number). */
static void float_text(float v, char *buf, size_t cap)
{
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, cap, "%.*g", digits, (double)v);
        if (strtof(buf, NULL) == v)
            return;
    }
}

/* GPT2Config's JSON, with sorted keys as transformers writes it. */
static char *config_text(const xg_gpt_config *c)
{
    char eps[32], drop[32], tokens[96] = "";
    float_text(c->layer_norm_eps, eps, sizeof eps);
    float_text(c->dropout, drop, sizeof drop);
    if (c->vocab_size == 50257) /* GPT-2's <|endoftext|> */
        snprintf(tokens, sizeof tokens, "  \"bos_token_id\": 50256,\n");
    const char *fmt =
        "{\n"
        "  \"activation_function\": \"gelu_new\",\n"
        "  \"architectures\": [\n"
        "    \"GPT2LMHeadModel\"\n"
        "  ],\n"
        "  \"attn_pdrop\": %s,\n"
        "%s"
        "  \"embd_pdrop\": %s,\n"
        "%s"
        "  \"initializer_range\": 0.02,\n"
        "  \"layer_norm_epsilon\": %s,\n"
        "  \"model_type\": \"gpt2\",\n"
        "  \"n_ctx\": %lld,\n"
        "  \"n_embd\": %lld,\n"
        "  \"n_head\": %lld,\n"
        "  \"n_inner\": null,\n"
        "  \"n_layer\": %lld,\n"
        "  \"n_positions\": %lld,\n"
        "  \"reorder_and_upcast_attn\": false,\n"
        "  \"resid_pdrop\": %s,\n"
        "  \"scale_attn_by_inverse_layer_idx\": false,\n"
        "  \"scale_attn_weights\": true,\n"
        "  \"tie_word_embeddings\": true,\n"
        "  \"torch_dtype\": \"float32\",\n"
        "  \"use_cache\": true,\n"
        "  \"vocab_size\": %lld\n"
        "}\n";
    const char *eos = c->vocab_size == 50257 ? "  \"eos_token_id\": 50256,\n"
                                             : "";
    int len = snprintf(NULL, 0, fmt, drop, tokens, drop, eos, eps,
                       (long long)c->context, (long long)c->n_embd,
                       (long long)c->n_head, (long long)c->n_layer,
                       (long long)c->context, drop, (long long)c->vocab_size);
    char *text = len > 0 ? malloc((size_t)len + 1) : NULL;
    if (text)
        snprintf(text, (size_t)len + 1, fmt, drop, tokens, drop, eos, eps,
                 (long long)c->context, (long long)c->n_embd,
                 (long long)c->n_head, (long long)c->n_layer,
                 (long long)c->context, drop, (long long)c->vocab_size);
    else
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "gpt_save_hf: out of host memory");
    return text;
}

/* Creates `dir` and any missing parent (as mkdir -p). */
static xg_status make_folder(const char *dir)
{
    char *p = strdup(dir);
    if (!p)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            dir);
    xg_status s = XG_OK;
    for (char *at = p + 1; s == XG_OK; at++) {
        bool end = *at == '\0';
        if (!end && *at != '/')
            continue;
        *at = '\0';
        struct stat sb;
        if (mkdir(p, 0777) != 0 && errno != EEXIST)
            s = xg_set_error(XG_ERR_IO, "%s: cannot create the folder: %s", p,
                             strerror(errno));
        else if (stat(p, &sb) != 0 || !S_ISDIR(sb.st_mode))
            s = xg_set_error(XG_ERR_IO, "%s: not a folder", p);
        if (end)
            break;
        *at = '/';
    }
    free(p);
    return s;
}

xg_status xg_gpt_save_hf(const xg_module *gpt, const char *dir)
{
    xg_gpt_config cfg;
    if (!gpt || !dir || !dir[0])
        return xg_set_error(XG_ERR_INVALID_ARG, "gpt_save_hf: NULL argument "
                            "or empty folder name");
    if (!xg_gpt_config_of(gpt, &cfg))
        return xg_set_error(XG_ERR_INVALID_ARG, "gpt_save_hf: the module is "
                            "not a GPT (xg_gpt)");
    if (!cfg.bias)
        return xg_set_error(XG_ERR_INVALID_ARG, "gpt_save_hf: the GPT has no "
                            "biases (bias = false); GPT-2's checkpoints have "
                            "them, so it cannot be saved as one");
    xg_status s = make_folder(dir);
    char *model_path = s == XG_OK ? join(dir, "model.safetensors") : NULL;
    char *config_path = model_path ? join(dir, "config.json") : NULL;
    char *text = config_path ? config_text(&cfg) : NULL;
    xg_safetensors_writer *w = text ? xg_safetensors_writer_new() : NULL;
    if (s == XG_OK && !w)
        s = xg_last_status();
    if (s == XG_OK)
        s = xg_safetensors_writer_metadata(w, "format", "pt");
    for (int i = 0; s == XG_OK && i < xg_module_param_count(gpt); i++) {
        const char *name;
        xg_tensor *p = xg_module_param(gpt, i, &name);
        char key[320];
        snprintf(key, sizeof key, PREFIX "%s", name);
        s = xg_safetensors_writer_add(w, key, p);
    }
    /* the weights first: should writing config.json fail, an older one
     * left beside them that does not fit them is refused by the loader */
    if (s == XG_OK)
        s = xg_safetensors_writer_save(w, model_path);
    if (s == XG_OK)
        s = xg__write_file_atomic(config_path, text, strlen(text));
    xg_safetensors_writer_free(w);
    free(text);
    free(config_path);
    free(model_path);
    return s;
}
