/* LoRA: low-rank adapters on the Linear and Conv1D layers of any module
 * tree (xgrad.h, "LoRA"). The forward hook is in nn.c (xg_module_forward
 * calls xg__lora_branch for a module that carries a LoRA record); the
 * PEFT files are in api/io/peft.c. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"

static const char *const default_targets[] = {"c_attn"};

xg_lora_config xg_lora_config_default(void)
{
    /* PEFT's LoraConfig: r 8, lora_alpha 8, lora_dropout 0; its default
     * target_modules for gpt2 is ["c_attn"]. */
    return (xg_lora_config){.r = 8, .alpha = 8.0f, .dropout = 0.0f,
                            .targets = default_targets, .n_targets = 1};
}

static xg_status check_config(const xg_lora_config *c, const char *who)
{
    if (!c)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the configuration is "
                            "NULL", who);
    if (c->r < 1 || !isfinite(c->alpha) ||
        !(c->dropout >= 0.0f && c->dropout < 1.0f))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: r %d, alpha %g, dropout "
                            "%g: need r >= 1, a finite alpha and dropout in "
                            "[0, 1)", who, c->r, (double)c->alpha,
                            (double)c->dropout);
    if (c->n_targets < 1 || !c->targets)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: no targets (n_targets "
                            "%d)", who, c->n_targets);
    for (int i = 0; i < c->n_targets; i++)
        if (!c->targets[i] || !c->targets[i][0])
            return xg_set_error(XG_ERR_INVALID_ARG, "%s: target %d is %s",
                                who, i, c->targets[i] ? "empty" : "NULL");
    return XG_OK;
}

/* ---- finding the layers ------------------------------------------------ */

/* PEFT's rule: the path is the target or ends with "." target. */
static bool selects(const char *target, const char *path)
{
    size_t n = strlen(path), k = strlen(target);
    if (n < k || strcmp(path + n - k, target) != 0)
        return false;
    return n == k || path[n - k - 1] == '.';
}

/* The Linear or Conv1D facts of m, or false when it is neither. */
static bool layer_facts(const xg_module *m, bool *conv1d, int64_t *in,
                        int64_t *out)
{
    const char *cls = xg_module_class_of(m)->name;
    bool linear = strcmp(cls, "Linear") == 0;
    *conv1d = strcmp(cls, "Conv1D") == 0;
    if (!linear && !*conv1d)
        return false;
    xg_tensor *w = NULL;
    for (int i = 0; i < xg_module_param_count(m) && !w; i++) {
        const char *name;
        xg_tensor *p = xg_module_param(m, i, &name);
        if (p && strcmp(name, "weight") == 0)
            w = p;
    }
    if (!w || w->ndim != 2 || w->dtype != XG_F32)
        return false;
    *in = w->shape[*conv1d ? 0 : 1];
    *out = w->shape[*conv1d ? 1 : 0];
    return true;
}

static bool has_child(const xg_module *m, const char *name)
{
    for (int i = 0; i < xg_module_child_count(m); i++) {
        const char *n;
        xg_module_child_at(m, i, &n);
        if (strcmp(n, name) == 0)
            return true;
    }
    return false;
}

typedef struct collector {
    const char *const *targets;
    int n_targets;
    int *hits;          /* per target */
    const char *who;
    xg__lora_ref *refs;
    int n, cap;
} collector;

static char *join(const char *prefix, const char *name)
{
    size_t a = strlen(prefix), b = strlen(name);
    char *s = malloc(a + b + 2);
    if (s)
        snprintf(s, a + b + 2, "%s%s%s", prefix, a ? "." : "", name);
    return s;
}

static xg_status push(collector *c, xg_module *m, const char *path)
{
    xg__lora_ref r = {.m = m};
    if (!layer_facts(m, &r.conv1d, &r.in, &r.out))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: '%s' is a %s, not a "
                            "Linear or Conv1D with a 2-D weight", c->who,
                            path[0] ? path : "(the root)",
                            xg_module_class_of(m)->name);
    if (c->targets && !xg__module_lora(m) &&
        (has_child(m, "lora_A") || has_child(m, "lora_B")))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: '%s' already has a "
                            "child 'lora_A' or 'lora_B'", c->who, path);
    if (c->n == c->cap) {
        int cap = c->cap ? 2 * c->cap : 8;
        xg__lora_ref *grown = realloc(c->refs, (size_t)cap * sizeof *grown);
        if (!grown)
            return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host "
                                "memory", c->who);
        c->refs = grown;
        c->cap = cap;
    }
    if (!(r.path = malloc(strlen(path) + 1)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            c->who);
    strcpy(r.path, path);
    c->refs[c->n++] = r;
    return XG_OK;
}

