/* Backend registry, device selection (XGRAD_BACKEND), the device memory
 * account; kernel launches are in launch.c. */
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"

/* Built-in backends, "cpu" first; "auto" tries them from the end. */
static const xg_backend *const backends[] = {
    &xg_backend_cpu,
#ifdef XGRAD_HAVE_OPENCL
    &xg_backend_opencl,
#endif
#ifdef XGRAD_HAVE_VULKAN
    &xg_backend_vulkan,
#endif
};
enum { N_BACKENDS = sizeof backends / sizeof backends[0] };
enum { MAX_LISTED = 64 };

static pthread_mutex_t default_lock = PTHREAD_MUTEX_INITIALIZER;
static xg_device *default_device;
/* Why the default device could not be opened, kept until xg_shutdown so
 * that later calls fail at once instead of enumerating drivers again. */
static xg_status default_failure;
static char default_failure_message[512];
static _Thread_local xg_device *current_device;
/* The device a spec without ":INDEX" opens, modulo the backend's count: 0,
 * or the process's local rank once xg_dist_init has run. */
static int default_index;

void xg__device_set_default_index(int index)
{
    default_index = index > 0 ? index : 0;
}

int xg_backends(const char **names, int cap)
{
    for (int i = 0; i < N_BACKENDS && i < cap; i++)
        names[i] = backends[i]->name;
    return N_BACKENDS;
}

static const xg_backend *find_backend(const char *name, size_t len)
{
    for (int i = 0; i < N_BACKENDS; i++)
        if (strlen(backends[i]->name) == len &&
            strncmp(backends[i]->name, name, len) == 0)
            return backends[i];
    return NULL;
}

static xg_status unknown_backend(const char *spec)
{
    char list[256] = "";
    for (int i = 0; i < N_BACKENDS; i++) {
        strncat(list, i ? ", " : "", sizeof list - strlen(list) - 1);
        strncat(list, backends[i]->name, sizeof list - strlen(list) - 1);
    }
    return xg_set_error(XG_ERR_NOT_FOUND,
                        "unknown backend '%s': built backends are %s, "
                        "and auto", spec, list);
}

xg_status xg_backend_devices(const char *backend, xg_device_info *out,
                             int cap, int *count)
{
    if (!backend || !count || (cap > 0 && !out))
        return xg_set_error(XG_ERR_INVALID_ARG,
                            "backend_devices: NULL argument");
    const xg_backend *be = find_backend(backend, strlen(backend));
    if (!be)
        return unknown_backend(backend);
    xg_device_desc descs[MAX_LISTED];
    memset(descs, 0, sizeof descs); /* a backend may leave fields unset */
    int n = 0;
    xg_status st = be->enumerate(descs, MAX_LISTED, &n);
    if (st != XG_OK)
        return st;
    for (int i = 0; i < n && i < cap && i < MAX_LISTED; i++) {
        memcpy(out[i].name, descs[i].name, sizeof out[i].name);
        out[i].is_software = descs[i].is_software != 0;
        out[i].memory_bytes = descs[i].memory_bytes;
        memcpy(out[i].features, descs[i].features, sizeof out[i].features);
        out[i].features[sizeof out[i].features - 1] = '\0';
    }
    *count = n;
    return XG_OK;
}

/* XGRAD_MEMORY_LIMIT: bytes, with an optional K, M or G (powers of 1024);
 * 0 when unset. */
static xg_status env_memory_limit(uint64_t *limit)
{
    *limit = 0;
    xg_status st = xg__env_bytes("XGRAD_MEMORY_LIMIT", false, limit);
    return st == XG_ERR_NOT_FOUND ? XG_OK : st;
}

/* XGRAD_WIDEN: "all" (every 16-bit op through f32 where the device can),
 * or unset, "" or "native" (only what the device cannot run natively). */
static xg_status env_widen(bool *all)
{
    static const char *const names[] = {"native", "all"};
    int k;
    xg_status st = xg__env_choice("XGRAD_WIDEN", names, 2, 0, &k);
    *all = k == 1;
    return st;
}

