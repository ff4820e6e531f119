/* nn: modules, parameters and their PyTorch names. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

#define MAX_OWN_PARAMS 4
#define MAX_NAME 64

typedef struct module_class {
    const char *type;
    xg_tensor *(*forward)(xg_module *m, xg_tensor *x);
} module_class;

typedef struct child {
    char name[MAX_NAME];
    xg_module *module;
} child;

struct xg_module {
    const module_class *cls;
    bool training;
    int64_t in_features; /* Linear only */

    xg_tensor *params[MAX_OWN_PARAMS]; /* owned: one reference each */
    const char *param_names[MAX_OWN_PARAMS];
    int n_params;

    child *children;
    int n_children, cap_children;

    /* Every parameter below this module with its dotted name, rebuilt when
     * the module tree has changed (flat_gen != tree_gen). */
    xg_tensor **flat;
    char (*flat_names)[2 * MAX_NAME + 8];
    int n_flat;
    unsigned flat_gen;
};

/* Bumped whenever any container gains a child. */
static _Atomic unsigned tree_gen = 1;

static xg_module *module_new(const module_class *cls)
{
    xg_module *m = calloc(1, sizeof *m);
    if (!m) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                     cls->type);
        return NULL;
    }
    m->cls = cls;
    m->training = true;
    return m;
}

/* Makes a parameter of `shape`, uniform in +-bound, owned by `m`. */
static bool add_param(xg_module *m, const char *name, const int64_t *shape,
                      int ndim, float bound)
{
    xg_tensor *p = xg_tensor_keep(xg_rand_uniform(shape, ndim, -bound, bound));
    if (!p)
        return false;
    xg_tensor_set_requires_grad(p, true);
    m->params[m->n_params] = p;
    m->param_names[m->n_params++] = name;
    return true;
}

void xg_module_free(xg_module *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_params; i++)
        xg_tensor_free(m->params[i]);
    for (int i = 0; i < m->n_children; i++)
        xg_module_free(m->children[i].module);
    free(m->children);
    free(m->flat);
    free(m->flat_names);
    free(m);
}

/* ---- layers ---------------------------------------------------------------- */

static xg_tensor *linear_forward(xg_module *m, xg_tensor *x)
{
    if (!xg__check_arg("linear", 0, x, XG_F32))
        return NULL;
    if (x->ndim == 0 || x->shape[x->ndim - 1] != m->in_features) {
        char s[160];
        xg__shape_str(x->shape, x->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "linear: input %s, expected the last axis "
                     "to be in_features = %lld", s,
                     (long long)m->in_features);
        return NULL;
    }
    xg_tensor *y = xg_matmul_t(x, m->params[0], false, true);
    return m->n_params > 1 ? xg_add(y, m->params[1]) : y;
}

static const module_class linear_class = {"Linear", linear_forward};

