/* nn: modules, their parameters, buffers and children under PyTorch's
 * names; the containers (Sequential, ModuleList, ModuleDict) and the
 * built-in layers, which are ordinary modules of the public interface. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "nn/nn_impl.h"
#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"
#include "nn/gpt_impl.h"

#define MAX_NAME 64 /* names are 1..MAX_NAME-1 characters */

/* A named tensor a module owns directly: a parameter or a buffer. */
typedef struct named_tensor {
    char name[MAX_NAME];
    xg_tensor *t; /* one reference */
} named_tensor;

typedef struct tensor_list {
    named_tensor *e;
    int n, cap;
} tensor_list;

typedef struct child {
    char name[MAX_NAME];
    xg_module *module; /* owned */
} child;

/* Every entry below a module with its dotted name ("fc1.weight"). */
typedef struct flat_list {
    xg_tensor **t;
    char **name; /* one allocation each */
    int n;
} flat_list;

struct xg_module {
    const xg_module_class *cls;
    void *state;
    bool training;
    xg_module *parent; /* NULL for a root */

    tensor_list params, buffers;
    child *children;
    int n_children, cap_children;

    /* Rebuilt when some module has changed (flat_gen != tree_gen). */
    flat_list flat_params, flat_buffers;
    unsigned flat_gen;

    xg__lora *lora;           /* LoRA on this layer (nn_impl.h); owned */
    xg__lora_root *lora_root; /* xg_lora_apply's record on its root; owned */
};

/* Bumped whenever any module gains a parameter, buffer or child. */
static _Atomic unsigned tree_gen = 1;

static const xg_module_class sequential_class, module_list_class,
    module_dict_class;

/* ---- making and freeing modules ------------------------------------------ */

xg_module *xg_module_new(const xg_module_class *cls, void *state)
{
    xg_module *m = cls && cls->name ? calloc(1, sizeof *m) : NULL;
    if (!m) {
        if (cls && cls->free_state)
            cls->free_state(state);
        if (!cls || !cls->name)
            xg_set_error(XG_ERR_INVALID_ARG, "module_new: %s is NULL",
                         cls ? "the class's name" : "the class");
        else
            xg_set_error(XG_ERR_OUT_OF_MEMORY, "module_new: %s: out of host "
                         "memory", cls->name);
        return NULL;
    }
    m->cls = cls;
    m->state = state;
    m->training = true;
    return m;
}

void *xg_module_state(const xg_module *m)
{
    return m ? m->state : NULL;
}

const xg_module_class *xg_module_class_of(const xg_module *m)
{
    return m ? m->cls : NULL;
}

bool xg_module_training(const xg_module *m)
{
    return m && m->training;
}

static void flat_free(flat_list *f)
{
    for (int i = 0; f->name && i < f->n; i++)
        free(f->name[i]);
    free(f->t);
    free(f->name);
    *f = (flat_list){0};
}

static void tensors_free(tensor_list *l)
{
    for (int i = 0; i < l->n; i++)
        xg_tensor_free(l->e[i].t);
    free(l->e);
}

static void module_destroy(xg_module *m)
{
    if (m->cls->free_state)
        m->cls->free_state(m->state);
    tensors_free(&m->params);
    tensors_free(&m->buffers);
    for (int i = 0; i < m->n_children; i++)
        module_destroy(m->children[i].module);
    free(m->children);
    flat_free(&m->flat_params);
    flat_free(&m->flat_buffers);
    free(m->lora);
    xg__lora_root_free(m->lora_root);
    free(m);
}

void xg_module_free(xg_module *m)
{
    if (!m)
        return;
    if (m->parent) {
        xg_set_error(XG_ERR_STATE, "module_free: this %s belongs to a %s, "
                     "which frees it; free the root module instead",
                     m->cls->name, m->parent->cls->name);
        return;
    }
    module_destroy(m);
}

/* ---- names ------------------------------------------------------------- */

/* Checks that `name` is well formed and not yet used by m's parameters,
 * buffers or children; `what` names the calling function. */
static xg_status check_name(const xg_module *m, const char *name,
                            const char *what)
{
    if (!name)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the name is NULL", what);
    size_t len = strlen(name);
    bool ok = len > 0 && len < MAX_NAME;
    for (size_t i = 0; ok && i < len; i++)
        ok = (name[i] >= 'a' && name[i] <= 'z') ||
             (name[i] >= 'A' && name[i] <= 'Z') ||
             (name[i] >= '0' && name[i] <= '9') || name[i] == '_';
    if (!ok)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: name '%s' must be 1-%d "
                            "letters, digits or '_' (no '.')", what, name,
                            MAX_NAME - 1);
    bool taken = false;
    for (int i = 0; !taken && i < m->params.n; i++)
        taken = strcmp(m->params.e[i].name, name) == 0;
    for (int i = 0; !taken && i < m->buffers.n; i++)
        taken = strcmp(m->buffers.e[i].name, name) == 0;
    for (int i = 0; !taken && i < m->n_children; i++)
        taken = strcmp(m->children[i].name, name) == 0;
    if (taken)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: this %s already has a "
                            "parameter, buffer or child named '%s'", what,
                            m->cls->name, name);
    return XG_OK;
}

/* ---- parameters and buffers ---------------------------------------------- */

