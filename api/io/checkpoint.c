/* Model files built on safetensors: a module's parameters under PyTorch's
 * names (a state_dict, xg_module_save/load), and training checkpoints that
 * add the optimizer's state and the training progress so that training
 * resumes bit for bit (xg_checkpoint_save/load).
 *
 * A checkpoint holds, beside each parameter and buffer "<name>" (BatchNorm's
 * num_batches_tracked as an I64 scalar):
 *   optim.<name>.exp_avg, optim.<name>.exp_avg_sq  F32 (Adam, AdamW)
 *   optim.<name>.momentum_buffer                   F32 (SGD with momentum)
 *   optim.<name>.step                              I64 scalar
 * for every parameter the optimizer has updated (a frozen one has none),
 * and the __metadata__ keys listed in `reserved` below plus the caller's
 * hyperparameters. An optimizer with more than one parameter group adds
 * "param_groups", the groups as torch's optimizer state_dict lists them
 * but with parameter names: [{"weight_decay":0.1,"params":["h.0.weight"]},
 * ...]; a checkpoint loads only into an optimizer with the same groups.
 * "optimizer_options" records the options beside the rate (betas, eps,
 * weight decay; SGD's momentum, dampening, nesterov) and a checkpoint loads
 * only into an optimizer with the same ones (a file without the key, from
 * before it, loads as it always did). A run with a loss scaler
 * (xg_train_state.loss_scale > 0) adds "loss_scale" (%.9g, so the float
 * comes back exactly) and "loss_scale_growth"; loading a file without
 * them gives loss_scale 0.
 *
 * Loading checks the whole file against the module and optimizer and
 * builds the new optimizer state before it changes anything. */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "optim/optim_impl.h"
#include "safetensors_impl.h"

#define CHECKPOINT_FORMAT "xgrad-checkpoint-1"

/* Step and epoch counts are refused above 2^53: beyond it they no longer
 * convert to double exactly, and one more step could overflow int64. */
#define MAX_COUNT ((uint64_t)1 << 53)

/* The checkpoint's own metadata keys; hyperparameters may not use them. */
static const char *const reserved[] = {
    "format", "optimizer", "lr", "optimizer_steps",
    "epoch", "step", "rng_seed", "rng_offset", "param_groups",
    "optimizer_options", "loss_scale", "loss_scale_growth",
};

/* Parameter names in checkpoints are at most this long, so that every
 * "optim.<name>.<what>" key fits a state_key. */
#define MAX_PARAM_NAME 255

/* "optim.<name>.<what>" */
typedef struct state_key {
    char s[MAX_PARAM_NAME + 64];
} state_key;

/* Refuses a parameter name too long for the optimizer state's keys. */
static xg_status check_name_length(const char *who, const char *name)
{
    size_t len = strlen(name);
    if (len <= MAX_PARAM_NAME)
        return XG_OK;
    return xg_set_error(XG_ERR_INVALID_ARG, "%s: parameter name '%.40s...' "
                        "is %zu characters long; checkpoints support names "
                        "of up to %d", who, name, len, MAX_PARAM_NAME);
}

static state_key key_of(const char *param, const char *what)
{
    state_key k;
    snprintf(k.s, sizeof k.s, "optim.%s.%s", param, what);
    return k;
}

/* The names of an optimizer's two state tensors (the second may be NULL). */
static const char *state_name(const xg_optim *opt, int which)
{
    bool sgd = strcmp(xg__optim_kind(opt), "sgd") == 0;
    if (which == 0)
        return sgd ? "momentum_buffer" : "exp_avg";
    return sgd ? NULL : "exp_avg_sq";
}

/* The module's name for parameter tensor p, or NULL. */
static const char *param_name(const xg_module *m, const xg_tensor *p)
{
    int n = xg_module_param_count(m);
    for (int i = 0; i < n; i++) {
        const char *name = NULL;
        if (xg_module_param(m, i, &name) == p)
            return name;
    }
    return NULL;
}

/* ==== The module's state: parameters, then buffers ====================== */

static int state_count(const xg_module *m)
{
    return xg_module_param_count(m) + xg_module_buffer_count(m);
}

