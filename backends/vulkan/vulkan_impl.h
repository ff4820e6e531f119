/* The Vulkan backend's internals, shared by its source files.
 *
 *   vulkan_instance.c  loader (opened at run time), instance, validation,
 *                      physical devices, enumerate()
 *   vulkan_device.c    open()/close(), VkResult -> xg_status
 *   vulkan_memory.c    caching suballocator: alloc()/free()
 *   vulkan_queue.c     batches of recorded work, barriers, staging,
 *                      upload()/download()/sync()
 *   vulkan_pipeline.c  pipelines for the embedded SPIR-V, the on-disk
 *                      pipeline cache
 *   vulkan_ops.c       op -> pipeline, push constants, grid; the dispatch
 *                      table xg_backend_vulkan
 *   vulkan_conv.c      conv2d (im2col + GEMM), pooling, dropout
 *
 * The loader is opened with dlopen, so a library built with Vulkan support
 * still loads (and the other backends work) where no loader is installed.
 */
#ifndef XGRAD_VULKAN_IMPL_H
#define XGRAD_VULKAN_IMPL_H

#define VK_NO_PROTOTYPES
#include <vulkan/vulkan.h>

#include <stdbool.h>
#include <stdint.h>

#include "backend.h"
#include "shader_config.h"
#include "xg_spirv.h"

typedef struct xg_vk_device xg_vk_device;

/* ---- entry points, loaded at run time ------------------------------------ */

/* Loader entry points that need no instance. */
#define XG_VK_GLOBAL_FNS(X)                                                  \
    X(CreateInstance)                                                        \
    X(EnumerateInstanceVersion)                                              \
    X(EnumerateInstanceLayerProperties)                                      \
    X(EnumerateInstanceExtensionProperties)

#define XG_VK_INSTANCE_FNS(X)                                                \
    X(DestroyInstance)                                                       \
    X(EnumeratePhysicalDevices)                                              \
    X(GetPhysicalDeviceProperties)                                           \
    X(GetPhysicalDeviceProperties2)                                          \
    X(GetPhysicalDeviceFeatures2)                                            \
    X(GetPhysicalDeviceMemoryProperties)                                     \
    X(GetPhysicalDeviceQueueFamilyProperties)                                \
    X(EnumerateDeviceExtensionProperties)                                    \
    X(CreateDevice)                                                          \
    X(GetDeviceProcAddr)                                                     \
    X(CreateDebugUtilsMessengerEXT)                                          \
    X(DestroyDebugUtilsMessengerEXT)

#define XG_VK_DEVICE_FNS(X)                                                  \
    X(DestroyDevice)                                                         \
    X(GetDeviceQueue)                                                        \
    X(DeviceWaitIdle)                                                        \
    X(QueueSubmit)                                                           \
    X(CreateBuffer)                                                          \
    X(DestroyBuffer)                                                         \
    X(GetBufferMemoryRequirements)                                           \
    X(AllocateMemory)                                                        \
    X(FreeMemory)                                                            \
    X(BindBufferMemory)                                                      \
    X(MapMemory)                                                             \
    X(CreateShaderModule)                                                    \
    X(DestroyShaderModule)                                                   \
    X(CreatePipelineCache)                                                   \
    X(DestroyPipelineCache)                                                  \
    X(GetPipelineCacheData)                                                  \
    X(CreateComputePipelines)                                                \
    X(DestroyPipeline)                                                       \
    X(CreateDescriptorSetLayout)                                             \
    X(DestroyDescriptorSetLayout)                                            \
    X(CreatePipelineLayout)                                                  \
    X(DestroyPipelineLayout)                                                 \
    X(CreateDescriptorPool)                                                  \
    X(DestroyDescriptorPool)                                                 \
    X(ResetDescriptorPool)                                                   \
    X(AllocateDescriptorSets)                                                \
    X(UpdateDescriptorSets)                                                  \
    X(CreateCommandPool)                                                     \
    X(DestroyCommandPool)                                                    \
    X(AllocateCommandBuffers)                                                \
    X(BeginCommandBuffer)                                                    \
    X(EndCommandBuffer)                                                      \
    X(CmdBindPipeline)                                                       \
    X(CmdBindDescriptorSets)                                                 \
    X(CmdPushConstants)                                                      \
    X(CmdDispatch)                                                           \
    X(CmdPipelineBarrier)                                                    \
    X(CmdCopyBuffer)                                                         \
    X(CreateFence)                                                           \
    X(DestroyFence)                                                          \
    X(ResetFences)                                                           \
    X(WaitForFences)