/* True when t is a parameter or buffer of m or of a module below it. */
static bool registered_below(const xg_module *m, const xg_tensor *t)
{
    for (int i = 0; i < m->params.n; i++)
        if (m->params.e[i].t == t)
            return true;
    for (int i = 0; i < m->buffers.n; i++)
        if (m->buffers.e[i].t == t)
            return true;
    for (int i = 0; i < m->n_children; i++)
        if (registered_below(m->children[i].module, t))
            return true;
    return false;
}

static const xg_module *root_of(const xg_module *m)
{
    while (m->parent)
        m = m->parent;
    return m;
}

/* Everything that makes `t` unfit to register under `name` on m. */
static xg_status check_tensor(const xg_module *m, const char *name,
                              const xg_tensor *t, const char *what)
{
    if (!m)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the module is NULL",
                            what);
    xg_status st = check_name(m, name, what);
    if (st != XG_OK)
        return st;
    if (t->dtype != XG_F32)
        return xg_set_error(XG_ERR_DTYPE, "%s: '%s' must be an f32 tensor",
                            what, name);
    if (t->node)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: '%s' is the result of "
                            "an op that records gradients, not a leaf (pass "
                            "xg_detach of it)", what, name);
    return XG_OK;
}

static xg_status register_tensor(xg_module *m, tensor_list *l,
                                 const char *name, xg_tensor *t,
                                 const char *what)
{
    if (!t)
        return xg_last_status() != XG_OK
                   ? xg_last_status()
                   : xg_set_error(XG_ERR_INVALID_ARG, "%s: the tensor is "
                                  "NULL", what);
    if (m && registered_below(root_of(m), t))
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the tensor given as "
                            "'%s' is already registered in this module tree "
                            "(a tensor belongs to one module, once)", what,
                            name ? name : "(null)");
    xg_status st = check_tensor(m, name, t, what);
    if (st == XG_OK && l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 4;
        named_tensor *e = realloc(l->e, (size_t)cap * sizeof *e);
        if (e) {
            l->e = e;
            l->cap = cap;
        } else {
            st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                              what);
        }
    }
    if (st != XG_OK) {
        xg_tensor_free(t);
        return st;
    }
    named_tensor *slot = &l->e[l->n++];
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->t = xg_tensor_keep(t);
    tree_gen++;
    return XG_OK;
}

xg_status xg_module_add_param(xg_module *m, const char *name,
                              xg_tensor *param)
{
    tensor_list dummy = {0};
    xg_status st = register_tensor(m, m ? &m->params : &dummy, name, param,
                                   "module_add_param");
    return st == XG_OK ? xg_tensor_set_requires_grad(param, true) : st;
}

xg_status xg_module_add_buffer(xg_module *m, const char *name,
                               xg_tensor *buffer)
{
    tensor_list dummy = {0};
    return register_tensor(m, m ? &m->buffers : &dummy, name, buffer,
                           "module_add_buffer");
}

/* ---- children ---------------------------------------------------------- */

/* Levels of modules below and including m (1 for a module without
 * children). Bounded by XG_MODULE_MAX_DEPTH, which every tree respects. */
static int tree_height(const xg_module *m)
{
    int h = 0;
    for (int i = 0; i < m->n_children; i++) {
        int c = tree_height(m->children[i].module);
        h = c > h ? c : h;
    }
    return h + 1;
}

/* Why `c` cannot become a child of m without touching another tree:
 * NULL when it can. */
static const char *tree_conflict(const xg_module *m, const xg_module *c)
{
    if (c->parent)
        return "already has a parent";
    for (const xg_module *a = m; a; a = a->parent)
        if (a == c)
            return a == m ? "cannot be its own child"
                          : "is an ancestor of the module (a cycle)";
    return NULL;
}

/* XG_OK when c under m keeps the tree within XG_MODULE_MAX_DEPTH levels. */
static xg_status check_depth(const xg_module *m, const xg_module *c,
                             const char *what)
{
    int depth = 0; /* levels from the root down to m */
    for (const xg_module *a = m; a; a = a->parent)
        depth++;
    int height = tree_height(c);
    if (depth + height <= XG_MODULE_MAX_DEPTH)
        return XG_OK;
    return xg_set_error(XG_ERR_INVALID_ARG, "%s: the %s would make the tree "
                        "%d levels deep (XG_MODULE_MAX_DEPTH is %d)", what,
                        c->cls->name, depth + height, XG_MODULE_MAX_DEPTH);
}

static xg_status check_child(const xg_module *m, const char *name,
                             const char *what)
{
    if (!m)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the module is NULL",
                            what);
    xg_status st = check_name(m, name, what);
    if (st == XG_OK && m->cls == &module_list_class) {
        char index[16];
        snprintf(index, sizeof index, "%d", m->n_children);
        if (strcmp(name, index) != 0)
            st = xg_set_error(XG_ERR_INVALID_ARG, "%s: a ModuleList names "
                              "its next entry '%s', not '%s'", what, index,
                              name);
    }
    return st;
}

static xg_status attach(xg_module *m, const char *name, xg_module *c,
                        const char *what)
{
    if (m->n_children == m->cap_children) {
        int cap = m->cap_children ? 2 * m->cap_children : 4;
        child *grown = realloc(m->children, (size_t)cap * sizeof *grown);
        if (!grown)
            return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                                what);
        m->children = grown;
        m->cap_children = cap;
    }
    child *slot = &m->children[m->n_children++];
    snprintf(slot->name, sizeof slot->name, "%s", name);
    slot->module = c;
    c->parent = m;
    if (c->training != m->training)
        xg_module_set_training(c, m->training);
    tree_gen++;
    return XG_OK;
}

