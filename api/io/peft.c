/* LoRA adapters in PEFT's files (xgrad.h, xg_lora_save_peft and
 * xg_lora_load_peft): adapter_model.safetensors with PEFT's key names and
 * adapter_config.json with LoraConfig's fields. */
#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "io/safetensors_impl.h"
#include "nn/nn_impl.h"

#define CONFIG_FILE "adapter_config.json"
#define WEIGHTS_FILE "adapter_model.safetensors"

/* What comes before a layer's dotted path in PEFT's keys: PeftModel's
 * "base_model.model.", then "transformer." for a GPT, whose names are
 * GPT2LMHeadModel's below its "transformer". */
static const char *key_prefix(const xg_module *root)
{
    return xg_gpt_config_of(root, NULL) ? "base_model.model.transformer."
                                        : "base_model.model.";
}

/* "<prefix><path>.<which><mid>.weight", malloc'd (NULL on OOM). */
static char *key_of(const char *prefix, const char *path, const char *which,
                    const char *mid)
{
    size_t n = strlen(prefix) + strlen(path) + strlen(which) + strlen(mid) +
               16;
    char *k = malloc(n);
    if (k)
        snprintf(k, n, "%s%s%s%s%s.weight", prefix, path, path[0] ? "." : "",
                 which, mid);
    return k;
}

static char *path_in(const char *dir, const char *file)
{
    size_t n = strlen(dir) + strlen(file) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, file);
    return p;
}

/* ==== Saving ============================================================== */

/* The shortest decimal that reads back as f, as a JSON real: 0.1f is
 * written 0.1, as Python writes PEFT's floats. */
static json_t *short_real(float f)
{
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)f);
        if (strtof(buf, NULL) == f)
            break;
    }
    return json_real(strtod(buf, NULL));
}

/* adapter_config.json's object, as PEFT's LoraConfig writes it. */
static json_t *config_json(const xg__lora_root *rec, bool all_conv1d,
                           bool gpt, const char *base)
{
    json_t *targets = json_array();
    for (int i = 0; targets && i < rec->n_targets; i++)
        if (json_array_append_new(targets, json_string(rec->targets[i]))) {
            json_decref(targets);
            targets = NULL;
        }
    json_t *alpha = rec->alpha == floorf(rec->alpha) &&
                            fabsf(rec->alpha) < 0x1p31f
                        ? json_integer((json_int_t)rec->alpha)
                        : short_real(rec->alpha);
    json_t *o = targets && alpha ? json_object() : NULL;
    bool ok = o != NULL;
    ok = ok && !json_object_set_new(o, "peft_type", json_string("LORA"));
    ok = ok && !json_object_set_new(o, "r", json_integer(rec->r));
    ok = ok && !json_object_set(o, "lora_alpha", alpha);
    ok = ok && !json_object_set_new(o, "lora_dropout",
                                    short_real(rec->dropout));
    ok = ok && !json_object_set(o, "target_modules", targets);
    ok = ok && !json_object_set_new(o, "fan_in_fan_out",
                                    json_boolean(all_conv1d));
    ok = ok && !json_object_set_new(o, "base_model_name_or_path",
                                    base ? json_string(base) : json_null());
    ok = ok && !json_object_set_new(o, "bias", json_string("none"));
    ok = ok && !json_object_set_new(o, "task_type",
                                    gpt ? json_string("CAUSAL_LM")
                                        : json_null());
    ok = ok && !json_object_set_new(o, "inference_mode", json_true());
    ok = ok && !json_object_set_new(o, "init_lora_weights", json_true());
    ok = ok && !json_object_set_new(o, "use_rslora", json_false());
    ok = ok && !json_object_set_new(o, "use_dora", json_false());
    ok = ok && !json_object_set_new(o, "rank_pattern", json_object());
    ok = ok && !json_object_set_new(o, "alpha_pattern", json_object());
    ok = ok && !json_object_set_new(o, "loftq_config", json_object());
    ok = ok && !json_object_set_new(o, "megatron_core",
                                    json_string("megatron.core"));
    static const char *const nulls[] = {
        "auto_mapping", "revision", "modules_to_save", "layers_to_transform",
        "layers_pattern", "megatron_config", "layer_replication"};
    for (size_t i = 0; ok && i < sizeof nulls / sizeof *nulls; i++)
        ok = !json_object_set_new(o, nulls[i], json_null());
    json_decref(targets);
    json_decref(alpha);
    if (!ok) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static xg_status write_config(const char *path, json_t *o, const char *who)
{
    char *text = json_dumps(o, JSON_INDENT(2) | JSON_SORT_KEYS |
                                   JSON_REAL_PRECISION(9));
    if (!text)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            who);
    size_t n = strlen(text);
    char *line = realloc(text, n + 2); /* ends with a newline */
    if (line) {
        text = line;
        text[n++] = '\n';
        text[n] = '\0';
    }
    xg_status st = xg__write_file_atomic(path, text, n);
    free(text);
    return st;
}

