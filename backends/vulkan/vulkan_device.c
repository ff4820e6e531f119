/* Opening and closing a Vulkan device; VkResult to xg_status. */
#include "shader_config.h"
#include "vulkan_backend.h"
#include "vulkan_impl.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *xg_vk_result_name(VkResult result)
{
    switch (result) {
    case VK_NOT_READY: return "VK_NOT_READY";
    case VK_TIMEOUT: return "VK_TIMEOUT";
    case VK_INCOMPLETE: return "VK_INCOMPLETE";
    case VK_ERROR_OUT_OF_HOST_MEMORY: return "VK_ERROR_OUT_OF_HOST_MEMORY";
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return "VK_ERROR_OUT_OF_DEVICE_MEMORY";
    case VK_ERROR_INITIALIZATION_FAILED:
        return "VK_ERROR_INITIALIZATION_FAILED";
    case VK_ERROR_DEVICE_LOST: return "VK_ERROR_DEVICE_LOST";
    case VK_ERROR_MEMORY_MAP_FAILED: return "VK_ERROR_MEMORY_MAP_FAILED";
    case VK_ERROR_LAYER_NOT_PRESENT: return "VK_ERROR_LAYER_NOT_PRESENT";
    case VK_ERROR_EXTENSION_NOT_PRESENT:
        return "VK_ERROR_EXTENSION_NOT_PRESENT";
    case VK_ERROR_FEATURE_NOT_PRESENT: return "VK_ERROR_FEATURE_NOT_PRESENT";
    case VK_ERROR_INCOMPATIBLE_DRIVER: return "VK_ERROR_INCOMPATIBLE_DRIVER";
    case VK_ERROR_TOO_MANY_OBJECTS: return "VK_ERROR_TOO_MANY_OBJECTS";
    case VK_ERROR_FRAGMENTED_POOL: return "VK_ERROR_FRAGMENTED_POOL";
    case VK_ERROR_OUT_OF_POOL_MEMORY: return "VK_ERROR_OUT_OF_POOL_MEMORY";
    default: return "unknown VkResult";
    }
}

xg_status xg_vk_fail(xg_vk_device *d, VkResult result, const char *what)
{
    switch (result) {
    case VK_ERROR_OUT_OF_DEVICE_MEMORY:
        return xg_set_error(XG_ERR_DEVICE_OOM,
                            "vulkan: %s: out of device memory", what);
    case VK_ERROR_OUT_OF_HOST_MEMORY:
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "vulkan: %s: out of host memory", what);
    case VK_ERROR_DEVICE_LOST:
        if (d)
            d->lost = true;
        return xg_set_error(XG_ERR_DEVICE_LOST, "vulkan: %s: device lost",
                            what);
    default:
        return xg_set_error(XG_ERR_BACKEND, "vulkan: %s failed: %s (%d)",
                            what, xg_vk_result_name(result), (int)result);
    }
}

void xg_vulkan_simulate_device_lost(xg_backend_device *dev)
{
    xg_vk_dev(dev)->lost = true;
}

int xg_vulkan_16bit_storage(const xg_backend_device *dev)
{
    return ((const xg_vk_device *)dev)->storage16;
}

xg_status xg_vk_check_lost(const xg_vk_device *d)
{
    if (!d->lost)
        return XG_OK;
    return xg_set_error(XG_ERR_DEVICE_LOST,
                        "vulkan: the device (%s) was lost; close it",
                        d->base.desc.name);
}

int xg_vk_memory_type(const xg_vk_device *d, uint32_t bits,
                      VkMemoryPropertyFlags required,
                      VkMemoryPropertyFlags preferred)
{
    const VkPhysicalDeviceMemoryProperties *mp = &d->memory_props;
    int fallback = -1;
    for (uint32_t i = 0; i < mp->memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = mp->memoryTypes[i].propertyFlags;
        if (!(bits & (1u << i)) || (f & required) != required)
            continue;
        if ((f & preferred) == preferred)
            return (int)i;
        if (fallback < 0)
            fallback = (int)i;
    }
    return fallback;
}

