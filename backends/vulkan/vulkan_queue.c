/* Execution: many commands per submission, barriers only where needed.
 *
 * Work is recorded into a ring of XG_VK_BATCHES batches: a command buffer,
 * a fence, a descriptor pool (one set per command, reset when the batch is
 * reused) and a staging buffer. A batch is submitted when it is full or when
 * the host needs results (download, sync); recording then moves on to the
 * next batch of the ring, waiting for it first if it is still in flight.
 *
 * Ordering: before each command the queue checks the buffers it touches. If
 * one was written since the last barrier (read after write, write after
 * write) or is written now and was read since the last barrier (write
 * after read), it records one global memory barrier first. Barriers order
 * commands across submissions too, as all go to one queue. Every batch ends
 * with a barrier that makes device writes visible to the host.
 *
 * Uploads go straight into mapped memory when the buffer is idle (no
 * recorded command uses it); otherwise, and on devices whose memory is not
 * mapped, they are staged and copied by a command recorded in order with
 * the dispatches. */
#include "vulkan_impl.h"

#include <string.h>

#define XG_VK_STAGES                                                         \
    (VK_PIPELINE_STAGE_COMPUTE_SHADER_BIT | VK_PIPELINE_STAGE_TRANSFER_BIT)
#define XG_VK_WRITES (VK_ACCESS_SHADER_WRITE_BIT | VK_ACCESS_TRANSFER_WRITE_BIT)

static const VkMemoryBarrier device_barrier = {
    .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
    .srcAccessMask = XG_VK_WRITES,
    .dstAccessMask = VK_ACCESS_SHADER_READ_BIT | VK_ACCESS_TRANSFER_READ_BIT |
                     XG_VK_WRITES,
};

static const VkMemoryBarrier host_barrier = {
    .sType = VK_STRUCTURE_TYPE_MEMORY_BARRIER,
    .srcAccessMask = XG_VK_WRITES,
    .dstAccessMask = VK_ACCESS_HOST_READ_BIT,
};

/* ---- the ring of batches ------------------------------------------------- */

static xg_status batch_init(xg_vk_device *d, xg_vk_batch *b)
{
    VkCommandBufferAllocateInfo cmd_info = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_ALLOCATE_INFO,
        .commandPool = d->q.cmd_pool,
        .level = VK_COMMAND_BUFFER_LEVEL_PRIMARY,
        .commandBufferCount = 1,
    };
    VkFenceCreateInfo fence_info = {
        .sType = VK_STRUCTURE_TYPE_FENCE_CREATE_INFO,
    };
    VkDescriptorPoolSize size = {
        .type = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
        .descriptorCount = XG_VK_BATCH_COMMANDS * XG_VK_BINDINGS,
    };
    VkDescriptorPoolCreateInfo pool_info = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_POOL_CREATE_INFO,
        .maxSets = XG_VK_BATCH_COMMANDS,
        .poolSizeCount = 1,
        .pPoolSizes = &size,
    };
    VkResult r = d->vk.AllocateCommandBuffers(d->handle, &cmd_info, &b->cmd);
    if (r == VK_SUCCESS)
        r = d->vk.CreateFence(d->handle, &fence_info, NULL, &b->fence);
    if (r == VK_SUCCESS)
        r = d->vk.CreateDescriptorPool(d->handle, &pool_info, NULL, &b->pool);
    return r == VK_SUCCESS ? XG_OK : xg_vk_fail(d, r, "creating a batch");
}

xg_status xg_vk_queue_init(xg_vk_device *d)
{
    xg_vk_queue *q = &d->q;
    memset(q, 0, sizeof *q);
    q->epoch = 1; /* buffers start at epoch 0: no access yet */
    VkCommandPoolCreateInfo info = {
        .sType = VK_STRUCTURE_TYPE_COMMAND_POOL_CREATE_INFO,
        .flags = VK_COMMAND_POOL_CREATE_RESET_COMMAND_BUFFER_BIT,
        .queueFamilyIndex = d->queue_family,
    };
    VkResult r = d->vk.CreateCommandPool(d->handle, &info, NULL, &q->cmd_pool);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkCreateCommandPool");
    xg_status st = XG_OK;
    for (int i = 0; i < XG_VK_BATCHES && st == XG_OK; i++)
        st = batch_init(d, &q->batch[i]);
    return st;
}

