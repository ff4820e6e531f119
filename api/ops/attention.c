/* Fused scaled dot-product attention (the ATTENTION family): the forward
 * kernel writes the output and each query's log-sum-exp; the backward rule
 * runs the two backward kernels (dq and delta over the query rows, then dk
 * and dv over the key rows), which recompute the attention weights from
 * the saved log-sum-exp. Nothing of size Tq x Tk is ever allocated.
 *
 * Dropout: the mask is a function of (seed, offset) drawn here from the
 * thread's generator (Tq * Tk elements per head, as rand_uniform would use
 * them); the node keeps both, so the backward kernels draw the same mask. */
#include <math.h>

#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"

xg_attention_params xg_attention_defaults(void)
{
    return (xg_attention_params){.causal = true};
}

static xg_status launch(xg_device *dev, xg_kernel_call *call, xg_tensor **outs,
                        int n_out)
{
    xg_status st = XG_OK;
    for (int i = 0; i < n_out; i++)
        if (!outs[i])
            st = xg_last_status();
    if (st == XG_OK)
        st = xg__launch(dev, call);
    if (st != XG_OK)
        for (int i = 0; i < n_out; i++) {
            xg_tensor_free(outs[i]);
            outs[i] = NULL;
        }
    return st;
}

/* d(out) -> dq, dk, dv. inputs: q, k, v; saved: lse, then out (the node's
 * own output); args: the forward's xg_attention_args. */
static xg_status bw_attention(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const xg_attention_args *a = n->args;
    xg_tensor *q = n->inputs[0], *k = n->inputs[1], *v = n->inputs[2];
    xg_tensor *lse = n->saved[0], *out = n->saved[1];
    xg_device *dev = q->storage->dev;
    xg_tensor *qo[2] = {
        xg__tensor_new(dev, q->dtype, q->shape, 4, "attention_backward"),
        xg__tensor_new(dev, XG_F32, lse->shape, lse->ndim,
                       "attention_backward")};
    xg_kernel_call cq = {.op = XG_OP_attention_backward_q,
                         .in = {xg__arg(q), xg__arg(k), xg__arg(v),
                                xg__arg(out), xg__arg(g), xg__arg(lse)}};
    if (qo[0] && qo[1]) {
        cq.out[0] = xg__arg(qo[0]);
        cq.out[1] = xg__arg(qo[1]);
    }
    cq.p.attention = *a;
    xg_status st = launch(dev, &cq, qo, 2);
    if (st != XG_OK)
        return st;
    xg_tensor *kvo[2] = {
        xg__tensor_new(dev, q->dtype, k->shape, 4, "attention_backward"),
        xg__tensor_new(dev, q->dtype, v->shape, 4, "attention_backward")};
    xg_kernel_call ckv = {.op = XG_OP_attention_backward_kv,
                          .in = {xg__arg(q), xg__arg(k), xg__arg(v),
                                 xg__arg(g), xg__arg(lse), xg__arg(qo[1])}};
    if (kvo[0] && kvo[1]) {
        ckv.out[0] = xg__arg(kvo[0]);
        ckv.out[1] = xg__arg(kvo[1]);
    }
    ckv.p.attention = *a;
    st = launch(dev, &ckv, kvo, 2);
    gi[0] = qo[0];
    gi[1] = kvo[0];
    gi[2] = kvo[1];
    return st;
}

/* q [B, H, Tq, D], k and v [B, H, Tk, D]. */
static bool check_shapes(const xg_tensor *q, const xg_tensor *k,
                         const xg_tensor *v)
{
    bool ok = q->ndim == 4 && k->ndim == 4 && v->ndim == 4;
    for (int a = 0; ok && a < 4; a++)
        ok = k->shape[a] == v->shape[a] &&
             (a == 2 || q->shape[a] == k->shape[a]);
    if (ok)
        return true;
    char qs[160], ks[160], vs[160];
    xg__shape_str(q->shape, q->ndim, qs, sizeof qs);
    xg__shape_str(k->shape, k->ndim, ks, sizeof ks);
    xg__shape_str(v->shape, v->ndim, vs, sizeof vs);
    xg_set_error(XG_ERR_SHAPE, "attention: needs q [B, H, Tq, D] and k, v "
                 "[B, H, Tk, D] of the same B, H and D, got q %s, k %s, "
                 "v %s", qs, ks, vs);
    return false;
}

