/* The OpenCL backend's program cache (backends/opencl/ocl_cache.c): a
 * device opened after another has closed takes the kernel program from the
 * cache file instead of compiling it; a file written for another program
 * (another key), a corrupt or truncated file, or a binary the driver
 * rejects, is ignored without error and the device works. And the choice
 * of GEMM: by default xgrad's kernel on CPU devices (PoCL) and CLBlast
 * elsewhere, XGRAD_OPENCL_GEMM overriding it, and the device's name
 * saying which. Each test points XDG_CACHE_HOME at a fresh
 * directory (Criterion runs each test in a process of its own). Skipped
 * when no OpenCL device exists, unless XGRAD_REQUIRE_BACKENDS=1. */
#include <criterion/criterion.h>
#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core_impl.h"
#include "ocl_impl.h"
#include "opencl_backend.h"

typedef struct counts {
    uint64_t loaded, built, saved;
} counts;

static counts now(void)
{
    counts c;
    xg_opencl_cache_counts(&c.loaded, &c.built, &c.saved);
    return c;
}

static char cache_home[256];

/* A fresh, empty XDG_CACHE_HOME for this test. */
static void fresh_cache_home(void)
{
    snprintf(cache_home, sizeof cache_home, "/tmp/xgrad-ocl-cache-XXXXXX");
    cr_assert_not_null(mkdtemp(cache_home));
    cr_assert_eq(setenv("XDG_CACHE_HOME", cache_home, 1), 0);
}

/* Opens the first OpenCL device, checks that 1 + 2 gives 3 on it and
 * closes it; skips the test when there is none. */
static void open_run_close(void)
{
    xg_device *dev = NULL;
    if (xg_device_open("opencl", &dev) != XG_OK) {
        const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
        if (req && strcmp(req, "1") == 0)
            cr_assert_fail("no OpenCL device: %s", xg_last_error());
        cr_skip_test("no OpenCL device: %s", xg_last_error());
    }
    xg_device_set_current(dev);
    xg_tensor *x = xg_full(XG_SHAPE(300), 1.0f);
    xg_tensor *y = xg_add_scalar(x, 2.0f);
    float v[300] = {0};
    cr_assert_eq(xg_tensor_read(y, v, sizeof v), XG_OK, "%s",
                 xg_last_error());
    cr_expect_eq(v[0], 3.0f);
    cr_expect_eq(v[299], 3.0f);
    xg_tensor_free(y);
    xg_tensor_free(x);
    xg_device_set_current(NULL);
    xg_device_close(dev);
}

/* The path of the one cache file (there must be exactly one). */
static void cache_file(char *path, size_t cap)
{
    char dir[300];
    snprintf(dir, sizeof dir, "%s/xgrad", cache_home);
    DIR *d = opendir(dir);
    cr_assert_not_null(d, "no cache directory %s", dir);
    int found = 0;
    for (struct dirent *e; (e = readdir(d));)
        if (strncmp(e->d_name, "opencl-", 7) == 0 &&
            strstr(e->d_name, ".bin") &&
            !strstr(e->d_name, ".tmp")) {
            snprintf(path, cap, "%s/%s", dir, e->d_name);
            found++;
        }
    closedir(d);
    cr_assert_eq(found, 1, "%d cache files in %s", found, dir);
}

static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    cr_assert_gt(n, 32);
    unsigned char *data = malloc((size_t)n);
    cr_assert_eq(fread(data, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *size = (size_t)n;
    return data;
}

/* Removes the test's cache directory. */
static void remove_cache_home(void)
{
    char path[600];
    cache_file(path, sizeof path);
    remove(path);
    snprintf(path, sizeof path, "%s/xgrad", cache_home);
    rmdir(path);
    rmdir(cache_home);
}

static void write_all(const char *path, const void *data, size_t n)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, n, f), n);
    cr_assert_eq(fclose(f), 0);
}

/* A first run that builds and saves the program; returns the file. */
static unsigned char *first_run(char *path, size_t cap, size_t *size)
{
    fresh_cache_home();
    counts c0 = now();
    open_run_close();
    counts c1 = now();
    cr_assert_eq(c1.built - c0.built, 1, "built from source");
    cr_assert_eq(c1.loaded - c0.loaded, 0, "nothing to load yet");
    cr_assert_eq(c1.saved - c0.saved, 1, "the close wrote the cache");
    cache_file(path, cap);
    return read_all(path, size);
}

/* A run that must build from source (the file is not used) and works. */
static void expect_rebuilt(const char *why)
{
    counts c0 = now();
    open_run_close();
    counts c1 = now();
    cr_expect_eq(c1.loaded - c0.loaded, 0, "%s: not loaded", why);
    cr_expect_eq(c1.built - c0.built, 1, "%s: built from source", why);
    cr_expect_eq(c1.saved - c0.saved, 1, "%s: the file was replaced", why);
}