/* Visits m (at `path`) and the modules below it, in xg_module_param
 * order. A LoRA'd layer's own lora_A and lora_B are not visited. */
static xg_status visit(collector *c, xg_module *m, const char *path)
{
    xg_status st = XG_OK;
    if (c->targets) {
        bool hit = false;
        for (int t = 0; path[0] && t < c->n_targets; t++)
            if (selects(c->targets[t], path)) {
                c->hits[t]++;
                hit = true;
            }
        if (hit)
            st = push(c, m, path);
    } else if (xg__module_lora(m)) {
        st = push(c, m, path);
    }
    bool lora = xg__module_lora(m) != NULL;
    for (int i = 0; st == XG_OK && i < xg_module_child_count(m); i++) {
        const char *name;
        xg_module *ch = xg_module_child_at(m, i, &name);
        if (lora && (!strcmp(name, "lora_A") || !strcmp(name, "lora_B")))
            continue;
        char *sub = join(path, name);
        st = sub ? visit(c, ch, sub)
                 : xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host "
                                "memory", c->who);
        free(sub);
    }
    return st;
}

void xg__lora_refs_free(xg__lora_ref *refs, int n)
{
    for (int i = 0; refs && i < n; i++)
        free(refs[i].path);
    free(refs);
}

xg_status xg__lora_collect(xg_module *root, const char *const *targets,
                           int n_targets, const char *who,
                           xg__lora_ref **out, int *n_out)
{
    collector c = {.targets = targets, .n_targets = n_targets, .who = who};
    *out = NULL;
    *n_out = 0;
    if (targets && !(c.hits = calloc((size_t)n_targets, sizeof *c.hits)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            who);
    xg_status st = visit(&c, root, "");
    for (int t = 0; st == XG_OK && targets && t < n_targets; t++)
        if (!c.hits[t])
            st = xg_set_error(XG_ERR_NOT_FOUND, "%s: target '%s' selects no "
                              "module of the %s (a module's dotted path must "
                              "equal it or end with '.%s')", who, targets[t],
                              xg_module_class_of(root)->name, targets[t]);
    free(c.hits);
    if (st != XG_OK) {
        xg__lora_refs_free(c.refs, c.n);
        return st;
    }
    *out = c.refs;
    *n_out = c.n;
    return XG_OK;
}

/* ---- applying ---------------------------------------------------------- */

/* XG_OK when root has no LoRA record and no module of its whole tree
 * carries LoRA. */
static xg_status check_not_applied(xg_module *root, const char *who)
{
    if (xg__module_lora_root(root))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: LoRA is already "
                            "applied to this %s (xg_lora_merge it first)",
                            who, xg_module_class_of(root)->name);
    xg_module *top = xg__module_root(root);
    xg__lora_ref *refs;
    int n;
    xg_status st = xg__lora_collect(top, NULL, 0, who, &refs, &n);
    if (st == XG_OK && n > 0)
        st = xg_set_error(XG_ERR_INVALID_ARG, "%s: LoRA is already applied "
                          "to '%s' in this tree (xg_lora_merge it first)",
                          who, refs[0].path[0] ? refs[0].path : "(the root)");
    xg__lora_refs_free(refs, n);
    return st;
}

void xg__lora_root_free(xg__lora_root *r)
{
    if (!r)
        return;
    for (int i = 0; r->targets && i < r->n_targets; i++)
        free(r->targets[i]);
    free(r->targets);
    free(r->saved);
    free(r->saved_grad);
    free(r);
}

/* The record of cfg and of every parameter's requires_grad below root. */
static xg__lora_root *root_record(const xg_module *root,
                                  const xg_lora_config *cfg, const char *who)
{
    xg__lora_root *r = calloc(1, sizeof *r);
    int n = xg_module_param_count(root);
    bool ok = r != NULL;
    if (ok) {
        r->r = cfg->r;
        r->alpha = cfg->alpha;
        r->dropout = cfg->dropout;
        r->targets = calloc((size_t)cfg->n_targets, sizeof *r->targets);
        r->saved = calloc((size_t)n + 1, sizeof *r->saved);
        r->saved_grad = calloc((size_t)n + 1, sizeof *r->saved_grad);
        ok = r->targets && r->saved && r->saved_grad;
    }
    for (int i = 0; ok && i < cfg->n_targets; i++) {
        r->targets[i] = malloc(strlen(cfg->targets[i]) + 1);
        if ((ok = r->targets[i] != NULL))
            strcpy(r->targets[i], cfg->targets[i]);
        r->n_targets = i + 1;
    }
    for (int i = 0; ok && i < n; i++) {
        xg_tensor *p = xg_module_param(root, i, NULL);
        if ((ok = p != NULL)) {
            r->saved[i] = p;
            r->saved_grad[i] = xg_tensor_requires_grad(p);
            r->n_saved = i + 1;
        }
    }
    if (!ok) {
        xg__lora_root_free(r);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", who);
        return NULL;
    }
    return r;
}

