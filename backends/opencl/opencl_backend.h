/* What the OpenCL backend offers beyond the dispatch table, for tests and
 * tools inside libxgrad.
 *
 * Program cache: the driver's binary of xgrad's kernel program is kept in
 *   $XDG_CACHE_HOME/xgrad/opencl-<device and driver>.bin
 * ($HOME/.cache/xgrad when XDG_CACHE_HOME is unset), next to the Vulkan
 * backend's pipeline cache, so that opening the device again skips
 * compiling the kernels (see ocl_cache.c). A file written by another
 * driver, device or xgrad, or a corrupt one, is ignored and replaced.
 *
 * Environment:
 *   XGRAD_OPENCL_GEMM=clblast|xgrad   where matrix products and the GEMMs
 *                             of convolutions run: CLBlast, or
 *                             kernels/gemm.cl, which is part of the cached
 *                             program, so that processes start without
 *                             compiling CLBlast's kernels (see
 *                             ocl_gemm.c). Unset or empty: xgrad's kernel
 *                             on CPU devices (PoCL), CLBlast on others;
 *                             the device's name ends in "CLBlast GEMM)"
 *                             or "xgrad GEMM)". Anything else fails the
 *                             open. Matrix products on bf16 and f16 run
 *                             kernels/gemm.cl's 16-bit forms whatever the
 *                             setting.
 */
#ifndef XGRAD_OPENCL_BACKEND_H
#define XGRAD_OPENCL_BACKEND_H

#include <stdint.h>

/* Test hook: how many times, since the process started, a device open
 * took the kernel program from the cache file (*loaded) or built it from
 * source (*built), and how many times a close wrote the cache file
 * (*saved). NULL pointers are skipped. */
void xg_opencl_cache_counts(uint64_t *loaded, uint64_t *built,
                            uint64_t *saved);

#endif
