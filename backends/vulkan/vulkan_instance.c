/* The Vulkan loader, the instance with optional validation, and the list of
 * usable physical devices. */
#include "vulkan_backend.h"
#include "vulkan_impl.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#ifdef _WIN32
#include <windows.h>
#else
#include <dlfcn.h>
#endif

#define XG_VK_VALIDATION_LAYER "VK_LAYER_KHRONOS_validation"

/* ---- the loader library -------------------------------------------------- */

#if defined(_WIN32)
static const char *const loader_names[] = {"vulkan-1.dll"};
#elif defined(__APPLE__)
static const char *const loader_names[] = {"libvulkan.1.dylib",
                                           "libMoltenVK.dylib"};
#else
static const char *const loader_names[] = {"libvulkan.so.1",
                                           "libvulkan.so"};
#endif

static void *library_open(const char *name)
{
#ifdef _WIN32
    return (void *)LoadLibraryA(name);
#else
    return dlopen(name, RTLD_NOW | RTLD_LOCAL);
#endif
}

static void library_close(void *library)
{
#ifdef _WIN32
    FreeLibrary((HMODULE)library);
#else
    dlclose(library);
#endif
}

static PFN_vkGetInstanceProcAddr library_entry(void *library)
{
#ifdef _WIN32
    FARPROC fn = GetProcAddress((HMODULE)library, "vkGetInstanceProcAddr");
#else
    void *fn = dlsym(library, "vkGetInstanceProcAddr");
#endif
    PFN_vkGetInstanceProcAddr entry;
    memcpy(&entry, &fn, sizeof entry); /* object to function pointer */
    return entry;
}

/* Opens the loader and its instance-independent entry points. */
static xg_status load_loader(xg_vk_instance *inst)
{
    size_t n = sizeof loader_names / sizeof loader_names[0];
    for (size_t i = 0; i < n && !inst->library; i++)
        inst->library = library_open(loader_names[i]);
    if (!inst->library)
        return xg_set_error(XG_ERR_NO_DEVICE,
                            "vulkan: no Vulkan loader (%s) is installed",
                            loader_names[0]);
    inst->GetInstanceProcAddr = library_entry(inst->library);
    if (!inst->GetInstanceProcAddr)
        return xg_set_error(XG_ERR_NO_DEVICE,
                            "vulkan: %s has no vkGetInstanceProcAddr",
                            loader_names[0]);
#define XG_VK_LOAD(name)                                                     \
    inst->name = (PFN_vk##name)inst->GetInstanceProcAddr(NULL, "vk" #name);
    XG_VK_GLOBAL_FNS(XG_VK_LOAD)
#undef XG_VK_LOAD
    if (!inst->CreateInstance || !inst->EnumerateInstanceVersion)
        return xg_set_error(XG_ERR_NO_DEVICE,
                            "vulkan: the Vulkan loader is older than 1.1");
    return XG_OK;
}

/* ---- validation ---------------------------------------------------------- */

static atomic_uint_fast64_t validation_message_count;

uint64_t xg_vulkan_validation_messages(void)
{
    return (uint64_t)atomic_load(&validation_message_count);
}

typedef enum validation_mode {
    VALIDATION_OFF,
    VALIDATION_ON,
    VALIDATION_SYNC, /* also synchronization validation */
} validation_mode;

static validation_mode validation_requested(void)
{
    const char *v = getenv("XGRAD_VK_VALIDATION");
    if (!v || !*v || strcmp(v, "0") == 0)
        return VALIDATION_OFF;
    return strcmp(v, "sync") == 0 ? VALIDATION_SYNC : VALIDATION_ON;
}

static VKAPI_ATTR VkBool32 VKAPI_CALL
on_validation_message(VkDebugUtilsMessageSeverityFlagBitsEXT severity,
                      VkDebugUtilsMessageTypeFlagsEXT types,
                      const VkDebugUtilsMessengerCallbackDataEXT *data,
                      void *user)
{
    (void)types;
    (void)user;
    atomic_fetch_add(&validation_message_count, 1);
    const char *level =
        severity & VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT ? "error"
                                                                 : "warning";
    fprintf(stderr, "xgrad: vulkan validation %s: %s\n", level,
            data && data->pMessage ? data->pMessage : "(no message)");
    return VK_FALSE;
}

static const VkDebugUtilsMessengerCreateInfoEXT messenger_info = {
    .sType = VK_STRUCTURE_TYPE_DEBUG_UTILS_MESSENGER_CREATE_INFO_EXT,
    .messageSeverity = VK_DEBUG_UTILS_MESSAGE_SEVERITY_WARNING_BIT_EXT |
                       VK_DEBUG_UTILS_MESSAGE_SEVERITY_ERROR_BIT_EXT,
    .messageType = VK_DEBUG_UTILS_MESSAGE_TYPE_GENERAL_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_VALIDATION_BIT_EXT |
                   VK_DEBUG_UTILS_MESSAGE_TYPE_PERFORMANCE_BIT_EXT,
    .pfnUserCallback = on_validation_message,
};

static const VkValidationFeatureEnableEXT sync_validation =
    VK_VALIDATION_FEATURE_ENABLE_SYNCHRONIZATION_VALIDATION_EXT;

static const VkValidationFeaturesEXT sync_features = {
    .sType = VK_STRUCTURE_TYPE_VALIDATION_FEATURES_EXT,
    .pNext = &messenger_info,
    .enabledValidationFeatureCount = 1,
    .pEnabledValidationFeatures = &sync_validation,
};

/* ---- instance ------------------------------------------------------------ */

static bool has_layer(xg_vk_instance *inst, const char *name)
{
    VkLayerProperties layers[64];
    uint32_t n = 64;
    VkResult r = inst->EnumerateInstanceLayerProperties(&n, layers);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n;
         i++)
        if (strcmp(layers[i].layerName, name) == 0)
            return true;
    return false;
}

