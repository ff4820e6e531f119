/* The GEMM family through CLBlast: row-major, transposes passed as flags
 * (no transposed copies), beta 0. CLBlast compiles its kernels on first use
 * per context and caches them (ocl_close clears that cache).
 */
#include "ocl_impl.h"

#include <clblast_c.h>
#include <stdio.h>

/* CLBlast's codes down to -63 are OpenCL's; the rest are its own. */
xg_status ocl_clblast_fail(int status, const char *what)
{
    if (status > -64) {
        char where[64];
        snprintf(where, sizeof where, "%s (CLBlast)", what);
        return ocl_fail((cl_int)status, where);
    }
    return xg_set_error(XG_ERR_BACKEND,
                        "opencl: %s: CLBlast error %d (see clblast_c.h)", what,
                        status);
}

xg_status ocl_run_gemm(xg_backend_device *dev, const xg_kernel_call *c)
{
    cl_command_queue *queue = &ocl_dev(dev)->queue;
    const xg_gemm_args *g = &c->p.gemm;
    size_t m = (size_t)g->m, n = (size_t)g->n, k = (size_t)g->k;
    size_t batch = (size_t)g->batch;
    /* Untransposed, contiguous A batches times one shared B: a single GEMM
     * with batch * m rows, which is faster than a batched one. */
    if (batch > 1 && g->stride_b == 0 && !g->trans_a &&
        g->stride_a == g->m * g->k) {
        m *= batch;
        batch = 1;
    }
    CLBlastTranspose ta = g->trans_a ? CLBlastTransposeYes : CLBlastTransposeNo;
    CLBlastTranspose tb = g->trans_b ? CLBlastTransposeYes : CLBlastTransposeNo;
    size_t lda = g->trans_a ? (size_t)g->m : k;
    size_t ldb = g->trans_b ? k : n;
    cl_mem a = c->in[0].buf->mem, b = c->in[1].buf->mem, out = c->out[0].buf->mem;
    CLBlastStatusCode st;
    if (batch == 1)
        st = CLBlastSgemm(CLBlastLayoutRowMajor, ta, tb, m, n, k, g->alpha, a,
                          0, lda, b, 0, ldb, 0.0f, out, 0, n, queue, NULL);
    else
        st = CLBlastSgemmStridedBatched(
            CLBlastLayoutRowMajor, ta, tb, m, n, k, g->alpha, a, 0, lda,
            (size_t)g->stride_a, b, 0, ldb, (size_t)g->stride_b, 0.0f, out, 0,
            n, (size_t)g->stride_c, batch, queue, NULL);
    return st == CLBlastSuccess ? XG_OK : ocl_clblast_fail(st, "matmul");
}