/* Entry i of the state_dict, as PyTorch lists it: parameters, then buffers
 * such as BatchNorm's running statistics. */
static xg_tensor *state_at(const xg_module *m, int i, const char **name)
{
    int np = xg_module_param_count(m);
    return i < np ? xg_module_param(m, i, name)
                  : xg_module_buffer(m, i - np, name);
}

/* BatchNorm's batch counter: f32 in memory, an I64 scalar in files. */
static bool is_counter(const char *name)
{
    const char *suffix = "num_batches_tracked";
    size_t n = strlen(name), k = strlen(suffix);
    return n >= k && strcmp(name + n - k, suffix) == 0;
}

/* ==== Saving ============================================================== */

static xg_status add_entry(xg_safetensors_writer *w, const char *name,
                           const xg_tensor *t)
{
    if (!is_counter(name))
        return xg_safetensors_writer_add(w, name, t);
    float count = 0.0f;
    xg_status st = xg_tensor_item(t, &count);
    return st == XG_OK ? xg_safetensors_writer_add_i64(w, name, (int64_t)count)
                       : st;
}

static xg_status add_params(xg_safetensors_writer *w, const xg_module *m)
{
    int n = state_count(m);
    for (int i = 0; i < n; i++) {
        const char *name = NULL;
        xg_tensor *p = state_at(m, i, &name);
        xg_status st = p ? add_entry(w, name, p) : xg_last_status();
        if (st != XG_OK)
            return st;
    }
    return XG_OK;
}

xg_status xg_module_save(const xg_module *m, const char *path)
{
    return xg_module_save_with(m, path, NULL);
}

xg_status xg_module_save_with(const xg_module *m, const char *path,
                              const char *const *metadata)
{
    if (!m || !path)
        return xg_set_error(XG_ERR_INVALID_ARG, "module_save: NULL argument");
    for (int i = 0; metadata && metadata[i]; i += 2)
        if (!metadata[i + 1] || strcmp(metadata[i], "format") == 0)
            return xg_set_error(XG_ERR_INVALID_ARG, "module_save: metadata "
                                "key '%s' %s", metadata[i],
                                metadata[i + 1] ? "is the file's own"
                                                : "has no value");
    xg_safetensors_writer *w = xg_safetensors_writer_new();
    /* "format": "pt" is what Hugging Face loaders expect of a state_dict. */
    xg_status st = w ? xg_safetensors_writer_metadata(w, "format", "pt")
                     : xg_last_status();
    for (int i = 0; metadata && metadata[i] && st == XG_OK; i += 2)
        st = xg_safetensors_writer_metadata(w, metadata[i], metadata[i + 1]);
    if (st == XG_OK)
        st = add_params(w, m);
    if (st == XG_OK)
        st = xg_safetensors_writer_save(w, path);
    xg_safetensors_writer_free(w);
    return st;
}

/* ==== Parameter groups ===================================================== */

/* Group g: {"weight_decay": ..., "params": [names]}; NULL on OOM. */
static json_t *group_json(const xg_module *m, const xg_optim *opt, int g)
{
    json_t *names = json_array();
    for (int i = 0; names && i < xg__optim_count(opt); i++) {
        xg_optim_slot s = xg__optim_slot(opt, i);
        const char *name = param_name(m, s.param);
        if (s.group == g &&
            json_array_append_new(names, json_string(name ? name : "?"))) {
            json_decref(names);
            names = NULL;
        }
    }
    double decay = xg__optim_group_weight_decay(opt, g);
    return names ? json_pack("{s:f,s:o}", "weight_decay", decay, "params",
                             names)
                 : NULL;
}

static json_t *groups_json(const xg_module *m, const xg_optim *opt)
{
    json_t *groups = json_array();
    for (int g = 0; groups && g < xg__optim_group_count(opt); g++)
        if (json_array_append_new(groups, group_json(m, opt, g))) {
            json_decref(groups);
            groups = NULL;
        }
    return groups;
}

/* The optimizer's groups as the "param_groups" metadata value: *out is
 * NULL for a single group, else a string to free. */
