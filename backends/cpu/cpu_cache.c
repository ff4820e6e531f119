/* The CPU backend's caching allocator.
 *
 * A training loop allocates the same buffer sizes at every step. Handing
 * large blocks back to the system and getting them again costs a page fault
 * per 4 KiB page with the kernel zeroing each one: a quarter of a small
 * CNN's step. So a freed block is kept on a free list of its size class and
 * handed out again to a later request of that class, as the GPU backends'
 * allocators do.
 *
 * Keeping every freed block, though, holds the sum over the classes of each
 * class's most blocks live at once, far more than the most bytes live at
 * once when the forward pass's activations and the backward pass's
 * gradients have different sizes. So the memory the allocator holds (live
 * blocks plus cached ones) is kept within the most bytes live at once so far
 * (live_peak) plus a slack: max(CACHE_SLACK_MIN, live_peak / 8), or
 * XGRAD_CPU_CACHE bytes when set. When a request finds no block of its class,
 * a cached block up to REUSE_CLASSES classes larger serves it; failing that,
 * the least recently freed blocks are released until the new one fits. Past
 * the first step the held memory follows the live peak, and steady-state
 * steps reuse their blocks.
 *
 * Size classes: up to CACHE_SMALL bytes, multiples of 64 bytes; above, 8
 * classes per power of two (at most 12.5% slack). Blocks of MAP_MIN bytes
 * or more are mapped from the system directly (mmap) and unmapped when
 * released, so the memory they free leaves the process at once whatever the
 * C library's malloc thresholds are; smaller ones come from aligned_alloc.
 * Everything cached is released when the device closes, or when an
 * allocation fails (then the allocation is retried).
 *
 * Each block starts with a 64-byte header (its size, class and, while
 * cached, its links); the buffer the core sees starts right after it, so it
 * stays 64-byte aligned and cpu_f32() stays a plain cast. */
#include "cpu_impl.h"

#include <stdlib.h>
#include <sys/mman.h>
#include <unistd.h>

enum {
    HEADER = 64,
    CACHE_SMALL = 4096,
    SUB_CLASSES = 8,
    REUSE_CLASSES = 2 /* a cached block this many classes larger serves */
};
#define CACHE_SLACK_MIN ((size_t)64 << 20) /* 64 MiB */
#define MAP_MIN ((size_t)256 << 10)        /* 256 KiB */

typedef struct block_header {
    size_t bytes;              /* usable bytes: the class size */
    size_t mapped;             /* bytes mapped with mmap, 0 if malloc'd */
    int cls;                   /* size class, or -1 when not cacheable */
    struct block_header *next, *prev; /* class free list while cached */
    struct block_header *newer, *older; /* all cached blocks, by age */
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

/* XGRAD_CPU_CACHE: bytes, with an optional K, M or G (powers of 1024), as
 * XGRAD_MEMORY_LIMIT; 0 is allowed (no slack). */
xg_status cpu_cache_init(cpu_device *dev)
{
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGE_SIZE);
    size_t phys = pages > 0 && page > 0 ? (size_t)pages * (size_t)page : 0;
    size_t cap = (size_t)2 << 30; /* 2 GiB, or a quarter of the memory */
    dev->cache_limit = phys && phys / 4 < cap ? phys / 4 : cap;
    uint64_t v = 0;
    xg_status st = xg__env_bytes("XGRAD_CPU_CACHE", true, &v);
    if (st == XG_ERR_NOT_FOUND)
        return XG_OK;
    if (st != XG_OK)
        return st;
#if SIZE_MAX < UINT64_MAX
    if (v > SIZE_MAX)
        return xg_set_error(XG_ERR_INVALID_ARG, "XGRAD_CPU_CACHE: %llu bytes "
                            "do not fit in this machine's address space",
                            (unsigned long long)v);
#endif
    dev->cache_slack = (size_t)v;
    dev->cache_slack_fixed = 1;
    return XG_OK;
}

/* The bytes the allocator may hold beyond what is live. */
static size_t slack(const cpu_device *dev)
{
    if (dev->cache_slack_fixed)
        return dev->cache_slack;
    size_t s = dev->live_peak / 8;
    return s > CACHE_SLACK_MIN ? s : CACHE_SLACK_MIN;
}

static void block_release(block_header *h)
{
    if (h->mapped)
        munmap(h, h->mapped);
    else
        free(h);
}