#define XG_VK_DECLARE_FN(name) PFN_vk##name name;

/* ---- instance (vulkan_instance.c) ---------------------------------------- */

typedef struct xg_vk_instance {
    void *library; /* the loader */
    PFN_vkGetInstanceProcAddr GetInstanceProcAddr;
    XG_VK_GLOBAL_FNS(XG_VK_DECLARE_FN)
    XG_VK_INSTANCE_FNS(XG_VK_DECLARE_FN)
    VkInstance handle;
    VkDebugUtilsMessengerEXT messenger; /* with XGRAD_VK_VALIDATION only */
} xg_vk_instance;

/* Opens the loader and creates an instance (with the validation layer when
 * XGRAD_VK_VALIDATION asks for it). XG_ERR_NO_DEVICE when there is no
 * loader or no Vulkan 1.1 driver. On error *inst needs no cleanup. */
xg_status xg_vk_instance_open(xg_vk_instance *inst);
/* Destroys what xg_vk_instance_open made; a zeroed struct is fine. */
void xg_vk_instance_close(xg_vk_instance *inst);

/* Physical devices considered, at most. */
#define XG_VK_MAX_DEVICES 16

/* The devices xgrad can use (Vulkan 1.1+, a compute queue), in the order
 * enumerate() lists them: up to `cap` to `out`, the total to *count. */
xg_status xg_vk_physical_devices(xg_vk_instance *inst, VkPhysicalDevice *out,
                                 int cap, int *count);
/* The device's 16-bit features: storageBuffer16BitAccess and
 * shaderFloat16 (both false before Vulkan 1.1). */
void xg_vk_16bit_features(xg_vk_instance *inst, VkPhysicalDevice physical,
                          bool *storage16, bool *float16);

void xg_vk_describe(xg_vk_instance *inst, VkPhysicalDevice physical,
                    xg_device_desc *desc);

xg_status xg_vk_enumerate(xg_device_desc *out, int cap, int *count);

/* ---- memory (vulkan_memory.c) -------------------------------------------- */

/* A large VkDeviceMemory with one VkBuffer over all of it; xg_buffers are
 * ranges of it. */
typedef struct xg_vk_block {
    struct xg_vk_block *next;
    VkDeviceMemory memory;
    VkBuffer buffer;
    VkDeviceSize size;
    unsigned char *mapped; /* host-visible, coherent memory; else NULL */
    bool host_cached;      /* mapped and cheap for the host to read */
    xg_buffer *first;      /* its ranges in offset order, live and free */
} xg_vk_block;

/* One range of a block: a live buffer, a free range, or a buffer freed
 * while queued work still uses it (on the retired list until it is done). */
struct xg_buffer {
    xg_vk_block *block;
    VkDeviceSize offset, size;
    xg_buffer *prev, *next; /* neighbours in the block */
    bool is_free;
    /* Hazard tracking (vulkan_queue.c). */
    uint64_t last_use;    /* serial of the last batch that used it */
    uint64_t read_epoch;  /* barrier epoch of its last read */
    uint64_t write_epoch; /* barrier epoch of its last write */
    xg_buffer *next_retired;
};

typedef struct xg_vk_memory {
    xg_vk_block *blocks;
    xg_buffer *retired;      /* freed, awaiting their last batch */
    VkDeviceSize max_buffer; /* the largest buffer this device allows */
    VkDeviceSize block_size;
    VkDeviceSize in_use;     /* bytes in live buffers */
} xg_vk_memory;

