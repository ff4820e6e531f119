/* The op table, generated from ops.def. */
#include "core_impl.h"

const xg_op_info xg_op_table[XG_OP_COUNT] = {
#define XG_OP(name, family, n_in, n_out)                                     \
    [XG_OP_##name] = {#name, XG_FAMILY_##family, n_in, n_out},
#include "ops.def"
#undef XG_OP
};

#define XG_OP(name, family, n_in, n_out)                                     \
    _Static_assert((n_in) <= XG_KERNEL_MAX_IN && (n_out) <= XG_KERNEL_MAX_OUT,\
                   #name ": too many operands");
#include "ops.def"
#undef XG_OP