static xg_status groups_text(const xg_module *m, const xg_optim *opt,
                             char **out)
{
    *out = NULL;
    if (xg__optim_group_count(opt) < 2)
        return XG_OK;
    json_t *groups = groups_json(m, opt);
    *out = groups ? json_dumps(groups, JSON_COMPACT | JSON_REAL_PRECISION(9))
                  : NULL;
    json_decref(groups);
    return *out ? XG_OK
                : xg_set_error(XG_ERR_OUT_OF_MEMORY, "checkpoint: out of host "
                               "memory");
}

/* Checks that the file's groups are the optimizer's. */
static xg_status check_groups(const xg_safetensors *st, const xg_module *m,
                              const xg_optim *opt)
{
    char *mine = NULL;
    xg_status s = groups_text(m, opt, &mine);
    const char *theirs = xg_safetensors_metadata(st, "param_groups");
    if (s == XG_OK && (!mine != !theirs || (mine && strcmp(mine, theirs))))
        s = xg_set_error(XG_ERR_INVALID_ARG, "%s: the checkpoint's parameter "
                         "groups (%.200s) are not the optimizer's (%.200s)",
                         xg__safetensors_label(st),
                         theirs ? theirs : "one group",
                         mine ? mine : "one group");
    free(mine);
    return s;
}

/* Checks the file's optimizer options (beside the rate) against the
 * optimizer's; a file from before they were recorded passes. */
static xg_status check_options(const xg_safetensors *st, const xg_optim *opt)
{
    const char *theirs = xg_safetensors_metadata(st, "optimizer_options");
    char ours[256];
    xg__optim_options_text(opt, ours, sizeof ours);
    if (!theirs || strcmp(theirs, ours) == 0)
        return XG_OK;
    return xg_set_error(XG_ERR_INVALID_ARG, "%s: the checkpoint was written "
                        "by %s with %s; this optimizer has %s",
                        xg__safetensors_label(st), xg__optim_kind(opt),
                        theirs, ours);
}

/* The state of every parameter the optimizer has updated. */
static xg_status add_optim(xg_safetensors_writer *w, const xg_module *m,
                           const xg_optim *opt)
{
    for (int i = 0; i < xg__optim_count(opt); i++) {
        xg_optim_slot s = xg__optim_slot(opt, i);
        const char *name = param_name(m, s.param);
        if (!name)
            return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: the "
                                "optimizer's parameter %d is not a parameter "
                                "of the module", i);
        xg_status st = check_name_length("checkpoint_save", name);
        if (st != XG_OK)
            return st;
        if (s.step == 0 && !s.s0 && !s.s1)
            continue; /* never updated: frozen, or unused so far */
        state_key step = key_of(name, "step");
        state_key k0 = key_of(name, state_name(opt, 0));
        state_key k1 = key_of(name, s.s1 ? state_name(opt, 1) : "");
        st = xg_safetensors_writer_add_i64(w, step.s, s.step);
        if (st == XG_OK && s.s0)
            st = xg_safetensors_writer_add(w, k0.s, s.s0);
        if (st == XG_OK && s.s1)
            st = xg_safetensors_writer_add(w, k1.s, s.s1);
        if (st != XG_OK)
            return st;
    }
    return XG_OK;
}

/* The loss scaler's state, when the run has one. */
static xg_status add_loss_scale(xg_safetensors_writer *w,
                                const xg_train_state *s)
{
    char scale[32], growth[32];
    snprintf(scale, sizeof scale, "%.9g", (double)s->loss_scale);
    snprintf(growth, sizeof growth, "%" PRId64, s->loss_scale_growth);
    xg_status st = xg_safetensors_writer_metadata(w, "loss_scale", scale);
    return st == XG_OK ? xg_safetensors_writer_metadata(w, "loss_scale_growth",
                                                        growth)
                       : st;
}

