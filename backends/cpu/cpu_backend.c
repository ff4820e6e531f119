/* The CPU backend: one device (this machine), host memory as device memory,
 * every op computed synchronously by the reference kernels. */
#include "cpu_impl.h"
#include "half_impl.h"

#include <errno.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifdef XGRAD_HAVE_BLAS
#include <cblas.h>
#define CPU_GEMM_NAME "OpenBLAS"
#else
#define CPU_GEMM_NAME "built-in GEMM"
#endif

enum { CPU_MAX_THREADS = 256 };

/* A positive integer from XGRAD_NUM_THREADS, or 0 when unset or malformed. */
static int env_thread_count(void)
{
    const char *s = getenv("XGRAD_NUM_THREADS");
    if (!s || !*s)
        return 0;
    char *end;
    errno = 0;
    long v = strtol(s, &end, 10);
    if (errno || *end || v < 1)
        return 0;
    return v > CPU_MAX_THREADS ? CPU_MAX_THREADS : (int)v;
}

int cpu_thread_count(void)
{
    int n = env_thread_count();
    if (n > 0)
        return n;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    n = online > 0 ? (int)(online < CPU_MAX_THREADS ? online
                                                    : CPU_MAX_THREADS)
                   : 1;
#ifdef CPU_COUNT
    /* A process pinned to fewer CPUs (taskset, cgroup cpusets) gets fewer. */
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0 && CPU_COUNT(&set) > 0 &&
        CPU_COUNT(&set) < n)
        n = CPU_COUNT(&set);
#endif
    return n;
}

static void describe(xg_device_desc *desc, int threads)
{
    memset(desc, 0, sizeof *desc);
    snprintf(desc->name, sizeof desc->name, "CPU (%d thread%s, %s)", threads,
             threads == 1 ? "" : "s", CPU_GEMM_NAME);
    desc->is_software = 1;
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    desc->memory_bytes =
        pages > 0 && page > 0 ? (uint64_t)pages * (uint64_t)page : 0;
    bool f16c, bf16;
    xg__half_features(&f16c, &bf16); /* the host conversions' instructions */
    snprintf(desc->features, sizeof desc->features, "%s%s%s",
             f16c ? "f16c" : "", f16c && bf16 ? " " : "",
             bf16 ? "avx512_bf16" : "");
}

static xg_status cpu_enumerate(xg_device_desc *out, int cap, int *count)
{
    *count = 1;
    if (cap >= 1)
        describe(&out[0], cpu_thread_count());
    return XG_OK;
}

static xg_status cpu_open(int index, xg_backend_device **out)
{
    if (index != 0)
        return xg_set_error(XG_ERR_NOT_FOUND,
                            "cpu: no device %d (the CPU backend has one "
                            "device, 0)",
                            index);
    cpu_kernels kernels;
    bool winograd;
    xg_status st = cpu_kernels_from_env(&kernels);
    if (st == XG_OK)
        st = cpu_winograd_from_env(&winograd);
    if (st != XG_OK)
        return st;
    int threads = cpu_thread_count();
    cpu_device *dev = calloc(1, sizeof *dev);
    cpu_pool *pool = dev ? cpu_pool_new(threads) : NULL;
    if (!pool) {
        free(dev);
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "cpu: out of host memory opening the device");
    }
#ifdef XGRAD_HAVE_BLAS
    if (getenv("XGRAD_NUM_THREADS"))
        openblas_set_num_threads(threads);
#endif
    dev->pool = pool;
    dev->kernels = kernels;
    dev->winograd = winograd;
    st = cpu_cache_init(dev);
    if (st != XG_OK) {
        cpu_pool_free(pool);
        free(dev);
        return st;
    }
    dev->base.backend = &xg_backend_cpu;
    dev->base.index = 0;
    describe(&dev->base.desc, cpu_pool_threads(pool));
    *out = &dev->base;
    return XG_OK;
}

static void cpu_close(xg_backend_device *dev)
{
    if (!dev)
        return;
    cpu_pool_free(cpu_dev(dev)->pool);
    cpu_cache_release(cpu_dev(dev));
    free(cpu_dev(dev)->gemm_scratch);
    free(cpu_dev(dev)->conv_scratch);
    free(dev);
}

static xg_status cpu_alloc(xg_backend_device *dev, size_t bytes,
                           xg_buffer **out)
{
    return cpu_cache_alloc(cpu_dev(dev), bytes, out);
}

static void cpu_free(xg_backend_device *dev, xg_buffer *buf)
{
    cpu_cache_free(cpu_dev(dev), buf);
}

static xg_status cpu_upload(xg_backend_device *dev, xg_buffer *buf,
                            size_t offset, const void *src, size_t bytes)
{
    (void)dev;
    memcpy((char *)buf + offset, src, bytes);
    return XG_OK;
}

static xg_status cpu_download(xg_backend_device *dev, xg_buffer *buf,
                              size_t offset, void *dst, size_t bytes)
{
    (void)dev;
    memcpy(dst, (const char *)buf + offset, bytes);
    return XG_OK;
}

