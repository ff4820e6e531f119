/* Autograd: leaves and their gradients, detach, and xg_backward, which walks
 * the graph that ops record (api/core/graph.c) from the loss back to the leaves. */
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

/* ---- leaves and gradients --------------------------------------------- */

xg_status xg_tensor_set_requires_grad(xg_tensor *t, bool requires_grad)
{
    if (!t)
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "set_requires_grad: tensor is NULL");
    if (t->node)
        return xg_set_error(XG_ERR_INVALID_ARG, "set_requires_grad: only "
                            "leaf tensors can change it (this one was made "
                            "by %s)", t->node->name);
    if (requires_grad && t->dtype != XG_F32)
        return xg_set_error(XG_ERR_DTYPE,
                            "set_requires_grad: only f32 tensors have "
                            "gradients");
    t->requires_grad = requires_grad;
    return XG_OK;
}

bool xg_tensor_requires_grad(const xg_tensor *t)
{
    return t && t->requires_grad;
}

xg_tensor *xg_tensor_grad(const xg_tensor *t)
{
    return t ? t->grad : NULL;
}

void xg_tensor_zero_grad(xg_tensor *t)
{
    if (t && t->grad) {
        xg__tensor_release(t->grad);
        t->grad = NULL;
    }
}

xg_tensor *xg_detach(xg_tensor *t)
{
    if (!xg__check_arg("detach", 0, t, t ? t->dtype : XG_F32))
        return NULL;
    return xg__tensor_alias(t, t->shape, t->ndim);
}

/* ---- backward ----------------------------------------------------------- */

/* Lists the graph below `root` in post-order (inputs before their users),
 * visiting only tensors that require grad: a depth-first search with an
 * explicit stack. bw_pending is 0 for unvisited tensors, 1 + the index of
 * the next input to visit while a tensor is on the stack, and -1 after. */
static xg_status topo_order(xg_tensor *root, xg_tensor ***order, int *n)
{
    int cap = 0, stack_n = 0, stack_cap = 0;
    xg_tensor **stack = NULL;
    bool ok = xg__tensor_list_push(&stack, &stack_n, &stack_cap, root);
    root->bw_pending = ok;
    while (ok && stack_n > 0) {
        xg_tensor *t = stack[stack_n - 1];
        int next = t->bw_pending - 1;
        if (t->node && next < t->node->n_inputs) {
            xg_tensor *in = t->node->inputs[next];
            t->bw_pending++;
            if (in->requires_grad && in->bw_pending == 0) {
                ok = xg__tensor_list_push(&stack, &stack_n, &stack_cap, in);
                in->bw_pending = ok;
            }
            continue;
        }
        stack_n--;
        ok = xg__tensor_list_push(order, n, &cap, t);
        t->bw_pending = ok ? -1 : 0;
    }
    while (stack_n > 0) /* left by a failure: unmark */
        stack[--stack_n]->bw_pending = 0;
    free(stack);
    if (!ok)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "backward: out of host memory");
    return XG_OK;
}

/* Adds g into t's pending gradient. */
static xg_status accumulate(xg_tensor *t, xg_tensor *g)
{
    xg_tensor *sum = t->bw_grad ? xg_add(t->bw_grad, g) : g;
    if (!sum)
        return xg_last_status();
    t->bw_grad = sum;
    return XG_OK;
}

static xg_status run_node(xg_tensor *t)
{
    xg_node *node = t->node;
    xg_tensor *few[8] = {0}, **grads = few;
    if (node->n_inputs > 8 &&
        !(grads = calloc((size_t)node->n_inputs, sizeof *grads)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "backward: out of host "
                            "memory at %s", node->name);
    xg_status st = node->backward(node, t->bw_grad, grads);
    for (int i = 0; i < node->n_inputs && st == XG_OK; i++)
        if (grads[i] && node->inputs[i]->requires_grad)
            st = accumulate(node->inputs[i], grads[i]);
    if (grads != few)
        free(grads);
    return st;
}

/* Moves a leaf's pending gradient into its lasting .grad. */
static xg_status store_leaf_grad(xg_tensor *t)
{
    xg_tensor *g = t->bw_grad;
    if (!xg__is_dense(g) && !(g = xg_contiguous(g))) /* a view's gradient */
        return xg_last_status();
    if (t->grad) {
        g = xg_add(t->grad, g);
        if (!g)
            return xg_last_status();
        xg__tensor_release(t->grad);
    }
    xg__tensor_retain(g); /* survives the backward scope */
    t->grad = g;
    return XG_OK;
}

static xg_status check_loss(const xg_tensor *loss)
{
    if (!xg__check_arg("backward", 0, loss, XG_F32))
        return xg_last_status() ? xg_last_status() : XG_ERR_INVALID_ARG;
    if (loss->numel != 1)
        return xg_set_error(XG_ERR_INVALID_ARG, "backward: the loss must "
                            "have one element, it has %lld",
                            (long long)loss->numel);
    if (!loss->requires_grad)
        return xg_set_error(XG_ERR_INVALID_ARG, "backward: the loss does not "
                            "require grad (no parameter in its graph, or made "
                            "with grad recording off)");
    return XG_OK;
}

xg_status xg_backward(xg_tensor *loss)
{
    return xg_backward_hooked(loss, NULL, NULL);
}

xg_status xg_backward_hooked(xg_tensor *loss, xg_grad_hook hook, void *ctx)
{
    xg_status st = check_loss(loss);
    if (st != XG_OK)
        return st;
    xg_tensor **order = NULL;
    int n = 0;
    st = topo_order(loss, &order, &n);
    xg_scope *scope = xg_scope_begin();
    bool was_enabled = xg_set_grad_enabled(false);
    if (st == XG_OK && !scope)
        st = XG_ERR_OUT_OF_MEMORY;
    if (st == XG_OK) {
        loss->bw_grad = xg__fill(loss->storage->dev, loss->shape, loss->ndim,
                                 1.0f, "backward");
        if (!loss->bw_grad)
            st = xg_last_status();
    }
    for (int i = n - 1; i >= 0 && st == XG_OK; i--) {
        xg_tensor *t = order[i];
        if (!t->bw_grad)
            continue;
        st = t->node ? run_node(t) : store_leaf_grad(t);
        if (st == XG_OK && !t->node && hook) /* its gradient is complete */
            st = hook(ctx, t);
    }
    for (int i = 0; i < n; i++) {
        order[i]->bw_grad = NULL;
        order[i]->bw_pending = 0;
    }
    xg_set_grad_enabled(was_enabled);
    xg_scope_end(scope);
    free(order);
    return st;
}