/* A new leaf of `shape` that is `given` (checked) or uniform in
 * +-bound (bound > 0) or zeros (bound 0). */
static xg_tensor *lora_weight(xg_tensor *given, int64_t rows, int64_t cols,
                              float bound, const char *what,
                              const xg__lora_ref *ref, const char *who)
{
    int64_t shape[2] = {rows, cols};
    if (!given)
        return bound > 0 ? xg_rand_uniform(shape, 2, -bound, bound)
                         : xg_zeros(shape, 2);
    if (given->ndim == 2 && given->shape[0] == rows && given->shape[1] == cols)
        return given;
    char s[160];
    xg__shape_str(given->shape, given->ndim, s, sizeof s);
    xg_set_error(XG_ERR_SHAPE, "%s: %s of '%s' is %s, expected [%lld, %lld]",
                 who, what, ref->path, s, (long long)rows, (long long)cols);
    xg_tensor_free(given);
    return NULL;
}

xg_status xg__lora_apply_with(xg_module *root, const xg_lora_config *cfg,
                              xg_tensor **a, xg_tensor **b, int n,
                              const char *who)
{
    xg__lora_ref *refs = NULL;
    int n_refs = 0, built = 0, attached = 0, marked = 0;
    xg_module **mods = NULL; /* A and B of each layer, until attached */
    xg__lora_root *record = NULL;
    xg_status st = root ? check_config(cfg, who)
                        : xg_set_error(XG_ERR_INVALID_ARG, "%s: the module "
                                       "is NULL", who);
    if (st == XG_OK)
        st = check_not_applied(root, who);
    if (st == XG_OK)
        st = xg__lora_collect(root, cfg->targets, cfg->n_targets, who, &refs,
                              &n_refs);
    if (st == XG_OK && a && n != n_refs)
        st = xg_set_error(XG_ERR_INVALID_ARG, "%s: %d initial values for %d "
                          "layers", who, n, n_refs);
    if (st == XG_OK && !(mods = calloc(2 * (size_t)n_refs + 1, sizeof *mods)))
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    /* every A and B as a Linear without bias (A: in -> r, B: r -> out) */
    for (; st == XG_OK && built < n_refs; built++) {
        const xg__lora_ref *ref = &refs[built];
        xg_tensor *ga = a ? a[built] : NULL, *gb = b ? b[built] : NULL;
        if (a)
            a[built] = b[built] = NULL; /* taken */
        float bound = 1.0f / sqrtf((float)ref->in);
        xg_tensor *ta = lora_weight(ga, cfg->r, ref->in, bound, "lora_A",
                                    ref, who);
        xg_tensor *tb = ta ? lora_weight(gb, ref->out, cfg->r, 0.0f, "lora_B",
                                         ref, who)
                           : NULL;
        if (!ta)
            xg_tensor_free(gb);
        mods[2 * built] = ta ? xg__linear_with(ta) : NULL;
        if (!mods[2 * built])
            xg_tensor_free(tb);
        mods[2 * built + 1] = mods[2 * built] && tb ? xg__linear_with(tb)
                                                    : NULL;
        if (!mods[2 * built + 1])
            st = xg_last_status() != XG_OK
                     ? xg_last_status()
                     : xg_set_error(XG_ERR_STATE, "%s: cannot make lora_A "
                                    "or lora_B", who);
    }
    if (st == XG_OK && !(record = root_record(root, cfg, who)))
        st = xg_last_status();
    for (; st == XG_OK && attached < n_refs; attached++) {
        xg_module *ma = mods[2 * attached], *mb = mods[2 * attached + 1];
        mods[2 * attached] = mods[2 * attached + 1] = NULL;
        st = xg_module_add_child(refs[attached].m, "lora_A", ma);
        if (st != XG_OK) {
            xg_module_free(mb);
            break;
        }
        st = xg_module_add_child(refs[attached].m, "lora_B", mb);
        if (st != XG_OK) {
            xg__module_remove_child(refs[attached].m, "lora_A");
            break;
        }
    }
    for (; st == XG_OK && marked < n_refs; marked++) {
        xg__lora l = {.scale = cfg->alpha / (float)cfg->r,
                      .dropout = cfg->dropout, .r = cfg->r,
                      .conv1d = refs[marked].conv1d};
        if (!xg__module_set_lora(refs[marked].m, &l))
            st = xg_last_status();
    }
    if (st != XG_OK) { /* undo: nothing of the above stays */
        for (int i = 0; i < marked; i++)
            xg__module_set_lora(refs[i].m, NULL);
        for (int i = 0; i < attached; i++) {
            xg__module_remove_child(refs[i].m, "lora_A");
            xg__module_remove_child(refs[i].m, "lora_B");
        }
        for (int i = 0; mods && i < 2 * n_refs; i++)
            xg_module_free(mods[i]);
        for (int i = 0; a && i < n; i++) { /* not reached yet */
            xg_tensor_free(a[i]);
            xg_tensor_free(b[i]);
        }
        xg__lora_root_free(record);
        free(mods);
        xg__lora_refs_free(refs, n_refs);
        return st;
    }
    /* freeze what was there; A and B stay trainable */
    for (int i = 0; i < record->n_saved; i++)
        xg_tensor_set_requires_grad(record->saved[i], false);
    xg__module_set_lora_root(root, record);
    free(mods);
    xg__lora_refs_free(refs, n_refs);
    return XG_OK;
}