void xg_vk_queue_destroy(xg_vk_device *d)
{
    xg_vk_queue *q = &d->q;
    for (int i = 0; i < XG_VK_BATCHES; i++) {
        xg_vk_batch *b = &q->batch[i];
        if (b->in_flight) /* returns at once after a device loss */
            d->vk.WaitForFences(d->handle, 1, &b->fence, VK_TRUE, UINT64_MAX);
        xg_vk_host_buffer_destroy(d, &b->staging);
        d->vk.DestroyDescriptorPool(d->handle, b->pool, NULL);
        d->vk.DestroyFence(d->handle, b->fence, NULL);
    }
    d->vk.DestroyCommandPool(d->handle, q->cmd_pool, NULL);
    q->done_serial = q->last_serial; /* nothing runs any more */
    xg_vk_memory_retire(d);
}

/* Waits for an in-flight batch; its buffers and staging become reusable. */
static xg_status batch_wait(xg_vk_device *d, xg_vk_batch *b)
{
    VkResult r =
        d->vk.WaitForFences(d->handle, 1, &b->fence, VK_TRUE, UINT64_MAX);
    if (r == VK_SUCCESS)
        r = d->vk.ResetFences(d->handle, 1, &b->fence);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "waiting for the device");
    b->in_flight = false;
    d->q.done_serial = b->serial; /* batches finish in ring order */
    xg_vk_memory_retire(d);
    return XG_OK;
}

/* The batch that records now, begun if needed. */
static xg_status batch_open(xg_vk_device *d, xg_vk_batch **out)
{
    xg_vk_queue *q = &d->q;
    xg_vk_batch *b = &q->batch[q->current];
    if (!b->recording) {
        xg_status st = b->in_flight ? batch_wait(d, b) : XG_OK;
        if (st != XG_OK)
            return st;
        VkCommandBufferBeginInfo begin = {
            .sType = VK_STRUCTURE_TYPE_COMMAND_BUFFER_BEGIN_INFO,
            .flags = VK_COMMAND_BUFFER_USAGE_ONE_TIME_SUBMIT_BIT,
        };
        VkResult r = d->vk.ResetDescriptorPool(d->handle, b->pool, 0);
        if (r == VK_SUCCESS)
            r = d->vk.BeginCommandBuffer(b->cmd, &begin);
        if (r != VK_SUCCESS)
            return xg_vk_fail(d, r, "vkBeginCommandBuffer");
        b->serial = ++q->last_serial;
        b->commands = 0;
        b->staging_used = 0;
        b->recording = true;
        q->bound = VK_NULL_HANDLE;
    }
    *out = b;
    return XG_OK;
}

/* Submits the recording batch if it holds work; the next batch of the ring
 * records from now on. */
static xg_status batch_submit(xg_vk_device *d)
{
    xg_vk_queue *q = &d->q;
    xg_vk_batch *b = &q->batch[q->current];
    if (!b->recording || b->commands == 0)
        return XG_OK;
    d->vk.CmdPipelineBarrier(b->cmd, XG_VK_STAGES, VK_PIPELINE_STAGE_HOST_BIT,
                             0, 1, &host_barrier, 0, NULL, 0, NULL);
    VkSubmitInfo submit = {
        .sType = VK_STRUCTURE_TYPE_SUBMIT_INFO,
        .commandBufferCount = 1,
        .pCommandBuffers = &b->cmd,
    };
    VkResult r = d->vk.EndCommandBuffer(b->cmd);
    if (r == VK_SUCCESS)
        r = d->vk.QueueSubmit(d->queue, 1, &submit, b->fence);
    b->recording = false;
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkQueueSubmit");
    b->in_flight = true;
    q->current = (q->current + 1) % XG_VK_BATCHES;
    return XG_OK;
}

xg_status xg_vk_finish(xg_vk_device *d)
{
    xg_status st = xg_vk_check_lost(d);
    if (st == XG_OK)
        st = batch_submit(d);
    /* Oldest first: the ring slot after the last submitted one. */
    for (int i = 0; i < XG_VK_BATCHES && st == XG_OK; i++) {
        xg_vk_batch *b = &d->q.batch[(d->q.current + i) % XG_VK_BATCHES];
        if (b->in_flight)
            st = batch_wait(d, b);
    }
    return st;
}

xg_status xg_vk_sync(xg_backend_device *dev)
{
    return xg_vk_finish(xg_vk_dev(dev));
}

/* ---- recording ----------------------------------------------------------- */

/* Notes a command about to be recorded that reads bufs[0 .. first_write-1]
 * and writes bufs[first_write .. n-1] (NULL entries ignored), recording a
 * barrier first if it conflicts with a command since the last barrier. */
