/* Device memory: a caching suballocator.
 *
 * Memory comes from the driver in large blocks (XG_VK_BLOCK_BYTES, or one
 * buffer's size if larger), each with one VkBuffer over all of it, and is
 * never returned to the driver while the device is open, except to retry an
 * allocation that ran out of memory. An xg_buffer is a range of a block;
 * ranges are kept in offset order so that freed neighbours merge. A buffer
 * freed while queued work still uses it is retired first and only reused
 * once that work is done, so reuse needs no synchronisation.
 *
 * Where device-local memory is also host-visible and coherent (integrated
 * and CPU devices, resizable-BAR GPUs) blocks stay mapped, and uploads and
 * downloads copy directly instead of through staging buffers. */
#include "vulkan_impl.h"

#include <stdlib.h>
#include <string.h>

/* Bytes per block; a buffer larger than this gets a block of its own. */
#define XG_VK_BLOCK_BYTES ((VkDeviceSize)64 << 20)
/* Alignment of every range: at least any minStorageBufferOffsetAlignment
 * (at most 256 by the spec). */
#define XG_VK_ALIGN ((VkDeviceSize)256)

static VkDeviceSize min_size(VkDeviceSize a, VkDeviceSize b)
{
    return a < b ? a : b;
}

static VkDeviceSize max_allocation(xg_vk_device *d)
{
    VkPhysicalDeviceMaintenance3Properties m3 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MAINTENANCE_3_PROPERTIES,
    };
    VkPhysicalDeviceProperties2 props = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_PROPERTIES_2,
        .pNext = &m3,
    };
    d->instance.GetPhysicalDeviceProperties2(d->physical, &props);
    return m3.maxMemoryAllocationSize;
}

void xg_vk_memory_init(xg_vk_device *d)
{
    VkDeviceSize alloc_max = max_allocation(d);
    VkDeviceSize max = min_size(d->props.limits.maxStorageBufferRange,
                                alloc_max);
    if (d->base.desc.memory_bytes)
        max = min_size(max, d->base.desc.memory_bytes);
    memset(&d->mem, 0, sizeof d->mem);
    d->mem.max_buffer = max;
    d->mem.block_size = min_size(XG_VK_BLOCK_BYTES, alloc_max);
}

/* ---- blocks -------------------------------------------------------------- */

static void block_destroy(xg_vk_device *d, xg_vk_block *b)
{
    while (b->first) {
        xg_buffer *next = b->first->next;
        free(b->first);
        b->first = next;
    }
    d->vk.DestroyBuffer(d->handle, b->buffer, NULL);
    d->vk.FreeMemory(d->handle, b->memory, NULL); /* also unmaps */
    free(b);
}

/* Allocates and binds the block's memory and maps it when it can. */
static xg_status block_bind(xg_vk_device *d, xg_vk_block *b)
{
    VkMemoryRequirements req;
    d->vk.GetBufferMemoryRequirements(d->handle, b->buffer, &req);
    int type = xg_vk_memory_type(d, req.memoryTypeBits,
                                 VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, 0);
    if (type < 0)
        type = xg_vk_memory_type(d, req.memoryTypeBits, 0, 0);
    VkMemoryAllocateInfo info = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)type,
    };
    VkResult r = d->vk.AllocateMemory(d->handle, &info, NULL, &b->memory);
    if (r == VK_SUCCESS)
        r = d->vk.BindBufferMemory(d->handle, b->buffer, b->memory, 0);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "allocating a device memory block");
    const VkMemoryPropertyFlags mappable =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
        VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    VkMemoryPropertyFlags flags =
        d->memory_props.memoryTypes[type].propertyFlags;
    if (d->force_staging || (flags & mappable) != mappable)
        return XG_OK;
    void *p = NULL;
    if (d->vk.MapMemory(d->handle, b->memory, 0, VK_WHOLE_SIZE, 0, &p) ==
        VK_SUCCESS) {
        b->mapped = p;
        b->host_cached = flags & VK_MEMORY_PROPERTY_HOST_CACHED_BIT;
    }
    return XG_OK; /* unmapped blocks work through staging */
}

