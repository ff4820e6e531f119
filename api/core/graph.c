/* The autograd graph as ops record it: grad mode, nodes and their release.
 * The engine that walks the graph (xg_backward) is in api/autograd. */
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

static _Thread_local bool grad_disabled;

bool xg_set_grad_enabled(bool enabled)
{
    bool was = !grad_disabled;
    grad_disabled = !enabled;
    return was;
}

bool xg_grad_enabled(void)
{
    return !grad_disabled;
}

bool xg__needs_grad(xg_tensor *const *inputs, int n)
{
    if (grad_disabled)
        return false;
    for (int i = 0; i < n; i++)
        if (inputs[i] && inputs[i]->requires_grad)
            return true;
    return false;
}

xg_node *xg__record(xg_tensor *out, const char *name, xg_backward_fn bw,
                    xg_tensor *const *inputs, int n)
{
    xg_node *node = calloc(1, sizeof *node);
    if (!node) {
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", name);
        return NULL;
    }
    node->name = name;
    node->backward = bw;
    node->n_inputs = n;
    for (int i = 0; i < n; i++) {
        node->inputs[i] = inputs[i];
        xg__tensor_retain(inputs[i]);
    }
    out->node = node;
    out->requires_grad = true;
    return node;
}

bool xg__tensor_list_push(xg_tensor ***list, int *n, int *cap, xg_tensor *t)
{
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 32;
        xg_tensor **l = realloc(*list, (size_t)c * sizeof *l);
        if (!l)
            return false;
        *list = l;
        *cap = c;
    }
    (*list)[(*n)++] = t;
    return true;
}

void xg__node_free(xg_node *node, xg_tensor ***pending, int *n, int *cap)
{
    /* Hand each reference to the caller's release worklist; if that list
     * cannot grow, release directly (recursion, but only on host OOM). */
    xg_tensor *held[XG_NODE_MAX_INPUTS + 1];
    int k = 0;
    for (int i = 0; i < node->n_inputs; i++)
        held[k++] = node->inputs[i];
    if (node->saved)
        held[k++] = node->saved;
    for (int i = 0; i < k; i++)
        if (!xg__tensor_list_push(pending, n, cap, held[i]))
            xg__tensor_release(held[i]);
    free(node);
}
