/* The OpenCL backend's devices (enumerate, open, close, sync) and its
 * dispatch table. The kernel program comes from the program cache when it
 * can (ocl_cache.c).
 *
 * Device indices: every device of every platform, in the ICD loader's
 * platform order and then each platform's device order.
 */
#include "ocl_impl.h"

#include <CL/cl_ext.h>
#include <clblast_c.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The kernel files, embedded by tools/embed.c in the order meson.build lists
 * them (common.cl first) and compiled as one program. */
extern const unsigned char *const ocl_src_all[];
extern const size_t ocl_src_count;

#define OCL_STR(x) #x
#define OCL_XSTR(x) OCL_STR(x)
#define OCL_BUILD_OPTIONS "-cl-std=CL1.2 -DXG_WG_MAX=" OCL_XSTR(OCL_WG_MAX)

/* Work-groups per compute unit in a grid-stride launch: enough to hide
 * memory latency on GPUs, few enough to keep CPU devices cheap. */
#define OCL_GROUPS_PER_CU 16

/* The kernel of each op is named xg_<op> (where ocl_op_has_kernel). */
static const char *const kernel_names[XG_OP_COUNT] = {
#define XG_OP(name, family, in, out, backward) [XG_OP_##name] = "xg_" #name,
#include "ops.def"
#undef XG_OP
};

static const char *const helper_names[OCL_HELPER_COUNT] = {
#define OCL_HELPER_NAME(name) [OCL_HELPER_##name] = "xg_" #name,
    OCL_HELPERS(OCL_HELPER_NAME)
#undef OCL_HELPER_NAME
};

/* Open devices: CLBlast's program cache is cleared when the last closes. */
static atomic_int open_devices;

/* ---- enumeration ------------------------------------------------------ */

static xg_status list_platforms(cl_platform_id **out, cl_uint *count)
{
    cl_uint n = 0;
    cl_int err = clGetPlatformIDs(0, NULL, &n);
    if (err == CL_PLATFORM_NOT_FOUND_KHR || (err == CL_SUCCESS && n == 0))
        return xg_set_error(XG_ERR_NO_DEVICE,
                            "opencl: no OpenCL platform found (install an ICD "
                            "such as pocl-opencl-icd or your GPU vendor's "
                            "driver)");
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clGetPlatformIDs");
    *out = malloc(n * sizeof **out);
    if (!*out)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    err = clGetPlatformIDs(n, *out, count);
    if (err != CL_SUCCESS) {
        free(*out);
        return ocl_fail(err, "clGetPlatformIDs");
    }
    return XG_OK;
}

/* Appends the devices of `platform` to the array *ids of *count. */
static xg_status append_devices(cl_platform_id platform, cl_device_id **ids,
                                int *count)
{
    cl_uint n = 0;
    cl_int err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, 0, NULL, &n);
    if (err == CL_DEVICE_NOT_FOUND || (err == CL_SUCCESS && n == 0))
        return XG_OK;
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clGetDeviceIDs");
    cl_device_id *grown = realloc(*ids, (*count + n) * sizeof *grown);
    if (!grown)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    *ids = grown;
    err = clGetDeviceIDs(platform, CL_DEVICE_TYPE_ALL, n, grown + *count, &n);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clGetDeviceIDs");
    *count += (int)n;
    return XG_OK;
}

/* Every device, in index order. The caller frees *ids. */
static xg_status list_devices(cl_device_id **ids, int *count)
{
    cl_platform_id *platforms = NULL;
    cl_uint n_platforms = 0;
    *ids = NULL;
    *count = 0;
    xg_status st = list_platforms(&platforms, &n_platforms);
    for (cl_uint p = 0; st == XG_OK && p < n_platforms; p++)
        st = append_devices(platforms[p], ids, count);
    free(platforms);
    if (st != XG_OK) {
        free(*ids);
        *ids = NULL;
    }
    return st;
}

/* Where GEMMs run on a device of `type` given XGRAD_OPENCL_GEMM's value
 * `g` (NULL when unset): 1 CLBlast, 0 xgrad's kernel (kernels/gemm.cl), -1
 * when `g` names neither. By default xgrad's kernel on CPU devices (PoCL),
 * CLBlast elsewhere; see ocl_gemm.c for why. */
static int gemm_choice(cl_device_type type, const char *g)
{
    if (!g || !*g)
        return (type & CL_DEVICE_TYPE_CPU) ? 0 : 1;
    if (strcmp(g, "clblast") == 0)
        return 1;
    return strcmp(g, "xgrad") == 0 ? 0 : -1;
}

