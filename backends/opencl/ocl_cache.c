/* The program binary cache: the driver's binary of xgrad's kernel program
 * (CL_PROGRAM_BINARIES), kept on disk so that a later open skips compiling
 * the OpenCL C sources. One file per device and driver,
 *   $XDG_CACHE_HOME/xgrad/opencl-<identity>.bin
 * ($HOME/.cache when XDG_CACHE_HOME is unset, as the Vulkan pipeline
 * cache), where <identity> hashes the device's name and vendor, the driver
 * and device versions and the platform's name and version. The file starts
 * with a header:
 *   magic "XGRADCL1", key, payload bytes, payload checksum (u64 each)
 * where the key hashes the identity, every source file and the build
 * options, and the checksum is FNV-1a over the payload. A file whose
 * header does not match (another driver, another xgrad, a truncated or
 * corrupt file) is ignored and replaced at close; so is one the driver
 * rejects. Failures to read or write the file are harmless: the program
 * is then built from source.
 *
 * The binary is written at close, not after the build: drivers that
 * compile work-group code lazily (PoCL's CPU device compiles each kernel
 * for its work-group size on first launch) include that code in the binary
 * they return then. It is rewritten only when it changed.
 */
#include "opencl_backend.h"
#include "ocl_impl.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

extern const unsigned char *const ocl_src_all[];
extern const size_t ocl_src_count;

#define CACHE_MAGIC "XGRADCL1"
#define CACHE_HEADER_BYTES 32
/* Cache files larger than this are not read. */
#define CACHE_MAX_BYTES ((size_t)256 << 20)

static atomic_ullong n_loaded, n_built, n_saved;

void xg_opencl_cache_counts(uint64_t *loaded, uint64_t *built,
                            uint64_t *saved)
{
    if (loaded)
        *loaded = atomic_load(&n_loaded);
    if (built)
        *built = atomic_load(&n_built);
    if (saved)
        *saved = atomic_load(&n_saved);
}

void ocl_cache_count_build(void)
{
    atomic_fetch_add(&n_built, 1);
}

/* ---- keys -------------------------------------------------------------- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const void *data, size_t n)
{
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++)
        h = (h ^ p[i]) * FNV_PRIME;
    return h;
}

/* Hashes a string and its terminating NUL, so that ("ab", "c") and
 * ("a", "bc") differ. */
static uint64_t fnv_str(uint64_t h, const char *s)
{
    return fnv(h, s, strlen(s) + 1);
}

static uint64_t hash_device_info(uint64_t h, cl_device_id dev,
                                 cl_device_info what)
{
    char s[1024] = "";
    clGetDeviceInfo(dev, what, sizeof s - 1, s, NULL);
    return fnv_str(h, s);
}

static uint64_t hash_platform_info(uint64_t h, cl_platform_id p,
                                   cl_platform_info what)
{
    char s[1024] = "";
    clGetPlatformInfo(p, what, sizeof s - 1, s, NULL);
    return fnv_str(h, s);
}

/* The device and driver, and (into *key) those plus the program. */
static uint64_t identity(const ocl_device *d, const char *options,
                         uint64_t *key)
{
    cl_platform_id platform = NULL;
    clGetDeviceInfo(d->device, CL_DEVICE_PLATFORM, sizeof platform, &platform,
                    NULL);
    uint64_t h = FNV_OFFSET;
    h = hash_device_info(h, d->device, CL_DEVICE_NAME);
    h = hash_device_info(h, d->device, CL_DEVICE_VENDOR);
    h = hash_device_info(h, d->device, CL_DRIVER_VERSION);
    h = hash_device_info(h, d->device, CL_DEVICE_VERSION);
    h = hash_platform_info(h, platform, CL_PLATFORM_NAME);
    h = hash_platform_info(h, platform, CL_PLATFORM_VERSION);
    uint64_t k = fnv_str(h, options);
    for (size_t i = 0; i < ocl_src_count; i++)
        k = fnv_str(k, (const char *)ocl_src_all[i]);
    *key = k;
    return h;
}

/* ---- the file ------------------------------------------------------------ */

static bool cache_path(const ocl_device *d, char *path, size_t cap)
{
    char name[64];
    snprintf(name, sizeof name, "opencl-%016llx.bin",
             (unsigned long long)d->cache_identity);
    return xg__cache_file_path(name, path, cap);
}

/* The payload of a file written for `key`, or NULL. */
static const unsigned char *check_file(const unsigned char *data, size_t size,
                                       uint64_t key, size_t *payload_size,
                                       uint64_t *sum)
{
    uint64_t h[3];
    if (size <= CACHE_HEADER_BYTES || memcmp(data, CACHE_MAGIC, 8) != 0)
        return NULL;
    memcpy(h, data + 8, sizeof h);
    const unsigned char *payload = data + CACHE_HEADER_BYTES;
    size_t n = size - CACHE_HEADER_BYTES;
    if (h[0] != key || h[1] != (uint64_t)n || h[2] != fnv(FNV_OFFSET, payload, n))
        return NULL;
    *payload_size = n;
    *sum = h[2];
    return payload;
}

bool ocl_cache_load(ocl_device *d, const char *options)
{
    d->cache_identity = identity(d, options, &d->cache_key);
    char path[1024];
    size_t size = 0, n = 0;
    unsigned char *data =
        cache_path(d, path, sizeof path)
            ? xg__cache_file_read(path, CACHE_MAX_BYTES, &size)
            : NULL;
    uint64_t sum = 0;
    const unsigned char *payload =
        data ? check_file(data, size, d->cache_key, &n, &sum) : NULL;
    cl_int err = CL_INVALID_BINARY, status = CL_INVALID_BINARY;
    cl_program program = NULL;
    if (payload)
        program = clCreateProgramWithBinary(d->context, 1, &d->device, &n,
                                            &payload, &status, &err);
    free(data);
    if (program && (err != CL_SUCCESS || status != CL_SUCCESS ||
                    clBuildProgram(program, 1, &d->device, options, NULL,
                                   NULL) != CL_SUCCESS)) {
        clReleaseProgram(program);
        program = NULL;
    }
    if (!program)
        return false;
    d->program = program;
    d->cache_size = n;
    d->cache_sum = sum;
    atomic_fetch_add(&n_loaded, 1);
    return true;
}

/* Writes header and payload (see xg__cache_file_write: never half a
 * file). */
static void write_file(const ocl_device *d, const unsigned char *payload,
                       size_t n, uint64_t sum)
{
    char path[1024];
    uint64_t h[3] = {d->cache_key, (uint64_t)n, sum};
    const void *parts[3] = {CACHE_MAGIC, h, payload};
    size_t sizes[3] = {8, sizeof h, n};
    if (cache_path(d, path, sizeof path) &&
        xg__cache_file_write(path, parts, sizes, 3))
        atomic_fetch_add(&n_saved, 1);
}

void ocl_cache_save(ocl_device *d)
{
    size_t n = 0;
    if (!d->program ||
        clGetProgramInfo(d->program, CL_PROGRAM_BINARY_SIZES, sizeof n, &n,
                         NULL) != CL_SUCCESS ||
        n == 0 || n > CACHE_MAX_BYTES)
        return;
    unsigned char *payload = malloc(n);
    if (payload &&
        clGetProgramInfo(d->program, CL_PROGRAM_BINARIES, sizeof payload,
                         &payload, NULL) == CL_SUCCESS) {
        uint64_t sum = fnv(FNV_OFFSET, payload, n);
        if (n != d->cache_size || sum != d->cache_sum)
            write_file(d, payload, n, sum);
    }
    free(payload);
}