static void order_accesses(xg_vk_device *d, xg_vk_batch *b,
                           xg_buffer *const *bufs, int n, int first_write)
{
    xg_vk_queue *q = &d->q;
    bool conflict = false;
    for (int i = 0; i < n; i++)
        if (bufs[i] && (bufs[i]->write_epoch == q->epoch ||
                        (i >= first_write && bufs[i]->read_epoch == q->epoch)))
            conflict = true;
    if (conflict) {
        d->vk.CmdPipelineBarrier(b->cmd, XG_VK_STAGES, XG_VK_STAGES, 0, 1,
                                 &device_barrier, 0, NULL, 0, NULL);
        q->epoch++;
    }
    for (int i = 0; i < n; i++) {
        if (!bufs[i])
            continue;
        if (i >= first_write)
            bufs[i]->write_epoch = q->epoch;
        else
            bufs[i]->read_epoch = q->epoch;
        bufs[i]->last_use = b->serial;
    }
}

/* Counts a recorded command; a full batch is submitted. */
static xg_status recorded(xg_vk_device *d, xg_vk_batch *b)
{
    return ++b->commands >= XG_VK_BATCH_COMMANDS ? batch_submit(d) : XG_OK;
}

static VkDeviceSize descriptor_range(const xg_vk_device *d,
                                     const xg_buffer *buf)
{
    VkDeviceSize max = d->props.limits.maxStorageBufferRange;
    return buf->size < max ? buf->size : max;
}

static xg_status write_descriptors(xg_vk_device *d, xg_vk_batch *b,
                                   xg_buffer *const bufs[XG_VK_BINDINGS],
                                   VkDescriptorSet *set)
{
    VkDescriptorSetAllocateInfo alloc = {
        .sType = VK_STRUCTURE_TYPE_DESCRIPTOR_SET_ALLOCATE_INFO,
        .descriptorPool = b->pool,
        .descriptorSetCount = 1,
        .pSetLayouts = &d->pipes.set_layout,
    };
    VkResult r = d->vk.AllocateDescriptorSets(d->handle, &alloc, set);
    if (r != VK_SUCCESS)
        return xg_vk_fail(d, r, "vkAllocateDescriptorSets");
    VkDescriptorBufferInfo info[XG_VK_BINDINGS];
    VkWriteDescriptorSet writes[XG_VK_BINDINGS];
    uint32_t n = 0;
    for (uint32_t i = 0; i < XG_VK_BINDINGS; i++) {
        if (!bufs[i])
            continue;
        info[n] = (VkDescriptorBufferInfo){bufs[i]->block->buffer,
                                           bufs[i]->offset,
                                           descriptor_range(d, bufs[i])};
        writes[n] = (VkWriteDescriptorSet){
            .sType = VK_STRUCTURE_TYPE_WRITE_DESCRIPTOR_SET,
            .dstSet = *set,
            .dstBinding = i,
            .descriptorCount = 1,
            .descriptorType = VK_DESCRIPTOR_TYPE_STORAGE_BUFFER,
            .pBufferInfo = &info[n],
        };
        n++;
    }
    d->vk.UpdateDescriptorSets(d->handle, n, writes, 0, NULL);
    return XG_OK;
}

xg_status xg_vk_dispatch(xg_vk_device *d, const xg_vk_job *job,
                         xg_buffer *const in[XG_KERNEL_MAX_IN],
                         xg_buffer *const out[XG_KERNEL_MAX_OUT])
{
    xg_buffer *bufs[XG_VK_BINDINGS];
    memcpy(bufs, in, XG_KERNEL_MAX_IN * sizeof *bufs);
    memcpy(bufs + XG_KERNEL_MAX_IN, out, XG_KERNEL_MAX_OUT * sizeof *bufs);
    VkPipeline pipeline = VK_NULL_HANDLE;
    VkDescriptorSet set = VK_NULL_HANDLE;
    xg_vk_batch *b = NULL;
    xg_status st = xg_vk_check_lost(d);
    if (st == XG_OK)
        st = xg_vk_pipeline(d, job->pipe, &pipeline);
    if (st == XG_OK)
        st = batch_open(d, &b);
    if (st == XG_OK)
        st = write_descriptors(d, b, bufs, &set);
    if (st != XG_OK)
        return st;
    order_accesses(d, b, bufs, XG_VK_BINDINGS, XG_KERNEL_MAX_IN);
    if (pipeline != d->q.bound) {
        d->vk.CmdBindPipeline(b->cmd, VK_PIPELINE_BIND_POINT_COMPUTE, pipeline);
        d->q.bound = pipeline;
    }
    d->vk.CmdBindDescriptorSets(b->cmd, VK_PIPELINE_BIND_POINT_COMPUTE,
                                d->pipes.layout, 0, 1, &set, 0, NULL);
    d->vk.CmdPushConstants(b->cmd, d->pipes.layout,
                           VK_SHADER_STAGE_COMPUTE_BIT, 0, job->push_size,
                           job->push);
    d->vk.CmdDispatch(b->cmd, job->groups[0], job->groups[1], job->groups[2]);
    return recorded(d, b);
}