/* xg_module_add_child, with `what` naming the public caller and `cls`
 * (non-NULL) the container class m must have. */
static xg_status add_child(xg_module *m, const char *name, xg_module *c,
                           const char *what, const xg_module_class *cls)
{
    if (!c)
        return xg_last_status() != XG_OK
                   ? xg_last_status()
                   : xg_set_error(XG_ERR_INVALID_ARG, "%s: the child is NULL",
                                  what);
    const char *conflict = m ? tree_conflict(m, c) : NULL;
    if (conflict)
        return xg_set_error(XG_ERR_INVALID_ARG, "%s: the %s given as '%s' %s",
                            what, c->cls->name, name ? name : "(null)",
                            conflict);
    xg_status st = XG_OK;
    if (m && cls && m->cls != cls)
        st = xg_set_error(XG_ERR_INVALID_ARG, "%s: the module is a %s, not "
                          "a %s", what, m->cls->name, cls->name);
    if (st == XG_OK)
        st = check_child(m, name, what);
    if (st == XG_OK)
        st = check_depth(m, c, what);
    if (st == XG_OK)
        st = attach(m, name, c, what);
    if (st != XG_OK)
        module_destroy(c);
    return st;
}

xg_status xg_module_add_child(xg_module *m, const char *name,
                              xg_module *child_module)
{
    return add_child(m, name, child_module, "module_add_child", NULL);
}

/* The direct child called `name` (`len` characters), or NULL. */
static xg_module *child_named(const xg_module *m, const char *name,
                              size_t len)
{
    for (int i = 0; i < m->n_children; i++)
        if (strlen(m->children[i].name) == len &&
            memcmp(m->children[i].name, name, len) == 0)
            return m->children[i].module;
    return NULL;
}

/* Follows the first `len` characters of a dotted path from m. */
static xg_module *walk(const xg_module *m, const char *path, size_t len,
                       const char *what)
{
    const char *p = path, *end = path + len;
    while (m && p < end) {
        const char *dot = memchr(p, '.', (size_t)(end - p));
        size_t n = dot ? (size_t)(dot - p) : (size_t)(end - p);
        const xg_module *next = child_named(m, p, n);
        if (!next) {
            int at = p > path ? (int)(p - path - 1) : 0;
            xg_set_error(XG_ERR_NOT_FOUND, "%s: '%.*s': the %s%s%.*s%s has "
                         "no child '%.*s'", what, (int)len, path,
                         m->cls->name, at ? " at '" : "", at, path,
                         at ? "'" : "", (int)n, p);
            return NULL;
        }
        m = next;
        p += n + (dot ? 1 : 0);
    }
    return (xg_module *)m;
}

xg_module *xg_module_child(const xg_module *m, const char *path)
{
    if (!m || !path) {
        xg_set_error(XG_ERR_INVALID_ARG, "module_child: NULL argument");
        return NULL;
    }
    return walk(m, path, strlen(path), "module_child");
}

int xg_module_child_count(const xg_module *m)
{
    return m ? m->n_children : 0;
}

xg_module *xg_module_child_at(const xg_module *m, int i, const char **name)
{
    if (!m || i < 0 || i >= m->n_children) {
        xg_set_error(XG_ERR_INVALID_ARG, "module_child_at: index %d of %d "
                     "children", i, m ? m->n_children : 0);
        return NULL;
    }
    if (name)
        *name = m->children[i].name;
    return m->children[i].module;
}

static xg_tensor *find_entry(const xg_module *m, const char *name,
                             bool buffers, const char *what)
{
    if (!m || !name) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: NULL argument", what);
        return NULL;
    }
    const char *dot = strrchr(name, '.');
    const char *leaf = dot ? dot + 1 : name;
    const xg_module *owner = dot ? walk(m, name, (size_t)(dot - name), what)
                                 : m;
    if (!owner)
        return NULL;
    const tensor_list *l = buffers ? &owner->buffers : &owner->params;
    for (int i = 0; i < l->n; i++)
        if (strcmp(l->e[i].name, leaf) == 0)
            return l->e[i].t;
    xg_set_error(XG_ERR_NOT_FOUND, "%s: no %s '%s' (the %s has none called "
                 "'%s')", what, buffers ? "buffer" : "parameter", name,
                 owner->cls->name, leaf);
    return NULL;
}

xg_tensor *xg_module_find_param(const xg_module *m, const char *name)
{
    return find_entry(m, name, false, "module_find_param");
}

xg_tensor *xg_module_find_buffer(const xg_module *m, const char *name)
{
    return find_entry(m, name, true, "module_find_buffer");
}

/* ---- containers ------------------------------------------------------- */

static bool conv2d_relu_fusable(const xg_module *conv, const xg_module *relu);
static xg_tensor *conv2d_relu_forward(xg_module *conv, xg_tensor *x);
static bool relu_max_pool_swappable(const xg_module *relu,
                                    const xg_module *pool);
static xg_tensor *max_pool_relu_forward(xg_module *pool, xg_tensor *x);

