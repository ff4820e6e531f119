/* Modules through the public interface only: a residual network defined
 * here (tests/residual_model.h), containers, names, errors, freezing,
 * training mode, checkpoints and parameter groups. */
#include "residual_model.h"
#include "test_util.h"

TestSuite(modules, .init = tu_init_scope, .fini = tu_fini_scope);

Test(modules, placeholder)
{
    xg_module *m = rm_net_new(1);
    cr_assert_not_null(m, "%s", xg_last_error());
    xg_module_free(m);
}
