/* Facts about every op, generated from ops.def. */
#include "core_impl.h"

const xg_op_info xg_op_table[XG_OP_COUNT] = {
#define XG_OP(name, family, in, out, backward)                               \
    [XG_OP_##name] = {#name, XG_FAMILY_##family, sizeof(in) - 1,              \
                      sizeof(out) - 1, in, out, XG_OP_##backward},
#include "ops.def"
#undef XG_OP
};

#define XG_OP(name, family, in, out, backward)                               \
    _Static_assert(sizeof(in) - 1 <= XG_KERNEL_MAX_IN &&                      \
                       sizeof(out) - 1 <= XG_KERNEL_MAX_OUT &&               \
                       sizeof(in) + sizeof(out) > 2,                         \
                   #name ": 1 to 8 inputs and outputs");
#include "ops.def"
#undef XG_OP

const char *const xg_family_names[XG_FAMILY_COUNT] = {
#define XG_FAMILY(name, args) [XG_FAMILY_##name] = #name,
#include "ops.def"
#undef XG_FAMILY
};

xg_dtype xg_op_rule_dtype(char rule, xg_dtype t)
{
    switch (rule) {
    case 'f': return XG_F32;
    case 'i': return XG_I32;
    default: return t;
    }
}

bool xg_op_signature_is(xg_op op, const xg_dtype *dtypes, xg_dtype t)
{
    const xg_op_info *info = &xg_op_table[op];
    for (int i = 0; i < info->n_in; i++)
        if (info->in_rule[i] != 'U' &&
            dtypes[i] != xg_op_rule_dtype(info->in_rule[i], t))
            return false;
    for (int j = 0; j < info->n_out; j++)
        if (info->out_rule[j] != 'U' &&
            dtypes[info->n_in + j] != xg_op_rule_dtype(info->out_rule[j], t))
            return false;
    return true;
}

const char *xg_dtype_name(xg_dtype dtype)
{
    switch (dtype) {
    case XG_F32: return "f32";
    case XG_I32: return "i32";
    case XG_BF16: return "bf16";
    case XG_F16: return "f16";
    }
    return "unknown";
}

size_t xg_dtype_size(xg_dtype dtype)
{
    switch (dtype) {
    case XG_F32:
    case XG_I32: return 4;
    case XG_BF16:
    case XG_F16: return 2;
    }
    return 0;
}

bool xg_dtype_is_float(xg_dtype dtype)
{
    return dtype == XG_F32 || dtype == XG_BF16 || dtype == XG_F16;
}

bool xg_op_f32_or_16bit_move(xg_op op, const xg_dtype *dtypes)
{
    if (op == XG_OP_cast)
        return (unsigned)dtypes[0] < XG_DTYPE_COUNT &&
               (unsigned)dtypes[1] < XG_DTYPE_COUNT;
    if (xg_op_signature_is(op, dtypes, XG_F32))
        return true;
    return (op == XG_OP_fill || op == XG_OP_copy ||
            op == XG_OP_copy_strided) &&
           (xg_op_signature_is(op, dtypes, XG_BF16) ||
            xg_op_signature_is(op, dtypes, XG_F16));
}
