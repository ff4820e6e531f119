/* Autocast: the calling thread's 16-bit dtype for the front-ends that
 * compute in it (see xg_set_autocast and ops/autocast_impl.h). */
#include "ops/autocast_impl.h"

static _Thread_local xg_dtype autocast = XG_F32;

xg_dtype xg_set_autocast(xg_dtype dtype)
{
    if (dtype != XG_F32 && dtype != XG_BF16 && dtype != XG_F16) {
        xg_set_error(XG_ERR_DTYPE, "set_autocast: %s (%d) is not f32, bf16 "
                     "or f16; autocast is unchanged", xg_dtype_name(dtype),
                     (int)dtype);
        return autocast;
    }
    xg_dtype was = autocast;
    autocast = dtype;
    return was;
}

xg_dtype xg_autocast_dtype(void)
{
    return autocast;
}

/* Whether t is a float tensor that autocast turns into `to`. */
static bool casts(const xg_tensor *t, xg_dtype to)
{
    return t && t->dtype != to && xg_dtype_is_float(t->dtype);
}

/* Casts the float inputs of another dtype than `to` (see autocast_impl.h). */
static bool cast_all(xg_tensor **in, int n, xg_scope **scope, xg_dtype to)
{
    bool any = false;
    for (int i = 0; i < n && !any; i++)
        any = casts(in[i], to);
    if (!any)
        return false;
    *scope = xg__composite_begin();
    for (int i = 0; i < n; i++)
        if (casts(in[i], to))
            in[i] = xg_to_dtype(in[i], to);
    return true;
}

bool xg__autocast(xg_tensor **in, int n, xg_scope **scope)
{
    return autocast != XG_F32 && cast_all(in, n, scope, autocast);
}

bool xg__autocast_f32(xg_tensor **in, int n, xg_scope **scope)
{
    return autocast != XG_F32 && cast_all(in, n, scope, XG_F32);
}
