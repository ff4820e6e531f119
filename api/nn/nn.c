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

/* Named tensors a module owns directly: its parameters or its buffers. */
typedef struct entries {
    xg_tensor *t[MAX_OWN_PARAMS]; /* one reference each */
    const char *name[MAX_OWN_PARAMS];
    int n;
} entries;

/* Every entry below a module with its dotted name ("fc1.weight"). */
typedef struct flat_list {
    xg_tensor **t;
    char (*name)[4 * MAX_NAME];
    int n;
} flat_list;

struct xg_module {
    const module_class *cls;
    bool training;
    union { /* the layer's configuration */
        int64_t in_features;
        xg_conv2d_params conv;
        struct { int kernel, stride, padding; } pool;
        float dropout_p;
        struct { float eps, momentum; } bn;
    } cfg;

    entries params, buffers;
    child *children;
    int n_children, cap_children;

    /* Rebuilt when the module tree has changed (flat_gen != tree_gen). */
    flat_list flat_params, flat_buffers;
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

/* Gives `t` (NULL: the error is set) to the module under `name`. */
static bool own(entries *e, const char *name, xg_tensor *t)
{
    if (!t)
        return false;
    e->t[e->n] = xg_tensor_keep(t);
    e->name[e->n++] = name;
    return true;
}

/* Makes a parameter of `shape`, uniform in +-bound, owned by `m`. */
static bool add_param(xg_module *m, const char *name, const int64_t *shape,
                      int ndim, float bound)
{
    xg_tensor *p = xg_rand_uniform(shape, ndim, -bound, bound);
    if (!own(&m->params, name, p))
        return false;
    xg_tensor_set_requires_grad(p, true);
    return true;
}

static void entries_free(entries *e)
{
    for (int i = 0; i < e->n; i++)
        xg_tensor_free(e->t[i]);
}

static void flat_free(flat_list *f)
{
    free(f->t);
    free(f->name);
}

void xg_module_free(xg_module *m)
{
    if (!m)
        return;
    entries_free(&m->params);
    entries_free(&m->buffers);
    for (int i = 0; i < m->n_children; i++)
        xg_module_free(m->children[i].module);
    free(m->children);
    flat_free(&m->flat_params);
    flat_free(&m->flat_buffers);
    free(m);
}

/* ---- layers ---------------------------------------------------------------- */

static xg_tensor *linear_forward(xg_module *m, xg_tensor *x)
{
    if (!xg__check_arg("linear", 0, x, XG_F32))
        return NULL;
    if (x->ndim == 0 || x->shape[x->ndim - 1] != m->cfg.in_features) {
        char s[160];
        xg__shape_str(x->shape, x->ndim, s, sizeof s);
        xg_set_error(XG_ERR_SHAPE, "linear: input %s, expected the last axis "
                     "to be in_features = %lld", s,
                     (long long)m->cfg.in_features);
        return NULL;
    }
    xg_tensor *y = xg_matmul_t(x, m->params.t[0], false, true);
    return m->params.n > 1 ? xg_add(y, m->params.t[1]) : y;
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
    m->cfg.in_features = in_features;
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
ACTIVATION(silu, "SiLU", xg_silu)

/* ---- convolutional layers -------------------------------------------------- */

static xg_tensor *conv2d_forward(xg_module *m, xg_tensor *x)
{
    return xg_conv2d(x, m->params.t[0], m->params.n > 1 ? m->params.t[1] : NULL,
                     &m->cfg.conv);
}

static const module_class conv2d_class = {"Conv2d", conv2d_forward};

xg_module *xg_conv2d_layer(int64_t in_channels, int64_t out_channels,
                           int kernel, const xg_conv2d_params *params,
                           bool bias)
{
    xg_conv2d_params p = params ? *params : xg_conv2d_defaults();
    if (in_channels < 1 || out_channels < 1 || kernel < 1 || p.groups < 1 ||
        p.stride_h < 1 || p.stride_w < 1 || p.dil_h < 1 || p.dil_w < 1 ||
        p.pad_h < 0 || p.pad_w < 0 || in_channels % p.groups ||
        out_channels % p.groups) {
        xg_set_error(XG_ERR_INVALID_ARG, "conv2d_layer: channels %lld -> %lld,"
                     " kernel %d, groups %d: need positive sizes, strides and "
                     "dilations, padding >= 0 and channels divisible by "
                     "groups", (long long)in_channels,
                     (long long)out_channels, kernel, p.groups);
        return NULL;
    }
    xg_module *m = module_new(&conv2d_class);
    if (!m)
        return NULL;
    m->cfg.conv = p;
    /* reference: torch.nn.Conv2d.reset_parameters, as Linear with
     * fan_in = in / groups * kernel^2. */
    int64_t in_per_group = in_channels / p.groups;
    float bound = 1.0f / sqrtf((float)(in_per_group * kernel * kernel));
    int64_t wshape[4] = {out_channels, in_per_group, kernel, kernel};
    if (!add_param(m, "weight", wshape, 4, bound) ||
        (bias && !add_param(m, "bias", &out_channels, 1, bound))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

static xg_tensor *max_pool_forward(xg_module *m, xg_tensor *x)
{
    return xg_max_pool2d(x, m->cfg.pool.kernel, m->cfg.pool.stride,
                         m->cfg.pool.padding);
}

static xg_tensor *avg_pool_forward(xg_module *m, xg_tensor *x)
{
    return xg_avg_pool2d(x, m->cfg.pool.kernel, m->cfg.pool.stride,
                         m->cfg.pool.padding);
}

static const module_class max_pool_class = {"MaxPool2d", max_pool_forward};
static const module_class avg_pool_class = {"AvgPool2d", avg_pool_forward};

static xg_module *pool_layer(const module_class *cls, int kernel, int stride,
                             int padding)
{
    if (kernel < 1 || stride < 0 || padding < 0 || padding > kernel / 2) {
        xg_set_error(XG_ERR_INVALID_ARG, "%s: kernel %d, stride %d, padding "
                     "%d: need kernel >= 1, stride >= 0 and 0 <= padding <= "
                     "kernel / 2", cls->type, kernel, stride, padding);
        return NULL;
    }
    xg_module *m = module_new(cls);
    if (m) {
        m->cfg.pool.kernel = kernel;
        m->cfg.pool.stride = stride;
        m->cfg.pool.padding = padding;
    }
    return m;
}

xg_module *xg_max_pool2d_layer(int kernel, int stride, int padding)
{
    return pool_layer(&max_pool_class, kernel, stride, padding);
}

xg_module *xg_avg_pool2d_layer(int kernel, int stride, int padding)
{
    return pool_layer(&avg_pool_class, kernel, stride, padding);
}

static xg_tensor *dropout_forward(xg_module *m, xg_tensor *x)
{
    return xg_dropout(x, m->cfg.dropout_p, m->training);
}

static const module_class dropout_class = {"Dropout", dropout_forward};

xg_module *xg_dropout_layer(float p)
{
    if (!(p >= 0.0f && p < 1.0f)) {
        xg_set_error(XG_ERR_INVALID_ARG, "dropout_layer: p = %g, must be in "
                     "[0, 1)", (double)p);
        return NULL;
    }
    xg_module *m = module_new(&dropout_class);
    if (m)
        m->cfg.dropout_p = p;
    return m;
}

static xg_tensor *flatten_forward(xg_module *m, xg_tensor *x)
{
    (void)m;
    return xg_flatten(x, 1);
}

static const module_class flatten_class = {"Flatten", flatten_forward};

xg_module *xg_flatten_layer(void)
{
    return module_new(&flatten_class);
}

/* Buffers: running_mean, running_var, num_batches_tracked. */
static xg_tensor *batch_norm_forward(xg_module *m, xg_tensor *x)
{
    xg_tensor *const *b = m->buffers.t;
    xg_tensor *y = xg_batch_norm2d(x, m->params.t[0], m->params.t[1], b[0],
                                   b[1], m->training, m->cfg.bn.momentum,
                                   m->cfg.bn.eps);
    if (y && m->training) { /* num_batches_tracked += 1, on the device */
        bool was = xg_set_grad_enabled(false);
        xg_tensor *next = xg_add_scalar(b[2], 1.0f);
        xg_status st = next ? xg__assign(b[2], next) : xg_last_status();
        xg_set_grad_enabled(was);
        if (st != XG_OK)
            return NULL;
    }
    return y;
}

static const module_class batch_norm_class = {"BatchNorm2d",
                                              batch_norm_forward};

xg_module *xg_batch_norm2d_layer(int64_t channels)
{
    if (channels < 1) {
        xg_set_error(XG_ERR_INVALID_ARG, "batch_norm2d_layer: channels %lld",
                     (long long)channels);
        return NULL;
    }
    xg_module *m = module_new(&batch_norm_class);
    if (!m)
        return NULL;
    m->cfg.bn.eps = 1e-5f;
    m->cfg.bn.momentum = 0.1f;
    if (!own(&m->params, "weight", xg_ones(&channels, 1)) ||
        !own(&m->params, "bias", xg_zeros(&channels, 1)) ||
        !own(&m->buffers, "running_mean", xg_zeros(&channels, 1)) ||
        !own(&m->buffers, "running_var", xg_ones(&channels, 1)) ||
        !own(&m->buffers, "num_batches_tracked", xg_zeros(NULL, 0))) {
        xg_module_free(m);
        return NULL;
    }
    xg_tensor_set_requires_grad(m->params.t[0], true);
    xg_tensor_set_requires_grad(m->params.t[1], true);
    return m;
}

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

/* Appends the entries below m (own first, then the children's, as
 * PyTorch's named_parameters) to `out` under `prefix`. */
static void flatten(const xg_module *m, bool buffers, const char *prefix,
                    flat_list *out)
{
    const entries *e = buffers ? &m->buffers : &m->params;
    for (int i = 0; i < e->n; i++) {
        out->t[out->n] = e->t[i];
        snprintf(out->name[out->n++], sizeof *out->name, "%s%s", prefix,
                 e->name[i]);
    }
    for (int i = 0; i < m->n_children; i++) {
        char sub[sizeof *out->name];
        snprintf(sub, sizeof sub, "%s%s.", prefix, m->children[i].name);
        flatten(m->children[i].module, buffers, sub, out);
    }
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
    f->n = 0;
    if (!f->t || !f->name) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "module: out of host memory");
        return false;
    }
    flatten(m, buffers, "", f);
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
        xg_tensor_set_requires_grad(m->params.t[i], !frozen);
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
