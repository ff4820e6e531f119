/* The dynamic loss scaler of mixed-precision training (xg_grad_scaler_*),
 * with PyTorch's GradScaler semantics: the loss is multiplied by the scale
 * before backward, the gradients divided by it before the step, a step
 * whose gradients hold an inf or NaN is skipped and the scale halved, and
 * the scale doubles after growth_interval clean steps in a row.
 *
 * The scale lives on the host. The inf/NaN check costs one value read per
 * optimizer: on the device, every gradient g gives sum(g * 0), which is 0
 * when g is finite and NaN otherwise; the sums are added, and
 * xg_grad_scaler_step reads that one float. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "optim/optim_impl.h"

/* Where an optimizer stands in the current step (PyTorch's OptState). */
typedef enum stage { READY, UNSCALED, STEPPED } stage;

typedef struct optim_state {
    const xg_optim *opt;
    stage stage;
    xg_tensor *found; /* device scalar: 0 when all finite; until read */
    bool found_inf;   /* once read by step */
    bool read;
} optim_state;

struct xg_grad_scaler {
    xg_grad_scaler_options o;
    float scale;
    int64_t growth_tracker; /* clean steps since the last change */
    optim_state *opts;      /* the optimizers seen since the last update */
    int n_opts, cap_opts;
};

xg_grad_scaler_options xg_grad_scaler_defaults(void)
{
    return (xg_grad_scaler_options){.init_scale = 65536.0f,
                                    .growth_factor = 2.0f,
                                    .backoff_factor = 0.5f,
                                    .growth_interval = 2000};
}

xg_grad_scaler *xg_grad_scaler_new(const xg_grad_scaler_options *options)
{
    xg_grad_scaler_options o = options ? *options : xg_grad_scaler_defaults();
    const char *bad =
        !(isfinite(o.init_scale) && o.init_scale > 0)
            ? "init_scale must be finite and > 0"
        : !(isfinite(o.growth_factor) && o.growth_factor > 1)
            ? "growth_factor must be finite and > 1"
        : !(o.backoff_factor > 0 && o.backoff_factor < 1)
            ? "backoff_factor must be in (0, 1)"
        : o.growth_interval < 1 ? "growth_interval must be >= 1"
                                : NULL;
    if (bad) {
        xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_new: %s", bad);
        return NULL;
    }
    xg_grad_scaler *s = calloc(1, sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_scaler_new: out of host "
                     "memory");
        return NULL;
    }
    s->o = o;
    s->scale = o.init_scale;
    return s;
}

/* Forgets the optimizers' per-step state (after update, or on free). */
static void reset_step(xg_grad_scaler *s)
{
    for (int i = 0; i < s->n_opts; i++)
        xg_tensor_free(s->opts[i].found);
    s->n_opts = 0;
}

void xg_grad_scaler_free(xg_grad_scaler *s)
{
    if (!s)
        return;
    reset_step(s);
    free(s->opts);
    free(s);
}

xg_tensor *xg_grad_scaler_scale(xg_grad_scaler *s, xg_tensor *loss)
{
    if (!s || !loss) {
        if (!s)
            xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_scale: NULL "
                         "scaler");
        return NULL; /* a NULL loss keeps its error */
    }
    return xg_mul_scalar(loss, s->scale);
}

/* opt's state in this step, added (READY) when new; NULL on OOM. */
static optim_state *state_of(xg_grad_scaler *s, const xg_optim *opt)
{
    for (int i = 0; i < s->n_opts; i++)
        if (s->opts[i].opt == opt)
            return &s->opts[i];
    if (s->n_opts == s->cap_opts) {
        int cap = s->cap_opts ? 2 * s->cap_opts : 2;
        optim_state *more = realloc(s->opts, (size_t)cap * sizeof *more);
        if (!more) {
            xg_set_error(XG_ERR_OUT_OF_MEMORY, "grad_scaler: out of host "
                         "memory");
            return NULL;
        }
        s->opts = more;
        s->cap_opts = cap;
    }
    optim_state *st = &s->opts[s->n_opts++];
    *st = (optim_state){.opt = opt, .stage = READY};
    return st;
}

/* The check and the division, under no grad in a composite scope. The
 * check reads each gradient as it was (as PyTorch's does: a finite gradient
 * that overflows once divided by a scale < 1 counts as finite). */
static xg_status unscale_grads(xg_grad_scaler *s, xg_optim *opt,
                               xg_tensor **found)
{
    /* PyTorch computes the reciprocal in double, then rounds to float. */
    float inv = (float)(1.0 / (double)s->scale);
    xg_tensor *total = NULL;
    xg_status st = XG_OK;
    int n = xg__optim_count(opt);
    for (int i = 0; i < n && st == XG_OK; i++) {
        xg_tensor *p = xg__optim_slot(opt, i).param;
        if (!p->requires_grad || !p->grad)
            continue; /* what xg_optim_step skips */
        xg_tensor *check = xg_sum_all(xg_mul_scalar(p->grad, 0.0f));
        total = total ? xg_add(total, check) : check;
        xg_tensor *unscaled = total ? xg_mul_scalar(p->grad, inv) : NULL;
        if (!unscaled) {
            st = xg_last_status();
            break;
        }
        xg__tensor_retain(unscaled);
        xg__tensor_release(p->grad);
        p->grad = unscaled;
    }
    if (st == XG_OK && !total) /* no gradient at all: nothing non-finite */
        total = xg_zeros(NULL, 0);
    if (st == XG_OK && !total)
        st = xg_last_status();
    if (st == XG_OK)
        *found = xg_tensor_keep(total);
    return st;
}

