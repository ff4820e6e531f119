/* A model defined outside the library, through the public API only: user
 * module classes (a residual MLP block and the network around it) built
 * from containers and built-in layers. Shared by tests/test_modules.c and
 * tests/modules_export.c, whose files tests/modules_torch.py checks
 * against the same network written with torch.nn.
 *
 *   Net                       buffer in_mean [RM_IN], parameter
 *   |                         logit_scale [1] (registered last, listed
 *   |                         first, as torch's named_parameters does)
 *   +- transformer            ModuleDict
 *   |  +- inp                 Linear(RM_IN, RM_HID)
 *   |  +- h                   ModuleList of two ResidualBlock(RM_HID)
 *   +- head                   Sequential {act: ReLU, out: Linear(RM_HID,
 *                             RM_OUT)}
 *
 *   ResidualBlock(x)  = x + fc2(relu(fc1(x))), fc1: Linear(H, 2H),
 *                       fc2: Linear(2H, H)
 *   Net(x)            = head(h.1(h.0(inp(x - in_mean)))) * logit_scale
 *
 * No Criterion here: the export program has a main of its own. */
#ifndef XGRAD_TEST_RESIDUAL_MODEL_H
#define XGRAD_TEST_RESIDUAL_MODEL_H

#include <stdint.h>
#include <stdlib.h>

#include "xgrad.h"

#define RM_IN 4
#define RM_HID 8
#define RM_OUT 3
#define RM_BATCH 16

/* ---- ResidualBlock ------------------------------------------------------- */

/* What the block saw: forwards in each mode and calls of its hook. */
typedef struct rm_block_state {
    int train_forwards, eval_forwards;
    int hook_calls;
    bool hook_training; /* the flag the hook last saw */
} rm_block_state;

static inline xg_tensor *rm_block_forward(xg_module *self, xg_tensor *x)
{
    rm_block_state *s = xg_module_state(self);
    if (xg_module_training(self))
        s->train_forwards++;
    else
        s->eval_forwards++;
    xg_tensor *h = xg_relu(xg_module_forward(xg_module_child(self, "fc1"),
                                             x));
    return xg_add(x, xg_module_forward(xg_module_child(self, "fc2"), h));
}

static inline void rm_block_set_training(xg_module *self, bool training)
{
    rm_block_state *s = xg_module_state(self);
    s->hook_calls++;
    s->hook_training = training;
}

static const xg_module_class rm_block_class = {
    .name = "ResidualBlock",
    .forward = rm_block_forward,
    .free_state = free,
    .set_training = rm_block_set_training,
};

static inline xg_module *rm_block_new(int64_t h)
{
    rm_block_state *s = calloc(1, sizeof *s);
    if (!s) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "rm_block_new: out of memory");
        return NULL;
    }
    xg_module *m = xg_module_new(&rm_block_class, s); /* owns s */
    if (!m || xg_module_add_child(m, "fc1", xg_linear(h, 2 * h, true)) ||
        xg_module_add_child(m, "fc2", xg_linear(2 * h, h, true))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- Net ------------------------------------------------------------------- */

static inline xg_tensor *rm_net_forward(xg_module *self, xg_tensor *x)
{
    xg_module *tr = xg_module_child(self, "transformer");
    xg_module *blocks = xg_module_child(self, "transformer.h");
    xg_tensor *centred = xg_sub(x, xg_module_find_buffer(self, "in_mean"));
    xg_tensor *h = xg_module_forward(xg_module_child(tr, "inp"), centred);
    for (int i = 0; h && i < xg_module_list_len(blocks); i++)
        h = xg_module_forward(xg_module_list_get(blocks, i), h);
    xg_tensor *logits = xg_module_forward(xg_module_child(self, "head"), h);
    return xg_mul(logits, xg_module_find_param(self, "logit_scale"));
}

static const xg_module_class rm_net_class = {.name = "Net",
                                             .forward = rm_net_forward};

static inline xg_module *rm_transformer_new(void)
{
    xg_module *blocks = xg_module_list();
    xg_module *d = xg_module_dict();
    if (!blocks || !d || xg_module_list_append(blocks, rm_block_new(RM_HID)) ||
        xg_module_list_append(blocks, rm_block_new(RM_HID)) ||
        xg_module_dict_add(d, "inp", xg_linear(RM_IN, RM_HID, true))) {
        xg_module_free(blocks);
        xg_module_free(d);
        return NULL;
    }
    if (xg_module_dict_add(d, "h", blocks)) { /* frees blocks on error */
        xg_module_free(d);
        return NULL;
    }
    return d;
}

static inline xg_module *rm_head_new(void)
{
    xg_module *s = xg_sequential();
    if (!s || xg_sequential_add(s, "act", xg_relu_layer()) ||
        xg_sequential_add(s, "out", xg_linear(RM_HID, RM_OUT, true))) {
        xg_module_free(s);
        return NULL;
    }
    return s;
}

/* A new Net with parameters drawn from the generator seeded with `seed`. */
static inline xg_module *rm_net_new(uint64_t seed)
{
    xg_manual_seed(seed);
    xg_module *m = xg_module_new(&rm_net_class, NULL);
    if (!m ||
        xg_module_add_buffer(m, "in_mean", xg_zeros(XG_SHAPE(RM_IN))) ||
        xg_module_add_child(m, "transformer", rm_transformer_new()) ||
        xg_module_add_child(m, "head", rm_head_new()) ||
        xg_module_add_param(m, "logit_scale", xg_ones(XG_SHAPE(1)))) {
        xg_module_free(m);
        return NULL;
    }
    return m;
}

/* ---- toy data and training ------------------------------------------------- */

/* splitmix64 uniform in [-1, 1). */
static inline float rm_uniform(uint64_t *s)
{
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)((double)(z >> 11) * 0x1.0p-52 - 1.0);
}

/* RM_BATCH inputs x [RM_BATCH, RM_IN] and their classes: the argmax of a
 * fixed random linear map of x. */
static inline void rm_data(uint64_t seed, float *x, int32_t *labels)
{
    uint64_t s = seed;
    float w[RM_OUT][RM_IN];
    for (int o = 0; o < RM_OUT; o++)
        for (int i = 0; i < RM_IN; i++)
            w[o][i] = rm_uniform(&s);
    for (int n = 0; n < RM_BATCH; n++) {
        int best = 0;
        float best_v = -1e30f;
        for (int i = 0; i < RM_IN; i++)
            x[n * RM_IN + i] = rm_uniform(&s) * 2.0f;
        for (int o = 0; o < RM_OUT; o++) {
            float v = 0.0f;
            for (int i = 0; i < RM_IN; i++)
                v += w[o][i] * x[n * RM_IN + i];
            if (v > best_v) {
                best_v = v;
                best = o;
            }
        }
        labels[n] = best;
    }
}

/* One optimizer step on cross_entropy(m(x), y); *loss gets the loss
 * before the step. */
static inline xg_status rm_train_step(xg_module *m, xg_optim *opt,
                                      xg_tensor *x, xg_tensor *y, float *loss)
{
    xg_scope *scope = xg_scope_begin();
    xg_optim_zero_grad(opt);
    xg_tensor *l = xg_cross_entropy(xg_module_forward(m, x), y);
    xg_status st = l ? xg_backward(l) : xg_last_status();
    if (st == XG_OK)
        st = xg_tensor_item(l, loss);
    if (st == XG_OK)
        st = xg_optim_step(opt);
    xg_scope_end(scope);
    return st;
}

#endif
