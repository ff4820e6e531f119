/* The autograd graph as ops record it: grad mode, nodes and their release.
 * The engine that walks the graph (xg_backward) is in api/autograd. */
#include <stddef.h>
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

/* Bytes from the start of a node to its arguments and its tensor lists. */
static size_t round_up(size_t n, size_t to)
{
    return (n + to - 1) / to * to;
}

static xg_node *node_alloc(const xg_record *r, int n_saved)
{
    size_t args_at = round_up(sizeof(xg_node), _Alignof(max_align_t));
    size_t lists_at = round_up(args_at + r->args_size, _Alignof(xg_tensor *));
    size_t n_lists = (size_t)r->n_inputs + (size_t)n_saved;
    char *mem = calloc(1, lists_at + n_lists * sizeof(xg_tensor *));
    if (!mem)
        return NULL;
    xg_node *node = (xg_node *)mem;
    node->inputs = (xg_tensor **)(mem + lists_at);
    node->saved = node->inputs + r->n_inputs;
    if (r->args_size) {
        memcpy(mem + args_at, r->args, r->args_size);
        node->args = mem + args_at;
    }
    return node;
}

xg_tensor *xg__record(xg_tensor *out, const xg_record *r)
{
    if (!out || !xg__needs_grad(r->inputs, r->n_inputs))
        return out;
    const char *name = r->name ? r->name : xg_op_table[r->op].name;
    xg_tensor *alias = NULL;
    if (r->save_output &&
        !(alias = xg_tensor_keep(xg__tensor_alias(out, out->shape,
                                                  out->ndim)))) {
        xg_tensor_free(out);
        return NULL;
    }
    xg_node *node = node_alloc(r, r->n_saved + (alias != NULL));
    if (!node) {
        xg_tensor_free(alias);
        xg_tensor_free(out);
        xg_set_error(XG_ERR_OUT_OF_MEMORY, "%s: out of host memory", name);
        return NULL;
    }
    node->name = name;
    node->op = r->op;
    node->backward = r->backward;
    node->n_inputs = r->n_inputs;
    node->values_unused = r->values_unused;
    for (int i = 0; i < r->n_inputs; i++) {
        xg__tensor_retain(node->inputs[i] = r->inputs[i]);
        if (i < 32 && (r->values_unused >> i & 1))
            r->inputs[i]->edge_refs++;
    }
    for (int i = 0; i < r->n_saved; i++)
        xg__tensor_retain(node->saved[node->n_saved++] = r->saved[i]);
    if (alias)
        node->saved[node->n_saved++] = alias; /* its only reference */
    out->node = node;
    out->requires_grad = true;
    return out;
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

static xg_status graph_freed_backward(xg_node *node, xg_tensor *grad_out,
                                      xg_tensor **grads_in)
{
    (void)node, (void)grad_out, (void)grads_in;
    return xg_set_error(XG_ERR_STATE, "backward: the graph was freed by an "
                        "earlier xg_backward_ex(loss, false); keep it "
                        "(xg_backward) to back-propagate through it again");
}

void xg__node_drop_saved(xg_node *node, int k)
{
    if (node->frees_after && node->saved[k]) {
        xg__tensor_release(node->saved[k]);
        node->saved[k] = NULL;
    }
}

xg_node xg__graph_freed = {.name = "a freed graph", .op = XG_OP_none,
                           .backward = graph_freed_backward};

void xg__node_free(xg_node *node, xg_tensor ***pending, int *n, int *cap)
{
    if (node == &xg__graph_freed)
        return;
    /* Hand each reference to the caller's release worklist; if that list
     * cannot grow, release directly (recursion, but only on host OOM). */
    for (int i = 0; i < node->n_inputs + node->n_saved; i++) {
        xg_tensor *t = node->inputs[i]; /* saved follows inputs */
        if (!t) /* a saved tensor dropped early (xg__node_drop_saved) */
            continue;
        if (i < node->n_inputs && i < 32 && (node->values_unused >> i & 1))
            t->edge_refs--;
        if (!xg__tensor_list_push(pending, n, cap, t))
            xg__tensor_release(t);
    }
    free(node);
}