/* Takes a cached block off its class list and the age list. */
static void unlink_cached(cpu_device *dev, block_header *h)
{
    if (h->prev)
        h->prev->next = h->next;
    else
        dev->cache[h->cls] = h->next;
    if (h->next)
        h->next->prev = h->prev;
    if (h->newer)
        h->newer->older = h->older;
    else
        dev->cache_newest = h->older;
    if (h->older)
        h->older->newer = h->newer;
    else
        dev->cache_oldest = h->newer;
    dev->cached_bytes -= h->bytes;
}

/* Releases the least recently freed blocks until at most `keep` bytes stay
 * cached. */
static void trim_to(cpu_device *dev, size_t keep)
{
    while (dev->cached_bytes > keep && dev->cache_oldest) {
        block_header *h = dev->cache_oldest;
        unlink_cached(dev, h);
        block_release(h);
    }
}

/* Frees every cached block. */
void cpu_cache_release(cpu_device *dev)
{
    trim_to(dev, 0);
}

/* A fresh block of `bytes` usable bytes; NULL when the system has none. */
static block_header *block_new(size_t bytes)
{
    block_header *h;
    size_t mapped = 0;
    if (bytes >= MAP_MIN) {
        size_t page = (size_t)sysconf(_SC_PAGE_SIZE);
        if (bytes > SIZE_MAX - HEADER - page)
            return NULL;
        mapped = (HEADER + bytes + page - 1) / page * page;
        void *p = mmap(NULL, mapped, PROT_READ | PROT_WRITE,
                       MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        h = p == MAP_FAILED ? NULL : p;
    } else {
        h = aligned_alloc(64, HEADER + bytes);
    }
    if (h)
        h->mapped = mapped;
    return h;
}

xg_status cpu_cache_alloc(cpu_device *dev, size_t bytes, xg_buffer **out)
{
    size_t class_bytes = 0;
    int cls = bytes > SIZE_MAX / 2 ? -1 : size_class(bytes, &class_bytes);
    block_header *h = NULL;
    for (int c = cls; cls >= 0 && c <= cls + REUSE_CLASSES &&
                      c < CPU_CACHE_CLASSES && !h; c++)
        h = dev->cache[c];
    if (h) {
        unlink_cached(dev, h);
    } else {
        if (cls < 0) /* too large for a class: exact size, never cached */
            class_bytes = bytes > SIZE_MAX - 2 * HEADER
                              ? SIZE_MAX
                              : (bytes + 63) / 64 * 64;
        if (class_bytes > SIZE_MAX - HEADER)
            return xg_set_error(XG_ERR_TOO_LARGE,
                                "cpu: cannot allocate %zu bytes", bytes);
        /* Hold at most the live peak (this block included) plus the
         * slack. */
        size_t live = dev->live_bytes + class_bytes;
        size_t peak = live > dev->live_peak ? live : dev->live_peak;
        size_t hold = peak > SIZE_MAX - slack(dev) ? SIZE_MAX
                                                   : peak + slack(dev);
        trim_to(dev, hold > live ? hold - live : 0);
        h = block_new(class_bytes);
        if (!h && dev->cached_bytes) {
            cpu_cache_release(dev);
            h = block_new(class_bytes);
        }
        if (!h)
            return xg_set_error(XG_ERR_DEVICE_OOM,
                                "cpu: out of memory allocating %zu bytes",
                                bytes);
        h->bytes = class_bytes;
        h->cls = cls;
    }
    dev->live_bytes += h->bytes;
    if (dev->live_bytes > dev->live_peak)
        dev->live_peak = dev->live_bytes;
    *out = (xg_buffer *)(void *)((char *)h + HEADER);
    return XG_OK;
}

void cpu_cache_free(cpu_device *dev, xg_buffer *buf)
{
    if (!buf)
        return;
    block_header *h = header_of(buf);
    dev->live_bytes -= h->bytes;
    if (h->cls < 0 || h->bytes > dev->cache_limit) {
        block_release(h);
        return;
    }
    trim_to(dev, dev->cache_limit - h->bytes);
    h->prev = NULL;
    h->next = dev->cache[h->cls];
    if (h->next)
        h->next->prev = h;
    dev->cache[h->cls] = h;
    h->older = dev->cache_newest;
    h->newer = NULL;
    if (h->older)
        h->older->newer = h;
    else
        dev->cache_oldest = h;
    dev->cache_newest = h;
    dev->cached_bytes += h->bytes;
}