xg_status xg_lora_save_peft(const xg_module *root, const char *dir,
                            const char *base_model_name_or_path)
{
    const char *who = "lora_save_peft";
    if (!root || !dir)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", who);
    const xg__lora_root *rec = xg__module_lora_root(root);
    xg__lora_ref *refs = NULL;
    int n = 0;
    xg_status st = rec ? xg__lora_collect((xg_module *)root, NULL, 0, who,
                                          &refs, &n)
                       : xg_set_error(XG_ERR_STATE, "%s: no LoRA was "
                                      "applied to this %s (xg_lora_apply on "
                                      "it), or it was merged", who,
                                      xg_module_class_of(root)->name);
    if (st == XG_OK && n == 0)
        st = xg_set_error(XG_ERR_STATE, "%s: every LoRA layer of this %s "
                          "was merged", who, xg_module_class_of(root)->name);
    if (st == XG_OK && mkdir(dir, 0777) != 0 && errno != EEXIST)
        st = xg_set_error(XG_ERR_IO, "%s: %s: cannot make the folder: %s",
                          who, dir, strerror(errno));
    const char *prefix = key_prefix(root);
    xg_safetensors_writer *w = st == XG_OK ? xg_safetensors_writer_new()
                                           : NULL;
    if (st == XG_OK && !w)
        st = xg_last_status();
    bool all_conv1d = true;
    for (int i = 0; st == XG_OK && i < n; i++) {
        all_conv1d = all_conv1d && refs[i].conv1d;
        for (int k = 0; st == XG_OK && k < 2; k++) {
            const char *which = k ? "lora_B" : "lora_A";
            char own[16];
            snprintf(own, sizeof own, "%s.weight", which);
            char *key = key_of(prefix, refs[i].path, which, "");
            xg_tensor *t = xg_module_find_param(refs[i].m, own);
            st = !key ? xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host "
                                     "memory", who)
                 : t  ? xg_safetensors_writer_add(w, key, t)
                      : xg_last_status();
            free(key);
        }
    }
    if (st == XG_OK)
        st = xg_safetensors_writer_metadata(w, "format", "pt");
    char *wpath = path_in(dir, WEIGHTS_FILE), *cpath = path_in(dir,
                                                               CONFIG_FILE);
    if (st == XG_OK && (!wpath || !cpath))
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    if (st == XG_OK)
        st = xg_safetensors_writer_save(w, wpath);
    json_t *o = st == XG_OK ? config_json(rec, all_conv1d,
                                          xg_gpt_config_of(root, NULL),
                                          base_model_name_or_path)
                            : NULL;
    if (st == XG_OK && !o)
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    if (st == XG_OK)
        st = write_config(cpath, o, who);
    json_decref(o);
    free(wpath);
    free(cpath);
    xg_safetensors_writer_free(w);
    xg__lora_refs_free(refs, n);
    return st;
}

/* ==== Loading ============================================================= */

/* The configuration read from adapter_config.json. */
typedef struct peft_config {
    json_t *root;
    xg_lora_config cfg;
    const char **targets; /* borrowed from root */
} peft_config;

static void peft_config_free(peft_config *p)
{
    free(p->targets);
    json_decref(p->root);
}