typedef xg_tensor *(*forward_fn)(xg_module *m, xg_tensor *x);
/* xg_module_forward of m with `fn` in place of its class's forward: the
 * same checks, scope and LoRA branch. */
static xg_tensor *forward_with(xg_module *m, xg_tensor *x, forward_fn fn);

/* Each child's output is freed once the next child has run: the graph
 * keeps what a backward rule needs, so a long Sequential does not hold every
 * activation until its scope closes. Two patterns run in a cheaper form
 * with the same values and gradients, bit for bit:
 *   ReLU, MaxPool2d    as the pooling, then the ReLU on its smaller output
 *                      (ReLU is monotonic: max(relu(x)) = relu(max(x)),
 *                      and the gradient is g at the window's winner when
 *                      the maximum is above 0, else 0, either way)
 *   Conv2d with bias, ReLU (not followed by a MaxPool2d)
 *                      as one op, xg_conv2d_relu */
static xg_tensor *sequential_forward(xg_module *m, xg_tensor *x)
{
    xg_tensor *in = x;
    int n = xg_module_child_count(m);
    for (int i = 0; i < n && x; i++) {
        xg_module *c0 = xg_module_child_at(m, i, NULL);
        xg_module *c1 = i + 1 < n ? xg_module_child_at(m, i + 1, NULL) : NULL;
        xg_module *c2 = i + 2 < n ? xg_module_child_at(m, i + 2, NULL) : NULL;
        xg_tensor *y;
        if (c1 && relu_max_pool_swappable(c0, c1)) {
            y = forward_with(c1, x, max_pool_relu_forward);
            i++;
        } else if (c1 && conv2d_relu_fusable(c0, c1) &&
                   !(c2 && relu_max_pool_swappable(c1, c2))) {
            y = forward_with(c0, x, conv2d_relu_forward);
            i++;
        } else {
            y = xg_module_forward(c0, x);
        }
        if (x != in)
            xg_tensor_free(x); /* made in this forward's scope */
        x = y;
    }
    return x;
}

static const xg_module_class sequential_class = {
    .name = "Sequential", .forward = sequential_forward};
static const xg_module_class module_list_class = {.name = "ModuleList"};
static const xg_module_class module_dict_class = {.name = "ModuleDict"};

xg_module *xg_sequential(void)
{
    return xg_module_new(&sequential_class, NULL);
}

xg_status xg_sequential_add(xg_module *seq, const char *name,
                            xg_module *child_module)
{
    char index[16];
    if (!name && seq) {
        snprintf(index, sizeof index, "%d", seq->n_children);
        name = index;
    }
    return add_child(seq, name, child_module, "sequential_add",
                     &sequential_class);
}

xg_module *xg_module_list(void)
{
    return xg_module_new(&module_list_class, NULL);
}

xg_status xg_module_list_append(xg_module *list, xg_module *child_module)
{
    char index[16];
    snprintf(index, sizeof index, "%d", list ? list->n_children : 0);
    return add_child(list, index, child_module, "module_list_append",
                     &module_list_class);
}

int xg_module_list_len(const xg_module *list)
{
    if (!list || list->cls != &module_list_class) {
        xg_set_error(XG_ERR_INVALID_ARG, "module_list_len: %s",
                     list ? "not a ModuleList" : "NULL module");
        return -1;
    }
    return list->n_children;
}

xg_module *xg_module_list_get(const xg_module *list, int i)
{
    if (xg_module_list_len(list) < 0)
        return NULL;
    if (i < 0 || i >= list->n_children) {
        xg_set_error(XG_ERR_INVALID_ARG, "module_list_get: index %d of a "
                     "ModuleList of %d", i, list->n_children);
        return NULL;
    }
    return list->children[i].module;
}

xg_module *xg_module_dict(void)
{
    return xg_module_new(&module_dict_class, NULL);
}

xg_status xg_module_dict_add(xg_module *dict, const char *name,
                             xg_module *child_module)
{
    return add_child(dict, name, child_module, "module_dict_add",
                     &module_dict_class);
}

/* ---- LoRA's records (nn_impl.h) ------------------------------------------ */

const xg__lora *xg__module_lora(const xg_module *m)
{
    return m ? m->lora : NULL;
}

bool xg__module_set_lora(xg_module *m, const xg__lora *l)
{
    xg__lora *copy = NULL;
    if (l && !(copy = malloc(sizeof *copy))) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "lora: out of host memory");
        return false;
    }
    if (copy)
        *copy = *l;
    free(m->lora);
    m->lora = copy;
    return true;
}

xg__lora_root *xg__module_lora_root(const xg_module *m)
{
    return m ? m->lora_root : NULL;
}

void xg__module_set_lora_root(xg_module *m, xg__lora_root *r)
{
    if (m->lora_root != r)
        xg__lora_root_free(m->lora_root);
    m->lora_root = r;
}

xg_module *xg__module_root(const xg_module *m)
{
    return (xg_module *)root_of(m);
}

xg_status xg__module_remove_child(xg_module *m, const char *name)
{
    for (int i = 0; i < m->n_children; i++) {
        if (strcmp(m->children[i].name, name) != 0)
            continue;
        module_destroy(m->children[i].module);
        memmove(&m->children[i], &m->children[i + 1],
                (size_t)(m->n_children - i - 1) * sizeof *m->children);
        m->n_children--;
        tree_gen++;
        return XG_OK;
    }
    return xg_set_error(XG_ERR_NOT_FOUND, "module: the %s has no child '%s'",
                        m->cls->name, name);
}

