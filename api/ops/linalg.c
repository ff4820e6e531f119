/* Matrix products. */
#include <string.h>

#include "ops/autocast_impl.h"
#include "ops/ops_impl.h"

/* ---- matmul --------------------------------------------------------------- */

/* Sizes of op(a) op(b) for operands of >= 2 axes. */
typedef struct mm_plan {
    int64_t m, n, k;
    int64_t batch_shape[XG_MAX_DIMS];
    int batch_ndim;
    int64_t batch;
} mm_plan;

static bool mm_shapes(const xg_tensor *a, const xg_tensor *b, bool ta,
                      bool tb, mm_plan *p)
{
    int64_t ar = a->shape[a->ndim - 2], ac = a->shape[a->ndim - 1];
    int64_t br = b->shape[b->ndim - 2], bc = b->shape[b->ndim - 1];
    p->m = ta ? ac : ar;
    p->k = ta ? ar : ac;
    p->n = tb ? br : bc;
    int64_t kb = tb ? bc : br;
    char s1[160], s2[160];
    xg__shape_str(a->shape, a->ndim, s1, sizeof s1);
    xg__shape_str(b->shape, b->ndim, s2, sizeof s2);
    if (kb != p->k) {
        xg_set_error(XG_ERR_SHAPE, "matmul: inner dimensions differ: %s%s x "
                     "%s%s", s1, ta ? "^T" : "", s2, tb ? "^T" : "");
        return false;
    }
    int na = a->ndim - 2, nb = b->ndim - 2;
    p->batch_ndim = na > nb ? na : nb;
    p->batch = 1;
    for (int i = 0; i < p->batch_ndim; i++) {
        int ia = na - p->batch_ndim + i, ib = nb - p->batch_ndim + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1, sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            xg_set_error(XG_ERR_SHAPE, "matmul: batch dimensions do not "
                         "broadcast: %s x %s", s1, s2);
            return false;
        }
        p->batch_shape[i] = sa > sb ? sa : sb;
        p->batch *= p->batch_shape[i];
    }
    return true;
}

/* Element stride between batch matrices of `*t`, expanding it first when
 * it broadcasts over only some of the batch axes. */
static int64_t mm_operand(xg_tensor **t, const mm_plan *p)
{
    xg_tensor *x = *t;
    int64_t mat = x->shape[x->ndim - 2] * x->shape[x->ndim - 1];
    int64_t count = x->numel / mat;
    if (count == 1)
        return 0;
    if (count != p->batch) {
        int64_t shape[XG_MAX_DIMS];
        memcpy(shape, p->batch_shape, sizeof *shape * p->batch_ndim);
        shape[p->batch_ndim] = x->shape[x->ndim - 2];
        shape[p->batch_ndim + 1] = x->shape[x->ndim - 1];
        *t = xg__expand(x, shape, p->batch_ndim + 2);
    }
    return mat;
}

/* dA = g op(B)^T (stored back through op); dB likewise. */
static xg_status bw_matmul(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    xg_tensor *a = n->inputs[0], *b = n->inputs[1];
    const xg_gemm_args *args = n->args;
    bool ta = args->trans_a, tb = args->trans_b;
    if (a->requires_grad) {
        xg_tensor *da = ta ? xg_matmul_t(b, g, tb, true)
                           : xg_matmul_t(g, b, false, !tb);
        if (!(gi[0] = xg__sum_to(da, a->shape, a->ndim)))
            return xg_last_status();
    }
    if (b->requires_grad) {
        xg_tensor *db = tb ? xg_matmul_t(g, a, true, ta)
                           : xg_matmul_t(a, g, !ta, false);
        if (!(gi[1] = xg__sum_to(db, b->shape, b->ndim)))
            return xg_last_status();
    }
    return XG_OK;
}