xg_status xg_lora_apply(xg_module *root, const xg_lora_config *cfg)
{
    return xg__lora_apply_with(root, cfg, NULL, NULL, 0, "lora_apply");
}

/* ---- the forward hook ---------------------------------------------------- */

xg_tensor *xg__lora_branch(xg_module *m, xg_tensor *x, xg_tensor *y)
{
    const xg__lora *l = xg__module_lora(m);
    xg_module *a = xg_module_child(m, "lora_A");
    xg_module *b = xg_module_child(m, "lora_B");
    if (!a || !b)
        return NULL;
    /* rows [N, in] through A then B: one GEMM each, whatever x's rank
     * (the base forward has checked x's last axis) */
    int64_t in = x->shape[x->ndim - 1];
    int64_t rows[2] = {in ? x->numel / in : 0, in};
    xg_tensor *h = xg_dropout(xg_reshape(x, rows, 2), l->dropout,
                              xg_module_training(m));
    h = h ? xg_module_forward(a, h) : NULL;
    h = h ? xg_module_forward(b, h) : NULL;
    h = h ? xg_mul_scalar(h, l->scale) : NULL;
    return h ? xg_add(y, xg_reshape(h, y->shape, y->ndim)) : NULL;
}

/* ---- merging --------------------------------------------------------------- */

/* W + scale * (B A), or + scale * (B A)^T = A^T B^T for a Conv1D. */
static xg_tensor *merged_weight(const xg__lora_ref *ref)
{
    const xg__lora *l = xg__module_lora(ref->m);
    xg_tensor *w = xg_module_find_param(ref->m, "weight");
    xg_tensor *a = xg_module_find_param(ref->m, "lora_A.weight");
    xg_tensor *b = xg_module_find_param(ref->m, "lora_B.weight");
    if (!w || !a || !b)
        return NULL;
    xg_tensor *d = l->conv1d ? xg_matmul_t(a, b, true, true) : xg_matmul(b, a);
    return xg_add(w, xg_mul_scalar(d, l->scale));
}

xg_status xg_lora_merge(xg_module *root)
{
    const char *who = "lora_merge";
    if (!root)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the module is NULL",
                            who);
    xg__lora_ref *refs;
    int n;
    xg_status st = xg__lora_collect(root, NULL, 0, who, &refs, &n);
    if (st != XG_OK)
        return st;
    xg__lora_root *record = xg__module_lora_root(root);
    if (n == 0 && !record) {
        xg__lora_refs_free(refs, n);
        return xg_set_error(XG_ERR_STATE, "%s: the %s has no LoRA (see "
                            "xg_lora_apply)", who,
                            xg_module_class_of(root)->name);
    }
    bool grad = xg_set_grad_enabled(false);
    xg_scope *scope = xg_scope_begin();
    xg_tensor **sum = calloc((size_t)n + 1, sizeof *sum);
    if (!scope || !sum)
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                          who);
    /* every sum first, so that a failure changes nothing */
    for (int i = 0; st == XG_OK && i < n; i++)
        if (!(sum[i] = merged_weight(&refs[i])))
            st = xg_last_status();
    for (int i = 0; st == XG_OK && i < n; i++)
        st = xg__assign(xg_module_find_param(refs[i].m, "weight"), sum[i]);
    xg_scope_end(scope);
    xg_set_grad_enabled(grad);
    free(sum);
    if (st == XG_OK) {
        for (int i = 0; i < n; i++) {
            xg__module_remove_child(refs[i].m, "lora_A");
            xg__module_remove_child(refs[i].m, "lora_B");
            xg__module_set_lora(refs[i].m, NULL);
        }
        for (int i = 0; record && i < record->n_saved; i++)
            xg_tensor_set_requires_grad(record->saved[i],
                                        record->saved_grad[i]);
        xg__module_set_lora_root(root, NULL);
    }
    xg__lora_refs_free(refs, n);
    return st;
}
