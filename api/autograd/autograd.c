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
    if (requires_grad && !xg_dtype_is_float(t->dtype))
        return xg_set_error(XG_ERR_DTYPE,
                            "set_requires_grad: only float tensors (f32, "
                            "bf16, f16) have gradients");
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

/* Takes one reference on a gradient that a backward rule returned: out of
 * the rule's scope when the rule made it, else a new one (the rule passed
 * grad_out or another tensor it did not make). */
static void own_grad(xg_tensor *g, const xg_scope *rule_scope)
{
    if (g->scope == rule_scope)
        xg_tensor_keep(g);
    else
        xg__tensor_retain(g);
}

/* Adds g (one reference, which this takes) into t's pending gradient. */
static xg_status accumulate(xg_tensor *t, xg_tensor *g)
{
    if (!t->bw_grad) {
        t->bw_grad = g;
        return XG_OK;
    }
    xg_tensor *sum = xg_tensor_keep(xg_add(t->bw_grad, g));
    xg__tensor_release(g);
    if (!sum)
        return xg_last_status();
    xg__tensor_release(t->bw_grad);
    t->bw_grad = sum;
    return XG_OK;
}

/* Runs t's backward rule in a scope of its own, so that what the rule makes
 * besides the inputs' gradients is freed as soon as it returns, and adds
 * those gradients into the inputs' pending ones. */
static xg_status run_node(xg_tensor *t)
{
    xg_node *node = t->node;
    xg_tensor *few[8] = {0}, **grads = few;
    if (node->n_inputs > 8 &&
        !(grads = calloc((size_t)node->n_inputs, sizeof *grads)))
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "backward: out of host "
                            "memory at %s", node->name);
    xg_scope *scope = xg_scope_begin();
    xg_status st = scope ? node->backward(node, t->bw_grad, grads)
                         : XG_ERR_OUT_OF_MEMORY;
    /* A gradient in another float dtype than its input's (a rule mixing
     * dtypes promotes to f32) is cast to the input's. */
    for (int i = 0; st == XG_OK && i < node->n_inputs; i++) {
        xg_tensor *in = node->inputs[i];
        if (grads[i] && grads[i]->dtype != in->dtype &&
            xg_dtype_is_float(in->dtype) &&
            !(grads[i] = xg_to_dtype(grads[i], in->dtype)))
            st = xg_last_status();
    }
    for (int i = 0; i < node->n_inputs; i++) {
        if (grads[i] && st == XG_OK && node->inputs[i]->requires_grad)
            own_grad(grads[i], scope);
        else
            grads[i] = NULL;
    }
    xg_scope_end(scope);
    for (int i = 0; i < node->n_inputs; i++) {
        if (!grads[i])
            continue;
        if (st == XG_OK)
            st = accumulate(node->inputs[i], grads[i]);
        else
            xg__tensor_release(grads[i]);
    }
    if (grads != few)
        free(grads);
    return st;
}

/* Moves a leaf's pending gradient (its reference) into its lasting .grad. */
static xg_status store_leaf_grad(xg_tensor *t)
{
    xg_tensor *g = t->bw_grad;
    t->bw_grad = NULL;
    if (!xg__is_dense(g)) { /* a view's gradient */
        xg_tensor *c = xg_tensor_keep(xg_contiguous(g));
        xg__tensor_release(g);
        if (!(g = c))
            return xg_last_status();
    }
    if (t->grad) {
        xg_tensor *sum = xg_tensor_keep(xg_add(t->grad, g));
        xg__tensor_release(g);
        if (!sum)
            return xg_last_status();
        xg__tensor_release(t->grad);
        g = sum;
    }
    t->grad = g;
    return XG_OK;
}

/* Releases the node that made t and what it holds; t keeps requires_grad
 * and points to xg__graph_freed, so a later backward through it fails. */
static void free_node(xg_tensor *t)
{
    xg_node *node = t->node;
    t->node = &xg__graph_freed;
    xg_tensor **work = NULL;
    int n = 0, cap = 0;
    xg__node_free(node, &work, &n, &cap);
    while (n > 0)
        xg__tensor_release(work[--n]);
    free(work);
}

static xg_status check_loss(const xg_tensor *loss)
{
    if (!xg__check_float("backward", 0, loss))
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

/* The walk: every tensor of the graph is held (one reference) from
 * topo_order until its turn, so that freeing the nodes after it cannot free
 * it early. At its turn its pending gradient (one reference) goes to its
 * node's rule or into its .grad, and then, unless the graph is kept, its
 * node goes too: a saved tensor or input lives exactly as long as a node
 * still to run holds it (or its owner, a scope or the caller, does). */
xg_status xg_backward_hooked(xg_tensor *loss, bool retain_graph,
                             xg_grad_hook hook, void *ctx)
{
    xg_status st = check_loss(loss);
    if (st != XG_OK)
        return st;
    xg_tensor **order = NULL;
    int n = 0;
    st = topo_order(loss, &order, &n);
    if (st != XG_OK) {
        for (int i = 0; i < n; i++)
            order[i]->bw_pending = 0;
        free(order);
        return st;
    }
    for (int i = 0; i < n; i++)
        xg__tensor_retain(order[i]);
    bool was_enabled = xg_set_grad_enabled(false);
    loss->bw_grad = xg_tensor_keep(xg__fill_dtype(loss->storage->dev,
                                                  loss->dtype, loss->shape,
                                                  loss->ndim, 1.0f,
                                                  "backward"));
    if (!loss->bw_grad)
        st = xg_last_status();
    for (int i = n - 1; i >= 0; i--) {
        xg_tensor *t = order[i];
        if (st == XG_OK && t->bw_grad) {
            bool leaf = !t->node;
            if (!leaf)
                t->node->frees_after = !retain_graph;
            st = leaf ? store_leaf_grad(t) : run_node(t);
            if (st == XG_OK && leaf && hook) /* its gradient is complete */
                st = hook(ctx, t);
        }
        if (t->bw_grad) {
            xg__tensor_release(t->bw_grad);
            t->bw_grad = NULL;
        }
        t->bw_pending = 0;
        if (st == XG_OK && !retain_graph && t->node)
            free_node(t);
        xg__tensor_release(t);
    }
    xg_set_grad_enabled(was_enabled);
    free(order);
    return st;
}

xg_status xg_backward(xg_tensor *loss)
{
    return xg_backward_hooked(loss, true, NULL, NULL);
}

xg_status xg_backward_ex(xg_tensor *loss, bool retain_graph)
{
    return xg_backward_hooked(loss, retain_graph, NULL, NULL);
}