/* op(a) op(b) for operands with >= 2 axes each. */
static xg_tensor *matmul_nd(xg_tensor *a, xg_tensor *b, bool ta, bool tb)
{
    mm_plan p;
    if (!mm_shapes(a, b, ta, tb, &p))
        return NULL;
    xg_kernel_call call = {.op = XG_OP_matmul};
    xg_gemm_args *g = &call.p.gemm;
    g->stride_a = mm_operand(&a, &p);
    g->stride_b = mm_operand(&b, &p);
    if (!a || !b)
        return NULL;
    /* mm_operand may have expanded an operand: that copy is freed with the
     * caller's composite scope, or by the graph that uses it. */
    int64_t shape[XG_MAX_DIMS];
    memcpy(shape, p.batch_shape, sizeof *shape * p.batch_ndim);
    shape[p.batch_ndim] = p.m;
    shape[p.batch_ndim + 1] = p.n;
    xg_device *dev = a->storage->dev;
    xg_tensor *c = xg__tensor_new(dev, a->dtype, shape, p.batch_ndim + 2,
                                  "matmul");
    if (!c)
        return NULL;
    *g = (xg_gemm_args){.batch = p.batch, .m = p.m, .n = p.n, .k = p.k,
                        .stride_a = g->stride_a, .stride_b = g->stride_b,
                        .stride_c = p.m * p.n, .trans_a = ta, .trans_b = tb,
                        .alpha = 1.0f};
    call.in[0] = xg__arg(a);
    call.in[1] = xg__arg(b);
    call.out[0] = xg__arg(c);
    xg_tensor *in[2] = {a, b};
    if (xg__launch(dev, &call) != XG_OK) {
        xg_tensor_free(c);
        return NULL;
    }
    return xg__record(c, &(xg_record){.op = XG_OP_matmul,
                                      .backward = bw_matmul, .inputs = in,
                                      .n_inputs = 2, .args = g,
                                      .args_size = sizeof *g});
}

/* Checks inner sizes when an operand is 1-D, so the error shows the
 * caller's shapes rather than the matrices they become. */
static bool vector_fits(const xg_tensor *a, const xg_tensor *b, bool ta,
                        bool tb)
{
    int64_t ka = a->ndim == 1 ? a->numel : a->shape[a->ndim - (ta ? 2 : 1)];
    int64_t kb = b->ndim == 1 ? b->numel : b->shape[b->ndim - (tb ? 1 : 2)];
    if (ka == kb)
        return true;
    char s1[160], s2[160];
    xg__shape_str(a->shape, a->ndim, s1, sizeof s1);
    xg__shape_str(b->shape, b->ndim, s2, sizeof s2);
    xg_set_error(XG_ERR_SHAPE, "matmul: inner dimensions differ: %s x %s", s1,
                 s2);
    return false;
}

/* Views a 1-D operand as a matrix: [1, k] on the left, [k, 1] on the right. */
static xg_tensor *as_matrix(xg_tensor *v, bool left)
{
    int64_t shape[2] = {left ? 1 : v->numel, left ? v->numel : 1};
    return xg_reshape(v, shape, 2);
}

/* ---- matmul under autocast with an f32 parameter ---------------------- */

/* An f32 (or other float) leaf that collects a gradient, of another dtype
 * than the autocast one: a master weight. */
static bool master_weight(const xg_tensor *t, xg_dtype autocast)
{
    return t && !t->node && t->requires_grad && t->dtype != autocast &&
           xg_dtype_is_float(t->dtype);
}

typedef struct autocast_mm_args {
    bool ta, tb;
    xg_dtype dtype; /* the autocast dtype of the forward */
} autocast_mm_args;

/* bw_matmul on the inputs cast again to the forward's dtype: a master
 * weight's 16-bit copy is made anew here instead of being kept from the
 * forward; its gradient goes back to its dtype, as xg_to_dtype's would. */
static xg_status bw_autocast_matmul(xg_node *n, xg_tensor *g, xg_tensor **gi)
{
    const autocast_mm_args *p = n->args;
    xg_tensor *in[2] = {n->inputs[0], n->inputs[1]}, *lo[2];
    for (int i = 0; i < 2; i++)
        if (!(lo[i] = in[i]->dtype == p->dtype ? in[i]
                                               : xg_to_dtype(in[i], p->dtype)))
            return xg_last_status();
    xg_tensor *a = lo[0], *b = lo[1];
    bool ta = p->ta, tb = p->tb;
    if (in[0]->requires_grad) {
        xg_tensor *da = ta ? xg_matmul_t(b, g, tb, true)
                           : xg_matmul_t(g, b, false, !tb);
        da = xg__sum_to(da, a->shape, a->ndim);
        if (!(gi[0] = da ? xg_to_dtype(da, in[0]->dtype) : NULL))
            return xg_last_status();
    }
    if (in[1]->requires_grad) {
        xg_tensor *db = tb ? xg_matmul_t(g, a, true, ta)
                           : xg_matmul_t(a, g, !ta, false);
        db = xg__sum_to(db, b->shape, b->ndim);
        if (!(gi[1] = db ? xg_to_dtype(db, in[1]->dtype) : NULL))
            return xg_last_status();
    }
    return XG_OK;
}

