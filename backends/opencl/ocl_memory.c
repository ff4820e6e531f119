/* Device buffers: a caching allocator over clCreateBuffer, and transfers.
 *
 * A request is rounded up to a size class: 256 bytes, then four classes per
 * power of two (2^e times 1.25, 1.5, 1.75 and 2), so at most a quarter is
 * wasted. free() puts a buffer on its class's free list and the next request
 * of that class takes it back. Reuse is safe while earlier work on the
 * buffer is still queued, because the queue is in order. When the device is
 * out of memory the cache is released and the allocation tried once more.
 */
#include "ocl_impl.h"

#include <stdio.h>
#include <stdlib.h>

#define MIN_CLASS_LOG2 8 /* the smallest class: 256 bytes */

/* The size class of a request of `bytes` (> 0) and the size it gets. */
static int size_class(size_t bytes, size_t *class_bytes)
{
    if (bytes <= (size_t)1 << MIN_CLASS_LOG2) {
        *class_bytes = (size_t)1 << MIN_CLASS_LOG2;
        return 0;
    }
    int e = MIN_CLASS_LOG2; /* 2^e < bytes <= 2^(e+1) */
    while (((size_t)2 << e) < bytes)
        e++;
    size_t quarter = (size_t)1 << (e - 2);
    size_t q = (bytes - 1 - ((size_t)1 << e)) / quarter; /* 0..3 */
    *class_bytes = ((size_t)1 << e) + (q + 1) * quarter;
    return 1 + 4 * (e - MIN_CLASS_LOG2) + (int)q;
}

void ocl_release_cached(ocl_device *d)
{
    for (int k = 0; k < OCL_SIZE_CLASSES; k++) {
        while (d->free_list[k]) {
            xg_buffer *buf = d->free_list[k];
            d->free_list[k] = buf->next_free;
            clReleaseMemObject(buf->mem);
            free(buf);
        }
    }
}

/* clCreateBuffer; when the device is out of memory, waits for queued work,
 * releases the cache and tries again. */
static cl_int create_buffer(ocl_device *d, size_t bytes, cl_mem *out)
{
    cl_int err;
    *out = clCreateBuffer(d->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    if (err == CL_MEM_OBJECT_ALLOCATION_FAILURE || err == CL_OUT_OF_RESOURCES) {
        clFinish(d->queue);
        ocl_release_cached(d);
        *out = clCreateBuffer(d->context, CL_MEM_READ_WRITE, bytes, NULL, &err);
    }
    return err;
}

xg_status ocl_alloc(xg_backend_device *dev, size_t bytes, xg_buffer **out)
{
    ocl_device *d = ocl_dev(dev);
    if (bytes > d->max_alloc)
        return xg_set_error(XG_ERR_TOO_LARGE,
                            "opencl: cannot allocate %zu bytes: the device's "
                            "largest allocation is %llu bytes "
                            "(CL_DEVICE_MAX_MEM_ALLOC_SIZE)",
                            bytes, (unsigned long long)d->max_alloc);
    size_t class_bytes;
    int k = size_class(bytes, &class_bytes);
    xg_buffer *buf = d->free_list[k];
    if (buf) {
        d->free_list[k] = buf->next_free;
        *out = buf;
        return XG_OK;
    }
    buf = malloc(sizeof *buf);
    if (!buf)
        return xg_set_error(XG_ERR_OUT_OF_MEMORY, "opencl: out of host memory");
    if (class_bytes > d->max_alloc)
        class_bytes = d->max_alloc; /* still >= every request of class k */
    cl_int err = create_buffer(d, class_bytes, &buf->mem);
    if (err != CL_SUCCESS) {
        free(buf);
        char what[64];
        snprintf(what, sizeof what, "allocating %zu bytes", class_bytes);
        return ocl_fail(err, what);
    }
    buf->size_class = k;
    buf->next_free = NULL;
    *out = buf;
    return XG_OK;
}

void ocl_free(xg_backend_device *dev, xg_buffer *buf)
{
    if (!buf)
        return;
    ocl_device *d = ocl_dev(dev);
    buf->next_free = d->free_list[buf->size_class];
    d->free_list[buf->size_class] = buf;
}

/* A blocking write: the host memory is free to reuse on return. */
xg_status ocl_upload(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                     const void *src, size_t bytes)
{
    if (bytes == 0)
        return XG_OK;
    cl_int err = clEnqueueWriteBuffer(ocl_dev(dev)->queue, buf->mem, CL_TRUE,
                                      offset, bytes, src, 0, NULL, NULL);
    return err == CL_SUCCESS ? XG_OK : ocl_fail(err, "upload");
}

/* A blocking read; the in-order queue runs every earlier call first. */
xg_status ocl_download(xg_backend_device *dev, xg_buffer *buf, size_t offset,
                       void *dst, size_t bytes)
{
    cl_command_queue queue = ocl_dev(dev)->queue;
    cl_int err = bytes == 0 ? clFinish(queue)
                            : clEnqueueReadBuffer(queue, buf->mem, CL_TRUE,
                                                  offset, bytes, dst, 0, NULL,
                                                  NULL);
    return err == CL_SUCCESS ? XG_OK : ocl_fail(err, "download");
}
