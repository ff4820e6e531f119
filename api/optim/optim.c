/* Optimizers (PyTorch's SGD, Adam, AdamW), schedules, gradient clipping.
 * The update math runs on the device through the fused kernels adam_update
 * and sgd_update of the op list. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim_impl.h"

static xg_status adam_update(xg_tensor *param, xg_tensor *grad, xg_tensor *m,
                          xg_tensor *v, const xg_adam_args *args);
static xg_status sgd_update(xg_tensor *param, xg_tensor *grad, xg_tensor *buf,
                         const xg_sgd_args *args);

typedef enum optim_kind { OPT_SGD, OPT_ADAM, OPT_ADAMW } optim_kind;

/* Per-parameter state, made at the first step that sees a gradient. */
typedef struct param_state {
    xg_tensor *s0, *s1; /* Adam: exp_avg, exp_avg_sq; SGD: momentum buffer */
    int64_t step;
} param_state;

struct xg_optim {
    optim_kind kind;
    xg_sgd_options sgd;
    xg_adam_options adam;
    int n;
    xg_tensor **params; /* borrowed */
    param_state *state;
    int *group;         /* per parameter: its parameter group */
    float *group_decay; /* per group: its weight decay */
    int n_groups;
    int64_t steps;
};

xg_sgd_options xg_sgd_defaults(void)
{
    return (xg_sgd_options){.lr = 1e-3f};
}

xg_adam_options xg_adam_defaults(void)
{
    return (xg_adam_options){.lr = 1e-3f, .beta1 = 0.9f, .beta2 = 0.999f,
                             .eps = 1e-8f, .weight_decay = 0.0f};
}

xg_adam_options xg_adamw_defaults(void)
{
    xg_adam_options o = xg_adam_defaults();
    o.weight_decay = 1e-2f;
    return o;
}

static xg_optim *optim_new(optim_kind kind, xg_tensor *const *params, int n)
{
    if (n < 0 || (n > 0 && !params)) {
        xg_set_error(XG_ERR_INVALID_ARG, "optim: %d parameters at %p", n,
                     (const void *)params);
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        if (params && params[i] && (params[i]->dtype == XG_BF16 ||
                                     params[i]->dtype == XG_F16)) {
            xg_set_error(XG_ERR_DTYPE, "optim: parameter %d is %s: the "
                         "optimizers update f32 master weights (keep the "
                         "parameter in f32 and cast it with xg_to_dtype for "
                         "the forward)", i, xg_dtype_name(params[i]->dtype));
            return NULL;
        }
        if (!params || !params[i] || params[i]->dtype != XG_F32 ||
            params[i]->node) {
            xg_set_error(XG_ERR_INVALID_ARG, "optim: parameter %d is %s", i,
                         !params || !params[i] ? "NULL"
                                               : "not an f32 leaf tensor");
            return NULL;
        }
    }
    /* Given twice, a parameter would be updated twice per step. */
    for (int i = 1; i < n; i++)
        for (int k = 0; k < i; k++)
            if (params[k] == params[i]) {
                xg_set_error(XG_ERR_INVALID_ARG, "optim: parameter %d is "
                             "parameter %d again; give each once", i, k);
                return NULL;
            }
    xg_optim *o = calloc(1, sizeof *o);
    if (o) {
        o->params = malloc(((size_t)n + 1) * sizeof *o->params);
        o->state = calloc((size_t)n + 1, sizeof *o->state);
        o->group = calloc((size_t)n + 1, sizeof *o->group);
        o->group_decay = calloc(1, sizeof *o->group_decay);
    }
    if (!o || !o->params || !o->state || !o->group || !o->group_decay) {
        xg_optim_free(o);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "optim: out of host memory");
        return NULL;
    }
    o->kind = kind;
    o->n = n;
    o->n_groups = 1;
    if (n > 0)
        memcpy(o->params, params, (size_t)n * sizeof *params);
    return o;
}

static bool finite_nonneg(float v)
{
    return isfinite(v) && v >= 0.0f;
}

