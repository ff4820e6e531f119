/* libFuzzer harness for the IDX reader (api/data/data.c).
 *
 * Each input is written to a temporary file, plain or gzip-compressed (the
 * first input byte chooses), and read with xg_idx_read, as the MNIST loader
 * reads its files. Nothing may crash, leak, allocate without bound or trip
 * a sanitizer; a file that reads must hold exactly the values its header
 * promises.
 *
 * Build and run (fuzz/meson.build):
 *   CC=clang meson setup build-fuzz -Dfuzz=enabled -Dopencl=disabled \
 *       -Dvulkan=disabled -Dtests=disabled
 *   ninja -C build-fuzz fuzz/fuzz_idx
 *   build-fuzz/fuzz/fuzz_idx -max_total_time=60 fuzz/corpus_idx
 */
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <zlib.h>

#include "xgrad_data.h"

static char path[64];

static void write_input(const uint8_t *data, size_t size)
{
    bool gz = size > 0 && (data[0] & 1);
    if (size > 0) {
        data++;
        size--;
    }
    if (gz) {
        gzFile f = gzopen(path, "wb");
        if (!f)
            __builtin_trap();
        if (size && gzwrite(f, data, (unsigned)size) != (int)size)
            __builtin_trap();
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        if (!f || (size && fwrite(data, 1, size, f) != size))
            __builtin_trap();
        fclose(f);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!path[0])
        snprintf(path, sizeof path, "/tmp/xgrad-fuzz-idx-%d", (int)getpid());
    write_input(data, size);
    xg_idx idx;
    if (xg_idx_read(path, &idx) == XG_OK) {
        size_t n = 1;
        for (int k = 0; k < idx.ndim; k++)
            n *= (size_t)idx.dims[k];
        size_t elem = idx.type == 0x0E ? 8
                      : idx.type == 0x0C || idx.type == 0x0D ? 4
                      : idx.type == 0x0B                     ? 2
                                                             : 1;
        if (idx.ndim < 1 || idx.ndim > XG_MAX_DIMS || idx.bytes != n * elem)
            __builtin_trap(); /* not what the header promised */
        uint8_t sum = 0; /* every byte must be readable */
        for (size_t i = 0; i < idx.bytes; i++)
            sum += ((const uint8_t *)idx.data)[i];
        __asm__ volatile("" : : "r"(sum));
        xg_idx_free(&idx);
    }
    remove(path);
    return 0;
}
