/* The CPU backend's caching allocator (backends/cpu/cpu_cache.c), driven
 * directly on a device struct of its own: a freed block serves the next
 * request of its class and of up to two classes below; the memory held
 * (live blocks plus cached ones) stays within the live peak plus the slack,
 * releasing the least recently freed blocks first; buffers are 64-byte
 * aligned, writable and never overlap while live; everything cached is
 * released at the end (ASan reports a leak otherwise). */
#include <criterion/criterion.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../backends/cpu/cpu_impl.h"

#define MiB ((size_t)1 << 20)

static cpu_device *new_dev(int fixed_slack, size_t slack)
{
    cpu_device *dev = calloc(1, sizeof *dev);
    cr_assert_not_null(dev);
    cr_assert_eq(cpu_cache_init(dev), XG_OK);
    if (fixed_slack) {
        dev->cache_slack_fixed = 1;
        dev->cache_slack = slack;
    }
    return dev;
}

static void del_dev(cpu_device *dev)
{
    cpu_cache_release(dev);
    cr_expect_eq(dev->cached_bytes, 0);
    free(dev);
}

static xg_buffer *get(cpu_device *dev, size_t bytes)
{
    xg_buffer *b = NULL;
    cr_assert_eq(cpu_cache_alloc(dev, bytes, &b), XG_OK, "%s",
                 xg_last_error());
    cr_assert_eq((uintptr_t)b % 64, 0);
    memset(b, 0x5a, bytes); /* writable end to end */
    return b;
}

Test(cpu_cache, same_class_and_up_to_two_classes_below_reuse)
{
    cpu_device *dev = new_dev(0, 0);
    xg_buffer *a = get(dev, MiB); /* class: 1 MiB */
    cpu_cache_free(dev, a);
    cr_expect_eq(dev->live_bytes, 0);
    cr_expect_eq(dev->cached_bytes, MiB);
    xg_buffer *b = get(dev, MiB - 1000); /* same class */
    cr_expect_eq(b, a);
    cr_expect_eq(dev->cached_bytes, 0);
    cr_expect_eq(dev->live_bytes, MiB);
    cpu_cache_free(dev, b);
    /* 1 MiB - 2 classes of 64 KiB: served by the 1 MiB block */
    xg_buffer *c = get(dev, MiB - 128 * 1024);
    cr_expect_eq(c, a);
    cr_expect_eq(dev->live_bytes, MiB, "the block's whole size is live");
    cpu_cache_free(dev, c);
    /* three classes below: a block of its own */
    xg_buffer *d = get(dev, MiB - 192 * 1024);
    cr_expect_neq(d, a);
    cr_expect_eq(dev->cached_bytes, MiB);
    cpu_cache_free(dev, d);
    /* small sizes: 64-byte classes */
    xg_buffer *s = get(dev, 1000);
    cpu_cache_free(dev, s);
    cr_assert_eq(get(dev, 960), s);
    cpu_cache_free(dev, s);
    del_dev(dev);
}

Test(cpu_cache, held_memory_follows_the_live_peak)
{
    /* no slack: a request of another class releases cached blocks first */
    cpu_device *dev = new_dev(1, 0);
    xg_buffer *a = get(dev, 4 * MiB);
    cpu_cache_free(dev, a);
    cr_expect_eq(dev->cached_bytes, 4 * MiB);
    xg_buffer *b = get(dev, 8 * MiB);
    cr_expect_eq(dev->cached_bytes, 0, "4 MiB block released");
    cr_expect_eq(dev->live_peak, 8 * MiB);
    cpu_cache_free(dev, b);
    cr_expect_eq(dev->cached_bytes, 8 * MiB);
    /* 2 MiB live + 8 cached would pass the 8 MiB peak */
    xg_buffer *c = get(dev, 2 * MiB);
    cr_expect_eq(dev->cached_bytes, 0);
    xg_buffer *d = get(dev, 3 * MiB);
    cpu_cache_free(dev, d); /* freed: 3 MiB, then 2 */
    cpu_cache_free(dev, c);
    cr_expect_eq(dev->cached_bytes, 5 * MiB);
    /* within the peak, blocks of other classes stay cached */
    cr_assert_eq(get(dev, 3 * MiB), d);
    cr_assert_eq(get(dev, 2 * MiB), c);
    cr_expect_eq(dev->cached_bytes, 0);
    cpu_cache_free(dev, d);
    cpu_cache_free(dev, c);
    /* 4 MiB live leaves room for 4 cached: the 3 MiB block, freed first,
     * goes */
    xg_buffer *e = get(dev, 4 * MiB);
    cr_expect_eq(dev->cached_bytes, 2 * MiB);
    cr_assert_eq(get(dev, 2 * MiB), c);
    cpu_cache_free(dev, c);
    cpu_cache_free(dev, e);
    del_dev(dev);

    /* with a 16 MiB slack nothing needs releasing */
    dev = new_dev(1, 16 * MiB);
    a = get(dev, 4 * MiB);
    cpu_cache_free(dev, a);
    b = get(dev, 8 * MiB);
    cr_expect_eq(dev->cached_bytes, 4 * MiB);
    cpu_cache_free(dev, b);
    cr_assert_eq(get(dev, 4 * MiB), a);
    cpu_cache_free(dev, a);
    del_dev(dev);
}