xg_module *xg_linear(int64_t in_features, int64_t out_features, bool bias)
{
    if (in_features < 1 || out_features < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "linear: features must be >= 1, got "
                     "in %lld, out %lld", (long long)in_features,
                     (long long)out_features);
        return NULL;
    }
    xg_module *m = module_new(&linear_class);
    if (!m)
        return NULL;
    m->in_features = in_features;
    /* reference: torch.nn.Linear.reset_parameters — kaiming_uniform_ with
     * a = sqrt(5) gives bound 1/sqrt(in) for the weight; the bias too. */
    float bound = 1.0f / sqrtf((float)in_features);
    int64_t wshape[2] = {out_features, in_features};
    if (!add_param(m, "weight", wshape, 2, bound) ||
        (bias && !add_param(m, "bias", &out_features, 1, bound))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

#define ACTIVATION(fn, cls_name, op)                                         \
    static xg_tensor *fn##_forward(xg_module *m, xg_tensor *x)               \
    {                                                                        \
        (void)m;                                                             \
        return op(x);                                                        \
    }                                                                        \
    static const module_class fn##_class = {cls_name, fn##_forward};         \
    xg_module *xg_##fn##_layer(void) { return module_new(&fn##_class); }

ACTIVATION(relu, "ReLU", xg_relu)
ACTIVATION(sigmoid, "Sigmoid", xg_sigmoid)
ACTIVATION(tanh, "Tanh", xg_tanh)
ACTIVATION(gelu, "GELU", xg_gelu)

/* ---- sequential ------------------------------------------------------------- */

static xg_tensor *sequential_forward(xg_module *m, xg_tensor *x)
{
    for (int i = 0; i < m->n_children && x; i++)
        x = xg_module_forward(m->children[i].module, x);
    return x;
}

static const module_class sequential_class = {"Sequential",
                                              sequential_forward};

xg_module *xg_sequential(void)
{
    return module_new(&sequential_class);
}

static xg_status check_child_name(const xg_module *seq, const char *name)
{
    size_t len = strlen(name);
    bool ok = len > 0 && len < MAX_NAME;
    for (size_t i = 0; ok && i < len; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') ||
             (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
    if (!ok)
        return xg_set_error(XG_ERR_INVALID_ARG, "sequential_add: name '%s' "
                            "must be 1-%d letters, digits or '_'", name,
                            MAX_NAME - 1);
    for (int i = 0; i < seq->n_children; i++)
        if (strcmp(seq->children[i].name, name) == 0)
            return xg_set_error(XG_ERR_INVALID_ARG, "sequential_add: a child "
                                "is already named '%s'", name);
    return XG_OK;
}

static xg_status append_child(xg_module *seq, const char *name,
                              xg_module *c)
{
    char index_name[MAX_NAME];
    if (!name) {
        snprintf(index_name, sizeof index_name, "%d", seq->n_children);
        name = index_name;
    }
    xg_status st = check_child_name(seq, name);
    if (st != XG_OK)
        return st;
    if (seq->n_children == seq->cap_children) {
        int cap = seq->cap_children ? seq->cap_children * 2 : 8;
        child *grown = realloc(seq->children, (size_t)cap * sizeof *grown);
        if (!grown)
            return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                                "sequential_add: out of host memory");
        seq->children = grown;
        seq->cap_children = cap;
    }
    child *slot = &seq->children[seq->n_children++];
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->module = c;
    c->training = seq->training;
    tree_gen++;
    return XG_OK;
}

xg_status xg_sequential_add(xg_module *seq, const char *name,
                            xg_module *child_module)
{
    xg_status st;
    if (!seq || !child_module || seq == child_module)
        st = xg_set_error(XG_ERR_INVALID_ARG, "sequential_add: %s",
                          seq == child_module && seq
                              ? "a module cannot contain itself"
                              : "NULL argument");
    else if (seq->cls != &sequential_class)
        st = xg_set_error(XG_ERR_INVALID_ARG, "sequential_add: the module is "
                          "a %s, not a Sequential", seq->cls->type);
    else
        st = append_child(seq, name, child_module);
    if (st != XG_OK)
        xg_module_free(child_module);
    return st;
}

/* ---- using modules ------------------------------------------------------- */

xg_tensor *xg_module_forward(xg_module *m, xg_tensor *x)
{
    if (!m) {
        xg_set_error(XG_ERR_INVALID_ARG, "module_forward: module is NULL");
        return NULL;
    }
    if (!xg__check_arg("module_forward", 1, x, x ? x->dtype : XG_F32))
        return NULL;
    xg_scope *scope = xg__composite_begin();
    return xg__composite_end(scope, m->cls->forward(m, x));
}

/* Appends m's parameters (own first, then children's, as PyTorch's
 * named_parameters) to root's flat list under `prefix`. */
static void flatten(xg_module *root, const xg_module *m, const char *prefix)
{
    for (int i = 0; i < m->n_params; i++) {
        root->flat[root->n_flat] = m->params[i];
        snprintf(root->flat_names[root->n_flat++], sizeof *root->flat_names,
                 "%s%s", prefix, m->param_names[i]);
    }
    for (int i = 0; i < m->n_children; i++) {
        char sub[sizeof *root->flat_names];
        snprintf(sub, sizeof sub, "%s%s.", prefix, m->children[i].name);
        flatten(root, m->children[i].module, sub);
    }
}

static int count_params(const xg_module *m)
{
    int n = m->n_params;
    for (int i = 0; i < m->n_children; i++)
        n += count_params(m->children[i].module);
    return n;
}

/* Brings m's flat parameter list up to date; false on host OOM. */
static bool refresh(xg_module *m)
{
    if (m->flat_gen == tree_gen)
        return true;
    int n = count_params(m);
    free(m->flat);
    free(m->flat_names);
    m->flat = calloc((size_t)n + 1, sizeof *m->flat);
    m->flat_names = calloc((size_t)n + 1, sizeof *m->flat_names);
    m->n_flat = 0;
    if (!m->flat || !m->flat_names) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "module: out of host memory");
        return false;
    }
    flatten(m, m, "");
    m->flat_gen = tree_gen;
    return true;
}

int xg_module_param_count(const xg_module *m)
{
    return m ? count_params(m) : 0;
}

xg_tensor *xg_module_param(const xg_module *m, int i, const char **name)
{
    xg_module *mm = (xg_module *)m; /* the cache is not observable state */
    if (!mm || !refresh(mm) || i < 0 || i >= mm->n_flat)
        return NULL;
    if (name)
        *name = mm->flat_names[i];
    return mm->flat[i];
}

void xg_module_set_frozen(xg_module *m, bool frozen)
{
    if (!m)
        return;
    for (int i = 0; i < m->n_params; i++)
        xg_tensor_set_requires_grad(m->params[i], !frozen);
    for (int i = 0; i < m->n_children; i++)
        xg_module_set_frozen(m->children[i].module, frozen);
}

void xg_module_set_training(xg_module *m, bool training)
{
    if (!m)
        return;
    m->training = training;
    for (int i = 0; i < m->n_children; i++)
        xg_module_set_training(m->children[i].module, training);
}