static xg_status block_create(xg_vk_device *d, VkDeviceSize size,
                              xg_vk_block **out)
{
    xg_vk_block *b = calloc(1, sizeof *b);
    xg_buffer *whole = b ? calloc(1, sizeof *whole) : NULL;
    if (!whole) {
        free(b);
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "vulkan: out of host memory");
    }
    *whole = (xg_buffer){.block = b, .size = size, .is_free = true};
    b->first = whole;
    b->size = size;
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT |
                 VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = d->vk.CreateBuffer(d->handle, &info, NULL, &b->buffer);
    xg_status st = r == VK_SUCCESS ? block_bind(d, b)
                                   : xg_vk_fail(d, r, "vkCreateBuffer");
    if (st != XG_OK) {
        block_destroy(d, b);
        return st;
    }
    *out = b;
    return XG_OK;
}

static bool block_empty(const xg_vk_block *b)
{
    return b->first->is_free && !b->first->next;
}

static void release_empty_blocks(xg_vk_device *d)
{
    xg_vk_block **link = &d->mem.blocks;
    while (*link) {
        xg_vk_block *b = *link;
        if (block_empty(b)) {
            *link = b->next;
            block_destroy(d, b);
        } else {
            link = &b->next;
        }
    }
}

/* Adds a block with room for `size` bytes. When the device is out of
 * memory, waits for queued work, gives back empty blocks and tries once
 * more, and then with a block of just `size` bytes, so that a small
 * allocation can succeed where a whole block no longer fits. */
static xg_status grow(xg_vk_device *d, VkDeviceSize size)
{
    VkDeviceSize bytes = size > d->mem.block_size ? size : d->mem.block_size;
    xg_vk_block *b = NULL;
    xg_status st = block_create(d, bytes, &b);
    if (st == XG_ERR_DEVICE_OOM && d->mem.blocks) {
        st = xg_vk_finish(d);
        release_empty_blocks(d);
        if (st == XG_OK)
            st = block_create(d, bytes, &b);
    }
    if (st == XG_ERR_DEVICE_OOM && bytes > size)
        st = block_create(d, size, &b);
    if (st == XG_ERR_DEVICE_OOM)
        return xg_set_error(st,
                            "vulkan: out of device memory allocating %llu "
                            "bytes (%llu bytes in use on %s)",
                            (unsigned long long)size,
                            (unsigned long long)d->mem.in_use,
                            d->base.desc.name);
    if (st != XG_OK)
        return st;
    b->next = d->mem.blocks;
    d->mem.blocks = b;
    return XG_OK;
}

/* ---- ranges -------------------------------------------------------------- */

/* The smallest free range of at least `size` bytes, or NULL. */
static xg_buffer *best_fit(const xg_vk_memory *m, VkDeviceSize size)
{
    xg_buffer *best = NULL;
    for (xg_vk_block *b = m->blocks; b; b = b->next)
        for (xg_buffer *r = b->first; r; r = r->next)
            if (r->is_free && r->size >= size &&
                (!best || r->size < best->size))
                best = r;
    return best;
}

/* Cuts free range `r` to `size` bytes; the rest becomes a free range. */
static xg_status split(xg_buffer *r, VkDeviceSize size)
{
    if (r->size == size)
        return XG_OK;
    xg_buffer *rest = malloc(sizeof *rest);
    if (!rest)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY,
                            "vulkan: out of host memory");
    *rest = (xg_buffer){
        .block = r->block,
        .offset = r->offset + size,
        .size = r->size - size,
        .prev = r,
        .next = r->next,
        .is_free = true,
    };
    if (r->next)
        r->next->prev = rest;
    r->next = rest;
    r->size = size;
    return XG_OK;
}

/* Merges range b into range a, its left neighbour. */
static void absorb(xg_buffer *a, xg_buffer *b)
{
    a->size += b->size;
    a->next = b->next;
    if (b->next)
        b->next->prev = a;
    free(b);
}

static void release(xg_buffer *r)
{
    r->is_free = true;
    if (r->next && r->next->is_free)
        absorb(r, r->next);
    if (r->prev && r->prev->is_free)
        absorb(r->prev, r);
}

