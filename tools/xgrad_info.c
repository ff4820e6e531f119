/* xgrad-info: lists the backends built into libxgrad, their devices, and
 * the device that XGRAD_BACKEND (or "auto") selects, in the manner of
 * `vulkaninfo --summary` and `clinfo -l`.
 *
 *   xgrad-info          backends, devices and the selection
 *   xgrad-info --ops    the support matrix: one line per kernel op,
 *                       `<op> cpu:f32,bf16(w),f16(w) opencl:f32 ...`,
 *                       listing the element types each backend's first
 *                       device runs (software devices included): a type
 *                       marked (w) runs widened (through f32 and the
 *                       device's casts), the others in kernels of their
 *                       own; a backend without a device is left out and
 *                       named on stderr
 *
 * The device list shows each device's 16-bit features as its backend
 * reports them, and how many ops run on bf16 and f16 natively and
 * widened.
 *
 * Exit status: 0 when the selected device (or, with --ops, at least one
 * device) opens, 1 otherwise, 2 on bad usage.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "xgrad.h"

#define MAX_BACKENDS 8
#define MAX_DEVICES 32

/* "15.6 GiB", "512 MiB" or "unknown". */
static const char *format_memory(uint64_t bytes, char *buf, size_t cap)
{
    if (bytes == 0)
        snprintf(buf, cap, "unknown");
    else if (bytes >= (uint64_t)1 << 30)
        snprintf(buf, cap, "%.1f GiB", (double)bytes / (1u << 30));
    else
        snprintf(buf, cap, "%.0f MiB", (double)bytes / (1u << 20));
    return buf;
}

/* The device's 16-bit features and how many ops run on bf16 and f16
 * natively and widened. */
static void show_half(const char *backend, int index,
                      const xg_device_info *info)
{
    printf("        16-bit features: %s\n",
           info->features[0] ? info->features : "none reported");
    char spec[64];
    snprintf(spec, sizeof spec, "%s:%d", backend, index);
    xg_device *dev = NULL;
    if (xg_device_open(spec, &dev) != XG_OK) {
        printf("        16-bit ops: unknown (%s)\n", xg_last_error());
        return;
    }
    xg_dtype types[2] = {XG_BF16, XG_F16};
    for (int k = 0; k < 2; k++) {
        int native = 0, widened = 0;
        for (int op = 0; op < xg_op_count(); op++)
            if (xg_device_supports_natively(dev, op, types[k]))
                native++;
            else if (xg_device_supports(dev, op, types[k]))
                widened++;
        printf("        %-4s ops: %d native, %d widened, %d not run\n",
               xg_dtype_name(types[k]), native, widened,
               xg_op_count() - native - widened);
    }
    xg_device_close(dev);
}

/* Prints one backend's devices, or why it has none. */
static void list_backend(const char *backend)
{
    xg_device_info devices[MAX_DEVICES];
    int count = 0;
    xg_status st = xg_backend_devices(backend, devices, MAX_DEVICES, &count);
    printf("%s:\n", backend);
    if (st != XG_OK) {
        printf("    unavailable: %s (%s)\n", xg_last_error(),
               xg_status_str(st));
        return;
    }
    if (count == 0)
        printf("    no devices\n");
    for (int i = 0; i < count && i < MAX_DEVICES; i++) {
        char mem[32];
        printf("    %s:%d  %-40s %-9s memory %s\n", backend, i,
               devices[i].name, devices[i].is_software ? "software" : "hardware",
               format_memory(devices[i].memory_bytes, mem, sizeof mem));
        show_half(backend, i, &devices[i]);
    }
    if (count > MAX_DEVICES)
        printf("    ... and %d more\n", count - MAX_DEVICES);
}

/* Opens `spec` and prints what it selects; returns 0 when it opened. */
static int show_selection(const char *label, const char *spec)
{
    xg_device *dev = NULL;
    xg_status st = xg_device_open(spec, &dev);
    if (st != XG_OK) {
        printf("%-22s error: %s (%s)\n", label, xg_last_error(),
               xg_status_str(st));
        return 1;
    }
    printf("%-22s %s: %s\n", label, xg_device_backend(dev),
           xg_device_name(dev));
    xg_device_close(dev);
    return 0;
}

/* Prints the op x dtype matrix over device 0 of every backend that has
 * one; returns 0 when at least one opened. */
static int list_ops(void)
{
    const char *names[MAX_BACKENDS];
    xg_device *devs[MAX_BACKENDS];
    int n = xg_backends(names, MAX_BACKENDS), opened = 0;
    for (int b = 0; b < n && b < MAX_BACKENDS; b++) {
        char spec[64];
        snprintf(spec, sizeof spec, "%s:0", names[b]);
        devs[b] = NULL;
        if (xg_device_open(spec, &devs[b]) != XG_OK)
            fprintf(stderr, "xgrad-info: %s left out: %s\n", names[b],
                    xg_last_error());
        opened += devs[b] != NULL;
    }
    for (int op = 0; op < xg_op_count(); op++) {
        printf("%s", xg_op_name(op));
        for (int b = 0; b < n && b < MAX_BACKENDS; b++) {
            if (!devs[b])
                continue;
            printf(" %s:", names[b]);
            int listed = 0;
            for (int t = 0; t < XG_DTYPE_COUNT; t++)
                if (xg_device_supports(devs[b], op, (xg_dtype)t))
                    printf("%s%s%s", listed++ ? "," : "",
                           xg_dtype_name((xg_dtype)t),
                           xg_device_supports_natively(devs[b], op,
                                                       (xg_dtype)t)
                               ? "" : "(w)");
            if (!listed)
                printf("-");
        }
        printf("\n");
    }
    for (int b = 0; b < n && b < MAX_BACKENDS; b++)
        xg_device_close(devs[b]);
    xg_shutdown();
    return opened ? 0 : 1;
}

int main(int argc, char **argv)
{
    if (argc == 2 && strcmp(argv[1], "--ops") == 0)
        return list_ops();
    if (argc > 1) {
        bool help = strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0;
        fprintf(help ? stdout : stderr,
                "usage: %s [--ops]\nLists xgrad's backends and devices, and the "
                "device that XGRAD_BACKEND=cpu|opencl|vulkan|auto[:INDEX] "
                "selects.\n--ops prints the op x dtype support matrix, one line "
                "per op.\n",
                argv[0]);
        return help ? 0 : 2;
    }
    const char *names[MAX_BACKENDS];
    int n = xg_backends(names, MAX_BACKENDS);
    printf("xgrad %s\nbackends built:", XGRAD_VERSION);
    for (int i = 0; i < n && i < MAX_BACKENDS; i++)
        printf(" %s", names[i]);
    printf("\n\n");
    for (int i = 0; i < n && i < MAX_BACKENDS; i++)
        list_backend(names[i]);
    printf("\n");
    const char *env = getenv("XGRAD_BACKEND");
    int rc = show_selection("auto selects", "auto");
    if (env && *env) {
        char label[64];
        snprintf(label, sizeof label, "XGRAD_BACKEND=%.40s", env);
        rc = show_selection(label, NULL);
    } else {
        printf("%-22s unset (auto)\n", "XGRAD_BACKEND");
    }
    xg_shutdown();
    return rc;
}
