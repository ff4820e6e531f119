/* Compute pipelines for the embedded SPIR-V modules.
 *
 * Every pipeline shares one layout: XG_VK_BINDINGS storage buffers (in[0..7]
 * then out[0..7]) and XG_VK_PUSH_BYTES of push constants. A pipeline is built
 * on its first use and kept until close. The driver's pipeline cache is
 * loaded from and saved to
 *   $XDG_CACHE_HOME/xgrad/vulkan-<vendor>-<device>-<driver>.bin
 * ($HOME/.cache when XDG_CACHE_HOME is unset), so later runs skip shader
 * compilation; failures to read or write that file are harmless. */
#include "shader_config.h"
#include "vulkan_impl.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct spirv_module {
    const char *name;
    const unsigned char *code;
    const size_t *size;
} spirv_module;

static const spirv_module modules[XG_VK_PIPE_COUNT] = {
#define XG_VK_MODULE(variant)                                                \
    {#variant, xg_spirv_##variant, &xg_spirv_##variant##_size},
    XG_SPIRV_VARIANTS(XG_VK_MODULE)
#undef XG_VK_MODULE
};

/* Pipeline caches larger than this are not read. */
#define XG_VK_CACHE_MAX_BYTES ((size_t)256 << 20)

/* ---- the cache file ------------------------------------------------------ */

static bool cache_path(const xg_vk_device *d, char *path, size_t cap)
{
    char name[64];
    snprintf(name, sizeof name, "vulkan-%04x-%04x-%08x.bin",
             d->props.vendorID, d->props.deviceID, d->props.driverVersion);
    return xg__cache_file_path(name, path, cap);
}

/* Whether `data` is a cache this driver wrote (drivers should reject
 * others themselves, but not all do so gracefully). */
static bool cache_matches(const xg_vk_device *d, const void *data,
                          size_t size)
{
    VkPipelineCacheHeaderVersionOne h;
    if (size < sizeof h)
        return false;
    memcpy(&h, data, sizeof h);
    return h.headerSize >= sizeof h && h.headerSize <= size &&
           h.headerVersion == VK_PIPELINE_CACHE_HEADER_VERSION_ONE &&
           h.vendorID == d->props.vendorID &&
           h.deviceID == d->props.deviceID &&
           memcmp(h.pipelineCacheUUID, d->props.pipelineCacheUUID,
                  VK_UUID_SIZE) == 0;
}

static xg_status cache_open(xg_vk_device *d)
{
    char path[1024];
    size_t size = 0;
    void *data = cache_path(d, path, sizeof path)
                     ? xg__cache_file_read(path, XG_VK_CACHE_MAX_BYTES, &size)
                     : NULL;
    VkPipelineCacheCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_CACHE_CREATE_INFO,
    };
    if (data && cache_matches(d, data, size)) {
        info.initialDataSize = size;
        info.pInitialData = data;
    }
    VkResult r =
        d->vk.CreatePipelineCache(d->handle, &info, NULL, &d->pipes.cache);
    if (r != VK_SUCCESS && info.pInitialData) { /* start empty instead */
        info.initialDataSize = 0;
        info.pInitialData = NULL;
        r = d->vk.CreatePipelineCache(d->handle, &info, NULL,
                                      &d->pipes.cache);
    }
    free(data);
    return r == VK_SUCCESS ? XG_OK
                           : xg_vk_fail(d, r, "vkCreatePipelineCache");
}

/* Writes the pipeline cache when it grew (xg__cache_file_write: never
 * half a file). */
static void cache_save(xg_vk_device *d)
{
    char path[1024];
    size_t size = 0;
    void *data = NULL;
    if (d->pipes.cache_grew && cache_path(d, path, sizeof path) &&
        d->vk.GetPipelineCacheData(d->handle, d->pipes.cache, &size, NULL) ==
            VK_SUCCESS &&
        size > 0 && (data = malloc(size)) &&
        d->vk.GetPipelineCacheData(d->handle, d->pipes.cache, &size, data) ==
            VK_SUCCESS) {
        const void *parts[1] = {data};
        xg__cache_file_write(path, parts, &size, 1);
    }
    free(data);
}

/* ---- pipelines ----------------------------------------------------------- */