/* ---- using modules ------------------------------------------------------- */

xg_tensor *xg_module_forward(xg_module *m, xg_tensor *x)
{
    if (!m || !m->cls->forward) {
        if (m)
            xg_set_error(XG_ERR_INVALID_ARG, "module_forward: a %s has no "
                         "forward; call its children", m->cls->name);
        else
            xg_set_error(XG_ERR_INVALID_ARG, "module_forward: the module is "
                         "NULL");
        return NULL;
    }
    return forward_with(m, x, m->cls->forward);
}

static xg_tensor *forward_with(xg_module *m, xg_tensor *x, forward_fn fn)
{
    if (!xg__check_arg("module_forward", 1, x, x ? x->dtype : XG_F32))
        return NULL;
    xg_scope *scope = xg__composite_begin();
    xg_tensor *y = fn(m, x);
    if (y && m->lora) /* LoRA's branch: nn_impl.h */
        y = xg__lora_branch(m, x, y);
    if (y == x) /* an identity: a new handle, so the caller owns one */
        y = xg_reshape(x, x->shape, x->ndim);
    else if (!y && xg_last_status() == XG_OK)
        xg_set_error(XG_ERR_STATE, "module_forward: %s's forward returned "
                     "NULL without setting an error", m->cls->name);
    return xg__composite_end(scope, y);
}

/* Appends the entries below m (own first, then the children's, as
 * PyTorch's named_parameters) to `out` under `prefix`; false on OOM. */
static bool flatten(const xg_module *m, bool buffers, const char *prefix,
                    flat_list *out)
{
    const tensor_list *l = buffers ? &m->buffers : &m->params;
    size_t plen = strlen(prefix);
    for (int i = 0; i < l->n; i++) {
        char *name = malloc(plen + strlen(l->e[i].name) + 1);
        if (!name)
            return false;
        sprintf(name, "%s%s", prefix, l->e[i].name);
        out->t[out->n] = l->e[i].t;
        out->name[out->n++] = name;
    }
    for (int i = 0; i < m->n_children; i++) {
        char *sub = malloc(plen + strlen(m->children[i].name) + 2);
        if (!sub)
            return false;
        sprintf(sub, "%s%s.", prefix, m->children[i].name);
        bool ok = flatten(m->children[i].module, buffers, sub, out);
        free(sub);
        if (!ok)
            return false;
    }
    return true;
}

static int count_entries(const xg_module *m, bool buffers)
{
    int n = buffers ? m->buffers.n : m->params.n;
    for (int i = 0; i < m->n_children; i++)
        n += count_entries(m->children[i].module, buffers);
    return n;
}

static bool flat_build(const xg_module *m, bool buffers, flat_list *f)
{
    int n = count_entries(m, buffers);
    flat_free(f);
    f->t = calloc((size_t)n + 1, sizeof *f->t);
    f->name = calloc((size_t)n + 1, sizeof *f->name);
    if (!f->t || !f->name || !flatten(m, buffers, "", f)) {
        flat_free(f);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "module: out of host memory");
        return false;
    }
    return true;
}

/* Brings m's flat lists up to date; false on host OOM. */
static bool refresh(xg_module *m)
{
    if (m->flat_gen == tree_gen)
        return true;
    if (!flat_build(m, false, &m->flat_params) ||
        !flat_build(m, true, &m->flat_buffers))
        return false;
    m->flat_gen = tree_gen;
    return true;
}

static xg_tensor *flat_get(const xg_module *m, bool buffers, int i,
                           const char **name)
{
    xg_module *mm = (xg_module *)m; /* the cache is not observable state */
    if (!mm || !refresh(mm))
        return NULL;
    const flat_list *f = buffers ? &mm->flat_buffers : &mm->flat_params;
    if (i < 0 || i >= f->n)
        return NULL;
    if (name)
        *name = f->name[i];
    return f->t[i];
}

int xg_module_param_count(const xg_module *m)
{
    return m ? count_entries(m, false) : 0;
}

xg_tensor *xg_module_param(const xg_module *m, int i, const char **name)
{
    return flat_get(m, false, i, name);
}

int xg_module_buffer_count(const xg_module *m)
{
    return m ? count_entries(m, true) : 0;
}

xg_tensor *xg_module_buffer(const xg_module *m, int i, const char **name)
{
    return flat_get(m, true, i, name);
}

void xg_module_set_frozen(xg_module *m, bool frozen)
{
    if (!m)
        return;
    for (int i = 0; i < m->params.n; i++)
        xg_tensor_set_requires_grad(m->params.e[i].t, !frozen);
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
    if (m->cls->set_training)
        m->cls->set_training(m, training);
}

/* ==== Built-in layers ======================================================
 * Each is a class of the public interface; a layer's configuration is its
 * state (a malloc'd copy, freed with the module). */

/* A new module of `cls` whose state is a copy of the `size` bytes at
 * `config` (no state when size is 0). */
static xg_module *layer_new(const xg_module_class *cls, const void *config,
                            size_t size)
{
    void *state = NULL;
    if (size && !(state = malloc(size))) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                     cls->name);
        return NULL;
    }
    if (size)
        memcpy(state, config, size);
    return xg_module_new(cls, state);
}