void xg_vk_memory_init(xg_vk_device *d);
/* Returns retired buffers whose work is done to their blocks. */
void xg_vk_memory_retire(xg_vk_device *d);
/* Releases every block (all buffers must be gone or retired). */
void xg_vk_memory_destroy(xg_vk_device *d);

xg_status xg_vk_alloc(xg_backend_device *dev, size_t bytes, xg_buffer **out);
void xg_vk_free(xg_backend_device *dev, xg_buffer *buf);

/* A host-visible, coherent buffer of its own (staging). */
typedef struct xg_vk_host_buffer {
    VkBuffer buffer;
    VkDeviceMemory memory;
    unsigned char *mapped;
    VkDeviceSize size;
} xg_vk_host_buffer;

xg_status xg_vk_host_buffer_create(xg_vk_device *d, VkDeviceSize size,
                                   xg_vk_host_buffer *out);
void xg_vk_host_buffer_destroy(xg_vk_device *d,
                               xg_vk_host_buffer *hb);

/* ---- pipelines (vulkan_pipeline.c) --------------------------------------- */

typedef enum xg_vk_pipe {
#define XG_VK_PIPE_ENUM(name) XG_VK_PIPE_##name,
    XG_SPIRV_VARIANTS(XG_VK_PIPE_ENUM)
#undef XG_VK_PIPE_ENUM
    XG_VK_PIPE_COUNT
} xg_vk_pipe;

/* Storage-buffer bindings of every pipeline: in[0..2], then out[0..2]. */
#define XG_VK_BINDINGS (XG_KERNEL_MAX_IN + XG_KERNEL_MAX_OUT)
_Static_assert(XG_VK_OUT_BINDING == XG_KERNEL_MAX_IN,
               "shader_config.h and backend.h disagree on the bindings");
/* Push-constant bytes of every pipeline (the Vulkan minimum limit). */
#define XG_VK_PUSH_BYTES 128

typedef struct xg_vk_pipelines {
    VkDescriptorSetLayout set_layout;
    VkPipelineLayout layout;
    VkPipelineCache cache;
    bool cache_grew; /* pipelines were built: save the cache at close */
    VkPipeline pipe[XG_VK_PIPE_COUNT];
} xg_vk_pipelines;

xg_status xg_vk_pipelines_init(xg_vk_device *d);
/* Saves the pipeline cache to disk and destroys every pipeline. */
void xg_vk_pipelines_destroy(xg_vk_device *d);
/* The pipeline for `pipe`, built on first use. */
xg_status xg_vk_pipeline(xg_vk_device *d, xg_vk_pipe pipe,
                         VkPipeline *out);

/* ---- execution (vulkan_queue.c) ------------------------------------------ */

/* Batches in the ring: one records while the others execute. */
#define XG_VK_BATCHES 3
/* Commands (dispatches and copies) per batch before it is submitted. */
#define XG_VK_BATCH_COMMANDS 256
/* Bytes of host-visible staging memory per batch. */
#define XG_VK_STAGING_BYTES ((VkDeviceSize)16 << 20)

typedef struct xg_vk_batch {
    VkCommandBuffer cmd;
    VkFence fence;
    VkDescriptorPool pool; /* one set per command, reset with the batch */
    xg_vk_host_buffer staging; /* made on first use */
    VkDeviceSize staging_used;
    uint64_t serial;   /* of the work recorded in it */
    uint32_t commands; /* recorded so far */
    bool recording, in_flight;
} xg_vk_batch;

typedef struct xg_vk_queue {
    VkCommandPool cmd_pool;
    xg_vk_batch batch[XG_VK_BATCHES];
    unsigned current;     /* the batch that records next */
    uint64_t last_serial; /* the newest batch serial handed out */
    uint64_t done_serial; /* every batch up to this one has finished */
    uint64_t epoch;       /* barriers recorded so far + 1 */
    VkPipeline bound;     /* pipeline bound in the recording batch */
} xg_vk_queue;