static xg_status add_metadata(xg_safetensors_writer *w, const xg_module *m,
                              const xg_optim *opt, const xg_train_state *s,
                              const char *const *hparams)
{
    char v[6][32];
    snprintf(v[0], sizeof v[0], "%.9g", (double)xg_optim_lr(opt));
    snprintf(v[1], sizeof v[1], "%" PRId64, xg_optim_steps(opt));
    snprintf(v[2], sizeof v[2], "%" PRId64, s->epoch);
    snprintf(v[3], sizeof v[3], "%" PRId64, s->step);
    snprintf(v[4], sizeof v[4], "%" PRIu64, s->rng_seed);
    snprintf(v[5], sizeof v[5], "%" PRIu64, s->rng_offset);
    const char *values[] = {/* in the order of `reserved` */
                            CHECKPOINT_FORMAT, xg__optim_kind(opt),
                            v[0], v[1], v[2], v[3], v[4], v[5]};
    xg_status st = XG_OK;
    for (size_t i = 0; i < sizeof values / sizeof *values && st == XG_OK; i++)
        st = xg_safetensors_writer_metadata(w, reserved[i], values[i]);
    for (int i = 0; hparams && hparams[i] && st == XG_OK; i += 2)
        st = xg_safetensors_writer_metadata(w, hparams[i], hparams[i + 1]);
    char options[256];
    xg__optim_options_text(opt, options, sizeof options);
    if (st == XG_OK)
        st = xg_safetensors_writer_metadata(w, "optimizer_options", options);
    char *groups = NULL;
    if (st == XG_OK)
        st = groups_text(m, opt, &groups);
    if (st == XG_OK && groups)
        st = xg_safetensors_writer_metadata(w, "param_groups", groups);
    free(groups);
    if (st == XG_OK && s->loss_scale > 0)
        st = add_loss_scale(w, s);
    return st;
}

/* Hyperparameters come in key, value pairs, with keys of their own. */
static xg_status check_save_args(const xg_train_state *s,
                                 const char *const *hparams)
{
    if (s->epoch < 0 || s->step < 0 || (uint64_t)s->epoch > MAX_COUNT ||
        (uint64_t)s->step > MAX_COUNT)
        return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: epoch and "
                            "step must be in [0, %" PRIu64 "]", MAX_COUNT);
    if (!(s->loss_scale == 0 ||
          (isfinite(s->loss_scale) && s->loss_scale > 0)) ||
        s->loss_scale_growth < 0 || (uint64_t)s->loss_scale_growth > MAX_COUNT)
        return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: the loss "
                            "scale must be 0 (none) or finite and > 0, its "
                            "growth tracker in [0, %" PRIu64 "]", MAX_COUNT);
    for (int i = 0; hparams && hparams[i]; i += 2) {
        if (!hparams[i + 1])
            return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: "
                                "hyperparameter '%s' has no value",
                                hparams[i]);
        for (size_t k = 0; k < sizeof reserved / sizeof *reserved; k++)
            if (strcmp(hparams[i], reserved[k]) == 0)
                return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: "
                                    "hyperparameter '%s' is a name the "
                                    "checkpoint itself uses", hparams[i]);
    }
    return XG_OK;
}

xg_status xg_checkpoint_save(const char *path, const xg_module *m,
                             const xg_optim *opt, const xg_train_state *state,
                             const char *const *hparams)
{
    if (!path || !m || !opt)
        return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_save: NULL "
                            "argument");
    const xg_train_state zero = {0};
    const xg_train_state *s = state ? state : &zero;
    xg_status st = check_save_args(s, hparams);
    xg_safetensors_writer *w = NULL;
    if (st == XG_OK && !(w = xg_safetensors_writer_new()))
        st = xg_last_status();
    if (st == XG_OK)
        st = add_params(w, m);
    if (st == XG_OK)
        st = add_optim(w, m, opt);
    if (st == XG_OK)
        st = add_metadata(w, m, opt, s, hparams);
    if (st == XG_OK)
        st = xg_safetensors_writer_save(w, path);
    xg_safetensors_writer_free(w);
    return st;
}

/* ==== Loading: the plan =================================================== */

/* Everything a load will install, checked and built before anything
 * changes. Per optimizer slot: the file's entries, then new tensors. */
typedef struct load_plan {
    const xg_safetensors *st;
    const char *label;
    bool *used;                  /* per file entry: claimed */
    const xg__st_entry **params; /* per state_dict entry */
    int64_t *counters;           /* per entry: a batch counter's value */
    int n_slots;
    const xg__st_entry **e0, **e1;
    xg_tensor **s0, **s1;
    int64_t *steps;
} load_plan;