/* True when a field asks for a feature xgrad's LoRA lacks; absent or null
 * fields, false flags, empty patterns and bias "none" are harmless. */
static bool unsupported(const json_t *v, const char *field)
{
    if (!v || json_is_null(v))
        return false;
    if (!strcmp(field, "use_dora") || !strcmp(field, "use_rslora"))
        return !json_is_false(v);
    if (!strcmp(field, "rank_pattern") || !strcmp(field, "alpha_pattern"))
        return !json_is_object(v) || json_object_size(v) != 0;
    if (!strcmp(field, "bias"))
        return !json_is_string(v) || strcmp(json_string_value(v), "none");
    return true; /* layers_to_transform, modules_to_save,
                  * layer_replication: anything but null */
}

static xg_status read_config(const char *path, peft_config *p,
                             const char *who)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return xg_set_error(XG_ERR_IO, "%s: %s: %s", who, path,
                            strerror(errno));
    json_error_t err;
    p->root = json_loadf(f, JSON_REJECT_DUPLICATES, &err);
    fclose(f);
    if (!json_is_object(p->root))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: %s (line %d)", who, path,
                            p->root ? "not a JSON object" : err.text,
                            err.line);
    const json_t *o = p->root;
    const json_t *type = json_object_get(o, "peft_type");
    if (!json_is_string(type) || strcmp(json_string_value(type), "LORA"))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: peft_type is %s%s%s, "
                            "xgrad reads \"LORA\" adapters", who, path,
                            json_is_string(type) ? "\"" : "",
                            json_is_string(type) ? json_string_value(type)
                            : type ? "not a string" : "missing",
                            json_is_string(type) ? "\"" : "");
    const json_t *r = json_object_get(o, "r");
    if (!json_is_integer(r) || json_integer_value(r) < 1 ||
        json_integer_value(r) > (1 << 24))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: field \"r\" must be an "
                            "integer in [1, 2^24]", who, path);
    const json_t *alpha = json_object_get(o, "lora_alpha");
    if (!json_is_number(alpha) || !isfinite(json_number_value(alpha)))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: field \"lora_alpha\" "
                            "must be a finite number", who, path);
    const json_t *drop = json_object_get(o, "lora_dropout");
    double dropout = drop && !json_is_null(drop) ? json_number_value(drop)
                                                 : 0.0;
    if ((drop && !json_is_null(drop) && !json_is_number(drop)) ||
        !(dropout >= 0.0 && dropout < 1.0))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: field \"lora_dropout\" "
                            "must be a number in [0, 1)", who, path);
    static const char *const fields[] = {
        "use_dora", "use_rslora", "rank_pattern", "alpha_pattern", "bias",
        "layers_to_transform", "modules_to_save", "layer_replication"};
    for (size_t i = 0; i < sizeof fields / sizeof *fields; i++)
        if (unsupported(json_object_get(o, fields[i]), fields[i]))
            return xg_set_error(XG_ERR_FORMAT, "%s: %s: field \"%s\" asks "
                                "for what xgrad's LoRA does not implement",
                                who, path, fields[i]);
    const json_t *t = json_object_get(o, "target_modules");
    if (json_is_string(t))
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: target_modules is a "
                            "regular expression (\"%s\"); xgrad reads a list "
                            "of names", who, path, json_string_value(t));
    size_t nt = json_is_array(t) ? json_array_size(t) : 0;
    if (nt == 0 || nt > 4096)
        return xg_set_error(XG_ERR_FORMAT, "%s: %s: field \"target_modules\" "
                            "must be a list of 1 to 4096 names", who, path);
    if (!(p->targets = calloc(nt, sizeof *p->targets)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            who);
    for (size_t i = 0; i < nt; i++) {
        const json_t *e = json_array_get(t, i);
        if (!json_is_string(e) || !json_string_length(e))
            return xg_set_error(XG_ERR_FORMAT, "%s: %s: target_modules[%zu] "
                                "is not a non-empty string", who, path, i);
        p->targets[i] = json_string_value(e);
    }
    p->cfg = (xg_lora_config){.r = (int)json_integer_value(r),
                              .alpha = (float)json_number_value(alpha),
                              .dropout = (float)dropout,
                              .targets = p->targets, .n_targets = (int)nt};
    return XG_OK;
}