static bool has_extension(xg_vk_instance *inst, const char *layer,
                          const char *name)
{
    VkExtensionProperties ext[128];
    uint32_t n = 128;
    VkResult r = inst->EnumerateInstanceExtensionProperties(layer, &n, ext);
    for (uint32_t i = 0; (r == VK_SUCCESS || r == VK_INCOMPLETE) && i < n;
         i++)
        if (strcmp(ext[i].extensionName, name) == 0)
            return true;
    return false;
}

/* Layers, extensions and pNext chain for validation mode `mode`. */
typedef struct instance_setup {
    const char *layers[1], *extensions[3];
    uint32_t n_layers, n_extensions;
    VkInstanceCreateFlags flags;
    const void *next;
} instance_setup;

static xg_status plan_instance(xg_vk_instance *inst, validation_mode mode,
                               instance_setup *s)
{
    /* MoltenVK and other non-conformant drivers list only through this. */
    if (has_extension(inst, NULL,
                      VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME)) {
        s->extensions[s->n_extensions++] =
            VK_KHR_PORTABILITY_ENUMERATION_EXTENSION_NAME;
        s->flags |= VK_INSTANCE_CREATE_ENUMERATE_PORTABILITY_BIT_KHR;
    }
    if (mode == VALIDATION_OFF)
        return XG_OK;
    if (!has_layer(inst, XG_VK_VALIDATION_LAYER))
        return xg_set_error(XG_ERR_BACKEND,
                            "vulkan: XGRAD_VK_VALIDATION is set but %s is "
                            "not installed (Debian/Ubuntu: apt install "
                            "vulkan-validationlayers)",
                            XG_VK_VALIDATION_LAYER);
    s->layers[s->n_layers++] = XG_VK_VALIDATION_LAYER;
    s->extensions[s->n_extensions++] = VK_EXT_DEBUG_UTILS_EXTENSION_NAME;
    s->next = &messenger_info;
    if (mode == VALIDATION_SYNC) {
        s->extensions[s->n_extensions++] =
            VK_EXT_VALIDATION_FEATURES_EXTENSION_NAME;
        s->next = &sync_features;
    }
    return XG_OK;
}