/* ---- staged transfers ---------------------------------------------------- */

/* Takes up to `want` bytes (at least 1) of the recording batch's staging
 * buffer, submitting the batch first when its staging is used up. */
static xg_status staging_take(xg_vk_device *d, size_t want, xg_vk_batch **out,
                              size_t *chunk, VkDeviceSize *offset)
{
    xg_vk_batch *b = NULL;
    xg_status st = batch_open(d, &b);
    if (st == XG_OK && b->staging_used == XG_VK_STAGING_BYTES) {
        st = batch_submit(d);
        if (st == XG_OK)
            st = batch_open(d, &b);
    }
    if (st == XG_OK && !b->staging.buffer)
        st = xg_vk_host_buffer_create(d, XG_VK_STAGING_BYTES, &b->staging);
    if (st != XG_OK)
        return st;
    VkDeviceSize room = XG_VK_STAGING_BYTES - b->staging_used;
    *chunk = want < room ? want : (size_t)room;
    *offset = b->staging_used;
    b->staging_used += (*chunk + 15) & ~(VkDeviceSize)15; /* stays <= size */
    *out = b;
    return XG_OK;
}

/* Records a copy between a buffer and staging memory. */
static xg_status record_copy(xg_vk_device *d, xg_vk_batch *b, bool upload,
                             xg_buffer *buf, VkDeviceSize buf_offset,
                             VkDeviceSize staging_offset, VkDeviceSize bytes)
{
    xg_buffer *access[2] = {upload ? NULL : buf, upload ? buf : NULL};
    order_accesses(d, b, access, 2, 1);
    VkBufferCopy region = {
        .srcOffset = upload ? staging_offset : buf->offset + buf_offset,
        .dstOffset = upload ? buf->offset + buf_offset : staging_offset,
        .size = bytes,
    };
    VkBuffer staging = b->staging.buffer, device = buf->block->buffer;
    d->vk.CmdCopyBuffer(b->cmd, upload ? staging : device,
                        upload ? device : staging, 1, &region);
    return recorded(d, b);
}

xg_status xg_vk_upload(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                       const void *src, size_t bytes)
{
    xg_vk_device *d = xg_vk_dev(dev);
    xg_status st = xg_vk_check_lost(d);
    if (st != XG_OK)
        return st;
    const unsigned char *from = src;
    if (buf->block->mapped && buf->last_use <= d->q.done_serial) {
        memcpy(buf->block->mapped + buf->offset + offset, from, bytes);
        return XG_OK;
    }
    while (bytes > 0 && st == XG_OK) {
        xg_vk_batch *b = NULL;
        size_t chunk = 0;
        VkDeviceSize at = 0;
        st = staging_take(d, bytes, &b, &chunk, &at);
        if (st != XG_OK)
            break;
        memcpy(b->staging.mapped + at, from, chunk);
        st = record_copy(d, b, true, buf, offset, at, chunk);
        from += chunk;
        offset += chunk;
        bytes -= chunk;
    }
    return st;
}

xg_status xg_vk_download(xg_backend_device *dev, xg_buffer *buf,
                         size_t offset, void *dst, size_t bytes)
{
    xg_vk_device *d = xg_vk_dev(dev);
    xg_status st = xg_vk_finish(d);
    unsigned char *to = dst;
    if (st == XG_OK && buf->block->mapped && buf->block->host_cached) {
        memcpy(to, buf->block->mapped + buf->offset + offset, bytes);
        return XG_OK;
    }
    while (bytes > 0 && st == XG_OK) {
        xg_vk_batch *b = NULL;
        size_t chunk = 0;
        VkDeviceSize at = 0;
        st = staging_take(d, bytes, &b, &chunk, &at);
        if (st == XG_OK)
            st = record_copy(d, b, false, buf, offset, at, chunk);
        if (st == XG_OK)
            st = xg_vk_finish(d);
        if (st == XG_OK)
            memcpy(to, b->staging.mapped + at, chunk);
        to += chunk;
        offset += chunk;
        bytes -= chunk;
    }
    return st;
}
