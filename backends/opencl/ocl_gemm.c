/* GEMMs (the GEMM family, and the convolutions' through ocl_gemm):
 * row-major, transposes passed as flags (no transposed copies), through
 * CLBlast or xgrad's kernel (kernels/gemm.cl): by default the kernel on
 * CPU devices (PoCL) and CLBlast on others; XGRAD_OPENCL_GEMM=clblast|xgrad
 * overrides (ocl_device.c: gemm_choice, d->clblast). matmul on bf16 and
 * f16 runs xgrad's kernel's 16-bit forms (xg_gemm_bf16, xg_gemm_f16) on
 * every device: CLBlast's HGEMM computes in half precision where the
 * device has cl_khr_fp16 (f16 only, with f16 accumulation on some
 * devices) and has no bf16.
 *
 * Why two: CLBlast compiles the OpenCL program of each routine (GEMM,
 * strided batched GEMM) on its first call in every process and keeps it
 * only in memory; its API (1.5: ClearCache, FillCache, OverrideParameters)
 * has no way to save or load the binaries, so xgrad's program cache cannot
 * keep them, and a driver without a cache of its own (or PoCL with its
 * cache cleared) compiles them again in every process: 7 s on PoCL on a
 * quiet machine, 27-60 s on a busy one, before the first step of any
 * model. xgrad's kernel is part of the cached program, so a process that
 * uses it starts in well under a second. On CPU devices the kernel, written
 * for them, is also as fast as CLBlast or faster for the samples' shapes,
 * so it is their default. GPU drivers cache compiled programs themselves
 * (NVIDIA's compute cache, for one), so CLBlast costs them little at start
 * and its tuned kernels stay their default; the kernel runs there too, but
 * it is not tuned for GPUs. CLBlast caches its programs per context
 * (ocl_close clears that cache).
 */
#include "ocl_impl.h"

#include <clblast_c.h>
#include <limits.h>
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

/* xg_gemm (kernels/gemm.cl): one work-item per 8 x 16 block of C (B not
 * transposed) or 4 x 4 block (B transposed). On CPU devices, work-groups
 * of OCL_GEMM_CPU_GROUP work-items along n, always: PoCL compiles a kernel
 * again for every work-group size it is launched with (at the launch, and
 * keeps it only in its own cache), so the size it would pick for each shape
 * would cost a compile per shape. Elsewhere the driver picks. */
#define OCL_GEMM_CPU_GROUP 8
static xg_status own_gemm(ocl_device *d, ocl_helper kernel, const char *what,
                          bool ta, bool tb, size_t m, size_t n, size_t k,
                          float alpha, ocl_mat a, ocl_mat b, float beta,
                          ocl_mat c, size_t batch)
{
    if (m > INT_MAX || n > INT_MAX || k > INT_MAX)
        return xg_set_error(XG_ERR_INVALID_ARG, "opencl: %s: GEMM of %zu x "
                            "%zu x %zu is too large for xg_gemm", what, m, n,
                            k);
    cl_int mi = (cl_int)m, ni = (cl_int)n, ki = (cl_int)k;
    cl_int tai = ta, tbi = tb;
    cl_long v[9] = {(cl_long)a.offset, (cl_long)a.ld, (cl_long)a.stride,
                    (cl_long)b.offset, (cl_long)b.ld, (cl_long)b.stride,
                    (cl_long)c.offset, (cl_long)c.ld, (cl_long)c.stride};
    /* XG_GEMM_DM x XG_GEMM_DN, or XG_GEMM_RM (8; 16 for 16-bit) x 16 */
    size_t bm = tb ? 4 : kernel == OCL_HELPER_gemm ? 8 : 16;
    size_t bn = tb ? 4 : 16;
    size_t global[3] = {(n + bn - 1) / bn, (m + bm - 1) / bm, batch};
    size_t local[3] = {OCL_GEMM_CPU_GROUP, 1, 1};
    const size_t *lp = NULL;
    if (d->cpu && d->helper_wg_size[kernel] >= OCL_GEMM_CPU_GROUP) {
        global[0] = (global[0] + OCL_GEMM_CPU_GROUP - 1) /
                    OCL_GEMM_CPU_GROUP * OCL_GEMM_CPU_GROUP; /* the kernel
                                                  skips the extra ones */
        lp = local;
    }
    const xg_buffer *bufs[] = {a.buf, b.buf, c.buf};
    return ocl_enqueue(d, d->helpers[kernel], what, bufs, 3,
                       OCL_ARGS(OCL_ARG(mi), OCL_ARG(ni), OCL_ARG(ki),
                                OCL_ARG(tai), OCL_ARG(tbi), OCL_ARG(v[0]),
                                OCL_ARG(v[1]), OCL_ARG(v[2]), OCL_ARG(v[3]),
                                OCL_ARG(v[4]), OCL_ARG(v[5]), OCL_ARG(v[6]),
                                OCL_ARG(v[7]), OCL_ARG(v[8]), OCL_ARG(alpha),
                                OCL_ARG(beta)),
                       3, global, lp);
}

xg_status ocl_gemm(ocl_device *d, const char *what, bool ta, bool tb,
                   size_t m, size_t n, size_t k, float alpha, ocl_mat a,
                   ocl_mat b, float beta, ocl_mat c, size_t batch)
{
    if (!d->clblast)
        return own_gemm(d, OCL_HELPER_gemm, what, ta, tb, m, n, k, alpha, a,
                        b, beta, c, batch);
    CLBlastTranspose ta_ = ta ? CLBlastTransposeYes : CLBlastTransposeNo;
    CLBlastTranspose tb_ = tb ? CLBlastTransposeYes : CLBlastTransposeNo;
    CLBlastStatusCode st;
    if (batch == 1)
        st = CLBlastSgemm(CLBlastLayoutRowMajor, ta_, tb_, m, n, k, alpha,
                          a.buf->mem, a.offset, a.ld, b.buf->mem, b.offset,
                          b.ld, beta, c.buf->mem, c.offset, c.ld, &d->queue,
                          NULL);
    else
        st = CLBlastSgemmStridedBatched(
            CLBlastLayoutRowMajor, ta_, tb_, m, n, k, alpha, a.buf->mem,
            a.offset, a.ld, a.stride, b.buf->mem, b.offset, b.ld, b.stride,
            beta, c.buf->mem, c.offset, c.ld, c.stride, batch, &d->queue,
            NULL);
    return st == CLBlastSuccess ? XG_OK : ocl_clblast_fail(st, what);
}

xg_status ocl_run_gemm(xg_backend_device *dev, const xg_kernel_call *c)
{
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
    ocl_mat a = {c->in[0].buf, 0, g->trans_a ? (size_t)g->m : k,
                 (size_t)g->stride_a};
    ocl_mat b = {c->in[1].buf, 0, g->trans_b ? k : n, (size_t)g->stride_b};
    ocl_mat out = {c->out[0].buf, 0, n, (size_t)g->stride_c};
    xg_dtype t = c->out[0].dtype; /* the inputs' too (ocl_supports) */
    if (t == XG_BF16 || t == XG_F16)
        return own_gemm(ocl_dev(dev),
                        t == XG_BF16 ? OCL_HELPER_gemm_bf16
                                     : OCL_HELPER_gemm_f16,
                        "matmul", g->trans_a, g->trans_b, m, n, k, g->alpha,
                        a, b, 0.0f, out, batch);
    return ocl_gemm(ocl_dev(dev), "matmul", g->trans_a, g->trans_b, m, n, k,
                    g->alpha, a, b, 0.0f, out, batch);
}