Test(opencl, cache_is_used_by_the_next_open)
{
    char path[600];
    size_t size;
    free(first_run(path, sizeof path, &size));
    counts c0 = now();
    open_run_close();
    counts c1 = now();
    cr_expect_eq(c1.loaded - c0.loaded, 1, "loaded from %s", path);
    cr_expect_eq(c1.built - c0.built, 0, "not compiled again");
    /* and again, from the file this close may have rewritten */
    open_run_close();
    cr_expect_eq(now().loaded - c1.loaded, 1, "loaded from %s", path);
    remove_cache_home();
}

Test(opencl, cache_of_another_program_is_ignored)
{
    char path[600];
    size_t size;
    unsigned char *data = first_run(path, sizeof path, &size);
    data[8] ^= 1; /* the key: another source, options or driver */
    write_all(path, data, size);
    expect_rebuilt("another key");
    free(data);
    /* the file written then is this program's again */
    counts c0 = now();
    open_run_close();
    cr_expect_eq(now().loaded - c0.loaded, 1);
    remove_cache_home();
}

Test(opencl, corrupt_cache_falls_back_to_source)
{
    char path[600];
    size_t size;
    unsigned char *data = first_run(path, sizeof path, &size);
    unsigned char *garbage = malloc(size);
    for (size_t i = 0; i < size; i++)
        garbage[i] = (unsigned char)(i * 2654435761u >> 13);
    write_all(path, garbage, size);
    expect_rebuilt("garbage");

    write_all(path, data, size / 2);
    expect_rebuilt("truncated");

    write_all(path, data, 5);
    expect_rebuilt("shorter than its header");

    memcpy(garbage, data, 32); /* a good header, a damaged payload */
    write_all(path, garbage, size);
    expect_rebuilt("damaged payload");

    /* a payload whose checksum holds but that the driver rejects */
    uint64_t sum = 0xcbf29ce484222325ull; /* FNV-1a, as the header's */
    for (size_t i = 32; i < size; i++)
        sum = (sum ^ garbage[i]) * 0x100000001b3ull;
    memcpy(garbage + 24, &sum, sizeof sum);
    write_all(path, garbage, size);
    expect_rebuilt("not a binary of this driver");
    free(garbage);
    free(data);
    remove_cache_home();
}

Test(opencl, bad_gemm_choice_is_an_error)
{
    cr_assert_eq(setenv("XGRAD_OPENCL_GEMM", "cublas", 1), 0);
    xg_device *dev = NULL;
    xg_status st = xg_device_open("opencl", &dev);
    if (st == XG_ERR_NO_DEVICE)
        cr_skip_test("no OpenCL device: %s", xg_last_error());
    cr_expect_eq(st, XG_ERR_INVALID_ARG, "%s", xg_last_error());
    cr_expect_null(dev);
    cr_expect_not_null(strstr(xg_last_error(), "XGRAD_OPENCL_GEMM"), "%s",
                       xg_last_error());
}

/* Opens the first OpenCL device with XGRAD_OPENCL_GEMM=`gemm` (NULL:
 * unset) and checks that it runs GEMMs on CLBlast when `clblast` is 1, on
 * xgrad's kernel when 0, or, when -1, on xgrad's kernel exactly when it is
 * a CPU device; and that its name says so. */
static void expect_gemm(const char *gemm, int clblast)
{
    if (gemm)
        cr_assert_eq(setenv("XGRAD_OPENCL_GEMM", gemm, 1), 0);
    else
        cr_assert_eq(unsetenv("XGRAD_OPENCL_GEMM"), 0);
    xg_device *dev = NULL;
    xg_status st = xg_device_open("opencl", &dev);
    if (st == XG_ERR_NO_DEVICE)
        cr_skip_test("no OpenCL device: %s", xg_last_error());
    cr_assert_eq(st, XG_OK, "%s", xg_last_error());
    ocl_device *d = ocl_dev(dev->bdev);
    if (clblast < 0) {
        cl_device_type type = 0;
        cr_assert_eq(clGetDeviceInfo(d->device, CL_DEVICE_TYPE, sizeof type,
                                     &type, NULL),
                     CL_SUCCESS);
        clblast = (type & CL_DEVICE_TYPE_CPU) ? 0 : 1;
    }
    cr_expect_eq(d->clblast, clblast == 1, "XGRAD_OPENCL_GEMM=%s: %s",
                 gemm ? gemm : "(unset)", xg_device_name(dev));
    const char *says = clblast ? ", CLBlast GEMM)" : ", xgrad GEMM)";
    cr_expect_not_null(strstr(xg_device_name(dev), says), "%s lacks %s",
                       xg_device_name(dev), says);
    xg_device_close(dev);
}

Test(opencl, default_gemm_is_xgrads_on_cpu_devices)
{
    expect_gemm(NULL, -1);
    expect_gemm("", -1);
}

Test(opencl, gemm_choice_overrides_the_default)
{
    expect_gemm("clblast", 1);
    expect_gemm("xgrad", 0);
}
