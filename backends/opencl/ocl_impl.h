/* Internals of the OpenCL backend, shared by its files. Not installed.
 *
 * One device = one context, one in-order command queue, one program built
 * at open from the kernel files in kernels/ (embedded in the library) or
 * loaded from the program cache (ocl_cache.c), and a caching buffer
 * allocator.
 * Ops enqueue work and return; only download() and sync() wait.
 */
#ifndef XGRAD_OCL_IMPL_H
#define XGRAD_OCL_IMPL_H

/* The OpenCL 1.2 API: what every ICD from the last decade provides. */
#ifndef CL_TARGET_OPENCL_VERSION
#define CL_TARGET_OPENCL_VERSION 120
#endif
#include <CL/cl.h>

#include "backend.h"

/* Largest work-group size any kernel is launched with (a power of two); it
 * sizes the kernels' local arrays (-DXG_WG_MAX). */
#define OCL_WG_MAX 256

/* Size classes of the caching allocator (see ocl_memory.c). */
#define OCL_SIZE_CLASSES 256

/* Kernels that serve several ops rather than one (see kernels/conv.cl), or
 * an op on other dtypes (the 16-bit copies of kernels/half.cl, the 16-bit
 * GEMMs of kernels/gemm.cl): X(name) for a kernel named xg_<name>, a name
 * no op may have. */
#define OCL_HELPERS(X)                                                       \
    X(im2col) X(col2im) X(conv_bias) X(gemm) X(gemm_bf16) X(gemm_f16) X(copy_16)          \
    X(fill_16) X(copy_strided_16)

typedef enum ocl_helper {
#define OCL_HELPER_ENUM(name) OCL_HELPER_##name,
    OCL_HELPERS(OCL_HELPER_ENUM)
#undef OCL_HELPER_ENUM
    OCL_HELPER_COUNT
} ocl_helper;

/* A device allocation. While cached it sits on its class's free list. */
struct xg_buffer {
    cl_mem mem;
    int size_class;
    struct xg_buffer *next_free;
};

typedef struct ocl_device {
    xg_backend_device base; /* first member: the core casts to this */
    cl_device_id device;
    cl_context context;
    cl_command_queue queue; /* in order; every op goes here */
    cl_program program;     /* every kernel of kernels/ */
    /* The kernel of each op, NULL for ops that have none (GEMM, CONV:
     * see ocl_op_has_kernel). */
    cl_kernel kernels[XG_OP_COUNT];
    /* The largest power-of-two work-group size (<= OCL_WG_MAX) each
     * kernel can run with on this device. */
    size_t wg_size[XG_OP_COUNT];
    cl_kernel helpers[OCL_HELPER_COUNT]; /* and their sizes, likewise */
    size_t helper_wg_size[OCL_HELPER_COUNT];
    /* The 16-bit forms xg_<op>_bf16 ([0]) and xg_<op>_f16 ([1]) of the
     * ops that have them (ocl_op_has_16bit_kernels), NULL for the rest;
     * and their sizes. */
    cl_kernel kernels16[2][XG_OP_COUNT];
    size_t wg_size16[2][XG_OP_COUNT];
    size_t max_groups;   /* work-groups in one grid-stride launch, at most */
    cl_ulong max_alloc;  /* CL_DEVICE_MAX_MEM_ALLOC_SIZE */
    xg_buffer *free_list[OCL_SIZE_CLASSES];
    /* The program cache (ocl_cache.c): the hash of the device and driver
     * (the file's name), of those and the program (the file's key), and
     * the size and checksum of the binary loaded from it (0 if built). */
    uint64_t cache_identity, cache_key;
    size_t cache_size;
    uint64_t cache_sum;
    bool opened; /* fully opened: close saves the program cache */
    bool clblast; /* GEMMs through CLBlast, else kernels/gemm.cl */
    bool cpu;     /* CL_DEVICE_TYPE_CPU (PoCL): runs work-items in turn */
} ocl_device;

/* Also declared by backend.h when the build defines XGRAD_HAVE_OPENCL. */
extern const xg_backend xg_backend_opencl;

static inline ocl_device *ocl_dev(xg_backend_device *dev)
{
    return (ocl_device *)dev;
}

/* Whether ops of the family have a kernel xg_<op> of their own. GEMM runs
 * in ocl_gemm (CLBlast or the gemm helper); CONV in it and the helper
 * kernels. */
static inline int ocl_op_has_kernel(xg_op_family family)
{
    return family != XG_FAMILY_GEMM && family != XG_FAMILY_CONV;
}

/* Whether ops of the family also have 16-bit forms xg_<op>_bf16 and
 * xg_<op>_f16 (kernels/elementwise.cl, kernels/binary.cl). */
static inline int ocl_op_has_16bit_kernels(xg_op_family family)
{
    return family == XG_FAMILY_UNARY || family == XG_FAMILY_UNARY_BACKWARD ||
           family == XG_FAMILY_SCALAR || family == XG_FAMILY_BINARY;
}

/* ---- ocl_error.c --------------------------------------------------------- */

/* "CL_INVALID_KERNEL_ARGS" for -52; "unknown OpenCL error" otherwise. */
const char *ocl_error_name(cl_int err);

/* Sets the error for a failed OpenCL call and returns its status:
 * XG_ERR_DEVICE_OOM for CL_MEM_OBJECT_ALLOCATION_FAILURE and
 * CL_OUT_OF_RESOURCES, XG_ERR_OUT_OF_MEMORY for CL_OUT_OF_HOST_MEMORY,
 * XG_ERR_BACKEND otherwise. `what` says what failed ("relu",
 * "clCreateBuffer"). */
