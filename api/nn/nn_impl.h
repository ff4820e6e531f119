/* Internals of the module system (api/nn/nn.c) shared with LoRA
 * (api/nn/lora.c, api/io/peft.c). Not installed.
 *
 * LoRA's hook: a module may carry a LoRA record (xg__lora). When it does,
 * xg_module_forward adds the low-rank branch that api/nn/lora.c computes
 * (xg__lora_branch) to the output of the module's own forward, so the
 * module's class, its parameters and its name stay as they were; the
 * adapter's matrices are ordinary child modules ("lora_A", "lora_B"). A
 * root that xg_lora_apply was called on carries an xg__lora_root: the
 * configuration, and every parameter's requires_grad before the apply. */
#ifndef XGRAD_NN_IMPL_H
#define XGRAD_NN_IMPL_H

#include "core_impl.h"

/* A LoRA'd layer: y = base(x) + scale * lora_B(lora_A(dropout(x))). */
typedef struct xg__lora {
    float scale;   /* alpha / r */
    float dropout; /* on the branch's input, in training mode only */
    int r;
    bool conv1d;   /* the base is a Conv1D (weight [in, out]), else Linear */
} xg__lora;

/* The record on the module xg_lora_apply was called on. */
typedef struct xg__lora_root {
    int r;
    float alpha, dropout;
    int n_targets;
    char **targets;        /* one allocation each */
    int n_saved;
    xg_tensor **saved;     /* every parameter of the tree at apply time */
    bool *saved_grad;      /* ... and its requires_grad then */
} xg__lora_root;

/* m's LoRA record (NULL if none); borrowed. */
const xg__lora *xg__module_lora(const xg_module *m);

/* Gives m a copy of *l, or removes its record for l NULL. False (with the
 * error set) on host OOM, m unchanged. */
bool xg__module_set_lora(xg_module *m, const xg__lora *l);

/* The root record (NULL if none); borrowed. */
xg__lora_root *xg__module_lora_root(const xg_module *m);

/* Makes `r` m's root record (m takes ownership; frees the old one), or
 * frees it for r NULL. */
void xg__module_set_lora_root(xg_module *m, xg__lora_root *r);

/* Frees a root record (NULL ignored). api/nn/lora.c. */
void xg__lora_root_free(xg__lora_root *r);

/* y + the LoRA branch of module m on input x (inside xg_module_forward's
 * scope). api/nn/lora.c. */
xg_tensor *xg__lora_branch(xg_module *m, xg_tensor *x, xg_tensor *y);

/* Removes m's child `name` and frees it with its subtree. XG_ERR_NOT_FOUND
 * when m has no such child. */
xg_status xg__module_remove_child(xg_module *m, const char *name);

/* The root of m's tree (m when it has no parent). */
xg_module *xg__module_root(const xg_module *m);

/* A Linear without bias whose weight ([out, in], f32, 2-D) is `weight`
 * (ownership taken, also on error). */
xg_module *xg__linear_with(xg_tensor *weight);

/* A layer LoRA applies to (or is applied to), found by xg__lora_collect. */
typedef struct xg__lora_ref {
    xg_module *m;
    char *path;       /* dotted path below the root; owned */
    int64_t in, out;  /* the layer's features */
    bool conv1d;
} xg__lora_ref;

/* The layers below root, in xg_module_param order: those the targets
 * select (targets non-NULL; checked as xg_lora_apply does, except for
 * LoRA being applied already, and with a target's own errors) or, for
 * targets NULL, those that carry LoRA. *out gets an array that the caller
 * frees with xg__lora_refs_free; `who` names the caller in errors. */
xg_status xg__lora_collect(xg_module *root, const char *const *targets,
                           int n_targets, const char *who,
                           xg__lora_ref **out, int *n_out);
void xg__lora_refs_free(xg__lora_ref *refs, int n);

/* xg_lora_apply with given initial values: a[i] and b[i] ([r, in] and
 * [out, r], f32 leaves, owned: taken also on error) for the i-th layer of
 * xg__lora_collect's order, n of them; a and b NULL: drawn as
 * xg_lora_apply does. */
xg_status xg__lora_apply_with(xg_module *root, const xg_lora_config *cfg,
                              xg_tensor **a, xg_tensor **b, int n,
                              const char *who);

#endif