/* The entry of layer `ref`'s `which` ("lora_A" or "lora_B") in the file,
 * under either of PEFT's names, checked against `rows` x `cols`. */
static xg_status find_entry(const xg_safetensors *st, const char *prefix,
                            const xg__lora_ref *ref, const char *which,
                            int64_t rows, int64_t cols, bool *used,
                            const xg__st_entry **out, const char *who)
{
    const char *file = xg__safetensors_label(st);
    char *plain = key_of(prefix, ref->path, which, "");
    char *named = key_of(prefix, ref->path, which, ".default");
    xg_status s = XG_OK;
    if (!plain || !named) {
        s = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        goto done;
    }
    int i = xg__safetensors_index(st, plain);
    int j = xg__safetensors_index(st, named);
    if (i >= 0 && j >= 0) {
        s = xg_set_error(XG_ERR_FORMAT, "%s: %s: holds both '%s' and '%s'",
                         who, file, plain, named);
        goto done;
    }
    if (i < 0 && j < 0) {
        s = xg_set_error(XG_ERR_FORMAT, "%s: %s: key '%s' is missing (the "
                         "config's targets select '%s')", who, file, plain,
                         ref->path);
        goto done;
    }
    int k = i >= 0 ? i : j;
    const xg__st_entry *e = xg__safetensors_entry(st, k);
    if (e)
        used[k] = true;
    if (!e) {
        s = xg_set_error(XG_ERR_FORMAT, "%s: %s: cannot read key '%s'", who,
                         file, plain);
    } else if (strcmp(e->dtype, "F32") != 0) {
        s = xg_set_error(XG_ERR_DTYPE, "%s: %s: key '%s' is %s; xgrad reads "
                         "F32 adapters", who, file, e->name, e->dtype);
    } else if (e->ndim != 2 || e->shape[0] != rows || e->shape[1] != cols) {
        char sh[160];
        xg__shape_str(e->shape, e->ndim, sh, sizeof sh);
        s = xg_set_error(XG_ERR_SHAPE, "%s: %s: key '%s' is %s, the layer "
                         "needs [%lld, %lld]", who, file, e->name, sh,
                         (long long)rows, (long long)cols);
    }
    *out = e;
done:
    free(plain);
    free(named);
    return s;
}

/* When LoRA is applied already: the same r, alpha and layers as the
 * file's configuration. */
static xg_status check_applied(xg_module *root, const xg_lora_config *cfg,
                               const xg__lora_ref *want, int n_want,
                               const char *path, const char *who)
{
    const xg__lora_root *rec = xg__module_lora_root(root);
    if (!rec)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: LoRA is applied in "
                            "this tree but not on this %s; load into the "
                            "module it was applied to", who,
                            xg_module_class_of(root)->name);
    if (rec->r != cfg->r || rec->alpha != cfg->alpha)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: %s has r %d, alpha %g; "
                            "the LoRA applied has r %d, alpha %g", who, path,
                            cfg->r, (double)cfg->alpha, rec->r,
                            (double)rec->alpha);
    xg__lora_ref *have;
    int n;
    xg_status st = xg__lora_collect(root, NULL, 0, who, &have, &n);
    for (int i = 0; st == XG_OK && i < (n > n_want ? n : n_want); i++)
        if (i >= n || i >= n_want || have[i].m != want[i].m)
            st = xg_set_error(XG_ERR_INVALID_ARG, "%s: %s's targets select "
                              "other layers than the LoRA applied ('%s')",
                              who, path,
                              i < n ? have[i].path : want[i].path);
    xg__lora_refs_free(have, n);
    return st;
}