xg_optim *xg_optim_sgd(xg_tensor *const *params, int n,
                       const xg_sgd_options *opt)
{
    const char *bad = !opt                                ? "options are NULL"
                      : !finite_nonneg(opt->lr)           ? "lr must be >= 0"
                      : !finite_nonneg(opt->momentum)     ? "momentum must be >= 0"
                      : !finite_nonneg(opt->weight_decay) ? "weight_decay must be >= 0"
                      : !isfinite(opt->dampening)         ? "dampening must be finite"
                      : opt->nesterov && (opt->momentum <= 0 || opt->dampening != 0)
                          ? "nesterov needs momentum > 0 and dampening 0"
                          : NULL;
    if (bad) {
        xg_set_error(XG_ERR_INVALID_ARG, "optim_sgd: %s", bad);
        return NULL;
    }
    xg_optim *o = optim_new(OPT_SGD, params, n);
    if (o) {
        o->sgd = *opt;
        o->group_decay[0] = opt->weight_decay;
    }
    return o;
}

static xg_optim *adam_new(optim_kind kind, xg_tensor *const *params, int n,
                          const xg_adam_options *opt)
{
    const char *bad = !opt                                ? "options are NULL"
                      : !finite_nonneg(opt->lr)           ? "lr must be >= 0"
                      : !(opt->beta1 >= 0 && opt->beta1 < 1) ? "beta1 must be in [0, 1)"
                      : !(opt->beta2 >= 0 && opt->beta2 < 1) ? "beta2 must be in [0, 1)"
                      : !finite_nonneg(opt->eps)          ? "eps must be >= 0"
                      : !finite_nonneg(opt->weight_decay) ? "weight_decay must be >= 0"
                                                          : NULL;
    if (bad) {
        xg_set_error(XG_ERR_INVALID_ARG, "optim_%s: %s",
                     kind == OPT_ADAM ? "adam" : "adamw", bad);
        return NULL;
    }
    xg_optim *o = optim_new(kind, params, n);
    if (o) {
        o->adam = *opt;
        o->group_decay[0] = opt->weight_decay;
    }
    return o;
}

xg_optim *xg_optim_adam(xg_tensor *const *params, int n,
                        const xg_adam_options *options)
{
    return adam_new(OPT_ADAM, params, n, options);
}

xg_optim *xg_optim_adamw(xg_tensor *const *params, int n,
                         const xg_adam_options *options)
{
    return adam_new(OPT_ADAMW, params, n, options);
}

xg_optim *xg_optim_for_module(xg_module *m, const char *kind, float lr)
{
    int n = xg_module_param_count(m);
    xg_tensor **params = malloc(((size_t)n + 1) * sizeof *params);
    if (!m || !kind || !params) {
        free(params);
        xg_set_error(m && kind ? XG_ERR_OUT_OF_MEMORY : XG_ERR_INVALID_ARG,
                     "optim_for_module: %s", m && kind ? "out of host memory"
                                                       : "NULL argument");
        return NULL;
    }
    for (int i = 0; i < n; i++)
        params[i] = xg_module_param(m, i, NULL);
    xg_optim *o = NULL;
    if (strcmp(kind, "sgd") == 0) {
        xg_sgd_options s = xg_sgd_defaults();
        s.lr = lr;
        o = xg_optim_sgd(params, n, &s);
    } else if (strcmp(kind, "adam") == 0 || strcmp(kind, "adamw") == 0) {
        bool w = kind[4] == 'w';
        xg_adam_options a = w ? xg_adamw_defaults() : xg_adam_defaults();
        a.lr = lr;
        o = w ? xg_optim_adamw(params, n, &a) : xg_optim_adam(params, n, &a);
    } else {
        xg_set_error(XG_ERR_INVALID_ARG, "optim_for_module: unknown optimizer "
                     "'%s' (sgd, adam, adamw)", kind);
    }
    free(params);
    return o;
}

/* ---- parameter groups ---------------------------------------------------- */