xg_status xg_vk_alloc(xg_backend_device *dev, size_t bytes, xg_buffer **out)
{
    xg_vk_device *d = xg_vk_dev(dev);
    xg_status st = xg_vk_check_lost(d);
    if (st != XG_OK)
        return st;
    if (bytes > d->mem.max_buffer)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "vulkan: a buffer of %zu bytes is larger than "
                            "%s allows (%llu bytes: maxStorageBufferRange, "
                            "maxMemoryAllocationSize, heap size)",
                            bytes, d->base.desc.name,
                            (unsigned long long)d->mem.max_buffer);
    VkDeviceSize size = (bytes + XG_VK_ALIGN - 1) / XG_VK_ALIGN * XG_VK_ALIGN;
    xg_buffer *r = best_fit(&d->mem, size);
    if (!r) {
        st = grow(d, size);
        if (st != XG_OK)
            return st;
        r = best_fit(&d->mem, size);
    }
    st = split(r, size);
    if (st != XG_OK)
        return st;
    r->is_free = false;
    r->last_use = r->read_epoch = r->write_epoch = 0;
    d->mem.in_use += size;
    *out = r;
    return XG_OK;
}

void xg_vk_free(xg_backend_device *dev, xg_buffer *buf)
{
    if (!buf)
        return;
    xg_vk_device *d = xg_vk_dev(dev);
    d->mem.in_use -= buf->size;
    if (!d->lost && buf->last_use > d->q.done_serial) {
        buf->next_retired = d->mem.retired;
        d->mem.retired = buf;
        return;
    }
    release(buf);
}

void xg_vk_memory_retire(xg_vk_device *d)
{
    xg_buffer **link = &d->mem.retired;
    while (*link) {
        xg_buffer *b = *link;
        if (d->lost || b->last_use <= d->q.done_serial) {
            *link = b->next_retired;
            release(b);
        } else {
            link = &b->next_retired;
        }
    }
}

void xg_vk_memory_destroy(xg_vk_device *d)
{
    d->mem.retired = NULL; /* their ranges go with the blocks */
    while (d->mem.blocks) {
        xg_vk_block *next = d->mem.blocks->next;
        block_destroy(d, d->mem.blocks);
        d->mem.blocks = next;
    }
}

/* ---- host-visible buffers (staging) -------------------------------------- */

xg_status xg_vk_host_buffer_create(xg_vk_device *d, VkDeviceSize size,
                                   xg_vk_host_buffer *out)
{
    memset(out, 0, sizeof *out);
    VkBufferCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .size = size,
        .usage = VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT,
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    VkResult r = d->vk.CreateBuffer(d->handle, &info, NULL, &out->buffer);
    if (r != VK_SUCCESS)
        goto fail;
    VkMemoryRequirements req;
    d->vk.GetBufferMemoryRequirements(d->handle, out->buffer, &req);
    VkMemoryAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
        .allocationSize = req.size,
        .memoryTypeIndex = (uint32_t)xg_vk_memory_type(
            d, req.memoryTypeBits,
            VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT |
                VK_MEMORY_PROPERTY_HOST_COHERENT_BIT,
            VK_MEMORY_PROPERTY_HOST_CACHED_BIT),
    };
    r = d->vk.AllocateMemory(d->handle, &alloc, NULL, &out->memory);
    if (r == VK_SUCCESS)
        r = d->vk.BindBufferMemory(d->handle, out->buffer, out->memory, 0);
    void *p = NULL;
    if (r == VK_SUCCESS)
        r = d->vk.MapMemory(d->handle, out->memory, 0, VK_WHOLE_SIZE, 0, &p);
    if (r != VK_SUCCESS)
        goto fail;
    out->mapped = p;
    out->size = size;
    return XG_OK;
fail:
    xg_vk_host_buffer_destroy(d, out);
    return xg_vk_fail(d, r, "creating a staging buffer");
}

void xg_vk_host_buffer_destroy(xg_vk_device *d, xg_vk_host_buffer *hb)
{
    d->vk.DestroyBuffer(d->handle, hb->buffer, NULL);
    d->vk.FreeMemory(d->handle, hb->memory, NULL);
    memset(hb, 0, sizeof *hb);
}