static xg_status create_instance(xg_vk_instance *inst, validation_mode mode)
{
    instance_setup s = {0};
    xg_status st = plan_instance(inst, mode, &s);
    if (st != XG_OK)
        return st;
    VkApplicationInfo app = {
        .sType = VK_STRUCTURE_TYPE_APPLICATION_INFO,
        .pApplicationName = "xgrad",
        .pEngineName = "xgrad",
        .apiVersion = VK_API_VERSION_1_1,
    };
    VkInstanceCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_INSTANCE_CREATE_INFO,
        .pNext = s.next,
        .flags = s.flags,
        .pApplicationInfo = &app,
        .enabledLayerCount = s.n_layers,
        .ppEnabledLayerNames = s.layers,
        .enabledExtensionCount = s.n_extensions,
        .ppEnabledExtensionNames = s.extensions,
    };
    VkResult r = inst->CreateInstance(&info, NULL, &inst->handle);
    if (r == VK_ERROR_INCOMPATIBLE_DRIVER)
        return xg_set_error(XG_ERR_NO_DEVICE,
                            "vulkan: no Vulkan driver (ICD) is installed");
    if (r != VK_SUCCESS)
        return xg_vk_fail(NULL, r, "vkCreateInstance");
    return XG_OK;
}

static xg_status load_instance_functions(xg_vk_instance *inst,
                                         validation_mode mode)
{
#define XG_VK_LOAD(name)                                                     \
    inst->name =                                                             \
        (PFN_vk##name)inst->GetInstanceProcAddr(inst->handle, "vk" #name);
    XG_VK_INSTANCE_FNS(XG_VK_LOAD)
#undef XG_VK_LOAD
    if (mode == VALIDATION_OFF)
        return XG_OK;
    if (!inst->CreateDebugUtilsMessengerEXT)
        return xg_set_error(XG_ERR_BACKEND,
                            "vulkan: VK_EXT_debug_utils is unavailable");
    VkResult r = inst->CreateDebugUtilsMessengerEXT(
        inst->handle, &messenger_info, NULL, &inst->messenger);
    if (r != VK_SUCCESS)
        return xg_vk_fail(NULL, r, "vkCreateDebugUtilsMessengerEXT");
    return XG_OK;
}

xg_status xg_vk_instance_open(xg_vk_instance *inst)
{
    memset(inst, 0, sizeof *inst);
    validation_mode mode = validation_requested();
    uint32_t version = 0;
    xg_status st = load_loader(inst);
    if (st != XG_OK)
        goto fail;
    if (inst->EnumerateInstanceVersion(&version) != VK_SUCCESS ||
        version < VK_API_VERSION_1_1) {
        st = xg_set_error(XG_ERR_NO_DEVICE,
                          "vulkan: the Vulkan loader is older than 1.1");
        goto fail;
    }
    st = create_instance(inst, mode);
    if (st == XG_OK)
        st = load_instance_functions(inst, mode);
    if (st == XG_OK)
        return XG_OK;
fail:
    xg_vk_instance_close(inst);
    return st;
}

void xg_vk_instance_close(xg_vk_instance *inst)
{
    if (inst->messenger)
        inst->DestroyDebugUtilsMessengerEXT(inst->handle, inst->messenger,
                                            NULL);
    if (inst->handle)
        inst->DestroyInstance(inst->handle, NULL);
    if (inst->library)
        library_close(inst->library);
    memset(inst, 0, sizeof *inst);
}

/* ---- physical devices ---------------------------------------------------- */

static bool has_compute_queue(xg_vk_instance *inst, VkPhysicalDevice pd)
{
    VkQueueFamilyProperties families[32];
    uint32_t n = 32;
    inst->GetPhysicalDeviceQueueFamilyProperties(pd, &n, families);
    for (uint32_t i = 0; i < n; i++)
        if (families[i].queueFlags & VK_QUEUE_COMPUTE_BIT)
            return true;
    return false;
}

static bool usable(xg_vk_instance *inst, VkPhysicalDevice pd)
{
    VkPhysicalDeviceProperties props;
    inst->GetPhysicalDeviceProperties(pd, &props);
    return props.apiVersion >= VK_API_VERSION_1_1 &&
           has_compute_queue(inst, pd);
}

xg_status xg_vk_physical_devices(xg_vk_instance *inst, VkPhysicalDevice *out,
                                 int cap, int *count)
{
    VkPhysicalDevice all[XG_VK_MAX_DEVICES];
    uint32_t n = XG_VK_MAX_DEVICES;
    VkResult r = inst->EnumeratePhysicalDevices(inst->handle, &n, all);
    if (r != VK_SUCCESS && r != VK_INCOMPLETE)
        return xg_vk_fail(NULL, r, "vkEnumeratePhysicalDevices");
    int found = 0;
    for (uint32_t i = 0; i < n; i++) {
        if (!usable(inst, all[i]))
            continue;
        if (found < cap)
            out[found] = all[i];
        found++;
    }
    *count = found;
    return XG_OK;
}

void xg_vk_16bit_features(xg_vk_instance *inst, VkPhysicalDevice physical,
                          bool *storage16, bool *float16)
{
    VkPhysicalDeviceProperties props;
    inst->GetPhysicalDeviceProperties(physical, &props);
    VkPhysicalDeviceShaderFloat16Int8Features f16 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_SHADER_FLOAT16_INT8_FEATURES,
    };
    VkPhysicalDevice16BitStorageFeatures storage = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_16BIT_STORAGE_FEATURES,
        .pNext = &f16,
    };
    VkPhysicalDeviceFeatures2 features2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_FEATURES_2,
        .pNext = &storage,
    };
    if (props.apiVersion >= VK_API_VERSION_1_1)
        inst->GetPhysicalDeviceFeatures2(physical, &features2);
    *storage16 = storage.storageBuffer16BitAccess;
    *float16 = f16.shaderFloat16;
}