static void plan_free(load_plan *p)
{
    for (int i = 0; p->s0 && p->s1 && i < p->n_slots; i++) {
        xg_tensor_free(p->s0[i]);
        xg_tensor_free(p->s1[i]);
    }
    free(p->used);
    free(p->params);
    free(p->counters);
    free(p->e0);
    free(p->e1);
    free(p->s0);
    free(p->s1);
    free(p->steps);
}

static xg_status plan_init(load_plan *p, const xg_safetensors *st,
                           const xg_module *m, const xg_optim *opt)
{
    size_t files = (size_t)xg_safetensors_count(st) + 1;
    size_t params = (size_t)state_count(m) + 1;
    size_t slots = (size_t)(opt ? xg__optim_count(opt) : 0) + 1;
    *p = (load_plan){.st = st, .label = xg__safetensors_label(st),
                     .n_slots = (int)slots - 1};
    p->used = calloc(files, sizeof *p->used);
    p->params = calloc(params, sizeof *p->params);
    p->counters = calloc(params, sizeof *p->counters);
    p->e0 = calloc(slots, sizeof *p->e0);
    p->e1 = calloc(slots, sizeof *p->e1);
    p->s0 = calloc(slots, sizeof *p->s0);
    p->s1 = calloc(slots, sizeof *p->s1);
    p->steps = calloc(slots, sizeof *p->steps);
    if (!p->used || !p->params || !p->counters || !p->e0 || !p->e1 || !p->s0 || !p->s1 ||
        !p->steps)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory",
                            p->label);
    return XG_OK;
}

/* Claims the entry `name` (*out: NULL when absent) and checks that it is
 * F32 with t's shape. */
static xg_status claim_like(load_plan *p, const char *name,
                            const xg_tensor *t, bool required,
                            const xg__st_entry **out)
{
    *out = NULL;
    int i = xg__safetensors_index(p->st, name);
    if (i < 0)
        return !required ? XG_OK
                         : xg_set_error(XG_ERR_NOT_FOUND, "%s: tensor '%s' "
                                        "is missing (the model has it)",
                                        p->label, name);
    const xg__st_entry *e = xg__safetensors_entry(p->st, i);
    p->used[i] = true;
    if (strcmp(e->dtype, "F32") != 0)
        return xg_set_error(XG_ERR_DTYPE, "%s: tensor '%s' is %s; the model "
                            "expects F32", p->label, name, e->dtype);
    bool same = e->ndim == xg_tensor_ndim(t);
    for (int d = 0; same && d < e->ndim; d++)
        same = e->shape[d] == xg_tensor_dim(t, d);
    if (!same) {
        char got[160], want[160];
        xg__shape_str(e->shape, e->ndim, got, sizeof got);
        xg__shape_str(xg_tensor_shape(t), xg_tensor_ndim(t), want,
                      sizeof want);
        return xg_set_error(XG_ERR_SHAPE, "%s: tensor '%s' has shape %s; the "
                            "model expects %s", p->label, name, got, want);
    }
    *out = e;
    return XG_OK;
}

/* Claims a batch counter: an I64 (or I32) scalar >= 0, as PyTorch saves
 * num_batches_tracked. */
static xg_status claim_counter(load_plan *p, const char *name, int64_t *out)
{
    int i = xg__safetensors_index(p->st, name);
    const xg__st_entry *e = xg__safetensors_entry(p->st, i);
    if (!e)
        return xg_set_error(XG_ERR_NOT_FOUND, "%s: tensor '%s' is missing "
                            "(the model has it)", p->label, name);
    p->used[i] = true;
    bool i64 = strcmp(e->dtype, "I64") == 0, i32 = strcmp(e->dtype, "I32") == 0;
    int64_t v = -1;
    if (i64 && e->ndim == 0)
        memcpy(&v, e->data, sizeof v);
    if (i32 && e->ndim == 0) {
        int32_t v32;
        memcpy(&v32, e->data, sizeof v32);
        v = v32;
    }
    if (v < 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s' must be an I64 "
                            "scalar >= 0", p->label, name);
    *out = v;
    return XG_OK;
}