xg_status xg_lora_load_peft(xg_module *root, const char *dir)
{
    const char *who = "lora_load_peft";
    if (!root || !dir)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", who);
    peft_config pc = {0};
    xg_safetensors *file = NULL;
    xg__lora_ref *refs = NULL, *applied = NULL;
    int n = 0, n_applied = 0;
    bool *used = NULL;
    xg_tensor **a = NULL, **b = NULL;
    char *cpath = path_in(dir, CONFIG_FILE), *wpath = path_in(dir,
                                                              WEIGHTS_FILE);
    char who_cfg[600];
    xg_status st = cpath && wpath ? XG_OK
                                  : xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: "
                                                 "out of host memory", who);
    snprintf(who_cfg, sizeof who_cfg, "%s: %s", who, cpath ? cpath : dir);
    if (st == XG_OK)
        st = read_config(cpath, &pc, who);
    if (st == XG_OK)
        st = xg_safetensors_open(wpath, &file);
    if (st == XG_OK)
        st = xg__lora_collect(root, pc.cfg.targets, pc.cfg.n_targets,
                              who_cfg, &refs, &n);
    if (st == XG_OK)
        st = xg__lora_collect(xg__module_root(root), NULL, 0, who, &applied,
                              &n_applied);
    bool apply = st == XG_OK && n_applied == 0 && !xg__module_lora_root(root);
    if (st == XG_OK && !apply)
        st = check_applied(root, &pc.cfg, refs, n, cpath, who);
    int count = file ? xg_safetensors_count(file) : 0;
    if (st == XG_OK && (!(used = calloc((size_t)count + 1, sizeof *used)) ||
                        !(a = calloc((size_t)n + 1, sizeof *a)) ||
                        !(b = calloc((size_t)n + 1, sizeof *b))))
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    const char *prefix = key_prefix(root);
    const xg__st_entry **ea = NULL, **eb = NULL;
    if (st == XG_OK && (!(ea = calloc((size_t)n + 1, sizeof *ea)) ||
                        !(eb = calloc((size_t)n + 1, sizeof *eb))))
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    for (int i = 0; st == XG_OK && i < n; i++) {
        st = find_entry(file, prefix, &refs[i], "lora_A", pc.cfg.r,
                        refs[i].in, used, &ea[i], who);
        if (st == XG_OK)
            st = find_entry(file, prefix, &refs[i], "lora_B", refs[i].out,
                            pc.cfg.r, used, &eb[i], who);
    }
    for (int q = 0; st == XG_OK && q < count; q++)
        if (!used[q])
            st = xg_set_error(XG_ERR_FORMAT, "%s: %s: unknown key '%s' (not "
                              "the lora_A or lora_B of a layer that the "
                              "config's target_modules select in this %s, "
                              "under '%s')", who, wpath,
                              xg_safetensors_name(file, q),
                              xg_module_class_of(root)->name, prefix);
    /* every tensor on its layer's device before anything changes */
    for (int i = 0; st == XG_OK && i < n; i++) {
        xg_device *dev = xg_tensor_device(
            xg_module_find_param(refs[i].m, "weight"));
        if (!(a[i] = xg__safetensors_load(file, ea[i], dev)) ||
            !(b[i] = xg__safetensors_load(file, eb[i], dev)))
            st = xg_last_status();
    }
    bool taken = st == XG_OK && apply;
    if (taken) {
        st = xg__lora_apply_with(root, &pc.cfg, a, b, n, who);
    } else if (st == XG_OK) {
        bool grad = xg_set_grad_enabled(false);
        for (int i = 0; st == XG_OK && i < n; i++) {
            st = xg__assign(xg_module_find_param(refs[i].m, "lora_A.weight"),
                            a[i]);
            if (st == XG_OK)
                st = xg__assign(xg_module_find_param(refs[i].m,
                                                     "lora_B.weight"), b[i]);
        }
        xg_set_grad_enabled(grad);
    }
    if (!taken) /* else xg__lora_apply_with took them, also on error */
        for (int i = 0; a && i < n; i++) {
            xg_tensor_free(a[i]);
            xg_tensor_free(b[i]);
        }
    free(a);
    free(b);
    free(ea);
    free(eb);
    free(used);
    xg__lora_refs_free(refs, n);
    xg__lora_refs_free(applied, n_applied);
    xg_safetensors_close(file);
    peft_config_free(&pc);
    free(cpath);
    free(wpath);
    return st;
}