xg_status xg_vk_pipelines_init(xg_vk_device *d)
{
    VkDescriptorSetLayoutBinding bindings[XG_VK_BINDINGS];
    for (uint32_t i = 0; i < XG_VK_BINDINGS; i++)
        bindings[i] = (VkDescriptorSetLayoutBinding){
            .binding = i,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .descriptorCount = 1,
            .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        };
    VkDescriptorSetLayoutCreateInfo set_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_LAYOUT_CREATE_INFO,
        .bindingCount = XG_VK_BINDINGS,
        .pBindings = bindings,
    };
    VkResult r = d->vk.CreateDescriptorSetLayout(d->handle, &set_info, NULL,
                                                 &d->pipes.set_layout);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkCreateDescriptorSetLayout");
    VkPushConstantRange push = {
        .stageFlags = VK_SHADER_STAGE_COMPUTE_BIT,
        .size = XG_VK_PUSH_BYTES,
    };
    VkPipelineLayoutCreateInfo layout_info = {
        .sType = VK_STRUCTURE_TYPE_PIPELINE_LAYOUT_CREATE_INFO,
        .setLayoutCount = 1,
        .pSetLayouts = &d->pipes.set_layout,
        .pushConstantRangeCount = 1,
        .pPushConstantRanges = &push,
    };
    r = d->vk.CreatePipelineLayout(d->handle, &layout_info, NULL,
                                   &d->pipes.layout);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkCreatePipelineLayout");
    return cache_open(d);
}

void xg_vk_pipelines_destroy(xg_vk_device *d)
{
    if (d->pipes.cache)
        cache_save(d);
    for (int i = 0; i < XG_VK_PIPE_COUNT; i++)
        d->vk.DestroyPipeline(d->handle, d->pipes.pipe[i], NULL);
    d->vk.DestroyPipelineCache(d->handle, d->pipes.cache, NULL);
    d->vk.DestroyPipelineLayout(d->handle, d->pipes.layout, NULL);
    d->vk.DestroyDescriptorSetLayout(d->handle, d->pipes.set_layout, NULL);
    memset(&d->pipes, 0, sizeof d->pipes);
}

static xg_status create_module(xg_vk_device *d, const spirv_module *m,
                               VkShaderModule *out)
{
    uint32_t *code = malloc(*m->size); /* SPIR-V words must be aligned */
    if (!code)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "vulkan: out of host memory");
    memcpy(code, m->code, *m->size);
    VkShaderModuleCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_SHADER_MODULE_CREATE_INFO,
        .codeSize = *m->size,
        .pCode = code,
    };
    VkResult r = d->vk.CreateShaderModule(d->handle, &info, NULL, out);
    free(code);
    return r == VK_SUCCESS ? XG_OK : xg_vk_fail(d, r, "vkCreateShaderModule");
}

/* gemm_subgroup.comp needs full subgroups of exactly XG_GEMM_SG_LANES. */
static_assert(XG_VK_PIPE_matmul_sg_tt == XG_VK_PIPE_matmul_sg + 3,
              "matmul_sg variants out of order in shaders/meson.build");

static bool needs_full_subgroups(xg_vk_pipe pipe)
{
    return (pipe >= XG_VK_PIPE_matmul_sg && pipe <= XG_VK_PIPE_matmul_sg_tt) ||
           pipe == XG_VK_PIPE_conv_gemm_sg_nn ||
           pipe == XG_VK_PIPE_conv_gemm_sg_nt ||
           pipe == XG_VK_PIPE_conv_gemm_sg_tn;
}

static xg_status build(xg_vk_device *d, xg_vk_pipe pipe)
{
    VkShaderModule module = VK_NULL_HANDLE;
    xg_status st = create_module(d, &modules[pipe], &module);
    if (st != XG_OK)
        return st;
    bool full = needs_full_subgroups(pipe);
    VkPipelineShaderStageRequiredSubgroupSizeCreateInfoEXT lanes = {
        .sType =
            VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_REQUIRED_SUBGROUP_SIZE_CREATE_INFO_EXT,
        .requiredSubgroupSize = XG_GEMM_SG_LANES,
    };
    VkComputePipelineCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMPUTE_PIPELINE_CREATE_INFO,
        .stage = {
            .sType = VK_STRUCTURE_TYPE_PIPELINE_SHADER_STAGE_CREATE_INFO,
            .pNext = full ? &lanes : NULL,
            .flags =
                full ? VK_PIPELINE_SHADER_STAGE_CREATE_REQUIRE_FULL_SUBGROUPS_BIT_EXT
                     : 0,
            .stage = VK_SHADER_STAGE_COMPUTE_BIT,
            .module = module,
            .pName = "main",
        },
        .layout = d->pipes.layout,
    };
    VkResult r = d->vk.CreateComputePipelines(
        d->handle, d->pipes.cache, 1, &info, NULL, &d->pipes.pipe[pipe]);
    d->vk.DestroyShaderModule(d->handle, module, NULL);
    if (r != VK_SUCCESS) {
        d->pipes.pipe[pipe] = VK_NULL_HANDLE;
        char what[96];
        snprintf(what, sizeof what, "building pipeline '%s'",
                 modules[pipe].name);
        return xg_vk_fail(d, r, what);
    }
    d->pipes.cache_grew = true;
    return XG_OK;
}

xg_status xg_vk_pipeline(xg_vk_device *d, xg_vk_pipe pipe, VkPipeline *out)
{
    if (!d->pipes.pipe[pipe]) {
        xg_status st = build(d, pipe);
        if (st != XG_OK)
            return st;
    }
    *out = d->pipes.pipe[pipe];
    return XG_OK;
}