static xg_status plan_params(load_plan *p, const xg_module *m)
{
    int n = state_count(m);
    for (int i = 0; i < n; i++) {
        const char *name = NULL;
        xg_tensor *t = state_at(m, i, &name);
        xg_status st = !t                ? xg_last_status()
                       : is_counter(name) ? claim_counter(p, name, &p->counters[i])
                                          : claim_like(p, name, t, true,
                                                       &p->params[i]);
        if (st != XG_OK)
            return st;
    }
    return XG_OK;
}

/* Claims optim.<name>.step: absent (*step 0), or a non-negative I64
 * scalar. */
static xg_status claim_step(load_plan *p, const char *name, int64_t *step)
{
    state_key k = key_of(name, "step");
    int i = xg__safetensors_index(p->st, k.s);
    const xg__st_entry *e = xg__safetensors_entry(p->st, i);
    *step = 0;
    if (!e)
        return XG_OK;
    p->used[i] = true;
    if (strcmp(e->dtype, "I64") == 0 && e->ndim == 0)
        memcpy(step, e->data, sizeof *step);
    if (strcmp(e->dtype, "I64") != 0 || e->ndim != 0 || *step < 0 ||
        (uint64_t)*step > MAX_COUNT)
        return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s' must be an I64 "
                            "scalar in [0, %" PRIu64 "]", p->label, k.s,
                            MAX_COUNT);
    return XG_OK;
}

/* Checks that an optimizer state entry (F32, claimed) holds finite values,
 * and no negative ones when `nonneg` (a second moment). */
static xg_status check_values(const load_plan *p, const xg__st_entry *e,
                              bool nonneg)
{
    for (size_t i = 0; e && i < e->bytes / sizeof(float); i++) {
        float v;
        memcpy(&v, e->data + i * sizeof v, sizeof v);
        if (!isfinite(v) || (nonneg && v < 0))
            return xg_set_error(XG_ERR_FORMAT, "%s: tensor '%s' holds %g at "
                                "index %zu; it must be finite%s", p->label,
                                e->name, (double)v, i,
                                nonneg ? " and >= 0" : "");
    }
    return XG_OK;
}

/* Claims the state of optimizer slot i and checks it hangs together. */
static xg_status plan_slot(load_plan *p, const xg_module *m,
                           const xg_optim *opt, int i)
{
    xg_optim_slot s = xg__optim_slot(opt, i);
    const char *name = param_name(m, s.param);
    if (!name)
        return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_load: the "
                            "optimizer's parameter %d is not a parameter of "
                            "the module", i);
    xg_status st = check_name_length(p->label, name);
    if (st != XG_OK)
        return st;
    const char *n0 = state_name(opt, 0), *n1 = state_name(opt, 1);
    state_key k0 = key_of(name, n0), k1 = key_of(name, n1 ? n1 : "");
    st = claim_step(p, name, &p->steps[i]);
    if (st == XG_OK)
        st = claim_like(p, k0.s, s.param, false, &p->e0[i]);
    if (st == XG_OK && n1)
        st = claim_like(p, k1.s, s.param, false, &p->e1[i]);
    if (st == XG_OK)
        st = check_values(p, p->e0[i], false);
    if (st == XG_OK)
        st = check_values(p, p->e1[i], true);
    if (st != XG_OK)
        return st;
    if (n1 && !p->e0[i] != !p->e1[i])
        return xg_set_error(XG_ERR_FORMAT, "%s: parameter '%s' has %s but "
                            "not %s", p->label, name, p->e0[i] ? n0 : n1,
                            p->e0[i] ? n1 : n0);
    if (p->e0[i] && p->steps[i] == 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: parameter '%s' has optimizer "
                            "state but no step count", p->label, name);
    return XG_OK;
}

static xg_status check_all_used(const load_plan *p, const char *expected)
{
    for (int i = 0; i < xg_safetensors_count(p->st); i++)
        if (!p->used[i])
            return xg_set_error(XG_ERR_FORMAT, "%s: unexpected tensor '%s' "
                                "(the model has no %s of that name)",
                                p->label, xg_safetensors_name(p->st, i),
                                expected);
    return XG_OK;
}