void xg_vk_describe(xg_vk_instance *inst, VkPhysicalDevice physical,
                    xg_device_desc *desc)
{
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties mem;
    inst->GetPhysicalDeviceProperties(physical, &props);
    inst->GetPhysicalDeviceMemoryProperties(physical, &mem);
    memset(desc, 0, sizeof *desc);
    snprintf(desc->name, sizeof desc->name, "%s", props.deviceName);
    /* The 16-bit features xgrad-info shows (Vulkan 1.1 and
     * VK_KHR_shader_float16_int8 names). */
    bool storage16, float16;
    xg_vk_16bit_features(inst, physical, &storage16, &float16);
    snprintf(desc->features, sizeof desc->features, "%s%s",
             storage16 ? "storageBuffer16BitAccess" : "",
             !float16 ? "" : storage16 ? " shaderFloat16" : "shaderFloat16");
    desc->is_software = props.deviceType == VK_PHYSICAL_DEVICE_TYPE_CPU;
    for (uint32_t i = 0; i < mem.memoryHeapCount; i++)
        if (mem.memoryHeaps[i].flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT &&
            mem.memoryHeaps[i].size > desc->memory_bytes)
            desc->memory_bytes = mem.memoryHeaps[i].size;
}

xg_status xg_vk_enumerate(xg_device_desc *out, int cap, int *count)
{
    xg_vk_instance inst;
    VkPhysicalDevice devices[XG_VK_MAX_DEVICES];
    *count = 0;
    xg_status st = xg_vk_instance_open(&inst);
    if (st != XG_OK)
        return st;
    int n = 0;
    st = xg_vk_physical_devices(&inst, devices, XG_VK_MAX_DEVICES, &n);
    for (int i = 0; st == XG_OK && i < n && i < cap; i++)
        xg_vk_describe(&inst, devices[i], &out[i]);
    if (st == XG_OK)
        *count = n;
    xg_vk_instance_close(&inst);
    return st;
}