static xg_status open_index(const xg_backend *be, int index, xg_device **out)
{
    uint64_t limit;
    bool widen_all;
    xg_status st = env_memory_limit(&limit);
    if (st == XG_OK)
        st = env_widen(&widen_all);
    if (st != XG_OK)
        return st;
    xg_device *dev = calloc(1, sizeof *dev);
    if (!dev)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "device_open: out of memory");
    st = be->open(index, &dev->bdev);
    if (st != XG_OK) {
        free(dev);
        return st;
    }
    dev->limit = dev->bdev->desc.memory_bytes;
    if (limit && (!dev->limit || limit < dev->limit))
        dev->limit = limit;
    dev->backend = be;
    dev->widen_all = widen_all;
    dev->refs = 1;
    pthread_mutex_init(&dev->lock, NULL);
    *out = dev;
    return XG_OK;
}

/* Lists a backend's devices into the error message after `what`. */
static xg_status bad_index(const xg_backend *be, const xg_device_desc *descs,
                           int n, const char *what)
{
    char list[1024] = "";
    for (int i = 0; i < n && i < MAX_LISTED; i++) {
        char item[300];
        snprintf(item, sizeof item, "%s%s:%d %.200s", i ? "; " : "", be->name, i,
                 descs[i].name);
        strncat(list, item, sizeof list - strlen(list) - 1);
    }
    return xg_set_error(XG_ERR_NOT_FOUND, "%s: %s has %d device(s)%s%s",
                        what, be->name, n, n ? ": " : "", list);
}

static xg_status open_named(const xg_backend *be, const char *index_str,
                            const char *spec, xg_device **out)
{
    xg_device_desc descs[MAX_LISTED];
    memset(descs, 0, sizeof descs); /* a backend may leave fields unset */
    int n = 0;
    xg_status st = be->enumerate(descs, MAX_LISTED, &n);
    if (st != XG_OK)
        return st;
    long index = n > 0 ? default_index % n : 0;
    if (index_str) {
        char *end;
        errno = 0;
        index = strtol(index_str, &end, 10);
        if (errno || end == index_str || *end || index < 0)
            return xg_set_error(XG_ERR_INVALID_ARG,
                                "device '%s': the index after ':' must be a "
                                "number >= 0", spec);
    }
    if (index >= n) {
        char what[128];
        snprintf(what, sizeof what, "no device '%s'", spec);
        return bad_index(be, descs, n, what);
    }
    return open_index(be, (int)index, out);
}

/* auto: a hardware device of the most preferred GPU backend: the first
 * that opens, starting at the default index's turn among them. */
static xg_status open_auto(xg_device **out)
{
    for (int b = N_BACKENDS - 1; b > 0; b--) {
        xg_device_desc descs[MAX_LISTED];
        int n = 0, hw[MAX_LISTED], n_hw = 0;
        if (backends[b]->enumerate(descs, MAX_LISTED, &n) != XG_OK)
            continue;
        for (int i = 0; i < n && i < MAX_LISTED; i++)
            if (!descs[i].is_software)
                hw[n_hw++] = i;
        for (int k = 0; k < n_hw; k++)
            if (open_index(backends[b], hw[(default_index + k) % n_hw],
                           out) == XG_OK)
                return XG_OK;
    }
    xg_clear_error();
    return open_index(&xg_backend_cpu, 0, out);
}

xg_status xg_device_open(const char *spec, xg_device **out)
{
    if (!out)
        return xg_set_error(XG_ERR_INVALID_ARG, "device_open: out is NULL");
    *out = NULL;
    if (!spec || !*spec)
        spec = getenv("XGRAD_BACKEND");
    if (!spec || !*spec)
        spec = "auto";
    const char *colon = strchr(spec, ':');
    size_t name_len = colon ? (size_t)(colon - spec) : strlen(spec);
    if (name_len == 4 && strncmp(spec, "auto", 4) == 0) {
        if (colon)
            return xg_set_error(XG_ERR_INVALID_ARG,
                                "device '%s': auto takes no index", spec);
        return open_auto(out);
    }
    const xg_backend *be = find_backend(spec, name_len);
    if (!be)
        return unknown_backend(spec);
    return open_named(be, colon ? colon + 1 : NULL, spec, out);
}

void xg__device_retain(xg_device *dev)
{
    dev->refs++;
}