/* Whether the space-separated list `list` holds `word`. */
static bool has_word(const char *list, const char *word)
{
    size_t n = strlen(word);
    for (const char *p = strstr(list, word); p; p = strstr(p + 1, word))
        if ((p == list || p[-1] == ' ') && (p[n] == ' ' || p[n] == '\0'))
            return true;
    return false;
}

/* "device name (platform name, GEMM)", software flag and memory size,
 * where GEMM says which one gemm_choice picks ("CLBlast GEMM" or "xgrad
 * GEMM"; left out when XGRAD_OPENCL_GEMM is malformed), and the 16-bit
 * feature (cl_khr_fp16) when the device has it. */
static void describe_device(cl_device_id id, xg_device_desc *desc)
{
    memset(desc, 0, sizeof *desc);
    char name[1024] = "?", platform_name[1024] = "?";
    cl_platform_id platform = NULL;
    cl_device_type type = 0;
    cl_ulong memory = 0;
    clGetDeviceInfo(id, CL_DEVICE_NAME, sizeof name, name, NULL);
    clGetDeviceInfo(id, CL_DEVICE_PLATFORM, sizeof platform, &platform, NULL);
    clGetPlatformInfo(platform, CL_PLATFORM_NAME, sizeof platform_name,
                      platform_name, NULL);
    clGetDeviceInfo(id, CL_DEVICE_TYPE, sizeof type, &type, NULL);
    clGetDeviceInfo(id, CL_DEVICE_GLOBAL_MEM_SIZE, sizeof memory, &memory,
                    NULL);
    /* The 16-bit feature xgrad-info shows: half arithmetic in kernels. */
    size_t ext_size = 0;
    if (clGetDeviceInfo(id, CL_DEVICE_EXTENSIONS, 0, NULL, &ext_size) ==
            CL_SUCCESS &&
        ext_size > 0) {
        char *ext = malloc(ext_size + 1);
        if (ext && clGetDeviceInfo(id, CL_DEVICE_EXTENSIONS, ext_size, ext,
                                   NULL) == CL_SUCCESS) {
            ext[ext_size] = '\0';
            if (has_word(ext, "cl_khr_fp16"))
                snprintf(desc->features, sizeof desc->features,
                         "cl_khr_fp16");
        }
        free(ext);
    }
    int gemm = gemm_choice(type, getenv("XGRAD_OPENCL_GEMM"));
    snprintf(desc->name, sizeof desc->name, "%.170s (%.60s%s)", name,
             platform_name,
             gemm < 0 ? "" : gemm ? ", CLBlast GEMM" : ", xgrad GEMM");
    desc->is_software = (type & CL_DEVICE_TYPE_CPU) != 0;
    desc->memory_bytes = memory;
}

static xg_status ocl_enumerate(xg_device_desc *out, int cap, int *count)
{
    cl_device_id *ids;
    int n;
    xg_status st = list_devices(&ids, &n);
    if (st != XG_OK)
        return st;
    for (int i = 0; i < n && i < cap; i++)
        describe_device(ids[i], &out[i]);
    *count = n;
    free(ids);
    return XG_OK;
}

/* ---- open and close ---------------------------------------------------- */