/* Registers a parameter of `shape`, uniform in +-bound. */
static bool uniform_param(xg_module *m, const char *name,
                          const int64_t *shape, int ndim, float bound)
{
    return xg_module_add_param(m, name, xg_rand_uniform(shape, ndim, -bound,
                                                        bound)) == XG_OK;
}

/* An entry a built-in layer registered itself (so it exists). */
static xg_tensor *own(const xg_module *m, const char *name)
{
    return xg_module_find_param(m, name);
}

static xg_tensor *own_buffer(const xg_module *m, const char *name)
{
    return xg_module_find_buffer(m, name);
}

/* ---- linear ------------------------------------------------------------ */

static xg_tensor *linear_forward(xg_module *m, xg_tensor *x)
{
    xg_tensor *w = own(m, "weight");
    if (!w || !xg__check_float("linear", 0, x))
        return NULL;
    int64_t in_features = w->shape[1];
    if (x->ndim == 0 || x->shape[x->ndim - 1] != in_features) {
        char s[160];
        xg__shape_str(x->shape, x->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "linear: input %s, expected the last axis "
                     "to be in_features = %lld", s, (long long)in_features);
        return NULL;
    }
    /* under autocast the matmul casts x and w itself (keeping no 16-bit
     * copy of w for the backward), and the bias is cast too: the sum in
     * the autocast dtype */
    xg_tensor *b = m->params.n > 1 ? own(m, "bias") : NULL;
    xg_scope *cast = NULL;
    bool casting = xg__autocast(&b, 1, &cast);
    xg_tensor *y = xg_matmul_t(x, w, false, true);
    y = b ? xg_add(y, b) : y;
    return casting ? xg__composite_end(cast, y) : y;
}

static const xg_module_class linear_class = {.name = "Linear",
                                             .forward = linear_forward};

xg_module *xg_linear(int64_t in_features, int64_t out_features, bool bias)
{
    if (in_features < 1 || out_features < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "linear: features must be >= 1, got "
                     "in %lld, out %lld", (long long)in_features,
                     (long long)out_features);
        return NULL;
    }
    xg_module *m = layer_new(&linear_class, NULL, 0);
    if (!m)
        return NULL;
    /* reference: torch.nn.Linear.reset_parameters — kaiming_uniform_ with
     * a = sqrt(5) gives bound 1/sqrt(in) for the weight; the bias too. */
    float bound = 1.0f / sqrtf((float)in_features);
    int64_t wshape[2] = {out_features, in_features};
    if (!uniform_param(m, "weight", wshape, 2, bound) ||
        (bias && !uniform_param(m, "bias", &out_features, 1, bound))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

xg_module *xg__linear_with(xg_tensor *weight)
{
    xg_module *m = layer_new(&linear_class, NULL, 0);
    if (!m) {
        xg_tensor_free(weight);
        return NULL;
    }
    if (xg_module_add_param(m, "weight", weight) != XG_OK) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- embedding ---------------------------------------------------------- */

static xg_tensor *embedding_forward(xg_module *m, xg_tensor *index)
{
    return xg_embedding(own(m, "weight"), index);
}

static const xg_module_class embedding_class = {.name = "Embedding",
                                                .forward = embedding_forward};

/* `draw` false: the weight is zeros and the generator is not used. */
static xg_module *embedding_new(int64_t num, int64_t dim, bool draw)
{
    if (num < 1 || dim < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "embedding_layer: sizes must be "
                     ">= 1, got num %lld, dim %lld", (long long)num,
                     (long long)dim);
        return NULL;
    }
    if ((double)num * (double)dim >= 0x1p40) {
        xg_set_error(XG_ERR_TOO_LARGE, "embedding_layer: a weight of %lld x "
                     "%lld elements is too large (at most 2^40)",
                     (long long)num, (long long)dim);
        return NULL;
    }
    xg_module *m = layer_new(&embedding_class, NULL, 0);
    if (!m)
        return NULL;
    /* reference: torch.nn.Embedding.reset_parameters, normal_(0, 1) */
    int64_t wshape[2] = {num, dim};
    if (xg_module_add_param(m, "weight",
                            draw ? xg_rand_normal(wshape, 2, 0.0f, 1.0f)
                                 : xg_zeros(wshape, 2)) != XG_OK) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

xg_module *xg_embedding_layer(int64_t num, int64_t dim)
{
    return embedding_new(num, dim, true);
}

xg_module *xg__embedding_layer_zeros(int64_t num, int64_t dim)
{
    return embedding_new(num, dim, false);
}

/* ---- activations, dropout, flatten ---------------------------------------- */

#define ACTIVATION(fn, cls_name, op)                                         \
    static xg_tensor *fn##_forward(xg_module *m, xg_tensor *x)               \
    {                                                                        \
        (void)m;                                                             \
        return op(x);                                                        \
    }                                                                        \
    static const xg_module_class fn##_class = {.name = cls_name,             \
                                               .forward = fn##_forward};     \
    xg_module *xg_##fn##_layer(void) { return layer_new(&fn##_class, NULL, 0); }

ACTIVATION(relu, "ReLU", xg_relu)
ACTIVATION(sigmoid, "Sigmoid", xg_sigmoid)
ACTIVATION(tanh, "Tanh", xg_tanh)
ACTIVATION(gelu, "GELU", xg_gelu)
ACTIVATION(silu, "SiLU", xg_silu)
ACTIVATION(gelu_tanh, "GELU", xg_gelu_tanh)

static xg_tensor *flatten_forward(xg_module *m, xg_tensor *x)
{
    (void)m;
    return xg_flatten(x, 1);
}

static const xg_module_class flatten_class = {.name = "Flatten",
                                              .forward = flatten_forward};

xg_module *xg_flatten_layer(void)
{
    return layer_new(&flatten_class, NULL, 0);
}

static xg_tensor *dropout_forward(xg_module *m, xg_tensor *x)
{
    const float *p = xg_module_state(m);
    return xg_dropout(x, *p, xg_module_training(m));
}

static const xg_module_class dropout_class = {
    .name = "Dropout", .forward = dropout_forward, .free_state = free};

xg_module *xg_dropout_layer(float p)
{
    if (!(p >= 0.0f && p < 1.0f)) {
        xg_set_error(XG_ERR_INVALID_ARG, "dropout_layer: p = %g, must be in "
                     "[0, 1)", (double)p);
        return NULL;
    }
    return layer_new(&dropout_class, &p, sizeof p);
}

/* ---- convolution and pooling ----------------------------------------------- */

static xg_tensor *conv2d_forward(xg_module *m, xg_tensor *x)
{
    xg_tensor *bias = m->params.n > 1 ? own(m, "bias") : NULL;
    return xg_conv2d(x, own(m, "weight"), bias, xg_module_state(m));
}

static const xg_module_class conv2d_class = {
    .name = "Conv2d", .forward = conv2d_forward, .free_state = free};

/* A Conv2d with bias and a ReLU, neither with a LoRA branch: the pair that
 * sequential_forward runs as xg_conv2d_relu. */
static bool conv2d_relu_fusable(const xg_module *conv, const xg_module *relu)
{
    return conv->cls == &conv2d_class && conv->params.n > 1 && !conv->lora &&
           relu->cls == &relu_class && !relu->lora;
}

/* The pair's forward, run through forward_with on the Conv2d. */
static xg_tensor *conv2d_relu_forward(xg_module *conv, xg_tensor *x)
{
    return xg_conv2d_relu(x, own(conv, "weight"), own(conv, "bias"),
                          xg_module_state(conv));
}

/* Channels, kernel and parameters of a Conv2d layer: every size positive,
 * the parameters as xg_conv2d checks them (for a 1x1 input), the weight
 * [out, in / groups, kernel, kernel] below 2^40 elements. */
static bool conv2d_layer_ok(int64_t in, int64_t out, int kernel,
                            const xg_conv2d_params *p)
{
    const char *op = "conv2d_layer";
    if (in < 1 || out < 1 || kernel < 1 || p->groups < 1 ||
        in % p->groups || out % p->groups) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: channels %lld -> %lld, kernel "
                     "%d, groups %d: need positive sizes and channels "
                     "divisible by groups", op, (long long)in, (long long)out,
                     kernel, p->groups);
        return false;
    }
    if (!xg__conv_params_ok(op, p, 1, 1, kernel, kernel))
        return false;
    /* in double: the product of int64 sizes may pass INT64_MAX */
    double numel = (double)out * (double)(in / p->groups) * kernel * kernel;
    if (numel < 0x1p40)
        return true;
    xg_set_error(XG_ERR_TOO_LARGE, "%s: a weight of %lld x %lld x %d x %d "
                 "elements is too large (at most 2^40)", op, (long long)out,
                 (long long)(in / p->groups), kernel, kernel);
    return false;
}