xg_status xg_grad_scaler_unscale(xg_grad_scaler *s, xg_optim *opt)
{
    if (!s || !opt)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_unscale: NULL "
                            "argument");
    optim_state *os = state_of(s, opt);
    if (!os)
        return xg_last_status();
    if (os->stage != READY)
        return xg_set_error(XG_ERR_STATE, "grad_scaler_unscale: %s",
                            os->stage == UNSCALED
                                ? "already called for this optimizer since "
                                  "the last xg_grad_scaler_update"
                                : "called after xg_grad_scaler_step; call "
                                  "xg_grad_scaler_update first");
    xg_scope *scope = xg__composite_begin();
    bool was = xg_set_grad_enabled(false);
    xg_tensor *found = NULL;
    xg_status st = scope ? unscale_grads(s, opt, &found)
                         : XG_ERR_OUT_OF_MEMORY;
    xg_set_grad_enabled(was);
    xg__composite_end(scope, NULL);
    if (st != XG_OK)
        return st; /* some gradients may be divided already */
    os->found = found;
    os->stage = UNSCALED;
    return XG_OK;
}

xg_status xg_grad_scaler_step(xg_grad_scaler *s, xg_optim *opt,
                              bool *stepped)
{
    if (stepped)
        *stepped = false;
    if (!s || !opt)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_step: NULL "
                            "argument");
    optim_state *os = state_of(s, opt);
    if (!os)
        return xg_last_status();
    if (os->stage == STEPPED)
        return xg_set_error(XG_ERR_STATE, "grad_scaler_step: already called "
                            "for this optimizer since the last "
                            "xg_grad_scaler_update");
    xg_status st = os->stage == READY ? xg_grad_scaler_unscale(s, opt)
                                      : XG_OK;
    float found = 0.0f;
    if (st == XG_OK)
        st = xg_tensor_item(os->found, &found);
    if (st != XG_OK)
        return st;
    xg_tensor_free(os->found);
    os->found = NULL;
    os->read = true;
    os->found_inf = found != 0.0f; /* NaN != 0 too */
    if (!os->found_inf) {
        st = xg_optim_step(opt);
        if (st != XG_OK)
            return st;
        if (stepped)
            *stepped = true;
    }
    os->stage = STEPPED;
    return XG_OK;
}

xg_status xg_grad_scaler_update(xg_grad_scaler *s)
{
    if (!s)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_update: NULL "
                            "scaler");
    bool any = false, found_inf = false;
    xg_status st = XG_OK;
    for (int i = 0; i < s->n_opts && st == XG_OK; i++) {
        optim_state *os = &s->opts[i];
        if (!os->read && os->found) { /* unscaled but not stepped */
            float v = 0.0f;
            st = xg_tensor_item(os->found, &v);
            os->found_inf = v != 0.0f;
            os->read = st == XG_OK;
        }
        any |= os->read;
        found_inf |= os->read && os->found_inf;
    }
    if (st != XG_OK)
        return st;
    if (!any)
        return xg_set_error(XG_ERR_STATE, "grad_scaler_update: no "
                            "gradients were checked since the last update "
                            "(call xg_grad_scaler_step or _unscale first)");
    if (found_inf) {
        s->scale = (float)((double)s->scale * (double)s->o.backoff_factor);
        s->growth_tracker = 0;
    } else if (s->growth_tracker + 1 >= s->o.growth_interval) {
        float grown = (float)((double)s->scale * (double)s->o.growth_factor);
        if (isfinite(grown)) /* never past f32's range to inf */
            s->scale = grown;
        s->growth_tracker = 0;
    } else {
        s->growth_tracker++;
    }
    reset_step(s);
    return XG_OK;
}

float xg_grad_scaler_get_scale(const xg_grad_scaler *s)
{
    return s ? s->scale : 0.0f;
}

int64_t xg_grad_scaler_growth_tracker(const xg_grad_scaler *s)
{
    return s ? s->growth_tracker : 0;
}

xg_status xg_grad_scaler_set_state(xg_grad_scaler *s, float scale,
                                   int64_t growth_tracker)
{
    if (!s || !(isfinite(scale) && scale > 0) || growth_tracker < 0 ||
        growth_tracker >= s->o.growth_interval)
        return xg_set_error(XG_ERR_INVALID_ARG, "grad_scaler_set_state: %s",
                            !s ? "NULL scaler"
                            : !(isfinite(scale) && scale > 0)
                                ? "the scale must be finite and > 0"
                                : "the growth tracker must be in [0, "
                                  "growth_interval)");
    reset_step(s);
    s->scale = scale;
    s->growth_tracker = growth_tracker;
    return XG_OK;
}