/* Why params[i] cannot join the optimizer: NULL when it can. */
static const char *group_conflict(const xg_optim *o, xg_tensor *const *params,
                                  int i)
{
    const xg_tensor *p = params[i];
    if (!p)
        return "NULL";
    if (p->dtype == XG_BF16 || p->dtype == XG_F16)
        return "16-bit: the optimizers update f32 master weights";
    if (p->dtype != XG_F32 || p->node)
        return "not an f32 leaf tensor";
    for (int k = 0; k < o->n; k++)
        if (o->params[k] == p)
            return "already in the optimizer";
    for (int k = 0; k < i; k++)
        if (params[k] == p)
            return "listed twice";
    return NULL;
}

/* Makes room for `more` parameters and one group; false on OOM (the
 * optimizer is unchanged, some arrays merely larger). */
static bool group_grow(xg_optim *o, int more)
{
    size_t n = (size_t)o->n + (size_t)more + 1;
    xg_tensor **params = realloc(o->params, n * sizeof *params);
    if (params)
        o->params = params;
    param_state *state = realloc(o->state, n * sizeof *state);
    if (state)
        o->state = state;
    int *group = realloc(o->group, n * sizeof *group);
    if (group)
        o->group = group;
    float *decay = realloc(o->group_decay,
                           ((size_t)o->n_groups + 1) * sizeof *decay);
    if (decay)
        o->group_decay = decay;
    return params && state && group && decay;
}

xg_status xg_optim_add_group(xg_optim *o, xg_tensor *const *params, int n,
                             float weight_decay)
{
    if (!o || n < 0 || (n > 0 && !params) || !finite_nonneg(weight_decay))
        return xg_set_error(XG_ERR_INVALID_ARG, "optim_add_group: %s",
                            !o ? "the optimizer is NULL"
                            : !finite_nonneg(weight_decay)
                                ? "weight_decay must be finite and >= 0"
                                : "bad parameter list (NULL, or n < 0)");
    for (int i = 0; i < n; i++) {
        const char *bad = group_conflict(o, params, i);
        if (bad)
            return xg_set_error(params[i] && (params[i]->dtype == XG_BF16 ||
                                              params[i]->dtype == XG_F16)
                                    ? XG_ERR_DTYPE
                                    : XG_ERR_INVALID_ARG,
                                "optim_add_group: parameter %d is %s", i,
                                bad);
    }
    if (!group_grow(o, n))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "optim_add_group: out of "
                            "host memory");
    for (int i = 0; i < n; i++) {
        o->params[o->n + i] = params[i];
        o->state[o->n + i] = (param_state){0};
        o->group[o->n + i] = o->n_groups;
    }
    o->n += n;
    o->group_decay[o->n_groups++] = weight_decay;
    return XG_OK;
}

/* ---- stepping ---------------------------------------------------------- */

/* A persistent f32 tensor shaped like p: zeros, or uninitialised. */
static xg_tensor *state_like(const xg_tensor *p, bool zero)
{
    xg_device *dev = p->storage->dev;
    xg_tensor *t = zero ? xg__fill(dev, p->shape, p->ndim, 0.0f, "optim")
                        : xg__tensor_new(dev, XG_F32, p->shape, p->ndim,
                                         "optim");
    return xg_tensor_keep(t);
}

static xg_status adam_step(xg_optim *o, xg_tensor *p, param_state *s,
                           float decay)
{
    if (!s->s0) {
        s->s0 = state_like(p, true);
        s->s1 = state_like(p, true);
        if (!s->s0 || !s->s1)
            return xg_last_status();
    }
    s->step++;
    const xg_adam_options *a = &o->adam;
    xg_adam_args args = {
        .n = p->numel, .lr = a->lr, .beta1 = a->beta1, .beta2 = a->beta2,
        .eps = a->eps, .weight_decay = decay,
        .bias1 = (float)(1.0 - pow(a->beta1, (double)s->step)),
        .bias2 = (float)(1.0 - pow(a->beta2, (double)s->step)),
        .decoupled = o->kind == OPT_ADAMW};
    return adam_update(p, p->grad, s->s0, s->s1, &args);
}

