/* Optimizer internals that checkpoints need (api/io). Not installed. */
#ifndef XGRAD_OPTIM_IMPL_H
#define XGRAD_OPTIM_IMPL_H

#include "core_impl.h"

/* Optimizer state, for checkpoints. Parameter i is the i-th tensor the
 * optimizer was made with. s0/s1 are exp_avg/exp_avg_sq (Adam, AdamW) or
 * momentum_buffer/NULL (SGD); NULL until the first step that updated the
 * parameter. */
typedef struct xg_optim_slot {
    xg_tensor *param, *s0, *s1;
    int64_t step;
    int group; /* its parameter group: 0 for those the optimizer was made
                * with, then one per xg_optim_add_group */
} xg_optim_slot;

const char *xg__optim_kind(const xg_optim *opt); /* "sgd", "adam", "adamw" */

/* The optimizer's options other than the learning rate, as one canonical
 * line ("beta1=0.9 beta2=0.999 eps=1e-08 weight_decay=0"; SGD: momentum,
 * dampening, weight_decay, nesterov): what a checkpoint records and a
 * resume must match. */
void xg__optim_options_text(const xg_optim *opt, char *buf, size_t cap);
int xg__optim_count(const xg_optim *opt);
xg_optim_slot xg__optim_slot(const xg_optim *opt, int i);
/* Replaces slot i's state; takes ownership of s0 and s1 (either may be
 * NULL), releasing the old ones. */
void xg__optim_set_slot(xg_optim *opt, int i, xg_tensor *s0, xg_tensor *s1,
                        int64_t step);
void xg__optim_set_steps(xg_optim *opt, int64_t steps);
/* Parameter groups: how many, and group g's weight decay. */
int xg__optim_group_count(const xg_optim *opt);
float xg__optim_group_weight_decay(const xg_optim *opt, int g);

#endif