xg_module *xg_conv2d_layer(int64_t in_channels, int64_t out_channels,
                           int kernel, const xg_conv2d_params *params,
                           bool bias)
{
    xg_conv2d_params p = params ? *params : xg_conv2d_defaults();
    if (!conv2d_layer_ok(in_channels, out_channels, kernel, &p))
        return NULL;
    xg_module *m = layer_new(&conv2d_class, &p, sizeof p);
    if (!m)
        return NULL;
    /* reference: torch.nn.Conv2d.reset_parameters, as Linear with
     * fan_in = in / groups * kernel^2. */
    int64_t in_per_group = in_channels / p.groups;
    float bound = 1.0f / sqrtf((float)(in_per_group * kernel * kernel));
    int64_t wshape[4] = {out_channels, in_per_group, kernel, kernel};
    if (!uniform_param(m, "weight", wshape, 4, bound) ||
        (bias && !uniform_param(m, "bias", &out_channels, 1, bound))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

typedef struct pool_config {
    int kernel, stride, padding;
} pool_config;

static xg_tensor *max_pool_forward(xg_module *m, xg_tensor *x)
{
    const pool_config *c = xg_module_state(m);
    return xg_max_pool2d(x, c->kernel, c->stride, c->padding);
}

static xg_tensor *avg_pool_forward(xg_module *m, xg_tensor *x)
{
    const pool_config *c = xg_module_state(m);
    return xg_avg_pool2d(x, c->kernel, c->stride, c->padding);
}

static const xg_module_class max_pool_class = {
    .name = "MaxPool2d", .forward = max_pool_forward, .free_state = free};
static const xg_module_class avg_pool_class = {
    .name = "AvgPool2d", .forward = avg_pool_forward, .free_state = free};

/* A ReLU and a MaxPool2d after it, neither with a LoRA branch: the pair
 * that sequential_forward runs pooling first. */
static bool relu_max_pool_swappable(const xg_module *relu,
                                    const xg_module *pool)
{
    return relu->cls == &relu_class && !relu->lora &&
           pool->cls == &max_pool_class && !pool->lora;
}

/* The pair's forward, pooling first, run through forward_with on the
 * MaxPool2d. */
static xg_tensor *max_pool_relu_forward(xg_module *pool, xg_tensor *x)
{
    return xg_relu(max_pool_forward(pool, x));
}

static xg_module *pool_layer(const xg_module_class *cls, int kernel,
                             int stride, int padding)
{
    if (kernel < 1 || stride < 0 || padding < 0 || padding > kernel / 2) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: kernel %d, stride %d, padding "
                     "%d: need kernel >= 1, stride >= 0 and 0 <= padding <= "
                     "kernel / 2", cls->name, kernel, stride, padding);
        return NULL;
    }
    pool_config c = {kernel, stride, padding};
    return layer_new(cls, &c, sizeof c);
}