static xg_status sgd_step(xg_optim *o, xg_tensor *p, param_state *s,
                          float decay)
{
    bool first = false;
    if (o->sgd.momentum != 0 && !s->s0) {
        if (!(s->s0 = state_like(p, false)))
            return xg_last_status();
        first = true;
    }
    s->step++;
    const xg_sgd_options *g = &o->sgd;
    xg_sgd_args args = {.n = p->numel, .lr = g->lr, .momentum = g->momentum,
                        .dampening = g->dampening,
                        .weight_decay = decay,
                        .nesterov = g->nesterov, .first = first};
    return sgd_update(p, p->grad, s->s0, &args);
}

xg_status xg_optim_step(xg_optim *o)
{
    if (!o)
        return xg_set_error(XG_ERR_INVALID_ARG, "optim_step: NULL optimizer");
    xg_status st = XG_OK;
    for (int i = 0; i < o->n && st == XG_OK; i++) {
        xg_tensor *p = o->params[i];
        if (!p->requires_grad || !p->grad)
            continue; /* frozen, or not used in this step's loss */
        float decay = o->group_decay[o->group[i]];
        st = o->kind == OPT_SGD ? sgd_step(o, p, &o->state[i], decay)
                                : adam_step(o, p, &o->state[i], decay);
    }
    if (st == XG_OK)
        o->steps++;
    return st;
}

void xg_optim_zero_grad(xg_optim *o)
{
    for (int i = 0; o && i < o->n; i++)
        xg_tensor_zero_grad(o->params[i]);
}

float xg_optim_lr(const xg_optim *o)
{
    return !o ? 0.0f : o->kind == OPT_SGD ? o->sgd.lr : o->adam.lr;
}

void xg_optim_set_lr(xg_optim *o, float lr)
{
    if (!o || !finite_nonneg(lr)) {
        xg_set_error(XG_ERR_INVALID_ARG, "optim_set_lr: %s", !o
                     ? "optimizer is NULL"
                     : "the learning rate must be finite and >= 0; it is "
                       "unchanged");
        return;
    }
    if (o->kind == OPT_SGD)
        o->sgd.lr = lr;
    else
        o->adam.lr = lr;
}

int64_t xg_optim_steps(const xg_optim *o)
{
    return o ? o->steps : 0;
}

void xg_optim_free(xg_optim *o)
{
    if (!o)
        return;
    for (int i = 0; o->state && i < o->n; i++) {
        xg_tensor_free(o->state[i].s0);
        xg_tensor_free(o->state[i].s1);
    }
    free(o->state);
    free(o->params);
    free(o->group);
    free(o->group_decay);
    free(o);
}

/* ---- state access for checkpoints ---------------------------------------- */

const char *xg__optim_kind(const xg_optim *o)
{
    static const char *const names[] = {"sgd", "adam", "adamw"};
    return names[o->kind];
}

void xg__optim_options_text(const xg_optim *o, char *buf, size_t cap)
{
    if (o->kind == OPT_SGD)
        snprintf(buf, cap, "momentum=%.9g dampening=%.9g weight_decay=%.9g "
                 "nesterov=%d", (double)o->sgd.momentum,
                 (double)o->sgd.dampening, (double)o->sgd.weight_decay,
                 o->sgd.nesterov ? 1 : 0);
    else
        snprintf(buf, cap, "beta1=%.9g beta2=%.9g eps=%.9g weight_decay=%.9g",
                 (double)o->adam.beta1, (double)o->adam.beta2,
                 (double)o->adam.eps, (double)o->adam.weight_decay);
}

int xg__optim_count(const xg_optim *o)
{
    return o->n;
}

xg_optim_slot xg__optim_slot(const xg_optim *o, int i)
{
    const param_state *s = &o->state[i];
    return (xg_optim_slot){o->params[i], s->s0, s->s1, s->step, o->group[i]};
}

void xg__optim_set_slot(xg_optim *o, int i, xg_tensor *s0, xg_tensor *s1,
                        int64_t step)
{
    param_state *s = &o->state[i];
    xg_tensor_free(s->s0);
    xg_tensor_free(s->s1);
    s->s0 = xg_tensor_keep(s0);
    s->s1 = xg_tensor_keep(s1);
    s->step = step;
}

void xg__optim_set_steps(xg_optim *o, int64_t steps)
{
    o->steps = steps;
}