/* ---- open ---------------------------------------------------------------- */

static xg_status pick_physical(xg_vk_device *d, int index)
{
    VkPhysicalDevice devices[XG_VK_MAX_DEVICES];
    int n = 0;
    xg_status st = xg_vk_physical_devices(&d->instance, devices,
                                          XG_VK_MAX_DEVICES, &n);
    if (st != XG_OK)
        return st;
    if (index < 0 || index >= n || index >= XG_VK_MAX_DEVICES)
        return xg_set_error(XG_ERR_NOT_FOUND,
                            "vulkan: no device %d (%d usable device%s)",
                            index, n, n == 1 ? "" : "s");
    d->physical = devices[index];
    d->instance.GetPhysicalDeviceProperties(d->physical, &d->props);
    d->instance.GetPhysicalDeviceMemoryProperties(d->physical,
                                                  &d->memory_props);
    d->base.backend = &xg_backend_vulkan;
    d->base.index = index;
    xg_vk_describe(&d->instance, d->physical, &d->base.desc);
    return XG_OK;
}

static uint32_t compute_queue_family(xg_vk_device *d)
{
    VkQueueFamilyProperties families[32];
    uint32_t n = 32;
    d->instance.GetPhysicalDeviceQueueFamilyProperties(d->physical, &n,
                                                       families);
    for (uint32_t i = 0; i < n; i++)
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            return i;
    return 0; /* not reached: the device was listed as usable */
}

static bool env_flag(const char *name)
{
    const char *v = getenv(name);
    return v && *v && strcmp(v, "0") != 0;
}

static bool has_device_extension(xg_vk_device *d, const char *name)
{
    VkExtensionProperties ext[256];
    uint32_t n = 256;
    VkResult r = d->instance.EnumerateDeviceExtensionProperties(
        d->physical, NULL, &n, ext);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n;
         i++)
        if (strcmp(ext[i].extensionName, name) == 0)
            return true;
    return false;
}

/* Whether gemm_subgroup.comp can run: a CPU driver that can run compute in
 * full subgroups of exactly XG_GEMM_SG_LANES invocations, with
 * subgroupBroadcast (VK_EXT_subgroup_size_control). GPUs use gemm.comp. */
static bool subgroup_gemm_supported(xg_vk_device *d)
{
    if (d->props.deviceType != VK_PHYSICAL_DEVICE_TYPE_CPU ||
        !has_device_extension(d,
                              VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME))
        return false;
    VkPhysicalDeviceSubgroupSizeControlPropertiesEXT size = {
        .sType =
            VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_PROPERTIES_EXT,
    };
    VkPhysicalDeviceSubgroupProperties subgroup = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_PROPERTIES,
        .pNext = &size,
    };
    VkPhysicalDeviceProperties2 props = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
        .pNext = &subgroup,
    };
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT features = {
        .sType =
            VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
    };
    VkPhysicalDeviceFeatures2 features2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &features,
    };
    d->instance.GetPhysicalDeviceProperties2(d->physical, &props);
    d->instance.GetPhysicalDeviceFeatures2(d->physical, &features2);
    const VkShaderStageFlags compute = VK_SHADER_STAGE_COMPUTE_BIT;
    return features.subgroupSizeControl && features.computeFullSubgroups &&
           size.minSubgroupSize <= XG_GEMM_SG_LANES &&
           size.maxSubgroupSize >= XG_GEMM_SG_LANES &&
           (size.requiredSubgroupSizeStages & compute) &&
           (subgroup.supportedStages & compute) &&
           (subgroup.supportedOperations & VK_SUBGROUP_FEATURE_BALLOT_BIT);
}

/* Whether the device can store 16-bit elements in storage buffers (Vulkan
 * 1.1's storageBuffer16BitAccess) and XGRAD_VK_16BIT does not say 0. The
 * shaders then use the *_s16 variants; without it they pack two elements
 * per 32-bit word (same results). */
static bool storage16_supported(xg_vk_device *d)
{
    const char *v = getenv("XGRAD_VK_16BIT");
    if (v && strcmp(v, "0") == 0)
        return false;
    bool storage16, float16;
    xg_vk_16bit_features(&d->instance, d->physical, &storage16, &float16);
    return storage16;
}

