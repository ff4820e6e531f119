/* Shape helpers shared by every layer: printing shapes and broadcasting. */
#include <stdio.h>

#include "core_impl.h"

void xg__shape_str(const int64_t *shape, int ndim, char *buf, size_t cap)
{
    size_t used = (size_t)snprintf(buf, cap, "[");
    for (int i = 0; i < ndim && used < cap; i++)
        used += (size_t)snprintf(buf + used, cap - used, "%s%lld",
                                 i ? "," : "", (long long)shape[i]);
    if (used < cap)
        snprintf(buf + used, cap - used, "]");
}

/* The broadcast shape of a and b (right-aligned, sizes equal or 1). */
bool xg__broadcast_shape(const char *op, const xg_tensor *a,
                            const xg_tensor *b, int64_t *shape, int *ndim)
{
    int nd = a->ndim > b->ndim ? a->ndim : b->ndim;
    for (int i = 0; i < nd; i++) {
        int ia = a->ndim - nd + i, ib = b->ndim - nd + i;
        int64_t sa = ia >= 0 ? a->shape[ia] : 1;
        int64_t sb = ib >= 0 ? b->shape[ib] : 1;
        if (sa != sb && sa != 1 && sb != 1) {
            char s1[160], s2[160];
            xg__shape_str(a->shape, a->ndim, s1, sizeof s1);
            xg__shape_str(b->shape, b->ndim, s2, sizeof s2);
            xg_set_error(XG_ERR_SHAPE, "%s: shapes do not broadcast: %s and %s "
                         "(axis %d: %lld vs %lld)", op, s1, s2, i - nd,
                         (long long)sa, (long long)sb);
            return false;
        }
        shape[i] = sa > sb ? sa : sb;
    }
    *ndim = nd;
    return true;
}