xg_module *xg_max_pool2d_layer(int kernel, int stride, int padding)
{
    return pool_layer(&max_pool_class, kernel, stride, padding);
}

xg_module *xg_avg_pool2d_layer(int kernel, int stride, int padding)
{
    return pool_layer(&avg_pool_class, kernel, stride, padding);
}

/* ---- batch norm ------------------------------------------------------- */

typedef struct bn_config {
    float eps, momentum;
} bn_config;

/* num_batches_tracked += 1, on the device. */
static bool count_batch(xg_tensor *counter)
{
    bool was = xg_set_grad_enabled(false);
    xg_tensor *next = xg_add_scalar(counter, 1.0f);
    xg_status st = next ? xg__assign(counter, next) : xg_last_status();
    xg_set_grad_enabled(was);
    return st == XG_OK;
}

static xg_tensor *batch_norm_forward(xg_module *m, xg_tensor *x)
{
    const bn_config *c = xg_module_state(m);
    bool training = xg_module_training(m);
    xg_tensor *y = xg_batch_norm2d(x, own(m, "weight"), own(m, "bias"),
                                   own_buffer(m, "running_mean"),
                                   own_buffer(m, "running_var"), training,
                                   c->momentum, c->eps);
    if (y && training && !count_batch(own_buffer(m, "num_batches_tracked")))
        return NULL;
    return y;
}

static const xg_module_class batch_norm_class = {
    .name = "BatchNorm2d", .forward = batch_norm_forward, .free_state = free};

xg_module *xg_batch_norm2d_layer(int64_t channels)
{
    if (channels < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "batch_norm2d_layer: channels %lld",
                     (long long)channels);
        return NULL;
    }
    bn_config c = {.eps = 1e-5f, .momentum = 0.1f};
    xg_module *m = layer_new(&batch_norm_class, &c, sizeof c);
    if (!m)
        return NULL;
    if (xg_module_add_param(m, "weight", xg_ones(&channels, 1)) != XG_OK ||
        xg_module_add_param(m, "bias", xg_zeros(&channels, 1)) != XG_OK ||
        xg_module_add_buffer(m, "running_mean", xg_zeros(&channels, 1)) !=
            XG_OK ||
        xg_module_add_buffer(m, "running_var", xg_ones(&channels, 1)) !=
            XG_OK ||
        xg_module_add_buffer(m, "num_batches_tracked", xg_zeros(NULL, 0)) !=
            XG_OK) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- layer norm ---------------------------------------------------------- */

typedef struct layer_norm_config {
    int64_t dim;
    float eps;
    bool weight, bias; /* which parameters it has */
} layer_norm_config;

static xg_tensor *layer_norm_forward(xg_module *m, xg_tensor *x)
{
    const layer_norm_config *c = xg_module_state(m);
    if (!xg__check_float("layer_norm_layer", 0, x))
        return NULL;
    if (x->ndim == 0 || x->shape[x->ndim - 1] != c->dim) {
        char s[160];
        xg__shape_str(x->shape, x->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "layer_norm_layer: input %s, expected "
                     "the last axis to be dim = %lld", s, (long long)c->dim);
        return NULL;
    }
    return xg_layer_norm(x, c->weight ? own(m, "weight") : NULL,
                         c->bias ? own(m, "bias") : NULL, c->eps);
}

static const xg_module_class layer_norm_class = {
    .name = "LayerNorm", .forward = layer_norm_forward, .free_state = free};

xg_module *xg_layer_norm_layer(int64_t dim, float eps, bool affine,
                               bool bias)
{
    if (dim < 1 || !(eps >= 0.0f) || isinf(eps)) {
        xg_set_error(XG_ERR_INVALID_ARG, "layer_norm_layer: dim %lld, eps "
                     "%g: need dim >= 1 and a finite eps >= 0",
                     (long long)dim, (double)eps);
        return NULL;
    }
    layer_norm_config c = {dim, eps, affine, affine && bias};
    xg_module *m = layer_new(&layer_norm_class, &c, sizeof c);
    if (!m)
        return NULL;
    /* reference: torch.nn.LayerNorm.reset_parameters: ones and zeros. */
    if (affine && (xg_module_add_param(m, "weight", xg_ones(&dim, 1)) !=
                       XG_OK ||
                   (bias && xg_module_add_param(m, "bias",
                                                xg_zeros(&dim, 1)) != XG_OK))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}