/* Context, in-order queue and the limits launches and allocations need. */
static xg_status create_queue(ocl_device *d)
{
    cl_int err;
    d->context = clCreateContext(NULL, 1, &d->device, NULL, NULL, &err);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clCreateContext");
    d->queue = clCreateCommandQueue(d->context, d->device, 0, &err);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clCreateCommandQueue");
    cl_uint units = 1;
    err = clGetDeviceInfo(d->device, CL_DEVICE_MAX_COMPUTE_UNITS, sizeof units,
                          &units, NULL);
    if (err == CL_SUCCESS)
        err = clGetDeviceInfo(d->device, CL_DEVICE_MAX_MEM_ALLOC_SIZE,
                              sizeof d->max_alloc, &d->max_alloc, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clGetDeviceInfo");
    d->max_groups = (size_t)(units ? units : 1) * OCL_GROUPS_PER_CU;
    return XG_OK;
}

/* XG_ERR_BACKEND with the compiler's build log. */
static xg_status build_failure(ocl_device *d)
{
    size_t size = 0;
    clGetProgramBuildInfo(d->program, d->device, CL_PROGRAM_BUILD_LOG, 0, NULL,
                          &size);
    char *log = malloc(size + 1);
    if (!log)
        return xg_set_error(XG_ERR_BACKEND, "opencl: building the kernels "
                                            "for %s failed (no build log)",
                            d->base.desc.name);
    log[0] = '\0';
    clGetProgramBuildInfo(d->program, d->device, CL_PROGRAM_BUILD_LOG, size,
                          log, NULL);
    log[size] = '\0';
    xg_status st = xg_set_error(XG_ERR_BACKEND,
                                "opencl: building the kernels for %s "
                                "failed:\n%s",
                                d->base.desc.name, log);
    free(log);
    return st;
}

static xg_status build_program(ocl_device *d)
{
    cl_int err;
    d->program = clCreateProgramWithSource(d->context, (cl_uint)ocl_src_count,
                                           (const char **)ocl_src_all, NULL,
                                           &err);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clCreateProgramWithSource");
    ocl_cache_count_build();
    err = clBuildProgram(d->program, 1, &d->device, OCL_BUILD_OPTIONS, NULL,
                         NULL);
    if (err == CL_BUILD_PROGRAM_FAILURE)
        return build_failure(d);
    return err == CL_SUCCESS ? XG_OK : ocl_fail(err, "clBuildProgram");
}

/* Kernel `name` and the largest power-of-two work-group it runs with. */
static xg_status create_kernel(ocl_device *d, const char *name,
                               cl_kernel *kernel, size_t *wg_size)
{
    cl_int err;
    *kernel = clCreateKernel(d->program, name, &err);
    if (err != CL_SUCCESS)
        return ocl_fail(err, name);
    size_t limit = 1;
    err = clGetKernelWorkGroupInfo(*kernel, d->device,
                                   CL_KERNEL_WORK_GROUP_SIZE, sizeof limit,
                                   &limit, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(err, name);
    size_t wg = 1;
    while (wg * 2 <= limit && wg * 2 <= OCL_WG_MAX)
        wg *= 2;
    *wg_size = wg;
    return XG_OK;
}

/* Every op's kernel and every helper kernel. */
static xg_status create_kernels(ocl_device *d)
{
    xg_status st = XG_OK;
    for (int op = 0; st == XG_OK && op < XG_OP_COUNT; op++)
        if (ocl_op_has_kernel(xg_op_table[op].family))
            st = create_kernel(d, kernel_names[op], &d->kernels[op],
                               &d->wg_size[op]);
    for (int op = 0; st == XG_OK && op < XG_OP_COUNT; op++)
        for (int t = 0; st == XG_OK && t < 2 &&
                        ocl_op_has_16bit_kernels(xg_op_table[op].family);
             t++) {
            char name[96];
            snprintf(name, sizeof name, "%s_%s", kernel_names[op],
                     t == 0 ? "bf16" : "f16");
            st = create_kernel(d, name, &d->kernels16[t][op],
                               &d->wg_size16[t][op]);
        }
    for (int h = 0; st == XG_OK && h < OCL_HELPER_COUNT; h++)
        st = create_kernel(d, helper_names[h], &d->helpers[h],
                           &d->helper_wg_size[h]);
    return st;
}

/* Releases the program and its kernels. */
static void release_program(ocl_device *d)
{
    for (int op = 0; op < XG_OP_COUNT; op++)
        if (d->kernels[op])
            clReleaseKernel(d->kernels[op]);
    for (int t = 0; t < 2; t++)
        for (int op = 0; op < XG_OP_COUNT; op++)
            if (d->kernels16[t][op])
                clReleaseKernel(d->kernels16[t][op]);
    for (int h = 0; h < OCL_HELPER_COUNT; h++)
        if (d->helpers[h])
            clReleaseKernel(d->helpers[h]);
    if (d->program)
        clReleaseProgram(d->program);
    memset(d->kernels, 0, sizeof d->kernels);
    memset(d->kernels16, 0, sizeof d->kernels16);
    memset(d->helpers, 0, sizeof d->helpers);
    d->program = NULL;
}

/* The program from the cache file if it holds one for this device, driver
 * and source, else built from source; then its kernels. */
static xg_status load_program(ocl_device *d)
{
    if (ocl_cache_load(d, OCL_BUILD_OPTIONS)) {
        if (create_kernels(d) == XG_OK)
            return XG_OK;
        release_program(d); /* a binary without them: build instead */
        d->cache_size = 0;
    }
    xg_status st = build_program(d);
    return st == XG_OK ? create_kernels(d) : st;
}

/* Waits for queued work and releases everything the device holds. Accepts
 * a partly opened device, and NULL. */
static void release_device(ocl_device *d)
{
    if (!d)
        return;
    if (d->queue)
        clFinish(d->queue);
    ocl_release_cached(d);
    if (d->opened)
        ocl_cache_save(d);
    release_program(d);
    if (d->queue)
        clReleaseCommandQueue(d->queue);
    if (d->context)
        clReleaseContext(d->context);
    free(d);
}

/* Where GEMMs run (gemm_choice; the device's name says it). */
static xg_status choose_gemm(ocl_device *d)
{
    cl_device_type type = 0;
    cl_int err = clGetDeviceInfo(d->device, CL_DEVICE_TYPE, sizeof type,
                                 &type, NULL);
    if (err != CL_SUCCESS)
        return ocl_fail(err, "clGetDeviceInfo");
    const char *g = getenv("XGRAD_OPENCL_GEMM");
    int gemm = gemm_choice(type, g);
    if (gemm < 0)
        return xg_set_error(XG_ERR_INVALID_ARG, "XGRAD_OPENCL_GEMM='%s': "
                            "expected clblast or xgrad", g);
    d->clblast = gemm == 1;
    d->cpu = (type & CL_DEVICE_TYPE_CPU) != 0;
    return XG_OK;
}

static xg_status ocl_open(int index, xg_backend_device **out)
{
    cl_device_id *ids = NULL;
    int n = 0;
    ocl_device *d = NULL;
    xg_status st = list_devices(&ids, &n);
    if (st != XG_OK)
        goto done;
    if (index < 0 || index >= n) {
        st = xg_set_error(XG_ERR_NOT_FOUND, "opencl: no device %d (%d found)",
                          index, n);
        goto done;
    }
    d = calloc(1, sizeof *d);
    if (!d) {
        st = xg_set_error(XG_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
        goto done;
    }
    d->base.backend = &xg_backend_opencl;
    d->base.index = index;
    d->device = ids[index];
    describe_device(d->device, &d->base.desc);
    st = create_queue(d);
    if (st == XG_OK)
        st = load_program(d);
    if (st == XG_OK)
        st = choose_gemm(d);
    if (st == XG_OK) {
        d->opened = true;
        atomic_fetch_add(&open_devices, 1);
        *out = &d->base;
        d = NULL;
    }
done:
    release_device(d);
    free(ids);
    return st;
}

static void ocl_close(xg_backend_device *dev)
{
    if (!dev)
        return;
    release_device(ocl_dev(dev));
    /* CLBlast caches programs per context, which keeps contexts alive. */
    if (atomic_fetch_sub(&open_devices, 1) == 1)
        CLBlastClearCache();
}

static xg_status ocl_sync(xg_backend_device *dev)
{
    cl_int err = clFinish(ocl_dev(dev)->queue);
    return err == CL_SUCCESS ? XG_OK : ocl_fail(err, "sync");
}

/* ---- the dispatch table ------------------------------------------------- */

/* Every op runs on f32 element types (OpenCL 1.2 core); casts between
 * every pair of dtypes (xg_cast); fill, copy and copy_strided also on bf16
 * and f16 (bit copies, kernels/half.cl); matmul also on bf16 and f16 (f32
 * accumulation, kernels/gemm.cl); the UNARY, UNARY_BACKWARD, SCALAR and
 * BINARY families also on bf16 and f16 (f32 arithmetic, the widened
 * path's bits: kernels/elementwise.cl, kernels/binary.cl). The core widens
 * every other op on 16-bit elements through casts to f32. */
static bool ocl_supports(const xg_backend_device *dev, xg_op op,
                         const xg_dtype *dtypes)
{
    (void)dev;
    bool half = xg_op_signature_is(op, dtypes, XG_BF16) ||
                xg_op_signature_is(op, dtypes, XG_F16);
    if (half && (op == XG_OP_matmul || /* kernels/gemm.cl's 16-bit forms */
                 ocl_op_has_16bit_kernels(xg_op_table[op].family)))
        return true;
    return xg_op_f32_or_16bit_move(op, dtypes);
}

const xg_backend xg_backend_opencl = {
    .name = "opencl",
    .enumerate = ocl_enumerate,
    .open = ocl_open,
    .close = ocl_close,
    .alloc = ocl_alloc,
    .free = ocl_free,
    .upload = ocl_upload,
    .download = ocl_download,
    .sync = ocl_sync,
    .supports = ocl_supports,
    .kernels = {
#define XG_FAMILY(name, args) [XG_FAMILY_##name] = OCL_LAUNCHER_##name,
#include "ops.def"
#undef XG_FAMILY
    },
};