int xg__optim_group_count(const xg_optim *o)
{
    return o->n_groups;
}

float xg__optim_group_weight_decay(const xg_optim *o, int g)
{
    return o->group_decay[g];
}

/* ---- kernels ----------------------------------------------------------- */

static xg_status adam_update(xg_tensor *param, xg_tensor *grad, xg_tensor *m,
                          xg_tensor *v, const xg_adam_args *args)
{
    xg__tensor_touched(param);
    xg__tensor_touched(m);
    xg__tensor_touched(v);
    xg_kernel_call call = {.op = XG_OP_adam_update, .in = {xg__arg(grad)},
                           .out = {xg__arg(param), xg__arg(m), xg__arg(v)}};
    call.p.adam = *args;
    return xg__launch(param->storage->dev, &call);
}

static xg_status sgd_update(xg_tensor *param, xg_tensor *grad, xg_tensor *buf,
                         const xg_sgd_args *args)
{
    xg__tensor_touched(param);
    if (buf)
        xg__tensor_touched(buf);
    xg_kernel_call call = {.op = XG_OP_sgd_update, .in = {xg__arg(grad)},
                           .out = {xg__arg(param), xg__arg(buf)}};
    call.p.sgd = *args;
    return xg__launch(param->storage->dev, &call);
}

/* ---- schedules and clipping ---------------------------------------------- */

float xg_lr_step(float base_lr, int64_t step, int64_t step_size, float gamma)
{
    if (step_size < 1 || step < 0)
        return base_lr;
    return base_lr * powf(gamma, (float)(step / step_size));
}

float xg_lr_cosine(float base_lr, int64_t step, int64_t warmup,
                   int64_t total, float min_lr)
{
    step = step < 0 ? 0 : step;
    if (step < warmup)
        return base_lr * (float)(step + 1) / (float)warmup;
    double p = total > warmup ? (double)(step - warmup) / (double)(total - warmup)
                              : 1.0;
    p = p < 0 ? 0 : p > 1 ? 1 : p;
    return (float)(min_lr + (base_lr - min_lr) * (1.0 + cos(M_PI * p)) / 2.0);
}

/* Sum over parameters of sum(grad^2), read back into *out (0 without
 * gradients). */
static xg_status grad_square_sum(xg_tensor *const *params, int n, float *out)
{
    xg_tensor *total = NULL;
    *out = 0.0f;
    for (int i = 0; i < n; i++) {
        xg_tensor *g = params[i] ? params[i]->grad : NULL;
        if (!g)
            continue;
        xg_tensor *s = xg_sum_all(xg_mul(g, g));
        total = total ? xg_add(total, s) : s;
        if (!total)
            return xg_last_status();
    }
    return total ? xg_tensor_item(total, out) : XG_OK;
}

xg_status xg_clip_grad_norm(xg_tensor *const *params, int n, float max_norm,
                            float *total_norm)
{
    if ((n > 0 && !params) || n < 0 || !(max_norm >= 0))
        return xg_set_error(XG_ERR_INVALID_ARG, "clip_grad_norm: bad "
                            "arguments (params NULL, n < 0 or max_norm < 0)");
    xg_scope *scope = xg_scope_begin();
    bool was = xg_set_grad_enabled(false);
    float sq = 0.0f;
    xg_status st = scope ? grad_square_sum(params, n, &sq)
                         : XG_ERR_OUT_OF_MEMORY;
    float norm = sqrtf(sq);
    float coef = max_norm / (norm + 1e-6f);
    for (int i = 0; i < n && st == XG_OK && coef < 1.0f; i++) {
        xg_tensor *p = params[i];
        if (!p || !p->grad)
            continue;
        xg_tensor *scaled = xg_mul_scalar(p->grad, coef);
        if (!scaled) {
            st = xg_last_status();
            break;
        }
        xg__tensor_retain(scaled);
        xg__tensor_release(p->grad);
        p->grad = scaled;
    }
    xg_set_grad_enabled(was);
    xg_scope_end(scope);
    if (total_norm && st == XG_OK)
        *total_norm = norm;
    return st;
}