/* Builds the new optimizer state tensors on their parameters' devices. */
static xg_status make_state(load_plan *p, const xg_optim *opt)
{
    for (int i = 0; i < p->n_slots; i++) {
        xg_device *dev = xg_tensor_device(xg__optim_slot(opt, i).param);
        if (p->e0[i] && !(p->s0[i] = xg__safetensors_load(p->st, p->e0[i],
                                                          dev)))
            return xg_last_status();
        if (p->e1[i] && !(p->s1[i] = xg__safetensors_load(p->st, p->e1[i],
                                                          dev)))
            return xg_last_status();
    }
    return XG_OK;
}

static xg_status write_params(const load_plan *p, xg_module *m)
{
    int n = state_count(m);
    for (int i = 0; i < n; i++) {
        xg_tensor *t = state_at(m, i, NULL);
        float count = (float)p->counters[i];
        xg_status st = p->params[i]
                           ? xg_tensor_write(t, p->params[i]->data,
                                             p->params[i]->bytes)
                           : xg_tensor_write(t, &count, sizeof count);
        if (st != XG_OK)
            return st;
    }
    return XG_OK;
}

/* ==== Loading: modules ==================================================== */

xg_status xg__module_load_from(xg_module *m, const xg_safetensors *st)
{
    load_plan p;
    xg_status s = plan_init(&p, st, m, NULL);
    if (s == XG_OK)
        s = plan_params(&p, m);
    if (s == XG_OK)
        s = check_all_used(&p, "parameter");
    if (s == XG_OK)
        s = write_params(&p, m);
    plan_free(&p);
    return s;
}

xg_status xg_module_load(xg_module *m, const char *path)
{
    if (!m || !path)
        return xg_set_error(XG_ERR_INVALID_ARG, "module_load: NULL argument");
    xg_safetensors *st = NULL;
    xg_status s = xg_safetensors_open(path, &st);
    if (s == XG_OK)
        s = xg__module_load_from(m, st);
    xg_safetensors_close(st);
    return s;
}

/* ==== Loading: checkpoints ================================================ */

typedef struct checkpoint_meta {
    float lr;
    int64_t optimizer_steps;
    xg_train_state state;
} checkpoint_meta;

static xg_status meta_string(const xg_safetensors *st, const char *key,
                             const char **out)
{
    *out = xg_safetensors_metadata(st, key);
    return *out ? XG_OK
                : xg_set_error(XG_ERR_FORMAT, "%s: the checkpoint's metadata "
                               "has no '%s'", xg__safetensors_label(st), key);
}

/* A metadata value that must be a decimal integer in [0, max]. */
static xg_status meta_uint(const xg_safetensors *st, const char *key,
                           uint64_t max, uint64_t *out)
{
    const char *v = NULL;
    xg_status s = meta_string(st, key, &v);
    if (s != XG_OK)
        return s;
    char *end = (char *)v;
    errno = 0;
    if (v[0] >= '0' && v[0] <= '9')
        *out = strtoull(v, &end, 10);
    if (end == v || *end || errno == ERANGE || *out > max)
        return xg_set_error(XG_ERR_FORMAT, "%s: metadata '%s' is \"%s\", not "
                            "an integer in [0, %" PRIu64 "]",
                            xg__safetensors_label(st), key, v, max);
    return XG_OK;
}

static xg_status meta_lr(const xg_safetensors *st, float *lr)
{
    const char *v = NULL;
    xg_status s = meta_string(st, "lr", &v);
    if (s != XG_OK)
        return s;
    char *end = NULL;
    *lr = strtof(v, &end);
    if (end == v || *end || !isfinite(*lr) || *lr < 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: metadata 'lr' is \"%s\", not "
                            "a finite number >= 0",
                            xg__safetensors_label(st), v);
    return XG_OK;
}

/* The loss scaler's state, when the file has one (else loss_scale 0). */
static xg_status meta_loss_scale(const xg_safetensors *st, xg_train_state *s)
{
    const char *v = xg_safetensors_metadata(st, "loss_scale");
    if (!v)
        return XG_OK;
    char *end = NULL;
    float scale = strtof(v, &end);
    if (end == v || *end || !isfinite(scale) || !(scale > 0))
        return xg_set_error(XG_ERR_FORMAT, "%s: metadata 'loss_scale' is "
                            "\"%s\", not a finite number > 0",
                            xg__safetensors_label(st), v);
    uint64_t growth = 0;
    xg_status r = meta_uint(st, "loss_scale_growth", MAX_COUNT, &growth);
    if (r == XG_OK) {
        s->loss_scale = scale;
        s->loss_scale_growth = (int64_t)growth;
    }
    return r;
}