void xg__device_release(xg_device *dev)
{
    if (!dev || --dev->refs > 0)
        return;
    dev->backend->close(dev->bdev);
    pthread_mutex_destroy(&dev->lock);
    free(dev);
}

void xg_device_close(xg_device *dev)
{
    if (!dev || dev->closed)
        return;
    if (current_device == dev)
        current_device = NULL;
    dev->closed = true;
    xg__device_release(dev);
}

xg_device *xg_device_current(void)
{
    if (current_device)
        return current_device;
    pthread_mutex_lock(&default_lock);
    if (!default_device && default_failure != XG_OK) {
        xg_set_error(default_failure, "%s", default_failure_message);
    } else if (!default_device &&
               xg_device_open(NULL, &default_device) != XG_OK) {
        default_device = NULL;
        default_failure = xg_last_status();
        snprintf(default_failure_message, sizeof default_failure_message,
                 "%s", xg_last_error());
    }
    xg_device *dev = default_device;
    pthread_mutex_unlock(&default_lock);
    return dev;
}

void xg_device_set_current(xg_device *dev)
{
    current_device = dev;
}

void xg_shutdown(void)
{
    pthread_mutex_lock(&default_lock);
    xg_device *dev = default_device;
    default_device = NULL;
    default_failure = XG_OK;
    pthread_mutex_unlock(&default_lock);
    if (current_device == dev)
        current_device = NULL;
    xg_device_close(dev);
}

const char *xg_device_backend(const xg_device *dev)
{
    return dev ? dev->backend->name : "";
}

const char *xg_device_name(const xg_device *dev)
{
    return dev ? dev->bdev->desc.name : "";
}

xg_status xg__device_check(const xg_device *dev, const char *what)
{
    if (dev->closed)
        return xg_set_error(XG_ERR_STATE, "%s: the device was closed", what);
    if (dev->lost)
        return xg_set_error(XG_ERR_DEVICE_LOST, "%s: the %s device was lost",
                            what, dev->backend->name);
    return XG_OK;
}

xg_status xg__device_result(xg_device *dev, xg_status st)
{
    if (st == XG_ERR_DEVICE_LOST)
        dev->lost = st;
    return st;
}

xg_status xg_device_memory(xg_device *dev, xg_device_memory_info *out)
{
    if (!dev || !out)
        return xg_set_error(XG_ERR_INVALID_ARG, "device_memory: NULL %s",
                            dev ? "out" : "device");
    xg__device_lock(dev);
    out->in_use = dev->in_use;
    out->peak = dev->peak;
    out->limit = dev->limit;
    xg__device_unlock(dev);
    return XG_OK;
}

void xg_device_reset_peak_memory(xg_device *dev)
{
    if (!dev)
        return;
    xg__device_lock(dev);
    dev->peak = dev->in_use;
    xg__device_unlock(dev);
}

xg_status xg__device_alloc(xg_device *dev, size_t bytes, xg_buffer **out,
                           const char *who)
{
    if (dev->limit && bytes > dev->limit - dev->in_use)
        return xg_set_error(XG_ERR_DEVICE_OOM, "%s: out of device memory: "
                            "%zu bytes asked, %llu of %llu in use on %s (the "
                            "device's memory, or XGRAD_MEMORY_LIMIT)", who,
                            bytes, (unsigned long long)dev->in_use,
                            (unsigned long long)dev->limit,
                            dev->backend->name);
    xg_status st = xg__device_result(
        dev, dev->backend->alloc(dev->bdev, bytes, out));
    if (st != XG_OK)
        return st;
    dev->in_use += bytes;
    if (dev->in_use > dev->peak)
        dev->peak = dev->in_use;
    return XG_OK;
}

void xg__device_free(xg_device *dev, xg_buffer *buf, size_t bytes)
{
    if (!buf)
        return;
    dev->backend->free(dev->bdev, buf);
    dev->in_use -= bytes;
}

xg_status xg_device_sync(xg_device *dev)
{
    if (!dev)
        return xg_set_error(XG_ERR_INVALID_ARG, "device_sync: device is NULL");
    xg_status st = xg__device_check(dev, "device_sync");
    if (st != XG_OK)
        return st;
    xg__device_lock(dev);
    st = xg__device_result(dev, dev->backend->sync(dev->bdev));
    xg__device_unlock(dev);
    return st;
}
