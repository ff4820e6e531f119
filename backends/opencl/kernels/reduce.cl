/* REDUCE family over the middle axis of a [outer, dim, inner] view, and its
 * backward.
 *
 * Work layout of the reductions: local size (nx, ny), global size
 * (inner rounded up to nx, outer * ny). Work-group (gx, o) reduces columns
 * i = gx * nx + lx of slice o; its ny rows of work-items split `dim` and
 * then combine their partial results in local memory. With nx = 32 the
 * reads along `inner` are coalesced; with nx = 1 the whole group works on
 * one column (the common inner == 1 case). ny is a power of two.
 */

/* Partial results of work-item (lx, ly) live at local slot ly * nx + lx. */
#define XG_SLOT(ly) ((ly) * (int)get_local_size(0) + (int)get_local_id(0))

__kernel void xg_sum(__global const float *x, __global float *out,
                     long outer, long dim, long inner)
{
    __local float part[XG_WG_MAX];
    long i = get_global_id(0), o = get_group_id(1);
    int ly = get_local_id(1), ny = get_local_size(1);
    float acc = 0.0f;
    if (i < inner)
        for (long d = ly; d < dim; d += ny)
            acc += x[(o * dim + d) * inner + i];
    part[XG_SLOT(ly)] = acc;
    for (int s = ny / 2; s > 0; s /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        if (ly < s)
            part[XG_SLOT(ly)] += part[XG_SLOT(ly + s)];
    }
    if (ly == 0 && i < inner)
        out[o * inner + i] = part[XG_SLOT(0)];
}

/* Whether (va, ia) beats (vb, ib): NaN beats any number, a larger value a
 * smaller one, and between equals (or two NaNs) the lower index wins. The
 * result is PyTorch's: the first NaN, else the first maximum. */
bool xg_max_wins(float va, int ia, float vb, int ib)
{
    bool nan_a = isnan(va), nan_b = isnan(vb);
    if (nan_a != nan_b)
        return nan_a;
    if (nan_a || va == vb)
        return ia < ib;
    return va > vb;
}

/* Max and its index over `dim` of column i of slice o; every work-item of
 * the group must call it, and the result is valid where ly == 0 and
 * i < inner. val and idx hold XG_WG_MAX entries. */
void xg_max_column(__global const float *x, long dim, long inner,
                   __local float *val, __local int *idx, float *value,
                   int *index)
{
    long i = get_global_id(0), o = get_group_id(1);
    int ly = get_local_id(1), ny = get_local_size(1);
    float best = -INFINITY;
    int best_at = (int)dim; /* loses to every element, even -inf */
    if (i < inner)
        for (long d = ly; d < dim; d += ny) {
            float v = x[(o * dim + d) * inner + i];
            if (xg_max_wins(v, (int)d, best, best_at)) {
                best = v;
                best_at = (int)d;
            }
        }
    val[XG_SLOT(ly)] = best;
    idx[XG_SLOT(ly)] = best_at;
    for (int s = ny / 2; s > 0; s /= 2) {
        barrier(CLK_LOCAL_MEM_FENCE);
        int me = XG_SLOT(ly), other = XG_SLOT(ly + s);
        if (ly < s && xg_max_wins(val[other], idx[other], val[me], idx[me])) {
            val[me] = val[other];
            idx[me] = idx[other];
        }
    }
    *value = val[XG_SLOT(ly)];
    *index = idx[XG_SLOT(ly)];
}

__kernel void xg_max(__global const float *x, __global float *out,
                     __global int *out_index, long outer, long dim, long inner)
{
    __local float val[XG_WG_MAX];
    __local int idx[XG_WG_MAX];
    float value;
    int index;
    xg_max_column(x, dim, inner, val, idx, &value, &index);
    long i = get_global_id(0), o = get_group_id(1);
    if (get_local_id(1) == 0 && i < inner) {
        out[o * inner + i] = value;
        out_index[o * inner + i] = index;
    }
}

__kernel void xg_argmax(__global const float *x, __global int *out_index,
                        long outer, long dim, long inner)
{
    __local float val[XG_WG_MAX];
    __local int idx[XG_WG_MAX];
    float value;
    int index;
    xg_max_column(x, dim, inner, val, idx, &value, &index);
    long i = get_global_id(0), o = get_group_id(1);
    if (get_local_id(1) == 0 && i < inner)
        out_index[o * inner + i] = index;
}

/* dx[o, d, i] = d == index[o, i] ? g[o, i] : 0; one work-item per element
 * of dx (grid-stride). */
__kernel void xg_max_backward(__global const float *g,
                              __global const int *index, __global float *dx,
                              long outer, long dim, long inner)
{
    XG_FOR_EACH(e, outer * dim * inner) {
        long i = e % inner, od = e / inner;
        long d = od % dim, o = od / dim;
        long at = o * inner + i;
        dx[e] = index[at] == d ? g[at] : 0.0f;
    }
}