Test(cpu_cache, least_recently_freed_released_first)
{
    cpu_device *dev = new_dev(1, 0);
    size_t sz[3] = {MiB, 2 * MiB, 4 * MiB};
    xg_buffer *x[3];
    for (int i = 0; i < 3; i++)
        x[i] = get(dev, sz[i]);
    cpu_cache_free(dev, x[1]); /* freed: 2 MiB, then 4, then 1 */
    cpu_cache_free(dev, x[2]);
    cpu_cache_free(dev, x[0]);
    /* peak 7 MiB; 3 MiB more live leaves room for 4 cached: the 2 MiB
     * block (oldest) goes, then the 4 MiB one (7 - 3 = 4 < 5 cached) */
    xg_buffer *y = get(dev, 3 * MiB);
    cr_expect_eq(dev->cached_bytes, MiB);
    cr_assert_eq(get(dev, MiB), x[0], "the newest stayed");
    cpu_cache_free(dev, x[0]);
    cpu_cache_free(dev, y);
    del_dev(dev);
}

/* Random sizes from bytes to megabytes, a few hundred live at once: every
 * live buffer keeps its own bytes (no block handed out twice), and held
 * memory stays within the peak plus the slack. */
Test(cpu_cache, random_traffic_keeps_contents_and_bounds)
{
    enum { N = 200, ROUNDS = 4000 };
    cpu_device *dev = new_dev(1, 2 * MiB);
    xg_buffer *buf[N] = {0};
    size_t len[N] = {0};
    uint32_t s = 12345;
    for (int r = 0; r < ROUNDS; r++) {
        s = s * 1664525u + 1013904223u;
        int i = (int)((s >> 8) % N);
        if (buf[i]) {
            unsigned char *p = (unsigned char *)buf[i];
            cr_assert(p[0] == (unsigned char)i &&
                      p[len[i] - 1] == (unsigned char)i &&
                      p[len[i] / 2] == (unsigned char)i);
            cpu_cache_free(dev, buf[i]);
            buf[i] = NULL;
        } else {
            s = s * 1664525u + 1013904223u;
            len[i] = 1 + (s >> 8) % ((s >> 30) == 0 ? 3 * MiB : 20000);
            buf[i] = get(dev, len[i]);
            memset(buf[i], i, len[i]);
            cr_assert_leq(dev->live_bytes + dev->cached_bytes,
                          dev->live_peak + 2 * MiB);
        }
    }
    for (int i = 0; i < N; i++)
        cpu_cache_free(dev, buf[i]);
    cr_expect_eq(dev->live_bytes, 0);
    del_dev(dev);
}

/* XGRAD_CPU_CACHE sets the slack; a malformed value fails the open. */
Test(cpu_cache, env_slack)
{
    setenv("XGRAD_CPU_CACHE", "24M", 1);
    cpu_device *dev = new_dev(0, 0);
    cr_expect_eq(dev->cache_slack_fixed, 1);
    cr_expect_eq(dev->cache_slack, 24 * MiB);
    del_dev(dev);
    xg_device *d = NULL;
    cr_expect_eq(xg_device_open("cpu", &d), XG_OK, "%s", xg_last_error());
    xg_device_close(d);
    const char *bad[] = {"abc", "-1", "12X", "5MM", "99999999999999999999G"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        setenv("XGRAD_CPU_CACHE", bad[i], 1);
        d = NULL;
        cr_expect_eq(xg_device_open("cpu", &d), XG_ERR_INVALID_ARG, "%s",
                     bad[i]);
        cr_expect_null(d);
        cr_expect(strstr(xg_last_error(), "XGRAD_CPU_CACHE") != NULL);
    }
    unsetenv("XGRAD_CPU_CACHE");
}