static void load_device_functions(xg_vk_device *d)
{
#define XG_VK_LOAD(name)                                                     \
    d->vk.name =                                                             \
        (PFN_vk##name)d->instance.GetDeviceProcAddr(d->handle, "vk" #name);
    XG_VK_DEVICE_FNS(XG_VK_LOAD)
#undef XG_VK_LOAD
}

static xg_status create_device(xg_vk_device *d)
{
    const float priority = 1.0f;
    const char *extensions[2];
    uint32_t n_extensions = 0;
    /* Portability (MoltenVK) drivers require VK_KHR_portability_subset. */
    if (has_device_extension(d, "VK_KHR_portability_subset"))
        extensions[n_extensions++] = "VK_KHR_portability_subset";
    d->subgroup_gemm =
        !env_flag("XGRAD_VK_TILED_GEMM") && subgroup_gemm_supported(d);
    if (d->subgroup_gemm)
        extensions[n_extensions++] =
            VK_EXT_SUBGROUP_SIZE_CONTROL_EXTENSION_NAME;
    VkPhysicalDeviceSubgroupSizeControlFeaturesEXT size_control = {
        .sType =
            VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SUBGROUP_SIZE_CONTROL_FEATURES_EXT,
        .subgroupSizeControl = VK_TRUE,
        .computeFullSubgroups = VK_TRUE,
    };
    d->storage16 = storage16_supported(d);
    VkPhysicalDevice16BitStorageFeatures storage = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .storageBuffer16BitAccess = VK_TRUE,
    };
    /* The features to enable, chained. */
    void *features = NULL;
    if (d->subgroup_gemm) {
        size_control.pNext = features;
        features = &size_control;
    }
    if (d->storage16) {
        storage.pNext = features;
        features = &storage;
    }
    d->queue_family = compute_queue_family(d);
    VkDeviceQueueCreateInfo queue = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_QUEUE_CREATE_INFO,
        .queueFamilyIndex = d->queue_family,
        .queueCount = 1,
        .pQueuePriorities = &priority,
    };
    VkDeviceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_DEVICE_CREATE_INFO,
        .pNext = features,
        .queueCreateInfoCount = 1,
        .pQueueCreateInfos = &queue,
        .enabledExtensionCount = n_extensions,
        .ppEnabledExtensionNames = extensions,
    };
    VkResult r =
        d->instance.CreateDevice(d->physical, &info, NULL, &d->handle);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkCreateDevice");
    load_device_functions(d);
    d->vk.GetDeviceQueue(d->handle, d->queue_family, 0, &d->queue);
    return XG_OK;
}

xg_status xg_vk_open(int index, xg_backend_device **out)
{
    xg_vk_device *d = calloc(1, sizeof *d);
    if (!d)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "vulkan: out of host memory opening device %d",
                            index);
    d->force_staging = env_flag("XGRAD_VK_STAGING");
    xg_status st = xg_vk_instance_open(&d->instance);
    if (st == XG_OK)
        st = pick_physical(d, index);
    if (st == XG_OK)
        st = create_device(d);
    if (st == XG_OK) {
        xg_vk_memory_init(d);
        st = xg_vk_pipelines_init(d);
    }
    if (st == XG_OK)
        st = xg_vk_queue_init(d);
    if (st != XG_OK) {
        xg_vk_close(&d->base);
        return st;
    }
    *out = &d->base;
    return XG_OK;
}

/* Also tears down a partly opened device; after a device loss nothing here
 * waits for the GPU. */
void xg_vk_close(xg_backend_device *dev)
{
    xg_vk_device *d = xg_vk_dev(dev);
    if (!d)
        return;
    if (d->handle) {
        xg_vk_queue_destroy(d);
        xg_vk_pipelines_destroy(d);
        xg_vk_memory_destroy(d);
        d->vk.DestroyDevice(d->handle, NULL);
    }
    xg_vk_instance_close(&d->instance);
    free(d);
}
