/* A lost Vulkan device: after the driver reports VK_ERROR_DEVICE_LOST
 * (simulated through the backend's test hook), every operation on the
 * device fails with XG_ERR_DEVICE_LOST instead of crashing or hanging, the
 * loss is sticky, freeing and closing still work, and a device opened
 * afterwards works. Runs on lavapipe in CI (XGRAD_VK_VALIDATION=1: no
 * validation message either). Skipped when no Vulkan device exists, unless
 * XGRAD_REQUIRE_BACKENDS=1. */
#include <criterion/criterion.h>
#include <stdlib.h>
#include <string.h>

#include "core_impl.h"
#include "vulkan_backend.h"

static xg_device *open_vulkan(void)
{
    xg_device *dev = NULL;
    if (xg_device_open("vulkan", &dev) == XG_OK)
        return dev;
    const char *req = getenv("XGRAD_REQUIRE_BACKENDS");
    if (req && strcmp(req, "1") == 0)
        cr_assert_fail("no Vulkan device: %s", xg_last_error());
    cr_skip_test("no Vulkan device: %s", xg_last_error());
    return NULL;
}

Test(vulkan, device_lost_is_an_error_and_sticky)
{
    xg_device *dev = open_vulkan();
    xg_device_set_current(dev);
    xg_tensor *x = xg_ones(XG_SHAPE(257));
    xg_tensor *y = xg_add(x, x);
    float v[257];
    cr_assert_eq(xg_tensor_read(y, v, sizeof v), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq(v[256], 2.0f);

    xg_vulkan_simulate_device_lost(dev->bdev);
    cr_expect_null(xg_add(x, x), "an op on a lost device");
    cr_expect_eq(xg_last_status(), XG_ERR_DEVICE_LOST, "%s", xg_last_error());
    cr_expect_eq(xg_tensor_read(y, v, sizeof v), XG_ERR_DEVICE_LOST);
    cr_expect_eq(xg_device_sync(dev), XG_ERR_DEVICE_LOST);
    cr_expect_null(xg_zeros(XG_SHAPE(4)), "a new tensor on a lost device");
    cr_expect_eq(xg_last_status(), XG_ERR_DEVICE_LOST, "the loss is sticky: "
                 "%s", xg_last_error());
    xg_tensor_free(y);
    xg_tensor_free(x);
    xg_device_set_current(NULL);
    xg_device_close(dev);

    xg_device *fresh = open_vulkan();
    xg_device_set_current(fresh);
    xg_tensor *z = xg_full(XG_SHAPE(3), 1.5f);
    cr_expect_eq(xg_tensor_read(z, v, 3 * sizeof *v), XG_OK,
                 "a device opened after a loss works: %s", xg_last_error());
    cr_expect_eq(v[2], 1.5f);
    xg_tensor_free(z);
    xg_device_set_current(NULL);
    xg_device_close(fresh);
    cr_expect_eq(xg_vulkan_validation_messages(), 0,
                 "validation messages were reported");
    xg_shutdown();
}
