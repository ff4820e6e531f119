/* The CPU backend's caching allocator.
 *
 * A training loop allocates the same buffer sizes at every step. Handing
 * large blocks back to the C library returns them to the system (munmap,
 * heap trimming), and getting them again costs a page fault per 4 KiB page
 * with the kernel zeroing each one: a quarter of a small CNN's step. So a
 * freed block is kept on a free list of its size class and handed out again
 * to the next request of that class, as the GPU backends' allocators do.
 *
 * Size classes: up to CACHE_SMALL bytes, multiples of 64 bytes; above, 8
 * classes per power of two (at most 12.5% slack). Blocks of a class all have
 * the class's full size, so any cached block serves any request of its
 * class. At most cache_limit bytes stay cached; beyond that freed blocks go
 * back to the C library. Everything cached is released when the device
 * closes, or when an allocation fails (then the allocation is retried).
 *
 * Each block starts with a 64-byte header (its class and, while cached, the
 * next free block); the buffer the core sees starts right after it, so it
 * stays 64-byte aligned and cpu_f32() stays a plain cast. */
#include "cpu_impl.h"

#include <stdlib.h>
#include <unistd.h>

enum { HEADER = 64, CACHE_SMALL = 4096, SUB_CLASSES = 8 };

typedef struct block_header {
    size_t bytes;              /* usable bytes: the class size */
    int cls;                   /* size class, or -1 when not cacheable */
    struct block_header *next; /* free list link while cached */
} block_header;

_Static_assert(sizeof(block_header) <= HEADER, "header too large");

static block_header *header_of(xg_buffer *buf)
{
    return (block_header *)(void *)((char *)buf - HEADER);
}

/* The class of a request and its size; -1 past the last class. */
static int size_class(size_t bytes, size_t *class_bytes)
{
    if (bytes <= CACHE_SMALL) {
        *class_bytes = (bytes + 63) / 64 * 64;
        return (int)(*class_bytes / 64) - 1; /* 0 .. 63 */
    }
    int e = 12; /* 2^e < bytes <= 2^(e + 1) */
    while (((size_t)2 << e) < bytes)
        e++;
    size_t step = (size_t)1 << (e - 3); /* 2^e / 8 */
    size_t m = (bytes - ((size_t)1 << e) + step - 1) / step; /* 1 .. 8 */
    *class_bytes = ((size_t)1 << e) + m * step;
    int cls = CACHE_SMALL / 64 + (e - 12) * SUB_CLASSES + (int)m - 1;
    return cls < CPU_CACHE_CLASSES ? cls : -1;
}

void cpu_cache_init(cpu_device *dev)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
    size_t cap = (size_t)2 << 30; /* 2 GiB, or a quarter of the memory */
    dev->cache_limit = phys && phys / 4 < cap ? phys / 4 : cap;
}

/* Frees every cached block. */
void cpu_cache_release(cpu_device *dev)
{
    for (int c = 0; c < CPU_CACHE_CLASSES; c++) {
        while (dev->cache[c]) {
            block_header *h = dev->cache[c];
            dev->cache[c] = h->next;
            free(h);
        }
    }
    dev->cached_bytes = 0;
}

xg_status cpu_cache_alloc(cpu_device *dev, size_t bytes, xg_buffer **out)
{
    size_t class_bytes = 0;
    int cls = bytes > SIZE_MAX / 2 ? -1 : size_class(bytes, &class_bytes);
    block_header *h = cls >= 0 ? dev->cache[cls] : NULL;
    if (h) {
        dev->cache[cls] = h->next;
        dev->cached_bytes -= h->bytes;
    } else {
        if (cls < 0) /* too large for a class: exact size, never cached */
            class_bytes = bytes > SIZE_MAX - 2 * HEADER
                              ? SIZE_MAX
                              : (bytes + 63) / 64 * 64;
        if (class_bytes > SIZE_MAX - HEADER)
            return xg_set_error(XG_ERR_TOO_LARGE,
                                "cpu: cannot allocate %zu bytes", bytes);
        h = aligned_alloc(64, HEADER + class_bytes);
        if (!h && dev->cached_bytes) {
            cpu_cache_release(dev);
            h = aligned_alloc(64, HEADER + class_bytes);
        }
        if (!h)
            return xg_set_error(XG_ERR_DEVICE_OOM,
                                "cpu: out of memory allocating %zu bytes",
                                bytes);
        h->bytes = class_bytes;
        h->cls = cls;
    }
    *out = (xg_buffer *)(void *)((char *)h + HEADER);
    return XG_OK;
}

void cpu_cache_free(cpu_device *dev, xg_buffer *buf)
{
    if (!buf)
        return;
    block_header *h = header_of(buf);
    if (h->cls < 0 || dev->cached_bytes + h->bytes > dev->cache_limit) {
        free(h);
        return;
    }
    h->next = dev->cache[h->cls];
    dev->cache[h->cls] = h;
    dev->cached_bytes += h->bytes;
}