/* Kernels run synchronously: by the time a call returns, its work is done. */
static xg_status cpu_sync(xg_backend_device *dev)
{
    (void)dev;
    return XG_OK;
}

/* ---- the dispatch table -------------------------------------------------- */

/* Families whose ops have kernels of their own. */
static xg_status cpu_reduce(xg_backend_device *dev, const xg_kernel_call *c)
{
    return c->op == XG_OP_sum ? cpu_sum(dev, c) : cpu_max(dev, c);
}

static xg_status cpu_rows(xg_backend_device *dev, const xg_kernel_call *c)
{
    switch (c->op) {
    case XG_OP_cross_entropy: return cpu_cross_entropy(dev, c);
    case XG_OP_cross_entropy_backward: return cpu_cross_entropy_backward(dev, c);
    default: return cpu_softmax(dev, c);
    }
}

static xg_status cpu_fill_family(xg_backend_device *dev,
                                 const xg_kernel_call *c)
{
    return c->op == XG_OP_copy ? cpu_copy(dev, c) : cpu_fill(dev, c);
}

static xg_status cpu_conv(xg_backend_device *dev, const xg_kernel_call *c)
{
    switch (c->op) {
    case XG_OP_conv2d_backward_input: return cpu_conv2d_backward_input(dev, c);
    case XG_OP_conv2d_backward_weight: return cpu_conv2d_backward_weight(dev, c);
    default: return cpu_conv2d(dev, c);
    }
}

static xg_status cpu_pooling(xg_backend_device *dev, const xg_kernel_call *c)
{
    switch (c->op) {
    case XG_OP_max_pool2d: return cpu_max_pool2d(dev, c);
    case XG_OP_max_pool2d_backward: return cpu_max_pool2d_backward(dev, c);
    case XG_OP_avg_pool2d: return cpu_avg_pool2d(dev, c);
    default: return cpu_avg_pool2d_backward(dev, c);
    }
}

/* The kernel of each family (XG_FAMILY rows of ops.def). */
#define CPU_KERNEL_UNARY cpu_unary
#define CPU_KERNEL_UNARY_BACKWARD cpu_unary_backward
#define CPU_KERNEL_SCALAR cpu_scalar
#define CPU_KERNEL_BINARY cpu_binary
#define CPU_KERNEL_REDUCE cpu_reduce
#define CPU_KERNEL_REDUCE_BACKWARD cpu_max_backward
#define CPU_KERNEL_ROWS cpu_rows
#define CPU_KERNEL_GEMM cpu_matmul
#define CPU_KERNEL_STRIDED cpu_copy_strided
#define CPU_KERNEL_FILL cpu_fill_family
#define CPU_KERNEL_RNG cpu_rand
#define CPU_KERNEL_ADAM cpu_adam_update
#define CPU_KERNEL_SGD cpu_sgd_update
#define CPU_KERNEL_CONV cpu_conv
#define CPU_KERNEL_POOL cpu_pooling
#define CPU_KERNEL_DROPOUT cpu_dropout
#define CPU_KERNEL_INDEX cpu_index
#define CPU_KERNEL_WHERE cpu_where
#define CPU_KERNEL_ATTENTION cpu_attention
#define CPU_KERNEL_NORM cpu_layer_norm
#define CPU_KERNEL_CAST cpu_cast

/* The reference backend runs every op on f32 element types, casts between
 * every pair of dtypes, and runs on 16-bit values natively the ops that
 * move them, matmul, and the elementwise families (through f32 blocks in
 * cache, cpu_elementwise.c). */
static bool cpu_supports(const xg_backend_device *dev, xg_op op,
                         const xg_dtype *dtypes)
{
    (void)dev;
    if (op == XG_OP_cast) /* every pair of dtypes */
        return (unsigned)dtypes[0] < XG_DTYPE_COUNT &&
               (unsigned)dtypes[1] < XG_DTYPE_COUNT;
    if (xg_op_signature_is(op, dtypes, XG_F32))
        return true;
    /* 16-bit natively: the ops that move values, matmul and the
     * elementwise families; the rest is widened by the core (through the
     * casts and the f32 kernel). */
    if (!xg_op_signature_is(op, dtypes, XG_BF16) &&
        !xg_op_signature_is(op, dtypes, XG_F16))
        return false;
    switch (xg_op_table[op].family) {
    case XG_FAMILY_UNARY:
    case XG_FAMILY_UNARY_BACKWARD:
    case XG_FAMILY_SCALAR:
    case XG_FAMILY_BINARY:
        return true;
    default:
        return op == XG_OP_matmul || op == XG_OP_copy || op == XG_OP_fill ||
               op == XG_OP_copy_strided;
    }
}

const xg_backend xg_backend_cpu = {
    .name = "cpu",
    .enumerate = cpu_enumerate,
    .open = cpu_open,
    .close = cpu_close,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .upload = cpu_upload,
    .download = cpu_download,
    .sync = cpu_sync,
    .supports = cpu_supports,
    .kernels = {
#define XG_FAMILY(name, args) [XG_FAMILY_##name] = CPU_KERNEL_##name,
#include "ops.def"
#undef XG_FAMILY
    },
};