xg_status ocl_fail(cl_int err, const char *what);

/* ---- ocl_cache.c: the program binary cache ----------------------------- */

/* Loads and builds d->program from the cache file written for this device,
 * driver, source and build `options`; false (and nothing set but the
 * device's cache keys) when there is no usable file. Never fails
 * otherwise. */
bool ocl_cache_load(ocl_device *d, const char *options);
/* Counts a program built from source (xg_opencl_cache_counts). */
void ocl_cache_count_build(void);
/* Writes d->program's binary to the cache file unless it is the one
 * loaded; failures are ignored. */
void ocl_cache_save(ocl_device *d);

/* ---- ocl_memory.c -------------------------------------------------------- */

xg_status ocl_alloc(xg_backend_device *dev, size_t bytes, xg_buffer **out);
void ocl_free(xg_backend_device *dev, xg_buffer *buf);
xg_status ocl_upload(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                     const void *src, size_t bytes);
xg_status ocl_download(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                       void *dst, size_t bytes);
/* Releases every cached (free) buffer of the device. */
void ocl_release_cached(ocl_device *d);

/* ---- ocl_ops.c: enqueueing kernels ------------------------------------ */

/* One scalar kernel argument. */
typedef struct ocl_arg {
    size_t size;
    const void *value;
} ocl_arg;

#define OCL_ARG(v) {sizeof(v), &(v)}
/* An array of ocl_arg and its length, as two function arguments. */
#define OCL_ARGS(...)                                                        \
    (const ocl_arg[]){__VA_ARGS__},                                          \
        (int)(sizeof((const ocl_arg[]){__VA_ARGS__}) / sizeof(ocl_arg))

/* Sets kernel k's arguments (the n_bufs buffers, then the n_args scalars)
 * and enqueues it over `global` work-items in groups of `local`; `what`
 * names it in an error. A NULL buffer is passed as a NULL cl_mem. */
xg_status ocl_enqueue(ocl_device *d, cl_kernel k, const char *what,
                      const xg_buffer *const *bufs, int n_bufs,
                      const ocl_arg *args, int n_args, cl_uint dims,
                      const size_t *global, const size_t *local);

/* The smallest power of two >= want, clamped to [lo, hi] (powers of two). */
size_t ocl_pow2_at_least(int64_t want, size_t lo, size_t hi);

/* Groups of fewer work-items leave GPU SIMD lanes idle. */
#define OCL_MIN_GROUP 64

/* ---- ocl_gemm.c ------------------------------------------------------- */

/* One GEMM operand: a buffer, where the matrix starts (elements), its
 * leading dimension and the step from one batch entry to the next. */
typedef struct ocl_mat {
    xg_buffer *buf;
    size_t offset, ld, stride;
} ocl_mat;

/* C_b = alpha opA(A_b) opB(B_b) + beta C_b for b < batch, row-major, on
 * CLBlast or xgrad's kernel (d->clblast); `what` names the op in errors. */
xg_status ocl_gemm(ocl_device *d, const char *what, bool ta, bool tb,
                   size_t m, size_t n, size_t k, float alpha, ocl_mat a,
                   ocl_mat b, float beta, ocl_mat c, size_t batch);

/* Sets the error for a failed CLBlast call (a CLBlastStatusCode) and
 * returns its status; `what` names the op. */
xg_status ocl_clblast_fail(int status, const char *what);

/* ---- one launcher per op family (ocl_ops.c, ocl_gemm.c, ocl_conv.c) --- */

xg_status ocl_run_elementwise(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_fill(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_binary(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_reduce(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_reduce_backward(xg_backend_device *dev,
                                  const xg_kernel_call *c);
xg_status ocl_run_rows(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_strided(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_rng(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_adam(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_sgd(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_gemm(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_conv(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_pool(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_dropout(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_index(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_where(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_attention(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_norm(xg_backend_device *dev, const xg_kernel_call *c);
xg_status ocl_run_cast(xg_backend_device *dev, const xg_kernel_call *c);

/* Which launcher serves each family (used to fill the dispatch table). */
#define OCL_LAUNCHER_UNARY ocl_run_elementwise
#define OCL_LAUNCHER_UNARY_BACKWARD ocl_run_elementwise
#define OCL_LAUNCHER_SCALAR ocl_run_elementwise
#define OCL_LAUNCHER_BINARY ocl_run_binary
#define OCL_LAUNCHER_REDUCE ocl_run_reduce
#define OCL_LAUNCHER_REDUCE_BACKWARD ocl_run_reduce_backward
#define OCL_LAUNCHER_ROWS ocl_run_rows
#define OCL_LAUNCHER_GEMM ocl_run_gemm
#define OCL_LAUNCHER_STRIDED ocl_run_strided
#define OCL_LAUNCHER_FILL ocl_run_fill
#define OCL_LAUNCHER_RNG ocl_run_rng
#define OCL_LAUNCHER_ADAM ocl_run_adam
#define OCL_LAUNCHER_SGD ocl_run_sgd
#define OCL_LAUNCHER_CONV ocl_run_conv
#define OCL_LAUNCHER_POOL ocl_run_pool
#define OCL_LAUNCHER_DROPOUT ocl_run_dropout
#define OCL_LAUNCHER_INDEX ocl_run_index
#define OCL_LAUNCHER_WHERE ocl_run_where
#define OCL_LAUNCHER_ATTENTION ocl_run_attention
#define OCL_LAUNCHER_NORM ocl_run_norm
#define OCL_LAUNCHER_CAST ocl_run_cast

#endif