/* Checks that the file is a checkpoint for an optimizer of opt's kind and
 * reads its numbers. */
static xg_status read_meta(const xg_safetensors *st, const xg_optim *opt,
                           checkpoint_meta *meta)
{
    const char *label = xg__safetensors_label(st);
    const char *format = xg_safetensors_metadata(st, "format");
    if (!format || strcmp(format, CHECKPOINT_FORMAT) != 0)
        return xg_set_error(XG_ERR_FORMAT, "%s: not an xgrad checkpoint "
                            "(metadata 'format' is %s, expected '%s')", label,
                            format ? format : "missing", CHECKPOINT_FORMAT);
    const char *kind = NULL;
    xg_status s = meta_string(st, "optimizer", &kind);
    if (s == XG_OK && strcmp(kind, xg__optim_kind(opt)) != 0)
        s = xg_set_error(XG_ERR_INVALID_ARG, "%s: the checkpoint holds '%s' "
                         "optimizer state; the optimizer is '%s'", label,
                         kind, xg__optim_kind(opt));

    uint64_t v[5] = {0};
    const char *keys[5] = {"optimizer_steps", "epoch", "step", "rng_seed",
                           "rng_offset"};
    for (int i = 0; i < 5 && s == XG_OK; i++)
        s = meta_uint(st, keys[i], i < 3 ? MAX_COUNT : UINT64_MAX, &v[i]);
    if (s == XG_OK)
        s = meta_lr(st, &meta->lr);
    meta->optimizer_steps = (int64_t)v[0];
    meta->state = (xg_train_state){(int64_t)v[1], (int64_t)v[2], v[3], v[4]};
    if (s == XG_OK)
        s = meta_loss_scale(st, &meta->state);
    return s;
}

/* Checks the file against the module and the optimizer, and builds the new
 * optimizer state. Changes nothing. */
static xg_status plan_checkpoint(load_plan *p, const xg_module *m,
                                 const xg_optim *opt)
{
    xg_status s = plan_params(p, m);
    for (int i = 0; i < p->n_slots && s == XG_OK; i++)
        s = plan_slot(p, m, opt, i);
    if (s == XG_OK)
        s = check_all_used(p, "parameter or optimizer state");
    return s == XG_OK ? make_state(p, opt) : s;
}

xg_status xg__checkpoint_load_from(const xg_safetensors *st, xg_module *m,
                                   xg_optim *opt, xg_train_state *state)
{
    checkpoint_meta meta = {0};
    load_plan p;
    xg_status s = plan_init(&p, st, m, opt);
    if (s == XG_OK)
        s = read_meta(st, opt, &meta);
    if (s == XG_OK)
        s = plan_checkpoint(&p, m, opt);
    if (s == XG_OK)
        s = check_groups(st, m, opt);
    if (s == XG_OK)
        s = check_options(st, opt);
    if (s == XG_OK)
        s = write_params(&p, m);
    for (int i = 0; i < p.n_slots && s == XG_OK; i++) {
        xg__optim_set_slot(opt, i, p.s0[i], p.s1[i], p.steps[i]);
        p.s0[i] = p.s1[i] = NULL; /* the optimizer owns them now */
    }
    if (s == XG_OK) {
        xg__optim_set_steps(opt, meta.optimizer_steps);
        xg_optim_set_lr(opt, meta.lr);
        if (state)
            *state = meta.state;
    }
    plan_free(&p);
    return s;
}

xg_status xg_checkpoint_load(const char *path, xg_module *m, xg_optim *opt,
                             xg_train_state *state)
{
    if (!path || !m || !opt)
        return xg_set_error(XG_ERR_INVALID_ARG, "checkpoint_load: NULL "
                            "argument");
    xg_safetensors *st = NULL;
    xg_status s = xg_safetensors_open(path, &st);
    if (s == XG_OK)
        s = xg__checkpoint_load_from(st, m, opt, state);
    xg_safetensors_close(st);
    return s;
}