/* op(a) op(b) under autocast when an operand is a master weight (both
 * with >= 2 axes): as the plain autocast path (the product of the 16-bit
 * casts, an activation's cast recorded as usual), but the node holds the
 * master weight itself and its rule casts it again, so the graph keeps no
 * 16-bit copy of the weight between the forward and the backward. The
 * same values and gradients, bit for bit. */
static xg_tensor *autocast_matmul(xg_tensor *a, xg_tensor *b, bool ta,
                                  bool tb, xg_dtype dt)
{
    xg_scope *scope = xg__composite_begin();
    xg_tensor *in[2] = {a, b}, *lo[2];
    for (int i = 0; i < 2; i++) {
        bool weight = master_weight(in[i], dt);
        bool grad = weight ? xg_set_grad_enabled(false) : false;
        lo[i] = in[i]->dtype == dt ? in[i] : xg_to_dtype(in[i], dt);
        if (weight)
            xg_set_grad_enabled(grad);
        if (!lo[i])
            return xg__composite_end(scope, NULL);
        if (!weight) /* the node holds the activation's 16-bit cast */
            in[i] = lo[i];
    }
    bool grad = xg_set_grad_enabled(false);
    xg_tensor *y = xg_matmul_t(lo[0], lo[1], ta, tb);
    xg_set_grad_enabled(grad);
    autocast_mm_args args = {.ta = ta, .tb = tb, .dtype = dt};
    y = xg__record(y, &(xg_record){.op = XG_OP_matmul, .name = "matmul",
                                   .backward = bw_autocast_matmul,
                                   .inputs = in, .n_inputs = 2,
                                   .args = &args, .args_size = sizeof args});
    return xg__composite_end(scope, y);
}

xg_tensor *xg_matmul_t(xg_tensor *a, xg_tensor *b, bool trans_a,
                       bool trans_b)
{
    xg_dtype dt = xg_autocast_dtype();
    if (dt != XG_F32 && a && b && a->ndim >= 2 && b->ndim >= 2 &&
        xg_dtype_is_float(a->dtype) && xg_dtype_is_float(b->dtype) &&
        (master_weight(a, dt) || master_weight(b, dt)) &&
        xg__check_same_device("matmul", a, b))
        return autocast_matmul(a, b, trans_a, trans_b, dt);
    xg_tensor *ac[2] = {a, b}; /* under autocast: in its dtype */
    xg_scope *cast;
    if (xg__autocast(ac, 2, &cast))
        return xg__composite_end(cast, xg_matmul_t(ac[0], ac[1], trans_a,
                                                   trans_b));
    if (!xg__check_float("matmul", 0, a) || !xg__check_float("matmul", 1, b) ||
        !xg__check_same_device("matmul", a, b))
        return NULL;
    if (a->dtype != b->dtype) { /* promoted to f32 */
        xg_scope *scope = xg__composite_begin();
        xg_tensor *wa = xg_to_dtype(a, XG_F32), *wb = xg_to_dtype(b, XG_F32);
        return xg__composite_end(
            scope, wa && wb ? xg_matmul_t(wa, wb, trans_a, trans_b) : NULL);
    }
    if (a->ndim == 0 || b->ndim == 0) {
        xg_set_error(XG_ERR_SHAPE, "matmul: operands need at least one axis");
        return NULL;
    }
    bool va = a->ndim == 1, vb = b->ndim == 1;
    if ((va || vb) && !vector_fits(a, b, trans_a, trans_b))
        return NULL;
    xg_scope *scope = xg__composite_begin();
    if (!va && !vb)
        return xg__composite_end(scope, matmul_nd(a, b, trans_a, trans_b));
    xg_tensor *c = matmul_nd(va ? as_matrix(a, true) : a,
                             vb ? as_matrix(b, false) : b, trans_a && !va,
                             trans_b && !vb);
    if (!c)
        return xg__composite_end(scope, NULL);
    /* Drop the axes the 1-D operands gained, as torch.matmul does. */
    int64_t shape[XG_MAX_DIMS];
    int nd = 0;
    for (int i = 0; i < c->ndim; i++)
        if (!((va && i == c->ndim - 2) || (vb && i == c->ndim - 1)))
            shape[nd++] = c->shape[i];
    return xg__composite_end(scope, xg_reshape(c, shape, nd));
}

xg_tensor *xg_matmul(xg_tensor *a, xg_tensor *b)
{
    return xg_matmul_t(a, b, false, false);
}