static bool check_args(xg_tensor *q, xg_tensor *k, xg_tensor *v,
                       const xg_attention_params *p)
{
    const char *op = "attention";
    if (!xg__check_float(op, 0, q) || !xg__check_arg(op, 1, k, q->dtype) ||
        !xg__check_arg(op, 2, v, q->dtype) ||
        !xg__check_same_device(op, q, k) || !xg__check_same_device(op, q, v) ||
        !check_shapes(q, k, v))
        return false;
    if (!(p->dropout_p >= 0.0f && p->dropout_p < 1.0f)) {
        xg_set_error(XG_ERR_INVALID_ARG, "attention: dropout_p = %g, must be "
                     "in [0, 1)", (double)p->dropout_p);
        return false;
    }
    if (!isfinite(p->scale)) {
        xg_set_error(XG_ERR_INVALID_ARG, "attention: scale = %g, must be "
                     "finite", (double)p->scale);
        return false;
    }
    return true;
}

xg_tensor *xg_attention(xg_tensor *q, xg_tensor *k, xg_tensor *v,
                        const xg_attention_params *params)
{
    xg_tensor *ac[3] = {q, k, v}; /* under autocast: in its dtype */
    xg_scope *cast;
    if (xg__autocast(ac, 3, &cast))
        return xg__composite_end(cast, xg_attention(ac[0], ac[1], ac[2],
                                                    params));
    xg_attention_params p = params ? *params : xg_attention_defaults();
    if (!check_args(q, k, v, &p))
        return NULL;
    int64_t tq = q->shape[2], tk = k->shape[2], d = q->shape[3];
    xg_attention_args a = {
        .bh = q->shape[0] * q->shape[1], .tq = tq, .tk = tk, .d = d,
        .scale = p.scale != 0.0f ? p.scale : (float)(1.0 / sqrt((double)d)),
        .causal = p.causal,
        /* beyond [-tq, tk] the mask no longer changes */
        .causal_offset = p.causal_offset < -tq ? -tq
                         : p.causal_offset > tk ? tk
                                                : p.causal_offset,
    };
    if (p.training && p.dropout_p > 0.0f) {
        a.p = p.dropout_p;
        a.offset = xg__rng_take(((uint64_t)(a.bh * tq) * (uint64_t)tk + 3) / 4,
                                &a.seed);
    }
    xg_device *dev = q->storage->dev;
    int64_t lse_shape[3] = {q->shape[0], q->shape[1], tq};
    xg_tensor *outs[2] = {
        xg__tensor_new(dev, q->dtype, q->shape, 4, "attention"),
        xg__tensor_new(dev, XG_F32, lse_shape, 3, "attention")};
    xg_kernel_call call = {.op = XG_OP_attention,
                           .in = {xg__arg(q), xg__arg(k), xg__arg(v)}};
    if (outs[0] && outs[1]) {
        call.out[0] = xg__arg(outs[0]);
        call.out[1] = xg__arg(outs[1]);
    }
    call.p.attention = a;
    if (launch(dev, &call, outs, 2) != XG_OK)
        return NULL;
    xg_tensor *in[3] = {q, k, v};
    xg_tensor *out = xg__record(
        outs[0], &(xg_record){.op = XG_OP_attention, .backward = bw_attention,
                              .inputs = in, .n_inputs = 3, .saved = &outs[1],
                              .n_saved = 1, .save_output = true, .args = &a,
                              .args_size = sizeof a});
    xg_tensor_free(outs[1]); /* the node, if any, holds its own reference */
    return out;
}