/* One dispatch: pipeline, grid and push constants. */
typedef struct xg_vk_job {
    xg_vk_pipe pipe;
    uint32_t groups[3];
    uint32_t push_size;
    unsigned char push[XG_VK_PUSH_BYTES];
} xg_vk_job;

xg_status xg_vk_queue_init(xg_vk_device *d);
/* Waits for queued work (ignoring errors) and destroys the queue state. */
void xg_vk_queue_destroy(xg_vk_device *d);
/* Records `job` reading in[] and writing out[] (NULL entries unused),
 * with the barrier it needs; submits when the batch is full. */
xg_status xg_vk_dispatch(xg_vk_device *d, const xg_vk_job *job,
                         xg_buffer *const in[XG_KERNEL_MAX_IN],
                         xg_buffer *const out[XG_KERNEL_MAX_OUT]);
/* Submits recorded work and waits for all of it. */
xg_status xg_vk_finish(xg_vk_device *d);

xg_status xg_vk_upload(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                       const void *src, size_t bytes);
xg_status xg_vk_download(xg_backend_device *dev, xg_buffer *buf,
                         size_t offset, void *dst, size_t bytes);
xg_status xg_vk_sync(xg_backend_device *dev);

/* ---- convolution, pooling, dropout (vulkan_conv.c) ----------------------- */

/* Records the dispatches of one op of the CONV, POOL or DROPOUT family
 * (conv2d takes several, with scratch column buffers). */
xg_status xg_vk_cnn(xg_vk_device *d, const xg_kernel_call *call);

/* ---- the device (vulkan_device.c) ---------------------------------------- */

struct xg_vk_device {
    xg_backend_device base; /* first member: the core casts */
    xg_vk_instance instance;
    VkPhysicalDevice physical;
    VkPhysicalDeviceProperties props;
    VkPhysicalDeviceMemoryProperties memory_props;
    VkDevice handle;
    struct {
        XG_VK_DEVICE_FNS(XG_VK_DECLARE_FN)
    } vk;
    VkQueue queue;
    uint32_t queue_family;
    bool lost; /* VK_ERROR_DEVICE_LOST seen: every call fails from now on */
    bool force_staging; /* XGRAD_VK_STAGING=1: never map device memory */
    bool subgroup_gemm; /* GEMM by gemm_subgroup.comp (CPU drivers) */
    /* 16-bit elements through storageBuffer16BitAccess (the *_s16 shader
     * variants), enabled where the device has it unless XGRAD_VK_16BIT=0;
     * else as 32-bit words. */
    bool storage16;
    xg_vk_memory mem;
    xg_vk_pipelines pipes;
    xg_vk_queue q;
};

static inline xg_vk_device *xg_vk_dev(xg_backend_device *dev)
{
    return (xg_vk_device *)dev;
}

xg_status xg_vk_open(int index, xg_backend_device **out);
void xg_vk_close(xg_backend_device *dev);

/* Maps a failed VkResult of `what` to a status and message:
 * out of device memory -> XG_ERR_DEVICE_OOM, device lost -> XG_ERR_DEVICE_LOST
 * (and marks the device lost), anything else -> XG_ERR_BACKEND. */
xg_status xg_vk_fail(xg_vk_device *d, VkResult result, const char *what);
/* XG_ERR_DEVICE_LOST with a message if the device was lost, else XG_OK. */
xg_status xg_vk_check_lost(const xg_vk_device *d);
const char *xg_vk_result_name(VkResult result);

/* Index of a memory type allowed by `bits` that has all of `required`
 * (preferring one that also has `preferred`), or -1. */
int xg_vk_memory_type(const xg_vk_device *d, uint32_t bits,
                      VkMemoryPropertyFlags required,
                      VkMemoryPropertyFlags preferred);

#endif
